//! A local stand-in for Twitch chat, for trying chatbus offline
//! (`scripts/dev.sh --demo`): speaks Twitch's IRC on 127.0.0.1 and replays
//! the real chat lines of the corpus, with fresh ids and timestamps, into
//! whatever channels the client joins, now and then with a moderation
//! event (a deleted message, a timeout) or a sub.
//!
//! With `--helix-addr` it also serves a fake Helix there (sending chat and
//! moderating, with Twitch's limits) for the account `--account` (token
//! `--token`), whose accepted messages show up in its chat.
//!
//! ```sh
//! cargo run -p testkit --bin fake-twitch -- --addr 127.0.0.1:6667 --rate 5 \
//!     --helix-addr 127.0.0.1:6680 --account chatbus_demo_bot --token demo-token
//! ```

use std::time::Duration;

use testkit::corpus;
use testkit::fake_helix::FakeHelix;
use testkit::fake_irc::{FakeIrc, channel_of};

/// The demo account's scopes: sending and moderating.
const DEMO_SCOPES: &[&str] = &[
    "chat:read",
    "user:write:chat",
    "user:read:moderated_channels",
    "moderator:manage:chat_messages",
    "moderator:manage:banned_users",
];

/// `line` sent to `#to` now, with a fresh `id` and `tmi-sent-ts`.
fn refresh(line: &str, to: &str, n: u64) -> String {
    let line = corpus::retarget(line, to);
    let id = format!("demo-{n}-{}", uuid::Uuid::new_v4().simple());
    let line = corpus::set_tag(&line, "id", &id);
    corpus::set_tag(
        &line,
        "tmi-sent-ts",
        &chrono::Utc::now().timestamp_millis().to_string(),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr: String = testkit::cli_arg("--addr", "127.0.0.1:6667".to_owned());
    let rate: f64 = testkit::cli_arg("--rate", 5.0);
    let helix_addr: String = testkit::cli_arg("--helix-addr", String::new());
    let account: String = testkit::cli_arg("--account", "chatbus_demo_bot".to_owned());
    let token: String = testkit::cli_arg("--token", "demo-token".to_owned());
    let server = std::sync::Arc::new(FakeIrc::start_on(&addr).await?);
    eprintln!(
        "fake Twitch IRC on {} replaying corpus chat at {rate}/s per joined channel",
        server.addr()
    );
    let _helix = if helix_addr.is_empty() {
        None
    } else {
        let helix = FakeHelix::start_on(&helix_addr).await?;
        helix.set_auto_users(true);
        helix.add_account(&account, "90000001", &token, DEMO_SCOPES);
        helix.echo_to(server.clone());
        eprintln!("fake Helix on {} for account {account}", helix.url());
        Some(helix)
    };
    let chat: Vec<String> = corpus::lines_with_command("PRIVMSG")
        .into_iter()
        .filter(|l| l.starts_with('@') && channel_of(l).is_some())
        .collect();
    let notices: Vec<String> = corpus::lines_with_command("USERNOTICE");
    let period = Duration::from_secs_f64(1.0 / rate.max(0.01));
    let mut n: u64 = 0;
    let mut last_id: std::collections::HashMap<String, String> = Default::default();
    loop {
        tokio::time::sleep(period).await;
        for channel in server.joined_channels() {
            n += 1;
            let line = if n.is_multiple_of(40) {
                // A moderator deletes the previous message in this channel.
                match last_id.get(&channel) {
                    Some(id) => format!(
                        "@login=someone;room-id=1;target-msg-id={id};tmi-sent-ts={} :tmi.twitch.tv CLEARMSG #{channel} :deleted by the demo",
                        chrono::Utc::now().timestamp_millis()
                    ),
                    None => continue,
                }
            } else if n.is_multiple_of(53) {
                refresh(&notices[(n as usize / 53) % notices.len()], &channel, n)
            } else {
                refresh(&chat[n as usize % chat.len()], &channel, n)
            };
            if let Some(id) = line.split(';').find_map(|t| t.strip_prefix("id=")) {
                last_id.insert(channel.clone(), id.to_owned());
            }
            server.send_to_channel(&channel, &line);
        }
    }
}
