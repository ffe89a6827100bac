//! Memory and CPU of the auth-server binary under use: it serves the OAuth
//! flow against the fake provider on 127.0.0.1 (`--flows` complete
//! authorizations, each from a fresh browser) and the status page
//! (`--pages` requests), then reports its peak RSS (VmHWM) and CPU seconds.
//!
//! ```sh
//! cargo bench -p auth-server --bench memory
//! cargo bench -p auth-server --bench memory -- --flows 500 --pages 20000
//! ```

use std::process::Stdio;
use std::time::{Duration, Instant};

use testkit::fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth};

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

#[tokio::main]
async fn main() {
    let flows: usize = testkit::cli_arg("--flows", 500);
    let pages: usize = testkit::cli_arg("--pages", 20_000);
    let fake = FakeOAuth::start().await;
    let base = fake.base_url();
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("twitch-secret");
    std::fs::write(&secret_file, CLIENT_SECRET).unwrap();
    std::fs::set_permissions(
        &secret_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let port = testkit::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_auth-server"))
        .env_clear()
        .current_dir(dir.path())
        .env("AUTH_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("AUTH_REDIRECT_URL", format!("{url}/auth/callback"))
        .env("TOKEN_STORE_PATH", dir.path().join("tokenStore.json"))
        .env("TWITCH_CLIENT_ID", CLIENT_ID)
        .env("TWITCH_CLIENT_SECRET_FILE", &secret_file)
        .env("TWITCH_AUTHORIZE_URL", format!("{base}/oauth2/authorize"))
        .env("TWITCH_TOKEN_URL", format!("{base}/oauth2/token"))
        .env("TWITCH_VALIDATE_URL", format!("{base}/oauth2/validate"))
        .env("TWITCH_REVOKE_URL", format!("{base}/oauth2/revoke"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn auth-server (cargo bench builds it)");
    let pid = child.id().unwrap();
    let client = browser();
    testkit::wait_http_ok(30, &format!("{url}/healthz")).await;
    let (idle_rss, _) = testkit::metrics::process_stats(pid);

    let start = Instant::now();
    for _ in 0..flows {
        // /auth -> the provider -> /auth/callback -> token exchange,
        // validation and an atomic write of the store.
        let done = browser().get(format!("{url}/auth")).send().await.unwrap();
        assert!(
            done.status().is_success(),
            "flow ended in {}",
            done.status()
        );
    }
    let flows_took = start.elapsed();
    let start = Instant::now();
    for _ in 0..pages {
        let page = client.get(&url).send().await.unwrap();
        assert!(page.status().is_success());
        page.bytes().await.unwrap();
    }
    let pages_took = start.elapsed();
    let (rss, cpu) = testkit::metrics::process_stats(pid);
    child.start_kill().unwrap();
    let _ = child.wait().await;

    println!();
    println!("| work | count | time | per second |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| full OAuth flows (to the fake provider and back, store written) | {flows} | {:.1} s | {:.0} |",
        flows_took.as_secs_f64(),
        flows as f64 / flows_took.as_secs_f64()
    );
    println!(
        "| status page requests | {pages} | {:.1} s | {:.0} |",
        pages_took.as_secs_f64(),
        pages as f64 / pages_took.as_secs_f64()
    );
    println!();
    println!("| auth-server | peak RSS | CPU s |");
    println!("| --- | ---: | ---: |");
    println!("| after start | {idle_rss:.0} MiB | - |");
    println!("| after the work | {rss:.0} MiB | {cpu:.1} |");
}
