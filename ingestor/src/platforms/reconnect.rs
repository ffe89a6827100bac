//! The platforms' reconnect backoff: how long a platform connection (an
//! IRC socket, a chat stream, a poller) waits before it tries again.
//!
//! Every failed attempt waits longer (exponential, with jitter, up to the
//! platform's maximum). A connection that stayed up for `healthy_after`
//! before it ended was healthy: it reconnects at once and the backoff
//! starts again. One that ended sooner counts as a failed attempt, so a
//! server that accepts and drops every connection meets the backoff.

use std::time::Duration;

use common::amqp::Backoff;

/// One connection's reconnect state.
#[derive(Debug, Clone)]
pub struct Reconnect {
    backoff: Backoff,
    healthy_after: Duration,
    failures: u32,
}

impl Reconnect {
    /// Waits from `backoff`; a connection up for `healthy_after` was healthy.
    pub fn new(backoff: Backoff, healthy_after: Duration) -> Self {
        Self {
            backoff,
            healthy_after,
            failures: 0,
        }
    }

    /// An attempt failed (the platform could not be reached, or the
    /// connection did not come up): the wait before the next one.
    pub fn failed(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }

    /// A connection that was up for `lasted` ended: `None` to reconnect at
    /// once (it was healthy; the backoff starts again), else the wait.
    pub fn ended(&mut self, lasted: Duration) -> Option<Duration> {
        if lasted >= self.healthy_after {
            self.failures = 0;
            None
        } else {
            Some(self.failed())
        }
    }

    /// An answer came (a poller's call succeeded): the backoff starts
    /// again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failed attempts since the last healthy connection.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reconnect() -> Reconnect {
        Reconnect::new(
            Backoff {
                initial: Duration::from_secs(1),
                max: Duration::from_secs(8),
                max_attempts: None,
            },
            Duration::from_secs(30),
        )
    }

    #[test]
    fn failures_wait_longer_up_to_the_maximum() {
        let mut r = reconnect();
        for (attempt, full) in [(1, 1), (2, 2), (3, 4), (4, 8), (5, 8), (6, 8)] {
            let wait = r.failed();
            assert_eq!(r.failures(), attempt);
            let full = Duration::from_secs(full);
            assert!(wait >= full / 2 && wait <= full, "{attempt}: {wait:?}");
        }
    }

    #[test]
    fn a_short_connection_is_a_failure_and_a_healthy_one_starts_again() {
        let mut r = reconnect();
        r.failed();
        let wait = r.ended(Duration::from_secs(2)).expect("short: back off");
        assert_eq!(r.failures(), 2);
        assert!(wait >= Duration::from_secs(1), "{wait:?}");
        assert_eq!(r.ended(Duration::from_secs(30)), None, "healthy: at once");
        assert_eq!(r.failures(), 0);
        r.failed();
        r.reset();
        assert_eq!(r.failures(), 0);
    }
}
