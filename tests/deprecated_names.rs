//! Code written against the names of earlier releases still compiles, and the old names
//! answer like the new ones. No server is needed: building a guard opens no connection.
#![allow(deprecated)]

use poolguard::events::{BreakerState, EventBus, NonCriticalGate, OutcomeCounts};
use poolguard::incident::{Action, Impact, IncidentStore};
use poolguard::watchdog::{ServerHeadroom, ServerUse};
use poolguard::{Error, Guard, PoolOptions};

fn pg() -> tokio_postgres::Config {
    let mut pg = tokio_postgres::Config::new();
    pg.host("127.0.0.1")
        .port(1)
        .user("nobody")
        .dbname("nothing");
    pg
}

#[tokio::test]
async fn the_old_builder_names_build_the_same_guard() {
    let old = Guard::connect(pg(), &PoolOptions::default())
        .unwrap()
        .build()
        .unwrap();
    let new = Guard::builder_for(pg(), &PoolOptions::default())
        .unwrap()
        .build()
        .unwrap();
    assert_eq!(old.config(), new.config());
    assert_eq!(old.pool().status().max_size, new.pool().status().max_size);
    let url = Guard::connect_url(
        "postgres://nobody@127.0.0.1:1/nothing",
        &PoolOptions::default(),
    );
    assert!(url.is_ok());

    // The old reading accessor and type name.
    let reading: Option<ServerHeadroom> = old.server_headroom();
    assert_eq!(reading, old.server_use());
    assert!(reading.is_none(), "no watchdog, no reading");

    // The old status field holds the gate, like the new one.
    let status = old.status();
    assert_eq!(status.breaker, status.non_critical_gate);
    assert_eq!(status.breaker, BreakerState::Closed);
    assert_eq!(status.non_critical_gate, NonCriticalGate::Direct);
    let json = serde_json::to_value(status).unwrap();
    assert_eq!(json["breaker"], "closed", "the serialized name stays");
}

#[test]
fn the_old_gate_and_action_names_match_in_patterns() {
    let gate = NonCriticalGate::Deferred;
    let old_name = match gate {
        BreakerState::Closed => "closed",
        BreakerState::Open => "open",
        BreakerState::HalfOpen => "half_open",
    };
    assert_eq!(old_name, "open");
    assert!(matches!(Action::NonCriticalDeferred, Action::BreakerOpened));
    let json = serde_json::to_value(Action::BreakerOpened).unwrap();
    assert_eq!(json, "breaker_opened");
}

#[test]
fn the_old_impact_and_error_names_answer_like_the_new_ones() {
    let impact = Impact {
        counts: OutcomeCounts {
            shed: [1, 0, 0],
            queue_full: [0, 2, 0],
            pool_unavailable: [0, 0, 3],
            ..OutcomeCounts::default()
        },
        failed: 0,
    };
    assert_eq!(impact.shed(), impact.refused());
    assert_eq!(impact.refused(), 6, "every 503 refusal");
    assert_eq!(impact.critical_failed(), 3);

    let e = Error::MissingLayer;
    assert_eq!(e.is_statement_timeout(), e.is_query_canceled());
    let _: fn(&ServerUse) -> u32 = ServerUse::free;
}

#[tokio::test]
async fn the_incident_pipeline_still_starts_from_its_old_path() {
    let bus = EventBus::new(16);
    let task = poolguard::incident::spawn_incident_pipeline(&bus, IncidentStore::default(), None);
    drop(bus);
    tokio::time::timeout(std::time::Duration::from_secs(10), task)
        .await
        .expect("the pipeline ends with its bus")
        .unwrap();
}
