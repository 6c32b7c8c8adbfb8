//! Simulated storage: the real segmented log over segments whose bytes go
//! through a simulated page cache, with power losses and disk faults.
//!
//! - **Writes land in the page cache.** What a segment holds is what reads
//!   see; a flush (fsync) makes it durable.
//! - **A process crash keeps the page cache** (the operating system still
//!   has it): a broker that crashes and restarts finds every write, but only
//!   the checkpoint it last stored, so it recovers from its recovery point
//!   exactly as after `kill -9` on the file storage.
//! - **A power loss keeps the durable bytes and a random part of the rest**:
//!   per segment, what was flushed plus a random prefix of what was written
//!   since; the write at the cut may be torn (cut short, or whole-length with
//!   its tail zeroed), and a truncation not yet flushed may come undone.
//! - **Recovery** at the next open, as the file storage does it: every batch
//!   from the segment holding the recovery point on is validated (framing,
//!   CRC), the log is cut at the first bad one (later segments go), and the
//!   leader epochs are re-derived from the batches kept.
//! - **Checkpoints and the clean-shutdown mark are atomic and durable** when
//!   stored (the file storage writes a temporary file, fsyncs and renames).
//!   Creating and deleting a segment is durable at once: the model does not
//!   split the directory's own fsync from the file's.
//! - **Disk faults per broker**: while a disk fails, each append or fsync
//!   fails with a chance (an I/O error); a full disk refuses appends past
//!   the space left. Either takes the log offline, as any I/O error does.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;

use super::rng::SimRng;
use crate::error::{Error, Result};
use crate::record::{RecordBatch, Records};
use crate::storage::{
    Checkpoint, LogConfig, LogDir, MemorySegment, PartitionLog, ReplicaId, Segment, SegmentedLog,
    Storage, first_to_recover, recover_from,
};
use crate::time::{Clock, Millis};
use crate::topic::TopicPartition;

type LogKey = (ReplicaId, TopicPartition);

/// One segment file.
#[derive(Debug, Default)]
struct SegmentFile {
    /// What the page cache held when its log was last dropped.
    cached: Vec<RecordBatch>,
    /// What is on the disk.
    durable: Vec<RecordBatch>,
    /// A torn write after the durable batches, left by a power loss.
    torn: Option<Bytes>,
}

/// One log's files.
#[derive(Debug, Default)]
struct LogFiles {
    segments: BTreeMap<u64, SegmentFile>,
    checkpoint: Checkpoint,
    clean: bool,
    open: bool,
}

/// The faults of one broker's disk.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct DiskFaults {
    /// Chance (per million) that an append or an fsync fails.
    pub error_per_million: u32,
    /// Bytes appends may still take; past it they fail as a full disk.
    pub space_left: Option<u64>,
}

#[derive(Debug)]
struct Disk {
    logs: BTreeMap<LogKey, LogFiles>,
    faults: BTreeMap<ReplicaId, DiskFaults>,
    rng: SimRng,
}

impl Disk {
    /// Whether a write of `size` bytes (0: an fsync) by `replica` fails.
    fn fault(&mut self, replica: ReplicaId, size: u64) -> Result<()> {
        let Some(faults) = self.faults.get_mut(&replica) else {
            return Ok(());
        };
        if faults.error_per_million > 0 && self.rng.chance(faults.error_per_million) {
            let what = if size == 0 { "fsync" } else { "write" };
            return Err(Error::io(
                format!("simulated disk of broker {replica}"),
                std::io::Error::other(format!("injected {what} error")),
            ));
        }
        if let Some(left) = &mut faults.space_left {
            if size > *left {
                return Err(Error::io(
                    format!("simulated disk of broker {replica}"),
                    std::io::Error::new(std::io::ErrorKind::StorageFull, "no space left on device"),
                ));
            }
            *left -= size;
        }
        Ok(())
    }
}

/// The simulated disks of every node, shared by their logs: a
/// [`Storage`] with injectable disk faults and power losses, for the
/// simulator and for tests of what an application does when a disk fails
/// (`Cluster::builder().storage(sim_storage.clone())`).
///
/// ```
/// use std::sync::Arc;
/// use ferrolog::sim::storage::{DiskFaults, SimStorage};
/// use ferrolog::{Cluster, SystemClock};
/// let storage = SimStorage::new(Arc::new(SystemClock), 7);
/// let cluster = Cluster::builder().storage(storage.clone()).build()?;
/// storage.set_faults(0, DiskFaults { error_per_million: 1_000_000, space_left: None });
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct SimStorage {
    clock: Arc<dyn Clock>,
    disk: Arc<Mutex<Disk>>,
}

impl SimStorage {
    /// Empty disks; power losses and faults draw from `seed`.
    pub fn new(clock: Arc<dyn Clock>, seed: u64) -> Self {
        Self {
            clock,
            disk: Arc::new(Mutex::new(Disk {
                logs: BTreeMap::new(),
                faults: BTreeMap::new(),
                rng: SimRng::new(seed),
            })),
        }
    }

    /// Sets (or with the default, clears) the faults of `replica`'s disk.
    pub fn set_faults(&self, replica: ReplicaId, faults: DiskFaults) {
        let mut disk = self.disk.lock();
        if faults == DiskFaults::default() {
            disk.faults.remove(&replica);
        } else {
            disk.faults.insert(replica, faults);
        }
    }

    /// Clears every disk fault.
    pub fn clear_faults(&self) {
        self.disk.lock().faults.clear();
    }

    /// The power of `replica`'s machine fails. Call it once the node has
    /// stopped (its logs dropped): each segment keeps its durable batches
    /// and a random part of the rest, maybe with a torn write at the cut.
    /// Returns how many segments lost something.
    pub fn power_loss(&self, replica: ReplicaId) -> usize {
        let mut disk = self.disk.lock();
        let Disk { logs, rng, .. } = &mut *disk;
        let mut lost = 0;
        for ((r, _), log) in logs.iter_mut() {
            if *r != replica || log.open {
                continue;
            }
            for file in log.segments.values_mut() {
                if power_loss(file, rng) {
                    lost += 1;
                }
            }
        }
        lost
    }
}

/// What one segment keeps through a power loss; true if it lost anything.
fn power_loss(file: &mut SegmentFile, rng: &mut SimRng) -> bool {
    let SegmentFile {
        cached, durable, ..
    } = file;
    let common = cached
        .iter()
        .zip(durable.iter())
        .take_while(|(a, b)| a == b)
        .count();
    let mut kept: Vec<RecordBatch> = cached[..common].to_vec();
    let mut torn = None;
    if durable.len() > common && (cached.len() == common || rng.chance(500_000)) {
        // An unflushed truncation (and what followed it) is undone.
        kept = durable.clone();
    } else if cached.len() > common {
        let extra = cached.len() - common;
        let keep = rng.below(extra as u64 + 1) as usize;
        kept.extend_from_slice(&cached[common..common + keep]);
        if let Some(next) = cached.get(common + keep)
            && rng.chance(500_000)
        {
            torn = Some(tear(next.as_bytes(), rng));
        }
    }
    let changed = kept != *cached || torn.is_some();
    *cached = kept.clone();
    *durable = kept;
    file.torn = torn;
    changed
}

/// A write of `bytes` cut by a power loss: a prefix, or the whole length
/// with its tail zeroed (the pages after the cut never reached the disk).
fn tear(bytes: &Bytes, rng: &mut SimRng) -> Bytes {
    let len = bytes.len() as u64;
    let cut = rng.between(1, len.saturating_sub(1).max(1)) as usize;
    if rng.chance(500_000) {
        bytes.slice(..cut)
    } else {
        let mut torn = BytesMut::from(&bytes[..]);
        torn[cut..].fill(0);
        torn.freeze()
    }
}

impl Storage for SimStorage {
    fn open(
        &self,
        partition: &TopicPartition,
        replica: ReplicaId,
        config: &LogConfig,
    ) -> Result<Box<dyn PartitionLog>> {
        config.validate()?;
        let key = (replica, partition.clone());
        let now = self.clock.now_ms();
        let (segments, checkpoint, recovered) = {
            let mut disk = self.disk.lock();
            let log = disk.logs.entry(key.clone()).or_default();
            if log.open {
                return Err(Error::log_in_use(partition, replica));
            }
            log.open = true;
            let clean = std::mem::take(&mut log.clean);
            load(&self.disk, &key, log, clean, config, now)
        };
        let dir = SimDir {
            disk: Arc::clone(&self.disk),
            key,
            segment_bytes: config.segment_bytes,
        };
        let log = SegmentedLog::open(
            dir,
            config.clone(),
            Arc::clone(&self.clock),
            segments,
            checkpoint,
            recovered,
        )?;
        Ok(Box::new(log))
    }

    fn remove(&self, partition: &TopicPartition, replica: ReplicaId) -> Result<()> {
        let mut disk = self.disk.lock();
        let key = (replica, partition.clone());
        if disk.logs.get(&key).is_some_and(|l| l.open) {
            return Err(Error::log_in_use(partition, replica));
        }
        disk.logs.remove(&key);
        Ok(())
    }

    fn partitions(&self, replica: ReplicaId) -> Result<Vec<TopicPartition>> {
        Ok(self
            .disk
            .lock()
            .logs
            .keys()
            .filter(|(r, _)| *r == replica)
            .map(|(_, tp)| tp.clone())
            .collect())
    }
}

/// Opens a log's segments, recovering them unless it was closed cleanly:
/// from the segment holding the recovery point on, batches are validated,
/// the log is cut at the first bad one or at a gap, and epochs are
/// re-derived. Returns the segments, the checkpoint to start from, and
/// whether anything was recovered.
fn load(
    disk: &Arc<Mutex<Disk>>,
    key: &LogKey,
    log: &mut LogFiles,
    clean: bool,
    config: &LogConfig,
    now: Millis,
) -> (Vec<SimSegment>, Checkpoint, bool) {
    let mut checkpoint = log.checkpoint.clone();
    let bases: Vec<u64> = log.segments.keys().copied().collect();
    let first_recovered = first_to_recover(&bases, checkpoint.recovery_point, clean);
    let mut segments = Vec::with_capacity(bases.len());
    let mut cut_after = None;
    for (i, &base) in bases.iter().enumerate() {
        let file = log.segments.get_mut(&base).expect("listed");
        let mut segment = MemorySegment::new(base, now, config.segment_bytes);
        if i < first_recovered {
            for batch in &file.cached {
                let _ = segment.append(batch.clone(), batch.base_offset(), None);
            }
        } else {
            if i == first_recovered {
                recover_from(&mut checkpoint, base);
            }
            let torn = file.torn.take().map(RecordBatch::from_bytes);
            let mut intact = true;
            for batch in file.cached.iter().cloned().map(Ok).chain(torn) {
                let valid = batch.and_then(|b| b.validate().map(|()| b));
                match valid {
                    Ok(b) if b.base_offset() == segment.next_offset() => {
                        checkpoint
                            .epochs
                            .assign(b.partition_leader_epoch(), b.base_offset());
                        let _ = segment.append(b.clone(), b.base_offset(), None);
                    }
                    _ => {
                        intact = false;
                        break;
                    }
                }
            }
            let next_base = bases.get(i + 1).copied();
            if !intact || next_base.is_some_and(|n| n != segment.next_offset()) {
                file.cached = segment.batches().to_vec();
                file.durable = file.cached.clone();
                cut_after = Some(base);
            }
        }
        segments.push(SimSegment {
            view: segment,
            durable_prefix: 0,
            disk: Arc::clone(disk),
            key: key.clone(),
        });
        if cut_after.is_some() {
            break;
        }
    }
    if let Some(base) = cut_after {
        log.segments.retain(|&b, _| b <= base);
    }
    for segment in &mut segments {
        // What was read back is what the disk holds.
        segment.durable_prefix = segment.view.batches().len();
    }
    (segments, checkpoint, first_recovered < bases.len())
}

/// Where a log's segments and checkpoint live on the simulated disk.
#[derive(Debug)]
struct SimDir {
    disk: Arc<Mutex<Disk>>,
    key: LogKey,
    segment_bytes: u64,
}

impl LogDir for SimDir {
    type Seg = SimSegment;

    fn create_segment(&mut self, base_offset: u64, now: Millis) -> Result<SimSegment> {
        let mut disk = self.disk.lock();
        if let Some(log) = disk.logs.get_mut(&self.key) {
            log.segments.insert(base_offset, SegmentFile::default());
        }
        Ok(SimSegment {
            view: MemorySegment::new(base_offset, now, self.segment_bytes),
            durable_prefix: 0,
            disk: Arc::clone(&self.disk),
            key: self.key.clone(),
        })
    }

    fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        let mut disk = self.disk.lock();
        disk.fault(self.key.0, 0)?;
        if let Some(log) = disk.logs.get_mut(&self.key) {
            log.checkpoint = checkpoint.clone();
        }
        Ok(())
    }

    fn release(&mut self, segments: Vec<SimSegment>, _checkpoint: Checkpoint) {
        // Only what was stored counts: the checkpoint in memory is lost.
        let mut disk = self.disk.lock();
        let Some(log) = disk.logs.get_mut(&self.key) else {
            return;
        };
        for segment in segments {
            if let Some(file) = log.segments.get_mut(&segment.view.base_offset()) {
                file.cached = segment.view.batches().to_vec();
            }
        }
        log.open = false;
    }

    fn mark_clean(&mut self) -> Result<()> {
        if let Some(log) = self.disk.lock().logs.get_mut(&self.key) {
            log.clean = true;
        }
        Ok(())
    }
}

/// A segment: its batches as the page cache holds them, and how many of
/// the first of them the disk holds too.
#[derive(Debug)]
pub(crate) struct SimSegment {
    view: MemorySegment,
    durable_prefix: usize,
    disk: Arc<Mutex<Disk>>,
    key: LogKey,
}

impl Segment for SimSegment {
    fn base_offset(&self) -> u64 {
        self.view.base_offset()
    }

    fn next_offset(&self) -> u64 {
        self.view.next_offset()
    }

    fn size(&self) -> u64 {
        self.view.size()
    }

    fn max_timestamp(&self) -> i64 {
        self.view.max_timestamp()
    }

    fn created_ms(&self) -> Millis {
        self.view.created_ms()
    }

    fn has_room(&self, size: usize, last_offset: u64) -> bool {
        self.view.has_room(size, last_offset)
    }

    fn append(&mut self, batch: RecordBatch, base_offset: u64, epoch: Option<i32>) -> Result<()> {
        self.disk.lock().fault(self.key.0, batch.size() as u64)?;
        self.view.append(batch, base_offset, epoch)
    }

    fn read(&self, offset: u64, max_bytes: usize, out: &mut Records) -> Result<bool> {
        self.view.read(offset, max_bytes, out)
    }

    fn time_hint(&self, timestamp: i64) -> u64 {
        self.view.time_hint(timestamp)
    }

    fn truncate_to(&mut self, offset: u64) -> Result<()> {
        self.view.truncate_to(offset)?;
        self.durable_prefix = self.durable_prefix.min(self.view.batches().len());
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        let mut disk = self.disk.lock();
        disk.fault(self.key.0, 0)?;
        let batches = self.view.batches();
        if let Some(file) = disk
            .logs
            .get_mut(&self.key)
            .and_then(|log| log.segments.get_mut(&self.view.base_offset()))
        {
            file.durable.truncate(self.durable_prefix);
            file.durable
                .extend_from_slice(&batches[self.durable_prefix.min(batches.len())..]);
        }
        self.durable_prefix = batches.len();
        Ok(())
    }

    fn replace(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        // Durable and atomic when it returns, as the trait asks.
        self.view.replace(batches)?;
        self.durable_prefix = 0;
        self.flush()
    }

    fn delete(self) -> Result<()> {
        if let Some(log) = self.disk.lock().logs.get_mut(&self.key) {
            log.segments.remove(&self.view.base_offset());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordBatchBuilder;
    use crate::time::ManualClock;
    use proptest::prelude::*;

    fn storage(seed: u64) -> SimStorage {
        SimStorage::new(Arc::new(ManualClock::new(1_000)), seed)
    }

    fn tp() -> TopicPartition {
        TopicPartition::new("t", 0).expect("name")
    }

    fn batch(value: u64) -> RecordBatch {
        let mut b = RecordBatchBuilder::new();
        b.append(1_000, None, Some(&value.to_be_bytes()), &[]);
        b.build()
    }

    /// The values of the records in `log`, from offset 0.
    fn values(log: &dyn PartitionLog) -> Vec<u64> {
        let mut out = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let records = log.read(offset, 1 << 20).expect("read");
            for batch in records.batches() {
                let batch = batch.expect("batch");
                for record in batch.records() {
                    let value = record.expect("record").value.expect("value");
                    out.push(u64::from_be_bytes(value[..8].try_into().expect("8 bytes")));
                }
                offset = batch.next_offset();
            }
        }
        out
    }

    proptest! {
        /// Whatever a power loss keeps is what was flushed and then a
        /// prefix of what followed, every batch intact, and the log takes
        /// appends again after it.
        #[test]
        fn a_power_loss_keeps_the_flushed_records_and_a_prefix_of_the_rest(
            seed in any::<u64>(),
            appends in 1u64..40,
            flush_after in proptest::collection::vec(any::<bool>(), 40),
        ) {
            let storage = storage(seed);
            let config = LogConfig { segment_bytes: 2_048, index_interval_bytes: 512, ..LogConfig::default() };
            let mut log = storage.open(&tp(), 1, &config).expect("open");
            let mut flushed = 0;
            for value in 0..appends {
                log.append(batch(value), 0).expect("append");
                if flush_after[value as usize] {
                    log.flush().expect("flush");
                    flushed = value + 1;
                }
            }
            drop(log);
            storage.power_loss(1);
            let mut log = storage.open(&tp(), 1, &config).expect("recovered");
            let kept = values(&*log);
            prop_assert!(kept.len() as u64 >= flushed, "kept {kept:?}, flushed {flushed}");
            prop_assert_eq!(&kept, &(0..kept.len() as u64).collect::<Vec<_>>());
            prop_assert_eq!(log.log_end_offset(), kept.len() as u64);
            log.append(batch(1_000), 0).expect("appends again");
            prop_assert_eq!(log.log_end_offset(), kept.len() as u64 + 1);
        }
    }

    #[test]
    fn a_process_crash_keeps_every_write_and_recovers_the_epochs() {
        let storage = storage(1);
        let config = LogConfig::default();
        let mut log = storage.open(&tp(), 1, &config).expect("open");
        log.append(batch(0), 1).expect("append");
        log.append(batch(1), 1).expect("append");
        log.append(batch(2), 3).expect("append");
        // Dropped without a flush or a checkpoint: a crash of the process.
        drop(log);
        let log = storage.open(&tp(), 1, &config).expect("recovered");
        assert_eq!(values(&*log), [0, 1, 2]);
        assert_eq!(
            log.end_offset_for_epoch(1),
            Some((1, 2)),
            "epoch 3 starts at 2"
        );
        assert_eq!(log.latest_epoch(), Some(3));
    }

    #[test]
    fn a_torn_write_is_cut_off_at_recovery() {
        for whole_length in [false, true] {
            let storage = storage(2);
            let config = LogConfig::default();
            let mut log = storage.open(&tp(), 1, &config).expect("open");
            log.append(batch(0), 0).expect("append");
            log.flush().expect("flush");
            log.append(batch(1), 0).expect("append");
            drop(log);
            {
                // The power fails in the middle of writing the second batch.
                let mut disk = storage.disk.lock();
                let file = disk
                    .logs
                    .get_mut(&(1, tp()))
                    .and_then(|l| l.segments.get_mut(&0))
                    .expect("segment");
                let second = file.cached[1].as_bytes().clone();
                file.cached.truncate(1);
                file.durable.truncate(1);
                let cut = second.len() / 2;
                file.torn = Some(if whole_length {
                    let mut torn = BytesMut::from(&second[..]);
                    torn[cut..].fill(0);
                    torn.freeze()
                } else {
                    second.slice(..cut)
                });
            }
            let mut log = storage.open(&tp(), 1, &config).expect("recovered");
            assert_eq!(values(&*log), [0], "the torn batch is gone");
            log.append(batch(7), 0).expect("append after recovery");
            assert_eq!(values(&*log), [0, 7]);
        }
    }

    #[test]
    fn a_full_or_failing_disk_takes_the_log_offline() {
        let storage = storage(3);
        let config = LogConfig::default();
        let mut log = storage.open(&tp(), 1, &config).expect("open");
        log.append(batch(0), 0).expect("append");
        storage.set_faults(
            1,
            DiskFaults {
                error_per_million: 0,
                space_left: Some(10),
            },
        );
        let full = log.append(batch(1), 0).expect_err("no space");
        assert!(full.to_string().contains("no space left"), "{full}");
        assert!(log.offline().is_some());
        assert!(matches!(
            log.append(batch(2), 0),
            Err(Error::LogOffline { .. })
        ));
        drop(log);
        storage.clear_faults();
        let log = storage
            .open(&tp(), 1, &config)
            .expect("reopened on a repaired disk");
        assert_eq!(values(&*log), [0]);
        assert!(log.offline().is_none());

        let failing = storage.clone();
        failing.set_faults(
            1,
            DiskFaults {
                error_per_million: 1_000_000,
                space_left: None,
            },
        );
        let mut log = log;
        let error = log.append(batch(1), 0).expect_err("the write fails");
        assert!(
            error.to_string().contains("injected write error"),
            "{error}"
        );
        assert!(log.offline().is_some());
    }
}
