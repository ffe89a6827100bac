//! OAuth2 providers: their settings ([`ProviderSettings`]), the config keys
//! every service shares to name them ([`OAuthConfig`]), and a client for the
//! provider's endpoints ([`OAuthClient`]): the authorize URL, the code
//! exchange, refresh, validation and revocation.
//!
//! Twitch is the reference provider. Google (YouTube live chat) is the same
//! authorization-code flow with `access_type=offline` and `prompt=consent`
//! on the authorize URL (without them Google issues no refresh token) and
//! its `tokeninfo` endpoint in place of Twitch's `/oauth2/validate`.
//!
//! Code exchange and refresh go through the `oauth2` crate with our own
//! token response type, because Twitch answers `scope` as a JSON array where
//! RFC 6749 (and oauth2's `StandardTokenResponse`) expects a space-delimited
//! string; [`ProviderTokenResponse`] accepts both. The HTTP client follows
//! no redirects and has a timeout.
//!
//! Nothing here logs or displays a token or the client secret: they travel
//! as [`Secret`]s, and error messages carry the provider's error code and
//! description, never a response body that could hold a token.

use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use oauth2::basic::{BasicRevocationErrorResponse, BasicTokenIntrospectionResponse};
use oauth2::{
    AccessToken, AsyncHttpClient, AuthType, AuthUrl, AuthorizationCode, ClientId, ClientSecret,
    CsrfToken, EndpointNotSet, EndpointSet, HttpClientError, HttpRequest, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, StandardRevocableToken, TokenUrl,
};
use reqwest::Url;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::{Deserialize, Deserializer, Serialize};

use crate::config::{ConfigError, comma_list};
use crate::secret::Secret;
use crate::telemetry::error_chain;
use crate::token_store::{AccountStatus, StoredToken, TokenStore, TokenStoreError};

/// The OAuth providers chatbus knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Twitch (`id.twitch.tv`).
    Twitch,
    /// Google accounts, for YouTube live chat.
    Google,
}

impl ProviderKind {
    /// The provider's name in config keys and URLs: `twitch`, `google`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Twitch => "twitch",
            Self::Google => "google",
        }
    }

    /// The platform its accounts belong to in the token store: `twitch`,
    /// `youtube`.
    pub fn platform(self) -> &'static str {
        match self {
            Self::Twitch => "twitch",
            Self::Google => "youtube",
        }
    }

    /// A name for people: `Twitch`, `Google (YouTube)`.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Twitch => "Twitch",
            Self::Google => "Google (YouTube)",
        }
    }
}

impl std::fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Twitch's production endpoints.
pub mod twitch_endpoints {
    /// Authorize (the browser goes here).
    pub const AUTHORIZE: &str = "https://id.twitch.tv/oauth2/authorize";
    /// Token (code exchange and refresh).
    pub const TOKEN: &str = "https://id.twitch.tv/oauth2/token";
    /// Token validation (required hourly by Twitch).
    pub const VALIDATE: &str = "https://id.twitch.tv/oauth2/validate";
    /// Token revocation.
    pub const REVOKE: &str = "https://id.twitch.tv/oauth2/revoke";
}

/// Google's production endpoints.
pub mod google_endpoints {
    /// Authorize (the browser goes here).
    pub const AUTHORIZE: &str = "https://accounts.google.com/o/oauth2/v2/auth";
    /// Token (code exchange and refresh).
    pub const TOKEN: &str = "https://oauth2.googleapis.com/token";
    /// Token information (who the token belongs to, scopes, expiry).
    pub const VALIDATE: &str = "https://oauth2.googleapis.com/tokeninfo";
    /// Token revocation.
    pub const REVOKE: &str = "https://oauth2.googleapis.com/revoke";
}

/// Scopes requested from Twitch unless configured: reading chat.
pub const TWITCH_DEFAULT_SCOPES: &[&str] = &["chat:read"];

/// Scopes requested from Google unless configured: who the account is and
/// read access to YouTube (live chat).
pub const GOOGLE_DEFAULT_SCOPES: &[&str] = &[
    "openid",
    "email",
    "https://www.googleapis.com/auth/youtube.readonly",
];

/// Default timeout of one request to a provider.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Everything needed to talk to one provider.
#[derive(Debug, Clone, PartialEq)]
pub struct ProviderSettings {
    /// Which provider.
    pub kind: ProviderKind,
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret.
    pub client_secret: Secret,
    /// Authorize endpoint (the browser is sent here).
    pub authorize_url: String,
    /// Token endpoint (code exchange, refresh).
    pub token_url: String,
    /// Validation endpoint (Twitch `/oauth2/validate`, Google `tokeninfo`).
    pub validate_url: String,
    /// Revocation endpoint.
    pub revoke_url: String,
    /// Scopes to request.
    pub scopes: Vec<String>,
    /// Extra query parameters on the authorize URL (Google:
    /// `access_type=offline`, `prompt=consent`).
    pub authorize_params: Vec<(String, String)>,
    /// Timeout of one request to the provider.
    pub timeout: Duration,
}

impl ProviderSettings {
    /// Twitch with its production endpoints and [`TWITCH_DEFAULT_SCOPES`].
    pub fn twitch(client_id: impl Into<String>, client_secret: Secret) -> Self {
        Self {
            kind: ProviderKind::Twitch,
            client_id: client_id.into(),
            client_secret,
            authorize_url: twitch_endpoints::AUTHORIZE.into(),
            token_url: twitch_endpoints::TOKEN.into(),
            validate_url: twitch_endpoints::VALIDATE.into(),
            revoke_url: twitch_endpoints::REVOKE.into(),
            scopes: TWITCH_DEFAULT_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            authorize_params: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// Google with its production endpoints, [`GOOGLE_DEFAULT_SCOPES`] and
    /// the authorize parameters that make Google issue a refresh token.
    pub fn google(client_id: impl Into<String>, client_secret: Secret) -> Self {
        Self {
            kind: ProviderKind::Google,
            client_id: client_id.into(),
            client_secret,
            authorize_url: google_endpoints::AUTHORIZE.into(),
            token_url: google_endpoints::TOKEN.into(),
            validate_url: google_endpoints::VALIDATE.into(),
            revoke_url: google_endpoints::REVOKE.into(),
            scopes: GOOGLE_DEFAULT_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            authorize_params: vec![
                ("access_type".into(), "offline".into()),
                ("prompt".into(), "consent".into()),
            ],
            timeout: DEFAULT_TIMEOUT,
        }
    }

    /// The provider's name: `twitch`, `google`.
    pub fn name(&self) -> &'static str {
        self.kind.name()
    }

    /// The token store platform of its accounts: `twitch`, `youtube`.
    pub fn platform(&self) -> &'static str {
        self.kind.platform()
    }

    /// All four endpoints pointed at `base` (`<base>/oauth2/authorize`,
    /// `/oauth2/token`, `/oauth2/validate` or `/tokeninfo`, `/oauth2/revoke`),
    /// e.g. a fake provider in tests.
    #[must_use]
    pub fn with_base_url(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        self.authorize_url = format!("{base}/oauth2/authorize");
        self.token_url = format!("{base}/oauth2/token");
        self.validate_url = match self.kind {
            ProviderKind::Twitch => format!("{base}/oauth2/validate"),
            ProviderKind::Google => format!("{base}/tokeninfo"),
        };
        self.revoke_url = format!("{base}/oauth2/revoke");
        self
    }
}

/// The OAuth settings every service shares: where the token store is and
/// how to reach each provider. A service flattens it into its own config
/// (`#[serde(flatten)] pub oauth: OAuthConfig`), so the keys (`TOKEN_STORE_PATH`,
/// `TWITCH_CLIENT_ID`, `GOOGLE_SCOPES` ...) are the same everywhere.
///
/// A provider is configured when its client id is set; then its secret must
/// be given, either directly (`*_CLIENT_SECRET`) or as a file path
/// (`*_CLIENT_SECRET_FILE`), never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuthConfig {
    /// Path of `tokenStore.json`.
    pub token_store_path: PathBuf,
    /// Timeout of one request to a provider.
    #[serde(with = "humantime_serde")]
    pub oauth_timeout: Duration,
    /// Twitch application client id; empty = Twitch not configured.
    pub twitch_client_id: String,
    /// Twitch application client secret.
    pub twitch_client_secret: Secret,
    /// File holding the Twitch client secret (instead of `TWITCH_CLIENT_SECRET`).
    pub twitch_client_secret_file: Option<PathBuf>,
    /// Twitch authorize endpoint.
    pub twitch_authorize_url: String,
    /// Twitch token endpoint.
    pub twitch_token_url: String,
    /// Twitch validation endpoint.
    pub twitch_validate_url: String,
    /// Twitch revocation endpoint.
    pub twitch_revoke_url: String,
    /// Scopes requested from Twitch.
    #[serde(deserialize_with = "comma_list")]
    pub twitch_scopes: Vec<String>,
    /// Google client id; empty = Google not configured.
    pub google_client_id: String,
    /// Google client secret.
    pub google_client_secret: Secret,
    /// File holding the Google client secret (instead of `GOOGLE_CLIENT_SECRET`).
    pub google_client_secret_file: Option<PathBuf>,
    /// Google authorize endpoint.
    pub google_authorize_url: String,
    /// Google token endpoint.
    pub google_token_url: String,
    /// Google token information endpoint.
    pub google_validate_url: String,
    /// Google revocation endpoint.
    pub google_revoke_url: String,
    /// Scopes requested from Google.
    #[serde(deserialize_with = "comma_list")]
    pub google_scopes: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        let twitch = ProviderSettings::twitch("", Secret::default());
        let google = ProviderSettings::google("", Secret::default());
        Self {
            token_store_path: PathBuf::from("tokenStore.json"),
            oauth_timeout: DEFAULT_TIMEOUT,
            twitch_client_id: String::new(),
            twitch_client_secret: Secret::default(),
            twitch_client_secret_file: None,
            twitch_authorize_url: twitch.authorize_url,
            twitch_token_url: twitch.token_url,
            twitch_validate_url: twitch.validate_url,
            twitch_revoke_url: twitch.revoke_url,
            twitch_scopes: twitch.scopes,
            google_client_id: String::new(),
            google_client_secret: Secret::default(),
            google_client_secret_file: None,
            google_authorize_url: google.authorize_url,
            google_token_url: google.token_url,
            google_validate_url: google.validate_url,
            google_revoke_url: google.revoke_url,
            google_scopes: google.scopes,
        }
    }
}

/// One provider's keys in [`OAuthConfig`], borrowed.
struct ProviderKeys<'a> {
    kind: ProviderKind,
    client_id: &'a str,
    client_secret: &'a Secret,
    client_secret_file: Option<&'a Path>,
    urls: [(&'static str, &'a str); 4],
    scopes: &'a [String],
}

impl OAuthConfig {
    /// The token store at [`OAuthConfig::token_store_path`].
    pub fn token_store(&self) -> TokenStore {
        TokenStore::new(&self.token_store_path)
    }

    /// Twitch's settings, or `None` when `TWITCH_CLIENT_ID` is not set.
    /// Reads `TWITCH_CLIENT_SECRET_FILE` if that is how the secret is given.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: a missing or doubly given
    /// secret, an unreadable secret file, a bad URL.
    pub fn twitch(&self) -> Result<Option<ProviderSettings>, ConfigError> {
        self.provider(ProviderKeys {
            kind: ProviderKind::Twitch,
            client_id: &self.twitch_client_id,
            client_secret: &self.twitch_client_secret,
            client_secret_file: self.twitch_client_secret_file.as_deref(),
            urls: [
                ("twitch_authorize_url", &self.twitch_authorize_url),
                ("twitch_token_url", &self.twitch_token_url),
                ("twitch_validate_url", &self.twitch_validate_url),
                ("twitch_revoke_url", &self.twitch_revoke_url),
            ],
            scopes: &self.twitch_scopes,
        })
    }

    /// Google's settings, or `None` when `GOOGLE_CLIENT_ID` is not set.
    ///
    /// # Errors
    /// As [`OAuthConfig::twitch`].
    pub fn google(&self) -> Result<Option<ProviderSettings>, ConfigError> {
        self.provider(ProviderKeys {
            kind: ProviderKind::Google,
            client_id: &self.google_client_id,
            client_secret: &self.google_client_secret,
            client_secret_file: self.google_client_secret_file.as_deref(),
            urls: [
                ("google_authorize_url", &self.google_authorize_url),
                ("google_token_url", &self.google_token_url),
                ("google_validate_url", &self.google_validate_url),
                ("google_revoke_url", &self.google_revoke_url),
            ],
            scopes: &self.google_scopes,
        })
    }

    /// Every configured provider, Twitch first.
    ///
    /// # Errors
    /// As [`OAuthConfig::twitch`].
    pub fn providers(&self) -> Result<Vec<ProviderSettings>, ConfigError> {
        Ok([self.twitch()?, self.google()?]
            .into_iter()
            .flatten()
            .collect())
    }

    /// Checks every key (including that secret files can be read). Call it
    /// from the service's `ServiceConfig::validate`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token_store_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "token_store_path",
                "must not be empty",
            ));
        }
        crate::config::check_nonzero("oauth_timeout", self.oauth_timeout)?;
        self.providers().map(drop)
    }

    fn provider(&self, keys: ProviderKeys<'_>) -> Result<Option<ProviderSettings>, ConfigError> {
        let name = keys.kind.name();
        let id_key = format!("{name}_client_id");
        let secret_key = format!("{name}_client_secret");
        let file_key = format!("{name}_client_secret_file");
        let client_id = keys.client_id.trim();
        if client_id.is_empty() {
            // Not configured. A secret without an id is a mistake worth naming.
            if !keys.client_secret.is_empty() || keys.client_secret_file.is_some() {
                return Err(ConfigError::invalid(
                    &id_key,
                    format!(
                        "is required when {} is set",
                        secret_key.to_ascii_uppercase()
                    ),
                ));
            }
            return Ok(None);
        }
        let client_secret = match (keys.client_secret.is_empty(), keys.client_secret_file) {
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    &file_key,
                    format!(
                        "set either it or {}, not both",
                        secret_key.to_ascii_uppercase()
                    ),
                ));
            }
            (false, None) => keys.client_secret.clone(),
            (true, Some(path)) => read_secret_file(&file_key, path)?,
            (true, None) => {
                return Err(ConfigError::invalid(
                    &secret_key,
                    format!(
                        "is required when {} is set (or give {})",
                        id_key.to_ascii_uppercase(),
                        file_key.to_ascii_uppercase()
                    ),
                ));
            }
        };
        for (key, url) in keys.urls {
            check_provider_url(key, url)?;
        }
        if keys.scopes.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{name}_scopes"),
                "must list at least one scope",
            ));
        }
        let mut settings = match keys.kind {
            ProviderKind::Twitch => ProviderSettings::twitch(client_id, client_secret),
            ProviderKind::Google => ProviderSettings::google(client_id, client_secret),
        };
        let [authorize, token, validate, revoke] = keys.urls.map(|(_, url)| url.to_owned());
        settings.authorize_url = authorize;
        settings.token_url = token;
        settings.validate_url = validate;
        settings.revoke_url = revoke;
        settings.scopes = keys.scopes.to_vec();
        settings.timeout = self.oauth_timeout;
        Ok(Some(settings))
    }
}

/// Reads a client secret from a file (trailing whitespace trimmed). Warns
/// when other users can read it.
fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "client secret file is readable by other users; it should be 0600");
        }
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(secret))
}

/// A provider endpoint must be https (http only on loopback, for tests and
/// local fakes) and must not carry credentials: the client secret comes from
/// the environment or a file, never from a URL.
fn check_provider_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        Url::parse(value).map_err(|e| ConfigError::invalid(key, format!("not a URL ({e})")))?;
    check_url_scheme(key, &url)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not contain credentials; give the client secret in the environment or a file",
        ));
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("client_secret"))
    {
        return Err(ConfigError::invalid(
            key,
            "must not contain client_secret; give it in the environment or a file",
        ));
    }
    Ok(())
}

/// `https://`, or `http://` to a loopback host (`localhost`, 127.0.0.0/8, `::1`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`.
pub fn check_url_scheme(key: &str, url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback_host(url) => Ok(()),
        "http" => Err(ConfigError::invalid(
            key,
            "must be https:// (http:// is allowed only for localhost)",
        )),
        _ => Err(ConfigError::invalid(key, "must be an https:// URL")),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(oauth2::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(oauth2::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(oauth2::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

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
                endpoint: Endpoint::Refresh,
                status,
                error,
                message,
                ..
            } => {
                error.as_deref() == Some("invalid_grant")
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

/// A token endpoint's answer, Twitch's (`scope` a JSON array) or the RFC's
/// (`scope` a space-delimited string) alike.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProviderTokenResponse {
    access_token: AccessToken,
    #[serde(default)]
    token_type: ProviderTokenType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_in: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    refresh_token: Option<RefreshToken>,
    #[serde(
        rename = "scope",
        default,
        deserialize_with = "scopes_list_or_string",
        skip_serializing_if = "Option::is_none"
    )]
    scopes: Option<Vec<Scope>>,
}

/// A token type as the provider spells it (`bearer`, `Bearer`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ProviderTokenType(String);

impl Default for ProviderTokenType {
    fn default() -> Self {
        Self("bearer".into())
    }
}

impl oauth2::TokenType for ProviderTokenType {}

impl oauth2::TokenResponse for ProviderTokenResponse {
    type TokenType = ProviderTokenType;

    fn access_token(&self) -> &AccessToken {
        &self.access_token
    }
    fn token_type(&self) -> &ProviderTokenType {
        &self.token_type
    }
    fn expires_in(&self) -> Option<Duration> {
        self.expires_in.map(Duration::from_secs)
    }
    fn refresh_token(&self) -> Option<&RefreshToken> {
        self.refresh_token.as_ref()
    }
    fn scopes(&self) -> Option<&Vec<Scope>> {
        self.scopes.as_ref()
    }
}

/// `scope` as a JSON array (Twitch), a space-delimited string (RFC 6749,
/// Google), or absent/null.
fn scopes_list_or_string<'de, D>(deserializer: D) -> Result<Option<Vec<Scope>>, D::Error>
where
    D: Deserializer<'de>,
{
    Ok(string_list(deserializer)?.map(|v| v.into_iter().map(Scope::new).collect()))
}

fn string_list<'de, D>(deserializer: D) -> Result<Option<Vec<String>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrString {
        List(Vec<String>),
        String(String),
    }
    Ok(
        Option::<ListOrString>::deserialize(deserializer)?.map(|v| match v {
            ListOrString::List(v) => v,
            ListOrString::String(s) => s.split_whitespace().map(str::to_owned).collect(),
        }),
    )
}

/// A number given as a number (Twitch) or as a string (Google's tokeninfo).
fn lenient_u64<'de, D>(deserializer: D) -> Result<Option<u64>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum NumberOrString {
        Number(u64),
        String(String),
    }
    match Option::<NumberOrString>::deserialize(deserializer)? {
        None => Ok(None),
        Some(NumberOrString::Number(n)) => Ok(Some(n)),
        Some(NumberOrString::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom("expected a number of seconds")),
    }
}

/// A token endpoint's error answer: RFC 6749's `error` / `error_description`
/// or Twitch's `status` / `message`. Accepts any JSON object.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderErrorResponse {
    /// RFC 6749 error code (Twitch sometimes puts the status text here).
    #[serde(default)]
    pub error: Option<String>,
    /// RFC 6749 description.
    #[serde(default)]
    pub error_description: Option<String>,
    /// Twitch's message.
    #[serde(default)]
    pub message: Option<String>,
    /// Twitch's copy of the HTTP status.
    #[serde(default)]
    pub status: Option<u16>,
}

impl std::fmt::Display for ProviderErrorResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<&str> = [&self.error, &self.error_description, &self.message]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        if parts.is_empty() {
            f.write_str("no explanation given")
        } else {
            f.write_str(&parts.join(": "))
        }
    }
}

impl oauth2::ErrorResponse for ProviderErrorResponse {}

type OAuth2Client = oauth2::Client<
    ProviderErrorResponse,
    ProviderTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

type TokenRequestError = RequestTokenError<HttpClientError<reqwest::Error>, ProviderErrorResponse>;

/// Tokens a token endpoint issued.
#[derive(Debug, Clone)]
pub struct TokenGrant {
    /// The access token.
    pub access_token: Secret,
    /// The refresh token, if one was issued.
    pub refresh_token: Option<Secret>,
    /// Lifetime of the access token, if given.
    pub expires_in: Option<Duration>,
    /// Granted scopes, if the provider said.
    pub scopes: Option<Vec<String>>,
}

/// What the validation endpoint says about a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// The client id the token was issued to.
    pub client_id: Option<String>,
    /// The account's login (Twitch) or e-mail address (Google).
    pub login: Option<String>,
    /// The account's user id.
    pub user_id: Option<String>,
    /// Granted scopes.
    pub scopes: Vec<String>,
    /// Remaining lifetime, if the token expires.
    pub expires_in: Option<Duration>,
}

/// The outcome of validating a token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validation {
    /// The token is valid.
    Valid(TokenInfo),
    /// The provider says the token is invalid or expired.
    Invalid,
}

#[derive(Deserialize)]
struct ValidateResponse {
    #[serde(default)]
    client_id: Option<String>,
    #[serde(default)]
    aud: Option<String>,
    #[serde(default)]
    login: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    user_id: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "string_list")]
    scopes: Option<Vec<String>>,
    #[serde(default, deserialize_with = "string_list")]
    scope: Option<Vec<String>>,
    #[serde(default, deserialize_with = "lenient_u64")]
    expires_in: Option<u64>,
}

/// A client for one provider's endpoints. Cheap to clone.
#[derive(Debug, Clone)]
pub struct OAuthClient {
    settings: Arc<ProviderSettings>,
    http: reqwest::Client,
}

impl OAuthClient {
    /// A client for `settings`: no redirects followed, `settings.timeout`
    /// per request.
    ///
    /// # Panics
    /// If the TLS backend cannot be initialised (never in practice).
    pub fn new(settings: ProviderSettings) -> Self {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(settings.timeout)
            .connect_timeout(settings.timeout)
            .user_agent(concat!("chatbus/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("the HTTP client can be built");
        Self {
            settings: Arc::new(settings),
            http,
        }
    }

    /// The provider's settings.
    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }

    fn kind(&self) -> ProviderKind {
        self.settings.kind
    }

    fn oauth2(&self) -> Result<OAuth2Client, OAuthError> {
        let s = &self.settings;
        let bad =
            |what: &str, e: oauth2::url::ParseError| OAuthError::Settings(format!("{what}: {e}"));
        Ok(oauth2::Client::new(ClientId::new(s.client_id.clone()))
            .set_client_secret(ClientSecret::new(s.client_secret.expose().to_owned()))
            // Twitch takes client_id and client_secret in the form body only.
            .set_auth_type(AuthType::RequestBody)
            .set_auth_uri(
                AuthUrl::new(s.authorize_url.clone()).map_err(|e| bad("authorize URL", e))?,
            )
            .set_token_uri(TokenUrl::new(s.token_url.clone()).map_err(|e| bad("token URL", e))?))
    }

    /// The URL to send the browser to: client id, `redirect_url`, the
    /// configured scopes and extra parameters, and `state`.
    ///
    /// # Errors
    /// [`OAuthError::Settings`] when a URL is malformed.
    pub fn authorize_url(&self, redirect_url: &str, state: &str) -> Result<Url, OAuthError> {
        let redirect = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| OAuthError::Settings(format!("redirect URL: {e}")))?;
        let client = self.oauth2()?;
        let state = state.to_owned();
        let mut request = client
            .authorize_url(move || CsrfToken::new(state))
            .set_redirect_uri(Cow::Owned(redirect))
            .add_scopes(self.settings.scopes.iter().cloned().map(Scope::new));
        for (name, value) in &self.settings.authorize_params {
            request = request.add_extra_param(name.clone(), value.clone());
        }
        Ok(request.url().0)
    }

    /// Exchanges an authorization code for tokens.
    ///
    /// # Errors
    /// [`OAuthError::Provider`] when the provider refuses the code,
    /// [`OAuthError::Timeout`], [`OAuthError::Http`], [`OAuthError::InvalidResponse`].
    pub async fn exchange_code(
        &self,
        code: &str,
        redirect_url: &str,
    ) -> Result<TokenGrant, OAuthError> {
        let redirect = RedirectUrl::new(redirect_url.to_owned())
            .map_err(|e| OAuthError::Settings(format!("redirect URL: {e}")))?;
        let client = self.oauth2()?.set_redirect_uri(redirect);
        let status = StatusProbe::default();
        let http = status.client(&self.http);
        let result = client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .request_async(&http)
            .await;
        self.grant(Endpoint::CodeExchange, result, &status)
    }

    /// Exchanges a refresh token for new tokens.
    ///
    /// # Errors
    /// As [`OAuthError::is_refresh_rejection`] tells, [`OAuthError::Provider`]
    /// when the refresh token is refused; the others as [`OAuthClient::exchange_code`].
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenGrant, OAuthError> {
        let client = self.oauth2()?;
        let status = StatusProbe::default();
        let http = status.client(&self.http);
        let token = RefreshToken::new(refresh_token.expose().to_owned());
        let result = client
            .exchange_refresh_token(&token)
            .request_async(&http)
            .await;
        self.grant(Endpoint::Refresh, result, &status)
    }

    fn grant(
        &self,
        endpoint: Endpoint,
        result: Result<ProviderTokenResponse, TokenRequestError>,
        status: &StatusProbe,
    ) -> Result<TokenGrant, OAuthError> {
        let response = result.map_err(|e| self.token_error(endpoint, e, status.get()))?;
        if response.access_token.secret().is_empty() {
            return Err(self.invalid(endpoint, "the access token is empty"));
        }
        Ok(TokenGrant {
            access_token: Secret::new(response.access_token.into_secret()),
            refresh_token: response
                .refresh_token
                .map(|t| Secret::new(t.into_secret()))
                .filter(|t| !t.is_empty()),
            expires_in: response.expires_in.map(Duration::from_secs),
            scopes: response
                .scopes
                .map(|v| v.into_iter().map(|s| s.to_string()).collect()),
        })
    }

    fn invalid(&self, endpoint: Endpoint, message: impl Into<String>) -> OAuthError {
        OAuthError::InvalidResponse {
            provider: self.kind(),
            endpoint,
            message: message.into(),
        }
    }

    fn transport(&self, endpoint: Endpoint, error: &reqwest::Error) -> OAuthError {
        if error.is_timeout() {
            OAuthError::Timeout {
                provider: self.kind(),
                endpoint,
                timeout: self.settings.timeout,
            }
        } else {
            OAuthError::Http {
                provider: self.kind(),
                endpoint,
                message: error_chain(error),
            }
        }
    }

    fn token_error(
        &self,
        endpoint: Endpoint,
        error: TokenRequestError,
        status: Option<reqwest::StatusCode>,
    ) -> OAuthError {
        let status_text = status.map_or_else(|| "an answer".to_owned(), |s| s.to_string());
        match error {
            RequestTokenError::ServerResponse(r) => OAuthError::Provider {
                provider: self.kind(),
                endpoint,
                status: status.map(|s| s.as_u16()).or(r.status),
                message: r.to_string(),
                error: r.error,
            },
            RequestTokenError::Request(HttpClientError::Reqwest(e)) => self.transport(endpoint, &e),
            RequestTokenError::Request(e) => OAuthError::Http {
                provider: self.kind(),
                endpoint,
                message: error_chain(&e),
            },
            // Never include the body: a successful answer holds tokens.
            RequestTokenError::Parse(e, body) => {
                let message = if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
                    format!("{status_text} whose body is not JSON")
                } else {
                    format!(
                        "{status_text} whose JSON lacks what OAuth requires (at `{}`)",
                        e.path()
                    )
                };
                self.invalid(endpoint, message)
            }
            // The oauth2 crate's own checks: wrong content type, empty body.
            RequestTokenError::Other(message) => {
                self.invalid(endpoint, format!("{status_text}: {message}"))
            }
        }
    }

    /// Asks the provider whether `access_token` is valid, and whose it is.
    /// Twitch: `GET` with `Authorization: OAuth <token>`; Google: `POST`
    /// with the token in the form body (never in a URL).
    ///
    /// # Errors
    /// [`OAuthError::Timeout`], [`OAuthError::Http`], [`OAuthError::Provider`]
    /// for answers other than valid/invalid, [`OAuthError::InvalidResponse`].
    pub async fn validate(&self, access_token: &Secret) -> Result<Validation, OAuthError> {
        let endpoint = Endpoint::Validate;
        let request = match self.kind() {
            ProviderKind::Twitch => {
                let mut auth = HeaderValue::from_str(&format!("OAuth {}", access_token.expose()))
                    .map_err(|_| {
                    self.invalid(endpoint, "the access token is not a valid header")
                })?;
                auth.set_sensitive(true);
                self.http
                    .get(&self.settings.validate_url)
                    .header(AUTHORIZATION, auth)
            }
            ProviderKind::Google => self
                .http
                .post(&self.settings.validate_url)
                .form(&[("access_token", access_token.expose())]),
        };
        let response = request
            .send()
            .await
            .map_err(|e| self.transport(endpoint, &e))?;
        let status = response.status();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport(endpoint, &e))?;
        let invalid = match self.kind() {
            ProviderKind::Twitch => status == reqwest::StatusCode::UNAUTHORIZED,
            ProviderKind::Google => {
                status == reqwest::StatusCode::BAD_REQUEST
                    || status == reqwest::StatusCode::UNAUTHORIZED
            }
        };
        if invalid {
            return Ok(Validation::Invalid);
        }
        if !status.is_success() {
            let detail = serde_json::from_slice::<ProviderErrorResponse>(&body)
                .map_or_else(|_| "no JSON explanation".to_owned(), |r| r.to_string());
            return Err(OAuthError::Provider {
                provider: self.kind(),
                endpoint,
                status: Some(status.as_u16()),
                error: None,
                message: format!("{status}: {detail}"),
            });
        }
        let parsed: ValidateResponse = serde_json::from_slice(&body).map_err(|_| {
            self.invalid(
                endpoint,
                format!("{status} whose body is not the expected JSON"),
            )
        })?;
        Ok(Validation::Valid(TokenInfo {
            client_id: parsed.client_id.or(parsed.aud),
            login: parsed.login.or(parsed.email),
            user_id: parsed.user_id.or(parsed.sub),
            scopes: parsed.scopes.or(parsed.scope).unwrap_or_default(),
            // Twitch answers 0 for tokens that do not expire.
            expires_in: parsed
                .expires_in
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
        }))
    }

    /// Revokes `token` (access or refresh) at the provider.
    ///
    /// # Errors
    /// As [`OAuthClient::validate`]; an unknown token is not an error.
    pub async fn revoke(&self, token: &Secret) -> Result<(), OAuthError> {
        let endpoint = Endpoint::Revoke;
        let response = self
            .http
            .post(&self.settings.revoke_url)
            .form(&[
                ("client_id", self.settings.client_id.as_str()),
                ("token", token.expose()),
            ])
            .send()
            .await
            .map_err(|e| self.transport(endpoint, &e))?;
        let status = response.status();
        // 400 "invalid token": already revoked or expired, which is the goal.
        if status.is_success() || status == reqwest::StatusCode::BAD_REQUEST {
            return Ok(());
        }
        Err(OAuthError::Provider {
            provider: self.kind(),
            endpoint,
            status: Some(status.as_u16()),
            error: None,
            message: status.to_string(),
        })
    }

    /// The whole callback side of the flow: exchanges `code`, validates the
    /// new access token to learn whose it is, and returns it ready for the
    /// token store. Writes nothing.
    ///
    /// # Errors
    /// As [`OAuthClient::exchange_code`] and [`OAuthClient::validate`];
    /// [`OAuthError::WrongClient`] when the token is another application's;
    /// [`OAuthError::InvalidResponse`] when the provider does not say whose
    /// the token is, or calls its brand-new token invalid.
    pub async fn authorize_account(
        &self,
        code: &str,
        redirect_url: &str,
    ) -> Result<StoredToken, OAuthError> {
        let grant = self.exchange_code(code, redirect_url).await?;
        let info = match self.validate(&grant.access_token).await? {
            Validation::Valid(info) => info,
            Validation::Invalid => {
                return Err(self.invalid(
                    Endpoint::Validate,
                    "the provider calls the token it just issued invalid",
                ));
            }
        };
        if let Some(found) = &info.client_id
            && *found != self.settings.client_id
        {
            return Err(OAuthError::WrongClient {
                expected: self.settings.client_id.clone(),
                found: found.clone(),
            });
        }
        let login = info
            .login
            .clone()
            .filter(|l| !l.is_empty())
            .ok_or_else(|| self.invalid(Endpoint::Validate, "no login/e-mail for the token"))?
            .to_ascii_lowercase();
        let user_id = info
            .user_id
            .clone()
            .filter(|u| !u.is_empty())
            .ok_or_else(|| self.invalid(Endpoint::Validate, "no user id for the token"))?;
        let now = Utc::now();
        let scopes = if info.scopes.is_empty() {
            grant.scopes.clone().unwrap_or_default()
        } else {
            info.scopes.clone()
        };
        Ok(StoredToken {
            platform: self.settings.platform().to_owned(),
            login,
            user_id,
            access_token: grant.access_token,
            refresh_token: grant.refresh_token,
            expires_at: expiry(now, info.expires_in.or(grant.expires_in)),
            scopes,
            obtained_at: now,
            last_refreshed_at: None,
            last_validated_at: Some(now),
            status: AccountStatus::Valid,
            status_reason: None,
        })
    }
}

/// `now + lifetime`, if there is a lifetime.
pub fn expiry(now: DateTime<Utc>, lifetime: Option<Duration>) -> Option<DateTime<Utc>> {
    lifetime
        .and_then(|d| chrono::Duration::from_std(d).ok())
        .and_then(|d| now.checked_add_signed(d))
}

/// Records the HTTP status of the answer the oauth2 crate sees, which it
/// does not report itself, so errors can name it.
#[derive(Debug, Default, Clone)]
struct StatusProbe(Arc<Mutex<Option<reqwest::StatusCode>>>);

type HttpFuture = std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<oauth2::HttpResponse, HttpClientError<reqwest::Error>>,
            > + Send,
    >,
>;

impl StatusProbe {
    fn get(&self) -> Option<reqwest::StatusCode> {
        *self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// An HTTP client for the oauth2 crate that records the status. Owns
    /// what it uses, so the futures it makes borrow nothing.
    fn client(&self, http: &reqwest::Client) -> impl Fn(HttpRequest) -> HttpFuture + use<> {
        let slot = self.0.clone();
        let http = http.clone();
        move |request| {
            let slot = slot.clone();
            let http = http.clone();
            Box::pin(async move {
                let response = http.call(request).await?;
                *slot
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(response.status());
                Ok(response)
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oauth2::TokenResponse;

    #[test]
    fn twitch_scope_array_is_parsed() {
        let json = r#"{"access_token":"a","expires_in":14124,"refresh_token":"r",
            "scope":["channel:moderate","chat:edit","chat:read"],"token_type":"bearer"}"#;
        let r: ProviderTokenResponse = serde_json::from_str(json).unwrap();
        let scopes: Vec<String> = r.scopes().unwrap().iter().map(|s| s.to_string()).collect();
        assert_eq!(scopes, ["channel:moderate", "chat:edit", "chat:read"]);
        assert_eq!(r.expires_in(), Some(Duration::from_secs(14124)));
        assert_eq!(r.refresh_token().unwrap().secret(), "r");
    }

    #[test]
    fn rfc_scope_string_and_missing_scope_are_parsed() {
        let r: ProviderTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"Bearer","scope":"x y"}"#)
                .unwrap();
        assert_eq!(r.scopes().unwrap().len(), 2);
        let r: ProviderTokenResponse =
            serde_json::from_str(r#"{"access_token":"a","token_type":"bearer","scope":null}"#)
                .unwrap();
        assert!(r.scopes().is_none());
        let r: ProviderTokenResponse = serde_json::from_str(r#"{"access_token":"a"}"#).unwrap();
        assert!(r.scopes().is_none() && r.refresh_token().is_none());
        assert!(serde_json::from_str::<ProviderTokenResponse>(r#"{"scope":"x"}"#).is_err());
    }

    #[test]
    fn debug_of_a_token_response_hides_the_tokens() {
        let r: ProviderTokenResponse = serde_json::from_str(
            r#"{"access_token":"sekrit-access","refresh_token":"sekrit-refresh"}"#,
        )
        .unwrap();
        let dbg = format!("{r:?}");
        assert!(!dbg.contains("sekrit"), "{dbg}");
    }

    #[test]
    fn error_responses_of_both_shapes_are_understood() {
        let twitch: ProviderErrorResponse =
            serde_json::from_str(r#"{"status":400,"message":"Invalid refresh token"}"#).unwrap();
        assert_eq!(twitch.to_string(), "Invalid refresh token");
        let rfc: ProviderErrorResponse = serde_json::from_str(
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        )
        .unwrap();
        assert_eq!(
            rfc.to_string(),
            "invalid_grant: Token has been expired or revoked."
        );
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

    #[test]
    fn validate_answers_of_both_providers_parse() {
        let twitch: ValidateResponse = serde_json::from_str(
            r#"{"client_id":"c","login":"bot","scopes":["chat:read"],"user_id":"42","expires_in":5520}"#,
        )
        .unwrap();
        assert_eq!(twitch.expires_in, Some(5520));
        assert_eq!(twitch.scopes.unwrap(), ["chat:read"]);
        let google: ValidateResponse = serde_json::from_str(
            r#"{"aud":"c","sub":"1","scope":"openid email","expires_in":"3599","email":"a@b"}"#,
        )
        .unwrap();
        assert_eq!(google.expires_in, Some(3599));
        assert_eq!(google.scope.unwrap(), ["openid", "email"]);
        let null_scopes: ValidateResponse =
            serde_json::from_str(r#"{"login":"x","scopes":null}"#).unwrap();
        assert!(null_scopes.scopes.is_none());
    }

    #[test]
    fn authorize_url_carries_client_redirect_scopes_state_and_extras() {
        let client = OAuthClient::new(
            ProviderSettings::google("cid", Secret::new("shh")).with_base_url("http://127.0.0.1:9"),
        );
        let url = client
            .authorize_url("http://localhost:3000/auth/callback", "st4te")
            .unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(url.path(), "/oauth2/authorize");
        assert_eq!(q["client_id"], "cid");
        assert_eq!(q["redirect_uri"], "http://localhost:3000/auth/callback");
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["state"], "st4te");
        assert_eq!(q["access_type"], "offline");
        assert_eq!(q["prompt"], "consent");
        assert!(q["scope"].contains("youtube.readonly"));
        assert!(
            !url.as_str().contains("shh"),
            "the secret never goes in a URL"
        );
    }

    fn config(pairs: &[(&str, &str)]) -> Result<OAuthConfig, ConfigError> {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Service {
            #[serde(flatten)]
            oauth: OAuthConfig,
        }
        impl crate::config::ServiceConfig for Service {
            fn validate(&self) -> Result<(), ConfigError> {
                self.oauth.validate()
            }
        }
        let env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::config::load_from::<Service, _, _, _>(None, env).map(|s| s.oauth)
    }

    #[test]
    fn flattened_config_reads_the_shared_keys() {
        let c = config(&[]).unwrap();
        assert_eq!(c.twitch().unwrap(), None);
        assert_eq!(c.token_store_path, PathBuf::from("tokenStore.json"));
        let c = config(&[
            ("TWITCH_CLIENT_ID", "cid"),
            ("TWITCH_CLIENT_SECRET", "sec"),
            ("TWITCH_SCOPES", "chat:read, chat:edit"),
            ("TWITCH_TOKEN_URL", "http://127.0.0.1:1234/oauth2/token"),
            ("OAUTH_TIMEOUT", "3s"),
            ("TOKEN_STORE_PATH", "/tmp/x.json"),
        ])
        .unwrap();
        let t = c.twitch().unwrap().unwrap();
        assert_eq!(t.client_id, "cid");
        assert_eq!(t.client_secret.expose(), "sec");
        assert_eq!(t.scopes, ["chat:read", "chat:edit"]);
        assert_eq!(t.token_url, "http://127.0.0.1:1234/oauth2/token");
        assert_eq!(t.authorize_url, twitch_endpoints::AUTHORIZE);
        assert_eq!(t.timeout, Duration::from_secs(3));
        assert_eq!(c.providers().unwrap().len(), 1);
    }

    #[test]
    fn secret_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = config(&[
            ("GOOGLE_CLIENT_ID", "gid"),
            ("GOOGLE_CLIENT_SECRET_FILE", path.to_str().unwrap()),
        ])
        .unwrap();
        let g = c.google().unwrap().unwrap();
        assert_eq!(g.client_secret.expose(), "from-file");
        assert_eq!(g.platform(), "youtube");
        assert!(
            g.authorize_params
                .contains(&("prompt".into(), "consent".into()))
        );
    }

    #[test]
    fn bad_provider_config_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("TWITCH_CLIENT_ID", "c")], "TWITCH_CLIENT_SECRET"),
            (&[("TWITCH_CLIENT_SECRET", "s")], "TWITCH_CLIENT_ID"),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_CLIENT_SECRET_FILE", "/x"),
                ],
                "TWITCH_CLIENT_SECRET_FILE",
            ),
            (
                &[
                    ("GOOGLE_CLIENT_ID", "c"),
                    ("GOOGLE_CLIENT_SECRET_FILE", "/nonexistent/secret"),
                ],
                "GOOGLE_CLIENT_SECRET_FILE",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_TOKEN_URL", "http://id.example.com/token"),
                ],
                "TWITCH_TOKEN_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_TOKEN_URL", "https://c:s@id.example.com/token"),
                ],
                "TWITCH_TOKEN_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    (
                        "TWITCH_VALIDATE_URL",
                        "https://id.example.com/v?client_secret=s",
                    ),
                ],
                "TWITCH_VALIDATE_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_SCOPES", " ,"),
                ],
                "TWITCH_SCOPES",
            ),
            (&[("OAUTH_TIMEOUT", "0s")], "OAUTH_TIMEOUT"),
        ];
        for (env, key) in cases {
            let err = config(env).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: {err}");
        }
    }

    #[test]
    fn loopback_http_is_allowed_and_other_http_is_not() {
        let ok = |u: &str| check_url_scheme("k", &Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://127.0.0.1:3000/x") && ok("http://localhost/x") && ok("http://[::1]/"));
        assert!(ok("https://id.twitch.tv/oauth2/token"));
        assert!(!ok("http://id.twitch.tv/") && !ok("ftp://127.0.0.1/"));
    }
}
