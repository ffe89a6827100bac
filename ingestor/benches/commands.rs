//! Commands benchmark: a fake Twitch Helix in this process, the ingestor
//! binary taking commands from the local RabbitMQ, and a `CommandClient`
//! publishing them and awaiting their receipts.
//!
//! ```sh
//! # command -> fake Helix -> receipt back at the publisher, at 10 commands/s
//! # (limits raised so that no command waits for them)
//! cargo bench -p ingestor --bench commands -- --mode latency --rate 10 --seconds 60
//! # Twitch's real limits at 5x the allowed demand (each account at 5x its
//! # own limit: 140 per 30 s in all, so 23.4 commands/s), 50 channels, 3
//! # accounts (one a moderator in 10 of the channels, sending only there)
//! cargo bench -p ingestor --bench commands -- --mode limits --rate 23.4 --seconds 600
//! ```
//!
//! `limits` recomputes every 30-s window and every 1-s interval per channel
//! from the fake's own log of arrival times (`fake_helix::violations`),
//! checks every command got a receipt, and reports each account's
//! throughput as a share of what its window allows over the run.

use std::time::{Duration, Instant};

use common::amqp::commands::CommandClient;
use common::command::{CommandAction, ReceiptStatus};
use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use testkit::fake_helix::{self, ChatLimits, FakeHelix};
use testkit::rabbit::{self, unique};

const SCOPES: &[&str] = &[
    "chat:read",
    "user:write:chat",
    "user:read:moderated_channels",
];

fn stored(login: &str, id: &str) -> serde_json::Value {
    serde_json::json!({
        "platform": "twitch", "login": login, "user_id": id,
        "access_token": format!("tok-{login}"), "refresh_token": null,
        "expires_at": "2099-01-01T00:00:00Z", "scopes": SCOPES,
        "obtained_at": "2026-01-01T00:00:00Z", "status": "valid"
    })
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::main]
async fn main() {
    let mode: String = testkit::cli_arg("--mode", "latency".to_owned());
    let rate: f64 = testkit::cli_arg("--rate", 10.0);
    let seconds: f64 = testkit::cli_arg("--seconds", 60.0);
    let n_channels: usize = testkit::cli_arg("--channels", 50);
    let latency = mode == "latency";

    let helix = FakeHelix::start().await;
    let limits = if latency {
        ChatLimits {
            window: Duration::from_secs(30),
            normal: 1_000_000,
            privileged: 1_000_000,
            channel_interval: Duration::ZERO,
            duplicate_window: Duration::from_secs(30),
        }
    } else {
        ChatLimits::twitch()
    };
    helix.set_limits(limits);
    let accounts = ["bench_a", "bench_b", "bench_mod"];
    for (i, a) in accounts.iter().enumerate() {
        helix.add_account(a, &format!("{}", 100 + i), &format!("tok-{a}"), SCOPES);
    }
    let channels: Vec<String> = (0..n_channels).map(|i| format!("bench_ch{i}")).collect();
    for (i, c) in channels.iter().enumerate() {
        helix.add_user(c, &format!("{}", 10_000 + i));
    }
    // The moderator account moderates the first 10 channels.
    let modded: Vec<String> = channels.iter().take(10).cloned().collect();
    for c in &modded {
        helix.set_moderator(c, "bench_mod");
    }

    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("tokenStore.json");
    let mut file = serde_json::json!({"version": 1, "accounts": {}});
    for (i, a) in accounts.iter().enumerate() {
        file["accounts"][format!("twitch:{a}")] = stored(a, &format!("{}", 100 + i));
    }
    std::fs::write(&store, serde_json::to_vec(&file).unwrap()).unwrap();
    std::fs::set_permissions(&store, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();

    let chat = unique("bench-cmd-chat");
    let commands_exchange = unique("bench-commands");
    let queue = format!("{commands_exchange}.ingestor");
    let port = testkit::free_port();
    let ingestor_limits: Vec<(&str, String)> = if latency {
        vec![
            ("TWITCH_SEND_LIMIT", "100000".into()),
            ("TWITCH_SEND_LIMIT_PRIVILEGED", "100000".into()),
            ("TWITCH_SEND_CHANNEL_INTERVAL", "1ms".into()),
            ("TWITCH_SEND_MARGIN", "0s".into()),
        ]
    } else {
        Vec::new()
    };
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &chat)
        .env("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SPOOL_DIR", dir.path().join("spool"))
        .env("TOKEN_STORE_PATH", &store)
        .env("TWITCH_CLIENT_ID", fake_helix::CLIENT_ID)
        .env("TWITCH_HELIX_URL", helix.url())
        .env("TWITCH_IRC_ADDR", "127.0.0.1:9")
        .env("TWITCH_IRC_TLS", "false")
        .env("TWITCH_SENDER", "bench_a")
        .env("COMMANDS_EXCHANGE", &commands_exchange)
        .env("COMMANDS_QUEUE", &queue)
        .env("COMMANDS_PREFETCH", "65535")
        .env(
            "COMMANDS_ALLOW",
            "twitch:bench_a,twitch:bench_b,twitch:bench_mod",
        )
        .envs(ingestor_limits)
        .current_dir(dir.path())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the ingestor (cargo bench builds it)");

    let conn = rabbit::connect("bench-commands").await;
    let client = CommandClient::open(&conn, &commands_exchange, "bench")
        .await
        .unwrap();
    // Until the ingestor takes commands (before, they come back no_sender).
    testkit::eventually(60, "the ingestor takes commands", || {
        let client = client.clone();
        async move {
            let r = client.send("twitch", "bench_ch0", "warm-up").await.ok()?;
            (r.status != ReceiptStatus::Rejected).then_some(())
        }
    })
    .await;
    let warmup_sent = helix.log().len();

    let total = (rate * seconds) as usize;
    let period = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for i in 0..total {
        tick.tick().await;
        let (account, channel) = if latency {
            ("bench_mod", modded[i % modded.len()].clone())
        } else {
            // Each account at 5x its own limit: a and b 20 per 30 s, the
            // moderator 100 per 30 s, so 1 : 1 : 5.
            match i % 7 {
                0 => ("bench_a", channels[i / 7 % n_channels].clone()),
                1 => ("bench_b", channels[(i / 7 + 25) % n_channels].clone()),
                _ => ("bench_mod", modded[i % modded.len()].clone()),
            }
        };
        let mut command = client.command(
            "twitch",
            &channel,
            CommandAction::Send {
                text: format!("bench {i}"),
                reply_to: None,
            },
        );
        command.account = Some(account.to_owned());
        let client = client.clone();
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client.execute(command).await;
            (account, r, t.elapsed())
        }));
    }
    let sent_for = start.elapsed();
    let mut latencies = Vec::new();
    let mut by_status = std::collections::BTreeMap::<String, usize>::new();
    let mut errors = 0;
    for t in tasks {
        let (_, r, took) = t.await.unwrap();
        match r {
            Ok(r) => {
                *by_status.entry(format!("{:?}", r.status)).or_default() += 1;
                if r.status == ReceiptStatus::Sent {
                    latencies.push(took);
                }
            }
            Err(_) => errors += 1,
        }
    }
    let full = helix.log();
    let log: Vec<fake_helix::Logged> = full.iter().skip(warmup_sent).cloned().collect();
    latencies.sort();
    println!(
        "mode {mode}: {total} commands at {rate}/s over {:.1} s; receipts {by_status:?}, publish errors {errors}",
        sent_for.as_secs_f64()
    );
    if latency {
        println!(
            "command -> fake Helix -> receipt: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} sent)",
            percentile(&latencies, 0.5).as_secs_f64() * 1e3,
            percentile(&latencies, 0.99).as_secs_f64() * 1e3,
            latencies.last().copied().unwrap_or_default().as_secs_f64() * 1e3,
            latencies.len()
        );
    } else {
        let broken = fake_helix::violations(&full, limits);
        println!(
            "limit violations recomputed from the fake's log: {} ({} messages logged, {} dropped by the fake)",
            broken.len(),
            log.len(),
            log.iter().filter(|m| m.dropped.is_some()).count()
        );
        for b in broken.iter().take(5) {
            println!("  {b}");
        }
        for account in accounts {
            let mine: Vec<_> = log.iter().filter(|m| m.account == account).collect();
            let (Some(first), Some(last)) = (mine.first(), mine.last()) else {
                continue;
            };
            let span = last.at.duration_since(first.at);
            let limit = if account == "bench_mod" {
                limits.privileged
            } else {
                limits.normal
            };
            // What the sliding window allows from the first message to
            // the last one: `limit` per window, and `limit` more at once.
            let allowed = limit as f64 * (span.as_secs_f64() / limits.window.as_secs_f64() + 1.0);
            println!(
                "{account}: {} sent over {:.1} s, {:.0} allowed: {:.1} % of the limit",
                mine.len(),
                span.as_secs_f64(),
                allowed,
                100.0 * mine.len() as f64 / allowed
            );
        }
    }
    let _ = child.kill().await;
    let ch = conn.create_channel().await.unwrap();
    for q in [queue.clone(), format!("{commands_exchange}.dead-letter")] {
        let _ = ch
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for x in [
        commands_exchange.clone(),
        format!("{commands_exchange}.dlx"),
        chat.clone(),
    ] {
        let _ = ch
            .exchange_delete(x.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
}
