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

use common::routing::{parse_routing_key, routing_key};
use sqlx::{PgPool, Row, SqlitePool};

use super::StoreError;
use super::postgres::WRITE_LOCK;

const READABLE_ROUTING_KEYS: &str = "readable_routing_keys";

/// Runs the steps the SQLite migrations asked for.
///
/// # Errors
/// [`StoreError`] when the database fails; the step stays asked for.
pub(super) async fn run_sqlite(pool: &SqlitePool) -> Result<(), StoreError> {
    let mut tx = pool.begin_with("BEGIN IMMEDIATE").await?;
    let asked = sqlx::query("DELETE FROM upgrade_steps WHERE name = ?1")
        .bind(READABLE_ROUTING_KEYS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if asked == 0 {
        return Ok(());
    }
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
    tx.commit().await?;
    tracing::info!(changed, "rewrote stored routing keys with A-Z kept literal");
    Ok(())
}

/// Runs the steps the PostgreSQL migrations asked for.
///
/// # Errors
/// [`StoreError`] when the database fails; the step stays asked for.
pub(super) async fn run_postgres(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // The writers' lock: no batch inserts a channel while keys change.
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(WRITE_LOCK)
        .execute(&mut *tx)
        .await?;
    let asked = sqlx::query("DELETE FROM upgrade_steps WHERE name = $1")
        .bind(READABLE_ROUTING_KEYS)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if asked == 0 {
        return Ok(());
    }
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
    tx.commit().await?;
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
