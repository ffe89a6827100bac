//! The part of writing a batch that is the same for every backend: which
//! events of a batch are candidates, what their committed form is, the
//! per-channel counters they add, the moderation they carry, and how a
//! batch ends ([`finish`]): its moderation applied inside the transaction
//! (through the backend's [`BatchTx`]), the commit, the channel cache, and
//! the marks applied to the outcome after the commit.

use common::schema::EventKind;
use std::collections::{HashMap, HashSet};

use serde_json::value::RawValue;

use super::channel_cache::{BatchChannels, ChannelCache};
use super::moderation::{ModerationSpec, moderation_of};
use super::{Cursor, Moderation, NewEvent, StoreError, StoredEvent, WriteOutcome};

/// The first occurrence of each `(platform, id)` in the batch, in order:
/// the events that may be new (the store's own ids are checked next).
pub(crate) fn first_occurrences<'a>(events: &'a [NewEvent<'a>]) -> Vec<&'a NewEvent<'a>> {
    let mut seen = HashSet::with_capacity(events.len());
    events
        .iter()
        .filter(|e| seen.insert((e.event.platform.as_str(), e.event.id.as_str())))
        .collect()
}

/// A moderation event of the batch, to apply inside its transaction.
pub(crate) struct PendingModeration<'a> {
    /// The moderation event's cursor.
    pub by: Cursor,
    /// Its channel's id.
    pub channel: i64,
    /// Its `sent_at`, ms.
    pub at: i64,
    pub platform: &'a str,
    pub spec: ModerationSpec,
}

impl PendingModeration<'_> {
    /// What it marks its targets with.
    pub(crate) fn mark(&self) -> Moderation {
        Moderation {
            action: self.spec.action,
            by: self.by,
        }
    }
}

/// One channel's share of a batch: events, chat messages, the newest
/// cursor and its `sent_at` (ms), and the cursor of its newest stream
/// status event, if the batch has one.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct ChannelCounts {
    pub events: i64,
    pub messages: i64,
    pub last_cursor: i64,
    pub last_sent_at: i64,
    pub status_cursor: Option<i64>,
}

/// What the batch's new events are once their cursors `seqs` are known.
#[derive(Default)]
pub(crate) struct Committed<'a> {
    /// The outcome's events, in cursor order, not yet marked.
    pub stored: Vec<StoredEvent>,
    pub moderations: Vec<PendingModeration<'a>>,
    /// The oldest `sent_at` (ms) of an event with text: how far back a
    /// moderation stored earlier may reach into this batch.
    pub min_text_sent: Option<i64>,
    pub per_channel: HashMap<i64, ChannelCounts>,
}

/// `fresh[i]` got cursor `seqs[i]` in the channel `channel_of(fresh[i])`.
pub(crate) fn committed<'a>(
    fresh: &[&'a NewEvent<'a>],
    seqs: &[i64],
    channel_of: impl Fn(&NewEvent<'_>) -> i64,
) -> Result<Committed<'a>, StoreError> {
    let mut out = Committed {
        stored: Vec::with_capacity(fresh.len()),
        moderations: Vec::new(),
        min_text_sent: None,
        per_channel: HashMap::new(),
    };
    for (e, &seq) in fresh.iter().zip(seqs) {
        let ev = e.event;
        let channel = channel_of(e);
        let sent_ms = ev.sent_at.timestamp_millis();
        let cursor = Cursor::new(seq).ok_or_else(|| StoreError::Corrupt {
            cursor: seq,
            reason: "non-positive seq".into(),
        })?;
        if ev.text.is_some() {
            out.min_text_sent = Some(out.min_text_sent.map_or(sent_ms, |m| m.min(sent_ms)));
        }
        if let Some(spec) = moderation_of(ev) {
            out.moderations.push(PendingModeration {
                by: cursor,
                channel,
                at: sent_ms,
                platform: &ev.platform,
                spec,
            });
        }
        let counts = out.per_channel.entry(channel).or_default();
        counts.events += 1;
        counts.messages += i64::from(ev.kind().is_chat());
        counts.last_cursor = seq;
        if matches!(
            ev.kind(),
            EventKind::StreamOnline | EventKind::StreamUpdate | EventKind::StreamOffline
        ) {
            counts.status_cursor = Some(seq);
        }
        counts.last_sent_at = sent_ms;
        out.stored.push(StoredEvent {
            cursor,
            moderation: None,
            event: RawValue::from_string(e.json.to_owned()).map_err(|err| StoreError::Corrupt {
                cursor: seq,
                reason: format!("body: {err}"),
            })?,
            platform: ev.platform.clone(),
            channel: ev.channel.clone(),
            id: ev.id.clone(),
            kind: ev.kind(),
            routing_key: common::routing::routing_key(&ev.platform, &ev.channel),
        });
    }
    Ok(out)
}

impl WriteOutcome {
    /// Records the marks a committed batch made (`marked`: cursor to
    /// mark) on its own events and counts them.
    pub(crate) fn apply_marks(&mut self, marked: &HashMap<i64, Moderation>) {
        for s in &mut self.stored {
            if let Some(m) = marked.get(&s.cursor.get()) {
                s.moderation = Some(*m);
            }
        }
        self.moderated = marked.len() as u64;
    }
}

/// The cursors of a batch's new rows, `first..=last`, all stored at
/// `stored_at` (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct NewRows {
    pub first: i64,
    pub last: i64,
    pub stored_at: i64,
}

/// The backend's half of the end of a batch: its SQL for moderation, run
/// inside the batch's transaction, and the commit.
pub(crate) trait BatchTx: Send {
    /// Records the moderation `m` and marks what it moderates (its target,
    /// or the user's or channel's text messages of the `lookback_ms` before
    /// it). Returns the marked cursors.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn apply_moderation(
        &mut self,
        m: &PendingModeration<'_>,
        lookback_ms: i64,
    ) -> Result<Vec<i64>, StoreError>;

    /// Marks the new `rows` that a moderation stored earlier concerns (a
    /// delete, ban or clear that overtook its message); `min_sent_ms` is the
    /// oldest `sent_at` of a new row with text. Returns the marked cursors
    /// with their marks.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn apply_late_moderation(
        &mut self,
        rows: NewRows,
        min_sent_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(i64, Moderation)>, StoreError>;

    /// Commits the transaction.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails; nothing of the batch is
    /// stored then.
    async fn commit(self) -> Result<(), StoreError>;
}

/// Ends a batch whose rows (`committed`, stored at `stored_at`) are
/// written: applies the moderation it carries and the moderation stored
/// earlier that concerns it, commits `tx`, remembers the `channels` it
/// created in `cache`, and returns `outcome` with the stored events, marked.
///
/// # Errors
/// [`StoreError`] when the database fails; nothing of the batch is stored
/// then.
pub(crate) async fn finish(
    mut tx: impl BatchTx,
    mut outcome: WriteOutcome,
    committed: Committed<'_>,
    stored_at: i64,
    lookback_ms: i64,
    cache: &ChannelCache,
    channels: BatchChannels<'_>,
) -> Result<WriteOutcome, StoreError> {
    let mut marked: HashMap<i64, Moderation> = HashMap::new();
    for m in &committed.moderations {
        let targets = tx.apply_moderation(m, lookback_ms).await?;
        marked.extend(targets.into_iter().map(|t| (t, m.mark())));
    }
    if let (Some(first), Some(last), Some(min_sent)) = (
        committed.stored.first(),
        committed.stored.last(),
        committed.min_text_sent,
    ) {
        let rows = NewRows {
            first: first.cursor.get(),
            last: last.cursor.get(),
            stored_at,
        };
        let late = tx
            .apply_late_moderation(rows, min_sent, lookback_ms)
            .await?;
        marked.extend(late);
    }
    tx.commit().await?;

    cache.remember(channels);
    outcome.stored = committed.stored;
    outcome.apply_marks(&marked);
    Ok(outcome)
}
