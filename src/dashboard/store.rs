//! The dashboard's own memory: a bounded ring of recent events and the 24-hour counters, kept
//! up to date by a background subscriber.

use super::stats::{HourlyCounters, PreventionStats};
use crate::events::{Event, EventBus};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;
use tokio::task::JoinHandle;

/// Default number of recent events kept.
pub const DEFAULT_RECENT_EVENTS: usize = 200;

#[derive(Debug)]
struct Inner {
    /// Oldest first.
    events: VecDeque<Event>,
    capacity: usize,
    counters: HourlyCounters,
    seen: u64,
}

/// Recent events (a ring of `capacity`) and the 24-hour [`PreventionStats`]. Cheap to clone;
/// every clone sees the same data.
#[derive(Debug, Clone)]
pub struct DashboardStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for DashboardStore {
    fn default() -> Self {
        Self::new(DEFAULT_RECENT_EVENTS)
    }
}

impl DashboardStore {
    /// A store keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            inner: Arc::new(Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity),
                capacity,
                counters: HourlyCounters::default(),
                seen: 0,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records one event, with `now` deciding which hours are current.
    pub fn record(&self, event: Event, now: SystemTime) {
        let mut inner = self.lock();
        inner.counters.record(&event, now);
        inner.seen += 1;
        if inner.events.len() >= inner.capacity {
            inner.events.pop_front();
        }
        inner.events.push_back(event);
    }

    /// The `n` most recent events, newest first.
    pub fn recent(&self, n: usize) -> Vec<Event> {
        self.lock().events.iter().rev().take(n).cloned().collect()
    }

    /// How many events are held (at most the capacity).
    pub fn len(&self) -> usize {
        self.lock().events.len()
    }

    /// Whether no event is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every event recorded so far, including those that left the ring.
    pub fn seen(&self) -> u64 {
        self.lock().seen
    }

    /// The counters over the 24 hours ending at `now`.
    pub fn stats(&self, now: SystemTime) -> PreventionStats {
        self.lock().counters.totals(now)
    }

    /// Subscribes to `bus` now and spawns the task that records every event. The task ends
    /// when the bus is gone (every clone of the guard dropped) or when the returned handle is
    /// dropped. Must be called inside a Tokio runtime.
    pub fn spawn(&self, bus: &EventBus) -> SubscriberTask {
        let mut sub = bus.subscribe();
        let store = self.clone();
        let handle = tokio::spawn(async move {
            while let Some(event) = sub.recv().await {
                store.record(event, SystemTime::now());
            }
        });
        SubscriberTask {
            handle,
            sampler: None,
        }
    }
}

/// The running dashboard subscriber (and, when started by the dashboard, its history
/// sampler). Dropping it stops both.
#[derive(Debug)]
#[must_use = "the dashboard subscriber stops when this handle is dropped"]
pub struct SubscriberTask {
    handle: JoinHandle<()>,
    sampler: Option<JoinHandle<()>>,
}

impl SubscriberTask {
    /// Whether the tasks have ended (the bus and the guard are gone).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished() && self.sampler.as_ref().is_none_or(|s| s.is_finished())
    }

    /// The same handle, also owning the history `sampler`.
    pub(crate) fn with_sampler(mut self, sampler: JoinHandle<()>) -> Self {
        self.sampler = Some(sampler);
        self
    }
}

impl Drop for SubscriberTask {
    fn drop(&mut self) {
        self.handle.abort();
        if let Some(s) = &self.sampler {
            s.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{EventKind, Severity};

    fn custom(i: usize) -> Event {
        Event::now(EventKind::Custom {
            name: format!("e{i}"),
            severity: Severity::Info,
            message: String::new(),
        })
    }

    #[test]
    fn the_ring_keeps_the_newest() {
        let store = DashboardStore::new(3);
        for i in 0..10 {
            store.record(custom(i), SystemTime::now());
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.seen(), 10);
        let names: Vec<String> = store.recent(10).into_iter().map(|e| e.kind.tag()).collect();
        assert_eq!(names, ["custom:e9", "custom:e8", "custom:e7"]);
        // The counters still saw all ten.
        assert_eq!(store.stats(SystemTime::now()).by_kind.len(), 10);
    }

    #[tokio::test]
    async fn the_task_records_and_stops_with_the_bus_or_the_handle() {
        let bus = EventBus::new(16);
        let store = DashboardStore::default();
        let task = store.spawn(&bus);
        bus.publish(custom(1));
        for _ in 0..100 {
            if store.len() == 1 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert_eq!(store.len(), 1);
        drop(bus);
        for _ in 0..100 {
            if task.is_finished() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(task.is_finished());

        let bus = EventBus::new(16);
        let task = store.spawn(&bus);
        drop(task);
        tokio::task::yield_now().await;
        bus.publish(custom(2));
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert_eq!(store.len(), 1, "a dropped handle stops recording");
    }
}
