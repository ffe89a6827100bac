//! The channel-id cache, the same for every backend: which `channels.id`
//! each `(platform, channel)` of a batch has.
//!
//! A writer resolves a batch's channels inside its transaction
//! ([`ChannelCache::resolve`]): the ones this process has seen committed come
//! from the cache, the others from the backend ([`CreateChannel`]: its SQL
//! inserts the channel if it is new and reads its id). Those are only
//! [remembered](ChannelCache::remember) once the transaction committed, so
//! the cache never holds an id a rollback took back.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{NewEvent, StoreError};

/// The backend's half: inside a write transaction, the id of a channel,
/// created if it is new.
pub(crate) trait CreateChannel: Send {
    /// The `channels.id` of `(platform, channel)`, inserting the row (with
    /// its routing key) first if there is none.
    ///
    /// # Errors
    /// [`StoreError`] when the database fails.
    async fn channel_ref(&mut self, platform: &str, channel: &str) -> Result<i64, StoreError>;
}

/// `(platform, channel)` -> `channels.id`, filled after commits.
#[derive(Debug, Default)]
pub(crate) struct ChannelCache {
    ids: Mutex<HashMap<(String, String), i64>>,
}

/// The channels of one batch, resolved inside its transaction.
#[derive(Debug)]
pub(crate) struct BatchChannels<'e> {
    ids: HashMap<(&'e str, &'e str), i64>,
    /// Those the cache did not have, to remember after the commit.
    new: Vec<((String, String), i64)>,
}

impl BatchChannels<'_> {
    /// The channel id of `e` (one of the batch's events).
    pub(crate) fn of(&self, e: &NewEvent<'_>) -> i64 {
        self.ids[&(e.event.platform.as_str(), e.event.channel.as_str())]
    }
}

impl ChannelCache {
    fn get(&self, platform: &str, channel: &str) -> Option<i64> {
        self.ids
            .lock()
            .expect("channel cache lock")
            .get(&(platform.to_owned(), channel.to_owned()))
            .copied()
    }

    /// The channel id of every event of `events`, from the cache or else
    /// from `tx`.
    ///
    /// # Errors
    /// What [`CreateChannel::channel_ref`] fails with.
    pub(crate) async fn resolve<'e>(
        &self,
        tx: &mut impl CreateChannel,
        events: &'e [NewEvent<'e>],
    ) -> Result<BatchChannels<'e>, StoreError> {
        let mut ids = HashMap::new();
        let mut new = Vec::new();
        for e in events {
            let key = (e.event.platform.as_str(), e.event.channel.as_str());
            if ids.contains_key(&key) {
                continue;
            }
            let id = match self.get(key.0, key.1) {
                Some(id) => id,
                None => {
                    let id = tx.channel_ref(key.0, key.1).await?;
                    new.push(((key.0.to_owned(), key.1.to_owned()), id));
                    id
                }
            };
            ids.insert(key, id);
        }
        Ok(BatchChannels { ids, new })
    }

    /// Remembers the channels `batch` created, once its transaction
    /// committed.
    pub(crate) fn remember(&self, batch: BatchChannels<'_>) {
        if !batch.new.is_empty() {
            self.ids
                .lock()
                .expect("channel cache lock")
                .extend(batch.new);
        }
    }
}
