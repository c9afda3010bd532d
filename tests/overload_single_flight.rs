//! Single-flight: concurrent identical read-only queries run once and share their rows;
//! different parameters never share.

mod common;

use common::{cluster, guard};
use poolguard::{AcquireContext, Criticality, GuardConfig};

const SQL: &str = "SELECT $1::int AS asked, pg_backend_pid() AS pid,
                          clock_timestamp()::text AS at, pg_sleep(0.4)::text";

async fn ask(guard: &poolguard::Guard, value: i32) -> (i32, i32, String) {
    let rows = guard
        .query_shared(
            Criticality::NonCritical,
            AcquireContext::default(),
            SQL,
            &[&value],
        )
        .await
        .unwrap();
    (rows[0].get(0), rows[0].get(1), rows[0].get(2))
}

#[tokio::test]
async fn identical_queries_share_one_execution_and_different_parameters_never_do() {
    let pg = cluster(30).await;
    let guard = guard(&pg, 10, GuardConfig::default()).await;
    let before = guard.grants_total();
    let calls: Vec<_> = (0..30i32)
        .map(|i| {
            let g = guard.clone();
            tokio::spawn(async move { ask(&g, i % 2).await })
        })
        .collect();
    let mut answers = Vec::new();
    for c in calls {
        answers.push(c.await.unwrap());
    }
    // Two questions: two executions, two slots, however many asked.
    assert_eq!(guard.grants_total() - before, 2);
    for value in [0, 1] {
        let mine: Vec<_> = answers.iter().filter(|a| a.0 == value).collect();
        assert_eq!(
            mine.len(),
            15,
            "every caller got the rows of its own question"
        );
        assert!(
            mine.iter().all(|a| a.1 == mine[0].1 && a.2 == mine[0].2),
            "one backend, one execution for {value}: {mine:?}"
        );
    }
    let (zero, one) = (
        answers.iter().find(|a| a.0 == 0).unwrap(),
        answers.iter().find(|a| a.0 == 1).unwrap(),
    );
    assert_ne!(
        (zero.1, &zero.2),
        (one.1, &one.2),
        "never shared across parameters"
    );

    // Nothing is cached: the same question asked again runs again.
    let again = ask(&guard, 0).await;
    assert_eq!(guard.grants_total() - before, 3);
    assert_ne!(again.2, zero.2);
}
