//! Live clients forget on request: the consumer follows the privacy
//! stream (`PRIVACY_STREAM`, `chat.privacy`; [`common::amqp::privacy`])
//! and sends each purge and opt-out to every WebSocket client with a
//! subscription as a `privacy` frame (docs/websocket.md), so the page and
//! the overlay remove what they show of the subject, as they do for
//! moderation.
//!
//! The follower also keeps the consumer's [`PrivacyFeed`] (the opt-out
//! list and purge horizons), which [`PrivacyLive::feed`] hands to whatever
//! must honour it.
//!
//! The stream is replayed from its start whenever the consumer starts;
//! notices decided before this consumer started are applied to the feed but
//! not sent to clients: every page loaded its history after they ran.

use std::sync::Arc;

use anyhow::Context;
use chrono::{DateTime, Utc};
use common::amqp::ConnectOptions;
use common::amqp::privacy::{PrivacyFeed, follow};
use common::privacy::{PrivacyAction, PrivacyNotice};
use common::schema::PrivacyDetails;
use common::shutdown::CancellationToken;
use futures::future::BoxFuture;
use tokio::sync::mpsc;

use crate::hub::Hub;
use crate::ws::protocol::ServerFrame;

/// The consumer's side of the privacy stream.
pub struct PrivacyLive {
    /// The opt-outs and purge horizons as the stream says (empty and
    /// loaded when `PRIVACY_STREAM` is off).
    pub feed: PrivacyFeed,
    /// Follows the stream and tells the clients; `None` when off. Ends at
    /// shutdown, or with an error retrying cannot fix (`PRIVACY_STREAM`
    /// names a queue that is not a stream).
    pub task: Option<BoxFuture<'static, anyhow::Result<()>>>,
}

impl std::fmt::Debug for PrivacyLive {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrivacyLive")
            .field("feed", &self.feed)
            .field("following", &self.task.is_some())
            .finish()
    }
}

/// Starts following `stream` (`None`: off) on connections made with
/// `options`, until `shutdown`; purges and opt-outs go to `hub`'s clients.
pub fn start(
    options: ConnectOptions,
    stream: Option<&str>,
    hub: Arc<Hub>,
    adopt: Option<crate::privacy::Privacy>,
    shutdown: CancellationToken,
) -> PrivacyLive {
    let Some(stream) = stream else {
        return PrivacyLive {
            feed: PrivacyFeed::empty(),
            task: None,
        };
    };
    let started = Utc::now();
    let (tx, rx) = mpsc::unbounded_channel();
    let (feed, follower) = follow(
        options,
        stream.to_owned(),
        "consumer".to_owned(),
        Some(tx),
        shutdown,
    );
    // Notices another deployment published are applied to this store
    // too (Art. 17(2)), one at a time, beside telling the clients.
    let (adopt_tx, adopt_rx) = mpsc::unbounded_channel();
    if let Some(privacy) = adopt {
        tokio::spawn(adopt_each(privacy, adopt_rx));
    }
    let task = async move {
        tell_clients(rx, &hub, started, &adopt_tx).await;
        // The notices end when the follower does.
        follower
            .await
            .context("the privacy stream follower panicked")?
    };
    PrivacyLive {
        feed,
        task: Some(Box::pin(task)),
    }
}

/// Sends each purge and opt-out decided since `started` to every client.
async fn tell_clients(
    mut notices: mpsc::UnboundedReceiver<PrivacyNotice>,
    hub: &Hub,
    started: DateTime<Utc>,
    adopt: &mpsc::UnboundedSender<PrivacyNotice>,
) {
    while let Some(notice) = notices.recv().await {
        let _ = adopt.send(notice.clone());
        if !matches!(notice.action, PrivacyAction::Purge | PrivacyAction::OptOut)
            || notice.at < started
        {
            continue;
        }
        let Some(details) = PrivacyDetails::from_notice(&notice) else {
            continue;
        };
        let frame: Arc<str> = Arc::from(ServerFrame::Privacy { details: &details }.to_text());
        let clients = hub.announce(&frame);
        metrics::counter!("chatbus_consumer_privacy_notices_total", "action" => notice.action.as_str())
            .increment(1);
        tracing::info!(
            action = notice.action.as_str(),
            subject = details.subject.describe(),
            notice = %notice.id,
            clients,
            "privacy notice sent to the live clients"
        );
    }
}

/// Applies each notice to the store unless it already was
/// ([`crate::privacy::Privacy::adopt`]).
async fn adopt_each(
    privacy: crate::privacy::Privacy,
    mut notices: mpsc::UnboundedReceiver<PrivacyNotice>,
) {
    while let Some(notice) = notices.recv().await {
        if let Err(e) = privacy.adopt(&notice).await {
            tracing::error!(error = format!("{e:#}"), notice = %notice.id, "a privacy notice from the stream could not be applied; it is tried again at the next start");
        }
    }
}

/// The connect options of the privacy follower: the consumer's broker,
/// under a name of its own.
pub fn connect_options(amqp_url: &str, instance: &str) -> ConnectOptions {
    ConnectOptions::new(amqp_url, format!("chatbus-consumer {instance} privacy"))
}
