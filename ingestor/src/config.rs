//! The ingestor's configuration (see `.env.example` for every key).

use common::config::{ConfigError, ServiceConfig, check_amqp_url};
use common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// ingestor settings. Each field is also an environment variable of the
/// same name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// RabbitMQ URL.
    pub amqp_url: String,
    /// The topic exchange events are published to.
    pub chat_exchange: String,
    /// Address the HTTP server listens on.
    pub ingestor_http_addr: String,
    /// Log output: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub rust_log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            chat_exchange: "chat".into(),
            ingestor_http_addr: "127.0.0.1:9100".into(),
            log_format: LogFormat::Human,
            rust_log: "info".into(),
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        check_amqp_url("amqp_url", &self.amqp_url)?;
        if self.chat_exchange.is_empty() {
            return Err(ConfigError::invalid("chat_exchange", "must not be empty"));
        }
        Ok(())
    }
}
