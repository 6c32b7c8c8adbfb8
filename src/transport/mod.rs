//! How requests reach brokers.
//!
//! This module owns the [`Transport`] trait, the seam between protocol code and
//! the network, and [`LocalTransport`], the in-process default. Protocol code
//! (brokers, the controller, clients) never knows which transport it runs on:
//! it registers a [`RequestHandler`] per broker and sends [`Request`]s with a
//! [`Reply`] that the far side completes, now or later.
//!
//! # Writing your own transport
//!
//! A transport delivers each request to the handler registered for its
//! destination, and each response to the request's [`Reply`]. The contract:
//!
//! - `send` must not block on the far side: deliver inline (as
//!   [`LocalTransport`] does, handlers never block) or hand the request to a
//!   thread of your own.
//! - Every [`Reply`] is completed at most once. Dropping one without completing
//!   it completes it with [`Error::Network`] ("dropped without a response"),
//!   so a lost message becomes a retriable error, never a hang. Clients also
//!   time out requests on their own (`request_timeout_ms`), so a transport may
//!   hold a reply as long as it likes (to delay or reorder messages).
//! - A request to a node with no registered handler is answered with
//!   [`Error::Network`].
//!
//! `examples/custom_transport.rs` wraps [`LocalTransport`] to count and delay
//! messages; [`FaultyTransport`] is such a wrapper for tests: it loses,
//! duplicates, delays and reorders messages, isolates a broker, and splits
//! the cluster into groups, from a seed.

mod faulty;

pub use faulty::{FaultStats, FaultyTransport};

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
pub use crate::protocol::Peer;
use crate::protocol::{NodeId, Request, Response};

/// Handles the requests addressed to one broker. Implemented by the broker;
/// a transport calls it.
pub trait RequestHandler: Send + Sync {
    /// Handles `request` from `from` and completes `reply`, now or later. Must
    /// not block: a request that has to wait (a long-poll fetch) keeps `reply`
    /// and completes it when its condition is met.
    fn handle(&self, from: Peer, request: Request, reply: Reply);
}

/// Carries requests between clients and brokers; see the [module docs](self).
pub trait Transport: Send + Sync + fmt::Debug {
    /// Makes `node` reachable: requests sent to it go to `handler`. A node
    /// registered twice is [`Error::InvalidConfig`].
    fn register(&self, node: NodeId, handler: Arc<dyn RequestHandler>) -> Result<()>;

    /// Makes `node` unreachable; requests to it get [`Error::Network`].
    fn deregister(&self, node: NodeId);

    /// Delivers `request` from `from` to node `to`; its response, or the
    /// transport's error, goes to `reply`.
    fn send(&self, from: Peer, to: NodeId, request: Request, reply: Reply);
}

type ReplyFn = Box<dyn FnOnce(Result<Response>) + Send>;

/// The one-shot completion of a request: whoever holds it answers the request.
///
/// Dropping a `Reply` without calling [`send`](Reply::send) answers
/// `Err(Error::Network)`, so no request waits forever on a lost message.
pub struct Reply {
    node: NodeId,
    callback: Option<ReplyFn>,
}

impl Reply {
    /// A reply for a request to `node` that calls `callback` with the outcome.
    /// The callback runs on whichever thread completes the request; it must be
    /// quick and must not block.
    pub fn new(node: NodeId, callback: impl FnOnce(Result<Response>) + Send + 'static) -> Self {
        Self {
            node,
            callback: Some(Box::new(callback)),
        }
    }

    /// A reply whose outcome nobody waits for (acks=0 produces).
    pub fn ignored(node: NodeId) -> Self {
        Self {
            node,
            callback: None,
        }
    }

    /// The node the request was sent to.
    pub fn node(&self) -> NodeId {
        self.node
    }

    /// Completes the request.
    pub fn send(mut self, response: Result<Response>) {
        if let Some(callback) = self.callback.take() {
            callback(response);
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(callback) = self.callback.take() {
            callback(Err(Error::Network {
                node: self.node,
                reason: "the request was dropped without a response".into(),
            }));
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reply")
            .field("node", &self.node)
            .field("pending", &self.callback.is_some())
            .finish()
    }
}

/// The in-process transport: a request is handed to the destination's handler
/// on the sender's thread, as Rust values; record data is `Bytes` passed
/// through, never serialized or copied. Clones share the same registry.
///
/// ```
/// use ferrolog::transport::{LocalTransport, Peer, Reply, Transport};
/// use ferrolog::protocol::{MetadataRequest, Request};
/// use ferrolog::Error;
///
/// let transport = LocalTransport::new();
/// // Nothing is registered as node 7, so the reply is a network error.
/// let (tx, rx) = std::sync::mpsc::channel();
/// transport.send(Peer::Client(1), 7, Request::Metadata(MetadataRequest::default()),
///     Reply::new(7, move |r| tx.send(r).unwrap()));
/// assert!(matches!(rx.recv().unwrap(), Err(Error::Network { node: 7, .. })));
/// ```
#[derive(Clone, Default)]
pub struct LocalTransport {
    handlers: Arc<RwLock<HashMap<NodeId, Arc<dyn RequestHandler>>>>,
}

impl LocalTransport {
    /// An empty transport.
    pub fn new() -> Self {
        Self::default()
    }
}

impl fmt::Debug for LocalTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut nodes: Vec<NodeId> = self.handlers.read().keys().copied().collect();
        nodes.sort_unstable();
        f.debug_struct("LocalTransport")
            .field("nodes", &nodes)
            .finish()
    }
}

impl Transport for LocalTransport {
    fn register(&self, node: NodeId, handler: Arc<dyn RequestHandler>) -> Result<()> {
        let mut handlers = self.handlers.write();
        if handlers.contains_key(&node) {
            return Err(Error::config(
                "node",
                format!("node {node} is already registered"),
            ));
        }
        handlers.insert(node, handler);
        Ok(())
    }

    fn deregister(&self, node: NodeId) {
        self.handlers.write().remove(&node);
    }

    fn send(&self, from: Peer, to: NodeId, request: Request, reply: Reply) {
        let handler = self.handlers.read().get(&to).cloned();
        match handler {
            Some(handler) => handler.handle(from, request, reply),
            None => reply.send(Err(Error::Network {
                node: to,
                reason: "no such node is reachable".into(),
            })),
        }
    }
}

/// Sends `request` and blocks until its reply or `timeout`. Edge code only
/// (clients, cluster start-up): protocol code never blocks.
pub(crate) fn call(
    transport: &dyn Transport,
    from: Peer,
    to: NodeId,
    request: Request,
    timeout: Duration,
) -> Result<Response> {
    let operation = request.api_name();
    let slot = Arc::new((Mutex::new(None::<Result<Response>>), Condvar::new()));
    let filled = slot.clone();
    transport.send(
        from,
        to,
        request,
        Reply::new(to, move |response| {
            *filled.0.lock() = Some(response);
            filled.1.notify_one();
        }),
    );
    let (lock, ready) = &*slot;
    let mut guard = lock.lock();
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(response) = guard.take() {
            return response;
        }
        if ready.wait_until(&mut guard, deadline).timed_out() && guard.is_none() {
            return Err(Error::RequestTimedOut {
                operation,
                timeout_ms: timeout.as_millis() as u64,
            });
        }
    }
}
