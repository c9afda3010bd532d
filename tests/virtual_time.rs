//! The level machine, the controller and admission deadlines on tokio's paused clock: minutes
//! of pressure in milliseconds of real time, with no real sleep and exact bounds.
//!
//! The guard reads time through tokio's clock, so pausing it (`start_paused`) and advancing it
//! (`tokio::time::advance`) drives every timer and every reading the guard makes. The pool
//! points nowhere: `Guard::admit_slot` runs admission exactly as `acquire` does, without
//! asking the pool for a connection.

mod common;

use common::offline::unreachable_pool;
use poolguard::{AcquireContext, Criticality, Error, Guard, GuardConfig, Level, RejectionKind};
use std::time::{Duration, Instant};

fn guard(config: GuardConfig) -> Guard {
    Guard::builder(unreachable_pool(20))
        .config(config)
        .build()
        .unwrap()
}

/// Now, by the paused clock.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

async fn hold(guard: &Guard, class: Criticality, n: usize) -> Vec<poolguard::HeldSlot> {
    let mut slots = Vec::new();
    for _ in 0..n {
        let deadline = now() + Duration::from_secs(1);
        slots.push(
            guard
                .admit_slot(class, AcquireContext::default(), deadline)
                .await
                .expect("a free slot"),
        );
    }
    slots
}

/// Lets the guard's sampler run its ticks up to now.
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

/// Lets `d` of virtual time pass in sampler-sized steps, each tick seen at its own instant.
async fn run_for(d: Duration) {
    let step = Duration::from_millis(100);
    let mut left = d;
    while !left.is_zero() {
        let s = step.min(left);
        tokio::time::advance(s).await;
        settle().await;
        left -= s;
    }
}

#[tokio::test(start_paused = true)]
async fn the_level_steps_down_only_after_its_dwell_on_virtual_time() {
    let real = Instant::now();
    let config = GuardConfig {
        min_dwell: Duration::from_secs(30),
        ..GuardConfig::default()
    };
    let guard = guard(config);
    // 17 of 20 is the warning line.
    let mut slots = hold(&guard, Criticality::Standard, 17).await;
    assert_eq!(guard.level(), Level::Warning);
    // Calm again (10 of 20, below the 80 % recovery line), but not for long enough.
    slots.truncate(10);
    run_for(Duration::from_secs(29)).await;
    assert_eq!(guard.level(), Level::Warning, "29 s of a 30 s dwell");
    run_for(Duration::from_secs(2)).await;
    assert_eq!(guard.level(), Level::Normal, "past the dwell");
    drop(slots);
    assert!(
        real.elapsed() < Duration::from_secs(10),
        "31 s of virtual time took {:?} of real time",
        real.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_waiter_starves_and_is_answered_at_its_deadline_on_virtual_time() {
    let real = Instant::now();
    let guard = guard(GuardConfig::default());
    // 18 of 20: the last 2 are the critical reserve, so a standard request waits (Warning).
    let _held = hold(&guard, Criticality::Critical, 18).await;
    let asked = now();
    let deadline = asked + Duration::from_secs(45);
    let waiter = guard.clone();
    let wait = tokio::spawn(async move {
        let r = waiter
            .admit_slot(Criticality::Standard, AcquireContext::default(), deadline)
            .await;
        (r, now())
    });
    settle().await;
    assert_eq!(
        guard.level(),
        Level::Warning,
        "one waiter, not yet starving"
    );
    // Waiting past the starvation bound (200 ms) escalates, by the guard's clock.
    run_for(Duration::from_secs(44)).await;
    assert_eq!(guard.level(), Level::Critical, "a waiter starving for 44 s");
    assert!(!wait.is_finished(), "still waiting 1 s before its deadline");
    run_for(Duration::from_secs(2)).await;
    let (result, answered) = wait.await.unwrap();
    match result {
        Err(Error::Rejected(r)) => assert_eq!(r.kind, RejectionKind::QueueTimeout),
        other => panic!("expected a queue timeout, got {other:?}"),
    }
    let waited = answered - asked;
    assert!(
        waited >= Duration::from_secs(45) && waited < Duration::from_secs(47),
        "answered after {waited:?} of virtual time"
    );
    // 18 of 20 stays above the 88 % recovery line: Critical holds.
    assert_eq!(guard.level(), Level::Critical);
    assert!(real.elapsed() < Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn non_critical_work_comes_back_on_its_ramp_after_critical() {
    let config = GuardConfig {
        breaker_ramp: Duration::from_secs(60),
        min_dwell: Duration::from_secs(1),
        ..GuardConfig::default()
    };
    let guard = guard(config);
    // The server is full: Critical, and reports wait.
    guard.report_server_utilization(1.0);
    assert_eq!(guard.level(), Level::Critical);
    guard.report_server_utilization(0.0);
    // Out of Critical and down to Normal after two dwells; the ramp started when Critical
    // ended, so its share grows over a minute of virtual time.
    run_for(Duration::from_secs(3)).await;
    assert_eq!(guard.level(), Level::Normal);
    let early = startable_reports(&guard).await;
    run_for(Duration::from_secs(60)).await;
    let late = startable_reports(&guard).await;
    assert!(
        early < late && late == 16,
        "reports startable at once: {early} early in the ramp, {late} after it"
    );
}

/// How many reports start at once (each with a deadline that allows no wait), released after.
async fn startable_reports(guard: &Guard) -> usize {
    let mut held = Vec::new();
    loop {
        let deadline = now() + Duration::from_millis(1);
        match guard
            .admit_slot(
                Criticality::NonCritical,
                AcquireContext::default(),
                deadline,
            )
            .await
        {
            Ok(slot) => held.push(slot),
            Err(_) => break,
        }
        if held.len() > 20 {
            break;
        }
    }
    held.len()
}
