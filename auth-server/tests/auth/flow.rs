//! The authorization-code flow over real HTTP: browser -> /auth -> fake
//! provider -> callback -> token store; and every way it must refuse.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::token_store::AccountStatus;
use testkit::fake_oauth::{AuthorizeAnswer, CLIENT_ID, CLIENT_SECRET, Flavour, TokenFailure};

use crate::helpers::{browser, callback_url, get, location, manual_browser, start, start_with};

#[tokio::test]
async fn full_flow_from_auth_to_the_file_written() {
    let server = start().await;
    let client = browser();
    let response = client
        .get(format!("{}/auth", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["cache-control"], "no-store");
    let page = response.text().await.unwrap();
    assert!(page.contains("data-outcome=\"stored\""), "{page}");
    assert!(
        page.contains("chatbus_bot") && page.contains("twitch:chatbus_bot"),
        "{page}"
    );

    // The provider saw our client id, redirect URI, scopes and a random state.
    let requests = server.fake.authorize_requests();
    assert_eq!(requests.len(), 1);
    let q = &requests[0];
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["redirect_uri"], format!("{}/auth/callback", server.url));
    assert_eq!(
        q["scope"],
        "chat:read user:write:chat user:read:moderated_channels"
    );
    assert_eq!(q["state"].len(), 64);
    assert!(!q.values().any(|v| v.contains(CLIENT_SECRET)));

    // The file: one account, valid tokens, what validation said, mode 0600.
    let file = server.file();
    assert_eq!(file.accounts.len(), 1);
    let t = &file.accounts["twitch:chatbus_bot"];
    assert_eq!(
        (t.login.as_str(), t.user_id.as_str()),
        ("chatbus_bot", "141981764")
    );
    assert!(server.fake.is_valid_access(t.access_token.expose()));
    assert!(
        server
            .fake
            .is_valid_refresh(t.refresh_token.as_ref().unwrap().expose())
    );
    assert_eq!(
        t.scopes,
        [
            "chat:read",
            "user:write:chat",
            "user:read:moderated_channels"
        ]
    );
    assert_eq!(t.status, AccountStatus::Valid);
    let left = (t.expires_at.unwrap() - chrono::Utc::now()).num_seconds();
    assert!((14_300..=14_400).contains(&left), "{left}");
    assert!(t.last_validated_at.is_some());
    let mode = std::fs::metadata(server.store.path())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Neither page shows a token.
    let (status, home) = get(&client, &format!("{}/", server.url)).await;
    assert_eq!(status, 200);
    assert!(
        home.contains("data-account=\"twitch:chatbus_bot\" data-status=\"valid\""),
        "{home}"
    );
    for secret in server.fake.issued_tokens() {
        assert!(!page.contains(&secret) && !home.contains(&secret));
    }
    assert_eq!(server.fake.stats().code_grants, 1);
    server.stop().await;
}

#[tokio::test]
async fn auth_twitch_is_the_same_flow_and_reauthorizing_replaces_the_account() {
    let server = start().await;
    let client = browser();
    for path in ["/auth/twitch", "/auth"] {
        let (status, page) = get(&client, &format!("{}{path}", server.url)).await;
        assert_eq!(status, 200, "{path}: {page}");
    }
    let file = server.file();
    assert_eq!(file.accounts.len(), 1, "same account, replaced");
    let issued = server.fake.issued_tokens();
    let stored = &file.accounts["twitch:chatbus_bot"];
    assert_eq!(
        stored.access_token.expose(),
        issued[issued.len() - 2],
        "the newer token"
    );
    server.stop().await;
}

/// Asserts a refused callback: status, error code, nothing written.
async fn assert_refused(server: &crate::helpers::TestServer, status: u16, body: &str, code: &str) {
    assert!(
        body.contains(&format!("data-error=\"{code}\"")),
        "{code}: {body}"
    );
    assert!(body.contains("Nothing was stored"), "{body}");
    assert!(!server.store_exists(), "{code}: nothing written");
    let _ = status;
}

#[tokio::test]
async fn missing_and_unknown_state_are_400_and_write_nothing() {
    let server = start().await;
    let client = browser();
    let (status, body) = get(&client, &format!("{}/auth/callback?code=abc", server.url)).await;
    assert_eq!(status, 400);
    assert_refused(&server, status, &body, "missing_state").await;
    let made_up = "a".repeat(64);
    let (status, body) = get(
        &client,
        &format!("{}/auth/callback?code=abc&state={made_up}", server.url),
    )
    .await;
    assert_eq!(status, 400);
    assert_refused(&server, status, &body, "unknown_state").await;
    assert_eq!(server.fake.stats().code_grants, 0, "no code was exchanged");
    server.stop().await;
}

#[tokio::test]
async fn a_replayed_state_is_400_and_changes_nothing() {
    let server = start().await;
    let client = manual_browser();
    let callback = callback_url(&client, &server).await;
    let (status, _) = get(&client, &callback).await;
    assert_eq!(status, 200);
    let before = std::fs::read(server.store.path()).unwrap();
    let (status, body) = get(&client, &callback).await;
    assert_eq!(status, 400);
    assert!(body.contains("data-error=\"unknown_state\""), "{body}");
    assert_eq!(std::fs::read(server.store.path()).unwrap(), before);
    assert_eq!(server.fake.stats().code_grants, 1);
    server.stop().await;
}

#[tokio::test]
async fn an_expired_state_is_400_and_writes_nothing() {
    let server = start_with(Flavour::Twitch, |c| {
        c.auth_state_ttl = Duration::from_secs(1)
    })
    .await;
    let client = manual_browser();
    let callback = callback_url(&client, &server).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let (status, body) = get(&client, &callback).await;
    assert_eq!(status, 400);
    assert_refused(&server, status, &body, "expired_state").await;
    server.stop().await;
}

#[tokio::test]
async fn a_state_from_another_browser_is_400_writes_nothing_and_does_not_burn_the_state() {
    let server = start().await;
    let victim = manual_browser();
    let callback = callback_url(&victim, &server).await;
    // Another browser (no cookie, or its own) presents the victim's callback.
    for attacker in [manual_browser(), {
        let c = manual_browser();
        let _ = c.get(format!("{}/auth", server.url)).send().await.unwrap();
        c
    }] {
        let (status, body) = get(&attacker, &callback).await;
        assert_eq!(status, 400);
        assert_refused(&server, status, &body, "state_browser_mismatch").await;
    }
    assert_eq!(server.fake.stats().code_grants, 0, "no code was exchanged");
    // The foreign callbacks did not use the state up: the real browser's
    // callback still succeeds, once.
    let (status, body) = get(&victim, &callback).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("data-outcome=\"stored\""), "{body}");
    assert!(server.file().accounts.contains_key("twitch:chatbus_bot"));
    assert_eq!(server.fake.stats().code_grants, 1);
    let (status, body) = get(&victim, &callback).await;
    assert_eq!(status, 400);
    assert!(body.contains("data-error=\"unknown_state\""), "{body}");
    server.stop().await;
}

#[tokio::test]
async fn access_denied_and_provider_errors_get_a_clear_page_and_write_nothing() {
    let server = start().await;
    server.fake.set_authorize_answer(AuthorizeAnswer::Deny);
    let (status, body) = get(&browser(), &format!("{}/auth", server.url)).await;
    assert_eq!(status, 403);
    assert!(
        body.contains("data-error=\"access_denied\"") && body.contains("denied"),
        "{body}"
    );
    assert!(!server.store_exists());

    server
        .fake
        .set_authorize_answer(AuthorizeAnswer::Error("invalid_scope".into()));
    let (status, body) = get(&browser(), &format!("{}/auth", server.url)).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("data-error=\"provider_error\"") && body.contains("invalid_scope"),
        "{body}"
    );
    assert!(!server.store_exists());

    server
        .fake
        .set_authorize_answer(AuthorizeAnswer::Error("temporarily_unavailable".into()));
    let (status, _) = get(&browser(), &format!("{}/auth", server.url)).await;
    assert_eq!(status, 503);
    assert!(!server.store_exists());
    server.stop().await;
}

#[tokio::test]
async fn token_endpoint_errors_timeouts_and_non_json_write_nothing() {
    // A timeout long enough that only the delayed answer reaches it, even
    // on a loaded machine; the delayed request is cut at it.
    let server = start_with(Flavour::Twitch, |c| {
        c.oauth.oauth_timeout = Duration::from_secs(3);
    })
    .await;
    let cases = [
        (
            TokenFailure::Answer {
                status: 400,
                content_type: "application/json".into(),
                body: r#"{"status":400,"message":"Invalid authorization code"}"#.into(),
            },
            502,
            "code_rejected",
            "Invalid authorization code",
        ),
        (
            TokenFailure::Delay(Duration::from_secs(30)),
            504,
            "provider_timeout",
            "did not answer",
        ),
        (
            TokenFailure::not_json(),
            502,
            "provider_invalid_response",
            "not JSON",
        ),
        (
            TokenFailure::ok_not_json(),
            502,
            "provider_invalid_response",
            "not JSON",
        ),
        (
            TokenFailure::Answer {
                status: 200,
                content_type: "text/html".into(),
                body: "<html>hi</html>".into(),
            },
            502,
            "provider_invalid_response",
            "Content-Type",
        ),
        (
            // 100 MB: refused at the 16 KiB cap, nothing stored.
            TokenFailure::huge_access_token(100_000_000),
            502,
            "provider_invalid_response",
            "larger than 16384 bytes",
        ),
    ];
    for (failure, want_status, code, says) in cases {
        server.fake.fail_token_requests(failure.clone(), 1);
        let (status, body) = get(&browser(), &format!("{}/auth", server.url)).await;
        assert_eq!(status, want_status, "{failure:?}: {body}");
        assert!(
            body.contains(&format!("data-error=\"{code}\"")),
            "{failure:?}: {body}"
        );
        assert!(body.contains(says), "{failure:?}: {body}");
        assert!(!server.store_exists(), "{failure:?}: nothing written");
    }
    // And afterwards the flow works again.
    let (status, _) = get(&browser(), &format!("{}/auth", server.url)).await;
    assert_eq!(status, 200);
    assert!(server.store_exists());
    server.stop().await;
}

#[tokio::test]
async fn a_request_on_another_host_name_is_sent_to_the_redirect_origin_first() {
    let server = start_with(Flavour::Twitch, |c| {
        c.auth_redirect_url = c.auth_redirect_url.replace("127.0.0.1", "localhost");
    })
    .await;
    let r = manual_browser()
        .get(format!("{}/auth", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let port = server.url.rsplit(':').next().unwrap();
    assert_eq!(
        crate::helpers::location(&r),
        format!("http://localhost:{port}/auth/twitch?moved=1")
    );
    assert!(
        r.headers().get("set-cookie").is_none(),
        "no state on the wrong origin"
    );
    server.stop().await;
}

#[tokio::test]
async fn unconfigured_and_unknown_providers_are_404() {
    let server = start().await;
    let (status, body) = get(&browser(), &format!("{}/auth/google", server.url)).await;
    assert_eq!(status, 404);
    assert!(body.contains("GOOGLE_CLIENT_ID"), "{body}");
    let (status, _) = get(&browser(), &format!("{}/auth/myspace", server.url)).await;
    assert_eq!(status, 404);
    let (status, home) = get(&browser(), &format!("{}/", server.url)).await;
    assert_eq!(status, 200);
    assert!(
        home.contains("No Twitch account is authorized yet"),
        "{home}"
    );
    server.stop().await;
}

#[tokio::test]
async fn google_is_the_same_flow_with_offline_access() {
    let server = start_with(Flavour::Google, |_| {}).await;
    let client = browser();
    let (status, page) = get(&client, &format!("{}/auth/google", server.url)).await;
    assert_eq!(status, 200, "{page}");
    let q = &server.fake.authorize_requests()[0];
    assert_eq!(q["access_type"], "offline");
    assert_eq!(q["prompt"], "consent");
    assert!(q["scope"].contains("youtube.readonly"));
    let file = server.file();
    let t = &file.accounts["youtube:chatbus.bot@example.com"];
    assert_eq!(t.user_id, "141981764");
    assert!(
        t.refresh_token.is_some(),
        "offline access gives a refresh token"
    );
    assert!(t.scopes.iter().any(|s| s.ends_with("youtube.readonly")));

    // Refresh keeps the refresh token Google does not send again.
    let manager = server.app.managers()[0].clone();
    let old = t.clone();
    let fresh = manager.refresh(&t.key()).await.unwrap();
    assert_ne!(fresh.access_token, old.access_token);
    assert_eq!(fresh.refresh_token, old.refresh_token);
    assert!(server.fake.is_valid_access(fresh.access_token.expose()));
    // Validation goes through Google's tokeninfo.
    let validated = manager.validate(&t.key()).await.unwrap();
    assert!(validated.last_validated_at > old.last_validated_at);
    server.stop().await;
}

#[tokio::test]
async fn kick_is_oauth_2_1_with_pkce_and_learns_the_login_from_the_users_endpoint() {
    let server = start_with(Flavour::Kick, |_| {}).await;
    let client = browser();
    let (status, page) = get(&client, &format!("{}/auth/kick", server.url)).await;
    assert_eq!(status, 200, "{page}");
    // The authorize URL carries an S256 challenge, never the verifier.
    let q = &server.fake.authorize_requests()[0];
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["code_challenge"].len(), 43, "{q:?}");
    assert!(!q.contains_key("code_verifier"));
    assert_eq!(q["scope"], "user:read chat:write");
    // The fake checked the verifier against the challenge before it issued.
    assert_eq!(server.fake.stats().code_grants, 1);
    let file = server.file();
    let t = &file.accounts["kick:chatbus_bot"];
    assert_eq!(
        (t.platform.as_str(), t.user_id.as_str()),
        ("kick", "141981764")
    );
    assert!(t.refresh_token.is_some());
    assert_eq!(t.scopes, ["user:read", "chat:write"]);
    assert!(
        t.expires_at.is_some(),
        "expires_in given as a string is read"
    );

    // Refresh (Kick rotates) and validation through the users endpoint.
    let manager = server.app.managers()[0].clone();
    let old = t.clone();
    let fresh = manager.refresh(&t.key()).await.unwrap();
    assert_ne!(fresh.access_token, old.access_token);
    assert_ne!(fresh.refresh_token, old.refresh_token);
    assert!(server.fake.is_valid_access(fresh.access_token.expose()));
    assert!(!server.fake.is_valid_access(old.access_token.expose()));
    let validated = manager.validate(&t.key()).await.unwrap();
    assert!(validated.last_validated_at > old.last_validated_at);
    server.stop().await;
}

#[tokio::test]
async fn kick_refuses_a_code_exchanged_without_the_right_verifier() {
    use common::oauth::{OAuthClient, ProviderSettings};
    let fake = testkit::fake_oauth::FakeOAuth::start_flavour(Flavour::Kick).await;
    let settings = ProviderSettings::kick(
        testkit::fake_oauth::CLIENT_ID,
        common::Secret::new(testkit::fake_oauth::CLIENT_SECRET),
    )
    .with_base_url(&fake.base_url());
    let client = OAuthClient::new(settings);
    let redirect = "http://localhost:3000/auth/callback";
    let code_of = |url: reqwest::Url| async move {
        let res = manual_browser().get(url).send().await.unwrap();
        let back = reqwest::Url::parse(&location(&res)).unwrap();
        back.query_pairs()
            .find(|(k, _)| k == "code")
            .map(|(_, v)| v.into_owned())
            .expect("a code")
    };
    // Without PKCE the fake Kick refuses to start.
    let plain = client.authorize_url(redirect, "st4te").unwrap();
    let res = manual_browser().get(plain).send().await.unwrap();
    assert_eq!(res.status(), 400);

    // A wrong verifier, and none, are refused; the right one is taken.
    let wrong = common::Secret::new("x".repeat(64));
    for (state, verifier) in [("st4te1", Some(&wrong)), ("st4te2", None)] {
        let (url, _) = client.authorize_url_pkce(redirect, state).unwrap();
        let code = code_of(url).await;
        let err = client
            .authorize_account_with(&code, redirect, verifier)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("Invalid request"), "{err}");
    }
    let (url, verifier) = client.authorize_url_pkce(redirect, "st4te3").unwrap();
    assert!(verifier.is_some(), "Kick uses PKCE");
    let code = code_of(url).await;
    let token = client
        .authorize_account_with(&code, redirect, verifier.as_ref())
        .await
        .unwrap();
    assert_eq!(token.login, "chatbus_bot");
    client.revoke(&token.access_token).await.unwrap();
    assert!(!fake.is_valid_access(token.access_token.expose()));
}
