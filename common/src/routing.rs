//! Routing keys `chat.<platform>.<channel>` and AMQP topic patterns.
//!
//! Each word of a key is *escaped*, never stripped, so that no input can add
//! a word (`.`), widen a binding (`*`, `#`) or make two channels collide:
//!
//! * `a`-`z`, `A`-`Z`, `0`-`9` and `_` stand for themselves (topic
//!   matching is case-sensitive, as YouTube's `UC…` ids are);
//! * every other byte of the UTF-8 form (including `-`) is written `-hh`
//!   with two lower-case hex digits, so `Foo-Bar` becomes `Foo-2dBar`. The
//!   escape is injective and reversible ([`unescape_word`]).
//! * a word whose escaped form would exceed its byte budget keeps a prefix
//!   and ends in `--` + 32 hex digits of the SHA-256 of the original. `--`
//!   never occurs in a normal escaped word, so hashed words cannot collide
//!   with plain ones, and the whole key never exceeds 255 bytes.
//!
//! Channels should be normalised to the platform's lowercase login before
//! they get here; then a Twitch key is simply `chat.twitch.<login>`.
//!
//! The release before this one escaped upper case too (`UC` was `-55-43`).
//! [`previous_routing_key`] still computes that key, for the one release in
//! which the consumer accepts events published under it (spools and queues
//! written before the upgrade); the two escapes never give one key to two
//! different channels.

use sha2::{Digest, Sha256};

/// The first word of every key.
pub const ROOT: &str = "chat";
/// AMQP's limit on a routing key (shortstr).
pub const MAX_KEY_LEN: usize = 255;
/// Budget for the escaped platform word.
pub const MAX_PLATFORM_WORD: usize = 48;
/// Budget for the escaped channel word: what is left of 255 bytes.
pub const MAX_CHANNEL_WORD: usize = MAX_KEY_LEN - ROOT.len() - 2 - MAX_PLATFORM_WORD;

const HASH_MARK: &str = "--";
const HASH_HEX_LEN: usize = 32;

/// The routing key for an event of `platform` in `channel`.
///
/// ```
/// use common::routing::routing_key;
/// assert_eq!(routing_key("twitch", "xqcow"), "chat.twitch.xqcow");
/// assert_eq!(routing_key("twitch", "a.b"), "chat.twitch.a-2eb");
/// ```
pub fn routing_key(platform: &str, channel: &str) -> String {
    join_key(
        &escape_word(platform, MAX_PLATFORM_WORD),
        &escape_word(channel, MAX_CHANNEL_WORD),
    )
}

/// The key the previous release gave (upper case escaped as `-hh` too),
/// which the consumer accepts for one release. Remove it with that.
///
/// ```
/// use common::routing::{previous_routing_key, routing_key};
/// assert_eq!(previous_routing_key("youtube", "UCx"), "chat.youtube.-55-43x");
/// assert_eq!(routing_key("youtube", "UCx"), "chat.youtube.UCx");
/// assert_eq!(previous_routing_key("twitch", "a.b"), routing_key("twitch", "a.b"));
/// ```
pub fn previous_routing_key(platform: &str, channel: &str) -> String {
    join_key(
        &escape_with(platform, MAX_PLATFORM_WORD, is_previously_plain),
        &escape_with(channel, MAX_CHANNEL_WORD, is_previously_plain),
    )
}

fn join_key(platform: &str, channel: &str) -> String {
    let mut key = String::with_capacity(ROOT.len() + platform.len() + channel.len() + 2);
    key.push_str(ROOT);
    key.push('.');
    key.push_str(platform);
    key.push('.');
    key.push_str(channel);
    debug_assert!(key.len() <= MAX_KEY_LEN);
    key
}

/// Escapes one word so it only contains `[A-Za-z0-9_-]` and fits `budget`
/// bytes.
///
/// `budget` must leave room for the hash suffix (at least 34 bytes).
pub fn escape_word(input: &str, budget: usize) -> String {
    escape_with(input, budget, is_plain)
}

fn escape_with(input: &str, budget: usize, is_plain: fn(u8) -> bool) -> String {
    assert!(
        budget >= HASH_MARK.len() + HASH_HEX_LEN,
        "word budget too small"
    );
    let mut out = String::with_capacity(input.len());
    for &byte in input.as_bytes() {
        if is_plain(byte) {
            out.push(byte as char);
        } else {
            push_escape(&mut out, byte);
        }
    }
    if input.is_empty() {
        // An empty word would make `chat.twitch.` which `*` does not match;
        // represent it as the hash of the empty string instead.
        return hashed(&out, input, budget);
    }
    if out.len() > budget {
        return hashed(&out, input, budget);
    }
    out
}

fn is_plain(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || byte == b'_'
}

/// The previous release's plain bytes: no upper case.
fn is_previously_plain(byte: u8) -> bool {
    byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'_'
}

fn push_escape(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push('-');
    out.push(HEX[usize::from(byte >> 4)] as char);
    out.push(HEX[usize::from(byte & 0xf)] as char);
}

fn hashed(escaped: &str, original: &str, budget: usize) -> String {
    let digest = Sha256::digest(original.as_bytes());
    let mut keep = (budget - HASH_MARK.len() - HASH_HEX_LEN).min(escaped.len());
    // Never cut an escape sequence in half: a trailing `-` or `-h` would make
    // the prefix look like a different escape.
    while keep > 0 {
        let tail = &escaped.as_bytes()[..keep];
        match tail.iter().rposition(|&b| b == b'-') {
            Some(pos) if keep - pos < 3 => keep = pos,
            _ => break,
        }
    }
    let mut out = String::with_capacity(budget);
    out.push_str(&escaped[..keep]);
    out.push_str(HASH_MARK);
    for byte in &digest[..HASH_HEX_LEN / 2] {
        out.push_str(&format!("{byte:02x}"));
    }
    out
}

/// Reverses [`escape_word`] for words that were not hashed. A word of the
/// previous escape (`-55` for `U`) decodes to the same text.
///
/// Returns `None` for a hashed word (it cannot be reversed) or for text that
/// is not a valid escaped word.
pub fn unescape_word(word: &str) -> Option<String> {
    if word.contains(HASH_MARK) {
        return None;
    }
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'-' => {
                let hex = word.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b if is_plain(b) => {
                out.push(b);
                i += 1;
            }
            _ => return None,
        }
    }
    String::from_utf8(out).ok()
}

/// Splits a key built by [`routing_key`] back into `(platform, channel)`.
/// Returns `None` if it is not such a key or a word was hashed.
pub fn parse_routing_key(key: &str) -> Option<(String, String)> {
    let mut words = key.split('.');
    if words.next()? != ROOT {
        return None;
    }
    let platform = unescape_word(words.next()?)?;
    let channel = unescape_word(words.next()?)?;
    if words.next().is_some() {
        return None;
    }
    Some((platform, channel))
}

/// An AMQP topic binding pattern (`chat.twitch.*`, `chat.*.x`, `chat.#`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TopicPattern {
    pattern: String,
    words: Vec<String>,
}

/// Why a string is not a usable topic pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern is empty.
    #[error("topic pattern is empty")]
    Empty,
    /// Longer than AMQP allows.
    #[error("topic pattern is longer than {MAX_KEY_LEN} bytes")]
    TooLong,
    /// A word is empty (`a..b`, leading or trailing `.`).
    #[error("topic pattern `{0}` has an empty word")]
    EmptyWord(String),
    /// `*` or `#` mixed with other characters inside a word.
    #[error("topic pattern `{0}`: `*` and `#` must be whole words")]
    PartialWildcard(String),
}

impl TopicPattern {
    /// Parses and validates a pattern.
    ///
    /// # Errors
    /// A [`PatternError`] when the pattern is empty, too long, has an empty
    /// word, or uses `*`/`#` inside a word.
    pub fn parse(pattern: &str) -> Result<Self, PatternError> {
        if pattern.is_empty() {
            return Err(PatternError::Empty);
        }
        if pattern.len() > MAX_KEY_LEN {
            return Err(PatternError::TooLong);
        }
        let mut words = Vec::new();
        for word in pattern.split('.') {
            if word.is_empty() {
                return Err(PatternError::EmptyWord(pattern.to_owned()));
            }
            if word.len() > 1 && (word.contains('*') || word.contains('#')) {
                return Err(PatternError::PartialWildcard(pattern.to_owned()));
            }
            words.push(word.to_owned());
        }
        Ok(Self {
            pattern: pattern.to_owned(),
            words,
        })
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.pattern
    }

    /// Whether `key` matches, with RabbitMQ's topic semantics: `*` is
    /// exactly one word, `#` zero or more words.
    pub fn matches(&self, key: &str) -> bool {
        let key: Vec<&str> = key.split('.').collect();
        matches_words(&self.words, &key)
    }
}

impl std::fmt::Display for TopicPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl std::str::FromStr for TopicPattern {
    type Err = PatternError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

fn matches_words(pattern: &[String], key: &[&str]) -> bool {
    // Iterative matcher with backtracking over the last `#`, like glob `*`.
    let (mut p, mut k) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while k < key.len() {
        if p < pattern.len() && pattern[p] == "#" {
            star = Some((p, k));
            p += 1;
        } else if p < pattern.len() && (pattern[p] == "*" || pattern[p] == key[k]) {
            p += 1;
            k += 1;
        } else if let Some((sp, sk)) = star {
            p = sp + 1;
            k = sk + 1;
            star = Some((sp, sk + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|w| w == "#")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn plain_logins_are_unchanged() {
        assert_eq!(routing_key("twitch", "xqcow"), "chat.twitch.xqcow");
        assert_eq!(
            routing_key("twitch", "some_user_42"),
            "chat.twitch.some_user_42"
        );
    }

    #[test]
    fn dangerous_characters_are_escaped() {
        assert_eq!(routing_key("twitch", "a.b"), "chat.twitch.a-2eb");
        assert_eq!(routing_key("twitch", "*"), "chat.twitch.-2a");
        assert_eq!(routing_key("twitch", "#"), "chat.twitch.-23");
        assert_eq!(routing_key("twitch", "-"), "chat.twitch.-2d");
        assert_eq!(routing_key("twitch", "A"), "chat.twitch.A");
        assert_eq!(routing_key("youtube", "é"), "chat.youtube.-c3-a9");
    }

    #[test]
    fn youtube_ids_stay_readable() {
        assert_eq!(
            routing_key("youtube", "UCX6OQ3DkcsbYNE6H8uQQuVA"),
            "chat.youtube.UCX6OQ3DkcsbYNE6H8uQQuVA"
        );
        assert_eq!(
            routing_key("youtube", "UC-lHJZR3Gqxm24_Vd_AJ5Yw"),
            "chat.youtube.UC-2dlHJZR3Gqxm24_Vd_AJ5Yw"
        );
        assert_eq!(routing_key("youtube", "UCa"), "chat.youtube.UCa");
        assert_ne!(routing_key("youtube", "UCa"), routing_key("youtube", "uca"));
    }

    #[test]
    fn the_previous_escape_is_kept_for_one_release() {
        assert_eq!(
            previous_routing_key("youtube", "UCX6OQ3DkcsbYNE6H8uQQuVA"),
            "chat.youtube.-55-43-586-4f-513-44kcsb-59-4e-456-488u-51-51u-56-41"
        );
        assert_eq!(
            parse_routing_key("chat.youtube.-55-43-586-4f-513-44kcsb-59-4e-456-488u-51-51u-56-41"),
            Some(("youtube".into(), "UCX6OQ3DkcsbYNE6H8uQQuVA".into()))
        );
        // A long upper-case id was hashed before; now it fits.
        let long = format!("UC{}", "X".repeat(78));
        assert!(previous_routing_key("youtube", &long).contains("--"));
        assert_eq!(
            routing_key("youtube", &long),
            format!("chat.youtube.{long}")
        );
    }

    #[test]
    fn long_channels_are_hashed_and_distinct() {
        let a = "x".repeat(1000);
        let b = format!("{}y", "x".repeat(999));
        let (ka, kb) = (routing_key("twitch", &a), routing_key("twitch", &b));
        assert!(ka.len() <= MAX_KEY_LEN && kb.len() <= MAX_KEY_LEN);
        assert_ne!(ka, kb);
        assert!(ka.contains("--"));
    }

    #[test]
    fn patterns_follow_rabbitmq_semantics() {
        let cases = [
            ("chat.twitch.*", "chat.twitch.xqc", true),
            ("chat.twitch.*", "chat.youtube.xqc", false),
            ("chat.twitch.*", "chat.twitch", false),
            ("chat.*.x", "chat.twitch.x", true),
            ("chat.*.x", "chat.twitch.y", false),
            ("chat.#", "chat.twitch.x", true),
            ("chat.#", "chat", true),
            ("#", "anything.at.all", true),
            ("chat.#.x", "chat.a.b.x", true),
            ("chat.#.x", "chat.x", true),
            ("chat.#.x", "chat.a.b.y", false),
            ("#.x.#", "a.x.b", true),
        ];
        for (pattern, key, expected) in cases {
            let p = TopicPattern::parse(pattern).unwrap();
            assert_eq!(p.matches(key), expected, "{pattern} vs {key}");
        }
    }

    #[test]
    fn bad_patterns_are_rejected() {
        assert_eq!(TopicPattern::parse(""), Err(PatternError::Empty));
        assert!(matches!(
            TopicPattern::parse("chat..x"),
            Err(PatternError::EmptyWord(_))
        ));
        assert!(matches!(
            TopicPattern::parse("chat.tw*"),
            Err(PatternError::PartialWildcard(_))
        ));
        assert_eq!(
            TopicPattern::parse(&"a".repeat(300)),
            Err(PatternError::TooLong)
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn any_input_gives_exactly_three_safe_words(platform in any::<String>(), channel in any::<String>()) {
            let key = routing_key(&platform, &channel);
            prop_assert!(key.len() <= MAX_KEY_LEN);
            let words: Vec<&str> = key.split('.').collect();
            prop_assert_eq!(words.len(), 3);
            prop_assert_eq!(words[0], "chat");
            for word in &words {
                prop_assert!(!word.is_empty());
                prop_assert!(word.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            }
            prop_assert!(!key.contains('*') && !key.contains('#'));
        }

        #[test]
        fn distinct_channels_stay_distinct(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            prop_assert_ne!(routing_key("twitch", &a), routing_key("twitch", &b));
        }

        #[test]
        fn the_previous_and_the_new_escape_never_share_a_key(a in any::<String>(), b in any::<String>()) {
            // The consumer accepts either for one release: neither may
            // reach another channel's key.
            prop_assume!(a != b);
            prop_assert_ne!(previous_routing_key("youtube", &a), routing_key("youtube", &b));
        }

        #[test]
        fn mixed_case_channels_stay_distinct(a in "[A-Za-z0-9_-]{1,250}", b in "[A-Za-z0-9_-]{1,250}") {
            prop_assume!(a != b);
            prop_assert_ne!(routing_key("youtube", &a), routing_key("youtube", &b));
            prop_assert_ne!(previous_routing_key("youtube", &a), routing_key("youtube", &b));
        }

        #[test]
        fn near_identical_channels_stay_distinct(base in "[a-z.#*-]{0,300}", extra in any::<char>()) {
            let other = format!("{base}{extra}");
            prop_assert_ne!(routing_key("twitch", &base), routing_key("twitch", &other));
        }

        #[test]
        fn escaping_round_trips(platform in "[a-z]{1,10}", channel in any::<String>()) {
            let key = routing_key(&platform, &channel);
            if let Some((p, c)) = parse_routing_key(&key) {
                prop_assert_eq!(p, platform);
                prop_assert_eq!(c, channel);
            } else {
                // Only hashed (over-long or empty) channels are irreversible.
                prop_assert!(key.contains("--"));
            }
        }

        #[test]
        fn a_channel_key_only_matches_its_own_channel_pattern(a in any::<String>(), b in any::<String>()) {
            prop_assume!(a != b);
            let ka = routing_key("twitch", &a);
            let kb = routing_key("twitch", &b);
            let pattern = TopicPattern::parse(&ka).unwrap();
            prop_assert!(pattern.matches(&ka));
            prop_assert!(!pattern.matches(&kb));
            prop_assert!(TopicPattern::parse("chat.twitch.*").unwrap().matches(&ka));
        }
    }
}
