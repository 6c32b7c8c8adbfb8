//! [`FileStorage`]: partition logs in files, in Kafka's layout.
//!
//! ```text
//! <root>/broker-<replica>/lock      flock-ed while this process has a log of the replica open
//! <root>/broker-<replica>/<topic>-<partition>/
//!     00000000000000000000.log        batches, exactly as produced
//!     00000000000000000000.index      offset → position, every index_interval_bytes
//!     00000000000000000000.timeindex  max timestamp → offset, same cadence
//!     00000000000000052311.log …      the next segment, named by its base offset
//!     partition.checkpoint            log start, recovery point, high watermark, epochs
//!     clean-shutdown                  present only while the log is closed cleanly
//!     00000000000000000000.log.cleaned  the log cleaner's output being written
//!     00000000000000000000.log.swap     the log cleaner's output, complete, being swapped in
//! ```
//!
//! # Durability
//!
//! What each call promises, in the style of Kafka's defaults:
//! - An append returns once the batch is in the operating system's page cache.
//!   It survives the process being killed (`kill -9`), not a power loss or
//!   kernel crash, until it is flushed.
//! - [`PartitionLog::flush`] fsyncs every segment written since the last flush:
//!   whatever was appended before it returned survives power loss. The
//!   checkpoint (recovery point, high watermark, epochs) is written by
//!   [`PartitionLog::maintain`] and [`PartitionLog::close`]; a stale one only
//!   makes the next recovery validate more.
//! - `flush_messages = Some(n)` flushes after every `n` records, `flush_ms =
//!   Some(t)` when an append or [`PartitionLog::maintain`] finds that `t` ms
//!   passed since the last flush. Both `None` (the default) leave flushing to the
//!   OS, as Kafka does: replication across brokers, not fsync, is what protects
//!   acknowledged records.
//! - [`PartitionLog::close`] flushes and marks the log clean.
//!
//! # Recovery
//!
//! Opening a log that was not closed cleanly validates every batch from the
//! segment holding the recovery point on (length, magic, CRC-32C, record framing,
//! increasing offsets), truncates at the first invalid byte, deletes any later
//! segment, rebuilds those segments' indexes, and then flushes. Segments below
//! the recovery point were flushed and validated before: their indexes are
//! checked (and rebuilt if missing or corrupt), and a broken batch frame in them
//! is an [`Error::CorruptLog`] naming the file and offset, never silently
//! dropped. Every read also checks the CRC of the batches it returns.
//!
//! A crash in the middle of compaction ([`PartitionLog::compact`]) is
//! recovered at open too: a leftover `.log.cleaned` file may be incomplete and
//! is deleted (the segment it was cleaning is intact); a `.log.swap` file was
//! complete and fsynced before it got that name, so it replaces its segment,
//! whose indexes are then rebuilt.
//!
//! Reads are slices of read-only memory maps, never copies: a sealed
//! segment's whole file is mapped, the active segment's file is mapped from
//! its start with room to grow (mapped again, twice as long, when appends
//! outrun the mapping), and a file a reader may hold slices of is never
//! shrunk in place — truncation writes the kept prefix to a new file and
//! renames it over. A read checks the CRC of every batch that was on disk
//! when the log was opened; batches appended through the open handle were
//! checked before they were written and are not checked again.
//!
//! Platform: Unix (uses positional reads and `mmap`).

mod index;
mod segment;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use self::segment::{FileSegment, OpenMode, finish_swap, segment_paths};
use super::checkpoint::{Checkpoint, sync_dir};
use super::log::{LogDir, Segment, SegmentedLog, first_to_recover, recover_from};
use super::{LogConfig, PartitionLog, ReplicaId, Storage};
use crate::error::{Error, Result};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;

const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
const LOCK_FILE: &str = "lock";

/// Partition logs in files under one root directory; see the
/// [`storage` module docs](crate::storage) for the layout, durability and recovery.
///
/// ```
/// use ferrolog::storage::{FileStorage, LogConfig, Storage};
/// use ferrolog::record::RecordBatchBuilder;
/// use ferrolog::TopicPartition;
///
/// let dir = tempfile::tempdir()?;
/// let storage = FileStorage::new(dir.path())?;
/// let tp = TopicPartition::new("events", 0)?;
/// let mut log = storage.open(&tp, 0, &LogConfig::default())?;
/// let mut batch = RecordBatchBuilder::new();
/// batch.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
/// log.append(batch.build(), 0)?;
/// log.close()?;
///
/// let log = storage.open(&tp, 0, &LogConfig::default())?;
/// let record = log.read(0, 1 << 20)?.records().next().unwrap()?;
/// assert_eq!(record.value.as_deref(), Some(&b"v"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct FileStorage {
    root: PathBuf,
    clock: Arc<dyn Clock>,
}

impl FileStorage {
    /// A storage rooted at `root` (created if missing), on the system clock.
    /// An empty path, or one that exists and is not a directory, is
    /// [`Error::InvalidConfig`] for `data_dir`.
    pub fn new(root: impl Into<PathBuf>) -> Result<Self> {
        Self::with_clock(root, Arc::new(SystemClock))
    }

    /// A storage rooted at `root` whose time-based policies read `clock`.
    pub fn with_clock(root: impl Into<PathBuf>, clock: Arc<dyn Clock>) -> Result<Self> {
        let root = root.into();
        if root.as_os_str().is_empty() {
            return Err(Error::config("data_dir", "is empty: give a directory"));
        }
        if root.exists() && !root.is_dir() {
            return Err(Error::config(
                "data_dir",
                format!("{} exists and is not a directory", root.display()),
            ));
        }
        std::fs::create_dir_all(&root).map_err(|e| Error::io(root.display(), e))?;
        Ok(Self { root, clock })
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory holding the log of `partition` on `replica`.
    pub fn partition_dir(&self, partition: &TopicPartition, replica: ReplicaId) -> PathBuf {
        self.replica_dir(replica).join(partition.to_string())
    }

    fn replica_dir(&self, replica: ReplicaId) -> PathBuf {
        self.root.join(format!("broker-{replica}"))
    }
}

/// The replica directories this process has logs open in: for each, the
/// exclusive advisory lock (`flock`) on its `lock` file that keeps other
/// processes out, and the partitions whose logs are open. One descriptor
/// per replica directory, not one per partition.
static OPEN_DIRS: Mutex<BTreeMap<PathBuf, OpenDir>> = Mutex::new(BTreeMap::new());

#[derive(Debug)]
struct OpenDir {
    _lock: File,
    partitions: BTreeSet<String>,
}

fn open_dirs() -> std::sync::MutexGuard<'static, BTreeMap<PathBuf, OpenDir>> {
    // The map is consistent after every statement that changes it.
    OPEN_DIRS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A partition's claim on its log while a handle has it open: a second
/// handle, from any `FileStorage` in this process or from another process,
/// gets [`Error::LogInUse`] instead of writing the same files (and shrinking
/// a file another handle has mapped).
#[derive(Debug)]
struct DirLock {
    replica_dir: PathBuf,
    partition: String,
}

impl DirLock {
    fn acquire(replica_dir: &Path, partition: &TopicPartition, replica: ReplicaId) -> Result<Self> {
        let key =
            std::fs::canonicalize(replica_dir).map_err(|e| Error::io(replica_dir.display(), e))?;
        let name = partition.to_string();
        let mut open = open_dirs();
        let dir = match open.entry(key.clone()) {
            std::collections::btree_map::Entry::Occupied(dir) => dir.into_mut(),
            std::collections::btree_map::Entry::Vacant(slot) => {
                let path = key.join(LOCK_FILE);
                let file = File::options()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&path)
                    .map_err(|e| Error::io(path.display(), e))?;
                match file.try_lock() {
                    Ok(()) => {}
                    Err(std::fs::TryLockError::WouldBlock) => {
                        return Err(Error::log_in_use(partition, replica));
                    }
                    Err(std::fs::TryLockError::Error(e)) => {
                        return Err(Error::io(path.display(), e));
                    }
                }
                slot.insert(OpenDir {
                    _lock: file,
                    partitions: BTreeSet::new(),
                })
            }
        };
        if !dir.partitions.insert(name.clone()) {
            return Err(Error::log_in_use(partition, replica));
        }
        Ok(Self {
            replica_dir: key,
            partition: name,
        })
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let mut open = open_dirs();
        if let Some(dir) = open.get_mut(&self.replica_dir) {
            dir.partitions.remove(&self.partition);
            if dir.partitions.is_empty() {
                // Closing the lock file releases the flock.
                open.remove(&self.replica_dir);
            }
        }
    }
}

impl Storage for FileStorage {
    fn open(
        &self,
        partition: &TopicPartition,
        replica: ReplicaId,
        config: &LogConfig,
    ) -> Result<Box<dyn PartitionLog>> {
        config.validate()?;
        let dir = self.partition_dir(partition, replica);
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(dir.display(), e))?;
        let lock = DirLock::acquire(&self.replica_dir(replica), partition, replica)?;
        let now = self.clock.now_ms();
        let (segments, checkpoint, recovered) = load_segments(&dir, config, now)?;
        let file_dir = FileDir {
            dir,
            config: config.clone(),
            _lock: lock,
        };
        let log = SegmentedLog::open(
            file_dir,
            config.clone(),
            Arc::clone(&self.clock),
            segments,
            checkpoint,
            recovered,
        )?;
        Ok(Box::new(log))
    }

    fn remove(&self, partition: &TopicPartition, replica: ReplicaId) -> Result<()> {
        let dir = self.partition_dir(partition, replica);
        if !dir.exists() {
            return Ok(());
        }
        let _lock = DirLock::acquire(&self.replica_dir(replica), partition, replica)?;
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(dir.display(), e)),
            _ => Ok(()),
        }
    }

    fn partitions(&self, replica: ReplicaId) -> Result<Vec<TopicPartition>> {
        let dir = self.replica_dir(replica);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io(dir.display(), e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(dir.display(), e))?;
            if let Some(tp) = entry
                .file_name()
                .to_str()
                .and_then(|name| TopicPartition::parse(name).ok())
            {
                out.push(tp);
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Opens every segment in `dir`, recovering what needs it. Returns the
/// segments, the checkpoint to start from, and whether anything was recovered.
fn load_segments(
    dir: &Path,
    config: &LogConfig,
    now: Millis,
) -> Result<(Vec<FileSegment>, Checkpoint, bool)> {
    let marker = dir.join(CLEAN_SHUTDOWN_FILE);
    let clean = marker.exists();
    let loaded = Checkpoint::load(dir)?;
    if clean {
        // From here on the log is open: a crash must trigger recovery.
        std::fs::remove_file(&marker).map_err(|e| Error::io(marker.display(), e))?;
        sync_dir(dir)?;
    }
    let clean = clean && loaded.is_some();
    let mut checkpoint = loaded.unwrap_or_default();
    let bases = list_segment_bases(dir)?;
    let first_recovered = first_to_recover(&bases, checkpoint.recovery_point, clean);
    let mut segments: Vec<FileSegment> = Vec::with_capacity(bases.len());
    let mut min_offset = 0;
    for (i, &base) in bases.iter().enumerate() {
        let mode = if i >= first_recovered {
            OpenMode::Recover
        } else {
            OpenMode::Trusted
        };
        if i == first_recovered {
            recover_from(&mut checkpoint, base);
        }
        if i > 0 && base != min_offset {
            let path = segment_paths(dir, base)[0].clone();
            return Err(Error::CorruptLog {
                path,
                offset: base,
                reason: format!(
                    "segment does not continue the previous one, which ends at {min_offset} \
                     (a segment file is missing or overlaps)"
                ),
            });
        }
        let opened = FileSegment::open(dir, base, config, now, mode, min_offset)?;
        for (epoch, offset) in opened.epochs {
            checkpoint.epochs.assign(epoch, offset);
        }
        min_offset = opened.segment.next_offset();
        segments.push(opened.segment);
        if opened.truncated {
            for &later in &bases[i + 1..] {
                for path in segment_paths(dir, later) {
                    remove_if_exists(&path)?;
                }
            }
            break;
        }
    }
    let last = segments.len().saturating_sub(1);
    for (i, segment) in segments.iter_mut().enumerate() {
        segment.set_active(i == last)?;
    }
    let recovered = first_recovered < bases.len();
    Ok((segments, checkpoint, recovered))
}

/// The base offset a file name starts with, if it is one of ours: Kafka's 20
/// digits, at most `i64::MAX`. Returns it with the rest of the name after the
/// first dot (`log`, `index`, `log.swap`, …).
fn parse_segment_name(name: &str) -> Option<(u64, &str)> {
    let (stem, ext) = name.split_once('.')?;
    let base = stem
        .parse::<u64>()
        .ok()
        .filter(|&b| stem.len() == 20 && b <= i64::MAX as u64)?;
    Some((base, ext))
}

/// Finishes or rolls back what a crash interrupted in the log cleaner: a
/// `.log.cleaned` file may be incomplete and is deleted (the old segment is
/// whole); a `.log.swap` file is complete and durable and replaces its
/// segment ([`finish_swap`]).
fn finish_interrupted_cleaning(dir: &Path) -> Result<()> {
    let io = |e| Error::io(dir.display(), e);
    let mut swaps = Vec::new();
    let mut cleaned = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        match parse_segment_name(name) {
            Some((base, "log.swap")) => swaps.push(base),
            Some((_, "log.cleaned")) => cleaned.push(path),
            _ => {}
        }
    }
    for path in &cleaned {
        remove_if_exists(path)?;
    }
    for base in swaps {
        finish_swap(dir, base)?;
    }
    if !cleaned.is_empty() {
        sync_dir(dir)?;
    }
    Ok(())
}

/// Base offsets of the `.log` files in `dir`, ascending; removes leftovers of
/// interrupted operations (`*.tmp`, index files without a log) and finishes
/// interrupted cleaning.
fn list_segment_bases(dir: &Path) -> Result<Vec<u64>> {
    finish_interrupted_cleaning(dir)?;
    let io = |e| Error::io(dir.display(), e);
    let mut logs = Vec::new();
    let mut others = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        if name.ends_with(".tmp") {
            remove_if_exists(&path)?;
            continue;
        }
        // Kafka's names: 20 digits, at most i64::MAX; anything else is not ours.
        let Some((base, ext)) = parse_segment_name(&name) else {
            continue;
        };
        match ext {
            "log" => logs.push(base),
            "index" | "timeindex" => others.push((base, path)),
            _ => {}
        }
    }
    logs.sort_unstable();
    for (base, path) in others {
        if logs.binary_search(&base).is_err() {
            remove_if_exists(&path)?;
        }
    }
    Ok(logs)
}

/// Deletes a file; one that is already gone is not an error.
pub(crate) fn remove_if_exists(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(path.display(), e)),
        _ => Ok(()),
    }
}

#[derive(Debug)]
struct FileDir {
    dir: PathBuf,
    config: LogConfig,
    _lock: DirLock,
}

impl LogDir for FileDir {
    type Seg = FileSegment;

    fn create_segment(&mut self, base_offset: u64, now: Millis) -> Result<FileSegment> {
        FileSegment::create(&self.dir, base_offset, &self.config, now)
    }

    fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()> {
        checkpoint.store(&self.dir)
    }

    fn release(&mut self, segments: Vec<FileSegment>, _checkpoint: Checkpoint) {
        drop(segments);
    }

    fn sync(&mut self) -> Result<()> {
        sync_dir(&self.dir)
    }

    fn mark_clean(&mut self) -> Result<()> {
        let marker = self.dir.join(CLEAN_SHUTDOWN_FILE);
        std::fs::File::create(&marker)
            .and_then(|f| f.sync_all())
            .map_err(|e| Error::io(marker.display(), e))?;
        sync_dir(&self.dir)
    }
}
