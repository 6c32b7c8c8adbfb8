//! Partition logs and where they live.
//!
//! This module owns the bottom of the stack: a [`PartitionLog`] is one replica's
//! append-only log of [`RecordBatch`]es, split into segments, with offsets
//! `log_start_offset..log_end_offset`, a high watermark slot, a leader-epoch
//! cache and a recovery point. A [`Storage`] opens one such log per partition
//! replica. It knows nothing about brokers, replication or clients: those layers
//! decide *what* to append, truncate or delete; this one decides *how*, and
//! reports what happened through return values.
//!
//! Two storages are built in:
//! - [`MemoryStorage`]: segments are lists of in-memory batches. The default for
//!   tests and ephemeral queues. Logs survive being closed and reopened within
//!   the process (like files would), not the process.
//! - [`FileStorage`]: Kafka's on-disk layout, with memory-mapped indexes,
//!   zero-copy reads of sealed segments, crash recovery and a documented flush
//!   policy.
//!
//! # Writing your own storage
//!
//! Implement [`Storage`] and [`PartitionLog`]. The contract of every method is
//! in its documentation; the in-memory implementation is the reference. A small
//! storage that keeps each partition in one `Vec` of batches and never deletes:
//!
//! ```
//! use ferrolog::storage::{AppendInfo, LogConfig, MaintenanceReport, PartitionLog, ReplicaId,
//!     Storage, TimestampOffset};
//! use ferrolog::record::{RecordBatch, Records};
//! use ferrolog::{Error, Result, TopicPartition};
//!
//! #[derive(Debug, Default)]
//! struct VecLog { batches: Vec<RecordBatch>, start: u64, end: u64, hw: u64 }
//!
//! impl PartitionLog for VecLog {
//!     fn append(&mut self, batch: RecordBatch, leader_epoch: i32) -> Result<AppendInfo> {
//!         batch.validate()?;
//!         let batch = batch.stamped(self.end, leader_epoch);
//!         self.append_replicated(batch)
//!     }
//!     fn append_replicated(&mut self, batch: RecordBatch) -> Result<AppendInfo> {
//!         if batch.base_offset() != self.end {
//!             return Err(Error::UnexpectedAppendOffset { expected: self.end, got: batch.base_offset() });
//!         }
//!         let info = AppendInfo::of(&batch);
//!         self.end = batch.next_offset();
//!         self.batches.push(batch);
//!         Ok(info)
//!     }
//!     fn read(&self, offset: u64, max_bytes: usize) -> Result<Records> {
//!         if offset < self.start || offset > self.end {
//!             return Err(Error::OffsetOutOfRange { offset, log_start_offset: self.start, log_end_offset: self.end });
//!         }
//!         let mut out = Records::empty();
//!         for b in self.batches.iter().filter(|b| b.last_offset() >= offset) {
//!             if !out.is_empty() && out.size() + b.size() > max_bytes { break; }
//!             out.push_chunk(b.as_bytes().clone());
//!         }
//!         Ok(out)
//!     }
//!     fn log_start_offset(&self) -> u64 { self.start }
//!     fn log_end_offset(&self) -> u64 { self.end }
//!     fn high_watermark(&self) -> u64 { self.hw }
//!     fn set_high_watermark(&mut self, offset: u64) { self.hw = offset.min(self.end) }
//!     fn recovery_point(&self) -> u64 { self.end }
//!     fn size_bytes(&self) -> u64 { self.batches.iter().map(|b| b.size() as u64).sum() }
//!     fn segment_count(&self) -> usize { 1 }
//!     fn truncate_to(&mut self, offset: u64) -> Result<u64> {
//!         self.batches.retain(|b| b.last_offset() < offset);
//!         self.end = self.batches.last().map_or(self.start, |b| b.next_offset()).max(self.start);
//!         self.hw = self.hw.min(self.end);
//!         Ok(self.end)
//!     }
//!     fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<()> {
//!         *self = VecLog { start: offset, end: offset, hw: offset, ..VecLog::default() };
//!         Ok(())
//!     }
//!     fn delete_records_before(&mut self, offset: u64) -> Result<u64> {
//!         self.start = self.start.max(offset.min(self.end));
//!         Ok(self.start)
//!     }
//!     fn roll(&mut self) -> Result<()> { Ok(()) }
//!     fn maintain(&mut self) -> Result<MaintenanceReport> { Ok(MaintenanceReport::default()) }
//!     fn offset_for_timestamp(&self, ts: i64) -> Result<Option<TimestampOffset>> {
//!         for b in &self.batches {
//!             for r in b.records() {
//!                 let r = r?;
//!                 if r.offset >= self.start && r.timestamp >= ts {
//!                     return Ok(Some(TimestampOffset { offset: r.offset, timestamp: r.timestamp }));
//!                 }
//!             }
//!         }
//!         Ok(None)
//!     }
//!     fn end_offset_for_epoch(&self, _epoch: i32) -> Option<(i32, u64)> { None }
//!     fn latest_epoch(&self) -> Option<i32> { None }
//!     fn flush(&mut self) -> Result<()> { Ok(()) }
//!     fn close(self: Box<Self>) -> Result<()> { Ok(()) }
//! }
//!
//! #[derive(Debug)]
//! struct VecStorage;
//! impl Storage for VecStorage {
//!     fn open(&self, _: &TopicPartition, _: ReplicaId, config: &LogConfig) -> Result<Box<dyn PartitionLog>> {
//!         config.validate()?;
//!         Ok(Box::new(VecLog::default()))
//!     }
//!     fn remove(&self, _: &TopicPartition, _: ReplicaId) -> Result<()> { Ok(()) }
//!     fn partitions(&self, _: ReplicaId) -> Result<Vec<TopicPartition>> { Ok(vec![]) }
//! }
//!
//! let tp = TopicPartition::new("t", 0)?;
//! let mut log = VecStorage.open(&tp, 0, &LogConfig::default())?;
//! let mut builder = ferrolog::record::RecordBatchBuilder::new();
//! builder.append(0, None, Some(b"hello"), &[]);
//! assert_eq!(log.append(builder.build(), 0)?.base_offset, 0);
//! assert_eq!(log.log_end_offset(), 1);
//! # Ok::<(), ferrolog::Error>(())
//! ```

mod checkpoint;
mod cleaner;
mod config;
mod epoch;
mod file;
mod log;
mod memory;

pub use checkpoint::Checkpoint;
pub use config::{CleanupPolicy, LogConfig, ONE_DAY_MS, SEVEN_DAYS_MS, TopicCompression};
pub use epoch::{EpochEntry, LeaderEpochCache};
pub use file::FileStorage;
#[cfg(feature = "sim")]
pub(crate) use log::{LogDir, Segment, SegmentedLog, first_to_recover, recover_from};
#[cfg(feature = "sim")]
pub(crate) use memory::MemorySegment;
pub use memory::MemoryStorage;

use crate::error::Result;
use crate::record::{RecordBatch, Records};
use crate::topic::TopicPartition;

/// Identifies the broker that holds a replica; several brokers in one process
/// can share one [`Storage`] without their logs colliding.
pub type ReplicaId = u32;

/// Where partition logs live.
///
/// `Send + Sync`: one storage serves all partitions of a broker (or of several
/// brokers), from any thread.
pub trait Storage: Send + Sync + std::fmt::Debug {
    /// Opens (creating if needed, recovering if it was not closed cleanly) the
    /// log of `partition` held by `replica`, with `config`. Invalid config is
    /// [`crate::Error::InvalidConfig`]. At most one handle per log may be open
    /// at a time.
    fn open(
        &self,
        partition: &TopicPartition,
        replica: ReplicaId,
        config: &LogConfig,
    ) -> Result<Box<dyn PartitionLog>>;

    /// Deletes the log of `partition` held by `replica` (topic deletion or
    /// replica reassignment). Its handle must be closed or dropped first.
    fn remove(&self, partition: &TopicPartition, replica: ReplicaId) -> Result<()>;

    /// The partitions `replica` has logs for, e.g. to reopen them at start-up.
    fn partitions(&self, replica: ReplicaId) -> Result<Vec<TopicPartition>>;
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendInfo {
    /// Offset given to the batch's first record.
    pub base_offset: u64,
    /// Offset given to its last record.
    pub last_offset: u64,
    /// The batch's largest timestamp.
    pub max_timestamp: i64,
    /// Bytes appended.
    pub size: usize,
}

impl AppendInfo {
    /// Describes an already stamped batch.
    pub fn of(batch: &RecordBatch) -> Self {
        Self {
            base_offset: batch.base_offset(),
            last_offset: batch.last_offset(),
            max_timestamp: batch.max_timestamp(),
            size: batch.size(),
        }
    }
}

/// The answer of [`PartitionLog::offset_for_timestamp`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimestampOffset {
    /// The first offset whose timestamp is at or after the one asked for.
    pub offset: u64,
    /// That record's timestamp.
    pub timestamp: i64,
}

/// What [`PartitionLog::maintain`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MaintenanceReport {
    /// Segments deleted by retention.
    pub segments_deleted: usize,
    /// Bytes those segments held.
    pub bytes_deleted: u64,
    /// Whether the log was flushed because `flush_ms` had passed.
    pub flushed: bool,
}

/// What [`PartitionLog::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Sealed segments rewritten (segments the cleaner read but had nothing
    /// to change in are not counted).
    pub segments_cleaned: usize,
    /// Records removed: superseded by a later record with the same key,
    /// tombstones past their delete horizon, and records without a key.
    pub records_removed: u64,
    /// Bytes the rewritten segments held before.
    pub bytes_before: u64,
    /// Bytes they hold now.
    pub bytes_after: u64,
}

/// One replica's log of one partition.
///
/// Offsets are dense `u64`s from [`log_start_offset`](Self::log_start_offset)
/// to [`log_end_offset`](Self::log_end_offset) (LEO, the next offset to be
/// written), in append order. Batches are stored as they arrive (same bytes on
/// disk, in memory and on the wire); the log only rewrites the base offset and
/// partition leader epoch in their headers, which the CRC does not cover.
///
/// Durability: an append is in the operating system's page cache (file
/// storage) or in memory when it returns; it is on disk after
/// [`flush`](Self::flush), or sooner when `flush_messages`/`flush_ms` say so.
/// Replication, not fsync, is what protects acknowledged records in a cluster
/// (as in Kafka).
pub trait PartitionLog: Send + std::fmt::Debug {
    /// Appends a batch as the leader: checks its size (`max_message_bytes`,
    /// [`crate::Error::RecordTooLarge`]), CRC and framing
    /// ([`crate::Error::CorruptRecord`]), and, in a log whose `cleanup_policy`
    /// compacts, that every record has a key ([`crate::Error::InvalidRecord`]),
    /// then stamps it with base offset = LEO and `leader_epoch`. Nothing is
    /// written when a check fails.
    fn append(&mut self, batch: RecordBatch, leader_epoch: i32) -> Result<AppendInfo>;

    /// Appends a batch as a follower: offsets and epoch are kept as the leader
    /// stamped them. The batch must start exactly at LEO
    /// ([`crate::Error::UnexpectedAppendOffset`]): offsets stay dense.
    fn append_replicated(&mut self, batch: RecordBatch) -> Result<AppendInfo>;

    /// Whole batches starting with the one that holds `offset`, up to
    /// `max_bytes` in total but always at least one batch (so a consumer can
    /// make progress past a batch larger than its limit). Empty at LEO;
    /// [`crate::Error::OffsetOutOfRange`] below the log start or above LEO.
    /// The first batch may begin before `offset` (batches are never split).
    fn read(&self, offset: u64, max_bytes: usize) -> Result<Records>;

    /// The first offset that can be read.
    fn log_start_offset(&self) -> u64;

    /// The next offset to be written.
    fn log_end_offset(&self) -> u64;

    /// The high watermark last set (persisted with checkpoints).
    fn high_watermark(&self) -> u64;

    /// Records the high watermark, clamped to LEO. The replication layer owns
    /// its value; the log only keeps and checkpoints it.
    fn set_high_watermark(&mut self, offset: u64);

    /// Offset below which everything has been flushed to stable storage.
    fn recovery_point(&self) -> u64;

    /// Bytes held in all segments.
    fn size_bytes(&self) -> u64;

    /// Number of segments, the active one included.
    fn segment_count(&self) -> usize;

    /// Removes every record at or after `offset`. Batches are atomic: one that
    /// straddles `offset` goes whole, so the new LEO (returned) can be below
    /// `offset`. A no-op when `offset >= LEO`. Epochs that began at or after
    /// the new LEO leave the epoch cache; the high watermark is clamped.
    fn truncate_to(&mut self, offset: u64) -> Result<u64>;

    /// Deletes everything and restarts the log empty at `offset` (a follower
    /// whose leader's log starts past its own end).
    fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<()>;

    /// Moves the log start up to `offset` (at most LEO), deleting segments that
    /// lie wholly below it (Kafka's DeleteRecords). Returns the new log start.
    fn delete_records_before(&mut self, offset: u64) -> Result<u64>;

    /// Seals the active segment and starts a new one (if the active one holds
    /// anything).
    fn roll(&mut self) -> Result<()>;

    /// Periodic work a runtime calls now and then: retention by `retention_ms`
    /// and `retention_bytes` (whole segments; only when `cleanup_policy`
    /// deletes), time-based rolling and flushing,
    /// and writing the checkpoint if it changed.
    fn maintain(&mut self) -> Result<MaintenanceReport>;

    /// The time-based work that cannot wait for [`maintain`](Self::maintain)'s
    /// retention pass, which a runtime calls often (about every second):
    /// flushes if `flush_ms` passed since the last flush with records
    /// unflushed, and writes the checkpoint (high watermark, recovery
    /// point) if it changed and the last one is 5 s old (Kafka's
    /// `replica.high.watermark.checkpoint.interval.ms`). Returns whether it
    /// flushed. A log without such state does nothing.
    fn flush_due(&mut self) -> Result<bool> {
        Ok(false)
    }

    /// Log compaction (Kafka's log cleaner), for logs whose `cleanup_policy`
    /// compacts; others are left alone. Rewrites sealed segments wholly below
    /// the high watermark (never the active segment) so that they keep only
    /// the latest record of each key, judged over the whole log; tombstones
    /// stay until `delete_retention_ms` after the cleaner first kept them.
    /// Offsets do not change: removed records leave gaps, and a read at a
    /// removed offset starts with the next batch that reaches it (possibly
    /// an empty one). Log start, log end, high watermark and the epoch cache
    /// are unchanged. A run with nothing new to clean since the previous one
    /// returns at once. A runtime calls this every `log_cleaner_backoff_ms`.
    ///
    /// The default does nothing, for storages without compaction.
    fn compact(&mut self) -> Result<CompactionReport> {
        Ok(CompactionReport::default())
    }

    /// The first record whose timestamp is at or after `timestamp` (ListOffsets
    /// by time), or `None` if every record is older.
    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>>;

    /// `OffsetForLeaderEpoch`: the largest epoch ≤ `epoch` this log knows and
    /// the offset where it ended (LEO for the latest). `None` if `epoch` is older
    /// than every epoch in the log.
    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)>;

    /// The newest leader epoch in the log.
    fn latest_epoch(&self) -> Option<i32>;

    /// Writes everything appended so far to stable storage and moves the
    /// recovery point to LEO. The checkpoint (recovery point, high watermark,
    /// epochs) is written by [`maintain`](Self::maintain) when it changed, and
    /// by [`close`](Self::close).
    fn flush(&mut self) -> Result<()>;

    /// Why the log is offline, if an I/O error in the middle of a change
    /// took it offline ([`crate::Error::LogOffline`]); `None` while it serves.
    /// A log that cannot go offline keeps the default.
    fn offline(&self) -> Option<&str> {
        None
    }

    /// Flushes and closes cleanly, so the next open needs no recovery.
    /// Dropping a log without closing is like a crash of the process: nothing
    /// that reached the page cache is lost, but the next open recovers the tail.
    fn close(self: Box<Self>) -> Result<()>;
}
