//! [`Selector`]: which events a live subscription wants, as routing-key
//! patterns (AMQP topic syntax, the same a queue binding uses) plus
//! optional kinds. It answers both questions: does this live event match
//! (the hub), and which stored events match (history).

use common::routing::{MAX_CHANNEL_WORD, MAX_PLATFORM_WORD, ROOT, TopicPattern, escape_word};
use common::schema::EventKind;

use crate::store::EventFilter;

/// Patterns and kinds, in a canonical order (sorted, without duplicates)
/// so equal selectors compare and hash equal and the hub can share the
/// matching work between clients who asked for the same thing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Selector {
    patterns: Vec<TopicPattern>,
    kinds: Vec<EventKind>,
}

impl Selector {
    /// A selector for `patterns` (empty = every routing key) and `kinds`
    /// (empty = every kind).
    pub fn new(mut patterns: Vec<TopicPattern>, mut kinds: Vec<EventKind>) -> Self {
        patterns.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        patterns.dedup();
        kinds.sort_unstable();
        kinds.dedup();
        Self { patterns, kinds }
    }

    /// Everything.
    pub fn all() -> Self {
        Self::new(Vec::new(), Vec::new())
    }

    /// The patterns.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// The kinds (empty = all).
    pub fn kinds(&self) -> &[EventKind] {
        &self.kinds
    }

    /// Whether an event with this routing key and kind is wanted.
    pub fn matches(&self, routing_key: &str, kind: EventKind) -> bool {
        (self.kinds.is_empty() || self.kinds.contains(&kind))
            && (self.patterns.is_empty() || self.patterns.iter().any(|p| p.matches(routing_key)))
    }

    /// The same selection as a store filter.
    pub fn filter(&self) -> EventFilter {
        EventFilter {
            patterns: self.patterns.clone(),
            kinds: self.kinds.clone(),
            ..EventFilter::default()
        }
    }
}

/// The pattern for a channel given as `platform:channel` (that channel on
/// that platform) or `channel` (that channel on every platform), escaped
/// exactly as routing keys are, so `Some.Chan` cannot widen the pattern.
///
/// # Errors
/// A message when the platform or channel part is empty.
pub fn channel_pattern(spec: &str) -> Result<TopicPattern, String> {
    let (platform, channel) = match spec.split_once(':') {
        Some((p, c)) => (Some(p), c),
        None => (None, spec),
    };
    if channel.is_empty() || platform.is_some_and(str::is_empty) {
        return Err(format!(
            "channel `{spec}` must be `platform:channel` or `channel`"
        ));
    }
    let platform = platform.map_or_else(|| "*".to_owned(), |p| escape_word(p, MAX_PLATFORM_WORD));
    let pattern = format!(
        "{ROOT}.{platform}.{}",
        escape_word(channel, MAX_CHANNEL_WORD)
    );
    TopicPattern::parse(&pattern).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::routing::routing_key;

    fn p(s: &str) -> TopicPattern {
        TopicPattern::parse(s).unwrap()
    }

    #[test]
    fn equal_requests_make_equal_selectors() {
        let a = Selector::new(
            vec![p("chat.b.*"), p("chat.a.*"), p("chat.a.*")],
            vec![EventKind::Ban, EventKind::Message],
        );
        let b = Selector::new(
            vec![p("chat.a.*"), p("chat.b.*")],
            vec![EventKind::Message, EventKind::Ban, EventKind::Ban],
        );
        assert_eq!(a, b);
    }

    #[test]
    fn matches_patterns_and_kinds() {
        let s = Selector::new(vec![p("chat.twitch.*")], vec![EventKind::Message]);
        assert!(s.matches("chat.twitch.x", EventKind::Message));
        assert!(!s.matches("chat.twitch.x", EventKind::Ban));
        assert!(!s.matches("chat.youtube.x", EventKind::Message));
        assert!(Selector::all().matches("chat.youtube.x", EventKind::Ban));
    }

    #[test]
    fn channel_shortcuts_escape_like_routing_keys() {
        let exact = channel_pattern("twitch:Some.Chan").unwrap();
        assert!(exact.matches(&routing_key("twitch", "Some.Chan")));
        assert!(!exact.matches(&routing_key("youtube", "Some.Chan")));
        let any = channel_pattern("xqcow").unwrap();
        assert!(any.matches(&routing_key("twitch", "xqcow")));
        assert!(any.matches(&routing_key("youtube", "xqcow")));
        assert!(!any.matches(&routing_key("twitch", "xqcow2")));
        let wild = channel_pattern("twitch:*").unwrap();
        assert!(
            !wild.matches(&routing_key("twitch", "anything")),
            "`*` is a name here, not a wildcard"
        );
        assert!(channel_pattern("twitch:").is_err());
        assert!(channel_pattern(":x").is_err());
    }
}
