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
