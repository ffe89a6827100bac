//! Crash drills with the real binary: SIGKILL in the middle of a batch.

use std::process::Command;
use std::time::Duration;

use common::amqp::Topology;
use testkit::process::{Echo, ServiceProcess};
use testkit::rabbit::{self, unique};
use testkit::{events, within};

use crate::helpers::{StoreProbe, on_both_stores};

/// Starts the consumer binary; returns once it logged its address.
fn start(exchange: &str, queue: &str, db_url: &str) -> ServiceProcess {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_consumer"));
    cmd.env_clear()
        .current_dir(std::env::temp_dir())
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", exchange)
        .env("CONSUMER_QUEUE", queue)
        .env("DATABASE_URL", db_url)
        .env("CONSUMER_HTTP_ADDR", "127.0.0.1:0")
        .env("CONSUMER_BATCH_SIZE", "1000")
        .env("CONSUMER_PREFETCH", "2000")
        .env("CONSUMER_WS_SEND_QUEUE", "1000")
        .env("CONSUMER_BATCH_WAIT", "200ms")
        // Not the shared chat.privacy stream (see helpers::test_config).
        .env("PRIVACY_STREAM", "")
        .env("RUST_LOG", "info");
    ServiceProcess::spawn(cmd, "consumer listening", Echo::Keep).expect("the consumer starts")
}

on_both_stores!(fault_sigkill_mid_batch_then_restart_loses_nothing_and_stores_nothing_twice);

async fn fault_sigkill_mid_batch_then_restart_loses_nothing_and_stores_nothing_twice(
    backend: &str,
) {
    testkit::init_logging();
    // The binary declares the named (durable) topology; so does the test,
    // and it deletes it at the end.
    let exchange = unique("test-crash");
    let topology = Topology::named(&exchange);
    let queue = unique("test-crash-q");
    rabbit::declare_consumer_queue(&topology, &queue).await;
    let db = testkit::pg::StoreDb::new(backend == "postgres").await;
    let db_url = db.url();

    const N: i64 = 20_000;
    let conn = rabbit::connect("chatbus-test-crash").await;
    let publisher = common::amqp::Publisher::open(&conn, &topology, "chatbus-test")
        .await
        .unwrap();
    let events = events::twitch_messages(&["c1", "c2", "c3", "c4"], N as usize);
    let messages: Vec<_> = events
        .iter()
        .map(|e| common::amqp::OutgoingMessage::from_event(e).unwrap())
        .collect();
    within(60, "publish", publisher.publish_all(&messages, 1024))
        .await
        .unwrap();

    // Kill it three times while it is busy (some batches committed, more in
    // flight), each time a random moment after a commit was seen, so the
    // kills land anywhere in the batch cycle.
    let mut at_kill = 0;
    let mut pool = None;
    for (round, threshold) in [3_000, 8_000, 13_000].into_iter().enumerate() {
        let mut running = start(&exchange, &queue, &db_url);
        if pool.is_none() {
            // The database is there once the first process opened the store.
            pool = Some(
                testkit::eventually(30, "the database", || async {
                    let ready = db.sqlite_path().is_none_or(|p| p.exists());
                    if !ready {
                        return None;
                    }
                    let probe = StoreProbe::open(&db_url).await;
                    probe.rows_with_id("").await.map(|_| probe)
                })
                .await,
            );
        }
        let p = pool.as_ref().expect("pool");
        testkit::eventually(60, &format!("{threshold} events stored"), || async {
            let n = p.count().await;
            (n >= threshold).then_some(n)
        })
        .await;
        let jitter = u64::from(uuid::Uuid::new_v4().as_bytes()[0]) * 150 / 255;
        tokio::time::sleep(Duration::from_millis(jitter)).await;
        running.kill().expect("SIGKILL");
        // A COMMIT the process sent just before it died still completes on
        // a PostgreSQL server: the count is read once it has settled.
        at_kill = testkit::eventually(30, "the count settles after the kill", || async {
            let before = p.count().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let after = p.count().await;
            (before == after).then_some(after)
        })
        .await;
        tracing::info!(round, at_kill, jitter, "killed");
        assert!(at_kill < N, "killed before the end ({at_kill})");
    }
    let pool = pool.expect("pool");

    let mut second = start(&exchange, &queue, &db_url);
    // A marker behind everything still queued: once it is stored, every
    // event the broker still had has been through the store.
    let marker = crate::helpers::message("c1", "marker", "after the crashes");
    publisher
        .send(&common::amqp::OutgoingMessage::from_event(&marker).unwrap())
        .await
        .unwrap()
        .wait()
        .await
        .unwrap();
    testkit::eventually(120, "the marker is stored after the restart", || async {
        (pool.rows_with_id(&marker.id).await? == 1).then_some(())
    })
    .await;
    assert_eq!(pool.count().await, N + 1, "nothing lost, nothing twice");
    assert_eq!(pool.count_distinct().await, N + 1);
    let redelivered =
        testkit::metrics::scrape(&second.addr, "chatbus_consumer_redelivered_total").await;
    assert!(
        redelivered > 0.0,
        "the kill left deliveries unacked (mid-batch), which came back"
    );
    let stored_by_second =
        testkit::metrics::scrape(&second.addr, "chatbus_consumer_events_stored_total").await;
    let duplicates =
        testkit::metrics::scrape(&second.addr, "chatbus_consumer_duplicates_total").await;
    assert_eq!(stored_by_second as i64, N + 1 - at_kill);
    tracing::info!(at_kill, redelivered, duplicates, "crash drill");

    // A clean stop on SIGTERM.
    let status = second.terminate(20).await.unwrap();
    assert!(status.success(), "{status:?}");
    let errors = second.errors();
    assert!(
        errors.is_empty(),
        "a clean run and stop log no error: {errors:#?}"
    );

    let commits = consumer::commit_signal::exchange_for(&queue);
    rabbit::delete_consumer_objects(&conn, &topology, &queue, &commits).await;
    pool.close().await;
    db.finish().await;
}

#[tokio::test]
async fn fault_postgres_connection_loss_mid_stream_is_retried_without_loss() {
    // The consumer reaches PostgreSQL through a proxy this test cuts: every
    // connection drops and new ones are refused for a while, as during a
    // restart or a failover.
    let pg = testkit::pg::TestDatabase::create().await;
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let via_proxy = proxy.url(&pg.url);
    assert_ne!(via_proxy, pg.url, "the test server is on 127.0.0.1:5432");
    let app = crate::helpers::TestApp::spawn_with_db(via_proxy, |c| {
        c.consumer_batch_size = 200;
    })
    .await;
    let events: Vec<_> = (0..3_000)
        .map(|n| crate::helpers::message(["p1", "p2"][n % 2], "u", &format!("pg{n}")))
        .collect();
    app.publish(&events[..1_000]).await;
    app.wait_stored(1_000, 60).await;
    proxy.cut();
    // Published while the database is away: they wait in the queue, and
    // the batch in hand is retried.
    app.publish(&events[1_000..2_000]).await;
    let error = testkit::eventually(30, "readyz reporting the store failing", || async {
        let (_, r) = app.get_json("/readyz").await;
        (r["store_ok"] == false && r["ready"] == false).then(|| r["last_error"].clone())
    })
    .await;
    assert!(error.is_string(), "it says why: {error}");
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.restore();
    app.publish(&events[2_000..]).await;
    app.wait_stored(3_000, 120).await;
    let probe = StoreProbe::open(&pg.url).await;
    assert_eq!(probe.count().await, 3_000, "nothing lost, nothing twice");
    assert_eq!(probe.count_distinct().await, 3_000);
    probe.close().await;
    testkit::eventually(30, "ready again", || async {
        (app.get_json("/readyz").await.1["ready"] == true).then_some(())
    })
    .await;
    app.stop().await;
    pg.drop_now().await;
}
