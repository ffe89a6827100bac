//! YouTube commands end to end: `CommandClient` publishes to a fresh
//! command exchange on the real RabbitMQ, the ingestor's intake hands them
//! to the YouTube sender, which writes to the fake YouTube's chat the
//! reader follows; the receipt comes back on direct reply-to.

use common::Secret;
use common::amqp::commands::CommandClient;
use common::command::{Receipt, ReceiptStatus};
use common::token_store::{AccountStatus, StoredToken, TokenStore};
use ingestor::Config;
use ingestor::platforms::youtube::sender::FORCE_SSL;
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use serde_json::json;
use testkit::fake_youtube::{self, FakeCall, FakeError};
use testkit::rabbit::{self, unique};

use crate::helpers::*;
use crate::youtube::{World, wait_state};

/// The sender's token-store account.
const ACCOUNT: &str = "bot@example.com";

/// A command-taking ingestor reading one channel of a fake YouTube, with
/// the client that commands it.
struct Commanding {
    w: World,
    ing: Running,
    client: CommandClient,
    conn: lapin::Connection,
    exchange: String,
    queue: String,
    _store: tempfile::TempDir,
}

impl Commanding {
    /// The world of a test: the sender's token has `scopes`; `tune`
    /// adjusts the config; the channel goes live first when `live`.
    async fn start(tag: &str, scopes: &[&str], live: bool, tune: impl FnOnce(&mut Config)) -> Self {
        let w = World::new(tag, &format!("@{tag}")).await;
        if live {
            w.go_live();
        }
        let store = tempfile::tempdir().unwrap();
        let path = store.path().join("tokenStore.json");
        let now = chrono::Utc::now();
        TokenStore::new(&path)
            .update_token(StoredToken {
                platform: "youtube".into(),
                login: ACCOUNT.into(),
                user_id: "UCchatbus000000000000000".into(),
                access_token: Secret::new(fake_youtube::ACCESS_TOKEN),
                refresh_token: None,
                expires_at: Some(now + chrono::Duration::hours(1)),
                scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
                obtained_at: now,
                last_refreshed_at: None,
                last_validated_at: None,
                status: AccountStatus::Valid,
                status_reason: None,
            })
            .await
            .unwrap();
        let exchange = unique(&format!("{tag}-commands"));
        let queue = unique(&format!("{tag}-intake"));
        let mut cfg = w.config(&[&w.channel]);
        cfg.oauth.token_store_path = path;
        cfg.platforms.youtube.youtube_sender = Some(format!("youtube:{ACCOUNT}"));
        cfg.commands_exchange = exchange.clone();
        cfg.commands_queue = queue.clone();
        cfg.commands_allow = vec![format!("youtube:{ACCOUNT}:moderate")];
        tune(&mut cfg);
        let ing = Running::start(cfg).await;
        let state = if live { "joined" } else { "waiting" };
        wait_state(&ing, &w.channel, state, None).await;
        let conn = rabbit::connect("test-yt-commands").await;
        let client = CommandClient::open(&conn, &exchange, "test").await.unwrap();
        Self {
            w,
            ing,
            client,
            conn,
            exchange,
            queue,
            _store: store,
        }
    }

    /// Sends `text` to the channel (again while the intake's queue is not
    /// bound yet: a command answered `no_sender` was never routed).
    async fn send(&self, text: &str) -> Receipt {
        self.until_routed(|| self.client.send("youtube", &self.w.channel, text))
            .await
    }

    async fn until_routed<F, Fut>(&self, mut command: F) -> Receipt
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Receipt, common::amqp::AmqpError>>,
    {
        testkit::within(30, "the intake takes commands", async {
            loop {
                let receipt = command().await.unwrap();
                if receipt.reason.as_deref() != Some("no_sender") {
                    return receipt;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await
    }

    async fn stop(self) {
        self.ing.stop().await;
        let channel = self.conn.create_channel().await.unwrap();
        for queue in [self.queue.clone(), format!("{}.dead-letter", self.exchange)] {
            let _ = channel
                .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        for exchange in [self.exchange.clone(), format!("{}.dlx", self.exchange)] {
            let _ = channel
                .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
        self.w.tap.cleanup().await;
    }
}

fn assert_status(receipt: &Receipt, status: ReceiptStatus, reason: Option<&str>) {
    assert_eq!(
        (receipt.status, receipt.reason.as_deref()),
        (status, reason),
        "{receipt:?}"
    );
}

#[tokio::test]
async fn a_send_is_written_to_the_chat_and_read_back_as_an_event() {
    let mut c = Commanding::start("test-yt-cmd-send", &[FORCE_SSL], true, |_| {}).await;
    let receipt = c.send("hello from chatbus 👋").await;
    assert_status(&receipt, ReceiptStatus::Sent, None);
    let id = receipt.platform_message_id.clone().expect("the message id");

    let writes = c.w.yt.writes();
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].call, FakeCall::ChatInsert);
    assert_eq!(writes[0].token.as_deref(), Some(fake_youtube::ACCESS_TOKEN));
    let chat = format!("chat-{}", c.w.video);
    assert_eq!(
        writes[0].body,
        json!({"snippet": {"liveChatId": chat, "type": "textMessageEvent", "textMessageDetails": {"messageText": "hello from chatbus 👋"}}})
    );

    // The reader reads it back and publishes it.
    let got =
        c.w.tap
            .collect_until(30, "the sent message", |g| {
                g.iter().any(|d| d.event.id == id)
            })
            .await;
    let event = &got.iter().find(|d| d.event.id == id).unwrap().event;
    assert_eq!(event.text.as_deref(), Some("hello from chatbus 👋"));
    assert_eq!(event.channel, c.w.channel);

    // And it can be deleted.
    let receipt = c.client.delete("youtube", &c.w.channel, &id).await.unwrap();
    assert_status(&receipt, ReceiptStatus::Sent, None);
    let delete = c.w.yt.writes().pop().unwrap();
    assert_eq!(
        (delete.call, delete.id.as_deref(), delete.status),
        (FakeCall::ChatDelete, Some(id.as_str()), 204)
    );
    c.stop().await;
}

#[tokio::test]
async fn a_timeout_is_lifted_by_an_unban_of_the_ban_it_placed() {
    let c = Commanding::start("test-yt-cmd-ban", &[FORCE_SSL], true, |_| {}).await;
    let user = "UCtroll00000000000000000";
    let receipt = c
        .until_routed(|| {
            c.client
                .timeout("youtube", &c.w.channel, user, 60, Some("calm down"))
        })
        .await;
    assert_status(&receipt, ReceiptStatus::Sent, None);
    let ban = receipt.platform_message_id.clone().expect("the ban id");
    let chat = format!("chat-{}", c.w.video);
    assert_eq!(
        c.w.yt.bans().get(&ban),
        Some(&(chat.clone(), user.to_owned()))
    );
    let write = c.w.yt.writes().pop().unwrap();
    assert_eq!(write.call, FakeCall::BanInsert);
    assert_eq!(
        write.body,
        json!({"snippet": {"liveChatId": chat, "type": "temporary", "banDurationSeconds": "60", "bannedUserDetails": {"channelId": user}}})
    );

    let receipt = c.client.unban("youtube", &c.w.channel, user).await.unwrap();
    assert_status(&receipt, ReceiptStatus::Sent, None);
    assert!(c.w.yt.bans().is_empty());
    let write = c.w.yt.writes().pop().unwrap();
    assert_eq!(
        (write.call, write.id.as_deref(), write.status),
        (FakeCall::BanDelete, Some(ban.as_str()), 204)
    );

    // A ban chatbus did not place (or already lifted) cannot be lifted.
    let receipt = c.client.unban("youtube", &c.w.channel, user).await.unwrap();
    assert_eq!(receipt.status, ReceiptStatus::Rejected);
    let reason = receipt.reason.unwrap();
    assert!(
        reason.starts_with("unknown_ban: chatbus placed no ban"),
        "{reason}"
    );
    assert_eq!(c.w.yt.writes().len(), 2, "nothing more written");
    c.stop().await;
}

#[tokio::test]
async fn a_command_for_a_channel_that_is_not_live_is_rejected_not_live() {
    let c = Commanding::start("test-yt-cmd-offline", &[FORCE_SSL], false, |_| {}).await;
    let receipt = c.send("anyone?").await;
    assert_status(&receipt, ReceiptStatus::Rejected, Some("not_live"));
    // A channel not followed at all.
    let receipt = c
        .client
        .send("youtube", "UCnotfollowed00000000000", "hi")
        .await
        .unwrap();
    assert_status(&receipt, ReceiptStatus::Rejected, Some("not_live"));
    assert!(c.w.yt.writes().is_empty());
    c.stop().await;
}

#[tokio::test]
async fn a_token_without_the_write_scope_is_rejected_naming_it() {
    let c = Commanding::start(
        "test-yt-cmd-scope",
        &["https://www.googleapis.com/auth/youtube.readonly"],
        true,
        |_| {},
    )
    .await;
    let receipt = c.send("hi").await;
    let want = format!("missing_scope: {FORCE_SSL}");
    assert_status(&receipt, ReceiptStatus::Rejected, Some(want.as_str()));
    assert!(c.w.yt.writes().is_empty());
    c.stop().await;
}

#[tokio::test]
async fn commands_past_their_share_of_the_quota_are_rejected_quota_exceeded() {
    // 960 units, 1/32 for commands: 30 units, one message (20 units).
    let c = Commanding::start("test-yt-cmd-quota", &[FORCE_SSL], true, |cfg| {
        cfg.platforms.youtube.youtube_daily_quota = 960;
        cfg.platforms.youtube.youtube_command_quota_share = 1.0 / 32.0;
    })
    .await;
    assert_status(&c.send("one").await, ReceiptStatus::Sent, None);
    assert_status(
        &c.send("two").await,
        ReceiptStatus::Rejected,
        Some("quota_exceeded"),
    );
    assert_eq!(c.w.yt.calls(FakeCall::ChatInsert), 1);
    c.stop().await;
}

#[tokio::test]
async fn rate_limit_exceeded_is_retried_and_quota_exceeded_stops() {
    let c = Commanding::start("test-yt-cmd-rate", &[FORCE_SSL], true, |_| {}).await;
    c.w.yt
        .fail_next(FakeCall::ChatInsert, FakeError::RateLimited, 1);
    let receipt = c.send("patience").await;
    assert_status(&receipt, ReceiptStatus::Sent, None);
    let statuses: Vec<u16> = c.w.yt.writes().iter().map(|w| w.status).collect();
    assert_eq!(statuses, [403, 200]);

    // quotaExceeded: failed with YouTube's word, and nothing more is tried.
    c.w.yt
        .fail_next(FakeCall::ChatInsert, FakeError::QuotaExceeded, 1);
    let receipt = c.send("too much").await;
    assert_status(&receipt, ReceiptStatus::Failed, Some("quotaExceeded"));
    let receipt = c.send("still too much").await;
    assert_status(&receipt, ReceiptStatus::Rejected, Some("quota_exceeded"));
    assert_eq!(c.w.yt.calls(FakeCall::ChatInsert), 3);
    c.stop().await;
}
