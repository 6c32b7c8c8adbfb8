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
//! Each producer owns one background sender thread, and each subscribed
//! consumer one heartbeat thread; otherwise consumers and admin clients do
//! their work on the caller's thread.

mod admin;
mod config;
mod consumer;
mod consumer_core;
mod core;
pub mod group;
mod metadata;
pub mod partitioner;
mod producer;
mod serialization;

use std::sync::Arc;

pub use admin::{Admin, ClusterDescription, ConsumerGroupDescription, OffsetReset, PartitionLag};
pub use config::{
    AdminConfig, AutoOffsetReset, ConsumerConfig, ConsumerConfigBuilder, MAX_CONFIG_MS,
    ProducerConfig, ProducerConfigBuilder,
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
    /// Brokers `nodes` reached through `transport`.
    pub fn new(transport: Arc<dyn Transport>, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        Self {
            transport,
            nodes: nodes.into_iter().collect(),
        }
    }
}
