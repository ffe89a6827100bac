//! Logging (tracing-subscriber, human or JSON) and the Prometheus recorder.

use std::io::IsTerminal;

use serde::{Deserialize, Serialize};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::FmtSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines (the default), coloured on a terminal.
    #[default]
    Human,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber. `filter` uses `RUST_LOG` syntax
/// (e.g. `info,lapin=warn`). Logs go to stderr, coloured only when stderr
/// is a terminal: a log file (`scripts/dev.sh`'s `data/*/logs`, a
/// container's log) gets plain text.
///
/// # Errors
/// When `filter` does not parse, or a subscriber is already installed.
pub fn init(format: LogFormat, filter: &str) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(with_library_defaults(filter))
        .map_err(|e| anyhow::anyhow!("invalid RUST_LOG filter `{filter}`: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_span_events(FmtSpan::NONE);
    let result = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    result.map_err(|e| anyhow::anyhow!("cannot install the log subscriber: {e}"))
}

/// Library log targets whose lines chatbus reports itself, with context
/// and the right level: lapin logs every connection failure at ERROR from
/// its I/O thread (and again from the channel and connection), while
/// chatbus retries it, says so at WARN, and stops with one ERROR line only
/// when a person must act. They are off unless the filter names `lapin`.
const QUIET_LIBRARY_TARGETS: &[&str] = &["lapin::io_loop", "lapin::channel", "lapin::channels"];

fn with_library_defaults(filter: &str) -> String {
    if filter.contains("lapin") {
        return filter.to_owned();
    }
    let mut out = filter.to_owned();
    for target in QUIET_LIBRARY_TARGETS {
        if !out.is_empty() {
            out.push(',');
        }
        out.push_str(target);
        out.push_str("=off");
    }
    out
}

/// Installs the global Prometheus recorder for the `metrics` facade and
/// returns the handle whose `render()` serves `/metrics`.
///
/// # Errors
/// When a recorder is already installed in this process.
pub fn install_metrics() -> anyhow::Result<metrics_exporter_prometheus::PrometheusHandle> {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
        .map_err(|e| anyhow::anyhow!("metrics buckets: {e}"))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder)
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    Ok(handle)
}

/// [`install_metrics`], or a handle to a fresh recorder that is not global
/// when one is already installed (tests that start several apps in one
/// process).
pub fn metrics_handle() -> metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE
        .get_or_init(|| {
            install_metrics().unwrap_or_else(|_| {
                metrics_exporter_prometheus::PrometheusBuilder::new()
                    .build_recorder()
                    .handle()
            })
        })
        .clone()
}

/// An error and its causes on one line, `: `-separated (reqwest's
/// top-level message alone is often just "error sending request").
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lapin_connection_noise_is_off_unless_asked_for() {
        let f = with_library_defaults("info");
        assert!(
            f.starts_with("info,") && f.contains("lapin::io_loop=off"),
            "{f}"
        );
        assert_eq!(
            with_library_defaults("info,lapin=debug"),
            "info,lapin=debug"
        );
        assert!(EnvFilter::try_new(with_library_defaults("")).is_ok());
    }
}
