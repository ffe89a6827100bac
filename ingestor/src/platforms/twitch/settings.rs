//! The Twitch platform's settings (every `TWITCH_*` and `IRC_*` key) and
//! its channel-name rules.
//!
//! A flat struct of its own, read from the same layered sources as the
//! service's configuration (`common::config::Sources::part`) and checked
//! with it, so a bad value fails the start naming its variable.

use std::time::Duration;

use common::config::{ConfigError, check_http_url, check_nonzero, check_range, comma_list};
use common::oauth::OAuthConfig;
use serde::{Deserialize, Serialize};

/// Twitch lets a logged-in account join this many channels.
pub const LOGGED_IN_CHANNEL_LIMIT: usize = 100;

/// Twitch settings. Each field is also an environment variable of the same
/// name in upper case.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Settings {
    /// Twitch IRC server `host:port`.
    pub twitch_irc_addr: String,
    /// Use TLS to the IRC server.
    pub twitch_irc_tls: bool,
    /// Channels to join at start (logins, comma separated).
    #[serde(deserialize_with = "comma_list")]
    pub twitch_channels: Vec<String>,
    /// Account (login) in the token store to connect as. Unset: anonymous,
    /// read-only (`justinfan`). With a Twitch client id (`TWITCH_CLIENT_ID`)
    /// the ingestor refreshes its own token; without one it uses whatever
    /// the auth-server keeps fresh in the store.
    pub twitch_login: Option<String>,
    /// Most JOINs per `twitch_join_window` (Twitch: 20 per 10 s; 2000 for
    /// verified bots).
    pub twitch_join_limit: u32,
    /// The window of `twitch_join_limit`.
    #[serde(with = "humantime_serde")]
    pub twitch_join_window: Duration,
    /// A JOIN not confirmed within this time is sent again.
    #[serde(with = "humantime_serde")]
    pub twitch_join_timeout: Duration,
    /// Channels per IRC connection.
    pub twitch_channels_per_connection: usize,
    /// Most Twitch channels wanted at once (config, restored and admin API
    /// together); more are refused. With `twitch_login` set Twitch itself
    /// allows at most 100.
    pub twitch_max_channels: usize,
    /// An IRC connection silent this long is pinged; silent as long again,
    /// it is dropped and reopened.
    #[serde(with = "humantime_serde")]
    pub twitch_keepalive: Duration,
    /// Longest wait between attempts to reach Twitch IRC (exponential
    /// backoff from 1 s).
    #[serde(with = "humantime_serde")]
    pub twitch_reconnect_max_delay: Duration,
    /// Longest IRC line accepted, in bytes; longer lines are logged and skipped.
    pub irc_max_line_bytes: usize,
    /// Twitch's Helix API (sending chat and moderating).
    pub twitch_helix_url: String,
    /// The token-store account (login) commands act as when they name none.
    /// Unset: commands must name an account (`as`).
    pub twitch_sender: Option<String>,
    /// Twitch's per-account chat window (30 s).
    #[serde(with = "humantime_serde")]
    pub twitch_send_window: Duration,
    /// Messages per window when the target channel is not one where the
    /// account is broadcaster, moderator or VIP (Twitch: 20).
    pub twitch_send_limit: usize,
    /// Messages per window to a channel where the account is broadcaster,
    /// moderator or VIP (Twitch: 100).
    pub twitch_send_limit_privileged: usize,
    /// At most one message per this in a channel where the account is not
    /// privileged (Twitch: 1 s).
    #[serde(with = "humantime_serde")]
    pub twitch_send_channel_interval: Duration,
    /// Added to every window and interval, for the time a request takes to
    /// reach Twitch (Twitch counts by its own clock).
    #[serde(with = "humantime_serde")]
    pub twitch_send_margin: Duration,
    /// How often each sending account's moderated channels are read again
    /// (Helix Get Moderated Channels).
    #[serde(with = "humantime_serde")]
    pub twitch_standing_refresh: Duration,
    /// How often every wanted channel's live state is read (Helix Get
    /// Streams, 100 channels a call, with an app token from the client
    /// credentials `TWITCH_CLIENT_ID`/`TWITCH_CLIENT_SECRET`; without them
    /// Twitch status is off).
    #[serde(with = "humantime_serde")]
    pub twitch_status_interval: Duration,
    /// Each IRC socket's receive buffer (`SO_RCVBUF`, bytes): what the
    /// kernel may hold read and not yet spooled, so with one read (64 KiB)
    /// the most a `kill -9` can lose per connection.
    pub irc_receive_buffer: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            twitch_irc_addr: "irc.chat.twitch.tv:6697".into(),
            twitch_irc_tls: true,
            twitch_channels: Vec::new(),
            twitch_login: None,
            twitch_join_limit: 20,
            twitch_join_window: Duration::from_secs(10),
            twitch_join_timeout: Duration::from_secs(15),
            twitch_channels_per_connection: 90,
            twitch_max_channels: 1_000,
            twitch_keepalive: Duration::from_secs(60),
            twitch_reconnect_max_delay: Duration::from_secs(120),
            irc_max_line_bytes: 64 * 1024,
            irc_receive_buffer: 128 * 1024,
            twitch_helix_url: "https://api.twitch.tv/helix".into(),
            twitch_sender: None,
            twitch_send_window: Duration::from_secs(30),
            twitch_send_limit: 20,
            twitch_send_limit_privileged: 100,
            twitch_send_channel_interval: Duration::from_secs(1),
            twitch_send_margin: Duration::from_millis(250),
            twitch_standing_refresh: Duration::from_secs(10 * 60),
            twitch_status_interval: Duration::from_secs(60),
        }
    }
}

/// Normalises a channel name as Twitch does: trimmed, without `#`, lower case.
pub fn normalise_channel(name: &str) -> String {
    name.trim().trim_start_matches('#').to_lowercase()
}

/// Whether `login` is a plausible Twitch login (`[a-z0-9_]{1,25}`).
pub fn is_valid_login(login: &str) -> bool {
    !login.is_empty()
        && login.len() <= 25
        && login
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Settings {
    /// Checks what serde cannot; `oauth` is the shared OAuth configuration
    /// (checked when an account logs in).
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the first bad key.
    pub fn validate(&self, oauth: &OAuthConfig) -> Result<(), ConfigError> {
        match self.twitch_irc_addr.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0) => {}
            _ => return Err(ConfigError::invalid("twitch_irc_addr", "must be host:port")),
        }
        for channel in &self.twitch_channels {
            if !is_valid_login(&normalise_channel(channel)) {
                return Err(ConfigError::invalid(
                    "twitch_channels",
                    format!("`{channel}` is not a Twitch login ([a-z0-9_], 1-25 characters)"),
                ));
            }
        }
        if let Some(login) = &self.twitch_login {
            if !is_valid_login(login) {
                return Err(ConfigError::invalid("twitch_login", "not a Twitch login"));
            }
            oauth.validate()?;
        }
        check_range("twitch_join_limit", self.twitch_join_limit, 1, 100_000)?;
        check_http_url("twitch_helix_url", &self.twitch_helix_url)?;
        if let Some(sender) = &self.twitch_sender
            && !is_valid_login(sender)
        {
            return Err(ConfigError::invalid("twitch_sender", "not a Twitch login"));
        }
        check_nonzero("twitch_send_window", self.twitch_send_window)?;
        check_nonzero("twitch_status_interval", self.twitch_status_interval)?;
        check_range("twitch_send_limit", self.twitch_send_limit, 1, 100_000)?;
        check_range(
            "twitch_send_limit_privileged",
            self.twitch_send_limit_privileged,
            1,
            100_000,
        )?;
        check_nonzero("twitch_standing_refresh", self.twitch_standing_refresh)?;
        check_nonzero("twitch_join_window", self.twitch_join_window)?;
        check_range(
            "twitch_channels_per_connection",
            self.twitch_channels_per_connection,
            1,
            10_000,
        )?;
        check_range("twitch_max_channels", self.twitch_max_channels, 1, 100_000)?;
        check_nonzero("twitch_keepalive", self.twitch_keepalive)?;
        check_nonzero(
            "twitch_reconnect_max_delay",
            self.twitch_reconnect_max_delay,
        )?;
        let wanted = self.initial_channels().len();
        if wanted > self.twitch_max_channels {
            return Err(ConfigError::invalid(
                "twitch_channels",
                format!(
                    "{wanted} channels, more than TWITCH_MAX_CHANNELS ({})",
                    self.twitch_max_channels
                ),
            ));
        }
        if self.twitch_login.is_some() && wanted > LOGGED_IN_CHANNEL_LIMIT {
            return Err(ConfigError::invalid(
                "twitch_channels",
                format!(
                    "{wanted} channels, but Twitch lets a logged-in account join 100: unset TWITCH_LOGIN to read anonymously (no limit), or list fewer"
                ),
            ));
        }
        check_range(
            "irc_receive_buffer",
            self.irc_receive_buffer,
            4096,
            64 * 1024 * 1024,
        )?;
        check_range(
            "irc_max_line_bytes",
            self.irc_max_line_bytes,
            1024,
            64 * 1024 * 1024,
        )
    }

    /// The channels to join at start, normalised and deduplicated.
    pub fn initial_channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self
            .twitch_channels
            .iter()
            .map(|c| normalise_channel(c))
            .filter(|c| !c.is_empty())
            .collect();
        channels.sort();
        channels.dedup();
        channels
    }
}

#[cfg(test)]
mod tests {
    use common::config::load_from;

    use crate::Config;

    fn twitch(c: &Config) -> &super::Settings {
        &c.platforms.twitch
    }

    #[test]
    fn defaults_are_valid_and_anonymous() {
        let c: Config = load_from(None, Vec::<(String, String)>::new()).unwrap();
        assert!(twitch(&c).twitch_login.is_none());
        assert_eq!(twitch(&c).twitch_irc_addr, "irc.chat.twitch.tv:6697");
        assert!(twitch(&c).twitch_irc_tls);
    }

    #[test]
    fn channels_from_a_comma_list_are_normalised() {
        let c: Config = load_from(None, [("TWITCH_CHANNELS", "#Foo, bar,foo")]).unwrap();
        assert_eq!(twitch(&c).initial_channels(), ["bar", "foo"]);
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (k, v) in [
            ("TWITCH_CHANNELS", "ok,not a channel"),
            ("TWITCH_IRC_ADDR", "no-port"),
            ("TWITCH_JOIN_LIMIT", "0"),
            ("TWITCH_JOIN_TIMEOUT", "whenever"),
        ] {
            let err = load_from::<Config, _, _, _>(None, [(k, v)])
                .unwrap_err()
                .to_string();
            assert!(err.contains(k), "{k}: {err}");
        }
    }
}
