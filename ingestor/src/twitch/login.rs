//! How the ingestor logs in to Twitch IRC: anonymously (read-only, the
//! default, no Twitch app needed) or as an account from the token store.
//! Credentials are fetched for every new connection, so a token refreshed in
//! the store is used on the next (re)connect without a restart.

use async_trait::async_trait;
use common::token_store::{AccountStatus, TokenStore, account_key};
use twitch_irc::login::{CredentialsPair, LoginCredentials};

/// Login credentials for twitch-irc.
#[derive(Debug, Clone)]
pub enum IngestorLogin {
    /// `justinfanNNNNN`: read-only access to any channel's chat.
    Anonymous {
        /// The generated login.
        login: String,
    },
    /// An account from the token store.
    Stored {
        /// The store.
        store: TokenStore,
        /// The account's login.
        login: String,
    },
}

/// Why credentials could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// The store cannot be read.
    #[error(transparent)]
    Store(#[from] common::token_store::TokenStoreError),
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
    /// Anonymous, read-only.
    pub fn anonymous() -> Self {
        Self::Anonymous {
            login: format!("justinfan{}", 10_000 + rand::random::<u32>() % 90_000),
        }
    }

    /// The login name we appear as.
    pub fn login(&self) -> &str {
        match self {
            Self::Anonymous { login } | Self::Stored { login, .. } => login,
        }
    }
}

#[async_trait]
impl LoginCredentials for IngestorLogin {
    type Error = LoginError;

    async fn get_credentials(&self) -> Result<CredentialsPair, LoginError> {
        match self {
            Self::Anonymous { login } => Ok(CredentialsPair {
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
                Ok(CredentialsPair {
                    login: token.login.clone(),
                    token: Some(token.access_token.expose().to_owned()),
                })
            }
        }
    }
}
