//! The rows every backend reads back, decoded the same way: a stored event
//! ([`EventRow`]), a channel's summary ([`SummaryRow`]) and a mark that late
//! moderation made ([`MarkRow`]). Each backend's SQL selects the columns
//! named here (by name, as `sqlx::FromRow` reads them); what a column holds
//! that no valid store writes is [`StoreError::Corrupt`].

use chrono::DateTime;
use common::schema::EventKind;
use serde_json::value::RawValue;

use super::moderation::decode_moderation;
use super::{ChannelSummary, Cursor, Moderation, StoreError, StoredEvent};

/// A stored event with its channel (`seq, platform, channel, routing_key,
/// event_id, kind, body, moderation, moderated_by`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct EventRow {
    seq: i64,
    platform: String,
    channel: String,
    routing_key: String,
    event_id: String,
    kind: String,
    body: String,
    moderation: Option<String>,
    moderated_by: Option<i64>,
}

impl TryFrom<EventRow> for StoredEvent {
    type Error = StoreError;

    fn try_from(row: EventRow) -> Result<Self, StoreError> {
        let seq = row.seq;
        let corrupt = |reason: String| StoreError::Corrupt {
            cursor: seq,
            reason,
        };
        Ok(StoredEvent {
            cursor: Cursor::new(seq).ok_or_else(|| corrupt("non-positive seq".into()))?,
            moderation: decode_moderation(seq, row.moderation, row.moderated_by)?,
            event: RawValue::from_string(row.body).map_err(|e| corrupt(format!("body: {e}")))?,
            platform: row.platform,
            channel: row.channel,
            id: row.event_id,
            // A kind this build does not know was stored by name, as it
            // came (`EventBody::Unknown`); the body keeps it.
            kind: row.kind.parse::<EventKind>().unwrap_or(EventKind::Unknown),
            routing_key: row.routing_key,
        })
    }
}

/// A channel with its counters (`platform, channel, routing_key,
/// event_count, message_count, last_cursor, last_event_at, status_cursor`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SummaryRow {
    platform: String,
    channel: String,
    routing_key: String,
    event_count: i64,
    message_count: i64,
    last_cursor: Option<i64>,
    last_event_at: Option<i64>,
    status_cursor: Option<i64>,
}

impl From<SummaryRow> for ChannelSummary {
    fn from(row: SummaryRow) -> Self {
        ChannelSummary {
            platform: row.platform,
            channel: row.channel,
            routing_key: row.routing_key,
            event_count: row.event_count,
            message_count: row.message_count,
            last_cursor: row.last_cursor.and_then(Cursor::new),
            last_event_at: row.last_event_at.and_then(DateTime::from_timestamp_millis),
            status_cursor: row.status_cursor.and_then(Cursor::new),
        }
    }
}

/// A row late moderation marked (`seq, moderation, moderated_by`).
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct MarkRow {
    seq: i64,
    moderation: Option<String>,
    moderated_by: Option<i64>,
}

/// The marks of `rows`, by cursor.
///
/// # Errors
/// [`StoreError::Corrupt`] for a mark no valid store writes.
pub(crate) fn marks(rows: Vec<MarkRow>) -> Result<Vec<(i64, Moderation)>, StoreError> {
    let mut marked = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(m) = decode_moderation(row.seq, row.moderation, row.moderated_by)? {
            marked.push((row.seq, m));
        }
    }
    Ok(marked)
}
