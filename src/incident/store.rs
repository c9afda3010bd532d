//! The bounded, shareable store of incidents: the active one and the most recent closed ones.

use super::model::{Analysis, Incident};
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

/// Default number of closed incidents kept.
pub const DEFAULT_STORE_CAPACITY: usize = 200;

#[derive(Debug, Default, Serialize)]
struct Inner {
    active: Option<Incident>,
    /// Oldest first.
    closed: VecDeque<Incident>,
    #[serde(skip)]
    capacity: usize,
    /// Closed incidents evicted to stay within capacity.
    evicted: u64,
}

/// Keeps the active incident and the last `capacity` closed ones. Cheap to clone (an `Arc`);
/// every clone sees the same incidents.
#[derive(Debug, Clone)]
pub struct IncidentStore {
    inner: Arc<Mutex<Inner>>,
}

impl Default for IncidentStore {
    fn default() -> Self {
        Self::new(DEFAULT_STORE_CAPACITY)
    }
}

impl IncidentStore {
    /// A store keeping up to `capacity` closed incidents (at least one).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                capacity: capacity.max(1),
                ..Inner::default()
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock cannot leave the data half-written in a way that
        // matters for a report store; keep serving it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replaces the active incident (`None` once it closes).
    pub fn set_active(&self, incident: Option<Incident>) {
        self.lock().active = incident;
    }

    /// Adds a closed incident, evicting the oldest beyond capacity. Clears the active incident
    /// if it is this one.
    pub fn insert_closed(&self, incident: Incident) {
        let mut inner = self.lock();
        if inner.active.as_ref().map(|a| a.id) == Some(incident.id) {
            inner.active = None;
        }
        if inner.closed.len() >= inner.capacity {
            inner.closed.pop_front();
            inner.evicted += 1;
        }
        inner.closed.push_back(incident);
    }

    /// Attaches an analysis to a stored incident; `false` if it is no longer stored.
    pub fn set_analysis(&self, id: u64, analysis: Analysis) -> bool {
        let mut inner = self.lock();
        match inner.closed.iter_mut().rev().find(|i| i.id == id) {
            Some(i) => {
                i.analysis = Some(analysis);
                true
            }
            None => false,
        }
    }

    /// The incident in progress, if any.
    pub fn active(&self) -> Option<Incident> {
        self.lock().active.clone()
    }

    /// The `n` most recent closed incidents, newest first.
    pub fn recent(&self, n: usize) -> Vec<Incident> {
        self.lock().closed.iter().rev().take(n).cloned().collect()
    }

    /// Every stored closed incident, oldest first.
    pub fn all(&self) -> Vec<Incident> {
        self.lock().closed.iter().cloned().collect()
    }

    /// An incident by id, active or closed.
    pub fn get(&self, id: u64) -> Option<Incident> {
        let inner = self.lock();
        inner
            .active
            .iter()
            .chain(inner.closed.iter().rev())
            .find(|i| i.id == id)
            .cloned()
    }

    /// How many closed incidents are stored.
    pub fn len(&self) -> usize {
        self.lock().closed.len()
    }

    /// Whether no closed incident is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// How many closed incidents were evicted to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.lock().evicted
    }

    /// The whole store as JSON: `{"active": ..., "closed": [...], "evicted": n}`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(&*self.lock()).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Event, EventKind, Severity};
    use crate::incident::IncidentTracker;
    use std::time::SystemTime;

    fn failure(tracker: &mut IncidentTracker) -> Incident {
        let e = Event {
            at: SystemTime::now(),
            kind: EventKind::Custom {
                name: "watchdog".into(),
                severity: Severity::Failure,
                message: "cancel failed".into(),
            },
        };
        tracker
            .observe(&e)
            .expect("a failure outside an incident closes at once")
    }

    #[test]
    fn keeps_the_most_recent_and_answers_queries() {
        let store = IncidentStore::new(3);
        let mut t = IncidentTracker::default();
        for _ in 0..5 {
            store.insert_closed(failure(&mut t));
        }
        assert_eq!(store.len(), 3);
        assert_eq!(store.evicted(), 2);
        let ids: Vec<u64> = store.recent(2).iter().map(|i| i.id).collect();
        assert_eq!(ids, vec![5, 4]);
        assert!(store.get(1).is_none());
        assert_eq!(store.get(3).unwrap().id, 3);
        assert!(store.set_analysis(
            4,
            Analysis {
                kind: crate::incident::AnalysisKind::LocalSummary,
                text: "x".into(),
                model: None,
                tokens: None,
                duplicate_of: None,
                error: None,
            }
        ));
        let json = store.to_json();
        assert_eq!(json["closed"].as_array().unwrap().len(), 3);
        assert_eq!(json["closed"][1]["analysis"]["kind"], "local_summary");
        assert_eq!(json["evicted"], 2);
    }
}
