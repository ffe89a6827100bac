//! The REST API over a store filled through the broker, on both backends
//! (`<test>::sqlite`, `<test>::postgres`).

use chrono::Utc;
use serde_json::Value;

use crate::helpers::{TestApp, ban, delete, message, on_both_stores};

on_both_stores!(
    filters_and_pagination_return_the_right_rows,
    full_text_search_finds_words_in_non_ascii_text,
    channels_list_counts_and_single_events_are_found_by_platform_and_id,
);

fn texts(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["text"].as_str().unwrap_or("").to_owned())
        .collect()
}

fn event_ids(page: &Value) -> Vec<String> {
    page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn filters_and_pagination_return_the_right_rows(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let mut events = Vec::new();
    for n in 0..25 {
        events.push(message(
            "rest_a",
            &format!("user{}", n % 3),
            &format!("a{n}"),
        ));
    }
    for n in 0..5 {
        let mut e = message("rest_a", "yt_user", &format!("y{n}"));
        e.platform = "youtube".into();
        events.push(e);
    }
    events.push(message("rest_b", "user0", "b0"));
    events.push(ban("rest_a", "user2", Utc::now()));
    app.publish(&events).await;
    app.wait_stored(32, 30).await;

    // Newest first by default; `next` pages back with `before`.
    let mut all = Vec::new();
    let mut path = "/api/events?platform=twitch&channel=rest_a&kind=message&limit=10".to_owned();
    loop {
        let (status, page) = app.get_json(&path).await;
        assert_eq!(status, 200, "{page}");
        all.extend(texts(&page));
        match page["next"].as_i64() {
            Some(next) => {
                path = format!(
                    "/api/events?platform=twitch&channel=rest_a&kind=message&limit=10&before={next}"
                );
            }
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|n| format!("a{n}")).collect();
    assert_eq!(all, want);

    // Oldest first with `order=asc` and `after`.
    let (_, page) = app
        .get_json("/api/events?channel=rest_a&kind=message&order=asc&limit=3")
        .await;
    assert_eq!(texts(&page), ["a0", "a1", "a2"]);
    let next = page["next"].as_i64().unwrap();
    let (_, page) = app
        .get_json(&format!(
            "/api/events?channel=rest_a&kind=message&order=asc&limit=3&after={next}"
        ))
        .await;
    assert_eq!(texts(&page), ["a3", "a4", "a5"]);

    // Each filter.
    let (_, page) = app.get_json("/api/events?platform=youtube").await;
    assert_eq!(texts(&page), ["y4", "y3", "y2", "y1", "y0"]);
    assert!(page["next"].is_null(), "a short page is the last");
    let (_, page) = app.get_json("/api/events?user=USER0&channel=rest_a").await;
    assert_eq!(texts(&page).len(), 9);
    let (_, page) = app.get_json("/api/events?user=user0").await;
    assert_eq!(texts(&page).len(), 10, "user0 in both channels");
    let (_, page) = app.get_json("/api/events?kind=ban").await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert_eq!(page["events"][0]["event"]["kind"], "ban");
    let (_, page) = app
        .get_json("/api/events?kind=ban,message&channel=rest_b")
        .await;
    assert_eq!(texts(&page), ["b0"]);

    // The ban marked user2's messages in history.
    let (_, page) = app.get_json("/api/events?user=user2&kind=message").await;
    let marks: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["moderation"]["action"].as_str().unwrap_or("none"))
        .collect();
    assert_eq!(marks, vec!["banned"; 8]);
    let (_, page) = app
        .get_json("/api/events?user=user1&kind=message&limit=1")
        .await;
    assert!(page["events"][0]["moderation"].is_null());

    // Bad parameters are 400s with a code.
    for (path, code) in [
        ("/api/events?limit=0", "invalid_limit"),
        ("/api/events?limit=5000", "invalid_limit"),
        ("/api/events?before=abc", "invalid_cursor"),
        ("/api/events?after=-1", "invalid_cursor"),
        ("/api/events?kind=shout", "invalid_kind"),
        ("/api/events?order=sideways", "invalid_order"),
    ] {
        let (status, body) = app.get_json(path).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (400, Some(code)),
            "{path}"
        );
    }
    app.stop().await;
}

async fn full_text_search_finds_words_in_non_ascii_text(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let texts_in = [
        "Привет всем, как дела?",
        "naïve café au lait",
        "Ελληνικά γράμματα εδώ",
        "中文 测试 消息",
        "nothing special",
    ];
    let events: Vec<_> = texts_in
        .iter()
        .map(|t| message("fts_rest", "u", t))
        .collect();
    app.publish(&events).await;
    app.wait_stored(5, 30).await;
    for (q, want) in [
        ("%D0%BF%D1%80%D0%B8%D0%B2%D0%B5%D1%82", vec![texts_in[0]]), // привет
        ("cafe", vec![texts_in[1]]),
        ("na%C3%AFve", vec![texts_in[1]]), // naïve
        (
            "%CE%B3%CF%81%CE%AC%CE%BC%CE%BC%CE%B1%CF%84%CE%B1",
            vec![texts_in[2]],
        ), // γράμματα
        ("%E6%B5%8B%E8%AF%95", vec![texts_in[3]]), // 测试
        ("special+nothing", vec![texts_in[4]]),
        ("absent", vec![]),
    ] {
        let (status, page) = app
            .get_json(&format!("/api/events?channel=fts_rest&q={q}"))
            .await;
        assert_eq!(status, 200, "{page}");
        assert_eq!(texts(&page), want, "q={q}");
    }
    app.stop().await;
}

async fn channels_list_counts_and_single_events_are_found_by_platform_and_id(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    let first = message("chan_x", "u", "first");
    let deleted = message("chan_x", "u", "to be deleted");
    let other = message("chan_y", "u", "elsewhere");
    app.publish(&[first.clone(), deleted.clone(), other.clone()])
        .await;
    app.publish(&[delete("chan_x", &deleted, Utc::now())]).await;
    app.wait_stored(4, 30).await;

    let (status, body) = app.get_json("/api/channels").await;
    assert_eq!(status, 200);
    let channels = body["channels"].as_array().unwrap();
    assert_eq!(channels.len(), 2);
    let x = &channels[0];
    assert_eq!(x["platform"], "twitch");
    assert_eq!(x["channel"], "chan_x");
    assert_eq!(x["routing_key"], "chat.twitch.chan_x");
    assert_eq!(x["event_count"], 3);
    assert_eq!(x["message_count"], 2);
    assert!(x["last_cursor"].as_i64().unwrap() >= 3);
    assert!(x["last_event_at"].is_string());

    let (status, one) = app
        .get_json(&format!("/api/events/twitch/{}", first.id))
        .await;
    assert_eq!(status, 200);
    assert_eq!(one["event"]["text"], "first");
    assert!(one["cursor"].as_i64().is_some());
    let (_, gone) = app
        .get_json(&format!("/api/events/twitch/{}", deleted.id))
        .await;
    assert_eq!(gone["moderation"]["action"], "deleted");
    let (status, body) = app
        .get_json(&format!("/api/events/youtube/{}", first.id))
        .await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    let (_, page) = app.get_json("/api/events?channel=chan_y").await;
    assert_eq!(event_ids(&page), std::slice::from_ref(&other.id));
    app.stop().await;
}

#[tokio::test]
async fn search_text_with_nul_quotes_and_operators_never_fails_and_invalid_utf8_is_400() {
    let app = TestApp::spawn().await;
    let events = [
        message("fts_nul", "u", "alpha bravo"),
        message("fts_nul", "u", "charlie"),
    ];
    app.publish(&events).await;
    app.wait_stored(2, 30).await;
    for (q, want) in [
        // NUL and other control characters separate words.
        ("a%00b", vec![]),
        ("alpha%00bravo", vec!["alpha bravo"]),
        ("%00alpha%01", vec!["alpha bravo"]),
        ("%00", vec!["alpha bravo", "charlie"]),
        // Quotes, operators, a lone `*`: plain text.
        ("%22alpha", vec!["alpha bravo"]),
        ("alpha%22%22%22", vec!["alpha bravo"]),
        ("char*", vec!["charlie"]),
        ("*", vec![]),
        ("(alpha+bravo)", vec!["alpha bravo"]),
        // A phrase "near alpha", which no text holds.
        ("NEAR(alpha+bravo)", vec![]),
        ("alpha+OR+charlie", vec![]),
        ("(%27alpha%27):*", vec!["alpha bravo"]),
    ] {
        let (status, page) = app
            .get_json(&format!("/api/events?channel=fts_nul&order=asc&q={q}"))
            .await;
        assert_eq!(status, 200, "q={q}: {page}");
        assert_eq!(texts(&page), want, "q={q}");
    }
    // Not UTF-8 once decoded: refused, not searched for a replacement
    // character.
    for query in ["q=a%FFb", "q=%C3", "channel=fts_nul&q=ok&user=%E2%82"] {
        let (status, body) = app.get_json(&format!("/api/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"], "invalid_query", "{query}");
    }
    // Too large for a browser's numbers: refused as a cursor.
    let (status, body) = app.get_json("/api/events?before=9007199254740992").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_cursor"))
    );
    let (status, _) = app.get_json("/api/events?before=9007199254740991").await;
    assert_eq!(status, 200);
    app.stop().await;
}

#[tokio::test]
async fn single_events_are_found_by_ids_with_any_reserved_character() {
    let app = TestApp::spawn().await;
    let ids = [
        "adv id with space".to_owned(),
        "a/b/c".to_owned(),
        "100%".to_owned(),
        "%41 is not A".to_owned(),
        "plus+sign".to_owned(),
        "héllo 👋 ünïcode".to_owned(),
        ":/?#[]@!$&'()*+,;= all of them".to_owned(),
    ]
    .into_iter()
    .chain(":/?#[]@!$&'()*+,;=".chars().map(|c| format!("x{c}y")))
    .collect::<Vec<_>>();
    let events: Vec<_> = ids
        .iter()
        .map(|id| {
            let mut e = message("ids", "u", id);
            e.id = id.clone();
            e
        })
        .collect();
    app.publish(&events).await;
    app.wait_stored(ids.len() as i64, 30).await;
    for id in &ids {
        let path = format!("/api/events/twitch/{}", common::urlcode::encode(id));
        let (status, one) = app.get_json(&path).await;
        assert_eq!(status, 200, "{id:?} as {path}: {one}");
        assert_eq!(one["event"]["id"], id.as_str(), "{path}");
        assert_eq!(one["event"]["text"], id.as_str(), "{path}");
    }
    // The platform segment is decoded too; `+` stays a plus sign.
    let (status, _) = app.get_json("/api/events/%74witch/plus+sign").await;
    assert_eq!(status, 200);
    let (status, body) = app.get_json("/api/events/twitch/plus%20sign").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
    app.stop().await;
}
