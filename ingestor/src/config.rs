//! The ingestor's configuration (see `.env.example` for every key).

use std::path::PathBuf;
use std::time::Duration;

use common::Secret;
use common::config::{
    ConfigError, ServiceConfig, check_amqp_url, check_http_url, check_nonempty, check_nonzero,
    check_range, check_socket_addr, comma_list,
};
use common::oauth::OAuthConfig;
use common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Ingestor settings. Each field is also an environment variable of the
/// same name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// RabbitMQ URL; the nodes of a cluster as a comma list.
    pub amqp_url: String,
    /// Set chatbus's RabbitMQ policies (alternate exchange, max-length,
    /// dead-lettering) through the management API at start.
    pub rabbitmq_policies: bool,
    /// The management API; unset: `http://<first AMQP host>:15672` with the
    /// AMQP URL's user, password and virtual host.
    pub rabbitmq_management_url: Option<String>,
    /// The topic exchange events are published to.
    pub chat_exchange: String,
    /// Address of the admin/health/metrics HTTP server.
    pub ingestor_http_addr: String,
    /// API key required by the admin API's join/part endpoints (bearer
    /// token). Unset: join/part over HTTP are refused.
    pub ingestor_api_key: Option<Secret>,
    /// Log output: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub rust_log: String,
    /// Async worker threads (lapin adds its own I/O thread per
    /// connection).
    pub ingestor_worker_threads: usize,

    /// Twitch IRC server `host:port`.
    pub twitch_irc_addr: String,
    /// Use TLS to the IRC server.
    pub twitch_irc_tls: bool,
    /// Channels to join at start (logins, comma separated).
    #[serde(deserialize_with = "comma_list")]
    pub twitch_channels: Vec<String>,
    /// Account (login) in the token store to connect as. Unset: anonymous,
    /// read-only (`justinfan`).
    pub twitch_login: Option<String>,
    /// Token store and OAuth provider settings, shared with the auth-server
    /// (`TOKEN_STORE_PATH`, `TWITCH_CLIENT_ID`, `TWITCH_TOKEN_URL` ...). With
    /// a Twitch client id the ingestor refreshes its own token; without one
    /// it uses whatever the auth-server keeps fresh in the store.
    #[serde(flatten)]
    pub oauth: OAuthConfig,
    /// Most JOINs per `twitch_join_window` (Twitch: 20 per 10 s; 2000 for
    /// verified bots).
    pub twitch_join_limit: u32,
    /// The window of `twitch_join_limit`.
    #[serde(with = "humantime_serde")]
    pub twitch_join_window: Duration,
    /// A JOIN not confirmed within this time is sent again.
    #[serde(with = "humantime_serde")]
    pub twitch_join_timeout: Duration,
    /// Channels per IRC connection.
    pub twitch_channels_per_connection: usize,
    /// Most Twitch channels wanted at once (config, restored and admin API
    /// together); more are refused. With `twitch_login` set Twitch itself
    /// allows at most 100.
    pub twitch_max_channels: usize,
    /// An IRC connection silent this long is pinged; silent as long again,
    /// it is dropped and reopened.
    #[serde(with = "humantime_serde")]
    pub twitch_keepalive: Duration,
    /// Longest wait between attempts to reach Twitch IRC (exponential
    /// backoff from 1 s).
    #[serde(with = "humantime_serde")]
    pub twitch_reconnect_max_delay: Duration,
    /// Longest IRC line accepted, in bytes; longer lines are logged and skipped.
    pub irc_max_line_bytes: usize,
    /// Each IRC socket's receive buffer (`SO_RCVBUF`, bytes): what the
    /// kernel may hold read and not yet spooled, so with one read (64 KiB)
    /// the most a `kill -9` can lose per connection.
    pub irc_receive_buffer: usize,
    /// Carry the platform's raw form in each event's `raw` field (the IRC
    /// line; YouTube's resource as JSON).
    pub ingest_include_raw: bool,

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
    pub youtube_live_check: crate::youtube::LiveCheck,
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

    /// Directory of the disk spool (the outbox's durable log).
    pub spool_dir: PathBuf,
    /// Most bytes the spool may hold; beyond it new events are dropped (and
    /// counted, and logged).
    pub spool_max_bytes: u64,
    /// Size at which a spool segment file is closed and a new one started.
    pub spool_segment_bytes: u64,
    /// Unpublished events kept in memory; the rest are read back from the
    /// spool when the publisher catches up.
    pub outbox_memory_events: usize,
    /// Unconfirmed messages in flight to RabbitMQ.
    pub publish_max_in_flight: usize,
    /// How long the oldest unconfirmed message may wait for its confirm
    /// before the connection is given up as silent (it is then reopened and
    /// everything unconfirmed re-sent).
    #[serde(with = "humantime_serde")]
    pub publish_confirm_timeout: Duration,
    /// Longest wait between broker reconnect attempts.
    #[serde(with = "humantime_serde")]
    pub amqp_reconnect_max_delay: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            rabbitmq_policies: true,
            rabbitmq_management_url: None,
            chat_exchange: "chat".into(),
            ingestor_http_addr: "127.0.0.1:9100".into(),
            ingestor_api_key: None,
            log_format: LogFormat::Human,
            rust_log: "info".into(),
            ingestor_worker_threads: 1,
            twitch_irc_addr: "irc.chat.twitch.tv:6697".into(),
            twitch_irc_tls: true,
            twitch_channels: Vec::new(),
            twitch_login: None,
            oauth: OAuthConfig::default(),
            twitch_join_limit: 20,
            twitch_join_window: Duration::from_secs(10),
            twitch_join_timeout: Duration::from_secs(15),
            twitch_channels_per_connection: 90,
            twitch_max_channels: 1_000,
            twitch_keepalive: Duration::from_secs(60),
            twitch_reconnect_max_delay: Duration::from_secs(120),
            irc_max_line_bytes: 64 * 1024,
            irc_receive_buffer: 128 * 1024,
            ingest_include_raw: true,
            youtube_channels: Vec::new(),
            youtube_api_key: None,
            youtube_login: None,
            youtube_api_url: "https://www.googleapis.com/youtube/v3".into(),
            youtube_grpc_url: "https://youtube.googleapis.com".into(),
            youtube_streaming: true,
            youtube_live_check: crate::youtube::LiveCheck::Uploads,
            youtube_offline_poll_interval: None,
            youtube_daily_quota: 10_000,
            youtube_quota_exceeded_wait: None,
            youtube_max_channels: 50,
            youtube_request_timeout: Duration::from_secs(10),
            youtube_retry_max_delay: Duration::from_secs(300),
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_segment_bytes: 16 * 1024 * 1024,
            outbox_memory_events: 4_096,
            publish_max_in_flight: 2048,
            publish_confirm_timeout: common::amqp::CONFIRM_TIMEOUT,
            amqp_reconnect_max_delay: Duration::from_secs(10),
        }
    }
}

/// Normalises a channel name as Twitch does: trimmed, without `#`, lower case.
pub fn normalise_channel(name: &str) -> String {
    name.trim().trim_start_matches('#').to_lowercase()
}

/// Whether `login` is a plausible Twitch login (`[a-z0-9_]{1,25}`).
pub fn is_valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 25
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_amqp_url("amqp_url", &self.amqp_url)?;
        if let Some(url) = &self.rabbitmq_management_url {
            check_http_url("rabbitmq_management_url", url)?;
        }
        check_nonempty("chat_exchange", &self.chat_exchange)?;
        check_socket_addr("ingestor_http_addr", &self.ingestor_http_addr)?;
        check_range(
            "ingestor_worker_threads",
            self.ingestor_worker_threads,
            1,
            256,
        )?;
        match self.twitch_irc_addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(ConfigError::invalid("twitch_irc_addr", "must be host:port")),
        }
        for channel in &self.twitch_channels {
            if !is_valid_login(&normalise_channel(channel)) {
                return Err(ConfigError::invalid(
                    "twitch_channels",
                    format!("`{channel}` is not a Twitch login ([a-z0-9_], 1-25 characters)"),
                ));
            }
        }
        if let Some(login) = &self.twitch_login {
            if !is_valid_login(login) {
                return Err(ConfigError::invalid("twitch_login", "not a Twitch login"));
            }
            self.oauth.validate()?;
        }
        check_range("twitch_join_limit", self.twitch_join_limit, 1, 100_000)?;
        check_nonzero("twitch_join_window", self.twitch_join_window)?;
        check_range(
            "twitch_channels_per_connection",
            self.twitch_channels_per_connection,
            1,
            10_000,
        )?;
        check_range("twitch_max_channels", self.twitch_max_channels, 1, 100_000)?;
        check_nonzero("twitch_keepalive", self.twitch_keepalive)?;
        check_nonzero(
            "twitch_reconnect_max_delay",
            self.twitch_reconnect_max_delay,
        )?;
        let wanted = self.initial_channels(common::schema::PLATFORM_TWITCH).len();
        if wanted > self.twitch_max_channels {
            return Err(ConfigError::invalid(
                "twitch_channels",
                format!(
                    "{wanted} channels, more than TWITCH_MAX_CHANNELS ({})",
                    self.twitch_max_channels
                ),
            ));
        }
        if self.twitch_login.is_some() && wanted > crate::twitch::LOGGED_IN_CHANNEL_LIMIT {
            return Err(ConfigError::invalid(
                "twitch_channels",
                format!(
                    "{wanted} channels, but Twitch lets a logged-in account join 100: unset TWITCH_LOGIN to read anonymously (no limit), or list fewer"
                ),
            ));
        }
        self.validate_youtube().map_err(|e| *e)?;
        check_range(
            "irc_receive_buffer",
            self.irc_receive_buffer,
            4096,
            64 * 1024 * 1024,
        )?;
        check_range(
            "irc_max_line_bytes",
            self.irc_max_line_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        check_range(
            "spool_segment_bytes",
            self.spool_segment_bytes,
            4096,
            1 << 40,
        )?;
        if self.spool_max_bytes < self.spool_segment_bytes {
            return Err(ConfigError::invalid(
                "spool_max_bytes",
                "must be at least spool_segment_bytes",
            ));
        }
        check_range(
            "outbox_memory_events",
            self.outbox_memory_events,
            1,
            100_000_000,
        )?;
        check_range(
            "publish_max_in_flight",
            self.publish_max_in_flight,
            1,
            1_000_000,
        )?;
        check_nonzero("publish_confirm_timeout", self.publish_confirm_timeout)?;
        Ok(())
    }
}

impl Config {
    /// Whether the YouTube source runs (an API key or a login is set).
    pub fn youtube_enabled(&self) -> bool {
        self.youtube_api_key.as_ref().is_some_and(|k| !k.is_empty()) || self.youtube_login.is_some()
    }

    /// The token-store login of `youtube_login` (without `youtube:`).
    pub fn youtube_account(&self) -> Option<String> {
        self.youtube_login.as_deref().map(|l| {
            l.strip_prefix("youtube:")
                .unwrap_or(l)
                .trim()
                .to_ascii_lowercase()
        })
    }

    /// The YouTube keys' checks (boxed: `ConfigError` is large).
    fn validate_youtube(&self) -> Result<(), Box<ConfigError>> {
        for entry in &self.youtube_channels {
            crate::youtube::entry::Entry::parse(entry)
                .map_err(|e| ConfigError::invalid("youtube_channels", e))?;
        }
        if !self.youtube_channels.is_empty() && !self.youtube_enabled() {
            return Err(Box::new(ConfigError::invalid(
                "youtube_api_key",
                "YOUTUBE_CHANNELS is set but neither YOUTUBE_API_KEY nor YOUTUBE_LOGIN: the YouTube source needs one",
            )));
        }
        if let Some(login) = self.youtube_account()
            && (login.is_empty() || login.contains(char::is_whitespace))
        {
            return Err(Box::new(ConfigError::invalid(
                "youtube_login",
                "must be a token-store account: youtube:<email> or the e-mail",
            )));
        }
        if self.youtube_login.is_some() {
            self.oauth.validate()?;
        }
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
        let wanted = self
            .initial_channels(common::schema::PLATFORM_YOUTUBE)
            .len();
        if wanted > self.youtube_max_channels {
            return Err(Box::new(ConfigError::invalid(
                "youtube_channels",
                format!(
                    "{wanted} entries, more than YOUTUBE_MAX_CHANNELS ({})",
                    self.youtube_max_channels
                ),
            )));
        }
        Ok(())
    }

    /// The channels of `platform` to join at start, normalised and
    /// deduplicated (YouTube: each entry's key until it is resolved: the
    /// channel id, `@handle` or video id).
    pub fn initial_channels(&self, platform: &str) -> Vec<String> {
        let mut channels: Vec<String> = match platform {
            common::schema::PLATFORM_TWITCH => self
                .twitch_channels
                .iter()
                .map(|c| normalise_channel(c))
                .filter(|c| !c.is_empty())
                .collect(),
            common::schema::PLATFORM_YOUTUBE => self
                .youtube_channels
                .iter()
                .filter_map(|c| crate::youtube::entry::Entry::parse(c).ok())
                .map(|e| e.key().to_owned())
                .collect(),
            _ => Vec::new(),
        };
        channels.sort();
        channels.dedup();
        channels
    }
}

impl common::service::ServiceSettings for Config {
    const NAME: &'static str = "ingestor";

    fn logging(&self) -> (LogFormat, &str) {
        (self.log_format, &self.rust_log)
    }

    fn http_addr(&self) -> &str {
        &self.ingestor_http_addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::config::load_from;

    #[test]
    fn defaults_are_valid_and_anonymous() {
        let c: Config = load_from(None, Vec::<(String, String)>::new()).unwrap();
        assert!(c.twitch_login.is_none());
        assert_eq!(c.twitch_irc_addr, "irc.chat.twitch.tv:6697");
        assert!(c.twitch_irc_tls);
    }

    #[test]
    fn channels_from_a_comma_list_are_normalised() {
        let c: Config = load_from(None, [("TWITCH_CHANNELS", "#Foo, bar,foo")]).unwrap();
        assert_eq!(c.initial_channels("twitch"), ["bar", "foo"]);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("TWITCH_CHANNELS", "ok,not a channel"),
            ("TWITCH_IRC_ADDR", "no-port"),
            ("TWITCH_JOIN_LIMIT", "0"),
            ("SPOOL_MAX_BYTES", "10"),
            ("TWITCH_JOIN_TIMEOUT", "whenever"),
            ("CHAT_EXCHANGE", ""),
        ] {
            let err = load_from::<Config, _, _, _>(None, [(k, v)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(k), "{k}: {err}");
        }
    }

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
        assert!(c.youtube_enabled());
        assert_eq!(
            c.initial_channels("youtube"),
            ["@some.one", "UCX6OQ3DkcsbYNE6H8uQQuVA", "dQw4w9WgXcQ"]
        );
        let err = load_from::<Config, _, _, _>(None, [("YOUTUBE_CHANNELS", "@x")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("YOUTUBE_API_KEY"), "{err}");
        let c: Config = load_from(None, [("YOUTUBE_LOGIN", "youtube:Me@Example.com")]).unwrap();
        assert_eq!(c.youtube_account().as_deref(), Some("me@example.com"));
        assert!(!Config::default().youtube_enabled());
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

    #[test]
    fn the_api_key_is_redacted() {
        let c: Config = load_from(None, [("INGESTOR_API_KEY", "letmein")]).unwrap();
        assert!(!format!("{c:?}").contains("letmein"));
    }
}
