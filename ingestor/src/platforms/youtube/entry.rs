//! What a user may ask the YouTube source to read (`YOUTUBE_CHANNELS`, the
//! admin API): a channel handle (`@name`), a channel id (`UC…`), a video id,
//! or a YouTube URL that names one of those.
//!
//! Before it is resolved an entry is known to the channel manager by its
//! [`Entry::key`]; once resolved it goes by its channel id, the channel word
//! of `chat.youtube.<channel>` (handles can change hands, ids cannot).

/// One thing to read.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Entry {
    /// A channel id (`UC` + 22 characters): follow its broadcasts, this
    /// one and later ones.
    Channel(String),
    /// A handle, lower case with its `@`: resolved to a channel.
    Handle(String),
    /// A video id (11 characters): follow that broadcast's chat.
    Video(String),
}

impl Entry {
    /// Parses what a user typed.
    ///
    /// # Errors
    /// A message naming the input and what is accepted.
    pub fn parse(input: &str) -> Result<Self, String> {
        let trimmed = input.trim();
        let entry = match url_path(trimmed) {
            Some((short, path)) => from_url(short, path),
            None => from_word(trimmed),
        };
        entry.ok_or_else(|| {
            format!(
                "`{input}` is not a YouTube channel (@handle or UC… id), video id or YouTube URL"
            )
        })
    }

    /// The channel manager's name for the entry until it is resolved: the
    /// channel id, the `@handle`, or the video id.
    pub fn key(&self) -> &str {
        match self {
            Self::Channel(s) | Self::Handle(s) | Self::Video(s) => s,
        }
    }
}

/// Whether `s` is a channel id: `UC` and 22 characters of `[A-Za-z0-9_-]`.
pub fn is_channel_id(s: &str) -> bool {
    s.len() == 24 && s.starts_with("UC") && s.bytes().all(is_id_byte)
}

/// Whether `s` is a video id: 11 characters of `[A-Za-z0-9_-]`.
pub fn is_video_id(s: &str) -> bool {
    s.len() == 11 && s.bytes().all(is_id_byte)
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// A handle: `@` and 1 to 100 bytes with no space or URL punctuation
/// (YouTube allows letters of any script, digits, `_`, `-` and `.`),
/// lower-cased because handles are case-insensitive.
fn handle(s: &str) -> Option<Entry> {
    let name = s.strip_prefix('@')?;
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| !c.is_whitespace() && !c.is_control() && !"/?#&@%:,".contains(c));
    ok.then(|| Entry::Handle(format!("@{}", name.to_lowercase())))
}

fn from_word(s: &str) -> Option<Entry> {
    if is_channel_id(s) {
        Some(Entry::Channel(s.to_owned()))
    } else if is_video_id(s) {
        Some(Entry::Video(s.to_owned()))
    } else {
        handle(s)
    }
}

/// A YouTube URL's path after the host (`youtube.com/...`, `youtu.be/...`,
/// with or without scheme and `www.`/`m.`), and whether it is a short
/// `youtu.be` link; `None` if `s` is not a YouTube URL.
fn url_path(s: &str) -> Option<(bool, &str)> {
    let s = s
        .strip_prefix("https://")
        .or_else(|| s.strip_prefix("http://"))
        .unwrap_or(s);
    let (host, rest) = s.split_once('/').unwrap_or((s, ""));
    let host = host.to_ascii_lowercase();
    let host = host
        .strip_prefix("www.")
        .or_else(|| host.strip_prefix("m."))
        .unwrap_or(&host);
    match host {
        "youtube.com" => Some((false, rest)),
        "youtu.be" => Some((true, rest)),
        _ => None,
    }
}

fn from_url(short: bool, path: &str) -> Option<Entry> {
    let (path, query) = path.split_once('?').unwrap_or((path, ""));
    let path = path.split('#').next().unwrap_or(path).trim_end_matches('/');
    let mut parts = path.split('/');
    let first = parts.next().unwrap_or("");
    let second = parts.next();
    match (first, second) {
        // youtu.be/<id>
        (id, None) if short => is_video_id(id).then(|| Entry::Video(id.to_owned())),
        _ if short => None,
        ("watch", None) => query
            .split('&')
            .find_map(|kv| kv.strip_prefix("v="))
            .filter(|v| is_video_id(v))
            .map(|v| Entry::Video(v.to_owned())),
        ("live" | "shorts" | "embed", Some(id)) if is_video_id(id) => {
            Some(Entry::Video(id.to_owned()))
        }
        ("channel", Some(id)) if is_channel_id(id) => Some(Entry::Channel(id.to_owned())),
        (h, _) if h.starts_with('@') => handle(&percent_decoded(h)),
        _ => None,
    }
}

/// `%xx` escapes decoded (a handle in a URL may be percent-encoded).
fn percent_decoded(s: &str) -> String {
    common::http::percent_decode_path(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_accepted_form_parses_to_its_entry() {
        let chan = "UCX6OQ3DkcsbYNE6H8uQQuVA";
        let video = "dQw4w9WgXcQ";
        for (input, want) in [
            (chan.to_owned(), Entry::Channel(chan.into())),
            (format!(" {chan} "), Entry::Channel(chan.into())),
            (video.to_owned(), Entry::Video(video.into())),
            ("@MrBeast".into(), Entry::Handle("@mrbeast".into())),
            (
                "@café.ünï-x_1".into(),
                Entry::Handle("@café.ünï-x_1".into()),
            ),
            (
                format!("https://www.youtube.com/watch?v={video}&t=42s"),
                Entry::Video(video.into()),
            ),
            (
                format!("https://youtube.com/watch?feature=share&v={video}"),
                Entry::Video(video.into()),
            ),
            (
                format!("https://www.youtube.com/live/{video}?si=abc"),
                Entry::Video(video.into()),
            ),
            (format!("youtu.be/{video}"), Entry::Video(video.into())),
            (
                format!("https://youtu.be/{video}?t=1"),
                Entry::Video(video.into()),
            ),
            (
                format!("http://m.youtube.com/channel/{chan}/live"),
                Entry::Channel(chan.into()),
            ),
            (
                "https://www.youtube.com/@SomeOne/streams".into(),
                Entry::Handle("@someone".into()),
            ),
            (
                "https://www.youtube.com/@caf%C3%A9".into(),
                Entry::Handle("@café".into()),
            ),
        ] {
            assert_eq!(Entry::parse(&input), Ok(want), "{input}");
        }
    }

    #[test]
    fn what_is_not_a_youtube_entry_is_refused_with_a_clear_message() {
        for bad in [
            "",
            "@",
            "@has space",
            "xqcow",
            "UCtooshort",
            "https://www.youtube.com/watch?v=short",
            "https://example.com/watch?v=dQw4w9WgXcQ",
            "https://www.youtube.com/channel/notachannel",
            "dQw4w9WgXc!",
            "https://www.youtube.com/dQw4w9WgXcQ",
        ] {
            let err = Entry::parse(bad).unwrap_err();
            assert!(err.contains("is not a YouTube channel"), "{bad}: {err}");
        }
    }

    #[test]
    fn keys_and_kinds() {
        let e = Entry::parse("@Name").unwrap();
        assert_eq!(e.key(), "@name");
        assert_eq!(e, Entry::Handle("@name".into()));
        let v = Entry::parse("dQw4w9WgXcQ").unwrap();
        assert_eq!(v, Entry::Video("dQw4w9WgXcQ".into()));
        assert!(is_channel_id("UC_x5XG1OV2P6uZZ5FSM9Ttw"));
        assert!(!is_channel_id("UU_x5XG1OV2P6uZZ5FSM9Ttw"));
    }
}
