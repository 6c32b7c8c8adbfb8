//! # ferrolog
//!
//! Apache Kafka's design as an embeddable Rust library: topics split into
//! partitions, each partition an append-only log of record batches in Kafka's
//! own v2 format, behind a pluggable [`Storage`](storage::Storage).
//!
//! The crate is built bottom-up along the layers of its design:
//!
//! - [`record`]: the RecordBatch v2 format, byte for byte as Kafka writes it
//!   (one layout on disk, in memory and on the wire).
//! - [`storage`]: partition logs — segments, sparse indexes, retention,
//!   truncation, leader-epoch cache, checkpoints and crash recovery — in memory
//!   ([`MemoryStorage`](storage::MemoryStorage)) or in files
//!   ([`FileStorage`](storage::FileStorage)), or in a storage of your own.
//!
//! Brokers, replication, producers, consumers and consumer groups build on
//! these layers.
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

pub mod broker;
pub mod client;
pub mod cluster;
mod controller;
mod error;
pub mod protocol;
pub mod record;
pub mod storage;
mod time;
mod topic;
pub mod transport;

pub use client::{
    Acks, Admin, AutoOffsetReset, Consumer, ConsumerConfig, ConsumerRecord, Producer,
    ProducerConfig, ProducerRecord,
};
pub use cluster::{Cluster, ClusterBuilder};
pub use error::{Error, Result};
pub use time::{Clock, ManualClock, Millis, SystemClock};
pub use topic::{
    INTERNAL_TOPIC_PREFIX, MAX_TOPIC_NAME_LEN, NewTopic, TopicConfig, TopicPartition,
    validate_topic_name,
};
