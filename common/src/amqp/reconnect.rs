//! The one reconnect loop ([`reconnect_loop`]) of every long-lived AMQP
//! user: the ingestor's publisher, the consumer's ingest.
//!
//! ```text
//! connect (retrying, connect's own backoff) --> Session::run(connection)
//!    ^                                                |
//!    |   wait Backoff::delay(losses in a row)         | SessionEnd::Lost
//!    '------------- log + count the loss <------------'
//! ```
//!
//! A [`Session`] owns what one connection is for (a confirm channel and
//! its window, a subscription and its batches) and the state that outlives
//! a connection (what is still unconfirmed). The loop owns the connection:
//! it connects, hands it to the session, closes it when the session ends,
//! and decides what the end means: [`SessionEnd::Finished`] (or shutdown)
//! returns `Ok`; [`SessionEnd::Fatal`] and a loss that retrying cannot fix
//! ([`is_permanent`](super::is_permanent): a refused login, a
//! topology conflict) return the error; any other loss is logged, counted
//! in the session's metric, and followed by a reconnect after a backoff.
//! The backoff grows with each loss in a row and starts over after a
//! session that was healthy (it got a confirm, it subscribed), so one
//! broker restart costs a short wait and a flapping broker a long one.

use std::future::Future;

use lapin::Connection;
use tokio_util::sync::CancellationToken;

use super::AmqpError;
use super::connection::{ConnectOptions, close, connect};

/// How a [`Session`] ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// Shutdown was asked, or the session's work is done: the loop returns
    /// `Ok`.
    Finished,
    /// The connection or channel failed: the loop reconnects after a
    /// backoff, unless retrying cannot help (then it returns the error).
    Lost {
        /// What failed.
        error: anyhow::Error,
        /// The session did useful work before it failed (a confirm, a
        /// subscription), so the next reconnect's backoff starts over.
        healthy: bool,
    },
    /// A failure that is not the broker's (the ingestor's spool): the loop
    /// returns it.
    Fatal(anyhow::Error),
}

impl SessionEnd {
    /// A loss before the session did anything useful.
    pub fn lost(error: impl Into<anyhow::Error>) -> Self {
        Self::Lost {
            error: error.into(),
            healthy: false,
        }
    }
}

/// One connection's worth of work, run by [`reconnect_loop`] on each new
/// connection.
pub trait Session {
    /// What the session is, for logs (`publisher`, `ingest`).
    const NAME: &'static str;
    /// The counter of lost sessions, e.g.
    /// `chatbus_ingestor_amqp_reconnects_total`.
    const RECONNECTS_METRIC: &'static str;

    /// Works on `connection` until it fails, the work is done or `cancel`
    /// fires. The loop closes `connection` afterwards; channels the session
    /// opened it closes itself (see [`close_channel`](super::close_channel)).
    fn run(
        &mut self,
        connection: &Connection,
        cancel: &CancellationToken,
    ) -> impl Future<Output = SessionEnd> + Send;
}

/// Runs `session` on a connection made with `options`, reconnecting after
/// every loss (paced by `options.backoff`), until the session finishes or
/// `cancel` fires.
///
/// # Errors
/// A [`SessionEnd::Fatal`] error, or a connect failure or loss that
/// retrying cannot fix ([`super::is_permanent`]).
pub async fn reconnect_loop<S: Session>(
    options: &ConnectOptions,
    session: &mut S,
    cancel: &CancellationToken,
) -> anyhow::Result<()> {
    // Losses since the last healthy session.
    let mut losses: u32 = 0;
    loop {
        let end = match connect(options, cancel).await {
            Ok(connection) => {
                let end = session.run(&connection, cancel).await;
                close(&connection, &format!("{} session over", S::NAME)).await;
                end
            }
            Err(AmqpError::Cancelled) => return Ok(()),
            Err(e) => SessionEnd::lost(e),
        };
        let error = match end {
            SessionEnd::Finished => return Ok(()),
            SessionEnd::Fatal(error) => return Err(error),
            SessionEnd::Lost { error, healthy } => {
                if healthy {
                    losses = 0;
                }
                error
            }
        };
        if cancel.is_cancelled() {
            return Ok(());
        }
        if super::is_permanent(&error) {
            return Err(error);
        }
        losses = losses.saturating_add(1);
        let delay = options.backoff.delay(losses);
        metrics::counter!(S::RECONNECTS_METRIC).increment(1);
        tracing::warn!(session = S::NAME, error = format!("{error:#}"), retry_in = ?delay, "lost RabbitMQ; reconnecting");
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            () = tokio::time::sleep(delay) => {}
        }
    }
}
