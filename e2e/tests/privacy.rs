//! Self-service opt-out end to end: a code asked for over HTTP, then
//! `!optout <code>` typed in a fake Twitch and a fake YouTube chat. A
//! wrong code, an expired one, or the right one typed by someone else does
//! nothing; the author's own live code opts them out (consumer: the list,
//! the purge; ingestor: nothing of theirs is published afterwards).
//!
//! The stack follows a privacy stream of this test's own (never the shared
//! `chat.privacy`), deleted at the end.

use common::amqp::{Subscriber, Topology};
use common::schema::ChatEvent;
use e2e::{Stack, StackOptions, stored_events};
use serde_json::{Value, json};
use testkit::fake_youtube::{self, FakeYoutube, msg};
use testkit::rabbit::{self, unique};
use testkit::{eventually, within};

const ADMIN: &str = "e2e-privacy-admin-token";
/// A word only the victims write (searched for after the purge).
const WORD: &str = "quarkwhistle";

/// A PRIVMSG by `login` (user id `user_id`) in `channel`.
fn privmsg(channel: &str, id: &str, login: &str, user_id: &str, text: &str) -> String {
    format!(
        "@badge-info=;badges=;color=#1E90FF;display-name={login};emotes=;id={id};mod=0;room-id=1;subscriber=0;tmi-sent-ts={};turbo=0;user-id={user_id};user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :{text}",
        chrono::Utc::now().timestamp_millis()
    )
}

/// A code different from `code` (same alphabet, same length).
fn wrong_code(code: &str) -> String {
    let first = if code.starts_with('Z') { 'Y' } else { 'Z' };
    format!("{first}{}", &code[1..])
}

/// A tap on the stack's exchange: everything the ingestor publishes.
struct Tap {
    conn: lapin::Connection,
    sub: Subscriber,
    seen: Vec<ChatEvent>,
}

impl Tap {
    async fn new(exchange: &str) -> Self {
        let conn = rabbit::connect("e2e-privacy-tap").await;
        let sub = Subscriber::builder(unique("e2e-privacy-tap"))
            .bind("chat.#")
            .prefetch(1000)
            .expires(std::time::Duration::from_secs(600))
            .build(&conn, &Topology::named(exchange))
            .await
            .expect("tap on the exchange");
        Self {
            conn,
            sub,
            seen: Vec::new(),
        }
    }

    /// Reads until an event with id `id` was published; everything read
    /// is kept in `seen`.
    async fn until(&mut self, id: &str) {
        let sub = &mut self.sub;
        let seen = &mut self.seen;
        within(60, &format!("`{id}` published"), async {
            while !seen.iter().any(|e| e.id == id) {
                let d = sub.next().await.expect("tap open").expect("delivery");
                d.ack().await.expect("ack");
                seen.push(d.event.clone());
            }
        })
        .await;
    }

    fn published(&self, id: &str) -> bool {
        self.seen.iter().any(|e| e.id == id)
    }

    async fn delete(self) {
        let queue = self.sub.queue().to_owned();
        self.sub.close().await;
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(
                    queue.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
            common::amqp::close_channel(&ch, "tap deleted").await;
        }
        common::amqp::close(&self.conn, "test over").await;
    }
}

/// The consumer's HTTP API as this test uses it.
struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    fn of(stack: &Stack) -> Self {
        Self {
            base: format!("http://{}", stack.consumer.http),
            http: reqwest::Client::new(),
        }
    }

    /// `POST /api/privacy/optout` (no token): the code issued.
    async fn ask_code(&self, platform: &str, login: &str) -> String {
        let res = self
            .http
            .post(format!("{}/api/privacy/optout", self.base))
            .json(&json!({"platform": platform, "login": login}))
            .send()
            .await
            .expect("POST /api/privacy/optout");
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.expect("JSON");
        let code = body["code"].as_str().expect("a code").to_owned();
        assert_eq!(code.len(), 6, "{body}");
        assert!(
            body["message"]
                .as_str()
                .is_some_and(|m| m.contains(&format!("!optout {code}"))),
            "{body}"
        );
        code
    }

    /// `GET /api/privacy/optouts` (admin token).
    async fn optouts(&self) -> Vec<Value> {
        let res = self
            .http
            .get(format!("{}/api/privacy/optouts", self.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .expect("GET /api/privacy/optouts");
        assert_eq!(res.status(), 200);
        res.json::<Value>()
            .await
            .expect("JSON")
            .as_array()
            .cloned()
            .expect("a list")
    }

    /// The events a search for `q` finds.
    async fn search(&self, q: &str) -> Vec<Value> {
        let page: Value = self
            .http
            .get(format!("{}/api/events?q={q}&limit=1000", self.base))
            .send()
            .await
            .expect("search")
            .json()
            .await
            .expect("JSON");
        page["events"].as_array().cloned().expect("events")
    }
}

/// Makes `code` expired in the consumer's SQLite database, behind its back
/// (no test waits a minute).
async fn expire_code(stack: &Stack, code: &str) {
    let url = format!(
        "sqlite://{}",
        stack.dir.path().join("chatbus.sqlite").display()
    );
    let pool = sqlx::SqlitePool::connect(&url).await.expect("sqlite");
    let done = sqlx::query("UPDATE privacy_codes SET expires_at = 0 WHERE code = ?1")
        .bind(code)
        .execute(&pool)
        .await
        .expect("expire the code");
    assert_eq!(done.rows_affected(), 1, "the code's row");
    pool.close().await;
}

/// Waits until every id in `ids` is stored (as `query` finds them).
async fn wait_stored(stack: &Stack, query: &str, ids: &[&str]) -> Vec<ChatEvent> {
    eventually(60, &format!("{ids:?} stored"), || async {
        let got: Vec<ChatEvent> = stored_events(stack.consumer.http, query)
            .await
            .into_iter()
            .map(|s| s.event)
            .collect();
        ids.iter()
            .all(|id| got.iter().any(|e| e.id == *id))
            .then_some(got)
    })
    .await
}

/// The consumer refused `n` codes in all.
async fn wait_refused(stack: &Stack, n: f64) {
    eventually(60, &format!("{n} codes refused"), || async {
        let refused = stack
            .consumer
            .metric("chatbus_consumer_optout_codes_refused_total")
            .await;
        (refused >= n).then_some(())
    })
    .await;
}

/// The ingestor read `n` notices from the privacy stream.
async fn wait_ingestor_notices(stack: &Stack, stream: &str, n: u64) {
    eventually(60, &format!("the ingestor read {n} notices"), || async {
        let ready = stack.ingestor.get_json("/readyz").await;
        (ready["privacy"]["stream"] == stream
            && ready["privacy"]["loaded"] == true
            && ready["privacy"]["notices"].as_u64()? >= n)
            .then_some(())
    })
    .await;
}

fn is_command(e: &ChatEvent) -> bool {
    e.text
        .as_deref()
        .is_some_and(|t| t.trim_start().to_lowercase().starts_with("!optout"))
}

#[tokio::test]
async fn optout_codes_work_only_for_their_own_live_author_on_twitch_and_youtube() {
    // The test's own privacy stream, deleted even when the test fails.
    let stream = unique("e2e-privacy");
    let conn = rabbit::connect("e2e-privacy-stream").await;
    common::amqp::privacy::declare(&conn, &stream)
        .await
        .expect("declare the privacy stream");
    let outcome = tokio::spawn(optout_flow(stream.clone())).await;
    if let Ok(ch) = conn.create_channel().await {
        let _ = ch
            .queue_delete(
                stream.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
        common::amqp::close_channel(&ch, "cleaned up").await;
    }
    common::amqp::close(&conn, "test over").await;
    if let Err(e) = outcome {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        panic!("the test's task: {e}");
    }
}

/// The whole flow, with the stack following `stream`.
async fn optout_flow(stream: String) {
    // A live YouTube channel.
    let yt = FakeYoutube::start().await;
    let tag = uuid::Uuid::new_v4().simple().to_string();
    let yt_channel = format!("UC{}", &tag[..22]);
    yt.add_channel(&yt_channel, "@e2e.privacy");
    let chat = yt.go_live(&yt_channel, &format!("v{}", &tag[22..32]));

    let env = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let (api_url, grpc_url) = (yt.api_url(), yt.grpc_url());
    let stack = Stack::start(StackOptions {
        channels: 1,
        ingestor_env: env(&[
            ("PRIVACY_STREAM", &stream),
            ("YOUTUBE_CHANNELS", &yt_channel),
            ("YOUTUBE_API_KEY", fake_youtube::API_KEY),
            ("YOUTUBE_API_URL", &api_url),
            ("YOUTUBE_GRPC_URL", &grpc_url),
            ("YOUTUBE_OFFLINE_POLL_INTERVAL", "300ms"),
            ("YOUTUBE_MIN_POLL_INTERVAL", "100ms"),
            ("YOUTUBE_RETRY_MAX_DELAY", "1s"),
            ("YOUTUBE_DAILY_QUOTA", "1000000000"),
        ]),
        consumer_env: env(&[
            ("PRIVACY_STREAM", &stream),
            ("CONSUMER_PRIVACY_TOKEN", ADMIN),
        ]),
        ..StackOptions::default()
    })
    .await;
    let api = Api::of(&stack);
    let mut tap = Tap::new(&stack.exchange).await;
    wait_ingestor_notices(&stack, &stream, 0).await;
    eventually(60, "the YouTube chat joined", || async {
        let channels = stack.ingestor.get_json("/channels").await;
        channels.as_array()?.iter().find(|c| {
            c["platform"] == "youtube"
                && c["channel"] == yt_channel.as_str()
                && c["state"] == "joined"
        })?;
        Some(())
    })
    .await;

    // ------------------------------------------------------------ Twitch --
    let ch = stack.channels[0].clone();
    let t = &tag[..6];
    let (victim, victim_id) = (format!("victim{t}"), "91001");
    let (mallory, mallory_id) = (format!("mallory{t}"), "91002");
    let (bystander, bystander_id) = (format!("bystander{t}"), "91003");
    let line = |id: &str, who: &(String, &str), text: &str| {
        stack
            .fake
            .send_to_channel(&ch, &privmsg(&ch, id, &who.0, who.1, text));
    };
    let v = (victim.clone(), victim_id);
    let m = (mallory.clone(), mallory_id);
    let b = (bystander.clone(), bystander_id);
    let twitch = format!("platform=twitch&channel={ch}");

    line("tw-v1", &v, &format!("my {WORD} one"));
    line("tw-v2", &v, &format!("my {WORD} two"));
    line("tw-b1", &b, "hello");
    wait_stored(&stack, &twitch, &["tw-v1", "tw-v2", "tw-b1"]).await;

    let code = api.ask_code("twitch", &victim.to_uppercase()).await;
    let expired = api.ask_code("twitch", &victim).await;
    expire_code(&stack, &expired).await;

    // Nothing happens for a wrong code, an expired one, the right one
    // typed by someone else.
    line("tw-wrong", &v, &format!("!optout {}", wrong_code(&code)));
    line("tw-expired", &v, &format!("!optout {expired}"));
    line("tw-other", &m, &format!("!optout {code}"));
    wait_refused(&stack, 3.0).await;
    line("tw-b2", &b, "marker after the refused codes");
    let stored = wait_stored(&stack, &twitch, &["tw-b2"]).await;
    assert!(api.optouts().await.is_empty(), "nobody opted out");
    for id in ["tw-v1", "tw-v2"] {
        assert!(stored.iter().any(|e| e.id == id), "{id} still stored");
    }
    assert!(
        !stored.iter().any(is_command),
        "`!optout` lines are never stored"
    );
    assert_eq!(api.search(WORD).await.len(), 2);

    // The victim's own live code, in lower case.
    line("tw-right", &v, &format!("!optout {}", code.to_lowercase()));
    eventually(60, "the Twitch victim opted out", || async {
        api.optouts()
            .await
            .iter()
            .any(|o| o["value"] == victim_id && o["platform"] == "twitch")
            .then_some(())
    })
    .await;
    eventually(60, "the Twitch victim purged", || async {
        let got = stored_events(stack.consumer.http, &twitch).await;
        (!got.iter().any(|s| s.event.id.starts_with("tw-v"))).then_some(())
    })
    .await;
    assert!(api.search(WORD).await.is_empty(), "search finds nothing");
    // Opt-out and purge announced; the ingestor has both.
    wait_ingestor_notices(&stack, &stream, 2).await;
    let dropped = stack
        .ingestor
        .metric("chatbus_ingestor_privacy_dropped_total")
        .await;

    line("tw-v3", &v, &format!("my {WORD} after"));
    line("tw-b3", &b, "marker after the opt-out");
    let stored = wait_stored(&stack, &twitch, &["tw-b3"]).await;
    assert!(!stored.iter().any(|e| e.id == "tw-v3"), "not stored");
    // In order on one connection and one channel: tw-v3 would be before.
    tap.until("tw-b3").await;
    assert!(
        tap.published("tw-v1"),
        "the tap sees what the ingestor publishes"
    );
    assert!(!tap.published("tw-v3"), "the ingestor did not publish it");
    assert!(
        stack
            .ingestor
            .metric("chatbus_ingestor_privacy_dropped_total")
            .await
            > dropped,
        "the ingestor dropped it"
    );
    assert!(
        !stored.iter().any(is_command),
        "`!optout` lines are never stored"
    );
    assert!(
        stored.iter().any(|e| e.id == "tw-b1"),
        "others' lines are kept"
    );

    // ----------------------------------------------------------- YouTube --
    let yv_id = format!("UC{}", &tag[10..32]);
    let ym_id = format!("UC{}", &tag[0..10].repeat(3)[..22]);
    let yv = msg::author(&yv_id, "Victim on YouTube", &[]);
    let ym = msg::author(&ym_id, "Mallory on YouTube", &[]);
    let yb = msg::author(&format!("UCbystander{}", &tag[..11]), "Bystander", &[]);
    let youtube = "platform=youtube";

    yt.push(
        &chat,
        [
            msg::text("yt-v1", &yv, &format!("my {WORD} one")),
            msg::text("yt-v2", &yv, &format!("my {WORD} two")),
            msg::text("yt-b1", &yb, "hello"),
        ],
    );
    let stored = wait_stored(&stack, youtube, &["yt-v1", "yt-v2", "yt-b1"]).await;
    // The login YouTube authors have: their channel id, lower-cased.
    let login = stored
        .iter()
        .find(|e| e.id == "yt-v1")
        .and_then(|e| e.author.as_ref())
        .map(|a| a.login.clone())
        .expect("an author");
    assert_eq!(login, yv_id.to_lowercase());

    let code = api.ask_code("youtube", &login).await;
    let expired = api.ask_code("youtube", &login).await;
    expire_code(&stack, &expired).await;
    yt.push(
        &chat,
        [
            msg::text("yt-wrong", &yv, &format!("!optout {}", wrong_code(&code))),
            msg::text("yt-expired", &yv, &format!("!optout {expired}")),
            msg::text("yt-other", &ym, &format!("!optout {code}")),
        ],
    );
    wait_refused(&stack, 6.0).await;
    yt.push(
        &chat,
        [msg::text("yt-b2", &yb, "marker after the refused codes")],
    );
    let stored = wait_stored(&stack, youtube, &["yt-b2"]).await;
    assert_eq!(api.optouts().await.len(), 1, "only the Twitch victim");
    for id in ["yt-v1", "yt-v2"] {
        assert!(stored.iter().any(|e| e.id == id), "{id} still stored");
    }
    assert!(!stored.iter().any(is_command));
    assert_eq!(api.search(WORD).await.len(), 2);

    yt.push(
        &chat,
        [msg::text("yt-right", &yv, &format!("!optout {code}"))],
    );
    eventually(60, "the YouTube victim opted out", || async {
        api.optouts()
            .await
            .iter()
            .any(|o| o["value"] == yv_id.as_str() && o["platform"] == "youtube")
            .then_some(())
    })
    .await;
    eventually(60, "the YouTube victim purged", || async {
        let got = stored_events(stack.consumer.http, youtube).await;
        (!got.iter().any(|s| s.event.id.starts_with("yt-v"))).then_some(())
    })
    .await;
    assert!(api.search(WORD).await.is_empty(), "search finds nothing");
    wait_ingestor_notices(&stack, &stream, 4).await;
    let dropped = stack
        .ingestor
        .metric("chatbus_ingestor_privacy_dropped_total")
        .await;

    yt.push(
        &chat,
        [
            msg::text("yt-v3", &yv, &format!("my {WORD} after")),
            msg::text("yt-b3", &yb, "marker after the opt-out"),
        ],
    );
    let stored = wait_stored(&stack, youtube, &["yt-b3"]).await;
    assert!(!stored.iter().any(|e| e.id == "yt-v3"), "not stored");
    tap.until("yt-b3").await;
    assert!(
        tap.published("yt-v1"),
        "the tap sees what the ingestor publishes"
    );
    assert!(!tap.published("yt-v3"), "the ingestor did not publish it");
    assert!(
        stack
            .ingestor
            .metric("chatbus_ingestor_privacy_dropped_total")
            .await
            > dropped,
        "the ingestor dropped it"
    );
    assert!(!stored.iter().any(is_command));
    assert!(stored.iter().any(|e| e.id == "yt-b1"));

    // Neither victim's opt-out touched the other platform's users.
    let all = stored_events(stack.consumer.http, "platform=twitch").await;
    assert!(all.iter().any(|s| s.event.id == "tw-b3"));
    assert!(!all.iter().any(|s| is_command(&s.event)));

    tap.delete().await;
    stack.stop().await;
}
