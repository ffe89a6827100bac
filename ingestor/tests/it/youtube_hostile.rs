//! The YouTube source against a hostile or broken YouTube (issue 20): huge
//! and endless answers, a huge error message, over-full pages, a stream
//! message over the decode limit, polling intervals of 0 and 10^19, every
//! page token refused, a lone surrogate escape, a page that is not JSON.
//! Each test asserts a bound that counts: memory against the answer cap,
//! requests against the quota, gaps per episode, what `/channels` shows.

use std::time::{Duration, Instant};

use common::schema::{EventBody, EventKind};
use serde_json::Value;
use testkit::eventually;
use testkit::fake_youtube::{self, FakeCall, FakeError, FakeYoutube, msg};
use testkit::rabbit::{self, unique};

use crate::helpers::*;
use crate::youtube::{World, ids, wait_state, youtube_channels, youtube_of, yt_config};

const MIB: usize = 1024 * 1024;

/// A `/proc/<pid>/status` field in bytes (`VmHWM`: peak resident memory).
fn proc_status_bytes(pid: u32, field: &str) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kb: usize = status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kb * 1024
}

fn gaps(got: &[common::amqp::Delivery]) -> Vec<String> {
    got.iter()
        .filter_map(|d| match &d.event.body {
            EventBody::Gap(g) => Some(g.reason.clone()),
            _ => None,
        })
        .collect()
}

/// The ingestor binary as a process, polling the fake: memory is measured
/// in its own `/proc`. Huge (50 MB, 300 MB), a 200 MB error and an endless
/// body are each refused at the 4 MiB cap: its peak resident memory grows
/// by at most twice the cap, and reading goes on.
#[tokio::test]
async fn fault_huge_and_endless_youtube_answers_cost_at_most_twice_the_answer_cap() {
    const CAP: usize = 4 * MIB;
    let mut w = World::new("test-yt-huge", "@huge").await;
    w.yt.set_polling_interval(200);
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_ingestor"));
    cmd.env_clear()
        .current_dir(std::env::temp_dir())
        .env("RUST_LOG", "warn,ingestor=info")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &w.exchange)
        .env("INGESTOR_HTTP_ADDR", "127.0.0.1:0")
        .env("SPOOL_DIR", &w.spool)
        .env("YOUTUBE_API_KEY", fake_youtube::API_KEY)
        .env("YOUTUBE_API_URL", w.yt.api_url())
        .env("YOUTUBE_GRPC_URL", w.yt.grpc_url())
        .env("YOUTUBE_STREAMING", "false")
        .env("YOUTUBE_CHANNELS", &w.channel)
        .env("YOUTUBE_OFFLINE_POLL_INTERVAL", "300ms")
        .env("YOUTUBE_RETRY_MAX_DELAY", "1s")
        .env("YOUTUBE_MIN_POLL_INTERVAL", "100ms")
        .env("YOUTUBE_DAILY_QUOTA", "1000000000")
        .env("YOUTUBE_MAX_RESPONSE_BYTES", CAP.to_string());
    let mut ing = testkit::process::ServiceProcess::spawn(
        cmd,
        "ingestor admin HTTP listening",
        testkit::process::Echo::Keep,
    )
    .expect("the ingestor starts");
    let http: std::net::SocketAddr = ing.addr.parse().unwrap();
    let channels = || async {
        let body = reqwest::get(format!("http://{http}/channels"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        serde_json::from_str::<Vec<Value>>(&body).ok()
    };
    // Idle: the chat is read (a first message published), the w.channel
    // followed.
    eventually(30, "following, offline", || async {
        channels()
            .await?
            .into_iter()
            .find(|c| c["channel"] == w.channel.as_str() && c["reason"] == "offline")
    })
    .await;
    let chat = w.go_live();
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("before-huge", &viewer, "reading")]);
    w.tap
        .collect_until(30, "a first message", |g| {
            g.iter().any(|d| d.event.id == "before-huge")
        })
        .await;
    let idle = proc_status_bytes(ing.id(), "VmHWM");
    for hostile in [
        FakeError::HugeBody(50_000_000),
        FakeError::HugeError(200_000_000),
        FakeError::Endless,
        FakeError::HugeBody(300_000_000),
    ] {
        w.yt.fail_next(FakeCall::ChatList, hostile, 1);
    }
    let refused = || async {
        testkit::metrics::scrape(
            http,
            "chatbus_ingestor_youtube_errors_total{reason=\"too_large\"}",
        )
        .await
    };
    eventually(30, "four answers refused", || async {
        (refused().await >= 4.0).then_some(())
    })
    .await;
    w.yt.push(&chat, [msg::text("after-huge", &viewer, "still reading")]);
    w.tap
        .collect_until(30, "a message after the huge answers", |g| {
            g.iter().any(|d| d.event.id == "after-huge")
        })
        .await;
    let peak = proc_status_bytes(ing.id(), "VmHWM");
    eprintln!(
        "VmHWM idle {} KiB, after the hostile answers {} KiB (cap {} KiB)",
        idle / 1024,
        peak / 1024,
        CAP / 1024
    );
    assert!(
        peak <= idle + 2 * CAP,
        "peak RSS {peak} > idle {idle} + 2 × {CAP}"
    );
    assert_eq!(refused().await, 4.0, "each refused once");
    ing.terminate(30).await.unwrap();
    let problems = ing.problems();
    let refusals: Vec<&String> = problems
        .iter()
        .filter(|l| l.contains(r#""reason":"too_large""#))
        .collect();
    assert_eq!(
        refusals.len(),
        4,
        "one line per refused answer: {refusals:?}"
    );
    // Three refusals in a row at one page token: skipped past, once.
    let skips = problems
        .iter()
        .filter(|l| l.contains("skipping past it"))
        .count();
    assert_eq!(skips, 1);
    assert!(
        refusals.iter().all(|l| l.len() < 1_000),
        "short lines: {refusals:?}"
    );
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_huge_youtube_error_message_is_cut_before_it_is_kept_logged_or_shown() {
    let yt = FakeYoutube::start().await;
    let (channel, video) = ids();
    yt.add_channel(&channel, "@errtext");
    yt.go_live(&channel, &video);
    // 1 MB: under the answer cap, so it is read and its message kept.
    yt.fail_next(FakeCall::ChatList, FakeError::HugeError(MIB), 1);
    let exchange = unique("test-yt-errtext");
    let (_dir, spool) = spool_dir();
    let mut cfg = yt_config(&yt, &exchange, &[&channel], &spool);
    cfg.platforms.youtube.youtube_streaming = false;
    let ing = Running::start(cfg).await;
    let info = wait_state(&ing, &channel, "waiting", Some("bad_request")).await;
    let detail = info["detail"].as_str().unwrap();
    assert!(detail.len() < 600, "{} bytes: {detail:.200}", detail.len());
    assert!(detail.contains("bytes)"), "says it was cut: {detail}");
    let (_, body) = ing.get("/channels").await;
    assert!(body.len() < 10_000, "/channels is {} bytes", body.len());
    wait_state(&ing, &channel, "joined", None).await;
    ing.stop().await;
}

/// A page of 2,000 messages (YouTube's most) is read; one over
/// `YOUTUBE_MAX_PAGE_ITEMS` is refused whole, and after three refusals
/// skipped past with a gap.
#[tokio::test]
async fn a_page_over_the_item_cap_is_refused_whole_then_skipped_with_a_gap() {
    let mut w = World::new("test-yt-items", "@items").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(200);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    cfg.platforms.youtube.youtube_max_page_items = 2_000;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    w.yt.fail_next(FakeCall::ChatList, FakeError::ManyItems(2_000), 1);
    let got = w
        .tap
        .collect_until(60, "the page of 2,000", |g| {
            youtube_of(g, &w.channel).len() >= 2_000
        })
        .await;
    assert!(got.iter().all(|d| d.event.id.starts_with("flood-")));
    w.yt.fail_next(FakeCall::ChatList, FakeError::ManyItems(2_001), 3);
    let got = w
        .tap
        .collect_until(30, "a gap after the refused page", |g| {
            g.iter().any(|d| d.event.kind() == EventKind::Gap)
        })
        .await;
    assert_eq!(gaps(&got), ["page_refused"]);
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("after-flood", &viewer, "ok")]);
    let more = w
        .tap
        .collect_until(30, "reading goes on", |g| {
            g.iter().any(|d| d.event.id == "after-flood")
        })
        .await;
    let floods = got
        .iter()
        .chain(&more)
        .filter(|d| d.event.id.starts_with("flood-"))
        .count();
    assert_eq!(floods, 0, "nothing of a refused page is published");
    assert_eq!(
        ing.metric("chatbus_ingestor_youtube_errors_total{reason=\"too_large\"}")
            .await,
        3.0
    );
    assert_eq!(
        ing.metric("chatbus_ingestor_youtube_pages_skipped_total")
            .await,
        1.0
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_stream_message_over_the_decode_limit_is_refused_and_reading_goes_on() {
    let mut w = World::new("test-yt-bigmsg", "@bigmsg").await;
    let chat = w.go_live();
    // 2,000 messages in one streamList message: far over 64 KiB.
    w.yt.fail_next(FakeCall::StreamList, FakeError::ManyItems(2_000), 1);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_max_response_bytes = 64 * 1024;
    let ing = Running::start(cfg).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    eventually(30, "the big message refused", || async {
        (ing.metric("chatbus_ingestor_youtube_errors_total{reason=\"too_large\"}")
            .await
            >= 1.0)
            .then_some(())
    })
    .await;
    wait_state(&ing, &w.channel, "joined", None).await;
    w.yt.push(&chat, [msg::text("after-big", &viewer, "ok")]);
    let got = w
        .tap
        .collect_until(30, "reading goes on", |g| {
            g.iter().any(|d| d.event.id == "after-big")
        })
        .await;
    assert!(!got.iter().any(|d| d.event.id.starts_with("flood-")));
    ing.stop().await;
    w.tap.cleanup().await;
}

/// `pollingIntervalMillis` = 0 with `YOUTUBE_DAILY_QUOTA=500`: polling is
/// paced by the quota (half of 500 units for chats: 1,728 s a poll), and
/// the floor shows in `/channels`.
#[tokio::test]
async fn polling_at_interval_zero_stays_inside_the_daily_quota() {
    let mut w = World::new("test-yt-zero", "@zero").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(0);
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("zero-1", &viewer, "first page")]);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    cfg.platforms.youtube.youtube_daily_quota = 500;
    cfg.platforms.youtube.youtube_min_poll_interval = Duration::from_secs(1);
    let ing = Running::start(cfg).await;
    w.tap
        .collect_until(30, "the first page", |g| {
            g.iter().any(|d| d.event.id == "zero-1")
        })
        .await;
    let info = eventually(30, "the poll interval shown", || async {
        youtube_channels(&ing)
            .await
            .into_iter()
            .find(|c| c["source_detail"]["poll_interval_ms"].is_u64())
    })
    .await;
    let detail = &info["source_detail"];
    assert_eq!(detail["poll_interval_clamped"]["asked_ms"], 0);
    assert_eq!(
        detail["poll_interval_clamped"]["to"],
        "YOUTUBE_MIN_POLL_INTERVAL"
    );
    assert_eq!(detail["poll_interval_by_quota"], true);
    assert_eq!(detail["poll_interval_ms"], 1_728_000, "86,400 s × 5 / 250");
    w.yt.push(&chat, [msg::text("zero-2", &viewer, "not polled yet")]);
    let extra = w.tap.drain_quiet(Duration::from_millis(1500)).await;
    assert!(extra.is_empty(), "no second poll: {}", extra.len());
    assert_eq!(w.yt.calls(FakeCall::ChatList), 1);
    assert!(w.yt.quota_spent() <= 500, "{} units", w.yt.quota_spent());
    ing.stop().await;
    w.tap.cleanup().await;
}

/// `pollingIntervalMillis` = 10^19: clamped to the ceiling, shown in
/// `/channels`, and polling goes on.
#[tokio::test]
async fn a_polling_interval_of_ten_to_the_nineteenth_is_clamped_to_the_ceiling() {
    let mut w = World::new("test-yt-forever", "@forever").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(10_000_000_000_000_000_000);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    cfg.platforms.youtube.youtube_max_poll_interval = Duration::from_millis(300);
    let ing = Running::start(cfg).await;
    let info = eventually(30, "the ceiling shown", || async {
        youtube_channels(&ing)
            .await
            .into_iter()
            .find(|c| c["source_detail"]["poll_interval_clamped"].is_object())
    })
    .await;
    assert_eq!(info["state"], "joined");
    let detail = &info["source_detail"];
    assert_eq!(
        detail["poll_interval_clamped"]["asked_ms"],
        10_000_000_000_000_000_000u64
    );
    assert_eq!(
        detail["poll_interval_clamped"]["to"],
        "YOUTUBE_MAX_POLL_INTERVAL"
    );
    assert_eq!(detail["poll_interval_ms"], 300);
    // Polling goes on: three more pages, each with a message.
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    for i in 0..3 {
        let id = format!("forever-{i}");
        w.yt.push(&chat, [msg::text(&id, &viewer, "later")]);
        w.tap
            .collect_until(30, &id, |g| g.iter().any(|d| d.event.id == id))
            .await;
    }
    ing.stop().await;
    w.tap.cleanup().await;
}

/// YouTube refuses every page token: the reader backs off (no more than a
/// few requests a second, however fast YouTube answers) and publishes one
/// gap per episode; an accepted token ends the episode.
#[tokio::test]
async fn fault_page_token_invalid_backs_off_and_publishes_one_gap_per_episode() {
    let mut w = World::new("test-yt-tokens", "@tokens").await;
    let chat = w.go_live();
    w.yt.set_polling_interval(100);
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    cfg.platforms.youtube.youtube_retry_max_delay = Duration::from_secs(2);
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);

    let started = Instant::now();
    let polls_before = w.yt.calls(FakeCall::ChatList);
    w.yt.refuse_page_tokens(true);
    eventually(30, "four refused tokens", || {
        let n = w.yt.refused_tokens();
        async move { (n >= 4).then_some(()) }
    })
    .await;
    let took = started.elapsed().as_secs_f64();
    let polls = w.yt.calls(FakeCall::ChatList) - polls_before;
    // Each refusal is followed by one read from the recent messages, then
    // the backoff (from 1 s, jitter taking at most half).
    assert!(
        polls <= 2 * w.yt.refused_tokens() + 2,
        "{polls} polls for {} refusals",
        w.yt.refused_tokens()
    );
    assert!(
        polls as f64 <= 3.0 * took + 3.0,
        "{polls} polls in {took:.1} s: no backoff"
    );
    let got = w.tap.drain_quiet(Duration::from_millis(500)).await;
    assert_eq!(
        gaps(&got),
        ["page_token_invalid"],
        "one gap for the episode"
    );

    // Tokens work again: the episode ends at the first page read from one.
    w.yt.refuse_page_tokens(false);
    w.yt.push(&chat, [msg::text("between", &viewer, "ok")]);
    let mut got = w
        .tap
        .collect_until(30, "reading again", |g| {
            g.iter().any(|d| d.event.id == "between")
        })
        .await;
    // "between" may come by a read from the recent messages; the read
    // after it is from a token, so this one surely ends the episode.
    w.yt.push(&chat, [msg::text("between-2", &viewer, "ok")]);
    got.extend(
        w.tap
            .collect_until(30, "reading from tokens again", |g| {
                g.iter().any(|d| d.event.id == "between-2")
            })
            .await,
    );
    assert!(gaps(&got).is_empty());
    // A second episode: a second gap, one only.
    let refused = w.yt.refused_tokens();
    w.yt.refuse_page_tokens(true);
    eventually(30, "two more refused tokens", || {
        let n = w.yt.refused_tokens();
        async move { (n >= refused + 2).then_some(()) }
    })
    .await;
    let got = w.tap.drain_quiet(Duration::from_millis(500)).await;
    assert_eq!(
        gaps(&got),
        ["page_token_invalid"],
        "one gap for episode two"
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_lone_surrogate_escape_becomes_a_replacement_character_and_the_page_is_kept() {
    let mut w = World::new("test-yt-surrogate", "@surrogate").await;
    let chat = w.go_live();
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    let mut page = serde_json::json!({
        "kind": "youtube#liveChatMessageListResponse",
        "pollingIntervalMillis": 200,
        "nextPageToken": "p0",
        "items": [
            msg::text("sur-1", &viewer, "LONE"),
            msg::text("sur-2", &viewer, "fine"),
        ],
    });
    page["items"][0]["snippet"]["liveChatId"] = chat.clone().into();
    page["items"][1]["snippet"]["liveChatId"] = chat.clone().into();
    let body = page.to_string().replace("LONE", r"a \ud83d b");
    w.yt.fail_next(FakeCall::ChatList, FakeError::Body(body), 1);
    let got = w
        .tap
        .collect_until(30, "both messages", |g| {
            g.iter().filter(|d| d.event.id.starts_with("sur-")).count() >= 2
        })
        .await;
    let first = got.iter().find(|d| d.event.id == "sur-1").unwrap();
    assert_eq!(first.event.text.as_deref(), Some("a \u{fffd} b"));
    // The message's text is in `displayMessage` and in `messageText`.
    assert_eq!(
        ing.metric("chatbus_ingestor_youtube_lone_surrogates_total")
            .await,
        2.0
    );
    ing.stop().await;
    w.tap.cleanup().await;
}

#[tokio::test]
async fn a_page_that_is_not_json_is_skipped_after_a_few_attempts_with_a_gap() {
    let mut w = World::new("test-yt-notjson", "@notjson").await;
    let chat = w.go_live();
    let mut cfg = w.config(&[&w.channel]);
    cfg.platforms.youtube.youtube_streaming = false;
    let ing = Running::start(cfg).await;
    wait_state(&ing, &w.channel, "joined", None).await;
    // Forever, as far as the reader can tell: it must skip, not ask again.
    w.yt.fail_next(FakeCall::ChatList, FakeError::Malformed, 3);
    let got = w
        .tap
        .collect_until(30, "a gap", |g| {
            g.iter().any(|d| d.event.kind() == EventKind::Gap)
        })
        .await;
    assert_eq!(gaps(&got), ["page_refused"]);
    let viewer = msg::author("UCviewer000000000000000A", "Viewer", &[]);
    w.yt.push(&chat, [msg::text("after-junk", &viewer, "ok")]);
    w.tap
        .collect_until(30, "reading goes on", |g| {
            g.iter().any(|d| d.event.id == "after-junk")
        })
        .await;
    assert_eq!(
        ing.metric("chatbus_ingestor_youtube_errors_total{reason=\"malformed\"}")
            .await,
        3.0
    );
    ing.stop().await;
    w.tap.cleanup().await;
}
