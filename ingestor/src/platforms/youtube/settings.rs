//! The YouTube platform's settings (every `YOUTUBE_*` key).
//!
//! A flat struct of its own, read from the same layered sources as the
//! service's configuration (`common::config::Sources::part`) and checked
//! with it, so a bad value fails the start naming its variable.

use std::time::Duration;

use common::Secret;
use common::config::{ConfigError, check_http_url, check_nonzero, check_range, comma_list};
use common::oauth::OAuthConfig;
use serde::{Deserialize, Serialize};

use super::entry::Entry;

/// How a channel's live broadcast is looked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LiveCheck {
    /// Its newest uploads (`playlistItems.list`) and their chats
    /// (`videos.list`): 2 units a check.
    #[default]
    Uploads,
    /// `search.list?eventType=live` and `videos.list`: 101 units a check.
    Search,
}

/// YouTube settings. Each field is also an environment variable of the
/// same name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// YouTube entries to read at start (comma separated): `@handle`,
    /// channel id `UC…`, video id, or a YouTube URL naming one.
    #[serde(deserialize_with = "comma_list")]
    pub youtube_channels: Vec<String>,
    /// API key of a Google Cloud project with the YouTube Data API v3
    /// enabled; reads public chats. The YouTube source runs when this or
    /// `youtube_login` is set.
    pub youtube_api_key: Option<Secret>,
    /// Token-store account (`youtube:<email>`, or the e-mail) to read as
    /// instead of an API key; kept fresh by the token manager when a Google
    /// client id is configured, else by the auth-server.
    pub youtube_login: Option<String>,
    /// Base URL of the YouTube Data API.
    pub youtube_api_url: String,
    /// gRPC endpoint of `liveChatMessages.streamList` (`https://` with TLS;
    /// `http://` only for a local fake).
    pub youtube_grpc_url: String,
    /// Read chats with `streamList` (5 units a connection); false polls
    /// `liveChatMessages.list` (5 units a poll).
    pub youtube_streaming: bool,
    /// How a channel's live broadcast is found: `uploads` (its newest
    /// uploads, 2 units a check) or `search` (`search.list`, 101 units).
    pub youtube_live_check: LiveCheck,
    /// How often a channel that is not live is checked. Unset: as often as
    /// half of `youtube_daily_quota` allows for every followed channel (at
    /// least a minute; docs/ingestor.md has the arithmetic).
    #[serde(with = "humantime_serde")]
    pub youtube_offline_poll_interval: Option<Duration>,
    /// Quota units a day of the Google project (YouTube's default: 10,000).
    pub youtube_daily_quota: u64,
    /// Wait after `quotaExceeded`. Unset: until the quota resets at
    /// midnight Pacific time.
    #[serde(with = "humantime_serde")]
    pub youtube_quota_exceeded_wait: Option<Duration>,
    /// Most YouTube entries wanted at once.
    pub youtube_max_channels: usize,
    /// Timeout of one YouTube API call, and of connecting the stream.
    #[serde(with = "humantime_serde")]
    pub youtube_request_timeout: Duration,
    /// Longest wait between retries after a YouTube error (exponential
    /// backoff from 1 s).
    #[serde(with = "humantime_serde")]
    pub youtube_retry_max_delay: Duration,
    /// Largest answer read from YouTube: an HTTP body (read as a stream
    /// and refused as a whole beyond it) or one `streamList` message
    /// (tonic's decode limit). A page of 2,000 messages must fit.
    pub youtube_max_response_bytes: usize,
    /// Most messages in one page; a page with more is refused as a whole
    /// (YouTube sends at most 2,000, `maxResults`' ceiling).
    pub youtube_max_page_items: usize,
    /// Shortest wait between two polls of a chat, whatever YouTube's
    /// `pollingIntervalMillis` says.
    #[serde(with = "humantime_serde")]
    pub youtube_min_poll_interval: Duration,
    /// Longest wait between two polls of a chat, whatever YouTube's
    /// `pollingIntervalMillis` says (the quota may still ask for longer).
    #[serde(with = "humantime_serde")]
    pub youtube_max_poll_interval: Duration,
    /// Token-store account (`youtube:<email>`, or the e-mail, as
    /// `youtube_login`) that commands act as when they name none. Set: the
    /// YouTube sender runs (it needs the reader for the chats' ids, so
    /// `youtube_api_key` or `youtube_login` too). Its token needs the scope
    /// `https://www.googleapis.com/auth/youtube.force-ssl`.
    pub youtube_sender: Option<String>,
    /// Share of `youtube_daily_quota` reserved for commands while the
    /// sender runs (0 to 0.9): reading may not use it, commands may use
    /// only it.
    pub youtube_command_quota_share: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            youtube_channels: Vec::new(),
            youtube_api_key: None,
            youtube_login: None,
            youtube_api_url: "https://www.googleapis.com/youtube/v3".into(),
            youtube_grpc_url: "https://youtube.googleapis.com".into(),
            youtube_streaming: true,
            youtube_live_check: LiveCheck::Uploads,
            youtube_offline_poll_interval: None,
            youtube_daily_quota: 10_000,
            youtube_quota_exceeded_wait: None,
            youtube_max_channels: 50,
            youtube_request_timeout: Duration::from_secs(10),
            youtube_retry_max_delay: Duration::from_secs(300),
            youtube_max_response_bytes: 16 * 1024 * 1024,
            youtube_max_page_items: 5_000,
            youtube_min_poll_interval: Duration::from_secs(1),
            youtube_max_poll_interval: Duration::from_secs(60),
            youtube_sender: None,
            youtube_command_quota_share: 0.1,
        }
    }
}

impl Settings {
    /// Whether the YouTube source runs (an API key or a login is set).
    pub fn enabled(&self) -> bool {
        self.youtube_api_key.as_ref().is_some_and(|k| !k.is_empty()) || self.youtube_login.is_some()
    }

    /// The token-store login of `youtube_login` (without `youtube:`).
    pub fn account(&self) -> Option<String> {
        self.youtube_login.as_deref().map(login_of)
    }

    /// The token-store login of `youtube_sender` (without `youtube:`).
    pub fn sender_account(&self) -> Option<String> {
        self.youtube_sender.as_deref().map(login_of)
    }

    /// The share of the daily quota reserved for commands: none without a
    /// sender.
    pub fn command_share(&self) -> f64 {
        if self.youtube_sender.is_some() {
            self.youtube_command_quota_share
        } else {
            0.0
        }
    }

    /// Checks what serde cannot; `oauth` is the shared OAuth configuration
    /// (checked when an account reads).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self, oauth: &OAuthConfig) -> Result<(), ConfigError> {
        for entry in &self.youtube_channels {
            Entry::parse(entry).map_err(|e| ConfigError::invalid("youtube_channels", e))?;
        }
        if !self.youtube_channels.is_empty() && !self.enabled() {
            return Err(ConfigError::invalid(
                "youtube_api_key",
                "YOUTUBE_CHANNELS is set but neither YOUTUBE_API_KEY nor YOUTUBE_LOGIN: the YouTube source needs one",
            ));
        }
        if let Some(login) = self.account()
            && (login.is_empty() || login.contains(char::is_whitespace))
        {
            return Err(ConfigError::invalid(
                "youtube_login",
                "must be a token-store account: youtube:<email> or the e-mail",
            ));
        }
        if self.youtube_login.is_some() {
            oauth.validate()?;
        }
        if let Some(sender) = self.sender_account() {
            if sender.is_empty() || sender.contains(char::is_whitespace) {
                return Err(ConfigError::invalid(
                    "youtube_sender",
                    "must be a token-store account: youtube:<email> or the e-mail",
                ));
            }
            if !self.enabled() {
                return Err(ConfigError::invalid(
                    "youtube_sender",
                    "YOUTUBE_SENDER is set but neither YOUTUBE_API_KEY nor YOUTUBE_LOGIN: the sender writes to the chats the YouTube source reads",
                ));
            }
        }
        check_range(
            "youtube_command_quota_share",
            self.youtube_command_quota_share,
            0.0,
            0.9,
        )?;
        check_http_url("youtube_api_url", &self.youtube_api_url)?;
        check_http_url("youtube_grpc_url", &self.youtube_grpc_url)?;
        check_range(
            "youtube_daily_quota",
            self.youtube_daily_quota,
            1,
            1_000_000_000,
        )?;
        check_range("youtube_max_channels", self.youtube_max_channels, 1, 10_000)?;
        if let Some(interval) = self.youtube_offline_poll_interval {
            check_nonzero("youtube_offline_poll_interval", interval)?;
        }
        if let Some(wait) = self.youtube_quota_exceeded_wait {
            check_nonzero("youtube_quota_exceeded_wait", wait)?;
        }
        check_nonzero("youtube_request_timeout", self.youtube_request_timeout)?;
        check_nonzero("youtube_retry_max_delay", self.youtube_retry_max_delay)?;
        check_range(
            "youtube_max_response_bytes",
            self.youtube_max_response_bytes,
            64 * 1024,
            1024 * 1024 * 1024,
        )?;
        check_range(
            "youtube_max_page_items",
            self.youtube_max_page_items,
            2_000,
            1_000_000,
        )?;
        check_nonzero("youtube_min_poll_interval", self.youtube_min_poll_interval)?;
        if self.youtube_max_poll_interval < self.youtube_min_poll_interval {
            return Err(ConfigError::invalid(
                "youtube_max_poll_interval",
                "must not be shorter than YOUTUBE_MIN_POLL_INTERVAL",
            ));
        }
        let wanted = self.initial_channels().len();
        if wanted > self.youtube_max_channels {
            return Err(ConfigError::invalid(
                "youtube_channels",
                format!(
                    "{wanted} entries, more than YOUTUBE_MAX_CHANNELS ({})",
                    self.youtube_max_channels
                ),
            ));
        }
        Ok(())
    }

    /// The entries to follow at start, deduplicated: each entry's key until
    /// it is resolved (the channel id, `@handle` or video id).
    pub fn initial_channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self
            .youtube_channels
            .iter()
            .filter_map(|c| Entry::parse(c).ok())
            .map(|e| e.key().to_owned())
            .collect();
        channels.sort();
        channels.dedup();
        channels
    }
}

/// A token-store login as an account setting names it: without
/// `youtube:`, trimmed, in lower case.
pub fn login_of(account: &str) -> String {
    account
        .strip_prefix("youtube:")
        .unwrap_or(account)
        .trim()
        .to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use common::config::load_from;

    use crate::Config;

    #[test]
    fn youtube_entries_become_keys_and_need_credentials() {
        let c: Config = load_from(
            None,
            [
                (
                    "YOUTUBE_CHANNELS",
                    "@Some.One, UCX6OQ3DkcsbYNE6H8uQQuVA,https://youtu.be/dQw4w9WgXcQ,@some.one",
                ),
                ("YOUTUBE_API_KEY", "k"),
            ],
        )
        .unwrap();
        let youtube = &c.platforms.youtube;
        assert!(youtube.enabled());
        assert_eq!(
            youtube.initial_channels(),
            ["@some.one", "UCX6OQ3DkcsbYNE6H8uQQuVA", "dQw4w9WgXcQ"]
        );
        let err = load_from::<Config, _, _, _>(None, [("YOUTUBE_CHANNELS", "@x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("YOUTUBE_API_KEY"), "{err}");
        let c: Config = load_from(None, [("YOUTUBE_LOGIN", "youtube:Me@Example.com")]).unwrap();
        assert_eq!(
            c.platforms.youtube.account().as_deref(),
            Some("me@example.com")
        );
        assert!(!super::Settings::default().enabled());
        let c: Config = load_from(
            None,
            [
                ("YOUTUBE_API_KEY", "k"),
                ("YOUTUBE_SENDER", "youtube:Bot@Example.com"),
                ("YOUTUBE_COMMAND_QUOTA_SHARE", "0.25"),
            ],
        )
        .unwrap();
        let youtube = &c.platforms.youtube;
        assert_eq!(youtube.sender_account().as_deref(), Some("bot@example.com"));
        assert_eq!(youtube.command_share(), 0.25);
        assert_eq!(super::Settings::default().command_share(), 0.0);
        let err = load_from::<Config, _, _, _>(None, [("YOUTUBE_SENDER", "bot@example.com")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("YOUTUBE_SENDER"), "{err}");
    }

    #[test]
    fn bad_youtube_values_name_their_variable() {
        for (k, v) in [
            ("YOUTUBE_CHANNELS", "not a channel"),
            ("YOUTUBE_API_URL", "ftp://x"),
            ("YOUTUBE_GRPC_URL", "nope"),
            ("YOUTUBE_DAILY_QUOTA", "0"),
            ("YOUTUBE_LIVE_CHECK", "guess"),
            ("YOUTUBE_OFFLINE_POLL_INTERVAL", "0s"),
            ("YOUTUBE_MAX_CHANNELS", "0"),
            ("YOUTUBE_MAX_RESPONSE_BYTES", "1000"),
            ("YOUTUBE_MAX_PAGE_ITEMS", "1999"),
            ("YOUTUBE_MIN_POLL_INTERVAL", "0s"),
            ("YOUTUBE_MAX_POLL_INTERVAL", "10ms"),
            ("YOUTUBE_COMMAND_QUOTA_SHARE", "0.95"),
            ("YOUTUBE_SENDER", "not an account"),
        ] {
            let err = load_from::<Config, _, _, _>(None, [(k, v), ("YOUTUBE_API_KEY", "k")])
                .unwrap_err()
                .to_string();
            assert!(err.to_lowercase().contains(&k.to_lowercase()), "{k}: {err}");
        }
    }

    #[test]
    fn the_youtube_api_key_is_redacted() {
        let c: Config = load_from(None, [("YOUTUBE_API_KEY", "AIzaSecret123")]).unwrap();
        assert!(!format!("{c:?}").contains("AIzaSecret123"));
    }
}
