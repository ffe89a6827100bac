//! One-time upgrade steps that SQL cannot express, run by each store right
//! after its migrations.
//!
//! A migration asks for a step by inserting its name into `upgrade_steps`;
//! the store runs the step in the transaction that deletes that row (under
//! the write lock), so it runs exactly once, however many consumers open
//! the store at the same moment, and a crash half-way leaves it asked for.
//!
//! * `readable_routing_keys` (SQLite 0005, PostgreSQL 0002): routing keys
//!   keep `A-Z` literal now, so every stored `channels.routing_key` is
//!   recomputed with [`routing_key`]. The channel is read back from the old
//!   key where it can be (exactly what the previous release escaped; on
//!   PostgreSQL a stored `channel` has lost any NUL), else, for a hashed
//!   word, taken from the row.
//! * `fold_search_text` (SQLite 0006, PostgreSQL 0003): search folds
//!   Unicode in Rust ([`fold`]), so every stored text is indexed again,
//!   folded, in chunks of [`REINDEX_CHUNK`] rows: SQLite's (emptied,
//!   contentless) FTS table gets every row, PostgreSQL's `search` column is
//!   recomputed.

use common::routing::{parse_routing_key, routing_key};
use sqlx::{PgConnection, PgPool, Row, SqliteConnection, SqlitePool};

use super::StoreError;
use super::fold::fold;
use super::postgres::WRITE_LOCK;

const READABLE_ROUTING_KEYS: &str = "readable_routing_keys";
const FOLD_SEARCH_TEXT: &str = "fold_search_text";

/// Rows re-indexed per statement by `fold_search_text`.
const REINDEX_CHUNK: i64 = 2000;

/// Runs the steps the SQLite migrations asked for.
///
/// # Errors
/// [`StoreError`] when the database fails; the step stays asked for.
pub(super) async fn run_sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    if asked_sqlite(&mut tx, READABLE_ROUTING_KEYS).await? {
        readable_keys_sqlite(&mut tx).await?;
    }
    if asked_sqlite(&mut tx, FOLD_SEARCH_TEXT).await? {
        fold_search_sqlite(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether step `name` was asked for (its row is deleted: the step runs in
/// this transaction).
async fn asked_sqlite(tx: &mut SqliteConnection, name: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query("DELETE FROM upgrade_steps WHERE name = ?1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0)
}

/// `fold_search_text` on SQLite.
async fn fold_search_sqlite(tx: &mut SqliteConnection) -> Result<(), StoreError> {
    let (mut last, mut indexed) = (0_i64, 0_usize);
    loop {
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, text FROM events WHERE seq > ?1 AND text IS NOT NULL \
             ORDER BY seq LIMIT ?2",
        )
        .bind(last)
        .bind(REINDEX_CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        let Some((seq, _)) = rows.last() else { break };
        last = *seq;
        indexed += rows.len();
        let folded: Vec<(i64, String)> = rows.into_iter().map(|(s, t)| (s, fold(&t))).collect();
        super::sqlite::insert_folded(tx, &folded).await?;
    }
    tracing::info!(indexed, "re-indexed the stored texts for search, folded");
    Ok(())
}

/// `readable_routing_keys` on SQLite.
async fn readable_keys_sqlite(tx: &mut SqliteConnection) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT id, platform, channel, routing_key FROM channels")
        .fetch_all(&mut *tx)
        .await?;
    let mut changed = 0_u64;
    for row in rows {
        let old: String = row.try_get("routing_key")?;
        let new = readable_key(&old, row.try_get("platform")?, row.try_get("channel")?);
        if new != old {
            sqlx::query("UPDATE channels SET routing_key = ?1 WHERE id = ?2")
                .bind(&new)
                .bind(row.try_get::<i64, _>("id")?)
                .execute(&mut *tx)
                .await?;
            changed += 1;
        }
    }
    tracing::info!(changed, "rewrote stored routing keys with A-Z kept literal");
    Ok(())
}

/// Runs the steps the PostgreSQL migrations asked for.
///
/// # Errors
/// [`StoreError`] when the database fails; the step stays asked for.
pub(super) async fn run_postgres(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // The writers' lock: no batch inserts a channel or a row meanwhile.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    if asked_postgres(&mut tx, READABLE_ROUTING_KEYS).await? {
        readable_keys_postgres(&mut tx).await?;
    }
    if asked_postgres(&mut tx, FOLD_SEARCH_TEXT).await? {
        fold_search_postgres(&mut tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Whether step `name` was asked for (its row is deleted: the step runs in
/// this transaction).
async fn asked_postgres(tx: &mut PgConnection, name: &str) -> Result<bool, StoreError> {
    Ok(sqlx::query("DELETE FROM upgrade_steps WHERE name = $1")
        .bind(name)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0)
}

/// `fold_search_text` on PostgreSQL.
async fn fold_search_postgres(tx: &mut PgConnection) -> Result<(), StoreError> {
    let (mut last, mut indexed) = (0_i64, 0_usize);
    loop {
        let rows: Vec<(i64, i64, String)> = sqlx::query_as(
            "SELECT stored_at, seq, text FROM events WHERE seq > $1 AND text IS NOT NULL \
             ORDER BY seq LIMIT $2",
        )
        .bind(last)
        .bind(REINDEX_CHUNK)
        .fetch_all(&mut *tx)
        .await?;
        let Some((_, seq, _)) = rows.last() else {
            break;
        };
        last = *seq;
        indexed += rows.len();
        let (mut at, mut seqs, mut folded) = (Vec::new(), Vec::new(), Vec::new());
        for (stored_at, seq, text) in rows {
            at.push(stored_at);
            seqs.push(seq);
            folded.push(fold(&text));
        }
        sqlx::query(
            "UPDATE events e SET search = to_tsvector('simple', u.f) \
             FROM unnest($1::int8[], $2::int8[], $3::text[]) AS u(at, seq, f) \
             WHERE e.stored_at = u.at AND e.seq = u.seq",
        )
        .bind(&at)
        .bind(&seqs)
        .bind(&folded)
        .execute(&mut *tx)
        .await?;
    }
    tracing::info!(indexed, "re-indexed the stored texts for search, folded");
    Ok(())
}

/// `readable_routing_keys` on PostgreSQL.
async fn readable_keys_postgres(tx: &mut PgConnection) -> Result<(), StoreError> {
    let rows = sqlx::query("SELECT id, platform, channel, routing_key FROM channels")
        .fetch_all(&mut *tx)
        .await?;
    let (mut ids, mut keys) = (Vec::new(), Vec::new());
    for row in rows {
        let old: String = row.try_get("routing_key")?;
        let new = readable_key(&old, row.try_get("platform")?, row.try_get("channel")?);
        if new != old {
            ids.push(row.try_get::<i64, _>("id")?);
            keys.push(new);
        }
    }
    sqlx::query(
        "UPDATE channels c SET routing_key = u.key \
         FROM UNNEST($1::bigint[], $2::text[]) AS u(id, key) WHERE c.id = u.id",
    )
    .bind(&ids)
    .bind(&keys)
    .execute(&mut *tx)
    .await?;
    tracing::info!(
        changed = ids.len(),
        "rewrote stored routing keys with A-Z kept literal"
    );
    Ok(())
}

/// The key of the channel whose key was `stored` (previous escape).
fn readable_key(stored: &str, platform: &str, channel: &str) -> String {
    match parse_routing_key(stored) {
        Some((platform, channel)) => routing_key(&platform, &channel),
        None => routing_key(platform, channel),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::routing::previous_routing_key;

    #[test]
    fn stored_keys_are_recomputed_from_what_they_escaped() {
        for (platform, channel) in [
            ("youtube", "UCX6OQ3DkcsbYNE6H8uQQuVA"),
            ("youtube", "UC-lHJZR3Gqxm24_Vd_AJ5Yw"),
            ("twitch", "somechannel"),
            ("twitch", "a.b*#"),
            ("youtube", &format!("UC{}", "X".repeat(78))),
            ("twitch", &"é".repeat(200)),
        ] {
            let old = previous_routing_key(platform, channel);
            assert_eq!(
                readable_key(&old, platform, channel),
                routing_key(platform, channel),
                "{channel}"
            );
            // A second run changes nothing.
            let new = routing_key(platform, channel);
            assert_eq!(readable_key(&new, platform, channel), new);
        }
        // PostgreSQL stored the channel without its NUL; the key had it.
        let old = previous_routing_key("twitch", "A\0b");
        assert_eq!(readable_key(&old, "twitch", "Ab"), "chat.twitch.A-00b");
    }
}
