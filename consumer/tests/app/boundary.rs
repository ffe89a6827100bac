//! The history/live boundary under a slow store, made deterministic: the
//! real SQLite store, the real hub, live feed and WebSocket route, with
//! every history read answering 150 ms late (its result is the snapshot from
//! before the wait). Events committed during that wait reach the
//! subscription only live, events committed just before it arrive both ways,
//! so a gap or a duplicate at the boundary cannot hide.

use std::sync::Arc;
use std::time::Duration;

use consumer::hub::Hub;
use consumer::live_feed::LiveFeed;
use consumer::store::{
    self, ChannelSummary, Cursor, EventQuery, NewEvent, RetentionPolicy, Store, StoreError,
    StoreOptions, StoredEvent, WriteOutcome, encode, new_events,
};
use consumer::ws::{WsContext, WsSettings};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, WsClient, cursors, message};

/// The real store, with history reads that answer late, and (with a
/// gate) only once the test lets each one through.
#[derive(Debug)]
struct SlowReads {
    inner: Arc<dyn Store>,
    delay: Duration,
    gate: Option<Arc<tokio::sync::Semaphore>>,
}

#[async_trait::async_trait]
impl Store for SlowReads {
    async fn write_batch(&self, events: &[NewEvent<'_>]) -> Result<WriteOutcome, StoreError> {
        self.inner.write_batch(events).await
    }
    async fn query(&self, query: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let snapshot = self.inner.query(query).await;
        tokio::time::sleep(self.delay).await;
        if let Some(gate) = &self.gate {
            gate.acquire().await.expect("gate open").forget();
        }
        snapshot
    }
    async fn get(&self, platform: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        self.inner.get(platform, id).await
    }
    async fn head(&self) -> Result<Option<Cursor>, StoreError> {
        self.inner.head().await
    }
    async fn channels(&self) -> Result<Vec<ChannelSummary>, StoreError> {
        self.inner.channels().await
    }
    async fn apply_retention(&self, policy: &RetentionPolicy) -> Result<u64, StoreError> {
        self.inner.apply_retention(policy).await
    }
    async fn set_opted_out(
        &self,
        subject: &common::privacy::Subject,
        opted_out: bool,
        requested_by: &str,
    ) -> Result<(), StoreError> {
        self.inner
            .set_opted_out(subject, opted_out, requested_by)
            .await
    }
    async fn opt_outs(&self) -> Result<Vec<consumer::store::privacy::OptOut>, StoreError> {
        self.inner.opt_outs().await
    }
    async fn purge(
        &self,
        subject: &common::privacy::Subject,
        requested_by: &str,
    ) -> Result<consumer::store::privacy::PurgeReport, StoreError> {
        self.inner.purge(subject, requested_by).await
    }
    async fn audit_log(
        &self,
        limit: i64,
    ) -> Result<Vec<consumer::store::privacy::AuditEntry>, StoreError> {
        self.inner.audit_log(limit).await
    }
    async fn issue_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        self.inner
            .issue_code(code, platform, login, expires_at)
            .await
    }
    async fn redeem_code(
        &self,
        code: &str,
        platform: &str,
        login: &str,
        now: i64,
    ) -> Result<bool, StoreError> {
        self.inner.redeem_code(code, platform, login, now).await
    }
    async fn record_notice(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.record_notice(id).await
    }
    async fn forget_notice(&self, id: &str) -> Result<(), StoreError> {
        self.inner.forget_notice(id).await
    }
    async fn notice_applied(&self, id: &str) -> Result<bool, StoreError> {
        self.inner.notice_applied(id).await
    }
    async fn close(&self) {
        self.inner.close().await;
    }
}

async fn boundary_holds(send_queue: usize) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("b.sqlite").display());
    let real = store::open(&url, &StoreOptions::default()).await.unwrap();
    let slow: Arc<dyn Store> = Arc::new(SlowReads {
        inner: real.clone(),
        delay: Duration::from_millis(150),
        gate: None,
    });
    let shutdown = CancellationToken::new();
    let hub = Hub::new();
    // The live feed reads the real store (fast); only history is slow.
    let (feed, live) = LiveFeed::start(real.clone(), hub.clone(), Duration::from_secs(1), 5)
        .await
        .unwrap();
    tokio::spawn(live.run(shutdown.clone()));
    let routes = consumer::ws::route(
        Arc::new(WsContext {
            store: slow,
            hub,
            settings: WsSettings {
                send_queue,
                send_queue_bytes: 8 * 1024 * 1024,
                max_subscriptions: 4,
                max_frame_bytes: 65536,
                ping_interval: Duration::from_secs(20),
                write_timeout: Duration::from_secs(10),
                max_history: 1000,
            },
            shutdown: shutdown.clone(),
            privacy: common::amqp::privacy::PrivacyFeed::empty(),
            admission: consumer::ws::admission::Admission::new(100, 100),
        }),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::http::serve(routes, listener, shutdown.clone()));

    // The writer: 5 events every 5 ms, handed to the live feed like ingest
    // does, plus noise on another channel.
    let writer = {
        let real = real.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for round in 0..300 {
                let mut batch: Vec<_> = (0..5)
                    .map(|i| message("edge", "u", &format!("{round}.{i}")))
                    .collect();
                batch.push(message("noise", "u", "noise"));
                ids.extend(batch[..5].iter().map(|e| e.id.clone()));
                let encoded = encode(batch);
                let out = real.write_batch(&new_events(&encoded)).await.unwrap();
                feed.committed(out.after, out.stored);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            ids
        })
    };
    let mut clients = Vec::new();
    for i in 0..6 {
        tokio::time::sleep(Duration::from_millis(120)).await;
        let (mut ws, _) = WsClient::connect_welcomed(&format!("ws://{addr}/ws")).await;
        let mut request = json!({"sub": "e", "channels": ["twitch:edge"]});
        match i % 3 {
            0 => request["last"] = 30.into(),
            1 => request["since"] = 0.into(),
            // Resume from a cursor a little in the past.
            _ => {
                let head = real.head().await.unwrap().map_or(0, |c| c.get());
                request["since"] = (head - 40).max(0).into();
            }
        }
        ws.subscribe(request).await;
        clients.push(ws);
    }
    let published = writer.await.unwrap();
    let last = published.last().unwrap().clone();

    for (i, mut ws) in clients.into_iter().enumerate() {
        let mut events = Vec::new();
        testkit::within(60, "the last event", async {
            loop {
                let v = ws.json().await;
                if v["type"] == "event" {
                    let done = v["event"]["id"] == last.as_str();
                    events.push(v);
                    if done {
                        break;
                    }
                }
            }
        })
        .await;
        let got: Vec<String> = events
            .iter()
            .map(|e| e["event"]["id"].as_str().unwrap().to_owned())
            .collect();
        let c = cursors(&events);
        let disorder = c.windows(2).find(|w| w[0] >= w[1]);
        assert!(
            disorder.is_none(),
            "client {i} (queue {send_queue}): a duplicate or disorder at {disorder:?}"
        );
        let first = published.iter().position(|id| *id == got[0]).unwrap();
        assert_eq!(
            got.len(),
            published.len() - first,
            "client {i} (queue {send_queue}): a gap"
        );
        assert_eq!(got, published[first..]);
    }
    shutdown.cancel();
}

#[tokio::test]
async fn a_slow_history_read_leaves_no_gap_and_no_duplicate() {
    boundary_holds(1000).await;
}

#[tokio::test]
async fn live_events_dropped_while_history_is_read_are_read_from_the_store() {
    // A queue of 10 overflows during every 150 ms history read (5 matching
    // events per 5 ms arrive): the pending live events are dropped and
    // history goes on reading from the store, which has them.
    boundary_holds(10).await;
}

#[tokio::test]
async fn a_privacy_frame_waits_until_the_history_being_sent_is_complete() {
    use common::privacy::{PrivacyAction, PrivacyNotice, Subject};
    use common::schema::PrivacyDetails;
    use consumer::ws::protocol::ServerFrame;

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("p.sqlite").display());
    let real = store::open(&url, &StoreOptions::default()).await.unwrap();
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let gated: Arc<dyn Store> = Arc::new(SlowReads {
        inner: real.clone(),
        delay: Duration::ZERO,
        gate: Some(gate.clone()),
    });
    let shutdown = CancellationToken::new();
    let hub = Hub::new();
    let routes = consumer::ws::route(
        Arc::new(WsContext {
            store: gated,
            hub: hub.clone(),
            settings: WsSettings {
                send_queue: 1000,
                send_queue_bytes: 8 * 1024 * 1024,
                max_subscriptions: 4,
                max_frame_bytes: 65536,
                ping_interval: Duration::from_secs(20),
                write_timeout: Duration::from_secs(10),
                max_history: 1000,
            },
            shutdown: shutdown.clone(),
            privacy: common::amqp::privacy::PrivacyFeed::empty(),
            admission: consumer::ws::admission::Admission::new(100, 100),
        }),
        None,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(common::http::serve(routes, listener, shutdown.clone()));
    let shown = message("held", "leaver", "read before the purge");
    real.write_batch(&new_events(&encode(vec![shown.clone()])))
        .await
        .unwrap();

    // History read, and held at the gate: the purge arrives meanwhile.
    let (mut ws, _) = WsClient::connect_welcomed(&format!("ws://{addr}/ws")).await;
    ws.subscribe(json!({"sub": "h", "channels": ["twitch:held"], "last": 10}))
        .await;
    let details = PrivacyDetails::from_notice(&PrivacyNotice::new(
        PrivacyAction::Purge,
        Some(Subject::User {
            platform: "twitch".into(),
            user_id: "id-leaver".into(),
        }),
        "test",
    ))
    .unwrap();
    let frame: Arc<str> = ServerFrame::Privacy { details: &details }.to_text().into();
    assert_eq!(hub.announce(&frame), 1);
    gate.add_permits(1);
    // The history (with the purged message), its `live`, then the purge,
    // so the client removes what the history showed.
    let event = ws.expect("event").await;
    assert_eq!(event["event"]["id"], shown.id.as_str());
    ws.expect("live").await;
    let privacy = ws.expect("privacy").await;
    assert_eq!(privacy["notice_id"], details.notice_id.as_str());
    // Live: the next one comes at once.
    assert_eq!(hub.announce(&frame), 1);
    ws.expect("privacy").await;
    shutdown.cancel();
}

#[tokio::test]
async fn readyz_is_red_while_the_broker_is_away_and_green_when_consuming_again() {
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let url = proxy.url(&testkit::rabbit::amqp_url());
    let app = TestApp::spawn_with(|c| c.amqp_url = url).await;
    let ready = |app: &TestApp| {
        let url = app.url("/readyz");
        async move {
            let res = reqwest::get(url).await.unwrap();
            let code = res.status().as_u16();
            (code, res.json::<serde_json::Value>().await.unwrap())
        }
    };
    testkit::eventually(30, "ready once consuming", || async {
        (ready(&app).await.0 == 200).then_some(())
    })
    .await;
    proxy.cut();
    let (code, body) = testkit::eventually(30, "not ready without the broker", || async {
        let r = ready(&app).await;
        (r.0 == 503).then_some(r)
    })
    .await;
    assert_eq!((code, body["consuming"].as_bool()), (503, Some(false)));
    assert!(body["last_error"].is_string(), "{body}");
    let alive = reqwest::get(app.url("/healthz")).await.unwrap().status();
    assert_eq!(alive.as_u16(), 200, "alive all the same");
    proxy.restore();
    testkit::eventually(60, "ready again", || async {
        (ready(&app).await.0 == 200).then_some(())
    })
    .await;
    app.stop().await;
}

#[tokio::test]
async fn the_policies_give_the_queue_its_dead_letter_exchange_and_the_exchange_its_alternate() {
    let app = TestApp::spawn_with(|c| c.rabbitmq_policies = true).await;
    let mgmt = testkit::rabbit::management();
    let vhost = common::urlcode::encode("/");
    let queue_path = format!(
        "/api/queues/{vhost}/{}",
        common::urlcode::encode(&app.queue)
    );
    let exchange_path = format!(
        "/api/exchanges/{vhost}/{}",
        common::urlcode::encode(&app.topology.exchange)
    );
    let (queue, exchange) = testkit::eventually(30, "policies applied", || async {
        let q = mgmt.get_json(&queue_path).await.ok()?;
        let x = mgmt.get_json(&exchange_path).await.ok()?;
        (q["effective_policy_definition"]["dead-letter-exchange"].is_string()
            && x["policy"].is_string())
        .then_some((q, x))
    })
    .await;
    assert_eq!(
        queue["effective_policy_definition"]["dead-letter-exchange"],
        app.topology.dead_letter_exchange.as_str()
    );
    assert!(
        queue["arguments"].get("x-dead-letter-exchange").is_none(),
        "no x-arguments: {queue}"
    );
    assert!(
        exchange["arguments"]
            .as_object()
            .is_none_or(|a| a.is_empty()),
        "{exchange}"
    );
    let _ = mgmt
        .delete_policy(&app.topology.queue_policy(&app.queue).name)
        .await;
    for p in app.topology.policies() {
        let _ = mgmt.delete_policy(&p.name).await;
    }
    app.stop().await;
}
