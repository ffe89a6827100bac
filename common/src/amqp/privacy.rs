//! The `chat.privacy` stream: where opt-outs and purges are announced
//! ([`crate::privacy`]), and how a service keeps its [`PrivacyList`].
//!
//! The queue is of type `stream` (`x-queue-type` is a declaration argument
//! that no policy can set; like single-active-consumer it is the named
//! exception to docs/rabbitmq.md's "arguments by policy"). A stream keeps
//! every notice after it was read, so each service replays it from its
//! first offset when it starts and then follows it. **Give it no
//! `max-age` or `max-length-bytes` policy**: an opt-out that falls off the
//! stream is forgotten by services that start afterwards (the consumer's
//! store still keeps it).
//!
//! Reading "everything there is" needs an end, and AMQP 0-9-1 tells a
//! stream reader none (`queue.declare-ok` counts 0 messages on a stream).
//! So a follower publishes a `sync` notice of its own first and knows it
//! has the whole list once that comes back ([`PrivacyFeed::loaded`]).
//! After a lost connection it resumes from the offset after the last one
//! it read, without a new `sync`.

use std::sync::{Arc, RwLock};

use lapin::Connection;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::stream::{self, Follow, FollowOptions};
use super::{AmqpError, ConnectOptions};
use crate::privacy::{PrivacyAction, PrivacyList, PrivacyNotice};

/// Declares the stream `queue` (durable, type `stream`).
///
/// # Errors
/// [`AmqpError::Conflict`] when a queue of that name exists with another
/// type; [`AmqpError::Protocol`] otherwise.
pub async fn declare(connection: &Connection, queue: &str) -> Result<(), AmqpError> {
    stream::declare(connection, queue).await
}

/// Publishes `notice` to the stream `queue` (declared first) and waits for
/// the broker's confirm. Its AMQP `type` is its action, its `message_id`
/// its id.
///
/// # Errors
/// [`AmqpError`] when the broker refuses or does not confirm it in time.
pub async fn publish(
    connection: &Connection,
    queue: &str,
    notice: &PrivacyNotice,
) -> Result<(), AmqpError> {
    let body = serde_json::to_vec(notice).expect("a notice always serialises");
    stream::publish(connection, queue, notice.action.as_str(), &notice.id, &body).await
}

/// A service's view of the stream: its [`PrivacyList`], kept current by
/// [`follow`], and whether the whole stream has been read once.
#[derive(Debug, Clone)]
pub struct PrivacyFeed {
    list: Arc<RwLock<PrivacyList>>,
    follow: Follow,
}

impl PrivacyFeed {
    /// A feed that never changes (no stream configured): an empty list,
    /// loaded.
    pub fn empty() -> Self {
        Self {
            list: Arc::default(),
            follow: Follow::done(),
        }
    }

    /// Whether `event` must be dropped ([`PrivacyList::refuses`]).
    pub fn refuses(&self, event: &crate::ChatEvent) -> bool {
        self.list.read().expect("privacy list lock").refuses(event)
    }

    /// A copy of the list as it is now.
    pub fn snapshot(&self) -> PrivacyList {
        self.list.read().expect("privacy list lock").clone()
    }

    /// Whether every notice published before this service started has
    /// been applied.
    pub fn is_loaded(&self) -> bool {
        self.follow.is_loaded()
    }

    /// Waits until [`is_loaded`](Self::is_loaded).
    pub async fn loaded(&self) {
        self.follow.loaded().await;
    }
}

/// Follows the stream `queue` on connections made with `options` until
/// `cancel`: replays it from its start, then applies each new notice to
/// the returned feed's list, and sends each (but `sync`s) to `notices` if
/// given. `service` names the follower in its `sync` notice.
///
/// Runs as a task; it ends when `cancel` fires or a failure that retrying
/// cannot fix (a queue of that name that is not a stream) stops it.
pub fn follow(
    options: ConnectOptions,
    queue: String,
    service: String,
    notices: Option<mpsc::UnboundedSender<PrivacyNotice>>,
    cancel: CancellationToken,
) -> (PrivacyFeed, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let list = Arc::new(RwLock::new(PrivacyList::default()));
    let applied = list.clone();
    // Readers that decode every message see a `sync` notice, which they
    // skip.
    let sync = PrivacyNotice::new(PrivacyAction::Sync, None, &service);
    let (follow, task) = stream::follow(
        FollowOptions {
            connect: options,
            queue,
            sync_body: serde_json::to_vec(&sync).expect("a notice always serialises"),
            what: "privacy",
        },
        move |notice: PrivacyNotice| {
            if notice.action == PrivacyAction::Sync {
                return;
            }
            applied.write().expect("privacy list lock").apply(&notice);
            if let Some(tx) = &notices {
                let _ = tx.send(notice);
            }
        },
        cancel,
    );
    (PrivacyFeed { list, follow }, task)
}
