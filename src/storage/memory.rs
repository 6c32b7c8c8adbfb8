//! [`MemoryStorage`]: partition logs held in memory.
//!
//! Segments are lists of the appended batches themselves (no copy: a read hands
//! out the same `Bytes`). Closing or dropping a log hands its segments back to
//! the storage, so reopening it within the process finds every record, as a
//! file storage would; nothing survives the process.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::Mutex;

use super::checkpoint::Checkpoint;
use super::log::{LogDir, Segment, SegmentedLog};
use super::{LogConfig, PartitionLog, ReplicaId, Storage};
use crate::error::{Error, Result};
use crate::record::{RecordBatch, Records};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;

type LogKey = (ReplicaId, TopicPartition);

#[derive(Debug, Default)]
struct StoredLog {
    segments: Vec<MemorySegment>,
    checkpoint: Checkpoint,
    open: bool,
}

/// Partition logs in memory; see the [`storage` module docs](crate::storage).
///
/// Clones share the same logs.
///
/// ```
/// use ferrolog::storage::{LogConfig, MemoryStorage, Storage};
/// use ferrolog::record::RecordBatchBuilder;
/// use ferrolog::TopicPartition;
///
/// let storage = MemoryStorage::new();
/// let tp = TopicPartition::new("events", 0)?;
/// let mut log = storage.open(&tp, 0, &LogConfig::default())?;
/// let mut batch = RecordBatchBuilder::new();
/// batch.append(1_700_000_000_000, None, Some(b"hello"), &[]);
/// log.append(batch.build(), 0)?;
/// log.close()?;
/// assert_eq!(storage.open(&tp, 0, &LogConfig::default())?.log_end_offset(), 1);
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct MemoryStorage {
    clock: Arc<dyn Clock>,
    logs: Arc<Mutex<HashMap<LogKey, StoredLog>>>,
}

impl Default for MemoryStorage {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStorage {
    /// An empty storage on the system clock.
    pub fn new() -> Self {
        Self::with_clock(Arc::new(SystemClock))
    }

    /// An empty storage whose time-based policies read `clock`.
    pub fn with_clock(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            logs: Arc::default(),
        }
    }
}

impl Storage for MemoryStorage {
    fn open(
        &self,
        partition: &TopicPartition,
        replica: ReplicaId,
        config: &LogConfig,
    ) -> Result<Box<dyn PartitionLog>> {
        config.validate()?;
        let key = (replica, partition.clone());
        let (segments, checkpoint) = {
            let mut logs = self.logs.lock();
            let stored = logs.entry(key.clone()).or_default();
            if stored.open {
                return Err(Error::log_in_use(partition, replica));
            }
            stored.open = true;
            let mut segments = std::mem::take(&mut stored.segments);
            for s in &mut segments {
                s.segment_bytes = config.segment_bytes;
            }
            (segments, stored.checkpoint.clone())
        };
        let dir = MemoryDir {
            logs: Arc::clone(&self.logs),
            key,
            segment_bytes: config.segment_bytes,
        };
        let log = SegmentedLog::new(
            dir,
            config.clone(),
            Arc::clone(&self.clock),
            segments,
            checkpoint,
        )?;
        Ok(Box::new(log))
    }

    fn remove(&self, partition: &TopicPartition, replica: ReplicaId) -> Result<()> {
        let mut logs = self.logs.lock();
        let key = (replica, partition.clone());
        if logs.get(&key).is_some_and(|l| l.open) {
            return Err(Error::log_in_use(partition, replica));
        }
        logs.remove(&key);
        Ok(())
    }

    fn partitions(&self, replica: ReplicaId) -> Result<Vec<TopicPartition>> {
        let mut out: Vec<_> = self
            .logs
            .lock()
            .keys()
            .filter(|(r, _)| *r == replica)
            .map(|(_, tp)| tp.clone())
            .collect();
        out.sort();
        Ok(out)
    }
}

#[derive(Debug)]
struct MemoryDir {
    logs: Arc<Mutex<HashMap<LogKey, StoredLog>>>,
    key: LogKey,
    segment_bytes: u64,
}

impl LogDir for MemoryDir {
    type Seg = MemorySegment;

    fn create_segment(&mut self, base_offset: u64, now: Millis) -> Result<MemorySegment> {
        Ok(MemorySegment::new(base_offset, now, self.segment_bytes))
    }

    fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        if let Some(stored) = self.logs.lock().get_mut(&self.key) {
            stored.checkpoint = checkpoint.clone();
        }
        Ok(())
    }

    fn release(&mut self, segments: Vec<MemorySegment>, checkpoint: Checkpoint) {
        if let Some(stored) = self.logs.lock().get_mut(&self.key) {
            stored.segments = segments;
            stored.checkpoint = checkpoint;
            stored.open = false;
        }
    }
}

/// A segment made of the appended batches themselves.
#[derive(Debug)]
pub(crate) struct MemorySegment {
    base_offset: u64,
    next_offset: u64,
    batches: Vec<RecordBatch>,
    /// `running_max_ts[i]` = largest timestamp in `batches[..=i]`.
    running_max_ts: Vec<i64>,
    size: u64,
    created_ms: Millis,
    segment_bytes: u64,
}

impl MemorySegment {
    /// An empty segment at `base_offset`, created at `created_ms`, holding
    /// up to `segment_bytes`.
    pub(crate) fn new(base_offset: u64, created_ms: Millis, segment_bytes: u64) -> Self {
        Self {
            base_offset,
            next_offset: base_offset,
            batches: Vec::new(),
            running_max_ts: Vec::new(),
            size: 0,
            created_ms,
            segment_bytes,
        }
    }

    /// The batches held, in offset order.
    #[cfg(feature = "sim")]
    pub(crate) fn batches(&self) -> &[RecordBatch] {
        &self.batches
    }
}

impl Segment for MemorySegment {
    fn base_offset(&self) -> u64 {
        self.base_offset
    }

    fn next_offset(&self) -> u64 {
        self.next_offset
    }

    fn size(&self) -> u64 {
        self.size
    }

    fn max_timestamp(&self) -> i64 {
        self.running_max_ts.last().copied().unwrap_or(i64::MIN)
    }

    fn created_ms(&self) -> Millis {
        self.created_ms
    }

    fn has_room(&self, size: usize, last_offset: u64) -> bool {
        self.size + size as u64 <= self.segment_bytes
            && last_offset - self.base_offset <= u64::from(u32::MAX)
    }

    fn append(&mut self, batch: RecordBatch, base_offset: u64, epoch: Option<i32>) -> Result<()> {
        let batch = match epoch {
            Some(epoch) => batch.stamped(base_offset, epoch),
            None => batch,
        };
        self.size += batch.size() as u64;
        self.next_offset = batch.next_offset();
        let max = self.max_timestamp().max(batch.max_timestamp());
        self.running_max_ts.push(max);
        self.batches.push(batch);
        Ok(())
    }

    fn read(&self, offset: u64, max_bytes: usize, out: &mut Records) -> Result<bool> {
        let first = self.batches.partition_point(|b| b.last_offset() < offset);
        let Some(head) = self.batches.get(first) else {
            return Ok(false);
        };
        let mut taken = head.size();
        out.push_chunk(head.as_bytes().clone());
        for batch in &self.batches[first + 1..] {
            taken += batch.size();
            if taken > max_bytes {
                break;
            }
            out.push_chunk(batch.as_bytes().clone());
        }
        Ok(true)
    }

    fn time_hint(&self, timestamp: i64) -> u64 {
        let i = self.running_max_ts.partition_point(|&t| t < timestamp);
        self.batches
            .get(i)
            .map_or(self.next_offset, RecordBatch::base_offset)
    }

    fn truncate_to(&mut self, offset: u64) -> Result<()> {
        let keep = self.batches.partition_point(|b| b.last_offset() < offset);
        self.batches.truncate(keep);
        self.running_max_ts.truncate(keep);
        self.size = self.batches.iter().map(|b| b.size() as u64).sum();
        self.next_offset = self
            .batches
            .last()
            .map_or(self.base_offset, RecordBatch::next_offset);
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    fn replace(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        let mut max = i64::MIN;
        self.running_max_ts = batches
            .iter()
            .map(|b| {
                max = max.max(b.max_timestamp());
                max
            })
            .collect();
        self.size = batches.iter().map(|b| b.size() as u64).sum();
        self.next_offset = batches
            .last()
            .map_or(self.base_offset, RecordBatch::next_offset);
        self.batches = batches;
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    fn delete(self) -> Result<()> {
        Ok(())
    }
}
