//! The Kick platform's settings (every `KICK_*` key).
//!
//! A flat struct of its own, read from the same layered sources as the
//! service's configuration (`common::config::Sources::part`) and checked
//! with it, so a bad value fails the start naming its variable.

use std::path::PathBuf;
use std::time::Duration;

use common::Secret;
use common::config::{ConfigError, check_http_url, check_nonzero, comma_list};
use common::oauth::OAuthConfig;
use serde::{Deserialize, Serialize};

/// Kick settings. Each field is also an environment variable of the same
/// name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Kick channels (their slugs, as in `kick.com/<slug>`) to read at
    /// start, comma separated.
    #[serde(deserialize_with = "comma_list")]
    pub kick_channels: Vec<String>,
    /// The Kick app's client id (kick.com/settings/developer). Set: the
    /// Kick source runs (it needs `WEBHOOK_HTTP_ADDR`: Kick delivers chat
    /// only by webhooks).
    pub kick_client_id: Option<String>,
    /// The Kick app's client secret (for its app access token).
    pub kick_client_secret: Secret,
    /// A file holding the client secret instead (trimmed).
    pub kick_client_secret_file: Option<PathBuf>,
    /// Base URL of Kick's public API (`/public/v1/...`).
    pub kick_api_url: String,
    /// Base URL of Kick's OAuth server (`/oauth/token`).
    pub kick_oauth_url: String,
    /// A delivery whose `Kick-Event-Message-Timestamp` is further than this
    /// from now is refused (401).
    #[serde(with = "humantime_serde")]
    pub kick_webhook_max_age: Duration,
    /// How often the event subscriptions are compared with the wanted
    /// channels and mended (Kick drops an app's subscriptions when its
    /// webhook fails for a day, or when webhooks are turned off).
    #[serde(with = "humantime_serde")]
    pub kick_reconcile_interval: Duration,
    /// How often the channels' viewer counts are read (Kick's webhooks
    /// carry none): `GET /public/v2/livestreams`.
    #[serde(with = "humantime_serde")]
    pub kick_status_interval: Duration,
    /// Timeout of one call to Kick's API or OAuth server.
    #[serde(with = "humantime_serde")]
    pub kick_request_timeout: Duration,
    /// Most Kick channels wanted at once (Kick's documented limit is 1,000
    /// event subscriptions an app, 10,000 for a verified bot).
    pub kick_max_channels: usize,
    /// The token-store account (its login, key `kick:<login>`) commands
    /// act as when they name none. Set: the Kick sender runs.
    pub kick_sender: Option<String>,
    /// Most messages one account sends in `kick_send_window` (Kick
    /// documents no chat rate limit: a conservative assumption).
    pub kick_send_limit: usize,
    /// The sliding window of `kick_send_limit`.
    #[serde(with = "humantime_serde")]
    pub kick_send_window: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            kick_channels: Vec::new(),
            kick_client_id: None,
            kick_client_secret: Secret::default(),
            kick_client_secret_file: None,
            kick_api_url: "https://api.kick.com".into(),
            kick_oauth_url: "https://id.kick.com".into(),
            kick_webhook_max_age: Duration::from_secs(10 * 60),
            kick_reconcile_interval: Duration::from_secs(5 * 60),
            kick_status_interval: Duration::from_secs(60),
            kick_request_timeout: Duration::from_secs(10),
            kick_max_channels: 1_000,
            kick_sender: None,
            kick_send_limit: 20,
            kick_send_window: Duration::from_secs(30),
        }
    }
}

impl Settings {
    /// Whether the Kick source runs (`KICK_CLIENT_ID` is set).
    pub fn enabled(&self) -> bool {
        self.kick_client_id.as_deref().is_some_and(|id| !id.is_empty())
    }

    /// The client secret: `kick_client_secret`, or the file's content.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] when the file cannot be read, or no secret
    /// is given at all.
    pub fn client_secret(&self) -> Result<Secret, ConfigError> {
        if let Some(file) = &self.kick_client_secret_file {
            let secret = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::invalid(
                    "kick_client_secret_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            return Ok(Secret::new(secret.trim()));
        }
        if self.kick_client_secret.is_empty() {
            return Err(ConfigError::invalid(
                "kick_client_secret",
                "KICK_CLIENT_ID is set: its secret is needed too (or KICK_CLIENT_SECRET_FILE)",
            ));
        }
        Ok(self.kick_client_secret.clone())
    }

    /// The account the sender acts as by default, when one is named.
    pub fn sender(&self) -> Option<&str> {
        self.kick_sender.as_deref().filter(|s| !s.is_empty())
    }

    /// The channel slugs to read at start, lowercased, each once.
    pub fn initial_channels(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in &self.kick_channels {
            if let Ok(slug) = parse_slug(c)
                && !out.contains(&slug)
            {
                out.push(slug);
            }
        }
        out
    }

    /// Checks the settings.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self, _oauth: &OAuthConfig) -> Result<(), ConfigError> {
        check_http_url("kick_api_url", &self.kick_api_url)?;
        check_http_url("kick_oauth_url", &self.kick_oauth_url)?;
        check_nonzero("kick_webhook_max_age", self.kick_webhook_max_age)?;
        check_nonzero("kick_reconcile_interval", self.kick_reconcile_interval)?;
        check_nonzero("kick_status_interval", self.kick_status_interval)?;
        check_nonzero("kick_request_timeout", self.kick_request_timeout)?;
        if self.kick_max_channels == 0 {
            return Err(ConfigError::invalid("kick_max_channels", "must be more than 0"));
        }
        if self.kick_send_limit == 0 {
            return Err(ConfigError::invalid("kick_send_limit", "must be more than 0"));
        }
        check_nonzero("kick_send_window", self.kick_send_window)?;
        if self.kick_sender.as_deref().is_some_and(|s| !s.is_empty()) && !self.enabled() {
            return Err(ConfigError::invalid(
                "kick_sender",
                "the Kick sender needs the Kick platform: set KICK_CLIENT_ID too",
            ));
        }
        for c in &self.kick_channels {
            parse_slug(c).map_err(|e| ConfigError::invalid("kick_channels", e))?;
        }
        if self.enabled() {
            self.client_secret()?;
        }
        Ok(())
    }
}

/// The channel word for what a user asked for: a Kick slug
/// (`[a-z0-9_-]{1,64}` once lowercased), or a `kick.com/<slug>` URL.
///
/// # Errors
/// A user-facing message naming what is wrong with `input`.
pub fn parse_slug(input: &str) -> Result<String, String> {
    let trimmed = input.trim();
    let tail = trimmed
        .strip_prefix("https://")
        .or_else(|| trimmed.strip_prefix("http://"))
        .unwrap_or(trimmed);
    let tail = tail
        .strip_prefix("www.kick.com/")
        .or_else(|| tail.strip_prefix("kick.com/"))
        .unwrap_or(tail);
    let slug = tail.trim_end_matches('/').to_ascii_lowercase();
    let ok = (1..=64).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if ok {
        Ok(slug)
    } else {
        Err(format!(
            "`{trimmed}` is not a Kick channel slug ([a-z0-9_-], at most 64) or kick.com URL"
        ))
    }
}

#[cfg(test)]
mod tests {
    use common::config::load_from;

    use super::*;
    use crate::Config;

    #[test]
    fn kick_is_off_unless_a_client_id_is_set_and_then_needs_its_secret() {
        let c: Config = load_from(None, [("KICK_CHANNELS", "Trainwreckstv, kick.com/xqc")]).unwrap();
        let kick = &c.platforms.kick;
        assert!(!kick.enabled());
        assert_eq!(kick.initial_channels(), ["trainwreckstv", "xqc"]);
        assert_eq!(kick.kick_webhook_max_age, Duration::from_secs(600));
        assert_eq!(kick.kick_api_url, "https://api.kick.com");
        let err = load_from::<Config, _, _, _>(None, [("KICK_CLIENT_ID", "01ABC")]).unwrap_err();
        assert!(err.to_string().contains("KICK_CLIENT_SECRET"), "{err}");
        let c: Config = load_from(
            None,
            [
                ("KICK_CLIENT_ID", "01ABC"),
                ("KICK_CLIENT_SECRET", "s3cret"),
                ("KICK_RECONCILE_INTERVAL", "90s"),
            ],
        )
        .unwrap();
        assert!(c.platforms.kick.enabled());
        assert_eq!(
            c.platforms.kick.kick_reconcile_interval,
            Duration::from_secs(90)
        );
        assert!(!format!("{:?}", c.platforms.kick).contains("s3cret"));
        assert_eq!(c.platforms.kick.sender(), None);
        assert_eq!(
            (c.platforms.kick.kick_send_limit, c.platforms.kick.kick_send_window),
            (20, Duration::from_secs(30))
        );
    }

    #[test]
    fn the_sender_needs_the_kick_platform() {
        let err = load_from::<Config, _, _, _>(None, [("KICK_SENDER", "mybot")]).unwrap_err();
        assert!(err.to_string().contains("KICK_SENDER"), "{err}");
        let c: Config = load_from(
            None,
            [
                ("KICK_CLIENT_ID", "01ABC"),
                ("KICK_CLIENT_SECRET", "s3cret"),
                ("KICK_SENDER", "mybot"),
                ("KICK_SEND_LIMIT", "5"),
                ("KICK_SEND_WINDOW", "10s"),
            ],
        )
        .unwrap();
        assert_eq!(c.platforms.kick.sender(), Some("mybot"));
        assert_eq!(c.platforms.kick.kick_send_limit, 5);
        // The same keys configure the Kick OAuth provider (token refresh).
        assert!(c.oauth.kick().unwrap().is_some());
        let err = load_from::<Config, _, _, _>(None, [("KICK_SEND_LIMIT", "0")]).unwrap_err();
        assert!(err.to_string().contains("KICK_SEND_LIMIT"), "{err}");
    }

    #[test]
    fn slugs_and_urls_are_channel_words() {
        assert_eq!(parse_slug(" Some_Streamer ").unwrap(), "some_streamer");
        assert_eq!(parse_slug("https://kick.com/a-b/").unwrap(), "a-b");
        for bad in ["", "two words", "é", "kick.com/", &"x".repeat(65)] {
            assert!(parse_slug(bad).is_err(), "{bad}");
        }
        let err = load_from::<Config, _, _, _>(None, [("KICK_CHANNELS", "ok,not ok")]).unwrap_err();
        assert!(err.to_string().contains("KICK_CHANNELS"), "{err}");
    }
}
