//! What the YouTube source's followers share: the tuning, the API and
//! stream clients, the quota, reachability, the channel manager, the sink,
//! and which entries resolved to which channel.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::amqp::Backoff;
use tokio_util::sync::CancellationToken;

use super::api::Api;
use super::limits::Limits;
use super::live_chats::LiveChats;
use super::quota::Quota;
use super::settings::LiveCheck;
use super::stream::StreamClient;
use crate::channels::ChannelManager;
use crate::platforms::seam::{EventSink, Reachability};

/// What the followers share.
#[derive(Debug, Clone)]
pub(crate) struct Tuning {
    pub(crate) live_check: LiveCheck,
    pub(crate) offline_poll_interval: Option<Duration>,
    pub(crate) include_raw: bool,
    pub(crate) backoff: Backoff,
    pub(crate) limits: Limits,
}

/// The source's state, shared by its followers.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) tuning: Tuning,
    pub(crate) api: Api,
    pub(crate) stream: Option<StreamClient>,
    pub(crate) quota: Arc<Quota>,
    /// The chat each channel reads now (the sender writes to it).
    pub(crate) live_chats: Arc<LiveChats>,
    pub(crate) reach: Arc<Reachability>,
    pub(crate) manager: Arc<ChannelManager>,
    pub(crate) sink: EventSink,
    /// Entries resolved to their channel (`@handle` -> `UC…`), so the admin
    /// API finds a channel by what was asked for.
    pub(super) resolved: Mutex<HashMap<String, String>>,
    /// The running followers by their current name.
    pub(super) tasks: Mutex<HashMap<String, (u64, CancellationToken)>>,
    pub(super) next_task: AtomicU64,
    pub(crate) followers: AtomicUsize,
    /// Chats read by polling now (the quota paces their polls).
    pub(crate) polling: AtomicUsize,
    pub(super) stream_off_until: Mutex<Option<tokio::time::Instant>>,
}

impl Shared {
    pub(crate) fn remember_resolved(&self, asked: &str, channel: &str) {
        self.resolved
            .lock()
            .expect("resolved lock")
            .insert(asked.to_owned(), channel.to_owned());
    }

    pub(crate) fn remove_task(&self, key: &str, task: u64) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if tasks.get(key).is_some_and(|(id, _)| *id == task) {
            tasks.remove(key);
        }
    }

    pub(crate) fn rename_task(&self, from: &str, to: &str, task: u64) {
        let mut tasks = self.tasks.lock().expect("tasks lock");
        if let Some(entry) = tasks.remove(from) {
            if entry.0 == task {
                tasks.insert(to.to_owned(), entry);
            } else {
                tasks.insert(from.to_owned(), entry);
            }
        }
    }

    /// Channel entries and video entries being followed.
    pub(crate) fn following(&self) -> (usize, usize) {
        let snapshot = self.manager.snapshot();
        let videos = snapshot
            .iter()
            .filter(|c| c.detail.as_ref().is_some_and(|d| d["follows"] == "video"))
            .count();
        (snapshot.len().saturating_sub(videos), videos)
    }

    pub(crate) fn stream_unavailable(&self) -> bool {
        self.stream_off_until
            .lock()
            .expect("stream lock")
            .is_some_and(|t| tokio::time::Instant::now() < t)
    }

    pub(crate) fn stream_unavailable_for(&self, wait: Duration) {
        *self.stream_off_until.lock().expect("stream lock") =
            Some(tokio::time::Instant::now() + wait);
    }
}
