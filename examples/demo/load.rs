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

/// One attempt of a request.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub class: Class,
    /// The logical request this attempt belongs to: a report retried at `Retry-After` keeps
    /// its id, so "served" and "lost" count requests, not attempts.
    pub request: u64,
    /// 0 for the first attempt, 1 for the first retry, ...
    pub attempt: u32,
    /// When it was sent, from the scenario's start.
    pub sent: Duration,
    pub latency: Duration,
    pub outcome: Outcome,
    /// The `Retry-After` of a refusal.
    pub retry_after: Option<Duration>,
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
    /// How long a report's user waits before giving up (a dashboard widget keeps its
    /// spinner longer than a page waits for a sign-in).
    pub report_patience: Duration,
    pub start: Instant,
    /// Live counts by class and outcome, for progress lines.
    live: Arc<[[AtomicU64; 4]; 3]>,
    /// Numbers logical requests.
    next_request: Arc<AtomicU64>,
    /// Non-critical requests come back at `Retry-After` (as a browser front end would),
    /// for at most this long after they were first sent; zero never retries.
    pub retry_for: Duration,
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
            report_patience: patience.max(Duration::from_secs(10)),
            start: Instant::now(),
            live: Arc::new(Default::default()),
            next_request: Arc::new(AtomicU64::new(0)),
            retry_for: Duration::from_secs(30),
        }
    }

    /// Sends one request the way its client would: a non-critical one refused with
    /// `Retry-After` is sent again after that long (whole seconds, as a browser reads the
    /// header), until it is served, fails otherwise, or `retry_for` has passed. Returns every
    /// attempt.
    pub async fn visit(
        &self,
        class: Class,
        method: &'static str,
        path: &str,
        user: &str,
    ) -> Vec<Sample> {
        let request = self.next_request.fetch_add(1, Ordering::Relaxed);
        let first_sent = Instant::now();
        let mut attempts = Vec::new();
        loop {
            let (mut sample, _) = self.send_with_body(class, method, path, user).await;
            sample.request = request;
            sample.attempt = attempts.len() as u32;
            attempts.push(sample);
            let retry = match (class, sample.outcome, sample.retry_after) {
                (Class::NonCritical, Outcome::Deferred, Some(after)) => after,
                _ => break,
            };
            if first_sent.elapsed() + retry > self.retry_for {
                break;
            }
            tokio::time::sleep(retry).await;
        }
        attempts
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
        let mut retry_after = None;
        let patience = match class {
            Class::NonCritical => self.report_patience,
            _ => self.patience,
        };
        let outcome = match tokio::time::timeout(patience, async {
            let resp = self.client.request(req).await?;
            let status = resp.status();
            let retry = resp
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
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
                } else if retry.is_some() && (status == 429 || status == 503) {
                    retry_after = retry;
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
            request: self.next_request.fetch_add(1, Ordering::Relaxed),
            attempt: 0,
            sent,
            latency: began.elapsed(),
            outcome,
            retry_after,
        };
        (sample, body)
    }

    /// Sends `rate` requests per second for `duration`, starting now, spread over `users`.
    /// In a path, `{n}` is replaced by the request's number (a distinct report widget).
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
                let path = path.replace("{n}", &i.to_string());
                i += 1;
                pending.push(tokio::spawn(async move {
                    load.visit(class, method, &path, &user).await
                }));
            }
            collect(pending).await
        })
    }

    /// Sends `n` requests at once as `user` (each retried at `Retry-After` as
    /// [`Load::visit`] does); `{n}` in the path becomes the request's number.
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
                .map(|i| {
                    let (load, path) = (load.clone(), path.replace("{n}", &i.to_string()));
                    tokio::spawn(async move { load.visit(class, method, &path, user).await })
                })
                .collect();
            collect(pending).await
        })
    }
}

async fn collect(pending: Vec<JoinHandle<Vec<Sample>>>) -> Vec<Sample> {
    let mut out = Vec::with_capacity(pending.len());
    for p in pending {
        if let Ok(s) = p.await {
            out.extend(s);
        }
    }
    out
}

/// What became of the logical requests of `class` in `samples`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Requests {
    /// Distinct requests.
    pub total: usize,
    /// Served on some attempt.
    pub served: usize,
    /// Refused at first and retried.
    pub retried: usize,
    /// Of those, served on their first retry.
    pub first_retry_ok: usize,
    /// When the last one was served, from the run's start.
    pub last_served: Option<Duration>,
}

impl Requests {
    pub fn of(samples: &[Sample], class: Class) -> Self {
        let mut by_request: std::collections::HashMap<u64, Vec<&Sample>> = Default::default();
        for s in samples.iter().filter(|s| s.class == class) {
            by_request.entry(s.request).or_default().push(s);
        }
        let mut r = Requests {
            total: by_request.len(),
            ..Requests::default()
        };
        for attempts in by_request.values() {
            if let Some(ok) = attempts.iter().find(|s| s.outcome == Outcome::Ok) {
                r.served += 1;
                r.last_served = r.last_served.max(Some(ok.done()));
            }
            if let Some(first_retry) = attempts.iter().find(|s| s.attempt == 1) {
                r.retried += 1;
                if first_retry.outcome == Outcome::Ok {
                    r.first_retry_ok += 1;
                }
            }
        }
        r
    }

    /// The share of first retries that were served, in percent.
    pub fn first_retry_success(&self) -> Option<f64> {
        (self.retried > 0).then(|| 100.0 * self.first_retry_ok as f64 / self.retried as f64)
    }
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
