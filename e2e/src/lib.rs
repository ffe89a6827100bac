//! The end-to-end harness: a fake Twitch IRC server on 127.0.0.1, the
//! ingestor and the consumer as separate processes (`e2e-service`), the
//! real RabbitMQ, and clients of the consumer's REST API and WebSocket.
//!
//! Every stack uses its own exchange, queue, database and spool, so stacks
//! run side by side; drills that take the broker away use a TCP proxy (only
//! their stack's connections) or the fault-drill node.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::schema::ChatEvent;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The `e2e-service` binary: cargo builds it next to the test and bench
/// executables (`target/<profile>/`), one level above their `deps/`.
pub fn service_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    dir.join("e2e-service")
}

/// One service process (ingestor or consumer).
#[derive(Debug)]
pub struct Service {
    role: &'static str,
    env: Vec<(String, String)>,
    dir: PathBuf,
    child: Option<tokio::process::Child>,
    /// Its HTTP address.
    pub http: SocketAddr,
    starts: u32,
}

impl Service {
    /// Starts `role` with `env` (plus its HTTP address), working in `dir`.
    pub async fn start(role: &'static str, env: Vec<(String, String)>, dir: &Path) -> Self {
        let port = testkit::free_port();
        let http: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut env = env;
        let key = if role == "ingestor" {
            "INGESTOR_HTTP_ADDR"
        } else {
            "CONSUMER_HTTP_ADDR"
        };
        env.push((key.into(), http.to_string()));
        let mut s = Self {
            role,
            env,
            dir: dir.to_owned(),
            child: None,
            http,
            starts: 0,
        };
        s.spawn().await;
        s
    }

    async fn spawn(&mut self) {
        self.starts += 1;
        let log =
            std::fs::File::create(self.dir.join(format!("{}-{}.log", self.role, self.starts)))
                .unwrap();
        let mut cmd = tokio::process::Command::new(service_binary());
        cmd.arg(self.role)
            .env_clear()
            .env(
                "RUST_LOG",
                std::env::var("CHATBUS_E2E_LOG").unwrap_or_else(|_| "warn".into()),
            )
            // The stacks' exchanges are per test; so would their policies
            // be, and they would outlive it. The topology tests cover them.
            .env("RABBITMQ_POLICIES", "false")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        self.child = Some(cmd.spawn().expect("spawn e2e-service"));
        self.wait_healthy().await;
    }

    /// Waits until `/healthz` answers.
    pub async fn wait_healthy(&self) {
        testkit::wait_http_ok(60, &format!("http://{}/healthz", self.http)).await;
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// `kill -9`: no shutdown code runs.
    pub async fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.start_kill().unwrap();
            child.wait().await.unwrap();
        }
    }

    /// Starts it again with the same settings (same spool, same database).
    pub async fn restart(&mut self) {
        self.kill9().await;
        self.spawn().await;
    }

    /// SIGTERM and wait for a clean exit.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Some(pid) = child.id() {
                let _ = std::process::Command::new("kill")
                    .arg(pid.to_string())
                    .status();
            }
            let status = testkit::within(30, "service stops", child.wait())
                .await
                .unwrap();
            assert!(
                status.success(),
                "{} exited with {status}: see {}",
                self.role,
                self.dir.display()
            );
        }
    }

    /// GET `path` as JSON.
    pub async fn get_json(&self, path: &str) -> Value {
        reqwest::get(format!("http://{}{path}", self.http))
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(Value::Null)
    }

    /// A Prometheus metric summed over its label sets.
    pub async fn metric(&self, name: &str) -> f64 {
        testkit::metrics::scrape(self.http, name).await
    }

    /// Prints the tail of its logs (for failing tests).
    pub fn dump_logs(&self) {
        for n in 1..=self.starts {
            let path = self.dir.join(format!("{}-{n}.log", self.role));
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(30).collect();
            eprintln!("--- {} (last lines) ---", path.display());
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// How to build a stack.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Number of channels.
    pub channels: usize,
    /// Broker URL for the ingestor (default: the main broker).
    pub ingestor_amqp_url: String,
    /// Broker URL for the consumer (default: the main broker).
    pub consumer_amqp_url: String,
    /// Extra environment for the ingestor.
    pub ingestor_env: Vec<(String, String)>,
    /// Extra environment for the consumer.
    pub consumer_env: Vec<(String, String)>,
    /// The consumers' `DATABASE_URL` (default: a SQLite file in the
    /// stack's directory).
    pub database_url: Option<String>,
    /// Consumer processes competing on the queue and sharing the database
    /// (at least 1; more need a `database_url` they can share).
    pub consumers: usize,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            channels: 3,
            ingestor_amqp_url: rabbit::amqp_url(),
            consumer_amqp_url: rabbit::amqp_url(),
            ingestor_env: Vec::new(),
            consumer_env: Vec::new(),
            database_url: None,
            consumers: 1,
        }
    }
}

/// Fake Twitch + ingestor + RabbitMQ + consumer.
#[derive(Debug)]
pub struct Stack {
    /// Working directory (spool, database, logs).
    pub dir: tempfile::TempDir,
    /// The fake Twitch IRC server.
    pub fake: FakeIrc,
    /// The exchange of this stack.
    pub exchange: String,
    /// The consumer's queue.
    pub queue: String,
    /// Channel logins.
    pub channels: Vec<String>,
    /// The ingestor process.
    pub ingestor: Service,
    /// The consumer process.
    pub consumer: Service,
    /// Further consumers on the same queue and database
    /// (`StackOptions::consumers` − 1).
    pub more_consumers: Vec<Service>,
    consumer_amqp_url: String,
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A failing drill shows what the services said.
        if std::thread::panicking() {
            self.dump_logs();
        }
    }
}

impl Stack {
    /// Starts the consumer (and waits for its queue), then the ingestor
    /// (and waits for every channel to be joined).
    pub async fn start(options: StackOptions) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let fake = FakeIrc::start().await;
        let exchange = unique("e2e-x");
        let queue = unique("e2e-q");
        let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
        let channels: Vec<String> = (0..options.channels)
            .map(|i| format!("e{tag}_{i}"))
            .collect();
        let mut consumer_env = vec![
            ("AMQP_URL".into(), options.consumer_amqp_url.clone()),
            ("CHAT_EXCHANGE".into(), exchange.clone()),
            ("CONSUMER_QUEUE".into(), queue.clone()),
            (
                "DATABASE_URL".into(),
                options.database_url.clone().unwrap_or_else(|| {
                    format!("sqlite://{}", dir.path().join("chatbus.sqlite").display())
                }),
            ),
        ];
        consumer_env.extend(options.consumer_env.clone());
        let consumer = Service::start("consumer", consumer_env.clone(), dir.path()).await;
        wait_for_queue(&options.consumer_amqp_url, &queue).await;
        let mut more_consumers = Vec::new();
        for n in 2..=options.consumers {
            let sub = dir.path().join(format!("consumer{n}"));
            std::fs::create_dir_all(&sub).unwrap();
            more_consumers.push(Service::start("consumer", consumer_env.clone(), &sub).await);
        }
        let mut ingestor_env = vec![
            ("AMQP_URL".into(), options.ingestor_amqp_url.clone()),
            ("CHAT_EXCHANGE".into(), exchange.clone()),
            ("TWITCH_IRC_ADDR".into(), fake.addr().to_string()),
            ("TWITCH_IRC_TLS".into(), "false".into()),
            ("TWITCH_CHANNELS".into(), channels.join(",")),
            ("TWITCH_JOIN_TIMEOUT".into(), "2s".into()),
            (
                "SPOOL_DIR".into(),
                dir.path().join("spool").display().to_string(),
            ),
            ("AMQP_RECONNECT_MAX_DELAY".into(), "1s".into()),
        ];
        ingestor_env.extend(options.ingestor_env.clone());
        let ingestor = Service::start("ingestor", ingestor_env, dir.path()).await;
        let refs: Vec<&str> = channels.iter().map(String::as_str).collect();
        fake.wait_joined(&refs, 60).await;
        Self {
            dir,
            fake,
            exchange,
            queue,
            channels,
            ingestor,
            consumer,
            more_consumers,
            consumer_amqp_url: options.consumer_amqp_url,
        }
    }

    /// Stops both services cleanly and deletes the stack's broker objects.
    pub async fn stop(mut self) {
        self.ingestor.stop().await;
        self.consumer.stop().await;
        for consumer in &mut self.more_consumers {
            consumer.stop().await;
        }
        let conn = rabbit::connect_to(&self.consumer_amqp_url, "e2e-cleanup").await;
        delete_bus_objects(&conn, &self.exchange, &self.queue).await;
    }

    /// Prints both services' logs.
    pub fn dump_logs(&self) {
        self.ingestor.dump_logs();
        self.consumer.dump_logs();
        for consumer in &self.more_consumers {
            consumer.dump_logs();
        }
    }

    /// Every consumer process, the first one first.
    pub fn consumers(&self) -> impl Iterator<Item = &Service> {
        std::iter::once(&self.consumer).chain(&self.more_consumers)
    }

    /// A counter summed over every consumer.
    pub async fn consumers_metric(&self, name: &str) -> f64 {
        let mut sum = 0.0;
        for consumer in self.consumers() {
            sum += consumer.metric(name).await;
        }
        sum
    }

    /// Every stored event of `channel`, oldest first (all pages).
    pub async fn stored(&self, channel: &str) -> Vec<Stored> {
        stored_events(self.consumer.http, &format!("channel={channel}")).await
    }
}

/// Deletes what a stack's services declared on the broker: the topology
/// of `exchange`, the consumers' `queue` and their commit announcements'
/// exchange. Best effort: a test's cleanup.
pub async fn delete_bus_objects(conn: &lapin::Connection, exchange: &str, queue: &str) {
    rabbit::delete_consumer_objects(
        conn,
        &common::amqp::Topology::named(exchange),
        queue,
        &consumer::commit_signal::exchange_for(queue),
    )
    .await;
}

/// Waits until `queue` exists on the broker at `amqp_url` (a passive
/// declare; a failed one closes only its own channel).
pub async fn wait_for_queue(amqp_url: &str, queue: &str) {
    let conn = rabbit::connect_to(amqp_url, "e2e-wait-queue").await;
    testkit::eventually(60, "consumer queue declared", || async {
        // A fresh channel each try: a failed passive declare closes it.
        let ch = conn.create_channel().await.ok()?;
        rabbit::passive_declare(&ch, queue).await.ok().map(drop)
    })
    .await;
    common::amqp::close(&conn, "queue seen").await;
}

/// One stored event as the REST API returns it.
#[derive(Debug, Clone)]
pub struct Stored {
    /// Store cursor.
    pub cursor: u64,
    /// Moderation mark (`null` or `{"action", "by"}`).
    pub moderation: Value,
    /// The event.
    pub event: ChatEvent,
}

fn parse_stored(v: &Value) -> Stored {
    Stored {
        cursor: v["cursor"].as_u64().expect("cursor"),
        moderation: v["moderation"].clone(),
        event: serde_json::from_value(v["event"].clone()).expect("a ChatEvent"),
    }
}

/// All events matching `query`, oldest first, following `next`.
pub async fn stored_events(http: SocketAddr, query: &str) -> Vec<Stored> {
    let mut out = Vec::new();
    let mut after: Option<u64> = None;
    loop {
        let mut url = format!("http://{http}/api/events?{query}&order=asc&limit=1000");
        if let Some(after) = after {
            url.push_str(&format!("&after={after}"));
        }
        let page: Value = reqwest::get(&url).await.unwrap().json().await.unwrap();
        let events = page["events"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("GET {url} answered {page}"));
        out.extend(events.iter().map(parse_stored));
        match page["next"].as_u64() {
            Some(next) => after = Some(next),
            None => return out,
        }
    }
}

/// A WebSocket client of the consumer.
#[derive(Debug)]
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What a WebSocket read gave.
#[derive(Debug)]
pub enum WsRead {
    /// A JSON frame.
    Frame(Value),
    /// The server closed the connection (code, reason).
    Closed(Option<(u16, String)>),
}

impl WsClient {
    /// Connects and reads the `welcome` frame.
    pub async fn connect(http: SocketAddr) -> Self {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{http}/ws"))
            .await
            .expect("websocket connect");
        let mut c = Self { ws };
        match c.read(10).await {
            WsRead::Frame(f) => assert_eq!(f["type"], "welcome", "{f}"),
            other => panic!("expected welcome, got {other:?}"),
        }
        c
    }

    /// Connects and reads the `welcome` frame; `None` when the consumer
    /// does not answer or closes (a client that retries elsewhere).
    pub async fn try_connect(http: SocketAddr) -> Option<Self> {
        let connect = tokio_tungstenite::connect_async(format!("ws://{http}/ws"));
        let (ws, _) = tokio::time::timeout(std::time::Duration::from_secs(5), connect)
            .await
            .ok()?
            .ok()?;
        let mut c = Self { ws };
        match c.read(10).await {
            WsRead::Frame(f) if f["type"] == "welcome" => Some(c),
            _ => None,
        }
    }

    /// [`Self::subscribe`], answering `false` when the connection closes
    /// first (the consumer went away).
    pub async fn try_subscribe(
        &mut self,
        sub: &str,
        patterns: &[String],
        since: Option<u64>,
    ) -> bool {
        let mut frame = json!({"type": "subscribe", "sub": sub, "patterns": patterns});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        if self
            .ws
            .send(Message::text(frame.to_string()))
            .await
            .is_err()
        {
            return false;
        }
        loop {
            match self.read(10).await {
                WsRead::Frame(f) if f["type"] == "subscribed" => return true,
                WsRead::Frame(f) if f["type"] == "error" => panic!("subscribe refused: {f}"),
                WsRead::Frame(_) => {}
                WsRead::Closed(_) => return false,
            }
        }
    }

    /// Subscribes to everything of `channels` (`patterns` when empty),
    /// optionally resuming after `since`; waits for `subscribed`.
    pub async fn subscribe(&mut self, sub: &str, patterns: &[String], since: Option<u64>) {
        let mut frame = json!({"type": "subscribe", "sub": sub, "patterns": patterns});
        if let Some(since) = since {
            frame["since"] = json!(since);
        }
        self.send(frame).await;
        loop {
            match self.read(10).await {
                WsRead::Frame(f) if f["type"] == "subscribed" => return,
                WsRead::Frame(f) if f["type"] == "error" => panic!("subscribe refused: {f}"),
                WsRead::Frame(_) => {}
                other => panic!("closed while subscribing: {other:?}"),
            }
        }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(Message::text(frame.to_string()))
            .await
            .expect("ws send");
    }

    /// The next JSON frame (answering pings), within `secs`.
    pub async fn read(&mut self, secs: u64) -> WsRead {
        testkit::within(secs, "a WebSocket frame", async {
            loop {
                match self.ws.next().await {
                    Some(Ok(Message::Text(t))) => {
                        return WsRead::Frame(
                            serde_json::from_str(t.as_str()).expect("JSON frame"),
                        );
                    }
                    Some(Ok(Message::Close(c))) => {
                        return WsRead::Closed(
                            c.map(|c| (u16::from(c.code), c.reason.to_string())),
                        );
                    }
                    Some(Ok(_)) => {}
                    Some(Err(_)) | None => return WsRead::Closed(None),
                }
            }
        })
        .await
    }

    /// Reads in the background (as a real client does, so it never lags)
    /// until `n` events whose id starts with `tag` arrived; the handle
    /// yields every event read (cursor, event).
    pub fn collect(
        mut self,
        tag: &str,
        n: usize,
        secs: u64,
    ) -> tokio::task::JoinHandle<Vec<(u64, ChatEvent)>> {
        let tag = tag.to_owned();
        tokio::spawn(async move {
            let mut out: Vec<(u64, ChatEvent)> = Vec::new();
            let mut tagged = 0;
            testkit::within(
                secs,
                &format!("{n} `{tag}` events on the WebSocket"),
                async {
                    while tagged < n {
                        match self.read(secs).await {
                            WsRead::Frame(f) if f["type"] == "event" => {
                                let event: ChatEvent =
                                    serde_json::from_value(f["event"].clone()).expect("event");
                                tagged += usize::from(event.id.starts_with(&tag));
                                out.push((f["cursor"].as_u64().expect("cursor"), event));
                            }
                            WsRead::Frame(_) => {}
                            WsRead::Closed(c) => {
                                panic!("WebSocket closed after {} events: {c:?}", out.len())
                            }
                        }
                    }
                },
            )
            .await;
            out
        })
    }

    /// Reads until `n` events arrived; returns them (cursor, event).
    pub async fn events(&mut self, n: usize, secs: u64) -> Vec<(u64, ChatEvent)> {
        let mut out = Vec::with_capacity(n);
        testkit::within(secs, &format!("{n} WebSocket events"), async {
            while out.len() < n {
                match self.read(secs).await {
                    WsRead::Frame(f) if f["type"] == "event" => {
                        let event: ChatEvent =
                            serde_json::from_value(f["event"].clone()).expect("event");
                        out.push((f["cursor"].as_u64().expect("cursor"), event));
                    }
                    WsRead::Frame(_) => {}
                    WsRead::Closed(c) => {
                        panic!("WebSocket closed after {} events: {c:?}", out.len())
                    }
                }
            }
        })
        .await;
        out
    }
}

/// `n` PRIVMSGs with ids `<tag>-<i>` spread over `channels`; user `i % 7`.
pub fn privmsgs(channels: &[String], n: usize, tag: &str) -> Vec<String> {
    (0..n)
        .map(|i| {
            let ch = &channels[i % channels.len()];
            let u = i % 7;
            format!(
                "@badge-info=;badges=;color=#1E90FF;display-name=User{u};emotes=25:0-4;id={tag}-{i};mod=0;room-id=1;subscriber=0;tmi-sent-ts={};turbo=0;user-id={u};user-type= :user{u}!user{u}@user{u}.tmi.twitch.tv PRIVMSG #{ch} :Kappa héllo {i}",
                chrono::Utc::now().timestamp_millis()
            )
        })
        .collect()
}

pub use testkit::metrics::process_stats;
