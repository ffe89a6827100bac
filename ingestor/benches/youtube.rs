//! YouTube latency benchmark: the fake YouTube (in this process) streams a
//! live chat over gRPC (`StreamList`, HTTP/2 on 127.0.0.1) at `--rate`
//! messages a second for `--seconds` to the ingestor binary, which
//! publishes them with confirms to the local RabbitMQ; a consumer on a
//! queue bound to the exchange measures each message from the moment the
//! fake was given it (its send time is in its text) to its delivery. Also
//! reports the ingestor's CPU per message (utime + stime over the run) and
//! its peak RSS, and splits each latency at the event's `received_at`
//! (stamped by the ingestor when it reads the page): fake -> ingestor and
//! ingestor -> consumer.
//!
//! ```sh
//! cargo bench -p ingestor --bench youtube
//! cargo bench -p ingestor --bench youtube -- --rate 100 --seconds 30
//! ```
//!
//! The latency includes the fake's wake-up and page (the pages go out as
//! messages arrive, as YouTube's do), gRPC decoding, normalising, the
//! spool write, the publish and its confirm, and the broker's delivery to a
//! consumer.

use std::time::{Duration, Instant};

use common::amqp::{Subscriber, Topology};
use testkit::fake_youtube::{self, FakeYoutube, msg};
use testkit::rabbit::{self, unique};

#[tokio::main]
async fn main() {
    let rate: f64 = testkit::cli_arg("--rate", 100.0);
    let seconds: f64 = testkit::cli_arg("--seconds", 30.0);
    let yt = FakeYoutube::start().await;
    let channel = "UCbench0000000000000000A";
    yt.add_channel(channel, "@bench");
    let chat = yt.go_live(channel, "benchVideo1");

    let conn = rabbit::connect("bench-setup").await;
    let topology = Topology::named(&unique("bench-youtube"));
    let mut sub = Subscriber::builder(unique("bench-youtube-q"))
        .bind("chat.#")
        .prefetch(1000)
        .auto_delete(true)
        .durable(false)
        .build(&conn, &topology)
        .await
        .unwrap();
    let spool = tempfile::tempdir().unwrap();
    let port = testkit::free_port();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ingestor"))
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("AMQP_URL", rabbit::amqp_url())
        .env("CHAT_EXCHANGE", &topology.exchange)
        .env("INGESTOR_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .env("SPOOL_DIR", spool.path().join("spool"))
        .env("YOUTUBE_API_KEY", fake_youtube::API_KEY)
        .env("YOUTUBE_API_URL", yt.api_url())
        .env("YOUTUBE_GRPC_URL", yt.grpc_url())
        .env("YOUTUBE_CHANNELS", channel)
        .current_dir(spool.path())
        .envs(testkit::ingestor_tuning_env())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the ingestor (cargo bench builds it)");
    let pid = child.id().unwrap();
    testkit::eventually(60, "the ingestor streams the chat", || async {
        (yt.open_streams() > 0).then_some(())
    })
    .await;

    let author = msg::author("UCviewer000000000000000A", "Viewer", &["sponsor"]);
    let total = (rate * seconds) as usize;
    let epoch = Instant::now();
    let wall_epoch = chrono::Utc::now();
    let (_, cpu_before) = testkit::metrics::process_stats(pid);
    let sender = {
        let yt = yt.clone();
        let chat = chat.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut sent = 0usize;
            while sent < total {
                tick.tick().await;
                let due = ((epoch.elapsed().as_secs_f64() * rate) as usize).min(total);
                if due > sent {
                    let at = epoch.elapsed().as_nanos();
                    yt.push(
                        &chat,
                        (sent..due)
                            .map(|i| msg::text(&format!("lat-{i}"), &author, &format!("t={at}"))),
                    );
                    sent = due;
                }
            }
        })
    };
    let mut latencies = Vec::with_capacity(total);
    let mut to_ingestor = Vec::with_capacity(total);
    let mut from_ingestor = Vec::with_capacity(total);
    testkit::within(
        (seconds as u64) * 3 + 60,
        "every message delivered",
        async {
            while latencies.len() < total {
                let d = sub.next().await.unwrap().unwrap();
                let now = epoch.elapsed().as_nanos();
                if let Some(at) = d
                    .event
                    .text
                    .as_deref()
                    .and_then(|t| t.strip_prefix("t="))
                    .and_then(|t| t.parse::<u128>().ok())
                {
                    latencies.push((now - at) as f64 / 1e6);
                    let sent_wall = wall_epoch + chrono::Duration::nanoseconds(at as i64);
                    let now_wall = wall_epoch + chrono::Duration::nanoseconds(now as i64);
                    let read = d.event.received_at;
                    to_ingestor
                        .push((read - sent_wall).num_microseconds().unwrap_or(0) as f64 / 1e3);
                    from_ingestor
                        .push((now_wall - read).num_microseconds().unwrap_or(0) as f64 / 1e3);
                }
                d.ack().await.unwrap();
            }
        },
    )
    .await;
    sender.await.unwrap();
    let (rss, cpu_after) = testkit::metrics::process_stats(pid);
    let streams = yt.stream_requests().len();
    child.start_kill().unwrap();
    let _ = child.wait().await;
    rabbit::delete_topology(&conn, &topology).await;
    for v in [&mut latencies, &mut to_ingestor, &mut from_ingestor] {
        v.sort_by(f64::total_cmp);
    }
    let q = testkit::metrics::percentile;
    println!();
    println!(
        "| rate | messages | fake -> consumer p50 / p90 / p99 / max | of which fake -> ingestor p50 / p99 | ingestor -> consumer p50 / p99 | ingestor CPU per msg | peak RSS | streams opened |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    println!(
        "| {:.0} msg/s | {} | {:.2} / {:.2} / **{:.2}** / {:.2} ms | {:.2} / {:.2} ms | {:.2} / {:.2} ms | {:.1} µs | {:.0} MiB | {} |",
        rate,
        latencies.len(),
        q(&latencies, 0.5),
        q(&latencies, 0.9),
        q(&latencies, 0.99),
        latencies[latencies.len() - 1],
        q(&to_ingestor, 0.5),
        q(&to_ingestor, 0.99),
        q(&from_ingestor, 0.5),
        q(&from_ingestor, 0.99),
        (cpu_after - cpu_before) * 1e6 / total as f64,
        rss,
        streams,
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    eprintln!("load average at the end: {}", load.trim());
}
