//! The JOIN rate limit every connection of the Twitch source shares
//! (`TWITCH_JOIN_LIMIT` per `TWITCH_JOIN_WINDOW`, Twitch's 20 per 10 s).

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// A sliding-window limiter for JOINs shared by every connection.
#[derive(Debug)]
pub struct JoinLimiter {
    limit: usize,
    window: Duration,
    /// Instances of a fleet sharing this account: each takes its share.
    share: AtomicUsize,
    sent: Mutex<VecDeque<Instant>>,
}

impl JoinLimiter {
    /// At most `limit` JOINs in any `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            share: AtomicUsize::new(1),
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// This instance is one of `instances` sharing the account (a fleet):
    /// it sends at most its share, `limit / instances` (at least 1), per
    /// window.
    pub fn set_share(&self, instances: usize) {
        self.share.store(instances.max(1), Ordering::Relaxed);
    }

    /// JOINs this instance may send per window.
    pub fn effective_limit(&self) -> usize {
        (self.limit / self.share.load(Ordering::Relaxed).max(1)).max(1)
    }

    /// `None` if a JOIN may go now (and it is counted), else how long to wait.
    fn try_acquire(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut sent = self.sent.lock().expect("limiter lock");
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            sent.pop_front();
        }
        if sent.len() < self.effective_limit() {
            sent.push_back(now);
            None
        } else {
            let oldest = *sent.front().expect("non-empty");
            Some(self.window.saturating_sub(now.duration_since(oldest)))
        }
    }

    /// Waits until a JOIN may be sent, and counts it.
    pub async fn acquire(&self) {
        while let Some(wait) = self.try_acquire() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_join_limiter_allows_limit_per_window() {
        let limiter = JoinLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..7 {
            limiter.acquire().await;
        }
        // 3 at t=0, 3 at t=10s, 1 at t=20s.
        assert_eq!(start.elapsed().as_secs(), 20);
    }

    #[tokio::test(start_paused = true)]
    async fn a_fleet_share_divides_the_window() {
        let limiter = JoinLimiter::new(20, Duration::from_secs(10));
        limiter.set_share(3);
        assert_eq!(limiter.effective_limit(), 6);
        let start = Instant::now();
        for _ in 0..7 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed().as_secs(), 10);
        limiter.set_share(100);
        assert_eq!(limiter.effective_limit(), 1, "never none at all");
    }
}
