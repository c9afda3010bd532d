//! Single-flight for identical read-only queries: concurrent callers asking the same question
//! (the same SQL with the same parameters) run it once and share its rows.
//!
//! Opt-in, through [`Guard::query_shared`](crate::Guard::query_shared). Only the callers that
//! overlap share: the flight ends when its query returns, and the next caller runs a new one.
//! Nothing is cached. Parameters are told apart by their `Debug` rendering, length-prefixed,
//! so two calls share only when every parameter renders the same (`1` and `2`, `"a"` and
//! `"b"` never share; the same value passed as `i32` and as `i64` would).
//!
//! A failed execution is not shared: its waiters run the query again themselves, one at a
//! time, so an error is never handed to a caller whose own attempt might have worked.

use crate::error::Error;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use tokio::sync::OnceCell;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

/// The rows of one shared execution.
pub type SharedRows = Arc<Vec<Row>>;

type Flight = Arc<OnceCell<SharedRows>>;

/// The queries in flight, by key.
#[derive(Debug, Default)]
pub(crate) struct SingleFlight {
    flights: Mutex<HashMap<String, Flight>>,
}

/// The key of a query: its SQL and each parameter's `Debug` rendering, each part
/// length-prefixed so that no two different queries have the same key.
pub(crate) fn key(sql: &str, params: &[&(dyn ToSql + Sync)]) -> String {
    let mut key = String::with_capacity(sql.len() + 16 * params.len() + 8);
    let _ = write!(key, "{}:{sql}", sql.len());
    let mut rendered = String::new();
    for p in params {
        rendered.clear();
        let _ = write!(rendered, "{p:?}");
        let _ = write!(key, "|{}:{rendered}", rendered.len());
    }
    key
}

impl SingleFlight {
    /// Runs `run` for `key` unless the same key is in flight, in which case it waits for that
    /// execution and shares its rows. Returns the rows and whether this caller ran the query.
    pub(crate) async fn run<F, Fut>(&self, key: String, run: F) -> Result<(SharedRows, bool), Error>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Vec<Row>, Error>>,
    {
        let flight = {
            let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
            flights.entry(key.clone()).or_default().clone()
        };
        let mut ran = false;
        let result = flight
            .get_or_try_init(|| async {
                ran = true;
                let result = run().await.map(Arc::new);
                // The flight is over: later callers start a new one.
                self.forget(&key, &flight);
                result
            })
            .await;
        // A caller whose execution was dropped mid-way leaves the entry; so does nobody else.
        match result {
            Ok(rows) => Ok((rows.clone(), ran)),
            Err(e) => {
                self.forget(&key, &flight);
                Err(e)
            }
        }
    }

    fn forget(&self, key: &str, flight: &Flight) {
        let mut flights = self.flights.lock().unwrap_or_else(|p| p.into_inner());
        if flights.get(key).is_some_and(|f| Arc::ptr_eq(f, flight)) {
            flights.remove(key);
        }
    }

    /// How many distinct queries are in flight.
    #[cfg(test)]
    pub(crate) fn in_flight(&self) -> usize {
        self.flights.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_sql_and_parameters_apart() {
        let a = key("SELECT $1", &[&1i32]);
        assert_eq!(a, key("SELECT $1", &[&1i32]));
        assert_ne!(a, key("SELECT $1", &[&2i32]));
        assert_ne!(a, key("SELECT $2", &[&1i32]));
        // Length prefixes: a parameter cannot pretend to be two.
        assert_ne!(
            key("q", &[&"a|1:b".to_string()]),
            key("q", &[&"a".to_string(), &"b".to_string()])
        );
        assert_ne!(key("q", &[&"1".to_string()]), key("q", &[&1i32]));
    }

    #[tokio::test]
    async fn concurrent_identical_calls_run_once_and_a_failure_is_not_shared() {
        let flights = Arc::new(SingleFlight::default());
        let runs = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (go, wait) = tokio::sync::watch::channel(false);
        let tasks: Vec<_> = (0..10)
            .map(|_| {
                let (flights, runs, mut wait) = (flights.clone(), runs.clone(), wait.clone());
                tokio::spawn(async move {
                    flights
                        .run("k".into(), || async move {
                            runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            let _ = wait.wait_for(|go| *go).await;
                            Ok(Vec::new())
                        })
                        .await
                        .map(|(rows, ran)| (rows.len(), ran))
                })
            })
            .collect();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(flights.in_flight(), 1);
        go.send(true).unwrap();
        let mut leaders = 0;
        for t in tasks {
            let (_, ran) = t.await.unwrap().unwrap();
            leaders += ran as usize;
        }
        assert_eq!(runs.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert_eq!(leaders, 1);
        assert_eq!(flights.in_flight(), 0, "nothing is cached");
        let failed = flights
            .run("k".into(), || async { Err(Error::MissingLayer) })
            .await;
        assert!(failed.is_err());
        assert_eq!(flights.in_flight(), 0);
    }
}
