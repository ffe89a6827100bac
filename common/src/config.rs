//! Layered configuration: built-in defaults, then an optional file, then
//! environment variables (also read from `.env`), via the `config` crate.
//!
//! Every service has one flat, typed struct. A field `amqp_url` is the key
//! `amqp_url` in a TOML/YAML/JSON file and the variable `AMQP_URL` in the
//! environment. Flat keys keep `.env.example`, the file format and the docs
//! one-to-one; a test checks `.env.example` lists every key.
//!
//! Loading fails at start with a [`ConfigError`] that names the key (as the
//! environment variable) and the problem.

use std::collections::BTreeSet;
use std::path::Path;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

/// A service's configuration struct.
pub trait ServiceConfig: DeserializeOwned + Serialize + Default {
    /// Checks what serde cannot (ranges, URL schemes, cross-field rules).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    fn validate(&self) -> Result<(), ConfigError>;

    /// Reads the parts of the configuration that other modules own (the
    /// ingestor's per-platform settings) from the same layered sources,
    /// after the struct's own keys and before [`ServiceConfig::validate`].
    /// Each part is a flat struct of its own, read with [`Sources::part`];
    /// the default reads none.
    ///
    /// # Errors
    /// [`ConfigError`] when a part's value has the wrong type.
    fn read_parts(&mut self, sources: &Sources) -> Result<(), ConfigError> {
        let _ = sources;
        Ok(())
    }

    /// The keys of the parts [`ServiceConfig::read_parts`] reads (with
    /// [`keys_of`]), so the environment filter and `.env.example` see them.
    fn part_keys() -> BTreeSet<String> {
        BTreeSet::new()
    }
}

/// The layered sources of one load (defaults, file, environment), from
/// which a service's parts are read.
///
/// A part is deserialised straight from these sources, not through
/// `serde(flatten)`: flatten buffers values and loses the `config` crate's
/// conversion of environment strings to numbers and booleans.
#[derive(Clone)]
pub struct Sources(config::Config);

/// Never prints the values: they hold passwords and secrets.
impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources(..)")
    }
}

impl Sources {
    /// Reads the flat struct `T` (with `serde(default)`) from the sources:
    /// its keys are the same top-level keys the service's struct reads.
    ///
    /// # Errors
    /// [`ConfigError::Load`] naming the key whose value has the wrong type.
    pub fn part<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        self.0.clone().try_deserialize().map_err(ConfigError::load)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("configuration error: {message}")]
    Load {
        /// What went wrong, naming the key and the source.
        message: String,
        /// The `config` crate's error (boxed: it is large, and every
        /// validation returns this type).
        #[source]
        source: Box<config::ConfigError>,
    },
    /// A value has the right type but is not acceptable.
    #[error("invalid configuration: {key}: {reason}")]
    Invalid {
        /// The environment variable name of the key, e.g. `AMQP_URL`.
        key: String,
        /// Why the value is refused.
        reason: String,
    },
}

impl ConfigError {
    /// An [`ConfigError::Invalid`] for the field `field` (snake_case).
    pub fn invalid(field: &str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key: env_name(field),
            reason: reason.into(),
        }
    }

    fn load(source: config::ConfigError) -> Self {
        let mut message = source.to_string();
        // The config crate names the lowercase key; add the variable name
        // operators actually set.
        if let Some(start) = message.find("for key `") {
            let rest = &message[start + 9..];
            if let Some(end) = rest.find('`') {
                let var = env_name(&rest[..end]);
                message.push_str(&format!(" (environment variable {var})"));
            }
        }
        Self::Load {
            message,
            source: Box::new(source),
        }
    }
}

/// The environment variable name of a field: `amqp_url` -> `AMQP_URL`.
pub fn env_name(field: &str) -> String {
    field.to_ascii_uppercase()
}

/// The keys of a config struct, from its serialised defaults, and those
/// of its parts.
pub fn keys<T: ServiceConfig>() -> BTreeSet<String> {
    let mut keys = keys_of(&T::default());
    keys.extend(T::part_keys());
    keys
}

/// The keys of a flat struct, from its serialised value.
pub fn keys_of<T: Serialize>(value: &T) -> BTreeSet<String> {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::Object(map)) => map.keys().cloned().collect(),
        _ => BTreeSet::new(),
    }
}

/// Loads `T`: defaults, then `file` if given, then `.env` in the working
/// directory if it exists, then the process environment (which wins).
///
/// # Errors
/// [`ConfigError`] when a source cannot be read, a value has the wrong type
/// or [`ServiceConfig::validate`] refuses it.
pub fn load<T: ServiceConfig>(file: Option<&Path>) -> Result<T, ConfigError> {
    load_with_dotenv(file, Path::new(".env"))
}

/// [`load`] with the `.env` file at `dotenv`.
///
/// In `.env` the **last** line setting a variable wins, as when a shell
/// sources it: `cp .env.example .env; echo TWITCH_CHANNELS=a,b >> .env`
/// means `a,b`.
///
/// # Errors
/// As [`load`]; a malformed `.env` is refused (a missing one is normal).
pub fn load_with_dotenv<T: ServiceConfig>(
    file: Option<&Path>,
    dotenv: &Path,
) -> Result<T, ConfigError> {
    let mut vars: std::collections::HashMap<String, String> = std::collections::HashMap::new();
    match dotenvy::from_path_iter(dotenv) {
        Ok(items) => {
            for item in items {
                let (k, v) = item.map_err(|e| ConfigError::Invalid {
                    key: ".env".into(),
                    reason: e.to_string(),
                })?;
                vars.insert(k, v);
            }
        }
        Err(e) if e.not_found() => {}
        Err(e) => {
            return Err(ConfigError::Invalid {
                key: ".env".into(),
                reason: e.to_string(),
            });
        }
    }
    vars.extend(std::env::vars());
    load_from(file, vars)
}

/// Loads `T` from defaults, `file` and the given environment. Tests use this
/// to avoid touching the process environment.
///
/// # Errors
/// As [`load`].
pub fn load_from<T, I, K, V>(file: Option<&Path>, env: I) -> Result<T, ConfigError>
where
    T: ServiceConfig,
    I: IntoIterator<Item = (K, V)>,
    K: Into<String>,
    V: Into<String>,
{
    let known = keys::<T>();
    // Only the variables this service knows: the environment is full of
    // unrelated names (PATH, HOME ...) that must not be parsed as config.
    let env: config::Map<String, String> = env
        .into_iter()
        .map(|(k, v)| (k.into(), v.into()))
        .filter(|(k, _)| known.contains(&k.to_ascii_lowercase()))
        .collect();

    let defaults = config::Config::try_from(&T::default()).map_err(ConfigError::load)?;
    let mut builder = config::Config::builder().add_source(defaults);
    if let Some(file) = file {
        if !file.exists() {
            return Err(ConfigError::Invalid {
                key: "--config".into(),
                reason: format!("file {} does not exist", file.display()),
            });
        }
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder = builder.add_source(config::Environment::default().source(Some(env)));
    let sources = Sources(builder.build().map_err(ConfigError::load)?);
    let mut value: T = sources.part()?;
    value.read_parts(&sources)?;
    value.validate()?;
    Ok(value)
}

/// Deserialises a list from either a sequence (files) or a comma-separated
/// string (environment). Blank items are dropped and items are trimmed.
///
/// # Errors
/// When the value is neither a string nor a sequence of strings.
pub fn comma_list<'de, D>(deserializer: D) -> Result<Vec<String>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let items = match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(s) => s.split(',').map(str::to_owned).collect::<Vec<_>>(),
        OneOrMany::Many(v) => v,
    };
    Ok(items
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect())
}

/// Checks that `value` is an AMQP URL, or a comma list of them (the nodes
/// of a cluster).
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_amqp_url(field: &str, value: &str) -> Result<(), ConfigError> {
    let urls = crate::amqp::split_urls(value);
    if urls.is_empty() {
        return Err(ConfigError::invalid(field, "no amqp:// URL given"));
    }
    for url in urls {
        url.parse::<lapin::uri::AMQPUri>().map_err(|e| {
            ConfigError::invalid(
                field,
                format!(
                    "`{}` is not an amqp:// or amqps:// URL ({e})",
                    crate::amqp::redact_url(url)
                ),
            )
        })?;
    }
    Ok(())
}

/// Checks that `value` is an `http(s)://` URL.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_http_url(field: &str, value: &str) -> Result<(), ConfigError> {
    match reqwest::Url::parse(value) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            field,
            "must be an http:// or https:// URL",
        )),
        Err(e) => Err(ConfigError::invalid(field, format!("not a URL ({e})"))),
    }
}

/// Checks that `value` is a listen address, `ip:port`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_socket_addr(field: &str, value: &str) -> Result<(), ConfigError> {
    value
        .parse::<std::net::SocketAddr>()
        .map(drop)
        .map_err(|_| ConfigError::invalid(field, "must be ip:port, e.g. 127.0.0.1:8080"))
}

/// Checks that a text setting is not empty.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_nonempty(field: &str, value: &str) -> Result<(), ConfigError> {
    if value.is_empty() {
        return Err(ConfigError::invalid(field, "must not be empty"));
    }
    Ok(())
}

/// Checks that a duration setting is not zero.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_nonzero(field: &str, value: std::time::Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        return Err(ConfigError::invalid(field, "must be more than 0"));
    }
    Ok(())
}

/// Checks `value` is within `min..=max`.
///
/// # Errors
/// [`ConfigError::Invalid`] naming `field`.
pub fn check_range<T: PartialOrd + std::fmt::Display>(
    field: &str,
    value: T,
    min: T,
    max: T,
) -> Result<(), ConfigError> {
    if value < min || value > max {
        return Err(ConfigError::invalid(
            field,
            format!("{value} is outside {min}..={max}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default)]
    struct Example {
        amqp_url: String,
        port: u16,
        enabled: bool,
        #[serde(deserialize_with = "comma_list")]
        channels: Vec<String>,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        name: Option<String>,
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                amqp_url: "amqp://127.0.0.1:5672/%2f".into(),
                port: 8080,
                enabled: false,
                channels: vec!["a".into()],
                timeout: Duration::from_secs(5),
                name: None,
            }
        }
    }

    impl ServiceConfig for Example {
        fn validate(&self) -> Result<(), ConfigError> {
            check_amqp_url("amqp_url", &self.amqp_url)?;
            check_range("port", self.port, 1, 65535)
        }
    }

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn defaults_then_environment() {
        let c: Example = load_from(None, env(&[])).unwrap();
        assert_eq!(c, Example::default());
        let c: Example = load_from(
            None,
            env(&[
                ("PORT", "9000"),
                ("ENABLED", "true"),
                ("CHANNELS", " x, y ,,z"),
                ("TIMEOUT", "1m 5s"),
                ("NAME", "n"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.port, 9000);
        assert!(c.enabled);
        assert_eq!(c.channels, ["x", "y", "z"]);
        assert_eq!(c.timeout, Duration::from_secs(65));
        assert_eq!(c.name.as_deref(), Some("n"));
    }

    #[test]
    fn file_then_environment_override() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = 7000\nchannels = [\"f1\", \"f2\"]\n").unwrap();
        let c: Example = load_from(Some(&path), env(&[])).unwrap();
        assert_eq!((c.port, c.channels.len()), (7000, 2));
        let c: Example = load_from(Some(&path), env(&[("PORT", "7001")])).unwrap();
        assert_eq!(c.port, 7001);
    }

    #[test]
    fn wrong_type_names_the_variable() {
        let err = load_from::<Example, _, _, _>(None, env(&[("PORT", "eighty")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("PORT"), "{msg}");
    }

    #[test]
    fn invalid_value_names_the_variable_and_reason() {
        let err =
            load_from::<Example, _, _, _>(None, env(&[("AMQP_URL", "http://x")])).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("AMQP_URL") && msg.contains("amqp://"), "{msg}");
        let err = load_from::<Example, _, _, _>(None, env(&[("PORT", "0")])).unwrap_err();
        assert!(err.to_string().contains("PORT: 0 is outside"), "{err}");
        let err = load_from::<Example, _, _, _>(None, env(&[("TIMEOUT", "soon")])).unwrap_err();
        assert!(err.to_string().contains("TIMEOUT"), "{err}");
    }

    #[test]
    fn missing_or_malformed_file_is_an_error() {
        let err = load_from::<Example, _, _, _>(Some(Path::new("/nonexistent.toml")), env(&[]))
            .unwrap_err();
        assert!(err.to_string().contains("does not exist"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "port = [").unwrap();
        assert!(load_from::<Example, _, _, _>(Some(&path), env(&[])).is_err());
    }

    #[test]
    fn keys_come_from_the_struct() {
        let k = keys::<Example>();
        assert!(k.contains("amqp_url") && k.contains("name") && k.len() == 6);
    }
}
