//! The tracing spans around the watchdog's actions, with the fields people filter on.

mod common;

use common::{cluster, guard_with, pool_options};
use poolguard::watchdog::{Watchdog, WatchdogConfig};
use poolguard::{AcquireContext, Criticality, GuardConfig, PoolOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A `MakeWriter` into a shared buffer.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// One thread: the subscriber set for it sees the watchdog's task too.
#[tokio::test(flavor = "current_thread")]
async fn a_watchdog_cancel_runs_in_a_span_with_its_class_route_and_outcome() {
    let captured = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(captured.clone())
        .with_ansi(false)
        .with_env_filter("poolguard::watchdog=info")
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
        .finish();
    let _default = tracing::subscriber::set_default(subscriber);

    let pg = cluster(20).await;
    let options = PoolOptions {
        statement_timeout: Duration::from_secs(120),
        ..pool_options(4)
    };
    let guard = guard_with(&pg, options, GuardConfig::default()).await;
    let watchdog = Watchdog::builder(&guard)
        .config(WatchdogConfig {
            interval: Duration::from_millis(100),
            kill_after: Duration::from_millis(500),
            // Tagged connections tell the watchdog each backend's class and route.
            tag_connections: true,
            ..WatchdogConfig::default()
        })
        .spawn()
        .unwrap();
    let conn = guard
        .acquire_with(
            Criticality::Standard,
            AcquireContext {
                route: Some("/reports/slow".into()),
                ..AcquireContext::default()
            },
        )
        .await
        .unwrap();
    let err = conn.query("SELECT pg_sleep(30)", &[]).await.unwrap_err();
    // Cancelled on the server: SQLSTATE 57014.
    assert!(err.to_string().contains("query canceled"), "{err}");
    assert!(
        err.is_query_canceled() && !err.hit_statement_timeout(),
        "{err:?}"
    );
    drop(conn);
    watchdog.stop().await;

    let log = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let line = log
        .lines()
        .find(|l| l.contains("watchdog_action") && l.contains("action=\"cancel_query\""))
        .unwrap_or_else(|| panic!("no watchdog_action span closed:\n{log}"));
    for field in [
        "class=\"standard\"",
        "route=\"/reports/slow\"",
        "fingerprint=SELECT pg_sleep(?)",
        "dry_run=false",
        "outcome=\"done\"",
        "pid=",
        "elapsed_ms=",
    ] {
        assert!(line.contains(field), "{field} missing from `{line}`");
    }
}
