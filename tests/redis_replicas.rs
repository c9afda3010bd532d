//! Several app processes (this test binary, started again as replicas) share one real Redis
//! (`redis-server` started by the harness): a user's rate limit holds across them, and the
//! in-flight slots of a replica killed with SIGKILL do not stay counted.

mod common;

use common::{eventually, serve, HttpClient};
use poolguard::limit::redis::RedisLimits;
use poolguard::testing::TestRedis;
use poolguard::{Guard, GuardConfig, PoolOptions, UserKey, UserLimits};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const RATE: u32 = 40;
const BURST: u32 = 10;
const LOAD_FOR: Duration = Duration::from_secs(3);

/// What one replica process is started with.
struct ReplicaSpec {
    redis_url: String,
    instance: String,
    shared: bool,
    rate: u32,
    in_flight: u32,
}

/// A replica process; killed on drop.
struct Replica {
    child: Child,
    addr: SocketAddr,
}

impl Replica {
    fn start(spec: &ReplicaSpec) -> Replica {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "replica_process",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(
                "POOLGUARD_REPLICA",
                format!(
                    "{}|{}|{}|{}|{}",
                    spec.redis_url,
                    spec.instance,
                    u8::from(spec.shared),
                    spec.rate,
                    spec.in_flight
                ),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start a replica process");
        let stdout = child.stdout.take().unwrap();
        let addr = BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|line| line.split("LISTENING ").nth(1)?.trim().parse().ok())
            .expect("the replica names its address");
        Replica { child, addr }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs only inside a replica process: an app whose `/work` answers at once and `/slow`
/// after 30 s, both under the guard's per-user limits, keyed by `x-user-id`. Exits when the
/// parent closes its stdin.
#[test]
fn replica_process() {
    let Ok(spec) = std::env::var("POOLGUARD_REPLICA") else {
        return;
    };
    let parts: Vec<&str> = spec.split('|').collect();
    let (redis_url, instance, shared) = (parts[0], parts[1], parts[2] == "1");
    let (rate, in_flight): (u32, u32) = (parts[3].parse().unwrap(), parts[4].parse().unwrap());
    std::thread::spawn(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
        std::process::exit(0);
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async move {
        // The routes never touch the database: the pool is never asked for a connection.
        let pg: tokio_postgres::Config = "postgres://app@127.0.0.1:9/app".parse().unwrap();
        let guard = Guard::builder_for(pg, &PoolOptions::default())
            .unwrap()
            .config(GuardConfig {
                limits: UserLimits {
                    rate_per_second: rate,
                    burst: BURST,
                    in_flight,
                    tight_rate_per_second: rate,
                    tight_burst: BURST,
                    tight_in_flight: in_flight,
                    ..UserLimits::default()
                },
                ..GuardConfig::default()
            })
            .build()
            .unwrap();
        if shared {
            let mut limits = RedisLimits::new(redis_url);
            limits.instance = instance.to_string();
            limits.heartbeat_interval = Duration::from_millis(200);
            limits.heartbeat_ttl = Duration::from_millis(1500);
            // Generous for a loaded test machine: a timeout would switch to the fallback.
            limits.timeout = Duration::from_millis(500);
            let shared = guard.share_limits(limits).await.unwrap();
            // Start serving once Redis is in use, not on the fallback of a slow start.
            let started = Instant::now();
            while !shared.stats().available && started.elapsed() < Duration::from_secs(10) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let by_header = |h: &http::HeaderMap, _: &http::Extensions| {
            h.get("x-user-id")
                .map(|v| UserKey::from_untrusted(v.as_bytes(), 64))
        };
        let router = axum::Router::new()
            .route("/work", axum::routing::get(|| async { "ok" }))
            .route(
                "/slow",
                axum::routing::get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "slow"
                }),
            )
            .layer(guard.standard().key_extractor(by_header));
        let addr = serve(router).await;
        println!("LISTENING {addr}");
        std::future::pending::<()>().await;
    });
}

/// Sends requests as `user` to every replica in turn, as fast as they answer, for
/// `LOAD_FOR`; returns how many were served (200).
async fn load(replicas: &[Replica], user: &str) -> u64 {
    let deadline = Instant::now() + LOAD_FOR;
    let mut tasks = Vec::new();
    for (i, replica) in replicas.iter().enumerate() {
        for _ in 0..4 {
            let client = HttpClient::new(replica.addr);
            let user = user.to_string();
            tasks.push(tokio::spawn(async move {
                let mut served = 0u64;
                while Instant::now() < deadline {
                    let reply = client.get("/work", Some(&user)).await;
                    match reply.status {
                        200 => served += 1,
                        429 => {}
                        other => panic!("replica {i} answered {other}"),
                    }
                }
                served
            }));
        }
    }
    let mut served = 0;
    for task in tasks {
        served += task.await.unwrap();
    }
    served
}

fn three(redis: &TestRedis, shared: bool, rate: u32, in_flight: u32) -> Vec<Replica> {
    (0..3)
        .map(|i| {
            Replica::start(&ReplicaSpec {
                redis_url: redis.url(),
                instance: format!("replica-{i}"),
                shared,
                rate,
                in_flight,
            })
        })
        .collect()
}

#[tokio::test]
async fn three_replica_processes_hold_one_users_limit_together() {
    let redis = TestRedis::start().await.expect("start redis-server");
    // What the limit allows over the load: the burst, then RATE per second.
    let allowed = f64::from(BURST) + f64::from(RATE) * LOAD_FOR.as_secs_f64();

    let shared = three(&redis, true, RATE, 1000);
    let served_shared = load(&shared, "alice").await;
    drop(shared);

    // The same three replicas with in-process limits: each gives the user the full quota.
    let local = three(&redis, false, RATE, 1000);
    let served_local = load(&local, "alice").await;
    drop(local);

    let per_second = |n: u64| n as f64 / LOAD_FOR.as_secs_f64();
    println!(
        "3 replicas, limit {RATE}/s (burst {BURST}) over {:?}: shared in Redis {served_shared} \
         served ({:.1}/s, {:.2} x the allowed {allowed}); in-process {served_local} served \
         ({:.1}/s)",
        LOAD_FOR,
        per_second(served_shared),
        served_shared as f64 / allowed,
        per_second(served_local),
    );
    assert!(
        served_shared as f64 <= 1.1 * allowed,
        "the shared limit holds across replicas: {served_shared} > 1.1 x {allowed}"
    );
    assert!(
        served_shared as f64 >= 0.5 * allowed,
        "the shared limit still serves the user's quota: {served_shared}"
    );
    assert!(
        served_local as f64 > 2.0 * allowed,
        "in-process limits give each replica the full quota: {served_local}"
    );
}

#[tokio::test]
async fn in_flight_slots_of_a_killed_replica_are_released() {
    let redis = TestRedis::start().await.expect("start redis-server");
    // A rate that polling never reaches: only the in-flight cap refuses.
    let mut replicas = three(&redis, true, 100_000, 2);
    // Replica 0 holds both of bob's in-flight slots.
    let mut held = Vec::new();
    for _ in 0..2 {
        held.push(hold_slow_request(replicas[0].addr, "bob").await);
    }
    // Both reach Redis before anyone else asks (a concurrent request could take the
    // second slot first).
    let redis_client = redis::Client::open(redis.url()).unwrap();
    let redis_conn = redis_client
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    eventually(
        "both of bob's slots held in Redis",
        Duration::from_secs(10),
        || {
            let mut conn = redis_conn.clone();
            async move {
                let held: i64 = redis::cmd("ZCARD")
                    .arg("poolguard:in-flight:bob")
                    .query_async(&mut conn)
                    .await
                    .unwrap();
                held == 2
            }
        },
    )
    .await;
    drop(redis_conn);
    let other = HttpClient::new(replicas[1].addr);
    eventually(
        "both slots held across replicas",
        Duration::from_secs(10),
        || async { other.get("/work", Some("bob")).await.status == 429 },
    )
    .await;
    let reply = other.get("/work", Some("bob")).await;
    assert!(reply.body.contains("in_flight_limit"), "{}", reply.body);

    // SIGKILL: replica 0 never releases them; its heartbeat expires after 1.5 s.
    replicas[0].kill();
    let killed = Instant::now();
    eventually(
        "the dead replica's slots are dropped",
        Duration::from_secs(10),
        || async { other.get("/work", Some("bob")).await.status == 200 },
    )
    .await;
    println!(
        "in-flight slots of the killed replica released after {:?}",
        killed.elapsed()
    );
    drop(held);
}

/// Sends `GET /slow` as `user` over a raw connection and leaves it waiting for the answer.
async fn hold_slow_request(addr: SocketAddr, user: &str) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /slow HTTP/1.1\r\nhost: replica\r\nx-user-id: {user}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}
