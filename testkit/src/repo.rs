//! Checks on the repository's newcomer files (`.env.example`, compose).

use std::collections::BTreeSet;
use std::path::PathBuf;

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every variable `.env.example` mentions, set (`KEY=`) or optional
/// (`# KEY=`).
pub fn env_example_keys() -> BTreeSet<String> {
    let text = std::fs::read_to_string(root().join(".env.example")).expect("read .env.example");
    text.lines()
        .filter_map(|line| {
            let line = line.trim_start_matches('#').trim();
            let (key, _) = line.split_once('=')?;
            let ok = !key.is_empty()
                && key
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
            ok.then(|| key.to_owned())
        })
        .collect()
}

/// The environment variable names a config struct reads, i.e. its keys in
/// upper case.
pub fn config_env_names<T: common::config::ServiceConfig>() -> BTreeSet<String> {
    common::config::keys::<T>()
        .iter()
        .map(|k| common::config::env_name(k))
        .collect()
}

/// Asserts `.env.example` lists every variable of `T`.
pub fn assert_env_example_covers<T: common::config::ServiceConfig>() {
    let listed = env_example_keys();
    let missing: Vec<_> = config_env_names::<T>()
        .difference(&listed)
        .cloned()
        .collect();
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}
