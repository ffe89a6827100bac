//! Forget on request, the same for every backend: opt-outs, purge horizons,
//! purges that delete and redact in bounded chunks, and the audit.
//!
//! * **Rules** (`privacy_rules`): opted-out users (by platform user id) and
//!   channels, and purge horizons. Every change bumps
//!   `privacy_state.version`; a batch reads that one row under the write
//!   lock and reloads the rules only when it moved ([`RulesCache`]), then
//!   drops what [`PrivacyList::refuses`]. So a purge or opt-out made by
//!   another process (the CLI) holds for the very next batch.
//! * **Purge** ([`purge`]): records the horizon (events of the subject
//!   received at or before it are refused from then on, which catches what
//!   was in the ingestor's spool or the consumer's batch) and the store's
//!   head at that moment, then, chunk by chunk ([`PURGE_CHUNK`] rows, each
//!   chunk its own write transaction so ingest waits at most one chunk):
//!   redacts every event that quotes a row of the chunk (a reply's parent,
//!   a message_delete's copy of the text) and deletes the rows; for a user,
//!   then redacts what quotes the user (replies to them, bans and timeouts
//!   of them). Last the backend scrubs what deleted rows leave on disk
//!   ([`PrivacySql::scrub`]).
//! * **Audit** (`privacy_audit`): who asked, what subject, when, how many
//!   rows; never content.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::ChatEvent;
use common::privacy::{PrivacyAction, PrivacyList, Subject};
use serde::Serialize;
use serde_json::Value;

use super::{NewEvent, StoreError};

/// Rows deleted per purge transaction: small enough that ingest never
/// waits long for the write lock (docs/benchmarks.md "Purge": a chunk of
/// 1,000 wrote about 10 MB of pages on SQLite, as each deleted row touches
/// a leaf of every index, and held ingest for 100s of ms).
pub(crate) const PURGE_CHUNK: i64 = 250;

/// What a quoting event's redacted fields say instead.
pub const REDACTED: &str = "[redacted]";

/// The ids an event is stored with for privacy: its author's platform id,
/// the user it quotes (a reply's parent author, a ban's or timeout's
/// target) and the event it quotes (a reply's parent, a message_delete's
/// target).
pub(crate) struct PrivacyKeys<'a> {
    pub author_id: Option<&'a str>,
    pub quoted_user: Option<&'a str>,
    pub quoted_event: Option<&'a str>,
}

pub(crate) fn keys(event: &ChatEvent) -> PrivacyKeys<'_> {
    use common::schema::EventBody;
    let (user, target) = match &event.body {
        EventBody::Ban(d) => (d.user.id.as_deref(), None),
        EventBody::Timeout(d) => (d.user.id.as_deref(), None),
        EventBody::MessageDelete(d) => (None, Some(d.target_message_id.as_str())),
        _ => (None, None),
    };
    let reply = event.reply_to.as_ref();
    PrivacyKeys {
        author_id: event.author.as_ref().map(|a| a.id.as_str()),
        quoted_user: reply.and_then(|r| r.user_id.as_deref()).or(user),
        quoted_event: reply.map(|r| r.message_id.as_str()).or(target),
    }
}

/// An opt-out, opt-in or purge as the audit table keeps it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct AuditEntry {
    /// When (ms since the epoch).
    pub at: i64,
    /// `opt_out`, `opt_in` or `purge`.
    pub action: String,
    /// [`Subject::describe`].
    pub subject: String,
    /// Who asked (`admin-api`, `cli`, `self-service`).
    pub requested_by: String,
    /// Events deleted.
    pub rows_deleted: i64,
    /// Events redacted (they quoted the subject).
    pub rows_redacted: i64,
    /// How long the purge took, ms.
    pub duration_ms: i64,
}

/// A listed opt-out.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OptOut {
    /// `user` or `channel`.
    pub kind: String,
    /// The platform.
    pub platform: String,
    /// The user id or channel word.
    pub value: String,
    /// Since when (ms).
    pub since: i64,
}

/// What a purge did.
#[derive(Debug, Clone, Serialize)]
pub struct PurgeReport {
    /// What was purged.
    pub subject: Subject,
    /// Events of the subject received at or before this are refused.
    pub horizon: DateTime<Utc>,
    /// Events deleted.
    pub deleted: u64,
    /// Events redacted in place (they quoted the subject).
    pub redacted: u64,
    /// Chunks (write transactions) it took.
    pub chunks: u64,
    /// How long it took, ms, scrubbing included.
    pub duration_ms: u64,
}

/// The rules a writer holds, and the `privacy_state.version` they are of.
#[derive(Debug, Default)]
pub(crate) struct RulesCache {
    inner: Mutex<(i64, Arc<PrivacyList>)>,
}

impl RulesCache {
    /// The rules if they are of `version`.
    pub(crate) fn get(&self, version: i64) -> Option<Arc<PrivacyList>> {
        let inner = self.inner.lock().expect("rules cache lock");
        (inner.0 == version).then(|| inner.1.clone())
    }

    /// Remembers `list` as the rules of `version`.
    pub(crate) fn put(&self, version: i64, list: PrivacyList) -> Arc<PrivacyList> {
        let list = Arc::new(list);
        *self.inner.lock().expect("rules cache lock") = (version, list.clone());
        list
    }
}

/// One row of `privacy_rules`.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RuleRow {
    pub kind: String,
    pub platform: String,
    pub value: String,
    pub opted_out: bool,
    pub horizon: Option<i64>,
}

/// How long a purge horizon is kept in the rules: the longest an event can
/// plausibly wait in a spool or queue before it is stored.
pub(crate) const HORIZON_KEPT_MS: i64 = 7 * 24 * 3600 * 1000;

/// The list `rows` describe.
pub(crate) fn list_of(rows: Vec<RuleRow>) -> PrivacyList {
    let mut list = PrivacyList::default();
    for r in rows {
        let Some(subject) = subject_of(&r.kind, &r.platform, &r.value) else {
            continue;
        };
        if r.opted_out {
            list.set_opted_out(&subject, true);
        }
        if let Some(h) = r.horizon.and_then(DateTime::from_timestamp_millis) {
            list.set_horizon(subject, h);
        }
    }
    list
}

/// The `(kind, platform, value)` a subject is stored as.
pub(crate) fn rule_key(subject: &Subject) -> (&'static str, String, String) {
    match subject {
        Subject::User { platform, user_id } => ("user", platform.clone(), user_id.clone()),
        Subject::Channel { platform, channel } => ("channel", platform.clone(), channel.clone()),
        Subject::Message {
            platform,
            message_id,
        } => ("message", platform.clone(), message_id.clone()),
        Subject::Before { before } => (
            "before",
            String::new(),
            before.timestamp_millis().to_string(),
        ),
    }
}

fn subject_of(kind: &str, platform: &str, value: &str) -> Option<Subject> {
    match kind {
        "before" => value
            .parse::<i64>()
            .ok()
            .and_then(DateTime::from_timestamp_millis)
            .map(|before| Subject::Before { before }),
        k => Subject::parse_pair(k, &format!("{platform}:{value}")).ok(),
    }
}

/// Drops from `fresh` the events `list` refuses; returns how many went.
pub(crate) fn drop_refused(fresh: &mut Vec<&NewEvent<'_>>, list: &PrivacyList) -> usize {
    if list.is_empty() {
        return 0;
    }
    let before = fresh.len();
    fresh.retain(|e| !list.refuses(e.event));
    before - fresh.len()
}

/// What a quoting event becomes once redacted: its new body and text.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Redacted {
    pub body: String,
    pub text: Option<String>,
}

/// Redacts, in the event JSON `body` (whose `text` column is `text`),
/// every quote of the purged user `user` (its platform id) or of the
/// purged events `ids`: a reply's parent (author, name, text; and a
/// leading `@login` in the reply's own text), a message_delete's copy of
/// the deleted text and its author's login, a ban's or timeout's target.
/// The platform's `raw` form quotes them too and is dropped. `None` when
/// the event quotes neither.
pub(crate) fn redact(
    body: &str,
    text: Option<&str>,
    user: Option<&str>,
    ids: &HashSet<String>,
) -> Option<Redacted> {
    let mut v: Value = serde_json::from_str(body).ok()?;
    let mut changed = false;
    let mut text = text.map(str::to_owned);
    let quotes_user = |id: Option<&Value>| user.is_some() && id.and_then(Value::as_str) == user;

    if let Some(parent) = v.get_mut("reply_to").filter(|p| p.is_object()) {
        let quoted = quotes_user(parent.get("user_id"))
            || parent
                .get("message_id")
                .and_then(Value::as_str)
                .is_some_and(|id| ids.contains(id));
        if quoted {
            let login = parent
                .get("user_login")
                .and_then(Value::as_str)
                .map(str::to_owned);
            for field in ["user_id", "user_login", "display_name", "text"] {
                parent[field] = Value::Null;
            }
            // Twitch puts `@parent ` before a reply's own text.
            if let (Some(login), Some(t)) = (login, text.as_mut()) {
                let mention = format!("@{login}");
                if t.len() >= mention.len()
                    && t.is_char_boundary(mention.len())
                    && t[..mention.len()].eq_ignore_ascii_case(&mention)
                {
                    *t = format!("@{REDACTED}{}", &t[mention.len()..]);
                    v["text"] = Value::String(t.clone());
                }
            }
            changed = true;
        }
    }
    let kind = v
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if let Some(details) = v.get_mut("details").filter(|d| d.is_object()) {
        match kind.as_str() {
            "message_delete"
                if details
                    .get("target_message_id")
                    .and_then(Value::as_str)
                    .is_some_and(|id| ids.contains(id)) =>
            {
                details["text"] = Value::Null;
                details["user_login"] = Value::Null;
                changed = true;
            }
            "ban" | "timeout" if quotes_user(details.get("user").and_then(|u| u.get("id"))) => {
                let u = &mut details["user"];
                u["id"] = Value::Null;
                u["login"] = Value::String(REDACTED.into());
                u["display_name"] = Value::Null;
                changed = true;
            }
            _ => {}
        }
    }
    if !changed {
        return None;
    }
    if let Some(raw) = v.get_mut("raw") {
        *raw = Value::Null;
    }
    Some(Redacted {
        body: serde_json::to_string(&v).expect("a JSON value serialises"),
        text,
    })
}

/// A chunk's work: what was deleted and redacted.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Chunk {
    pub deleted: u64,
    pub redacted: u64,
}

/// The backend's half of privacy: its SQL.
pub(crate) trait PrivacySql: Sync {
    /// In one write transaction (under the write lock): sets the subject's
    /// rule (`opted_out`, if given; `horizon` in ms, if given, raising an
    /// earlier one), bumps the version, writes an audit row for an opt-out
    /// or opt-in. Returns the store's head cursor (0 when empty).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn record_rule(
        &self,
        subject: &Subject,
        opted_out: Option<bool>,
        horizon: Option<i64>,
        requested_by: &str,
    ) -> Result<i64, StoreError>;

    /// In one write transaction: deletes up to `limit` of the subject's
    /// events with a cursor up to `head`, after redacting the events that
    /// quote them (see [`redact`]).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn purge_chunk(
        &self,
        subject: &Subject,
        head: i64,
        limit: i64,
    ) -> Result<Chunk, StoreError>;

    /// In one write transaction: redacts up to `limit` events that quote
    /// the user `user_id` of `platform` (and forgets that they do).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn redact_user_quotes(
        &self,
        platform: &str,
        user_id: &str,
        limit: i64,
    ) -> Result<u64, StoreError>;

    /// Runs between two chunks, outside their transactions: lets the
    /// database catch up with what the chunk wrote. Nothing by default.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn between_chunks(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Leaves no bytes of what the purge deleted on disk (SQLite: a
    /// truncating WAL checkpoint; PostgreSQL: rewriting the partitions the
    /// purge touched).
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn scrub(&self) -> Result<(), StoreError>;

    /// Appends an audit row.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError>;
}

/// Purges `subject` from `store` (see the module docs).
///
/// # Errors
/// [`StoreError`] when the database fails; what was deleted before stays
/// deleted, and the horizon stays recorded, so running it again finishes
/// the job.
pub(crate) async fn purge<S: PrivacySql>(
    store: &S,
    subject: &Subject,
    requested_by: &str,
) -> Result<PurgeReport, StoreError> {
    let started = Instant::now();
    let horizon = Utc::now();
    let head = store
        .record_rule(
            subject,
            None,
            Some(horizon.timestamp_millis()),
            requested_by,
        )
        .await?;
    let mut report = PurgeReport {
        subject: subject.clone(),
        horizon,
        deleted: 0,
        redacted: 0,
        chunks: 0,
        duration_ms: 0,
    };
    let full = u64::try_from(PURGE_CHUNK).unwrap_or(u64::MAX);
    let phase = Instant::now();
    let mut slowest = std::time::Duration::ZERO;
    loop {
        let one = Instant::now();
        let chunk = store.purge_chunk(subject, head, PURGE_CHUNK).await?;
        slowest = slowest.max(one.elapsed());
        store.between_chunks().await?;
        report.chunks += 1;
        report.deleted += chunk.deleted;
        report.redacted += chunk.redacted;
        if chunk.deleted < full {
            break;
        }
    }
    phase_done("delete", phase, report.chunks);
    tracing::debug!(
        ms = u64::try_from(slowest.as_millis()).unwrap_or(u64::MAX),
        "purge slowest chunk"
    );
    if let Subject::User { platform, user_id } = subject {
        let phase = Instant::now();
        let chunks = report.chunks;
        loop {
            let n = store
                .redact_user_quotes(platform, user_id, PURGE_CHUNK)
                .await?;
            store.between_chunks().await?;
            report.chunks += 1;
            report.redacted += n;
            if n < full {
                break;
            }
        }
        phase_done("redact_quotes", phase, report.chunks - chunks);
    }
    store.scrub().await?;
    report.duration_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    store
        .audit(&AuditEntry {
            at: horizon.timestamp_millis(),
            action: PrivacyAction::Purge.as_str().into(),
            subject: subject.describe(),
            requested_by: requested_by.into(),
            rows_deleted: i64::try_from(report.deleted).unwrap_or(i64::MAX),
            rows_redacted: i64::try_from(report.redacted).unwrap_or(i64::MAX),
            duration_ms: i64::try_from(report.duration_ms).unwrap_or(i64::MAX),
        })
        .await?;
    tracing::info!(
        subject = %subject.describe(),
        requested_by,
        deleted = report.deleted,
        redacted = report.redacted,
        chunks = report.chunks,
        ms = report.duration_ms,
        "purged"
    );
    Ok(report)
}

/// Logs (debug) how long a phase of a purge took: `delete`,
/// `redact_quotes`, then the backend's scrub phases. The purge benchmark
/// reads these (docs/benchmarks.md "Purge").
pub(crate) fn phase_done(phase: &'static str, started: Instant, steps: u64) {
    tracing::debug!(
        phase,
        steps,
        ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        "purge phase done"
    );
}

/// An audit row from its columns.
pub(crate) fn audit_entry(row: (i64, String, String, String, i64, i64, i64)) -> AuditEntry {
    let (at, action, subject, requested_by, rows_deleted, rows_redacted, duration_ms) = row;
    AuditEntry {
        at,
        action,
        subject,
        requested_by,
        rows_deleted,
        rows_redacted,
        duration_ms,
    }
}

/// The audit row of an opt-out (`true`) or opt-in.
pub(crate) fn opt_audit(
    subject: &Subject,
    opted_out: bool,
    requested_by: &str,
    at: i64,
) -> AuditEntry {
    let action = if opted_out {
        PrivacyAction::OptOut
    } else {
        PrivacyAction::OptIn
    };
    AuditEntry {
        at,
        action: action.as_str().into(),
        subject: subject.describe(),
        requested_by: requested_by.into(),
        rows_deleted: 0,
        rows_redacted: 0,
        duration_ms: 0,
    }
}

/// Checks that `subject` can opt out (users and channels only).
///
/// # Errors
/// A message saying why not.
pub fn check_opt_out_subject(subject: &Subject) -> Result<(), String> {
    match subject {
        Subject::User { .. } | Subject::Channel { .. } => Ok(()),
        other => Err(format!(
            "only users and channels opt out, not `{}`",
            other.describe()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(list: &[&str]) -> HashSet<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn a_reply_to_the_purged_user_loses_the_parent_and_the_mention_and_raw() {
        let body = serde_json::json!({
            "kind": "message", "details": {}, "text": "@Victim hi there",
            "reply_to": {"message_id": "m1", "user_id": "42", "user_login": "victim",
                         "display_name": "Victim", "text": "zebraword secret", "thread_message_id": null},
            "raw": "@reply-parent-msg-body=zebraword\\ssecret :x PRIVMSG #c :@Victim hi there"
        })
        .to_string();
        let r = redact(&body, Some("@Victim hi there"), Some("42"), &ids(&[])).unwrap();
        assert!(!r.body.contains("zebraword"), "{}", r.body);
        assert!(!r.body.to_lowercase().contains("victim"), "{}", r.body);
        assert_eq!(r.text.as_deref(), Some("@[redacted] hi there"));
        // The same reply, found through the purged message's id.
        let r2 = redact(&body, Some("@Victim hi there"), None, &ids(&["m1"])).unwrap();
        assert_eq!(r, r2);
        assert!(redact(&body, Some("x"), Some("7"), &ids(&["m9"])).is_none());
    }

    #[test]
    fn a_delete_of_a_purged_message_and_a_ban_of_the_user_are_redacted() {
        let delete = serde_json::json!({
            "kind": "message_delete",
            "details": {"target_message_id": "m1", "user_login": "victim", "text": "zebraword"},
            "raw": "... CLEARMSG #c :zebraword"
        })
        .to_string();
        let r = redact(&delete, None, None, &ids(&["m1"])).unwrap();
        assert!(!r.body.contains("zebraword") && !r.body.contains("victim"));
        let ban = serde_json::json!({
            "kind": "ban", "details": {"user": {"id": "42", "login": "victim", "display_name": "Victim"}}
        })
        .to_string();
        let r = redact(&ban, None, Some("42"), &ids(&[])).unwrap();
        assert!(!r.body.to_lowercase().contains("victim"));
        assert!(redact(&ban, None, Some("43"), &ids(&[])).is_none());
    }

    #[test]
    fn rules_round_trip_through_their_rows() {
        let user = Subject::parse_pair("user", "twitch:42").unwrap();
        let before = Subject::Before {
            before: DateTime::from_timestamp_millis(1_000).unwrap(),
        };
        for s in [&user, &before] {
            let (kind, platform, value) = rule_key(s);
            assert_eq!(subject_of(kind, &platform, &value).as_ref(), Some(s));
        }
    }
}
