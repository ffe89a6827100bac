//! The OAuth keys every service shares ([`OAuthConfig`]): where the token
//! store is and how to reach each provider, with their checks (a secret
//! given once, directly or as a file; provider URLs https or loopback, with
//! no credentials in them).

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::providers::{DEFAULT_TIMEOUT, ProviderKind, ProviderSettings};
use crate::config::{ConfigError, comma_list};
use crate::secret::Secret;
use crate::token_store::TokenStore;

/// The OAuth settings every service shares: where the token store is and
/// how to reach each provider. A service flattens it into its own config
/// (`#[serde(flatten)] pub oauth: OAuthConfig`), so the keys (`TOKEN_STORE_PATH`,
/// `TWITCH_CLIENT_ID`, `GOOGLE_SCOPES` ...) are the same everywhere.
///
/// A provider is configured when its client id is set; then its secret must
/// be given, either directly (`*_CLIENT_SECRET`) or as a file path
/// (`*_CLIENT_SECRET_FILE`), never both.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OAuthConfig {
    /// Path of `tokenStore.json`.
    pub token_store_path: PathBuf,
    /// Timeout of one request to a provider.
    #[serde(with = "humantime_serde")]
    pub oauth_timeout: Duration,
    /// Twitch application client id; empty = Twitch not configured.
    pub twitch_client_id: String,
    /// Twitch application client secret.
    pub twitch_client_secret: Secret,
    /// File holding the Twitch client secret (instead of `TWITCH_CLIENT_SECRET`).
    pub twitch_client_secret_file: Option<PathBuf>,
    /// Twitch authorize endpoint.
    pub twitch_authorize_url: String,
    /// Twitch token endpoint.
    pub twitch_token_url: String,
    /// Twitch validation endpoint.
    pub twitch_validate_url: String,
    /// Twitch revocation endpoint.
    pub twitch_revoke_url: String,
    /// Scopes requested from Twitch.
    #[serde(deserialize_with = "comma_list")]
    pub twitch_scopes: Vec<String>,
    /// Google client id; empty = Google not configured.
    pub google_client_id: String,
    /// Google client secret.
    pub google_client_secret: Secret,
    /// File holding the Google client secret (instead of `GOOGLE_CLIENT_SECRET`).
    pub google_client_secret_file: Option<PathBuf>,
    /// Google authorize endpoint.
    pub google_authorize_url: String,
    /// Google token endpoint.
    pub google_token_url: String,
    /// Google token information endpoint.
    pub google_validate_url: String,
    /// Google revocation endpoint.
    pub google_revoke_url: String,
    /// Scopes requested from Google.
    #[serde(deserialize_with = "comma_list")]
    pub google_scopes: Vec<String>,
    /// Kick app client id; empty = Kick login not configured. The same
    /// key as the ingestor's Kick platform: one Kick app.
    pub kick_client_id: String,
    /// Kick app client secret.
    pub kick_client_secret: Secret,
    /// File holding the Kick client secret (instead of `KICK_CLIENT_SECRET`).
    pub kick_client_secret_file: Option<PathBuf>,
    /// Kick authorize endpoint.
    pub kick_authorize_url: String,
    /// Kick token endpoint.
    pub kick_token_url: String,
    /// Kick's users endpoint (whose a token is).
    pub kick_validate_url: String,
    /// Kick revocation endpoint.
    pub kick_revoke_url: String,
    /// Scopes requested from Kick.
    #[serde(deserialize_with = "comma_list")]
    pub kick_scopes: Vec<String>,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        let twitch = ProviderSettings::twitch("", Secret::default());
        let google = ProviderSettings::google("", Secret::default());
        let kick = ProviderSettings::kick("", Secret::default());
        Self {
            token_store_path: PathBuf::from("tokenStore.json"),
            oauth_timeout: DEFAULT_TIMEOUT,
            twitch_client_id: String::new(),
            twitch_client_secret: Secret::default(),
            twitch_client_secret_file: None,
            twitch_authorize_url: twitch.authorize_url,
            twitch_token_url: twitch.token_url,
            twitch_validate_url: twitch.validate_url,
            twitch_revoke_url: twitch.revoke_url,
            twitch_scopes: twitch.scopes,
            google_client_id: String::new(),
            google_client_secret: Secret::default(),
            google_client_secret_file: None,
            google_authorize_url: google.authorize_url,
            google_token_url: google.token_url,
            google_validate_url: google.validate_url,
            google_revoke_url: google.revoke_url,
            google_scopes: google.scopes,
            kick_client_id: String::new(),
            kick_client_secret: Secret::default(),
            kick_client_secret_file: None,
            kick_authorize_url: kick.authorize_url,
            kick_token_url: kick.token_url,
            kick_validate_url: kick.validate_url,
            kick_revoke_url: kick.revoke_url,
            kick_scopes: kick.scopes,
        }
    }
}

/// One provider's keys in [`OAuthConfig`], borrowed.
struct ProviderKeys<'a> {
    kind: ProviderKind,
    client_id: &'a str,
    client_secret: &'a Secret,
    client_secret_file: Option<&'a Path>,
    urls: [(&'static str, &'a str); 4],
    scopes: &'a [String],
}

impl OAuthConfig {
    /// The token store at [`OAuthConfig::token_store_path`].
    pub fn token_store(&self) -> TokenStore {
        TokenStore::new(&self.token_store_path)
    }

    /// Twitch's settings, or `None` when `TWITCH_CLIENT_ID` is not set.
    /// Reads `TWITCH_CLIENT_SECRET_FILE` if that is how the secret is given.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the key: a missing or doubly given
    /// secret, an unreadable secret file, a bad URL.
    pub fn twitch(&self) -> Result<Option<ProviderSettings>, ConfigError> {
        self.provider(ProviderKeys {
            kind: ProviderKind::Twitch,
            client_id: &self.twitch_client_id,
            client_secret: &self.twitch_client_secret,
            client_secret_file: self.twitch_client_secret_file.as_deref(),
            urls: [
                ("twitch_authorize_url", &self.twitch_authorize_url),
                ("twitch_token_url", &self.twitch_token_url),
                ("twitch_validate_url", &self.twitch_validate_url),
                ("twitch_revoke_url", &self.twitch_revoke_url),
            ],
            scopes: &self.twitch_scopes,
        })
    }

    /// Google's settings, or `None` when `GOOGLE_CLIENT_ID` is not set.
    ///
    /// # Errors
    /// As [`OAuthConfig::twitch`].
    pub fn google(&self) -> Result<Option<ProviderSettings>, ConfigError> {
        self.provider(ProviderKeys {
            kind: ProviderKind::Google,
            client_id: &self.google_client_id,
            client_secret: &self.google_client_secret,
            client_secret_file: self.google_client_secret_file.as_deref(),
            urls: [
                ("google_authorize_url", &self.google_authorize_url),
                ("google_token_url", &self.google_token_url),
                ("google_validate_url", &self.google_validate_url),
                ("google_revoke_url", &self.google_revoke_url),
            ],
            scopes: &self.google_scopes,
        })
    }

    /// Kick's settings, or `None` when `KICK_CLIENT_ID` is not set.
    ///
    /// # Errors
    /// As [`OAuthConfig::twitch`].
    pub fn kick(&self) -> Result<Option<ProviderSettings>, ConfigError> {
        self.provider(ProviderKeys {
            kind: ProviderKind::Kick,
            client_id: &self.kick_client_id,
            client_secret: &self.kick_client_secret,
            client_secret_file: self.kick_client_secret_file.as_deref(),
            urls: [
                ("kick_authorize_url", &self.kick_authorize_url),
                ("kick_token_url", &self.kick_token_url),
                ("kick_validate_url", &self.kick_validate_url),
                ("kick_revoke_url", &self.kick_revoke_url),
            ],
            scopes: &self.kick_scopes,
        })
    }

    /// Every configured provider, Twitch first.
    ///
    /// # Errors
    /// As [`OAuthConfig::twitch`].
    pub fn providers(&self) -> Result<Vec<ProviderSettings>, ConfigError> {
        Ok([self.twitch()?, self.google()?, self.kick()?]
            .into_iter()
            .flatten()
            .collect())
    }

    /// Checks every key (including that secret files can be read). Call it
    /// from the service's `ServiceConfig::validate`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.token_store_path.as_os_str().is_empty() {
            return Err(ConfigError::invalid(
                "token_store_path",
                "must not be empty",
            ));
        }
        crate::config::check_nonzero("oauth_timeout", self.oauth_timeout)?;
        self.providers().map(drop)
    }

    fn provider(&self, keys: ProviderKeys<'_>) -> Result<Option<ProviderSettings>, ConfigError> {
        let name = keys.kind.name();
        let id_key = format!("{name}_client_id");
        let secret_key = format!("{name}_client_secret");
        let file_key = format!("{name}_client_secret_file");
        let client_id = keys.client_id.trim();
        if client_id.is_empty() {
            // Not configured. A secret without an id is a mistake worth naming.
            if !keys.client_secret.is_empty() || keys.client_secret_file.is_some() {
                return Err(ConfigError::invalid(
                    &id_key,
                    format!(
                        "is required when {} is set",
                        secret_key.to_ascii_uppercase()
                    ),
                ));
            }
            return Ok(None);
        }
        let client_secret = match (keys.client_secret.is_empty(), keys.client_secret_file) {
            (false, Some(_)) => {
                return Err(ConfigError::invalid(
                    &file_key,
                    format!(
                        "set either it or {}, not both",
                        secret_key.to_ascii_uppercase()
                    ),
                ));
            }
            (false, None) => keys.client_secret.clone(),
            (true, Some(path)) => read_secret_file(&file_key, path)?,
            (true, None) => {
                return Err(ConfigError::invalid(
                    &secret_key,
                    format!(
                        "is required when {} is set (or give {})",
                        id_key.to_ascii_uppercase(),
                        file_key.to_ascii_uppercase()
                    ),
                ));
            }
        };
        for (key, url) in keys.urls {
            check_provider_url(key, url)?;
        }
        if keys.scopes.is_empty() {
            return Err(ConfigError::invalid(
                &format!("{name}_scopes"),
                "must list at least one scope",
            ));
        }
        let mut settings = match keys.kind {
            ProviderKind::Twitch => ProviderSettings::twitch(client_id, client_secret),
            ProviderKind::Google => ProviderSettings::google(client_id, client_secret),
            ProviderKind::Kick => ProviderSettings::kick(client_id, client_secret),
        };
        let [authorize, token, validate, revoke] = keys.urls.map(|(_, url)| url.to_owned());
        settings.authorize_url = authorize;
        settings.token_url = token;
        settings.validate_url = validate;
        settings.revoke_url = revoke;
        settings.scopes = keys.scopes.to_vec();
        settings.timeout = self.oauth_timeout;
        Ok(Some(settings))
    }
}

/// Reads a client secret from a file (trailing whitespace trimmed). Warns
/// when other users can read it.
fn read_secret_file(key: &str, path: &Path) -> Result<Secret, ConfigError> {
    use std::os::unix::fs::PermissionsExt;
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigError::invalid(key, format!("cannot read {}: {e}", path.display())))?;
    if let Ok(meta) = std::fs::metadata(path) {
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "client secret file is readable by other users; it should be 0600");
        }
    }
    let secret = text.trim();
    if secret.is_empty() {
        return Err(ConfigError::invalid(
            key,
            format!("{} is empty", path.display()),
        ));
    }
    Ok(Secret::new(secret))
}

/// A provider endpoint must be https (http only on loopback, for tests and
/// local fakes) and must not carry credentials: the client secret comes from
/// the environment or a file, never from a URL.
fn check_provider_url(key: &str, value: &str) -> Result<(), ConfigError> {
    let url =
        Url::parse(value).map_err(|e| ConfigError::invalid(key, format!("not a URL ({e})")))?;
    check_url_scheme(key, &url)?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ConfigError::invalid(
            key,
            "must not contain credentials; give the client secret in the environment or a file",
        ));
    }
    if url
        .query_pairs()
        .any(|(k, _)| k.eq_ignore_ascii_case("client_secret"))
    {
        return Err(ConfigError::invalid(
            key,
            "must not contain client_secret; give it in the environment or a file",
        ));
    }
    Ok(())
}

/// `https://`, or `http://` to a loopback host (`localhost`, 127.0.0.0/8, `::1`).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `key`.
pub fn check_url_scheme(key: &str, url: &Url) -> Result<(), ConfigError> {
    match url.scheme() {
        "https" if url.host().is_some() => Ok(()),
        "http" if is_loopback_host(url) => Ok(()),
        "http" => Err(ConfigError::invalid(
            key,
            "must be https:// (http:// is allowed only for localhost)",
        )),
        _ => Err(ConfigError::invalid(key, "must be an https:// URL")),
    }
}

fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(oauth2::url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(oauth2::url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(oauth2::url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::twitch_endpoints;

    fn config(pairs: &[(&str, &str)]) -> Result<OAuthConfig, ConfigError> {
        #[derive(Debug, Default, Serialize, Deserialize)]
        #[serde(default)]
        struct Service {
            #[serde(flatten)]
            oauth: OAuthConfig,
        }
        impl crate::config::ServiceConfig for Service {
            fn validate(&self) -> Result<(), ConfigError> {
                self.oauth.validate()
            }
        }
        let env: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        crate::config::load_from::<Service, _, _, _>(None, env).map(|s| s.oauth)
    }

    #[test]
    fn flattened_config_reads_the_shared_keys() {
        let c = config(&[]).unwrap();
        assert_eq!(c.twitch().unwrap(), None);
        assert_eq!(c.token_store_path, PathBuf::from("tokenStore.json"));
        let c = config(&[
            ("TWITCH_CLIENT_ID", "cid"),
            ("TWITCH_CLIENT_SECRET", "sec"),
            ("TWITCH_SCOPES", "chat:read, chat:edit"),
            ("TWITCH_TOKEN_URL", "http://127.0.0.1:1234/oauth2/token"),
            ("OAUTH_TIMEOUT", "3s"),
            ("TOKEN_STORE_PATH", "/tmp/x.json"),
        ])
        .unwrap();
        let t = c.twitch().unwrap().unwrap();
        assert_eq!(t.client_id, "cid");
        assert_eq!(t.client_secret.expose(), "sec");
        assert_eq!(t.scopes, ["chat:read", "chat:edit"]);
        assert_eq!(t.token_url, "http://127.0.0.1:1234/oauth2/token");
        assert_eq!(t.authorize_url, twitch_endpoints::AUTHORIZE);
        assert_eq!(t.timeout, Duration::from_secs(3));
        assert_eq!(c.providers().unwrap().len(), 1);
    }

    #[test]
    fn secret_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "from-file\n").unwrap();
        let c = config(&[
            ("GOOGLE_CLIENT_ID", "gid"),
            ("GOOGLE_CLIENT_SECRET_FILE", path.to_str().unwrap()),
        ])
        .unwrap();
        let g = c.google().unwrap().unwrap();
        assert_eq!(g.client_secret.expose(), "from-file");
        assert_eq!(g.platform(), "youtube");
        assert!(
            g.authorize_params
                .contains(&("prompt".into(), "consent".into()))
        );
    }

    #[test]
    fn bad_provider_config_names_the_key() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("TWITCH_CLIENT_ID", "c")], "TWITCH_CLIENT_SECRET"),
            (&[("TWITCH_CLIENT_SECRET", "s")], "TWITCH_CLIENT_ID"),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_CLIENT_SECRET_FILE", "/x"),
                ],
                "TWITCH_CLIENT_SECRET_FILE",
            ),
            (
                &[
                    ("GOOGLE_CLIENT_ID", "c"),
                    ("GOOGLE_CLIENT_SECRET_FILE", "/nonexistent/secret"),
                ],
                "GOOGLE_CLIENT_SECRET_FILE",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_TOKEN_URL", "http://id.example.com/token"),
                ],
                "TWITCH_TOKEN_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_TOKEN_URL", "https://c:s@id.example.com/token"),
                ],
                "TWITCH_TOKEN_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    (
                        "TWITCH_VALIDATE_URL",
                        "https://id.example.com/v?client_secret=s",
                    ),
                ],
                "TWITCH_VALIDATE_URL",
            ),
            (
                &[
                    ("TWITCH_CLIENT_ID", "c"),
                    ("TWITCH_CLIENT_SECRET", "s"),
                    ("TWITCH_SCOPES", " ,"),
                ],
                "TWITCH_SCOPES",
            ),
            (&[("OAUTH_TIMEOUT", "0s")], "OAUTH_TIMEOUT"),
        ];
        for (env, key) in cases {
            let err = config(env).unwrap_err().to_string();
            assert!(err.contains(key), "{env:?}: {err}");
        }
    }

    #[test]
    fn loopback_http_is_allowed_and_other_http_is_not() {
        let ok = |u: &str| check_url_scheme("k", &Url::parse(u).unwrap()).is_ok();
        assert!(ok("http://127.0.0.1:3000/x") && ok("http://localhost/x") && ok("http://[::1]/"));
        assert!(ok("https://id.twitch.tv/oauth2/token"));
        assert!(!ok("http://id.twitch.tv/") && !ok("ftp://127.0.0.1/"));
    }
}
