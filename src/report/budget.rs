//! The LLM budget: calls and tokens per hour and per day, over sliding windows. Pure: time is
//! passed in.

use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(86_400);

/// Limits on LLM use. Plain data; every field has a default.
///
/// | field | default |
/// | --- | --- |
/// | `calls_per_hour` | 20 |
/// | `calls_per_day` | 100 |
/// | `tokens_per_hour` | 40 000 |
/// | `tokens_per_day` | 200 000 |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BudgetConfig {
    /// Most LLM calls in any hour.
    pub calls_per_hour: u32,
    /// Most LLM calls in any 24 hours.
    pub calls_per_day: u32,
    /// Most tokens (prompt + completion) in any hour.
    pub tokens_per_hour: u64,
    /// Most tokens in any 24 hours.
    pub tokens_per_day: u64,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            calls_per_hour: 20,
            calls_per_day: 100,
            tokens_per_hour: 40_000,
            tokens_per_day: 200_000,
        }
    }
}

/// Which limit refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetLimit {
    /// `calls_per_hour`.
    CallsPerHour,
    /// `calls_per_day`.
    CallsPerDay,
    /// `tokens_per_hour`.
    TokensPerHour,
    /// `tokens_per_day`.
    TokensPerDay,
}

/// Counts calls and tokens against a [`BudgetConfig`].
#[derive(Debug, Clone)]
pub struct Budget {
    config: BudgetConfig,
    /// (time, tokens) of each call in the last day, oldest first.
    calls: VecDeque<(SystemTime, u64)>,
    skipped: [u64; 4],
}

impl Budget {
    /// A budget with nothing spent.
    pub fn new(config: BudgetConfig) -> Self {
        Self {
            config,
            calls: VecDeque::new(),
            skipped: [0; 4],
        }
    }

    fn spent(&self, now: SystemTime, within: Duration) -> (u32, u64) {
        self.calls
            .iter()
            .filter(|(at, _)| now.duration_since(*at).unwrap_or_default() < within)
            .fold((0, 0), |(c, t), (_, tok)| (c + 1, t + tok))
    }

    /// Whether a call estimated at `tokens` fits at `now`. A refusal is counted by limit.
    pub fn check(&mut self, now: SystemTime, tokens: u64) -> Result<(), BudgetLimit> {
        while let Some((at, _)) = self.calls.front() {
            if now.duration_since(*at).unwrap_or_default() >= DAY {
                self.calls.pop_front();
            } else {
                break;
            }
        }
        let (h_calls, h_tokens) = self.spent(now, HOUR);
        let (d_calls, d_tokens) = self.spent(now, DAY);
        let c = &self.config;
        let refused = if h_calls >= c.calls_per_hour {
            Some(BudgetLimit::CallsPerHour)
        } else if d_calls >= c.calls_per_day {
            Some(BudgetLimit::CallsPerDay)
        } else if h_tokens + tokens > c.tokens_per_hour {
            Some(BudgetLimit::TokensPerHour)
        } else if d_tokens + tokens > c.tokens_per_day {
            Some(BudgetLimit::TokensPerDay)
        } else {
            None
        };
        match refused {
            Some(limit) => {
                self.skipped[limit as usize] += 1;
                Err(limit)
            }
            None => Ok(()),
        }
    }

    /// Records a call made at `now` that spent `tokens`.
    pub fn record(&mut self, now: SystemTime, tokens: u64) {
        self.calls.push_back((now, tokens));
    }

    /// Calls refused by `limit` so far.
    pub fn skipped(&self, limit: BudgetLimit) -> u64 {
        self.skipped[limit as usize]
    }

    /// Calls refused by any limit so far.
    pub fn skipped_total(&self) -> u64 {
        self.skipped.iter().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(calls_h: u32, calls_d: u32, tok_h: u64, tok_d: u64) -> Budget {
        Budget::new(BudgetConfig {
            calls_per_hour: calls_h,
            calls_per_day: calls_d,
            tokens_per_hour: tok_h,
            tokens_per_day: tok_d,
        })
    }

    #[test]
    fn calls_per_hour_slide_with_time() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let mut b = budget(2, 100, 1_000_000, 1_000_000);
        for i in 0..2 {
            b.check(t0 + Duration::from_secs(i), 10).unwrap();
            b.record(t0 + Duration::from_secs(i), 10);
        }
        assert_eq!(
            b.check(t0 + Duration::from_secs(60), 10),
            Err(BudgetLimit::CallsPerHour)
        );
        // One hour after the first call, one slot is free again.
        assert_eq!(b.check(t0 + HOUR, 10), Ok(()));
        assert_eq!(b.skipped(BudgetLimit::CallsPerHour), 1);
    }

    #[test]
    fn daily_and_token_limits_refuse_and_are_counted() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(10_000_000);
        let mut b = budget(100, 3, 500, 10_000);
        for i in 0..3u64 {
            let at = t0 + Duration::from_secs(i * 7200);
            b.check(at, 100).unwrap();
            b.record(at, 100);
        }
        let later = t0 + Duration::from_secs(6 * 3600 + 1);
        assert_eq!(b.check(later, 100), Err(BudgetLimit::CallsPerDay));
        let mut b = budget(100, 100, 500, 10_000);
        b.record(t0, 450);
        assert_eq!(b.check(t0, 100), Err(BudgetLimit::TokensPerHour));
        assert_eq!(b.check(t0 + HOUR, 100), Ok(()));
        let mut b = budget(100, 100, 1_000_000, 1_000);
        b.record(t0, 950);
        assert_eq!(b.check(t0 + 2 * HOUR, 100), Err(BudgetLimit::TokensPerDay));
        assert_eq!(b.check(t0 + DAY, 100), Ok(()));
        assert_eq!(b.skipped_total(), 1);
    }
}
