//! The token manager against the fake provider: refresh before expiry, on
//! demand, rejected refresh tokens, hourly validation, and concurrent
//! refreshers in separate processes.

use std::time::Duration;

use common::oauth::OAuthError;
use common::token_manager::TokenManagerOptions;
use common::token_store::{AccountStatus, TokenStore};
use testkit::fake_oauth::{FakeOAuth, TokenFailure};
use tokio_util::sync::CancellationToken;

use crate::helpers::{browser, get, manager, quiet_options, seed, start};

fn secs(s: i64) -> chrono::Duration {
    chrono::Duration::seconds(s)
}

fn millis(ms: i64) -> chrono::Duration {
    chrono::Duration::milliseconds(ms)
}

#[tokio::test]
async fn run_refreshes_before_expiry_at_80_percent_of_the_lifetime() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    // A 10-second token obtained just now: due at 8 s, expires at 10 s
    // (2 s for the manager's wake-up and the refresh, even on a loaded
    // machine).
    fake.set_expires_in(10);
    let (key, old) = seed(&store, &fake, secs(0), secs(10));
    let m = manager(&store, &fake, quiet_options());
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let m = m.clone();
        let cancel = cancel.clone();
        async move { m.run(cancel).await }
    });
    let fresh = testkit::eventually(15, "the token is refreshed", || {
        let store = store.clone();
        let key = key.clone();
        let old = old.access_token.clone();
        async move {
            let t = store.load().unwrap().accounts.remove(&key)?;
            (t.access_token != old).then_some(t)
        }
    })
    .await;
    let refreshed_at = fresh.last_refreshed_at.unwrap();
    assert!(
        refreshed_at < old.expires_at.unwrap(),
        "refreshed before expiry"
    );
    assert!(
        refreshed_at >= old.obtained_at + millis(8000),
        "not before 80 % of the lifetime: {}",
        refreshed_at - old.obtained_at
    );
    assert!(fake.is_valid_access(fresh.access_token.expose()));
    assert!(
        !fake.is_valid_refresh(old.refresh_token.as_ref().unwrap().expose()),
        "rotated"
    );
    assert!(fake.is_valid_refresh(fresh.refresh_token.as_ref().unwrap().expose()));
    // The token response's scope array is what is stored after a refresh.
    assert_eq!(fresh.scopes, ["chat:read", "chat:edit"]);
    assert_eq!(fake.stats().refresh_grants, 1);
    cancel.cancel();
    testkit::within(5, "manager stops", task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn access_token_refreshes_only_when_due() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    let m = manager(&store, &fake, quiet_options());
    // Half-way through its life: not due, handed out as is.
    let (key, young) = seed(&store, &fake, secs(100), secs(100));
    assert_eq!(
        m.access_token(&key).await.unwrap().access_token,
        young.access_token
    );
    assert_eq!(fake.stats().refresh_grants, 0);
    // 90 % through: refreshed first.
    let (key, old) = seed(&store, &fake, secs(90), secs(10));
    let fresh = m.access_token(&key).await.unwrap();
    assert_ne!(fresh.access_token, old.access_token);
    assert_eq!(fake.stats().refresh_grants, 1);
    assert_eq!(
        m.access_token(&key).await.unwrap().access_token,
        fresh.access_token
    );
    assert_eq!(fake.stats().refresh_grants, 1, "once");
}

#[tokio::test]
async fn a_passing_refresh_failure_keeps_the_unexpired_token_and_writes_nothing() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    let m = manager(&store, &fake, quiet_options());
    let (key, old) = seed(&store, &fake, secs(90), secs(10));
    let before = std::fs::read(store.path()).unwrap();
    fake.fail_token_requests(TokenFailure::not_json(), 2);
    let got = m.access_token(&key).await.unwrap();
    assert_eq!(got.access_token, old.access_token, "still valid for 10 s");
    let err = m.refresh(&key).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert_eq!(
        std::fs::read(store.path()).unwrap(),
        before,
        "nothing written"
    );
    assert!(
        m.refresh(&key).await.is_ok(),
        "works once the provider recovers"
    );
}

#[tokio::test]
async fn a_rejected_refresh_token_marks_the_account_reauth_required() {
    let server = start().await;
    let (key, _) = seed(&server.store, &server.fake, secs(0), secs(3600));
    let m = server.app.managers()[0].clone();
    server.fake.revoke_all_refresh_tokens();
    let err = m.refresh(&key).await.unwrap_err();
    assert!(matches!(err, OAuthError::ReauthRequired { .. }), "{err}");
    assert!(err.to_string().contains("Invalid refresh token"), "{err}");

    let t = &server.file().accounts[&key];
    assert_eq!(t.status, AccountStatus::ReauthRequired);
    assert!(
        t.status_reason
            .as_deref()
            .unwrap()
            .contains("Invalid refresh token")
    );

    // No more attempts at the provider until a human re-authorizes.
    let err = m.access_token(&key).await.unwrap_err();
    assert!(matches!(err, OAuthError::ReauthRequired { .. }));
    assert_eq!(server.fake.stats().rejected_refreshes, 1);

    // Shown on the status page and as a metric.
    let (_, home) = get(&browser(), &format!("{}/", server.url)).await;
    assert!(
        home.contains(&format!(
            "data-account=\"{key}\" data-status=\"reauth_required\""
        )),
        "{home}"
    );
    assert!(home.contains("Invalid refresh token"));
    let (_, metrics) = get(&browser(), &format!("{}/metrics", server.url)).await;
    let line = metrics
        .lines()
        .find(|l| l.starts_with("chatbus_oauth_reauth_required") && l.contains(&key))
        .unwrap_or_else(|| panic!("no reauth gauge in {metrics}"));
    assert!(line.ends_with(" 1"), "{line}");

    // Authorizing again clears it.
    let (status, _) = get(&browser(), &format!("{}/auth", server.url)).await;
    assert_eq!(status, 200);
    assert_eq!(server.file().accounts[&key].status, AccountStatus::Valid);
    server.stop().await;
}

#[tokio::test]
async fn after_a_401_only_a_still_current_token_is_refreshed() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    let m = manager(&store, &fake, quiet_options());
    let (key, old) = seed(&store, &fake, secs(0), secs(3600));
    let fresh = m.refresh_if_current(&key, &old.access_token).await.unwrap();
    assert_ne!(fresh.access_token, old.access_token);
    // A second task that also saw the old token get 401 gets the new one.
    let again = m.refresh_if_current(&key, &old.access_token).await.unwrap();
    assert_eq!(again.access_token, fresh.access_token);
    assert_eq!(fake.stats().refresh_grants, 1);
}

#[tokio::test]
async fn tokens_are_validated_periodically_and_invalid_ones_refreshed() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    let options = TokenManagerOptions {
        validate_every: Duration::from_millis(300),
        ..quiet_options()
    };
    let m = manager(&store, &fake, options);
    let (key, old) = seed(&store, &fake, secs(0), secs(3600));
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let (m, cancel) = (m.clone(), cancel.clone());
        async move { m.run(cancel).await }
    });
    testkit::eventually(5, "several validations", || async {
        (fake.stats().validations >= 3).then_some(())
    })
    .await;
    assert_eq!(
        fake.stats().refresh_grants,
        0,
        "a valid token is left alone"
    );
    // The provider drops the access token: the next validation refreshes.
    fake.invalidate_access_tokens();
    let fresh = testkit::eventually(5, "refreshed after failed validation", || {
        let store = store.clone();
        let key = key.clone();
        let old = old.access_token.clone();
        async move {
            let t = store.load().unwrap().accounts.remove(&key)?;
            (t.access_token != old).then_some(t)
        }
    })
    .await;
    assert!(fake.is_valid_access(fresh.access_token.expose()));
    cancel.cancel();
    testkit::within(5, "manager stops", task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn two_managers_refreshing_at_once_in_one_process_leave_one_valid_token() {
    let fake = FakeOAuth::start().await;
    fake.set_refresh_delay(Duration::from_millis(200));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenStore.json");
    let (key, _) = seed(&TokenStore::new(&path), &fake, secs(3590), secs(10));
    // Independent stores and managers, as two services would have.
    let a = manager(&TokenStore::new(&path), &fake, quiet_options());
    let b = manager(&TokenStore::new(&path), &fake, quiet_options());
    let (ta, tb) = tokio::join!(a.access_token(&key), b.access_token(&key));
    let (ta, tb) = (ta.unwrap(), tb.unwrap());
    assert_eq!(
        ta.access_token, tb.access_token,
        "both use the one new token"
    );
    assert_eq!(fake.stats().refresh_grants, 1, "refreshed once");
    assert_eq!(fake.stats().rejected_refreshes, 0);
    let on_disk = &TokenStore::new(&path).load().unwrap().accounts[&key];
    assert_eq!(on_disk.access_token, ta.access_token);
    assert!(fake.is_valid_refresh(on_disk.refresh_token.as_ref().unwrap().expose()));
}

const CHILD_ENV: &str = "CHATBUS_AUTH_TEST_REFRESH_CHILD";

/// Child mode: refresh the account (`due` = access_token, `forced` =
/// refresh) and print the access token obtained.
async fn child(spec: &str) {
    let mut parts = spec.split('|');
    let (path, base, key, mode) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let mut settings = common::oauth::ProviderSettings::twitch(
        testkit::fake_oauth::CLIENT_ID,
        common::Secret::new(testkit::fake_oauth::CLIENT_SECRET),
    )
    .with_base_url(base);
    settings.timeout = Duration::from_secs(10);
    let m = common::token_manager::TokenManager::new(TokenStore::new(path), settings);
    let token = match mode {
        "due" => m.access_token(key).await,
        _ => m.refresh(key).await,
    }
    .unwrap();
    println!("TOKEN={}", token.access_token.expose());
}

async fn two_processes(mode: &str, test_name: &str) {
    let fake = FakeOAuth::start().await;
    // Long enough that the two children's refreshes overlap.
    fake.set_refresh_delay(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenStore.json");
    let (key, old) = seed(&TokenStore::new(&path), &fake, secs(3590), secs(10));
    let exe = std::env::current_exe().unwrap();
    let spec = format!("{}|{}|{key}|{mode}", path.display(), fake.base_url());
    let children: Vec<_> = (0..2)
        .map(|_| {
            tokio::process::Command::new(&exe)
                .args(["--exact", test_name, "--nocapture"])
                .env(CHILD_ENV, &spec)
                .stdout(std::process::Stdio::piped())
                .output()
        })
        .collect();
    let mut tokens = Vec::new();
    for child in children {
        let out = testkit::within(30, "child refresher", child).await.unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "child failed: {stdout}");
        let token = stdout
            .lines()
            .find_map(|l| l.strip_prefix("TOKEN="))
            .unwrap_or_else(|| panic!("no token in {stdout}"))
            .to_owned();
        tokens.push(token);
    }
    let stats = fake.stats();
    assert_eq!(
        stats.rejected_refreshes, 0,
        "no process used a spent refresh token"
    );
    let on_disk = &TokenStore::new(&path).load().unwrap().accounts[&key];
    assert_eq!(on_disk.status, AccountStatus::Valid);
    assert_ne!(on_disk.access_token, old.access_token);
    assert!(
        fake.is_valid_access(on_disk.access_token.expose()),
        "the token on disk works"
    );
    assert!(fake.is_valid_refresh(on_disk.refresh_token.as_ref().unwrap().expose()));
    if mode == "due" {
        assert_eq!(
            stats.refresh_grants, 1,
            "the second process used the first one's token"
        );
        assert!(
            tokens.iter().all(|t| t == on_disk.access_token.expose()),
            "{tokens:?}"
        );
    } else {
        assert!((1..=2).contains(&stats.refresh_grants));
        assert!(tokens.contains(&on_disk.access_token.expose().to_owned()));
    }
}

#[tokio::test]
async fn two_processes_refreshing_a_due_token_at_once_refresh_it_once() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec).await;
    }
    two_processes(
        "due",
        "refresh::two_processes_refreshing_a_due_token_at_once_refresh_it_once",
    )
    .await;
}

#[tokio::test]
async fn two_processes_forcing_a_refresh_at_once_leave_one_valid_token() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec).await;
    }
    two_processes(
        "forced",
        "refresh::two_processes_forcing_a_refresh_at_once_leave_one_valid_token",
    )
    .await;
}

#[tokio::test]
async fn refresh_at_is_honoured_and_tokens_without_expiry_are_never_due() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    let m = manager(&store, &fake, quiet_options());
    let (_, mut t) = seed(&store, &fake, secs(0), secs(1000));
    assert_eq!(m.refresh_due(&t).unwrap() - t.obtained_at, secs(800));
    t.expires_at = None;
    assert_eq!(m.refresh_due(&t), None);
}

#[tokio::test]
async fn a_manager_limited_to_one_account_leaves_the_others_alone() {
    let fake = FakeOAuth::start().await;
    let dir = tempfile::tempdir().unwrap();
    let store = TokenStore::new(dir.path().join("tokenStore.json"));
    // Two accounts, both past their refresh point.
    let (own, own_old) = seed(&store, &fake, secs(100), secs(10));
    let issued = fake.issue(&["chat:read"]);
    let mut other = own_old.clone();
    other.login = "someone_else".into();
    other.access_token = common::secret::Secret::new(issued.access_token);
    other.refresh_token = issued.refresh_token.map(common::secret::Secret::new);
    let other_key = other.key();
    let other_before = other.clone();
    store
        .update(move |f| f.accounts.insert(other.key(), other))
        .unwrap();

    let m = manager(
        &store,
        &fake,
        TokenManagerOptions {
            only_account: Some(own.clone()),
            ..quiet_options()
        },
    );
    let cancel = CancellationToken::new();
    let task = tokio::spawn({
        let m = m.clone();
        let cancel = cancel.clone();
        async move { m.run(cancel).await }
    });
    testkit::eventually(6, "its own account is refreshed", || {
        let store = store.clone();
        let own = own.clone();
        let old = own_old.access_token.clone();
        async move {
            let t = store.load().unwrap().accounts.remove(&own)?;
            (t.access_token != old).then_some(())
        }
    })
    .await;
    // A few more passes (poll_every is 200 ms) for it to get things wrong.
    tokio::time::sleep(Duration::from_millis(800)).await;
    cancel.cancel();
    testkit::within(5, "manager stops", task)
        .await
        .unwrap()
        .unwrap();
    let other_after = store.load().unwrap().accounts.remove(&other_key).unwrap();
    assert_eq!(
        other_after.access_token, other_before.access_token,
        "not refreshed"
    );
    assert_eq!(
        other_after.last_validated_at, other_before.last_validated_at,
        "not validated"
    );
    assert_eq!(other_after.status, AccountStatus::Valid);
    assert_eq!(fake.stats().refresh_grants, 1, "one refresh: its own");
}
