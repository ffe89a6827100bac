//! The auth-server's configuration (see `.env.example` for every key).
//!
//! The provider and token store keys (`TWITCH_*`, `GOOGLE_*`, `KICK_*`,
//! `TOKEN_STORE_PATH`, `OAUTH_TIMEOUT`) are [`common::oauth::OAuthConfig`],
//! shared with the ingestor.

use std::time::Duration;

use common::config::{ConfigError, ServiceConfig, check_socket_addr};
use common::oauth::{OAuthConfig, check_url_scheme};
use common::telemetry::LogFormat;
use reqwest::Url;
use serde::{Deserialize, Serialize};

/// Paths the server uses itself, which the callback cannot take.
const RESERVED_PATHS: &[&str] = &[
    "/",
    "/auth",
    "/auth/twitch",
    "/auth/google",
    "/auth/kick",
    "/healthz",
    "/metrics",
];

/// auth-server settings. Each field is also an environment variable of the
/// same name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server listens on (loopback by default).
    pub auth_http_addr: String,
    /// The redirect URL registered with the providers. The callback is
    /// served at its path (default `/auth/callback`).
    pub auth_redirect_url: String,
    /// How long an authorization attempt (its `state`) stays valid.
    #[serde(with = "humantime_serde")]
    pub auth_state_ttl: Duration,
    /// Log output: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub rust_log: String,
    /// Providers and the token store.
    #[serde(flatten)]
    pub oauth: OAuthConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth_http_addr: "127.0.0.1:3000".into(),
            auth_redirect_url: "http://localhost:3000/auth/callback".into(),
            auth_state_ttl: Duration::from_secs(600),
            log_format: LogFormat::Human,
            rust_log: "info".into(),
            oauth: OAuthConfig::default(),
        }
    }
}

impl Config {
    /// The path the callback is served at: the redirect URL's path.
    pub fn callback_path(&self) -> String {
        Url::parse(&self.auth_redirect_url)
            .map(|u| u.path().to_owned())
            .unwrap_or_else(|_| "/auth/callback".into())
    }

    /// Whether the listen address is a loopback address.
    pub fn binds_loopback(&self) -> bool {
        self.auth_http_addr
            .parse::<std::net::SocketAddr>()
            .is_ok_and(|a| a.ip().is_loopback())
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_socket_addr("auth_http_addr", &self.auth_http_addr)?;
        let key = "auth_redirect_url";
        let url = Url::parse(&self.auth_redirect_url)
            .map_err(|e| ConfigError::invalid(key, format!("not a URL ({e})")))?;
        check_url_scheme(key, &url)?;
        if url.query().is_some() || url.fragment().is_some() {
            return Err(ConfigError::invalid(
                key,
                "must not have a query or fragment",
            ));
        }
        if RESERVED_PATHS.contains(&url.path()) {
            return Err(ConfigError::invalid(
                key,
                format!(
                    "its path {} is used by the server itself; use e.g. /auth/callback",
                    url.path()
                ),
            ));
        }
        if self.auth_state_ttl < Duration::from_secs(1) {
            return Err(ConfigError::invalid(
                "auth_state_ttl",
                "must be at least 1s",
            ));
        }
        self.oauth.validate()
    }
}

impl common::service::ServiceSettings for Config {
    const NAME: &'static str = "auth-server";

    fn logging(&self) -> (LogFormat, &str) {
        (self.log_format, &self.rust_log)
    }

    fn http_addr(&self) -> &str {
        &self.auth_http_addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
        let env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        common::config::load_from(None, env).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_loopback_and_the_usual_callback() {
        let c = load(&[]).unwrap();
        assert!(c.binds_loopback());
        assert_eq!(c.callback_path(), "/auth/callback");
        assert_eq!(c.auth_state_ttl, Duration::from_secs(600));
        assert!(c.oauth.providers().unwrap().is_empty());
    }

    #[test]
    fn the_callback_path_follows_the_redirect_url() {
        let c = load(&[("AUTH_REDIRECT_URL", "https://chat.example.com/oauth/done")]).unwrap();
        assert_eq!(c.callback_path(), "/oauth/done");
    }

    #[test]
    fn bad_values_name_their_key() {
        for (key, value) in [
            ("AUTH_REDIRECT_URL", "http://chat.example.com/auth/callback"),
            ("AUTH_REDIRECT_URL", "http://localhost:3000/auth"),
            ("AUTH_REDIRECT_URL", "http://localhost:3000/cb?x=1"),
            ("AUTH_STATE_TTL", "0s"),
            ("TWITCH_CLIENT_ID", "id-without-secret"),
        ] {
            let err = load(&[(key, value)]).unwrap_err();
            let named = if key == "TWITCH_CLIENT_ID" {
                "TWITCH_CLIENT_SECRET"
            } else {
                key
            };
            assert!(err.contains(named), "{key}={value}: {err}");
        }
    }
}
