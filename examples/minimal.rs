//! The minimal axum integration: one critical route, one non-critical route and `/health`,
//! all behind one guard.
//!
//! ```text
//! cargo run --example minimal
//! ```
//!
//! Uses `DATABASE_URL` when set, otherwise a throwaway local PostgreSQL (needs the server
//! binaries). Serves on a free loopback port, makes three requests to itself, prints the
//! answers and exits.

use axum::{routing::get, Router};
use poolguard::{testing::TestCluster, Conn, Error, Guard, PoolOptions};

async fn session(conn: Conn) -> Result<String, Error> {
    let row = conn.query_one("SELECT 'signed in'", &[]).await?;
    Ok(row.get(0))
}

async fn activity_report(conn: Conn) -> Result<String, Error> {
    let row = conn
        .query_one("SELECT count(*)::text FROM pg_stat_activity", &[])
        .await?;
    Ok(row.get(0))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The database: a fresh one on DATABASE_URL when set, otherwise a throwaway local
    // server; both go away with `cluster`.
    let cluster = TestCluster::start().await?;
    let pg = cluster.pg_config();

    // The integration itself.
    let options = PoolOptions {
        max_size: 10,
        ..PoolOptions::default()
    };
    let guard = Guard::builder_for(pg, &options)?.build()?;
    let app = Router::new()
        .route("/api/auth/session", get(session))
        .route_layer(guard.critical())
        .merge(
            Router::new()
                .route("/api/reports/activity", get(activity_report))
                .route_layer(guard.non_critical()),
        )
        .route("/health", guard.health_route());

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    println!("serving on http://{addr}");

    // Three requests to ourselves, then stop.
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    for path in ["/api/auth/session", "/api/reports/activity", "/health"] {
        let response = client.get(format!("http://{addr}{path}").parse()?).await?;
        let status = response.status();
        let body = http_body_util::BodyExt::collect(response.into_body())
            .await?
            .to_bytes();
        println!("GET {path} -> {status} {}", String::from_utf8_lossy(&body));
    }
    server.abort();
    Ok(())
}
