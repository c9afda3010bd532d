//! The import graph between the crate's top-level modules points down the layers of
//! `docs/architecture.md` and has no cycle, and modules name an item's real home rather than
//! the crate root's re-exports.
//!
//! What it parses, honestly: every `src/**/*.rs` but `lib.rs`, as text. Line comments (doc
//! comments included) are dropped, and so is each `#[cfg(test)] mod name { ... }` block
//! (found by brace counting, which a brace inside a string or char literal can fool). In what
//! is left, every `crate::name` and every first segment of a `crate::{a, b::c}` group is an
//! edge from the file's top-level module to `name` (strings count too, so
//! `#[serde(with = "crate::config::millis")]` is an edge, as it should be). A capitalised
//! `crate::Name` is an import through the crate root's re-exports. Paths through `super::`,
//! macros that expand to `crate::` paths and `$crate` are not seen.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The layers, bottom first; `docs/architecture.md` draws the same table. A module may import
/// from its own layer and the layers below it, never from one above; and no set of modules
/// may import each other in a cycle, within a layer either.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "values and the clock",
        &["criticality", "clock", "u64_hash", "stripes"],
    ),
    (
        "configuration, errors, names",
        &["config", "identity", "rejection", "error", "tls", "cancel"],
    ),
    (
        "pure cores: levels, controller, metric names",
        &["monitor", "controller", "metrics"],
    ),
    ("events", &["events"]),
    (
        "limits, pool resizing, the status-transition policy",
        &["limit", "resize", "transition"],
    ),
    (
        "the pool, its sessions, shared queries, test servers",
        &["session", "pool", "single_flight", "testing"],
    ),
    (
        "admission and connections; beside them the watchdog",
        &["admission", "watchdog"],
    ),
    ("the guard", &["guard"]),
    (
        "the tower layer, health, batches",
        &["layer", "health", "batch"],
    ),
    ("the axum glue; incidents", &["axum", "incident"]),
    ("the incident reporter", &["report"]),
    ("the dashboard", &["dashboard"]),
];

/// Files that only hold deprecated forwarders to an item's new home in a higher layer, kept
/// for one release: their edges are listed but do not fail the check, and each must say
/// `#[deprecated`. Delete the file and its entry together.
const DEPRECATED_FORWARDERS: &[&str] = &["src/incident/deprecated.rs"];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The text without line comments and without `#[cfg(test)] mod name { ... }` blocks.
fn code_of(text: &str) -> String {
    let mut kept = String::new();
    for line in text.lines() {
        let code = match line.find("//") {
            // `//` inside a string (a URL) is kept: only a comment at the start of the
            // code, or after code with no quote before it, is dropped.
            Some(i) if !line[..i].contains('"') => &line[..i],
            _ => line,
        };
        kept.push_str(code);
        kept.push('\n');
    }
    let mut out = String::new();
    let mut rest = kept.as_str();
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        let trimmed = after.trim_start();
        let is_mod = trimmed.starts_with("mod ")
            && trimmed
                .find(['{', ';'])
                .is_some_and(|i| trimmed.as_bytes()[i] == b'{');
        if !is_mod {
            rest = after;
            continue;
        }
        let open = after.find('{').unwrap();
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after[open..].char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = open + i + 1;
                        break;
                    }
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

fn ident_at(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    &s[..end]
}

/// Every name right after `crate::` (each first segment of a `crate::{...}` group).
fn crate_paths(code: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().last();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 1usize;
            let mut segment_start = true;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => segment_start = true,
                    c if depth == 1 && segment_start && !c.is_whitespace() => {
                        names.push(ident_at(&group[i..]).to_string());
                        segment_start = false;
                    }
                    _ => {}
                }
            }
        } else {
            names.push(ident_at(rest).to_string());
        }
    }
    names.retain(|n| !n.is_empty());
    names
}

struct Graph {
    /// `from -> to -> files`.
    edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
    /// `file -> names imported through the crate root`.
    root_imports: BTreeMap<String, BTreeSet<String>>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let tops: BTreeSet<String> = LAYERS
        .iter()
        .flat_map(|(_, ms)| ms.iter().map(|m| m.to_string()))
        .collect();
    let mut graph = Graph {
        edges: BTreeMap::new(),
        root_imports: BTreeMap::new(),
    };
    for file in files {
        let rel = file
            .strip_prefix(&src)
            .unwrap()
            .to_string_lossy()
            .replace('\\', "/");
        if rel == "lib.rs" {
            continue;
        }
        let top = rel
            .split('/')
            .next()
            .unwrap()
            .trim_end_matches(".rs")
            .to_string();
        assert!(
            tops.contains(&top),
            "src/{rel}: its top-level module `{top}` is in no layer of the table"
        );
        let text = fs::read_to_string(&file).unwrap();
        if DEPRECATED_FORWARDERS.contains(&format!("src/{rel}").as_str()) {
            assert!(
                text.contains("#[deprecated"),
                "src/{rel} is listed as deprecated forwarders but holds none"
            );
            continue;
        }
        let code = code_of(&text);
        for name in crate_paths(&code) {
            if name.starts_with(|c: char| c.is_ascii_uppercase()) {
                graph
                    .root_imports
                    .entry(format!("src/{rel}"))
                    .or_default()
                    .insert(name);
            } else if name != top && tops.contains(&name) {
                graph
                    .edges
                    .entry(top.clone())
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(format!("src/{rel}"));
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> usize {
    LAYERS
        .iter()
        .position(|(_, ms)| ms.contains(&module))
        .unwrap()
}

/// Every cycle's modules (strongly connected components of more than one module).
fn cycles(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    let nodes: BTreeSet<&String> = edges
        .keys()
        .chain(edges.values().flat_map(|t| t.keys()))
        .collect();
    let reaches = |from: &String, to: &String| {
        let mut seen = BTreeSet::new();
        let mut stack = vec![from];
        while let Some(n) = stack.pop() {
            for next in edges.get(n).into_iter().flat_map(|t| t.keys()) {
                if next == to {
                    return true;
                }
                if seen.insert(next) {
                    stack.push(next);
                }
            }
        }
        false
    };
    let mut found: Vec<Vec<String>> = Vec::new();
    for n in &nodes {
        if found.iter().any(|c| c.contains(n)) || !reaches(n, n) {
            continue;
        }
        let component: Vec<String> = nodes
            .iter()
            .filter(|m| *m == n || (reaches(n, m) && reaches(m, n)))
            .map(|m| m.to_string())
            .collect();
        found.push(component);
    }
    found
}

/// Every violation, keyed (`upward a -> b`, `cycle a b ...`, `root file`), with its text.
fn problems() -> Vec<(String, String)> {
    let graph = graph();
    let mut problems = Vec::new();
    for (from, targets) in &graph.edges {
        for (to, files) in targets {
            if layer_of(to) > layer_of(from) {
                problems.push((
                    format!("upward {from} -> {to}"),
                    format!(
                        "upward: {from} (layer {}: {}) -> {to} (layer {}: {}) in {}",
                        layer_of(from),
                        LAYERS[layer_of(from)].0,
                        layer_of(to),
                        LAYERS[layer_of(to)].0,
                        files.iter().cloned().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
    }
    for cycle in cycles(&graph.edges) {
        let mut edges = Vec::new();
        for from in &cycle {
            for to in &cycle {
                if let Some(files) = graph.edges.get(from).and_then(|t| t.get(to)) {
                    let files: Vec<_> = files.iter().cloned().collect();
                    edges.push(format!("{from} -> {to} ({})", files.join(", ")));
                }
            }
        }
        problems.push((
            format!("cycle {}", cycle.join(" ")),
            format!("cycle: {}", edges.join("; ")),
        ));
    }
    for (file, names) in &graph.root_imports {
        let names: Vec<_> = names.iter().cloned().collect();
        problems.push((
            format!("root {file}"),
            format!(
                "through the crate root: {file} names crate::{{{}}} instead of their real homes",
                names.join(", ")
            ),
        ));
    }
    problems
}

fn report(problems: &[&(String, String)]) -> String {
    let lines: Vec<&str> = problems.iter().map(|(_, text)| text.as_str()).collect();
    format!(
        "the import graph breaks the layers of docs/architecture.md:\n  {}",
        lines.join("\n  ")
    )
}

#[test]
fn imports_point_down_the_layers_without_cycles() {
    let problems = problems();
    let all: Vec<_> = problems.iter().collect();
    assert!(all.is_empty(), "{}", report(&all));
}

/// The parser itself: comments, test modules and groups are read as documented above.
#[test]
fn the_parser_reads_paths_groups_and_skips_comments_and_tests() {
    let code = code_of(
        "use crate::events::Event;\n\
         use crate::{guard::Guard, monitor::{Level, Pressure}, Criticality};\n\
         /// see [`crate::dashboard`]\n\
         // crate::report in a comment\n\
         fn f() { let _ = crate::metrics::LEVEL; }\n\
         #[cfg(test)]\n\
         mod tests { use crate::incident::Incident; fn g() { if true {} } }\n\
         fn h() { crate::pool::build_pool(); }\n",
    );
    assert_eq!(
        crate_paths(&code),
        [
            "events",
            "guard",
            "monitor",
            "Criticality",
            "metrics",
            "pool"
        ]
    );
}

/// Every top-level module is declared in exactly one layer.
#[test]
fn every_module_has_one_layer() {
    let mut seen = BTreeSet::new();
    for (_, modules) in LAYERS {
        for m in *modules {
            assert!(seen.insert(*m), "`{m}` is in two layers");
        }
    }
    // The graph walks every file and fails on a module missing from the table.
    let _ = graph();
}
