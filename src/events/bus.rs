//! [`EventBus`]: the bounded fan-out of events, and the `[SELF-HEAL]` log line each
//! published event gets.

use super::{Event, Severity};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// The bounded fan-out of events. Publishing never blocks: a subscriber that falls behind
/// loses the oldest events, and the loss is counted.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventBus {
    /// A bus that keeps up to `capacity` events for each subscriber.
    pub fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(capacity.max(1));
        Self {
            tx,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Publishes an event: logs it as a `[SELF-HEAL]` line and hands it to every subscriber.
    pub fn publish(&self, event: Event) {
        log_event(&event);
        // No subscriber is fine: the log line above is the record.
        let _ = self.tx.send(event);
    }

    /// A new subscriber that sees events from now on.
    pub fn subscribe(&self) -> EventSubscriber {
        EventSubscriber {
            rx: self.tx.subscribe(),
            dropped: self.dropped.clone(),
        }
    }

    /// How many events slow subscribers have lost so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// Receives events from an [`EventBus`].
#[derive(Debug)]
pub struct EventSubscriber {
    rx: broadcast::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSubscriber {
    /// The next event; `None` once the bus is gone. Events lost because this subscriber fell
    /// behind are counted in `poolguard_events_dropped_total` and skipped.
    pub async fn recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.recv().await {
                Ok(e) => return Some(e),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    crate::metrics::events_dropped(n);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The next event if one is ready, without waiting.
    pub fn try_recv(&mut self) -> Option<Event> {
        loop {
            match self.rx.try_recv() {
                Ok(e) => return Some(e),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.dropped.fetch_add(n, Ordering::Relaxed);
                    crate::metrics::events_dropped(n);
                }
                Err(_) => return None,
            }
        }
    }
}

/// Writes the `[SELF-HEAL]` line for an event at a tracing level matching its severity.
fn log_event(event: &Event) {
    let msg = event.message();
    match event.severity() {
        Severity::Info => tracing::info!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}"),
        Severity::Warning => tracing::warn!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}"),
        Severity::Critical | Severity::Failure => {
            tracing::error!(target: "poolguard::self_heal", "[SELF-HEAL] {msg}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventKind;

    #[tokio::test]
    async fn a_slow_subscriber_loses_oldest_and_counts_them() {
        let bus = EventBus::new(4);
        let mut sub = bus.subscribe();
        for i in 0..10 {
            bus.publish(Event::now(EventKind::Custom {
                name: format!("e{i}"),
                severity: Severity::Info,
                message: String::new(),
            }));
        }
        let first = sub.recv().await.unwrap();
        assert!(matches!(first.kind, EventKind::Custom { ref name, .. } if name == "e6"));
        assert_eq!(bus.dropped(), 6);
    }
}
