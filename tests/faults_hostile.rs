//! Hostile clients: identities they choose themselves, malformed headers and request lines,
//! hostile query values; and property tests of key extraction, configuration and policy
//! parsing.

mod common;

use axum::routing::get;
use axum::Router;
use common::faults::{Ledger, Rig, RigOptions};
use common::{cluster, guard, serve, HttpClient};
use poolguard::limit::{DefaultKeyExtractor, KeyExtractor, UserKey};
use poolguard::transition::TransitionPolicy;
use poolguard::{Conn, Error, GuardConfig, UserLimits};
use proptest::prelude::*;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn ok(conn: Conn) -> Result<&'static str, Error> {
    conn.query_one("SELECT 1", &[]).await?;
    Ok("ok")
}

/// The application's authentication: a bearer token becomes the `UserKey` extension.
async fn authenticate(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let user = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|token| UserKey::new(format!("token:{token}")));
    if let Some(user) = user {
        req.extensions_mut().insert(user);
    }
    next.run(req).await
}

/// By default no client picks its own identity: rotating `x-user-id` does not escape the
/// rate limit (the client is keyed by its address), and sending a victim's id does not spend
/// the victim's quota (the victim is keyed by its authentication).
#[tokio::test]
async fn a_client_cannot_choose_its_identity_by_default() {
    let pg = cluster(20).await;
    let config = GuardConfig {
        limits: UserLimits {
            rate_per_second: 1,
            burst: 10,
            tight_rate_per_second: 1,
            tight_burst: 10,
            ..UserLimits::default()
        },
        ..GuardConfig::default()
    };
    let guard = guard(&pg, 4, config).await;
    let app = Router::new()
        .route("/q", get(ok))
        .route_layer(guard.standard())
        .layer(axum::middleware::from_fn(authenticate));
    let http = HttpClient::new(serve(app).await);

    // An attacker rotating ids: one identity (its address) however many ids it sends.
    let mut refused = 0;
    for i in 0..40 {
        let r = http.get("/q", Some(&format!("rotating-{i}"))).await;
        assert_ne!(r.status, 500);
        if r.status == 429 {
            refused += 1;
        }
    }
    assert!(
        refused >= 25,
        "rotating the header escaped the limit: {refused} of 40 refused"
    );

    // The attacker sends the victim's id; the victim, authenticated, is untouched.
    for _ in 0..20 {
        http.get("/q", Some("token:victim")).await;
    }
    let victim = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let mut served = 0;
    for _ in 0..10 {
        let req = http::Request::get(format!("http://{}/q", http_addr(&http)))
            .header("authorization", "Bearer victim")
            .body(http_body_util::Empty::new())
            .unwrap();
        if victim.request(req).await.unwrap().status() == 200 {
            served += 1;
        }
    }
    assert_eq!(
        served, 10,
        "the victim's quota was not spent by the attacker"
    );
}

fn http_addr(http: &HttpClient) -> std::net::SocketAddr {
    http.addr()
}

/// Sends raw bytes as one request and returns the status code of the answer.
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> Option<u16> {
    let mut s = tokio::net::TcpStream::connect(addr).await.ok()?;
    s.write_all(request).await.ok()?;
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    head.split_whitespace().nth(1)?.parse().ok()
}

/// Malformed headers, request lines and hostile query values are answered (never a 500,
/// never a hang), and leave the pool exact and nothing stored that should not be.
#[tokio::test]
async fn hostile_headers_and_query_values_are_answered_and_leave_nothing_behind() {
    let rig = Rig::start(RigOptions::default()).await;
    let started = Instant::now();
    let hostile_requests: Vec<Vec<u8>> = vec![
        b"GET /read?ms=0 HTTP/1.1\r\nHost: x\r\nX-User-Id: \x01\x02\xff\xfe\r\n\r\n".to_vec(),
        format!(
            "GET /read?ms=0 HTTP/1.1\r\nHost: x\r\nX-User-Id: {}\r\n\r\n",
            "u".repeat(60_000)
        )
        .into_bytes(),
        format!(
            "GET /read?{} HTTP/1.1\r\nHost: x\r\n\r\n",
            "a=1&".repeat(5_000)
        )
        .into_bytes(),
        format!(
            "GET /read?ms=0 HTTP/1.1\r\nHost: x\r\n{}\r\n",
            "X-A: b\r\n".repeat(500)
        )
        .into_bytes(),
        b"GET /read?ms=0 HTTP/1.1\r\nHost: x\r\nX-User-Id: a\r\nX-User-Id: b\r\n\r\n".to_vec(),
        b"GET /\x00\x01 HTTP/1.1\r\n\r\n".to_vec(),
        b"BREW /read HTTP/9.9\r\n\r\n".to_vec(),
        b"GET /read?ms=0 HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n".to_vec(),
    ];
    for request in &hostile_requests {
        let status = raw(rig.addr, request).await;
        if let Some(status) = status {
            assert!(
                status < 500,
                "{status} for {:?}",
                String::from_utf8_lossy(&request[..request.len().min(60)])
            );
        }
    }
    let values = [
        "/read?ms=-1",
        "/read?ms=abc",
        "/read?ms=1e308",
        "/read?ms=NaN",
        "/read?ms=inf",
        "/read?ms=%00",
        "/write?id=1%27%20OR%201%3D1%20--&ms=0",
        "/write?id=-9223372036854775808&ms=0",
        "/write?id=99999999999999999999999&ms=0",
        "/write?id=7&ms=1e9",
    ];
    let mut records = Vec::new();
    for path in values {
        let r = rig.send(rig.id(), path, "hostile").await;
        assert!(
            matches!(r.status, Some(s) if s < 500 || s == 503 || s == 504),
            "{r:?}"
        );
        records.push(r);
    }
    // A query value that asks for a year of sleep is stopped by statement_timeout.
    assert_eq!(records[2].status, Some(504));
    let ledger = Ledger { records };
    let recovery = rig.recovery(Instant::now()).await;
    println!(
        "FAULT | hostile headers and values | {} raw + {} values | {} ms total",
        hostile_requests.len(),
        ledger.sent(),
        started.elapsed().as_millis()
    );
    rig.check("hostile query values", &ledger, recovery).await;
    // The write whose sleep hit the timeout stored nothing; no other id but the parsed
    // ones can have been written.
    let ids: Vec<i64> = rig
        .admin
        .query("SELECT DISTINCT id FROM writes ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(!ids.contains(&7), "{ids:?}");
    assert_eq!(ids, vec![i64::MIN], "only the one valid id was written");
}

const GUARD_FIELDS: &[&str] = &[
    "max_size",
    "warning_utilization",
    "critical_utilization",
    "critical_recovery",
    "warning_recovery",
    "min_dwell",
    "starvation_after",
    "critical_reserve",
    "queue_depth",
    "max_queue_wait",
    "pool_wait_timeout",
    "pool_create_timeout",
    "pool_recycle_timeout",
    "query_deadline",
    "breaker_ramp",
    "sample_interval",
    "class_statement_timeout",
    "limits.rate_per_second",
    "limits.burst",
    "limits.in_flight",
    "limits.tight_rate_per_second",
    "limits.tight_burst",
    "limits.tight_in_flight",
    "limits.max_key_len",
];

fn field_value() -> impl Strategy<Value = serde_json::Value> {
    prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u32>().prop_map(serde_json::Value::from),
        (-2.0f64..3.0).prop_map(serde_json::Value::from),
        Just(serde_json::Value::Null),
        ".{0,8}".prop_map(serde_json::Value::from),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Any bytes make a bounded, printable, stable key.
    #[test]
    fn untrusted_keys_are_bounded_printable_and_stable(
        bytes in proptest::collection::vec(any::<u8>(), 0..600),
        max_len in 1usize..128,
    ) {
        let key = UserKey::from_untrusted(&bytes, max_len);
        prop_assert!(key.as_str().len() <= max_len.max(17));
        prop_assert!(key.as_str().bytes().all(|b| b.is_ascii_graphic()));
        prop_assert_eq!(&key, &UserKey::from_untrusted(&bytes, max_len));
    }

    /// The default extractor never takes a key from any header; the trusting one takes
    /// exactly its header, sanitized.
    #[test]
    fn only_a_trusted_header_names_the_user(
        names in proptest::collection::vec("[a-z][a-z0-9-]{0,20}", 0..8),
        value in proptest::collection::vec(32u8..127, 1..100),
    ) {
        let mut headers = http::HeaderMap::new();
        let value = http::HeaderValue::from_bytes(&value).unwrap();
        for name in &names {
            headers.insert(http::HeaderName::from_bytes(name.as_bytes()).unwrap(), value.clone());
        }
        headers.insert("x-user-id", value.clone());
        let ext = http::Extensions::new();
        prop_assert_eq!(DefaultKeyExtractor::default().extract(&headers, &ext), None);
        let trusting = DefaultKeyExtractor::trusting_header(http::HeaderName::from_static("x-user-id"), 64);
        let key = trusting.extract(&headers, &ext).unwrap();
        prop_assert_eq!(key, UserKey::from_untrusted(value.as_bytes(), 64));
    }

    /// Any JSON object of config fields parses or fails cleanly, and validation either
    /// accepts it or names a real field.
    #[test]
    fn guard_config_parsing_and_validation_never_panic_and_name_a_field(
        fields in proptest::collection::btree_map(
            proptest::sample::select(vec![
                "warning_utilization", "critical_utilization", "critical_recovery",
                "warning_recovery", "min_dwell", "starvation_after", "critical_reserve",
                "queue_depth", "max_queue_wait", "pool_wait_timeout", "query_deadline",
                "breaker_ramp", "sample_interval",
            ]),
            field_value(),
            0..6,
        ),
        pool in 0usize..50,
    ) {
        let json = serde_json::Value::Object(
            fields.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        );
        if let Ok(config) = serde_json::from_value::<GuardConfig>(json) {
            match config.validate(pool) {
                Ok(()) => {}
                Err(poolguard::BuildError::InvalidConfig { field, .. }) => {
                    prop_assert!(GUARD_FIELDS.contains(&field), "unknown field {}", field);
                }
                Err(other) => prop_assert!(false, "{other:?}"),
            }
        }
    }

    /// Any text loads as a policy or fails with an error; a loaded policy's checks agree
    /// with its own edge list.
    #[test]
    fn policy_parsing_never_panics(
        states in proptest::collection::vec("[A-Z_]{0,6}", 0..6),
        edges in proptest::collection::vec((0usize..6, 0usize..6), 0..10),
        noise in ".{0,40}",
    ) {
        let quoted: Vec<String> = states.iter().map(|s| format!("{s:?}")).collect();
        let mut toml = format!("states = [{}]\n", quoted.join(", "));
        for (from, to) in &edges {
            let name = |i: usize| states.get(i).cloned().unwrap_or_else(|| "MISSING".into());
            toml.push_str(&format!("[[allow]]\nfrom = {:?}\nto = [{:?}]\n", name(*from), name(*to)));
        }
        if let Ok(policy) = TransitionPolicy::from_toml_str(&toml) {
            for (from, to) in &edges {
                if let (Some(f), Some(t)) = (states.get(*from), states.get(*to)) {
                    prop_assert!(policy.check(f, t).is_ok());
                }
            }
        }
        let _ = TransitionPolicy::from_toml_str(&noise);
        let _ = TransitionPolicy::from_toml_str(&format!("{toml}{noise}"));
        let _ = TransitionPolicy::from_json_str(&noise);
    }
}
