//! Kick stream status by polling: Kick's webhooks say when a stream starts
//! and ends (`livestream.status.updated`) and when its title or category
//! changes, but carry no viewer count. Every `KICK_STATUS_INTERVAL` this
//! asks `GET /public/v2/livestreams` about every wanted channel (50
//! broadcasters a call) and publishes, per channel:
//!
//! * its state once at start (`stream_online` with viewers, or
//!   `stream_offline`);
//! * a transition a webhook did not bring (each transition is published
//!   once, by whichever sees it first: [`Shared::is_news`]);
//! * `stream_update` when the viewer count, title or category changed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::schema::{ChatEvent, EventBody, StreamDetails, StreamOfflineDetails};
use tokio_util::sync::CancellationToken;

use super::Shared;
use super::api::{Api, Livestream};
use super::normalise::PLATFORM;
use crate::channels::JoinState;
use crate::platforms::seam::EventSink;

/// Broadcasters per call.
const PER_CALL: usize = 50;

/// What was last published of a live channel.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    viewers: Option<u64>,
    title: Option<String>,
    category: Option<String>,
}

/// Polls until `cancel`; failures are logged and the next interval tries
/// again.
///
/// # Errors
/// Never: a failed poll changes no channel's state.
pub async fn run(
    api: Arc<Api>,
    shared: Arc<Shared>,
    sink: EventSink,
    interval: Duration,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let mut seen: HashMap<String, Seen> = HashMap::new();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            _ = tick.tick() => {}
        }
        let wanted: Vec<(String, u64)> = {
            let ids = shared.ids.lock().expect("kick ids lock");
            ids.iter()
                .filter(|(slug, _)| {
                    !matches!(shared.channels.state(slug), None | Some(JoinState::Parting))
                })
                .map(|(slug, id)| (slug.clone(), *id))
                .collect()
        };
        seen.retain(|slug, _| wanted.iter().any(|(s, _)| s == slug));
        let mut live: HashMap<u64, Livestream> = HashMap::new();
        let mut failed = false;
        for chunk in wanted.chunks(PER_CALL) {
            let ids: Vec<u64> = chunk.iter().map(|(_, id)| *id).collect();
            match api.livestreams(&ids).await {
                Ok(streams) => {
                    live.extend(streams.into_iter().map(|s| (s.broadcaster_user_id, s)));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read Kick's live streams; trying again next interval");
                    failed = true;
                    break;
                }
            }
        }
        if failed {
            continue;
        }
        let mut events = Vec::new();
        for (slug, id) in &wanted {
            events.extend(look(&shared, &mut seen, slug, *id, live.get(id)));
        }
        if !events.is_empty() {
            sink.emit(&events);
        }
    }
}

/// What one look at `slug` publishes.
fn look(
    shared: &Shared,
    seen: &mut HashMap<String, Seen>,
    slug: &str,
    id: u64,
    stream: Option<&Livestream>,
) -> Vec<ChatEvent> {
    let now = Utc::now();
    let event = |body| {
        let mut e = ChatEvent::new(
            uuid::Uuid::new_v4().to_string(),
            PLATFORM,
            slug,
            now,
            now,
            body,
        );
        e.channel_id = Some(id.to_string());
        e
    };
    let Some(stream) = stream else {
        seen.remove(slug);
        let offline = event(EventBody::StreamOffline(StreamOfflineDetails::default()));
        return if shared.is_news(&offline) {
            vec![offline]
        } else {
            Vec::new()
        };
    };
    let details = StreamDetails {
        stream_id: None,
        title: stream.stream_title.clone(),
        category: stream.category.as_ref().and_then(|c| c.name.clone()),
        viewer_count: stream.viewer_count,
        started_at: stream
            .started_at
            .as_deref()
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc)),
    };
    let now_seen = Seen {
        viewers: details.viewer_count,
        title: details.title.clone(),
        category: details.category.clone(),
    };
    let online = event(EventBody::StreamOnline(details.clone()));
    if shared.is_news(&online) {
        seen.insert(slug.to_owned(), now_seen);
        return vec![online];
    }
    match seen.insert(slug.to_owned(), now_seen.clone()) {
        Some(before) if before == now_seen => Vec::new(),
        _ => vec![event(EventBody::StreamUpdate(details))],
    }
}
