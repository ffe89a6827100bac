//! Commands through the bus against the real RabbitMQ and a fake Twitch
//! (IRC and Helix): receipts for every outcome, Twitch's chat limits
//! recomputed from the fake's own log, duplicate ids sent once, and a
//! broker connection lost with commands queued.

use std::sync::Arc;
use std::time::Duration;

use common::amqp::commands::CommandClient;
use common::command::{ChatCommand, CommandAction, Receipt, ReceiptStatus};
use lapin::options::{BasicPublishOptions, QueueDeleteOptions};
use lapin::{BasicProperties, Connection};
use testkit::fake_helix::{self, ChatLimits, FakeHelix, Moderation};
use testkit::fake_irc::FakeIrc;
use testkit::rabbit::{self, unique};
use testkit::within;

use crate::helpers::*;

/// Every scope a moderating bot holds.
const ALL_SCOPES: &[&str] = &[
    "chat:read",
    "user:write:chat",
    "user:read:moderated_channels",
    "moderator:manage:chat_messages",
    "moderator:manage:banned_users",
];

/// The limits both the fake and the ingestor keep in these tests: Twitch's
/// shape, with a 2-s window so a test sees several.
fn test_limits() -> ChatLimits {
    ChatLimits {
        window: Duration::from_secs(2),
        normal: 10,
        privileged: 50,
        channel_interval: Duration::from_millis(100),
        duplicate_window: Duration::from_secs(30),
    }
}

/// A fake Twitch (IRC + Helix) and an ingestor taking commands from a
/// command exchange of its own.
struct World {
    irc: Arc<FakeIrc>,
    helix: FakeHelix,
    exchange: String,
    queue: String,
    tap: Tap,
    conn: Connection,
    commands: CommandClient,
    ing: Option<Running>,
    cfg: ingestor::Config,
    _dir: tempfile::TempDir,
}

/// A token-store entry for `login`.
fn stored(login: &str, user_id: &str, token: &str, scopes: &[&str]) -> serde_json::Value {
    serde_json::json!({
        "platform": "twitch",
        "login": login,
        "user_id": user_id,
        "access_token": token,
        "refresh_token": format!("refresh-{token}"),
        "expires_at": "2099-01-01T00:00:00Z",
        "scopes": scopes,
        "obtained_at": "2026-01-01T00:00:00Z",
        "last_refreshed_at": null,
        "last_validated_at": null,
        "status": "valid",
        "status_reason": null
    })
}

impl World {
    /// `channels` are read (and echoed into); `amqp_url` is the ingestor's
    /// broker address (a proxy in the restart test).
    async fn start(channels: &[String], amqp_url: Option<String>) -> Self {
        Self::start_on(channels, amqp_url, &rabbit::amqp_url()).await
    }

    /// As [`World::start`], with the command client on `client_url`.
    async fn start_on(channels: &[String], amqp_url: Option<String>, client_url: &str) -> Self {
        let irc = Arc::new(FakeIrc::start().await);
        let helix = FakeHelix::start().await;
        helix.set_limits(test_limits());
        helix.echo_to(irc.clone());
        helix.add_account("chatbot", "1001", "tok-chatbot", ALL_SCOPES);
        helix.add_account("modbot", "1002", "tok-modbot", ALL_SCOPES);
        helix.add_account("noscope", "1003", "tok-noscope", &["chat:read"]);
        for (i, c) in channels.iter().enumerate() {
            helix.add_user(c, &format!("{}", 5000 + i));
        }

        let (dir, spool) = spool_dir();
        let store = dir.path().join("tokenStore.json");
        let accounts = serde_json::json!({
            "version": 1,
            "accounts": {
                "twitch:chatbot": stored("chatbot", "1001", "tok-chatbot", ALL_SCOPES),
                "twitch:modbot": stored("modbot", "1002", "tok-modbot", ALL_SCOPES),
                "twitch:noscope": stored("noscope", "1003", "tok-noscope", &["chat:read"]),
            }
        });
        std::fs::write(&store, serde_json::to_vec_pretty(&accounts).unwrap()).unwrap();
        std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();

        let exchange = unique("test-cmd-chat");
        let tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
        let broker = amqp_url.unwrap_or_else(rabbit::amqp_url);
        let mut cfg = config(&irc, &broker, &exchange, channels, &spool);
        cfg.oauth.token_store_path = store;
        cfg.oauth.twitch_client_id = fake_helix::CLIENT_ID.into();
        cfg.oauth.twitch_client_secret = common::Secret::new("fake-secret");
        let l = test_limits();
        let t = &mut cfg.platforms.twitch;
        t.twitch_helix_url = helix.url();
        t.twitch_sender = Some("chatbot".into());
        t.twitch_send_window = l.window;
        t.twitch_send_limit = l.normal;
        t.twitch_send_limit_privileged = l.privileged;
        t.twitch_send_channel_interval = l.channel_interval;
        t.twitch_send_margin = Duration::from_millis(30);
        cfg.commands_exchange = unique("test-commands");
        cfg.commands_queue = format!("{}.ingestor", cfg.commands_exchange);
        cfg.commands_allow = vec![
            "twitch:chatbot".into(),
            "twitch:modbot:moderate".into(),
            "twitch:noscope".into(),
        ];
        let conn = rabbit::connect_to(client_url, "test-commands").await;
        let commands = CommandClient::open(&conn, &cfg.commands_exchange, "test")
            .await
            .unwrap();
        let mut world = Self {
            irc,
            helix,
            exchange,
            queue: cfg.commands_queue.clone(),
            tap,
            conn,
            commands,
            ing: None,
            cfg,
            _dir: dir,
        };
        world.start_ingestor().await;
        let names: Vec<&str> = channels.iter().map(String::as_str).collect();
        world.irc.wait_joined(&names, 20).await;
        world
    }

    async fn start_ingestor(&mut self) {
        self.ing = Some(Running::start(self.cfg.clone()).await);
        self.wait_for_intake().await;
    }

    /// Until the ingestor consumes the command queue (commands published
    /// before would come back as `no_sender`).
    async fn wait_for_intake(&self) {
        let ch = self.conn.create_channel().await.unwrap();
        within(20, "the ingestor consumes its command queue", async {
            loop {
                let declared = ch
                    .queue_declare(
                        self.queue.as_str().into(),
                        lapin::options::QueueDeclareOptions {
                            passive: true,
                            ..Default::default()
                        },
                        lapin::types::FieldTable::default(),
                    )
                    .await;
                match declared {
                    Ok(q) if q.consumer_count() > 0 => break,
                    Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    Err(_) => {
                        // The passive declare of a missing queue closed it.
                        return Box::pin(self.wait_for_intake()).await;
                    }
                }
            }
        })
        .await;
        common::amqp::close_channel(&ch, "checked").await;
    }

    fn command(&self, channel: &str, action: CommandAction) -> ChatCommand {
        self.commands.command("twitch", channel, action)
    }

    async fn send(&self, command: ChatCommand) -> Receipt {
        within(60, "a receipt", self.commands.execute(command))
            .await
            .unwrap()
    }

    async fn stop(mut self) {
        if let Some(ing) = self.ing.take() {
            ing.stop().await;
        }
        let ch = self.conn.create_channel().await.unwrap();
        for q in [
            self.queue.clone(),
            format!("{}.dead-letter", self.cfg.commands_exchange),
        ] {
            let _ = ch
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for x in [
            self.cfg.commands_exchange.clone(),
            format!("{}.dlx", self.cfg.commands_exchange),
        ] {
            let _ = ch
                .exchange_delete(x.as_str().into(), Default::default())
                .await;
        }
        let _ = &self.exchange;
        self.tap.cleanup().await;
    }
}

fn say(text: &str) -> CommandAction {
    CommandAction::Send {
        text: text.into(),
        reply_to: None,
    }
}

#[tokio::test]
async fn every_outcome_gets_its_receipt() {
    let chans = channels(1);
    let ch = chans[0].as_str();
    let mut w = World::start(&chans, None).await;
    w.helix.set_moderator(ch, "modbot");

    // Sent, read back from IRC as a chat event of the sending account.
    let r = w.send(w.command(ch, say("hello from the bus"))).await;
    assert_eq!(r.status, ReceiptStatus::Sent, "{r:?}");
    let message_id = r.platform_message_id.clone().expect("a message id");
    let got = w
        .tap
        .collect_until(20, "the sent message read back", |d| {
            d.iter().any(|d| d.event.id == message_id)
        })
        .await;
    let echoed = got.iter().find(|d| d.event.id == message_id).unwrap();
    assert_eq!(
        echoed.event.text.as_deref(),
        Some("hello from the bus"),
        "{echoed:?}"
    );
    assert_eq!(echoed.event.author.as_ref().unwrap().login, "chatbot");

    // The same text again within Twitch's 30 s: Twitch's own word.
    let r = w.send(w.command(ch, say("hello from the bus"))).await;
    assert_eq!(r.status, ReceiptStatus::Dropped, "{r:?}");
    assert_eq!(r.reason.as_deref(), Some("msg_duplicate"));

    // One id twice: sent once, both answered with the same outcome.
    let once = w.command(ch, say("only once"));
    let (a, b) = tokio::join!(w.send(once.clone()), w.send(once.clone()));
    assert_eq!(
        (a.status, b.status),
        (ReceiptStatus::Sent, ReceiptStatus::Sent)
    );
    assert_eq!(a.platform_message_id, b.platform_message_id);
    let again = w.send(once).await;
    assert_eq!(again.platform_message_id, a.platform_message_id);
    let sent_once = w
        .helix
        .log()
        .iter()
        .filter(|m| m.text == "only once")
        .count();
    assert_eq!(sent_once, 1, "a duplicate id is never sent twice");

    // Moderation by a moderator account, each through Helix.
    let modbot = |action| {
        let mut c = w.command(ch, action);
        c.account = Some("modbot".into());
        c
    };
    for action in [
        CommandAction::Delete {
            message_id: message_id.clone(),
        },
        CommandAction::Timeout {
            user_id: "777".into(),
            seconds: 600,
            reason: Some("calm down".into()),
        },
        CommandAction::Ban {
            user_id: "778".into(),
            reason: None,
        },
        CommandAction::Unban {
            user_id: "778".into(),
        },
    ] {
        let r = w.send(modbot(action.clone())).await;
        assert_eq!(r.status, ReceiptStatus::Sent, "{action:?}: {r:?}");
    }
    let moderation = w.helix.moderation();
    assert_eq!(moderation.len(), 4, "{moderation:?}");
    assert!(moderation.contains(&Moderation::Ban {
        channel: ch.into(),
        user_id: "777".into(),
        duration: Some(600),
        reason: "calm down".into(),
    }));

    // Refusals, each with its reason; the malformed ones dead-lettered.
    let ban_by_chatbot = w.command(
        ch,
        CommandAction::Ban {
            user_id: "1".into(),
            reason: None,
        },
    );
    let r = w.send(ban_by_chatbot).await;
    assert_eq!(r.status, ReceiptStatus::Rejected);
    assert!(
        r.reason.as_deref().unwrap().starts_with("not_allowed"),
        "{r:?}"
    );
    let mut stranger = w.command(ch, say("hi"));
    stranger.account = Some("stranger".into());
    let r = w.send(stranger).await;
    assert!(
        r.reason.as_deref().unwrap().starts_with("not_allowed"),
        "{r:?}"
    );
    let mut noscope = w.command(ch, say("no scope"));
    noscope.account = Some("noscope".into());
    let r = w.send(noscope).await;
    assert_eq!(r.status, ReceiptStatus::Rejected);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("missing_scope: user:write:chat"),
        "{r:?}"
    );
    let r = w.send(w.command(ch, say(&"x".repeat(501)))).await;
    assert_eq!(r.status, ReceiptStatus::Rejected);
    assert!(
        r.reason
            .as_deref()
            .unwrap()
            .starts_with("text_too_long: 501"),
        "{r:?}"
    );
    let r = w.send(w.commands.command("kick", ch, say("hi"))).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (ReceiptStatus::Rejected, Some("no_sender")),
        "no sender bound for the platform: the broker returned it"
    );
    let mut expired = w.command(ch, say("too late"));
    expired.issued_at = chrono::Utc::now() - chrono::Duration::seconds(60);
    let r = w.send(expired).await;
    assert_eq!(
        r.status,
        ReceiptStatus::Expired,
        "expired on arrival: {r:?}"
    );

    // Not a command at all: a receipt to its reply_to, and the DLX.
    let bad = publish_raw(&w, b"{not json", "bad-1").await;
    assert_eq!(bad.status, ReceiptStatus::Rejected);
    assert!(
        bad.reason.as_deref().unwrap().starts_with("malformed"),
        "{bad:?}"
    );
    let dead = rabbit::drain_queue(
        &w.conn,
        &format!("{}.dead-letter", w.cfg.commands_exchange),
        5,
        10,
    )
    .await;
    let reasons: Vec<String> = dead
        .iter()
        .map(|d| {
            common::amqp::header_str(
                d.properties.headers().as_ref(),
                common::amqp::headers::DEAD_LETTER_REASON,
            )
            .unwrap_or_default()
            .into_owned()
        })
        .collect();
    assert!(
        reasons.iter().any(|r| r.starts_with("malformed")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("text_too_long")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.starts_with("not_allowed")),
        "{reasons:?}"
    );

    // A crash between the platform call and the receipt: the id is in the
    // journal as attempted, with no outcome. Its redelivery is never sent.
    let crashed = w.command(ch, say("was it sent?"));
    w.ing.take().unwrap().stop().await;
    let journal = ingestor::commands::journal::Journal::open(
        &w.cfg.spool_dir,
        ingestor::commands::journal::KEEP,
    )
    .unwrap();
    journal.attempted(&crashed.id).unwrap();
    drop(journal);
    w.start_ingestor().await;
    let r = w.send(crashed).await;
    assert_eq!(
        (r.status, r.reason.as_deref()),
        (ReceiptStatus::Failed, Some("unknown_outcome"))
    );
    assert!(!w.helix.log().iter().any(|m| m.text == "was it sent?"));
    w.stop().await;
}

/// Publishes `body` as a command with a reply_to of its own and waits for
/// the receipt there.
async fn publish_raw(w: &World, body: &[u8], message_id: &str) -> Receipt {
    use futures::StreamExt;
    let ch = w.conn.create_channel().await.unwrap();
    let mut replies = ch
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .unwrap();
    ch.basic_publish(
        w.cfg.commands_exchange.as_str().into(),
        "twitch.somewhere".into(),
        BasicPublishOptions::default(),
        body,
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("raw-1".into())
            .with_message_id(message_id.into()),
    )
    .await
    .unwrap();
    let reply = within(20, "a receipt for a malformed command", replies.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        reply.properties.correlation_id().as_ref().unwrap().as_str(),
        "raw-1"
    );
    serde_json::from_slice(&reply.data).unwrap()
}

#[tokio::test]
async fn twitch_limits_hold_under_five_times_the_demand_and_use_the_throughput() {
    // 1 channel and 10 channels through the non-privileged default
    // account, and a moderator account in a channel of its own.
    let chans = channels(12);
    let w = World::start(&chans, None).await;
    let modded = chans[11].clone();
    w.helix.set_moderator(&modded, "modbot");
    let limits = test_limits();
    let lifetime = chrono::Duration::seconds(5);

    let mut commands = Vec::new();
    // 500 commands for one channel, and 100 over 10 channels, through one
    // account that 10 per 2 s lets through: far over what can go before
    // they expire (the rest are answered `expired`).
    for i in 0..500 {
        commands.push(w.command(&chans[0], say(&format!("one {i}"))));
    }
    for i in 0..100 {
        commands.push(w.command(&chans[1 + i % 10], say(&format!("many {i}"))));
    }
    for c in &mut commands {
        c.expires_at = Some(c.issued_at + lifetime);
    }
    let mut modded_commands = Vec::new();
    for i in 0..120 {
        let mut c = w.command(&modded, say(&format!("mod {i}")));
        c.account = Some("modbot".into());
        c.expires_at = Some(c.issued_at + lifetime);
        modded_commands.push(c);
    }
    let receipts = futures::future::join_all(
        commands
            .iter()
            .chain(&modded_commands)
            .map(|c| w.commands.execute(c.clone())),
    )
    .await;
    let receipts: Vec<Receipt> = receipts.into_iter().map(Result::unwrap).collect();
    for r in &receipts {
        assert!(
            matches!(r.status, ReceiptStatus::Sent | ReceiptStatus::Expired),
            "every command sent or expired: {r:?}"
        );
    }
    let log = w.helix.log();
    let broken = fake_helix::violations(&log, limits);
    assert!(broken.is_empty(), "limits broken: {broken:#?}");
    assert!(log.iter().all(|m| m.dropped.is_none()), "nothing dropped");

    // In order, per channel; every sent receipt matches one logged message.
    let sent_texts = |prefix: &str| -> Vec<String> {
        log.iter()
            .filter(|m| m.text.starts_with(prefix))
            .map(|m| m.text.clone())
            .collect()
    };
    let one = sent_texts("one ");
    let expected: Vec<String> = (0..one.len()).map(|i| format!("one {i}")).collect();
    assert_eq!(one, expected, "one channel's commands go in order");
    let sent = receipts
        .iter()
        .filter(|r| r.status == ReceiptStatus::Sent)
        .count();
    assert_eq!(sent, log.len(), "a receipt for every message sent");

    // Throughput: the normal account's window was used (>= 90 % of what
    // the sliding window allows between its first and last message).
    let normal: Vec<_> = log.iter().filter(|m| m.account == "chatbot").collect();
    let span = normal.last().unwrap().at - normal[0].at;
    let windows = span.as_secs_f64() / (limits.window.as_secs_f64() + 0.03);
    let allowed = limits.normal as f64 * (windows.floor() + 1.0);
    assert!(
        normal.len() as f64 >= 0.9 * allowed,
        "{} sent over {span:?}, {allowed} allowed",
        normal.len()
    );
    // The moderator got the higher limit in its channel: more than the
    // normal limit in its first window.
    let modbot: Vec<_> = log.iter().filter(|m| m.account == "modbot").collect();
    let first_window = modbot
        .iter()
        .filter(|m| m.at - modbot[0].at < limits.window)
        .count();
    assert!(
        first_window > limits.normal,
        "{first_window} in the moderator's first window"
    );
    assert!(modbot.iter().all(|m| m.privileged));
    w.stop().await;
}

#[tokio::test]
async fn a_lost_broker_connection_with_commands_queued_loses_none_and_sends_none_twice() {
    let chans = channels(4);
    let proxy = testkit::proxy::TcpProxy::start("127.0.0.1:5672".parse().unwrap()).await;
    let mut w = World::start(&chans, Some(proxy.url(&rabbit::amqp_url()))).await;
    for c in &chans {
        w.helix.set_moderator(c, "chatbot");
    }
    // Queued while no ingestor takes commands.
    w.ing.take().unwrap().stop().await;
    let mut commands = Vec::new();
    for i in 0..200 {
        let mut c = w.command(&chans[i % 4], say(&format!("queued {i}")));
        c.expires_at = Some(c.issued_at + chrono::Duration::seconds(60));
        commands.push(c);
    }
    // Published without waiting for receipts (the ingestor is down: the
    // queue is still bound, so they wait in it).
    let pending: Vec<_> = commands
        .iter()
        .map(|c| {
            let client = w.commands.clone();
            let c = c.clone();
            tokio::spawn(async move { client.execute(c).await })
        })
        .collect();
    let ch = w.conn.create_channel().await.unwrap();
    within(20, "200 commands queued", async {
        while rabbit::queue_depth(&ch, &w.queue).await < 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    w.start_ingestor().await;
    // Cut the ingestor's broker connections once some went out.
    within(30, "some commands sent", async {
        while w.helix.log().len() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    proxy.reset_connections();
    let mut receipts = Vec::new();
    for p in pending {
        receipts.push(within(90, "a receipt", p).await.unwrap().unwrap());
    }
    let log = w.helix.log();
    let mut texts: Vec<&str> = log.iter().map(|m| m.text.as_str()).collect();
    texts.sort_unstable();
    let before = texts.len();
    texts.dedup();
    assert_eq!(texts.len(), before, "none sent twice");
    assert_eq!(texts.len(), 200, "none lost");
    for r in &receipts {
        assert!(
            matches!(r.status, ReceiptStatus::Sent)
                || (r.status == ReceiptStatus::Failed
                    && r.reason.as_deref() == Some("unknown_outcome")),
            "{r:?}"
        );
    }
    assert!(
        proxy.accepted() >= 2,
        "the ingestor reconnected through the proxy"
    );
    w.stop().await;
}

#[path = "../../../common/examples/echo_bot.rs"]
#[allow(dead_code)]
mod echo_bot;

#[tokio::test]
async fn the_echo_bot_answers_ping_through_the_whole_loop() {
    let chans = channels(1);
    let ch = chans[0].clone();
    let w = World::start(&chans, None).await;
    let cancel = common::shutdown::CancellationToken::new();
    let bot = tokio::spawn(echo_bot::run(
        echo_bot::Args {
            amqp_url: rabbit::amqp_url(),
            exchange: w.exchange.clone(),
            commands_exchange: w.cfg.commands_exchange.clone(),
        },
        cancel.clone(),
    ));
    // A viewer says !ping (twice: the second pong would repeat the first
    // within 30 s, so the bot varies it).
    let ping = |n: usize| {
        format!(
            "@badges=;color=;display-name=Viewer;emotes=;id=ping-{n}-{ch};mod=0;room-id=5000;subscriber=0;tmi-sent-ts={};turbo=0;user-id=42;user-type= :viewer!viewer@viewer.tmi.twitch.tv PRIVMSG #{ch} :!ping",
            chrono::Utc::now().timestamp_millis()
        )
    };
    let sent = |w: &World| -> Vec<String> {
        w.helix
            .log()
            .iter()
            .filter(|m| m.dropped.is_none())
            .map(|m| m.text.clone())
            .collect()
    };
    // The bot's queue is bound once it is ready: ping until it answers.
    let mut n = 0;
    within(30, "the bot answers !ping", async {
        while sent(&w).is_empty() {
            n += 1;
            w.irc.send_to_channel(&ch, &ping(n));
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    })
    .await;
    w.irc.send_to_channel(&ch, &ping(n + 1));
    within(30, "the bot varies a pong Twitch would drop", async {
        while !sent(&w).iter().any(|t| t.starts_with("pong (")) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let log = w.helix.log();
    let sent: Vec<&str> = log
        .iter()
        .filter(|m| m.dropped.is_none())
        .map(|m| m.text.as_str())
        .collect();
    assert_eq!(sent[0], "pong", "{log:?}");
    assert!(
        sent[1].starts_with("pong ("),
        "varied after msg_duplicate: {log:?}"
    );
    assert!(
        log.iter()
            .any(|m| m.dropped.as_deref() == Some("msg_duplicate")),
        "{log:?}"
    );
    cancel.cancel();
    within(10, "the bot stops", bot).await.unwrap().unwrap();
    w.stop().await;
}

#[tokio::test]
async fn fault_a_broker_restart_with_200_commands_queued_loses_none_and_sends_none_twice() {
    let broker = testkit::fault::FaultBroker::ensure();
    let url = broker.amqp_url().to_owned();
    let chans = channels(4);
    let mut w = World::start_on(&chans, Some(url.clone()), &url).await;
    for c in &chans {
        w.helix.set_moderator(c, "chatbot");
    }
    w.ing.take().unwrap().stop().await;
    // 200 commands wait in the durable queue while no ingestor takes them
    // (their receipts go to this client's connection, which the restart
    // closes: what is checked is what reached Twitch).
    for i in 0..200 {
        let mut c = w.command(&chans[i % 4], say(&format!("restart {i}")));
        c.expires_at = Some(c.issued_at + chrono::Duration::seconds(120));
        let client = w.commands.clone();
        tokio::spawn(async move { client.execute(c).await });
    }
    let ch = w.conn.create_channel().await.unwrap();
    within(20, "200 commands queued", async {
        while rabbit::queue_depth(&ch, &w.queue).await < 200 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    w.start_ingestor().await;
    within(30, "some commands sent", async {
        while w.helix.log().len() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let broker = tokio::task::spawn_blocking(move || {
        broker.stop_app();
        broker.start_app();
        broker
    })
    .await
    .unwrap();
    within(120, "every queued command sent", async {
        while w.helix.log().len() < 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let conn = rabbit::connect_to(&url, "test-commands-after").await;
    let ch = conn.create_channel().await.unwrap();
    within(30, "the command queue drained", async {
        while rabbit::queue_depth(&ch, &w.queue).await > 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let log = w.helix.log();
    let mut texts: Vec<&str> = log.iter().map(|m| m.text.as_str()).collect();
    texts.sort_unstable();
    let all = texts.len();
    texts.dedup();
    assert_eq!((all, texts.len()), (200, 200), "none lost, none sent twice");
    w.conn = conn;
    w.stop().await;
    drop(broker);
}
