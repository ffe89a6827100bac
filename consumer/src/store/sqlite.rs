//! The SQLite store: one file in WAL mode, schema migrations
//! (`migrations/sqlite`), one writer connection and a pool of readers.
//!
//! * Writes run in `BEGIN IMMEDIATE` transactions, one per batch, so a
//!   second process sharing the file waits for the write lock instead of
//!   failing half-way; `synchronous = FULL`, because the broker is told
//!   "done" (acked) right after the commit.
//! * `seq INTEGER PRIMARY KEY AUTOINCREMENT` is the cursor: allocated under
//!   the write lock, hence in commit order, and never reused.
//! * Channel counters and the FTS5 index are updated by the writer once
//!   per batch (one statement each), and by triggers on delete and update,
//!   so retention and any manual `DELETE` keep them right. The index is
//!   contentless and holds the text folded in Rust ([`super::fold`]); `q`
//!   is parsed once ([`super::plan::TextQuery`]) and bound as one `MATCH`
//!   expression.
//! * Searches run on connections of their own (`SearchLimits::concurrency`)
//!   behind the [`SearchGate`], each with a progress handler that
//!   interrupts it at `SearchLimits::timeout`.
//! * WAL checkpoints run on their own connection every 500 ms (passive:
//!   they never block anyone) instead of inside the writer's commits, which
//!   is worth about a quarter of the write throughput.
//! * Batches are written with multi-row statements (a handful per batch),
//!   because every statement is a round trip to the connection's thread.

use std::collections::HashMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection, Transaction};

use super::batch::{self, BatchTx, ChannelCounts, NewRows, PendingModeration};
use super::channel_cache::{ChannelCache, CreateChannel};
use super::fold::fold;
use super::plan::{self, CHANNEL_ROWS, ChannelRow};
use super::privacy::{
    self, AuditEntry, Chunk, OptOut, PrivacySql, PurgeReport, RuleRow, RulesCache,
};
use super::retention::{self, RetentionSql};
use super::rows::{self, EventRow, MarkRow, SummaryRow};
use super::search::{self, SearchGate, SearchLimits};
use super::{
    ChannelSummary, Cursor, EventQuery, Moderation, ModerationAction, NewEvent, Order,
    RetentionPolicy, Store, StoreError, StoreOptions, StoredEvent, WriteOutcome,
};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const COLUMNS: &str = "SELECT e.seq, c.platform, c.channel, c.routing_key, e.event_id, e.kind, \
     e.body, e.moderation, e.moderated_by FROM events e JOIN channels c ON c.id = e.channel_ref";

/// The SQLite implementation of [`Store`].
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Searches' own connections (see the module docs).
    search: SqlitePool,
    limits: SearchLimits,
    gate: SearchGate,
    checkpointer: SqlitePool,
    stop_checkpoints: tokio_util::sync::CancellationToken,
    path: PathBuf,
    lookback_ms: i64,
    channels: ChannelCache,
    rules: RulesCache,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens `url` (`sqlite://path`), creating the file and its directory
    /// if needed, and migrates the schema.
    ///
    /// # Errors
    /// [`StoreError`] when the file cannot be opened or migrated.
    pub async fn open(url: &str, options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // Deleted rows are overwritten with zeros, not left in free
            // pages (a purge must leave no bytes behind: docs/privacy.md).
            .pragma("secure_delete", "on")
            .pragma("wal_autocheckpoint", "0")
            .pragma("journal_size_limit", "67108864");
        let path = connect.get_filename().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.display().to_string(),
                source,
            })?;
        }
        // The writer's page cache holds the hot parts of every index (64 MiB).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(
                connect
                    .clone()
                    .pragma("cache_size", "-65536")
                    .foreign_keys(false),
            )
            .await?;
        migrate(&writer).await?;
        super::upgrade::run_sqlite(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections)
            .connect_with(connect.clone().pragma("cache_size", "-16384"))
            .await?;
        let search = SqlitePoolOptions::new()
            .max_connections(options.search.concurrency.max(1))
            .connect_lazy_with(connect.clone().pragma("cache_size", "-16384"));
        // Checkpoints run here, not in the writer's commits (see the module
        // docs).
        let checkpointer = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect.clone())
            .await?;
        let stop_checkpoints = tokio_util::sync::CancellationToken::new();
        tokio::spawn(checkpoints(checkpointer.clone(), stop_checkpoints.clone()));
        tracing::info!(path = %path.display(), "SQLite store open");
        Ok(Self {
            writer,
            reader,
            search,
            limits: options.search.clone(),
            gate: SearchGate::new(&options.search),
            checkpointer,
            stop_checkpoints,
            path,
            lookback_ms: options.lookback_ms(),
            channels: ChannelCache::default(),
            rules: RulesCache::default(),
        })
    }

    /// The database file.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// The privacy rules, reloaded inside the write transaction `tx` only
    /// when their version moved.
    async fn rules(
        &self,
        tx: &mut SqliteConnection,
    ) -> Result<Arc<common::privacy::PrivacyList>, StoreError> {
        let version: i64 = sqlx::query_scalar("SELECT version FROM privacy_state")
            .fetch_one(&mut *tx)
            .await?;
        if let Some(rules) = self.rules.get(version) {
            return Ok(rules);
        }
        let rows: Vec<RuleRow> = sqlx::query_as(
            "SELECT kind, platform, value, opted_out <> 0 AS opted_out, horizon \
             FROM privacy_rules WHERE opted_out <> 0 OR horizon > ?1",
        )
        .bind(Utc::now().timestamp_millis() - privacy::HORIZON_KEPT_MS)
        .fetch_all(&mut *tx)
        .await?;
        Ok(self.rules.put(version, privacy::list_of(rows)))
    }

    /// Redacts the events of `platform` that quote one of `ids` (or the
    /// user `user`); returns how many. `deleting`: cursors about to be
    /// deleted (not worth redacting).
    async fn redact_quotes_of(
        tx: &mut SqliteConnection,
        platform: &str,
        user: Option<&str>,
        ids: &std::collections::HashSet<String>,
        deleting: &std::collections::HashSet<i64>,
    ) -> Result<u64, StoreError> {
        if ids.is_empty() {
            return Ok(0);
        }
        let list = serde_json::to_string(&ids.iter().collect::<Vec<_>>()).expect("strings");
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT seq, body, text FROM events WHERE platform = ?1 \
             AND quoted_event IN (SELECT value FROM json_each(?2))",
        )
        .bind(platform)
        .bind(list)
        .fetch_all(&mut *tx)
        .await?;
        let mut n = 0;
        for (seq, body, text) in rows {
            if deleting.contains(&seq) {
                continue;
            }
            n += u64::from(
                rewrite(tx, seq, &body, text.as_deref(), user, ids, "quoted_event").await?,
            );
        }
        Ok(n)
    }
}

/// Leaf pages one step of the post-purge full-text merge writes: about
/// the write lock's hold time of a purge chunk (docs/benchmarks.md).
const FTS5_MERGE_PAGES: i64 = 64;

/// A segment of the full-text index, as FTS5's structure record lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fts5Segment {
    /// Its id and the range of write origins it holds: a segment a merge
    /// rewrote (or that a new write made) differs in one of them.
    id: (u64, u64, u64),
    /// Its leaf pages.
    pages: u64,
}

/// FTS5's structure record of `events_fts` (empty when there is none).
async fn fts5_structure<'c, E>(db: E) -> Result<Vec<u8>, StoreError>
where
    E: sqlx::Executor<'c, Database = Sqlite>,
{
    let block: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT block FROM events_fts_data WHERE id = 10")
            .fetch_optional(db)
            .await?;
    Ok(block.unwrap_or_default())
}

/// The segments a structure record lists (see `fts5StructureDecode` in
/// SQLite's fts5_index.c); none when it does not decode.
fn fts5_segments(record: &[u8]) -> Vec<Fts5Segment> {
    fn varint(data: &[u8], i: &mut usize) -> Option<u64> {
        let mut v: u64 = 0;
        for n in 0..9 {
            let b = *data.get(*i)?;
            *i += 1;
            if n == 8 {
                return Some((v << 8) | u64::from(b));
            }
            v = (v << 7) | u64::from(b & 0x7f);
            if b & 0x80 == 0 {
                return Some(v);
            }
        }
        Some(v)
    }
    fn decode(data: &[u8]) -> Option<Vec<Fts5Segment>> {
        let mut i = 4;
        let v2 = data.get(4..8) == Some(&[0xff, 0, 0, 1][..]);
        if v2 {
            i += 4;
        }
        let levels = varint(data, &mut i)?;
        let _segments = varint(data, &mut i)?;
        let _write_counter = varint(data, &mut i)?;
        let mut out = Vec::new();
        for _ in 0..levels {
            let _merging = varint(data, &mut i)?;
            let segments = varint(data, &mut i)?;
            for _ in 0..segments {
                let id = varint(data, &mut i)?;
                let first = varint(data, &mut i)?;
                let last = varint(data, &mut i)?;
                let (mut origin1, mut origin2) = (0, 0);
                if v2 {
                    origin1 = varint(data, &mut i)?;
                    origin2 = varint(data, &mut i)?;
                    for _ in 0..3 {
                        varint(data, &mut i)?;
                    }
                }
                out.push(Fts5Segment {
                    id: (id, origin1, origin2),
                    pages: (last + 1).saturating_sub(first),
                });
            }
        }
        Some(out)
    }
    decode(record).unwrap_or_default()
}

/// Rewrites row `seq` redacted (see [`privacy::redact`]) and clears its
/// `forget` column (`quoted_event` or `quoted_user`), so it is not found
/// again; keeps the full-text index folded. Returns whether it changed.
async fn rewrite(
    tx: &mut SqliteConnection,
    seq: i64,
    body: &str,
    text: Option<&str>,
    user: Option<&str>,
    ids: &std::collections::HashSet<String>,
    forget: &'static str,
) -> Result<bool, StoreError> {
    let Some(r) = privacy::redact(body, text, user, ids) else {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "UPDATE events SET {forget} = NULL WHERE seq = ?1"
        )))
        .bind(seq)
        .execute(&mut *tx)
        .await?;
        return Ok(false);
    };
    // Nothing quoted is left: found by neither column again.
    sqlx::query(
        "UPDATE events SET body = ?2, quoted_event = NULL, quoted_user = NULL WHERE seq = ?1",
    )
    .bind(seq)
    .bind(&r.body)
    .execute(&mut *tx)
    .await?;
    if r.text.as_deref() != text {
        // The update trigger re-indexes the raw text; the index holds it
        // folded.
        sqlx::query("UPDATE events SET text = ?2 WHERE seq = ?1")
            .bind(seq)
            .bind(r.text.as_deref())
            .execute(&mut *tx)
            .await?;
        sqlx::query("DELETE FROM events_fts WHERE rowid = ?1")
            .bind(seq)
            .execute(&mut *tx)
            .await?;
        if let Some(t) = &r.text {
            insert_folded(tx, &[(seq, fold(t))]).await?;
        }
    }
    sqlx::query("UPDATE moderations SET target_login = NULL WHERE seq = ?1 AND ?2")
        .bind(seq)
        .bind(user.is_some())
        .execute(&mut *tx)
        .await?;
    Ok(true)
}

/// Runs the migrations, retrying briefly: two instances starting on a new
/// file at the same moment race to create the schema, and the loser only
/// has to see the winner's work.
async fn migrate(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match MIGRATOR.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::warn!(error = %e, attempt, "migration failed; retrying");
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// How often the background checkpointer folds the WAL into the database.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Runs passive WAL checkpoints until `stop`. Passive checkpoints never
/// block the writer or the readers; the writer's commits then only append
/// to the WAL (SQLite's automatic checkpoint, which would run inside a
/// commit, is off).
async fn checkpoints(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(CHECKPOINT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            tracing::warn!(error = %e, "WAL checkpoint failed");
        }
    }
}

/// Whether a database error is worth retrying (busy, locked, I/O, full)
/// rather than a refusal of the data.
pub(crate) fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        // SQLite's own errors only: another backend's numeric codes
        // (PostgreSQL's 22021 ends in the byte 5, BUSY) mean other things.
        sqlx::Error::Database(db)
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() =>
        {
            let code: i32 = db.code().and_then(|c| c.parse().ok()).unwrap_or(0);
            // Primary result codes: BUSY, LOCKED, NOMEM, IOERR, FULL, CANTOPEN, PROTOCOL.
            matches!(code & 0xff, 5 | 6 | 7 | 10 | 13 | 14 | 15)
        }
        _ => false,
    }
}

impl CreateChannel for Transaction<'_, Sqlite> {
    async fn channel_ref(&mut self, platform: &str, channel: &str) -> Result<i64, StoreError> {
        let tx: &mut SqliteConnection = self;
        sqlx::query(
            "INSERT INTO channels (platform, channel, routing_key) VALUES (?1, ?2, ?3) \
             ON CONFLICT (platform, channel) DO NOTHING",
        )
        .bind(platform)
        .bind(channel)
        .bind(common::routing::routing_key(platform, channel))
        .execute(&mut *tx)
        .await?;
        Ok(
            sqlx::query_scalar("SELECT id FROM channels WHERE platform = ?1 AND channel = ?2")
                .bind(platform)
                .bind(channel)
                .fetch_one(&mut *tx)
                .await?,
        )
    }
}

impl BatchTx for Transaction<'_, Sqlite> {
    async fn apply_moderation(
        &mut self,
        m: &PendingModeration<'_>,
        lookback_ms: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let tx: &mut SqliteConnection = self;
        let (seq, channel, platform, at_ms, spec) =
            (m.by.get(), m.channel, m.platform, m.at, &m.spec);
        sqlx::query(
            "INSERT INTO moderations (seq, channel_ref, action, target_event_id, target_login, at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )
        .bind(seq)
        .bind(channel)
        .bind(spec.action.as_str())
        .bind(spec.target_event_id.as_deref())
        .bind(spec.target_login.as_deref())
        .bind(at_ms)
        .execute(&mut *tx)
        .await?;
        let from = at_ms.saturating_sub(lookback_ms);
        let marked = match spec.action {
            ModerationAction::Deleted => {
                sqlx::query_scalar(
                    "UPDATE events SET moderation = 'deleted', moderated_by = ?1 \
                     WHERE platform = ?2 AND event_id = ?3 AND channel_ref = ?4 AND moderation IS NULL \
                     RETURNING seq",
                )
                .bind(seq)
                .bind(platform)
                .bind(spec.target_event_id.as_deref())
                .bind(channel)
                .fetch_all(&mut *tx)
                .await?
            }
            ModerationAction::Banned | ModerationAction::TimedOut => {
                sqlx::query_scalar(
                    "UPDATE events SET moderation = ?1, moderated_by = ?2 \
                     WHERE author_login = ?3 AND channel_ref = ?4 AND sent_at BETWEEN ?5 AND ?6 \
                       AND text IS NOT NULL AND moderation IS NULL \
                     RETURNING seq",
                )
                .bind(spec.action.as_str())
                .bind(seq)
                .bind(spec.target_login.as_deref())
                .bind(channel)
                .bind(from)
                .bind(at_ms)
                .fetch_all(&mut *tx)
                .await?
            }
            ModerationAction::Cleared => {
                sqlx::query_scalar(
                    "UPDATE events SET moderation = 'cleared', moderated_by = ?1 \
                     WHERE channel_ref = ?2 AND sent_at BETWEEN ?3 AND ?4 \
                       AND text IS NOT NULL AND moderation IS NULL \
                     RETURNING seq",
                )
                .bind(seq)
                .bind(channel)
                .bind(from)
                .bind(at_ms)
                .fetch_all(&mut *tx)
                .await?
            }
        };
        Ok(marked)
    }

    async fn apply_late_moderation(
        &mut self,
        rows: NewRows,
        min_sent_ms: i64,
        lookback_ms: i64,
    ) -> Result<Vec<(i64, Moderation)>, StoreError> {
        let tx: &mut SqliteConnection = self;
        let (first, last) = (rows.first, rows.last);
        // Fast path: moderation only reaches back in time, so if no moderation
        // is newer than the oldest new message, nothing can match.
        let any: Option<i64> =
            sqlx::query_scalar("SELECT 1 FROM moderations WHERE at >= ?1 LIMIT 1")
                .bind(min_sent_ms)
                .fetch_optional(&mut *tx)
                .await?;
        if any.is_none() {
            return Ok(Vec::new());
        }
        let sql = format!(
            "UPDATE events SET (moderation, moderated_by) = ( \
                SELECT m.action, m.seq FROM moderations m WHERE {LATE_MATCH} ORDER BY m.seq LIMIT 1) \
             WHERE seq BETWEEN ?2 AND ?3 AND text IS NOT NULL AND moderation IS NULL \
               AND EXISTS (SELECT 1 FROM moderations m WHERE {LATE_MATCH}) \
             RETURNING seq, moderation, moderated_by"
        );
        let rows: Vec<MarkRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(lookback_ms)
            .bind(first)
            .bind(last)
            .fetch_all(&mut *tx)
            .await?;
        rows::marks(rows)
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(Transaction::commit(self).await?)
    }
}

/// Adds the rows just inserted (`fresh`, with cursors `seqs`) to the
/// full-text index, folded, and `per_channel` to their channels' counters:
/// one statement each for the whole batch.
async fn index_batch(
    tx: &mut SqliteConnection,
    fresh: &[&NewEvent<'_>],
    seqs: &[i64],
    per_channel: &HashMap<i64, ChannelCounts>,
) -> Result<(), StoreError> {
    let rows: Vec<(i64, String)> = fresh
        .iter()
        .zip(seqs)
        .filter_map(|(e, seq)| e.event.text.as_deref().map(|t| (*seq, fold(t))))
        .collect();
    insert_folded(tx, &rows).await?;
    for (channel, c) in per_channel {
        sqlx::query(
            "UPDATE channels SET event_count = event_count + ?1, \
             message_count = message_count + ?2, last_cursor = ?3, last_event_at = ?4, \
             status_cursor = COALESCE(?6, status_cursor) \
             WHERE id = ?5",
        )
        .bind(c.events)
        .bind(c.messages)
        .bind(c.last_cursor)
        .bind(c.last_sent_at)
        .bind(channel)
        .bind(c.status_cursor)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// Adds `(rowid, folded text)` rows to the full-text index in one
/// statement (a JSON array read by `json_each`).
pub(super) async fn insert_folded(
    tx: &mut SqliteConnection,
    rows: &[(i64, String)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_string(rows).expect("numbers and strings serialise");
    sqlx::query(
        "INSERT INTO events_fts (rowid, text) \
         SELECT json_extract(value, '$[0]'), json_extract(value, '$[1]') FROM json_each(?1)",
    )
    .bind(json)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// The moderation condition of `events` row against `moderations m`, for
/// events that arrive after the moderation that concerns them.
const LATE_MATCH: &str = "m.channel_ref = events.channel_ref AND ( \
       (m.action = 'deleted' AND m.target_event_id = events.event_id) \
    OR (m.at BETWEEN events.sent_at AND events.sent_at + ?1 \
        AND (m.action = 'cleared' OR m.target_login = events.author_login)))";

/// Rows per multi-row statement. Powers of two, so a batch of any size
/// needs at most a handful of distinct statements (each prepared once and
/// cached).
const CHUNK_ROWS: [usize; 8] = [128, 64, 32, 16, 8, 4, 2, 1];

/// The multi-row statements.
#[derive(Clone, Copy)]
enum Statement {
    /// Inserts rows of 12 values.
    Insert,
    /// Finds which `(platform, event_id)` pairs exist.
    Existing,
}

/// The `kind` statement for up to `remaining` rows: how many rows it takes,
/// and its SQL.
fn statement(kind: Statement, remaining: usize) -> (usize, &'static str) {
    fn build(rows: usize, kind: Statement) -> String {
        match kind {
            Statement::Insert => format!(
                "INSERT OR IGNORE INTO events (platform, event_id, channel_ref, kind, sent_at, \
                 stored_at, author_login, text, body, author_id, quoted_user, quoted_event) \
                 VALUES {}",
                vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; rows].join(", ")
            ),
            Statement::Existing => format!(
                "SELECT platform, event_id FROM events WHERE (platform, event_id) IN (VALUES {})",
                vec!["(?, ?)"; rows].join(", ")
            ),
        }
    }
    static INSERT: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        CHUNK_ROWS
            .iter()
            .map(|&r| build(r, Statement::Insert))
            .collect()
    });
    static EXISTING: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        CHUNK_ROWS
            .iter()
            .map(|&r| build(r, Statement::Existing))
            .collect()
    });
    let i = CHUNK_ROWS
        .iter()
        .position(|&rows| rows <= remaining)
        .unwrap_or(CHUNK_ROWS.len() - 1);
    let sql = match kind {
        Statement::Insert => &INSERT[i],
        Statement::Existing => &EXISTING[i],
    };
    (CHUNK_ROWS[i], sql.as_str())
}

/// The `(platform, event_id)` pairs among `events` the store already has.
async fn existing_ids<'e>(
    tx: &mut SqliteConnection,
    events: &[&'e NewEvent<'e>],
) -> Result<std::collections::HashSet<(&'e str, &'e str)>, StoreError> {
    let mut found = std::collections::HashSet::new();
    let mut pos = 0;
    while pos < events.len() {
        let (rows, sql) = statement(Statement::Existing, events.len() - pos);
        let mut query = sqlx::query(sql);
        for e in &events[pos..pos + rows] {
            query = query
                .bind(e.event.platform.as_str())
                .bind(e.event.id.as_str());
        }
        for row in query.fetch_all(&mut *tx).await? {
            let platform: String = row.try_get("platform")?;
            let id: String = row.try_get("event_id")?;
            if let Some(e) = events[pos..pos + rows]
                .iter()
                .find(|e| e.event.platform == platform && e.event.id == id)
            {
                found.insert((e.event.platform.as_str(), e.event.id.as_str()));
            }
        }
        pos += rows;
    }
    Ok(found)
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn write_batch(&self, events: &[NewEvent<'_>]) -> Result<WriteOutcome, StoreError> {
        if events.is_empty() {
            return Ok(WriteOutcome::default());
        }
        let stored_at = Utc::now().timestamp_millis();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        // Under the write lock: nobody commits between this and our rows.
        let after: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
                .fetch_optional(&mut *tx)
                .await?;

        let channels = self.channels.resolve(&mut tx, events).await?;

        let mut outcome = WriteOutcome {
            after: after.and_then(Cursor::new),
            ..WriteOutcome::default()
        };
        // Which events are new: the first occurrence of an id in the batch,
        // if the store does not have it yet.
        let mut candidates = batch::first_occurrences(events);
        let rules = self.rules(&mut tx).await?;
        let refused = privacy::drop_refused(&mut candidates, &rules);
        let existing = existing_ids(&mut tx, &candidates).await?;
        let fresh: Vec<&NewEvent<'_>> = candidates
            .into_iter()
            .filter(|e| !existing.contains(&(e.event.platform.as_str(), e.event.id.as_str())))
            .collect();

        // Insert them in multi-row statements: one round trip to SQLite's
        // thread per chunk, not per event, and no rows coming back.
        let logins: Vec<Option<String>> = fresh
            .iter()
            .map(|e| e.event.author.as_ref().map(|a| a.login.to_lowercase()))
            .collect();
        let mut pos = 0;
        while pos < fresh.len() {
            let (rows, sql) = statement(Statement::Insert, fresh.len() - pos);
            let mut query = sqlx::query(sql);
            for (e, login) in fresh[pos..pos + rows].iter().zip(&logins[pos..pos + rows]) {
                let ev = e.event;
                let keys = privacy::keys(ev);
                query = query
                    .bind(ev.platform.as_str())
                    .bind(ev.id.as_str())
                    .bind(channels.of(e))
                    .bind(ev.kind_name())
                    .bind(ev.sent_at.timestamp_millis())
                    .bind(stored_at)
                    .bind(login.as_deref())
                    .bind(ev.text.as_deref())
                    .bind(e.json)
                    .bind(keys.author_id)
                    .bind(keys.quoted_user)
                    .bind(keys.quoted_event);
            }
            query.execute(&mut *tx).await?;
            pos += rows;
        }
        // Under the write lock AUTOINCREMENT hands out after+1, after+2, ...
        // in insertion order, and every fresh row was inserted (the
        // duplicates were filtered out above, under the same lock). Anything
        // else is a broken store: the transaction rolls back and the batch
        // is retried (the error is transient: nothing is dead-lettered for
        // a fault of the store).
        let head: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
                .fetch_optional(&mut *tx)
                .await?;
        let base = after.unwrap_or(0);
        let inserted = head.unwrap_or(0) - base;
        if inserted != fresh.len() as i64 {
            return Err(StoreError::SequenceMismatch {
                after: base,
                inserted: fresh.len(),
                moved: inserted,
            });
        }
        let seqs: Vec<i64> = (1..=inserted).map(|i| base + i).collect();
        outcome.duplicates = events.len() - fresh.len() - refused;
        outcome.refused = refused;
        let committed = batch::committed(&fresh, &seqs, |e| channels.of(e))?;
        if inserted > 0 {
            index_batch(&mut tx, &fresh, &seqs, &committed.per_channel).await?;
        }
        batch::finish(
            tx,
            outcome,
            committed,
            stored_at,
            self.lookback_ms,
            &self.channels,
            channels,
        )
        .await
    }

    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let channel_rows = || async {
            let rows: Vec<ChannelRow> =
                sqlx::query_as(CHANNEL_ROWS).fetch_all(&self.reader).await?;
            Ok(rows)
        };
        let Some(plan::Plan { channels, text }) =
            plan::plan(query, &self.limits, channel_rows).await?
        else {
            return Ok(Vec::new());
        };
        let filter = &query.filter;

        let mut qb = QueryBuilder::<Sqlite>::new(COLUMNS);
        if text.is_some() {
            qb.push(" JOIN events_fts ON events_fts.rowid = e.seq");
        }
        qb.push(" WHERE 1 = 1");
        if let Some(ids) = channels {
            qb.push(" AND e.channel_ref IN (");
            let mut list = qb.separated(", ");
            for id in ids {
                list.push_bind(id);
            }
            qb.push(")");
        }
        if let Some(user) = &filter.user {
            qb.push(" AND e.author_login = ")
                .push_bind(user.to_lowercase());
        }
        if !filter.kinds.is_empty() {
            qb.push(" AND e.kind IN (");
            let mut list = qb.separated(", ");
            for kind in &filter.kinds {
                list.push_bind(kind.as_str());
            }
            qb.push(")");
        }
        // With a text query, order and bound by the FTS table's rowid (the
        // same value): FTS5 then walks its matches in order and the LIMIT
        // stops it early, instead of sorting every match of a common word.
        let key = if text.is_some() {
            "events_fts.rowid"
        } else {
            "e.seq"
        };
        let searching = text.is_some();
        if let Some(text) = text {
            qb.push(" AND events_fts MATCH ").push_bind(text.fts5());
        }
        if let Some(after) = query.after {
            qb.push(format!(" AND {key} > ")).push_bind(after.get());
        }
        if let Some(before) = query.before {
            qb.push(format!(" AND {key} < ")).push_bind(before.get());
        }
        qb.push(match query.order {
            Order::Asc => format!(" ORDER BY {key} ASC LIMIT "),
            Order::Desc => format!(" ORDER BY {key} DESC LIMIT "),
        });
        qb.push_bind(i64::try_from(query.limit).unwrap_or(i64::MAX));
        let rows: Vec<EventRow> = if searching {
            let _slot = self.gate.enter().await?;
            let mut conn = self.search.acquire().await?;
            // Interrupted at the deadline. A handler left behind by a
            // search whose future was dropped is replaced by the next.
            let deadline = Instant::now() + self.limits.timeout;
            let interrupted = Arc::new(AtomicBool::new(false));
            let flag = interrupted.clone();
            conn.lock_handle()
                .await?
                .set_progress_handler(1000, move || {
                    let go_on = Instant::now() < deadline;
                    if !go_on {
                        flag.store(true, Ordering::Relaxed);
                    }
                    go_on
                });
            let rows = qb.build_query_as().fetch_all(&mut *conn).await;
            conn.lock_handle().await?.remove_progress_handler();
            rows.map_err(|e| {
                if interrupted.load(Ordering::Relaxed) {
                    search::timed_out(&self.limits)
                } else {
                    StoreError::Database(e)
                }
            })?
        } else {
            qb.build_query_as().fetch_all(&self.reader).await?
        };
        rows.into_iter().map(StoredEvent::try_from).collect()
    }

    async fn get(&self, platform: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        let sql = format!("{COLUMNS} WHERE e.platform = ?1 AND e.event_id = ?2");
        let row: Option<EventRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(platform)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        row.map(StoredEvent::try_from).transpose()
    }

    async fn head(&self) -> Result<Option<Cursor>, StoreError> {
        let seq: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
                .fetch_optional(&self.reader)
                .await?;
        Ok(seq.and_then(Cursor::new))
    }

    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        let rows: Vec<SummaryRow> = sqlx::query_as(
            "SELECT platform, channel, routing_key, event_count, message_count, last_cursor, \
             last_event_at, status_cursor FROM channels \
             ORDER BY event_count DESC, platform, channel",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(ChannelSummary::from).collect())
    }

    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<u64, StoreError> {
        retention::apply(self, policy).await
    }

    async fn set_opted_out(
        &self,
        subject: &common::privacy::Subject,
        opted_out: bool,
        requested_by: &str,
    ) -> Result<(), StoreError> {
        self.record_rule(subject, Some(opted_out), None, requested_by)
            .await
            .map(|_| ())
    }

    async fn opt_outs(&self) -> Result<Vec<OptOut>, StoreError> {
        let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
            "SELECT kind, platform, value, updated_at FROM privacy_rules \
             WHERE opted_out <> 0 ORDER BY updated_at, kind, platform, value",
        )
        .fetch_all(&self.reader)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(kind, platform, value, since)| OptOut {
                kind,
                platform,
                value,
                since,
            })
            .collect())
    }

    async fn purge(
        &self,
        subject: &common::privacy::Subject,
        requested_by: &str,
    ) -> Result<PurgeReport, StoreError> {
        privacy::purge(self, subject, requested_by).await
    }

    async fn audit_log(&self, limit: i64) -> Result<Vec<AuditEntry>, StoreError> {
        let rows: Vec<(i64, String, String, String, i64, i64, i64)> = sqlx::query_as(
            "SELECT at, action, subject, requested_by, rows_deleted, rows_redacted, duration_ms \
             FROM privacy_audit ORDER BY id DESC LIMIT ?1",
        )
        .bind(limit)
        .fetch_all(&self.reader)
        .await?;
        Ok(rows.into_iter().map(privacy::audit_entry).collect())
    }

    async fn issue_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM privacy_codes WHERE expires_at < ?1")
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO privacy_codes (code, platform, login, expires_at) VALUES (?1, ?2, ?3, ?4)",
        )
        .bind(code)
        .bind(platform)
        .bind(login)
        .bind(expires_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn record_notice(&self, id: &str) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let new = sqlx::query("INSERT OR IGNORE INTO privacy_notices (id, at) VALUES (?1, ?2)")
            .bind(id)
            .bind(Utc::now().timestamp_millis())
            .execute(&mut *tx)
            .await?
            .rows_affected();
        tx.commit().await?;
        Ok(new == 1)
    }

    async fn forget_notice(&self, id: &str) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("DELETE FROM privacy_notices WHERE id = ?1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn notice_applied(&self, id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query_scalar::<_, i64>("SELECT 1 FROM privacy_notices WHERE id = ?1")
                .bind(id)
                .fetch_optional(&self.reader)
                .await?
                .is_some(),
        )
    }

    async fn redeem_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let used = sqlx::query(
            "DELETE FROM privacy_codes WHERE code = ?1 AND platform = ?2 AND login = ?3 \
             AND expires_at >= ?4",
        )
        .bind(code)
        .bind(platform)
        .bind(login)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(used == 1)
    }

    async fn close(&self) {
        self.stop_checkpoints.cancel();
        self.writer.close().await;
        self.reader.close().await;
        self.search.close().await;
        // Fold the WAL into the database and truncate it: a tidy file.
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
            .execute(&self.checkpointer)
            .await
        {
            tracing::debug!(error = %e, "final checkpoint failed");
        }
        self.checkpointer.close().await;
    }
}

impl RetentionSql for SqliteStore {
    const DELETE_OLDER: &'static str = "DELETE FROM events WHERE seq IN \
         (SELECT seq FROM events WHERE sent_at < ?1 LIMIT ?2)";
    const DELETE_CHANNEL_BEFORE: &'static str = "DELETE FROM events WHERE seq IN \
         (SELECT seq FROM events WHERE channel_ref = ?1 AND seq < ?2 LIMIT ?3)";

    async fn channels_over(&self, max: i64) -> Result<Vec<i64>, StoreError> {
        Ok(
            sqlx::query_scalar("SELECT id FROM channels WHERE event_count > ?1")
                .bind(max)
                .fetch_all(&self.reader)
                .await?,
        )
    }

    async fn keep_from(&self, channel: i64, max: i64) -> Result<Option<i64>, StoreError> {
        Ok(sqlx::query_scalar(
            "SELECT seq FROM events WHERE channel_ref = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2",
        )
        .bind(channel)
        .bind(max - 1)
        .fetch_optional(&self.reader)
        .await?)
    }

    async fn delete_chunk(
        &self,
        sql: &'static str,
        binds: &[i64],
        limit: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut query = sqlx::query(sql);
        for value in binds {
            query = query.bind(*value);
        }
        let deleted = query.bind(limit).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(deleted)
    }
}

impl PrivacySql for SqliteStore {
    async fn record_rule(
        &self,
        subject: &common::privacy::Subject,
        opted_out: Option<bool>,
        horizon: Option<i64>,
        requested_by: &str,
    ) -> Result<i64, StoreError> {
        let (kind, platform, value) = privacy::rule_key(subject);
        let now = Utc::now().timestamp_millis();
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(
            "INSERT INTO privacy_rules (kind, platform, value, opted_out, horizon, updated_at) \
             VALUES (?1, ?2, ?3, COALESCE(?4, 0), ?5, ?6) \
             ON CONFLICT (kind, platform, value) DO UPDATE SET \
                 opted_out = COALESCE(?4, opted_out), \
                 horizon = CASE WHEN ?5 IS NULL THEN horizon \
                                ELSE max(COALESCE(horizon, ?5), ?5) END, \
                 updated_at = ?6",
        )
        .bind(kind)
        .bind(&platform)
        .bind(&value)
        .bind(opted_out)
        .bind(horizon)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE privacy_state SET version = version + 1")
            .execute(&mut *tx)
            .await?;
        if let Some(out) = opted_out {
            insert_audit(
                &mut tx,
                &privacy::opt_audit(subject, out, requested_by, now),
            )
            .await?;
        }
        let head: Option<i64> =
            sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = 'events'")
                .fetch_optional(&mut *tx)
                .await?;
        tx.commit().await?;
        Ok(head.unwrap_or(0))
    }

    async fn purge_chunk(
        &self,
        subject: &common::privacy::Subject,
        head: i64,
        limit: i64,
    ) -> Result<Chunk, StoreError> {
        use common::privacy::Subject;
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let (cond, a, b): (&str, String, String) = match subject {
            Subject::User { platform, user_id } => (
                "platform = ?3 AND author_id = ?4",
                platform.clone(),
                user_id.clone(),
            ),
            Subject::Channel { platform, channel } => (
                "channel_ref IN (SELECT id FROM channels WHERE platform = ?3 AND channel = ?4)",
                platform.clone(),
                channel.clone(),
            ),
            Subject::Message {
                platform,
                message_id,
            } => (
                "platform = ?3 AND event_id = ?4",
                platform.clone(),
                message_id.clone(),
            ),
            Subject::Before { before } => (
                "sent_at < CAST(?3 AS INTEGER) AND ?4 = ''",
                before.timestamp_millis().to_string(),
                String::new(),
            ),
        };
        let rows: Vec<(i64, String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT seq, platform, event_id FROM events WHERE seq <= ?1 AND {cond} LIMIT ?2"
        )))
        .bind(head)
        .bind(limit)
        .bind(&a)
        .bind(&b)
        .fetch_all(&mut *tx)
        .await?;
        let deleting: std::collections::HashSet<i64> = rows.iter().map(|r| r.0).collect();
        let user = match subject {
            Subject::User { user_id, .. } => Some(user_id.as_str()),
            _ => None,
        };
        let mut by_platform: HashMap<&str, std::collections::HashSet<String>> = HashMap::new();
        for (_, platform, id) in &rows {
            by_platform.entry(platform).or_default().insert(id.clone());
        }
        let mut redacted = 0;
        for (platform, ids) in &by_platform {
            redacted += Self::redact_quotes_of(&mut tx, platform, user, ids, &deleting).await?;
        }
        let seqs = serde_json::to_string(&deleting.iter().collect::<Vec<_>>()).expect("numbers");
        let deleted =
            sqlx::query("DELETE FROM events WHERE seq IN (SELECT value FROM json_each(?1))")
                .bind(seqs)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        tx.commit().await?;
        Ok(Chunk { deleted, redacted })
    }

    async fn redact_user_quotes(
        &self,
        platform: &str,
        user_id: &str,
        limit: i64,
    ) -> Result<u64, StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows: Vec<(i64, String, Option<String>)> = sqlx::query_as(
            "SELECT seq, body, text FROM events WHERE platform = ?1 AND quoted_user = ?2 LIMIT ?3",
        )
        .bind(platform)
        .bind(user_id)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
        let found = rows.len() as u64;
        let none = std::collections::HashSet::new();
        for (seq, body, text) in rows {
            rewrite(
                &mut tx,
                seq,
                &body,
                text.as_deref(),
                Some(user_id),
                &none,
                "quoted_user",
            )
            .await?;
        }
        tx.commit().await?;
        Ok(found)
    }

    /// A purge writes chunk after chunk, and the WAL starts over from its
    /// beginning only when a write begins once a checkpoint has caught up
    /// with all of it: the background checkpoint never did between chunks,
    /// so the WAL grew by every page the purge wrote (tens of GB for a
    /// million rows) and the disk, busy copying it, made the writer's
    /// fsyncs take seconds (docs/benchmarks.md "Purge"). So the purge
    /// waits for a passive checkpoint (which never blocks ingest) to catch
    /// up before its next chunk; a few tries, as ingest writes meanwhile.
    async fn between_chunks(&self) -> Result<(), StoreError> {
        for _ in 0..5 {
            let (_, log, done): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(PASSIVE)")
                .fetch_one(&self.checkpointer)
                .await?;
            if log == done {
                break;
            }
        }
        Ok(())
    }

    async fn scrub(&self) -> Result<(), StoreError> {
        // The full-text index is contentless: a delete only records a
        // tombstone, and the words stay in the index's segments until a
        // merge rewrites them (FTS5's `secure-delete` needs the deleted
        // text, which a contentless table does not have). So merge, each
        // step its own write transaction of about FTS5_MERGE_PAGES pages,
        // until no segment that existed before the first step is left;
        // `secure_delete` zeroes the pages the old segments leave.
        //
        // Not "until a step finds nothing to do": while the consumer
        // ingests, every batch adds a segment, and a `merge` with a
        // negative page count first moves every segment onto one new level,
        // which restarts the merge in progress: under ingest that loop
        // never ended, rewrote the whole index again and again, and grew
        // the WAL until the disk was full (docs/benchmarks.md "Purge").
        // So only the first step (or one after a step found nothing to
        // continue) is negative; the next ones continue that one merge.
        let phase = Instant::now();
        let old = fts5_segments(&fts5_structure(&self.writer).await?);
        let pages: u64 = old.iter().map(|s| s.pages).sum();
        let most = 2 * pages / FTS5_MERGE_PAGES.unsigned_abs() + 1_000;
        let mut steps = 0;
        let mut gather = true;
        loop {
            steps += 1;
            let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
            let before: i64 = sqlx::query_scalar("SELECT total_changes()")
                .fetch_one(&mut *tx)
                .await?;
            sqlx::query("INSERT INTO events_fts (events_fts, rank) VALUES ('merge', ?1)")
                .bind(if gather {
                    -FTS5_MERGE_PAGES
                } else {
                    FTS5_MERGE_PAGES
                })
                .execute(&mut *tx)
                .await?;
            let after: i64 = sqlx::query_scalar("SELECT total_changes()")
                .fetch_one(&mut *tx)
                .await?;
            let now = fts5_segments(&fts5_structure(&mut *tx).await?);
            tx.commit().await?;
            let merged = after - before >= 2;
            if !now.iter().any(|s| old.iter().any(|o| o.id == s.id)) {
                break;
            }
            if gather && !merged {
                // Nothing to merge: one segment without tombstones.
                break;
            }
            if steps >= most {
                tracing::warn!(
                    steps,
                    "the full-text merge after a purge did not finish; the next purge continues it"
                );
                break;
            }
            gather = !merged;
        }
        privacy::phase_done("fts_merge", phase, steps);
        let phase = Instant::now();
        // Fold the WAL (which still holds the pages as they were before the
        // purge) into the file, then truncate it. Readers in the middle of
        // a snapshot make it busy: try again until they moved on.
        for attempt in 0..100u32 {
            let (busy, _, _): (i64, i64, i64) = sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)")
                .fetch_one(&self.checkpointer)
                .await?;
            if busy == 0 {
                privacy::phase_done("checkpoint", phase, u64::from(attempt) + 1);
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10 * u64::from(attempt.min(10) + 1))).await;
        }
        tracing::warn!(
            "the WAL could not be truncated after a purge (readers kept it busy); it will be at the next purge or shutdown"
        );
        Ok(())
    }

    async fn audit(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        insert_audit(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}

async fn insert_audit(tx: &mut SqliteConnection, e: &AuditEntry) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO privacy_audit (at, action, subject, requested_by, rows_deleted, \
         rows_redacted, duration_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(e.at)
    .bind(&e.action)
    .bind(&e.subject)
    .bind(&e.requested_by)
    .bind(e.rows_deleted)
    .bind(e.rows_redacted)
    .bind(e.duration_ms)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

impl Drop for SqliteStore {
    fn drop(&mut self) {
        self.stop_checkpoints.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scrub tells the full-text segments apart by FTS5's structure
    /// record: it must decode, and a merge must make new segments.
    #[tokio::test]
    async fn the_fts5_structure_record_lists_the_segments_a_merge_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("s.sqlite").display());
        let store = SqliteStore::open(&url, &StoreOptions::default())
            .await
            .unwrap();
        for batch in 0..3 {
            let events: Vec<common::ChatEvent> = (0..50)
                .map(|n| {
                    let mut e = common::ChatEvent::new(
                        format!("{batch}-{n}"),
                        "twitch",
                        "chan",
                        Utc::now(),
                        Utc::now(),
                        common::schema::EventBody::Message(Default::default()),
                    );
                    e.text = Some(format!("word{n} batch{batch}"));
                    e
                })
                .collect();
            let encoded = super::super::encode(events);
            store
                .write_batch(&super::super::new_events(&encoded))
                .await
                .unwrap();
        }
        let before = fts5_segments(&fts5_structure(&store.writer).await.unwrap());
        assert_eq!(before.len(), 3, "one segment per batch: {before:?}");
        assert!(before.iter().all(|s| s.pages >= 1));
        sqlx::query("INSERT INTO events_fts (events_fts, rank) VALUES ('merge', -1000)")
            .execute(&store.writer)
            .await
            .unwrap();
        let after = fts5_segments(&fts5_structure(&store.writer).await.unwrap());
        assert_eq!(after.len(), 1, "{after:?}");
        assert!(!before.iter().any(|s| s.id == after[0].id));
        store.close().await;
    }

    #[test]
    fn busy_and_io_errors_are_transient() {
        assert!(is_transient(&sqlx::Error::PoolTimedOut));
        assert!(!is_transient(&sqlx::Error::RowNotFound));
    }
}
