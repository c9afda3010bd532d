//! `poolguard::testing` against real PostgreSQL servers.
//!
//! Tests that check the life cycle of a server this process starts (ports, restart, drop)
//! are skipped when `DATABASE_URL` is set, because then no server is started.

use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use poolguard::testing::{
    find_binaries, find_binaries_in, ClusterError, ClusterOptions, TestCluster,
};

fn skip_when_external(cluster: &TestCluster) -> bool {
    if cluster.is_external() {
        eprintln!("skipped: DATABASE_URL is set, so no local server was started");
    }
    cluster.is_external()
}

async fn show(cluster: &TestCluster, setting: &str) -> String {
    let client = cluster.connect().await.expect("connect");
    let row = client
        .query_one(&format!("SHOW {setting}"), &[])
        .await
        .expect("SHOW");
    row.get(0)
}

fn port_accepts(port: u16) -> bool {
    TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1)).is_ok()
}

/// A fresh empty directory for binary-lookup tests.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "poolguard-testing-{name}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

fn write_file(path: PathBuf, contents: &str, mode: u32) {
    std::fs::write(&path, contents).expect("write file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[tokio::test]
async fn started_cluster_accepts_connections_with_the_chosen_settings() {
    let started = Instant::now();
    let cluster = TestCluster::start_with(ClusterOptions {
        max_connections: 37,
        settings: vec![("work_mem".into(), "7MB".into())],
        ..ClusterOptions::default()
    })
    .await
    .expect("start cluster");
    eprintln!("cluster started in {:?}", started.elapsed());

    let client = cluster.connect().await.expect("connect");
    let sum: i32 = client.query_one("SELECT 1 + 1", &[]).await.unwrap().get(0);
    assert_eq!(sum, 2);
    assert_eq!(show(&cluster, "work_mem").await, "7MB");

    // The URL and the config name the same server and database.
    let (url_client, connection) = tokio_postgres::connect(&cluster.url(), tokio_postgres::NoTls)
        .await
        .expect("connect through url()");
    tokio::spawn(connection);
    let via_url: String = url_client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let via_client: String = client
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(via_url, via_client);

    if skip_when_external(&cluster) {
        return;
    }
    assert_eq!(show(&cluster, "max_connections").await, "37");
    assert_eq!(show(&cluster, "fsync").await, "off");
    assert_eq!(
        cluster.url(),
        format!("postgres://postgres@127.0.0.1:{}/postgres", cluster.port())
    );
    assert_eq!(cluster.pg_config().get_ports(), &[cluster.port()]);
}

#[tokio::test]
async fn two_clusters_run_side_by_side() {
    let (a, b) = tokio::join!(TestCluster::start(), TestCluster::start());
    let (a, b) = (a.expect("start a"), b.expect("start b"));

    let client_a = a.connect().await.expect("connect a");
    let client_b = b.connect().await.expect("connect b");
    client_a
        .batch_execute("CREATE TABLE only_in_a (id int)")
        .await
        .expect("create table in a");
    let in_b: i64 = client_b
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE tablename = 'only_in_a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(in_b, 0, "clusters must not share data");

    if skip_when_external(&a) {
        return;
    }
    assert_ne!(a.port(), b.port());
    assert_ne!(a.data_dir(), b.data_dir());
}

#[tokio::test]
async fn restart_keeps_data_and_stop_refuses_connections() {
    let cluster = TestCluster::start().await.expect("start cluster");
    if skip_when_external(&cluster) {
        assert!(matches!(
            cluster.stop().await,
            Err(ClusterError::External { .. })
        ));
        return;
    }
    let client = cluster.connect().await.expect("connect");
    client
        .batch_execute("CREATE TABLE kept (v text); INSERT INTO kept VALUES ('still here')")
        .await
        .expect("create table");
    drop(client);

    cluster.stop().await.expect("stop");
    assert!(cluster.connect().await.is_err(), "a stopped server refuses");
    assert!(!port_accepts(cluster.port()));
    assert!(
        cluster.data_dir().expect("local").exists(),
        "stop keeps data"
    );

    let started = Instant::now();
    cluster.restart().await.expect("restart");
    eprintln!("restarted in {:?}", started.elapsed());
    let client = cluster.connect().await.expect("connect after restart");
    let value: String = client
        .query_one("SELECT v FROM kept", &[])
        .await
        .expect("table survives a restart")
        .get(0);
    assert_eq!(value, "still here");

    // Restarting a running server works too.
    cluster.restart().await.expect("restart while running");
    assert!(cluster.connect().await.is_ok());
}

#[tokio::test]
async fn drop_stops_the_server_and_removes_its_directory() {
    let cluster = TestCluster::start().await.expect("start cluster");
    if skip_when_external(&cluster) {
        return;
    }
    let port = cluster.port();
    let root = cluster
        .data_dir()
        .expect("local")
        .parent()
        .expect("data dir has a parent")
        .to_path_buf();
    let client = cluster.connect().await.expect("connect");
    assert!(port_accepts(port));
    assert!(root.exists());

    // Dropped inside the runtime, with a client still connected.
    drop(cluster);

    assert!(!port_accepts(port), "port {port} still accepts after drop");
    assert!(!root.exists(), "{} still exists after drop", root.display());
    assert!(client.simple_query("SELECT 1").await.is_err());
}

#[test]
fn drop_outside_a_runtime_stops_the_server() {
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = runtime
        .block_on(TestCluster::start())
        .expect("start cluster");
    drop(runtime);
    if skip_when_external(&cluster) {
        return;
    }
    let port = cluster.port();
    drop(cluster);
    assert!(!port_accepts(port));
}

#[tokio::test]
async fn a_server_that_cannot_start_reports_its_log() {
    if std::env::var_os("DATABASE_URL").is_some() {
        eprintln!("skipped: DATABASE_URL is set");
        return;
    }
    let err = TestCluster::start_with(ClusterOptions {
        settings: vec![("no_such_setting".into(), "1".into())],
        ..ClusterOptions::default()
    })
    .await
    .expect_err("an unknown setting stops the server");
    assert!(matches!(err, ClusterError::ServerExited { .. }), "{err:?}");
    assert!(
        err.to_string().contains("no_such_setting"),
        "the log tail names the bad setting: {err}"
    );
}

#[test]
fn missing_binaries_explain_how_to_install_postgres() {
    let empty = scratch_dir("empty");
    let not_executable = scratch_dir("not-executable");
    write_file(not_executable.join("initdb"), "", 0o644);
    write_file(not_executable.join("postgres"), "", 0o644);
    let broken = scratch_dir("broken");
    write_file(broken.join("initdb"), "#!/bin/sh\nexit 1\n", 0o755);
    write_file(broken.join("postgres"), "#!/bin/sh\nexit 1\n", 0o755);
    let dirs = vec![
        empty.clone(),
        not_executable.clone(),
        broken.clone(),
        PathBuf::from("/nonexistent/poolguard/bin"),
    ];

    let err = find_binaries_in(&dirs).expect_err("no usable binaries");

    assert!(
        matches!(err, ClusterError::BinariesNotFound { .. }),
        "{err:?}"
    );
    let message = err.to_string();
    assert!(
        message.contains("PostgreSQL server binaries not found"),
        "{message}"
    );
    assert!(
        message.contains("apt-get install -y postgresql"),
        "{message}"
    );
    assert!(message.contains("DATABASE_URL"), "{message}");
    assert!(message.contains(&*broken.to_string_lossy()), "{message}");
    assert!(find_binaries_in(&[]).is_err());

    for dir in [empty, not_executable, broken] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn binary_lookup_skips_bogus_dirs_and_finds_the_real_ones() {
    let real = find_binaries().expect("this machine has PostgreSQL");
    assert!(real.major_version() >= 10, "{real:?}");
    let empty = scratch_dir("before-real");

    let found = find_binaries_in(&[empty.clone(), real.dir().to_path_buf()]).expect("found");

    assert_eq!(found, real);
    assert!(found.initdb().exists() && found.postgres().exists());
    let _ = std::fs::remove_dir_all(empty);
}

/// Run by `a_cluster_that_is_never_dropped_is_cleaned_up_when_the_process_ends` in a child
/// process; does nothing in a normal test run.
#[test]
fn leak_a_cluster_and_exit() {
    if std::env::var_os("POOLGUARD_LEAK_A_CLUSTER").is_none() {
        return;
    }
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let cluster = runtime
        .block_on(TestCluster::start())
        .expect("start cluster");
    let data_dir = cluster.data_dir().expect("local");
    println!(
        "LEAKED {} {}",
        cluster.port(),
        data_dir.parent().unwrap().display()
    );
    // Exit without running any destructor, as a `static` cluster or a killed test would.
    std::process::exit(0);
}

#[test]
fn a_cluster_that_is_never_dropped_is_cleaned_up_when_the_process_ends() {
    if std::env::var_os("DATABASE_URL").is_some() {
        eprintln!("skipped: DATABASE_URL is set");
        return;
    }
    let output = std::process::Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "leak_a_cluster_and_exit",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POOLGUARD_LEAK_A_CLUSTER", "1")
        .output()
        .expect("run the leaking test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let leaked = stdout
        .lines()
        .find_map(|line| line.split_once("LEAKED ").map(|(_, rest)| rest))
        .unwrap_or_else(|| {
            panic!(
                "child printed no cluster: {stdout}\n{}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
    let (port, root) = leaked.split_once(' ').expect("port and dir");
    let (port, root): (u16, PathBuf) = (port.parse().expect("port"), PathBuf::from(root));

    let deadline = Instant::now() + Duration::from_secs(20);
    while (port_accepts(port) || root.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !port_accepts(port),
        "leaked server on port {port} still runs"
    );
    assert!(
        !root.exists(),
        "leaked cluster dir {} still exists",
        root.display()
    );
}
