//! A platform's chat limits, kept by chatbus (Twitch's shape; Kick's sender
//! keeps a plain window with it): one sliding window per account
//! whose threshold depends on the target channel (the privileged limit
//! where the account is broadcaster, moderator or VIP, else the normal
//! one, counting the messages to every channel), and at most one message
//! per interval in a channel where the account is not privileged. Every
//! window and interval is widened by a margin for the time a request takes
//! to reach Twitch, which counts by its own clock.
//!
//! A message takes its slot when it is let go ([`SendLimiter::reserve`]):
//! its time is recorded before the request is made, so two messages can
//! never both count on the same free slot. When Helix has answered, the
//! slot's time moves to the answer's time ([`SendLimiter::settle`]): Twitch
//! counted the message somewhere between the two, so the window keeps it
//! until the later one has aged out, however long the request took (a
//! slow network, a starved process).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// The limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SendLimits {
    /// The per-account window (Twitch: 30 s).
    pub window: Duration,
    /// Messages per window when the target channel is not privileged.
    pub normal: usize,
    /// Messages per window when it is.
    pub privileged: usize,
    /// One message per this in a channel that is not privileged.
    pub channel_interval: Duration,
    /// Added to the window and the interval.
    pub margin: Duration,
}

#[derive(Debug, Default)]
struct Account {
    /// Its messages of the last window: slot number and when it was let go
    /// (or answered, once settled).
    sent: Vec<(u64, Instant)>,
    /// When its last message to each channel was let go (or answered).
    last_in: HashMap<String, Instant>,
    /// The next slot number.
    next: u64,
}

/// A message's slot in its account's window, to [`SendLimiter::settle`]
/// once the platform answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    account: String,
    channel: String,
    id: u64,
}

/// The sliding windows of every sending account.
#[derive(Debug)]
pub struct SendLimiter {
    limits: SendLimits,
    accounts: Mutex<HashMap<String, Account>>,
    /// The slots of the commands let go and not yet settled, by command id.
    held: Mutex<HashMap<String, Slot>>,
}

impl SendLimiter {
    /// A limiter keeping `limits`.
    pub fn new(limits: SendLimits) -> Self {
        Self {
            limits,
            accounts: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// [`SendLimiter::reserve`] for the command `id`, whose slot is kept
    /// until [`SendLimiter::settle_command`]: a sender's `wait_turn`.
    pub async fn reserve_command(
        &self,
        id: &str,
        account: &str,
        channel: &str,
        privileged: impl Fn() -> bool,
        deadline: Instant,
    ) -> bool {
        let Some(slot) = self.reserve(account, channel, privileged, deadline).await else {
            return false;
        };
        self.held
            .lock()
            .expect("held slots lock")
            .insert(id.to_owned(), slot);
        true
    }

    /// The platform answered the command `id` (or it failed before a call):
    /// its slot counts from now. A sender calls it after `execute`.
    pub fn settle_command(&self, id: &str) {
        let slot = self.held.lock().expect("held slots lock").remove(id);
        if let Some(slot) = slot {
            self.settle(&slot);
        }
    }

    /// How long a message of `account` to `channel` must wait from `now`
    /// (zero: it may go), given whether the channel is privileged.
    fn wait(&self, acc: &mut Account, channel: &str, privileged: bool, now: Instant) -> Duration {
        let window = self.limits.window + self.limits.margin;
        acc.sent
            .retain(|(_, t)| now.saturating_duration_since(*t) < window);
        let limit = if privileged {
            self.limits.privileged
        } else {
            self.limits.normal
        };
        let mut wait = Duration::ZERO;
        if acc.sent.len() >= limit {
            // The window frees a slot when its (len - limit + 1)-th oldest
            // message leaves it.
            let mut times: Vec<Instant> = acc.sent.iter().map(|(_, t)| *t).collect();
            times.sort_unstable();
            let oldest = times[times.len() - limit];
            wait = (oldest + window).saturating_duration_since(now);
        }
        if !privileged && let Some(last) = acc.last_in.get(channel) {
            let interval = self.limits.channel_interval + self.limits.margin;
            wait = wait.max((*last + interval).saturating_duration_since(now));
        }
        wait
    }

    /// Waits until a message of `account` to `channel` may go and takes
    /// its slot; `None` when it could not go before `deadline`.
    /// `privileged` is asked again at every try (the standing may be
    /// learnt meanwhile).
    pub async fn reserve(
        &self,
        account: &str,
        channel: &str,
        privileged: impl Fn() -> bool,
        deadline: Instant,
    ) -> Option<Slot> {
        loop {
            let now = Instant::now();
            let wait = {
                let mut accounts = self.accounts.lock().expect("send limiter lock");
                let acc = accounts.entry(account.to_owned()).or_default();
                let wait = self.wait(acc, channel, privileged(), now);
                if wait.is_zero() {
                    let id = acc.next;
                    acc.next += 1;
                    acc.sent.push((id, now));
                    acc.last_in.insert(channel.to_owned(), now);
                    if acc.last_in.len() > 10_000 {
                        let interval = self.limits.channel_interval + self.limits.margin;
                        acc.last_in
                            .retain(|_, t| now.saturating_duration_since(*t) < interval);
                    }
                    return Some(Slot {
                        account: account.to_owned(),
                        channel: channel.to_owned(),
                        id,
                    });
                }
                wait
            };
            if now + wait > deadline {
                return None;
            }
            tokio::time::sleep(wait).await;
        }
    }

    /// The platform answered the message of `slot`: it counts from now.
    pub fn settle(&self, slot: &Slot) {
        let now = Instant::now();
        let mut accounts = self.accounts.lock().expect("send limiter lock");
        let Some(acc) = accounts.get_mut(&slot.account) else {
            return;
        };
        if let Some(entry) = acc.sent.iter_mut().find(|(id, _)| *id == slot.id) {
            entry.1 = entry.1.max(now);
        }
        if let Some(last) = acc.last_in.get_mut(&slot.channel) {
            *last = (*last).max(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SendLimits {
        SendLimits {
            window: Duration::from_secs(30),
            normal: 20,
            privileged: 100,
            channel_interval: Duration::from_secs(1),
            margin: Duration::ZERO,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn twenty_per_window_and_one_per_second_in_a_channel() {
        let l = SendLimiter::new(limits());
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let mut times = Vec::new();
        for i in 0..45 {
            let channel = format!("c{}", i % 10);
            assert!(l.reserve("bot", &channel, || false, far).await.is_some());
            times.push(Instant::now().duration_since(start));
        }
        // 20 in the first window (10 channels: each channel's second
        // message waits a second), the next 20 from 30 s on.
        assert!(times[19] < Duration::from_secs(30), "{:?}", times[19]);
        assert!(times[20] >= Duration::from_secs(30), "{:?}", times[20]);
        assert!(times[40] >= Duration::from_secs(60), "{:?}", times[40]);
        for w in times.windows(21) {
            assert!(w[20] - w[0] >= Duration::from_secs(30));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn privileged_channels_get_the_higher_limit_but_count_in_the_same_window() {
        let l = SendLimiter::new(limits());
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        for _ in 0..100 {
            assert!(l.reserve("bot", "own", || true, far).await.is_some());
        }
        assert_eq!(Instant::now(), start, "100 at once where privileged");
        // The window is full for a normal channel until 30 s pass.
        assert!(l.reserve("bot", "other", || false, far).await.is_some());
        assert!(Instant::now().duration_since(start) >= Duration::from_secs(30));
    }

    #[tokio::test(start_paused = true)]
    async fn a_message_that_cannot_go_before_its_deadline_is_refused_at_once() {
        let l = SendLimiter::new(limits());
        let start = Instant::now();
        assert!(
            l.reserve("bot", "c", || false, start + Duration::from_secs(5))
                .await
                .is_some()
        );
        assert!(
            l.reserve("bot", "c", || false, start + Duration::from_millis(500))
                .await
                .is_none()
        );
        assert_eq!(Instant::now(), start, "no waiting for what cannot go");
        assert!(
            l.reserve("other", "c", || false, start + Duration::from_millis(1))
                .await
                .is_some(),
            "another account has its own window"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_answer_keeps_its_message_in_the_window_from_the_answer_on() {
        let l = SendLimiter::new(SendLimits {
            normal: 1,
            ..limits()
        });
        let start = Instant::now();
        let far = start + Duration::from_secs(3600);
        let slot = l.reserve("bot", "a", || false, far).await.unwrap();
        // Helix answers 5 s later: Twitch may have counted it as late.
        tokio::time::advance(Duration::from_secs(5)).await;
        l.settle(&slot);
        assert!(l.reserve("bot", "b", || false, far).await.is_some());
        assert!(
            Instant::now().duration_since(start) >= Duration::from_secs(35),
            "{:?}",
            Instant::now().duration_since(start)
        );
    }
}
