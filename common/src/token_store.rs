//! `tokenStore.json`: OAuth tokens, one entry per platform account.
//!
//! * Writes are atomic: a temporary file in the same directory, created with
//!   mode 0600, written, fsynced, renamed over the store, and the directory
//!   fsynced. A reader sees the old file or the new one, never half of one.
//! * Read-modify-write cycles ([`TokenStore::update`]) hold an exclusive lock
//!   on `<store>.lock`, so two processes (the auth-server and an ingestor,
//!   say) cannot lose each other's update.
//! * Tokens are [`Secret`]s: `Debug` prints `[redacted]`.
//!
//! The shape mirrors twitch-irc's `TokenStorage` trait: [`TokenStore::load_token`]
//! and [`TokenStore::update_token`].

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::secret::Secret;

/// Version of the file layout.
pub const TOKEN_FILE_VERSION: u32 = 1;

/// The whole file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenFile {
    /// Always [`TOKEN_FILE_VERSION`].
    pub version: u32,
    /// Accounts by [`account_key`] (`<platform>:<login>`).
    #[serde(default)]
    pub accounts: BTreeMap<String, StoredToken>,
}

impl Default for TokenFile {
    fn default() -> Self {
        Self {
            version: TOKEN_FILE_VERSION,
            accounts: BTreeMap::new(),
        }
    }
}

/// The key of an account in the file: `<platform>:<login>`.
pub fn account_key(platform: &str, login: &str) -> String {
    format!("{platform}:{}", login.to_ascii_lowercase())
}

/// Whether an account's tokens can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountStatus {
    /// Tokens are believed valid (or refreshable).
    #[default]
    Valid,
    /// The refresh token was rejected: a human must authorize again.
    ReauthRequired,
}

/// One platform account's tokens and what we know about them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredToken {
    /// Platform identifier (`twitch`, `youtube`).
    pub platform: String,
    /// The account's lowercase login.
    pub login: String,
    /// The platform's user id.
    pub user_id: String,
    /// OAuth access token.
    pub access_token: Secret,
    /// OAuth refresh token, if the provider issued one.
    pub refresh_token: Option<Secret>,
    /// When the access token expires, if known.
    pub expires_at: Option<DateTime<Utc>>,
    /// Granted scopes.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// When the current access token was obtained.
    pub obtained_at: DateTime<Utc>,
    /// When the token was last refreshed.
    #[serde(default)]
    pub last_refreshed_at: Option<DateTime<Utc>>,
    /// When the token was last validated with the provider.
    #[serde(default)]
    pub last_validated_at: Option<DateTime<Utc>>,
    /// Usable or needs a human.
    #[serde(default)]
    pub status: AccountStatus,
    /// Why the status is what it is (e.g. the provider's refusal).
    #[serde(default)]
    pub status_reason: Option<String>,
}

impl StoredToken {
    /// This token's key in the file.
    pub fn key(&self) -> String {
        account_key(&self.platform, &self.login)
    }
}

/// Why the store could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenStoreError {
    /// A filesystem operation failed.
    #[error("token store {path}: {op}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What we were doing.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid token store.
    #[error("token store {path} is not valid JSON for the token store format: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// The file has a layout version this build does not understand.
    #[error("token store {path} has version {found}, expected {TOKEN_FILE_VERSION}")]
    Version {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
    },
    /// A blocking task panicked or was cancelled.
    #[error("token store task failed: {0}")]
    Task(String),
}

/// Handle on a token store file. Cheap to clone.
#[derive(Debug, Clone)]
pub struct TokenStore {
    path: PathBuf,
    lock_path: PathBuf,
}

impl TokenStore {
    /// A store at `path` (created on first write).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        let mut lock = path.clone().into_os_string();
        lock.push(".lock");
        Self {
            path,
            lock_path: PathBuf::from(lock),
        }
    }

    /// The store's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file; a missing file is an empty store. Needs no lock:
    /// writes are atomic renames.
    ///
    /// # Errors
    /// [`TokenStoreError`] if the file exists but cannot be read or parsed.
    pub fn load(&self) -> Result<TokenFile, TokenStoreError> {
        read_file(&self.path)
    }

    /// Parses a token store from JSON text (e.g. `tokenStore.example.json`).
    ///
    /// # Errors
    /// [`TokenStoreError::Parse`] or [`TokenStoreError::Version`].
    pub fn parse(path: &Path, text: &str) -> Result<TokenFile, TokenStoreError> {
        let file: TokenFile =
            serde_json::from_str(text).map_err(|source| TokenStoreError::Parse {
                path: path.to_owned(),
                source,
            })?;
        if file.version != TOKEN_FILE_VERSION {
            return Err(TokenStoreError::Version {
                path: path.to_owned(),
                found: file.version,
            });
        }
        Ok(file)
    }

    /// Read-modify-write under the exclusive lock. `f` sees the current file
    /// (re-read after the lock is taken) and may change it; the result is
    /// written atomically only if it differs from what was read.
    ///
    /// Blocking: call from a blocking context, or use [`TokenStore::update_async`].
    ///
    /// # Errors
    /// [`TokenStoreError`] for lock, read, parse or write failures; then the
    /// file is unchanged.
    pub fn update<R>(&self, f: impl FnOnce(&mut TokenFile) -> R) -> Result<R, TokenStoreError> {
        let _lock = self.lock()?;
        let before = read_file(&self.path)?;
        let mut after = before.clone();
        let result = f(&mut after);
        if after != before {
            let bytes = serde_json::to_vec_pretty(&after).expect("token file serialises");
            write_atomic(&self.path, &bytes)?;
        }
        Ok(result)
    }

    /// [`TokenStore::update`] on the blocking thread pool.
    ///
    /// # Errors
    /// As [`TokenStore::update`].
    pub async fn update_async<R, F>(&self, f: F) -> Result<R, TokenStoreError>
    where
        F: FnOnce(&mut TokenFile) -> R + Send + 'static,
        R: Send + 'static,
    {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.update(f))
            .await
            .map_err(|e| TokenStoreError::Task(e.to_string()))?
    }

    /// [`TokenStore::load`] on the blocking thread pool.
    ///
    /// # Errors
    /// As [`TokenStore::load`].
    pub async fn load_async(&self) -> Result<TokenFile, TokenStoreError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.load())
            .await
            .map_err(|e| TokenStoreError::Task(e.to_string()))?
    }

    /// The stored token of one account.
    ///
    /// # Errors
    /// As [`TokenStore::load`].
    pub async fn load_token(
        &self,
        platform: &str,
        login: &str,
    ) -> Result<Option<StoredToken>, TokenStoreError> {
        let key = account_key(platform, login);
        Ok(self.load_async().await?.accounts.remove(&key))
    }

    /// The first account of `platform`, for services configured with just a
    /// platform (e.g. the ingestor when only one Twitch account is stored).
    ///
    /// # Errors
    /// As [`TokenStore::load`].
    pub async fn first_of_platform(
        &self,
        platform: &str,
    ) -> Result<Option<StoredToken>, TokenStoreError> {
        Ok(self
            .load_async()
            .await?
            .accounts
            .into_values()
            .find(|t| t.platform == platform))
    }

    /// Inserts or replaces one account's token, under the lock.
    ///
    /// # Errors
    /// As [`TokenStore::update`].
    pub async fn update_token(&self, token: StoredToken) -> Result<(), TokenStoreError> {
        self.update_async(move |file| {
            file.accounts.insert(token.key(), token);
        })
        .await
    }

    fn lock(&self) -> Result<File, TokenStoreError> {
        if let Some(dir) = self
            .lock_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
        {
            std::fs::create_dir_all(dir).map_err(|source| TokenStoreError::Io {
                path: dir.to_owned(),
                op: "create directory",
                source,
            })?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&self.lock_path)
            .map_err(|source| TokenStoreError::Io {
                path: self.lock_path.clone(),
                op: "open lock file",
                source,
            })?;
        file.lock().map_err(|source| TokenStoreError::Io {
            path: self.lock_path.clone(),
            op: "lock",
            source,
        })?;
        // Dropping the File releases the lock.
        Ok(file)
    }
}

fn read_file(path: &Path) -> Result<TokenFile, TokenStoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if let Ok(meta) = std::fs::metadata(path) {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "token store is readable by other users; it should be 0600");
                }
            }
            TokenStore::parse(path, &text)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(TokenFile::default()),
        Err(source) => Err(TokenStoreError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        }),
    }
}

/// Writes `bytes` to `path` atomically with mode 0600: temp file in the same
/// directory, fsync, rename, fsync of the directory.
///
/// # Errors
/// [`TokenStoreError::Io`]; on error the old file is untouched.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), TokenStoreError> {
    let io = |op: &'static str, p: &Path| {
        let p = p.to_owned();
        move |source| TokenStoreError::Io {
            path: p,
            op,
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("create temporary file", &tmp))?;
        file.write_all(bytes).map_err(io("write", &tmp))?;
        file.sync_all().map_err(io("fsync", &tmp))?;
        std::fs::rename(&tmp, path).map_err(io("rename", path))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io("fsync directory", dir))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(login: &str, access: &str) -> StoredToken {
        StoredToken {
            platform: "twitch".into(),
            login: login.into(),
            user_id: "1".into(),
            access_token: Secret::new(access),
            refresh_token: Some(Secret::new("refresh-secret")),
            expires_at: None,
            scopes: vec!["chat:read".into()],
            obtained_at: Utc::now(),
            last_refreshed_at: None,
            last_validated_at: None,
            status: AccountStatus::Valid,
            status_reason: None,
        }
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = TokenStore::new(dir.path().join("tokenStore.json"));
        assert_eq!(store.load().unwrap(), TokenFile::default());
    }

    #[test]
    fn writes_are_0600_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nested/tokenStore.json");
        let store = TokenStore::new(&path);
        store
            .update(|f| f.accounts.insert("twitch:a".into(), token("a", "tok-a")))
            .unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = store.load().unwrap();
        assert_eq!(loaded.accounts["twitch:a"].access_token.expose(), "tok-a");
        // No temporary files are left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.contains(".tmp-")), "{names:?}");
    }

    #[test]
    fn debug_output_hides_tokens() {
        let t = token("a", "super-secret-access");
        let dbg = format!("{t:?}");
        assert!(!dbg.contains("super-secret-access") && !dbg.contains("refresh-secret"));
        assert!(dbg.contains("[redacted]"));
    }

    #[test]
    fn corrupt_file_is_a_clear_error_and_is_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenStore.json");
        std::fs::write(&path, "{not json").unwrap();
        let store = TokenStore::new(&path);
        let err = store.load().unwrap_err();
        assert!(err.to_string().contains("not valid JSON"), "{err}");
        assert!(store.update(|f| f.accounts.clear()).is_err());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{not json");
    }

    #[test]
    fn unknown_version_is_refused() {
        let err =
            TokenStore::parse(Path::new("x"), r#"{"version": 9, "accounts": {}}"#).unwrap_err();
        assert!(matches!(err, TokenStoreError::Version { found: 9, .. }));
    }

    #[test]
    fn concurrent_updates_from_many_threads_lose_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokenStore.json");
        let threads: Vec<_> = (0..8)
            .map(|i| {
                let store = TokenStore::new(&path);
                std::thread::spawn(move || {
                    for j in 0..25 {
                        let login = format!("user{i}-{j}");
                        store
                            .update(|f| {
                                f.accounts
                                    .insert(account_key("twitch", &login), token(&login, "t"))
                            })
                            .unwrap();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(TokenStore::new(&path).load().unwrap().accounts.len(), 200);
    }
}
