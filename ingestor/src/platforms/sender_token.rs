//! What every sender asks of the token store: the acting account's usable
//! token (refreshed first when this process holds the platform's OAuth
//! settings), and whether it carries the scope a command's kind needs. Each
//! answer that stops a command is its [`Outcome`].

use common::oauth::OAuthError;
use common::token_manager::TokenManager;
use common::token_store::{AccountStatus, StoredToken, TokenStore, account_key};

use super::seam::Outcome;

/// `platform`'s `account`'s usable token: through `manager` when this
/// process refreshes tokens itself, else as the store holds it (the
/// auth-server keeps it fresh). `rejected` when the account is unknown or
/// must be authorized again; `failed` when the store or the refresh fails.
///
/// # Errors
/// The command's [`Outcome`].
pub async fn account_token(
    platform: &str,
    account: &str,
    store: &TokenStore,
    manager: Option<&TokenManager>,
) -> Result<StoredToken, Outcome> {
    let reauth = || {
        Outcome::rejected(format!(
            "reauth_required: {platform} account `{account}` must be authorized again"
        ))
    };
    let token = match manager {
        Some(manager) => match manager.access_token(&account_key(platform, account)).await {
            Ok(t) => Some(t),
            Err(OAuthError::UnknownAccount { .. }) => None,
            Err(OAuthError::ReauthRequired { .. }) => return Err(reauth()),
            Err(e) => return Err(Outcome::failed(format!("token: {e}"))),
        },
        None => store
            .load_token(platform, account)
            .await
            .map_err(|e| Outcome::failed(format!("token store: {e}")))?,
    };
    let Some(token) = token else {
        return Err(Outcome::rejected(format!(
            "unknown_account: no token for {platform} account `{account}` in the token store"
        )));
    };
    if token.status == AccountStatus::ReauthRequired {
        return Err(reauth());
    }
    Ok(token)
}

/// `rejected: missing_scope: <scope>` unless `token` was granted `scope`.
///
/// # Errors
/// The command's [`Outcome`].
pub fn require_scope(token: &StoredToken, scope: &str) -> Result<(), Outcome> {
    if token.scopes.iter().any(|s| s == scope) {
        return Ok(());
    }
    Err(Outcome::rejected(format!(
        "missing_scope: {scope} ({} account `{}`; authorize it again with that scope)",
        token.platform, token.login
    )))
}
