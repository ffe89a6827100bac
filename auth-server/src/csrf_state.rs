//! The OAuth `state` parameter: a random, single-use value per
//! authorization attempt, bound to the browser that started it by a cookie,
//! and valid for a limited time (10 minutes by default).
//!
//! `/auth` creates the state and sets (or reuses) the browser cookie; the
//! callback accepts the state only once, only from the same browser, and
//! only within its lifetime. Anything else is a 400 and writes nothing.
//!
//! For a provider using PKCE (Kick) the attempt also keeps its code
//! verifier, server-side only: the authorize URL carries its challenge,
//! and the callback that ends the attempt takes the verifier for the code
//! exchange.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use common::Secret;
use common::oauth::ProviderKind;
use tokio::time::Instant;

/// Name of the cookie binding a state to the browser.
pub const BROWSER_COOKIE: &str = "chatbus_auth_browser";

/// At most this many attempts are pending; beyond it the oldest is dropped,
/// so a flood of `/auth` requests cannot grow memory without bound.
const MAX_PENDING: usize = 1024;

/// Why a callback's `state` is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The callback carries no `state`.
    #[error("the callback carries no state parameter")]
    Missing,
    /// The state was never issued, or was already used.
    #[error("the state is unknown or was already used")]
    Unknown,
    /// The state is older than its lifetime.
    #[error("the authorization attempt expired; start again")]
    Expired,
    /// The state was issued to another browser (or the cookie is missing).
    #[error("the state was issued to another browser (cookie missing or different)")]
    WrongBrowser,
}

impl StateError {
    /// A stable snake_case code for pages and logs.
    pub fn code(self) -> &'static str {
        match self {
            Self::Missing => "missing_state",
            Self::Unknown => "unknown_state",
            Self::Expired => "expired_state",
            Self::WrongBrowser => "state_browser_mismatch",
        }
    }
}

#[derive(Debug)]
struct Pending {
    provider: ProviderKind,
    browser: String,
    created: Instant,
    verifier: Option<Secret>,
}

/// The pending authorization attempts of this process.
#[derive(Debug)]
pub struct PendingStates {
    ttl: Duration,
    pending: Mutex<HashMap<String, Pending>>,
}

impl PendingStates {
    /// States valid for `ttl`.
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            pending: Mutex::new(HashMap::new()),
        }
    }

    /// How long a state is valid.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Starts an attempt with `provider` from the browser `browser`
    /// (its cookie value); returns the new state.
    pub fn begin(&self, provider: ProviderKind, browser: &str) -> String {
        let state = random_token();
        self.insert(&state, provider, browser, None);
        state
    }

    /// Starts an attempt as [`PendingStates::begin`] does, under a `state`
    /// the caller made (with [`random_token`]), keeping the PKCE `verifier`
    /// until the attempt ends.
    pub fn begin_with(
        &self,
        state: &str,
        provider: ProviderKind,
        browser: &str,
        verifier: Option<Secret>,
    ) {
        self.insert(state, provider, browser, verifier);
    }

    fn insert(&self, state: &str, provider: ProviderKind, browser: &str, verifier: Option<Secret>) {
        let now = Instant::now();
        let mut pending = self.lock();
        pending.retain(|_, p| now.duration_since(p.created) < self.ttl);
        if pending.len() >= MAX_PENDING
            && let Some(oldest) = pending
                .iter()
                .min_by_key(|(_, p)| p.created)
                .map(|(k, _)| k.clone())
        {
            pending.remove(&oldest);
        }
        pending.insert(
            state.to_owned(),
            Pending {
                provider,
                browser: browser.to_owned(),
                created: now,
                verifier,
            },
        );
    }

    /// Ends the attempt `state` from the browser `browser`: returns its
    /// provider if the state is known, unused, unexpired and this browser's.
    ///
    /// The state is used up when it is accepted or has expired, never by
    /// a callback from another browser: otherwise anyone who sees the
    /// callback URL (a shared link, a proxy log) could spoil the real
    /// browser's attempt by presenting it first.
    ///
    /// # Errors
    /// [`StateError`] saying which check failed.
    pub fn finish(
        &self,
        state: Option<&str>,
        browser: Option<&str>,
    ) -> Result<ProviderKind, StateError> {
        self.finish_with(state, browser)
            .map(|(provider, _)| provider)
    }

    /// As [`PendingStates::finish`], also handing over the attempt's PKCE
    /// verifier (once: the attempt ends).
    ///
    /// # Errors
    /// As [`PendingStates::finish`].
    pub fn finish_with(
        &self,
        state: Option<&str>,
        browser: Option<&str>,
    ) -> Result<(ProviderKind, Option<Secret>), StateError> {
        let state = state.filter(|s| !s.is_empty()).ok_or(StateError::Missing)?;
        let mut pending = self.lock();
        let attempt = pending.get(state).ok_or(StateError::Unknown)?;
        if attempt.created.elapsed() >= self.ttl {
            pending.remove(state);
            return Err(StateError::Expired);
        }
        match browser {
            Some(b) if common::http::constant_time_eq(b.as_bytes(), attempt.browser.as_bytes()) => {
                let provider = attempt.provider;
                let attempt = pending.remove(state).expect("the attempt is pending");
                Ok((provider, attempt.verifier))
            }
            _ => Err(StateError::WrongBrowser),
        }
    }

    /// How many attempts are pending (expired ones included until pruned).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no attempt is pending.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// 32 random bytes as 64 hex digits (states and browser cookies).
pub fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `value` looks like a [`random_token`] (a cookie worth reusing).
pub fn is_token(value: &str) -> bool {
    value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWITCH: ProviderKind = ProviderKind::Twitch;

    #[test]
    fn a_state_is_accepted_once_from_its_browser() {
        let states = PendingStates::new(Duration::from_secs(600));
        let s = states.begin(TWITCH, "browser-a");
        assert!(is_token(&s));
        assert_eq!(states.finish(Some(&s), Some("browser-a")), Ok(TWITCH));
        assert_eq!(
            states.finish(Some(&s), Some("browser-a")),
            Err(StateError::Unknown),
            "replay"
        );
    }

    #[test]
    fn missing_unknown_and_foreign_states_are_refused() {
        let states = PendingStates::new(Duration::from_secs(600));
        assert_eq!(states.finish(None, Some("b")), Err(StateError::Missing));
        assert_eq!(states.finish(Some(""), Some("b")), Err(StateError::Missing));
        assert_eq!(
            states.finish(Some("made-up"), Some("b")),
            Err(StateError::Unknown)
        );
        let s = states.begin(TWITCH, "browser-a");
        assert_eq!(
            states.finish(Some(&s), Some("browser-b")),
            Err(StateError::WrongBrowser)
        );
        let s2 = states.begin(TWITCH, "browser-a");
        assert_eq!(
            states.finish(Some(&s2), None),
            Err(StateError::WrongBrowser)
        );
        // Foreign callbacks did not use the states up: their browser can.
        assert_eq!(states.finish(Some(&s), Some("browser-a")), Ok(TWITCH));
        assert_eq!(states.finish(Some(&s2), Some("browser-a")), Ok(TWITCH));
        assert_eq!(
            states.finish(Some(&s), Some("browser-a")),
            Err(StateError::Unknown)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_state_expires_after_its_lifetime() {
        let states = PendingStates::new(Duration::from_secs(600));
        let fresh = states.begin(TWITCH, "b");
        let stale = states.begin(TWITCH, "b");
        tokio::time::advance(Duration::from_secs(599)).await;
        assert_eq!(states.finish(Some(&fresh), Some("b")), Ok(TWITCH));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            states.finish(Some(&stale), Some("b")),
            Err(StateError::Expired)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pending_states_are_pruned_and_bounded() {
        let states = PendingStates::new(Duration::from_secs(10));
        for _ in 0..5 {
            states.begin(TWITCH, "b");
        }
        tokio::time::advance(Duration::from_secs(11)).await;
        states.begin(TWITCH, "b");
        assert_eq!(states.len(), 1, "expired states are pruned");
        for _ in 0..(MAX_PENDING + 10) {
            states.begin(TWITCH, "b");
        }
        assert_eq!(states.len(), MAX_PENDING);
    }
}
