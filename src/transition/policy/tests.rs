use super::*;

const SAMPLE: &str = include_str!("../../../tests/data/message_status.toml");

fn sample() -> TransitionPolicy {
    TransitionPolicy::from_toml_str(SAMPLE).unwrap()
}

#[test]
fn the_seed_transition_is_blocked_and_the_valid_one_allowed() {
    let p = sample();
    assert_eq!(p.check("READY", "SPAM_REVIEW"), Ok(()));
    let b = p.check("PROMOTED", "SPAM_REVIEW").unwrap_err();
    assert_eq!(b.reason, BlockReason::NotAllowed);
    assert_eq!(
        b.to_string(),
        "PROMOTED -> SPAM_REVIEW is not an allowed transition"
    );
    assert_eq!(
        p.check("NOPE", "READY").unwrap_err().reason,
        BlockReason::UnknownSource
    );
    assert_eq!(
        p.check("READY", "NOPE").unwrap_err().reason,
        BlockReason::UnknownTarget
    );
    // Same-state is an edge like any other: not listed, so refused.
    assert!(p.check("READY", "READY").is_err());
}

#[test]
fn allowed_lists_follow_declaration_order() {
    let p = sample();
    assert_eq!(
        p.allowed_from("READY"),
        ["PROMOTED", "SPAM_REVIEW", "ARCHIVED"]
    );
    assert!(p.allowed_from("ARCHIVED").is_empty());
    assert!(p.allowed_from("UNKNOWN").is_empty());
    assert_eq!(p.allowed_sources("SPAM_REVIEW"), ["READY"]);
    assert_eq!(
        p.allowed_sources("ARCHIVED"),
        ["READY", "COMPLETED", "SPAM"]
    );
    assert_eq!(p.edges().count(), 8);
    assert_eq!(p.len(), 6);
    assert_eq!(
        format!("{:?}", p.allowed_from("PROMOTED")),
        "[\"COMPLETED\"]"
    );
}

#[test]
fn builder_and_json_agree_with_toml() {
    let built = TransitionPolicy::builder()
        .states(["READY", "SPAM_REVIEW"])
        .allow("READY", "SPAM_REVIEW")
        .build()
        .unwrap();
    let json = TransitionPolicy::from_json_str(
        r#"{"states": ["READY", "SPAM_REVIEW"], "allow": [{"from": "READY", "to": "SPAM_REVIEW"}]}"#,
    )
    .unwrap();
    assert_eq!(
        built.edges().collect::<Vec<_>>(),
        json.edges().collect::<Vec<_>>()
    );
}

#[test]
fn more_than_64_states_use_several_words() {
    let names: Vec<String> = (0..130).map(|i| format!("S{i}")).collect();
    let p = TransitionPolicy::builder()
        .states(names.clone())
        .allow("S0", "S129")
        .allow("S129", "S64")
        .build()
        .unwrap();
    assert!(p.check("S0", "S129").is_ok());
    assert!(p.check("S129", "S64").is_ok());
    assert!(p.check("S0", "S64").is_err());
    assert_eq!(p.allowed_sources("S64"), ["S129"]);
}

#[test]
fn build_errors_name_the_entry() {
    let e = TransitionPolicy::builder().build().unwrap_err();
    assert_eq!(e, PolicyError::NoStates);
    let e = TransitionPolicy::builder()
        .states(["A", "B", "A"])
        .build()
        .unwrap_err();
    assert!(matches!(e, PolicyError::DuplicateState { ref entry, .. } if entry == "states[2]"));
    let e = TransitionPolicy::builder()
        .states(["A", ""])
        .build()
        .unwrap_err();
    assert!(matches!(e, PolicyError::BadStateName { ref entry, .. } if entry == "states[1]"));
    for bad in ["A'B", "A B", "Ä", "x;DROP", &"A".repeat(65)] {
        let e = TransitionPolicy::builder().state(bad).build().unwrap_err();
        assert!(matches!(e, PolicyError::BadStateName { .. }), "{bad}: {e}");
    }
    let e = TransitionPolicy::builder()
        .states(["A", "B"])
        .allow("A", "B")
        .allow("A", "C")
        .build()
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid transition policy: `allow[1]` names unknown state \"C\""
    );
    let e = TransitionPolicy::builder()
        .states(["A", "B"])
        .allow("A", "B")
        .allow("A", "B")
        .build()
        .unwrap_err();
    assert!(matches!(e, PolicyError::DuplicateEdge { ref entry, .. } if entry == "allow[1]"));
}

#[test]
fn file_errors_name_the_entry() {
    let toml = "states = [\"A\", \"B\"]\n[[allow]]\nfrom = \"A\"\nto = [\"B\", \"C\"]\n";
    let e = TransitionPolicy::from_toml_str(toml).unwrap_err();
    assert!(
        matches!(e, PolicyError::UnknownState { ref entry, ref name } if entry == "allow[0].to[1]" && name == "C")
    );
    let toml = "states = [\"A\", \"B\"]\n[[allow]]\nfrom = \"A\"\nto = \"B\"\n[[allow]]\nfrom = \"A\"\nto = [\"B\"]\n";
    let e = TransitionPolicy::from_toml_str(toml).unwrap_err();
    assert!(matches!(e, PolicyError::DuplicateEdge { ref entry, .. } if entry == "allow[1].to[0]"));
    let e = TransitionPolicy::from_toml_str("states = []\n").unwrap_err();
    assert_eq!(e, PolicyError::NoStates);
    let e = TransitionPolicy::from_json_str(r#"{"states": ["A", "A"]}"#).unwrap_err();
    assert!(
        e.to_string()
            .contains("`states[1]` declares state `A` a second time"),
        "{e}"
    );
}

#[test]
fn parse_errors_carry_the_line() {
    let toml = "states = [\"A\"]\n\n[[allow]]\nfrom = \"A\"\nto = [\"A\"\n";
    let e = TransitionPolicy::from_toml_str(toml).unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::Parse {
                format: "TOML",
                line: Some(5),
                ..
            }
        ),
        "{e:?}"
    );
    let e = TransitionPolicy::from_toml_str("states = [\"A\"]\nextra = 1\n").unwrap_err();
    assert!(
        matches!(e, PolicyError::Parse { line: Some(2), .. }),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .starts_with("invalid transition policy TOML at line 2"),
        "{e}"
    );
    let e = TransitionPolicy::from_json_str("{\n\"states\": [\"A\",]\n}").unwrap_err();
    assert!(
        matches!(
            e,
            PolicyError::Parse {
                format: "JSON",
                line: Some(2),
                ..
            }
        ),
        "{e:?}"
    );
}

#[test]
fn from_path_picks_the_format_by_extension() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/message_status.toml"
    );
    assert_eq!(TransitionPolicy::from_path(path).unwrap().len(), 6);
    let e = TransitionPolicy::from_path("policy.yaml").unwrap_err();
    assert!(matches!(e, PolicyError::UnknownFormat { .. }));
    let e = TransitionPolicy::from_path("/nonexistent/policy.json").unwrap_err();
    assert!(matches!(e, PolicyError::Read { .. }));
}
