//! What an application uses to talk to a cluster.
//!
//! This module owns the clients: the [`Producer`], the [`Consumer`] and the
//! [`Admin`] client, their configs, the (de)serializers that turn application
//! types into record bytes, and the partitioner that picks a partition for a
//! key exactly as Kafka does ([`partitioner`]). Clients reach brokers only
//! through a [`Transport`] named by a
//! [`Bootstrap`]; they never touch a broker's state directly, so the same
//! client code runs against an embedded cluster or remote nodes.
//!
//! Each producer owns one background sender thread, and each consumer with
//! a `group_id` one member thread (heartbeats, commits); otherwise consumers
//! and admin clients do their work on the caller's thread.

mod admin;
mod admin_core;
mod config;
mod consumer;
mod consumer_core;
mod coordinator;
mod group;
pub(crate) mod member_core;
mod metadata;
mod offsets;
pub mod partitioner;
mod producer;
mod serialization;

use std::sync::Arc;

pub use admin::{Admin, ClusterDescription, ConsumerGroupDescription, OffsetReset, PartitionLag};
pub use config::{
    AdminConfig, AutoOffsetReset, ConsumerConfig, ConsumerConfigBuilder, MAX_CONFIG_MS,
    ProducerConfig, ProducerConfigBuilder, SettingValue,
};
pub use consumer::{Consumer, ConsumerRecord};
pub(crate) use consumer_core::ConsumerCore;
pub use group::{CommitHandle, ConsumerGroupMetadata, RebalanceListener};
pub(crate) use producer::core::ProducerCore;
pub use producer::{
    DefaultPartitioner, DeliveryFuture, Partitioner, Producer, ProducerInterceptor, ProducerRecord,
    RecordMetadata,
};
pub use serialization::{DefaultSerde, Deserializer, Postcard, Serializer};

use crate::protocol::NodeId;
pub use crate::protocol::{Acks, OffsetAndTimestamp};
use crate::transport::Transport;

/// Where a client finds the cluster: a transport and the ids of the brokers
/// to ask first (Kafka's `bootstrap.servers`). Any one reachable broker is
/// enough; the client learns the rest from its metadata.
///
/// `&Cluster` converts into one, so `Producer::new(&cluster, config)` works.
#[derive(Debug, Clone)]
pub struct Bootstrap {
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) nodes: Vec<NodeId>,
}

impl Bootstrap {
    /// Registers a new client peer with the transport, its answers going
    /// to a fresh [`ClientInbox`]; a bootstrap without nodes is refused.
    pub(crate) fn register_client(
        &self,
    ) -> crate::Result<(crate::protocol::Peer, Arc<ClientInbox>)> {
        if self.nodes.is_empty() {
            return Err(crate::Error::config("bootstrap", "names no broker"));
        }
        let peer = self.transport.client_peer();
        let inbox = Arc::new(ClientInbox::default());
        self.transport.register(peer, inbox.clone())?;
        Ok((peer, inbox))
    }

    /// Brokers `nodes` reached through `transport`.
    pub fn new(transport: Arc<dyn Transport>, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            transport,
            nodes: nodes.into_iter().collect(),
        }
    }

    /// The brokers of a cluster of separate processes, reached over TCP
    /// (Kafka's `bootstrap.servers`): `servers` is a comma-separated list
    /// of `host:port`, any one of which is enough; the client learns the
    /// other brokers and their addresses from its metadata. Each bootstrap
    /// gets a [`TcpTransport`](crate::transport::TcpTransport) of its own
    /// (one thread), shared by every client built from it or its clones.
    /// An empty list or an address that does not resolve is
    /// [`Error::InvalidConfig`](crate::Error::InvalidConfig).
    #[cfg(feature = "tcp")]
    pub fn servers(servers: &str) -> crate::Result<Self> {
        use crate::transport::{BOOTSTRAP_NODE_BASE, TcpTransport, TcpTransportConfig};
        let servers: Vec<&str> = servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        if servers.is_empty() {
            return Err(crate::Error::config("bootstrap_servers", "names no server"));
        }
        if servers.len() > 1024 {
            return Err(crate::Error::config(
                "bootstrap_servers",
                "names more than 1,024 servers",
            ));
        }
        let ids: Vec<NodeId> = (0..servers.len() as NodeId)
            .map(|i| BOOTSTRAP_NODE_BASE + i)
            .collect();
        let transport = TcpTransport::start(TcpTransportConfig {
            cluster_id: String::new(),
            nodes: ids
                .iter()
                .zip(&servers)
                .map(|(&id, s)| (id, s.to_string()))
                .collect(),
            ..TcpTransportConfig::default()
        })?;
        Ok(Self::new(Arc::new(transport), ids))
    }
}

/// The error for a response of the wrong kind.
pub(crate) fn unexpected(expected: &str, got: &crate::protocol::Response) -> crate::Error {
    crate::Error::InvalidRequest {
        reason: format!("expected a {expected} response, got {}", got.api_name()),
    }
}

/// Where the transport delivers a client's answers, for the application
/// thread that drives the client's core to take.
#[derive(Default)]
pub(crate) struct ClientInbox {
    state: parking_lot::Mutex<InboxState>,
    arrived: parking_lot::Condvar,
}

#[derive(Default)]
struct InboxState {
    answers: Vec<crate::protocol::Envelope>,
    /// Something else the waiting thread must look at happened.
    woken: bool,
}

impl ClientInbox {
    /// Wakes a waiting thread without an answer (a group change, an
    /// answer another thread took for it).
    pub(crate) fn wake(&self) {
        self.state.lock().woken = true;
        self.arrived.notify_all();
    }

    /// Clears the wake flag before the caller looks at what it waits for.
    pub(crate) fn unwake(&self) {
        self.state.lock().woken = false;
    }

    /// The answers that arrived.
    pub(crate) fn take(&self) -> Vec<crate::protocol::Envelope> {
        std::mem::take(&mut self.state.lock().answers)
    }

    /// Waits for an answer or a wake, until the core's next deadline
    /// `core_wake` (on `clock`) or `deadline`, whichever comes first.
    pub(crate) fn wait(
        &self,
        clock: &dyn crate::time::Clock,
        core_wake: Option<crate::time::Millis>,
        deadline: Option<std::time::Instant>,
    ) {
        let core_wake = core_wake.map(|at| {
            let in_ms = at.saturating_sub(clock.now_ms()).max(0) as u64;
            std::time::Instant::now() + std::time::Duration::from_millis(in_ms)
        });
        let wake = core_wake.into_iter().chain(deadline).min();
        let mut state = self.state.lock();
        if state.answers.is_empty() && !state.woken {
            match wake {
                Some(wake) => {
                    let _ = self.arrived.wait_until(&mut state, wake);
                }
                None => self.arrived.wait(&mut state),
            }
        }
    }
}

impl crate::transport::Inbox for ClientInbox {
    fn deliver(&self, envelope: crate::protocol::Envelope) {
        self.state.lock().answers.push(envelope);
        self.arrived.notify_all();
    }
}
