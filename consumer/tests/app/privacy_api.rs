//! Forget on request through the consumer: the admin API and the CLI opt
//! out and purge while the service runs, tell the bus (the privacy stream,
//! the channel's routing key, chatbus's own queues), and `!optout <code>`
//! opts its author out, once, only with their own live code.

use common::ChatEvent;
use common::privacy::{PrivacyAction, PrivacyNotice};
use serde_json::{Value, json};

use testkit::within;

use crate::helpers::{
    PrivacyStream, TestApp, WsClient, message, on_both_stores, rabbit_message_count,
};

const ADMIN: &str = "privacy-admin-token";
const WORD: &str = "xylophonequince";

on_both_stores!(
    the_admin_api_purges_a_user_everywhere_and_tells_the_bus,
    self_service_opts_out_only_with_the_authors_own_live_code,
);

async fn app_on(backend: &str, stream: &PrivacyStream) -> TestApp {
    let name = stream.name.clone();
    let tweak = move |c: &mut consumer::Config| {
        c.privacy_stream = name;
        c.consumer_privacy_token = Some(ADMIN.into());
    };
    let app = match backend {
        "postgres" => TestApp::spawn_postgres_with(tweak).await,
        _ => TestApp::spawn_with(tweak).await,
    };
    app.wait_consuming().await;
    app
}

async fn call(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, app.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(b);
    }
    let res = within(120, path, req.send()).await.expect("HTTP");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

fn by(login: &str, id: &str, channel: &str, text: &str) -> ChatEvent {
    let mut e = message(channel, login, text);
    e.author.as_mut().expect("author").id = id.into();
    e
}

/// The events the REST API returns, as JSON.
async fn events(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, body) = app
        .get_json(&format!("/api/events?limit=1000{query}"))
        .await;
    assert_eq!(status, 200, "{body}");
    body["events"]
        .as_array()
        .expect("a page of events")
        .iter()
        .map(|e| e["event"].clone())
        .collect()
}

/// Publishes `marker` and waits until it is stored: everything published
/// before it on the same channel has been through ingest.
async fn through(app: &TestApp, marker: ChatEvent) {
    let id = marker.id.clone();
    app.publish(&[marker]).await;
    testkit::eventually(30, "the marker stored", || async {
        let (status, _) = app.get_json(&format!("/api/events/twitch/{id}")).await;
        (status == 200).then_some(())
    })
    .await;
}

async fn the_admin_api_purges_a_user_everywhere_and_tells_the_bus(backend: &str) {
    let stream = PrivacyStream::new().await;
    let app = app_on(backend, &stream).await;
    // Notices as another service sees them.
    let (tx, mut notices) = tokio::sync::mpsc::unbounded_channel();
    let cancel = tokio_util::sync::CancellationToken::new();
    let (_feed, _task) = common::amqp::privacy::follow(
        testkit::rabbit::connect_options(&testkit::rabbit::amqp_url(), "test-privacy-reader"),
        stream.name.clone(),
        "test".into(),
        Some(tx),
        cancel.clone(),
    );

    let first = by("victim", "900", "alpha", &format!("the {WORD} is mine"));
    let mut reply = by("friend", "901", "alpha", "@victim nice");
    reply.reply_to = Some(common::schema::ReplyParent {
        message_id: first.id.clone(),
        user_id: Some("900".into()),
        user_login: Some("victim".into()),
        display_name: Some("victim".into()),
        text: first.text.clone(),
        thread_message_id: None,
    });
    let other = by("bystander", "902", "beta", "unrelated");
    app.publish(&[first.clone(), reply.clone(), other.clone()])
        .await;
    app.wait_stored(3, 30).await;
    // Two events waiting in chatbus's own unrouted queue: the victim's
    // goes with the purge, the other stays.
    let stuck = by("victim", "900", "gamma", &format!("{WORD} unrouted"));
    let kept = by("bystander", "902", "gamma", "unrouted but kept");
    for e in [&stuck, &kept] {
        let m = common::amqp::OutgoingMessage::from_event(e).expect("encode");
        app.publisher()
            .send_raw(
                "",
                &app.topology.unrouted_queue,
                &m.body,
                m.properties("test").expect("properties"),
            )
            .await
            .expect("send")
            .wait()
            .await
            .expect("confirmed");
    }

    let body = json!({"user": "twitch:900"});
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/purge",
        None,
        Some(&body),
    )
    .await;
    assert_eq!(status, 401, "no token, no purge");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some("wrong"),
        Some(&body),
    )
    .await;
    assert_eq!(status, 401);
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some(ADMIN),
        Some(&json!({"user": "twitch:900", "channel": "twitch:alpha"})),
    )
    .await;
    assert_eq!(status, 400, "two subjects at once");
    let (status, report) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some(ADMIN),
        Some(&body),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(report["redacted"], 1, "{report}");
    assert_eq!(report["announced"]["stream"], true, "{report}");
    assert_eq!(report["announced"]["dropped_from_queues"], 1, "{report}");

    let all = events(&app, "").await;
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(WORD), "{text}");
    assert!(all.iter().any(|e| e["id"] == other.id.as_str()));
    assert!(events(&app, &format!("&q={WORD}")).await.is_empty());
    // A WebSocket resume from the start replays history without them.
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.subscribe(json!({"sub": "s", "patterns": ["chat.#"], "since": 0}))
        .await;
    let mut replayed = Vec::new();
    loop {
        let frame = ws.json().await;
        if frame["type"] == "live" {
            break;
        }
        replayed.push(frame);
    }
    let ids: Vec<&str> = replayed
        .iter()
        .filter_map(|f| f["event"]["id"].as_str())
        .collect();
    assert!(
        ids.contains(&other.id.as_str()),
        "the resume replays history: {ids:?}"
    );
    assert!(!ids.contains(&first.id.as_str()), "{ids:?}");
    let replayed = serde_json::to_string(&replayed).unwrap();
    assert!(!replayed.contains(WORD), "{replayed}");
    assert_eq!(rabbit_message_count(&app.topology.unrouted_queue).await, 1);

    let notice: PrivacyNotice = within(30, "the purge notice", notices.recv())
        .await
        .expect("a notice");
    assert_eq!(notice.action, PrivacyAction::Purge);
    assert_eq!(
        notice
            .subject
            .as_ref()
            .map(common::privacy::Subject::describe)
            .as_deref(),
        Some("user twitch:900")
    );
    assert_eq!(notice.rows, Some(1));
    assert!(notice.horizon.is_some());

    // A channel purge is also announced on the channel's routing key, and
    // the consumer stores that announcement (it holds no text).
    let (status, report) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some(ADMIN),
        Some(&json!({"channel": "twitch:beta"})),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["announced"]["channel_event"], true, "{report}");
    testkit::eventually(30, "the channel's privacy event stored", || async {
        let got = events(&app, "&channel=beta&kind=privacy").await;
        (got.len() == 1).then_some(())
    })
    .await;
    assert!(events(&app, "&channel=beta&kind=message").await.is_empty());

    let (status, audit) = call(
        &app,
        reqwest::Method::GET,
        "/api/privacy/audit",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let subjects: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["subject"].as_str())
        .collect();
    assert_eq!(subjects, ["channel twitch:beta", "user twitch:900"]);
    assert!(!audit.to_string().contains(WORD));
    cancel.cancel();
    app.stop().await;
    stream.delete().await;
}

async fn self_service_opts_out_only_with_the_authors_own_live_code(backend: &str) {
    let stream = PrivacyStream::new().await;
    let app = app_on(backend, &stream).await;
    let old = by("victim", "700", "alpha", &format!("{WORD} before"));
    app.publish(std::slice::from_ref(&old)).await;
    app.wait_stored(1, 30).await;

    let ask = |login: &str| json!({"platform": "twitch", "login": login});
    let (status, issued) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/optout",
        None,
        Some(&ask("Victim")),
    )
    .await;
    assert_eq!(status, 200, "{issued}");
    let code = issued["code"].as_str().expect("a code").to_owned();
    assert_eq!(code.len(), 6);
    let (_, second) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/optout",
        None,
        Some(&ask("victim")),
    )
    .await;
    let expired = second["code"].as_str().expect("a code").to_owned();
    app.expire_optout_code(&expired).await;

    // Nothing happens for: a wrong code, an expired one, the right code
    // typed by someone else.
    app.publish(&[
        by("victim", "700", "alpha", "!optout ZZZZZZ"),
        by("victim", "700", "alpha", &format!("!optout {expired}")),
        by("mallory", "701", "alpha", &format!("!optout {code}")),
    ])
    .await;
    through(&app, by("bystander", "702", "alpha", "marker one")).await;
    // The right one, typed (in lower case) by the victim.
    app.publish(&[by(
        "victim",
        "700",
        "beta",
        &format!("!optout {}", code.to_lowercase()),
    )])
    .await;
    testkit::eventually(30, "the victim opted out", || async {
        let (_, list) = call(
            &app,
            reqwest::Method::GET,
            "/api/privacy/optouts",
            Some(ADMIN),
            None,
        )
        .await;
        (list.as_array()?.iter().any(|o| o["value"] == "700")).then_some(())
    })
    .await;
    testkit::eventually(30, "the victim purged", || async {
        events(&app, "")
            .await
            .iter()
            .all(|e| e["id"] != old.id.as_str())
            .then_some(())
    })
    .await;
    let (_, list) = call(
        &app,
        reqwest::Method::GET,
        "/api/privacy/optouts",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(list.as_array().unwrap().len(), 1, "only the victim: {list}");
    // The purge's audit row comes once the purge is done.
    testkit::eventually(30, "the self-service opt-out and purge audited", || async {
        let (_, audit) = call(
            &app,
            reqwest::Method::GET,
            "/api/privacy/audit",
            Some(ADMIN),
            None,
        )
        .await;
        let actions: Vec<(String, String)> = audit
            .as_array()?
            .iter()
            .map(|a| {
                (
                    a["action"].as_str().unwrap_or_default().to_owned(),
                    a["requested_by"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect();
        (actions.len() >= 2).then_some(actions)
    })
    .await
    .into_iter()
    .zip([("purge", "self-service"), ("opt_out", "self-service")])
    .for_each(|(got, want)| assert_eq!((got.0.as_str(), got.1.as_str()), want));
    let (_, audit) = call(
        &app,
        reqwest::Method::GET,
        "/api/privacy/audit",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(audit.as_array().map(Vec::len), Some(2), "{audit}");
    // No `!optout` message is in history, and the victim's later lines are
    // not stored.
    app.publish(&[by("victim", "700", "alpha", "after opting out")])
        .await;
    through(&app, by("bystander", "702", "alpha", "marker two")).await;
    let all = events(&app, "").await;
    assert!(
        all.iter()
            .all(|e| !e["text"].as_str().unwrap_or("").contains("!optout")),
        "{all:?}"
    );
    assert!(all.iter().all(|e| e["author"]["id"] != "700"), "{all:?}");
    // The code is used up.
    app.publish(&[by("victim", "700", "alpha", &format!("!optout {code}"))])
        .await;

    // Codes per address are limited (two asked above).
    let mut limited = 0;
    for _ in 0..5 {
        let (status, _) = call(
            &app,
            reqwest::Method::POST,
            "/api/privacy/optout",
            None,
            Some(&ask("victim")),
        )
        .await;
        if status == 429 {
            limited += 1;
        }
    }
    assert_eq!(limited, 2, "5 per address per 10 minutes");
    let (status, _) = call(
        &app,
        reqwest::Method::POST,
        "/api/privacy/optout",
        None,
        Some(&json!({"platform": "Twitch!", "login": "x"})),
    )
    .await;
    assert_eq!(status, 400);
    app.stop().await;
    stream.delete().await;
}

#[tokio::test]
async fn the_cli_opts_out_lists_and_purges_while_the_service_runs() {
    let stream = PrivacyStream::new().await;
    let app = app_on("sqlite", &stream).await;
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_consumer"))
            .args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("DATABASE_URL", &app.db_url)
            .env("AMQP_URL", testkit::rabbit::amqp_url())
            .env("CHAT_EXCHANGE", &app.topology.exchange)
            .env("PRIVACY_STREAM", &stream.name)
            .env("LOG_LEVEL", "warn")
            .output()
            .expect("run consumer privacy");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = cli(&["privacy", "optout", "--user", "twitch:800"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // The running service honours it from its next batch.
    app.publish(&[by("quiet", "800", "alpha", "must not be stored")])
        .await;
    through(&app, by("loud", "801", "alpha", "marker")).await;
    assert!(
        events(&app, "")
            .await
            .iter()
            .all(|e| e["author"]["id"] != "800")
    );
    let (code, out, _) = cli(&["privacy", "list"]);
    assert_eq!(code, Some(0));
    let list: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list[0]["value"], "800");
    let (code, out, err) = cli(&["privacy", "purge", "--user", "twitch:801"]);
    assert_eq!(code, Some(0), "{out}{err}");
    let report: Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(report["deleted"], 1, "{report}");
    assert!(events(&app, "").await.is_empty());
    let (code, _, err) = cli(&["privacy", "purge", "--user", "twitch"]);
    assert_eq!(code, Some(2), "bad arguments: {err}");
    assert!(err.contains("platform"), "{err}");
    let (code, out, err) = cli(&["privacy", "optin", "--user", "twitch:800"]);
    assert_eq!(code, Some(0), "{out}{err}");
    through(&app, by("quiet", "800", "alpha", "back again")).await;
    let (code, out, _) = cli(&["privacy", "audit"]);
    assert_eq!(code, Some(0));
    assert_eq!(
        serde_json::from_str::<Value>(&out)
            .unwrap()
            .as_array()
            .map(Vec::len),
        Some(3)
    );
    app.stop().await;
    stream.delete().await;
}

#[tokio::test]
async fn a_purge_decided_by_another_deployment_is_applied_to_this_store_once() {
    let stream = PrivacyStream::new().await;
    let here = app_on("sqlite", &stream).await;
    let there = app_on("sqlite", &stream).await;
    let line = by("victim", "600", "alpha", &format!("{WORD} everywhere"));
    let other = by("bystander", "601", "alpha", "stays");
    for app in [&here, &there] {
        app.publish(&[line.clone(), other.clone()]).await;
        app.wait_stored(2, 30).await;
    }
    let (status, report) = call(
        &there,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some(ADMIN),
        Some(&json!({"user": "twitch:600"})),
    )
    .await;
    assert_eq!(status, 200, "{report}");
    testkit::eventually(30, "the other deployment's purge applied here", || async {
        let all = events(&here, "").await;
        all.iter()
            .all(|e| e["id"] != line.id.as_str())
            .then_some(())
    })
    .await;
    assert!(
        events(&here, "")
            .await
            .iter()
            .any(|e| e["id"] == other.id.as_str())
    );
    // The audit row comes once the purge is done (after its scrub).
    let audit_of = |app: &TestApp, n: usize| {
        let url = app.url("/api/privacy/audit");
        async move {
            testkit::eventually(30, &format!("{n} audit rows"), || async {
                let res = reqwest::Client::new()
                    .get(&url)
                    .bearer_auth(ADMIN)
                    .send()
                    .await
                    .ok()?;
                let rows: Value = res.json().await.ok()?;
                (rows.as_array()?.len() >= n).then_some(rows)
            })
            .await
        }
    };
    let audit = audit_of(&here, 1).await;
    assert_eq!(audit.as_array().map(Vec::len), Some(1), "{audit}");
    assert_eq!(audit[0]["requested_by"], "stream: admin-api");
    // A restart replays the stream: the first notice is skipped, a new one
    // (after it in the stream) is applied: two rows, not three.
    let again = here
        .spawn_peer(|c| {
            c.privacy_stream = stream.name.clone();
            c.consumer_privacy_token = Some(ADMIN.into());
        })
        .await;
    again.wait_consuming().await;
    let (status, _) = call(
        &there,
        reqwest::Method::POST,
        "/api/privacy/purge",
        Some(ADMIN),
        Some(&json!({"user": "twitch:601"})),
    )
    .await;
    assert_eq!(status, 200);
    let audit = audit_of(&again, 2).await;
    let subjects: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|a| a["subject"].as_str())
        .collect();
    assert_eq!(subjects, ["user twitch:601", "user twitch:600"], "{audit}");
    again.stop().await;
    here.stop().await;
    there.stop().await;
    stream.delete().await;
}
