//! Sample `ChatEvent`s for tests.

use chrono::Utc;
use common::schema::{Author, ChatEvent, EventBody, MessageDetails, PLATFORM_TWITCH};

/// A chat message event with a unique id, `n` in its text.
pub fn message(platform: &str, channel: &str, n: usize) -> ChatEvent {
    let now = Utc::now();
    let mut e = ChatEvent::new(
        uuid::Uuid::new_v4().to_string(),
        platform,
        channel,
        now,
        now,
        EventBody::Message(MessageDetails::default()),
    );
    e.author = Some(Author {
        id: format!("{}", 1000 + n % 50),
        login: format!("user{}", n % 50),
        display_name: format!("User{}", n % 50),
        color: Some("#1E90FF".into()),
        badges: vec![],
        roles: vec![],
        avatar_url: None,
    });
    e.text = Some(format!("message {n} héllo 👋"));
    e
}

/// `count` Twitch messages spread round-robin over `channels`.
pub fn twitch_messages(channels: &[&str], count: usize) -> Vec<ChatEvent> {
    (0..count)
        .map(|n| message(PLATFORM_TWITCH, channels[n % channels.len()], n))
        .collect()
}
