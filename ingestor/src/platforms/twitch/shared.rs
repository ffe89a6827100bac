//! What every connection of the Twitch source shares: the endpoint and
//! login, the JOIN limiter, the channel manager, the sink, the normaliser,
//! reachability and the reconnect settings.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use common::amqp::Backoff;

use super::endpoint::Endpoint;
use super::join_limiter::JoinLimiter;
use super::login::IngestorLogin;
use super::normalise::Normaliser;
use crate::channels::ChannelManager;
use crate::platforms::seam::{EventSink, Reachability};

/// What every connection of the source shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) endpoint: Endpoint,
    pub(crate) login: IngestorLogin,
    pub(crate) limiter: Arc<JoinLimiter>,
    pub(crate) manager: Arc<ChannelManager>,
    pub(crate) sink: EventSink,
    pub(crate) normaliser: Normaliser,
    pub(crate) reach: Reachability,
    pub(crate) open: AtomicUsize,
    pub(crate) backoff: Backoff,
    pub(crate) keepalive: Duration,
    /// The sending accounts' standing, learnt from their own messages.
    pub(crate) standing: Option<Arc<super::standing::Standing>>,
}
