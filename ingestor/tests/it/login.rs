//! Logging in: anonymous by default, a token-store account, and a token
//! refreshed through common's token manager when Twitch rejects it or it
//! nears expiry, without a restart.

use std::sync::Arc;

use chrono::{Duration as ChronoDuration, Utc};
use common::Secret;
use common::token_store::{AccountStatus, StoredToken, TokenStore};
use ingestor::Config;
use testkit::eventually;
use testkit::fake_irc::FakeIrc;
use testkit::fake_oauth::{CLIENT_ID, CLIENT_SECRET, FakeOAuth};
use testkit::rabbit::{self, unique};

use crate::helpers::*;

fn stored(
    login: &str,
    access: &str,
    refresh: Option<&str>,
    obtained_ago_h: i64,
    expires_in_h: i64,
) -> StoredToken {
    let now = Utc::now();
    StoredToken {
        platform: "twitch".into(),
        login: login.into(),
        user_id: "141981764".into(),
        access_token: Secret::new(access),
        refresh_token: refresh.map(Secret::new),
        expires_at: Some(now + ChronoDuration::hours(expires_in_h)),
        scopes: vec!["chat:read".into()],
        obtained_at: now - ChronoDuration::hours(obtained_ago_h),
        last_refreshed_at: None,
        last_validated_at: None,
        status: AccountStatus::Valid,
        status_reason: None,
    }
}

fn pass_tokens(fake: &FakeIrc) -> Vec<String> {
    fake.received_command("PASS")
        .into_iter()
        .map(|r| {
            r.line
                .trim_start_matches("PASS ")
                .trim_start_matches("oauth:")
                .to_owned()
        })
        .collect()
}

fn with_oauth(mut cfg: Config, store: &std::path::Path, oauth: Option<&FakeOAuth>) -> Config {
    cfg.platforms.twitch.twitch_login = Some("chatbus_bot".into());
    cfg.oauth.token_store_path = store.to_owned();
    if let Some(oauth) = oauth {
        let base = oauth.base_url();
        cfg.oauth.twitch_client_id = CLIENT_ID.into();
        cfg.oauth.twitch_client_secret = Secret::new(CLIENT_SECRET);
        cfg.oauth.twitch_authorize_url = format!("{base}/oauth2/authorize");
        cfg.oauth.twitch_token_url = format!("{base}/oauth2/token");
        cfg.oauth.twitch_validate_url = format!("{base}/oauth2/validate");
        cfg.oauth.twitch_revoke_url = format!("{base}/oauth2/revoke");
    }
    cfg
}

#[tokio::test]
async fn anonymous_read_only_login_is_the_default() {
    let fake = FakeIrc::start().await;
    let chans = channels(1);
    let (_dir, spool) = spool_dir();
    let ing = Running::start(config(
        &fake,
        &rabbit::amqp_url(),
        &unique("test-ing-anon"),
        &chans,
        &spool,
    ))
    .await;
    fake.wait_joined(&[&chans[0]], 30).await;
    assert!(
        fake.nicks().iter().all(|n| n.starts_with("justinfan")),
        "{:?}",
        fake.nicks()
    );
    assert!(fake.received_command("PASS").is_empty(), "no token is sent");
    ing.stop().await;
}

#[tokio::test]
async fn a_token_store_account_logs_in_with_its_token() {
    let fake = FakeIrc::start().await;
    fake.set_valid_tokens(["tok-stored-1"]);
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("tokenStore.json");
    TokenStore::new(&store_path)
        .update_token(stored("chatbus_bot", "tok-stored-1", None, 1, 3))
        .await
        .unwrap();
    let chans = channels(1);
    let cfg = with_oauth(
        config(
            &fake,
            &rabbit::amqp_url(),
            &unique("test-ing-stored"),
            &chans,
            &dir.path().join("spool"),
        ),
        &store_path,
        None,
    );
    let ing = Running::start(cfg).await;
    fake.wait_joined(&[&chans[0]], 30).await;
    assert_eq!(pass_tokens(&fake), ["tok-stored-1"]);
    assert_eq!(fake.nicks(), ["chatbus_bot"]);
    ing.stop().await;
}

#[tokio::test]
async fn a_rejected_token_is_refreshed_and_chat_keeps_flowing_without_a_restart() {
    let oauth = Arc::new(FakeOAuth::start().await);
    let issued = oauth.issue(&["chat:read"]);
    let fake = FakeIrc::start().await;
    {
        let oauth = oauth.clone();
        fake.set_token_check(move |t| oauth.is_valid_access(t));
    }
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("tokenStore.json");
    let store = TokenStore::new(&store_path);
    store
        .update_token(stored(
            "chatbus_bot",
            &issued.access_token,
            issued.refresh_token.as_deref(),
            0,
            4,
        ))
        .await
        .unwrap();
    let exchange = unique("test-ing-refresh");
    let mut tap = Tap::new(&rabbit::amqp_url(), &exchange).await;
    let chans = channels(1);
    let cfg = with_oauth(
        config(
            &fake,
            &rabbit::amqp_url(),
            &exchange,
            &chans,
            &dir.path().join("spool"),
        ),
        &store_path,
        Some(&oauth),
    );
    let ing = Running::start(cfg).await;
    fake.wait_joined(&[&chans[0]], 30).await;
    assert_eq!(
        pass_tokens(&fake),
        std::slice::from_ref(&issued.access_token)
    );

    // The token manager validates the token once at start. Wait for that,
    // so that the rejection below reaches the ingestor through IRC, not
    // through a start-up validation that a loaded machine ran late.
    eventually(30, "the start-up validation", || {
        let validated = oauth.stats().validations >= 1;
        async move { validated.then_some(()) }
    })
    .await;

    // Twitch stops accepting the token (revoked, or expired early) and
    // drops us: the ingestor must refresh and get back in on its own.
    oauth.invalidate_access_tokens();
    fake.drop_connections();
    let new_token = eventually(60, "logged in again with a refreshed token", || async {
        let joined = fake.joined_channels().contains(&chans[0]);
        let last = pass_tokens(&fake).last().cloned()?;
        (joined && last != issued.access_token && oauth.is_valid_access(&last)).then_some(last)
    })
    .await;
    assert!(oauth.stats().refresh_grants >= 1);
    let on_disk = store
        .load_token("twitch", "chatbus_bot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        on_disk.access_token.expose(),
        new_token,
        "the store holds the token in use"
    );

    fake.send_lines(&privmsgs(&chans, 10, "after-refresh"));
    tap.collect_until(30, "chat after the refresh", |g| {
        g.iter()
            .filter(|d| d.event.id.starts_with("after-refresh"))
            .count()
            == 10
    })
    .await;
    let page = ing.get("/metrics").await.1;
    assert!(metric_value(&page, "chatbus_ingestor_irc_auth_failures_total") >= 1.0);
    ing.stop().await;
    tap.cleanup().await;
}

#[tokio::test]
async fn a_token_past_its_refresh_point_is_refreshed_before_connecting() {
    let oauth = Arc::new(FakeOAuth::start().await);
    let issued = oauth.issue(&["chat:read"]);
    let fake = FakeIrc::start().await;
    {
        let oauth = oauth.clone();
        fake.set_token_check(move |t| oauth.is_valid_access(t));
    }
    let dir = tempfile::tempdir().unwrap();
    let store_path = dir.path().join("tokenStore.json");
    // Obtained 4 h ago, expires in 10 min: well past 80 % of its lifetime.
    let mut token = stored(
        "chatbus_bot",
        &issued.access_token,
        issued.refresh_token.as_deref(),
        4,
        0,
    );
    token.expires_at = Some(Utc::now() + ChronoDuration::minutes(10));
    TokenStore::new(&store_path)
        .update_token(token)
        .await
        .unwrap();
    let chans = channels(1);
    let cfg = with_oauth(
        config(
            &fake,
            &rabbit::amqp_url(),
            &unique("test-ing-expiry"),
            &chans,
            &dir.path().join("spool"),
        ),
        &store_path,
        Some(&oauth),
    );
    let ing = Running::start(cfg).await;
    fake.wait_joined(&[&chans[0]], 30).await;
    let used = pass_tokens(&fake);
    assert_eq!(used.len(), 1);
    assert_ne!(used[0], issued.access_token, "a fresh token was used");
    assert_eq!(oauth.stats().refresh_grants, 1);
    ing.stop().await;
}
