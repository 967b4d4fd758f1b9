//! The restart budget, OTP style: more than [`RestartBudget::restarts`]
//! crashes of one target within [`RestartBudget::period`] degrade it until
//! the oldest of them is a period old. Pure: the caller passes the time.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Recent crash times of one target.
#[derive(Debug, Clone)]
pub struct RestartBudget {
    restarts: usize,
    period: Duration,
    crashes: VecDeque<Instant>,
}

impl RestartBudget {
    /// A budget allowing `restarts` crashes per `period`.
    pub fn new(restarts: usize, period: Duration) -> RestartBudget {
        RestartBudget {
            restarts,
            period,
            crashes: VecDeque::new(),
        }
    }

    /// Count a crash at `now`; returns how many fall within the period.
    pub fn record(&mut self, now: Instant) -> usize {
        self.forget_before(now);
        self.crashes.push_back(now);
        self.crashes.len()
    }

    /// `Some(wait)` while the target is degraded at `now`: how long until
    /// it takes requests again.
    pub fn degraded(&mut self, now: Instant) -> Option<Duration> {
        self.forget_before(now);
        let oldest = *self.crashes.front()?;
        (self.crashes.len() > self.restarts).then(|| self.period - now.duration_since(oldest))
    }

    /// Crashes within the period, as of the last call.
    pub fn crashes(&self) -> usize {
        self.crashes.len()
    }

    /// No crash within the period: the budget can be forgotten.
    pub fn is_clear(&self) -> bool {
        self.crashes.is_empty()
    }

    fn forget_before(&mut self, now: Instant) {
        let period = self.period;
        self.crashes.retain(|at| now.duration_since(*at) < period);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PERIOD: Duration = Duration::from_secs(60);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    /// Each row: crash offsets (seconds after t0), the time asked (seconds
    /// after t0), and the expected wait (None: not degraded).
    #[test]
    fn budget_windows() {
        let rows: &[(&[u64], u64, Option<u64>)] = &[
            (&[], 0, None),
            (&[0, 1, 2, 3, 4], 5, None), // 5 crashes: within budget
            (&[0, 1, 2, 3, 4, 5], 5, Some(55)), // the 6th degrades until t0+60
            (&[0, 1, 2, 3, 4, 5], 59, Some(1)),
            (&[0, 1, 2, 3, 4, 5], 60, None), // the oldest left the window
            (&[0, 30, 61, 62, 63, 64], 64, None), // only 5 within 60 s
            (&[0, 10, 20, 30, 40, 50, 55], 56, Some(4)),
        ];
        for &(crashes, asked, expected) in rows {
            let t0 = Instant::now();
            let mut budget = RestartBudget::new(5, PERIOD);
            for &at in crashes {
                budget.record(t0 + secs(at));
            }
            assert_eq!(
                budget.degraded(t0 + secs(asked)),
                expected.map(secs),
                "crashes at {crashes:?}, asked at {asked}"
            );
        }
    }

    #[test]
    fn record_counts_only_the_window() {
        let t0 = Instant::now();
        let mut budget = RestartBudget::new(5, PERIOD);
        assert_eq!(budget.record(t0), 1);
        assert_eq!(budget.record(t0 + secs(30)), 2);
        assert_eq!(budget.record(t0 + secs(70)), 2);
        assert!(!budget.is_clear());
        assert_eq!(budget.degraded(t0 + secs(200)), None);
        assert!(budget.is_clear());
    }
}
