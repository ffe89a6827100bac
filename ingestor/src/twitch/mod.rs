//! Twitch chat over IRC (twitch-irc), through chatbus's own transport.

pub mod login;
pub mod normalise;
pub mod transport;

use twitch_irc::message::ServerMessage;
use twitch_irc::{ClientConfig, TwitchIRCClient};

use crate::channels::JoinClient;
use login::IngestorLogin;
use transport::ChatbusTransport;

/// The IRC client type the ingestor uses.
pub type Client = TwitchIRCClient<ChatbusTransport, IngestorLogin>;

/// Creates the client (it connects lazily, on `connect` or the first JOIN)
/// and the stream of everything the server sends.
pub fn client(
    login: IngestorLogin,
    channels_per_connection: usize,
) -> (tokio::sync::mpsc::UnboundedReceiver<ServerMessage>, Client) {
    let mut config = ClientConfig::new_simple(login);
    config.max_channels_per_connection = channels_per_connection;
    config.tracing_identifier = Some("chatbus-ingestor".into());
    TwitchIRCClient::new(config)
}

/// The channel manager drives JOIN/PART through the client.
#[derive(Debug, Clone)]
pub struct IrcJoinClient(pub Client);

impl JoinClient for IrcJoinClient {
    fn join(&self, channel: &str) {
        if let Err(e) = self.0.join(channel.to_owned()) {
            tracing::error!(channel, error = %e, "twitch-irc refused the channel name");
        }
    }

    fn part(&self, channel: &str) {
        self.0.part(channel.to_owned());
    }
}
