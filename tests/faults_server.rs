//! Server faults: PostgreSQL restarted mid-load, backends terminated from outside, and
//! `max_connections` reached by another application, for the pool and for the watchdog.

mod common;

use common::faults::{Rig, RigOptions, APP};
use poolguard::Level;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Another process (this test binary again, running [`hog_process`]) that takes every
/// connection slot of the server and keeps retrying, so it takes any slot freed, until it is
/// killed.
struct Hog {
    child: std::process::Child,
}

impl Hog {
    async fn start(url: String) -> Hog {
        use std::io::BufRead;
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "hog_process",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("POOLGUARD_HOG_URL", url)
            // Its stdin closes when this process ends, however it ends: the hog then exits.
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start the hog process");
        let stdout = child.stdout.take().unwrap();
        tokio::task::spawn_blocking(move || {
            let lines = std::io::BufReader::new(stdout).lines();
            for line in lines.map_while(Result::ok) {
                if line.contains("HOG FULL") {
                    return;
                }
            }
            panic!("the hog process ended before the server was full");
        })
        .await
        .unwrap();
        Hog { child }
    }

    async fn release(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Hog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The hog's body, run in its own process by [`Hog::start`]: connect until the server
/// refuses, say so, and keep taking any slot that frees up.
#[test]
#[ignore = "run as a separate process by the max_connections tests"]
fn hog_process() {
    let Ok(url) = std::env::var("POOLGUARD_HOG_URL") else {
        return;
    };
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        let mut pg: tokio_postgres::Config = url.parse().unwrap();
        pg.application_name("hog");
        let mut held = Vec::new();
        let mut said = false;
        loop {
            match pg.connect(tokio_postgres::NoTls).await {
                Ok((client, conn)) => {
                    tokio::spawn(conn);
                    held.push(client);
                }
                Err(_) => {
                    if !said {
                        println!("HOG FULL {}", held.len());
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        }
    });
}

async fn hog_backends(rig: &Rig) -> i64 {
    rig.admin
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'hog'",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

async fn terminate(rig: &Rig, app: &str) -> i64 {
    let row = rig
        .admin
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = $1",
            &[&app],
        )
        .await
        .unwrap();
    row.get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_mid_load_is_answered_and_heals() {
    let mut rig = Rig::start(RigOptions::default()).await;
    if rig.pg.is_external() {
        eprintln!("DATABASE_URL is set: this test needs a server it can restart; skipped");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(6, |id| format!("/write?id={id}&ms=20"), stop.clone());
    tokio::time::sleep(Duration::from_millis(500)).await;
    rig.pg.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    rig.pg.restart().await.unwrap();
    let back = Instant::now();
    let recovery = rig.recovery(back).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let ledger = load.await.unwrap();
    // The admin connection died with the server.
    rig.admin = rig.pg.connect().await.unwrap();
    rig.check("server restart", &ledger, recovery).await;
}

#[tokio::test]
async fn backends_terminated_from_outside_cost_one_wave_each() {
    let rig = Rig::start(RigOptions::default()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(6, |id| format!("/write?id={id}&ms=20"), stop.clone());
    let mut recovery = Duration::ZERO;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(terminate(&rig, APP).await > 0);
        recovery = recovery.max(rig.recovery(Instant::now()).await);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let ledger = load.await.unwrap();
    // A request on a terminated backend is told to retry (503), never a 500.
    assert!(ledger.count(200) > 0);
    rig.check("backends terminated x3", &ledger, recovery).await;
}

/// The server is full (another application holds every slot and takes any freed one) and the
/// pool's connections die: every request is answered 503 within its bound, `/health` says
/// what the server said (SQLSTATE 53300), and the pool heals once the slots come back.
#[tokio::test]
async fn a_full_server_is_answered_and_named_for_the_pool() {
    let rig = Rig::start(RigOptions {
        watchdog: false,
        ..RigOptions::default()
    })
    .await;
    if rig.pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let load = rig.load(4, |id| format!("/write?id={id}&ms=20"), stop.clone());
    tokio::time::sleep(Duration::from_millis(300)).await;
    let hog = Hog::start(rig.pg.url()).await;
    assert!(hog_backends(&rig).await > 0);
    // The pool's connections go; the hog takes their slots.
    terminate(&rig, APP).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, health) = rig.health().await;
    assert_eq!(status, Some(503), "{health}");
    let error = health["database"]["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("53300") && error.contains("too many clients"),
        "the server's message and SQLSTATE reach /health: {error}"
    );
    hog.release().await;
    let released = Instant::now();
    let recovery = rig.recovery(released).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    let ledger = load.await.unwrap();
    assert!(ledger.count(503) > 0, "{:?}", ledger.statuses());
    rig.check("max_connections reached (pool)", &ledger, recovery)
        .await;
}

/// The watchdog loses its connection while the server is full and cannot reconnect: the
/// server reading is not dropped to zero but held at full, marked stale, and the level never
/// falls to Normal while the server is still full.
#[tokio::test]
async fn a_full_server_is_not_read_as_an_idle_one_by_the_watchdog() {
    let rig = Rig::start(RigOptions::default()).await;
    if rig.pg.is_external() {
        eprintln!("DATABASE_URL is set: the server's max_connections is not ours; skipped");
        return;
    }
    common::eventually("a first reading", Duration::from_secs(10), || async {
        rig.guard.server_use().is_some()
    })
    .await;
    let mut events = rig.guard.subscribe();
    let hog = Hog::start(rig.pg.url()).await;
    common::eventually(
        "the level sees the full server",
        Duration::from_secs(10),
        || async { rig.guard.level() == Level::Critical },
    )
    .await;
    let mut level = rig.guard.watch_level();
    level.mark_unchanged();
    // The watchdog's connection goes; the hog takes its slot.
    assert_eq!(terminate(&rig, &format!("{APP}:watchdog")).await, 1);
    let cut = Instant::now();
    common::eventually(
        "the reading is marked stale",
        Duration::from_secs(10),
        || async { rig.guard.server_use().is_some_and(|h| h.stale) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let h = rig.guard.server_use().unwrap();
    assert!(h.stale && h.utilization >= 1.0, "held at full: {h:?}");
    assert!(h.used >= h.usable, "{h:?}");
    assert_eq!(rig.guard.level(), Level::Critical);
    assert!(
        !level.has_changed().unwrap(),
        "the level never left Critical while the server was full"
    );
    let (_, health) = rig.health().await;
    assert_eq!(health["server"]["stale"], true, "{health}");
    let mut stale = None;
    while let Some(e) = events.try_recv() {
        if e.kind.tag() == "custom:server_reading_stale" {
            stale = Some(e);
        }
    }
    let stale = stale.expect("an event says the reading is stale");
    assert!(stale.message().contains("full"), "{}", stale.message());
    hog.release().await;
    let released = Instant::now();
    common::eventually("fresh and calm again", Duration::from_secs(15), || async {
        rig.guard.server_use().is_some_and(|h| !h.stale) && rig.guard.level() == Level::Normal
    })
    .await;
    println!(
        "FAULT | max_connections reached (watchdog) | - | - | {} ms | level held Critical for {} ms while full",
        released.elapsed().as_millis(),
        (released - cut).as_millis()
    );
    rig.check_accounting("max_connections reached (watchdog)")
        .await;
}
