//! [`TcpTransport`]: envelopes as frames of the wire codec over TCP, so
//! that nodes and clients in different processes (and on different
//! machines) reach each other.
//!
//! One transport serves one process: every peer registered with it (a
//! broker, a controller, clients) is local, and everything else is reached
//! over a connection. Its one thread polls the listening socket and every
//! connection with `mio`; senders encode their frames on their own threads
//! and queue them, bounded, on the connection.
//!
//! - **Handshake.** Each end of a new connection first sends a handshake
//!   frame naming the cluster id and its node id (or none, for a client
//!   process). A connection whose first frame is not a handshake, or names
//!   another cluster, is closed, with the reason in [`TcpTransport::closed`]
//!   and, with the `tracing` feature, a warning. Nodes of two clusters
//!   never exchange an envelope.
//! - **Frames.** Then every frame is one envelope as
//!   [`codec`](crate::protocol::codec) writes it: a 4-byte length, then the
//!   envelope. A declared length over `socket_request_max_bytes` closes the
//!   connection before anything is allocated for it; a frame that does not
//!   decode closes it too. Nothing a peer sends can panic the transport.
//! - **Routing.** An envelope for a local peer is delivered inline. One
//!   for a node goes over a connection to it: one already open (the node
//!   may have dialed this process), else a new one to its address. One for
//!   a remote client goes back over the connection its requests came on.
//! - **Failure.** A request that cannot go out (no address, the node is in
//!   its reconnect backoff, the connection closed before the answer) is
//!   answered at once with [`Error::Network`]; one unanswered after
//!   `request_timeout_ms` with [`Error::RequestTimedOut`], and its
//!   connection is closed (a peer cut off never resets it); one that finds
//!   the connection's send queue at `send_buffer_max_bytes` with
//!   [`Error::SendBufferFull`]. Reconnects back off exponentially, from
//!   `reconnect_backoff_ms` to `reconnect_backoff_max_ms`, with a ±20 %
//!   jitter drawn from a seeded source.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{BuildHasher, Hasher};
use std::io::{self, IoSlice, Read, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use parking_lot::{Mutex, RwLock};

use super::{Inbox, Transport, undeliverable};
use crate::error::{Error, Result};
use crate::protocol::codec;
use crate::protocol::{CONTROLLER_ID, Envelope, Message, NodeId, Peer, Request, Response};

/// The first bytes of a handshake frame's body.
const HANDSHAKE_MAGIC: &[u8; 4] = b"FRLG";
/// The handshake layout this build writes and reads.
const HANDSHAKE_VERSION: u16 = 1;
/// Longest cluster id a handshake carries.
pub const MAX_CLUSTER_ID_LEN: usize = 255;
/// Largest handshake body: magic, version, kind, node id, id length, id.
const MAX_HANDSHAKE_LEN: usize = 4 + 2 + 1 + 4 + 1 + MAX_CLUSTER_ID_LEN;

/// Node ids from here up stand for bootstrap servers (a client's
/// `bootstrap_servers`, whose node ids it does not know yet): a request to
/// one is served by the broker of the process that receives it.
pub const BOOTSTRAP_NODE_BASE: NodeId = u32::MAX - 4096;

/// Most peers one connection may speak for (its process's nodes and
/// clients); a connection claiming more is closed.
pub const MAX_PEERS_PER_CONNECTION: usize = 10_000;
/// How many closing reasons [`TcpTransport::closed`] keeps.
const CLOSED_KEPT: usize = 256;

const WAKER: Token = Token(usize::MAX);
const LISTENER: Token = Token(usize::MAX - 1);
const READ_CHUNK: usize = 64 * 1024;
/// How often the poller looks for requests and handshakes past their
/// deadline.
const TICK: Duration = Duration::from_millis(20);

/// Settings of a [`TcpTransport`] (Kafka's names where Kafka has them).
#[derive(Debug, Clone)]
pub struct TcpTransportConfig {
    /// The cluster's id: both ends of every connection must carry the same
    /// (up to 255 bytes). A process of clients only may leave it empty: it
    /// then talks to whichever cluster it dials (as Kafka's clients, which
    /// learn the cluster id from the brokers).
    pub cluster_id: String,
    /// This process's node id, sent in the handshake (`None` for a process
    /// of clients only).
    pub node_id: Option<NodeId>,
    /// Where to listen, `host:port` (port 0 picks a free one; `None`: this
    /// process only dials, as a client does).
    pub listener: Option<String>,
    /// The addresses of the nodes this process may dial, by node id.
    pub nodes: BTreeMap<NodeId, String>,
    /// Largest frame read or written, length prefix excluded (Kafka's
    /// `socket.request.max.bytes`, 100 MiB).
    pub socket_request_max_bytes: usize,
    /// Most bytes queued for one connection and not yet written; a send
    /// past it is [`Error::SendBufferFull`] (32 MiB).
    pub send_buffer_max_bytes: usize,
    /// How long a request sent over a connection waits for its answer
    /// before it is answered with [`Error::RequestTimedOut`] (Kafka's
    /// `request.timeout.ms`, 30 s).
    pub request_timeout_ms: u64,
    /// How long a new connection may take to connect and hand over its
    /// handshake (Kafka's `socket.connection.setup.timeout.ms`, 10 s).
    pub socket_connection_setup_timeout_ms: u64,
    /// The first wait before dialing a node again after a failed
    /// connection (Kafka's `reconnect.backoff.ms`, 50 ms); it doubles with
    /// each failure in a row.
    pub reconnect_backoff_ms: u64,
    /// The longest such wait (Kafka's `reconnect.backoff.max.ms`, 1 s).
    pub reconnect_backoff_max_ms: u64,
    /// Most connections open at once, accepted and dialed (Kafka's
    /// `max.connections`, here 1,000); an accept past it is closed at once.
    pub max_connections: usize,
    /// Seeds the backoff's jitter.
    pub jitter_seed: u64,
}

impl Default for TcpTransportConfig {
    fn default() -> Self {
        Self {
            cluster_id: "ferrolog".into(),
            node_id: None,
            listener: None,
            nodes: BTreeMap::new(),
            socket_request_max_bytes: codec::MAX_FRAME_BYTES - codec::LENGTH_PREFIX_LEN,
            send_buffer_max_bytes: 32 << 20,
            request_timeout_ms: 30_000,
            socket_connection_setup_timeout_ms: 10_000,
            reconnect_backoff_ms: 50,
            reconnect_backoff_max_ms: 1_000,
            max_connections: 1_000,
            jitter_seed: 0,
        }
    }
}

impl TcpTransportConfig {
    /// Checks every setting; a bad one is [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.cluster_id.len() > MAX_CLUSTER_ID_LEN {
            return Err(Error::config(
                "cluster_id",
                format!(
                    "must be at most {MAX_CLUSTER_ID_LEN} bytes, not {}",
                    self.cluster_id.len()
                ),
            ));
        }
        if self.cluster_id.is_empty() && (self.node_id.is_some() || self.listener.is_some()) {
            return Err(Error::config(
                "cluster_id",
                "a node (or a process that listens) must name its cluster",
            ));
        }
        if let Some(id) = self.node_id
            && id >= BOOTSTRAP_NODE_BASE
        {
            return Err(Error::config(
                "node_id",
                format!("{id} is in the range kept for bootstrap servers"),
            ));
        }
        let max_frame = codec::MAX_FRAME_BYTES - codec::LENGTH_PREFIX_LEN;
        if !(1024..=max_frame).contains(&self.socket_request_max_bytes) {
            return Err(Error::config(
                "socket_request_max_bytes",
                format!(
                    "{} is outside 1024..={max_frame}",
                    self.socket_request_max_bytes
                ),
            ));
        }
        if self.send_buffer_max_bytes < self.socket_request_max_bytes.min(1 << 20) {
            return Err(Error::config(
                "send_buffer_max_bytes",
                format!(
                    "{} is below a frame of 1 MiB (or socket_request_max_bytes)",
                    self.send_buffer_max_bytes
                ),
            ));
        }
        for (field, value) in [
            ("request_timeout_ms", self.request_timeout_ms),
            (
                "socket_connection_setup_timeout_ms",
                self.socket_connection_setup_timeout_ms,
            ),
            ("reconnect_backoff_max_ms", self.reconnect_backoff_max_ms),
        ] {
            if value == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        if self.reconnect_backoff_ms > self.reconnect_backoff_max_ms {
            return Err(Error::config(
                "reconnect_backoff_ms",
                format!(
                    "{} is over reconnect_backoff_max_ms ({})",
                    self.reconnect_backoff_ms, self.reconnect_backoff_max_ms
                ),
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::config("max_connections", "must be positive"));
        }
        Ok(())
    }
}

/// A connection the transport closed, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedConnection {
    /// The far end's address.
    pub peer: SocketAddr,
    /// The node at the far end, once its handshake named one (or, for a
    /// dialed connection, the node dialed).
    pub node: Option<NodeId>,
    /// Why it closed.
    pub reason: String,
}

/// Envelopes over TCP between processes. Each end of a new connection
/// first sends a handshake naming the cluster id and its node id; a peer
/// of another cluster, a first frame that is not a handshake, a declared
/// length over `socket_request_max_bytes` or a frame that does not decode
/// closes the connection, with its reason in [`closed`](Self::closed)
/// (and a `tracing` warning). Envelopes for local peers are delivered
/// inline; one for a node goes over a connection to it (one it opened, or
/// a new one to its address), one for a remote client back over the
/// connection its requests came on. A request that cannot go out is
/// answered at once with [`Error::Network`] (no address, the node in its
/// reconnect backoff, the connection closed before the answer), one
/// unanswered after `request_timeout_ms` with [`Error::RequestTimedOut`]
/// (and its connection closes, as a peer cut off never resets it),
/// one that finds its connection's queue at `send_buffer_max_bytes` with
/// [`Error::SendBufferFull`]. Reconnects back off exponentially with a
/// seeded ±20 % jitter. One thread per transport polls every socket.
///
/// Clones share one
/// transport; it stops (its thread ends, its connections close) when the
/// last clone is dropped, or at [`shutdown`](Self::shutdown).
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
/// use ferrolog::transport::{Endpoint, TcpTransport, TcpTransportConfig};
/// use ferrolog::protocol::{MetadataRequest, Request, Response};
/// use ferrolog::{Cluster, CONTROLLER_ID};
///
/// // The cluster's process listens...
/// let server = TcpTransport::start(TcpTransportConfig {
///     cluster_id: "docs".into(),
///     node_id: Some(0),
///     listener: Some("127.0.0.1:0".into()),
///     ..TcpTransportConfig::default()
/// })?;
/// let cluster = Cluster::builder().transport(server.clone()).build()?;
/// // ...and another transport (another process, as far as it knows) dials it.
/// let addr = server.local_addr().expect("listening").to_string();
/// let client = TcpTransport::start(TcpTransportConfig {
///     cluster_id: "docs".into(),
///     nodes: [(0, addr.clone()), (CONTROLLER_ID, addr)].into(),
///     ..TcpTransportConfig::default()
/// })?;
/// let endpoint = Endpoint::new(Arc::new(client))?;
/// let answer = endpoint.call(0, Request::Metadata(MetadataRequest::default()),
///     Duration::from_secs(10))?;
/// assert!(matches!(answer, Response::Metadata(_)));
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Clone)]
pub struct TcpTransport {
    inner: Arc<Inner>,
    /// Stops the thread when the last clone goes.
    _running: Arc<Running>,
}

impl std::fmt::Debug for TcpTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TcpTransport")
            .field("cluster_id", &self.inner.config.cluster_id)
            .field("node_id", &self.inner.config.node_id)
            .field("listening", &self.inner.listening)
            .finish_non_exhaustive()
    }
}

/// What senders and the poller share.
struct Inner {
    config: TcpTransportConfig,
    listening: Option<SocketAddr>,
    local: RwLock<BTreeMap<Peer, Arc<dyn Inbox>>>,
    state: Mutex<State>,
    waker: Waker,
    stop: AtomicBool,
    closed: Mutex<VecDeque<ClosedConnection>>,
    /// Client ids are `client_base + n`: a random base per transport makes
    /// them unique across processes.
    client_base: u64,
    next_client: AtomicU64,
}

/// Connections as senders see them.
struct State {
    conns: BTreeMap<Token, Outgoing>,
    /// Which connection reaches a remote peer, learned from the frames it
    /// sent.
    routes: BTreeMap<Peer, Token>,
    /// The connection dialed to each node.
    dialed: BTreeMap<NodeId, Token>,
    addresses: BTreeMap<NodeId, SocketAddr>,
    /// Nodes whose last connection failed: when to dial again, and how many
    /// failures in a row.
    backoff: BTreeMap<NodeId, Backoff>,
    /// Connections the poller is to open.
    to_dial: Vec<(Token, NodeId, SocketAddr)>,
    /// Connections with frames queued.
    dirty: BTreeSet<Token>,
    /// Requests sent and not answered, by sender and correlation id. The
    /// answer may come back on another connection than the request took
    /// (the far end answers over the connection it last heard the
    /// requester on).
    in_flight: BTreeMap<(Peer, u64), InFlight>,
    next_token: usize,
    rng: u64,
}

#[derive(Debug, Clone)]
struct Backoff {
    failures: u32,
    until: Instant,
    reason: String,
}

/// One connection's send side.
/// A request on its way: the connection it took, when it times out, the
/// node asked, its API.
struct InFlight {
    token: Token,
    deadline: Instant,
    node: NodeId,
    api: &'static str,
}

struct Outgoing {
    queue: VecDeque<Bytes>,
    /// Queued here and on the poller's side, not yet written.
    queued_bytes: usize,
    /// The remote peers routed over it.
    peers: BTreeSet<Peer>,
    /// The node dialed, for a dialed connection.
    dialed: Option<NodeId>,
}

impl Outgoing {
    fn new(dialed: Option<NodeId>) -> Self {
        Self {
            queue: VecDeque::new(),
            queued_bytes: 0,
            peers: BTreeSet::new(),
            dialed,
        }
    }
}

struct Running {
    inner: Arc<Inner>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Running {
    fn drop(&mut self) {
        stop(&self.inner, &self.thread);
    }
}

fn stop(inner: &Inner, thread: &Mutex<Option<JoinHandle<()>>>) {
    inner.stop.store(true, Ordering::Release);
    let _ = inner.waker.wake();
    if let Some(thread) = thread.lock().take()
        && thread.thread().id() != std::thread::current().id()
    {
        let _ = thread.join();
    }
}

/// SplitMix64, for the backoff's jitter.
fn next_random(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The wait before the next dial after `failures` failures in a row:
/// `base · 2^(failures − 1)`, at most `max`, then ±20 % from `rng`.
fn backoff_ms(base: u64, max: u64, failures: u32, rng: &mut u64) -> u64 {
    let exp = base
        .max(1)
        .saturating_mul(1u64 << failures.saturating_sub(1).min(32))
        .min(max);
    let spread = exp / 5;
    let low = exp - spread;
    low + next_random(rng) % (2 * spread + 1)
}

fn resolve(field: &'static str, addr: &str) -> Result<SocketAddr> {
    addr.to_socket_addrs()
        .map_err(|e| Error::config(field, format!("{addr}: {e}")))?
        .next()
        .ok_or_else(|| Error::config(field, format!("{addr} resolves to no address")))
}

impl TcpTransport {
    /// Checks `config`, binds the listener (if any) and starts the
    /// transport's thread.
    pub fn start(config: TcpTransportConfig) -> Result<Self> {
        config.validate()?;
        let mut addresses = BTreeMap::new();
        for (&id, addr) in &config.nodes {
            addresses.insert(id, resolve("nodes", addr)?);
        }
        let poll = Poll::new().map_err(|e| Error::io("creating a poller", e))?;
        let mut listener = match &config.listener {
            Some(addr) => {
                let at = resolve("listener", addr)?;
                let listener =
                    TcpListener::bind(at).map_err(|e| Error::io(format!("binding {at}"), e))?;
                Some(listener)
            }
            None => None,
        };
        if let Some(listener) = &mut listener {
            poll.registry()
                .register(listener, LISTENER, Interest::READABLE)
                .map_err(|e| Error::io("polling the listener", e))?;
        }
        let listening = match &listener {
            Some(l) => Some(
                l.local_addr()
                    .map_err(|e| Error::io("the listener's address", e))?,
            ),
            None => None,
        };
        let waker =
            Waker::new(poll.registry(), WAKER).map_err(|e| Error::io("creating a waker", e))?;
        let mut seed = std::collections::hash_map::RandomState::new().build_hasher();
        seed.write_u64(u64::from(std::process::id()));
        let client_base = seed.finish();
        let inner = Arc::new(Inner {
            listening,
            local: RwLock::new(BTreeMap::new()),
            state: Mutex::new(State {
                conns: BTreeMap::new(),
                routes: BTreeMap::new(),
                dialed: BTreeMap::new(),
                addresses,
                backoff: BTreeMap::new(),
                to_dial: Vec::new(),
                dirty: BTreeSet::new(),
                in_flight: BTreeMap::new(),
                next_token: 0,
                rng: config.jitter_seed,
            }),
            waker,
            stop: AtomicBool::new(false),
            closed: Mutex::new(VecDeque::new()),
            client_base,
            next_client: AtomicU64::new(0),
            config,
        });
        let poller = Poller {
            inner: inner.clone(),
            poll,
            listener,
            streams: BTreeMap::new(),
        };
        let name = match inner.config.node_id {
            Some(id) => format!("ferrolog-tcp-{id}"),
            None => "ferrolog-tcp".to_string(),
        };
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || poller.run())
            .map_err(|e| Error::io("spawning the transport's thread", e))?;
        Ok(Self {
            _running: Arc::new(Running {
                inner: inner.clone(),
                thread: Mutex::new(Some(thread)),
            }),
            inner,
        })
    }

    /// Where the transport listens, if it does.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.listening
    }

    /// Node `id` is at `addr` from now on (a connection already open to it
    /// stays until it closes).
    pub fn set_node_address(&self, id: NodeId, addr: SocketAddr) {
        let mut state = self.inner.state.lock();
        state.addresses.insert(id, addr);
        state.backoff.remove(&id);
    }

    /// The addresses known for nodes.
    pub fn node_addresses(&self) -> BTreeMap<NodeId, SocketAddr> {
        self.inner.state.lock().addresses.clone()
    }

    /// The last connections closed (at most 256), oldest first, each with
    /// its reason.
    pub fn closed(&self) -> Vec<ClosedConnection> {
        self.inner.closed.lock().iter().cloned().collect()
    }

    /// How many connections are open.
    pub fn connections(&self) -> usize {
        self.inner.state.lock().conns.len()
    }

    /// Stops the transport: its thread ends, and every connection closes
    /// (requests waiting on them are answered with [`Error::Network`]).
    pub fn shutdown(&self) {
        stop(&self.inner, &self._running.thread);
    }
}

impl Transport for TcpTransport {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> Result<()> {
        let mut local = self.inner.local.write();
        if local.contains_key(&peer) {
            return Err(Error::config(
                "node",
                format!("{peer:?} is already registered"),
            ));
        }
        local.insert(peer, inbox);
        Ok(())
    }

    fn deregister(&self, peer: Peer) {
        self.inner.local.write().remove(&peer);
    }

    fn send(&self, envelope: Envelope) {
        self.inner.send(envelope);
    }

    fn client_peer(&self) -> Peer {
        let n = self.inner.next_client.fetch_add(1, Ordering::Relaxed);
        Peer::Client(self.inner.client_base.wrapping_add(n))
    }
}

impl Inner {
    /// Hands `envelope` to a local inbox; `false` if its receiver is not
    /// local.
    fn deliver_local(&self, envelope: Envelope) -> bool {
        let inbox = self.local.read().get(&envelope.to).cloned();
        match inbox {
            Some(inbox) => {
                inbox.deliver(envelope);
                true
            }
            None => false,
        }
    }

    /// Answers `envelope` (a request) with `error`, to its local sender.
    fn refuse(&self, envelope: &Envelope, error: Error) {
        if let Message::Request(r) = &envelope.message
            && r.expects_answer()
        {
            self.deliver_local(envelope.reply(Err(error)));
        }
    }

    fn send(&self, envelope: Envelope) {
        let inbox = self.local.read().get(&envelope.to).cloned();
        if let Some(inbox) = inbox {
            if matches!(
                envelope.message,
                Message::Request(Request::UpdateMetadata(_))
                    | Message::Response(Ok(Response::Metadata(_)))
            ) {
                learn_addresses(&mut self.state.lock(), &envelope);
            }
            return inbox.deliver(envelope);
        }
        let frame = codec::encode(&envelope);
        let node = super::node_of(envelope.to);
        if frame.len() - codec::LENGTH_PREFIX_LEN > self.config.socket_request_max_bytes {
            let reason = format!(
                "a frame of {} bytes is over socket_request_max_bytes ({})",
                frame.len() - codec::LENGTH_PREFIX_LEN,
                self.config.socket_request_max_bytes
            );
            return self.refuse(&envelope, Error::Network { node, reason });
        }
        let mut state = self.state.lock();
        let token = match state.route(envelope.to, &self.config) {
            Ok(token) => token,
            Err(reason) => {
                drop(state);
                if let Some(answer) = undeliverable(&envelope, &reason) {
                    self.deliver_local(answer);
                }
                return;
            }
        };
        let limit = self.config.send_buffer_max_bytes;
        let Some(conn) = state.conns.get_mut(&token) else {
            return;
        };
        if conn.queued_bytes + frame.len() > limit {
            drop(state);
            return self.refuse(
                &envelope,
                Error::SendBufferFull {
                    node,
                    limit_bytes: limit,
                },
            );
        }
        conn.queued_bytes += frame.len();
        conn.queue.push_back(frame);
        if let Message::Request(request) = &envelope.message
            && request.expects_answer()
        {
            let deadline = Instant::now() + Duration::from_millis(self.config.request_timeout_ms);
            state.in_flight.insert(
                (envelope.from, envelope.correlation_id),
                InFlight {
                    token,
                    deadline,
                    node,
                    api: request.api_name(),
                },
            );
        }
        // The poller looks at every dirty connection before it sleeps:
        // only the first frame of a quiet spell needs to wake it, and the
        // poller's own thread (delivering to a core) never does.
        let first = state.dirty.is_empty();
        state.dirty.insert(token);
        drop(state);
        if first && POLLER.with(|p| !p.get()) {
            let _ = self.waker.wake();
        }
    }

    fn note_closed(&self, closed: ClosedConnection) {
        #[cfg(feature = "tracing")]
        tracing::warn!(peer = %closed.peer, node = ?closed.node, reason = %closed.reason,
            "tcp transport closed a connection");
        let mut log = self.closed.lock();
        if log.len() == CLOSED_KEPT {
            log.pop_front();
        }
        log.push_back(closed);
    }
}

impl State {
    /// The connection that carries envelopes to `to`, opening one if need
    /// be; `Err` says why there is none.
    fn route(&mut self, to: Peer, config: &TcpTransportConfig) -> Result<Token, String> {
        if let Some(&token) = self.routes.get(&to) {
            return Ok(token);
        }
        let Peer::Broker(id) = to else {
            return Err("no connection reaches that client".into());
        };
        if let Some(&token) = self.dialed.get(&id) {
            return Ok(token);
        }
        let Some(&addr) = self.addresses.get(&id) else {
            return Err(format!("no address is known for node {id}"));
        };
        if let Some(backoff) = self.backoff.get(&id) {
            let now = Instant::now();
            if now < backoff.until {
                return Err(format!(
                    "reconnecting to {addr} in {} ms after: {}",
                    (backoff.until - now).as_millis(),
                    backoff.reason
                ));
            }
        }
        if self.conns.len() >= config.max_connections {
            return Err(format!(
                "{} connections are open (max_connections)",
                self.conns.len()
            ));
        }
        let token = Token(self.next_token);
        self.next_token += 1;
        self.conns.insert(token, Outgoing::new(Some(id)));
        self.dialed.insert(id, token);
        self.to_dial.push((token, id, addr));
        Ok(token)
    }
}

/// The transport's thread: the poller and the sockets.
struct Poller {
    inner: Arc<Inner>,
    poll: Poll,
    listener: Option<TcpListener>,
    streams: BTreeMap<Token, Stream>,
}

/// One connection's socket and buffers, on the poller's side.
struct Stream {
    socket: TcpStream,
    addr: SocketAddr,
    opened: Instant,
    /// The far end's handshake, once read: its node id, if it named one.
    handshake: Option<Option<NodeId>>,
    /// For a dialed connection, the node dialed.
    dialed: Option<NodeId>,
    read: BytesMut,
    write: VecDeque<Bytes>,
    /// The socket may have bytes to read: set by a readable event, cleared
    /// when a read finds none (edge-triggered polling reads until then;
    /// a connection touched only to write skips the read).
    readable: bool,
}

thread_local! {
    /// Whether this thread is a transport's poller.
    static POLLER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// What made the poller close a connection.
type Closing = String;

impl Poller {
    fn run(mut self) {
        POLLER.with(|p| p.set(true));
        let mut events = Events::with_capacity(256);
        while !self.inner.stop.load(Ordering::Acquire) {
            // Frames queued while the last round delivered are sent before
            // sleeping.
            let busy = !self.inner.state.lock().dirty.is_empty();
            let wait = if busy { Duration::ZERO } else { TICK };
            if let Err(e) = self.poll.poll(&mut events, Some(wait))
                && e.kind() != io::ErrorKind::Interrupted
            {
                self.inner.note_closed(ClosedConnection {
                    peer: self.inner.listening.unwrap_or(([0, 0, 0, 0], 0).into()),
                    node: None,
                    reason: format!("the poller failed: {e}"),
                });
                break;
            }
            let mut touched = BTreeSet::new();
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept(&mut touched),
                    token => {
                        if (event.is_readable() || event.is_read_closed() || event.is_error())
                            && let Some(stream) = self.streams.get_mut(&token)
                        {
                            stream.readable = true;
                        }
                        touched.insert(token);
                    }
                }
            }
            self.dial(&mut touched);
            touched.extend(std::mem::take(&mut self.inner.state.lock().dirty));
            for token in touched {
                if let Err(reason) = self.service(token) {
                    self.close(token, reason);
                }
            }
            self.expire();
        }
        let tokens: Vec<Token> = self.streams.keys().copied().collect();
        for token in tokens {
            self.close(token, "the transport stopped".into());
        }
        let tokens: Vec<Token> = self.inner.state.lock().conns.keys().copied().collect();
        for token in tokens {
            self.close(token, "the transport stopped".into());
        }
    }

    fn accept(&mut self, touched: &mut BTreeSet<Token>) {
        let mut accepted = Vec::new();
        if let Some(listener) = &self.listener {
            loop {
                match listener.accept() {
                    Ok(pair) => accepted.push(pair),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.inner.note_closed(ClosedConnection {
                            peer: self.inner.listening.unwrap_or(([0, 0, 0, 0], 0).into()),
                            node: None,
                            reason: format!("accept failed: {e}"),
                        });
                        break;
                    }
                }
            }
        }
        for (socket, addr) in accepted {
            let mut state = self.inner.state.lock();
            if state.conns.len() >= self.inner.config.max_connections {
                let open = state.conns.len();
                drop(state);
                self.inner.note_closed(ClosedConnection {
                    peer: addr,
                    node: None,
                    reason: format!("refused: {open} connections open (max_connections)"),
                });
                continue;
            }
            let token = Token(state.next_token);
            state.next_token += 1;
            state.conns.insert(token, Outgoing::new(None));
            drop(state);
            if self.open(token, socket, addr, None).is_ok() {
                touched.insert(token);
            }
        }
    }

    /// Opens the connections senders asked for.
    fn dial(&mut self, touched: &mut BTreeSet<Token>) {
        let to_dial = std::mem::take(&mut self.inner.state.lock().to_dial);
        for (token, node, addr) in to_dial {
            match TcpStream::connect(addr) {
                Ok(socket) => {
                    if self.open(token, socket, addr, Some(node)).is_ok() {
                        touched.insert(token);
                    }
                }
                Err(e) => self.fail(token, addr, Some(node), format!("connect failed: {e}")),
            }
        }
    }

    /// Registers a new socket and queues this end's handshake on it.
    fn open(
        &mut self,
        token: Token,
        mut socket: TcpStream,
        addr: SocketAddr,
        dialed: Option<NodeId>,
    ) -> Result<(), ()> {
        let _ = socket.set_nodelay(true);
        if let Err(e) = self.poll.registry().register(
            &mut socket,
            token,
            Interest::READABLE | Interest::WRITABLE,
        ) {
            self.fail(
                token,
                addr,
                dialed,
                format!("polling the socket failed: {e}"),
            );
            return Err(());
        }
        let config = &self.inner.config;
        let handshake = encode_handshake(&config.cluster_id, config.node_id);
        self.streams.insert(
            token,
            Stream {
                socket,
                addr,
                opened: Instant::now(),
                handshake: None,
                dialed,
                read: BytesMut::new(),
                write: VecDeque::from([handshake]),
                readable: true,
            },
        );
        Ok(())
    }

    /// Closes a connection that never got a socket.
    fn fail(&mut self, token: Token, addr: SocketAddr, node: Option<NodeId>, reason: String) {
        self.forget(token, addr, node, reason, true);
    }

    /// Writes what is queued, reads and delivers what came.
    fn service(&mut self, token: Token) -> Result<(), Closing> {
        let Some(stream) = self.streams.get_mut(&token) else {
            return Ok(());
        };
        if stream.handshake.is_none() {
            match stream.socket.take_error() {
                Ok(Some(e)) | Err(e) => return Err(format!("connect failed: {e}")),
                Ok(None) => {}
            }
        }
        // Frames senders queued move to the socket's side.
        {
            let mut state = self.inner.state.lock();
            if let Some(conn) = state.conns.get_mut(&token) {
                stream.write.extend(conn.queue.drain(..));
            }
        }
        let written = write_out(stream)?;
        if written > 0 {
            let mut state = self.inner.state.lock();
            if let Some(conn) = state.conns.get_mut(&token) {
                conn.queued_bytes = conn.queued_bytes.saturating_sub(written);
            }
        }
        let frames = if stream.readable {
            read_in(stream, &self.inner.config)?
        } else {
            Vec::new()
        };
        let mut first_handshake = false;
        let mut envelopes = Vec::with_capacity(frames.len());
        for frame in frames {
            if stream.handshake.is_none() {
                let node = check_handshake(&frame, &self.inner.config.cluster_id)?;
                stream.handshake = Some(node);
                first_handshake = true;
                continue;
            }
            let envelope = codec::decode(frame).map_err(|e| format!("undecodable frame: {e}"))?;
            envelopes.push(envelope);
        }
        if first_handshake && let Some(node) = stream.dialed {
            // A good connection clears the node's backoff.
            self.inner.state.lock().backoff.remove(&node);
        }
        if envelopes.is_empty() {
            return Ok(());
        }
        // Learn routes and settle answered requests, then deliver without
        // holding the lock.
        let mut to_local = Vec::with_capacity(envelopes.len());
        let mut refused = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let local = self.inner.local.read();
            for envelope in envelopes {
                if local.contains_key(&envelope.from) {
                    return Err(format!(
                        "a frame claims to come from {:?}, a peer of this process",
                        envelope.from
                    ));
                }
                let Some(conn) = state.conns.get_mut(&token) else {
                    return Ok(());
                };
                if conn.peers.insert(envelope.from) {
                    if conn.peers.len() > MAX_PEERS_PER_CONNECTION {
                        return Err(format!(
                            "over {MAX_PEERS_PER_CONNECTION} peers speak on one connection"
                        ));
                    }
                    let from = envelope.from;
                    state.routes.insert(from, token);
                }
                if let Message::Response(_) = envelope.message {
                    state
                        .in_flight
                        .remove(&(envelope.to, envelope.correlation_id));
                }
                let mut envelope = envelope;
                if let Peer::Broker(to) = envelope.to
                    && to >= BOOTSTRAP_NODE_BASE
                    && let Some(own) = self.inner.config.node_id
                {
                    // A bootstrap server's request goes to this process's
                    // broker.
                    envelope.to = Peer::Broker(own);
                }
                learn_addresses(&mut state, &envelope);
                if local.contains_key(&envelope.to) {
                    to_local.push(envelope);
                } else {
                    refused.push(envelope);
                }
            }
        }
        for envelope in to_local {
            self.inner.deliver_local(envelope);
        }
        // A request for a peer this process does not have is answered
        // over the connection it came on; nothing is forwarded.
        for envelope in refused {
            if let Some(answer) = undeliverable(&envelope, "no such peer in this process") {
                self.inner.send(answer);
            }
        }
        Ok(())
    }

    /// Answers requests past their deadline; closes connections whose
    /// handshake is overdue.
    fn expire(&mut self) {
        let now = Instant::now();
        let setup = Duration::from_millis(self.inner.config.socket_connection_setup_timeout_ms);
        let overdue: Vec<Token> = self
            .streams
            .iter()
            .filter(|(_, s)| s.handshake.is_none() && now.duration_since(s.opened) > setup)
            .map(|(&t, _)| t)
            .collect();
        for token in overdue {
            self.close(
                token,
                format!(
                    "no handshake within socket_connection_setup_timeout_ms ({} ms)",
                    setup.as_millis()
                ),
            );
        }
        let mut expired = Vec::new();
        let mut dead = BTreeSet::new();
        {
            let mut state = self.inner.state.lock();
            state.in_flight.retain(|&key, request| {
                let late = request.deadline <= now;
                if late {
                    expired.push((key, request.node, request.api));
                    dead.insert(request.token);
                }
                !late
            });
        }
        let timeout_ms = self.inner.config.request_timeout_ms;
        // As Kafka's clients do: a connection that let a request time out
        // is closed (a peer cut off by the network never resets it), and
        // what else waited on it fails now rather than one by one.
        for token in dead {
            self.close(
                token,
                format!("a request went unanswered for request_timeout_ms ({timeout_ms} ms)"),
            );
        }
        for ((requester, correlation_id), node, operation) in expired {
            self.inner.deliver_local(Envelope {
                from: Peer::Broker(node),
                to: requester,
                correlation_id,
                message: Message::Response(Err(Error::RequestTimedOut {
                    operation,
                    timeout_ms,
                })),
            });
        }
    }

    /// Closes connection `token` for `reason`.
    fn close(&mut self, token: Token, reason: String) {
        let (addr, node, failed_dial) = match self.streams.remove(&token) {
            Some(mut stream) => {
                let _ = self.poll.registry().deregister(&mut stream.socket);
                let node = stream.handshake.flatten().or(stream.dialed);
                (
                    stream.addr,
                    node,
                    stream.dialed.is_some() && stream.handshake.is_none(),
                )
            }
            None => (([0, 0, 0, 0], 0).into(), None, false),
        };
        self.forget(token, addr, node, reason, failed_dial);
    }

    /// Drops what senders know of connection `token`, answers the requests
    /// it carried with a network error, and logs why. A dial that failed
    /// sets the node's backoff.
    fn forget(
        &mut self,
        token: Token,
        addr: SocketAddr,
        node: Option<NodeId>,
        reason: String,
        failed_dial: bool,
    ) {
        let mut answers = Vec::new();
        {
            let mut state = self.inner.state.lock();
            let Some(conn) = state.conns.remove(&token) else {
                return;
            };
            for peer in &conn.peers {
                if state.routes.get(peer) == Some(&token) {
                    state.routes.remove(peer);
                }
            }
            if let Some(dialed) = conn.dialed {
                if state.dialed.get(&dialed) == Some(&token) {
                    state.dialed.remove(&dialed);
                }
                if failed_dial {
                    let failures = state.backoff.get(&dialed).map_or(0, |b| b.failures) + 1;
                    let config = &self.inner.config;
                    let wait = backoff_ms(
                        config.reconnect_backoff_ms,
                        config.reconnect_backoff_max_ms,
                        failures,
                        &mut state.rng,
                    );
                    state.backoff.insert(
                        dialed,
                        Backoff {
                            failures,
                            until: Instant::now() + Duration::from_millis(wait),
                            reason: reason.clone(),
                        },
                    );
                }
            }
            state.dirty.remove(&token);
            state
                .in_flight
                .retain(|&(requester, correlation_id), request| {
                    let lost = request.token == token;
                    if lost {
                        answers.push(Envelope::connection_closed(
                            request.node,
                            requester,
                            correlation_id,
                            &reason,
                        ));
                    }
                    !lost
                });
        }
        self.inner.note_closed(ClosedConnection {
            peer: addr,
            node,
            reason,
        });
        for answer in answers {
            self.inner.deliver_local(answer);
        }
    }
}

/// Learns where brokers are from the metadata passing by: a Metadata
/// answer (to a client) or a metadata push (to a broker) names each
/// broker's endpoint. A node's controller (id `CONTROLLER_ID + n`) is
/// reached at node `n`'s address unless told otherwise: a node with both
/// roles listens for both on one port.
fn learn_addresses(state: &mut State, envelope: &Envelope) {
    let brokers = match &envelope.message {
        Message::Response(Ok(Response::Metadata(m))) => &m.brokers,
        Message::Request(Request::UpdateMetadata(u)) => &u.metadata.brokers,
        _ => return,
    };
    for broker in brokers {
        let Some(addr) = broker
            .endpoint
            .as_deref()
            .and_then(|e| e.parse::<SocketAddr>().ok())
        else {
            continue;
        };
        if state.addresses.insert(broker.id, addr) != Some(addr) {
            state.backoff.remove(&broker.id);
        }
        if let Some(controller) = CONTROLLER_ID.checked_add(broker.id) {
            state.addresses.entry(controller).or_insert(addr);
        }
    }
}

/// Writes queued frames until the socket takes no more; the bytes written.
fn write_out(stream: &mut Stream) -> Result<usize, Closing> {
    let mut written = 0;
    while !stream.write.is_empty() {
        let slices: Vec<IoSlice<'_>> = stream
            .write
            .iter()
            .take(64)
            .map(|b| IoSlice::new(b))
            .collect();
        match stream.socket.write_vectored(&slices) {
            Ok(0) => return Err("the peer stopped reading".into()),
            Ok(mut n) => {
                written += n;
                while n > 0 {
                    let Some(front) = stream.write.front_mut() else {
                        break;
                    };
                    if n >= front.len() {
                        n -= front.len();
                        stream.write.pop_front();
                    } else {
                        front.advance(n);
                        n = 0;
                    }
                }
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected
                ) =>
            {
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write failed: {e}")),
        }
    }
    Ok(written)
}

/// Reads what the socket has; the whole frames among it (length prefix
/// included). A declared length over the limit closes the connection
/// before anything is allocated for it.
fn read_in(stream: &mut Stream, config: &TcpTransportConfig) -> Result<Vec<Bytes>, Closing> {
    let mut frames = Vec::new();
    loop {
        let max = if stream.handshake.is_none() && frames.is_empty() {
            MAX_HANDSHAKE_LEN
        } else {
            config.socket_request_max_bytes
        };
        if let Some(frame) = next_frame(&mut stream.read, max)? {
            frames.push(frame);
            continue;
        }
        let start = stream.read.len();
        stream.read.resize(start + READ_CHUNK, 0);
        match stream.socket.read(&mut stream.read[start..]) {
            Ok(0) => {
                stream.read.truncate(start);
                return if stream.read.is_empty() {
                    if frames.is_empty() {
                        Err("closed by the peer".into())
                    } else {
                        // Deliver what came first; the close shows next.
                        Ok(frames)
                    }
                } else {
                    Err(format!(
                        "closed by the peer in the middle of a frame ({} bytes of it read)",
                        stream.read.len()
                    ))
                };
            }
            Ok(n) => stream.read.truncate(start + n),
            Err(e) => {
                stream.read.truncate(start);
                match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected => {
                        stream.readable = false;
                        return Ok(frames);
                    }
                    io::ErrorKind::Interrupted => {}
                    _ => return Err(format!("read failed: {e}")),
                }
            }
        }
    }
}

/// The next whole frame in `buf` (length prefix included), if it has one;
/// a declared length over `max` is refused.
fn next_frame(buf: &mut BytesMut, max: usize) -> Result<Option<Bytes>, Closing> {
    let Some(declared) = codec::declared_len(buf) else {
        return Ok(None);
    };
    if declared > max {
        return Err(format!(
            "a frame declaring {declared} bytes, over the limit of {max}"
        ));
    }
    let total = codec::LENGTH_PREFIX_LEN + declared;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some(buf.split_to(total).freeze()))
}

/// This end's handshake frame, length prefix included.
fn encode_handshake(cluster_id: &str, node: Option<NodeId>) -> Bytes {
    let mut body = Vec::with_capacity(MAX_HANDSHAKE_LEN);
    body.extend_from_slice(HANDSHAKE_MAGIC);
    body.extend_from_slice(&HANDSHAKE_VERSION.to_be_bytes());
    body.push(u8::from(node.is_some()));
    body.extend_from_slice(&node.unwrap_or(0).to_be_bytes());
    body.push(cluster_id.len() as u8);
    body.extend_from_slice(cluster_id.as_bytes());
    let mut frame = Vec::with_capacity(codec::LENGTH_PREFIX_LEN + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&body);
    Bytes::from(frame)
}

/// Checks the far end's handshake: the node it names, if any.
fn check_handshake(frame: &[u8], cluster_id: &str) -> Result<Option<NodeId>, Closing> {
    let body = &frame[codec::LENGTH_PREFIX_LEN..];
    if body.len() < 12 || &body[..4] != HANDSHAKE_MAGIC {
        return Err("the first frame is not a ferrolog handshake".into());
    }
    let version = u16::from_be_bytes([body[4], body[5]]);
    if version != HANDSHAKE_VERSION {
        return Err(format!(
            "handshake version {version}, this build speaks {HANDSHAKE_VERSION}"
        ));
    }
    let node = match body[6] {
        0 => None,
        1 => Some(u32::from_be_bytes([body[7], body[8], body[9], body[10]])),
        kind => return Err(format!("a handshake of unknown kind {kind}")),
    };
    let len = usize::from(body[11]);
    let theirs = body
        .get(12..12 + len)
        .filter(|_| body.len() == 12 + len)
        .ok_or("a handshake whose cluster id does not fit its frame")?;
    // A client process that names no cluster talks to any; a node always
    // names its own.
    let any = cluster_id.is_empty() || (theirs.is_empty() && node.is_none());
    if !any && theirs != cluster_id.as_bytes() {
        return Err(format!(
            "the peer belongs to cluster {:?}, not {cluster_id:?}",
            String::from_utf8_lossy(theirs)
        ));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_cap_with_a_jitter_the_seed_decides() {
        let draw = |seed| {
            let mut rng = seed;
            (1..=8)
                .map(|f| backoff_ms(50, 1_000, f, &mut rng))
                .collect::<Vec<_>>()
        };
        let a = draw(7);
        assert_eq!(a, draw(7), "the same seed gives the same waits");
        assert_ne!(a, draw(8), "another seed gives other waits");
        for (i, wait) in a.iter().enumerate() {
            let exp = (50u64 << i).min(1_000);
            assert!(
                (exp - exp / 5..=exp + exp / 5).contains(wait),
                "wait {wait} after {} failures is not within 20 % of {exp}",
                i + 1
            );
        }
        assert!(a[7] <= 1_200, "capped at the max plus jitter");
    }

    #[test]
    fn a_handshake_round_trips_and_names_its_cluster() {
        let frame = encode_handshake("blue", Some(3));
        assert_eq!(check_handshake(&frame, "blue"), Ok(Some(3)));
        let client = encode_handshake("blue", None);
        assert_eq!(check_handshake(&client, "blue"), Ok(None));
        let other = check_handshake(&frame, "green").unwrap_err();
        assert!(other.contains("cluster \"blue\""), "{other}");
        let mut bad = frame.to_vec();
        bad[4] = b'X';
        assert!(check_handshake(&bad, "blue").is_err());
        for cut in 0..frame.len() {
            // A short frame is refused, never a panic.
            let short = &frame[..cut.max(codec::LENGTH_PREFIX_LEN)];
            assert!(check_handshake(short, "blue").is_err() || cut == frame.len());
        }
    }
}
