//! chatbus's own [`twitch_irc::transport::Transport`].
//!
//! twitch-irc's TCP transport hard-codes Twitch's host, closes the
//! connection on any line it cannot parse or decode, and reads lines of any
//! length. This one:
//!
//! * connects to a configurable `host:port`, with or without TLS (tests use
//!   a fake server over plain TCP on 127.0.0.1);
//! * reads lines with a length cap: a malformed line, invalid UTF-8 (decoded
//!   lossily) or an over-long line is logged, counted and skipped, and the
//!   connection continues;
//! * stamps every message with the exact line as received (tag
//!   [`RAW_TAG`]) and its connection id (tag [`CONN_TAG`]);
//! * sends every `JOIN` through one process-wide rate limiter (Twitch's
//!   20 per 10 s), in a writer task that never holds up `PONG` or other
//!   commands behind waiting JOINs;
//! * reports connection lifecycle as [`ConnectionEvent`]s (opened, JOIN
//!   sent, closed with the channels it carried) so the channel manager can
//!   time JOIN confirmations and publish gap events.
//!
//! `Transport::new()` takes no arguments, so the endpoint and the event sink
//! are process-wide ([`configure`]): one ingestor per process.

use std::collections::{BTreeSet, VecDeque};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::task::{Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use bytes::{Buf, BytesMut};
use chrono::{DateTime, Utc};
use either::Either;
use futures::stream::FusedStream;
use futures::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::codec::{Decoder, FramedRead};
use twitch_irc::message::{AsRawIRC, IRCMessage, IRCParseError};
use twitch_irc::transport::Transport;

pub use super::normalise::{CONN_TAG, RAW_TAG};

/// Where and how to connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Wrap the connection in TLS (server name = `host`).
    pub tls: bool,
    /// Longest accepted line in bytes.
    pub max_line_bytes: usize,
}

impl Endpoint {
    /// Parses `host:port`.
    ///
    /// # Errors
    /// When there is no `:port`.
    pub fn parse(addr: &str, tls: bool, max_line_bytes: usize) -> anyhow::Result<Self> {
        let (host, port) = addr
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("IRC address `{addr}` is not host:port"))?;
        Ok(Self {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: port.parse()?,
            tls,
            max_line_bytes,
        })
    }
}

/// Something that happened to an IRC connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection was established (TCP and, if enabled, TLS).
    Opened {
        /// Connection id.
        conn: u64,
    },
    /// A `JOIN` went out on the wire (after the rate limiter).
    JoinSent {
        /// Connection id.
        conn: u64,
        /// The channel (login, no `#`).
        channel: String,
        /// When it was written.
        at: DateTime<Utc>,
    },
    /// A connection ended.
    Closed {
        /// Connection id.
        conn: u64,
        /// When we noticed.
        at: DateTime<Utc>,
        /// Why.
        reason: CloseReason,
        /// Channels joined (or being joined) on it.
        channels: Vec<String>,
    },
}

/// Why a connection ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CloseReason {
    /// The server sent `RECONNECT`.
    ReconnectRequested,
    /// The server closed the connection.
    Eof,
    /// A read or write failed.
    Error(String),
    /// The client dropped it (ping timeout, shutdown ...).
    ClientClosed,
}

impl CloseReason {
    /// The `reason` of the gap events this close causes.
    pub fn gap_reason(&self) -> &'static str {
        match self {
            CloseReason::ReconnectRequested => "reconnect_requested",
            CloseReason::Eof | CloseReason::Error(_) | CloseReason::ClientClosed => "disconnect",
        }
    }
}

/// A sliding-window limiter for JOINs shared by every connection.
#[derive(Debug)]
pub struct JoinLimiter {
    limit: usize,
    window: Duration,
    sent: Mutex<VecDeque<Instant>>,
}

impl JoinLimiter {
    /// At most `limit` JOINs in any `window`.
    pub fn new(limit: u32, window: Duration) -> Self {
        Self {
            limit: limit.max(1) as usize,
            window,
            sent: Mutex::new(VecDeque::new()),
        }
    }

    /// `None` if a JOIN may go now (and it is counted), else how long to wait.
    fn try_acquire(&self) -> Option<Duration> {
        let now = Instant::now();
        let mut sent = self.sent.lock().expect("limiter lock");
        while sent
            .front()
            .is_some_and(|t| now.duration_since(*t) >= self.window)
        {
            sent.pop_front();
        }
        if sent.len() < self.limit {
            sent.push_back(now);
            None
        } else {
            let oldest = *sent.front().expect("non-empty");
            Some(self.window.saturating_sub(now.duration_since(oldest)))
        }
    }

    /// Waits until a JOIN may be sent, and counts it.
    pub async fn acquire(&self) {
        while let Some(wait) = self.try_acquire() {
            tokio::time::sleep(wait.max(Duration::from_millis(1))).await;
        }
    }
}

/// Bounds how far the IRC readers may run ahead of the ingest loop.
///
/// twitch-irc passes messages on through unbounded channels, so without
/// this a flood (or a slow disk) would pile up in memory. Readers count the
/// messages they hand to twitch-irc, the ingest loop counts what it
/// receives; while `limit` or more are in between, the readers stop reading
/// the socket and TCP pushes back on the server. (WHISPERs are not counted:
/// twitch-irc may drop some of them on the way.)
#[derive(Debug)]
pub struct Backpressure {
    produced: std::sync::atomic::AtomicU64,
    consumed: std::sync::atomic::AtomicU64,
    limit: u64,
    wakers: Mutex<Vec<std::task::Waker>>,
}

impl Backpressure {
    /// Readers pause while `limit` or more messages are in flight.
    pub fn new(limit: usize) -> Self {
        Self {
            produced: std::sync::atomic::AtomicU64::new(0),
            consumed: std::sync::atomic::AtomicU64::new(0),
            limit: limit.max(1) as u64,
            wakers: Mutex::new(Vec::new()),
        }
    }

    /// Messages read and not yet received by the ingest loop.
    pub fn in_flight(&self) -> u64 {
        self.produced
            .load(Ordering::SeqCst)
            .saturating_sub(self.consumed.load(Ordering::SeqCst))
    }

    /// Counts messages a reader handed on.
    fn produced(&self) {
        self.produced.fetch_add(1, Ordering::SeqCst);
    }

    /// The ingest loop received `n` (non-WHISPER) messages.
    pub fn consumed(&self, n: u64) {
        self.consumed.fetch_add(n, Ordering::SeqCst);
        let in_flight = self.in_flight();
        metrics::gauge!("chatbus_ingestor_ingest_backlog").set(in_flight as f64);
        if in_flight < self.limit {
            self.wake_readers();
        }
    }

    /// The pipeline is idle (nothing received for a while, nothing queued):
    /// whatever the counters still show in flight was dropped inside
    /// twitch-irc (e.g. lines after a RECONNECT). Forget it, so such losses
    /// can never add up to a stall.
    pub fn settle_idle(&self) {
        let produced = self.produced.load(Ordering::SeqCst);
        let consumed = self.consumed.swap(produced, Ordering::SeqCst);
        if produced > consumed {
            tracing::debug!(
                dropped_by_twitch_irc = produced - consumed,
                "read-ahead counter settled"
            );
        }
        self.wake_readers();
    }

    fn wake_readers(&self) {
        let wakers = std::mem::take(&mut *self.wakers.lock().expect("wakers lock"));
        for w in wakers {
            w.wake();
        }
    }

    fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.in_flight() < self.limit {
            return Poll::Ready(());
        }
        self.wakers
            .lock()
            .expect("wakers lock")
            .push(cx.waker().clone());
        // Re-check: the ingest loop may have caught up in between.
        if self.in_flight() < self.limit {
            return Poll::Ready(());
        }
        metrics::counter!("chatbus_ingestor_irc_read_pauses_total").increment(1);
        Poll::Pending
    }
}

struct Global {
    endpoint: Endpoint,
    events: mpsc::UnboundedSender<ConnectionEvent>,
    limiter: Arc<JoinLimiter>,
    backpressure: Arc<Backpressure>,
}

static GLOBAL: OnceLock<RwLock<Option<Arc<Global>>>> = OnceLock::new();
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Sets the endpoint, event sink, JOIN limiter and read backpressure for
/// every connection this process opens from now on.
pub fn configure(
    endpoint: Endpoint,
    events: mpsc::UnboundedSender<ConnectionEvent>,
    limiter: Arc<JoinLimiter>,
    backpressure: Arc<Backpressure>,
) {
    let global = GLOBAL.get_or_init(|| RwLock::new(None));
    *global.write().expect("transport config lock") = Some(Arc::new(Global {
        endpoint,
        events,
        limiter,
        backpressure,
    }));
}

fn global() -> Result<Arc<Global>, TransportError> {
    GLOBAL
        .get()
        .and_then(|g| g.read().expect("transport config lock").clone())
        .ok_or(TransportError::NotConfigured)
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// [`configure`] was not called.
    #[error("IRC transport not configured")]
    NotConfigured,
    /// TCP connect or TLS handshake failed.
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// `host:port`.
        addr: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The host is not a valid TLS server name.
    #[error("invalid TLS server name `{0}`")]
    ServerName(String),
}

trait Socket: AsyncRead + AsyncWrite + Send + Sync + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Sync + Unpin> Socket for T {}

/// Per-connection state shared by the read and write halves. `Closed` is
/// reported exactly once: as soon as the reader sees the end (EOF, error,
/// `RECONNECT`), or when both halves are dropped (the client closed it).
struct ConnState {
    id: u64,
    global: Arc<Global>,
    channels: Mutex<BTreeSet<String>>,
    closed: std::sync::atomic::AtomicBool,
}

impl ConnState {
    fn report_closed(&self, reason: CloseReason) {
        if self.closed.swap(true, Ordering::SeqCst) {
            return;
        }
        let channels: Vec<String> = self
            .channels
            .lock()
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        tracing::info!(
            conn = self.id,
            ?reason,
            channels = channels.len(),
            "IRC connection closed"
        );
        metrics::counter!("chatbus_ingestor_irc_disconnects_total").increment(1);
        let _ = self.global.events.send(ConnectionEvent::Closed {
            conn: self.id,
            at: Utc::now(),
            reason,
            channels,
        });
    }
}

impl Drop for ConnState {
    fn drop(&mut self) {
        self.report_closed(CloseReason::ClientClosed);
    }
}

/// The transport twitch-irc drives.
pub struct ChatbusTransport {
    incoming: IncomingLines,
    outgoing: OutgoingSink,
}

impl std::fmt::Debug for ChatbusTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatbusTransport")
            .field("conn", &self.incoming.state.id)
            .finish()
    }
}

async fn open_socket(endpoint: &Endpoint) -> Result<Box<dyn Socket>, TransportError> {
    let addr = format!("{}:{}", endpoint.host, endpoint.port);
    let tcp = TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|source| TransportError::Connect {
            addr: addr.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    if !endpoint.tls {
        return Ok(Box::new(tcp));
    }
    let connector = tls_connector();
    let name = tokio_rustls::rustls::pki_types::ServerName::try_from(endpoint.host.clone())
        .map_err(|_| TransportError::ServerName(endpoint.host.clone()))?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|source| TransportError::Connect { addr, source })?;
    Ok(Box::new(tls))
}

fn tls_connector() -> tokio_rustls::TlsConnector {
    static CONNECTOR: OnceLock<tokio_rustls::TlsConnector> = OnceLock::new();
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

#[async_trait]
impl Transport for ChatbusTransport {
    type ConnectError = TransportError;
    type IncomingError = std::io::Error;
    type OutgoingError = std::io::Error;
    type Incoming = IncomingLines;
    type Outgoing = OutgoingSink;

    async fn new() -> Result<Self, TransportError> {
        let global = global()?;
        let socket = open_socket(&global.endpoint).await?;
        let id = NEXT_CONN.fetch_add(1, Ordering::SeqCst);
        tracing::info!(conn = id, host = %global.endpoint.host, port = global.endpoint.port, tls = global.endpoint.tls, "IRC connection opened");
        metrics::counter!("chatbus_ingestor_irc_connects_total").increment(1);
        let _ = global.events.send(ConnectionEvent::Opened { conn: id });
        let state = Arc::new(ConnState {
            id,
            global: global.clone(),
            channels: Mutex::new(BTreeSet::new()),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        let (read, write) = tokio::io::split(socket);
        let incoming = IncomingLines {
            frames: FramedRead::new(read, LineCodec::new(global.endpoint.max_line_bytes)),
            state: state.clone(),
            conn_tag: id.to_string(),
            done: false,
        };
        let (tx, rx) = mpsc::unbounded_channel();
        let (fail_tx, fail_rx) = tokio::sync::watch::channel(None);
        tokio::spawn(write_loop(
            write,
            rx,
            state.clone(),
            global.limiter.clone(),
            fail_tx,
        ));
        let outgoing = OutgoingSink {
            tx,
            failed: fail_rx,
            _state: state,
        };
        Ok(Self { incoming, outgoing })
    }

    fn split(self) -> (Self::Incoming, Self::Outgoing) {
        (self.incoming, self.outgoing)
    }
}

/// One frame from the line decoder.
#[derive(Debug, PartialEq, Eq)]
enum Frame {
    /// A complete line (with its `\n`).
    Line(BytesMut),
    /// A line longer than the limit was discarded; its length in bytes.
    TooLong(usize),
}

/// Splits bytes into lines, never buffering more than `max` bytes of one.
#[derive(Debug)]
struct LineCodec {
    max: usize,
    next_index: usize,
    discarding: Option<usize>,
}

impl LineCodec {
    fn new(max: usize) -> Self {
        Self {
            max,
            next_index: 0,
            discarding: None,
        }
    }
}

impl Decoder for LineCodec {
    type Item = Frame;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        let newline = buf[self.next_index..].iter().position(|b| *b == b'\n');
        match (newline, self.discarding) {
            (Some(offset), Some(discarded)) => {
                let end = self.next_index + offset + 1;
                buf.advance(end);
                self.next_index = 0;
                self.discarding = None;
                Ok(Some(Frame::TooLong(discarded + end)))
            }
            (Some(offset), None) => {
                let end = self.next_index + offset + 1;
                self.next_index = 0;
                if end - 1 > self.max {
                    buf.advance(end);
                    return Ok(Some(Frame::TooLong(end)));
                }
                Ok(Some(Frame::Line(buf.split_to(end))))
            }
            (None, Some(discarded)) => {
                self.discarding = Some(discarded + buf.len());
                buf.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, None) if buf.len() > self.max => {
                self.discarding = Some(buf.len());
                buf.clear();
                self.next_index = 0;
                Ok(None)
            }
            (None, None) => {
                self.next_index = buf.len();
                Ok(None)
            }
        }
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, std::io::Error> {
        if let Some(frame) = self.decode(buf)? {
            return Ok(Some(frame));
        }
        if let Some(discarded) = self.discarding.take() {
            return Ok(Some(Frame::TooLong(discarded)));
        }
        if buf.is_empty() {
            return Ok(None);
        }
        self.next_index = 0;
        Ok(Some(Frame::Line(buf.split())))
    }
}

/// What one raw line becomes.
#[derive(Debug)]
enum Decoded {
    Message(Box<IRCMessage>),
    Skip,
}

/// Decodes one line; bad lines are logged, counted and skipped.
fn decode_line(bytes: &[u8], conn: u64) -> Decoded {
    metrics::counter!("chatbus_ingestor_irc_lines_total").increment(1);
    let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    if bytes.is_empty() {
        return Decoded::Skip;
    }
    let line = match std::str::from_utf8(bytes) {
        Ok(s) => std::borrow::Cow::Borrowed(s),
        Err(e) => {
            metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "invalid_utf8")
                .increment(1);
            tracing::warn!(conn, error = %e, line = %preview(&String::from_utf8_lossy(bytes)), "IRC line is not valid UTF-8; decoded with replacement characters");
            String::from_utf8_lossy(bytes)
        }
    };
    match IRCMessage::parse(&line) {
        Ok(mut msg) => {
            msg.tags.0.insert(RAW_TAG.to_owned(), line.into_owned());
            Decoded::Message(Box::new(msg))
        }
        Err(e) => {
            metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "malformed")
                .increment(1);
            tracing::warn!(conn, error = %e, line = %preview(&line), "malformed IRC line skipped");
            Decoded::Skip
        }
    }
}

fn preview(line: &str) -> String {
    const MAX: usize = 200;
    if line.len() <= MAX {
        return line.to_owned();
    }
    let mut end = MAX;
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}... ({} bytes)", &line[..end], line.len())
}

/// The incoming half: parsed messages, bad lines skipped.
pub struct IncomingLines {
    frames: FramedRead<tokio::io::ReadHalf<Box<dyn Socket>>, LineCodec>,
    state: Arc<ConnState>,
    conn_tag: String,
    done: bool,
}

impl std::fmt::Debug for IncomingLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IncomingLines")
            .field("conn", &self.state.id)
            .finish()
    }
}

impl Stream for IncomingLines {
    type Item = Result<IRCMessage, Either<std::io::Error, IRCParseError>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            if self.state.global.backpressure.poll_ready(cx).is_pending() {
                return Poll::Pending;
            }
            match Pin::new(&mut self.frames).poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(None) => {
                    self.done = true;
                    self.state.report_closed(CloseReason::Eof);
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.done = true;
                    self.state.report_closed(CloseReason::Error(e.to_string()));
                    return Poll::Ready(Some(Err(Either::Left(e))));
                }
                Poll::Ready(Some(Ok(Frame::TooLong(len)))) => {
                    metrics::counter!("chatbus_ingestor_irc_bad_lines_total", "reason" => "too_long").increment(1);
                    tracing::warn!(
                        conn = self.state.id,
                        bytes = len,
                        limit = self.frames.decoder().max,
                        "over-long IRC line skipped"
                    );
                }
                Poll::Ready(Some(Ok(Frame::Line(bytes)))) => {
                    match decode_line(&bytes, self.state.id) {
                        Decoded::Skip => {}
                        Decoded::Message(mut msg) => {
                            match msg.command.as_str() {
                                // twitch-irc closes the connection when it sees this.
                                "RECONNECT" => {
                                    self.state.report_closed(CloseReason::ReconnectRequested)
                                }
                                "PART" => {
                                    if let Some(channel) =
                                        msg.params.first().and_then(|p| p.strip_prefix('#'))
                                    {
                                        self.state
                                            .channels
                                            .lock()
                                            .expect("channels lock")
                                            .remove(channel);
                                    }
                                }
                                _ => {}
                            }
                            let tag = self.conn_tag.clone();
                            msg.tags.0.insert(CONN_TAG.to_owned(), tag);
                            if msg.command != "WHISPER" {
                                self.state.global.backpressure.produced();
                            }
                            return Poll::Ready(Some(Ok(*msg)));
                        }
                    }
                }
            }
        }
    }
}

impl FusedStream for IncomingLines {
    fn is_terminated(&self) -> bool {
        self.done
    }
}

/// The outgoing half: hands messages to the connection's writer task.
pub struct OutgoingSink {
    tx: mpsc::UnboundedSender<IRCMessage>,
    failed: tokio::sync::watch::Receiver<Option<String>>,
    _state: Arc<ConnState>,
}

impl std::fmt::Debug for OutgoingSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OutgoingSink")
            .field("conn", &self._state.id)
            .finish()
    }
}

impl OutgoingSink {
    fn check(&self) -> Result<(), std::io::Error> {
        match self.failed.borrow().as_ref() {
            Some(e) => Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                e.clone(),
            )),
            None => Ok(()),
        }
    }
}

impl Sink<IRCMessage> for OutgoingSink {
    type Error = std::io::Error;

    fn poll_ready(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.check())
    }

    fn start_send(self: Pin<&mut Self>, item: IRCMessage) -> Result<(), Self::Error> {
        self.check()?;
        self.tx
            .send(item)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "IRC writer stopped"))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(self.check())
    }

    fn poll_close(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}

/// Writes commands in order, except that JOINs wait for the rate limiter in
/// their own queue so nothing else waits behind them.
async fn write_loop(
    mut write: tokio::io::WriteHalf<Box<dyn Socket>>,
    mut rx: mpsc::UnboundedReceiver<IRCMessage>,
    state: Arc<ConnState>,
    limiter: Arc<JoinLimiter>,
    failed: tokio::sync::watch::Sender<Option<String>>,
) {
    let mut joins: VecDeque<IRCMessage> = VecDeque::new();
    let result: std::io::Result<()> = async {
        loop {
            tokio::select! {
                biased;
                msg = rx.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    if msg.command == "JOIN" {
                        joins.push_back(msg);
                        continue;
                    }
                    if msg.command == "PART" {
                        // A PART cancels a JOIN still waiting here.
                        joins.retain(|j| j.params.first() != msg.params.first());
                    }
                    write_message(&mut write, &msg).await?;
                }
                () = limiter.acquire(), if !joins.is_empty() => {
                    let msg = joins.pop_front().expect("non-empty");
                    write_message(&mut write, &msg).await?;
                    let at = Utc::now();
                    for channel in msg.params.first().map(String::as_str).unwrap_or_default().split(',') {
                        let channel = channel.trim_start_matches('#').to_owned();
                        state.channels.lock().expect("channels lock").insert(channel.clone());
                        let _ = state.global.events.send(ConnectionEvent::JoinSent { conn: state.id, channel, at });
                    }
                    metrics::counter!("chatbus_ingestor_irc_joins_sent_total").increment(1);
                }
            }
        }
    }
    .await;
    if let Err(e) = result {
        state.report_closed(CloseReason::Error(e.to_string()));
        let _ = failed.send(Some(e.to_string()));
    }
    let _ = write.shutdown().await;
}

async fn write_message(
    write: &mut tokio::io::WriteHalf<Box<dyn Socket>>,
    msg: &IRCMessage,
) -> std::io::Result<()> {
    let mut line = msg.as_raw_irc();
    line.push_str("\r\n");
    write.write_all(line.as_bytes()).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(max: usize, input: &[&[u8]]) -> Vec<Frame> {
        let mut codec = LineCodec::new(max);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in input {
            buf.extend_from_slice(chunk);
            while let Some(f) = codec.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        while let Some(f) = codec.decode_eof(&mut buf).unwrap() {
            out.push(f);
        }
        out
    }

    #[test]
    fn lines_split_across_reads_are_joined() {
        let f = frames(100, &[b"PING :a\r\nPRIV", b"MSG #c :hi\r\n", b"tail"]);
        assert_eq!(
            f,
            [
                Frame::Line(BytesMut::from(&b"PING :a\r\n"[..])),
                Frame::Line(BytesMut::from(&b"PRIVMSG #c :hi\r\n"[..])),
                Frame::Line(BytesMut::from(&b"tail"[..])),
            ]
        );
    }

    #[test]
    fn over_long_lines_are_skipped_without_buffering_them() {
        let big = vec![b'x'; 1000];
        let f = frames(100, &[&big[..500], &big[500..], b"\r\nPING :ok\r\n"]);
        assert_eq!(f[0], Frame::TooLong(1002));
        assert_eq!(f[1], Frame::Line(BytesMut::from(&b"PING :ok\r\n"[..])));
        // A long line that arrives in one read, then a good one.
        let mut one = vec![b'y'; 300];
        one.extend_from_slice(b"\nPING :x\n");
        let f = frames(100, &[&one]);
        assert!(matches!(f[0], Frame::TooLong(301)));
        assert_eq!(f[1], Frame::Line(BytesMut::from(&b"PING :x\n"[..])));
    }

    #[test]
    fn bad_lines_are_skipped_and_odd_bytes_decoded() {
        assert!(matches!(
            decode_line(b"@bad-tags-without-command\r\n", 1),
            Decoded::Skip
        ));
        assert!(matches!(decode_line(b"\r\n", 1), Decoded::Skip));
        match decode_line(b":a!a@a PRIVMSG #c :caf\xe9\r\n", 1) {
            Decoded::Message(m) => assert_eq!(m.params[1], "caf\u{FFFD}"),
            Decoded::Skip => panic!("lossy decode keeps the line"),
        }
        match decode_line(b"@id=1 :a!a@a PRIVMSG #c :hi\r\n", 1) {
            Decoded::Message(m) => assert_eq!(m.tags.0[RAW_TAG], "@id=1 :a!a@a PRIVMSG #c :hi"),
            Decoded::Skip => panic!(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn the_join_limiter_allows_limit_per_window() {
        let limiter = JoinLimiter::new(3, Duration::from_secs(10));
        let start = Instant::now();
        for _ in 0..7 {
            limiter.acquire().await;
        }
        // 3 at t=0, 3 at t=10s, 1 at t=20s.
        assert_eq!(start.elapsed().as_secs(), 20);
    }

    #[test]
    fn backpressure_pauses_at_the_limit_and_settles_leaks() {
        let bp = Backpressure::new(5);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        for _ in 0..5 {
            bp.produced();
        }
        assert!(bp.poll_ready(&mut cx).is_pending(), "5 in flight: pause");
        bp.consumed(1);
        assert!(bp.poll_ready(&mut cx).is_ready());
        // Two were lost inside twitch-irc: an idle pipeline forgets them.
        bp.consumed(2);
        assert_eq!(bp.in_flight(), 2);
        bp.settle_idle();
        assert_eq!(bp.in_flight(), 0);
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic_the_reader(chunks in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 0..300), 0..10)) {
            let mut codec = LineCodec::new(64);
            let mut buf = BytesMut::new();
            for chunk in &chunks {
                buf.extend_from_slice(chunk);
                while let Some(f) = codec.decode(&mut buf).unwrap() {
                    if let Frame::Line(l) = f {
                        proptest::prop_assert!(l.len() <= 65);
                        let _ = decode_line(&l, 0);
                    }
                }
            }
        }
    }
}
