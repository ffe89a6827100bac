//! Why an OAuth operation failed ([`OAuthError`]) and which endpoint said
//! so ([`Endpoint`]). Messages carry the provider's error code and
//! description, never a response body that could hold a token.

use std::time::Duration;

use super::providers::ProviderKind;
use crate::token_store::TokenStoreError;

/// Which provider endpoint an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// The token endpoint, exchanging an authorization code.
    CodeExchange,
    /// The token endpoint, refreshing.
    Refresh,
    /// The validation endpoint.
    Validate,
    /// The revocation endpoint.
    Revoke,
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::CodeExchange => "token endpoint (code exchange)",
            Self::Refresh => "token endpoint (refresh)",
            Self::Validate => "validation endpoint",
            Self::Revoke => "revocation endpoint",
        })
    }
}

/// Why an OAuth operation failed. Messages never contain a token or secret.
#[derive(Debug, thiserror::Error)]
pub enum OAuthError {
    /// No token is stored for the account.
    #[error("no token stored for account {account}; authorize it at the auth-server")]
    UnknownAccount {
        /// The account key (`<platform>:<login>`).
        account: String,
    },
    /// The account's refresh token was rejected: a human must authorize again.
    #[error("account {account} must be authorized again at the auth-server: {reason}")]
    ReauthRequired {
        /// The account key.
        account: String,
        /// What the provider said.
        reason: String,
    },
    /// The access token needs refreshing but the provider issued no refresh token.
    #[error("account {account} has no refresh token; authorize it again at the auth-server")]
    NoRefreshToken {
        /// The account key.
        account: String,
    },
    /// The provider answered with an OAuth error.
    #[error("{provider} {endpoint} refused: {message}")]
    Provider {
        /// The provider.
        provider: ProviderKind,
        /// Which endpoint.
        endpoint: Endpoint,
        /// HTTP status, if known.
        status: Option<u16>,
        /// The OAuth error code (`invalid_grant` ...), if given.
        error: Option<String>,
        /// The provider's explanation.
        message: String,
    },
    /// The provider did not answer in time.
    #[error("{provider} {endpoint} did not answer within {timeout:?}")]
    Timeout {
        /// The provider.
        provider: ProviderKind,
        /// Which endpoint.
        endpoint: Endpoint,
        /// The timeout.
        timeout: Duration,
    },
    /// The request could not be sent or its answer not received.
    #[error("{provider} {endpoint} unreachable: {message}")]
    Http {
        /// The provider.
        provider: ProviderKind,
        /// Which endpoint.
        endpoint: Endpoint,
        /// The transport error, with its causes.
        message: String,
    },
    /// The provider answered something that is not what OAuth promises
    /// (not JSON, missing fields, an unexpected status).
    #[error("{provider} {endpoint} answered unexpectedly: {message}")]
    InvalidResponse {
        /// The provider.
        provider: ProviderKind,
        /// Which endpoint.
        endpoint: Endpoint,
        /// What was wrong (never the body itself).
        message: String,
    },
    /// The token belongs to another application.
    #[error("the token was issued to client id {found}, not to this application ({expected})")]
    WrongClient {
        /// Our client id.
        expected: String,
        /// The token's client id.
        found: String,
    },
    /// The settings cannot be used (a URL the oauth2 crate refuses).
    #[error("provider settings: {0}")]
    Settings(String),
    /// The token store failed.
    #[error(transparent)]
    Store(#[from] TokenStoreError),
}

impl OAuthError {
    /// Whether this is the provider refusing a refresh token (RFC 6749
    /// `invalid_grant`, or Twitch's `Invalid refresh token`).
    pub fn is_refresh_rejection(&self) -> bool {
        match self {
            Self::Provider {
                provider,
                endpoint: Endpoint::Refresh,
                status,
                error,
                message,
            } => {
                error.as_deref() == Some("invalid_grant")
                    // Kick documents only `400 {"error": "Invalid request"}`.
                    || (*provider == ProviderKind::Kick && matches!(status, Some(400 | 401)))
                    || (matches!(status, Some(400 | 401))
                        && message
                            .to_ascii_lowercase()
                            .contains("invalid refresh token"))
            }
            _ => false,
        }
    }

    /// Whether the failure is the provider's or the network's and may pass
    /// (timeouts, unreachable, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Timeout { .. } | Self::Http { .. } | Self::InvalidResponse { .. } => true,
            Self::Provider {
                status: Some(s), ..
            } => *s >= 500 || *s == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refresh_rejections_and_transient_failures_are_told_apart() {
        let rejected = |status, error: Option<&str>, message: &str| OAuthError::Provider {
            provider: ProviderKind::Twitch,
            endpoint: Endpoint::Refresh,
            status,
            error: error.map(str::to_owned),
            message: message.into(),
        };
        assert!(rejected(Some(400), None, "Invalid refresh token").is_refresh_rejection());
        assert!(rejected(Some(400), Some("invalid_grant"), "x").is_refresh_rejection());
        assert!(!rejected(Some(400), None, "Invalid client secret").is_refresh_rejection());
        assert!(!rejected(Some(503), None, "down").is_refresh_rejection());
        assert!(rejected(Some(503), None, "down").is_transient());
    }
}
