//! The ingestor's configuration (see `.env.example` for every key): what
//! every platform shares here, each platform's own settings in its folder
//! (`platforms::<name>::Settings`), read from the same sources.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use common::Secret;
use common::config::{
    ConfigError, ServiceConfig, Sources, check_amqp_url, check_http_url, check_nonempty,
    check_nonzero, check_range, check_socket_addr, comma_list,
};
use common::oauth::OAuthConfig;
use common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

use crate::platforms;

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
    /// Address of the webhook listener: where platforms and other senders
    /// push events, so it must be reachable from them (put a TLS reverse
    /// proxy in front). Unset: no listener.
    pub webhook_http_addr: Option<String>,
    /// Generic signed webhook sources (`POST /hooks/<name>`), a comma list
    /// of `name:secret-file`; the file holds the HMAC secret (16 bytes or
    /// more). Needs `webhook_http_addr`.
    #[serde(deserialize_with = "comma_list")]
    pub webhook_sources: Vec<String>,
    /// Largest webhook body accepted; larger ones are answered 413.
    pub webhook_max_body_bytes: u64,
    /// A webhook timestamp further than this from now is refused (401).
    #[serde(with = "humantime_serde")]
    pub webhook_max_age: Duration,

    /// The topic exchange commands are published to (its dead-letter
    /// exchange is `<name>.dlx`).
    pub commands_exchange: String,
    /// The queue commands are taken from (single active consumer: one
    /// ingestor at a time takes them).
    pub commands_queue: String,
    /// Who commands may act as: a comma list of
    /// `<platform>:<account>[:send|:moderate][:users=<rabbitmq user>/...]`.
    /// Empty: the ingestor takes no commands.
    #[serde(deserialize_with = "comma_list")]
    pub commands_allow: Vec<String>,
    /// Commands taken from the queue at once (all channels' waiting
    /// commands together).
    pub commands_prefetch: u16,

    /// Token store and OAuth provider settings, shared with the auth-server
    /// (`TOKEN_STORE_PATH`, each provider's client id and URLs ...). With a
    /// provider's client id the ingestor refreshes its accounts' tokens
    /// itself; without one it uses whatever the auth-server keeps fresh in
    /// the store.
    #[serde(flatten)]
    pub oauth: OAuthConfig,
    /// Carry the platform's raw form in each event's `raw` field (the IRC
    /// line; YouTube's resource as JSON).
    pub ingest_include_raw: bool,

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

    /// The RabbitMQ stream of opt-outs and purges (`chat.privacy`,
    /// docs/ingestor.md "Opt-outs"): replayed from its start at each start
    /// and followed; events it refuses are never published. Empty: off
    /// (nothing is refused).
    pub privacy_stream: String,

    /// The fleet this ingestor is one of (docs/scaling.md "A fleet"): all
    /// instances with the same name share one wanted set of channels and
    /// spread it between them, taking over a dead one's channels. Unset:
    /// standalone.
    pub ingestor_fleet: Option<String>,
    /// How long an instance may be silent before the fleet takes its
    /// channels over (it also sets the fleet connection's AMQP heartbeat,
    /// a fifth of it).
    #[serde(with = "humantime_serde")]
    pub ingestor_fleet_takeover: Duration,
    /// This instance's name in the fleet; empty: the host name and a
    /// random suffix (a new one each start).
    pub ingestor_instance: String,

    /// Every platform's settings (their keys are read from the same
    /// sources: `ServiceConfig::read_parts`).
    #[serde(skip)]
    pub platforms: platforms::Settings,
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
            webhook_http_addr: None,
            webhook_sources: Vec::new(),
            webhook_max_body_bytes: 64 * 1024,
            webhook_max_age: Duration::from_secs(5 * 60),
            commands_exchange: "chat.commands".into(),
            commands_queue: "chat.commands.ingestor".into(),
            commands_allow: Vec::new(),
            commands_prefetch: 1000,
            oauth: OAuthConfig::default(),
            ingest_include_raw: true,
            spool_dir: PathBuf::from("data/spool"),
            spool_max_bytes: 1024 * 1024 * 1024,
            spool_segment_bytes: 16 * 1024 * 1024,
            outbox_memory_events: 4_096,
            publish_max_in_flight: 2048,
            publish_confirm_timeout: common::amqp::CONFIRM_TIMEOUT,
            amqp_reconnect_max_delay: Duration::from_secs(10),
            privacy_stream: common::privacy::PRIVACY_STREAM.into(),
            ingestor_fleet: None,
            ingestor_fleet_takeover: Duration::from_secs(10),
            ingestor_instance: String::new(),
            platforms: platforms::Settings::default(),
        }
    }
}

impl ServiceConfig for Config {
    fn read_parts(&mut self, sources: &Sources) -> Result<(), ConfigError> {
        self.platforms = platforms::Settings::read(sources)?;
        Ok(())
    }

    fn part_keys() -> BTreeSet<String> {
        platforms::Settings::keys()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_amqp_url("amqp_url", &self.amqp_url)?;
        if let Some(url) = &self.rabbitmq_management_url {
            check_http_url("rabbitmq_management_url", url)?;
        }
        check_nonempty("chat_exchange", &self.chat_exchange)?;
        if let Some(fleet) = &self.ingestor_fleet
            && (fleet.is_empty()
                || fleet.len() > 100
                || !fleet
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'))
        {
            return Err(ConfigError::invalid(
                "ingestor_fleet",
                "is a name of 1 to 100 letters, digits, - and _ (it names the fleet's queues)",
            ));
        }
        if self.ingestor_fleet_takeover < Duration::from_secs(2)
            || self.ingestor_fleet_takeover > Duration::from_secs(600)
        {
            return Err(ConfigError::invalid(
                "ingestor_fleet_takeover",
                "is between 2s and 10m",
            ));
        }
        check_socket_addr("ingestor_http_addr", &self.ingestor_http_addr)?;
        check_range(
            "ingestor_worker_threads",
            self.ingestor_worker_threads,
            1,
            256,
        )?;
        self.platforms.validate(&self.oauth)?;
        match &self.webhook_http_addr {
            Some(addr) => check_socket_addr("webhook_http_addr", addr)?,
            None if !self.webhook_sources.is_empty() => {
                return Err(ConfigError::invalid(
                    "webhook_sources",
                    "set WEBHOOK_HTTP_ADDR too: the sources are served by the webhook listener",
                ));
            }
            None => {}
        }
        crate::webhooks::parse_sources(&self.webhook_sources, platforms::NAMES)?;
        check_range(
            "webhook_max_body_bytes",
            self.webhook_max_body_bytes,
            1024,
            64 * 1024 * 1024,
        )?;
        check_nonzero("webhook_max_age", self.webhook_max_age)?;
        check_nonempty("commands_exchange", &self.commands_exchange)?;
        check_nonempty("commands_queue", &self.commands_queue)?;
        crate::commands::allow::AllowList::parse(&self.commands_allow)
            .map_err(|e| ConfigError::invalid("commands_allow", e))?;
        check_range("commands_prefetch", self.commands_prefetch, 1, u16::MAX)?;
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
        check_queue_name("privacy_stream", &self.privacy_stream)?;
        Ok(())
    }
}

/// An AMQP queue name (or empty): at most 255 bytes, not `amq.`.
fn check_queue_name(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.len() > 255 {
        return Err(ConfigError::invalid(field, "longer than 255 bytes"));
    }
    if value.starts_with("amq.") {
        return Err(ConfigError::invalid(
            field,
            "names starting with `amq.` are RabbitMQ's own",
        ));
    }
    Ok(())
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
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("SPOOL_MAX_BYTES", "10"),
            ("CHAT_EXCHANGE", ""),
            ("PUBLISH_MAX_IN_FLIGHT", "many"),
            ("PRIVACY_STREAM", "amq.privacy"),
        ] {
            let err = load_from::<Config, _, _, _>(None, [(k, v)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(k), "{k}: {err}");
        }
    }

    #[test]
    fn the_privacy_stream_defaults_to_chat_privacy_and_empty_turns_it_off() {
        let c: Config = load_from(None, [("RUST_LOG", "info")]).unwrap();
        assert_eq!(c.privacy_stream, "chat.privacy");
        let c: Config = load_from(None, [("PRIVACY_STREAM", "")]).unwrap();
        assert_eq!(c.privacy_stream, "");
    }

    #[test]
    fn the_api_key_is_redacted() {
        let c: Config = load_from(None, [("INGESTOR_API_KEY", "letmein")]).unwrap();
        assert!(!format!("{c:?}").contains("letmein"));
    }
}
