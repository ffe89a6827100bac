//! Each sending account's standing per channel: whether it is the
//! broadcaster, a moderator or a VIP there, which lifts Twitch's chat limit
//! from 20 to 100 messages per 30 s and lifts the 1-per-second rule.
//!
//! Learnt from three places: the account's own channel; Helix Get
//! Moderated Channels (refreshed every `TWITCH_STANDING_REFRESH`); and the
//! badges on the account's own messages, which the reader sees (the only
//! way to learn VIP, and the first to see a lost moderator role). Until a
//! channel is known, the account counts as not privileged there: the
//! lowest limit.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use common::schema::{ChatEvent, Role};

/// The standing of the sending accounts.
#[derive(Debug, Default)]
pub struct Standing {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// The sending accounts (logins).
    accounts: HashSet<String>,
    /// `(account, channel)` → privileged, from Get Moderated Channels.
    moderated: HashMap<String, HashSet<String>>,
    /// `(account, channel)` → privileged, from badges seen last.
    badges: HashMap<(String, String), bool>,
}

impl Standing {
    /// Standing for `accounts` (logins; messages of other authors are
    /// ignored).
    pub fn new(accounts: impl IntoIterator<Item = String>) -> Self {
        let standing = Self::default();
        for account in accounts {
            standing.follow(&account);
        }
        standing
    }

    /// Follows `account`'s standing from now on (an account a command
    /// acts as); true if it was not followed before.
    pub fn follow(&self, account: &str) -> bool {
        self.state
            .lock()
            .expect("standing lock")
            .accounts
            .insert(account.to_ascii_lowercase())
    }

    /// Reads the badges of the sending accounts' own messages in `events`.
    pub fn observe(&self, events: &[ChatEvent]) {
        let mut state = self.state.lock().expect("standing lock");
        if state.accounts.is_empty() {
            return;
        }
        for event in events {
            let Some(author) = &event.author else {
                continue;
            };
            if !state.accounts.contains(&author.login) {
                continue;
            }
            let privileged = author
                .roles
                .iter()
                .any(|r| matches!(r, Role::Broadcaster | Role::Moderator | Role::Vip));
            state
                .badges
                .insert((author.login.clone(), event.channel.clone()), privileged);
        }
    }

    /// Replaces `account`'s moderated channels (Get Moderated Channels).
    pub fn set_moderated(&self, account: &str, channels: HashSet<String>) {
        self.state
            .lock()
            .expect("standing lock")
            .moderated
            .insert(account.to_ascii_lowercase(), channels);
    }

    /// Whether `account` is broadcaster, moderator or VIP in `channel`, as
    /// far as is known. The badges seen last win over the moderated list
    /// (they are newer, and the only source for VIP).
    pub fn is_privileged(&self, account: &str, channel: &str) -> bool {
        let account = account.to_ascii_lowercase();
        if account == channel {
            return true;
        }
        let state = self.state.lock().expect("standing lock");
        if let Some(&seen) = state.badges.get(&(account.clone(), channel.to_owned())) {
            return seen;
        }
        state
            .moderated
            .get(&account)
            .is_some_and(|c| c.contains(channel))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(login: &str, channel: &str, roles: Vec<Role>) -> ChatEvent {
        let now = chrono::Utc::now();
        let mut e = ChatEvent::new(
            "m1",
            "twitch",
            channel,
            now,
            now,
            common::schema::EventBody::Message(common::schema::MessageDetails::default()),
        );
        e.author = Some(common::schema::Author {
            id: "1".into(),
            login: login.into(),
            display_name: login.into(),
            color: None,
            badges: Vec::new(),
            roles,
            avatar_url: None,
        });
        e
    }

    #[test]
    fn own_channel_moderated_list_and_badges() {
        let s = Standing::new(["bot".to_owned()]);
        assert!(s.is_privileged("bot", "bot"), "its own channel");
        assert!(!s.is_privileged("bot", "a"), "unknown: not privileged");
        s.set_moderated("bot", ["a".to_owned()].into());
        assert!(s.is_privileged("bot", "a"));
        s.observe(&[message("bot", "b", vec![Role::Vip])]);
        assert!(s.is_privileged("bot", "b"), "VIP from badges");
        s.observe(&[message("bot", "a", vec![])]);
        assert!(!s.is_privileged("bot", "a"), "badges say the role is gone");
        s.observe(&[message("someone", "c", vec![Role::Moderator])]);
        assert!(!s.is_privileged("someone", "c"), "not a sending account");
    }
}
