//! Spawning the consumer on port 0 against the real RabbitMQ (its own
//! exchanges and queue) and a real SQLite file, publishing with common's
//! publisher, and talking to it over HTTP and WebSocket.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::amqp::{OutgoingMessage, Publisher, Topology};
use common::schema::{
    Author, Badge, BanDetails, ChatClearDetails, ChatEvent, EventBody, MessageDeleteDetails,
    MessageDetails, PLATFORM_TWITCH, TimeoutDetails, UserRef,
};
use consumer::Config;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnectOptions;
use testkit::rabbit::{self, test_topology, unique};
use testkit::within;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// One running consumer.
pub(crate) struct TestApp {
    pub addr: SocketAddr,
    pub topology: Topology,
    pub queue: String,
    pub db_url: String,
    dir: Arc<tempfile::TempDir>,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    conn: lapin::Connection,
    publisher: Publisher,
    /// The PostgreSQL database, dropped when the last instance stops.
    pg: Option<Arc<testkit::pg::TestDatabase>>,
}

/// A config for tests: loopback, quick pings, small batches wait little.
pub(crate) fn test_config(db_url: &str, queue: &str) -> Config {
    Config {
        consumer_http_addr: "127.0.0.1:0".into(),
        amqp_url: rabbit::amqp_url(),
        database_url: db_url.into(),
        consumer_queue: queue.into(),
        consumer_batch_wait: Duration::from_millis(10),
        // Tests that check the policies turn them on (and remove them).
        rabbitmq_policies: false,
        // Off: tests that follow a privacy stream name one of their own
        // (and delete it), never the shared `chat.privacy`.
        privacy_stream: String::new(),
        ..Config::default()
    }
}

impl TestApp {
    /// A consumer with the default test config.
    pub(crate) async fn spawn() -> Self {
        Self::spawn_with(|_| {}).await
    }

    /// A consumer with `tweak` applied to its config.
    pub(crate) async fn spawn_with(tweak: impl FnOnce(&mut Config)) -> Self {
        testkit::init_logging();
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let db_url = format!("sqlite://{}", dir.path().join("chatbus.sqlite").display());
        let topology = test_topology("consumer");
        let queue = unique("test-consumer-q");
        rabbit::declare_consumer_queue(&topology, &queue).await;
        Self::start(dir, db_url, topology, queue, tweak).await
    }

    /// A consumer on a fresh PostgreSQL database (dropped by
    /// [`TestApp::stop`]), with `tweak` applied to its config.
    pub(crate) async fn spawn_postgres_with(tweak: impl FnOnce(&mut Config)) -> Self {
        testkit::init_logging();
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let pg = testkit::pg::TestDatabase::create().await;
        let db_url = pg.url.clone();
        let topology = test_topology("consumer");
        let queue = unique("test-consumer-q");
        rabbit::declare_consumer_queue(&topology, &queue).await;
        let mut app = Self::start(dir, db_url, topology, queue, tweak).await;
        app.pg = Some(Arc::new(pg));
        app
    }

    /// A consumer on the database at `db_url` (created by the caller),
    /// with `tweak` applied to its config.
    pub(crate) async fn spawn_with_db(db_url: String, tweak: impl FnOnce(&mut Config)) -> Self {
        testkit::init_logging();
        let dir = Arc::new(tempfile::tempdir().expect("tempdir"));
        let topology = test_topology("consumer");
        let queue = unique("test-consumer-q");
        rabbit::declare_consumer_queue(&topology, &queue).await;
        Self::start(dir, db_url, topology, queue, tweak).await
    }

    /// A consumer on `backend` (`sqlite` or `postgres`).
    pub(crate) async fn spawn_on(backend: &str) -> Self {
        match backend {
            "postgres" => Self::spawn_postgres_with(|_| {}).await,
            _ => Self::spawn().await,
        }
    }

    /// Another instance sharing this one's queue, database and exchanges.
    pub(crate) async fn spawn_peer(&self, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::start(
            self.dir.clone(),
            self.db_url.clone(),
            self.topology.clone(),
            self.queue.clone(),
            tweak,
        )
        .await
    }

    async fn start(
        dir: Arc<tempfile::TempDir>,
        db_url: String,
        topology: Topology,
        queue: String,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let mut config = test_config(&db_url, &queue);
        tweak(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(consumer::run_with_topology(
            config,
            topology.clone(),
            listener,
            shutdown.clone(),
        ));
        let conn = rabbit::connect("chatbus-test-publisher").await;
        let publisher = Publisher::open(&conn, &topology, "chatbus-test")
            .await
            .expect("publisher");
        let app = Self {
            addr,
            topology,
            queue,
            db_url,
            dir,
            shutdown,
            task: Some(task),
            conn,
            publisher,
            pg: None,
        };
        // Starting includes opening the store: migrating a fresh
        // PostgreSQL database can take seconds on a loaded machine.
        testkit::wait_http_ok(60, &app.url("/healthz")).await;
        app
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub(crate) fn ws_url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// Publishes with publisher confirms; returns when the broker has all.
    pub(crate) async fn publish(&self, events: &[ChatEvent]) {
        let messages: Vec<_> = events
            .iter()
            .map(|e| OutgoingMessage::from_event(e).expect("encode"))
            .collect();
        within(60, "publish", self.publisher.publish_all(&messages, 1024))
            .await
            .expect("published");
    }

    /// The publisher (for raw, poison payloads).
    pub(crate) fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The test's broker connection.
    pub(crate) fn connection(&self) -> &lapin::Connection {
        &self.conn
    }

    /// A read-only pool on the consumer's database file.
    pub(crate) async fn db(&self) -> SqlitePool {
        db(&self.db_url).await
    }

    /// Waits until the store holds at least `n` events (whatever its
    /// backend, as `/api/channels` counts them); returns the count.
    pub(crate) async fn wait_stored(&self, n: i64, secs: u64) -> i64 {
        testkit::eventually(secs, &format!("{n} events stored"), || async {
            let (_, body) = self.get_json("/api/channels").await;
            let c: i64 = body["channels"]
                .as_array()?
                .iter()
                .filter_map(|c| c["event_count"].as_i64())
                .sum();
            (c >= n).then_some(c)
        })
        .await
    }

    /// GET `path` as JSON, with an optional bearer token.
    pub(crate) async fn get_json(&self, path: &str) -> (u16, Value) {
        let res = reqwest::get(self.url(path)).await.expect("GET");
        let status = res.status().as_u16();
        (status, res.json().await.expect("JSON body"))
    }

    /// Stops the consumer and checks it ended cleanly.
    pub(crate) async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            within(20, "consumer stops", task)
                .await
                .expect("consumer task")
                .expect("consumer ended cleanly");
        }
        let _ = self.conn.close(200, "test over".into()).await;
        if let Some(pg) = self.pg.take().and_then(|pg| Arc::try_unwrap(pg).ok()) {
            pg.drop_now().await;
        }
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A read-only pool on `db_url`.
pub(crate) async fn db(db_url: &str) -> SqlitePool {
    let options = SqliteConnectOptions::from_str(db_url)
        .expect("db url")
        .read_only(true);
    SqlitePool::connect_with(options).await.expect("open db")
}

/// Rows in `events`.
pub(crate) async fn count(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(pool)
        .await
        .expect("count")
}

/// Distinct `(platform, event_id)` in `events`.
pub(crate) async fn count_distinct(pool: &SqlitePool) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM (SELECT DISTINCT platform, event_id FROM events)")
        .fetch_one(pool)
        .await
        .expect("count distinct")
}

/// A read-only look into a consumer's database, whatever its backend.
pub(crate) enum StoreProbe {
    Sqlite(SqlitePool),
    Postgres(sqlx::PgPool),
}

impl StoreProbe {
    /// Opens `db_url` (`sqlite://…` read-only, or `postgres://…`).
    pub(crate) async fn open(db_url: &str) -> Self {
        if db_url.starts_with("postgres") {
            Self::Postgres(sqlx::PgPool::connect(db_url).await.expect("open db"))
        } else {
            Self::Sqlite(db(db_url).await)
        }
    }

    /// Rows stored.
    pub(crate) async fn count(&self) -> i64 {
        match self {
            Self::Sqlite(p) => count(p).await,
            Self::Postgres(p) => sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(p)
                .await
                .expect("count"),
        }
    }

    /// Distinct `(platform, event_id)` stored.
    pub(crate) async fn count_distinct(&self) -> i64 {
        match self {
            Self::Sqlite(p) => count_distinct(p).await,
            Self::Postgres(p) => sqlx::query_scalar(
                "SELECT COUNT(*) FROM (SELECT DISTINCT c.platform, e.event_id \
                 FROM events e JOIN channels c ON c.id = e.channel_ref) d",
            )
            .fetch_one(p)
            .await
            .expect("count distinct"),
        }
    }

    /// Rows with event id `id`.
    pub(crate) async fn rows_with_id(&self, id: &str) -> Option<i64> {
        match self {
            Self::Sqlite(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_id = ?1")
                    .bind(id)
                    .fetch_one(p)
                    .await
                    .ok()
            }
            Self::Postgres(p) => {
                sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE event_id = $1")
                    .bind(id)
                    .fetch_one(p)
                    .await
                    .ok()
            }
        }
    }

    pub(crate) async fn close(self) {
        match self {
            Self::Sqlite(p) => p.close().await,
            Self::Postgres(p) => p.close().await,
        }
    }
}

// ------------------------------------------------------------- events ----

pub(crate) fn author(login: &str) -> Author {
    Author {
        id: format!("id-{login}"),
        login: login.to_lowercase(),
        display_name: login.to_owned(),
        color: Some("#1E90FF".into()),
        badges: vec![],
        roles: vec![],
        avatar_url: None,
    }
}

/// A chat message by `login` with `text`, sent at `at`.
pub(crate) fn message_at(channel: &str, login: &str, text: &str, at: DateTime<Utc>) -> ChatEvent {
    let mut e = ChatEvent::new(
        uuid::Uuid::new_v4().to_string(),
        PLATFORM_TWITCH,
        channel,
        at,
        at,
        EventBody::Message(MessageDetails::default()),
    );
    e.author = Some(author(login));
    e.text = Some(text.to_owned());
    e
}

/// A chat message by `login` with `text`, sent now.
pub(crate) fn message(channel: &str, login: &str, text: &str) -> ChatEvent {
    message_at(channel, login, text, Utc::now())
}

/// A YouTube message in channel `channel_id` (`UC…`) by a member with a
/// picture; with `paid`, a Super Chat of that amount.
pub(crate) fn youtube_message(
    channel_id: &str,
    author_name: &str,
    text: &str,
    paid: Option<(i64, &str, &str)>,
) -> ChatEvent {
    let now = Utc::now();
    let body = match paid {
        Some(_) => EventBody::SuperChat(common::schema::SuperChatDetails::default()),
        None => EventBody::Message(Default::default()),
    };
    let mut e = ChatEvent::new(
        format!("LCC.{}", uuid::Uuid::new_v4().simple()),
        common::schema::PLATFORM_YOUTUBE,
        channel_id,
        now,
        now,
        body,
    );
    let author_id = format!(
        "UCauthor{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    );
    e.author = Some(Author {
        login: author_id.to_lowercase(),
        id: author_id,
        display_name: author_name.to_owned(),
        color: None,
        badges: vec![Badge {
            name: "member".into(),
            version: "1".into(),
            info: None,
        }],
        roles: vec![common::schema::Role::Subscriber],
        avatar_url: Some("https://yt3.ggpht.com/example-avatar=s64".into()),
    });
    e.text = Some(text.to_owned());
    e.paid = paid.map(|(amount_micros, currency, display)| common::schema::Paid {
        amount_micros,
        currency: currency.into(),
        display: display.into(),
        tier: Some(2),
    });
    e
}

/// A message with a moderator badge and a Kappa emote.
pub(crate) fn decorated_message(channel: &str, login: &str, color: &str) -> ChatEvent {
    let mut e = message(channel, login, "héllo Kappa 👋 from the test");
    let a = e.author.as_mut().expect("author");
    a.color = Some(color.into());
    a.badges = vec![Badge {
        name: "moderator".into(),
        version: "1".into(),
        info: None,
    }];
    e.emotes = vec![common::schema::Emote {
        id: "25".into(),
        name: "Kappa".into(),
        start: 6,
        end: 11,
    }];
    e
}

fn moderation(channel: &str, at: DateTime<Utc>, body: EventBody) -> ChatEvent {
    ChatEvent::new(
        uuid::Uuid::new_v4().to_string(),
        PLATFORM_TWITCH,
        channel,
        at,
        at,
        body,
    )
}

fn user(login: &str) -> UserRef {
    UserRef {
        id: None,
        login: login.to_owned(),
        display_name: None,
    }
}

pub(crate) fn ban(channel: &str, login: &str, at: DateTime<Utc>) -> ChatEvent {
    moderation(
        channel,
        at,
        EventBody::Ban(BanDetails { user: user(login) }),
    )
}

pub(crate) fn timeout(channel: &str, login: &str, at: DateTime<Utc>) -> ChatEvent {
    moderation(
        channel,
        at,
        EventBody::Timeout(TimeoutDetails {
            user: user(login),
            duration_secs: 600,
        }),
    )
}

pub(crate) fn delete(channel: &str, target: &ChatEvent, at: DateTime<Utc>) -> ChatEvent {
    moderation(
        channel,
        at,
        EventBody::MessageDelete(MessageDeleteDetails {
            target_message_id: target.id.clone(),
            user_login: target.author.as_ref().map(|a| a.login.clone()),
            text: target.text.clone(),
        }),
    )
}

pub(crate) fn clear(channel: &str, at: DateTime<Utc>) -> ChatEvent {
    moderation(channel, at, EventBody::ChatClear(ChatClearDetails {}))
}

// ---------------------------------------------------------- WebSocket ----

/// What a WebSocket read gave.
#[derive(Debug)]
pub(crate) enum Frame {
    Json(Value),
    Close(Option<(u16, String)>),
}

/// A WebSocket test client.
pub(crate) struct WsClient {
    inner: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl WsClient {
    pub(crate) async fn connect(url: &str) -> Self {
        let (inner, _) = within(
            10,
            "WebSocket connect",
            tokio_tungstenite::connect_async(url),
        )
        .await
        .expect("WebSocket handshake");
        Self { inner }
    }

    /// Connects over a socket the test set up itself (its buffer sizes,
    /// say).
    pub(crate) async fn connect_over(url: &str, stream: tokio::net::TcpStream) -> Self {
        let stream = tokio_tungstenite::MaybeTlsStream::Plain(stream);
        let (inner, _) = within(
            10,
            "WebSocket connect",
            tokio_tungstenite::client_async(url, stream),
        )
        .await
        .expect("WebSocket handshake");
        Self { inner }
    }

    /// A client over a handshake the test did itself.
    pub(crate) fn from_stream(
        inner: tokio_tungstenite::WebSocketStream<
            tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
        >,
    ) -> Self {
        Self { inner }
    }

    /// Connects and reads the `welcome` frame.
    pub(crate) async fn connect_welcomed(url: &str) -> (Self, Value) {
        let mut ws = Self::connect(url).await;
        let welcome = ws.expect("welcome").await;
        (ws, welcome)
    }

    pub(crate) async fn send(&mut self, frame: Value) {
        self.inner
            .send(Message::text(frame.to_string()))
            .await
            .expect("send");
    }

    pub(crate) async fn send_raw(&mut self, message: Message) {
        self.inner.send(message).await.expect("send");
    }

    /// The next text frame or close (pings are skipped), within 10 s.
    pub(crate) async fn next(&mut self) -> Frame {
        within(10, "a WebSocket frame", async {
            loop {
                match self.inner.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return Frame::Json(serde_json::from_str(&t).expect("JSON frame"));
                    }
                    Some(Ok(Message::Close(c))) => {
                        return Frame::Close(c.map(|c| (u16::from(c.code), c.reason.to_string())));
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return Frame::Close(None),
                }
            }
        })
        .await
    }

    /// The next JSON frame; panics on close.
    pub(crate) async fn json(&mut self) -> Value {
        match self.next().await {
            Frame::Json(v) => v,
            Frame::Close(c) => panic!("connection closed: {c:?}"),
        }
    }

    /// The next frame, which must have `type`.
    pub(crate) async fn expect(&mut self, ty: &str) -> Value {
        let v = self.json().await;
        assert_eq!(v["type"], ty, "expected a `{ty}` frame, got {v}");
        v
    }

    pub(crate) async fn subscribe(&mut self, request: Value) -> Value {
        let mut request = request;
        request["type"] = "subscribe".into();
        self.send(request).await;
        self.expect("subscribed").await
    }

    /// Reads frames until `n` events of subscription `sub` arrived;
    /// returns them (other frames are kept in `others`).
    pub(crate) async fn events(
        &mut self,
        sub: &str,
        n: usize,
        others: &mut Vec<Value>,
    ) -> Vec<Value> {
        let mut events = Vec::with_capacity(n);
        within(60, &format!("{n} events for {sub}"), async {
            while events.len() < n {
                let v = self.json().await;
                if v["type"] == "event" && v["sub"] == sub {
                    events.push(v);
                } else {
                    others.push(v);
                }
            }
        })
        .await;
        events
    }

    /// Asserts nothing arrives for `ms` milliseconds.
    pub(crate) async fn assert_quiet(&mut self, ms: u64) {
        match tokio::time::timeout(Duration::from_millis(ms), self.inner.next()).await {
            Err(_) => {}
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => {}
            Ok(other) => panic!("expected silence, got {other:?}"),
        }
    }

    pub(crate) fn inner(
        &mut self,
    ) -> &mut tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    > {
        &mut self.inner
    }
}

/// The cursors of event frames.
pub(crate) fn cursors(events: &[Value]) -> Vec<i64> {
    events
        .iter()
        .map(|e| e["cursor"].as_i64().expect("cursor"))
        .collect()
}

/// The event ids of event frames.
pub(crate) fn ids(events: &[Value]) -> Vec<String> {
    events
        .iter()
        .map(|e| e["event"]["id"].as_str().expect("id").to_owned())
        .collect()
}

/// `on_both_stores!(a, b)`: each test body `async fn a(backend: &str)`
/// runs as `a::sqlite` and `a::postgres` (a fresh database of the local
/// PostgreSQL, dropped at the end).
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test]
                async fn sqlite() {
                    super::$name("sqlite").await;
                }

                #[tokio::test]
                async fn postgres() {
                    super::$name("postgres").await;
                }
            }
        )*
    };
}
pub(crate) use on_both_stores;

// ----------------------------------------------------------- commands ----

/// A command a [`CommandResponder`] took off the exchange.
#[derive(Debug, Clone)]
pub(crate) struct SeenCommand {
    pub routing_key: String,
    pub body: Value,
    pub command: common::command::ChatCommand,
}

/// Plays the ingestor's part for the consumer's commands: a queue of its
/// own bound on the commands exchange with `keys`, answering each command
/// with a receipt (to its `reply_to`, with its `correlation_id`) of the
/// status and reason `answer` gives.
pub(crate) struct CommandResponder {
    seen: Arc<std::sync::Mutex<Vec<SeenCommand>>>,
    conn: lapin::Connection,
    task: tokio::task::JoinHandle<()>,
}

/// The command topology a test consumer declares (see `consumer::run_with_topology`):
/// auto-deleting exchanges, an expiring dead-letter queue.
pub(crate) fn command_topology(exchange: &str) -> common::amqp::CommandTopology {
    common::amqp::CommandTopology {
        auto_delete: true,
        queue_expires: Some(Duration::from_secs(600)),
        ..common::amqp::CommandTopology::named(exchange)
    }
}

impl CommandResponder {
    pub(crate) async fn start(
        exchange: &str,
        keys: &[String],
        answer: impl Fn(
            &common::command::ChatCommand,
        ) -> (common::command::ReceiptStatus, Option<String>)
        + Send
        + 'static,
    ) -> Self {
        use lapin::options::{
            BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, QueueBindOptions,
            QueueDeclareOptions,
        };
        use lapin::types::FieldTable;
        let conn = rabbit::connect("chatbus-test-command-responder").await;
        command_topology(exchange)
            .declare(&conn)
            .await
            .expect("declare the command topology");
        let ch = conn.create_channel().await.expect("a channel");
        let queue = ch
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("declare the responder's queue");
        for key in keys {
            ch.queue_bind(
                queue.name().as_str().into(),
                exchange.into(),
                key.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind the responder's queue");
        }
        let mut consumer = ch
            .basic_consume(
                queue.name().as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let record = seen.clone();
        let task = tokio::spawn(async move {
            while let Some(Ok(d)) = consumer.next().await {
                let body: Value = serde_json::from_slice(&d.data).expect("a JSON command");
                let command: common::command::ChatCommand =
                    serde_json::from_value(body.clone()).expect("a ChatCommand");
                let (status, reason) = answer(&command);
                let receipt = common::command::Receipt {
                    id: command.id.clone(),
                    status,
                    platform_message_id: (status == common::command::ReceiptStatus::Sent)
                        .then(|| format!("pm-{}", command.id)),
                    reason,
                    at: Utc::now(),
                };
                record.lock().unwrap().push(SeenCommand {
                    routing_key: d.routing_key.to_string(),
                    body,
                    command,
                });
                let reply_to = d.properties.reply_to().clone().expect("reply_to");
                let correlation = d
                    .properties
                    .correlation_id()
                    .clone()
                    .expect("correlation_id");
                ch.basic_publish(
                    "".into(),
                    reply_to.as_str().into(),
                    BasicPublishOptions::default(),
                    &serde_json::to_vec(&receipt).unwrap(),
                    lapin::BasicProperties::default().with_correlation_id(correlation),
                )
                .await
                .expect("publish the receipt");
                d.ack(BasicAckOptions::default()).await.expect("ack");
            }
        });
        Self { seen, conn, task }
    }

    /// The commands taken so far, in order.
    pub(crate) fn seen(&self) -> Vec<SeenCommand> {
        self.seen.lock().unwrap().clone()
    }

    /// Stops consuming and deletes what the test declared on the commands
    /// exchange (its exchanges and dead-letter queue).
    pub(crate) async fn stop(self, exchange: &str) {
        self.task.abort();
        let topology = command_topology(exchange);
        if let Ok(ch) = self.conn.create_channel().await {
            use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
            let _ = ch
                .queue_delete(
                    topology.dead_letter_queue.as_str().into(),
                    QueueDeleteOptions::default(),
                )
                .await;
            for x in [&topology.exchange, &topology.dead_letter_exchange] {
                let _ = ch
                    .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
                    .await;
            }
            common::amqp::close_channel(&ch, "cleaned up").await;
        }
        let _ = self.conn.close(200, "test over".into()).await;
    }
}

/// POSTs `body` to `/api/commands` with `token` (as a bearer header);
/// the status and the JSON answer.
pub(crate) async fn post_command(app: &TestApp, token: Option<&str>, body: &Value) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(app.url("/api/commands"))
        .json(body);
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let res = within(60, "POST /api/commands", req.send())
        .await
        .expect("POST");
    let status = res.status().as_u16();
    (status, res.json().await.expect("a JSON answer"))
}

impl TestApp {
    /// Waits until ingest is consuming (and so the command client is open).
    pub(crate) async fn wait_consuming(&self) {
        testkit::eventually(30, "the consumer consuming", || async {
            (self.get_json("/readyz").await.1["consuming"] == true).then_some(())
        })
        .await;
    }
}

// ------------------------------------------------------ privacy stream ----

/// A privacy stream of the test's own (never the shared `chat.privacy`):
/// the consumer follows it when its `privacy_stream` names it; the test
/// publishes notices to it and deletes it at the end.
pub(crate) struct PrivacyStream {
    pub name: String,
    conn: lapin::Connection,
}

impl PrivacyStream {
    pub(crate) async fn new() -> Self {
        let name = unique("test-privacy");
        let conn = rabbit::connect("chatbus-test-privacy").await;
        common::amqp::privacy::declare(&conn, &name)
            .await
            .expect("declare the privacy stream");
        Self { name, conn }
    }

    /// Publishes `notice`, confirmed.
    pub(crate) async fn publish(&self, notice: &common::privacy::PrivacyNotice) {
        within(
            30,
            "publish a privacy notice",
            common::amqp::privacy::publish(&self.conn, &self.name, notice),
        )
        .await
        .expect("privacy notice published");
    }

    /// Deletes the stream.
    pub(crate) async fn delete(self) {
        if let Ok(ch) = self.conn.create_channel().await {
            let _ = ch
                .queue_delete(
                    self.name.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
            common::amqp::close_channel(&ch, "cleaned up").await;
        }
        common::amqp::close(&self.conn, "test over").await;
    }
}

/// A purge of `subject` decided now (its horizon now too).
pub(crate) fn purge(subject: common::privacy::Subject) -> common::privacy::PrivacyNotice {
    let mut notice = common::privacy::PrivacyNotice::new(
        common::privacy::PrivacyAction::Purge,
        Some(subject),
        "test",
    );
    notice.horizon = Some(notice.at);
    notice
}

/// The subject of every event of `login` (as [`author`] makes them).
pub(crate) fn user_subject(login: &str) -> common::privacy::Subject {
    common::privacy::Subject::User {
        platform: PLATFORM_TWITCH.into(),
        user_id: author(login).id,
    }
}

impl TestApp {
    /// Makes the self-service code `code` expired, behind the consumer's
    /// back (no test waits a minute).
    pub(crate) async fn expire_optout_code(&self, code: &str) {
        if self.db_url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(&self.db_url)
                .await
                .expect("sqlite");
            sqlx::query("UPDATE privacy_codes SET expires_at = 0 WHERE code = ?1")
                .bind(code)
                .execute(&pool)
                .await
                .expect("expire the code");
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(&self.db_url).await.expect("postgres");
            sqlx::query("UPDATE privacy_codes SET expires_at = 0 WHERE code = $1")
                .bind(code)
                .execute(&pool)
                .await
                .expect("expire the code");
            pool.close().await;
        }
    }
}

/// Messages in `queue` now (a passive declare on a connection of its own).
pub(crate) async fn rabbit_message_count(queue: &str) -> u32 {
    let conn = rabbit::connect("chatbus-test-count").await;
    let ch = conn.create_channel().await.expect("channel");
    let n = testkit::rabbit::queue_depth(&ch, queue).await;
    common::amqp::close(&conn, "counted").await;
    n
}
