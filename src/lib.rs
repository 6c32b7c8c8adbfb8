//! # ferrolog
//!
//! Apache Kafka's design as an embeddable Rust library: topics split into
//! partitions, each partition an append-only log of record batches in Kafka's
//! own v2 format, served by brokers to producers and consumers, behind a
//! pluggable [`Storage`](storage::Storage) and [`Transport`](transport::Transport).
//!
//! ```
//! use std::time::Duration;
//! use ferrolog::{Admin, AutoOffsetReset, Cluster, Consumer, ConsumerConfig, NewTopic, Producer,
//!     ProducerConfig, ProducerRecord, TopicPartition};
//!
//! let cluster = Cluster::builder().build()?;
//! Admin::new(&cluster)?.create_topic(NewTopic::new("events", 1))?;
//! let producer: Producer<String, String> = Producer::new(&cluster, ProducerConfig::default())?;
//! producer.send(ProducerRecord::new("events", "hello".to_string()))?.wait()?;
//!
//! let config = ConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
//! let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config)?;
//! consumer.assign([TopicPartition::new("events", 0)?])?;
//! let records = consumer.poll(Duration::from_secs(5))?;
//! assert_eq!(records[0].value.as_deref(), Some("hello"));
//! # Ok::<(), ferrolog::Error>(())
//! ```
//!
//! The layers, top down:
//!
//! - [`client`]: [`Producer`], [`Consumer`], [`Admin`] and their configs.
//! - [`group`]: consumer groups — the coordinator's state machine, the
//!   assignors, committed offsets in `__consumer_offsets`.
//! - [`cluster`]: the embedded [`Cluster`], whose runtime drives the nodes.
//! - [`transport`]: how envelopes reach nodes and clients
//!   ([`transport::LocalTransport`] in-process, or your own);
//!   [`protocol`]: the messages, their envelopes and their wire codec.
//! - [`broker`]: a broker as a deterministic state machine
//!   ([`broker::BrokerCore`]): request handling, long-poll fetches,
//!   replication, the group coordinator. Like every core it never blocks,
//!   sleeps, reads a clock or calls another node; a runtime (or a test, in
//!   one thread) feeds it messages and time and sends what it returns.
//!
//! - [`record`]: the RecordBatch v2 format, byte for byte as Kafka writes it
//!   (one layout on disk, in memory and on the wire).
//! - [`storage`]: partition logs — segments, sparse indexes, retention,
//!   truncation, leader-epoch cache, checkpoints and crash recovery — in memory
//!   ([`MemoryStorage`](storage::MemoryStorage)) or in files
//!   ([`FileStorage`](storage::FileStorage)), or in a storage of your own.
//! - [`replication`]: the replica set of a partition (leader, followers,
//!   ISR, high watermark) and idempotent producers' state.
//!
//! The log alone:
//!
//! ```
//! use ferrolog::record::RecordBatchBuilder;
//! use ferrolog::storage::{LogConfig, MemoryStorage, Storage};
//! use ferrolog::TopicPartition;
//!
//! let storage = MemoryStorage::new();
//! let mut log = storage.open(&TopicPartition::new("greetings", 0)?, 0, &LogConfig::default())?;
//! let mut batch = RecordBatchBuilder::new();
//! batch.append(1_700_000_000_000, Some(b"id-1"), Some(b"hello"), &[]);
//! batch.append(1_700_000_000_001, Some(b"id-2"), Some(b"world"), &[]);
//! let appended = log.append(batch.build(), 0)?;
//! assert_eq!((appended.base_offset, appended.last_offset), (0, 1));
//!
//! for record in log.read(0, 1 << 20)?.records() {
//!     let record = record?;
//!     println!("{} {:?}", record.offset, record.value);
//! }
//! # Ok::<(), ferrolog::Error>(())
//! ```

#![warn(missing_docs)]
#![cfg(unix)]

/// A `tracing` event (`trace_event!(info, field = value, "message")`) when
/// the `tracing` feature is on; with it off, nothing is compiled and the
/// arguments are not evaluated. Events report what a core decided; they
/// never feed back into a decision.
macro_rules! trace_event {
    ($level:ident, $($arg:tt)+) => {
        #[cfg(feature = "tracing")]
        {
            ::tracing::$level!($($arg)+);
        }
    };
}

pub mod broker;
pub mod client;
pub mod cluster;
mod controller;
#[cfg(all(test, feature = "sim"))]
mod core_tests;
mod error;
pub mod group;
#[cfg(feature = "kafka")]
pub mod kafka;
pub mod metrics;
mod planted;
pub mod protocol;
pub mod record;
pub mod replication;
mod runtime;
#[cfg(feature = "sim")]
pub mod sim;
pub mod storage;
mod time;
mod topic;
pub mod transport;

pub use client::{
    Acks, Admin, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, Producer,
    ProducerConfig, ProducerRecord, RebalanceListener,
};
pub use cluster::{Cluster, ClusterBuilder, ConsumerGroup, Partition, Topic};
#[cfg(feature = "node")]
pub use cluster::{Node, NodeConfig, ProcessRole};
pub use controller::MAX_PARTITIONS_PER_TOPIC;
pub use error::{Error, Result};
pub use group::{GroupState, OffsetAndMetadata};
pub use protocol::CONTROLLER_ID;
pub use protocol::{PartitionMetadata, TopicMetadata};
pub use record::Compression;
pub use storage::TopicCompression;
pub use time::{Clock, ManualClock, Millis, SystemClock};
pub use topic::{
    INTERNAL_TOPIC_PREFIX, MAX_TOPIC_NAME_LEN, NewTopic, TopicConfig, TopicPartition,
    validate_topic_name,
};
