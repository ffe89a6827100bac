//! The consumer's configuration (see `.env.example` for every key).

use std::time::Duration;

use common::Secret;
/// The consumer queue's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueTypeChoice {
    /// Quorum when several broker addresses are configured (a cluster),
    /// else classic; an existing queue keeps its type.
    #[default]
    Auto,
    /// A classic queue; an existing quorum queue is a conflict.
    Classic,
    /// A quorum queue (replicated); an existing classic queue is a conflict.
    Quorum,
}
use common::config::{
    ConfigError, ServiceConfig, check_amqp_url, check_nonempty, check_nonzero, check_range,
    check_socket_addr,
};
use common::routing::TopicPattern;
use common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// Consumer settings. Each field is also an environment variable of the
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
    /// Address the HTTP server (REST, WebSocket, web page) listens on.
    pub consumer_http_addr: String,
    /// Log output: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub rust_log: String,

    /// Where events are stored: `sqlite://path/to/file.sqlite` (created if
    /// missing), or `postgres://user:password@host:5432/database` (the
    /// database must exist; migrations run at start).
    pub database_url: String,
    /// Most connections the store's read pool opens.
    pub database_max_connections: u32,

    /// The durable queue the consumer reads. Every instance that shares it
    /// (and the database) shares the work: each event is stored once.
    pub consumer_queue: String,
    /// `auto` (quorum on a cluster, i.e. several broker addresses; an
    /// existing queue keeps its type), `classic` or `quorum`.
    pub consumer_queue_type: QueueTypeChoice,
    /// Binding patterns of the queue (AMQP topic syntax).
    #[serde(deserialize_with = "common::config::comma_list")]
    pub consumer_bindings: Vec<String>,
    /// Most unacknowledged deliveries the broker sends at once.
    pub consumer_prefetch: u16,
    /// Most events written in one transaction.
    pub consumer_batch_size: usize,
    /// Longest a batch waits to fill before it is written anyway.
    #[serde(with = "humantime_serde")]
    pub consumer_batch_wait: Duration,

    /// Largest event body accepted from the bus, in bytes; a larger one is
    /// dead-lettered.
    pub consumer_max_event_bytes: usize,
    /// Largest `text` of an event accepted from the bus, in bytes (UTF-8);
    /// a longer one is dead-lettered.
    pub consumer_max_text_bytes: usize,

    /// Bearer token required by the REST API and the WebSocket; unset or
    /// empty means open.
    pub consumer_api_token: Option<Secret>,
    /// Bearer token of `POST /api/commands` (sending and moderating from
    /// the page); unset or empty: sending is off. Never the read token.
    pub consumer_command_token: Option<Secret>,
    /// Bearer token of the privacy admin API (`/api/privacy/optouts`,
    /// `/api/privacy/purge`, `/api/privacy/audit`); unset or empty: off.
    /// Never the read token. (`POST /api/privacy/optout`, which only
    /// issues self-service codes, is always public.)
    pub consumer_privacy_token: Option<Secret>,
    /// The topic exchange commands are published to (the ingestor's
    /// `COMMANDS_EXCHANGE`).
    pub consumer_commands_exchange: String,

    /// The stream of opt-outs and purges (`common::privacy`) the consumer
    /// follows: each purge and opt-out is sent to every WebSocket client,
    /// and the page and overlay remove what it covers. Empty: off.
    pub privacy_stream: String,

    /// Most words in a search (`q`), counted once folded (`a-b` is two);
    /// more are answered 400 `search_too_long`.
    pub consumer_search_max_words: usize,
    /// Most bytes in a search (`q`); more are answered 400
    /// `search_too_long`.
    pub consumer_search_max_bytes: usize,
    /// Most searches running at once, each on a database connection of
    /// its own that ingest and the other reads never wait for.
    pub consumer_search_concurrency: u32,
    /// How long a search waits for a free slot; then it is answered 503
    /// `search_busy` with `Retry-After`.
    #[serde(with = "humantime_serde")]
    pub consumer_search_queue_wait: Duration,
    /// How long one search may run before the database cancels it
    /// (answered 503 `search_timeout`).
    #[serde(with = "humantime_serde")]
    pub consumer_search_timeout: Duration,

    /// How far back a ban, timeout or chat clear marks a user's (or the
    /// channel's) messages in history.
    #[serde(with = "humantime_serde")]
    pub consumer_moderation_lookback: Duration,
    /// Delete events older than this (by `sent_at`); unset keeps them.
    #[serde(with = "humantime_serde")]
    pub consumer_retention_max_age: Option<Duration>,
    /// Keep at most this many events per channel (the newest); unset or 0
    /// keeps them all.
    pub consumer_retention_max_per_channel: Option<u64>,
    /// How often retention runs.
    #[serde(with = "humantime_serde")]
    pub consumer_retention_interval: Duration,

    /// How often the live feed looks for events other instances committed,
    /// in case their commit notification was lost.
    #[serde(with = "humantime_serde")]
    pub consumer_live_poll_interval: Duration,

    /// Events a WebSocket client may have queued before it counts as too
    /// slow and is disconnected (it can resume from its last cursor). At
    /// least `consumer_batch_size`: a batch reaches the hub at once. A
    /// client whose k subscriptions overlap queues an event once per
    /// matching subscription, so it needs k times the batch size.
    pub consumer_ws_send_queue: usize,
    /// Bytes of event frames a WebSocket client may have waiting (queued,
    /// or copied and not yet written to its socket) before it counts as
    /// too slow and is disconnected. Bounds what a client that stops
    /// reading costs.
    pub consumer_ws_send_queue_bytes: usize,
    /// Most WebSocket connections at once; more are answered 503.
    pub consumer_ws_max_connections: usize,
    /// Most WebSocket connections at once from one IP address; more are
    /// answered 503. Behind a reverse proxy every client has the proxy's
    /// address: raise it to `consumer_ws_max_connections` there.
    pub consumer_ws_max_per_address: usize,
    /// Subscriptions one WebSocket connection may hold.
    pub consumer_ws_max_subscriptions: usize,
    /// Largest inbound WebSocket message, in bytes.
    pub consumer_ws_max_frame_bytes: usize,
    /// How often the server pings each WebSocket client; a client silent
    /// for two intervals is dropped.
    #[serde(with = "humantime_serde")]
    pub consumer_ws_ping_interval: Duration,
    /// Longest one write to a WebSocket client may block before the client
    /// is dropped.
    #[serde(with = "humantime_serde")]
    pub consumer_ws_write_timeout: Duration,
    /// Largest `last=N` history a subscription may ask for.
    pub consumer_ws_max_history: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            rabbitmq_policies: true,
            rabbitmq_management_url: None,
            chat_exchange: "chat".into(),
            consumer_http_addr: "127.0.0.1:8080".into(),
            log_format: LogFormat::Human,
            rust_log: "info".into(),
            database_url: "sqlite://data/chatbus.sqlite".into(),
            database_max_connections: 8,
            consumer_queue: "chat.consumer".into(),
            consumer_queue_type: QueueTypeChoice::Auto,
            consumer_bindings: vec!["chat.#".into()],
            consumer_prefetch: 2000,
            consumer_batch_size: 1000,
            consumer_batch_wait: Duration::from_millis(20),
            consumer_max_event_bytes: 256 * 1024,
            consumer_max_text_bytes: 64 * 1024,
            consumer_api_token: None,
            consumer_command_token: None,
            consumer_privacy_token: None,
            consumer_commands_exchange: "chat.commands".into(),
            privacy_stream: common::privacy::PRIVACY_STREAM.into(),
            consumer_search_max_words: 32,
            consumer_search_max_bytes: 1024,
            consumer_search_concurrency: 2,
            consumer_search_queue_wait: Duration::from_secs(1),
            consumer_search_timeout: Duration::from_secs(5),
            consumer_moderation_lookback: Duration::from_secs(24 * 3600),
            consumer_retention_max_age: None,
            consumer_retention_max_per_channel: None,
            consumer_retention_interval: Duration::from_secs(600),
            consumer_live_poll_interval: Duration::from_secs(1),
            consumer_ws_send_queue: 10_000,
            consumer_ws_send_queue_bytes: 8 * 1024 * 1024,
            consumer_ws_max_connections: 10_000,
            consumer_ws_max_per_address: 100,
            consumer_ws_max_subscriptions: 16,
            consumer_ws_max_frame_bytes: 64 * 1024,
            consumer_ws_ping_interval: Duration::from_secs(20),
            consumer_ws_write_timeout: Duration::from_secs(10),
            consumer_ws_max_history: 1000,
        }
    }
}

impl Config {
    /// The store's search bounds.
    pub fn search_limits(&self) -> crate::store::SearchLimits {
        crate::store::SearchLimits {
            max_words: self.consumer_search_max_words,
            max_bytes: self.consumer_search_max_bytes,
            concurrency: self.consumer_search_concurrency,
            queue_wait: self.consumer_search_queue_wait,
            timeout: self.consumer_search_timeout,
        }
    }

    /// The API token, if one is set and not empty.
    pub fn api_token(&self) -> Option<Secret> {
        self.consumer_api_token.clone().filter(|t| !t.is_empty())
    }

    /// The privacy admin token, if one is set and not empty.
    pub fn privacy_token(&self) -> Option<Secret> {
        self.consumer_privacy_token
            .clone()
            .filter(|t| !t.is_empty())
    }

    /// Where opt-outs and purges are announced (the stream, the chat
    /// exchange, its unrouted and dead-letter queues).
    pub fn privacy_announce(&self) -> crate::privacy::Announce {
        crate::privacy::Announce {
            amqp_url: self.amqp_url.clone(),
            stream: self.privacy_stream().map(str::to_owned),
            topology: common::amqp::Topology::named(&self.chat_exchange),
        }
    }

    /// The privacy stream to follow, if one is set (not empty).
    pub fn privacy_stream(&self) -> Option<&str> {
        Some(self.privacy_stream.as_str()).filter(|s| !s.is_empty())
    }

    /// The command token, if one is set and not empty: without it
    /// `POST /api/commands` is off.
    pub fn command_token(&self) -> Option<Secret> {
        self.consumer_command_token
            .clone()
            .filter(|t| !t.is_empty())
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_amqp_url("amqp_url", &self.amqp_url)?;
        if let Some(url) = &self.rabbitmq_management_url {
            common::config::check_http_url("rabbitmq_management_url", url)?;
        }
        check_nonempty("chat_exchange", &self.chat_exchange)?;
        check_nonempty(
            "consumer_commands_exchange",
            &self.consumer_commands_exchange,
        )?;
        if let (Some(admin), Some(read)) = (self.privacy_token(), self.api_token())
            && common::http::constant_time_eq(admin.expose().as_bytes(), read.expose().as_bytes())
        {
            return Err(ConfigError::invalid(
                "consumer_privacy_token",
                "is the same as CONSUMER_API_TOKEN: whoever may read could purge; \
                 give the privacy admin API a token of its own",
            ));
        }
        if let (Some(write), Some(read)) = (self.command_token(), self.api_token())
            && common::http::constant_time_eq(write.expose().as_bytes(), read.expose().as_bytes())
        {
            return Err(ConfigError::invalid(
                "consumer_command_token",
                "is the same as CONSUMER_API_TOKEN: whoever may read could send; \
                 give sending a token of its own",
            ));
        }
        if self.privacy_stream.len() > 255 {
            return Err(ConfigError::invalid(
                "privacy_stream",
                "is longer than 255 bytes (a queue name)",
            ));
        }
        check_socket_addr("consumer_http_addr", &self.consumer_http_addr)?;
        crate::store::StoreKind::from_url(&self.database_url)
            .map_err(|e| ConfigError::invalid("database_url", e.to_string()))?;
        check_range(
            "database_max_connections",
            self.database_max_connections,
            1,
            1024,
        )?;
        if self.consumer_queue.is_empty() || self.consumer_queue.len() > 200 {
            return Err(ConfigError::invalid(
                "consumer_queue",
                "must be 1 to 200 bytes",
            ));
        }
        if self.consumer_bindings.is_empty() {
            return Err(ConfigError::invalid(
                "consumer_bindings",
                "needs at least one pattern, e.g. chat.#",
            ));
        }
        for pattern in &self.consumer_bindings {
            TopicPattern::parse(pattern)
                .map_err(|e| ConfigError::invalid("consumer_bindings", e.to_string()))?;
        }
        check_range("consumer_prefetch", self.consumer_prefetch, 1, u16::MAX)?;
        check_range("consumer_batch_size", self.consumer_batch_size, 1, 10_000)?;
        if usize::from(self.consumer_prefetch) < self.consumer_batch_size {
            return Err(ConfigError::invalid(
                "consumer_prefetch",
                format!(
                    "{} is smaller than CONSUMER_BATCH_SIZE ({}): batches could never fill",
                    self.consumer_prefetch, self.consumer_batch_size
                ),
            ));
        }
        check_range(
            "consumer_search_max_words",
            self.consumer_search_max_words,
            1,
            1000,
        )?;
        check_range(
            "consumer_search_max_bytes",
            self.consumer_search_max_bytes,
            1,
            64 * 1024,
        )?;
        check_range(
            "consumer_search_concurrency",
            self.consumer_search_concurrency,
            1,
            64,
        )?;
        let durations = [
            ("consumer_batch_wait", Some(self.consumer_batch_wait)),
            (
                "consumer_search_timeout",
                Some(self.consumer_search_timeout),
            ),
            (
                "consumer_retention_interval",
                Some(self.consumer_retention_interval),
            ),
            (
                "consumer_live_poll_interval",
                Some(self.consumer_live_poll_interval),
            ),
            (
                "consumer_ws_ping_interval",
                Some(self.consumer_ws_ping_interval),
            ),
            (
                "consumer_ws_write_timeout",
                Some(self.consumer_ws_write_timeout),
            ),
            (
                "consumer_retention_max_age",
                self.consumer_retention_max_age,
            ),
        ];
        for (field, value) in durations {
            if let Some(value) = value {
                check_nonzero(field, value)?;
            }
        }
        check_range(
            "consumer_ws_send_queue",
            self.consumer_ws_send_queue,
            1,
            1_000_000,
        )?;
        if self.consumer_ws_send_queue < self.consumer_batch_size {
            return Err(ConfigError::invalid(
                "consumer_ws_send_queue",
                format!(
                    "{} is smaller than CONSUMER_BATCH_SIZE ({}): one committed batch would \
                     disconnect every client subscribed to all of it",
                    self.consumer_ws_send_queue, self.consumer_batch_size
                ),
            ));
        }
        check_range(
            "consumer_ws_send_queue_bytes",
            self.consumer_ws_send_queue_bytes,
            64 * 1024,
            1024 * 1024 * 1024,
        )?;
        check_range(
            "consumer_ws_max_connections",
            self.consumer_ws_max_connections,
            1,
            1_000_000,
        )?;
        check_range(
            "consumer_ws_max_per_address",
            self.consumer_ws_max_per_address,
            1,
            self.consumer_ws_max_connections,
        )?;
        check_range(
            "consumer_max_event_bytes",
            self.consumer_max_event_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        check_range(
            "consumer_max_text_bytes",
            self.consumer_max_text_bytes,
            1,
            self.consumer_max_event_bytes,
        )?;
        check_range(
            "consumer_ws_max_subscriptions",
            self.consumer_ws_max_subscriptions,
            1,
            1024,
        )?;
        check_range(
            "consumer_ws_max_frame_bytes",
            self.consumer_ws_max_frame_bytes,
            256,
            16 * 1024 * 1024,
        )?;
        check_range(
            "consumer_ws_max_history",
            self.consumer_ws_max_history,
            1,
            100_000,
        )?;
        Ok(())
    }
}

impl common::service::ServiceSettings for Config {
    const NAME: &'static str = "consumer";

    fn logging(&self) -> (LogFormat, &str) {
        (self.log_format, &self.rust_log)
    }

    fn http_addr(&self) -> &str {
        &self.consumer_http_addr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pairs: &[(&str, &str)]) -> Result<Config, String> {
        common::config::load_from(
            None,
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let c = load(&[]).unwrap();
        assert_eq!(c.consumer_queue, "chat.consumer");
        assert_eq!(c.consumer_bindings, ["chat.#"]);
        assert_eq!(c.consumer_http_addr, "127.0.0.1:8080");
        assert!(c.api_token().is_none());
        assert!(c.command_token().is_none(), "sending is off by default");
        assert_eq!(c.consumer_commands_exchange, "chat.commands");
        assert_eq!(c.privacy_stream(), Some("chat.privacy"));
        let off = load(&[("PRIVACY_STREAM", "")]).unwrap();
        assert_eq!(off.privacy_stream(), None, "empty: off");
        let own = load(&[("PRIVACY_STREAM", "my.privacy")]).unwrap();
        assert_eq!(own.privacy_stream(), Some("my.privacy"));
    }

    #[test]
    fn the_command_token_is_secret_and_never_the_read_token() {
        let c = load(&[
            ("CONSUMER_API_TOKEN", "read-s3cret"),
            ("CONSUMER_COMMAND_TOKEN", "write-s3cret"),
            ("CONSUMER_COMMANDS_EXCHANGE", "my.commands"),
        ])
        .unwrap();
        assert_eq!(c.command_token().unwrap().expose(), "write-s3cret");
        assert_eq!(c.consumer_commands_exchange, "my.commands");
        assert!(!format!("{c:?}").contains("write-s3cret"));
        assert!(
            load(&[("CONSUMER_COMMAND_TOKEN", "")])
                .unwrap()
                .command_token()
                .is_none()
        );
        let err = load(&[
            ("CONSUMER_API_TOKEN", "same"),
            ("CONSUMER_COMMAND_TOKEN", "same"),
        ])
        .unwrap_err();
        assert!(err.contains("CONSUMER_COMMAND_TOKEN"), "{err}");
    }

    #[test]
    fn environment_overrides() {
        let c = load(&[
            ("CONSUMER_BINDINGS", "chat.twitch.*, chat.*.x"),
            ("CONSUMER_QUEUE_TYPE", "quorum"),
            ("CONSUMER_RETENTION_MAX_AGE", "30d"),
            ("CONSUMER_RETENTION_MAX_PER_CHANNEL", "1000"),
            ("CONSUMER_API_TOKEN", "s3cret"),
            ("DATABASE_URL", "sqlite:///data/db/chatbus.sqlite"),
        ])
        .unwrap();
        assert_eq!(c.consumer_bindings, ["chat.twitch.*", "chat.*.x"]);
        assert_eq!(c.consumer_queue_type, QueueTypeChoice::Quorum);
        assert_eq!(
            c.consumer_retention_max_age,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(c.consumer_retention_max_per_channel, Some(1000));
        assert_eq!(c.api_token().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let long_name = "p".repeat(256);
        for (key, value, needle) in [
            ("CONSUMER_BINDINGS", "chat.tw*", "CONSUMER_BINDINGS"),
            ("CONSUMER_PREFETCH", "10", "CONSUMER_PREFETCH"),
            ("DATABASE_URL", "mysql://x", "DATABASE_URL"),
            (
                "CONSUMER_WS_MAX_FRAME_BYTES",
                "1",
                "CONSUMER_WS_MAX_FRAME_BYTES",
            ),
            ("CONSUMER_BATCH_WAIT", "0s", "CONSUMER_BATCH_WAIT"),
            ("CONSUMER_HTTP_ADDR", "localhost", "CONSUMER_HTTP_ADDR"),
            ("CONSUMER_WS_SEND_QUEUE", "10", "CONSUMER_WS_SEND_QUEUE"),
            (
                "CONSUMER_WS_SEND_QUEUE_BYTES",
                "1000",
                "CONSUMER_WS_SEND_QUEUE_BYTES",
            ),
            (
                "CONSUMER_WS_MAX_PER_ADDRESS",
                "20000",
                "CONSUMER_WS_MAX_PER_ADDRESS",
            ),
            ("CONSUMER_MAX_EVENT_BYTES", "10", "CONSUMER_MAX_EVENT_BYTES"),
            (
                "CONSUMER_MAX_TEXT_BYTES",
                "300000",
                "CONSUMER_MAX_TEXT_BYTES",
            ),
            ("CHAT_EXCHANGE", "", "CHAT_EXCHANGE"),
            ("PRIVACY_STREAM", long_name.as_str(), "PRIVACY_STREAM"),
            (
                "CONSUMER_COMMANDS_EXCHANGE",
                "",
                "CONSUMER_COMMANDS_EXCHANGE",
            ),
        ] {
            let err = load(&[(key, value)]).unwrap_err();
            assert!(err.contains(needle), "{key}={value}: {err}");
        }
    }
}
