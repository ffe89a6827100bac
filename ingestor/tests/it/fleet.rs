//! Ingestors as a fleet, in this process, against the fake Twitch IRC and
//! the real RabbitMQ: channels spread evenly and each is read by exactly
//! one instance (checked through the fake server's JOINs, by login); a new
//! instance takes its share without losing a line; a stopped one hands its
//! channels over before it exits; a runtime join and part reach the fleet.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

use crate::helpers::{Running, Tap, channels, config, privmsgs, spool_dir};

const KEY: &str = "fleet-admin-key";

struct Member {
    running: Running,
    _spool: tempfile::TempDir,
}

async fn member(fake: &FakeIrc, exchange: &str, fleet: &str, wanted: &[String]) -> Member {
    let (dir, spool) = spool_dir();
    let mut c = config(fake, &rabbit::amqp_url(), exchange, wanted, &spool);
    c.ingestor_fleet = Some(fleet.to_owned());
    c.ingestor_fleet_takeover = Duration::from_secs(4);
    c.ingestor_api_key = Some(KEY.into());
    c.privacy_stream = String::new();
    // Anonymous logins: no shared account; JOINs as fast as the test needs.
    c.platforms.twitch.twitch_join_limit = 2000;
    Member {
        running: Running::start(c).await,
        _spool: dir,
    }
}

/// Every channel joined by exactly one login, and the loads.
fn split(fake: &FakeIrc) -> (BTreeMap<String, usize>, usize, usize) {
    let by = fake.joined_by_nick();
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for joined in by.values() {
        for c in joined {
            *seen.entry(c.as_str()).or_insert(0) += 1;
        }
    }
    let twice = seen.values().filter(|n| **n > 1).count();
    let loads = by.iter().map(|(n, j)| (n.clone(), j.len())).collect();
    (loads, seen.len(), twice)
}

/// Waits until `n` logins read `total` channels, each once, `per` ± 1 each.
async fn wait_split(fake: &FakeIrc, n: usize, total: usize, per: usize, secs: u64) {
    testkit::eventually(
        secs,
        &format!("{total} channels over {n} instances"),
        || async {
            let (loads, distinct, twice) = split(fake);
            (loads.len() == n
                && distinct == total
                && twice == 0
                && loads.values().all(|l| l.abs_diff(per) <= 1))
            .then_some(())
        },
    )
    .await;
}

async fn fleet_json(m: &Member) -> serde_json::Value {
    let (status, body) = m.running.get("/fleet").await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

async fn admin(m: &Member, method: reqwest::Method, path: &str) -> u16 {
    reqwest::Client::new()
        .request(method, format!("http://{}{path}", m.running.http))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test]
async fn a_fleet_spreads_channels_evenly_takes_in_a_new_member_without_losing_a_line_and_shares_runtime_joins()
 {
    let fake = FakeIrc::start().await;
    let exchange = unique("test-fleet-x");
    let fleet = unique("test-fleet");
    let wanted = channels(300);
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;

    let mut members = Vec::new();
    for _ in 0..3 {
        members.push(member(&fake, &exchange, &fleet, &wanted).await);
    }
    wait_split(&fake, 3, 300, 100, 90).await;
    let view = fleet_json(&members[0]).await;
    assert_eq!(view["instances"].as_array().unwrap().len(), 3, "{view}");
    assert!(view["leases"]["leader"].is_string(), "{view}");
    assert_eq!(view["wanted"], 300);

    // A fourth takes its share while chat flows: every line goes to some
    // reader (join before part), and every line is published.
    members.push(member(&fake, &exchange, &fleet, &wanted).await);
    let mut sent = BTreeSet::new();
    let mut round = 0;
    let moved = async {
        loop {
            let (loads, distinct, twice) = split(&fake);
            if loads.len() == 4
                && distinct == 300
                && twice == 0
                && loads.values().all(|l| l.abs_diff(75) <= 1)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::pin!(moved);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    loop {
        let lines = privmsgs(&wanted, 300, &format!("move{round}"));
        let delivered = fake.send_lines(&lines);
        assert_eq!(
            delivered,
            lines.len(),
            "a line found no reader in round {round}"
        );
        sent.extend((0..300).map(|i| format!("move{round}-{i}")));
        round += 1;
        tokio::select! {
            () = &mut moved => break,
            () = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the fourth never got 75 ± 1"
        );
    }
    let mut missing = sent.clone();
    let got = tap
        .collect_until(60, "every line sent during the move", |d| {
            if let Some(last) = d.last() {
                missing.remove(&last.event.id);
            }
            missing.is_empty()
        })
        .await;
    assert!(
        !got.iter().any(|d| d.event.kind_name() == "gap"),
        "a clean handover has no gap"
    );

    // A runtime join through one member is read by exactly one; a part
    // through another stops it everywhere.
    let extra = format!("{}_extra", wanted[0]);
    assert_eq!(
        admin(
            &members[0],
            reqwest::Method::POST,
            &format!("/channels/twitch/{extra}")
        )
        .await,
        202
    );
    testkit::eventually(30, "the runtime join read once", || async {
        let readers = fake
            .joined_by_nick()
            .values()
            .filter(|j| j.contains(&extra))
            .count();
        (readers == 1).then_some(())
    })
    .await;
    assert_eq!(
        admin(
            &members[2],
            reqwest::Method::DELETE,
            &format!("/channels/twitch/{extra}")
        )
        .await,
        202
    );
    testkit::eventually(30, "the part reaches the reader", || async {
        (!fake.joined_channels().contains(&extra)).then_some(())
    })
    .await;

    // A stopped member hands its channels over before it exits: nobody's
    // channel goes unread, and no gap.
    let leaving = members.remove(1);
    leaving.running.stop().await;
    wait_split(&fake, 3, 300, 100, 60).await;
    let parts = fake.received_command("PART");
    let joins = fake.received_command("JOIN");
    for p in &parts {
        let Some(ch) = testkit::fake_irc::channel_of(&p.line) else {
            continue;
        };
        if ch == extra {
            continue;
        }
        assert!(
            joins
                .iter()
                .any(|j| j.conn != p.conn && j.at <= p.at && j.line.contains(&format!("#{ch}"))),
            "{ch} was parted before another instance joined it"
        );
    }
    let late = tap.drain_quiet(Duration::from_millis(500)).await;
    assert!(!late.iter().any(|d| d.event.kind_name() == "gap"));

    for m in members {
        m.running.stop().await;
    }
    tap.cleanup().await;
    delete_fleet_queues(&fleet).await;
}

/// Removes what a test fleet left on the broker.
pub(crate) async fn delete_fleet_queues(fleet: &str) {
    let conn = rabbit::connect("test-fleet-cleanup").await;
    let ch = conn.create_channel().await.unwrap();
    for q in [
        format!("chat.fleet.{fleet}.leader"),
        format!("chat.fleet.{fleet}.wanted"),
    ] {
        let _ = ch
            .queue_delete(
                q.as_str().into(),
                lapin::options::QueueDeleteOptions::default(),
            )
            .await;
    }
    common::amqp::close(&conn, "cleaned up").await;
}
