//! [`TokenManager`]: keeps one provider's accounts in the token store
//! usable, for every process that needs a token (the auth-server, the
//! ingestor).
//!
//! * [`TokenManager::access_token`] hands out a token, refreshing it first
//!   when it is past [`TokenManagerOptions::refresh_at`] of its lifetime
//!   (80 % by default).
//! * [`TokenManager::refresh_if_current`] (after the platform answered 401)
//!   and [`TokenManager::refresh`] (forced) refresh on demand.
//! * [`TokenManager::run`] refreshes ahead of expiry and validates every
//!   token hourly (Twitch requires both) until cancelled.
//!
//! **Concurrency.** A refresh happens inside [`TokenStore::update`]: under
//! the store's cross-process lock the account is re-read, and if another
//! process (or task) refreshed it meanwhile, its token is used and no second
//! refresh is made. Otherwise the refresh request is sent and its answer
//! written before the lock is released, so the refresh token on disk is
//! always the newest one, however many processes refresh at once.
//!
//! **Rejection.** When the provider refuses the refresh token the account is
//! marked [`AccountStatus::ReauthRequired`] (with the provider's reason) in
//! the store, logged at error level, and the gauge
//! `chatbus_oauth_reauth_required{provider,account}` becomes 1. Nothing
//! refreshes it again until a human authorizes it anew.
//!
//! Metrics: `chatbus_oauth_refreshes_total{provider,outcome}` (`refreshed`,
//! `already_fresh`, `rejected`, `error`), `chatbus_oauth_validations_total{provider,outcome}`
//! (`valid`, `invalid`, `error`), `chatbus_oauth_reauth_required{provider,account}`,
//! `chatbus_oauth_token_expiry_timestamp_seconds{provider,account}`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::oauth::{OAuthClient, OAuthError, ProviderSettings, Validation, expiry};
use crate::secret::Secret;
use crate::token_store::{AccountStatus, StoredToken, TokenFile, TokenStore};

/// When the manager refreshes and validates.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenManagerOptions {
    /// Fraction of a token's lifetime after which it is refreshed (0.8:
    /// a 4-hour token is refreshed after 3 h 12 min).
    pub refresh_at: f64,
    /// How often every token is validated with the provider (Twitch: hourly).
    pub validate_every: Duration,
    /// How often [`TokenManager::run`] re-reads the store when nothing is
    /// due, to pick up accounts other processes added.
    pub poll_every: Duration,
    /// First wait after a failed refresh or validation; doubles with each
    /// further failure of the same account, up to `validate_every`.
    pub retry_after: Duration,
    /// When set, [`TokenManager::run`] looks after this account (its key,
    /// e.g. `twitch:mybot`) and leaves the store's others to whoever uses
    /// them. A service that logs in as one account sets it; the auth-server,
    /// which keeps every account, does not.
    pub only_account: Option<String>,
}

impl Default for TokenManagerOptions {
    fn default() -> Self {
        Self {
            refresh_at: 0.8,
            validate_every: Duration::from_secs(3600),
            poll_every: Duration::from_secs(30),
            retry_after: Duration::from_secs(15),
            only_account: None,
        }
    }
}

/// Keeps the tokens of one provider's accounts refreshed and validated.
/// Cheap to clone; clones share state.
#[derive(Debug, Clone)]
pub struct TokenManager {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: TokenStore,
    client: OAuthClient,
    options: TokenManagerOptions,
    /// Serialises this process's refreshes, so tasks queue here rather than
    /// on the file lock (each waiter holds a blocking thread there).
    local: tokio::sync::Mutex<()>,
}

/// When a refresh is wanted, checked again under the store's lock.
#[derive(Debug, Clone)]
enum RefreshMode {
    /// The token is past its refresh point.
    IfDue,
    /// The platform rejected this access token.
    IfCurrent(Secret),
    /// Unconditionally, unless a refresh completed after `since`.
    Forced { since: DateTime<Utc> },
}

/// What happened under the lock.
#[derive(Debug)]
enum Outcome {
    Refreshed(StoredToken),
    AlreadyFresh(StoredToken),
    Rejected { reason: String },
}

impl TokenManager {
    /// A manager for `provider`'s accounts in `store`, with default options.
    pub fn new(store: TokenStore, provider: ProviderSettings) -> Self {
        Self::with_options(store, provider, TokenManagerOptions::default())
    }

    /// A manager with explicit options.
    pub fn with_options(
        store: TokenStore,
        provider: ProviderSettings,
        options: TokenManagerOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                client: OAuthClient::new(provider),
                options,
                local: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The provider's settings.
    pub fn provider(&self) -> &ProviderSettings {
        self.inner.client.settings()
    }

    /// The client for the provider's endpoints (authorize URL, code exchange).
    pub fn client(&self) -> &OAuthClient {
        &self.inner.client
    }

    /// The token store.
    pub fn store(&self) -> &TokenStore {
        &self.inner.store
    }

    /// The options in force.
    pub fn options(&self) -> &TokenManagerOptions {
        &self.inner.options
    }

    /// When `token` should be refreshed: [`TokenManagerOptions::refresh_at`]
    /// of the way from `obtained_at` to `expires_at`. `None` for tokens
    /// that do not expire.
    pub fn refresh_due(&self, token: &StoredToken) -> Option<DateTime<Utc>> {
        let expires_at = token.expires_at?;
        let lifetime = (expires_at - token.obtained_at).max(chrono::Duration::zero());
        let fraction = self.inner.options.refresh_at.clamp(0.0, 1.0);
        let millis = lifetime.num_milliseconds() as f64 * fraction;
        Some(token.obtained_at + chrono::Duration::milliseconds(millis as i64))
    }

    fn is_due(&self, token: &StoredToken, now: DateTime<Utc>) -> bool {
        self.refresh_due(token).is_some_and(|due| now >= due)
    }

    fn validation_due_at(&self, token: &StoredToken) -> Option<DateTime<Utc>> {
        let every = chrono::Duration::from_std(self.inner.options.validate_every).ok()?;
        token.last_validated_at.map(|t| t + every)
    }

    fn owns(&self, token: &StoredToken) -> bool {
        token.platform == self.provider().platform()
    }

    /// Every account of this provider's platform in the store, in key order.
    ///
    /// # Errors
    /// [`OAuthError::Store`] when the store cannot be read.
    pub async fn accounts(&self) -> Result<Vec<StoredToken>, OAuthError> {
        Ok(self
            .inner
            .store
            .load_async()
            .await?
            .accounts
            .into_values()
            .filter(|t| self.owns(t))
            .collect())
    }

    /// The accounts [`TokenManager::run`] looks after: every one of the
    /// provider's, or only [`TokenManagerOptions::only_account`].
    async fn managed_accounts(&self) -> Result<Vec<StoredToken>, OAuthError> {
        let mut accounts = self.accounts().await?;
        if let Some(only) = &self.inner.options.only_account {
            accounts.retain(|t| t.key() == *only);
        }
        Ok(accounts)
    }

    /// The key of the first account of this provider's platform, for
    /// services configured without an account name.
    ///
    /// # Errors
    /// [`OAuthError::Store`] when the store cannot be read.
    pub async fn first_account(&self) -> Result<Option<String>, OAuthError> {
        Ok(self.accounts().await?.first().map(StoredToken::key))
    }

    /// The stored token of `account_key`, whatever its state.
    ///
    /// # Errors
    /// [`OAuthError::UnknownAccount`], [`OAuthError::Store`].
    pub async fn stored(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        self.inner
            .store
            .load_async()
            .await?
            .accounts
            .remove(account_key)
            .filter(|t| self.owns(t))
            .ok_or_else(|| OAuthError::UnknownAccount {
                account: account_key.to_owned(),
            })
    }

    /// A usable token for the account, refreshed first if it is past its
    /// refresh point. If that refresh fails for a passing reason (timeout,
    /// provider down) while the token has not expired yet, the current token
    /// is returned and the refresh is retried on the next call.
    ///
    /// # Errors
    /// [`OAuthError::UnknownAccount`]; [`OAuthError::ReauthRequired`] when
    /// the account needs a human; the refresh's errors when the token has
    /// expired and could not be refreshed.
    pub async fn access_token(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        let token = self.usable(account_key).await?;
        let now = Utc::now();
        if !self.is_due(&token, now) {
            return Ok(token);
        }
        match self.refresh_with(account_key, RefreshMode::IfDue).await {
            Ok(fresh) => Ok(fresh),
            Err(e) if e.is_transient() && token.expires_at.is_some_and(|t| t > now) => {
                tracing::warn!(provider = self.provider().name(), account = account_key, error = %e, "refresh failed; using the current token until it expires");
                Ok(token)
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes now, e.g. after the platform answered 401, or from the
    /// command line. If another process or task refreshed the account after
    /// this call began, its token is returned instead of refreshing again.
    ///
    /// # Errors
    /// [`OAuthError::UnknownAccount`], [`OAuthError::NoRefreshToken`],
    /// [`OAuthError::ReauthRequired`] (now or before), and the provider's
    /// and network's errors ([`OAuthError::Timeout`] ...), after which the
    /// store is unchanged.
    pub async fn refresh(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        let since = Utc::now();
        self.refresh_with(account_key, RefreshMode::Forced { since })
            .await
    }

    /// Refreshes because the platform rejected `rejected` (the access token
    /// the caller used), unless the store already holds a different one, in
    /// which case that is returned: a 401 seen by several tasks or processes
    /// costs one refresh.
    ///
    /// # Errors
    /// As [`TokenManager::refresh`].
    pub async fn refresh_if_current(
        &self,
        account_key: &str,
        rejected: &Secret,
    ) -> Result<StoredToken, OAuthError> {
        self.refresh_with(account_key, RefreshMode::IfCurrent(rejected.clone()))
            .await
    }

    /// Validates the account's token with the provider now. A valid token's
    /// `last_validated_at` (and scopes, expiry) are updated; an invalid one
    /// is refreshed.
    ///
    /// # Errors
    /// As [`TokenManager::refresh`], plus the validation endpoint's errors.
    pub async fn validate(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        let token = self.usable(account_key).await?;
        let provider = self.provider().name();
        let validation = self.inner.client.validate(&token.access_token).await;
        let outcome = match &validation {
            Ok(Validation::Valid(_)) => "valid",
            Ok(Validation::Invalid) => "invalid",
            Err(_) => "error",
        };
        metrics::counter!("chatbus_oauth_validations_total", "provider" => provider, "outcome" => outcome)
            .increment(1);
        match validation? {
            Validation::Valid(info) => {
                let key = account_key.to_owned();
                let checked = token.access_token.clone();
                let now = Utc::now();
                let updated = self
                    .inner
                    .store
                    .update_async(move |file| {
                        let t = file.accounts.get_mut(&key)?;
                        // Only if nobody replaced the token meanwhile.
                        if t.access_token != checked {
                            return None;
                        }
                        t.last_validated_at = Some(now);
                        if !info.scopes.is_empty() {
                            t.scopes = info.scopes;
                        }
                        if let Some(left) = info.expires_in {
                            t.expires_at = expiry(now, Some(left));
                        }
                        Some(t.clone())
                    })
                    .await?;
                match updated {
                    Some(t) => {
                        tracing::debug!(provider, account = account_key, "token validated");
                        Ok(t)
                    }
                    None => self.usable(account_key).await,
                }
            }
            Validation::Invalid => {
                tracing::warn!(
                    provider,
                    account = account_key,
                    "the provider says the access token is invalid; refreshing"
                );
                self.refresh_if_current(account_key, &token.access_token)
                    .await
            }
        }
    }

    /// Stores a newly authorized account (replacing any earlier token of it,
    /// and clearing `reauth_required`), under the store's lock.
    ///
    /// # Errors
    /// [`OAuthError::Store`].
    pub async fn store_authorized(&self, token: StoredToken) -> Result<(), OAuthError> {
        let key = token.key();
        self.publish(&token);
        self.inner.store.update_token(token).await?;
        tracing::info!(
            provider = self.provider().name(),
            account = key,
            "account authorized"
        );
        Ok(())
    }

    /// Revokes the account's tokens at the provider and removes the account
    /// from the store. Returns what was removed.
    ///
    /// # Errors
    /// [`OAuthError::UnknownAccount`], the revocation endpoint's errors
    /// (then the account stays), [`OAuthError::Store`].
    pub async fn revoke(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        let token = self.stored(account_key).await?;
        self.inner.client.revoke(&token.access_token).await?;
        if let Some(refresh) = &token.refresh_token {
            self.inner.client.revoke(refresh).await?;
        }
        let key = account_key.to_owned();
        self.inner
            .store
            .update_async(move |file| file.accounts.remove(&key))
            .await?;
        metrics::gauge!("chatbus_oauth_reauth_required", "provider" => self.provider().name(), "account" => account_key.to_owned())
            .set(0.0);
        tracing::info!(
            provider = self.provider().name(),
            account = account_key,
            "account revoked and removed"
        );
        Ok(token)
    }

    /// Refreshes tokens before they expire and validates them every
    /// [`TokenManagerOptions::validate_every`] (and once at start), until
    /// `cancel` is cancelled. Failures are logged and retried with backoff;
    /// a rejected refresh token marks the account `reauth_required`.
    ///
    /// # Errors
    /// None so far: the loop only ends when cancelled. The `Result` lets
    /// it run under [`crate::shutdown::supervise`].
    pub async fn run(&self, cancel: CancellationToken) -> anyhow::Result<()> {
        let provider = self.provider().name();
        tracing::info!(provider, "token manager started");
        let mut failures: HashMap<String, Backoff> = HashMap::new();
        let mut validated_at_start: std::collections::HashSet<String> = Default::default();
        loop {
            let wait = self.tick(&mut failures, &mut validated_at_start).await;
            tokio::select! {
                () = cancel.cancelled() => {
                    tracing::info!(provider, "token manager stopped");
                    return Ok(());
                }
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// One pass of [`TokenManager::run`]: does what is due, returns how long
    /// to sleep.
    async fn tick(
        &self,
        failures: &mut HashMap<String, Backoff>,
        validated_at_start: &mut std::collections::HashSet<String>,
    ) -> Duration {
        let options = &self.inner.options;
        let accounts = match self.managed_accounts().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(provider = self.provider().name(), error = %e, "cannot read the token store");
                return options.retry_after;
            }
        };
        let now = Utc::now();
        failures.retain(|key, _| accounts.iter().any(|t| t.key() == *key));
        for token in &accounts {
            self.publish(token);
            let key = token.key();
            if token.status == AccountStatus::ReauthRequired
                || failures.get(&key).is_some_and(|b| b.until > now)
            {
                continue;
            }
            let result = if self.is_due(token, now) {
                self.refresh_with(&key, RefreshMode::IfDue).await.map(drop)
            } else if !validated_at_start.contains(&key)
                || self.validation_due_at(token).is_none_or(|t| now >= t)
            {
                self.validate(&key).await.map(drop)
            } else {
                Ok(())
            };
            match result {
                Ok(()) => {
                    validated_at_start.insert(key.clone());
                    failures.remove(&key);
                }
                // Logged at error level where it was decided.
                Err(OAuthError::ReauthRequired { .. }) => {}
                Err(e) => {
                    let backoff = failures
                        .entry(key.clone())
                        .or_insert(Backoff::new(now, options.retry_after));
                    backoff.fail(Utc::now(), options.retry_after, options.validate_every);
                    tracing::warn!(provider = self.provider().name(), account = key, error = %e, retry_in = ?backoff.wait, "token upkeep failed; will retry");
                }
            }
        }
        self.next_wake(failures).await
    }

    /// How long until the next refresh, validation or retry is due, at most
    /// [`TokenManagerOptions::poll_every`].
    async fn next_wake(&self, failures: &HashMap<String, Backoff>) -> Duration {
        let options = &self.inner.options;
        let now = Utc::now();
        let mut next = now + to_chrono(options.poll_every);
        if let Ok(accounts) = self.managed_accounts().await {
            for token in accounts.iter().filter(|t| t.status == AccountStatus::Valid) {
                let due = match failures.get(&token.key()) {
                    Some(b) => Some(b.until),
                    None => [self.refresh_due(token), self.validation_due_at(token)]
                        .into_iter()
                        .flatten()
                        .min(),
                };
                if let Some(due) = due {
                    next = next.min(due);
                }
            }
        }
        (next - now)
            .to_std()
            .unwrap_or_default()
            .max(Duration::from_millis(20))
    }

    /// The account's token unless it is unknown or needs a human.
    async fn usable(&self, account_key: &str) -> Result<StoredToken, OAuthError> {
        let token = self.stored(account_key).await?;
        if token.status == AccountStatus::ReauthRequired {
            return Err(OAuthError::ReauthRequired {
                account: account_key.to_owned(),
                reason: token.status_reason.unwrap_or_default(),
            });
        }
        Ok(token)
    }

    async fn refresh_with(
        &self,
        account_key: &str,
        mode: RefreshMode,
    ) -> Result<StoredToken, OAuthError> {
        let provider = self.provider().name();
        let _local = self.inner.local.lock().await;
        let this = self.clone();
        let key = account_key.to_owned();
        let runtime = tokio::runtime::Handle::current();
        // The refresh request runs inside the store's read-modify-write, so
        // the file lock is held from re-reading the account to writing the
        // new token. The store's update runs on the blocking pool, which
        // may block on the request.
        let result = self
            .inner
            .store
            .update_async(move |file| this.refresh_locked(&runtime, file, &key, &mode))
            .await
            .map_err(OAuthError::from)
            .and_then(|r| r);
        let label = match &result {
            Ok(Outcome::Refreshed(_)) => "refreshed",
            Ok(Outcome::AlreadyFresh(_)) => "already_fresh",
            Ok(Outcome::Rejected { .. }) => "rejected",
            Err(_) => "error",
        };
        metrics::counter!("chatbus_oauth_refreshes_total", "provider" => provider, "outcome" => label)
            .increment(1);
        match result? {
            Outcome::Refreshed(token) => {
                tracing::info!(provider, account = account_key, expires_at = ?token.expires_at, "token refreshed");
                self.publish(&token);
                Ok(token)
            }
            Outcome::AlreadyFresh(token) => {
                tracing::debug!(
                    provider,
                    account = account_key,
                    "token already refreshed elsewhere; using it"
                );
                Ok(token)
            }
            Outcome::Rejected { reason } => {
                tracing::error!(provider, account = account_key, reason = %reason, "refresh token rejected: account marked reauth_required; authorize it again at the auth-server");
                metrics::gauge!("chatbus_oauth_reauth_required", "provider" => provider, "account" => account_key.to_owned())
                    .set(1.0);
                Err(OAuthError::ReauthRequired {
                    account: account_key.to_owned(),
                    reason,
                })
            }
        }
    }

    /// Runs with the store's lock held: decides on the freshly read file
    /// whether a refresh is still wanted, does it, and records the result.
    fn refresh_locked(
        &self,
        runtime: &tokio::runtime::Handle,
        file: &mut TokenFile,
        key: &str,
        mode: &RefreshMode,
    ) -> Result<Outcome, OAuthError> {
        let current = file
            .accounts
            .get(key)
            .filter(|t| self.owns(t))
            .cloned()
            .ok_or_else(|| OAuthError::UnknownAccount {
                account: key.to_owned(),
            })?;
        if current.status == AccountStatus::ReauthRequired {
            return Err(OAuthError::ReauthRequired {
                account: key.to_owned(),
                reason: current.status_reason.unwrap_or_default(),
            });
        }
        let now = Utc::now();
        let fresh = match mode {
            RefreshMode::IfDue => !self.is_due(&current, now),
            RefreshMode::IfCurrent(rejected) => current.access_token != *rejected,
            RefreshMode::Forced { since } => current.obtained_at >= *since,
        };
        if fresh {
            return Ok(Outcome::AlreadyFresh(current));
        }
        let Some(refresh_token) = current.refresh_token.clone() else {
            let expired = current.expires_at.is_some_and(|t| t <= now);
            if expired || matches!(mode, RefreshMode::IfCurrent(_)) {
                let reason =
                    "the access token is no longer valid and the provider issued no refresh token"
                        .to_owned();
                mark_reauth(file, key, current, &reason);
                return Ok(Outcome::Rejected { reason });
            }
            return Err(OAuthError::NoRefreshToken {
                account: key.to_owned(),
            });
        };
        match runtime.block_on(self.inner.client.refresh(&refresh_token)) {
            Ok(grant) => {
                let token = StoredToken {
                    access_token: grant.access_token,
                    // Google does not send the refresh token again: keep ours.
                    refresh_token: grant.refresh_token.or(Some(refresh_token)),
                    expires_at: expiry(now, grant.expires_in),
                    scopes: grant.scopes.unwrap_or(current.scopes.clone()),
                    obtained_at: now,
                    last_refreshed_at: Some(now),
                    status: AccountStatus::Valid,
                    status_reason: None,
                    ..current
                };
                file.accounts.insert(key.to_owned(), token.clone());
                Ok(Outcome::Refreshed(token))
            }
            Err(e) if e.is_refresh_rejection() => {
                let reason = e.to_string();
                mark_reauth(file, key, current, &reason);
                Ok(Outcome::Rejected { reason })
            }
            Err(e) => Err(e),
        }
    }

    /// Sets the account's gauges from what the store says.
    fn publish(&self, token: &StoredToken) {
        let provider = self.provider().name();
        let account = token.key();
        let reauth = if token.status == AccountStatus::ReauthRequired {
            1.0
        } else {
            0.0
        };
        metrics::gauge!("chatbus_oauth_reauth_required", "provider" => provider, "account" => account.clone())
            .set(reauth);
        if let Some(t) = token.expires_at {
            metrics::gauge!("chatbus_oauth_token_expiry_timestamp_seconds", "provider" => provider, "account" => account)
                .set(t.timestamp() as f64);
        }
    }
}

fn mark_reauth(file: &mut TokenFile, key: &str, mut token: StoredToken, reason: &str) {
    token.status = AccountStatus::ReauthRequired;
    token.status_reason = Some(reason.to_owned());
    file.accounts.insert(key.to_owned(), token);
}

fn to_chrono(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// Per-account retry schedule after failures.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    until: DateTime<Utc>,
    wait: Duration,
}

impl Backoff {
    fn new(now: DateTime<Utc>, first: Duration) -> Self {
        Self {
            until: now,
            wait: first / 2,
        }
    }

    fn fail(&mut self, now: DateTime<Utc>, first: Duration, max: Duration) {
        self.wait = (self.wait * 2).clamp(first, max.max(first));
        self.until = now + to_chrono(self.wait);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(refresh_at: f64) -> TokenManager {
        TokenManager::with_options(
            TokenStore::new("/nonexistent/tokenStore.json"),
            ProviderSettings::twitch("c", Secret::new("s")),
            TokenManagerOptions {
                refresh_at,
                ..TokenManagerOptions::default()
            },
        )
    }

    fn token(obtained: DateTime<Utc>, lifetime_secs: Option<i64>) -> StoredToken {
        StoredToken {
            platform: "twitch".into(),
            login: "bot".into(),
            user_id: "1".into(),
            access_token: Secret::new("a"),
            refresh_token: Some(Secret::new("r")),
            expires_at: lifetime_secs.map(|s| obtained + chrono::Duration::seconds(s)),
            scopes: vec![],
            obtained_at: obtained,
            last_refreshed_at: None,
            last_validated_at: None,
            status: AccountStatus::Valid,
            status_reason: None,
        }
    }

    #[test]
    fn refresh_is_due_at_the_configured_fraction_of_the_lifetime() {
        let t0 = Utc::now();
        let m = manager(0.8);
        let four_hours = token(t0, Some(4 * 3600));
        let due = m.refresh_due(&four_hours).unwrap();
        assert_eq!(due - t0, chrono::Duration::minutes(192));
        assert!(!m.is_due(&four_hours, due - chrono::Duration::seconds(1)));
        assert!(m.is_due(&four_hours, due));
        assert_eq!(m.refresh_due(&token(t0, None)), None);
        // An already expired (or nonsensical) lifetime is due at once.
        assert!(m.is_due(&token(t0, Some(-5)), t0));
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let now = Utc::now();
        let first = Duration::from_secs(15);
        let mut b = Backoff::new(now, first);
        let mut waits = vec![];
        for _ in 0..10 {
            b.fail(now, first, Duration::from_secs(100));
            waits.push(b.wait.as_secs());
        }
        assert_eq!(waits[..4], [15, 30, 60, 100]);
        assert_eq!(*waits.last().unwrap(), 100);
        assert_eq!(b.until, now + chrono::Duration::seconds(100));
    }
}

/// The ingestor spawns these futures: they must stay `Send`.
#[cfg(test)]
mod send_check {
    use super::*;

    #[allow(dead_code)]
    fn futures_are_send(m: TokenManager, t: StoredToken) {
        fn send<T: Send>(_: T) {}
        send(m.access_token("x"));
        send(m.refresh("x"));
        send(m.validate("x"));
        send(m.store_authorized(t));
        send(m.client().authorize_account("c", "r"));
        send(m.run(CancellationToken::new()));
    }
}
