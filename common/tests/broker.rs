//! The AMQP toolkit against the real RabbitMQ. Every test declares its own
//! exchanges and queues (unique names), so tests run side by side.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::amqp::{
    self, OutgoingMessage, Publisher, Session, SessionEnd, Subscriber, Topology, header_str,
    headers,
};
use common::schema::ChatEvent;
use lapin::BasicProperties;
use testkit::rabbit::{self, drain_queue, test_topology, unique};
use testkit::{events, within};
use tokio_util::sync::CancellationToken;

/// Receives (and acks) `n` deliveries.
async fn receive_all(sub: &mut Subscriber, n: usize, secs: u64) -> Vec<common::amqp::Delivery> {
    let mut out = Vec::with_capacity(n);
    within(secs, &format!("{n} deliveries"), async {
        while out.len() < n {
            let d = sub
                .next()
                .await
                .expect("subscriber open")
                .expect("delivery");
            d.ack().await.expect("ack");
            out.push(d);
        }
    })
    .await;
    out
}

#[tokio::test]
async fn ten_thousand_confirmed_events_arrive_exactly_once_with_contract_properties() {
    testkit::init_logging();
    let conn = rabbit::connect("test-10k").await;
    let topology = test_topology("10k");
    let channels = ["alpha", "beta", "gamma", "Delta.Weird"];
    let events = events::twitch_messages(&channels, 10_000);
    let messages: Vec<_> = events
        .iter()
        .map(|e| OutgoingMessage::from_event(e).unwrap())
        .collect();

    let mut sub = Subscriber::builder(unique("q-10k"))
        .bind("chat.#")
        .prefetch(1000)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    within(60, "publish 10k", publisher.publish_all(&messages, 1024))
        .await
        .unwrap();

    let deliveries = receive_all(&mut sub, 10_000, 60).await;
    let by_id: BTreeMap<&str, &ChatEvent> = events.iter().map(|e| (e.id.as_str(), e)).collect();
    let mut seen = BTreeSet::new();
    for d in &deliveries {
        let original = by_id[d.event.id.as_str()];
        assert_eq!(&d.event, original);
        assert!(seen.insert(d.event.id.clone()), "duplicate {}", d.event.id);
        assert_eq!(
            d.routing_key,
            common::routing::routing_key("twitch", &original.channel)
        );
        let p = d.properties();
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            "application/json"
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), original.id);
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "message");
        assert_eq!(*p.timestamp(), Some(original.sent_at.timestamp() as u64));
        let h = p.headers().as_ref();
        assert_eq!(header_str(h, headers::PLATFORM).unwrap(), "twitch");
        assert_eq!(header_str(h, headers::CHANNEL).unwrap(), original.channel);
        assert_eq!(header_str(h, headers::KIND).unwrap(), "message");
    }
    assert_eq!(seen.len(), 10_000);
    // Nothing more is coming: exactly 10,000.
    let extra = tokio::time::timeout(Duration::from_millis(500), sub.next()).await;
    assert!(extra.is_err(), "no 10,001st message");
    let keys: BTreeSet<_> = deliveries.iter().map(|d| d.routing_key.as_str()).collect();
    assert_eq!(
        keys,
        BTreeSet::from([
            "chat.twitch.alpha",
            "chat.twitch.beta",
            "chat.twitch.gamma",
            "chat.twitch.Delta-2eWeird"
        ])
    );
}

#[tokio::test]
async fn bindings_select_exactly_the_right_events() {
    let conn = rabbit::connect("test-bindings").await;
    let topology = test_topology("bind");
    let mut subs = Vec::new();
    for pattern in ["chat.twitch.*", "chat.*.x", "chat.#"] {
        let sub = Subscriber::builder(unique("q-bind"))
            .bind(pattern)
            .expires(Duration::from_secs(600))
            .build(&conn, &topology)
            .await
            .unwrap();
        subs.push((pattern, sub));
    }
    let cases = [
        ("twitch", "x"),
        ("twitch", "y"),
        ("youtube", "x"),
        ("youtube", "z"),
    ];
    let events: Vec<_> = cases
        .iter()
        .enumerate()
        .map(|(i, (p, c))| events::message(p, c, i))
        .collect();
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    for e in &events {
        publisher.publish(e).await.unwrap();
    }
    let expected: BTreeMap<&str, Vec<(&str, &str)>> = BTreeMap::from([
        ("chat.twitch.*", vec![("twitch", "x"), ("twitch", "y")]),
        ("chat.*.x", vec![("twitch", "x"), ("youtube", "x")]),
        ("chat.#", cases.to_vec()),
    ]);
    for (pattern, sub) in &mut subs {
        let want = &expected[pattern];
        let got = receive_all(sub, want.len(), 10).await;
        let mut got: Vec<_> = got
            .iter()
            .map(|d| (d.event.platform.clone(), d.event.channel.clone()))
            .collect();
        got.sort();
        let mut want: Vec<_> = want
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        want.sort();
        assert_eq!(got, want, "pattern {pattern}");
        let extra = tokio::time::timeout(Duration::from_millis(300), sub.next()).await;
        assert!(extra.is_err(), "pattern {pattern} selected an extra event");
    }
}

#[tokio::test]
async fn poison_payloads_are_dead_lettered_with_a_reason_and_the_stream_continues() {
    let conn = rabbit::connect("test-poison").await;
    let topology = test_topology("poison");
    let queue = unique("q-poison");
    let mut sub = Subscriber::builder(&queue)
        .bind("chat.#")
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let json = BasicProperties::default().with_content_type("application/json".into());
    let poison: [(&[u8], BasicProperties); 4] = [
        (b"{not json", json.clone()),
        (br#"{"schema_version": 99}"#, json.clone()),
        (&[0xff, 0x00, 0xfe], BasicProperties::default()),
        (
            b"<xml/>",
            BasicProperties::default().with_content_type("text/xml".into()),
        ),
    ];
    for (body, props) in &poison {
        publisher
            .send_raw(
                &topology.exchange,
                "chat.twitch.poison",
                body,
                props.clone(),
            )
            .await
            .unwrap()
            .wait()
            .await
            .unwrap();
    }
    let good = events::message("twitch", "poison", 1);
    publisher.publish(&good).await.unwrap();

    // The subscriber skips the four poison payloads and yields the good one.
    let d = within(10, "good event after poison", sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(d.event.id, good.id);
    d.ack().await.unwrap();

    let dead = drain_queue(&conn, &topology.dead_letter_queue, 4, 10).await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|m| {
            header_str(m.properties.headers().as_ref(), headers::DEAD_LETTER_REASON)
                .expect("reason header")
                .into_owned()
        })
        .collect();
    assert!(reasons[0].contains("invalid ChatEvent JSON"), "{reasons:?}");
    assert!(reasons[1].contains("invalid ChatEvent JSON"), "{reasons:?}");
    assert!(reasons[2].contains("invalid ChatEvent JSON"), "{reasons:?}");
    assert!(reasons[3].contains("text/xml"), "{reasons:?}");
    for (m, (body, _)) in dead.iter().zip(&poison) {
        assert_eq!(&m.data[..], *body, "the original payload is kept");
        assert_eq!(m.routing_key.as_str(), "chat.twitch.poison");
        let h = m.properties.headers().as_ref();
        assert_eq!(header_str(h, headers::DEAD_LETTER_QUEUE).unwrap(), queue);
    }
}

#[tokio::test]
async fn a_delivery_can_be_dead_lettered_by_the_application() {
    let conn = rabbit::connect("test-dl-app").await;
    let topology = test_topology("dlapp");
    let mut sub = Subscriber::builder(unique("q-dlapp"))
        .bind("chat.#")
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let event = events::message("twitch", "c", 1);
    publisher.publish(&event).await.unwrap();
    let d = within(10, "delivery", sub.next()).await.unwrap().unwrap();
    d.dead_letter("store refused: constraint violated")
        .await
        .unwrap();
    let dead = drain_queue(&conn, &topology.dead_letter_queue, 1, 10).await;
    let reason = header_str(
        dead[0].properties.headers().as_ref(),
        headers::DEAD_LETTER_REASON,
    )
    .unwrap();
    assert_eq!(reason, "store refused: constraint violated");
    assert_eq!(ChatEvent::from_json(&dead[0].data).unwrap(), event);
}

#[tokio::test]
async fn events_nobody_is_bound_for_are_kept_in_the_unrouted_queue() {
    let conn = rabbit::connect("test-unrouted").await;
    let topology = test_topology("unrouted");
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    // The alternate exchange is a policy now, not an argument.
    let policies = rabbit::apply_policies(&topology).await;
    let event = events::message("twitch", "nobody", 1);
    publisher.publish(&event).await.unwrap();
    let kept = drain_queue(&conn, &topology.unrouted_queue, 1, 10).await;
    assert_eq!(ChatEvent::from_json(&kept[0].data).unwrap().id, event.id);
    policies.remove().await;
}

#[tokio::test]
async fn topology_declaration_is_idempotent() {
    let conn = rabbit::connect("test-idem").await;
    let topology = test_topology("idem");
    for _ in 0..3 {
        topology.declare(&conn).await.unwrap();
    }
}

/// Declares `name` as another service would: a plain durable exchange of
/// `kind`, with `args`.
async fn declare_as_third_party(
    conn: &lapin::Connection,
    name: &str,
    kind: lapin::ExchangeKind,
    args: lapin::types::FieldTable,
) {
    let ch = conn.create_channel().await.unwrap();
    ch.exchange_declare(
        name.into(),
        kind,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            auto_delete: true,
            ..Default::default()
        },
        args,
    )
    .await
    .unwrap();
    common::amqp::close_channel(&ch, "declared").await;
}

/// Publishes one event through chatbus's topology on `exchange`, with the
/// policies applied, and checks that a bound queue and the unrouted queue
/// both work.
async fn chatbus_works_on(conn: &lapin::Connection, topology: &common::amqp::Topology) {
    let mut sub = Subscriber::builder(unique("q-shared"))
        .bind("chat.twitch.*")
        .expires(Duration::from_secs(600))
        .build(conn, topology)
        .await
        .unwrap();
    let policies = rabbit::apply_policies(topology).await;
    let publisher = Publisher::open(conn, topology, "chatbus-test")
        .await
        .unwrap();
    let bound = events::message("twitch", "somebody", 1);
    let unbound = events::message("youtube", "nobody", 2);
    publisher.publish(&bound).await.unwrap();
    publisher.publish(&unbound).await.unwrap();
    let got = receive_all(&mut sub, 1, 10).await;
    assert_eq!(got[0].event.id, bound.id);
    // The alternate exchange policy applies.
    let kept = drain_queue(conn, &topology.unrouted_queue, 1, 10).await;
    assert_eq!(ChatEvent::from_json(&kept[0].data).unwrap().id, unbound.id);
    policies.remove().await;
    sub.close().await;
}

#[tokio::test]
async fn a_plain_exchange_declared_first_by_another_service_is_used() {
    // A Python service (pika) declares `chat` first, as any consumer that
    // binds its own queue does: exchange_declare('chat', 'topic', durable=True).
    let conn = rabbit::connect("test-third-party-first").await;
    let topology = test_topology("third-first");
    declare_as_third_party(
        &conn,
        &topology.exchange,
        lapin::ExchangeKind::Topic,
        lapin::types::FieldTable::default(),
    )
    .await;
    chatbus_works_on(&conn, &topology).await;
}

#[tokio::test]
async fn another_service_can_declare_the_exchange_after_chatbus() {
    let conn = rabbit::connect("test-chatbus-first").await;
    let topology = test_topology("chatbus-first");
    topology.declare(&conn).await.unwrap();
    // Would fail with PRECONDITION_FAILED if chatbus declared arguments.
    declare_as_third_party(
        &conn,
        &topology.exchange,
        lapin::ExchangeKind::Topic,
        lapin::types::FieldTable::default(),
    )
    .await;
    chatbus_works_on(&conn, &topology).await;
}

#[tokio::test]
async fn an_exchange_with_arguments_from_an_older_chatbus_is_used_as_it_is() {
    let conn = rabbit::connect("test-legacy-args").await;
    let topology = test_topology("legacy");
    let mut args = lapin::types::FieldTable::default();
    args.insert(
        "alternate-exchange".into(),
        lapin::types::AMQPValue::LongString(topology.unrouted_exchange.as_str().into()),
    );
    declare_as_third_party(&conn, &topology.exchange, lapin::ExchangeKind::Topic, args).await;
    chatbus_works_on(&conn, &topology).await;
}

#[tokio::test]
async fn an_exchange_of_another_type_is_a_clear_permanent_error() {
    let conn = rabbit::connect("test-conflict").await;
    let topology = test_topology("conflict");
    declare_as_third_party(
        &conn,
        &topology.exchange,
        lapin::ExchangeKind::Fanout,
        lapin::types::FieldTable::default(),
    )
    .await;
    let err = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    let msg = err.to_string();
    let name = format!("exchange \"{}\"", topology.exchange);
    for part in [
        name.as_str(),
        "fanout",
        "durable topic exchange",
        "rabbitmqctl delete_exchange",
    ] {
        assert!(msg.contains(part), "`{part}` missing from: {msg}");
    }
    // The connection is still usable: only channels were closed.
    assert!(conn.status().connected());
}

#[tokio::test]
async fn a_queue_of_another_type_than_required_is_a_conflict_but_a_preference_is_not() {
    let conn = rabbit::connect("test-queue-type").await;
    let topology = test_topology("queue-type");
    let queue = unique("q-type");
    let classic = Subscriber::builder(&queue)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    classic.close().await;
    // Asked for quorum as a preference: the existing classic queue is used.
    let sub = Subscriber::builder(&queue)
        .queue_type(common::amqp::QueueType::Quorum)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    sub.close().await;
    // Required: a clear, permanent error.
    let err = Subscriber::builder(&queue)
        .require_queue_type(common::amqp::QueueType::Quorum)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    // Our expectation, not RabbitMQ's own text (which names quorum too).
    assert!(err.to_string().contains("a durable quorum queue"), "{err}");
}

#[tokio::test]
async fn a_dead_node_is_skipped_for_a_live_one() {
    // Port 1 refuses; the second address is the real broker.
    let opts = common::amqp::ConnectOptions::new(
        format!("amqp://guest:guest@127.0.0.1:1/%2f,{}", rabbit::amqp_url()),
        "test-dead-node",
    )
    .with_backoff(common::amqp::Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
        max_attempts: Some(1),
    });
    let conn = common::amqp::connect(&opts, &CancellationToken::new())
        .await
        .unwrap();
    assert!(conn.status().connected());
    common::amqp::close(&conn, "test").await;
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_error_and_not_retried() {
    let url = rabbit::amqp_url().replace("guest:guest@", "guest:wrong-password@");
    // `connect` retries transient errors forever: only a permanent one
    // returns, so a timeout here means it was retried.
    let err = testkit::within(
        10,
        "connect giving up on a refused password",
        common::amqp::connect(
            &common::amqp::ConnectOptions::new(url, "test-wrong-password"),
            &CancellationToken::new(),
        ),
    )
    .await
    .unwrap_err();
    assert!(err.is_permanent(), "{err}");
    assert!(!err.to_string().contains("wrong-password"), "{err}");
}

/// What the ingestor's publisher does, small: publishes what arrives on
/// `rx` in batches and keeps what a lost session left unconfirmed for the
/// next one; finishes when `rx` is closed and everything is confirmed.
struct ResendUnconfirmed {
    topology: Topology,
    rx: tokio::sync::mpsc::UnboundedReceiver<OutgoingMessage>,
    unconfirmed: VecDeque<OutgoingMessage>,
    confirmed: Arc<AtomicUsize>,
}

impl ResendUnconfirmed {
    fn new(topology: Topology) -> (Self, tokio::sync::mpsc::UnboundedSender<OutgoingMessage>) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let session = Self {
            topology,
            rx,
            unconfirmed: VecDeque::new(),
            confirmed: Arc::default(),
        };
        (session, tx)
    }
}

impl Session for ResendUnconfirmed {
    const NAME: &'static str = "test publisher";
    const RECONNECTS_METRIC: &'static str = "chatbus_test_reconnects_total";

    async fn run(
        &mut self,
        connection: &lapin::Connection,
        cancel: &CancellationToken,
    ) -> SessionEnd {
        let publisher = match Publisher::open(connection, &self.topology, "chatbus-test").await {
            Ok(p) => p,
            Err(e) => return SessionEnd::lost(e),
        };
        let mut healthy = false;
        loop {
            if self.unconfirmed.is_empty() {
                let next = tokio::select! {
                    () = cancel.cancelled() => return SessionEnd::Finished,
                    next = self.rx.recv() => next,
                };
                let Some(message) = next else {
                    return SessionEnd::Finished;
                };
                self.unconfirmed.push_back(message);
                while let Ok(message) = self.rx.try_recv() {
                    self.unconfirmed.push_back(message);
                }
            }
            let n = self.unconfirmed.len().min(100);
            let batch: Vec<OutgoingMessage> = self.unconfirmed.drain(..n).collect();
            let outcomes = publisher.publish_batch(&batch, 64).await;
            let mut error = None;
            for (message, outcome) in batch.into_iter().zip(outcomes).rev() {
                match outcome {
                    Ok(()) => {
                        self.confirmed.fetch_add(1, Ordering::SeqCst);
                        healthy = true;
                    }
                    Err(e) => {
                        self.unconfirmed.push_front(message);
                        error = Some(e);
                    }
                }
            }
            if let Some(error) = error {
                return SessionEnd::Lost {
                    error: error.into(),
                    healthy,
                };
            }
        }
    }
}

/// Waits until `confirmed` reaches `n`.
async fn confirmed_reach(confirmed: &AtomicUsize, n: usize) {
    within(90, &format!("{n} confirms"), async {
        while confirmed.load(Ordering::SeqCst) < n {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    })
    .await;
}

#[tokio::test]
async fn the_reconnect_loop_resends_what_a_cut_connection_left_unconfirmed() {
    // The broker "goes away" for this client only: its TCP proxy is cut
    // in the middle of the publishing and restored a second later.
    let upstream: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = testkit::proxy::TcpProxy::start(upstream).await;
    let url = proxy.url(&rabbit::amqp_url());
    let conn = rabbit::connect("test-proxy-observer").await;
    let topology = test_topology("proxy");
    let mut sub = Subscriber::builder(unique("q-proxy"))
        .bind("chat.#")
        .prefetch(1000)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();

    let cancel = CancellationToken::new();
    let options = rabbit::connect_options(&url, "test-proxy-publisher");
    let (mut session, tx) = ResendUnconfirmed::new(topology.clone());
    let confirmed = session.confirmed.clone();
    let events = events::twitch_messages(&["a", "b"], 5_000);
    for event in &events {
        tx.send(OutgoingMessage::from_event(event).unwrap())
            .unwrap();
    }
    drop(tx);

    let cutter = async {
        // Cut once the first 100 are confirmed: mid-way, on a live session.
        confirmed_reach(&confirmed, 100).await;
        proxy.cut();
        tokio::time::sleep(Duration::from_secs(1)).await;
        proxy.restore();
    };
    let (published, ()) = tokio::join!(
        within(
            60,
            "batch across a cut",
            amqp::reconnect_loop(&options, &mut session, &cancel)
        ),
        cutter
    );
    published.unwrap();
    assert!(proxy.accepted() >= 2, "the publisher reconnected");

    // At least once: every id arrives; duplicates are allowed.
    let want: BTreeSet<_> = events.iter().map(|e| e.id.clone()).collect();
    let mut got = BTreeSet::new();
    within(60, "all events after the cut", async {
        while got.len() < want.len() {
            let d = sub.next().await.unwrap().unwrap();
            got.insert(d.event.id.clone());
            d.ack().await.unwrap();
        }
    })
    .await;
    assert_eq!(got, want);
}

#[tokio::test]
async fn fault_broker_restart_between_two_publishes_and_the_reconnect_loop_recovers() {
    testkit::init_logging();
    let broker = testkit::fault::FaultBroker::ensure();
    let topology = {
        // Durable names (not auto-delete) so the topology survives the restart.
        let mut t = common::amqp::Topology::named(&unique("test-restart"));
        t.queue_expires = Some(Duration::from_secs(600));
        t
    };
    let queue = unique("q-restart");
    {
        let conn = rabbit::connect_to(broker.amqp_url(), "test-restart-setup").await;
        let sub = Subscriber::builder(&queue)
            .bind("chat.#")
            .expires(Duration::from_secs(600))
            .build(&conn, &topology)
            .await
            .unwrap();
        sub.close().await;
        let _ = conn.close(200, "setup done".into()).await;
    }
    let cancel = CancellationToken::new();
    let options = rabbit::connect_options(broker.amqp_url(), "test-restart-publisher");
    let (mut session, tx) = ResendUnconfirmed::new(topology.clone());
    let confirmed = session.confirmed.clone();
    let first = OutgoingMessage::from_event(&events::message("twitch", "r", 1)).unwrap();
    let second = OutgoingMessage::from_event(&events::message("twitch", "r", 2)).unwrap();
    let publishing = async {
        tx.send(first.clone()).unwrap();
        confirmed_reach(&confirmed, 1).await;
        broker.stop_app();
        let restarter = tokio::task::spawn_blocking(move || {
            std::thread::sleep(Duration::from_secs(2));
            broker.start_app();
            broker
        });
        // Publishing while the broker is down waits, reconnects and succeeds.
        tx.send(second.clone()).unwrap();
        confirmed_reach(&confirmed, 2).await;
        drop(tx);
        restarter.await.unwrap()
    };
    let (published, broker) = tokio::join!(
        within(
            90,
            "publish across a broker restart",
            amqp::reconnect_loop(&options, &mut session, &cancel)
        ),
        publishing
    );
    published.unwrap();

    let conn = rabbit::connect_to(broker.amqp_url(), "test-restart-check").await;
    let got = drain_queue(&conn, &queue, 2, 30).await;
    let ids: BTreeSet<_> = got
        .iter()
        .map(|m| ChatEvent::from_json(&m.data).unwrap().id)
        .collect();
    assert_eq!(
        ids,
        BTreeSet::from([first.message_id.clone(), second.message_id.clone()])
    );
}

#[tokio::test]
async fn channels_closed_before_their_connection_leave_it_closed_not_errored() {
    // A dropped channel is closed by lapin in the background; when the
    // connection closes first, that close fails and lapin marks the
    // connection errored and logs "Connection error" at ERROR. Dropping the
    // subscriber instead of closing it made the connection errored in 20 of
    // 20 tries.
    let topology = test_topology("closing");
    for _ in 0..5 {
        let conn = rabbit::connect("chatbus-test-closing").await;
        let sub = Subscriber::builder(unique("closing-q"))
            .auto_delete(true)
            .durable(false)
            .bind("chat.#")
            .build(&conn, &topology)
            .await
            .unwrap();
        let publisher = Publisher::open(&conn, &topology, "chatbus-test")
            .await
            .unwrap();
        sub.close().await;
        publisher.close().await;
        common::amqp::close(&conn, "bye").await;
        // The background close, had there been one, fails within this.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(conn.status().closed(), "closed");
        assert!(!conn.status().errored(), "not errored");
    }
}

fn encode_all(events: &[ChatEvent]) -> Vec<OutgoingMessage> {
    events
        .iter()
        .map(|e| OutgoingMessage::from_event(e).unwrap())
        .collect()
}

#[tokio::test]
async fn batches_keep_their_order_and_report_every_message() {
    let conn = rabbit::connect("test-batch-order").await;
    let topology = test_topology("batch-order");
    let mut sub = Subscriber::builder(unique("q-batch-order"))
        .bind("chat.#")
        .prefetch(1000)
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap();
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let events = events::twitch_messages(&["a", "b", "c"], 6_000);
    let messages = encode_all(&events);
    // Three batches queued back to back, confirms awaited afterwards: the
    // second and third are queued while the first is still unconfirmed.
    let mut pending = Vec::new();
    for chunk in messages.chunks(2_000) {
        pending.push(publisher.send_batch(chunk).await);
    }
    for batch in pending {
        assert_eq!(batch.len(), 2_000);
        let outcomes = within(60, "confirms", batch.wait()).await;
        assert!(outcomes.iter().all(Result::is_ok), "every message acked");
    }
    // One channel, one queue: the queue holds them in publish order.
    let got = receive_all(&mut sub, events.len(), 60).await;
    let ids: Vec<&str> = got.iter().map(|d| d.event.id.as_str()).collect();
    let want: Vec<&str> = events.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, want);
    // publish_batch pipelines the same way with a small window.
    let more = encode_all(&events::twitch_messages(&["a"], 1_000));
    let outcomes = within(60, "publish_batch", publisher.publish_batch(&more, 64)).await;
    assert_eq!(outcomes.len(), 1_000);
    assert!(outcomes.iter().all(Result::is_ok));
    let got = receive_all(&mut sub, more.len(), 60).await;
    assert!(
        got.iter()
            .map(|d| d.event.id.as_str())
            .eq(more.iter().map(|m| m.message_id.as_str()))
    );
}

#[tokio::test]
async fn a_nack_fails_only_the_messages_the_broker_refused() {
    // A queue that holds 5 messages and refuses more (`reject-publish`):
    // the broker nacks messages 6 to 10 of a batch and acks the rest.
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::{AMQPValue, FieldTable};
    let conn = rabbit::connect("test-batch-nack").await;
    let topology = test_topology("batch-nack");
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let queue = unique("q-batch-nack");
    let ch = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-max-length".into(), AMQPValue::LongInt(5));
    args.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongInt(600_000));
    ch.queue_declare(queue.as_str().into(), QueueDeclareOptions::default(), args)
        .await
        .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        topology.exchange.as_str().into(),
        "chat.#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .unwrap();

    let messages = encode_all(&events::twitch_messages(&["a"], 10));
    let outcomes = within(30, "confirms", publisher.send_batch(&messages).await.wait()).await;
    for (i, outcome) in outcomes.iter().enumerate() {
        match (i < 5, outcome) {
            (true, Ok(())) => {}
            (false, Err(common::amqp::AmqpError::Nacked { message_id })) => {
                assert_eq!(message_id, &messages[i].message_id);
            }
            _ => panic!("message {i}: {outcome:?}"),
        }
    }
    // A nack is the broker's answer, not a dead channel: it stays usable.
    assert!(publisher.is_open());
    assert!(!outcomes[9].as_ref().unwrap_err().needs_reconnect());
    let got = drain_queue(&conn, &queue, 5, 30).await;
    let ids: Vec<String> = got
        .iter()
        .map(|m| ChatEvent::from_json(&m.data).unwrap().id)
        .collect();
    let want: Vec<String> = messages[..5].iter().map(|m| m.message_id.clone()).collect();
    assert_eq!(ids, want);
}

#[tokio::test]
async fn a_connection_cut_mid_batch_fails_the_unconfirmed_rest_and_nothing_else() {
    let messages = encode_all(&events::twitch_messages(&["a", "b"], 30_000));
    // When the first confirm arrives depends on the machine's load, so the
    // cut moves until it falls inside the batch: later when nothing was
    // confirmed yet, earlier when everything already was.
    let mut delay = Duration::from_millis(150);
    for _ in 0..8 {
        let confirmed = publish_across_a_cut(&messages, delay).await;
        if confirmed == 0 {
            delay *= 2;
        } else if confirmed == messages.len() {
            delay /= 3;
        } else {
            return;
        }
    }
    panic!("no cut fell inside the batch (last delay {delay:?})");
}

/// Publishes `messages` as one batch through a proxy that is cut after
/// `delay`, checks what the outcomes say against the queue, and returns how
/// many were reported confirmed.
async fn publish_across_a_cut(messages: &[OutgoingMessage], delay: Duration) -> usize {
    let upstream: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = testkit::proxy::TcpProxy::start(upstream).await;
    let conn = rabbit::connect("test-batch-cut-observer").await;
    let topology = test_topology("batch-cut");
    let queue = unique("q-batch-cut");
    Subscriber::builder(&queue)
        .bind("chat.#")
        .expires(Duration::from_secs(600))
        .build(&conn, &topology)
        .await
        .unwrap()
        .close()
        .await;
    let proxied = rabbit::connect_to(&proxy.url(&rabbit::amqp_url()), "test-batch-cut").await;
    let publisher = Publisher::open(&proxied, &topology, "chatbus-test")
        .await
        .unwrap();
    let cutter = async {
        tokio::time::sleep(delay).await;
        proxy.cut();
    };
    let (outcomes, ()) = tokio::join!(
        within(
            60,
            "publish across a cut",
            publisher.publish_batch(messages, 2_048)
        ),
        cutter
    );
    assert_eq!(outcomes.len(), messages.len());
    let confirmed = outcomes.iter().take_while(|o| o.is_ok()).count();
    // Confirms come in order: once one fails, every later one has failed
    // too, each with an error that asks for a reconnect.
    for outcome in &outcomes[confirmed..] {
        let e = outcome
            .as_ref()
            .expect_err("no confirm after the first failure");
        assert!(e.needs_reconnect(), "{e}");
    }
    // Everything reported confirmed is in the queue, in order (the broker
    // may hold more: messages whose confirm the cut lost).
    let in_queue = rabbit::queue_depth(&conn.create_channel().await.unwrap(), &queue).await;
    assert!(in_queue as usize >= confirmed, "{in_queue} < {confirmed}");
    let got = drain_queue(&conn, &queue, in_queue as usize, 60).await;
    for (m, want) in got.iter().zip(&messages[..confirmed]) {
        assert_eq!(ChatEvent::from_json(&m.data).unwrap().id, want.message_id);
    }
    confirmed
}

#[tokio::test]
async fn a_silent_connection_times_out_every_unconfirmed_message_of_a_batch() {
    let upstream: std::net::SocketAddr = "127.0.0.1:5672".parse().unwrap();
    let proxy = testkit::proxy::TcpProxy::start(upstream).await;
    let topology = test_topology("batch-silent");
    let conn = rabbit::connect_to(&proxy.url(&rabbit::amqp_url()), "test-batch-silent").await;
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let first = encode_all(&events::twitch_messages(&["a"], 100));
    let outcomes = within(30, "first batch", publisher.send_batch(&first).await.wait()).await;
    assert!(outcomes.iter().all(Result::is_ok));
    // The broker goes silent: no close, no reset, no confirms.
    proxy.freeze_connections();
    let second = encode_all(&events::twitch_messages(&["a"], 100));
    let pending = within(30, "written to the socket", publisher.send_batch(&second)).await;
    let started = std::time::Instant::now();
    let outcomes = pending.wait_timeout(Duration::from_secs(1)).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(outcomes.len(), 100);
    for outcome in outcomes {
        match outcome {
            Err(e @ common::amqp::AmqpError::Timeout { .. }) => assert!(e.needs_reconnect()),
            other => panic!("{other:?}"),
        }
    }
    proxy.cut();
}

#[tokio::test]
async fn a_command_nobody_answers_is_unknown_after_its_expiry_and_one_nobody_takes_is_no_sender() {
    use common::amqp::commands::{CommandClient, RECEIPT_GRACE};
    use common::command::{CommandAction, ReceiptStatus};
    use lapin::options::{ExchangeDeleteOptions, QueueBindOptions, QueueDeleteOptions};

    let conn = rabbit::connect("test-command-client").await;
    let exchange = unique("test-cmd-client");
    let commands = CommandClient::open(&conn, &exchange, "test").await.unwrap();
    let say = CommandAction::Send {
        text: "hi".into(),
        reply_to: None,
    };
    // Nobody is bound: the broker returns it.
    let r = commands
        .execute(commands.command("twitch", "somewhere", say.clone()))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (ReceiptStatus::Rejected, Some("no_sender"))
    );
    // A queue takes it, but no sender ever answers.
    let ch = conn.create_channel().await.unwrap();
    let queue = unique("test-cmd-client-q");
    amqp::declare_queue(
        &conn,
        &queue,
        &amqp::QueueSpec {
            durable: false,
            auto_delete: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    ch.queue_bind(
        queue.as_str().into(),
        exchange.as_str().into(),
        "twitch.#".into(),
        QueueBindOptions::default(),
        lapin::types::FieldTable::default(),
    )
    .await
    .unwrap();
    let mut command = commands.command("twitch", "somewhere", say);
    command.expires_at = Some(command.issued_at + chrono::Duration::milliseconds(200));
    let started = std::time::Instant::now();
    let r = within(30, "the client's own answer", commands.execute(command))
        .await
        .unwrap();
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (ReceiptStatus::Unknown, Some("no_receipt"))
    );
    assert!(started.elapsed() >= RECEIPT_GRACE);
    let _ = ch
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    for x in [exchange.clone(), format!("{exchange}.dlx")] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = ch
        .queue_delete(
            format!("{exchange}.dead-letter").as_str().into(),
            QueueDeleteOptions::default(),
        )
        .await;
}

#[tokio::test]
async fn scrubbing_a_queue_drops_the_subjects_events_and_puts_the_rest_back_unchanged() {
    use common::amqp::scrub::{HEADER_EXCHANGE, HEADER_ROUTING_KEY, ScrubReport, scrub_queue};
    use common::privacy::Subject;
    use lapin::options::{QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions};
    use lapin::types::{AMQPValue, FieldTable};

    testkit::init_logging();
    let conn = rabbit::connect("test-scrub").await;
    let topology = test_topology("scrub");
    topology.declare(&conn).await.unwrap();
    // A queue of the test's own, like chat.dead-letter: durable, bound to
    // the test's exchange with `#`, expiring should the test die.
    let queue = unique("test-scrub-q");
    let channel = conn.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert("x-expires".into(), AMQPValue::LongUInt(600_000));
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.as_str().into(),
            topology.exchange.as_str().into(),
            "#".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();

    // 50 events, every fifth by the user who asked to be forgotten; and
    // one body that is no ChatEvent, with a header of its own.
    let subject = Subject::User {
        platform: "twitch".into(),
        user_id: "forget-me".into(),
    };
    let publisher = Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let mut all = Vec::new();
    for n in 0..50 {
        let mut e = events::message("twitch", "scrubbed", n);
        if n % 5 == 0 {
            e.author.as_mut().unwrap().id = "forget-me".into();
        }
        publisher.publish(&e).await.unwrap();
        all.push(e);
    }
    let mut custom = FieldTable::default();
    custom.insert(
        "x-chatbus-reason".into(),
        AMQPValue::LongString("poison".into()),
    );
    let poison = b"\xff not json".to_vec();
    publisher
        .send_raw(
            &topology.exchange,
            "chat.twitch.scrubbed",
            &poison,
            BasicProperties::default()
                .with_message_id("poison-1".into())
                .with_headers(custom),
        )
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    assert_eq!(rabbit::queue_depth(&channel, &queue).await, 51);

    let report = within(
        60,
        "scrub",
        scrub_queue(&conn, &queue, |e| subject.covers(e)),
    )
    .await
    .unwrap();
    assert_eq!(
        report,
        ScrubReport {
            examined: 51,
            dropped: 10,
            kept: 41,
            undecodable: 1,
        }
    );
    assert_eq!(rabbit::queue_depth(&channel, &queue).await, 41);

    // What is left: everything else, once, in the order it came, with its
    // properties and headers, and where it was first published.
    let left = drain_queue(&conn, &queue, 41, 10).await;
    let expected: Vec<&str> = all
        .iter()
        .filter(|e| !subject.covers(e))
        .map(|e| e.id.as_str())
        .chain(["poison-1"])
        .collect();
    let got: Vec<String> = left
        .iter()
        .map(|d| d.properties.message_id().as_ref().unwrap().to_string())
        .collect();
    assert_eq!(got, expected);
    let by_id: BTreeMap<&str, &ChatEvent> = all.iter().map(|e| (e.id.as_str(), e)).collect();
    for d in &left {
        let p = &d.properties;
        let h = p.headers().as_ref();
        // Where it was first published, whatever the copy's delivery says.
        assert_eq!(
            header_str(h, HEADER_ROUTING_KEY).unwrap(),
            "chat.twitch.scrubbed"
        );
        assert_eq!(header_str(h, HEADER_EXCHANGE).unwrap(), topology.exchange);
        if d.data == poison {
            assert_eq!(header_str(h, "x-chatbus-reason").unwrap(), "poison");
            continue;
        }
        let event = ChatEvent::from_json(&d.data).unwrap();
        assert_eq!(
            &&event,
            by_id.get(event.id.as_str()).unwrap(),
            "body unchanged"
        );
        assert_ne!(event.author.as_ref().unwrap().id, "forget-me");
        assert_eq!(p.message_id().as_ref().unwrap().as_str(), event.id);
        assert_eq!(
            p.content_type().as_ref().unwrap().as_str(),
            amqp::CONTENT_TYPE
        );
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.kind().as_ref().unwrap().as_str(), "message");
        assert_eq!(p.app_id().as_ref().unwrap().as_str(), "chatbus-test");
        assert_eq!(*p.timestamp(), Some(event.sent_at.timestamp() as u64));
        assert_eq!(header_str(h, headers::PLATFORM).unwrap(), "twitch");
        assert_eq!(header_str(h, headers::CHANNEL).unwrap(), "scrubbed");
        assert_eq!(header_str(h, headers::KIND).unwrap(), "message");
    }

    // A second scrub of nothing matching changes nothing, and an empty
    // queue is a report of zeros.
    let report = scrub_queue(&conn, &queue, |e| subject.covers(e))
        .await
        .unwrap();
    assert_eq!(report, ScrubReport::default());
    // A queue that does not exist is an error, not an empty report.
    assert!(
        scrub_queue(&conn, &unique("test-scrub-missing"), |_| true)
            .await
            .is_err()
    );

    let cleanup = conn.create_channel().await.unwrap();
    let _ = cleanup
        .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
        .await;
    amqp::close_channel(&cleanup, "cleaned up").await;
    amqp::close(&conn, "test over").await;
}

#[tokio::test]
async fn the_privacy_follower_replays_from_the_start_loads_at_its_own_sync_and_resumes_after_a_cut()
{
    use common::amqp::privacy;
    use common::privacy::{PrivacyAction, PrivacyNotice, Subject};
    use lapin::options::QueueDeleteOptions;

    testkit::init_logging();
    let conn = rabbit::connect("test-privacy-stream").await;
    let stream = unique("test-privacy-follow");
    let user = |id: &str| {
        Some(Subject::User {
            platform: "twitch".into(),
            user_id: id.into(),
        })
    };
    // Before the follower starts: an opt-out, another service's sync, a
    // second opt-out and the first user's opt-in.
    let before = [
        PrivacyNotice::new(PrivacyAction::OptOut, user("1"), "test"),
        PrivacyNotice::new(PrivacyAction::Sync, None, "another-service"),
        PrivacyNotice::new(PrivacyAction::OptOut, user("2"), "test"),
        PrivacyNotice::new(PrivacyAction::OptIn, user("1"), "test"),
    ];
    for notice in &before {
        privacy::publish(&conn, &stream, notice).await.unwrap();
    }

    // The follower's own connection goes through a proxy, to be cut.
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let options = rabbit::connect_options(&proxy.url(&rabbit::amqp_url()), "test-privacy-follower");
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let cancel = CancellationToken::new();
    let (feed, task) = privacy::follow(
        options,
        stream.clone(),
        "test".into(),
        Some(tx),
        cancel.clone(),
    );
    assert!(!feed.is_loaded(), "nothing read yet");
    within(30, "the list loaded", feed.loaded()).await;
    // Loaded means every notice before its own sync was applied, in order
    // (another service's sync is none of its business).
    let mut applied = Vec::new();
    while let Ok(notice) = rx.try_recv() {
        applied.push(notice.id);
    }
    let want: Vec<_> = [&before[0], &before[2], &before[3]]
        .iter()
        .map(|n| n.id.clone())
        .collect();
    assert_eq!(applied, want);
    let users = |feed: &privacy::PrivacyFeed| {
        let mut u: Vec<(String, String)> = feed.snapshot().users().cloned().collect();
        u.sort();
        u
    };
    assert_eq!(users(&feed), [("twitch".to_owned(), "2".to_owned())]);

    // The connection is lost; the follower reconnects and resumes after
    // the last notice it read: the next one it applies is the new one.
    proxy.reset_connections();
    testkit::eventually(30, "the follower reconnected", || async {
        (proxy.accepted() >= 2).then_some(())
    })
    .await;
    let after = PrivacyNotice::new(PrivacyAction::OptOut, user("3"), "test");
    privacy::publish(&conn, &stream, &after).await.unwrap();
    let next = within(30, "the notice after the cut", rx.recv())
        .await
        .expect("the follower runs");
    assert_eq!(next.id, after.id, "nothing read again");
    assert!(feed.is_loaded());
    assert_eq!(
        users(&feed),
        [
            ("twitch".to_owned(), "2".to_owned()),
            ("twitch".to_owned(), "3".to_owned())
        ]
    );
    assert!(rx.try_recv().is_err(), "nothing else");

    cancel.cancel();
    within(30, "the follower stops", task)
        .await
        .unwrap()
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    ch.queue_delete(stream.as_str().into(), QueueDeleteOptions::default())
        .await
        .unwrap();
    common::amqp::close(&conn, "test done").await;
}
