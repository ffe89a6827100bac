//! The corpus of real Twitch IRC lines (`testdata/corpus/`, a copy of
//! `../shared/corpus/`; see its SOURCES.md).

use std::path::PathBuf;

/// Path of the vendored corpus file.
pub fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../testdata/corpus/twitch-irc-real.txt")
}

/// Every line of the corpus, in file order (no trailing CR/LF).
pub fn lines() -> Vec<String> {
    let text = std::fs::read_to_string(path()).expect("read corpus");
    text.lines().map(str::to_owned).collect()
}

/// The corpus lines whose command is `command` (e.g. `PRIVMSG`).
pub fn lines_with_command(command: &str) -> Vec<String> {
    lines()
        .into_iter()
        .filter(|l| command_of(l) == Some(command))
        .collect()
}

/// The IRC command of a raw line.
pub fn command_of(line: &str) -> Option<&str> {
    let mut rest = line;
    if rest.starts_with('@') {
        rest = rest.split_once(' ')?.1;
    }
    if rest.starts_with(':') {
        rest = rest.split_once(' ')?.1;
    }
    rest.split(' ').next()
}

/// `line` addressed to `#to` instead of its own channel.
pub fn retarget(line: &str, to: &str) -> String {
    match crate::fake_irc::channel_of(line) {
        Some(from) => line.replacen(&format!(" #{from}"), &format!(" #{to}"), 1),
        None => line.to_owned(),
    }
}

/// `line` with its IRCv3 tag `tag` set to `value`: replaced when present,
/// added first when not.
pub fn set_tag(line: &str, tag: &str, value: &str) -> String {
    let start = if line.starts_with(&format!("@{tag}=")) {
        Some(1)
    } else if line.starts_with('@') {
        let tags_end = line.find(' ').unwrap_or(line.len());
        line[..tags_end].find(&format!(";{tag}=")).map(|i| i + 1)
    } else {
        None
    };
    match start {
        Some(start) => {
            let vstart = start + tag.len() + 1;
            let vend = line[vstart..]
                .find([';', ' '])
                .map_or(line.len(), |e| vstart + e);
            format!("{}{value}{}", &line[..vstart], &line[vend..])
        }
        None if line.starts_with('@') => format!("@{tag}={value};{}", &line[1..]),
        None => format!("@{tag}={value} {line}"),
    }
}

/// `n` PRIVMSG lines from the corpus (those with tags), sent round-robin to
/// `channels`, each with the unique id `<prefix>-<i>`: a realistic flood.
pub fn flood_privmsgs(channels: &[String], n: usize, prefix: &str) -> Vec<String> {
    let templates: Vec<String> = lines_with_command("PRIVMSG")
        .into_iter()
        .filter(|l| l.starts_with('@') && crate::fake_irc::channel_of(l).is_some())
        .collect();
    (0..n)
        .map(|i| {
            let line = retarget(
                &templates[i % templates.len()],
                &channels[i % channels.len()],
            );
            set_tag(&line, "id", &format!("{prefix}-{i}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_tag_replaces_or_adds_and_retarget_moves_the_channel() {
        let line = "@badges=;id=abc;tmi-sent-ts=1 :u!u@u PRIVMSG #from :hi;id=not-a-tag";
        assert_eq!(
            set_tag(line, "id", "x-1"),
            "@badges=;id=x-1;tmi-sent-ts=1 :u!u@u PRIVMSG #from :hi;id=not-a-tag"
        );
        assert_eq!(
            set_tag("@id=abc;a=b :u PRIVMSG #c :m", "id", "n"),
            "@id=n;a=b :u PRIVMSG #c :m"
        );
        // Absent in the tags (the body's ";id=" is not a tag): added first.
        assert_eq!(
            set_tag("@a=b :u PRIVMSG #c :x;id=1", "id", "n"),
            "@id=n;a=b :u PRIVMSG #c :x;id=1"
        );
        assert_eq!(
            set_tag(":u PRIVMSG #c :m", "id", "n"),
            "@id=n :u PRIVMSG #c :m"
        );
        assert_eq!(
            retarget("@a=b :u PRIVMSG #from :m", "to"),
            "@a=b :u PRIVMSG #to :m"
        );
        let flood = flood_privmsgs(&["x".into(), "y".into()], 4, "t");
        assert_eq!(flood.len(), 4);
        for (i, l) in flood.iter().enumerate() {
            assert_eq!(crate::fake_irc::channel_of(l), Some(["x", "y"][i % 2]));
            assert!(
                l.starts_with('@') && l.contains(&format!("id=t-{i}")),
                "{l}"
            );
        }
    }
}
