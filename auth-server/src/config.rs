//! The auth-server's configuration (see `.env.example` for every key).

use common::config::{ConfigError, ServiceConfig};
use common::telemetry::LogFormat;
use serde::{Deserialize, Serialize};

/// auth-server settings. Each field is also an environment variable of the
/// same name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server listens on.
    pub auth_http_addr: String,
    /// Log output: `human` or `json`.
    pub log_format: LogFormat,
    /// Log filter in `RUST_LOG` syntax.
    pub rust_log: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            auth_http_addr: "127.0.0.1:3000".into(),
            log_format: LogFormat::Human,
            rust_log: "info".into(),
        }
    }
}

impl ServiceConfig for Config {
    fn validate(&self) -> Result<(), ConfigError> {
        if self.auth_http_addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid("auth_http_addr", "must be ip:port"));
        }
        Ok(())
    }
}
