//! YouTube stream status: what a follower (`follower`) learns about its
//! channel's broadcast, published as `stream_online`, `stream_offline` and
//! `stream_update` on the channel's routing key.
//!
//! The follower already finds live broadcasts; [`LiveStatus`] turns what it
//! finds into events, once per transition (and once for the first thing
//! found: live, or not live). While a chat is read, the broadcast's
//! `videos.list?part=snippet,liveStreamingDetails` (1 unit) is asked again
//! at the follower's offline interval for `concurrentViewers`, and a
//! `stream_update` goes out when the viewers or the title changed. That
//! interval is what the quota affords one check of every followed channel
//! (`quota::offline_interval`), and a live channel makes no live check
//! while its chat is read, so the 1-unit look stays within that share.

use chrono::{DateTime, Utc};
use common::schema::{
    ChatEvent, EventBody, PLATFORM_YOUTUBE, StreamDetails, StreamOfflineDetails,
};

use super::api::Video;

/// A live broadcast as `videos.list` describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Broadcast {
    pub(crate) video_id: String,
    pub(crate) title: Option<String>,
    pub(crate) viewers: Option<u64>,
    pub(crate) started_at: Option<DateTime<Utc>>,
}

impl Broadcast {
    /// The broadcast `v` is.
    pub(crate) fn of(v: &Video) -> Self {
        let details = v.live_streaming_details.as_ref();
        Self {
            video_id: v.id.clone(),
            title: v
                .snippet
                .as_ref()
                .and_then(|s| s.title.clone())
                .filter(|t| !t.is_empty()),
            viewers: details
                .and_then(|d| d.concurrent_viewers.as_deref())
                .and_then(|n| n.trim().parse().ok()),
            started_at: details
                .and_then(|d| d.actual_start_time.as_deref())
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc)),
        }
    }

    fn details(&self) -> StreamDetails {
        StreamDetails {
            stream_id: Some(self.video_id.clone()),
            title: self.title.clone(),
            category: None,
            viewer_count: self.viewers,
            started_at: self.started_at,
        }
    }
}

/// What was last published for a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Known {
    Offline,
    Live(Broadcast),
}

/// A channel's published live state; [`LiveStatus::observe`] gives the
/// events of what changed.
#[derive(Debug, Default)]
pub(crate) struct LiveStatus {
    known: Option<Known>,
}

impl LiveStatus {
    /// `live` is what was just seen (`None`: not live). The events for
    /// `channel`: its state the first time, then only transitions, and a
    /// `stream_update` when a live broadcast's viewers or title changed.
    pub(crate) fn observe(
        &mut self,
        channel: &str,
        live: Option<&Broadcast>,
        now: DateTime<Utc>,
    ) -> Vec<ChatEvent> {
        let event = |id: String, sent_at: DateTime<Utc>, body: EventBody| {
            let mut e = ChatEvent::new(id, PLATFORM_YOUTUBE, channel, sent_at, now, body);
            e.channel_id = Some(channel.to_owned());
            e
        };
        let online = |b: &Broadcast| {
            event(
                format!("stream_online:{}", b.video_id),
                b.started_at.unwrap_or(now),
                EventBody::StreamOnline(b.details()),
            )
        };
        let offline = |ended: Option<&Broadcast>| {
            event(
                ended.map_or_else(
                    || format!("stream_offline:{channel}:{}", now.timestamp_millis()),
                    |b| format!("stream_offline:{}", b.video_id),
                ),
                now,
                EventBody::StreamOffline(StreamOfflineDetails {
                    stream_id: ended.map(|b| b.video_id.clone()),
                    started_at: ended.and_then(|b| b.started_at),
                }),
            )
        };
        let (events, known) = match (self.known.take(), live) {
            (None, None) => (vec![offline(None)], Known::Offline),
            (Some(Known::Offline), None) => (Vec::new(), Known::Offline),
            (None | Some(Known::Offline), Some(b)) => (vec![online(b)], Known::Live(b.clone())),
            (Some(Known::Live(was)), None) => (vec![offline(Some(&was))], Known::Offline),
            (Some(Known::Live(was)), Some(b)) if was.video_id != b.video_id => {
                (vec![offline(Some(&was)), online(b)], Known::Live(b.clone()))
            }
            (Some(Known::Live(was)), Some(b)) => {
                // A look without viewers (none shown) keeps the last count.
                let now_seen = Broadcast {
                    viewers: b.viewers.or(was.viewers),
                    title: b.title.clone().or(was.title.clone()),
                    started_at: b.started_at.or(was.started_at),
                    ..b.clone()
                };
                let events = if now_seen == was {
                    Vec::new()
                } else {
                    vec![event(
                        format!("stream_update:{}:{}", b.video_id, now.timestamp_millis()),
                        now,
                        EventBody::StreamUpdate(now_seen.details()),
                    )]
                };
                (events, Known::Live(now_seen))
            }
        };
        self.known = Some(known);
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b(video: &str, viewers: Option<u64>) -> Broadcast {
        Broadcast {
            video_id: video.into(),
            title: Some("t".into()),
            viewers,
            started_at: None,
        }
    }

    fn kinds(events: &[ChatEvent]) -> Vec<&str> {
        events.iter().map(ChatEvent::kind_name).collect()
    }

    #[test]
    fn a_broadcast_reads_title_viewers_and_start_from_videos_list() {
        let v: Video = serde_json::from_value(serde_json::json!({
            "id": "v1",
            "snippet": {"channelId": "UC1", "title": "Live now", "liveBroadcastContent": "live"},
            "liveStreamingDetails": {
                "actualStartTime": "2026-03-01T18:00:00Z",
                "concurrentViewers": "5120",
                "activeLiveChatId": "chat"
            }
        }))
        .unwrap();
        let b = Broadcast::of(&v);
        assert_eq!(b.video_id, "v1");
        assert_eq!(b.title.as_deref(), Some("Live now"));
        assert_eq!(b.viewers, Some(5120));
        assert_eq!(
            b.started_at,
            DateTime::parse_from_rfc3339("2026-03-01T18:00:00Z")
                .ok()
                .map(|t| t.with_timezone(&Utc))
        );
        let hidden: Video = serde_json::from_value(serde_json::json!({"id": "v2"})).unwrap();
        assert_eq!(Broadcast::of(&hidden).viewers, None);
    }

    #[test]
    fn transitions_once_and_updates_on_viewer_changes() {
        let now = Utc::now();
        let mut s = LiveStatus::default();
        assert_eq!(kinds(&s.observe("UC1", None, now)), ["stream_offline"]);
        assert!(s.observe("UC1", None, now).is_empty());
        let on = s.observe("UC1", Some(&b("v1", Some(5))), now);
        assert_eq!(kinds(&on), ["stream_online"]);
        assert_eq!(on[0].id, "stream_online:v1");
        assert!(s.observe("UC1", Some(&b("v1", Some(5))), now).is_empty());
        assert!(s.observe("UC1", Some(&b("v1", None)), now).is_empty(), "no count: no change");
        let up = s.observe("UC1", Some(&b("v1", Some(9))), now);
        assert_eq!(kinds(&up), ["stream_update"]);
        let EventBody::StreamUpdate(d) = &up[0].body else { panic!() };
        assert_eq!(d.viewer_count, Some(9));
        assert_eq!(kinds(&s.observe("UC1", None, now)), ["stream_offline"]);
        assert!(s.observe("UC1", None, now).is_empty());
    }
}
