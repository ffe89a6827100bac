//! Retention: deletes events by age and by count per channel, on a timer.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::store::{RetentionPolicy, Store};

/// Applies `policy` now and then every `every`, until `cancel`.
///
/// # Errors
/// Never; store failures are logged and retried at the next run.
pub async fn run(
    store: Arc<dyn Store>,
    policy: RetentionPolicy,
    every: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let started = std::time::Instant::now();
        match store.apply_retention(&policy).await {
            Ok(0) => {}
            Ok(deleted) => {
                metrics::counter!("chatbus_consumer_retention_deleted_total").increment(deleted);
                tracing::info!(deleted, took = ?started.elapsed(), "retention deleted old events");
            }
            Err(e) => tracing::warn!(error = %e, "retention failed; retrying at the next run"),
        }
    }
}
