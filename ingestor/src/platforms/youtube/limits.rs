//! The bounds on what YouTube sends, so a broken or hostile answer costs a
//! known amount and never stops reading for good: the size of an answer
//! (read as a stream, `common::body`), the messages in a page (counted
//! while the page is parsed, so an over-full page is refused before it is
//! expanded), error text cut before it is kept, logged or shown, the
//! polling interval clamped to a floor and a ceiling, and JSON with a lone
//! surrogate escape (`\ud83d`) repaired to U+FFFD instead of refused.

use std::fmt;
use std::time::Duration;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// The most bytes of a peer's error text (a Google `message`, a gRPC
/// status message) kept in an error, a log line or `/channels`.
pub const MAX_ERROR_TEXT: usize = 300;

/// Shorter bounds for the identifiers in an error (a Google `reason`).
pub const MAX_ERROR_WORD: usize = 64;

/// The configured bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest answer body, or one streamList message.
    pub max_response_bytes: usize,
    /// Most messages in one page.
    pub max_page_items: usize,
    /// Floor of YouTube's polling interval.
    pub min_poll_interval: Duration,
    /// Ceiling of YouTube's polling interval.
    pub max_poll_interval: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_response_bytes: 16 * 1024 * 1024,
            max_page_items: 5_000,
            min_poll_interval: Duration::from_secs(1),
            max_poll_interval: Duration::from_secs(60),
        }
    }
}

/// How a polling interval YouTube asked for was clamped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clamped {
    /// Within the bounds.
    No,
    /// Raised to the floor.
    Floor,
    /// Lowered to the ceiling.
    Ceiling,
}

impl Limits {
    /// The wait before the next poll when YouTube asked for `asked`.
    pub fn poll_interval(&self, asked: Duration) -> (Duration, Clamped) {
        if asked < self.min_poll_interval {
            (self.min_poll_interval, Clamped::Floor)
        } else if asked > self.max_poll_interval {
            (self.max_poll_interval, Clamped::Ceiling)
        } else {
            (asked, Clamped::No)
        }
    }
}

/// Replaces, in place, every JSON `\uXXXX` escape of a surrogate that is
/// not half of a pair with `\ufffd` (U+FFFD), as invalid UTF-8 read from
/// IRC becomes U+FFFD: serde_json refuses lone surrogates, and one odd
/// message must not lose its page. Same length, so nothing moves. Returns
/// how many were replaced.
pub fn repair_lone_surrogates(json: &mut [u8]) -> usize {
    fn hex4(b: &[u8]) -> Option<u16> {
        let s = std::str::from_utf8(b.get(..4)?).ok()?;
        u16::from_str_radix(s, 16).ok()
    }
    fn escape_at(json: &[u8], i: usize) -> Option<u16> {
        if json.get(i) == Some(&b'\\') && json.get(i + 1) == Some(&b'u') {
            hex4(&json[i + 2..])
        } else {
            None
        }
    }
    let mut repaired = 0;
    let mut i = 0;
    while i + 1 < json.len() {
        if json[i] != b'\\' {
            i += 1;
            continue;
        }
        if json[i + 1] != b'u' {
            // `\\`, `\"`, `\n`…: skip the escaped character too.
            i += 2;
            continue;
        }
        match escape_at(json, i) {
            Some(0xD800..=0xDBFF) => {
                if matches!(escape_at(json, i + 6), Some(0xDC00..=0xDFFF)) {
                    i += 12;
                } else {
                    json[i + 2..i + 6].copy_from_slice(b"fffd");
                    repaired += 1;
                    i += 6;
                }
            }
            Some(0xDC00..=0xDFFF) => {
                json[i + 2..i + 6].copy_from_slice(b"fffd");
                repaired += 1;
                i += 6;
            }
            _ => i += 2,
        }
    }
    repaired
}

/// One page of `liveChatMessages.list` as parsed within the limits.
#[derive(Debug, Default)]
pub struct RawPage {
    /// The messages, at most the limit.
    pub items: Vec<Value>,
    /// `nextPageToken`.
    pub next_page_token: Option<String>,
    /// `pollingIntervalMillis`, saturated to `u64::MAX` if larger.
    pub polling_interval_millis: Option<u64>,
    /// `offlineAt`.
    pub offline_at: Option<String>,
}

/// Parses a page, refusing it at its `max_items + 1`th message, before the
/// rest is read.
///
/// # Errors
/// The JSON error; for too many messages a custom error that says so
/// ([`is_too_many_items`]).
pub fn parse_page(json: &[u8], max_items: usize) -> Result<RawPage, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_slice(json);
    let page = PageSeed { max_items }.deserialize(&mut de)?;
    de.end()?;
    Ok(page)
}

const TOO_MANY: &str = "more messages in one page than YOUTUBE_MAX_PAGE_ITEMS";

/// Whether `e` is [`parse_page`]'s refusal of a page with too many
/// messages.
pub fn is_too_many_items(e: &serde_json::Error) -> bool {
    e.to_string().starts_with(TOO_MANY)
}

struct PageSeed {
    max_items: usize,
}

impl<'de> DeserializeSeed<'de> for PageSeed {
    type Value = RawPage;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<RawPage, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for PageSeed {
    type Value = RawPage;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a liveChatMessageListResponse object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawPage, A::Error> {
        let mut page = RawPage::default();
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "items" => {
                    page.items = map.next_value_seed(ItemsSeed {
                        max: self.max_items,
                    })?;
                }
                "nextPageToken" => page.next_page_token = map.next_value()?,
                "offlineAt" => page.offline_at = map.next_value()?,
                "pollingIntervalMillis" => {
                    let v: Value = map.next_value()?;
                    page.polling_interval_millis = v
                        .as_u64()
                        .or_else(|| v.as_f64().map(|f| f.max(0.0).min(u64::MAX as f64) as u64));
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(page)
    }
}

struct ItemsSeed {
    max: usize,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed {
    type Value = Vec<Value>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        // `any`, so `null` reaches `visit_unit`.
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of liveChatMessage")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Vec<Value>, E> {
        Ok(Vec::new())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max));
        while let Some(item) = seq.next_element::<Value>()? {
            if items.len() == self.max {
                return Err(de::Error::custom(format_args!("{TOO_MANY} ({})", self.max)));
            }
            items.push(item);
        }
        Ok(items)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lone_surrogates_become_the_replacement_character_and_pairs_stay() {
        let mut json = br#"{"a":"x\ud83d y","b":"\ud83d\ude00","c":"\\ud83d","d":"\udc00"}"#.to_vec();
        assert!(serde_json::from_slice::<Value>(&json).is_err());
        assert_eq!(repair_lone_surrogates(&mut json), 2);
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["a"], "x\u{fffd} y");
        assert_eq!(v["b"], "😀");
        assert_eq!(v["c"], "\\ud83d", "an escaped backslash is not an escape");
        assert_eq!(v["d"], "\u{fffd}");
        // A high surrogate at the very end of the body.
        let mut end = br#""\ud83d"#.to_vec();
        assert_eq!(repair_lone_surrogates(&mut end), 1);
    }

    #[test]
    fn a_page_over_the_item_limit_is_refused_while_parsing() {
        let page = |n: usize| {
            serde_json::json!({
                "items": (0..n).map(|i| serde_json::json!({"id": i})).collect::<Vec<_>>(),
                "nextPageToken": "p1",
                "pollingIntervalMillis": 10_000_000_000_000_000_000u64,
                "kind": "x",
            })
            .to_string()
        };
        let ok = parse_page(page(3).as_bytes(), 3).unwrap();
        assert_eq!(ok.items.len(), 3);
        assert_eq!(ok.polling_interval_millis, Some(10_000_000_000_000_000_000));
        assert_eq!(ok.next_page_token.as_deref(), Some("p1"));
        let e = parse_page(page(4).as_bytes(), 3).unwrap_err();
        assert!(is_too_many_items(&e), "{e}");
        let huge = parse_page(br#"{"pollingIntervalMillis": 1e300, "items": null}"#, 3).unwrap();
        assert_eq!(huge.polling_interval_millis, Some(u64::MAX));
        assert!(!is_too_many_items(&parse_page(b"<html>", 3).unwrap_err()));
    }

    #[test]
    fn the_polling_interval_is_clamped_to_the_floor_and_the_ceiling() {
        let l = Limits::default();
        assert_eq!(l.poll_interval(Duration::ZERO), (Duration::from_secs(1), Clamped::Floor));
        assert_eq!(
            l.poll_interval(Duration::from_millis(u64::MAX)),
            (Duration::from_secs(60), Clamped::Ceiling)
        );
        assert_eq!(l.poll_interval(Duration::from_secs(5)), (Duration::from_secs(5), Clamped::No));
    }
}
