//! Reconnect pacing and log rate limiting.

use std::time::{Duration, Instant};

/// First reconnect delay.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
/// Jitter, so a fleet that lost its master does not reconnect in lockstep.
const JITTER: f64 = 0.2;
/// A repeating failure is logged at most once per this period, with a count.
pub const LOG_EVERY: Duration = Duration::from_secs(30);

/// Capped exponential backoff (x2) with +-20% jitter; reset after a successful handshake.
#[derive(Debug)]
pub struct Backoff {
    next: Duration,
    cap: Duration,
}

impl Backoff {
    pub fn new(cap: Duration) -> Self {
        Backoff {
            next: BACKOFF_START.min(cap),
            cap,
        }
    }

    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.cap);
        base.mul_f64(1.0 + JITTER * (fastrand::f64() * 2.0 - 1.0))
    }

    pub fn reset(&mut self) {
        self.next = BACKOFF_START.min(self.cap);
    }
}

/// Decides which of a run of failures to log: the first, then one per [`LOG_EVERY`].
#[derive(Debug, Default)]
pub struct FailureLog {
    last_logged: Option<Instant>,
    /// Failures not logged since the last line (reported in the next line).
    suppressed: u64,
    /// Failures since the last success.
    run: u64,
}

impl FailureLog {
    /// Some(number of failures suppressed since the last line) if this one should be logged.
    pub fn failed(&mut self) -> Option<u64> {
        self.failed_at(Instant::now())
    }

    fn failed_at(&mut self, now: Instant) -> Option<u64> {
        self.run += 1;
        match self.last_logged {
            Some(t) if now.duration_since(t) < LOG_EVERY => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last_logged = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }

    /// True while failures are being suppressed (a line is due once the period ends).
    pub fn quiet(&self) -> bool {
        self.suppressed > 0
    }

    /// Ends a run of failures; returns how many there were.
    pub fn succeeded(&mut self) -> u64 {
        self.last_logged = None;
        self.suppressed = 0;
        std::mem::take(&mut self.run)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_the_cap_with_jitter_and_resets() {
        let mut b = Backoff::new(Duration::from_secs(2));
        let bases = [250, 500, 1000, 2000, 2000];
        for base in bases {
            let d = b.next_delay().as_millis() as f64;
            assert!(
                (base as f64 * 0.8..=base as f64 * 1.2).contains(&d),
                "{d} vs {base}"
            );
        }
        b.reset();
        assert!(b.next_delay() <= Duration::from_millis(300));
    }

    #[test]
    fn repeated_failures_are_logged_once_per_period_with_a_count() {
        let mut f = FailureLog::default();
        let t0 = Instant::now();
        assert_eq!(f.failed_at(t0), Some(0));
        for i in 1..10 {
            assert_eq!(f.failed_at(t0 + Duration::from_secs(i)), None);
        }
        assert!(f.quiet());
        assert_eq!(f.failed_at(t0 + LOG_EVERY), Some(9));
        assert!(!f.quiet());
        assert_eq!(f.succeeded(), 11);
        assert_eq!(
            f.failed_at(t0 + LOG_EVERY),
            Some(0),
            "a new run logs its first failure"
        );
    }
}
