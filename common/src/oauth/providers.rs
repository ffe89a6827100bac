//! The providers chatbus knows ([`ProviderKind`]), their production
//! endpoints and default scopes, and everything needed to talk to one
//! ([`ProviderSettings`]).
//!
//! Twitch is the reference provider. Google (YouTube live chat) is the same
//! authorization-code flow with `access_type=offline` and `prompt=consent`
//! on the authorize URL (without them Google issues no refresh token) and
//! its `tokeninfo` endpoint in place of Twitch's `/oauth2/validate`. Kick
//! is OAuth 2.1: the same flow with PKCE (S256) required
//! (docs.kick.com/getting-started/generating-tokens-oauth2-flow), and its
//! users endpoint (`GET /public/v1/users`, the token's own user) in place
//! of a validation endpoint.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// The OAuth providers chatbus knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Twitch (`id.twitch.tv`).
    Twitch,
    /// Google accounts, for YouTube live chat.
    Google,
    /// Kick (`id.kick.com`).
    Kick,
}

impl ProviderKind {
    /// The provider's name in config keys and URLs: `twitch`, `google`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Twitch => "twitch",
            Self::Google => "google",
            Self::Kick => "kick",
        }
    }

    /// The platform its accounts belong to in the token store: `twitch`,
    /// `youtube`.
    pub fn platform(self) -> &'static str {
        match self {
            Self::Twitch => "twitch",
            Self::Google => "youtube",
            Self::Kick => "kick",
        }
    }

    /// A name for people: `Twitch`, `Google (YouTube)`.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Twitch => "Twitch",
            Self::Google => "Google (YouTube)",
            Self::Kick => "Kick",
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

/// Kick's production endpoints (docs.kick.com/getting-started/generating-tokens-oauth2-flow,
/// docs.kick.com/apis/users).
pub mod kick_endpoints {
    /// Authorize (the browser goes here).
    pub const AUTHORIZE: &str = "https://id.kick.com/oauth/authorize";
    /// Token (code exchange and refresh).
    pub const TOKEN: &str = "https://id.kick.com/oauth/token";
    /// Whose the token is: the users endpoint answers the token's own
    /// user when asked for no id.
    pub const VALIDATE: &str = "https://api.kick.com/public/v1/users";
    /// Token revocation.
    pub const REVOKE: &str = "https://id.kick.com/oauth/revoke";
}

/// Scopes requested from Kick unless configured: who the account is
/// (`user:read`, for the users endpoint) and sending through the bus
/// (`chat:write`). Moderating through the bus needs `moderation:ban` and
/// `moderation:chat_message:manage` too (docs/auth.md).
pub const KICK_DEFAULT_SCOPES: &[&str] = &["user:read", "chat:write"];

/// Scopes requested from Twitch unless configured: reading chat
/// (`chat:read`), sending through the bus (`user:write:chat`) and knowing
/// where the account moderates, which lifts Twitch's send limit there
/// (`user:read:moderated_channels`). Moderating through the bus needs
/// `moderator:manage:chat_messages` and `moderator:manage:banned_users`
/// too (docs/auth.md).
pub const TWITCH_DEFAULT_SCOPES: &[&str] = &[
    "chat:read",
    "user:write:chat",
    "user:read:moderated_channels",
];

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
    /// Whether the flow uses PKCE (S256): a verifier per authorization,
    /// its challenge on the authorize URL, the verifier in the code
    /// exchange (Kick requires it).
    pub pkce: bool,
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
            pkce: false,
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
            pkce: false,
        }
    }

    /// Kick with its production endpoints, [`KICK_DEFAULT_SCOPES`] and PKCE.
    pub fn kick(client_id: impl Into<String>, client_secret: Secret) -> Self {
        Self {
            kind: ProviderKind::Kick,
            client_id: client_id.into(),
            client_secret,
            authorize_url: kick_endpoints::AUTHORIZE.into(),
            token_url: kick_endpoints::TOKEN.into(),
            validate_url: kick_endpoints::VALIDATE.into(),
            revoke_url: kick_endpoints::REVOKE.into(),
            scopes: KICK_DEFAULT_SCOPES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            authorize_params: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            pkce: true,
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
    /// `/oauth2/token`, `/oauth2/validate` or `/tokeninfo`, `/oauth2/revoke`;
    /// Kick: `<base>/oauth/authorize`, `/oauth/token`, `/public/v1/users`,
    /// `/oauth/revoke`), e.g. a fake provider in tests.
    #[must_use]
    pub fn with_base_url(mut self, base: &str) -> Self {
        let base = base.trim_end_matches('/');
        if self.kind == ProviderKind::Kick {
            self.authorize_url = format!("{base}/oauth/authorize");
            self.token_url = format!("{base}/oauth/token");
            self.validate_url = format!("{base}/public/v1/users");
            self.revoke_url = format!("{base}/oauth/revoke");
            return self;
        }
        self.authorize_url = format!("{base}/oauth2/authorize");
        self.token_url = format!("{base}/oauth2/token");
        self.validate_url = match self.kind {
            ProviderKind::Twitch => format!("{base}/oauth2/validate"),
            ProviderKind::Google | ProviderKind::Kick => format!("{base}/tokeninfo"),
        };
        self.revoke_url = format!("{base}/oauth2/revoke");
        self
    }
}
