//! The web page and the OBS overlay in headless Chromium (Debian's
//! `chromium`, driven by playwright-core from `consumer/tests/browser`).
//! `scripts/test.sh` installs both; without them this test fails with the
//! command to run, it never skips.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use chrono::Utc;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

use common::Secret;
use common::command::{ReceiptStatus, command_routing_key};

use crate::helpers::{
    CommandResponder, TestApp, decorated_message, delete, message, message_at, youtube_message,
};

fn browser_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser")
}

fn chromium() -> PathBuf {
    let path = std::env::var_os("CHATBUS_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    assert!(
        path.exists(),
        "Chromium is required for the web page test and {} does not exist. \
         Run scripts/test.sh (it installs it), or `apt-get install -y chromium`, \
         or set CHATBUS_CHROMIUM to a Chromium binary.",
        path.display()
    );
    path
}

fn check_node_modules() {
    let module = browser_dir().join("node_modules/playwright-core");
    assert!(
        module.exists(),
        "playwright-core is required for the web page test and is not installed. \
         Run scripts/test.sh, or `npm ci --prefix {}`.",
        browser_dir().display()
    );
}

#[tokio::test]
async fn the_web_page_and_overlay_show_a_published_message_and_apply_its_deletion() {
    let app = TestApp::spawn().await;
    let channel = format!("page_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let event = decorated_message(&channel, "Tester", "#1E90FF");
    // A YouTube channel beside it: a member's message and a Super Chat.
    let yt_channel = format!("UCpage{}", &uuid::Uuid::new_v4().simple().to_string()[..16]);
    let yt_message = youtube_message(&yt_channel, "Ütube Viewer", "hello from YouTube", None);
    let super_chat = youtube_message(
        &yt_channel,
        "Generous",
        "take my money",
        Some((5_000_000, "USD", "$5.00")),
    );
    let both = format!("youtube:{yt_channel},twitch:{channel}");
    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels={both}")),
        "overlay": app.url(&format!("/overlay?channels={both}")),
        "id": event.id,
        "youtube_id": yt_message.id,
        "super_chat_id": super_chat.id,
    });
    let mut script = BrowserScript::start("page.mjs", spec);
    assert_eq!(script.next().await, "READY");
    app.publish(&[event.clone(), yt_message.clone(), super_chat.clone()])
        .await;

    let seen = script.next().await;
    let seen: serde_json::Value =
        serde_json::from_str(seen.strip_prefix("SEEN ").expect("SEEN")).unwrap();
    assert_eq!(seen["name"], "Tester");
    assert_eq!(
        seen["color"], "rgb(30, 144, 255)",
        "display name in the user's colour"
    );
    assert_eq!(
        seen["text"], "héllo  👋 from the test",
        "text around the emote"
    );
    assert_eq!(seen["emotes"][0]["alt"], "Kappa");
    assert_eq!(
        seen["emotes"][0]["src"],
        "https://static-cdn.jtvnw.net/emoticons/v2/25/default/dark/1.0"
    );
    assert_eq!(seen["badges"], serde_json::json!(["moderator"]));
    assert_eq!(seen["platform"], "twitch");
    assert_eq!(seen["channel"], channel);
    assert_eq!(
        seen["channelTag"],
        format!("#{channel}"),
        "two channels shown: each line says its channel"
    );
    // YouTube, interleaved on the same page, with its mark and picture.
    let yt = &seen["youtube"];
    assert_eq!(yt["platform"], "youtube");
    assert_eq!(yt["mark"], "\u{25b6}");
    assert_eq!(yt["name"], "Ütube Viewer");
    assert_eq!(yt["text"], "hello from YouTube");
    assert_eq!(yt["avatar"], "https://yt3.ggpht.com/example-avatar=s64");
    assert_eq!(yt["badges"], serde_json::json!(["member"]));
    assert_eq!(yt["paid"], serde_json::Value::Null);
    // The Super Chat, highlighted with its amount.
    let sc = &seen["superChat"];
    assert_eq!(sc["paid"], "$5.00");
    assert_eq!(sc["highlighted"], true);
    assert_eq!(sc["text"], "take my money");
    assert_eq!(sc["kind"], "super_chat");
    // In cursor order: the Twitch line, then YouTube's two.
    assert_eq!(
        seen["order"],
        serde_json::json!([event.id, yt_message.id, super_chat.id])
    );
    assert_eq!(
        seen["overlayBackground"], "rgba(0, 0, 0, 0)",
        "transparent for OBS"
    );
    assert_eq!(seen["overlayControlsHidden"], true);
    assert_eq!(
        seen["composerHidden"], true,
        "no command token: no composer"
    );
    assert_eq!(seen["modButtons"], 0, "no command token: no buttons");
    assert_ne!(seen["pageBackground"], "rgba(0, 0, 0, 0)");
    // Rendered, both over the same green backdrop and read at the same
    // spot: the green shows through the overlay; the page (not an overlay)
    // covers it with its own background.
    let green = serde_json::json!([0, 255, 0, 255]);
    assert_eq!(
        seen["overlayPixel"], green,
        "the overlay is transparent as rendered"
    );
    assert_ne!(
        seen["pagePixel"], green,
        "the page is opaque as rendered: {seen}"
    );
    let background: Vec<u64> = seen["pageBackground"]
        .as_str()
        .and_then(|c| c.strip_prefix("rgb(")?.strip_suffix(')'))
        .map(|c| c.split(", ").map(|n| n.parse().unwrap()).collect())
        .unwrap_or_else(|| panic!("an opaque rgb() background: {}", seen["pageBackground"]));
    assert_eq!(
        seen["pagePixel"],
        serde_json::json!([background[0], background[1], background[2], 255]),
        "the page's own background is what covers the backdrop"
    );

    app.publish(&[delete(&channel, &event, Utc::now())]).await;
    script.send("deleted").await;
    let moderated = script.next().await;
    let moderated: serde_json::Value =
        serde_json::from_str(moderated.strip_prefix("MODERATED ").expect("MODERATED")).unwrap();
    assert_eq!(moderated["note"], "message deleted by a moderator");
    assert_eq!(moderated["textVisible"], false);
    assert_eq!(
        moderated["errors"],
        serde_json::json!([]),
        "no script errors"
    );

    script.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn the_page_starts_again_from_the_newest_when_the_history_no_longer_reaches_its_cursor() {
    let app = TestApp::spawn().await;
    let channel = format!("resume_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let first = message(&channel, "viewer", "before the cut");
    let second = message(&channel, "viewer", "after the cut");
    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels=twitch:{channel}&history=100")),
        "first_id": first.id,
        "second_id": second.id,
    });
    let mut script = BrowserScript::start("resume.mjs", spec);
    assert_eq!(script.next().await, "READY");
    app.publish(std::slice::from_ref(&first)).await;

    let resumed = script.next().await;
    let resumed: serde_json::Value =
        serde_json::from_str(resumed.strip_prefix("RESUMED ").expect("RESUMED")).unwrap();
    // The server refused the cursor beyond its head, and the page subscribed
    // again for the newest messages instead of staying without a
    // subscription.
    assert_eq!(
        resumed["refusals"],
        serde_json::json!(["cursor_beyond_head"])
    );
    let subscribes = resumed["subscribes"].as_array().unwrap();
    assert_eq!(subscribes.len(), 3, "{resumed}");
    assert_eq!(subscribes[0]["last"], 100, "first: the last messages");
    assert_eq!(
        subscribes[1]["since"], 9_007_199_254_740_991_u64,
        "then from its cursor (moved beyond the head by the route)"
    );
    assert_eq!(subscribes[2]["last"], 100, "then again the newest");
    assert!(subscribes[2].get("since").is_none(), "{resumed}");

    app.publish(std::slice::from_ref(&second)).await;
    let shown = script.next().await;
    let shown: serde_json::Value =
        serde_json::from_str(shown.strip_prefix("SHOWN ").expect("SHOWN")).unwrap();
    // What was shown was cleared and loaded again: each message once.
    assert_eq!(shown["order"], serde_json::json!([first.id, second.id]));
    assert_eq!(shown["status"], "live");
    assert_eq!(shown["errors"], serde_json::json!([]), "no script errors");
    script.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn the_controls_bar_stays_at_the_top_however_far_the_chat_scrolls() {
    let app = TestApp::spawn().await;
    let channel = format!("scroll_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    // About four screens of chat at 600 px.
    let events: Vec<_> = (0..100)
        .map(|i| message(&channel, "viewer", &format!("line {i}")))
        .collect();
    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels=twitch:{channel}")),
        "last_id": events.last().unwrap().id,
    });
    let mut script = BrowserScript::start("scroll.mjs", spec);
    assert_eq!(script.next().await, "READY");
    app.publish(&events).await;

    let scrolled = script.next().await;
    let scrolled: serde_json::Value =
        serde_json::from_str(scrolled.strip_prefix("SCROLLED ").expect("SCROLLED")).unwrap();
    let screen = scrolled["innerHeight"].as_f64().unwrap();
    assert!(
        scrolled["pageHeight"].as_f64().unwrap() > 3.0 * screen,
        "more than three screens of chat: {scrolled}"
    );
    let positions = scrolled["positions"].as_array().unwrap();
    // Past the first screen, at the bottom, and back at the top.
    assert!(
        positions[0]["scrollY"].as_f64().unwrap() > screen,
        "{scrolled}"
    );
    assert!(
        positions[1]["scrollY"].as_f64().unwrap() > 2.0 * screen,
        "{scrolled}"
    );
    assert_eq!(positions[2]["scrollY"].as_f64(), Some(0.0), "{scrolled}");
    for at in positions {
        assert_eq!(
            at["top"].as_f64(),
            Some(0.0),
            "the bar at the top of the window: {scrolled}"
        );
        assert_eq!(at["shownAtTop"], true, "nothing covers it: {scrolled}");
    }
    assert_eq!(
        scrolled["errors"],
        serde_json::json!([]),
        "no script errors"
    );
    script.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn the_composer_sends_one_text_to_two_platforms_and_shows_both_receipts_and_moderates_a_message()
 {
    const READ: &str = "page-read-token";
    const WRITE: &str = "page-write-token";
    let exchange = testkit::rabbit::unique("test-commands");
    let channel = format!(
        "compose_{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let yt_channel = format!(
        "UCcompose{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    // The ingestor's part: Twitch sends, YouTube drops it as a duplicate.
    let responder = CommandResponder::start(
        &exchange,
        &[
            command_routing_key("twitch", &channel),
            command_routing_key("youtube", &yt_channel),
        ],
        |c| match c.platform.as_str() {
            "youtube" => (ReceiptStatus::Dropped, Some("msg_duplicate".into())),
            _ => (ReceiptStatus::Sent, None),
        },
    )
    .await;
    let commands_exchange = exchange.clone();
    let app = TestApp::spawn_with(move |c| {
        c.consumer_api_token = Some(Secret::new(READ));
        c.consumer_command_token = Some(Secret::new(WRITE));
        c.consumer_commands_exchange = commands_exchange;
    })
    .await;
    app.wait_consuming().await;
    let both = format!("twitch:{channel},youtube:{yt_channel}");
    let event = message(&channel, "Chatter", "please moderate me");
    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels={both}&access_token={READ}#command_token={WRITE}")),
        "overlay": app.url(&format!("/overlay?channels={both}&access_token={READ}#command_token={WRITE}")),
        "text": "hello twitch and youtube",
        "id": event.id,
    });
    let mut script = BrowserScript::start("composer.mjs", spec);

    let ready = script.next().await;
    let ready: serde_json::Value =
        serde_json::from_str(ready.strip_prefix("READY ").expect("READY")).unwrap();
    assert_eq!(ready["composerShown"], true);
    assert_eq!(
        ready["hash"], "",
        "the token is taken out of the address bar"
    );
    assert_eq!(ready["stored"], true, "and kept for this tab");
    assert_eq!(
        ready["targets"],
        serde_json::json!([
            "*",
            format!("twitch:{channel}"),
            format!("youtube:{yt_channel}")
        ])
    );

    let sent = script.next().await;
    let sent: serde_json::Value =
        serde_json::from_str(sent.strip_prefix("RECEIPTS ").expect("RECEIPTS")).unwrap();
    let receipts = sent["receipts"].as_array().unwrap();
    assert_eq!(receipts.len(), 2, "{sent}");
    assert_eq!(receipts[0]["platform"], "twitch");
    assert_eq!(receipts[0]["channel"], channel.as_str());
    assert_eq!(receipts[0]["status"], "sent");
    assert_eq!(receipts[0]["shown"], format!("twitch:#{channel}sent"));
    assert_eq!(receipts[1]["platform"], "youtube");
    assert_eq!(receipts[1]["status"], "dropped");
    assert_eq!(
        receipts[1]["shown"],
        format!("youtube:#{yt_channel}dropped: msg_duplicate")
    );
    assert_eq!(
        sent["textLeft"], "hello twitch and youtube",
        "kept to try again: not every channel took it"
    );
    let seen = responder.seen();
    assert_eq!(seen.len(), 2, "one command per platform");
    assert!(
        seen.iter()
            .all(|s| s.body["kind"] == "send" && s.body["text"] == "hello twitch and youtube")
    );

    app.publish(std::slice::from_ref(&event)).await;
    script.send("published").await;
    let moderated = script.next().await;
    let moderated: serde_json::Value =
        serde_json::from_str(moderated.strip_prefix("MODERATED ").expect("MODERATED")).unwrap();
    assert_eq!(moderated["timeout"]["status"], "sent", "{moderated}");
    assert_eq!(moderated["timeout"]["text"], "timeout: sent");
    assert_eq!(moderated["deleted"]["text"], "delete: sent");
    assert_eq!(moderated["overlayButtons"], 0, "the overlay never writes");
    assert_eq!(
        moderated["errors"],
        serde_json::json!([]),
        "no script errors"
    );
    let seen = responder.seen();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let author = event.author.as_ref().unwrap();
    assert_eq!(seen[2].routing_key, command_routing_key("twitch", &channel));
    assert_eq!(seen[2].body["kind"], "timeout");
    assert_eq!(seen[2].body["user_id"], author.id.as_str());
    assert_eq!(seen[2].body["seconds"], 600);
    assert_eq!(seen[3].body["kind"], "delete");
    assert_eq!(seen[3].body["message_id"], event.id.as_str());

    script.finish().await;
    responder.stop(&exchange).await;
    app.stop().await;
}

/// A script of `consumer/tests/browser` run by node, talking over stdio:
/// a line out per step, a line in where the test has acted.
struct BrowserScript {
    node: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl BrowserScript {
    /// Runs `script` with `spec`, to which it adds the Chromium to drive
    /// (both prerequisites are checked first).
    fn start(script: &str, mut spec: serde_json::Value) -> Self {
        spec["chromium"] = serde_json::json!(chromium());
        check_node_modules();
        let mut node = Command::new("node")
            .arg(browser_dir().join(script))
            .arg(spec.to_string())
            .current_dir(browser_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node is required for the web page test (apt-get install nodejs npm)");
        let stdin = node.stdin.take().unwrap();
        let out = BufReader::new(node.stdout.take().unwrap()).lines();
        Self { node, stdin, out }
    }

    /// The script's next line; an `ERROR` line fails the test.
    async fn next(&mut self) -> String {
        let line = testkit::within(60, "the browser script", self.out.next_line())
            .await
            .unwrap()
            .expect("the browser script ended early");
        assert!(!line.starts_with("ERROR"), "{line}");
        line
    }

    async fn send(&mut self, line: &str) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .unwrap();
    }

    /// Waits for the script to exit, successfully.
    async fn finish(mut self) {
        let status = testkit::within(30, "the browser script exits", self.node.wait())
            .await
            .unwrap();
        assert!(status.success());
    }
}

#[tokio::test]
async fn the_page_and_overlay_show_a_channels_live_state_and_viewers_from_the_start() {
    use common::schema::{EventBody, StreamDetails, StreamOfflineDetails};
    let app = TestApp::spawn().await;
    let channel = format!("live_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let status = |id: &str, body: EventBody| {
        let now = Utc::now();
        common::ChatEvent::new(id, "twitch", &channel, now, now, body)
    };
    let live = StreamDetails {
        stream_id: Some("s1".into()),
        title: Some("Any% speedrun".into()),
        category: Some("Celeste".into()),
        viewer_count: Some(1234),
        started_at: Some(Utc::now()),
    };
    // Live before the pages open, and many messages after: the state comes
    // from /api/channels, not from the history the page replays.
    let mut events = vec![
        status(
            "on",
            EventBody::StreamOnline(StreamDetails {
                viewer_count: Some(10),
                ..live.clone()
            }),
        ),
        status("up", EventBody::StreamUpdate(live)),
    ];
    events.extend((0..30).map(|n| message(&channel, "u", &format!("m{n}"))));
    app.publish(&events).await;
    app.wait_stored(32, 30).await;

    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels=twitch:{channel}&history=5")),
        "overlay": app.url(&format!("/overlay?channels=twitch:{channel}&history=5")),
        "channel": channel,
    });
    let mut script = BrowserScript::start("status.mjs", spec);
    let seen = script.next().await;
    let seen: serde_json::Value =
        serde_json::from_str(seen.strip_prefix("LIVE ").expect("LIVE")).unwrap();
    for side in ["page", "overlay"] {
        let text = seen[side]["text"].as_str().unwrap();
        assert!(
            text.contains("live") && text.contains("1,234 viewers"),
            "{side}: {seen}"
        );
        assert_eq!(seen[side]["visible"], true, "{side}: {seen}");
    }
    assert!(
        seen["page"]["text"]
            .as_str()
            .unwrap()
            .contains("Any% speedrun"),
        "{seen}"
    );
    assert_eq!(seen["errors"], serde_json::json!([]));

    app.publish(&[status(
        "off",
        EventBody::StreamOffline(StreamOfflineDetails::default()),
    )])
    .await;
    script.send("published").await;
    let seen = script.next().await;
    let seen: serde_json::Value =
        serde_json::from_str(seen.strip_prefix("OFFLINE ").expect("OFFLINE")).unwrap();
    for side in ["page", "overlay"] {
        let text = seen[side]["text"].as_str().unwrap();
        assert!(
            text.contains("offline") && !text.contains("viewers"),
            "{side}: {seen}"
        );
    }
    assert_eq!(seen["wentOffline"], 1, "{seen}");
    assert_eq!(seen["errors"], serde_json::json!([]));
    script.finish().await;
    app.stop().await;
}

#[tokio::test]
async fn a_purge_removes_the_users_messages_from_the_page_and_overlay_and_a_channels_privacy_event_its_messages()
 {
    use crate::helpers::{PrivacyStream, purge, user_subject};
    use common::privacy::Subject;
    use common::schema::ReplyParent;

    let stream = PrivacyStream::new().await;
    let app = TestApp::spawn_with(|c| c.privacy_stream = stream.name.clone()).await;
    let short = || uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let (kept_channel, purged_channel) = (format!("keep_{}", short()), format!("gone_{}", short()));
    // Two users in one channel, the leaver quoted in a reply, and a third
    // user in a channel that will be purged whole.
    let leaver = [
        message(&kept_channel, "leaver", "first words"),
        message(&kept_channel, "leaver", "second words"),
    ];
    let stayer = message(&kept_channel, "stayer", "I stay");
    let mut reply = message(&kept_channel, "stayer", "answering you");
    reply.reply_to = Some(ReplyParent {
        message_id: leaver[0].id.clone(),
        user_id: Some("id-leaver".into()),
        user_login: Some("leaver".into()),
        display_name: Some("leaver".into()),
        text: Some("first words".into()),
        thread_message_id: None,
    });
    let elsewhere = message(&purged_channel, "third", "in the other channel");
    // The purge is decided now; what the leaver says after its horizon is
    // not purged, even when it shows before the purge arrives.
    let leaver_purge = purge(user_subject("leaver"));
    let later = message_at(
        &kept_channel,
        "leaver",
        "said after the purge",
        leaver_purge.at + chrono::Duration::seconds(1),
    );
    let all = [
        leaver[0].clone(),
        stayer.clone(),
        leaver[1].clone(),
        reply.clone(),
        later.clone(),
        elsewhere.clone(),
    ];
    let ids = |events: &[&common::ChatEvent]| -> Vec<String> {
        events.iter().map(|e| e.id.clone()).collect()
    };
    let channels = format!("twitch:{kept_channel},twitch:{purged_channel}");
    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels={channels}")),
        "overlay": app.url(&format!("/overlay?channels={channels}")),
        "shown": ids(&all.iter().collect::<Vec<_>>()),
        "reply_id": reply.id,
    });
    let mut script = BrowserScript::start("privacy.mjs", spec);
    assert_eq!(script.next().await, "READY");
    app.publish(&all).await;

    let seen = script.next().await;
    let seen: serde_json::Value =
        serde_json::from_str(seen.strip_prefix("SEEN ").expect("SEEN")).unwrap();
    let every = serde_json::json!(ids(&all.iter().collect::<Vec<_>>()));
    assert_eq!(seen["page"], every);
    assert_eq!(seen["overlay"], every);
    assert!(
        seen["reply"]["quote"]
            .as_str()
            .unwrap()
            .contains("first words"),
        "{seen}"
    );

    // The leaver's purge, on the privacy stream only.
    stream.publish(&leaver_purge).await;
    script
        .send(&serde_json::json!({"gone": ids(&[&leaver[0], &leaver[1]])}).to_string())
        .await;
    let purged = script.next().await;
    let purged: serde_json::Value =
        serde_json::from_str(purged.strip_prefix("PURGED ").expect("PURGED")).unwrap();
    let rest = serde_json::json!(ids(&[&stayer, &reply, &later, &elsewhere]));
    assert_eq!(
        purged["page"], rest,
        "the other users' messages stay, and the leaver's after the horizon"
    );
    assert_eq!(purged["overlay"], rest);
    for side in ["reply", "overlayReply"] {
        assert_eq!(
            purged[side]["quote"],
            serde_json::Value::Null,
            "the quote of the purged message goes too: {purged}"
        );
        assert_eq!(purged[side]["text"], "answering you");
    }

    // A channel's purge, announced as a `privacy` event on the channel.
    let mut channel_purge = purge(Subject::Channel {
        platform: "twitch".into(),
        channel: purged_channel.clone(),
    });
    channel_purge.requested_by = "admin-api".into();
    app.publish(&[common::ChatEvent::privacy(
        "twitch",
        &purged_channel,
        &channel_purge,
    )])
    .await;
    script
        .send(&serde_json::json!({"gone": ids(&[&elsewhere])}).to_string())
        .await;
    let announced = script.next().await;
    let announced: serde_json::Value =
        serde_json::from_str(announced.strip_prefix("ANNOUNCED ").expect("ANNOUNCED")).unwrap();
    let rest = serde_json::json!(ids(&[&stayer, &reply, &later]));
    assert_eq!(announced["page"], rest);
    assert_eq!(announced["overlay"], rest);
    let notes = announced["pageNotes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "{announced}");
    assert!(
        notes[0]
            .as_str()
            .unwrap()
            .contains("Messages were removed on request"),
        "{announced}"
    );
    assert_eq!(announced["overlayNotes"], 0, "the overlay shows no notes");
    assert_eq!(
        announced["errors"],
        serde_json::json!([]),
        "no script errors"
    );

    script.finish().await;
    app.stop().await;
    stream.delete().await;
}

#[tokio::test]
async fn the_opt_out_form_shows_a_code_whose_message_in_chat_opts_the_login_out() {
    use crate::helpers::PrivacyStream;

    const READ: &str = "page-read-token";
    const ADMIN: &str = "page-privacy-token";
    let stream = PrivacyStream::new().await;
    let name = stream.name.clone();
    let app = TestApp::spawn_with(move |c| {
        c.privacy_stream = name;
        c.consumer_api_token = Some(Secret::new(READ));
        c.consumer_privacy_token = Some(Secret::new(ADMIN));
    })
    .await;
    app.wait_consuming().await;
    let get = |path: String, token: &'static str| {
        let url = app.url(&path);
        async move {
            let res = reqwest::Client::new()
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .expect("GET");
            let status = res.status().as_u16();
            let body: serde_json::Value = res.json().await.expect("JSON");
            assert_eq!(status, 200, "{body}");
            body
        }
    };
    let short = &uuid::Uuid::new_v4().simple().to_string()[..8];
    let channel = format!("optout_{short}");
    // Typed as the person would, in their own case; the server matches it
    // in lower case, as chat logins are.
    let login = format!("Leaver{short}");
    let earlier = message(&channel, &login, "forget this");
    let stayer = message(&channel, "stayer", "I stay");
    app.publish(&[earlier.clone(), stayer.clone()]).await;
    let stored = |channel: String| {
        let events = get(format!("/api/events?channel={channel}"), READ);
        async move {
            events.await["events"]
                .as_array()
                .expect("events")
                .iter()
                .filter_map(|e| e["event"]["id"].as_str().map(str::to_owned))
                .collect::<Vec<String>>()
        }
    };
    testkit::eventually(30, "both messages stored", || async {
        (stored(channel.clone()).await.len() == 2).then_some(())
    })
    .await;

    let spec = serde_json::json!({
        "page": app.url(&format!("/?channels=twitch:{channel}&access_token={READ}")),
        "overlay": app.url(&format!("/overlay?channels=twitch:{channel}&access_token={READ}")),
        "login": login,
        "bad_login": "two words",
    });
    let mut script = BrowserScript::start("optout.mjs", spec);
    let shown = script.next().await;
    let shown: serde_json::Value =
        serde_json::from_str(shown.strip_prefix("CODE ").expect("CODE")).unwrap();
    assert_eq!(shown["overlayShowsIt"], false, "{shown}");
    assert_eq!(shown["closed"], true, "closed until opened: {shown}");
    assert_eq!(
        shown["platforms"],
        serde_json::json!(["twitch", "youtube", "kick"])
    );
    let refused = &shown["refused"];
    assert_eq!(refused["errorShown"], true, "{shown}");
    assert_eq!(refused["resultShown"], false, "{shown}");
    assert_eq!(refused["errorStatus"], "400", "{shown}");
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("the name you chat as"),
        "{shown}"
    );
    let issued = &shown["issued"];
    assert_eq!(issued["resultShown"], true, "{shown}");
    assert_eq!(issued["errorShown"], false, "{shown}");
    let code = issued["code"].as_str().unwrap().to_owned();
    assert_eq!(code.len(), 6, "{shown}");
    assert!(
        code.chars()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()),
        "{shown}"
    );
    let instructions = issued["message"].as_str().unwrap();
    assert!(
        instructions.contains(&format!("!optout {code}"))
            && instructions.contains(&login.to_lowercase()),
        "{shown}"
    );
    let left = issued["left"].as_u64().unwrap();
    assert!((50..=60).contains(&left), "{shown}");
    assert!(
        issued["countdown"]
            .as_str()
            .unwrap()
            .starts_with("expires in "),
        "{shown}"
    );
    assert_ne!(shown["ticked"], issued["countdown"], "it counts down");
    assert_eq!(shown["errors"], serde_json::json!([]), "no script errors");

    // Nobody opted out yet; then the login types the code in chat.
    let optouts = || get("/api/privacy/optouts".to_owned(), ADMIN);
    assert_eq!(optouts().await, serde_json::json!([]));
    app.publish(&[message(&channel, &login, &format!("!optout {code}"))])
        .await;
    let user_id = earlier.author.as_ref().unwrap().id.clone();
    testkit::eventually(30, "the login opted out", || async {
        let list = optouts().await;
        list.as_array()?
            .iter()
            .any(|o| o["platform"] == "twitch" && o["value"] == user_id.as_str())
            .then_some(())
    })
    .await;
    testkit::eventually(30, "their message purged", || async {
        (stored(channel.clone()).await == [stayer.id.clone()]).then_some(())
    })
    .await;
    script.send("opted out").await;

    let limited = script.next().await;
    let limited: serde_json::Value =
        serde_json::from_str(limited.strip_prefix("LIMITED ").expect("LIMITED")).unwrap();
    assert_eq!(
        limited["expired"], "expired: ask for a new code",
        "{limited}"
    );
    let answers = limited["answers"].as_array().unwrap();
    let last = answers.last().unwrap();
    assert_eq!(last["errorShown"], true, "{limited}");
    assert_eq!(last["errorStatus"], "429", "{limited}");
    assert!(
        last["error"].as_str().unwrap().contains("try again later"),
        "{limited}"
    );
    assert_eq!(
        answers.len(),
        consumer::privacy::CODES_PER_ADDRESS,
        "one code was asked for already: {limited}"
    );
    assert!(
        answers[..answers.len() - 1]
            .iter()
            .all(|a| a["resultShown"] == true && a["code"].as_str().is_some_and(|c| c.len() == 6)),
        "{limited}"
    );
    assert_eq!(limited["errors"], serde_json::json!([]), "no script errors");

    script.finish().await;
    app.stop().await;
    stream.delete().await;
}
