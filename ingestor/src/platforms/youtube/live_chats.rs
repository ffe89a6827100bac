//! Which live chat each followed channel has now: written by the reader
//! ([`super::follower`] sets a channel's chat while it reads it and clears
//! it when reading ends), read by the sender ([`super::sender`]), which
//! needs a chat's `liveChatId` for every write. Neither knows the other:
//! both hold this map.

use std::collections::HashMap;
use std::sync::Mutex;

/// Channel id (`UC…`) to the `liveChatId` being read.
#[derive(Debug, Default)]
pub struct LiveChats(Mutex<HashMap<String, String>>);

impl LiveChats {
    /// `channel`'s chat `live_chat_id` is being read.
    pub fn set(&self, channel: &str, live_chat_id: &str) {
        self.0
            .lock()
            .expect("live chats lock")
            .insert(channel.to_owned(), live_chat_id.to_owned());
    }

    /// Reading `channel`'s chat `live_chat_id` ended (a later chat of the
    /// channel, set meanwhile, stays).
    pub fn clear(&self, channel: &str, live_chat_id: &str) {
        let mut chats = self.0.lock().expect("live chats lock");
        if chats.get(channel).is_some_and(|c| c == live_chat_id) {
            chats.remove(channel);
        }
    }

    /// The chat of `channel` being read now, if it is followed and live.
    pub fn get(&self, channel: &str) -> Option<String> {
        self.0.lock().expect("live chats lock").get(channel).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_channel_has_the_chat_being_read() {
        let chats = LiveChats::default();
        assert_eq!(chats.get("UCa"), None);
        chats.set("UCa", "chat-1");
        assert_eq!(chats.get("UCa").as_deref(), Some("chat-1"));
        chats.set("UCa", "chat-2");
        chats.clear("UCa", "chat-1");
        assert_eq!(chats.get("UCa").as_deref(), Some("chat-2"));
        chats.clear("UCa", "chat-2");
        assert_eq!(chats.get("UCa"), None);
    }
}
