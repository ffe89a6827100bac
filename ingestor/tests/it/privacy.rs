//! Opt-outs: the ingestor follows its own `chat.privacy` stream (a unique
//! one per test, `PRIVACY_STREAM`) and never publishes an opted-out
//! user's events, matched by their Twitch user id.

use std::time::Duration;

use common::amqp::Delivery;
use common::amqp::privacy::publish;
use common::privacy::{PrivacyAction, PrivacyNotice, Subject};
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection};
use testkit::eventually;
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};

use crate::helpers::*;

/// A PRIVMSG from Twitch user `user_id` (login `u<user_id>`) with event
/// id `id`.
fn line(channel: &str, user_id: &str, id: &str) -> String {
    line_as(channel, user_id, &format!("u{user_id}"), id)
}

/// A PRIVMSG from Twitch user `user_id` logged in as `login`.
fn line_as(channel: &str, user_id: &str, login: &str, id: &str) -> String {
    format!(
        "@badge-info=;badges=;color=;display-name={login};emotes=;id={id};mod=0;room-id=1;subscriber=0;tmi-sent-ts=1594556065407;turbo=0;user-id={user_id};user-type= :{login}!{login}@{login}.tmi.twitch.tv PRIVMSG #{channel} :hello from {user_id}"
    )
}

/// A stream of its own for one test, and the users it is about.
struct Stream {
    name: String,
    conn: Connection,
}

impl Stream {
    async fn new() -> Self {
        let conn = rabbit::connect("test-privacy").await;
        let name = unique("test-ing-privacy-stream");
        common::amqp::privacy::declare(&conn, &name).await.unwrap();
        Self { name, conn }
    }

    async fn notice(&self, action: PrivacyAction, user_id: &str) -> PrivacyNotice {
        let notice = PrivacyNotice::new(action, Some(twitch_user(user_id)), "test");
        publish(&self.conn, &self.name, &notice).await.unwrap();
        notice
    }

    async fn purge(&self, user_id: &str, horizon: chrono::DateTime<chrono::Utc>) {
        let mut notice =
            PrivacyNotice::new(PrivacyAction::Purge, Some(twitch_user(user_id)), "test");
        notice.horizon = Some(horizon);
        notice.rows = Some(1);
        publish(&self.conn, &self.name, &notice).await.unwrap();
    }

    /// Publishes `body` as it is (confirmed): what a broken publisher
    /// might leave on the stream.
    async fn raw(&self, body: &[u8]) {
        let channel = self.conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        channel
            .basic_publish(
                "".into(),
                self.name.as_str().into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default(),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        let _ = channel.close(200, "done".into()).await;
    }

    async fn delete(self) {
        let channel = self.conn.create_channel().await.unwrap();
        channel
            .queue_delete(self.name.as_str().into(), QueueDeleteOptions::default())
            .await
            .unwrap();
        common::amqp::close(&self.conn, "test done").await;
    }
}

fn twitch_user(user_id: &str) -> Subject {
    Subject::User {
        platform: "twitch".into(),
        user_id: user_id.into(),
    }
}

/// `/readyz`'s `privacy` part.
async fn privacy(ing: &Running) -> serde_json::Value {
    let body = ing.get("/readyz").await.1;
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["privacy"].clone()
}

/// Waits until the ingestor has read the whole stream and `notices`
/// notices of it.
async fn wait_notices(ing: &Running, notices: u64) {
    eventually(
        30,
        &format!("privacy list loaded with {notices} notices"),
        || async {
            let p = privacy(ing).await;
            (p["loaded"].as_bool()? && p["notices"].as_u64()? >= notices).then_some(())
        },
    )
    .await;
}

/// Sends `lines` and receives until the event `marker` (sent last, by
/// someone else) arrived: whatever of `lines` was published has arrived
/// by then (one channel, one connection, in order).
async fn send_until_marker(
    fake: &FakeIrc,
    tap: &mut Tap,
    channel: &str,
    lines: &[String],
    marker: &str,
) -> Vec<Delivery> {
    let mut all = lines.to_vec();
    all.push(line(channel, "1000", marker));
    assert_eq!(fake.send_lines(&all), all.len());
    tap.collect_until(30, marker, |got| got.iter().any(|d| d.event.id == marker))
        .await
}

fn ids(got: &[Delivery]) -> Vec<&str> {
    got.iter()
        .map(|d| d.event.id.as_str())
        .filter(|id| id.starts_with('x') || id.starts_with('o'))
        .collect()
}

async fn start(
    fake: &FakeIrc,
    exchange: &str,
    channel: &str,
    stream: &str,
) -> (Running, tempfile::TempDir) {
    let (dir, spool) = spool_dir();
    let mut cfg = config(
        fake,
        &rabbit::amqp_url(),
        exchange,
        &[channel.to_owned()],
        &spool,
    );
    cfg.privacy_stream = stream.to_owned();
    (Running::start(cfg).await, dir)
}

#[tokio::test]
async fn an_opted_out_users_lines_are_never_published_and_a_restart_replays_the_opt_out() {
    let stream = Stream::new().await;
    stream.notice(PrivacyAction::OptOut, "4242").await;
    let exchange = unique("test-ing-privacy");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let ch = channels(1).remove(0);

    for run in 0..2 {
        // A new ingestor (and a new connection) each time: the second one
        // knows the opt-out only from the stream.
        let fake = FakeIrc::start().await;
        let (ing, _spool) = start(&fake, &exchange, &ch, &stream.name).await;
        fake.wait_joined(&[ch.as_str()], 30).await;
        wait_notices(&ing, 1).await;
        assert_eq!(
            privacy(&ing).await["stream"].as_str(),
            Some(stream.name.as_str())
        );
        let lines = [
            line(&ch, "4242", &format!("x{run}-1")),
            line(&ch, "7", &format!("o{run}-1")),
            // Ids are matched, never logins: 4242 under a new login is
            // still dropped, someone else under 4242's old login is not.
            line_as(&ch, "4242", "renamed", &format!("x{run}-2")),
            line_as(&ch, "8", "u4242", &format!("o{run}-2")),
        ];
        let got = send_until_marker(&fake, &mut tap, &ch, &lines, &format!("o{run}-end")).await;
        assert_eq!(
            ids(&got),
            [
                format!("o{run}-1"),
                format!("o{run}-2"),
                format!("o{run}-end")
            ],
            "run {run}"
        );
        assert!(
            ing.metric("chatbus_ingestor_privacy_dropped_total").await >= 2.0,
            "drops are counted"
        );
        ing.stop().await;
    }
    tap.cleanup().await;
    stream.delete().await;
}

#[tokio::test]
async fn an_opt_out_while_running_takes_effect_and_an_opt_in_restores() {
    let stream = Stream::new().await;
    let exchange = unique("test-ing-privacy-live");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let ch = channels(1).remove(0);
    let fake = FakeIrc::start().await;
    let (ing, _spool) = start(&fake, &exchange, &ch, &stream.name).await;
    fake.wait_joined(&[ch.as_str()], 30).await;
    wait_notices(&ing, 0).await;

    let got = send_until_marker(&fake, &mut tap, &ch, &[line(&ch, "51", "x1")], "o1").await;
    assert_eq!(ids(&got), ["x1", "o1"], "before the opt-out");

    stream.notice(PrivacyAction::OptOut, "51").await;
    wait_notices(&ing, 1).await;
    let got = send_until_marker(&fake, &mut tap, &ch, &[line(&ch, "51", "x2")], "o2").await;
    assert_eq!(ids(&got), ["o2"], "after the opt-out");

    stream.notice(PrivacyAction::OptIn, "51").await;
    wait_notices(&ing, 2).await;
    let got = send_until_marker(&fake, &mut tap, &ch, &[line(&ch, "51", "x3")], "o3").await;
    assert_eq!(ids(&got), ["x3", "o3"], "after the opt-in");

    let extra = tap.drain_quiet(Duration::from_millis(300)).await;
    assert!(ids(&extra).is_empty(), "{:?}", ids(&extra));
    ing.stop().await;
    tap.cleanup().await;
    stream.delete().await;
}

#[tokio::test]
async fn a_notice_that_does_not_decode_is_skipped_and_the_follower_carries_on() {
    let stream = Stream::new().await;
    stream.raw(b"not json").await;
    let exchange = unique("test-ing-privacy-bad");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let ch = channels(1).remove(0);
    let fake = FakeIrc::start().await;
    let (ing, _spool) = start(&fake, &exchange, &ch, &stream.name).await;
    fake.wait_joined(&[ch.as_str()], 30).await;
    // Loaded past the bad one at the start.
    wait_notices(&ing, 0).await;

    // And past one while running: the opt-out after it still applies.
    stream
        .raw(b"{\"schema_version\": 1, \"action\": \"opt_out\"}")
        .await;
    stream.notice(PrivacyAction::OptOut, "66").await;
    wait_notices(&ing, 1).await;
    assert_eq!(privacy(&ing).await["notices"].as_u64(), Some(1));
    let got = send_until_marker(&fake, &mut tap, &ch, &[line(&ch, "66", "x1")], "o1").await;
    assert_eq!(ids(&got), ["o1"]);
    ing.stop().await;
    tap.cleanup().await;
    stream.delete().await;
}

#[tokio::test]
async fn a_purge_drops_what_was_spooled_before_its_horizon_and_not_what_came_later() {
    let stream = Stream::new().await;
    let exchange = unique("test-ing-privacy-purge");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let ch = channels(1).remove(0);
    let (_dir, spool) = spool_dir();

    // The first ingestor reads (and spools) but cannot publish: its
    // broker is not there.
    let fake = FakeIrc::start().await;
    let mut cfg = config(
        &fake,
        "amqp://guest:guest@127.0.0.1:1/%2f",
        &exchange,
        std::slice::from_ref(&ch),
        &spool,
    );
    cfg.privacy_stream = stream.name.clone();
    let first = Running::start(cfg).await;
    fake.wait_joined(&[ch.as_str()], 30).await;
    assert_eq!(
        fake.send_lines(&[line(&ch, "77", "x1"), line(&ch, "9", "o1")]),
        2
    );
    eventually(30, "the ROOMSTATE and both lines spooled", || async {
        let body = first.get("/readyz").await.1;
        let r: serde_json::Value = serde_json::from_str(&body).ok()?;
        assert_eq!(r["privacy"]["loaded"].as_bool(), Some(false));
        (r["outbox_unconfirmed"].as_u64()? >= 3).then_some(())
    })
    .await;
    first.stop().await;

    // The store purged user 77 after that: x1 was in flight.
    stream.purge("77", chrono::Utc::now()).await;

    let fake = FakeIrc::start().await;
    let mut cfg = config(
        &fake,
        &rabbit::amqp_url(),
        &exchange,
        std::slice::from_ref(&ch),
        &spool,
    );
    cfg.privacy_stream = stream.name.clone();
    let second = Running::start(cfg).await;
    fake.wait_joined(&[ch.as_str()], 30).await;
    wait_notices(&second, 1).await;
    // Read after the purge: kept.
    let got = send_until_marker(&fake, &mut tap, &ch, &[line(&ch, "77", "x2")], "o2").await;
    assert_eq!(ids(&got), ["o1", "x2", "o2"]);
    // x1 was released from the spool unpublished.
    eventually(10, "the spool confirmed", || async {
        let body = second.get("/readyz").await.1;
        let r: serde_json::Value = serde_json::from_str(&body).ok()?;
        (r["outbox_unconfirmed"].as_u64()? == 0).then_some(())
    })
    .await;
    second.stop().await;
    tap.cleanup().await;
    stream.delete().await;
}
