//! A small HTTP load generator: open-loop streams at a fixed rate and concurrent bursts, each
//! request timed and classified from the user's side.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Which class of route a request went to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Critical,
    Standard,
    NonCritical,
}

/// What the user saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// 429/503 with `Retry-After`: refused, with a time to come back.
    Deferred,
    /// Any other error status.
    Failed(u16),
    /// No answer within the user's patience (or no connection).
    TimedOut,
}

/// One request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub class: Class,
    /// When it was sent, from the scenario's start.
    pub sent: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
}

impl Sample {
    /// When it finished, from the scenario's start.
    pub fn done(&self) -> Duration {
        self.sent + self.latency
    }
}

/// A shared HTTP/1 client with enough connections for bursts.
#[derive(Clone)]
pub struct Load {
    client: Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    /// How long a user waits before giving up.
    pub patience: Duration,
    pub start: Instant,
    /// Live counts by class and outcome, for progress lines.
    live: Arc<[[AtomicU64; 4]; 3]>,
}

fn class_index(c: Class) -> usize {
    match c {
        Class::Critical => 0,
        Class::Standard => 1,
        Class::NonCritical => 2,
    }
}

fn outcome_index(o: Outcome) -> usize {
    match o {
        Outcome::Ok => 0,
        Outcome::Deferred => 1,
        Outcome::Failed(_) => 2,
        Outcome::TimedOut => 3,
    }
}

impl Load {
    pub fn new(addr: SocketAddr, patience: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(512)
            .build(connector);
        Self {
            client,
            addr,
            patience,
            start: Instant::now(),
            live: Arc::new(Default::default()),
        }
    }

    /// Counts so far for `class`: (ok, deferred, failed, timed out).
    pub fn live(&self, class: Class) -> [u64; 4] {
        let row = &self.live[class_index(class)];
        [0, 1, 2, 3].map(|i| row[i].load(Ordering::Relaxed))
    }

    /// Sends one request and classifies what came back.
    pub async fn send(&self, class: Class, method: &'static str, path: &str, user: &str) -> Sample {
        self.send_with_body(class, method, path, user).await.0
    }

    /// [`Load::send`], also returning the response body (empty when there was none).
    pub async fn send_with_body(
        &self,
        class: Class,
        method: &'static str,
        path: &str,
        user: &str,
    ) -> (Sample, String) {
        let sent = self.start.elapsed();
        let began = Instant::now();
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{}{}", self.addr, path))
            .header("x-user-id", user)
            .body(Empty::new())
            .expect("valid request");
        let mut body = String::new();
        let outcome = match tokio::time::timeout(self.patience, async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let retry = resp.headers().contains_key("retry-after");
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry, bytes))
        })
        .await
        {
            Ok(Ok((status, retry, bytes))) => {
                body = String::from_utf8_lossy(&bytes).into_owned();
                if status.is_success() {
                    Outcome::Ok
                } else if retry && (status == 429 || status == 503) {
                    Outcome::Deferred
                } else {
                    Outcome::Failed(status.as_u16())
                }
            }
            Ok(Err(_)) | Err(_) => Outcome::TimedOut,
        };
        self.live[class_index(class)][outcome_index(outcome)].fetch_add(1, Ordering::Relaxed);
        let sample = Sample {
            class,
            sent,
            latency: began.elapsed(),
            outcome,
        };
        (sample, body)
    }

    /// Sends `rate` requests per second for `duration`, starting now, spread over `users`.
    pub fn stream(
        &self,
        class: Class,
        method: &'static str,
        path: &'static str,
        rate: f64,
        duration: Duration,
        users: usize,
    ) -> JoinHandle<Vec<Sample>> {
        let load = self.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let until = Instant::now() + duration;
            let mut pending = Vec::new();
            let mut i = 0usize;
            while Instant::now() < until {
                ticker.tick().await;
                let (load, user) = (load.clone(), format!("user-{}", i % users.max(1)));
                i += 1;
                pending.push(tokio::spawn(async move {
                    load.send(class, method, path, &user).await
                }));
            }
            collect(pending).await
        })
    }

    /// Sends `n` requests at once as `user`.
    pub fn burst(
        &self,
        class: Class,
        method: &'static str,
        path: String,
        n: usize,
        user: &'static str,
    ) -> JoinHandle<Vec<Sample>> {
        let load = self.clone();
        tokio::spawn(async move {
            let pending = (0..n)
                .map(|_| {
                    let (load, path) = (load.clone(), path.clone());
                    tokio::spawn(async move { load.send(class, method, &path, user).await })
                })
                .collect();
            collect(pending).await
        })
    }
}

async fn collect(pending: Vec<JoinHandle<Sample>>) -> Vec<Sample> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        if let Ok(s) = p.await {
            out.push(s);
        }
    }
    out
}

/// Latency percentile (0..=100) of the successful samples.
pub fn percentile(samples: &[&Sample], p: f64) -> Option<Duration> {
    let mut ok: Vec<Duration> = samples
        .iter()
        .filter(|s| s.outcome == Outcome::Ok)
        .map(|s| s.latency)
        .collect();
    if ok.is_empty() {
        return None;
    }
    ok.sort();
    let rank = ((p / 100.0) * (ok.len() - 1) as f64).round() as usize;
    Some(ok[rank.min(ok.len() - 1)])
}
