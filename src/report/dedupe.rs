//! Deduplication: incidents with the same signature within a window are analysed once; later
//! ones point at the first. Pure: time is passed in.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// Default dedupe window (the seed's one hour).
pub const DEFAULT_DEDUPE_WINDOW: Duration = Duration::from_secs(3600);

/// What to do with an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DedupeDecision {
    /// The first with this signature in the window: analyse it.
    Analyse,
    /// Seen within the window: reference incident `of` instead.
    Duplicate {
        /// The first incident with this signature.
        of: u64,
    },
}

/// Remembers the first incident of each signature for one window.
#[derive(Debug, Clone)]
pub struct Dedupe {
    window: Duration,
    first: HashMap<String, (u64, SystemTime)>,
    analysed: u64,
    duplicates: u64,
}

impl Dedupe {
    /// A dedupe with `window` (zero turns deduplication off).
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            first: HashMap::new(),
            analysed: 0,
            duplicates: 0,
        }
    }

    /// Decides for incident `id` with `signature` at `now`, and remembers it if it is first.
    pub fn check(&mut self, signature: &str, id: u64, now: SystemTime) -> DedupeDecision {
        let window = self.window;
        self.first
            .retain(|_, (_, at)| now.duration_since(*at).unwrap_or_default() < window);
        if let Some((of, _)) = self.first.get(signature) {
            self.duplicates += 1;
            return DedupeDecision::Duplicate { of: *of };
        }
        if !window.is_zero() {
            self.first.insert(signature.to_string(), (id, now));
        }
        self.analysed += 1;
        DedupeDecision::Analyse
    }

    /// Incidents let through for analysis.
    pub fn analysed(&self) -> u64 {
        self.analysed
    }

    /// Incidents skipped as duplicates.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_signature_within_the_window_is_analysed_once() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let mut d = Dedupe::new(DEFAULT_DEDUPE_WINDOW);
        assert_eq!(d.check("a", 1, t0), DedupeDecision::Analyse);
        assert_eq!(
            d.check("a", 2, t0 + Duration::from_secs(3599)),
            DedupeDecision::Duplicate { of: 1 }
        );
        assert_eq!(
            d.check("b", 3, t0 + Duration::from_secs(10)),
            DedupeDecision::Analyse
        );
        // The window is counted from the first one, not extended by duplicates.
        assert_eq!(
            d.check("a", 4, t0 + Duration::from_secs(3600)),
            DedupeDecision::Analyse
        );
        assert_eq!(
            d.check("a", 5, t0 + Duration::from_secs(3700)),
            DedupeDecision::Duplicate { of: 4 }
        );
        assert_eq!((d.analysed(), d.duplicates()), (3, 2));
    }

    #[test]
    fn a_zero_window_turns_it_off() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut d = Dedupe::new(Duration::ZERO);
        assert_eq!(d.check("a", 1, t0), DedupeDecision::Analyse);
        assert_eq!(d.check("a", 2, t0), DedupeDecision::Analyse);
    }
}
