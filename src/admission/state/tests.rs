//! The admission state machine on injected time.

use super::*;
use crate::monitor::Thresholds;

const MS: Duration = Duration::from_millis(1);

fn settings(max: usize, reserve: usize) -> AdmissionSettings {
    AdmissionSettings {
        max_size: max,
        reserve,
        warning_utilization: 0.85,
        queue_depth: 8,
        user_queue_depth: 8,
        ramp: Duration::from_secs(2),
    }
}

fn state(max: usize, reserve: usize) -> AdmissionState {
    AdmissionState::new(
        settings(max, reserve),
        machine(),
        42,
        std::sync::Arc::new(crate::admission::gate::FastGate::default()),
    )
}

fn machine() -> LevelMachine {
    LevelMachine::new(Thresholds {
        warning: 0.85,
        critical: 0.92,
        critical_recovery: 0.88,
        warning_recovery: 0.80,
        min_dwell: Duration::from_millis(500),
        starvation: Duration::from_millis(200),
    })
}

fn far(now: Instant) -> Instant {
    now + Duration::from_secs(3600)
}

fn granted(a: &Admit) -> bool {
    matches!(a, Admit::Granted)
}

fn enqueued(a: Admit) -> (u64, oneshot::Receiver<Grant>) {
    match a {
        Admit::Enqueued { id, rx } => (id, rx),
        other => panic!("expected to wait, got {other:?}"),
    }
}

#[test]
fn reserve_is_only_for_critical() {
    let now = Instant::now();
    let mut s = state(10, 2);
    for _ in 0..8 {
        assert!(granted(
            &s.admit(Criticality::Standard, None, far(now), now).0
        ));
    }
    enqueued(s.admit(Criticality::Standard, None, far(now), now).0);
    assert!(granted(
        &s.admit(Criticality::Critical, None, far(now), now).0
    ));
    assert!(granted(
        &s.admit(Criticality::Critical, None, far(now), now).0
    ));
    assert_eq!(s.level(), Level::Critical);
}

#[test]
fn released_slots_go_to_critical_waiters_first() {
    let now = Instant::now();
    let mut s = state(4, 1);
    for _ in 0..3 {
        s.admit(Criticality::Standard, None, far(now), now);
    }
    s.admit(Criticality::Critical, None, far(now), now);
    let (std_id, _r1) = enqueued(s.admit(Criticality::Standard, None, far(now), now).0);
    let (crit_id, _r2) = enqueued(s.admit(Criticality::Critical, None, far(now), now).0);
    let effects = s.release(Criticality::Standard, Some(MS), now);
    assert_eq!(effects.grants.len(), 1);
    assert_eq!(effects.grants[0].id, crit_id);
    // The next release leaves one free slot: the reserve. Standard still waits.
    let effects = s.release(Criticality::Standard, Some(MS), now);
    assert!(effects.grants.is_empty());
    let effects = s.release(Criticality::Standard, Some(MS), now);
    assert_eq!(effects.grants[0].id, std_id);
}

#[test]
fn non_critical_is_deferred_above_normal_and_started_as_slots_free() {
    let now = Instant::now();
    let mut s = state(10, 1);
    for _ in 0..9 {
        s.admit(Criticality::Standard, None, far(now), now);
    }
    // 9/10 = 0.9: Warning. Non-critical waits without touching the pool.
    assert_eq!(s.level(), Level::Warning);
    let (id, _rx) = enqueued(s.admit(Criticality::NonCritical, None, far(now), now).0);
    assert_eq!(s.queued_of(Criticality::NonCritical), 1);
    assert_eq!(s.granted_of(Criticality::NonCritical), 0);
    // Use falls to 8/10: still at the line of 8 (ceil(8.5) - 1), nothing starts.
    assert!(s
        .release(Criticality::Standard, Some(MS), now)
        .grants
        .is_empty());
    // 7/10: below the line, the deferred report starts.
    let effects = s.release(Criticality::Standard, Some(MS), now);
    assert_eq!(effects.grants.len(), 1);
    assert_eq!(effects.grants[0].id, id);
    assert_eq!(s.granted_of(Criticality::NonCritical), 1);
    assert_eq!(s.in_use(), 8);
}

#[test]
fn non_critical_gets_the_slots_under_the_warning_line_less_what_others_use() {
    let now = Instant::now();
    let mut s = state(20, 2);
    for _ in 0..3 {
        s.admit(Criticality::Standard, None, far(now), now);
    }
    s.admit(Criticality::Critical, None, far(now), now);
    let mut started = 0;
    let mut waiting = Vec::new();
    for _ in 0..20 {
        match s.admit(Criticality::NonCritical, None, far(now), now).0 {
            Admit::Granted => started += 1,
            Admit::Enqueued { rx, .. } => waiting.push(rx),
            other => panic!("unexpected {other:?}"),
        }
    }
    // 16 is the most use that stays under 85 % of 20; four are taken by others.
    assert_eq!(started, 12);
    assert_eq!(s.in_use(), 16);
    // Standard and critical still get their slots beside them.
    assert!(granted(
        &s.admit(Criticality::Standard, None, far(now), now).0
    ));
    assert!(granted(
        &s.admit(Criticality::Standard, None, far(now), now).0
    ));
    assert!(granted(
        &s.admit(Criticality::Critical, None, far(now), now).0
    ));
}

#[test]
fn deferred_non_critical_keeps_warning_but_never_starves_into_critical() {
    let t0 = Instant::now();
    let mut s = state(20, 2);
    for _ in 0..16 {
        s.admit(Criticality::NonCritical, None, far(t0), t0);
    }
    let _rx = enqueued(s.admit(Criticality::NonCritical, None, far(t0), t0).0);
    assert_eq!(s.level(), Level::Warning, "a backlog is Warning");
    // Long after the starvation bound the deferred report still only means Warning.
    s.observe(t0 + Duration::from_secs(5));
    assert_eq!(s.level(), Level::Warning);
    // A standard waiter that starves does escalate.
    for _ in 0..2 {
        s.admit(Criticality::Standard, None, far(t0), t0);
    }
    let t1 = t0 + Duration::from_secs(5);
    let _w = enqueued(s.admit(Criticality::Standard, None, far(t1), t1).0);
    s.observe(t1 + Duration::from_millis(250));
    assert_eq!(s.level(), Level::Critical);
}

#[test]
fn a_waiter_that_cannot_start_before_its_deadline_is_refused_at_once() {
    let t0 = Instant::now();
    let mut s = state(20, 2);
    s.settings.queue_depth = 1000;
    s.gate
        .holds
        .record(Criticality::NonCritical, Duration::from_millis(800));
    for _ in 0..16 {
        assert!(granted(
            &s.admit(Criticality::NonCritical, None, far(t0), t0).0
        ));
    }
    let deadline = t0 + Duration::from_secs(5);
    // 16 slots of 800 ms: the waiter with 95 ahead starts after 6 rounds (4.8 s) and may
    // wait; the next would start at 5.6 s, past its deadline.
    let mut rxs = Vec::new();
    for _ in 0..96 {
        rxs.push(enqueued(
            s.admit(Criticality::NonCritical, None, deadline, t0).0,
        ));
    }
    match s.admit(Criticality::NonCritical, None, deadline, t0).0 {
        Admit::Rejected(r) => {
            assert_eq!(r.kind, RejectionKind::Shed);
            // Retry-After: when its start (5.6 s) would fit its 5 s wait, plus at most an
            // eighth of the estimate.
            assert!(r.retry_after >= Duration::from_millis(600), "{r:?}");
            assert!(r.retry_after <= Duration::from_millis(1300), "{r:?}");
        }
        other => panic!("expected an immediate refusal, got {other:?}"),
    }
    // A longer deadline would have waited.
    enqueued(
        s.admit(
            Criticality::NonCritical,
            None,
            t0 + Duration::from_secs(6),
            t0,
        )
        .0,
    );
}

#[test]
fn the_first_measured_hold_refuses_the_hopeless_tail_at_once() {
    let t0 = Instant::now();
    let mut s = state(20, 2);
    s.settings.queue_depth = 1000;
    let deadline = t0 + Duration::from_secs(5);
    for _ in 0..16 {
        s.admit(Criticality::NonCritical, None, deadline, t0);
    }
    // Nothing measured: every waiter is queued.
    let _rxs: Vec<_> = (0..144)
        .map(|_| enqueued(s.admit(Criticality::NonCritical, None, deadline, t0).0))
        .collect();
    let t1 = t0 + Duration::from_millis(800);
    let effects = s.release(
        Criticality::NonCritical,
        Some(Duration::from_millis(800)),
        t1,
    );
    // One slot freed, one started; at 800 ms holds over 16 slots 4.2 s left is room for 5
    // rounds: 80 waiters keep their place, the rest are told now.
    assert_eq!(effects.grants.len(), 1);
    let refused = effects.refusals.len();
    assert_eq!(s.queued_of(Criticality::NonCritical), 143 - refused);
    assert!((60..=64).contains(&refused), "refused {refused}");
    for (w, r) in &effects.refusals {
        assert_eq!(r.kind, RejectionKind::Shed);
        assert!(w.deadline > t1, "told before the deadline");
        // Back once the queue has drained enough for its start to fit its deadline.
        assert!(r.retry_after > Duration::ZERO && r.retry_after < Duration::from_secs(4));
    }
    // The refused are the newest (waiter ids are 0..144 in order of arrival).
    let mut ids: Vec<u64> = effects.refusals.iter().map(|(w, _)| w.id).collect();
    ids.sort();
    assert_eq!(ids, (144 - refused as u64..144).collect::<Vec<_>>());
}

#[test]
fn queue_depth_is_bounded_per_class() {
    let now = Instant::now();
    let mut s = state(1, 0);
    s.admit(Criticality::Standard, None, far(now), now);
    let mut rxs = Vec::new();
    for _ in 0..8 {
        rxs.push(enqueued(
            s.admit(Criticality::Standard, None, far(now), now).0,
        ));
    }
    assert!(matches!(
        s.admit(Criticality::Standard, None, far(now), now).0,
        Admit::Rejected(Refusal {
            kind: RejectionKind::QueueFull,
            ..
        })
    ));
    // A full standard queue does not keep critical work out of its own.
    rxs.push(enqueued(
        s.admit(Criticality::Critical, None, far(now), now).0,
    ));
}

#[test]
fn a_cancelled_waiter_is_never_granted() {
    let now = Instant::now();
    let mut s = state(1, 0);
    s.admit(Criticality::Standard, None, far(now), now);
    let (id, _rx) = enqueued(s.admit(Criticality::Standard, None, far(now), now).0);
    assert!(s.cancel(Criticality::Standard, &None, id));
    let effects = s.release(Criticality::Standard, Some(MS), now);
    assert!(effects.grants.is_empty());
    assert_eq!(s.granted(), 0);
    assert_eq!(s.grants_total(), 1);
    assert_eq!(s.queued(), 0);
}

#[test]
fn a_waiter_whose_caller_left_or_whose_deadline_passed_is_never_started() {
    let t0 = Instant::now();
    let mut s = state(2, 0);
    s.admit(Criticality::Standard, None, far(t0), t0);
    s.admit(Criticality::Standard, None, far(t0), t0);
    let (_, gone) = enqueued(s.admit(Criticality::Standard, None, far(t0), t0).0);
    let (late, _late_rx) = enqueued(
        s.admit(
            Criticality::Standard,
            None,
            t0 + Duration::from_millis(100),
            t0,
        )
        .0,
    );
    let (live, _live_rx) = enqueued(s.admit(Criticality::Standard, None, far(t0), t0).0);
    drop(gone);
    let t1 = t0 + Duration::from_millis(150);
    let effects = s.release(Criticality::Standard, Some(MS), t1);
    assert_eq!(
        effects.grants.iter().map(|w| w.id).collect::<Vec<_>>(),
        [live]
    );
    assert_eq!(effects.refusals.len(), 1);
    assert_eq!(effects.refusals[0].0.id, late);
    assert_eq!(effects.refusals[0].1.kind, RejectionKind::QueueTimeout);
    assert_eq!(s.grants_total(), 3);
}

#[test]
fn the_deadline_keeper_refuses_each_waiter_at_its_deadline_and_books_the_next_one() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let mut s = state(1, 0);
    s.admit(Criticality::Standard, None, far(t0), t0);
    // The first waiter books the keeper's run at its deadline; a later deadline does not
    // wake it, an earlier one does (a request may bring a shorter deadline of its own).
    // (The first waiter's caller leaves at once: its receiver is dropped with the `_`.)
    let (_, effects) = s.admit(Criticality::Standard, None, at(500), t0);
    assert!(effects.deadline_earlier);
    let (b, effects) = s.admit(Criticality::Standard, None, at(900), t0);
    assert!(!effects.deadline_earlier);
    let (_, _b_rx) = enqueued(b);
    let (c, effects) = s.admit(Criticality::Critical, None, at(200), t0);
    assert!(effects.deadline_earlier);
    let (c, _c_rx) = enqueued(c);

    // Before any deadline: nothing refused, the next run at the earliest deadline.
    let (next, effects) = s.expire(at(100), at(100));
    assert_eq!(next, Some(at(200)));
    assert!(effects.refusals.is_empty());
    assert_eq!(s.queued(), 3);

    // At 500 ms the critical waiter (200 ms) is refused as timed out and the first standard
    // one (500 ms), whose caller left, is taken out unanswered; the next run is the last
    // waiter's deadline.
    let (next, effects) = s.expire(at(500), at(500));
    assert_eq!(next, Some(at(900)));
    assert_eq!(effects.refusals.len(), 1);
    assert_eq!(effects.refusals[0].0.id, c);
    assert_eq!(effects.refusals[0].1.kind, RejectionKind::QueueTimeout);
    assert_eq!(s.queued(), 1);
    assert!(
        !s.admit(Criticality::Standard, None, at(950), at(500))
            .1
            .deadline_earlier
    );

    // The last ones leave: nothing booked, and the next waiter wakes the keeper again.
    let (next, _) = s.expire(at(1000), at(1000));
    assert_eq!(next, None);
    assert_eq!(s.queued(), 0);
    let (_, effects) = s.admit(Criticality::Standard, None, at(5000), at(1000));
    assert!(effects.deadline_earlier);
}

#[test]
fn non_critical_waits_out_a_full_server_and_comes_back_on_a_ramp() {
    let t0 = Instant::now();
    let mut s = state(20, 2);
    s.settings.queue_depth = 100;
    // Another process holds the server: Critical, and no connection to spare for reports,
    // however idle the pool.
    s.server_utilization = 0.95;
    s.observe(t0);
    assert_eq!(s.level(), Level::Critical);
    let mut rxs: Vec<_> = (0..20)
        .map(|_| enqueued(s.admit(Criticality::NonCritical, None, far(t0), t0).0))
        .collect();
    // Standard work still goes straight to the pool.
    assert!(granted(
        &s.admit(Criticality::Standard, None, far(t0), t0).0
    ));
    s.release(Criticality::Standard, Some(MS), t0);
    assert_eq!(s.granted_of(Criticality::NonCritical), 0);
    // The server frees up; after the dwell the level falls to Warning and the ramp starts
    // at a tenth of the 16 report slots.
    // Still Critical: a tenth of the 14 report slots (the server's 10 % counts as 2 in use).
    s.server_utilization = 0.1;
    let mut started = s.observe(t0 + MS).grants.len();
    assert_eq!(s.level(), Level::Critical);
    assert_eq!(started, 1);
    let t1 = t0 + Duration::from_millis(600);
    started += s.observe(t1).grants.len();
    assert_eq!(s.level(), Level::Warning);
    assert_eq!(s.breaker(t1), NonCriticalGate::Deferred);
    assert_eq!(started, 1);
    // Halfway through the ramp: 55 % of the budget (15 once a report runs and the server's
    // share is its own), then all 16.
    started += s.observe(t1 + Duration::from_secs(1)).grants.len();
    assert_eq!(started, 8);
    started += s.observe(t1 + Duration::from_secs(2)).grants.len();
    assert_eq!(started, 16);
    rxs.clear();
}

#[test]
fn a_short_critical_spike_does_not_stop_running_reports() {
    let t0 = Instant::now();
    let mut s = state(20, 2);
    s.settings.queue_depth = 100;
    for _ in 0..16 {
        s.admit(Criticality::NonCritical, None, far(t0), t0);
    }
    let _rxs: Vec<_> = (0..10)
        .map(|_| enqueued(s.admit(Criticality::NonCritical, None, far(t0), t0).0))
        .collect();
    // Three critical requests at once: 19 of 20, Critical.
    for _ in 0..3 {
        s.admit(Criticality::Critical, None, far(t0), t0);
    }
    assert_eq!(s.level(), Level::Critical);
    for _ in 0..3 {
        s.release(Criticality::Critical, Some(MS), t0 + MS);
    }
    // Reports finish and are replaced: those running at Critical keep their slots.
    let e = s.release(Criticality::NonCritical, Some(MS), t0 + MS);
    assert_eq!(e.grants.len(), 1);
    assert_eq!(s.level(), Level::Critical);
    // Out of Critical: the ramp keeps the 16 that were running.
    s.observe(t0 + Duration::from_millis(600));
    assert_eq!(s.level(), Level::Warning);
    let e = s.release(
        Criticality::NonCritical,
        Some(MS),
        t0 + Duration::from_millis(601),
    );
    assert_eq!(e.grants.len(), 1);
    assert_eq!(s.granted_of(Criticality::NonCritical), 16);
}

#[test]
fn recovery_reports_duration_and_peak() {
    let t0 = Instant::now();
    let mut s = state(10, 1);
    for _ in 0..10 {
        s.admit(Criticality::Critical, None, far(t0), t0);
    }
    for _ in 0..10 {
        s.release(
            Criticality::Critical,
            Some(MS),
            t0 + Duration::from_millis(100),
        );
    }
    s.observe(t0 + Duration::from_millis(600));
    let effects = s.observe(t0 + Duration::from_millis(1100));
    let (after, peak) = effects.recovered.expect("back to normal");
    assert_eq!(after, Duration::from_millis(1100));
    assert_eq!(peak, 1.0);
}

#[test]
fn the_server_use_rounds_up_to_whole_slots_as_ceil_does() {
    let max = 20.0;
    for step in 0..=2_000 {
        let utilization = f64::from(step) / 2_000.0;
        let slots = utilization * max;
        assert_eq!(ceil_slots(slots), slots.ceil() as usize, "{slots}");
    }
    for slots in [
        0.0,
        -0.0,
        -0.5,
        1e-300,
        3.0000000001,
        1e300,
        f64::INFINITY,
        f64::NAN,
    ] {
        assert_eq!(ceil_slots(slots), slots.ceil() as usize, "{slots}");
    }
}
