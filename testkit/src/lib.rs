//! Test helpers for chatbus: the real RabbitMQ (unique names, management
//! API), a TCP proxy that can cut connections, the fault-drill broker node,
//! and the Twitch IRC corpus. Fake platform servers live here too.
//!
//! Dev-only: nothing in a service depends on this crate at run time.

pub mod ceiling;
pub mod cluster;
pub mod corpus;
pub mod events;
pub mod fake_helix;
pub mod fake_irc;
pub mod fake_kick;
pub mod fake_oauth;
pub mod fake_youtube;
pub mod fault;
pub mod metrics;
pub mod perf;
pub mod pg;
pub mod process;
pub mod proxy;
pub mod rabbit;
pub mod repo;
pub mod service_binary;

use std::future::Future;
use std::time::Duration;

/// Awaits `fut`, panicking with `what` if it takes longer than `secs`.
pub async fn within<T>(secs: u64, what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .unwrap_or_else(|_| panic!("timed out after {secs}s: {what}"))
}

/// Polls `check` every 50 ms until it returns `Some`, for at most `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    within(secs, what, async {
        loop {
            if let Some(v) = check().await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// Polls `url` until it answers 2xx, for at most `secs` (a service that
/// has just been started).
pub async fn wait_http_ok(secs: u64, url: &str) {
    eventually(secs, &format!("{url} answers"), || async {
        reqwest::get(url)
            .await
            .is_ok_and(|r| r.status().is_success())
            .then_some(())
    })
    .await;
}

/// A dev binary's (bench, fake server) `--name value` argument, or
/// `default` (cargo bench passes its own flags too; others are ignored).
///
/// # Panics
/// When the value does not parse.
pub fn cli_arg<T: std::str::FromStr>(name: &str, default: T) -> T {
    let argv: Vec<String> = std::env::args().collect();
    match argv.iter().position(|a| a == name) {
        Some(i) => argv
            .get(i + 1)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} needs a value")),
        None => default,
    }
}

/// The ingestor tuning set in this process's environment
/// (`OUTBOX_MEMORY_EVENTS`, `PUBLISH_MAX_IN_FLIGHT`, `INGESTOR_WORKER_THREADS`
/// and the allocator's `MIMALLOC_*`), for a bench to pass to the ingestor
/// it starts: `OUTBOX_MEMORY_EVENTS=20000 cargo bench ...`.
pub fn ingestor_tuning_env() -> Vec<(String, String)> {
    std::env::vars()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "OUTBOX_MEMORY_EVENTS" | "PUBLISH_MAX_IN_FLIGHT" | "INGESTOR_WORKER_THREADS"
            ) || k.starts_with("MIMALLOC_")
        })
        .collect()
}

/// A TCP port on 127.0.0.1 that was free a moment ago, for a child process
/// to bind.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0")
        .port()
}

/// Installs a test log subscriber once (RUST_LOG, default `warn`).
pub fn init_logging() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into());
        let _ = common::telemetry::init(common::telemetry::LogFormat::Human, &filter);
    });
}
