//! The Twitch source against a hostile or broken IRC server (the fake's
//! hostile modes) and lines for channels nobody asked for: bounds that
//! count (connections, metrics, published events), not times.

use std::time::Duration;

use testkit::fake_irc::{FakeIrc, Hostile};
use testkit::rabbit::{self, unique};

use crate::helpers::*;

/// A server that welcomes every login and then asks for a reconnect: the
/// connection never stays up, so each reconnect waits its backoff (at most
/// one a second on average over 20 s; before, thousands a second).
#[tokio::test]
async fn fault_a_server_that_asks_for_a_reconnect_after_every_login_meets_the_backoff() {
    let fake = FakeIrc::start().await;
    fake.set_hostile(Some(Hostile::ReconnectAfterWelcome));
    let exchange = unique("test-hostile-reconnect");
    let chans = channels(1);
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &exchange,
        &chans,
        &spool,
    ))
    .await;
    testkit::eventually(30, "a first connection", || async {
        (fake.accepted() >= 1).then_some(())
    })
    .await;
    let first = fake.accepted();
    // The window the bound is averaged over.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let reconnects = fake.accepted() - first;
    assert!(
        (1..=20).contains(&reconnects),
        "{reconnects} reconnects in 20 s: at most one a second, and it does retry"
    );
    ing.stop().await;
}

/// A server that floods PINGs and never reads: the PONGs fill the socket,
/// the write deadline (the keepalive) ends the connection, it is reopened,
/// and a shutdown still stops the ingestor.
#[tokio::test]
async fn fault_a_server_that_floods_pings_and_never_reads_is_dropped_and_shutdown_still_works() {
    let fake = FakeIrc::start().await;
    fake.set_hostile(Some(Hostile::PingFloodWithoutReading));
    let exchange = unique("test-hostile-pings");
    let chans = channels(1);
    let (_dir, spool) = spool_dir();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &chans, &spool);
    cfg.platforms.twitch.twitch_keepalive = Duration::from_secs(2);
    let ing = Running::start(cfg).await;
    testkit::eventually(
        40,
        "a write timed out and the connection was reopened",
        || async {
            (fake.accepted() >= 2
                && ing
                    .metric("chatbus_ingestor_irc_write_timeouts_total")
                    .await
                    >= 1.0)
                .then_some(())
        },
    )
    .await;
    // While the server still floods: the shutdown is not held by a write.
    ing.stop().await;
}

/// Lines for channels the ingestor never joined are dropped and counted
/// (not published, no series of their own); a shared-chat message in a
/// joined channel stays that channel's; a parted channel's series go.
#[tokio::test]
async fn lines_for_channels_not_joined_are_dropped_and_a_parted_channels_series_go() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-hostile-unjoined");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(1);
    let joined = chans[0].clone();
    let (_dir, spool) = spool_dir();
    let mut cfg = config(&fake, &rabbit::amqp_url(), &exchange, &chans, &spool);
    cfg.ingestor_api_key = Some("k".into());
    let ing = Running::start(cfg).await;
    fake.wait_joined(&[&joined], 30).await;
    let strangers: Vec<String> = (0..50).map(|i| format!("stranger{i}_{joined}")).collect();
    let mut bytes = Vec::new();
    for line in privmsgs(&strangers, 50, "unasked") {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    // A shared-chat message: sent in another room, shown in this one.
    bytes.extend_from_slice(
        format!(
            "@badges=;color=;display-name=Guest;emotes=;id=shared-1;room-id=1;source-id=src-1;source-room-id=999;tmi-sent-ts=1594556065407;user-id=77 :guest!guest@guest.tmi.twitch.tv PRIVMSG #{joined} :from the other room\r\n"
        )
        .as_bytes(),
    );
    for line in privmsgs(std::slice::from_ref(&joined), 1, "asked") {
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
    }
    assert_eq!(fake.send_bytes_to_channel(&joined, bytes), 1);
    let got = tap
        .collect_until(30, "the joined channel's message", |g| {
            g.iter().any(|d| d.event.id.starts_with("asked-"))
        })
        .await;
    assert!(
        got.iter().all(|d| d.event.channel == joined),
        "only the joined channel's events"
    );
    let ids: Vec<&str> = got.iter().map(|d| d.event.id.as_str()).collect();
    assert!(
        ids.contains(&"shared-1"),
        "the shared-chat message stays: {ids:?}"
    );
    assert!(!ids.iter().any(|id| id.starts_with("unasked-")), "{ids:?}");
    assert_eq!(
        ing.metric("chatbus_ingestor_events_dropped_total{reason=\"not_joined\"}")
            .await,
        50.0
    );
    let (_, page) = ing.get("/metrics").await;
    assert!(
        !page.contains("stranger"),
        "no series for channels not joined"
    );
    assert!(page.contains(&format!("channel=\"{joined}\"")), "{page}");

    let res = reqwest::Client::new()
        .delete(format!("http://{}/channels/twitch/{joined}", ing.http))
        .bearer_auth("k")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    testkit::eventually(30, "the parted channel's series are gone", || async {
        let (_, page) = ing.get("/metrics").await;
        (!page.contains(&format!("channel=\"{joined}\""))).then_some(())
    })
    .await;
    ing.stop().await;
    tap.cleanup().await;
}

/// 20 MB of random bytes on the IRC socket: every bad line is counted, a
/// few are logged (at most 20 log lines a second over the run, where every
/// bad line had one before), and the connection carries on.
#[tokio::test]
async fn fault_random_bytes_on_the_socket_are_counted_not_logged_line_by_line() {
    use testkit::process::{Echo, ServiceProcess};
    let fake = FakeIrc::start().await;
    let exchange = unique("test-hostile-noise");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(1);
    let (_dir, spool) = spool_dir();
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ingestor"));
    cmd.env_clear()
        .current_dir(std::env::temp_dir())
        .env("RUST_LOG", "info")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &exchange)
        .env("RABBITMQ_POLICIES", "false")
        .env("INGESTOR_HTTP_ADDR", "127.0.0.1:0")
        .env("SPOOL_DIR", &spool)
        .env("TWITCH_IRC_ADDR", fake.addr().to_string())
        .env("TWITCH_IRC_TLS", "false")
        .env("TWITCH_CHANNELS", &chans[0]);
    let started = std::time::Instant::now();
    let mut ing = ServiceProcess::spawn(cmd, "ingestor admin HTTP listening", Echo::Keep).unwrap();
    fake.wait_joined(&[&chans[0]], 30).await;
    // xorshift: no dependency, the same noise every run.
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut noise = Vec::with_capacity(20 << 20);
    while noise.len() < 20 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    noise.extend_from_slice(b"\r\n");
    assert_eq!(fake.send_bytes_to_channel(&chans[0], noise), 1);
    fake.send_lines(&privmsgs(&chans, 1, "after-noise"));
    tap.collect_until(60, "the line after the noise", |g| {
        g.iter().any(|d| d.event.id == "after-noise-0")
    })
    .await;
    let bad = testkit::metrics::scrape(&ing.addr, "chatbus_ingestor_irc_bad_lines_total").await;
    assert!(bad > 10_000.0, "every bad line is counted: {bad}");
    ing.terminate(30).await.unwrap();
    // At most 20 a second, counted per started second: a run shorter than
    // a second may log a second's worth.
    let seconds = started.elapsed().as_secs_f64().ceil();
    let logged = ing.problems().len();
    assert!(
        (logged as f64) <= 20.0 * seconds,
        "{logged} WARN/ERROR lines in {seconds:.1} s"
    );
    tap.cleanup().await;
}
