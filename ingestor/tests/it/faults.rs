//! IRC and broker faults: dropped connections, RECONNECT, the broker away
//! for 10 s mid-flood, and a kill -9 with a non-empty spool.

use std::collections::BTreeSet;
use std::process::Stdio;
use std::time::Duration;

use common::amqp::Subscriber;
use common::schema::{EventBody, EventKind};
use testkit::eventually;
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

use crate::helpers::*;

/// Sends lines in small batches and returns the ids the server really
/// delivered to a connection.
async fn send_batches(fake: &FakeIrc, lines: &[String], batch: usize, pause: Duration) -> usize {
    let mut delivered = 0;
    for chunk in lines.chunks(batch) {
        delivered += fake.send_lines(chunk);
        tokio::time::sleep(pause).await;
    }
    delivered
}

async fn irc_fault_drill(fault: &str) {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-ircfault");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(3);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &exchange,
        &chans,
        &spool,
    ))
    .await;
    fake.wait_joined(&refs, 30).await;

    let before = privmsgs(&chans, 150, "before");
    assert_eq!(fake.send_lines(&before), 150);
    tap.collect_until(30, "first half", |g| {
        g.iter()
            .filter(|d| d.event.kind() == EventKind::Message)
            .count()
            >= 150
    })
    .await;

    match fault {
        "drop" => fake.drop_connections(),
        "reconnect" => fake.send_reconnect(),
        _ => unreachable!(),
    }
    // The client reconnects and re-joins every channel by itself.
    eventually(30, "re-joined on a new connection", || async {
        let joins = fake.received_command("JOIN");
        (joins.len() >= 6 && refs.iter().all(|c| fake.joined_channels().contains(*c))).then_some(())
    })
    .await;
    let after = privmsgs(&chans, 150, "after");
    assert_eq!(
        fake.send_lines(&after),
        150,
        "every line reached the new connection"
    );

    let got = tap
        .collect_until(30, "second half and gaps", |g| {
            let after = g
                .iter()
                .filter(|d| d.event.id.starts_with("after-"))
                .count();
            let gaps = g
                .iter()
                .filter(|d| d.event.kind() == EventKind::Gap)
                .count();
            after >= 150 && gaps >= 3
        })
        .await;
    let messages: Vec<&str> = got
        .iter()
        .filter(|d| d.event.kind() == EventKind::Message)
        .map(|d| d.event.id.as_str())
        .collect();
    let unique_ids: BTreeSet<&str> = messages.iter().copied().collect();
    assert_eq!(unique_ids.len(), 150, "every message after the fault once");
    assert_eq!(messages.len(), 150);
    let reason = if fault == "drop" {
        "disconnect"
    } else {
        "reconnect_requested"
    };
    let mut gap_channels = BTreeSet::new();
    for d in got.iter().filter(|d| d.event.kind() == EventKind::Gap) {
        let EventBody::Gap(g) = &d.event.body else {
            unreachable!()
        };
        assert_eq!(g.reason, reason);
        assert!(g.started_at <= g.ended_at);
        assert_eq!(d.routing_key, format!("chat.twitch.{}", d.event.channel));
        gap_channels.insert(d.event.channel.clone());
    }
    assert_eq!(
        gap_channels,
        chans.iter().cloned().collect(),
        "one gap per affected channel"
    );
    assert!(
        tap.drain_quiet(Duration::from_millis(300))
            .await
            .iter()
            .all(|d| d.event.kind() != EventKind::Gap)
    );
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_dropped_irc_connection_is_rejoined_with_gap_events_and_the_flow_continues() {
    irc_fault_drill("drop").await;
}

#[tokio::test]
async fn a_reconnect_command_is_followed_with_gap_events_and_the_flow_continues() {
    irc_fault_drill("reconnect").await;
}

#[tokio::test]
async fn fault_broker_away_for_ten_seconds_mid_flood_loses_nothing() {
    let broker = testkit::fault::FaultBroker::ensure();
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-outage");
    let queue = unique("test-outage-q");
    let topology = common::amqp::Topology::named(&exchange);
    async fn subscribe(
        conn: &lapin::Connection,
        queue: &str,
        topology: &common::amqp::Topology,
    ) -> Subscriber {
        Subscriber::builder(queue)
            .bind("chat.#")
            .prefetch(2000)
            .expires(Duration::from_secs(600))
            .build(conn, topology)
            .await
            .unwrap()
    }
    {
        let conn = rabbit::connect_to(broker.amqp_url(), "test-outage-setup").await;
        drop(subscribe(&conn, &queue, &topology).await);
        let _ = conn.close(200, "setup".into()).await;
    }
    let chans = channels(5);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(&fake, broker.amqp_url(), &exchange, &chans, &spool)).await;
    fake.wait_joined(&refs, 30).await;

    // ~16 s of chat at 1,000 lines/s; the broker is away from t=3s to t=13s.
    let lines = privmsgs(&chans, 16_000, "flood");
    let flood = send_batches(&fake, &lines, 50, Duration::from_millis(50));
    let outage = async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let b = tokio::task::spawn_blocking(move || {
            broker.stop_app();
            std::thread::sleep(Duration::from_secs(10));
            broker.start_app();
            broker
        });
        b.await.unwrap()
    };
    let (delivered, broker) = tokio::join!(flood, outage);
    assert_eq!(delivered, lines.len());

    let mut conn = rabbit::connect_to(broker.amqp_url(), "test-outage-check").await;
    let mut sub = subscribe(&conn, &queue, &topology).await;
    let want: BTreeSet<String> = (0..lines.len()).map(|i| format!("flood-{i}")).collect();
    let mut got = BTreeSet::new();
    let mut copies = 0usize;
    // Generous: on a loaded 2-core machine the backlog takes a while.
    let secs = std::env::var("CHATBUS_OUTAGE_WAIT")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(240);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !want.is_subset(&got) {
        let next = tokio::time::timeout_at(deadline, sub.next()).await;
        let d = match next {
            Ok(Some(Ok(d))) => d,
            Ok(Some(Err(e))) => {
                // The test's own reader lost its connection (the node was
                // just restarted): read on from a new one; the queue is durable.
                eprintln!("test reader reconnecting: {e}");
                conn = rabbit::connect_to(broker.amqp_url(), "test-outage-check").await;
                sub = subscribe(&conn, &queue, &topology).await;
                continue;
            }
            _ => {
                let page = ing.get("/metrics").await.1;
                panic!(
                    "after the outage {} of {} messages arrived; ingestor: unconfirmed={} confirmed={} dropped={} reconnects={}",
                    got.len(),
                    want.len(),
                    metric_value(&page, "chatbus_ingestor_outbox_unconfirmed"),
                    metric_value(&page, "chatbus_ingestor_events_confirmed_total"),
                    metric_value(&page, "chatbus_ingestor_events_dropped_total"),
                    metric_value(&page, "chatbus_ingestor_amqp_reconnects_total"),
                );
            }
        };
        if d.event.kind() == EventKind::Message {
            copies += 1;
            got.insert(d.event.id.clone());
        }
        if let Err(e) = d.ack().await {
            eprintln!("test reader ack failed ({e}); the message will come again");
        }
    }
    assert_eq!(got.len(), want.len(), "nothing lost");
    eprintln!(
        "outage drill: {} messages, {} copies received ({} duplicates)",
        want.len(),
        copies,
        copies - want.len()
    );
    let page = ing.get("/metrics").await.1;
    assert!(
        metric_value(&page, "chatbus_ingestor_amqp_reconnects_total") >= 1.0,
        "the publisher reconnected"
    );
    assert_eq!(
        metric_value(&page, "chatbus_ingestor_events_dropped_total"),
        0.0
    );
    ing.stop().await;
    rabbit::delete_topology(&conn, &topology).await;
    let _ = sub;
}

fn spawn_ingestor(envs: &[(&str, String)]) -> tokio::process::Child {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"));
    cmd.env_clear()
        .env("RUST_LOG", "warn,ingestor=info")
        .current_dir(std::env::temp_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn the ingestor binary")
}

async fn readyz(port: u16) -> Option<serde_json::Value> {
    let res = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    res.json().await.ok()
}

#[tokio::test]
async fn an_ingestor_killed_with_a_full_spool_publishes_it_after_restart() {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-kill");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    // The broker is unreachable (cut proxy) while the ingestor reads chat.
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    proxy.cut();
    let chans = channels(2);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let port = testkit::free_port();
    let envs = vec![
        ("AMQP_URL", proxy.url(&rabbit::amqp_url())),
        ("CHAT_EXCHANGE", exchange.clone()),
        ("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("TWITCH_IRC_ADDR", fake.addr().to_string()),
        ("TWITCH_IRC_TLS", "false".into()),
        ("TWITCH_CHANNELS", chans.join(",")),
        ("SPOOL_DIR", spool.display().to_string()),
        // A small memory cache: most of the backlog lives only on disk.
        ("OUTBOX_MEMORY_EVENTS", "100".into()),
        ("AMQP_RECONNECT_MAX_DELAY", "500ms".into()),
    ];
    let mut first = spawn_ingestor(&envs);
    fake.wait_joined(&refs, 30).await;
    let lines = privmsgs(&chans, 3_000, "spooled");
    assert_eq!(fake.send_lines(&lines), lines.len());
    // Wait until all 3,000 (+2 ROOMSTATEs) are in the spool, unconfirmed.
    eventually(60, "everything spooled", || async {
        let r = readyz(port).await?;
        (r["outbox_unconfirmed"].as_u64()? >= 3_002).then_some(())
    })
    .await;
    first.start_kill().unwrap(); // SIGKILL: no shutdown code runs.
    first.wait().await.unwrap();
    assert!(
        std::fs::read_dir(&spool).unwrap().count() > 0,
        "the spool is on disk"
    );

    proxy.restore();
    let mut second = spawn_ingestor(&envs);
    let got = tap
        .collect_until(90, "the spooled events after restart", |g| {
            ids_with_prefix(g, "spooled-").len() >= 3_000
        })
        .await;
    let ids: BTreeSet<&str> = got
        .iter()
        .filter(|d| d.event.kind() == EventKind::Message)
        .map(|d| d.event.id.as_str())
        .collect();
    assert_eq!(ids.len(), 3_000);
    // Published in order per channel (the spool is replayed in order).
    for ch in &chans {
        let seq: Vec<usize> = got
            .iter()
            .filter(|d| d.event.channel == *ch && d.event.kind() == EventKind::Message)
            .map(|d| d.event.id.trim_start_matches("spooled-").parse().unwrap())
            .collect();
        assert!(seq.windows(2).all(|w| w[0] < w[1]), "in order in {ch}");
    }
    eventually(30, "spool drained", || async {
        let r = readyz(port).await?;
        (r["outbox_unconfirmed"].as_u64()? == 0).then_some(())
    })
    .await;
    second.start_kill().unwrap();
    let _ = second.wait().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_broker_connection_gone_silent_is_given_up_after_the_confirm_timeout_and_nothing_is_lost()
{
    let fake = FakeIrc::start().await;
    let exchange = unique("test-ing-silent");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let chans = channels(2);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let ing = Running::start(ingestor::Config {
        publish_confirm_timeout: Duration::from_secs(2),
        ..config(
            &fake,
            &proxy.url(&rabbit::amqp_url()),
            &exchange,
            &chans,
            &spool,
        )
    })
    .await;
    fake.wait_joined(&refs, 30).await;
    let before = privmsgs(&chans, 200, "before");
    assert_eq!(fake.send_lines(&before), 200);
    tap.collect_until(30, "the events before the freeze", |g| {
        ids_with_prefix(g, "before-").len() >= 200
    })
    .await;
    // (A confirm slower than the timeout on a loaded machine may already
    // have cost a reconnect: what counts is the one after the freeze.)
    let reconnects = ing.metric("chatbus_ingestor_amqp_reconnects_total").await;

    // The broker connection goes silent: no bytes either way, no close, no
    // reset. Publishes go into the void and no confirm ever comes back.
    proxy.freeze_connections();
    let frozen = privmsgs(&chans, 300, "frozen");
    assert_eq!(fake.send_lines(&frozen), 300);
    eventually(30, "the silent connection is given up", || async {
        (ing.metric("chatbus_ingestor_amqp_reconnects_total").await > reconnects).then_some(())
    })
    .await;
    let got = tap
        .collect_until(30, "every event sent into the silent connection", |g| {
            ids_with_prefix(g, "frozen-").len() >= 300
        })
        .await;
    assert_eq!(
        ids_with_prefix(&got, "frozen-").len(),
        300,
        "each event arrived (duplicates allowed)"
    );
    assert!(
        proxy.accepted() >= 2,
        "the ingestor opened a new connection"
    );
    eventually(30, "everything confirmed", || async {
        let r: serde_json::Value = serde_json::from_str(&ing.get("/readyz").await.1).ok()?;
        (r["outbox_unconfirmed"].as_u64()? == 0).then_some(())
    })
    .await;
    ing.stop().await;
    drop(proxy);
    tap.cleanup().await;
}

/// A PRIVMSG carrying its send time as `tmi-sent-ts` (ms).
fn timed_privmsg(channel: &str, id: &str, sent_ms: i64) -> String {
    format!(
        "@badge-info=;badges=;color=;display-name=U;emotes=;id={id};mod=0;room-id=1;subscriber=0;tmi-sent-ts={sent_ms};turbo=0;user-id=7;user-type= :u!u@u.tmi.twitch.tv PRIVMSG #{channel} :{id}"
    )
}

#[tokio::test]
async fn a_kill_loses_only_what_the_socket_held_and_all_of_it_inside_the_restart_gap() {
    let fake = std::sync::Arc::new(FakeIrc::start().await);
    let exchange = unique("test-ing-kill-window");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(2);
    let refs: Vec<&str> = chans.iter().map(String::as_str).collect();
    let (_dir, spool) = spool_dir();
    let port = testkit::free_port();
    let envs = vec![
        ("AMQP_URL", rabbit::amqp_url()),
        ("CHAT_EXCHANGE", exchange.clone()),
        ("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}")),
        ("TWITCH_IRC_ADDR", fake.addr().to_string()),
        ("TWITCH_IRC_TLS", "false".into()),
        ("TWITCH_CHANNELS", chans.join(",")),
        ("SPOOL_DIR", spool.display().to_string()),
        ("RABBITMQ_POLICIES", "false".into()),
    ];
    let mut first = spawn_ingestor(&envs);
    fake.wait_joined(&refs, 30).await;
    eventually(30, "the first ingestor is ready", || async {
        readyz(port).await?["ready"].as_bool()?.then_some(())
    })
    .await;
    // Chat at 2,000 lines a second; the kill lands in the middle of it.
    let sender = {
        let (fake, chans) = (fake.clone(), chans.clone());
        tokio::spawn(async move {
            let mut delivered = Vec::new();
            for round in 0..300usize {
                let now = chrono::Utc::now().timestamp_millis();
                let batch: Vec<(String, String, i64)> = (0..20)
                    .map(|i| {
                        let n = round * 20 + i;
                        (chans[n % 2].clone(), format!("kw-{n}"), now)
                    })
                    .collect();
                let lines: Vec<String> = batch
                    .iter()
                    .map(|(c, id, at)| timed_privmsg(c, id, *at))
                    .collect();
                if fake.send_lines(&lines) == lines.len() {
                    delivered.extend(batch);
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            delivered
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    first.start_kill().unwrap(); // SIGKILL
    first.wait().await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut second = spawn_ingestor(&envs);
    let delivered = sender.await.unwrap();
    assert!(delivered.len() > 1000, "chat flowed before the kill");
    // Then one last line per channel, handed to the second ingestor: once
    // it arrives, everything the second ingestor was handed before it has
    // arrived too (a channel's events keep their order).
    let markers: Vec<String> = chans.iter().map(|c| format!("kw-end-{c}")).collect();
    for (channel, marker) in chans.iter().zip(&markers) {
        let line = timed_privmsg(channel, marker, chrono::Utc::now().timestamp_millis());
        eventually(30, "the second ingestor takes a line", || {
            let sent = fake.send_lines(std::slice::from_ref(&line)) == 1;
            async move { sent.then_some(()) }
        })
        .await;
    }

    // Everything the fake handed to a connection either arrived or was
    // sent inside its channel's `ingestor_restart` gap.
    let got = tap
        .collect_until(60, "both restart gaps and the last lines", |g| {
            let gaps = g
                .iter()
                .filter(|d| d.event.kind() == EventKind::Gap)
                .count();
            let ids = ids_with_prefix(g, "kw-end-");
            gaps >= 2 && markers.iter().all(|m| ids.contains(m.as_str()))
        })
        .await;
    let mut got = got;
    got.extend(tap.drain_quiet(Duration::from_secs(2)).await);
    let arrived = ids_with_prefix(&got, "kw-");
    let mut gaps = std::collections::BTreeMap::new();
    for d in got.iter().filter(|d| d.event.kind() == EventKind::Gap) {
        let EventBody::Gap(g) = &d.event.body else {
            unreachable!()
        };
        assert_eq!(g.reason, "ingestor_restart");
        gaps.insert(d.event.channel.clone(), (g.started_at, g.ended_at));
    }
    assert_eq!(gaps.len(), 2, "one restart gap per channel");
    let mut lost = 0usize;
    for (channel, id, sent_ms) in &delivered {
        if arrived.contains(id.as_str()) {
            continue;
        }
        lost += 1;
        let (from, to) = gaps[channel];
        let sent = chrono::DateTime::from_timestamp_millis(*sent_ms).unwrap();
        assert!(
            from <= sent && sent <= to,
            "{id} of {channel} (sent {sent}) was lost outside the gap {from}..{to}"
        );
    }
    eprintln!(
        "kill -9 at 2,000 lines/s: {lost} of {} lines lost, all inside the restart gaps",
        delivered.len()
    );
    second.start_kill().unwrap();
    let _ = second.wait().await;
    tap.cleanup().await;
}
