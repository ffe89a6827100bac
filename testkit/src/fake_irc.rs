//! A fake Twitch IRC server on 127.0.0.1 that speaks the real wire
//! protocol: IRCv3 tags, `CAP REQ`/`ACK`, `PASS`/`NICK` with the welcome
//! numerics, `JOIN` echo with NAMES and ROOMSTATE, `PART` echo, `PING`/`PONG`.
//! Tests drive it: send lines to the connections joined to a channel, drop
//! connections, send `RECONNECT`, ignore JOINs (the "ghost JOIN"), refuse
//! logins, and inspect what clients sent.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};

/// What the server sends to one connection.
#[derive(Debug)]
enum Out {
    Bytes(Vec<u8>),
    /// Write PINGs as fast as the client takes them, until it goes.
    PingFlood,
    Close,
}

/// How the server misbehaves after a login, to test a client against it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hostile {
    /// Welcome every login, then `RECONNECT` and close at once.
    ReconnectAfterWelcome,
    /// Welcome every login, then flood PINGs and never read again (the
    /// client's PONGs fill the socket buffers).
    PingFloodWithoutReading,
}

#[derive(Debug)]
struct Conn {
    tx: mpsc::UnboundedSender<Out>,
    nick: String,
    joined: HashSet<String>,
}

/// One line a client sent, with when and on which connection.
#[derive(Debug, Clone)]
pub struct Received {
    /// When the server read it.
    pub at: Instant,
    /// Connection number (1-based, in accept order).
    pub conn: u64,
    /// The line, without CRLF.
    pub line: String,
}

/// A predicate on `PASS` tokens.
type TokenCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

#[derive(Default)]
struct State {
    conns: HashMap<u64, Conn>,
    received: Vec<Received>,
    /// Channels whose next N JOINs are ignored (ghost JOIN).
    ignore_joins: HashMap<String, usize>,
    /// Decides whether a `PASS` token is accepted; `None` accepts any (and
    /// anonymous logins are always accepted).
    token_check: Option<TokenCheck>,
    /// Refuse (close) new connections.
    refuse: bool,
    /// Misbehave after each login.
    hostile: Option<Hostile>,
    /// Connections accepted since the start.
    accepted: usize,
    /// Room ids handed out per channel.
    room_ids: HashMap<String, u64>,
}

/// A running fake server. Dropping it stops accepting (open connections
/// are closed when their writer queue is dropped).
pub struct FakeIrc {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FakeIrc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeIrc").field("addr", &self.addr).finish()
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

impl FakeIrc {
    /// Starts a server on an ephemeral port of 127.0.0.1.
    pub async fn start() -> Self {
        Self::start_on("127.0.0.1:0").await.expect("bind fake irc")
    }

    /// Starts a server on `addr` (e.g. `127.0.0.1:6667`).
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_on(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let accept = tokio::spawn(accept_loop(listener, state.clone(), changed.clone()));
        Ok(Self {
            addr,
            state,
            changed,
            accept,
        })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Accept only these OAuth tokens in `PASS oauth:<token>`; anonymous
    /// logins (no PASS) are still accepted.
    pub fn set_valid_tokens<I: IntoIterator<Item = S>, S: Into<String>>(&self, tokens: I) {
        let valid: HashSet<String> = tokens.into_iter().map(Into::into).collect();
        self.set_token_check(move |t| valid.contains(t));
    }

    /// Accept a `PASS oauth:<token>` when `check(token)` says so (e.g. ask
    /// a fake OAuth provider whether it issued the token).
    pub fn set_token_check(&self, check: impl Fn(&str) -> bool + Send + Sync + 'static) {
        self.state.lock().unwrap().token_check = Some(Arc::new(check));
    }

    /// Ignore the next `n` JOINs of `channel` (no echo): the ghost JOIN.
    pub fn ignore_joins(&self, channel: &str, n: usize) {
        self.state
            .lock()
            .unwrap()
            .ignore_joins
            .insert(channel.to_owned(), n);
    }

    /// Close new connections at once while `refuse` is true.
    pub fn set_refuse(&self, refuse: bool) {
        self.state.lock().unwrap().refuse = refuse;
    }

    /// Misbehave after every login from now on (`None`: behave).
    pub fn set_hostile(&self, hostile: Option<Hostile>) {
        self.state.lock().unwrap().hostile = hostile;
    }

    /// Connections accepted since the start (open or closed).
    pub fn accepted(&self) -> usize {
        self.state.lock().unwrap().accepted
    }

    /// Number of open connections.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().conns.len()
    }

    /// Channels some connection is joined to.
    pub fn joined_channels(&self) -> BTreeSet<String> {
        let st = self.state.lock().unwrap();
        st.conns
            .values()
            .flat_map(|c| c.joined.iter().cloned())
            .collect()
    }

    /// The channels each login (`NICK`) is joined to, over all its
    /// connections: which client reads what.
    pub fn joined_by_nick(&self) -> std::collections::BTreeMap<String, BTreeSet<String>> {
        let st = self.state.lock().unwrap();
        let mut by = std::collections::BTreeMap::<String, BTreeSet<String>>::new();
        for c in st.conns.values() {
            by.entry(c.nick.clone())
                .or_default()
                .extend(c.joined.iter().cloned());
        }
        by.retain(|_, joined| !joined.is_empty());
        by
    }

    /// Waits until every channel in `channels` is joined on some connection.
    pub async fn wait_joined(&self, channels: &[&str], secs: u64) {
        crate::within(secs, &format!("channels joined: {channels:?}"), async {
            loop {
                let notified = self.changed.notified();
                let joined = self.joined_channels();
                if channels.iter().all(|c| joined.contains(*c)) {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Waits until at least `n` connections are open.
    pub async fn wait_connections(&self, n: usize, secs: u64) {
        crate::within(secs, &format!("{n} connections"), async {
            loop {
                let notified = self.changed.notified();
                if self.connections() >= n {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }

    /// Every line clients sent so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// The lines clients sent whose command is `command` (e.g. `JOIN`).
    pub fn received_command(&self, command: &str) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| crate::corpus::command_of(&r.line) == Some(command))
            .collect()
    }

    /// Sends `line` (no CRLF) to every connection joined to `channel`.
    /// Returns how many connections it went to.
    pub fn send_to_channel(&self, channel: &str, line: &str) -> usize {
        let mut bytes = line.as_bytes().to_vec();
        bytes.extend_from_slice(b"\r\n");
        self.send_bytes_to_channel(channel, bytes)
    }

    /// Sends raw bytes (include your own line ending) to every connection
    /// joined to `channel`: for malformed input tests.
    pub fn send_bytes_to_channel(&self, channel: &str, bytes: Vec<u8>) -> usize {
        let st = self.state.lock().unwrap();
        let mut n = 0;
        for conn in st.conns.values().filter(|c| c.joined.contains(channel)) {
            if conn.tx.send(Out::Bytes(bytes.clone())).is_ok() {
                n += 1;
            }
        }
        n
    }

    /// Sends many lines, each to the connections joined to its channel (the
    /// first `#word` parameter), batched per connection: for floods.
    /// Returns the number of lines delivered to at least one connection.
    pub fn send_lines(&self, lines: &[String]) -> usize {
        let st = self.state.lock().unwrap();
        let mut by_conn: HashMap<u64, Vec<u8>> = HashMap::new();
        let mut delivered = 0;
        for line in lines {
            let Some(channel) = channel_of(line) else {
                continue;
            };
            let mut any = false;
            for (id, conn) in &st.conns {
                if conn.joined.contains(channel) {
                    let buf = by_conn.entry(*id).or_default();
                    buf.extend_from_slice(line.as_bytes());
                    buf.extend_from_slice(b"\r\n");
                    any = true;
                }
            }
            delivered += usize::from(any);
        }
        for (id, bytes) in by_conn {
            if let Some(conn) = st.conns.get(&id) {
                let _ = conn.tx.send(Out::Bytes(bytes));
            }
        }
        delivered
    }

    /// Sends Twitch's `RECONNECT` to every connection (clients should
    /// reconnect; the server closes them a moment later, as Twitch does).
    pub fn send_reconnect(&self) {
        let st = self.state.lock().unwrap();
        for conn in st.conns.values() {
            let _ = conn
                .tx
                .send(Out::Bytes(b":tmi.twitch.tv RECONNECT\r\n".to_vec()));
        }
    }

    /// Closes every connection abruptly.
    pub fn drop_connections(&self) {
        let mut st = self.state.lock().unwrap();
        for (_, conn) in st.conns.drain() {
            let _ = conn.tx.send(Out::Close);
        }
        self.changed.notify_waiters();
    }

    /// The nick a connection logged in with (e.g. `justinfan12345`).
    pub fn nicks(&self) -> Vec<String> {
        self.state
            .lock()
            .unwrap()
            .conns
            .values()
            .map(|c| c.nick.clone())
            .collect()
    }
}

impl Drop for FakeIrc {
    fn drop(&mut self) {
        self.accept.abort();
        if let Ok(mut st) = self.state.lock() {
            for (_, conn) in st.conns.drain() {
                let _ = conn.tx.send(Out::Close);
            }
        }
    }
}

/// The channel (without `#`) of a raw line: its first parameter starting
/// with `#`.
pub fn channel_of(line: &str) -> Option<&str> {
    let mut rest = line;
    if rest.starts_with('@') {
        rest = rest.split_once(' ')?.1;
    }
    if rest.starts_with(':') {
        rest = rest.split_once(' ')?.1;
    }
    rest.split(' ')
        .skip(1)
        .take_while(|p| !p.starts_with(':'))
        .find_map(|p| p.strip_prefix('#'))
}

async fn accept_loop(listener: TcpListener, state: Arc<Mutex<State>>, changed: Arc<Notify>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        {
            let mut st = state.lock().unwrap();
            st.accepted += 1;
            if st.refuse {
                drop(stream);
                continue;
            }
        }
        let id = NEXT_CONN.fetch_add(1, Ordering::SeqCst);
        tokio::spawn(serve(id, stream, state.clone(), changed.clone()));
    }
}

async fn serve(id: u64, stream: TcpStream, state: Arc<Mutex<State>>, changed: Arc<Notify>) {
    let (read, mut write) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    state.lock().unwrap().conns.insert(
        id,
        Conn {
            tx: tx.clone(),
            nick: String::new(),
            joined: HashSet::new(),
        },
    );
    changed.notify_waiters();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            match out {
                Out::Bytes(b) => {
                    if write.write_all(&b).await.is_err() {
                        break;
                    }
                }
                Out::PingFlood => {
                    let chunk = b"PING :tmi.twitch.tv\r\n".repeat(3_000);
                    while write.write_all(&chunk).await.is_ok() {}
                    break;
                }
                Out::Close => break,
            }
        }
        let _ = write.shutdown().await;
    });

    let mut lines = BufReader::new(read).split(b'\n');
    let mut pass: Option<String> = None;
    while let Ok(Some(raw)) = lines.next_line_lossy().await {
        let line = raw.trim_end_matches('\r').to_owned();
        if line.is_empty() {
            continue;
        }
        let (reply, hostile) = {
            let mut st = state.lock().unwrap();
            st.received.push(Received {
                at: Instant::now(),
                conn: id,
                line: line.clone(),
            });
            let reply = respond(&mut st, id, &line, &mut pass);
            let login = line.to_ascii_uppercase().starts_with("NICK ");
            (reply, st.hostile.filter(|_| login))
        };
        let reply = match (hostile, reply) {
            (Some(Hostile::ReconnectAfterWelcome), Reply::Lines(mut out)) => {
                out.push(":tmi.twitch.tv RECONNECT".into());
                Reply::CloseAfter(out)
            }
            (_, reply) => reply,
        };
        changed.notify_waiters();
        match reply {
            Reply::Lines(out) if hostile == Some(Hostile::PingFloodWithoutReading) => {
                let mut bytes = Vec::new();
                for l in out {
                    bytes.extend_from_slice(l.as_bytes());
                    bytes.extend_from_slice(b"\r\n");
                }
                let _ = tx.send(Out::Bytes(bytes));
                let _ = tx.send(Out::PingFlood);
                // Never read again: hold the socket until the client goes.
                let _unread = lines;
                state.lock().unwrap().conns.remove(&id);
                changed.notify_waiters();
                drop(tx);
                let _ = writer.await;
                return;
            }
            Reply::Lines(out) => {
                if !out.is_empty() {
                    let mut bytes = Vec::new();
                    for l in out {
                        bytes.extend_from_slice(l.as_bytes());
                        bytes.extend_from_slice(b"\r\n");
                    }
                    let _ = tx.send(Out::Bytes(bytes));
                }
            }
            Reply::CloseAfter(out) => {
                let mut bytes = Vec::new();
                for l in out {
                    bytes.extend_from_slice(l.as_bytes());
                    bytes.extend_from_slice(b"\r\n");
                }
                let _ = tx.send(Out::Bytes(bytes));
                let _ = tx.send(Out::Close);
                break;
            }
        }
    }
    state.lock().unwrap().conns.remove(&id);
    changed.notify_waiters();
    drop(tx);
    let _ = writer.await;
}

enum Reply {
    Lines(Vec<String>),
    CloseAfter(Vec<String>),
}

fn respond(st: &mut State, id: u64, line: &str, pass: &mut Option<String>) -> Reply {
    let mut parts = line.splitn(2, ' ');
    let command = parts.next().unwrap_or_default().to_ascii_uppercase();
    let args = parts.next().unwrap_or_default();
    match command.as_str() {
        "CAP" => {
            let caps = args.split_once(':').map_or("", |(_, c)| c);
            Reply::Lines(vec![format!(":tmi.twitch.tv CAP * ACK :{caps}")])
        }
        "PASS" => {
            *pass = Some(
                args.trim_start_matches(':')
                    .trim_start_matches("oauth:")
                    .to_owned(),
            );
            Reply::Lines(vec![])
        }
        "NICK" => {
            let nick = args.trim().to_ascii_lowercase();
            let authenticated = match (&st.token_check, pass.as_ref()) {
                (Some(check), Some(token)) => check(token),
                _ => true,
            };
            if !authenticated {
                return Reply::CloseAfter(vec![
                    ":tmi.twitch.tv NOTICE * :Login authentication failed".into(),
                ]);
            }
            if let Some(conn) = st.conns.get_mut(&id) {
                conn.nick = nick.clone();
            }
            Reply::Lines(vec![
                format!(":tmi.twitch.tv 001 {nick} :Welcome, GLHF!"),
                format!(":tmi.twitch.tv 002 {nick} :Your host is tmi.twitch.tv"),
                format!(":tmi.twitch.tv 003 {nick} :This server is rather new"),
                format!(":tmi.twitch.tv 004 {nick} :-"),
                format!(":tmi.twitch.tv 375 {nick} :-"),
                format!(
                    ":tmi.twitch.tv 372 {nick} :You are in a maze of twisty passages, all alike."
                ),
                format!(":tmi.twitch.tv 376 {nick} :>"),
            ])
        }
        "JOIN" => {
            let nick = st
                .conns
                .get(&id)
                .map(|c| c.nick.clone())
                .unwrap_or_default();
            let mut out = Vec::new();
            for channel in args
                .split(',')
                .map(|c| c.trim().trim_start_matches('#').to_ascii_lowercase())
            {
                if channel.is_empty() {
                    continue;
                }
                if let Some(n) = st.ignore_joins.get_mut(&channel)
                    && *n > 0
                {
                    *n -= 1;
                    continue;
                }
                let next_room = 1000 + st.room_ids.len() as u64;
                let room = *st.room_ids.entry(channel.clone()).or_insert(next_room);
                if let Some(conn) = st.conns.get_mut(&id) {
                    conn.joined.insert(channel.clone());
                }
                out.push(format!(
                    ":{nick}!{nick}@{nick}.tmi.twitch.tv JOIN #{channel}"
                ));
                out.push(format!(
                    ":{nick}.tmi.twitch.tv 353 {nick} = #{channel} :{nick}"
                ));
                out.push(format!(
                    ":{nick}.tmi.twitch.tv 366 {nick} #{channel} :End of /NAMES list"
                ));
                out.push(format!(
                    "@emote-only=0;followers-only=-1;r9k=0;room-id={room};slow=0;subs-only=0 :tmi.twitch.tv ROOMSTATE #{channel}"
                ));
            }
            Reply::Lines(out)
        }
        "PART" => {
            let nick = st
                .conns
                .get(&id)
                .map(|c| c.nick.clone())
                .unwrap_or_default();
            let mut out = Vec::new();
            for channel in args
                .split(',')
                .map(|c| c.trim().trim_start_matches('#').to_ascii_lowercase())
            {
                if let Some(conn) = st.conns.get_mut(&id) {
                    conn.joined.remove(&channel);
                }
                out.push(format!(
                    ":{nick}!{nick}@{nick}.tmi.twitch.tv PART #{channel}"
                ));
            }
            Reply::Lines(out)
        }
        "PING" => {
            let arg = args.trim_start_matches(':');
            Reply::Lines(vec![format!(":tmi.twitch.tv PONG tmi.twitch.tv :{arg}")])
        }
        _ => Reply::Lines(vec![]),
    }
}

/// `split(b'\n')` yielding lossy UTF-8 strings.
trait NextLineLossy {
    async fn next_line_lossy(&mut self) -> std::io::Result<Option<String>>;
}

impl<R: tokio::io::AsyncBufRead + Unpin> NextLineLossy for tokio::io::Split<R> {
    async fn next_line_lossy(&mut self) -> std::io::Result<Option<String>> {
        Ok(self
            .next_segment()
            .await?
            .map(|b| String::from_utf8_lossy(&b).into_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_of_finds_the_channel_param() {
        assert_eq!(
            channel_of("@a=b :x!x@x PRIVMSG #chan :hi #not"),
            Some("chan")
        );
        assert_eq!(channel_of(":tmi.twitch.tv ROOMSTATE #c"), Some("c"));
        assert_eq!(channel_of("PING :tmi.twitch.tv"), None);
        assert_eq!(channel_of(":tmi.twitch.tv CLEARCHAT #c :user"), Some("c"));
    }

    #[tokio::test]
    async fn speaks_enough_irc_for_a_client() {
        let server = FakeIrc::start().await;
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        w.write_all(
            b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\nNICK justinfan1\r\nJOIN #abc\r\n",
        )
        .await
        .unwrap();
        let mut got = Vec::new();
        while got.len() < 12 {
            got.push(lines.next_line().await.unwrap().unwrap());
        }
        assert!(got[0].contains("CAP * ACK"));
        assert!(
            got.iter()
                .any(|l| l == ":justinfan1!justinfan1@justinfan1.tmi.twitch.tv JOIN #abc")
        );
        server.wait_joined(&["abc"], 5).await;
        server.send_to_channel("abc", "@id=1 :u!u@u PRIVMSG #abc :hello");
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            "@id=1 :u!u@u PRIVMSG #abc :hello"
        );
        w.write_all(b"PING :x\r\n").await.unwrap();
        assert_eq!(
            lines.next_line().await.unwrap().unwrap(),
            ":tmi.twitch.tv PONG tmi.twitch.tv :x"
        );
    }
}
