//! OAuth2 providers: their settings ([`ProviderSettings`]), the config keys
//! every service shares to name them ([`OAuthConfig`]), and a client for the
//! provider's endpoints ([`OAuthClient`]): the authorize URL, the code
//! exchange, refresh, validation and revocation.
//!
//! One module per concept, all re-exported here:
//! * `providers`: which providers exist, their endpoints and [`ProviderSettings`];
//! * `config`: [`OAuthConfig`], the shared keys and their checks;
//! * `client`: [`OAuthClient`] and what it returns ([`TokenGrant`], [`Validation`]);
//! * `responses`: the providers' answers as serde types;
//! * `error`: [`OAuthError`].
//!
//! Nothing here logs or displays a token or the client secret: they travel
//! as [`Secret`](crate::secret::Secret)s, and error messages carry the
//! provider's error code and description, never a response body that could
//! hold a token.

mod client;
mod config;
mod error;
mod providers;
mod responses;

pub use client::{MAX_RESPONSE_BYTES, OAuthClient, TokenGrant, TokenInfo, Validation, expiry};
pub use config::{OAuthConfig, check_url_scheme};
pub use error::{Endpoint, OAuthError};
pub use providers::{
    DEFAULT_TIMEOUT, GOOGLE_DEFAULT_SCOPES, KICK_DEFAULT_SCOPES, ProviderKind, ProviderSettings,
    TWITCH_DEFAULT_SCOPES, google_endpoints, kick_endpoints, twitch_endpoints,
};
pub use responses::{ProviderErrorResponse, ProviderTokenResponse, ProviderTokenType};
