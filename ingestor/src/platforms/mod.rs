//! The platforms: one folder each, owning everything about its platform
//! (its settings, channel-name rules, credentials, source and the options
//! it gives the shared channel manager), [`seam`], what they all hand the
//! rest of the ingestor, [`reconnect`], the backoff their connections
//! share, and [`send_limiter`], the sliding windows their senders keep.
//!
//! This module only lists them: [`Settings`] (every platform's settings,
//! read from the service's layered configuration) and [`start`]. Adding a
//! platform is a folder with `Settings` (`validate`) and `start`, and its
//! name in the list at the bottom of this file (CONTRIBUTING.md).

pub mod reconnect;
pub mod seam;
pub mod send_limiter;
pub mod sender_token;

use std::collections::BTreeSet;

use anyhow::Context as _;
use common::config::{ConfigError, Sources, keys_of};
use common::oauth::OAuthConfig;

use seam::{Context, Started};

/// Declares the platforms: their settings and how they start.
macro_rules! platforms {
    ($($name:ident),+ $(,)?) => {
        $(pub mod $name;)+

        /// The built-in platforms' names (no webhook source may take one).
        pub const NAMES: &[&str] = &[$(stringify!($name)),+];

        /// Every platform's settings, each a flat struct of its own read
        /// from the same layered sources as the service's configuration.
        #[derive(Debug, Clone, Default)]
        pub struct Settings {
            $(
                #[doc = concat!("The `", stringify!($name), "` platform's settings.")]
                pub $name: $name::Settings,
            )+
        }

        impl Settings {
            /// Reads every platform's settings from `sources`.
            ///
            /// # Errors
            /// [`ConfigError`] naming a key whose value has the wrong type.
            pub fn read(sources: &Sources) -> Result<Self, ConfigError> {
                Ok(Self { $($name: sources.part()?,)+ })
            }

            /// Every platform's configuration keys.
            pub fn keys() -> BTreeSet<String> {
                let mut keys = BTreeSet::new();
                $(keys.extend(keys_of(&$name::Settings::default()));)+
                keys
            }

            /// Checks every platform's settings; `oauth` is the shared OAuth
            /// configuration.
            ///
            /// # Errors
            /// [`ConfigError::Invalid`] naming the first bad key.
            pub fn validate(&self, oauth: &OAuthConfig) -> Result<(), ConfigError> {
                $(self.$name.validate(oauth)?;)+
                Ok(())
            }
        }

        /// Starts every configured platform, in the order listed.
        ///
        /// # Errors
        /// The first platform that cannot start, named.
        pub fn start(settings: &Settings, ctx: &Context) -> anyhow::Result<Vec<Started>> {
            let mut started = Vec::new();
            $(
                let platform = $name::start(&settings.$name, ctx)
                    .with_context(|| format!("starting the {} platform", stringify!($name)))?;
                if let Some(platform) = platform {
                    started.push(platform);
                }
            )+
            Ok(started)
        }
    };
}

platforms!(twitch, youtube, kick);

#[cfg(test)]
mod tests {
    use common::config::load_from;

    use crate::Config;

    #[test]
    fn platform_keys_are_read_from_the_service_sources_as_numbers_and_booleans() {
        let c: Config = load_from(
            None,
            [
                ("TWITCH_JOIN_LIMIT", "7"),
                ("TWITCH_IRC_TLS", "false"),
                ("YOUTUBE_DAILY_QUOTA", "500"),
                ("SPOOL_MAX_BYTES", "2147483648"),
            ],
        )
        .unwrap();
        assert_eq!(c.platforms.twitch.twitch_join_limit, 7);
        assert!(!c.platforms.twitch.twitch_irc_tls);
        assert_eq!(c.platforms.youtube.youtube_daily_quota, 500);
        assert_eq!(c.spool_max_bytes, 2_147_483_648);
        let keys = common::config::keys::<Config>();
        for key in ["twitch_join_limit", "youtube_daily_quota", "amqp_url"] {
            assert!(keys.contains(key), "{key} in {keys:?}");
        }
    }
}
