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

use super::fold::fold_words;
use super::search::SearchLimits;
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
pub(crate) struct Plan {
    /// The channels it reads; `None`: every channel. Never empty.
    pub channels: Option<Vec<i64>>,
    /// The text query; `None`: no text filter.
    pub text: Option<TextQuery>,
}

/// Plans `query`. `channel_rows` lists the stored channels (it is called
/// only when the filter names a platform, a channel or patterns).
/// `Ok(None)`: the query selects nothing.
///
/// # Errors
/// [`StoreError::SearchTooLong`] when the `q` is over `limits`; what
/// `channel_rows` fails with.
pub(crate) async fn plan<F>(
    query: &EventQuery,
    limits: &SearchLimits,
    channel_rows: impl FnOnce() -> F,
) -> Result<Option<Plan>, StoreError>
where
    F: Future<Output = Result<Vec<ChannelRow>, StoreError>>,
{
    let filter = &query.filter;
    let text = match filter.text.as_deref() {
        Some(t) => match TextQuery::parse(t, limits)? {
            Some(q) => Some(q),
            None if is_blank_text(t) => None,
            None => return Ok(None),
        },
        None => None,
    };
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
/// dropped.
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

/// One word of a `q`: the folded tokens it holds, matched next to each
/// other (`a-b` is `a` then `b`), the last one as a prefix if asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Phrase {
    /// Folded tokens: letters and digits only, never empty.
    pub tokens: Vec<String>,
    /// The word ended in `*`.
    pub prefix: bool,
}

/// A parsed `q`: every phrase must occur. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TextQuery {
    pub phrases: Vec<Phrase>,
}

impl TextQuery {
    /// Parses `input`; `Ok(None)` when no word has a token (blank, only
    /// `*`, only punctuation).
    ///
    /// # Errors
    /// [`StoreError::SearchTooLong`] when `input` has more bytes, or more
    /// tokens once folded, than `limits` allow.
    pub(crate) fn parse(input: &str, limits: &SearchLimits) -> Result<Option<Self>, StoreError> {
        let too_long = |words| {
            metrics::counter!("chatbus_consumer_search_refused_total", "reason" => "too_long")
                .increment(1);
            StoreError::SearchTooLong {
                words,
                bytes: input.len(),
                max_words: limits.max_words,
                max_bytes: limits.max_bytes,
            }
        };
        if input.len() > limits.max_bytes {
            return Err(too_long(None));
        }
        let mut phrases = Vec::new();
        let mut words = 0;
        for (word, prefix) in search_words(input) {
            let tokens = fold_words(word);
            words += tokens.len();
            if !tokens.is_empty() {
                phrases.push(Phrase { tokens, prefix });
            }
        }
        if words > limits.max_words {
            return Err(too_long(Some(words)));
        }
        Ok((!phrases.is_empty()).then_some(Self { phrases }))
    }

    /// The query as PostgreSQL `tsquery` text, for one
    /// `to_tsquery('simple', $1)`: phrases joined by `&`, the tokens of a
    /// phrase by `<->`, each token quoted, `:*` for a prefix.
    pub(crate) fn tsquery(&self) -> String {
        let quote = |t: &str| format!("'{}'", t.replace('\\', "\\\\").replace('\'', "''"));
        self.phrases
            .iter()
            .map(|p| {
                let mut s = p
                    .tokens
                    .iter()
                    .map(|t| quote(t))
                    .collect::<Vec<_>>()
                    .join(" <-> ");
                if p.prefix {
                    s.push_str(":*");
                }
                if p.tokens.len() > 1 {
                    format!("({s})")
                } else {
                    s
                }
            })
            .collect::<Vec<_>>()
            .join(" & ")
    }

    /// The query as an FTS5 `MATCH` expression: one quoted phrase per word
    /// (all must match), `*` after a prefix.
    pub(crate) fn fts5(&self) -> String {
        self.phrases
            .iter()
            .map(|p| {
                format!(
                    "\"{}\"{}",
                    p.tokens.join(" ").replace('"', "\"\""),
                    if p.prefix { "*" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Option<TextQuery> {
        TextQuery::parse(q, &SearchLimits::default()).unwrap()
    }

    #[test]
    fn a_q_becomes_one_query_string_per_store() {
        let q = parse("Héllo a-b* (ﬁ) don't").unwrap();
        assert_eq!(
            q.tsquery(),
            "'hello' & ('a' <-> 'b':*) & 'fi' & ('don' <-> 't')"
        );
        assert_eq!(q.fts5(), r#""hello" "a b"* "fi" "don t""#);
        let q = parse("say \"hi\" AND OR NOT ( x\0y").unwrap();
        assert_eq!(q.fts5(), r#""say" "hi" "and" "or" "not" "x" "y""#);
        assert_eq!(parse("   "), None);
        assert_eq!(parse("***"), None);
        assert_eq!(parse("!!! -- (*)"), None);
        assert_eq!(parse("\u{301}"), None, "a lone accent folds to nothing");
        // FTS5 stops reading at a NUL: control characters split words.
        assert_eq!(parse("\u{1}x*\u{7f}").unwrap().fts5(), r#""x"*"#);
        assert_eq!(parse("\0\t\r"), None);
        assert!(is_blank_text("\0 \u{1}\n"));
        assert!(!is_blank_text("*"));
    }

    #[test]
    fn a_q_over_the_limits_is_refused() {
        let limits = SearchLimits {
            max_words: 4,
            max_bytes: 20,
            ..SearchLimits::default()
        };
        assert!(TextQuery::parse("a b c d", &limits).unwrap().is_some());
        assert!(matches!(
            TextQuery::parse("a b c d-e", &limits),
            Err(StoreError::SearchTooLong { words: Some(5), .. })
        ));
        assert!(matches!(
            TextQuery::parse(&"x".repeat(21), &limits),
            Err(StoreError::SearchTooLong {
                words: None,
                bytes: 21,
                ..
            })
        ));
    }
}
