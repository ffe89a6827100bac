//! How the ingestor logs in to Twitch IRC: anonymously (read-only, the
//! default, no Twitch app needed) or as an account from the token store.
//!
//! Credentials are fetched for every new connection. With a Twitch client
//! id configured, they come from common's [`TokenManager`], which refreshes
//! the token before it expires, and again when Twitch rejects it
//! ([`IngestorLogin::on_auth_failure`]), so chat keeps flowing across token
//! expiry without a restart. Without one, the token is read from the store,
//! which the auth-server keeps fresh.

use std::sync::{Arc, Mutex};

use common::Secret;
use common::oauth::OAuthError;
use common::oauth::OAuthConfig;
use common::token_manager::{TokenManager, TokenManagerOptions};
use common::token_store::{AccountStatus, TokenStore, account_key};

use super::settings::Settings;
/// What a connection logs in with.
#[derive(Debug, Clone)]
pub struct Credentials {
    /// The nick (`NICK`).
    pub login: String,
    /// The OAuth token (`PASS oauth:...`); none for anonymous reading.
    pub token: Option<Secret>,
}

/// How the ingestor logs in to Twitch IRC.
#[derive(Debug, Clone)]
pub enum IngestorLogin {
    /// `justinfanNNNNN`: read-only access to any channel's chat.
    Anonymous {
        /// The generated login.
        login: String,
    },
    /// An account from the token store, refreshed by the auth-server.
    Stored {
        /// The store.
        store: TokenStore,
        /// The account's login.
        login: String,
    },
    /// An account from the token store, refreshed by this process too.
    Managed {
        /// The shared token manager.
        manager: TokenManager,
        /// The account's login.
        login: String,
        /// The token handed to the last connection (to refresh it if
        /// Twitch rejects it).
        last: Arc<Mutex<Option<Secret>>>,
    },
}

/// Why credentials could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] common::token_store::TokenStoreError),
    /// The token manager failed (unknown account, reauth required, provider error).
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    /// The account is not in the store.
    #[error(
        "no token for twitch account `{0}` in the token store; authorize it with the auth-server"
    )]
    Missing(String),
    /// The account needs a human to authorize again.
    #[error("twitch account `{0}` needs to be authorized again (reauth_required)")]
    ReauthRequired(String),
}

impl IngestorLogin {
    /// The login `settings` ask for (`TWITCH_LOGIN`; anonymous without
    /// one), and the token manager that keeps its token fresh when this
    /// process refreshes it itself (a Twitch client id is configured).
    ///
    /// # Errors
    /// When the Twitch OAuth provider settings are unusable.
    pub fn from_settings(
        settings: &Settings,
        oauth: &OAuthConfig,
    ) -> anyhow::Result<(Self, Option<TokenManager>)> {
        let Some(login) = &settings.twitch_login else {
            return Ok((Self::anonymous(), None));
        };
        match oauth.twitch()? {
            Some(provider) => {
                // Only its own account: others in the store are not ours to
                // validate or refresh.
                let options = TokenManagerOptions {
                    only_account: Some(account_key(common::schema::PLATFORM_TWITCH, login)),
                    ..TokenManagerOptions::default()
                };
                let manager = TokenManager::with_options(oauth.token_store(), provider, options);
                Ok((Self::managed(manager.clone(), login), Some(manager)))
            }
            None => {
                tracing::warn!(%login, "no TWITCH_CLIENT_ID: using the stored token as the auth-server keeps it fresh");
                Ok((
                    Self::Stored {
                        store: oauth.token_store(),
                        login: login.clone(),
                    },
                    None,
                ))
            }
        }
    }

    /// Anonymous, read-only.
    pub fn anonymous() -> Self {
        Self::Anonymous {
            login: format!("justinfan{}", 10_000 + rand::random::<u32>() % 90_000),
        }
    }

    /// An account refreshed through `manager`.
    pub fn managed(manager: TokenManager, login: &str) -> Self {
        Self::Managed {
            manager,
            login: login.to_owned(),
            last: Arc::new(Mutex::new(None)),
        }
    }

    /// Whether this reads anonymously.
    pub fn is_anonymous(&self) -> bool {
        matches!(self, Self::Anonymous { .. })
    }

    /// The login name we appear as.
    pub fn login(&self) -> &str {
        match self {
            Self::Anonymous { login }
            | Self::Stored { login, .. }
            | Self::Managed { login, .. } => login,
        }
    }

    /// Twitch refused our token (`Login authentication failed`): refresh it
    /// so the reconnect that follows uses a new one.
    pub async fn on_auth_failure(&self) {
        match self {
            Self::Anonymous { .. } => {}
            Self::Stored { login, .. } => {
                tracing::error!(%login, "Twitch rejected the stored token; waiting for the auth-server to refresh it (or set TWITCH_CLIENT_ID so the ingestor can)");
            }
            Self::Managed {
                manager,
                login,
                last,
            } => {
                let rejected = last.lock().expect("last token lock").clone();
                let key = account_key(common::schema::PLATFORM_TWITCH, login);
                let result = match rejected {
                    Some(token) => manager.refresh_if_current(&key, &token).await,
                    None => manager.refresh(&key).await,
                };
                match result {
                    Ok(_) => tracing::warn!(%login, "Twitch rejected the token; refreshed it"),
                    Err(e) => {
                        tracing::error!(%login, error = %e, "Twitch rejected the token and it cannot be refreshed")
                    }
                }
            }
        }
    }
}

impl IngestorLogin {
    /// The credentials for a new connection.
    ///
    /// # Errors
    /// [`LoginError`] when the account has no usable token.
    pub async fn credentials(&self) -> Result<Credentials, LoginError> {
        match self {
            Self::Anonymous { login } => Ok(Credentials {
                login: login.clone(),
                token: None,
            }),
            Self::Stored { store, login } => {
                let token = store
                    .load_token(common::schema::PLATFORM_TWITCH, login)
                    .await?
                    .ok_or_else(|| LoginError::Missing(login.clone()))?;
                if token.status == AccountStatus::ReauthRequired {
                    tracing::error!(account = %account_key("twitch", login), "token store says reauth_required");
                    return Err(LoginError::ReauthRequired(login.clone()));
                }
                Ok(Credentials {
                    login: token.login.clone(),
                    token: Some(token.access_token.clone()),
                })
            }
            Self::Managed {
                manager,
                login,
                last,
            } => {
                let key = account_key(common::schema::PLATFORM_TWITCH, login);
                let token = manager.access_token(&key).await.inspect_err(|e| {
                    tracing::error!(account = %key, error = %e, "no usable Twitch token");
                })?;
                *last.lock().expect("last token lock") = Some(token.access_token.clone());
                Ok(Credentials {
                    login: token.login.clone(),
                    token: Some(token.access_token.clone()),
                })
            }
        }
    }
}
