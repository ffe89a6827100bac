//! Configuration: documented in .env.example, and refused at start with a
//! message naming the key when it is wrong.

use std::process::Command;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_auth-server"));
    // No .env from the developer's checkout, no inherited settings.
    cmd.env_clear().current_dir(std::env::temp_dir());
    cmd
}

#[test]
fn env_example_lists_every_key() {
    testkit::repo::assert_env_example_covers::<auth_server::Config>();
}

#[test]
fn help_describes_the_binary() {
    let out = bin().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Usage: auth-server"), "{text}");
    assert!(text.contains("--config"), "{text}");
}

#[test]
fn invalid_config_fails_at_start_naming_the_key() {
    let out = bin()
        .env("AUTH_HTTP_ADDR", "not-an-address")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "exit code 2 for bad config");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AUTH_HTTP_ADDR"), "{err}");
}

#[test]
fn malformed_config_file_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "this is = = not toml").unwrap();
    let out = bin().arg("--config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("configuration error"));
}
