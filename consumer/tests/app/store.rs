//! The SQLite store on a real file: idempotency, cursors, moderation,
//! search, retention, and two writers on one file.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::routing::TopicPattern;
use common::schema::EventKind;
use consumer::store::{
    self, Cursor, EventFilter, EventQuery, ModerationAction, Order, RetentionPolicy, Store,
    StoreOptions, encode, new_events,
};

use crate::helpers::{ban, clear, delete, message, message_at, timeout};

async fn open(dir: &tempfile::TempDir) -> Arc<dyn Store> {
    let url = format!("sqlite://{}", dir.path().join("s.sqlite").display());
    store::open(
        &url,
        &StoreOptions {
            max_connections: 4,
            moderation_lookback: Duration::from_secs(3600),
        },
    )
    .await
    .expect("open store")
}

async fn all(store: &Arc<dyn Store>, filter: EventFilter) -> Vec<store::StoredEvent> {
    store
        .query(&EventQuery {
            filter,
            order: Order::Asc,
            limit: 100_000,
            ..EventQuery::default()
        })
        .await
        .expect("query")
}

fn json(e: &store::StoredEvent) -> serde_json::Value {
    serde_json::from_str(e.event.get()).unwrap()
}

#[tokio::test]
async fn writes_are_idempotent_and_cursors_grow_in_commit_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    assert_eq!(store.head().await.unwrap(), None);

    let first = encode((0..10).map(|n| message("a", "u", &format!("m{n}"))));
    let out = store.write_batch(&new_events(&first)).await.unwrap();
    assert_eq!(out.stored.len(), 10);
    assert_eq!(out.duplicates, 0);
    let cursors: Vec<i64> = out.stored.iter().map(|e| e.cursor.get()).collect();
    assert_eq!(cursors, (1..=10).collect::<Vec<_>>());

    // Redelivery of the whole batch: nothing new.
    let again = store.write_batch(&new_events(&first)).await.unwrap();
    assert!(again.stored.is_empty());
    assert_eq!(again.duplicates, 10);

    // Duplicates mixed with new events (also twice inside one batch): the
    // new ones get the next cursors, without holes.
    let fresh = encode((0..5).map(|n| message("b", "u", &format!("n{n}"))));
    let mut mixed = new_events(&first[..3]);
    mixed.extend(new_events(&fresh));
    mixed.extend(new_events(&fresh[..1]));
    let head = store.head().await.unwrap();
    let out = store.write_batch(&mixed).await.unwrap();
    assert_eq!(out.duplicates, 4);
    assert_eq!(out.after, head, "the batch says where it continues from");
    let cursors: Vec<i64> = out.stored.iter().map(|e| e.cursor.get()).collect();
    assert_eq!(cursors.len(), 5);
    assert!(
        cursors[0] > 10 && cursors.windows(2).all(|w| w[0] < w[1]),
        "{cursors:?}"
    );
    // No holes: duplicates (stored or repeated in the batch) use no cursor.
    assert_eq!(cursors, (11..=15).collect::<Vec<i64>>());
    assert_eq!(store.head().await.unwrap(), Cursor::new(15));

    // What is read back is the JSON as published, byte for byte.
    let got = store.get("twitch", &fresh[2].0.id).await.unwrap().unwrap();
    assert_eq!(got.event.get(), fresh[2].1);
    assert_eq!(got.cursor.get(), cursors[2]);
    assert!(store.get("twitch", "nope").await.unwrap().is_none());
    assert!(
        store
            .get("youtube", &fresh[2].0.id)
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn moderation_marks_history_whichever_arrives_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let now = Utc::now();
    let min = |m: i64| now - chrono::Duration::minutes(m);

    let deleted = message_at("c", "alice", "rude", min(10));
    let kept = message_at("c", "alice", "fine", min(9));
    let banned_recent = message_at("c", "bob", "spam 1", min(8));
    let banned_recent2 = message_at("c", "bob", "spam 2", min(7));
    let banned_old = message_at("c", "bob", "long ago", min(300)); // outside the 1 h lookback
    let bob_elsewhere = message_at("other", "bob", "in another channel", min(7));
    let timed_out = message_at("c", "carol", "hmm", min(6));
    let before_clear = message_at("c", "dave", "before clear", min(5));
    let encoded = encode([
        deleted.clone(),
        kept.clone(),
        banned_recent.clone(),
        banned_recent2.clone(),
        banned_old.clone(),
        bob_elsewhere.clone(),
        timed_out.clone(),
        before_clear.clone(),
    ]);
    store.write_batch(&new_events(&encoded)).await.unwrap();

    let del = delete("c", &deleted, min(4));
    let b = ban("c", "Bob", min(4));
    let t = timeout("c", "carol", min(4));
    let mods = encode([del.clone(), b.clone(), t.clone()]);
    let out = store.write_batch(&new_events(&mods)).await.unwrap();
    assert_eq!(out.moderated, 4, "deleted + 2 banned + timed out");

    let action = |id: &str| {
        let store = store.clone();
        let id = id.to_owned();
        async move {
            store
                .get("twitch", &id)
                .await
                .unwrap()
                .unwrap()
                .moderation
                .map(|m| m.action)
        }
    };
    assert_eq!(action(&deleted.id).await, Some(ModerationAction::Deleted));
    assert_eq!(action(&kept.id).await, None);
    assert_eq!(
        action(&banned_recent.id).await,
        Some(ModerationAction::Banned)
    );
    assert_eq!(
        action(&banned_recent2.id).await,
        Some(ModerationAction::Banned)
    );
    assert_eq!(action(&banned_old.id).await, None, "outside the lookback");
    assert_eq!(action(&bob_elsewhere.id).await, None, "other channel");
    assert_eq!(
        action(&timed_out.id).await,
        Some(ModerationAction::TimedOut)
    );
    let by = store.get("twitch", &deleted.id).await.unwrap().unwrap();
    let del_cursor = store.get("twitch", &del.id).await.unwrap().unwrap().cursor;
    assert_eq!(by.moderation.unwrap().by, del_cursor);

    // A clear marks what is left in the channel.
    store
        .write_batch(&new_events(&encode([clear("c", min(3))])))
        .await
        .unwrap();
    assert_eq!(
        action(&before_clear.id).await,
        Some(ModerationAction::Cleared)
    );
    assert_eq!(action(&kept.id).await, Some(ModerationAction::Cleared));
    assert_eq!(action(&bob_elsewhere.id).await, None);

    // Out of order: the delete and the ban arrive before their messages
    // (separate batches, and inside one batch).
    let late = message_at("d", "erin", "late", min(2));
    let late_ban_target = message_at("d", "frank", "late too", min(2));
    let innocent = message_at("d", "gina", "innocent", min(2));
    let early = encode([delete("d", &late, min(1))]);
    store.write_batch(&new_events(&early)).await.unwrap();
    let batch = encode([
        ban("d", "frank", min(1)),
        late.clone(),
        late_ban_target.clone(),
        innocent.clone(),
    ]);
    let out = store.write_batch(&new_events(&batch)).await.unwrap();
    let marked: Vec<_> = out
        .stored
        .iter()
        .map(|s| (s.id.clone(), s.moderation.map(|m| m.action)))
        .collect();
    assert!(
        marked.contains(&(late.id.clone(), Some(ModerationAction::Deleted))),
        "{marked:?}"
    );
    assert!(
        marked.contains(&(late_ban_target.id.clone(), Some(ModerationAction::Banned))),
        "{marked:?}"
    );
    assert!(marked.contains(&(innocent.id.clone(), None)), "{marked:?}");
    assert_eq!(action(&late.id).await, Some(ModerationAction::Deleted));
    assert_eq!(
        action(&late_ban_target.id).await,
        Some(ModerationAction::Banned)
    );
}

#[tokio::test]
async fn queries_filter_by_pattern_platform_channel_user_kind_and_page_by_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let mut events = Vec::new();
    for n in 0..30 {
        let channel = ["a", "b", "c"][n % 3];
        events.push(message(
            channel,
            &format!("user{}", n % 2),
            &format!("n{n}"),
        ));
    }
    let mut yt = message("a", "user0", "on youtube");
    yt.platform = "youtube".into();
    events.push(yt);
    events.push(ban("a", "user1", Utc::now()));
    let encoded = encode(events);
    store.write_batch(&new_events(&encoded)).await.unwrap();

    let pattern = |p: &str| TopicPattern::parse(p).unwrap();
    let count = |filter: EventFilter| {
        let store = store.clone();
        async move { all(&store, filter).await.len() }
    };
    assert_eq!(count(EventFilter::default()).await, 32);
    let by_pattern = EventFilter {
        patterns: vec![pattern("chat.twitch.a")],
        ..EventFilter::default()
    };
    assert_eq!(count(by_pattern).await, 11, "10 messages + the ban");
    let any_platform = EventFilter {
        patterns: vec![pattern("chat.*.a")],
        ..EventFilter::default()
    };
    assert_eq!(count(any_platform).await, 12);
    let youtube = EventFilter {
        platform: Some("youtube".into()),
        ..EventFilter::default()
    };
    assert_eq!(count(youtube).await, 1);
    let user = EventFilter {
        channel: Some("b".into()),
        user: Some("USER1".into()),
        ..EventFilter::default()
    };
    assert_eq!(count(user).await, 5);
    let bans = EventFilter {
        kinds: vec![EventKind::Ban],
        ..EventFilter::default()
    };
    assert_eq!(count(bans).await, 1);
    let nothing = EventFilter {
        patterns: vec![pattern("chat.kick.#")],
        ..EventFilter::default()
    };
    assert_eq!(count(nothing).await, 0);

    // Pages newest first, with `before`, cover everything exactly once.
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .query(&EventQuery {
                before,
                limit: 7,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        seen.extend(page.iter().map(|e| e.cursor.get()));
        if page.len() < 7 {
            break;
        }
        before = page.last().map(|e| e.cursor);
    }
    assert_eq!(seen, (1..=32).rev().collect::<Vec<_>>());
    let window = store
        .query(&EventQuery {
            after: Cursor::new(5),
            before: Cursor::new(9),
            order: Order::Asc,
            limit: 100,
            ..EventQuery::default()
        })
        .await
        .unwrap();
    let cursors: Vec<i64> = window.iter().map(|e| e.cursor.get()).collect();
    assert_eq!(cursors, [6, 7, 8]);
}

#[tokio::test]
async fn full_text_search_finds_words_in_non_ascii_text() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let texts = [
        "Привет, мир! Как дела?",
        "héllo wörld, ça va?",
        "Καλημέρα κόσμε",
        "日本語 の テスト です",
        "plain ascii hello there",
        "emoji 👋 wave",
        "ΣΊΣΥΦΟΣ rolled the stone",
    ];
    let events: Vec<_> = texts.iter().map(|t| message("fts", "u", t)).collect();
    let encoded = encode(events.clone());
    store.write_batch(&new_events(&encoded)).await.unwrap();

    let search = |q: &str| {
        let store = store.clone();
        let q = q.to_owned();
        async move {
            let found = all(
                &store,
                EventFilter {
                    text: Some(q),
                    ..EventFilter::default()
                },
            )
            .await;
            found
                .iter()
                .map(|e| json(e)["text"].as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(search("привет").await, [texts[0]], "Cyrillic, case-folded");
    assert_eq!(search("МИР").await, [texts[0]]);
    assert_eq!(
        search("hello").await,
        [texts[1], texts[4]],
        "diacritics folded"
    );
    assert_eq!(search("wörld").await, [texts[1]]);
    assert_eq!(search("καλημέρα").await, [texts[2]], "Greek, case-folded");
    assert_eq!(
        search("テスト").await,
        [texts[3]],
        "Japanese word between spaces"
    );
    assert_eq!(
        search("σίσυφος").await,
        [texts[6]],
        "Greek upper to lower case"
    );
    assert_eq!(search("ca va").await, [texts[1]], "all words must match");
    assert_eq!(search("приве*").await, [texts[0]], "prefix");
    assert!(search("absent").await.is_empty());
    assert!(
        search("\"unbalanced ( AND").await.is_empty(),
        "no syntax error"
    );
}

#[tokio::test]
async fn retention_deletes_by_age_and_by_count_per_channel_and_never_reuses_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir).await;
    let old = Utc::now() - chrono::Duration::days(40);
    let mut events = Vec::new();
    for n in 0..5 {
        events.push(message_at("a", "u", &format!("ancient findme {n}"), old));
    }
    for n in 0..20 {
        events.push(message("a", "u", &format!("recent {n}")));
        events.push(message("b", "u", &format!("recent {n}")));
    }
    let encoded = encode(events);
    store.write_batch(&new_events(&encoded)).await.unwrap();
    let head = store.head().await.unwrap().unwrap();

    let deleted = store
        .apply_retention(&RetentionPolicy {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_per_channel: None,
        })
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    let text = EventFilter {
        text: Some("findme".into()),
        ..EventFilter::default()
    };
    assert!(
        all(&store, text).await.is_empty(),
        "the search index forgot them too"
    );

    let deleted = store
        .apply_retention(&RetentionPolicy {
            max_age: None,
            max_per_channel: Some(8),
        })
        .await
        .unwrap();
    assert_eq!(deleted, 24);
    let channels = store.channels().await.unwrap();
    for c in &channels {
        assert_eq!((c.event_count, c.message_count), (8, 8), "{c:?}");
    }
    // The newest 8 of each channel are the ones kept.
    let a = all(
        &store,
        EventFilter {
            channel: Some("a".into()),
            ..EventFilter::default()
        },
    )
    .await;
    let texts: Vec<String> = a
        .iter()
        .map(|e| json(e)["text"].as_str().unwrap().into())
        .collect();
    assert_eq!(texts.first().unwrap(), "recent 12");
    assert_eq!(texts.last().unwrap(), "recent 19");

    // Delete the newest row by hand: the next event still gets a new cursor.
    let newest = store.head().await.unwrap().unwrap();
    assert_eq!(newest, head);
    let url = format!("sqlite://{}", dir.path().join("s.sqlite").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM events WHERE seq = ?1")
        .bind(head.get())
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let more = encode([message("a", "u", "after")]);
    let out = store.write_batch(&new_events(&more)).await.unwrap();
    assert_eq!(
        out.stored[0].cursor,
        head.next(),
        "the deleted newest cursor is not reused"
    );
}

#[tokio::test]
async fn two_stores_on_one_file_write_concurrently_without_losing_or_sharing_cursors() {
    let dir = tempfile::tempdir().unwrap();
    let a = open(&dir).await;
    let b = open(&dir).await;
    let write = |store: Arc<dyn Store>, tag: &'static str| {
        tokio::spawn(async move {
            let mut cursors = Vec::new();
            for batch in 0..20 {
                let encoded =
                    encode((0..50).map(|n| message("shared", tag, &format!("{tag} {batch} {n}"))));
                let out = store.write_batch(&new_events(&encoded)).await.unwrap();
                cursors.extend(out.stored.iter().map(|e| e.cursor.get()));
            }
            cursors
        })
    };
    let (ca, cb) = tokio::join!(write(a.clone(), "a"), write(b.clone(), "b"));
    let mut all_cursors = ca.unwrap();
    all_cursors.extend(cb.unwrap());
    all_cursors.sort_unstable();
    assert_eq!(all_cursors, (1..=2000).collect::<Vec<_>>());
    assert_eq!(a.channels().await.unwrap()[0].event_count, 2000);
}
