//! Log lines that cannot flood: a warning caused by outside input (a bad
//! IRC line, a malformed answer) goes through a [`LogLimit`], one per call
//! site, which lets a few lines per reason through in each window and
//! counts the rest; the next line that goes through says how many were
//! held back ("1,234 more like this in the last 10 s"). The counts of every
//! occurrence stay in the metrics the call site increments.
//!
//! ```
//! use common::log_limit::LogLimit;
//! static MALFORMED: LogLimit = LogLimit::per_10s(5);
//! for _ in 0..1000 {
//!     if let Some(held_back) = MALFORMED.allow("parse_error") {
//!         tracing::warn!(held_back, "malformed line skipped");
//!     }
//! }
//! ```

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One call site's limit: at most `per_window` lines per reason in each
/// `window`.
#[derive(Debug)]
pub struct LogLimit {
    window: Duration,
    per_window: u32,
    reasons: Mutex<Option<HashMap<&'static str, Reason>>>,
}

#[derive(Debug)]
struct Reason {
    window_start: Instant,
    logged: u32,
    held_back: u64,
}

impl LogLimit {
    /// At most `per_window` lines per reason in each `window`.
    pub const fn new(window: Duration, per_window: u32) -> Self {
        Self {
            window,
            per_window,
            reasons: Mutex::new(None),
        }
    }

    /// At most `per_window` lines per reason every 10 seconds.
    pub const fn per_10s(per_window: u32) -> Self {
        Self::new(Duration::from_secs(10), per_window)
    }

    /// Whether a line for `reason` may be logged now: `Some(n)` with the
    /// number of lines held back since the last one that went through (log
    /// it with the line), or `None` (held back, and counted).
    pub fn allow(&self, reason: &'static str) -> Option<u64> {
        self.allow_at(reason, Instant::now())
    }

    fn allow_at(&self, reason: &'static str, now: Instant) -> Option<u64> {
        let mut reasons = self.reasons.lock().expect("log limit lock");
        let state = reasons
            .get_or_insert_with(HashMap::new)
            .entry(reason)
            .or_insert(Reason {
                window_start: now,
                logged: 0,
                held_back: 0,
            });
        if now.duration_since(state.window_start) >= self.window {
            state.window_start = now;
            state.logged = 0;
        }
        if state.logged < self.per_window {
            state.logged += 1;
            Some(std::mem::take(&mut state.held_back))
        } else {
            state.held_back += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_few_lines_per_reason_and_window_go_through_and_the_rest_are_counted() {
        let limit = LogLimit::new(Duration::from_secs(10), 3);
        let t0 = Instant::now();
        let got: Vec<Option<u64>> = (0..1000).map(|_| limit.allow_at("bad", t0)).collect();
        assert_eq!(&got[..4], &[Some(0), Some(0), Some(0), None]);
        assert_eq!(got.iter().filter(|g| g.is_some()).count(), 3);
        // Another reason has its own budget.
        assert_eq!(limit.allow_at("other", t0), Some(0));
        // The next window: the first line says how many were held back.
        let t1 = t0 + Duration::from_secs(10);
        assert_eq!(limit.allow_at("bad", t1), Some(997));
        assert_eq!(limit.allow_at("bad", t1), Some(0));
    }
}
