//! The outbox between reading chat and publishing it: every event is
//! written to the disk [`Spool`] first (so a crash or kill loses nothing
//! that was read), then handed to the publisher in order from a bounded
//! in-memory cache of the spool's head. When the broker is down or slow the
//! cache fills, the spool keeps growing, and the publisher later drains it
//! from disk in order. Segments are released once the broker has confirmed
//! every record in them.
//!
//! The only place events are ever dropped is here, when the spool reaches
//! its size cap (or the disk fails while memory is full): each drop is
//! counted (`chatbus_ingestor_events_dropped_total`) and logged.

use std::collections::{BTreeSet, VecDeque};
use std::path::Path;
use std::sync::{Arc, Mutex};

use common::amqp::OutgoingMessage;
use tokio::sync::Notify;

use crate::spool::{ReadCursor, Recovered, Spool, SpoolError};

/// One message waiting to be published, with its outbox sequence number.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Position in the outbox (monotonic).
    pub seq: u64,
    /// The encoded event.
    pub message: Arc<OutgoingMessage>,
}

/// What an append did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Accepted (on disk, or in memory if the disk failed).
    pub accepted: usize,
    /// Dropped because the spool is full.
    pub dropped: usize,
    /// Refused by the privacy list (an opt-out or a purge): dropped on
    /// purpose, never to be retried (`EventSink::emit`).
    pub refused: usize,
}

impl Appended {
    /// Taken care of: accepted or refused on purpose.
    pub fn taken(&self) -> usize {
        self.accepted + self.refused
    }
}

/// Outbox figures for metrics and `/readyz`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct OutboxStats {
    /// Accepted and not yet confirmed by the broker.
    pub unconfirmed: u64,
    /// Entries in the memory cache.
    pub memory: usize,
    /// Bytes in the disk spool.
    pub spool_bytes: u64,
    /// Events dropped since start.
    pub dropped: u64,
}

struct Inner {
    spool: Spool,
    next_seq: u64,
    /// Next seq to hand to the publisher.
    read_seq: u64,
    /// Entries `read_seq .. read_seq + cache.len()`.
    cache: VecDeque<Entry>,
    /// The cache holds everything up to `next_seq`.
    cache_complete: bool,
    disk_cursor: Option<ReadCursor>,
    memory_limit: usize,
    /// Every seq below is confirmed.
    watermark: u64,
    confirmed_ahead: BTreeSet<u64>,
    persisted_watermark: u64,
    dropped: u64,
}

/// The outbox. Cheap to share (`Arc`).
pub struct Outbox {
    inner: Mutex<Inner>,
    ready: Notify,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox")
            .field("stats", &self.stats())
            .finish()
    }
}

impl Outbox {
    /// Opens the outbox on the spool in `dir`; whatever the spool holds
    /// beyond its confirmed watermark is published first.
    ///
    /// # Errors
    /// [`SpoolError`] if the spool directory cannot be used.
    pub fn open(
        dir: &Path,
        max_bytes: u64,
        segment_bytes: u64,
        memory_limit: usize,
    ) -> Result<(Self, Recovered), SpoolError> {
        let (spool, recovered) = Spool::open(dir, max_bytes, segment_bytes)?;
        let next_seq = recovered
            .last_seq
            .map_or(0, |l| l + 1)
            .max(recovered.watermark);
        let read_seq = recovered
            .first_seq
            .unwrap_or(next_seq)
            .max(recovered.watermark)
            .min(next_seq);
        if next_seq > read_seq {
            tracing::info!(
                records = next_seq - read_seq,
                "spool holds unpublished events from a previous run; publishing them first"
            );
        }
        let inner = Inner {
            spool,
            next_seq,
            read_seq,
            cache: VecDeque::new(),
            cache_complete: read_seq == next_seq,
            disk_cursor: None,
            memory_limit: memory_limit.max(1),
            watermark: read_seq,
            confirmed_ahead: BTreeSet::new(),
            persisted_watermark: recovered.watermark,
            dropped: 0,
        };
        let outbox = Self {
            inner: Mutex::new(inner),
            ready: Notify::new(),
        };
        metrics::gauge!("chatbus_ingestor_spool_records_recovered").set(recovered.records as f64);
        outbox.record_gauges();
        Ok((outbox, recovered))
    }

    /// Appends encoded events in order. Each is written to the spool before
    /// this returns.
    pub fn append(&self, messages: Vec<OutgoingMessage>) -> Appended {
        if messages.is_empty() {
            return Appended::default();
        }
        let mut result = Appended::default();
        {
            let mut inner = self.inner.lock().expect("outbox lock");
            let inner = &mut *inner;
            let mut batch: Vec<(u64, OutgoingMessage)> = Vec::with_capacity(messages.len());
            let mut planned = 0u64;
            for message in messages {
                let size = Spool::record_size(&message);
                if !inner.spool.has_room(planned + size) {
                    drop_event(
                        &mut inner.dropped,
                        &message,
                        "the spool is full (SPOOL_MAX_BYTES)",
                    );
                    result.dropped += 1;
                    continue;
                }
                planned += size;
                let seq = inner.next_seq + batch.len() as u64;
                batch.push((seq, message));
            }
            if batch.is_empty() {
                return result;
            }
            let refs: Vec<(u64, &OutgoingMessage)> = batch.iter().map(|(s, m)| (*s, m)).collect();
            let written = inner.spool.append(&refs);
            drop(refs);
            if let Err(e) = &written {
                metrics::counter!("chatbus_ingestor_spool_write_errors_total").increment(1);
                tracing::error!(error = %e, events = batch.len(), "cannot write to the spool; keeping events in memory only while there is room");
            }
            for (planned_seq, message) in batch {
                let fits = inner.cache_complete && inner.cache.len() < inner.memory_limit;
                if written.is_err() && !fits {
                    drop_event(
                        &mut inner.dropped,
                        &message,
                        "the spool cannot be written and memory is full",
                    );
                    result.dropped += 1;
                    continue;
                }
                // After a failed write, seqs are reassigned so they stay
                // contiguous around the dropped ones (none of them is on disk).
                let seq = inner.next_seq;
                debug_assert!(written.is_err() || seq == planned_seq);
                inner.next_seq = seq + 1;
                result.accepted += 1;
                if fits {
                    inner.cache.push_back(Entry {
                        seq,
                        message: Arc::new(message),
                    });
                } else if inner.cache_complete {
                    inner.cache_complete = false;
                    inner.disk_cursor = None;
                }
            }
        }
        self.ready.notify_one();
        self.record_gauges();
        result
    }

    /// The next entry to publish, waiting until there is one. Entries come
    /// in seq order, each once; the caller re-sends its own unconfirmed
    /// entries after a reconnect.
    ///
    /// # Errors
    /// [`SpoolError`] if the spool cannot be read.
    pub async fn next(&self) -> Result<Entry, SpoolError> {
        loop {
            let notified = self.ready.notified();
            if let Some(entry) = self.try_next()? {
                return Ok(entry);
            }
            notified.await;
        }
    }

    /// The next entries to publish, at most `max`, waiting until there is
    /// at least one. Entries come in seq order, each once.
    ///
    /// # Errors
    /// [`SpoolError`] if the spool cannot be read.
    pub async fn next_batch(&self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        loop {
            let notified = self.ready.notified();
            let batch = self.try_next_batch(max)?;
            if !batch.is_empty() {
                return Ok(batch);
            }
            notified.await;
        }
    }

    /// Up to `max` entries available now (one lock for the batch).
    ///
    /// # Errors
    /// [`SpoolError`] if the spool cannot be read.
    pub fn try_next_batch(&self, max: usize) -> Result<Vec<Entry>, SpoolError> {
        let mut inner = self.inner.lock().expect("outbox lock");
        let mut batch = Vec::new();
        while batch.len() < max {
            if inner.cache.is_empty() && inner.read_seq < inner.next_seq {
                inner.load_from_disk()?;
            }
            let Some(entry) = inner.cache.pop_front() else {
                break;
            };
            inner.read_seq = entry.seq + 1;
            batch.push(entry);
        }
        Ok(batch)
    }

    /// The next entry if one is available now.
    ///
    /// # Errors
    /// [`SpoolError`] if the spool cannot be read.
    pub fn try_next(&self) -> Result<Option<Entry>, SpoolError> {
        let mut inner = self.inner.lock().expect("outbox lock");
        if inner.cache.is_empty() && inner.read_seq < inner.next_seq {
            inner.load_from_disk()?;
        }
        let entry = inner.cache.pop_front();
        if let Some(e) = &entry {
            inner.read_seq = e.seq + 1;
        }
        Ok(entry)
    }

    /// Records that the broker confirmed `seq`; releases spool segments
    /// that are now fully confirmed.
    pub fn confirm(&self, seq: u64) {
        self.confirm_all(std::iter::once(seq));
    }

    /// Records that the broker confirmed every seq of `seqs` (one lock, and
    /// at most one segment release, for the batch). Confirms usually come
    /// in order, so the watermark just moves; the rest wait in a set.
    pub fn confirm_all(&self, seqs: impl IntoIterator<Item = u64>) {
        let mut inner = self.inner.lock().expect("outbox lock");
        let before = inner.watermark;
        for seq in seqs {
            if seq < inner.watermark {
                continue;
            }
            if seq == inner.watermark {
                inner.watermark += 1;
            } else {
                inner.confirmed_ahead.insert(seq);
            }
            while inner.confirmed_ahead.first() == Some(&inner.watermark) {
                let w = inner.watermark;
                inner.confirmed_ahead.remove(&w);
                inner.watermark += 1;
            }
        }
        if inner.watermark != before {
            let watermark = inner.watermark;
            inner.spool.release_below(watermark);
        }
    }

    /// Flushes the spool to stable storage and persists the confirmed
    /// watermark. Call periodically and at shutdown (from a blocking
    /// thread). The fsync runs without the outbox lock, so appends and
    /// confirms never wait for the disk (a one-worker ingestor stalled for
    /// the length of every fsync before).
    pub fn sync(&self) {
        let unsynced = self
            .inner
            .lock()
            .expect("outbox lock")
            .spool
            .take_unsynced();
        if let Some(file) = unsynced {
            let _ = file.sync_data();
        }
        let mut inner = self.inner.lock().expect("outbox lock");
        if inner.watermark != inner.persisted_watermark {
            let w = inner.watermark;
            inner.spool.write_watermark(w);
            inner.persisted_watermark = w;
        }
        drop(inner);
        self.record_gauges();
    }

    /// The seq the next appended event will get: every entry appended so
    /// far is below it.
    pub fn next_seq(&self) -> u64 {
        self.inner.lock().expect("outbox lock").next_seq
    }

    /// Every entry below this seq is confirmed by the broker.
    pub fn confirmed_below(&self) -> u64 {
        self.inner.lock().expect("outbox lock").watermark
    }

    /// Current figures.
    pub fn stats(&self) -> OutboxStats {
        let inner = self.inner.lock().expect("outbox lock");
        OutboxStats {
            unconfirmed: inner.next_seq - inner.watermark - inner.confirmed_ahead.len() as u64,
            memory: inner.cache.len(),
            spool_bytes: inner.spool.bytes(),
            dropped: inner.dropped,
        }
    }

    fn record_gauges(&self) {
        let s = self.stats();
        metrics::gauge!("chatbus_ingestor_outbox_unconfirmed").set(s.unconfirmed as f64);
        metrics::gauge!("chatbus_ingestor_outbox_memory_events").set(s.memory as f64);
        metrics::gauge!("chatbus_ingestor_spool_bytes").set(s.spool_bytes as f64);
    }
}

impl Inner {
    fn load_from_disk(&mut self) -> Result<(), SpoolError> {
        let min = self.read_seq;
        let mut cursor = self
            .disk_cursor
            .take()
            .unwrap_or_else(|| self.spool.cursor_at(min));
        let records = self.spool.read(&mut cursor, min, self.memory_limit)?;
        for (seq, message) in records {
            self.cache.push_back(Entry {
                seq,
                message: Arc::new(message),
            });
        }
        let loaded_to = self.cache.back().map_or(self.read_seq, |e| e.seq + 1);
        if loaded_to >= self.next_seq {
            self.cache_complete = true;
        } else {
            self.disk_cursor = Some(cursor);
        }
        if self.cache.is_empty() && self.read_seq < self.next_seq {
            // The disk has nothing at or after read_seq (records lost to
            // corruption): skip ahead rather than wait forever.
            tracing::error!(
                from = self.read_seq,
                to = self.next_seq,
                "spool records missing; skipping them"
            );
            metrics::counter!("chatbus_ingestor_events_dropped_total", "reason" => "spool_corrupt")
                .increment(self.next_seq - self.read_seq);
            for seq in self.read_seq..self.next_seq {
                self.confirmed_ahead.insert(seq);
            }
            self.read_seq = self.next_seq;
            self.cache_complete = true;
        }
        Ok(())
    }
}

fn drop_event(dropped: &mut u64, message: &OutgoingMessage, why: &str) {
    *dropped += 1;
    metrics::counter!("chatbus_ingestor_events_dropped_total", "reason" => "outbox_full")
        .increment(1);
    tracing::warn!(
        id = %message.message_id,
        channel = %message.channel,
        kind = %message.kind,
        dropped_total = *dropped,
        "DROPPED an event: {why}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::schema::EventKind;

    fn msg(n: u64) -> OutgoingMessage {
        OutgoingMessage {
            routing_key: "chat.demo.c".into(),
            message_id: format!("id-{n}"),
            kind: EventKind::Message,
            platform: "demo".into(),
            channel: "c".into(),
            timestamp: n,
            body: vec![b'x'; 100],
        }
    }

    fn take_all(outbox: &Outbox) -> Vec<u64> {
        let mut out = Vec::new();
        while let Some(e) = outbox.try_next().unwrap() {
            out.push(e.seq);
        }
        out
    }

    #[test]
    fn memory_overflow_is_read_back_from_disk_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 4096, 10).unwrap();
        outbox.append((0..25).map(msg).collect());
        outbox.append((25..40).map(msg).collect());
        assert_eq!(outbox.stats().memory, 10);
        assert_eq!(take_all(&outbox), (0..40).collect::<Vec<_>>());
        outbox.append((40..45).map(msg).collect());
        assert_eq!(take_all(&outbox), (40..45).collect::<Vec<_>>());
    }

    #[test]
    fn messages_come_back_intact_from_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 4096, 2).unwrap();
        outbox.append((0..5).map(msg).collect());
        for n in 0..5 {
            let e = outbox.try_next().unwrap().unwrap();
            assert_eq!(*e.message, msg(n));
        }
    }

    #[test]
    fn unconfirmed_events_survive_a_restart_and_confirmed_ones_do_not_come_back() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 1024, 100).unwrap();
            outbox.append((0..50).map(msg).collect());
            for e in (0..20).map(|_| outbox.try_next().unwrap().unwrap()) {
                outbox.confirm(e.seq);
            }
            outbox.sync();
            // Simulated kill: no shutdown, 30 events unconfirmed.
        }
        let (outbox, recovered) = Outbox::open(dir.path(), 1 << 30, 1024, 100).unwrap();
        assert_eq!(recovered.watermark, 20);
        assert_eq!(take_all(&outbox), (20..50).collect::<Vec<_>>());
        assert_eq!(outbox.stats().unconfirmed, 30);
        // New events continue the sequence.
        outbox.append(vec![msg(99)]);
        assert_eq!(take_all(&outbox), [50]);
    }

    #[test]
    fn confirmations_out_of_order_advance_the_watermark_and_free_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 1000, 1000).unwrap();
        outbox.append((0..100).map(msg).collect());
        let entries = take_all(&outbox);
        let before = outbox.stats().spool_bytes;
        for seq in entries.iter().rev() {
            outbox.confirm(*seq);
        }
        let s = outbox.stats();
        assert_eq!(s.unconfirmed, 0);
        assert!(s.spool_bytes < before, "confirmed segments released");
    }

    #[test]
    fn a_full_spool_drops_and_counts() {
        let dir = tempfile::tempdir().unwrap();
        let size = Spool::record_size(&msg(0));
        let (outbox, _) = Outbox::open(dir.path(), size * 10, 4096.min(size * 10), 1000).unwrap();
        let r = outbox.append((0..15).map(msg).collect());
        assert_eq!(
            r,
            Appended {
                accepted: 10,
                dropped: 5,
                refused: 0,
            }
        );
        assert_eq!(outbox.stats().dropped, 5);
        assert_eq!(take_all(&outbox).len(), 10);
    }

    #[tokio::test]
    async fn next_waits_for_an_append() {
        let dir = tempfile::tempdir().unwrap();
        let (outbox, _) = Outbox::open(dir.path(), 1 << 30, 4096, 10).unwrap();
        let outbox = Arc::new(outbox);
        let o = outbox.clone();
        let waiter = tokio::spawn(async move { o.next().await.unwrap().seq });
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        outbox.append(vec![msg(0)]);
        assert_eq!(
            tokio::time::timeout(std::time::Duration::from_secs(2), waiter)
                .await
                .unwrap()
                .unwrap(),
            0
        );
    }
}
