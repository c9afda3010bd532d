//! In-process tallies the dashboard reads: cumulative request counts by outcome and class, and
//! latency sketches of acquire wait and hold time by class. Lock-free counters in the recording
//! thread's own stripe (a plain add where the thread has its stripe alone); readers add the
//! stripes up and take differences between two reads.

// Only the dashboard (feature `admin`) reads them.
#![cfg_attr(not(feature = "admin"), allow(dead_code))]

use super::Outcome;
use crate::criticality::Criticality;
use crate::stripes::Stripes;
use std::sync::atomic::AtomicU64;
use std::sync::OnceLock;

/// Room for every outcome: more slots than the enum has variants, so an outcome added later
/// is counted without touching this file.
const OUTCOME_SLOTS: usize = 16;

/// Buckets of a [`LatencySketch`].
pub(crate) const SKETCH_BUCKETS: usize = 46;
/// The upper bound of the first bucket, in seconds (100 µs).
const FIRST_BOUND: f64 = 0.000_1;
/// Each bucket's bound is `sqrt(2)` times the previous one: 100 µs to about 10 minutes.
const GROWTH_LOG2: f64 = 0.5;
// `bucket_of` reads the bucket off the bits of the squared ratio, which is right for this
// growth only: another one needs another `bucket_of`.
const _: () = assert!(
    GROWTH_LOG2 == 0.5,
    "bucket_of assumes buckets sqrt(2) apart"
);

/// The upper bound of bucket `i`, in seconds. The last bucket has no upper bound.
pub(crate) fn bucket_bound(i: usize) -> f64 {
    FIRST_BOUND * (i as f64 * GROWTH_LOG2).exp2()
}

/// The bucket of `secs`: bucket `i` holds `(bucket_bound(i - 1), bucket_bound(i)]`, so `i` is
/// `ceil(log2(r²))` for `r = secs / FIRST_BOUND`. That is read off the bits of `r²` (its
/// exponent, plus one when it is not a power of two) rather than worked out with a logarithm:
/// two recordings per request, on the request path.
fn bucket_of(secs: f64) -> usize {
    if secs.is_nan() || secs <= FIRST_BOUND {
        return 0;
    }
    let ratio = secs / FIRST_BOUND;
    let squared = ratio * ratio;
    if !squared.is_finite() {
        return SKETCH_BUCKETS - 1;
    }
    // `squared` > 1 is a normal number: 1.fraction × 2^exponent.
    let bits = squared.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as usize - 1023;
    let not_a_power_of_two = bits & ((1 << 52) - 1) != 0;
    (exponent + usize::from(not_a_power_of_two)).min(SKETCH_BUCKETS - 1)
}

/// A cumulative histogram of durations on fixed log-spaced buckets.
#[derive(Debug)]
pub(crate) struct LatencySketch([AtomicU64; SKETCH_BUCKETS]);

impl Default for LatencySketch {
    fn default() -> Self {
        Self(std::array::from_fn(|_| AtomicU64::new(0)))
    }
}

impl LatencySketch {
    /// The counter a recording of `secs` adds one to.
    fn bucket(&self, secs: f64) -> &AtomicU64 {
        &self.0[bucket_of(secs)]
    }

    #[cfg(test)]
    fn record(&self, secs: f64) {
        self.bucket(secs)
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The cumulative count of every bucket.
    #[cfg(test)]
    fn read(&self) -> [u64; SKETCH_BUCKETS] {
        std::array::from_fn(|i| self.0[i].load(std::sync::atomic::Ordering::Relaxed))
    }
}

/// The `q` quantile (`0..=1`) of the counts `now - before`, in seconds, interpolated linearly
/// inside its bucket as Prometheus' `histogram_quantile` does. `None` when nothing was recorded
/// in between.
pub(crate) fn quantile(
    before: &[u64; SKETCH_BUCKETS],
    now: &[u64; SKETCH_BUCKETS],
    q: f64,
) -> Option<f64> {
    let delta: [u64; SKETCH_BUCKETS] = std::array::from_fn(|i| now[i].saturating_sub(before[i]));
    let total: u64 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = q.clamp(0.0, 1.0) * total as f64;
    let mut seen = 0u64;
    for (i, &n) in delta.iter().enumerate() {
        if n == 0 {
            continue;
        }
        if (seen + n) as f64 >= rank {
            let low = if i == 0 { 0.0 } else { bucket_bound(i - 1) };
            let high = bucket_bound(i);
            let within = ((rank - seen as f64) / n as f64).clamp(0.0, 1.0);
            return Some(low + (high - low) * within);
        }
        seen += n;
    }
    Some(bucket_bound(SKETCH_BUCKETS - 1))
}

/// What one guard counted since it was built. Every request counts here, so each thread
/// counts in a copy of its own (a [`Stripes`] stripe) and readers add the copies up: the
/// request path writes no line another core writes.
#[derive(Debug, Default)]
pub(crate) struct Tallies {
    /// The label of each outcome slot, set the first time it is counted.
    names: [OnceLock<&'static str>; OUTCOME_SLOTS],
    counted: Stripes<Counted>,
}

/// One stripe's counts.
#[derive(Debug, Default)]
struct Counted {
    /// Requests, indexed `[outcome][class]`.
    requests: [[AtomicU64; 3]; OUTCOME_SLOTS],
    /// Acquire wait by class.
    wait: [LatencySketch; 3],
    /// Hold time by class.
    hold: [LatencySketch; 3],
}

impl Tallies {
    /// Counts one request of `class` that ended with `outcome`.
    pub(crate) fn request(&self, class: Criticality, outcome: Outcome) {
        let slot = outcome as usize;
        debug_assert!(slot < OUTCOME_SLOTS, "more outcomes than tally slots");
        if let Some(name) = self.names.get(slot) {
            name.get_or_init(|| outcome.as_str());
            self.counted
                .mine()
                .add(|counted| &counted.requests[slot][class.index()], 1);
        }
    }

    /// Records an acquire wait of `secs` for `class`.
    pub(crate) fn record_wait(&self, class: Criticality, secs: f64) {
        self.counted
            .mine()
            .add(|counted| counted.wait[class.index()].bucket(secs), 1);
    }

    /// Records a hold time of `secs` for `class`.
    pub(crate) fn record_hold(&self, class: Criticality, secs: f64) {
        self.counted
            .mine()
            .add(|counted| counted.hold[class.index()].bucket(secs), 1);
    }

    /// The acquire waits of `class` recorded so far, by bucket.
    pub(crate) fn wait(&self, class: Criticality) -> [u64; SKETCH_BUCKETS] {
        self.sum(|counted| &counted.wait[class.index()])
    }

    /// The hold times of `class` recorded so far, by bucket.
    pub(crate) fn hold(&self, class: Criticality) -> [u64; SKETCH_BUCKETS] {
        self.sum(|counted| &counted.hold[class.index()])
    }

    fn sum(&self, sketch: impl Fn(&Counted) -> &LatencySketch) -> [u64; SKETCH_BUCKETS] {
        self.counted.sum(|counted| &sketch(counted).0)
    }

    /// Every outcome counted so far, by its metric label, with its cumulative counts by class
    /// (indexed non-critical, standard, critical), in the order of the outcome enum. An
    /// outcome appears once it happened, and then stays.
    pub(crate) fn requests(&self) -> Vec<(&'static str, [u64; 3])> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(slot, name)| {
                let name = *name.get()?;
                Some((name, self.counted.sum(|counted| &counted.requests[slot])))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_fall_in_the_bucket_of_the_recorded_values() {
        let s = LatencySketch::default();
        let before = s.read();
        for _ in 0..98 {
            s.record(0.010);
        }
        s.record(0.500);
        s.record(0.500);
        let now = s.read();
        let p50 = quantile(&before, &now, 0.5).unwrap();
        let p99 = quantile(&before, &now, 0.99).unwrap();
        assert!((0.007..=0.0115).contains(&p50), "{p50}");
        assert!((0.35..=0.71).contains(&p99), "{p99}");
        assert_eq!(quantile(&now, &now, 0.5), None);
    }

    #[test]
    fn every_duration_lands_in_the_bucket_whose_bounds_hold_it() {
        // A sweep from 50 µs to 20 minutes, 200 steps per doubling: each value is above the
        // bound below its bucket and at most its bucket's bound (values within a rounding
        // error of a bound may go either side).
        let mut secs = 0.000_05;
        while secs < 1200.0 {
            let i = bucket_of(secs);
            let near = |bound: f64| ((secs - bound) / bound).abs() < 1e-12;
            if i == 0 {
                assert!(secs <= bucket_bound(0) || near(bucket_bound(0)), "{secs}");
            } else if i < SKETCH_BUCKETS - 1 {
                let (low, high) = (bucket_bound(i - 1), bucket_bound(i));
                assert!(
                    (secs > low || near(low)) && (secs <= high || near(high)),
                    "{secs} in bucket {i} ({low}, {high}]"
                );
            } else {
                assert!(secs > bucket_bound(i - 1), "{secs}");
            }
            secs *= 2f64.powf(1.0 / 200.0);
        }
        // Exactly on a bound that is a whole power of two of the first: the bucket it closes.
        for i in (2..SKETCH_BUCKETS - 1).step_by(2) {
            let bound = FIRST_BOUND * 2f64.powi(i as i32 / 2);
            assert_eq!(bucket_of(bound), i, "{bound}");
        }
    }

    #[test]
    fn extremes_land_in_the_first_and_last_bucket() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(bucket_of(1e9), SKETCH_BUCKETS - 1);
        assert!(bucket_bound(SKETCH_BUCKETS - 1) > 300.0);
        for secs in [0.0002, 0.003, 0.2, 4.0] {
            let i = bucket_of(secs);
            assert!(
                secs <= bucket_bound(i) && secs > bucket_bound(i - 1),
                "{secs}"
            );
        }
    }

    #[test]
    fn outcomes_are_listed_by_name_once_counted() {
        let t = Tallies::default();
        assert!(t.requests().is_empty());
        t.request(Criticality::Critical, Outcome::Shed);
        t.request(Criticality::Critical, Outcome::Served);
        t.request(Criticality::NonCritical, Outcome::Shed);
        let listed = t.requests();
        assert_eq!(
            listed,
            [("served", [0, 0, 1]), ("shed", [1, 0, 1])],
            "in enum order, by label"
        );
    }
}
