//! The binary: `auth-server` serves, `status` and `refresh` work on the
//! store, and nothing it logs (at trace level) contains a token or the
//! client secret.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use testkit::fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth, TokenFailure};

use crate::helpers::{browser, get};

/// The binary with a clean environment pointing at `fake`.
fn bin(fake: &FakeOAuth, dir: &Path, port: u16) -> Command {
    let base = fake.base_url();
    let secret_file = dir.join("twitch-secret");
    if !secret_file.exists() {
        std::fs::write(&secret_file, format!("{CLIENT_SECRET}\n")).unwrap();
    }
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_auth-server"));
    cmd.env_clear()
        .current_dir(dir)
        .env("AUTH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env(
            "AUTH_REDIRECT_URL",
            format!("http://127.0.0.1:{port}/auth/callback"),
        )
        .env("TOKEN_STORE_PATH", dir.join("tokenStore.json"))
        .env("TWITCH_CLIENT_ID", CLIENT_ID)
        .env("TWITCH_CLIENT_SECRET_FILE", &secret_file)
        .env("TWITCH_AUTHORIZE_URL", format!("{base}/oauth2/authorize"))
        .env("TWITCH_TOKEN_URL", format!("{base}/oauth2/token"))
        .env("TWITCH_VALIDATE_URL", format!("{base}/oauth2/validate"))
        .env("TWITCH_REVOKE_URL", format!("{base}/oauth2/revoke"))
        .env("RUST_LOG", "trace")
        .env("LOG_FORMAT", "json");
    cmd
}

/// Runs a CLI verb; returns (exit code, stdout, stderr).
async fn verb(fake: &FakeOAuth, dir: &Path, args: &[&str]) -> (i32, String, String) {
    let mut cmd = tokio::process::Command::from(bin(fake, dir, testkit::free_port()));
    cmd.args(args);
    let out = testkit::within(30, "auth-server command", cmd.output())
        .await
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serve_status_refresh_and_no_secret_in_any_log() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let log_path = dir.path().join("server.log");
    let mut server = bin(&fake, dir.path(), port)
        .stderr(Stdio::from(std::fs::File::create(&log_path).unwrap()))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let client = browser();
    testkit::wait_http_ok(20, &format!("{url}/healthz")).await;

    // The whole flow, one failing token request, and the status page.
    let (status, page) = get(&client, &format!("{url}/auth")).await;
    assert_eq!(status, 200, "{page}");
    fake.fail_token_requests(TokenFailure::not_json(), 1);
    let (status, _) = get(&client, &format!("{url}/auth")).await;
    assert_eq!(status, 502);
    let (_, home) = get(&client, &format!("{url}/")).await;
    assert!(home.contains("data-status=\"valid\""), "{home}");

    let mut logs = String::new();
    let (code, out, err) = verb(&fake, dir.path(), &["status"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("twitch:chatbus_bot  valid"), "{out}");
    assert!(
        out.contains("expires:") && out.contains("(in 3h 59m)"),
        "{out}"
    );
    assert!(out.contains("refresh token:  yes"), "{out}");
    logs.push_str(&err);

    let before = fake.stats().refresh_grants;
    let (code, out, err) = verb(&fake, dir.path(), &["refresh"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("twitch:chatbus_bot: refreshed"), "{out}");
    assert_eq!(fake.stats().refresh_grants, before + 1);
    logs.push_str(&err);

    // A rejected refresh token: exit 1, an error log, reauth_required.
    fake.revoke_all_refresh_tokens();
    let (code, out, err) = verb(&fake, dir.path(), &["refresh", "twitch:chatbus_bot"]).await;
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("failed") && out.contains("authorized again"),
        "{out}"
    );
    assert!(
        err.contains("\"level\":\"ERROR\"") && err.contains("reauth_required"),
        "{err}"
    );
    logs.push_str(&err);
    let (_, out, err) = verb(&fake, dir.path(), &["status"]).await;
    assert!(out.contains("twitch:chatbus_bot  reauth_required"), "{out}");
    assert!(out.contains("Invalid refresh token"), "{out}");
    logs.push_str(&err);
    testkit::eventually(10, "the status page shows reauth_required", || {
        let client = client.clone();
        let url = url.clone();
        async move {
            let (_, home) = get(&client, &format!("{url}/")).await;
            home.contains("data-status=\"reauth_required\"")
                .then_some(())
        }
    })
    .await;

    // SIGTERM: a clean stop.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = testkit::within(15, "auth-server exits", async {
        loop {
            if let Some(s) = server.try_wait().unwrap() {
                return s;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(exit.success(), "{exit:?}");
    logs.push_str(&std::fs::read_to_string(&log_path).unwrap());

    // The capture is real: it holds the events we expect...
    assert!(logs.contains("account authorized"), "server log captured");
    assert!(logs.contains("token refreshed"), "refresh log captured");
    assert!(
        logs.contains("authorization failed"),
        "failure log captured"
    );
    assert!(logs.contains("TRACE"), "trace level was on");
    // ...and never a token or the secret, in any form.
    let issued = fake.issued_tokens();
    assert!(issued.len() >= 4, "{issued:?}");
    for secret in issued.iter().map(String::as_str).chain([CLIENT_SECRET]) {
        assert!(!logs.contains(secret), "a secret appears in the logs");
    }
    let basic = base64_encode(format!("{CLIENT_ID}:{CLIENT_SECRET}").as_bytes());
    assert!(!logs.contains(&basic));
}

#[tokio::test]
async fn status_with_an_empty_store_and_refresh_without_providers() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (code, out, _) = verb(&fake, dir.path(), &["status"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("no accounts"), "{out}");
    let (code, out, _) = verb(&fake, dir.path(), &["refresh"]).await;
    assert_eq!(code, 0);
    assert!(out.contains("no accounts to refresh"), "{out}");
    let out = Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .env_clear()
        .current_dir(dir.path())
        .arg("refresh")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("TWITCH_CLIENT_ID"));
}

fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}
