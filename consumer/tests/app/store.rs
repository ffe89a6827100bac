//! The store contract, one test body for both backends: SQLite on a real
//! file and PostgreSQL on a fresh database of the local server (created and
//! dropped by each test). Idempotency, cursors in commit order with two
//! writers, moderation, search, retention; and what is particular to each
//! (PostgreSQL's dropped partitions).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use common::routing::TopicPattern;
use common::schema::EventKind;
use consumer::store::{
    self, Cursor, EventFilter, EventQuery, ModerationAction, Order, RetentionPolicy, Store,
    StoreOptions, encode, new_events,
};

use proptest::prelude::*;

use crate::helpers::{ban, clear, delete, message, message_at, timeout};

/// Where a test's store lives: SQLite or a PostgreSQL database of its own.
pub(crate) use testkit::pg::StoreDb as Backend;

/// What the store tests do with a [`Backend`].
pub(crate) trait BackendExt {
    /// A store on it (a second call: a second writer on the same data).
    async fn open(&self) -> Arc<dyn Store>;
    /// Deletes the row with cursor `seq` behind the store's back.
    async fn delete_row(&self, seq: i64);
}

impl BackendExt for Backend {
    async fn open(&self) -> Arc<dyn Store> {
        store::open(
            &self.url(),
            &StoreOptions {
                max_connections: 4,
                moderation_lookback: Duration::from_secs(3600),
                ..StoreOptions::default()
            },
        )
        .await
        .expect("open store")
    }

    async fn delete_row(&self, seq: i64) {
        match self {
            Self::Sqlite(_) => {
                let pool = sqlx::SqlitePool::connect(&self.url()).await.unwrap();
                sqlx::query("DELETE FROM events WHERE seq = ?1")
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Self::Postgres(db) => {
                let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
                sqlx::query("DELETE FROM events WHERE seq = $1")
                    .bind(seq)
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
    }
}

/// Each body runs once per backend: `<name>::sqlite` and `<name>::postgres`.
macro_rules! contract {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    let backend = super::Backend::sqlite();
                    super::$name(&backend).await;
                    backend.finish().await;
                }

                #[tokio::test]
                async fn postgres() {
                    let backend = super::Backend::postgres().await;
                    super::$name(&backend).await;
                    backend.finish().await;
                }
            }
        )*
    };
}

pub(crate) use contract;

contract!(
    writes_are_idempotent_and_cursors_grow_in_commit_order,
    moderation_marks_history_whichever_arrives_first,
    queries_filter_by_pattern_platform_channel_user_kind_and_page_by_cursor,
    full_text_search_finds_words_in_non_ascii_text,
    retention_deletes_by_age_and_by_count_per_channel_and_never_reuses_cursors,
    two_writers_write_concurrently_without_losing_or_sharing_cursors,
    readers_see_cursors_only_in_commit_order_while_two_writers_write,
    youtube_events_are_stored_searchable_and_moderated,
    search_parity,
);

/// `testdata/search-parity.tsv`: the texts stored, and each query with the
/// ids of the texts it finds (issue 20: 44 kinds of Unicode query,
/// ligatures, `ß`, fullwidth, Roman numerals, circled digits, Greek, found
/// different rows on each store before both folded in Rust). Every store
/// must find exactly the listed texts.
async fn search_parity(backend: &Backend) {
    let table = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/search-parity.tsv"),
    )
    .unwrap();
    let (mut texts, mut queries) = (Vec::new(), Vec::new());
    for line in table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let cols: Vec<&str> = line.split('\t').collect();
        match cols.as_slice() {
            ["text", id, text] => texts.push((id.to_string(), text.to_string())),
            ["query", kind, q, ids] => queries.push((*kind, *q, *ids)),
            _ => panic!("bad line in search-parity.tsv: {line:?}"),
        }
    }
    assert_eq!(queries.len(), 44, "the 44 kinds of query of issue 20");
    let store = backend.open().await;
    let encoded = encode(texts.iter().map(|(_, t)| message("parity", "u", t)));
    store.write_batch(&new_events(&encoded)).await.unwrap();
    let mut wrong = Vec::new();
    for (kind, q, want) in queries {
        let found = all(
            &store,
            EventFilter {
                text: Some(q.to_owned()),
                ..EventFilter::default()
            },
        )
        .await;
        let ids: Vec<&str> = found
            .iter()
            .map(|e| {
                let text = json(e)["text"].as_str().unwrap().to_owned();
                texts.iter().find(|(_, t)| *t == text).unwrap().0.as_str()
            })
            .collect();
        let got = if ids.is_empty() {
            "-".to_owned()
        } else {
            ids.join(",")
        };
        if got != want {
            wrong.push(format!(
                "{kind}: q={q:?} found {got}, the table says {want}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "found otherwise than the table:\n{}",
        wrong.join("\n")
    );
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

async fn writes_are_idempotent_and_cursors_grow_in_commit_order(backend: &Backend) {
    let store = backend.open().await;
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

async fn moderation_marks_history_whichever_arrives_first(backend: &Backend) {
    let store = backend.open().await;
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

async fn queries_filter_by_pattern_platform_channel_user_kind_and_page_by_cursor(
    backend: &Backend,
) {
    let store = backend.open().await;
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

async fn full_text_search_finds_words_in_non_ascii_text(backend: &Backend) {
    let store = backend.open().await;
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

async fn retention_deletes_by_age_and_by_count_per_channel_and_never_reuses_cursors(
    backend: &Backend,
) {
    let store = backend.open().await;
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
    backend.delete_row(head.get()).await;
    let more = encode([message("a", "u", "after")]);
    let out = store.write_batch(&new_events(&more)).await.unwrap();
    assert_eq!(
        out.stored[0].cursor,
        head.next(),
        "the deleted newest cursor is not reused"
    );
}

async fn two_writers_write_concurrently_without_losing_or_sharing_cursors(backend: &Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
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

/// The contract's hardest part with several writers: once a reader has
/// seen cursor `c`, no event with a smaller cursor appears later. A reader
/// polls `after = the last cursor it saw` while two stores write; if a
/// smaller cursor became visible late, it would be skipped, and the reader
/// would not end up with every event.
async fn readers_see_cursors_only_in_commit_order_while_two_writers_write(backend: &Backend) {
    let a = backend.open().await;
    let b = backend.open().await;
    let reader = backend.open().await;
    let write = |store: Arc<dyn Store>, tag: &'static str| {
        tokio::spawn(async move {
            for batch in 0..30 {
                let encoded =
                    encode((0..20).map(|n| message("order", tag, &format!("{tag} {batch} {n}"))));
                store.write_batch(&new_events(&encoded)).await.unwrap();
            }
        })
    };
    let writers = (write(a.clone(), "a"), write(b.clone(), "b"));
    let mut seen: Vec<i64> = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while seen.len() < 1200 && std::time::Instant::now() < deadline {
        let page = reader
            .query(&EventQuery {
                after: seen.last().and_then(|c| Cursor::new(*c)),
                order: Order::Asc,
                limit: 1000,
                ..EventQuery::default()
            })
            .await
            .unwrap();
        seen.extend(page.iter().map(|e| e.cursor.get()));
    }
    writers.0.await.unwrap();
    writers.1.await.unwrap();
    assert_eq!(
        seen,
        (1..=1200).collect::<Vec<_>>(),
        "read as they were written: every cursor once, in order"
    );
}

async fn youtube_events_are_stored_searchable_and_moderated(backend: &Backend) {
    use crate::helpers::youtube_message;
    let store = backend.open().await;
    let channel = "UCyoutubeStoreTest01";
    let hello = youtube_message(channel, "Viewer One", "héllo from YouTube", None);
    let paid = youtube_message(
        channel,
        "Big Fan",
        "a super chat",
        Some((2_000_000, "EUR", "€2.00")),
    );
    let encoded = encode([hello.clone(), paid.clone()]);
    let out = store.write_batch(&new_events(&encoded)).await.unwrap();
    assert_eq!(out.stored.len(), 2);
    assert_eq!(
        out.stored[0].routing_key,
        common::routing::routing_key("youtube", channel)
    );
    let found = all(
        &store,
        EventFilter {
            platform: Some("youtube".into()),
            text: Some("hello".into()),
            ..EventFilter::default()
        },
    )
    .await;
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, hello.id);
    let channels = store.channels().await.unwrap();
    let yt = channels.iter().find(|c| c.platform == "youtube").unwrap();
    assert_eq!(
        (yt.event_count, yt.message_count),
        (2, 2),
        "a Super Chat is chat"
    );
    // A YouTube moderator deletes the Super Chat.
    let mut del = crate::helpers::delete(channel, &paid, Utc::now());
    del.platform = "youtube".into();
    store
        .write_batch(&new_events(&encode([del])))
        .await
        .unwrap();
    let got = store.get("youtube", &paid.id).await.unwrap().unwrap();
    assert_eq!(
        got.moderation.map(|m| m.action),
        Some(ModerationAction::Deleted)
    );
    assert!(
        store
            .get("youtube", &hello.id)
            .await
            .unwrap()
            .unwrap()
            .moderation
            .is_none()
    );
}

/// PostgreSQL: retention by age drops a whole day partition (its rows,
/// their ids and the counters), and keeps today's.
#[tokio::test]
async fn postgres_retention_drops_whole_partitions() {
    let backend = Backend::postgres().await;
    let store = backend.open().await;
    let encoded = encode((0..10).map(|n| message("p", "u", &format!("today {n}"))));
    store.write_batch(&new_events(&encoded)).await.unwrap();
    // Forty days ago's partition, filled behind the store's back as if it
    // had been written then.
    let Backend::Postgres(db) = &backend else {
        unreachable!()
    };
    let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
    let day = (Utc::now() - chrono::Duration::days(40)).timestamp_millis() / 86_400_000;
    let date = chrono::DateTime::from_timestamp_millis(day * 86_400_000).unwrap();
    let name = format!("events_p{}", date.format("%Y%m%d"));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {name} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
        day * 86_400_000,
        (day + 1) * 86_400_000
    )))
    .execute(&pool)
    .await
    .unwrap();
    let at = day * 86_400_000 + 1000;
    for n in 0..5i64 {
        let id = format!("old-{n}");
        sqlx::query(
            "INSERT INTO events (seq, platform, event_id, channel_ref, kind, sent_at, stored_at, body) \
             SELECT 1000 + $1, 'twitch', $2, id, 'message', $3, $3, '{}' FROM channels WHERE channel = 'p'",
        )
        .bind(n)
        .bind(&id)
        .bind(at)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO event_ids VALUES ('twitch', $1, 1000 + $2, $3)")
            .bind(&id)
            .bind(n)
            .bind(at)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("UPDATE channels SET event_count = event_count + 5, message_count = message_count + 5 WHERE channel = 'p'")
        .execute(&pool)
        .await
        .unwrap();
    let deleted = store
        .apply_retention(&RetentionPolicy {
            max_age: Some(Duration::from_secs(30 * 86_400)),
            max_per_channel: None,
        })
        .await
        .unwrap();
    assert_eq!(deleted, 5);
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_class WHERE relname = $1)")
            .bind(&name)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(!exists, "the old partition is dropped");
    let ids: i64 = sqlx::query_scalar("SELECT count(*) FROM event_ids WHERE event_id LIKE 'old-%'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(ids, 0);
    let c = store.channels().await.unwrap();
    assert_eq!((c[0].event_count, c[0].message_count), (10, 10));
    assert_eq!(all(&store, EventFilter::default()).await.len(), 10);
    pool.close().await;
    store.close().await;
    backend.finish().await;
}

// ---------------------------------------------------------- `q` fuzz ----

/// Texts stored before fuzzing `q`, one distinct word each (and a few
/// words the fuzz's operators and quotes look like).
const FUZZ_TEXTS: [&str; 4] = [
    "alpha \"quoted\" AND",
    "bravo NOT (paren)",
    "charlie héllo 👋",
    "delta * NEAR",
];

/// Pieces of user input that broke, or could break, a full-text query:
/// NUL and other control characters, quotes, FTS5 operators and syntax,
/// lone and trailing `*`, and any character at all.
fn q_piece() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "\0",
            "\u{1}",
            "\u{7f}",
            "\u{85}",
            "\u{2028}",
            "\t",
            "\r\n",
            " ",
            "\"",
            "\"\"",
            "'",
            "*",
            "**",
            "(",
            ")",
            ":",
            "^",
            "-",
            "+",
            "{",
            "}",
            "[",
            "]",
            ",",
            ".",
            "AND",
            "OR",
            "NOT",
            "NEAR",
            "NEAR(",
            "text:",
            "events_fts",
            "\\",
            "%00",
            "é",
            "👋",
            "\u{301}",
            "\u{fffd}",
            "\u{feff}",
            "alpha",
            "bravo*",
        ])
        .prop_map(str::to_owned),
        any::<char>().prop_map(String::from),
        "\\PC{1,8}",
        any::<String>(),
    ]
}

/// Characters that can surround a word without adding one: no letter,
/// number or private-use character (what the tokenizer indexes).
fn decoration() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec![
            '\0', '\u{1}', '\u{7f}', '"', '\'', '(', ')', ':', '^', '-', '+', '{', '}', '[', ']',
            ',', '.', ';', '!', '?', ' ', '\t', '\n', '\\', '/', '\u{2028}',
        ]),
        0..4,
    )
    .prop_map(String::from_iter)
}

fn search(text: String) -> EventQuery {
    EventQuery {
        filter: EventFilter {
            text: Some(text),
            ..EventFilter::default()
        },
        order: Order::Asc,
        limit: 100,
        ..EventQuery::default()
    }
}

/// The `q` fuzz every backend must pass; `store` is any [`Store`] (run it
/// against each backend the build has), used on `rt`:
///
/// * any text, NUL, quotes, operators, invalid-looking input included,
///   gives `Ok`, never a syntax error;
/// * a stored word wrapped in quotes, brackets, operators' punctuation and
///   control characters still finds exactly the events that hold it.
pub(crate) fn q_fuzz(rt: &tokio::runtime::Runtime, store: Arc<dyn Store>) {
    use proptest::test_runner::{Config, TestRunner};
    let owned = encode(FUZZ_TEXTS.iter().map(|t| message("fuzz", "u", t)));
    rt.block_on(store.write_batch(&new_events(&owned)))
        .expect("seeding the fuzz");
    let config = Config {
        cases: 512,
        failure_persistence: None,
        ..Config::default()
    };

    let mut runner = TestRunner::new(config.clone());
    let any_text = prop::collection::vec(q_piece(), 0..12).prop_map(|p| p.concat());
    runner
        .run(&any_text, |q| {
            let result = rt.block_on(store.query(&search(q.clone())));
            // Over the caps is a refusal, never a database error.
            prop_assert!(
                matches!(result, Ok(_) | Err(store::StoreError::SearchTooLong { .. })),
                "q={q:?}: {:?}",
                result.err()
            );
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));

    let mut runner = TestRunner::new(config);
    let words = [
        "alpha", "bravo", "charlie", "delta", "héllo", "quoted", "paren",
    ];
    let decorated = (
        prop::sample::select(words.to_vec()),
        decoration(),
        decoration(),
        any::<bool>(),
    );
    runner
        .run(&decorated, |(word, before, after, prefix)| {
            let q = format!("{before}{word}{after}{}", if prefix { "*" } else { "" });
            let found = rt
                .block_on(store.query(&search(q.clone())))
                .map_err(|e| TestCaseError::fail(format!("q={q:?}: {e}")))?;
            let texts: Vec<String> = found
                .iter()
                .map(|e| json(e)["text"].as_str().unwrap().to_owned())
                .collect();
            let want: Vec<&str> = FUZZ_TEXTS
                .iter()
                .copied()
                .filter(|t| {
                    t.split(' ')
                        .any(|w| w.trim_matches(['"', '(', ')']) == word)
                })
                .collect();
            prop_assert_eq!(texts, want, "q={:?}", q);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
}

fn any_search_text_is_a_valid_query(postgres: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let backend = rt.block_on(async {
        if postgres {
            Backend::postgres().await
        } else {
            Backend::sqlite()
        }
    });
    let store = rt.block_on(backend.open());
    q_fuzz(&rt, store.clone());
    rt.block_on(store.close());
    rt.block_on(backend.finish());
}

#[test]
fn any_search_text_is_a_valid_query_in_sqlite() {
    any_search_text_is_a_valid_query(false);
}

#[test]
fn any_search_text_is_a_valid_query_in_postgres() {
    any_search_text_is_a_valid_query(true);
}

/// Errors are judged by their own backend's codes: PostgreSQL's "invalid
/// byte sequence" (22021) ends in 5, SQLite's BUSY code, and must still be
/// a refusal (the batch is split and the bad event dead-lettered), while
/// SQLite's BUSY stays transient.
#[tokio::test]
async fn each_backend_judges_its_own_error_codes() {
    let db = Backend::postgres().await;
    let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
    let err = sqlx::query("SELECT convert_from('\\xff'::bytea, 'UTF8')")
        .execute(&pool)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "22021");
    assert!(!store::StoreError::Database(err).is_transient());
    pool.close().await;
    db.finish().await;

    let db = Backend::sqlite();
    let url = format!("{}?mode=rwc", db.url());
    let holder = sqlx::SqlitePool::connect(&url).await.unwrap();
    let mut tx = holder.begin().await.unwrap();
    sqlx::query("CREATE TABLE t (x INTEGER)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let other = sqlx::sqlite::SqlitePoolOptions::new()
        .connect_with(
            url.parse::<sqlx::sqlite::SqliteConnectOptions>()
                .unwrap()
                .busy_timeout(Duration::ZERO),
        )
        .await
        .unwrap();
    let err = sqlx::query("CREATE TABLE u (x INTEGER)")
        .execute(&other)
        .await
        .unwrap_err();
    let code = err.as_database_error().and_then(|e| e.code()).unwrap();
    assert_eq!(code, "5", "SQLITE_BUSY");
    assert!(store::StoreError::Database(err).is_transient());
    tx.rollback().await.unwrap();
}
