//! Sending from the page: `POST /api/commands` turns a request into
//! `ChatCommand`s, publishes them with common's
//! [`CommandClient`] and answers their [`Receipt`]s.
//!
//! ```text
//! POST /api/commands --(CONSUMER_COMMAND_TOKEN)--> [Command ...] --CommandClient--> CONSUMER_COMMANDS_EXCHANGE
//!        ^                                                                               |
//!        '------------- Receipt per command, in order <---- direct reply-to <--- a sender (the ingestor)
//! ```
//!
//! * **Off unless a write token is set.** Without `CONSUMER_COMMAND_TOKEN`
//!   the endpoint answers 403 `commands_off`; with it, only
//!   `Authorization: Bearer <that token>` passes (compared in constant
//!   time, never from the URL). The read token (`CONSUMER_API_TOKEN`)
//!   never allows writing; the configuration refuses the two being equal.
//! * **One client per broker connection.** Ingest's session opens the
//!   [`CommandClient`] on its connection ([`keep`]) and puts it in the
//!   [`Commands`] slot; a lost session empties the slot (503
//!   `commands_unavailable` until the next connection), and a client whose
//!   channel failed is reopened on the same connection.
//! * **Everything checked before anything is sent.** The whole body is
//!   parsed and every command validated first: a bad body is 400 with the
//!   reason and publishes nothing. A list of targets publishes one command
//!   per target, all at once, and answers their receipts in the targets'
//!   order.

use std::sync::{Arc, Mutex};

use common::Secret;
use common::amqp::commands::CommandClient;
use common::amqp::{AmqpError, CommandTopology};
use common::command::{ChatCommand, CommandAction, Receipt, ReceiptStatus};
use common::http::ApiError;
use serde::Deserialize;
use tokio::sync::Notify;
use warp::http::StatusCode;
use warp::{Filter, Rejection, Reply};

/// Largest request body, in bytes.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;

/// Most targets of one request.
pub const MAX_TARGETS: usize = 50;

/// The AMQP `app_id` of the consumer's commands.
pub const APP_ID: &str = "chatbus-consumer";

/// The [`CommandClient`] of the current broker connection, if there is
/// one, and the topology it declares.
#[derive(Debug)]
pub struct Commands {
    topology: CommandTopology,
    client: Mutex<Option<CommandClient>>,
    reopen: Notify,
}

impl Commands {
    /// A slot for clients publishing to `topology`'s exchange; empty until
    /// [`Commands::open`].
    pub fn new(topology: CommandTopology) -> Self {
        Self {
            topology,
            client: Mutex::new(None),
            reopen: Notify::new(),
        }
    }

    /// The client, while connected.
    pub fn client(&self) -> Option<CommandClient> {
        self.client.lock().expect("commands lock").clone()
    }

    fn set(&self, client: Option<CommandClient>) {
        *self.client.lock().expect("commands lock") = client;
    }

    /// The client's channel failed: drop it and ask for a new one.
    fn broken(&self) {
        self.set(None);
        self.reopen.notify_one();
    }

    /// Opens the client on `connection` (declaring the command topology).
    ///
    /// # Errors
    /// When the broker refuses the topology or the channel
    /// ([`AmqpError::Conflict`] for an exchange of another type: permanent).
    pub async fn open(&self, connection: &lapin::Connection) -> Result<(), AmqpError> {
        let client = CommandClient::open_with(connection, &self.topology, APP_ID).await?;
        self.set(Some(client));
        Ok(())
    }

    /// Keeps the slot filled while `connection` lasts: reopens the client
    /// each time a request found its channel failed. Never returns; the
    /// session that owns `connection` drops it, then calls
    /// [`Commands::closed`].
    pub async fn keep(&self, connection: &lapin::Connection) {
        loop {
            self.reopen.notified().await;
            if self.client().is_some() {
                continue;
            }
            match self.open(connection).await {
                Ok(()) => {
                    tracing::info!(exchange = %self.topology.exchange, "command channel reopened");
                }
                Err(e) => tracing::warn!(error = %e, "cannot reopen the command channel"),
            }
        }
    }

    /// Empties the slot: the connection it was opened on is gone.
    pub fn closed(&self) {
        self.set(None);
    }
}

/// One target of a list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    platform: String,
    channel: String,
}

/// The body: one command, or one text for several targets.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandRequest {
    platform: Option<String>,
    channel: Option<String>,
    kind: Option<String>,
    text: Option<String>,
    reply_to: Option<String>,
    message_id: Option<String>,
    user_id: Option<String>,
    seconds: Option<u32>,
    reason: Option<String>,
    targets: Option<Vec<Target>>,
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad_request("invalid_command", message)
}

impl CommandRequest {
    /// The fields given, by name.
    fn given(&self) -> Vec<&'static str> {
        let fields = [
            ("platform", self.platform.is_some()),
            ("channel", self.channel.is_some()),
            ("kind", self.kind.is_some()),
            ("text", self.text.is_some()),
            ("reply_to", self.reply_to.is_some()),
            ("message_id", self.message_id.is_some()),
            ("user_id", self.user_id.is_some()),
            ("seconds", self.seconds.is_some()),
            ("reason", self.reason.is_some()),
            ("targets", self.targets.is_some()),
        ];
        fields
            .into_iter()
            .filter_map(|(name, set)| set.then_some(name))
            .collect()
    }

    /// The `(platform, channel, action)` of each command, in order.
    fn actions(self) -> Result<Vec<(String, String, CommandAction)>, ApiError> {
        let given = self.given();
        let only = |allowed: &[&str], what: &str| match given.iter().find(|f| !allowed.contains(f))
        {
            Some(extra) => Err(bad(format!("`{extra}` is not a field of {what}"))),
            None => Ok(()),
        };
        if let Some(targets) = self.targets {
            only(&["targets", "text", "kind"], "a list of targets")?;
            if self.kind.as_deref().is_some_and(|k| k != "send") {
                return Err(bad(
                    "a list of targets only sends: `kind` is `send` or absent",
                ));
            }
            let text = self.text.ok_or_else(|| bad("`text` is required"))?;
            if targets.is_empty() || targets.len() > MAX_TARGETS {
                return Err(bad(format!("`targets` lists 1 to {MAX_TARGETS} channels")));
            }
            return Ok(targets
                .into_iter()
                .map(|t| {
                    let action = CommandAction::Send {
                        text: text.clone(),
                        reply_to: None,
                    };
                    (t.platform, t.channel, action)
                })
                .collect());
        }
        let required = |value: Option<String>, name: &str| {
            value.ok_or_else(|| bad(format!("`{name}` is required")))
        };
        let platform = required(self.platform, "platform")?;
        let channel = required(self.channel, "channel")?;
        let kind = required(self.kind, "kind")?;
        let common = ["platform", "channel", "kind"];
        let with = |more: &[&'static str]| [&common[..], more].concat();
        let action = match kind.as_str() {
            "send" => {
                only(&with(&["text", "reply_to"]), "`send`")?;
                CommandAction::Send {
                    text: required(self.text, "text")?,
                    reply_to: self.reply_to,
                }
            }
            "delete" => {
                only(&with(&["message_id"]), "`delete`")?;
                CommandAction::Delete {
                    message_id: required(self.message_id, "message_id")?,
                }
            }
            "timeout" => {
                only(&with(&["user_id", "seconds", "reason"]), "`timeout`")?;
                CommandAction::Timeout {
                    user_id: required(self.user_id, "user_id")?,
                    seconds: self.seconds.ok_or_else(|| bad("`seconds` is required"))?,
                    reason: self.reason,
                }
            }
            "ban" => {
                only(&with(&["user_id", "reason"]), "`ban`")?;
                CommandAction::Ban {
                    user_id: required(self.user_id, "user_id")?,
                    reason: self.reason,
                }
            }
            "unban" => {
                only(&with(&["user_id"]), "`unban`")?;
                CommandAction::Unban {
                    user_id: required(self.user_id, "user_id")?,
                }
            }
            other => {
                return Err(bad(format!(
                    "`kind` is send, delete, timeout, ban or unban, not `{other}`"
                )));
            }
        };
        Ok(vec![(platform, channel, action)])
    }
}

/// Parses and validates `body`: the commands to publish (fresh ids, issued
/// now) and whether the answer is a list.
fn parse(body: &[u8]) -> Result<(Vec<ChatCommand>, bool), ApiError> {
    let request: CommandRequest = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request("invalid_body", format!("not a command: {e}")))?;
    let list = request.targets.is_some();
    let mut commands = Vec::new();
    for (platform, channel, action) in request.actions()? {
        let id = uuid::Uuid::new_v4().to_string();
        let command = ChatCommand::new(id, platform, channel, action);
        command.validate().map_err(|e| bad(e.to_string()))?;
        commands.push(command);
    }
    Ok((commands, list))
}

/// Publishes `command` and waits for its receipt; a command the broker
/// did not take is answered `failed: not_published` (and the client's
/// channel replaced if it failed).
async fn execute(client: &CommandClient, slot: &Commands, command: ChatCommand) -> Receipt {
    let (id, platform, channel, kind) = (
        command.id.clone(),
        command.platform.clone(),
        command.channel.clone(),
        command.action.kind(),
    );
    let receipt = match client.execute(command).await {
        Ok(receipt) => receipt,
        Err(e) => {
            tracing::warn!(error = %e, command = %id, "a command was not published");
            if e.needs_reconnect() {
                slot.broken();
            }
            Receipt {
                id: id.clone(),
                status: ReceiptStatus::Failed,
                platform_message_id: None,
                reason: Some("not_published".into()),
                at: chrono::Utc::now(),
            }
        }
    };
    let status = serde_json::to_value(receipt.status)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    metrics::counter!("chatbus_consumer_commands_total", "kind" => kind, "status" => status.clone())
        .increment(1);
    tracing::info!(
        command = %id,
        %platform,
        %channel,
        kind,
        status,
        reason = receipt.reason.as_deref().unwrap_or(""),
        "command answered"
    );
    receipt
}

/// `POST /api/commands`: off (403) without `token`, else behind it.
pub fn routes(
    slot: Arc<Commands>,
    token: Option<Secret>,
) -> impl Filter<Extract = (impl Reply,), Error = Rejection> + Clone {
    let gate = crate::api::write_gate(
        token,
        "commands_off",
        "sending is off on this consumer: set CONSUMER_COMMAND_TOKEN \
         to allow POST /api/commands",
    );
    warp::path!("api" / "commands")
        .and(warp::post())
        .and(gate)
        .and(warp::body::content_length_limit(MAX_BODY_BYTES))
        .and(warp::body::bytes())
        .and(warp::any().map(move || slot.clone()))
        .and_then(|body: bytes::Bytes, slot: Arc<Commands>| async move {
            let (commands, list) = parse(&body).map_err(warp::reject::custom)?;
            let Some(client) = slot.client() else {
                return Err(warp::reject::custom(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "commands_unavailable",
                    "not connected to RabbitMQ; try again shortly",
                )));
            };
            let receipts = futures::future::join_all(
                commands
                    .into_iter()
                    .map(|command| execute(&client, &slot, command)),
            )
            .await;
            Ok::<_, Rejection>(if list {
                warp::reply::json(&receipts).into_response()
            } else {
                warp::reply::json(&receipts[0]).into_response()
            })
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actions(body: serde_json::Value) -> Result<Vec<(String, String, CommandAction)>, String> {
        serde_json::from_value::<CommandRequest>(body)
            .map_err(|e| e.to_string())?
            .actions()
            .map_err(|e| e.message)
    }

    const SEND: &str = r#"{"platform":"twitch","channel":"x","kind":"send","text":"hi"}"#;

    async fn post(token: Option<&str>, auth: Option<&str>) -> (u16, serde_json::Value) {
        post_body(token, auth, SEND).await
    }

    async fn post_body(
        token: Option<&str>,
        auth: Option<&str>,
        body: &str,
    ) -> (u16, serde_json::Value) {
        let slot = Arc::new(Commands::new(CommandTopology::named("chat.commands")));
        let routes = routes(slot, token.map(Secret::new)).recover(common::http::handle_rejection);
        let mut req = warp::test::request()
            .method("POST")
            .path("/api/commands")
            .body(body);
        if let Some(auth) = auth {
            req = req.header("authorization", auth);
        }
        let res = req.reply(&routes).await;
        let body = serde_json::from_slice(res.body()).unwrap();
        (res.status().as_u16(), body)
    }

    #[tokio::test]
    async fn without_a_command_token_sending_is_off_and_says_so() {
        let (status, body) = post(None, Some("Bearer anything")).await;
        assert_eq!(status, 403);
        assert_eq!(body["error"], "commands_off");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("CONSUMER_COMMAND_TOKEN")
        );
    }

    #[tokio::test]
    async fn with_one_only_its_bearer_header_passes() {
        assert_eq!(post(Some("w"), None).await.0, 401);
        assert_eq!(post(Some("w"), Some("Bearer r")).await.0, 401);
        // The right token, and no broker connection yet: 503, not sent.
        let (status, body) = post(Some("w"), Some("Bearer w")).await;
        assert_eq!(status, 503);
        assert_eq!(body["error"], "commands_unavailable");
    }

    #[tokio::test]
    async fn a_bad_body_is_400_before_the_broker_is_asked() {
        let (status, body) =
            post_body(Some("w"), Some("Bearer w"), r#"{"platform":"twitch"}"#).await;
        assert_eq!(status, 400);
        assert_eq!(body["error"], "invalid_command");
    }

    #[test]
    fn one_command_of_each_kind() {
        let send = actions(serde_json::json!({
            "platform": "twitch", "channel": "x", "kind": "send", "text": "hi", "reply_to": "m1"
        }))
        .unwrap();
        assert_eq!(
            send[0].2,
            CommandAction::Send {
                text: "hi".into(),
                reply_to: Some("m1".into())
            }
        );
        let timeout = actions(serde_json::json!({
            "platform": "youtube", "channel": "UCx", "kind": "timeout", "user_id": "UCy", "seconds": 600
        }))
        .unwrap();
        assert_eq!(timeout[0].0, "youtube");
        assert_eq!(
            timeout[0].2,
            CommandAction::Timeout {
                user_id: "UCy".into(),
                seconds: 600,
                reason: None
            }
        );
        let delete = actions(serde_json::json!({
            "platform": "twitch", "channel": "x", "kind": "delete", "message_id": "m1"
        }))
        .unwrap();
        assert_eq!(delete[0].2.kind(), "delete");
    }

    #[test]
    fn a_list_of_targets_is_one_send_per_target_in_order() {
        let all = actions(serde_json::json!({
            "targets": [{"platform": "twitch", "channel": "a"}, {"platform": "youtube", "channel": "UCb"}],
            "text": "hello both"
        }))
        .unwrap();
        let targets: Vec<_> = all.iter().map(|(p, c, _)| format!("{p}:{c}")).collect();
        assert_eq!(targets, ["twitch:a", "youtube:UCb"]);
        assert!(all.iter().all(|(_, _, a)| *a
            == CommandAction::Send {
                text: "hello both".into(),
                reply_to: None
            }));
    }

    #[test]
    fn mistakes_are_named() {
        for (body, needle) in [
            (
                serde_json::json!({"channel": "x", "kind": "send", "text": "t"}),
                "`platform` is required",
            ),
            (
                serde_json::json!({"platform": "twitch", "channel": "x", "kind": "shout"}),
                "not `shout`",
            ),
            (
                serde_json::json!({"platform": "twitch", "channel": "x", "kind": "send", "text": "t", "user_id": "u"}),
                "`user_id` is not a field of `send`",
            ),
            (
                serde_json::json!({"platform": "twitch", "channel": "x", "kind": "timeout", "user_id": "u"}),
                "`seconds`",
            ),
            (serde_json::json!({"targets": [], "text": "t"}), "1 to 50"),
            (
                serde_json::json!({"targets": [{"platform": "twitch", "channel": "x"}]}),
                "`text` is required",
            ),
            (
                serde_json::json!({"targets": [{"platform": "twitch", "channel": "x"}], "text": "t", "platform": "twitch"}),
                "`platform` is not a field of a list",
            ),
            (
                serde_json::json!({"targets": [{"platform": "twitch", "channel": "x"}], "text": "t", "kind": "ban"}),
                "only sends",
            ),
            (
                serde_json::json!({"platform": "twitch", "nope": 1}),
                "unknown field `nope`",
            ),
        ] {
            let err = actions(body.clone()).unwrap_err();
            assert!(err.contains(needle), "{body}: {err}");
        }
    }
}
