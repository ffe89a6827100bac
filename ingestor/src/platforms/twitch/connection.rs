//! One Twitch IRC connection: a task that owns its socket, logs in, joins
//! the channels the pool gave it (every JOIN through the shared rate
//! limiter), and turns everything it reads into events.
//!
//! The hot path has no hand-off between tasks: each socket read is split
//! into lines, parsed (twitch-irc's parser), normalised and appended to the
//! outbox (one spool write) by this task before it reads again. A read of a
//! busy connection carries many lines, so the work is batched by itself;
//! an idle one carries one, so nothing waits for a batch to fill. Reading
//! only after the previous read is spooled also bounds what a `kill -9`
//! can lose: one read buffer and the kernel's socket buffer.
//!
//! When the server cannot be reached the task retries with exponential
//! backoff (the source says so in the log and in `/channels`); a
//! connection that was up for a while reconnects at once when it ends, one
//! that was not waits its backoff whatever ended it (a `RECONNECT`
//! included). Every write to the server has a deadline (the keepalive): a
//! server that stops reading cannot hold the connection, its keepalive or
//! a shutdown. A connection that goes silent is pinged and, without an answer,
//! dropped and reopened. Every drop marks its channels for a `gap` event.

use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use chrono::{DateTime, Utc};
use common::log_limit::LogLimit;
use common::schema::ChatEvent;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use twitch_irc::message::{IRCMessage, IRCPrefix};

use super::endpoint::Endpoint;
use super::shared::Shared;
use crate::platforms::reconnect::Reconnect;
use super::lines::{Decoded, Frame, LineCodec, decode_line, preview};
use super::normalise::Normalised;

/// Bytes asked for per socket read.
const READ_SIZE: usize = 64 * 1024;

/// How long a connection that is being closed waits for the server to
/// confirm its PARTs.
const PART_GRACE: Duration = Duration::from_secs(5);

/// A connection that stayed up this long reconnects at once when it drops
/// (a later failure starts the backoff again).
const HEALTHY_AFTER: Duration = Duration::from_secs(30);

static NEXT_SOCKET: AtomicU64 = AtomicU64::new(1);

/// The log of lines skipped or noticed: a few per reason every 10 s, the
/// rest counted (each reason has its metric).
static LINE_LOG: LogLimit = LogLimit::per_10s(5);

/// What the pool asks of a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    /// Join this channel (again, if a JOIN went unanswered).
    Join(String),
    /// Leave this channel.
    Part(String),
    /// No channels are left: part what is still joined, then close.
    Shutdown,
}

/// Why a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Ended {
    /// The server sent `RECONNECT`.
    ReconnectRequested,
    /// The server closed the connection.
    Eof,
    /// A read or write failed, the server refused the login, or it went
    /// silent.
    Error(String),
    /// Shutdown of the process.
    Cancelled,
    /// The pool closed it (no channels left).
    Closed,
}

impl Ended {
    fn gap_reason(&self) -> &'static str {
        match self {
            Self::ReconnectRequested => "reconnect_requested",
            _ => "disconnect",
        }
    }
}

trait Socket: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Socket for T {}

/// One connection slot of the pool: reconnects until shut down.
pub(crate) struct Connection {
    slot: u64,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    cancel: CancellationToken,
    /// Channels wanted on this connection.
    channels: BTreeSet<String>,
    /// PART sent, echo awaited.
    parting: BTreeSet<String>,
    shutting_down: bool,
}

impl Connection {
    pub(crate) fn new(
        slot: u64,
        shared: Arc<Shared>,
        commands: mpsc::UnboundedReceiver<Command>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            slot,
            shared,
            commands,
            cancel,
            channels: BTreeSet::new(),
            parting: BTreeSet::new(),
            shutting_down: false,
        }
    }

    /// Connects, reads and reconnects until cancelled or shut down.
    pub(crate) async fn run(mut self) {
        let mut reconnect = Reconnect::new(self.shared.backoff, HEALTHY_AFTER);
        loop {
            if self.cancel.is_cancelled() || self.done() {
                break;
            }
            let socket = tokio::select! {
                () = self.cancel.cancelled() => break,
                socket = open_socket(&self.shared.endpoint) => socket,
            };
            let socket = match socket {
                Ok(s) => s,
                Err(e) => {
                    let error = format!("{e:#}");
                    self.shared.reach.failed(&error);
                    let pending: Vec<String> = self.channels.iter().cloned().collect();
                    self.shared.manager.on_unreachable(&pending, &error);
                    let delay = reconnect.failed();
                    if !self.wait_handling_commands(delay).await {
                        break;
                    }
                    continue;
                }
            };
            self.shared.reach.succeeded();
            let socket_id = NEXT_SOCKET.fetch_add(1, Ordering::Relaxed);
            let opened = Instant::now();
            let open = self.shared.open.fetch_add(1, Ordering::SeqCst) + 1;
            metrics::gauge!("chatbus_ingestor_irc_connections").set(open as f64);
            metrics::counter!("chatbus_ingestor_irc_connects_total").increment(1);
            tracing::info!(conn = socket_id, slot = self.slot, addr = %self.shared.endpoint.addr(), tls = self.shared.endpoint.tls, "IRC connection opened");
            let mut on_socket = BTreeSet::new();
            let ended = self.session(socket, socket_id, &mut on_socket).await;
            let open = self.shared.open.fetch_sub(1, Ordering::SeqCst) - 1;
            metrics::gauge!("chatbus_ingestor_irc_connections").set(open as f64);
            let at = Utc::now();
            match &ended {
                Ended::Cancelled | Ended::Closed => {
                    tracing::info!(conn = socket_id, ?ended, "IRC connection closed");
                }
                _ => {
                    metrics::counter!("chatbus_ingestor_irc_disconnects_total").increment(1);
                    tracing::warn!(conn = socket_id, reason = ?ended, channels = on_socket.len(), "IRC connection lost; reconnecting");
                }
            }
            if !matches!(ended, Ended::Cancelled) {
                let channels: Vec<String> = on_socket.into_iter().collect();
                self.shared.manager.on_connection_closed(
                    socket_id,
                    at,
                    ended.gap_reason(),
                    &channels,
                );
            }
            match ended {
                Ended::Cancelled => break,
                Ended::Closed => {}
                // A RECONNECT counts like any other end: a server that asks
                // for one right after every login meets the backoff.
                Ended::ReconnectRequested | Ended::Eof | Ended::Error(_) => {
                    if let Some(delay) = reconnect.ended(opened.elapsed())
                        && !self.wait_handling_commands(delay).await
                    {
                        break;
                    }
                }
            }
        }
        // Whatever was being parted is gone with the connection.
        for channel in std::mem::take(&mut self.parting) {
            self.shared.manager.on_parted(&channel);
        }
    }

    /// Shut down with nothing left to do.
    fn done(&self) -> bool {
        self.shutting_down && self.channels.is_empty()
    }

    /// Sleeps `delay` while taking commands; false when the connection
    /// should end (cancelled, or shut down with no channels).
    async fn wait_handling_commands(&mut self, delay: Duration) -> bool {
        let deadline = Instant::now() + delay;
        loop {
            if self.done() {
                return false;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return false,
                () = tokio::time::sleep_until(deadline) => return true,
                command = self.commands.recv() => match command {
                    None => return false,
                    Some(Command::Join(channel)) => {
                        self.parting.remove(&channel);
                        self.channels.insert(channel);
                    }
                    Some(Command::Part(channel)) => {
                        // Not on any socket now: parted at once.
                        self.channels.remove(&channel);
                        self.shared.manager.on_parted(&channel);
                    }
                    Some(Command::Shutdown) => self.shutting_down = true,
                },
            }
        }
    }

    /// One connected session, until it ends.
    async fn session(
        &mut self,
        socket: Box<dyn Socket>,
        socket_id: u64,
        on_socket: &mut BTreeSet<String>,
    ) -> Ended {
        let credentials = match self.shared.login.credentials().await {
            Ok(c) => c,
            Err(e) => return Ended::Error(format!("no login credentials: {e}")),
        };
        let nick = credentials.login.to_ascii_lowercase();
        let (mut reader, mut writer) = tokio::io::split(socket);
        let mut hello = String::from("CAP REQ :twitch.tv/tags twitch.tv/commands\r\n");
        if let Some(token) = &credentials.token {
            hello.push_str(&format!("PASS oauth:{}\r\n", token.expose()));
        }
        hello.push_str(&format!("NICK {}\r\n", credentials.login));
        let write_deadline = self.shared.keepalive;
        let cancel = self.cancel.clone();
        if let Err(ended) = write_within(&mut writer, hello.as_bytes(), write_deadline, &cancel).await {
            return ended;
        }

        let mut join_queue: VecDeque<String> = self.channels.iter().cloned().collect();
        let mut logged_in = false;
        let mut buf = BytesMut::with_capacity(READ_SIZE);
        let mut codec = LineCodec::new(self.shared.endpoint.max_line_bytes);
        let mut last_read = Instant::now();
        let mut ping_sent: Option<Instant> = None;
        let mut part_deadline: Option<Instant> = None;
        let keepalive = self.shared.keepalive;
        let mut tick = tokio::time::interval(keepalive.min(Duration::from_secs(5)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if self.done() && self.parting.is_empty() {
                return Ended::Closed;
            }
            if self.shutting_down && self.channels.is_empty() && part_deadline.is_none() {
                part_deadline = Some(Instant::now() + PART_GRACE);
            }
            let limiter = self.shared.limiter.clone();
            tokio::select! {
                biased;
                () = self.cancel.cancelled() => return Ended::Cancelled,
                command = self.commands.recv() => {
                    let Some(command) = command else { return Ended::Cancelled };
                    match command {
                        Command::Join(channel) => {
                            self.parting.remove(&channel);
                            self.channels.insert(channel.clone());
                            if !join_queue.contains(&channel) {
                                join_queue.push_back(channel);
                            }
                        }
                        Command::Part(channel) => {
                            self.channels.remove(&channel);
                            join_queue.retain(|c| *c != channel);
                            if on_socket.remove(&channel) {
                                if let Err(ended) = write_within(&mut writer, format!("PART #{channel}\r\n").as_bytes(), write_deadline, &cancel).await {
                                    self.shared.manager.on_parted(&channel);
                                    return ended;
                                }
                                self.parting.insert(channel);
                            } else {
                                self.shared.manager.on_parted(&channel);
                            }
                        }
                        Command::Shutdown => self.shutting_down = true,
                    }
                }
                () = limiter.acquire(), if logged_in && !join_queue.is_empty() => {
                    let channel = join_queue.pop_front().expect("non-empty");
                    if let Err(ended) = write_within(&mut writer, format!("JOIN #{channel}\r\n").as_bytes(), write_deadline, &cancel).await {
                        return ended;
                    }
                    metrics::counter!("chatbus_ingestor_irc_joins_sent_total").increment(1);
                    self.shared.manager.on_join_sent(socket_id, &channel, Utc::now());
                    on_socket.insert(channel);
                }
                read = reader.read_buf(&mut buf) => {
                    let eof = match read {
                        Ok(0) => true,
                        Ok(_) => false,
                        Err(e) => return Ended::Error(format!("read: {e}")),
                    };
                    last_read = Instant::now();
                    ping_sent = None;
                    let mut batch = Batch::default();
                    self.read_lines(&mut codec, &mut buf, eof, socket_id, &nick, &mut batch);
                    if !batch.events.is_empty() {
                        // Only channels asked for: lines for others are
                        // dropped and counted.
                        self.shared.manager.retain_wanted(&mut batch.events);
                        self.shared.sink.emit(&batch.events);
                        if let Some(standing) = &self.shared.standing {
                            standing.observe(&batch.events);
                        }
                    }
                    if batch.welcome {
                        logged_in = true;
                    }
                    if !batch.replies.is_empty()
                        && let Err(ended) = write_within(&mut writer, batch.replies.as_bytes(), write_deadline, &cancel).await
                    {
                        return ended;
                    }
                    if let Some(ended) = batch.ended {
                        return ended;
                    }
                    if eof {
                        return Ended::Eof;
                    }
                    if buf.capacity() - buf.len() < READ_SIZE / 4 {
                        buf.reserve(READ_SIZE);
                    }
                }
                _ = tick.tick() => {
                    if let Some(deadline) = part_deadline
                        && Instant::now() >= deadline
                    {
                        for channel in std::mem::take(&mut self.parting) {
                            self.shared.manager.on_parted(&channel);
                        }
                        return Ended::Closed;
                    }
                    let silent = last_read.elapsed();
                    match ping_sent {
                        Some(sent) if sent.elapsed() >= keepalive => {
                            return Ended::Error(format!("no answer to PING for {:?}", sent.elapsed()));
                        }
                        None if silent >= keepalive => {
                            if let Err(ended) = write_within(&mut writer, b"PING :tmi.twitch.tv\r\n", write_deadline, &cancel).await {
                                return ended;
                            }
                            ping_sent = Some(Instant::now());
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    /// Handles every complete line in `buf` (and the rest at EOF).
    fn read_lines(
        &mut self,
        codec: &mut LineCodec,
        buf: &mut BytesMut,
        eof: bool,
        socket_id: u64,
        nick: &str,
        batch: &mut Batch,
    ) {
        let received_at = Utc::now();
        let mut lines = 0u64;
        loop {
            let frame = if eof {
                codec.decode_eof(buf)
            } else {
                codec.decode(buf)
            };
            let Ok(Some(frame)) = frame else { break };
            match frame {
                Frame::TooLong(len) => {
                    metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "too_long")
                        .increment(1);
                    if let Some(held_back) = LINE_LOG.allow("too_long") {
                        tracing::warn!(
                            conn = socket_id,
                            bytes = len,
                            limit = codec.max,
                            held_back,
                            "over-long IRC line skipped (held_back: more like this since the last such line)"
                        );
                    }
                }
                Frame::Line(bytes) => {
                    lines += 1;
                    if let Decoded::Message(msg, raw) = decode_line(&bytes, socket_id) {
                        self.line(&msg, &raw, received_at, socket_id, nick, batch);
                    }
                }
            }
        }
        metrics::counter!("chatbus_ingestor_irc_lines_total").increment(lines);
    }

    /// One parsed line: protocol handling, then normalisation.
    fn line(
        &mut self,
        msg: &IRCMessage,
        raw: &str,
        received_at: DateTime<Utc>,
        socket_id: u64,
        nick: &str,
        batch: &mut Batch,
    ) {
        let own = || matches!(&msg.prefix, Some(IRCPrefix::Full { nick: n, .. }) if n.eq_ignore_ascii_case(nick));
        let channel = || msg.params.first().and_then(|p| p.strip_prefix('#'));
        match msg.command.as_str() {
            "PING" => {
                let arg = msg.params.first().map_or("tmi.twitch.tv", String::as_str);
                batch.replies.push_str("PONG :");
                batch.replies.push_str(arg);
                batch.replies.push_str("\r\n");
            }
            "001" => batch.welcome = true,
            "RECONNECT" => {
                tracing::info!(conn = socket_id, "the server asked us to reconnect");
                batch.ended.get_or_insert(Ended::ReconnectRequested);
            }
            "JOIN" if own() => {
                if let Some(channel) = channel() {
                    let channel = channel.to_ascii_lowercase();
                    if let Some(gap) = self.shared.manager.on_joined(&channel, received_at) {
                        batch.events.push(gap);
                    }
                }
            }
            "PART" if own() => {
                if let Some(channel) = channel() {
                    let channel = channel.to_ascii_lowercase();
                    self.parting.remove(&channel);
                    self.shared.manager.on_parted(&channel);
                }
            }
            "NOTICE" if channel().is_none() => {
                let text = msg.params.get(1).map_or("", String::as_str);
                if text.contains("authentication failed")
                    || text.contains("Improperly formatted auth")
                {
                    metrics::counter!("chatbus_ingestor_irc_auth_failures_total").increment(1);
                    tracing::error!(notice = %text, login = self.shared.login.login(), "Twitch refused the login");
                    let login = self.shared.login.clone();
                    tokio::spawn(async move { login.on_auth_failure().await });
                    batch
                        .ended
                        .get_or_insert(Ended::Error("login refused".into()));
                } else {
                    if let Some(held_back) = LINE_LOG.allow("notice") {
                        tracing::warn!(conn = socket_id, notice = %preview(text), held_back, "server notice");
                    }
                }
            }
            _ => {}
        }
        match self.shared.normaliser.normalise_line(raw, msg, received_at) {
            Ok(Normalised::Event(event)) => batch.events.push(*event),
            Ok(Normalised::Control) => {}
            Ok(Normalised::Unknown) => {
                metrics::counter!("chatbus_ingestor_irc_unknown_commands_total").increment(1);
                if let Some(held_back) = LINE_LOG.allow("unknown_command") {
                    tracing::warn!(conn = socket_id, command = %preview(&msg.command), held_back, "unknown IRC command skipped (held_back: more like this since the last such line)");
                }
            }
            Err(e) => {
                metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "unroutable")
                    .increment(1);
                if let Some(held_back) = LINE_LOG.allow("unroutable") {
                    tracing::warn!(conn = socket_id, error = %e, line = %preview(raw), held_back, "IRC message skipped (held_back: more like this since the last such line)");
                }
            }
        }
    }
}

/// Writes `bytes` to the server within `deadline`: a server that stops
/// reading ends the session instead of holding it (its keepalive and a
/// shutdown with it). `cancel` ends the wait at once.
async fn write_within<W: AsyncWrite + Unpin>(
    writer: &mut W,
    bytes: &[u8],
    deadline: Duration,
    cancel: &CancellationToken,
) -> Result<(), Ended> {
    tokio::select! {
        biased;
        () = cancel.cancelled() => Err(Ended::Cancelled),
        written = tokio::time::timeout(deadline, writer.write_all(bytes)) => match written {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Ended::Error(format!("write: {e}"))),
            Err(_) => {
                metrics::counter!("chatbus_ingestor_irc_write_timeouts_total").increment(1);
                Err(Ended::Error(format!(
                    "write timed out after {deadline:?}: the server is not reading"
                )))
            }
        },
    }
}

/// What one read produced.
#[derive(Default)]
struct Batch {
    events: Vec<ChatEvent>,
    /// Lines to write back (PONGs).
    replies: String,
    /// `001` seen: JOINs may go out.
    welcome: bool,
    /// The session must end after this read.
    ended: Option<Ended>,
}

/// Connects to one of `endpoint`'s addresses, with its receive buffer set
/// before the handshake (so the advertised window fits it).
async fn connect_tcp(endpoint: &Endpoint) -> std::io::Result<TcpStream> {
    let mut last = None;
    for addr in tokio::net::lookup_host((endpoint.host.as_str(), endpoint.port)).await? {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        if let Some(bytes) = endpoint.receive_buffer {
            socket.set_recv_buffer_size(u32::try_from(bytes).unwrap_or(u32::MAX))?;
        }
        match socket.connect(addr).await {
            Ok(tcp) => return Ok(tcp),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::NotFound, "the host has no address")
    }))
}

async fn open_socket(endpoint: &Endpoint) -> anyhow::Result<Box<dyn Socket>> {
    let addr = endpoint.addr();
    let tcp = tokio::time::timeout(Duration::from_secs(15), connect_tcp(endpoint))
        .await
        .map_err(|_| anyhow::anyhow!("cannot connect to {addr}: timed out"))?
        .map_err(|e| anyhow::anyhow!("cannot connect to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Box::new(tcp));
    }
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|_| anyhow::anyhow!("invalid TLS server name `{}`", endpoint.host))?;
    let tls = tokio::time::timeout(Duration::from_secs(15), tls_connector().connect(name, tcp))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {addr}: timed out"))?
        .map_err(|e| anyhow::anyhow!("TLS handshake with {addr}: {e}"))?;
    Ok(Box::new(tls))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: std::sync::OnceLock<tokio_rustls::TlsConnector> = std::sync::OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto::ring};
            let roots = RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("ring supports the default TLS versions")
                .with_root_certificates(roots)
                .with_no_client_auth();
            tokio_rustls::TlsConnector::from(Arc::new(config))
        })
        .clone()
}
