//! How messages reach nodes and clients.
//!
//! This module owns the [`Transport`] trait, the seam between the nodes and
//! clients and whatever carries their messages, and [`LocalTransport`], the
//! in-process default. Everything that travels is an [`Envelope`]: a request
//! or a response, with its sender, its receiver and a correlation id that
//! pairs a response with its request. Each peer (a node, a client) registers
//! an [`Inbox`]; sending hands an envelope to the inbox of its receiver.
//!
//! # Writing your own transport
//!
//! A transport delivers each envelope to the inbox registered for its `to`
//! peer. The contract:
//!
//! - [`send`](Transport::send) must not block on the far side: deliver
//!   inline (inboxes never block: [`LocalTransport`] does this) or hand the
//!   envelope to a thread of your own.
//! - A request that cannot be delivered (nobody is registered for its
//!   receiver, the connection failed) is answered by the transport with
//!   [`Error::Network`] in a response to its sender, with its correlation
//!   id: senders then retry at once instead of waiting out a timeout. A
//!   response that cannot be delivered is dropped.
//! - A transport may delay, reorder, duplicate or lose envelopes; senders
//!   match responses by correlation id and ignore answers they no longer
//!   wait for.
//!
//! `examples/custom_transport.rs` wraps [`LocalTransport`] to count and delay
//! messages; [`FaultyTransport`] is such a wrapper for tests: it loses,
//! duplicates, delays and reorders messages, isolates a node, and splits
//! the cluster into groups, from a seed. [`Endpoint`] is a peer of its own on
//! a transport, for sending a request and waiting for its answer.
//!
//! `TcpTransport` (feature `tcp`) carries envelopes between processes as
//! frames of the [wire codec](crate::protocol::codec), after a handshake
//! that keeps nodes of different clusters apart.

mod faulty;
#[cfg(feature = "tcp")]
mod tcp;

pub use faulty::{FaultStats, FaultyTransport};
#[cfg(feature = "tcp")]
pub use tcp::{
    BOOTSTRAP_NODE_BASE, ClosedConnection, MAX_CLUSTER_ID_LEN, MAX_PEERS_PER_CONNECTION,
    TcpTransport, TcpTransportConfig,
};

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
pub use crate::protocol::Peer;
use crate::protocol::{Envelope, Message, NodeId, Request, Response};

/// Where a transport delivers the envelopes addressed to one peer.
/// Implemented by the nodes' runtime and by clients.
pub trait Inbox: Send + Sync {
    /// Takes one envelope addressed to this peer. Must not block; it may run
    /// on any thread.
    fn deliver(&self, envelope: Envelope);
}

/// Carries envelopes between peers; see the [module docs](self).
pub trait Transport: Send + Sync + fmt::Debug {
    /// Makes `peer` reachable: envelopes to it go to `inbox`. A peer
    /// registered twice is [`Error::InvalidConfig`].
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> Result<()>;

    /// Makes `peer` unreachable: requests to it are answered with
    /// [`Error::Network`].
    fn deregister(&self, peer: Peer);

    /// Delivers `envelope` to its receiver, or answers an undeliverable
    /// request with [`Error::Network`] to its sender.
    fn send(&self, envelope: Envelope);

    /// A new client peer id for a client on this transport. The default
    /// numbers clients within this process; a transport that crosses
    /// processes makes them unique across processes.
    fn client_peer(&self) -> Peer {
        new_client_peer()
    }
}

/// The node id a [`Error::Network`] names for `peer` (a client has none:
/// `u32::MAX`).
pub(crate) fn node_of(peer: Peer) -> NodeId {
    match peer {
        Peer::Broker(id) => id,
        Peer::Client(_) => u32::MAX,
    }
}

/// The answer a transport gives in place of a request it could not deliver
/// (none to a response, nor to a controller quorum's message: Raft resends
/// what was lost on its own).
pub fn undeliverable(envelope: &Envelope, reason: &str) -> Option<Envelope> {
    let raft = matches!(envelope.message, Message::Request(Request::Raft(_)));
    (matches!(envelope.message, Message::Request(_)) && !raft).then(|| {
        envelope.reply(Err(Error::Network {
            node: node_of(envelope.to),
            reason: reason.to_string(),
        }))
    })
}

/// The in-process transport: an envelope is handed to its receiver's inbox
/// on the sender's thread, as Rust values; record data is `Bytes` passed
/// through, never serialized or copied. Clones share the same registry.
///
/// ```
/// use std::time::Duration;
/// use ferrolog::transport::{Endpoint, LocalTransport};
/// use ferrolog::protocol::{MetadataRequest, Request};
/// use ferrolog::Error;
///
/// let transport = std::sync::Arc::new(LocalTransport::new());
/// let endpoint = Endpoint::new(transport)?;
/// // Nothing is registered as node 7, so the answer is a network error.
/// let answer = endpoint.call(7, Request::Metadata(MetadataRequest::default()),
///     Duration::from_secs(1));
/// assert!(matches!(answer, Err(Error::Network { node: 7, .. })));
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Clone, Default)]
pub struct LocalTransport {
    inboxes: Arc<RwLock<HashMap<Peer, Arc<dyn Inbox>>>>,
}

impl LocalTransport {
    /// An empty transport.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for LocalTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut peers: Vec<Peer> = self.inboxes.read().keys().copied().collect();
        peers.sort_unstable();
        f.debug_struct("LocalTransport")
            .field("peers", &peers)
            .finish()
    }
}

impl Transport for LocalTransport {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> Result<()> {
        let mut inboxes = self.inboxes.write();
        if inboxes.contains_key(&peer) {
            return Err(Error::config(
                "node",
                format!("{peer:?} is already registered"),
            ));
        }
        inboxes.insert(peer, inbox);
        Ok(())
    }

    fn deregister(&self, peer: Peer) {
        self.inboxes.write().remove(&peer);
    }

    fn send(&self, envelope: Envelope) {
        let inbox = self.inboxes.read().get(&envelope.to).cloned();
        match inbox {
            Some(inbox) => inbox.deliver(envelope),
            None => {
                if let Some(answer) = undeliverable(&envelope, "no such node is reachable") {
                    let back = self.inboxes.read().get(&answer.to).cloned();
                    if let Some(back) = back {
                        back.deliver(answer);
                    }
                }
            }
        }
    }
}

/// What to do with an answer that arrives for an [`Endpoint`].
type OnAnswer = Box<dyn FnOnce(Result<Response>) + Send>;

static NEXT_CLIENT_ID: AtomicU64 = AtomicU64::new(1);

/// A client peer id unique in this process.
fn new_client_peer() -> Peer {
    Peer::Client(NEXT_CLIENT_ID.fetch_add(1, Ordering::Relaxed))
}

/// A peer of its own on a transport (a [`Peer::Client`] with a
/// process-unique id): it numbers the requests it sends and hands each
/// answer to whoever waits for it. The clients are built on one; a test or a
/// tool can use one to send raw requests. Dropping it deregisters it;
/// answers still on their way are then dropped.
///
/// ```
/// use std::time::Duration;
/// use ferrolog::transport::Endpoint;
/// use ferrolog::protocol::{MetadataRequest, Request, Response};
/// use ferrolog::Cluster;
///
/// let cluster = Cluster::builder().build()?;
/// let endpoint = Endpoint::new(cluster.transport())?;
/// let pending = endpoint.send(0, Request::Metadata(MetadataRequest::default()));
/// let answer = pending.wait_timeout(Duration::from_secs(5)).expect("answered in time")?;
/// assert!(matches!(answer, Response::Metadata(_)));
/// # Ok::<(), ferrolog::Error>(())
/// ```
pub struct Endpoint {
    peer: Peer,
    transport: Arc<dyn Transport>,
    waiting: Arc<Waiting>,
}

/// The answers an endpoint waits for, by correlation id.
#[derive(Default)]
struct Waiting {
    next_correlation_id: AtomicU64,
    answers: Mutex<BTreeMap<u64, OnAnswer>>,
}

impl Inbox for Waiting {
    fn deliver(&self, envelope: Envelope) {
        let Message::Response(response) = envelope.message else {
            return; // a client serves no requests
        };
        let waiter = self.answers.lock().remove(&envelope.correlation_id);
        if let Some(waiter) = waiter {
            waiter(response);
        }
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("peer", &self.peer)
            .field("waiting", &self.waiting.answers.lock().len())
            .finish()
    }
}

impl Endpoint {
    /// A new client peer on `transport`.
    pub fn new(transport: Arc<dyn Transport>) -> Result<Self> {
        let peer = transport.client_peer();
        let waiting = Arc::new(Waiting::default());
        transport.register(peer, waiting.clone())?;
        Ok(Self {
            peer,
            transport,
            waiting,
        })
    }

    /// This endpoint's peer id.
    pub fn peer(&self) -> Peer {
        self.peer
    }

    /// Sends `request` to node `to`; `on_answer` gets the answer, on whatever
    /// thread delivers it (it must be quick and must not block).
    pub(crate) fn send_with(
        &self,
        to: NodeId,
        request: Request,
        on_answer: impl FnOnce(Result<Response>) + Send + 'static,
    ) -> u64 {
        let id = self
            .waiting
            .next_correlation_id
            .fetch_add(1, Ordering::Relaxed);
        self.waiting.answers.lock().insert(id, Box::new(on_answer));
        self.transport
            .send(Envelope::request(self.peer, Peer::Broker(to), id, request));
        id
    }

    /// Stops waiting for the answer to request `id`.
    pub(crate) fn forget(&self, id: u64) {
        self.waiting.answers.lock().remove(&id);
    }

    /// Sends `request` to node `to`; the answer can be waited for.
    pub fn send(&self, to: NodeId, request: Request) -> PendingAnswer {
        let slot = Arc::new((Mutex::new(None), Condvar::new()));
        let filled = slot.clone();
        self.send_with(to, request, move |answer| {
            *filled.0.lock() = Some(answer);
            filled.1.notify_all();
        });
        PendingAnswer { slot }
    }

    /// Sends `request` to node `to` and waits for its answer, at most
    /// `timeout` ([`Error::RequestTimedOut`] then).
    pub fn call(&self, to: NodeId, request: Request, timeout: Duration) -> Result<Response> {
        let operation = request.api_name();
        let slot = Arc::new((Mutex::new(None), Condvar::new()));
        let filled = slot.clone();
        let id = self.send_with(to, request, move |answer| {
            *filled.0.lock() = Some(answer);
            filled.1.notify_all();
        });
        let answer = PendingAnswer { slot }.wait_timeout(timeout);
        answer.unwrap_or_else(|| {
            self.forget(id);
            Err(Error::RequestTimedOut {
                operation,
                timeout_ms: timeout.as_millis() as u64,
            })
        })
    }
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.transport.deregister(self.peer);
    }
}

/// The answer to a request sent with [`Endpoint::send`], once it comes.
#[derive(Debug, Clone)]
pub struct PendingAnswer {
    slot: Arc<(Mutex<Option<Result<Response>>>, Condvar)>,
}

impl PendingAnswer {
    /// Waits up to `timeout` for the answer; `None` if it did not come.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<Response>> {
        let deadline = Instant::now().checked_add(timeout);
        let (lock, ready) = &*self.slot;
        let mut answer = lock.lock();
        loop {
            if let Some(answer) = answer.take() {
                return Some(answer);
            }
            match deadline {
                Some(deadline) => {
                    if ready.wait_until(&mut answer, deadline).timed_out() {
                        return answer.take();
                    }
                }
                None => ready.wait(&mut answer),
            }
        }
    }

    /// The answer, if it came already.
    pub fn try_take(&self) -> Option<Result<Response>> {
        self.slot.0.lock().take()
    }
}
