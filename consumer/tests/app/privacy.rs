//! Forget on request, in the store, on both backends: a user purge leaves
//! none of the user's messages and no quote of them anywhere (rows, search,
//! the SQLite file and WAL, the rewritten PostgreSQL partitions), writes an
//! audit row without text, and refuses the user's late arrivals; opt-outs
//! hold across a reopen; opt-out codes are single-use and bound to a login.

use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use common::ChatEvent;
use common::privacy::Subject;
use common::schema::{Author, BanDetails, EventBody, ReplyParent, UserRef};
use consumer::store::{self, EventFilter, EventQuery, Order, Store, encode, new_events};

use crate::helpers::{delete, message, message_at};
use crate::store::{Backend, BackendExt, contract};

/// The word only the purged user wrote (and others quoted).
const WORD: &str = "zanzibarquokka";

contract!(
    a_user_purge_leaves_no_trace_in_rows_search_or_files,
    opt_outs_refuse_events_and_survive_a_reopen,
    other_purges_delete_by_channel_message_and_time,
    opt_out_codes_are_single_use_and_bound_to_their_login,
);

fn victim() -> Author {
    Author {
        id: "666".into(),
        login: "victim".into(),
        display_name: "Victim".into(),
        color: None,
        badges: vec![],
        roles: vec![],
        avatar_url: None,
    }
}

fn by_victim(channel: &str, text: &str) -> ChatEvent {
    let mut e = message(channel, "victim", text);
    e.author = Some(victim());
    e.raw = Some(format!(
        "@user-id=666;login=victim :victim!victim@victim.tmi.twitch.tv PRIVMSG #{channel} :{text}"
    ));
    e
}

async fn all(store: &Arc<dyn Store>) -> Vec<serde_json::Value> {
    store
        .query(&EventQuery {
            filter: EventFilter::default(),
            after: None,
            before: None,
            order: Order::Asc,
            limit: 10_000,
        })
        .await
        .unwrap()
        .into_iter()
        .map(|e| serde_json::from_str(e.event.get()).unwrap())
        .collect()
}

async fn write(store: &Arc<dyn Store>, events: Vec<ChatEvent>) -> store::WriteOutcome {
    let owned = encode(events);
    store.write_batch(&new_events(&owned)).await.unwrap()
}

/// Every file of the store that could hold the word: the SQLite file and
/// its WAL, or the PostgreSQL partitions of `events` with their TOAST
/// tables and indexes, and the moderation records (after a CHECKPOINT, so
/// what is in shared buffers is on disk).
async fn files(backend: &Backend) -> Vec<(std::path::PathBuf, String)> {
    if let Some(path) = backend.sqlite_path() {
        let mut wal = path.clone().into_os_string();
        wal.push("-wal");
        return vec![(path, "database".into()), (wal.into(), "WAL".into())];
    }
    let pool = sqlx::PgPool::connect(&backend.url()).await.unwrap();
    sqlx::query("CHECKPOINT").execute(&pool).await.unwrap();
    let dir: String = sqlx::query_scalar("SHOW data_directory")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rels: Vec<String> = sqlx::query_scalar(
        "WITH parts AS ( \
             SELECT c.oid, c.reltoastrelid FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'events'::regclass \
             UNION ALL SELECT 'moderations'::regclass::oid, 0::oid) \
         SELECT pg_relation_filepath(r) || ' ' || r::regclass::text FROM ( \
             SELECT oid AS r FROM parts \
             UNION ALL SELECT reltoastrelid FROM parts WHERE reltoastrelid <> 0 \
             UNION ALL SELECT indexrelid FROM pg_index WHERE indrelid IN (SELECT oid FROM parts) \
         ) x WHERE pg_relation_filepath(r) IS NOT NULL",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    assert!(rels.len() >= 4, "partitions, TOAST and indexes: {rels:?}");
    rels.into_iter()
        .map(|r| {
            let (path, name) = r.split_once(' ').expect("path and name");
            (std::path::Path::new(&dir).join(path), name.to_owned())
        })
        .collect()
}

async fn files_contain(backend: &Backend, word: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (path, name) in files(backend).await {
        // A relation larger than 1 GB has segments `.1`, `.2`…: not here.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        if bytes.windows(word.len()).any(|w| w == word.as_bytes()) {
            found.push(format!("{} ({name})", path.display()));
        }
    }
    found
}

async fn a_user_purge_leaves_no_trace_in_rows_search_or_files(backend: &Backend) {
    let store = backend.open().await;
    let first = by_victim("alpha", &format!("my secret is {WORD} ok"));
    let second = by_victim("beta", &format!("{WORD} again"));
    let third = by_victim("alpha", &format!("and {WORD} thrice"));
    // Another user replies to the victim (Twitch quotes the parent in tags).
    let mut reply = message("alpha", "friend", "@Victim what is that");
    reply.reply_to = Some(ReplyParent {
        message_id: first.id.clone(),
        user_id: Some("666".into()),
        user_login: Some("victim".into()),
        display_name: Some("Victim".into()),
        text: first.text.clone(),
        thread_message_id: None,
    });
    reply.raw = Some(format!(
        "@reply-parent-msg-body=my\\ssecret\\sis\\s{WORD}\\sok;reply-parent-user-login=victim \
         :friend!friend@friend.tmi.twitch.tv PRIVMSG #alpha :@Victim what is that"
    ));
    // A moderator deletes the third (the delete quotes its text).
    let mut removal = delete("alpha", &third, Utc::now());
    removal.raw = Some(format!(
        "@login=victim;target-msg-id={} :tmi.twitch.tv CLEARMSG #alpha :and {WORD} thrice",
        third.id
    ));
    let mut ban = ChatEvent::new(
        uuid::Uuid::new_v4().to_string(),
        "twitch",
        "beta",
        Utc::now(),
        Utc::now(),
        EventBody::Ban(BanDetails {
            user: UserRef {
                id: Some("666".into()),
                login: "victim".into(),
                display_name: Some("Victim".into()),
            },
        }),
    );
    ban.raw = Some("@target-user-id=666 :tmi.twitch.tv CLEARCHAT #beta :victim".into());
    let bystander = message("alpha", "bystander", "nothing to see");
    // Enough other rows that the pages the victim's rows were on are
    // rewritten, not only appended to.
    let filler: Vec<ChatEvent> = (0..300)
        .map(|i| {
            message(
                "alpha",
                "filler",
                &format!("filler line {i} {}", "x".repeat(200)),
            )
        })
        .collect();
    write(
        &store,
        vec![
            first.clone(),
            second.clone(),
            third.clone(),
            reply.clone(),
            removal.clone(),
            ban.clone(),
            bystander.clone(),
        ],
    )
    .await;
    write(&store, filler).await;
    assert!(
        !files_contain(backend, WORD).await.is_empty() || backend.sqlite_path().is_none(),
        "the word is on disk before the purge (else the test proves nothing)"
    );

    let user = Subject::parse_pair("user", "twitch:666").unwrap();
    let report = store.purge(&user, "test").await.unwrap();
    assert_eq!(report.deleted, 3, "{report:?}");
    assert!(report.redacted >= 3, "reply, delete, ban: {report:?}");

    let events = all(&store).await;
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(WORD), "a quote survived: {text}");
    assert!(
        !events
            .iter()
            .any(|e| e["author"]["id"] == "666" || e["author"]["login"] == "victim"),
        "a message of the victim survived"
    );
    assert!(
        !text.to_lowercase().contains("victim"),
        "the login survived: {text}"
    );
    let replied = events
        .iter()
        .find(|e| e["id"] == reply.id)
        .expect("the reply stays");
    assert_eq!(replied["reply_to"]["text"], serde_json::Value::Null);
    assert_eq!(replied["raw"], serde_json::Value::Null);
    assert!(events.iter().any(|e| e["id"] == bystander.id));
    let found = store
        .query(&EventQuery {
            filter: EventFilter {
                text: Some(WORD.into()),
                ..EventFilter::default()
            },
            after: None,
            before: None,
            order: Order::Desc,
            limit: 100,
        })
        .await
        .unwrap();
    assert!(found.is_empty(), "search still finds the word");
    let on_disk = files_contain(backend, WORD).await;
    if let Some(p) = backend.sqlite_path() {
        std::fs::copy(p, "/tmp/purge-debug.sqlite").unwrap();
    }
    assert!(
        on_disk.is_empty(),
        "the word is still on disk in {on_disk:?}"
    );

    let audit = store.audit_log(10).await.unwrap();
    let entry = audit
        .iter()
        .find(|a| a.action == "purge")
        .expect("an audit row");
    assert_eq!(entry.subject, "user twitch:666");
    assert_eq!(entry.requested_by, "test");
    assert_eq!(entry.rows_deleted, 3);
    let audit_text = serde_json::to_string(&audit).unwrap();
    assert!(!audit_text.contains(WORD) && !audit_text.contains("victim"));

    // What was in flight when the purge ran is refused; what the user
    // writes afterwards is not (they did not opt out).
    let late = by_victim("alpha", "read before the purge");
    let mut late = late;
    late.received_at = report.horizon - ChronoDuration::seconds(1);
    let outcome = write(&store, vec![late.clone()]).await;
    assert_eq!((outcome.refused, outcome.stored.len()), (1, 0));
    let mut after = by_victim("alpha", "written after the purge");
    after.received_at = report.horizon + ChronoDuration::seconds(1);
    let outcome = write(&store, vec![after]).await;
    assert_eq!((outcome.refused, outcome.stored.len()), (0, 1));
    store.close().await;
}

async fn opt_outs_refuse_events_and_survive_a_reopen(backend: &Backend) {
    let store = backend.open().await;
    let user = Subject::parse_pair("user", "twitch:id-quiet").unwrap();
    let channel = Subject::parse_pair("channel", "twitch:private").unwrap();
    store.set_opted_out(&user, true, "cli").await.unwrap();
    store.set_opted_out(&channel, true, "cli").await.unwrap();
    let outcome = write(
        &store,
        vec![
            message("open", "quiet", "hidden"),
            message("private", "loud", "hidden too"),
            message("open", "loud", "shown"),
        ],
    )
    .await;
    assert_eq!(outcome.refused, 2);
    assert_eq!(outcome.stored.len(), 1);
    assert_eq!(outcome.duplicates, 0);
    let listed = store.opt_outs().await.unwrap();
    assert_eq!(listed.len(), 2, "{listed:?}");
    store.close().await;

    // Another store on the same data (a restart, or a second consumer).
    let store = backend.open().await;
    let outcome = write(&store, vec![message("open", "quiet", "still hidden")]).await;
    assert_eq!(outcome.refused, 1);
    store.set_opted_out(&user, false, "cli").await.unwrap();
    let outcome = write(&store, vec![message("open", "quiet", "back")]).await;
    assert_eq!((outcome.refused, outcome.stored.len()), (0, 1));
    let actions: Vec<String> = store
        .audit_log(10)
        .await
        .unwrap()
        .into_iter()
        .map(|a| a.action)
        .collect();
    assert_eq!(actions, ["opt_in", "opt_out", "opt_out"]);
    assert!(store.set_opted_out(&user, true, "cli").await.is_ok());
    store.close().await;
}

async fn other_purges_delete_by_channel_message_and_time(backend: &Backend) {
    let store = backend.open().await;
    let old = Utc::now() - ChronoDuration::days(3);
    let a1 = message("gone", "u1", "channel one");
    let a2 = message("gone", "u2", "channel two");
    let keep = message("kept", "u1", "kept one");
    let single = message("kept", "u3", "remove only me");
    let ancient = message_at("kept", "u4", "very old", old);
    write(
        &store,
        vec![a1, a2, keep.clone(), single.clone(), ancient.clone()],
    )
    .await;
    let r = store
        .purge(
            &Subject::parse_pair("channel", "twitch:gone").unwrap(),
            "test",
        )
        .await
        .unwrap();
    assert_eq!(r.deleted, 2);
    let r = store
        .purge(
            &Subject::parse_pair("message", &format!("twitch:{}", single.id)).unwrap(),
            "test",
        )
        .await
        .unwrap();
    assert_eq!(r.deleted, 1);
    let r = store
        .purge(
            &Subject::Before {
                before: old + ChronoDuration::hours(1),
            },
            "test",
        )
        .await
        .unwrap();
    assert_eq!(r.deleted, 1);
    let ids: Vec<String> = all(&store)
        .await
        .into_iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, [keep.id]);
    let channels = store.channels().await.unwrap();
    let gone = channels.iter().find(|c| c.channel == "gone").unwrap();
    assert_eq!(gone.event_count, 0);
    // A purged message redelivered (it was in flight) is not stored again.
    let mut again = single.clone();
    again.received_at = Utc::now() - ChronoDuration::seconds(30);
    assert_eq!(write(&store, vec![again]).await.refused, 1);
    store.close().await;
}

async fn opt_out_codes_are_single_use_and_bound_to_their_login(backend: &Backend) {
    let store = backend.open().await;
    let now = Utc::now().timestamp_millis();
    store
        .issue_code("K7Q2ZP", "twitch", "someone", now + 60_000)
        .await
        .unwrap();
    store
        .issue_code("OLD123", "twitch", "someone", now - 1)
        .await
        .unwrap();
    assert!(
        !store
            .redeem_code("K7Q2ZP", "twitch", "other", now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .redeem_code("K7Q2ZP", "youtube", "someone", now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .redeem_code("WRONG1", "twitch", "someone", now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .redeem_code("OLD123", "twitch", "someone", now)
            .await
            .unwrap()
    );
    assert!(
        store
            .redeem_code("K7Q2ZP", "twitch", "someone", now)
            .await
            .unwrap()
    );
    assert!(
        !store
            .redeem_code("K7Q2ZP", "twitch", "someone", now)
            .await
            .unwrap()
    );
    store.close().await;
}
