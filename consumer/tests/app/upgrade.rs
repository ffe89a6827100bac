//! Upgrading a store written by the previous release
//! (`testdata/store/`, made by its code): the consumer opens it, migrates
//! it, and serves its channels' history under the new routing keys (`A-Z`
//! kept literal), while it still accepts events published under the old
//! escape (spooled or queued before the upgrade).

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::amqp::OutgoingMessage;
use common::routing::previous_routing_key;
use serde_json::{Value, json};
use sqlx::Connection;

use crate::helpers::{TestApp, WsClient, ids, youtube_message};

const UPPER: &str = "UCX6OQ3DkcsbYNE6H8uQQuVA";

fn fixture(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/store")
        .join(file)
}

#[tokio::test]
async fn a_sqlite_store_of_the_previous_release_serves_its_history_under_the_new_keys() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store.sqlite");
    std::fs::copy(fixture("previous-release.sqlite"), &path).unwrap();
    let db_url = format!("sqlite://{}", path.display());
    serves_history_under_the_new_keys(&db_url).await;
    let pool = crate::helpers::db(&db_url).await;
    let steps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upgrade_steps")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(steps, 0, "the steps are done and not asked for again");
    pool.close().await;
}

#[tokio::test]
async fn a_postgres_store_of_the_previous_release_serves_its_history_under_the_new_keys() {
    let pg = testkit::pg::TestDatabase::create().await;
    // pg_dump's output, less psql's meta-commands (`\restrict`).
    let dump: String = std::fs::read_to_string(fixture("previous-release.postgres.sql"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('\\'))
        .map(|l| format!("{l}\n"))
        .collect();
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::raw_sql(sqlx::AssertSqlSafe(dump))
        .execute(&mut conn)
        .await
        .expect("the previous release's dump loads");
    conn.close().await.unwrap();
    serves_history_under_the_new_keys(&pg.url).await;
    let mut conn = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    let steps: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM upgrade_steps")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(steps, 0, "the steps are done and not asked for again");
    conn.close().await.unwrap();
    pg.drop_now().await;
}

async fn serves_history_under_the_new_keys(db_url: &str) {
    let app = TestApp::spawn_with_db(db_url.to_owned(), |_| {}).await;
    let long = format!("UC{}", "X".repeat(78));

    // Every stored key is the new one; nothing else changed.
    let (status, body) = app.get_json("/api/channels").await;
    assert_eq!(status, 200, "{body}");
    let channels: BTreeMap<String, (String, i64)> = body["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["channel"].as_str().unwrap().to_owned(),
                (
                    c["routing_key"].as_str().unwrap().to_owned(),
                    c["event_count"].as_i64().unwrap(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, i64)> = [
        (UPPER, "chat.youtube.UCX6OQ3DkcsbYNE6H8uQQuVA", 3),
        (
            "UC-lHJZR3Gqxm24_Vd_AJ5Yw",
            "chat.youtube.UC-2dlHJZR3Gqxm24_Vd_AJ5Yw",
            1,
        ),
        (long.as_str(), &format!("chat.youtube.{long}"), 1),
        ("fixture_chan", "chat.twitch.fixture_chan", 2),
    ]
    .into_iter()
    .map(|(c, k, n)| (c.to_owned(), (k.to_owned(), n)))
    .collect();
    assert_eq!(channels, want);

    // REST history by platform and channel.
    let (status, page) = app
        .get_json(&format!(
            "/api/events?platform=youtube&channel={UPPER}&order=asc"
        ))
        .await;
    assert_eq!(status, 200, "{page}");
    let texts: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["text"].as_str().unwrap())
        .collect();
    assert_eq!(
        texts,
        [
            "first on the upper-case channel",
            "second on the upper-case channel",
            "third on the upper-case channel"
        ]
    );

    // Search: the stored texts were indexed again, folded (SQLite's index
    // was rebuilt empty; without the re-index nothing would be found).
    let (status, page) = app
        .get_json("/api/events?q=%EF%BC%B5PPER-case+channel&order=asc")
        .await; // `Ｕ`: fullwidth, folded to `u`
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().unwrap().len(), 3, "{page}");

    // History by routing-key pattern: the new key finds it, the old one no
    // longer does (the release notes name such saved `patterns=`).
    let (_, found) = history(&app, vec![format!("chat.youtube.{UPPER}")]).await;
    assert_eq!(
        found,
        [
            "youtube-fixture-1",
            "youtube-fixture-3",
            "youtube-fixture-5"
        ]
    );
    let (_, found) = history(&app, vec![format!("chat.youtube.{long}")]).await;
    assert_eq!(found, ["youtube-fixture-6"], "once hashed, now plain");
    let (_, found) = history(&app, vec!["chat.youtube.UC-2dlHJZR3Gqxm24_Vd_AJ5Yw".into()]).await;
    assert_eq!(found, ["youtube-fixture-4"]);
    let (_, found) = history(&app, vec!["chat.twitch.*".into()]).await;
    assert_eq!(found, ["twitch-fixture-2", "twitch-fixture-7"]);
    let (_, found) = history(&app, vec![previous_routing_key("youtube", UPPER)]).await;
    assert!(found.is_empty(), "{found:?}");

    // Live, the channel goes on under its new key, whichever escape the
    // event was published under.
    let (mut ws, _) = history(&app, vec![format!("chat.youtube.{UPPER}")]).await;
    let spooled = youtube_message(UPPER, "Viewer", "published before the upgrade", None);
    let mut old_key = OutgoingMessage::from_event(&spooled).unwrap();
    old_key.routing_key = previous_routing_key("youtube", UPPER);
    let fresh = youtube_message(UPPER, "Viewer", "published after the upgrade", None);
    let new_key = OutgoingMessage::from_event(&fresh).unwrap();
    assert_eq!(new_key.routing_key, format!("chat.youtube.{UPPER}"));
    app.publisher()
        .publish_all(&[old_key, new_key], 16)
        .await
        .expect("published");
    let live = ws.events("h", 2, &mut Vec::new()).await;
    assert_eq!(ids(&live), [spooled.id.clone(), fresh.id.clone()]);
    assert_eq!(app.wait_stored(9, 30).await, 9);
    app.stop().await;
}

/// A subscription to `patterns` with the last 50 events as history: the
/// client, live now, and the ids of the history it got.
async fn history(app: &TestApp, patterns: Vec<String>) -> (WsClient, Vec<String>) {
    let (mut ws, _) = WsClient::connect_welcomed(&app.ws_url("")).await;
    ws.subscribe(json!({"sub": "h", "patterns": patterns, "last": 50}))
        .await;
    let mut got = Vec::new();
    loop {
        let v: Value = ws.json().await;
        match v["type"].as_str() {
            Some("event") => got.push(v),
            Some("live") => break,
            _ => {}
        }
    }
    (ws, ids(&got))
}
