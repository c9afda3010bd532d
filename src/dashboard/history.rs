//! The last 15 minutes of the guard, one point per second, in a bounded ring: pool use and
//! level, requests per second by outcome and class, critical latency and the server's
//! connections. Filled by a sampler task the dashboard owns.

use crate::criticality::Criticality;
use crate::guard::Guard;
use crate::guard::GuardInner;
use crate::metrics::tally::{quantile, SKETCH_BUCKETS};
use crate::monitor::Level;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::task::JoinHandle;

/// Points kept by default: 15 minutes at one a second.
pub const DEFAULT_HISTORY_POINTS: usize = 900;

/// A server reading older than this is not charted.
const SERVER_STALE: Duration = Duration::from_secs(10);

/// Requests of one outcome over one sampling interval, per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OutcomeRate {
    /// The outcome's metric label (`served`, `shed`, ...).
    pub outcome: &'static str,
    /// Requests per second, indexed non-critical, standard, critical.
    pub per_second: [f64; 3],
}

/// One sample of the guard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HistoryPoint {
    /// When it was taken, in seconds since the Unix epoch.
    pub at: f64,
    /// The pressure level.
    pub level: Level,
    /// Pool utilization as the level machine sees it, in `[0, 1]`.
    pub utilization: f64,
    /// Connections in use.
    pub in_use: usize,
    /// The pool's maximum size.
    pub max_size: usize,
    /// Acquisitions waiting in the guard's queue.
    pub queued: usize,
    /// Requests per second since the previous point, one entry per outcome the guard has
    /// counted so far (empty for the first point).
    pub requests: Vec<OutcomeRate>,
    /// Median acquire wait of critical requests since the previous point, in seconds.
    pub critical_wait_p50: Option<f64>,
    /// 99th percentile of the same.
    pub critical_wait_p99: Option<f64>,
    /// 99th percentile of how long critical requests held their connection, in seconds.
    pub critical_hold_p99: Option<f64>,
    /// Client connections on the whole server, when the watchdog read them recently.
    pub server_connections: Option<u32>,
    /// What ordinary roles may open on the server (`max_connections` less reserved slots).
    pub server_max_connections: Option<u32>,
}

/// The cumulative counters one point is the difference of.
#[derive(Debug, Clone)]
struct Reading {
    at: Instant,
    requests: Vec<(&'static str, [u64; 3])>,
    wait: [u64; SKETCH_BUCKETS],
    hold: [u64; SKETCH_BUCKETS],
}

impl Reading {
    fn take(inner: &GuardInner) -> Self {
        let t = &inner.metrics.tallies;
        Self {
            at: Instant::now(),
            requests: t.requests(),
            wait: t.wait(Criticality::Critical),
            hold: t.hold(Criticality::Critical),
        }
    }
}

#[derive(Debug)]
struct Ring {
    points: VecDeque<HistoryPoint>,
    capacity: usize,
    last: Option<Reading>,
}

/// The ring of [`HistoryPoint`]s. Cheap to clone; every clone sees the same points.
#[derive(Debug, Clone)]
pub struct History {
    inner: Arc<Mutex<Ring>>,
}

impl Default for History {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_POINTS)
    }
}

impl History {
    /// A ring keeping the last `capacity` points (at least two).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            inner: Arc::new(Mutex::new(Ring {
                points: VecDeque::with_capacity(capacity),
                capacity,
                last: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every point held, oldest first.
    pub fn points(&self) -> Vec<HistoryPoint> {
        self.lock().points.iter().cloned().collect()
    }

    /// How many points are held (at most the capacity).
    pub fn len(&self) -> usize {
        self.lock().points.len()
    }

    /// Whether no point is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples `guard` once, now, and appends the point.
    pub fn sample(&self, guard: &Guard) {
        self.sample_inner(&guard.inner, SystemTime::now());
    }

    fn sample_inner(&self, inner: &GuardInner, now: SystemTime) {
        let status = inner.status();
        let reading = Reading::take(inner);
        let server = inner
            .headroom
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .filter(|h| {
                now.duration_since(h.sampled_at)
                    .map_or(true, |age| age < SERVER_STALE)
            });
        let mut ring = self.lock();
        let (requests, wait50, wait99, hold99) = match &ring.last {
            Some(last) => {
                let secs = reading.at.duration_since(last.at).as_secs_f64().max(0.001);
                let requests = reading
                    .requests
                    .iter()
                    .map(|(outcome, now_counts)| {
                        let before = last
                            .requests
                            .iter()
                            .find(|(o, _)| o == outcome)
                            .map_or([0; 3], |(_, c)| *c);
                        OutcomeRate {
                            outcome,
                            per_second: [0, 1, 2]
                                .map(|i| now_counts[i].saturating_sub(before[i]) as f64 / secs),
                        }
                    })
                    .collect();
                (
                    requests,
                    quantile(&last.wait, &reading.wait, 0.5),
                    quantile(&last.wait, &reading.wait, 0.99),
                    quantile(&last.hold, &reading.hold, 0.99),
                )
            }
            None => (Vec::new(), None, None, None),
        };
        let point = HistoryPoint {
            at: now
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            level: status.level,
            utilization: status.utilization,
            in_use: status.in_use,
            max_size: status.max_size,
            queued: status.queued,
            requests,
            critical_wait_p50: wait50,
            critical_wait_p99: wait99,
            critical_hold_p99: hold99,
            server_connections: server.map(|h| h.used),
            server_max_connections: server.map(|h| h.usable),
        };
        if ring.points.len() >= ring.capacity {
            ring.points.pop_front();
        }
        ring.points.push_back(point);
        ring.last = Some(reading);
    }

    /// Spawns the task that samples `guard` every `every` (one second on the dashboard). It
    /// holds the guard weakly: it ends when every clone of the guard is dropped, or when the
    /// returned handle is aborted. Must be called inside a Tokio runtime.
    pub(crate) fn spawn(&self, guard: &Guard, every: Duration) -> JoinHandle<()> {
        let weak: Weak<GuardInner> = Arc::downgrade(&guard.inner);
        let history = self.clone();
        let every = every.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { break };
                history.sample_inner(&inner, SystemTime::now());
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Outcome;

    /// A guard over a pool that never connects (nothing here acquires).
    fn guard() -> Guard {
        Guard::of_four_unreachable_slots()
    }

    #[tokio::test]
    async fn points_hold_per_second_rates_by_outcome_and_the_ring_stays_bounded() {
        let guard = guard();
        let history = History::new(3);
        history.sample(&guard);
        assert!(
            history.points()[0].requests.is_empty(),
            "nothing to compare yet"
        );
        let m = &guard.inner.metrics;
        for _ in 0..6 {
            m.request(Criticality::Critical, Outcome::Served);
        }
        m.request(Criticality::NonCritical, Outcome::Shed);
        m.acquire_wait(Criticality::Critical, 0.004);
        std::thread::sleep(Duration::from_millis(200));
        history.sample(&guard);
        let p = history.points().pop().unwrap();
        let listed: Vec<&str> = p.requests.iter().map(|r| r.outcome).collect();
        assert_eq!(listed, ["served", "shed"], "every outcome counted, by name");
        let rate = |name: &str, class: Criticality| {
            p.requests
                .iter()
                .find(|r| r.outcome == name)
                .unwrap()
                .per_second[class.index()]
        };
        // 6 requests in a bit over 0.2 s: under 30 a second, well over 6.
        let served = rate("served", Criticality::Critical);
        assert!((6.0..=30.0).contains(&served), "{served}");
        assert!(rate("shed", Criticality::NonCritical) > 0.0);
        assert_eq!(rate("shed", Criticality::Critical), 0.0);
        let p99 = p.critical_wait_p99.unwrap();
        assert!((0.002..=0.006).contains(&p99), "{p99}");
        assert_eq!(p.critical_hold_p99, None);
        assert_eq!(p.max_size, 4);

        for _ in 0..5 {
            history.sample(&guard);
        }
        assert_eq!(history.len(), 3, "the ring keeps its capacity");
        let at: Vec<f64> = history.points().iter().map(|p| p.at).collect();
        assert!(at.windows(2).all(|w| w[0] <= w[1]), "oldest first");
    }

    #[tokio::test]
    async fn the_sampler_ticks_and_stops_with_the_guard() {
        let guard = guard();
        let history = History::default();
        let task = history.spawn(&guard, Duration::from_millis(20));
        for _ in 0..200 {
            if history.len() >= 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(history.len() >= 3);
        drop(guard);
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the sampler ends once the guard is gone")
            .unwrap();
    }
}
