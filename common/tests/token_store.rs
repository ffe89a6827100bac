//! The token store's lock holds across processes: several processes doing
//! read-modify-write cycles at once lose no update.

use std::process::Command;

use chrono::Utc;
use common::Secret;
use common::token_store::{AccountStatus, StoredToken, TokenStore, account_key};

const CHILDREN: usize = 4;
const UPDATES: usize = 40;

fn token(login: &str) -> StoredToken {
    StoredToken {
        platform: "twitch".into(),
        login: login.into(),
        user_id: "1".into(),
        access_token: Secret::new(format!("access-{login}")),
        refresh_token: None,
        expires_at: None,
        scopes: vec![],
        obtained_at: Utc::now(),
        last_refreshed_at: None,
        last_validated_at: None,
        status: AccountStatus::Valid,
        status_reason: None,
    }
}

#[test]
fn concurrent_processes_lose_no_update() {
    // Child mode: this same test binary, re-executed with the store path.
    if let Ok(spec) = std::env::var("CHATBUS_TOKEN_STORE_CHILD") {
        let (path, id) = spec.split_once('|').unwrap();
        let store = TokenStore::new(path);
        for j in 0..UPDATES {
            let login = format!("p{id}-u{j}");
            store
                .update(|f| {
                    f.accounts
                        .insert(account_key("twitch", &login), token(&login))
                })
                .unwrap();
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenStore.json");
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|id| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "concurrent_processes_lose_no_update",
                    "--nocapture",
                ])
                .env(
                    "CHATBUS_TOKEN_STORE_CHILD",
                    format!("{}|{id}", path.display()),
                )
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let file = TokenStore::new(&path).load().unwrap();
    assert_eq!(file.accounts.len(), CHILDREN * UPDATES);
}
