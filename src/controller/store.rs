//! Where the controller keeps its metadata log.
//!
//! The controller's state is the replay of an ordered log of metadata
//! records. [`MetadataStore`] is that log's seam: the in-process
//! [`LogMetadataStore`] keeps it in one partition log of the cluster's
//! storage; a replicated (Raft) store can take its place without the
//! controller's decisions changing.

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::protocol::NodeId;
use crate::record::RecordBatchBuilder;
use crate::storage::{LogConfig, PartitionLog, Storage};
use crate::time::Millis;
use crate::topic::TopicPartition;

use super::METADATA_TOPIC;

/// An ordered, durable log of metadata records.
///
/// A local store commits what it appends at once. A replicated one (the
/// Raft quorum) takes appends only while it is the active controller's,
/// and commits them later, once a majority has them: records between
/// [`committed_offset`](Self::committed_offset) and
/// [`end_offset`](Self::end_offset) are the active controller's own, not
/// yet safe to act on.
pub(crate) trait MetadataStore: Send + std::fmt::Debug {
    /// Appends `records` in order; the offset of the first. A local store
    /// has them durably before returning.
    fn append(&mut self, records: &[Vec<u8>], now: Millis) -> Result<u64>;

    /// Every committed record from the start, in order, with its offset.
    fn replay(&self) -> Result<Vec<(u64, Bytes)>>;

    /// Closes the store cleanly.
    fn close(self: Box<Self>) -> Result<()>;

    /// The offset after the last committed record.
    fn committed_offset(&self) -> u64;

    /// The offset after the last record appended.
    fn end_offset(&self) -> u64;

    /// Whether this store's controller may append now (it is the quorum's
    /// leader and everything before its leadership is committed). A local
    /// store always may.
    fn is_active(&self) -> bool {
        true
    }

    /// The quorum's term this store knows (0 for a local store).
    fn term(&self) -> u64 {
        0
    }

    /// One quorum tick (a local store has none).
    fn tick(&mut self, _now: Millis) -> Result<()> {
        Ok(())
    }

    /// A message from another voter.
    fn step(&mut self, _payload: &[u8], _now: Millis) -> Result<()> {
        Err(Error::InvalidRequest {
            reason: "this controller is not part of a quorum".into(),
        })
    }

    /// The next message to another voter: (voter, payload).
    fn poll_message(&mut self) -> Option<(NodeId, Bytes)> {
        None
    }
}

/// How many records a metadata log gathers after its last snapshot before
/// it takes the next one.
pub(crate) const SNAPSHOT_AFTER_RECORDS: u64 = 1_000;

/// Largest batch a metadata log takes (a Raft snapshot is one record).
const MAX_METADATA_BATCH_BYTES: usize = 64 << 20;

/// Most records in one batch of a snapshot.
const SNAPSHOT_BATCH_RECORDS: usize = 500;

/// The metadata log as the partition `__cluster_metadata-0` of the
/// controller's node in a [`Storage`], flushed on every append. Once
/// [`SNAPSHOT_AFTER_RECORDS`] records follow its last snapshot it appends a
/// new one and deletes everything before it.
#[derive(Debug)]
pub(crate) struct LogMetadataStore {
    log: Box<dyn PartitionLog>,
    /// Where the records after the last snapshot begin (since this store
    /// opened, its log start).
    after_snapshot: u64,
    snapshot_after: u64,
}

impl LogMetadataStore {
    /// Opens (or creates) the metadata log of node `id` in `storage`.
    pub(crate) fn open(storage: &dyn Storage, id: NodeId) -> Result<Self> {
        let log = open_log(storage, METADATA_TOPIC, id)?;
        Ok(Self {
            after_snapshot: log.log_start_offset(),
            log,
            snapshot_after: SNAPSHOT_AFTER_RECORDS,
        })
    }

    /// Snapshots after `records` records instead (for tests).
    #[cfg(test)]
    pub(crate) fn snapshot_after(mut self, records: u64) -> Self {
        self.snapshot_after = records.max(1);
        self
    }

    /// Appends a snapshot of the whole log, then deletes what it replaces.
    /// A crash between the two leaves both, which replay to the same
    /// metadata (the snapshot restates what the records before it made).
    fn snapshot(&mut self, now: Millis) -> Result<()> {
        let image = super::snapshot_records(&read_all(&*self.log, "metadata")?)?;
        let start = self.log.log_end_offset();
        for chunk in image.chunks(SNAPSHOT_BATCH_RECORDS) {
            self.append_batch(chunk, now)?;
        }
        self.log.flush()?;
        self.log.delete_records_before(start)?;
        self.log.maintain()?;
        self.after_snapshot = self.log.log_end_offset();
        Ok(())
    }

    fn append_batch(&mut self, records: &[Vec<u8>], now: Millis) -> Result<u64> {
        let mut batch =
            RecordBatchBuilder::with_capacity(records.iter().map(|r| r.len() + 16).sum());
        for record in records {
            batch.append(now, None, Some(record), &[]);
        }
        let base = self.log.append(batch.build(), 0)?.base_offset;
        let end = self.log.log_end_offset();
        self.log.set_high_watermark(end);
        Ok(base)
    }
}

/// Opens (or creates) partition 0 of `topic` held by `replica` in
/// `storage`, kept forever, with everything in it readable.
pub(super) fn open_log(
    storage: &dyn Storage,
    topic: &str,
    replica: NodeId,
) -> Result<Box<dyn PartitionLog>> {
    let tp = TopicPartition::new(topic, 0)?;
    let config = LogConfig {
        retention_ms: None,
        // A snapshot is one record, as big as the cluster's metadata.
        max_message_bytes: MAX_METADATA_BATCH_BYTES,
        ..LogConfig::default()
    };
    let mut log = storage.open(&tp, replica, &config)?;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    Ok(log)
}

/// Every record of `log` (the `what` log, for errors), in order, with its
/// offset. A gap is refused: a metadata log that silently lost records
/// would drop topics (brokers would then delete their logs as strays).
pub(super) fn read_all(log: &dyn PartitionLog, what: &str) -> Result<Vec<(u64, Bytes)>> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let before = offset;
        for record in log.read(offset, 1 << 20)?.records() {
            let record = record?;
            if record.offset >= offset {
                offset = record.offset + 1;
                out.push((record.offset, record.value.unwrap_or_default()));
            }
        }
        if offset == before {
            return Err(Error::corrupt(format!(
                "the {what} log ends at offset {offset} but holds records up to {}",
                log.log_end_offset()
            )));
        }
    }
    Ok(out)
}

impl MetadataStore for LogMetadataStore {
    fn append(&mut self, records: &[Vec<u8>], now: Millis) -> Result<u64> {
        let base = self.append_batch(records, now)?;
        self.log.flush()?;
        if self.log.log_end_offset() - self.after_snapshot >= self.snapshot_after {
            self.snapshot(now)?;
        }
        Ok(base)
    }

    fn replay(&self) -> Result<Vec<(u64, Bytes)>> {
        read_all(&*self.log, "metadata")
    }

    fn close(self: Box<Self>) -> Result<()> {
        self.log.close()
    }

    fn committed_offset(&self) -> u64 {
        self.log.log_end_offset()
    }

    fn end_offset(&self) -> u64 {
        self.log.log_end_offset()
    }
}
