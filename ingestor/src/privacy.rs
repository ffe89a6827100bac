//! Honouring the `chat.privacy` stream (`PRIVACY_STREAM`, docs/ingestor.md
//! "Opt-outs"): no event of an opted-out user or channel, and none a purge
//! covers, is published.
//!
//! Two checks, both against the list [`common::amqp::privacy::follow`]
//! keeps:
//! * [`crate::platforms::seam::EventSink::emit`] (where every source's
//!   events enter the outbox) drops refused events before they are
//!   spooled. While the list is empty that is one lock and a test per
//!   event.
//! * The publisher drops refused events that were spooled before the list
//!   last grew ([`Privacy::screen`]): those spooled before a notice arrived,
//!   and everything recovered from the spool or read before the list was
//!   loaded. Only those are decoded again; the publisher publishes nothing
//!   until the list is loaded ([`Privacy::ready`]).
//!
//! A dropped event is counted (`chatbus_ingestor_privacy_dropped_total`
//! by `platform`) and never logged: its text is what the user asked to be
//! forgotten.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use common::amqp::privacy::PrivacyFeed;
use common::privacy::PrivacyNotice;
use common::schema::ChatEvent;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::outbox::{Entry, Outbox};

/// The counter of events dropped for an opt-out or a purge.
pub const DROPPED_METRIC: &str = "chatbus_ingestor_privacy_dropped_total";

/// The ingestor's view of the privacy list, shared by the sink and the
/// publisher.
pub struct Privacy {
    feed: PrivacyFeed,
    /// The stream followed; `None`: `PRIVACY_STREAM` is empty.
    stream: Option<String>,
    /// Held (shared) by the sink from its check until its append, and
    /// (alone) while [`Self::recheck_below`] is moved: an event checked
    /// against an older list is always below the mark.
    gate: RwLock<()>,
    /// Outbox entries below this seq were spooled before the list last
    /// grew; the publisher checks them again.
    recheck_below: AtomicU64,
    /// Whether the list refuses anything at all.
    may_refuse: AtomicBool,
    /// Notices (opt-outs, opt-ins, purges) read from the stream.
    notices: AtomicU64,
    /// The list is loaded and the spool marked for its check.
    ready: watch::Sender<bool>,
}

impl std::fmt::Debug for Privacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Privacy")
            .field("stream", &self.stream)
            .field("loaded", &self.is_loaded())
            .field("recheck_below", &self.recheck_below.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl Privacy {
    /// Honouring the list `feed` keeps, read from `stream`; not ready until
    /// [`run`] saw it loaded.
    pub fn new(feed: PrivacyFeed, stream: impl Into<String>) -> Self {
        Self {
            feed,
            stream: Some(stream.into()),
            gate: RwLock::new(()),
            recheck_below: AtomicU64::new(0),
            may_refuse: AtomicBool::new(false),
            notices: AtomicU64::new(0),
            ready: watch::Sender::new(false),
        }
    }

    /// No stream: nothing is ever refused; ready at once.
    pub fn off() -> Self {
        Self {
            feed: PrivacyFeed::empty(),
            stream: None,
            gate: RwLock::new(()),
            recheck_below: AtomicU64::new(0),
            may_refuse: AtomicBool::new(false),
            notices: AtomicU64::new(0),
            ready: watch::Sender::new(true),
        }
    }

    /// The stream followed (`None`: off).
    pub fn stream(&self) -> Option<&str> {
        self.stream.as_deref()
    }

    /// Whether the whole stream has been read once (always, when off).
    pub fn is_loaded(&self) -> bool {
        *self.ready.borrow()
    }

    /// How many notices (opt-outs, opt-ins, purges; not `sync`s) the list
    /// is built from so far.
    pub fn notices(&self) -> u64 {
        self.notices.load(Ordering::SeqCst)
    }

    /// Waits until [`Self::is_loaded`].
    pub async fn ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }

    /// Held by the sink from checking a batch until it is in the outbox.
    pub(crate) fn gate(&self) -> RwLockReadGuard<'_, ()> {
        self.gate
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether `event` must be dropped; counts it if so.
    pub fn refuses(&self, event: &ChatEvent) -> bool {
        if self.feed.refuses(event) {
            count_drop(&event.platform);
            true
        } else {
            false
        }
    }

    /// The publisher's check of entries taken from the outbox: drops (and
    /// releases from the spool) those spooled before the list last grew
    /// that it refuses now. The rest, in order, are to be published.
    pub fn screen(&self, outbox: &Outbox, entries: Vec<Entry>) -> Vec<Entry> {
        let below = self.recheck_below.load(Ordering::SeqCst);
        if !entries.iter().any(|e| e.seq < below) || !self.may_refuse.load(Ordering::SeqCst) {
            return entries;
        }
        let mut dropped = Vec::new();
        let kept = entries
            .into_iter()
            .filter(|e| {
                if e.seq >= below {
                    return true;
                }
                // One that does not decode was published before the list
                // changed; it still is.
                match ChatEvent::from_json(&e.message.body) {
                    Ok(event) if self.refuses(&event) => {
                        dropped.push(e.seq);
                        false
                    }
                    _ => true,
                }
            })
            .collect();
        if !dropped.is_empty() {
            outbox.confirm_all(dropped);
        }
        kept
    }

    /// Takes the notices waiting in `notices` (the list already holds
    /// them), marks the spool for a check, then counts them with
    /// `already` taken before.
    fn caught_up(
        &self,
        outbox: &Outbox,
        notices: &mut mpsc::UnboundedReceiver<PrivacyNotice>,
        already: u64,
    ) {
        let mut n = already;
        while notices.try_recv().is_ok() {
            n += 1;
        }
        self.list_changed(outbox);
        self.notices.fetch_add(n, Ordering::SeqCst);
    }

    /// After the list changed: everything spooled so far is checked again
    /// before it is published.
    fn list_changed(&self, outbox: &Outbox) {
        self.may_refuse
            .store(!self.feed.snapshot().is_empty(), Ordering::SeqCst);
        let _alone = self
            .gate
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        self.recheck_below
            .fetch_max(outbox.next_seq(), Ordering::SeqCst);
    }
}

fn count_drop(platform: &str) {
    metrics::counter!(DROPPED_METRIC, "platform" => platform.to_owned()).increment(1);
}

/// Keeps `privacy` in step with its follower until `cancel`: once the list
/// is loaded it marks the spool for a check and lets the publisher go;
/// after each batch of `notices` it marks it again.
///
/// # Errors
/// None so far; a `Result` for `supervise`.
pub async fn run(
    privacy: Arc<Privacy>,
    outbox: Arc<Outbox>,
    mut notices: mpsc::UnboundedReceiver<PrivacyNotice>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    tokio::select! {
        () = cancel.cancelled() => return Ok(()),
        () = privacy.feed.loaded() => {}
    }
    // The notices replayed so far are in the loaded list.
    privacy.caught_up(&outbox, &mut notices, 0);
    privacy.ready.send_replace(true);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return Ok(()),
            notice = notices.recv() => {
                if notice.is_none() {
                    // The follower stopped (its own error is reported).
                    return Ok(());
                }
                privacy.caught_up(&outbox, &mut notices, 1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::amqp::OutgoingMessage;
    use common::schema::{Author, EventBody, MessageDetails};

    fn event(n: u64, user: &str) -> ChatEvent {
        let now = chrono::Utc::now();
        let mut e = ChatEvent::new(
            format!("e{n}"),
            "twitch",
            "chan",
            now,
            now,
            EventBody::Message(MessageDetails::default()),
        );
        e.author = Some(Author {
            id: user.into(),
            login: format!("login{user}"),
            display_name: user.into(),
            color: None,
            badges: vec![],
            roles: vec![],
            avatar_url: None,
        });
        e.text = Some("hi".into());
        e
    }

    #[test]
    fn an_empty_list_lets_everything_through_without_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 4096, 100).unwrap();
        let privacy = Privacy::off();
        assert!(privacy.is_loaded());
        assert!(!privacy.refuses(&event(1, "42")));
        // Not JSON at all: not even looked at.
        let mut m = OutgoingMessage::from_event(&event(1, "42")).unwrap();
        m.body = b"not json".to_vec();
        outbox.append(vec![m]);
        privacy.list_changed(&outbox);
        let entries = outbox.try_next_batch(10).unwrap();
        assert_eq!(privacy.screen(&outbox, entries).len(), 1);
    }
}
