//! The command-line verbs besides serving: `auth-server status` (every
//! account with its expiry and state), `auth-server refresh [ACCOUNT]`
//! (refresh now) and `auth-server revoke ACCOUNT`.

use std::fmt::Write as _;

use anyhow::Context as _;
use chrono::Utc;
use common::token_manager::TokenManager;

use crate::Config;
use crate::pages::{account_state, when};

/// One [`TokenManager`] per configured provider, sharing the token store.
///
/// # Errors
/// When a provider's settings are invalid.
pub fn managers(config: &Config) -> anyhow::Result<Vec<TokenManager>> {
    let store = config.oauth.token_store();
    Ok(config
        .oauth
        .providers()?
        .into_iter()
        .map(|p| TokenManager::new(store.clone(), p))
        .collect())
}

/// The manager whose platform the account key (`<platform>:<login>`) names.
pub fn manager_for<'a>(managers: &'a [TokenManager], account: &str) -> Option<&'a TokenManager> {
    let platform = account.split_once(':').map_or(account, |(p, _)| p);
    managers
        .iter()
        .find(|m| m.provider().platform() == platform)
}

/// `auth-server status`: each account with its expiry and state.
///
/// # Errors
/// When the token store cannot be read.
pub async fn status(config: &Config) -> anyhow::Result<String> {
    let store = config.oauth.token_store();
    let file = store.load_async().await?;
    let now = Utc::now();
    let mut out = String::new();
    let _ = writeln!(out, "token store: {}", store.path().display());
    if file.accounts.is_empty() {
        let _ = writeln!(
            out,
            "no accounts; authorize one in the browser at the auth-server's / page"
        );
    }
    let or_never =
        |t: Option<chrono::DateTime<Utc>>| t.map_or_else(|| "never".to_owned(), |t| when(t, now));
    for t in file.accounts.values() {
        let (code, text) = account_state(t, now);
        let _ = writeln!(out, "\n{}  {code}", t.key());
        let _ = writeln!(out, "  state:          {text}");
        let _ = writeln!(out, "  user id:        {}", t.user_id);
        let _ = writeln!(out, "  expires:        {}", or_never(t.expires_at));
        let _ = writeln!(out, "  last refresh:   {}", or_never(t.last_refreshed_at));
        let _ = writeln!(out, "  last validated: {}", or_never(t.last_validated_at));
        let _ = writeln!(out, "  scopes:         {}", t.scopes.join(" "));
        let _ = writeln!(
            out,
            "  refresh token:  {}",
            if t.refresh_token.is_some() {
                "yes"
            } else {
                "no"
            }
        );
    }
    Ok(out)
}

/// What `auth-server refresh` did.
#[derive(Debug, Default)]
pub struct RefreshReport {
    /// One line per account.
    pub lines: Vec<String>,
    /// How many accounts failed.
    pub failures: usize,
}

/// `auth-server refresh [ACCOUNT]`: refreshes one account, or every account
/// of every configured provider, now.
///
/// # Errors
/// When no provider is configured, the account is unknown, or the store
/// cannot be read. Failed refreshes are counted in the report instead.
pub async fn refresh(config: &Config, account: Option<&str>) -> anyhow::Result<RefreshReport> {
    let managers = managers(config)?;
    if managers.is_empty() {
        anyhow::bail!("no provider is configured (set TWITCH_CLIENT_ID and TWITCH_CLIENT_SECRET)");
    }
    let mut targets = Vec::new();
    match account {
        Some(key) => {
            let manager = manager_for(&managers, key)
                .with_context(|| format!("no configured provider for account {key}"))?;
            targets.push((manager, key.to_owned()));
        }
        None => {
            for m in &managers {
                for t in m.accounts().await? {
                    targets.push((m, t.key()));
                }
            }
        }
    }
    let mut report = RefreshReport::default();
    if targets.is_empty() {
        report.lines.push("no accounts to refresh".into());
    }
    let now = Utc::now();
    for (manager, key) in targets {
        match manager.refresh(&key).await {
            Ok(t) => report.lines.push(format!(
                "{key}: refreshed; expires {}",
                t.expires_at
                    .map_or_else(|| "never".to_owned(), |e| when(e, now))
            )),
            Err(e) => {
                report.failures += 1;
                report.lines.push(format!("{key}: failed: {e}"));
            }
        }
    }
    Ok(report)
}

/// `auth-server revoke ACCOUNT`: revokes the account's tokens at the
/// provider and removes it from the store.
///
/// # Errors
/// When no configured provider owns the account, or revocation fails.
pub async fn revoke(config: &Config, account: &str) -> anyhow::Result<String> {
    let managers = managers(config)?;
    let manager = manager_for(&managers, account)
        .with_context(|| format!("no configured provider for account {account}"))?;
    manager.revoke(account).await?;
    Ok(format!(
        "{account}: revoked and removed from the token store"
    ))
}
