//! Query planning, the same for every backend: what an [`EventQuery`]
//! narrows to before any SQL is written.
//!
//! A query selects nothing when its limit is 0, when its platform, channel
//! or patterns match no stored channel, or when its text has words but none
//! with a token. Otherwise [`plan`] hands the backend a [`Plan`]: the ids of
//! the matching channels (`None`: every channel) and the text query in the
//! backend's own form (`None`: no text filter). The backend turns the rest of
//! the query (user, kinds, cursors, order, limit) into its SQL.
//!
//! The words of a `q` are split here too ([`search_words`]), so `q` means
//! the same in every store; each store only quotes them its own way.

use std::future::Future;

use super::{EventFilter, EventQuery, StoreError};

/// A stored channel as the planner matches it against a filter.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct ChannelRow {
    /// `channels.id`.
    pub id: i64,
    pub platform: String,
    pub channel: String,
    pub routing_key: String,
}

/// The SQL that lists every stored channel as [`ChannelRow`]s (the same in
/// every backend: it binds nothing).
pub(crate) const CHANNEL_ROWS: &str = "SELECT id, platform, channel, routing_key FROM channels";

/// What a query that may select something narrows to.
#[derive(Debug)]
pub(crate) struct Plan<T> {
    /// The channels it reads; `None`: every channel. Never empty.
    pub channels: Option<Vec<i64>>,
    /// The backend's text query; `None`: no text filter.
    pub text: Option<T>,
}

/// Plans `query`. `channel_rows` lists the stored channels (it is called
/// only when the filter names a platform, a channel or patterns);
/// `text_query` turns a `q` into the backend's text query, `None` when it
/// has no word with a token. `Ok(None)`: the query selects nothing.
///
/// # Errors
/// What `channel_rows` fails with.
pub(crate) async fn plan<T, F>(
    query: &EventQuery,
    channel_rows: impl FnOnce() -> F,
    text_query: impl FnOnce(&str) -> Option<T>,
) -> Result<Option<Plan<T>>, StoreError>
where
    F: Future<Output = Result<Vec<ChannelRow>, StoreError>>,
{
    let filter = &query.filter;
    if query.limit == 0 {
        return Ok(None);
    }
    let channels = if narrows_channels(filter) {
        let ids = matching_channels(filter, channel_rows().await?);
        if ids.is_empty() {
            return Ok(None);
        }
        Some(ids)
    } else {
        None
    };
    let text = match filter.text.as_deref() {
        Some(t) => match text_query(t) {
            Some(q) => Some(q),
            None if is_blank_text(t) => None,
            None => return Ok(None),
        },
        None => None,
    };
    Ok(Some(Plan { channels, text }))
}

/// Whether `filter` selects by channel at all.
fn narrows_channels(filter: &EventFilter) -> bool {
    !filter.patterns.is_empty() || filter.platform.is_some() || filter.channel.is_some()
}

/// The ids of the `rows` whose platform, channel and routing key `filter`
/// selects.
fn matching_channels(filter: &EventFilter, rows: Vec<ChannelRow>) -> Vec<i64> {
    rows.into_iter()
        .filter(|row| {
            filter.platform.as_ref().is_none_or(|p| *p == row.platform)
                && filter.channel.as_ref().is_none_or(|c| *c == row.channel)
                && (filter.patterns.is_empty()
                    || filter.patterns.iter().any(|p| p.matches(&row.routing_key)))
        })
        .map(|row| row.id)
        .collect()
}

/// Whether `c` separates words of a `q`: white space, and control
/// characters. FTS5 reads its query up to the first NUL ("unterminated
/// string"), and neither store's tokenizer puts a control character in a
/// token, so splitting there changes no match.
fn separates_words(c: char) -> bool {
    c.is_whitespace() || c.is_control()
}

/// Whether a `q` has no words at all (only separators): no text filter.
pub(crate) fn is_blank_text(input: &str) -> bool {
    input.split(separates_words).all(str::is_empty)
}

/// The words of a `q`, the same for every store: split at
/// [`separates_words`]; a trailing `*` (or several) makes the word a prefix
/// and is removed; a word without a letter or digit has no token and is
/// dropped. Each store quotes the words its own way.
pub(crate) fn search_words(input: &str) -> impl Iterator<Item = (&str, bool)> {
    input.split(separates_words).filter_map(|word| {
        let (word, prefix) = match word.strip_suffix('*') {
            Some(w) => (w.trim_end_matches('*'), true),
            None => (word, false),
        };
        word.chars()
            .any(char::is_alphanumeric)
            .then_some((word, prefix))
    })
}
