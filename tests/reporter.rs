//! The reporter end to end against real local HTTP servers: an OpenAI-compatible
//! chat-completions endpoint (healthy, stuck, failing, garbled) and a webhook receiver.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use poolguard::events::{Event, EventBus, EventKind, Severity};
use poolguard::incident::{AnalysisKind, Incident, IncidentStore, IncidentTracker};
use poolguard::report::{
    build_prompt, spawn_incident_pipeline, CallbackSink, IncidentReport, JsonLinesSink, LlmClient,
    LlmConfig, Redactor, Reporter, ReporterConfig, Sink, WebhookSink, DEFAULT_CONTEXT_TOKENS,
};
use poolguard::Level;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
const API_KEY: &str = "sk-test-0123456789abcdefghij";
const SECRET_EMAIL: &str = "dba.oncall@example.com";
const SECRET_PASSWORD: &str = "hunter2hunter2";

#[derive(Clone, Copy)]
enum Mode {
    Ok,
    Stuck,
    Status500,
    Garbled,
    /// A 200 whose body is twice the 1 MiB the client reads.
    Huge,
}

/// A response body larger than the client's 1 MiB limit.
fn huge_body() -> String {
    "x".repeat(2 * 1024 * 1024)
}

#[derive(Clone)]
struct Endpoint {
    mode: Mode,
    requests: Arc<Mutex<Vec<(HeaderMap, Value)>>>,
    arrived: mpsc::UnboundedSender<()>,
}

async fn chat(
    State(ep): State<Endpoint>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, String) {
    ep.requests.lock().unwrap().push((headers, body));
    let _ = ep.arrived.send(());
    match ep.mode {
        Mode::Ok => (
            StatusCode::OK,
            json!({
                "id": "x", "model": "test-model",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": "## Root cause\nA burst of report queries."}}],
                "usage": {"prompt_tokens": 300, "completion_tokens": 20, "total_tokens": 320}
            })
            .to_string(),
        ),
        Mode::Stuck => std::future::pending().await,
        Mode::Status500 => (StatusCode::INTERNAL_SERVER_ERROR, "upstream exploded".into()),
        Mode::Garbled => (StatusCode::OK, "{\"choices\": [ this is not json".into()),
        Mode::Huge => (StatusCode::OK, huge_body()),
    }
}

type Requests = Arc<Mutex<Vec<(HeaderMap, Value)>>>;

/// Starts a chat-completions server; returns its base URL, what it received, and a signal per
/// request.
async fn llm_server(mode: Mode) -> (String, Requests, mpsc::UnboundedReceiver<()>) {
    let (arrived, rx) = mpsc::unbounded_channel();
    let requests = Requests::default();
    let ep = Endpoint {
        mode,
        requests: requests.clone(),
        arrived,
    };
    let app = Router::new()
        .route("/v1/chat/completions", post(chat))
        .with_state(ep);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1"), requests, rx)
}

fn llm(base_url: &str, timeout: Duration) -> LlmClient {
    let mut c = LlmConfig::new(base_url, "test-model");
    c.api_key = Some(API_KEY.into());
    c.timeout = timeout;
    LlmClient::new(c)
}

fn level(from: Level, to: Level, util: f64) -> Event {
    Event::now(EventKind::LevelChanged {
        from,
        to,
        utilization: util,
        in_use: (util * 20.0) as usize,
        max_size: 20,
        waiting: 2,
    })
}

/// One pressure episode whose events carry an e-mail address and a password.
fn publish_episode(bus: &EventBus, name: &str) {
    bus.publish(level(Level::Normal, Level::Warning, 0.9));
    bus.publish(Event::now(EventKind::Custom {
        name: name.into(),
        severity: Severity::Warning,
        message: format!(
            "slow report by {SECRET_EMAIL} via postgres://app:{SECRET_PASSWORD}@db/app"
        ),
    }));
    bus.publish(level(Level::Warning, Level::Normal, 0.4));
}

/// Publishes `n` routine events and returns how long publishing took.
fn publish_burst(bus: &EventBus, n: usize) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        bus.publish(Event::now(EventKind::Custom {
            name: format!("tick{i}"),
            severity: Severity::Info,
            message: String::new(),
        }));
    }
    start.elapsed()
}

fn channel_sink() -> (CallbackSink, mpsc::UnboundedReceiver<IncidentReport>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        CallbackSink::new(move |r: &IncidentReport| {
            let _ = tx.send(r.clone());
            Ok(())
        }),
        rx,
    )
}

struct Rig {
    bus: EventBus,
    store: IncidentStore,
    reporter: Reporter,
    reports: mpsc::UnboundedReceiver<IncidentReport>,
}

fn rig(client: LlmClient, config: ReporterConfig) -> Rig {
    let bus = EventBus::new(64);
    let store = IncidentStore::default();
    let (sink, reports) = channel_sink();
    let (reporter, _worker) = Reporter::builder(config)
        .store(store.clone())
        .sink(sink)
        .llm(client)
        .spawn()
        .unwrap();
    let _pipeline = spawn_incident_pipeline(&bus, store.clone(), Some(reporter.clone()));
    Rig {
        bus,
        store,
        reporter,
        reports,
    }
}

async fn next(reports: &mut mpsc::UnboundedReceiver<IncidentReport>) -> IncidentReport {
    tokio::time::timeout(WAIT, reports.recv())
        .await
        .expect("a report in time")
        .expect("reporter alive")
}

#[tokio::test]
async fn a_healthy_endpoint_writes_the_analysis_once_from_a_redacted_prompt() {
    let (url, requests, _arrived) = llm_server(Mode::Ok).await;
    let mut rig = rig(
        llm(&url, Duration::from_secs(10)),
        ReporterConfig::default(),
    );
    publish_episode(&rig.bus, "slow_report");
    let report = next(&mut rig.reports).await;

    let stored = rig.store.get(report.incident.id).unwrap();
    let analysis = stored.analysis.expect("analysis stored with the incident");
    assert_eq!(analysis.kind, AnalysisKind::Llm);
    assert_eq!(analysis.text, "## Root cause\nA burst of report queries.");
    assert_eq!(
        (analysis.model.as_deref(), analysis.tokens),
        (Some("test-model"), Some(320))
    );
    assert!(report.text.contains("A burst of report queries."));

    let reqs = requests.lock().unwrap().clone();
    assert_eq!(reqs.len(), 1, "exactly one request");
    let (headers, body) = &reqs[0];
    assert_eq!(
        headers["authorization"],
        format!("Bearer {API_KEY}").as_str()
    );
    assert_eq!(body["model"], "test-model");
    assert_eq!(body["messages"][0]["role"], "system");
    let user = body["messages"][1]["content"].as_str().unwrap();
    assert!(user.contains("slow_report"), "{user}");
    for secret in [SECRET_EMAIL, SECRET_PASSWORD] {
        assert!(
            !body.to_string().contains(secret),
            "{secret} reached the endpoint"
        );
        assert!(!report.text.contains(secret), "{secret} reached the sinks");
    }

    // The same problem again within the hour is not analysed again.
    publish_episode(&rig.bus, "slow_report");
    let dup = next(&mut rig.reports).await;
    let a = dup.incident.analysis.unwrap();
    assert_eq!(
        (a.kind, a.duplicate_of),
        (AnalysisKind::Duplicate, Some(report.incident.id))
    );
    assert_eq!(requests.lock().unwrap().len(), 1);
    assert_eq!(rig.reporter.stats().duplicates, 1);
}

#[tokio::test]
async fn a_stuck_endpoint_times_out_without_blocking_publishers_and_the_reporter_goes_on() {
    let (url, requests, mut arrived) = llm_server(Mode::Stuck).await;
    let mut rig = rig(
        llm(&url, Duration::from_millis(500)),
        ReporterConfig::default(),
    );
    publish_episode(&rig.bus, "first");
    tokio::time::timeout(WAIT, arrived.recv())
        .await
        .unwrap()
        .unwrap();
    // The reporter is now waiting on the stuck server: publishing must not wait with it.
    let took = publish_burst(&rig.bus, 2000);
    // Publishing never waits on the reporter; the bound leaves room for a loaded machine.
    assert!(
        took < Duration::from_secs(10),
        "publishing 2000 events took {took:?}"
    );

    let first = next(&mut rig.reports).await;
    let a = first.incident.analysis.unwrap();
    assert_eq!(a.kind, AnalysisKind::LlmFailed);
    assert!(
        a.error
            .as_deref()
            .unwrap()
            .contains("timed out after 500 ms"),
        "{a:?}"
    );
    assert!(
        first.text.starts_with("[AUTO-RESOLVED]"),
        "local summary stands in: {}",
        first.text
    );

    publish_episode(&rig.bus, "second");
    let second = next(&mut rig.reports).await;
    assert_eq!(
        second.incident.analysis.unwrap().kind,
        AnalysisKind::LlmFailed
    );
    assert_eq!(
        requests.lock().unwrap().len(),
        2,
        "one attempt per incident, no retry on timeout"
    );
    assert_eq!(rig.reporter.stats().llm_failures, 2);
}

async fn failing_endpoint(mode: Mode, expected: &str) {
    let (url, requests, mut arrived) = llm_server(mode).await;
    let mut rig = rig(
        llm(&url, Duration::from_secs(10)),
        ReporterConfig::default(),
    );
    publish_episode(&rig.bus, "e");
    tokio::time::timeout(WAIT, arrived.recv())
        .await
        .unwrap()
        .unwrap();
    let took = publish_burst(&rig.bus, 2000);
    // Publishing never waits on the reporter; the bound leaves room for a loaded machine.
    assert!(
        took < Duration::from_secs(10),
        "publishing 2000 events took {took:?}"
    );
    let report = next(&mut rig.reports).await;
    let stored = rig.store.get(report.incident.id).unwrap().analysis.unwrap();
    assert_eq!(stored.kind, AnalysisKind::LlmFailed);
    assert!(
        stored.error.as_deref().unwrap().contains(expected),
        "{stored:?}"
    );
    assert_eq!(requests.lock().unwrap().len(), 1, "no retry");
}

#[tokio::test]
async fn an_http_500_is_a_typed_failure_and_not_retried() {
    failing_endpoint(Mode::Status500, "answered 500: upstream exploded").await;
}

#[tokio::test]
async fn a_malformed_body_is_a_typed_failure() {
    failing_endpoint(Mode::Garbled, "LLM response not understood").await;
}

#[tokio::test]
async fn an_oversized_llm_body_is_a_typed_failure() {
    failing_endpoint(Mode::Huge, "LLM response larger than 1048576 bytes").await;
}

#[tokio::test]
async fn an_oversized_webhook_body_is_a_typed_failure() {
    let app = Router::new().route("/hook", post(|| async { huge_body() }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let report = IncidentReport {
        subject: "s".into(),
        text: "t".into(),
        incident: closed_incident(),
    };
    let err = WebhookSink::new(format!("http://{addr}/hook"))
        .deliver(&report)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("webhook response larger than 1048576 bytes"),
        "{err}"
    );
}

#[tokio::test]
async fn dry_run_writes_the_exact_prompt_and_calls_nobody() {
    let (url, requests, _arrived) = llm_server(Mode::Ok).await;
    let config = ReporterConfig {
        dry_run: true,
        ..ReporterConfig::default()
    };
    let mut rig = rig(llm(&url, Duration::from_secs(10)), config);
    publish_episode(&rig.bus, "dry");
    let report = next(&mut rig.reports).await;
    let mut plain = report.incident.clone();
    plain.analysis = None;
    let expected = build_prompt(&plain, &Redactor::default(), DEFAULT_CONTEXT_TOKENS).to_text();
    let a = report.incident.analysis.unwrap();
    assert_eq!(a.kind, AnalysisKind::DryRun);
    assert_eq!(a.text, expected);
    assert!(report.text.contains(&expected));
    assert!(
        requests.lock().unwrap().is_empty(),
        "dry run made an HTTP call"
    );
    assert_eq!(rig.reporter.stats().dry_runs, 1);
}

fn closed_incident() -> Incident {
    let mut t = IncidentTracker::default();
    t.observe(&level(Level::Normal, Level::Critical, 0.95));
    t.observe(&level(Level::Critical, Level::Normal, 0.3))
        .unwrap()
}

async fn webhook_server() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new().route(
        "/hook",
        post(move |Json(body): Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(body);
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/hook"), rx)
}

#[tokio::test]
async fn sinks_all_deliver_and_a_failing_webhook_does_not_stop_the_others() {
    let (hook, mut posted) = webhook_server().await;
    let closed_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let path =
        std::env::temp_dir().join(format!("poolguard-incidents-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let order = Arc::new(Mutex::new(Vec::new()));
    let (o1, o2) = (order.clone(), order.clone());
    let (sink, mut reports) = channel_sink();
    // The channel sink is added last, so every other sink has run when the report arrives.
    let (reporter, _worker) = Reporter::builder(ReporterConfig::default())
        .sink(CallbackSink::new(move |_: &IncidentReport| {
            o1.lock().unwrap().push("record");
            Ok(())
        }))
        .sink(JsonLinesSink::new(&path))
        .sink(WebhookSink::new(format!(
            "http://127.0.0.1:{closed_port}/hook"
        )))
        .sink(WebhookSink::new(hook))
        .sink(
            CallbackSink::new(move |_: &IncidentReport| {
                o2.lock().unwrap().push("alert");
                Ok(())
            })
            .alert(),
        )
        .sink(sink)
        .spawn()
        .unwrap();
    let incident = closed_incident();
    assert!(reporter.submit(incident.clone()));

    let report = next(&mut reports).await;
    assert!(report
        .text
        .starts_with("[AUTO-RESOLVED] Connection Pool Critical - System Self-Healed"));
    assert_eq!(
        report.incident.analysis.as_ref().unwrap().kind,
        AnalysisKind::LocalSummary
    );
    let body = tokio::time::timeout(WAIT, posted.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(body["text"], report.text.as_str());
    assert_eq!(body["incident_id"], incident.id);
    assert_eq!(
        *order.lock().unwrap(),
        vec!["alert", "record"],
        "alert sinks run first"
    );
    let lines = std::fs::read_to_string(&path).unwrap();
    let line: Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(line["incident"]["id"], incident.id);
    assert_eq!(
        line["subject"],
        "[AUTO-RESOLVED] Connection Pool Critical - System Self-Healed"
    );
    assert_eq!(reporter.stats().sink_failures, 1);
    let _ = std::fs::remove_file(&path);
}
