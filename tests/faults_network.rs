//! Network faults between the pool and PostgreSQL, made by a real TCP proxy: a stall (bytes
//! held, sockets open) and a black hole (bytes dropped). The server never sees the stalled
//! queries, so only the client side can bound them: the query deadline, keepalive and
//! `TCP_USER_TIMEOUT`.

mod common;

use common::faults::{Rig, RigOptions};
use common::proxy::Mode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Load for `before`, the fault for `fault`, then load until recovery; returns the ledger
/// and the recovery time.
async fn under_fault(rig: &Rig, mode: Mode, fault: Duration) -> (common::faults::Ledger, Duration) {
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(6, |id| format!("/write?id={id}&ms=20"), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.proxy().set(mode);
    tokio::time::sleep(fault).await;
    rig.proxy().set(Mode::Pass);
    let ended = Instant::now();
    let recovery = rig.recovery(ended).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    (load.await.unwrap(), recovery)
}

#[tokio::test]
async fn a_stalled_network_never_hangs_a_request() {
    let rig = Rig::start(RigOptions {
        via_proxy: true,
        ..RigOptions::default()
    })
    .await;
    let stall = Duration::from_secs(6);
    let (ledger, recovery) = under_fault(&rig, Mode::Stall, stall).await;
    // No request waited for the stall to end.
    assert!(
        ledger.longest() < stall - Duration::from_secs(2),
        "{:?}",
        ledger.longest()
    );
    // Queries caught in the stall were answered at their deadline, not at its end.
    assert!(
        ledger
            .records
            .iter()
            .any(|r| r.status == Some(504) && r.body.contains("query_deadline")),
        "{:?}",
        ledger.statuses()
    );
    assert!(ledger.count(200) > 0);
    rig.check("network stall 6 s", &ledger, recovery).await;
}

#[tokio::test]
async fn a_network_that_drops_bytes_never_hangs_a_request() {
    let rig = Rig::start(RigOptions {
        via_proxy: true,
        ..RigOptions::default()
    })
    .await;
    let before = rig.proxy().accepted();
    let (ledger, recovery) = under_fault(&rig, Mode::Drop, Duration::from_secs(3)).await;
    assert!(ledger.count(504) > 0, "{:?}", ledger.statuses());
    // The connections that lost bytes were replaced, not reused.
    assert!(rig.proxy().accepted() > before);
    rig.check("network drops bytes 3 s", &ledger, recovery)
        .await;
}

#[tokio::test]
async fn connections_cut_by_the_network_are_replaced() {
    let rig = Rig::start(RigOptions {
        via_proxy: true,
        ..RigOptions::default()
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(6, |id| format!("/write?id={id}&ms=20"), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.proxy().cut();
    let ended = Instant::now();
    let recovery = rig.recovery(ended).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let ledger = load.await.unwrap();
    rig.check("connections cut", &ledger, recovery).await;
}

/// The watchdog's own connection goes through the proxy too: its queries time out in the
/// stall, it drops the connection and reconnects once the network is back, and the server
/// reading is held (marked stale) meanwhile instead of staying frozen or dropping to zero.
#[tokio::test]
async fn the_watchdog_comes_back_after_a_stall() {
    let rig = Rig::start(RigOptions {
        via_proxy: true,
        ..RigOptions::default()
    })
    .await;
    let mut events = rig.guard.subscribe();
    common::eventually("a first reading", Duration::from_secs(10), || async {
        rig.guard.server_use().is_some()
    })
    .await;
    let first = rig.guard.server_use().unwrap();
    rig.proxy().set(Mode::Stall);
    common::eventually(
        "the reading is marked stale",
        Duration::from_secs(10),
        || async { rig.guard.server_use().is_some_and(|h| h.stale) },
    )
    .await;
    let held = rig.guard.server_use().unwrap();
    assert_eq!(held.used, first.used, "held, not dropped to zero");
    assert_eq!(rig.guard.status().server_utilization, held.utilization);
    tokio::time::sleep(Duration::from_secs(2)).await;
    rig.proxy().set(Mode::Pass);
    let back = Instant::now();
    common::eventually(
        "a fresh reading after the stall",
        Duration::from_secs(10),
        || async {
            rig.guard
                .server_use()
                .is_some_and(|h| !h.stale && h.sampled_at > held.sampled_at)
        },
    )
    .await;
    println!(
        "FAULT | watchdog through a 2 s stall | - | - | {} ms | reading fresh again",
        back.elapsed().as_millis()
    );
    let mut stale_events = 0;
    while let Some(e) = events.try_recv() {
        if e.kind.tag() == "custom:server_reading_stale" {
            stale_events += 1;
        }
    }
    assert_eq!(stale_events, 1, "one event per episode");
    rig.check_accounting("watchdog through a stall").await;
}
