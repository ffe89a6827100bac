//! The per-channel counters (`chatbus_ingestor_events_received_total`,
//! `…_published_total` and `…_confirmed_total`, labelled `platform`,
//! `channel`, `kind`), kept here
//! rather than in the `metrics` recorder because a channel's series must go
//! when the channel is parted: the recorder has no way to remove one, so a
//! reader sent lines for channels it never asked for would keep a series
//! for each forever. `/metrics` renders them after the recorder's page.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Mutex;

use common::schema::EventKind;

/// Which per-channel counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Appended to the outbox.
    Received,
    /// Written to the broker.
    Published,
    /// Confirmed by the broker.
    Confirmed,
}

type Key = (String, String, &'static str);

/// Most series kept (channel and kind pairs); past it, new channels are
/// counted under [`OTHER_CHANNELS`] (a webhook source, whose channels no
/// manager parts, could otherwise grow them without end).
const MAX_SERIES: usize = 20_000;

/// The channel label of what is counted past [`MAX_SERIES`].
pub const OTHER_CHANNELS: &str = "(other)";

/// Every channel's counts: `(platform, channel, kind)` to
/// `[received, published, confirmed]`.
static COUNTS: Mutex<BTreeMap<Key, [u64; 3]>> = Mutex::new(BTreeMap::new());

/// Adds a batch's events to `counter`, one lock per batch.
pub fn count<'a>(counter: Counter, items: impl Iterator<Item = (&'a str, &'a str, EventKind)>) {
    let mut batch: HashMap<(&str, &str, EventKind), u64> = HashMap::new();
    for key in items {
        *batch.entry(key).or_default() += 1;
    }
    if batch.is_empty() {
        return;
    }
    let mut counts = COUNTS.lock().expect("channel metrics lock");
    for ((platform, channel, kind), n) in batch {
        let key = (platform.to_owned(), channel.to_owned(), kind.as_str());
        let key = if counts.contains_key(&key) {
            key
        } else if counter != Counter::Received {
            // Published or confirmed after its channel was parted (still
            // in the outbox then): its series is gone and stays gone.
            continue;
        } else if counts.len() >= MAX_SERIES {
            (
                platform.to_owned(),
                OTHER_CHANNELS.to_owned(),
                kind.as_str(),
            )
        } else {
            key
        };
        counts.entry(key).or_default()[counter as usize] += n;
    }
}

/// Removes every series of `platform`'s `channel` (it was parted).
pub fn forget(platform: &str, channel: &str) {
    COUNTS
        .lock()
        .expect("channel metrics lock")
        .retain(|(p, c, _), _| !(p == platform && c == channel));
}

/// The counters in Prometheus's text format.
pub fn render() -> String {
    let counts = COUNTS.lock().expect("channel metrics lock");
    let mut out = String::new();
    for (counter, name, help) in [
        (
            Counter::Received,
            "chatbus_ingestor_events_received_total",
            "Events appended to the outbox, by channel and kind.",
        ),
        (
            Counter::Published,
            "chatbus_ingestor_events_published_total",
            "Events written to the broker, by channel and kind.",
        ),
        (
            Counter::Confirmed,
            "chatbus_ingestor_events_confirmed_total",
            "Events confirmed by the broker, by channel and kind.",
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for ((platform, channel, kind), values) in counts.iter() {
            let value = values[counter as usize];
            if value > 0 {
                let _ = writeln!(
                    out,
                    "{name}{{platform=\"{}\",channel=\"{}\",kind=\"{kind}\"}} {value}",
                    escape(platform),
                    escape(channel)
                );
            }
        }
    }
    out
}

/// A label value as Prometheus's text format wants it.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_render_and_a_parted_channel_is_forgotten() {
        let items = [
            ("demo-metrics", "a", EventKind::Message),
            ("demo-metrics", "a", EventKind::Message),
            ("demo-metrics", "b\"x", EventKind::Ban),
        ];
        count(Counter::Received, items.iter().copied());
        count(Counter::Published, items[..1].iter().copied());
        let page = render();
        assert!(page.contains(
            "chatbus_ingestor_events_received_total{platform=\"demo-metrics\",channel=\"a\",kind=\"message\"} 2"
        ), "{page}");
        assert!(page.contains(
            "chatbus_ingestor_events_published_total{platform=\"demo-metrics\",channel=\"a\",kind=\"message\"} 1"
        ), "{page}");
        assert!(
            page.contains("channel=\"b\\\"x\",kind=\"ban\"} 1"),
            "{page}"
        );
        forget("demo-metrics", "a");
        let page = render();
        assert!(!page.contains("channel=\"a\""), "{page}");
        assert!(page.contains("channel=\"b\\\"x\""), "{page}");
    }
}
