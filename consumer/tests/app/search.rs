//! Search within bounds, on both stores (issue 20): a `q` over the word or
//! byte cap is 400 `search_too_long` (an 8 KB `q` of 4,081 words was a 500
//! on PostgreSQL); heavy searches in parallel get at most
//! `CONSUMER_SEARCH_CONCURRENCY` slots on connections of their own, the
//! others 503 `search_busy` with `Retry-After`, while ingest stores every
//! event and `/api/channels` answers; a search past its statement timeout
//! is 503 `search_timeout`. Every bound is asserted by counting, not by
//! timing.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::helpers::{TestApp, message, on_both_stores};

on_both_stores!(
    a_q_over_the_word_or_byte_cap_is_400,
    fault_heavy_searches_neither_starve_ingest_nor_other_reads
);

async fn a_q_over_the_word_or_byte_cap_is_400(backend: &str) {
    let app = TestApp::spawn_on(backend).await;
    app.publish(&[message("caps", "u", "a b c d")]).await;
    app.wait_stored(1, 30).await;
    let q = |words: &str, n: usize| vec![words; n].join("+");
    for (q, status) in [
        // 4,081 words, ~8 KB: over the bytes cap (1,024) before any folding.
        (q("a", 4081), 400),
        (q("a", 33), 400),
        (q("a", 32), 200),
        // Words count once folded: `a-b-c-d` is four.
        (q("a-b-c-d", 9), 400),
        (q("a-b-c-d", 8), 200),
    ] {
        let (got, body) = app
            .get_json(&format!("/api/events?channel=caps&q={q}"))
            .await;
        assert_eq!(got, status, "{} bytes: {body}", q.len());
        if status == 400 {
            assert_eq!(body["error"], "search_too_long", "{body}");
            assert!(
                body["message"]
                    .as_str()
                    .unwrap()
                    .contains("at most 32 words"),
                "{body}"
            );
        } else {
            assert_eq!(body["events"].as_array().unwrap().len(), 1, "{body}");
        }
    }
    app.stop().await;
}

/// Rows every heavy search reads through: each holds every token of the
/// query, never in the query's order, so no row matches and each search
/// checks every position of every row.
const SEED_ROWS: usize = 2000;

async fn fault_heavy_searches_neither_starve_ingest_nor_other_reads(backend: &str) {
    let tweak = |c: &mut consumer::Config| {
        c.database_max_connections = 4;
        c.consumer_search_concurrency = 2;
        c.consumer_search_queue_wait = Duration::ZERO;
    };
    let app = match backend {
        "postgres" => TestApp::spawn_postgres_with(tweak).await,
        _ => TestApp::spawn_with(tweak).await,
    };
    let text = "a b c d ".repeat(50);
    let seed: Vec<_> = (0..SEED_ROWS)
        .map(|_| message("heavy", "u", &text))
        .collect();
    for chunk in seed.chunks(500) {
        app.publish(chunk).await;
    }
    app.wait_stored(SEED_ROWS as i64, 30).await;
    // 8 phrases of 4 words (the cap), none in the stored order.
    let heavy = format!("/api/events?q={}", ["d-c-b-a"; 8].join("+"));

    // 16 clients search without pause while 100 events are ingested.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, busy, other) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicUsize::new(0)),
    );
    let client = reqwest::Client::new();
    let mut searchers = Vec::new();
    for _ in 0..16 {
        let (stop, ok, busy, other) = (stop.clone(), ok.clone(), busy.clone(), other.clone());
        let (client, url) = (client.clone(), app.url(&heavy));
        searchers.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let res = client.get(&url).send().await.expect("GET");
                let status = res.status().as_u16();
                let retry_after = res.headers().get("retry-after").cloned();
                let body: serde_json::Value = res.json().await.expect("JSON");
                match status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    503 if body["error"] == "search_busy" => {
                        assert_eq!(retry_after.unwrap(), "1", "{body}");
                        busy.fetch_add(1, Ordering::Relaxed)
                    }
                    _ => {
                        eprintln!("unexpected answer {status}: {body}");
                        other.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    // Both slots taken before the events go out.
    testkit::eventually(10, "searches refused", || async {
        (busy.load(Ordering::Relaxed) >= 16).then_some(())
    })
    .await;
    let live: Vec<_> = (0..100)
        .map(|n| message("live", "u", &format!("live {n}")))
        .collect();
    app.publish(&live).await;
    app.wait_stored(SEED_ROWS as i64 + 100, 15).await;
    for _ in 0..5 {
        let (status, body) = app.get_json("/api/channels").await;
        assert_eq!(status, 200, "{body}");
        let (status, body) = app.get_json("/api/events?channel=live&limit=1000").await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["events"].as_array().unwrap().len(), 100);
    }
    stop.store(true, Ordering::Relaxed);
    for s in searchers {
        s.await.unwrap();
    }
    let (ok, busy, other) = (
        ok.load(Ordering::Relaxed),
        busy.load(Ordering::Relaxed),
        other.load(Ordering::Relaxed),
    );
    eprintln!("{backend}: {ok} searches answered, {busy} refused as busy");
    assert_eq!(other, 0, "only 200 or 503 search_busy");
    assert!(ok >= 1, "searches still run: {ok}");
    assert!(
        busy >= 16,
        "with 2 slots, most of 16 clients are refused: {busy}"
    );

    // A search past its statement timeout is cancelled by the database.
    let hasty = app
        .spawn_peer(|c| {
            c.consumer_search_timeout = Duration::from_millis(1);
        })
        .await;
    let (status, body) = hasty.get_json(&heavy).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (503, Some("search_timeout")),
        "{body}"
    );
    let (status, _) = hasty.get_json("/api/channels").await;
    assert_eq!(status, 200);
    let (status, _) = app.get_json(&heavy).await;
    assert_eq!(status, 200, "the slots came free");
    hasty.stop().await;
    app.stop().await;
}
