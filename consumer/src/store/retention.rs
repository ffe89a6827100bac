//! How a store applies a [`RetentionPolicy`], the same for every backend
//! (`crate::retention` decides when): events older than the policy's age,
//! then, channel by channel, all but the newest `max_per_channel`.
//!
//! Rows go in chunks of [`RETENTION_CHUNK`], each chunk its own write
//! transaction, so ingest never waits long for the write lock. Each
//! backend's [`RetentionSql`] says which rows and runs one chunk; its
//! triggers keep the channel counters, ids and moderations right.

use chrono::Utc;

use super::{RetentionPolicy, StoreError};

/// Rows deleted per retention transaction.
pub(crate) const RETENTION_CHUNK: i64 = 5_000;

/// The backend's half of retention: its SQL.
pub(crate) trait RetentionSql: Sync {
    /// Deletes up to the chunk size (bound last) of the events sent before
    /// a cutoff in ms (bound first).
    const DELETE_OLDER: &'static str;
    /// Deletes up to the chunk size (bound last) of a channel's (bound
    /// first) events with a cursor below a bound (bound second).
    const DELETE_CHANNEL_BEFORE: &'static str;

    /// Deletes, before the chunks, what the backend can delete of the
    /// events sent before `cutoff` (ms) wholesale; returns how many went.
    /// Nothing, unless the backend says otherwise.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn delete_older_wholesale(&self, cutoff: i64) -> Result<u64, StoreError> {
        let _ = cutoff;
        Ok(0)
    }

    /// The channels holding more than `max` events.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn channels_over(&self, max: i64) -> Result<Vec<i64>, StoreError>;

    /// The cursor of `channel`'s `max`-th newest event: the oldest to keep.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn keep_from(&self, channel: i64, max: i64) -> Result<Option<i64>, StoreError>;

    /// Runs `sql` bound to `binds` then `limit` in one write transaction;
    /// returns the rows it deleted.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn delete_chunk(
        &self,
        sql: &'static str,
        binds: &[i64],
        limit: i64,
    ) -> Result<u64, StoreError>;
}

/// Deletes what `policy` says to from `store`; returns how many events
/// went.
///
/// # Errors
/// [`StoreError`] when the database fails (what was deleted before stays
/// deleted).
pub(crate) async fn apply<S: RetentionSql>(
    store: &S,
    policy: &RetentionPolicy,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    if let Some(max_age) = policy.max_age {
        let age = chrono::Duration::from_std(max_age).unwrap_or(chrono::Duration::MAX);
        let cutoff = Utc::now()
            .checked_sub_signed(age)
            .map_or(i64::MIN, |t| t.timestamp_millis());
        deleted += store.delete_older_wholesale(cutoff).await?;
        deleted += delete_chunked(store, S::DELETE_OLDER, &[cutoff]).await?;
    }
    if let Some(max) = policy.max_per_channel.filter(|n| *n > 0) {
        let max = i64::try_from(max).unwrap_or(i64::MAX);
        for channel in store.channels_over(max).await? {
            if let Some(keep_from) = store.keep_from(channel, max).await? {
                deleted +=
                    delete_chunked(store, S::DELETE_CHANNEL_BEFORE, &[channel, keep_from]).await?;
            }
        }
    }
    Ok(deleted)
}

/// Deletes the rows `sql` (bound to `binds` then the chunk size) chooses,
/// chunk by chunk, until a chunk comes back short.
async fn delete_chunked(
    store: &impl RetentionSql,
    sql: &'static str,
    binds: &[i64],
) -> Result<u64, StoreError> {
    let mut total = 0;
    loop {
        let deleted = store.delete_chunk(sql, binds, RETENTION_CHUNK).await?;
        total += deleted;
        if deleted < u64::try_from(RETENTION_CHUNK).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}
