//! Connecting to RabbitMQ with retry and exponential backoff ([`Backoff`]),
//! closing politely, and the broker URLs (several nodes, redacted in logs).

use std::time::Duration;

use lapin::{Channel, Connection, ConnectionProperties};
use tokio_util::sync::CancellationToken;

use super::AmqpError;
use super::backoff::Backoff;

/// How to connect.
#[derive(Clone)]
pub struct ConnectOptions {
    /// `amqp://user:pass@host:port/vhost` (or `amqps://`); several nodes of
    /// a cluster as a comma list, tried in turn.
    pub url: String,
    /// Connection name shown in the management UI.
    pub name: String,
    /// Retry policy.
    pub backoff: Backoff,
    /// Which node of `url` to try first next time (the one after the
    /// last that answered, so a reconnect moves on from a node that died).
    next: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("url", &redact_url(&self.url))
            .field("name", &self.name)
            .field("backoff", &self.backoff)
            .finish()
    }
}

impl ConnectOptions {
    /// Options with the default backoff (retry until cancelled). `url` may
    /// list several nodes, comma-separated.
    pub fn new(url: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            name: name.into(),
            backoff: Backoff::default(),
            next: std::sync::Arc::default(),
        }
    }

    /// The broker addresses, in order.
    pub fn urls(&self) -> Vec<&str> {
        split_urls(&self.url)
    }

    /// Replaces the retry policy.
    pub fn with_backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }
}

/// How long [`close`] waits for the broker's `close-ok`.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// Closes `connection` politely, but never waits more than
/// [`CLOSE_TIMEOUT`]: closing a connection the broker already dropped can
/// otherwise wait forever for a `close-ok` that will not come.
pub async fn close(connection: &Connection, reason: &str) {
    if !connection.status().connected() {
        return;
    }
    let closing = connection.close(200, reason.into());
    if tokio::time::timeout(CLOSE_TIMEOUT, closing).await.is_err() {
        tracing::debug!(
            reason,
            "no close-ok from the broker; dropping the connection"
        );
    }
}

/// Closes `channel` and waits for the broker's `close-ok`, at most
/// [`CLOSE_TIMEOUT`].
///
/// Close a channel this way before closing its connection. A channel that
/// is merely dropped is closed by lapin in the background; if the
/// connection closes first, lapin reports that background close's failure
/// as a connection error at ERROR level, on every clean shutdown.
pub async fn close_channel(channel: &Channel, reason: &str) {
    if !channel.status().connected() {
        return;
    }
    match tokio::time::timeout(CLOSE_TIMEOUT, channel.close(200, reason.into())).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::debug!(error = %e, reason, "closing a channel failed"),
        Err(_) => tracing::debug!(reason, "no channel.close-ok from the broker"),
    }
}

/// The addresses of a comma list of broker URLs (empty entries skipped).
pub fn split_urls(urls: &str) -> Vec<&str> {
    urls.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// `amqp://guest:secret@host/` -> `amqp://guest:[redacted]@host/` (each
/// URL of a comma list).
pub fn redact_url(url: &str) -> String {
    let urls = split_urls(url);
    if urls.len() > 1 {
        return urls
            .into_iter()
            .map(redact_one)
            .collect::<Vec<_>>()
            .join(",");
    }
    redact_one(url)
}

fn redact_one(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("[redacted]"));
            parsed.to_string().replace("%5Bredacted%5D", "[redacted]")
        }
        Ok(_) => url.to_owned(),
        Err(_) => "[unparseable url]".to_owned(),
    }
}

/// Connects to one of the nodes of `options.url`, retrying with backoff
/// until it succeeds, `max_attempts` rounds are over or `cancel` fires.
/// Each round tries every node once, starting after the node that answered
/// last; each failure is logged with the attempt number.
///
/// A refusal that retrying cannot fix (wrong user or password, a missing
/// virtual host) ends it at once with an error for which
/// [`AmqpError::is_permanent`] is true.
///
/// # Errors
/// [`AmqpError::Connect`] after the last attempt or for a permanent
/// refusal, [`AmqpError::Cancelled`] if cancelled first.
pub async fn connect(
    options: &ConnectOptions,
    cancel: &CancellationToken,
) -> Result<Connection, AmqpError> {
    use std::sync::atomic::Ordering;
    let urls = options.urls();
    if urls.is_empty() {
        return Err(AmqpError::NoUrl);
    }
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let start = options.next.load(Ordering::Relaxed);
        let mut last = None;
        for i in 0..urls.len() {
            let index = (start + i) % urls.len();
            let url = urls[index];
            let props =
                ConnectionProperties::default().with_connection_name(options.name.clone().into());
            let result = tokio::select! {
                () = cancel.cancelled() => return Err(AmqpError::Cancelled),
                r = Connection::connect(url, props) => r,
            };
            match result {
                Ok(conn) => {
                    options
                        .next
                        .store((index + 1) % urls.len(), Ordering::Relaxed);
                    let shown = redact_url(url);
                    if attempt > 1 || i > 0 {
                        tracing::info!(url = %shown, attempt, "connected to RabbitMQ");
                    } else {
                        tracing::debug!(url = %shown, "connected to RabbitMQ");
                    }
                    metrics::counter!("chatbus_amqp_connects_total").increment(1);
                    return Ok(conn);
                }
                Err(source) => {
                    metrics::counter!("chatbus_amqp_connect_failures_total").increment(1);
                    let error = AmqpError::Connect {
                        url: redact_url(url),
                        error: source,
                    };
                    if error.is_permanent() {
                        return Err(error);
                    }
                    if urls.len() > 1 {
                        tracing::warn!(url = %redact_url(url), %error, "RabbitMQ node unreachable; trying the next");
                    }
                    last = Some(error);
                }
            }
        }
        let error = last.expect("at least one node was tried");
        if options
            .backoff
            .max_attempts
            .is_some_and(|max| attempt >= max)
        {
            return Err(error);
        }
        let delay = options.backoff.delay(attempt);
        tracing::warn!(url = %redact_url(&options.url), attempt, %error, retry_in = ?delay, "cannot connect to RabbitMQ");
        tokio::select! {
            () = cancel.cancelled() => return Err(AmqpError::Cancelled),
            () = tokio::time::sleep(delay) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_urls_are_split_and_each_redacted() {
        let opts = ConnectOptions::new("amqp://u:p1@a:5680/%2f, amqp://u:p2@b:5681/%2f,", "n");
        assert_eq!(
            opts.urls(),
            ["amqp://u:p1@a:5680/%2f", "amqp://u:p2@b:5681/%2f"]
        );
        let shown = redact_url(&opts.url);
        assert!(!shown.contains("p1") && !shown.contains("p2"), "{shown}");
        assert_eq!(shown.matches("[redacted]").count(), 2);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:hunter2@127.0.0.1:5672/%2f"),
            "amqp://guest:[redacted]@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://127.0.0.1"), "amqp://127.0.0.1");
        // The consumer redacts its PostgreSQL URL with it too.
        assert_eq!(
            redact_url("postgres://u:hunter2@h:5432/db"),
            "postgres://u:[redacted]@h:5432/db"
        );
        let opts = ConnectOptions::new("amqp://u:hunter2@h/", "n");
        assert!(!format!("{opts:?}").contains("hunter2"));
    }

    #[tokio::test]
    async fn gives_up_after_max_attempts_with_a_clear_error() {
        // Port 1 on loopback refuses connections.
        let opts =
            ConnectOptions::new("amqp://guest:pw@127.0.0.1:1/%2f", "t").with_backoff(Backoff {
                initial: Duration::from_millis(1),
                max: Duration::from_millis(5),
                max_attempts: Some(3),
            });
        let err = connect(&opts, &CancellationToken::new()).await.unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("127.0.0.1:1") && !msg.contains("pw@"), "{msg}");
    }

    #[tokio::test]
    async fn cancellation_stops_retrying() {
        let opts = ConnectOptions::new("amqp://127.0.0.1:1/%2f", "t");
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            c.cancel();
        });
        let err = tokio::time::timeout(Duration::from_secs(5), connect(&opts, &cancel))
            .await
            .expect("connect returns after cancel")
            .unwrap_err();
        assert!(matches!(err, AmqpError::Cancelled));
    }
}
