//! One on-disk segment: `<base>.log` with its `.index` and `.timeindex`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use memmap2::Mmap;

use super::index::{MmapIndex, OffsetEntry, TimeEntry};
use super::remove_if_exists;
use crate::error::{Error, Result};
use crate::record::{BATCH_HEADER_LEN, RecordBatch, Records, batch_size_at};
use crate::storage::LogConfig;
use crate::time::Millis;

/// Bytes of a batch header needed to walk the log: base offset, length,
/// leader epoch, magic, CRC, attributes, last offset delta, first and max
/// timestamp.
const WALK_HEADER: usize = 43;
/// Kafka's default `segment.index.bytes`: the most an index file may take.
const MAX_INDEX_BYTES: u64 = 10 * 1024 * 1024;

/// The file names of the segment starting at `base`.
pub(crate) fn segment_paths(dir: &Path, base: u64) -> [PathBuf; 3] {
    let stem = format!("{base:020}");
    [
        dir.join(format!("{stem}.log")),
        dir.join(format!("{stem}.index")),
        dir.join(format!("{stem}.timeindex")),
    ]
}

/// Where the log cleaner writes a segment's new contents (`<base>.log.cleaned`);
/// a file left there by a crash is incomplete and deleted at open.
pub(crate) fn cleaned_path(log: &Path) -> PathBuf {
    log.with_extension("log.cleaned")
}

/// The cleaned contents once complete and durable (`<base>.log.swap`); a file
/// left there by a crash is swapped in at open ([`finish_swap`]).
pub(crate) fn swap_path(log: &Path) -> PathBuf {
    log.with_extension("log.swap")
}

/// Swaps a segment's `.log.swap` file in: its indexes (which describe the old
/// contents) are deleted, the swap file renamed over the log, the directory
/// fsynced. Each step can be redone after a crash; the indexes are rebuilt when
/// the segment is opened.
pub(crate) fn finish_swap(dir: &Path, base: u64) -> Result<()> {
    let [log, index, timeindex] = segment_paths(dir, base);
    remove_if_exists(&index)?;
    remove_if_exists(&timeindex)?;
    let swap = swap_path(&log);
    std::fs::rename(&swap, &log).map_err(|e| Error::io(swap.display(), e))?;
    crate::storage::checkpoint::sync_dir(dir)
}

/// Index capacity in entries for a config: enough for a full segment.
fn index_capacity(config: &LogConfig, entry_size: usize) -> usize {
    let wanted = config.segment_bytes / config.index_interval_bytes + 2;
    wanted.min(MAX_INDEX_BYTES / entry_size as u64) as usize
}

/// The header fields a walk over the log needs.
#[derive(Debug, Clone, Copy)]
struct BatchHead {
    base_offset: u64,
    size: usize,
    last_offset: u64,
    max_timestamp: i64,
}

impl BatchHead {
    /// Parses the first [`WALK_HEADER`] bytes of a batch; `None` if they cannot
    /// be a v2 batch.
    fn parse(buf: &[u8]) -> Option<Self> {
        if buf.len() < WALK_HEADER || buf[16] != 2 {
            return None;
        }
        let size = batch_size_at(buf)?;
        let base = i64::from_be_bytes(buf[..8].try_into().ok()?);
        let delta = i32::from_be_bytes(buf[23..27].try_into().ok()?);
        if size < BATCH_HEADER_LEN || base < 0 || delta < 0 {
            return None;
        }
        Some(BatchHead {
            base_offset: base as u64,
            size,
            last_offset: base as u64 + delta as u64,
            max_timestamp: i64::from_be_bytes(buf[35..43].try_into().ok()?),
        })
    }
}

/// A segment's `.log` file: its open handle, or one opened for a call.
enum FileRef<'a> {
    Open(&'a File),
    Reopened(File),
}

impl std::ops::Deref for FileRef<'_> {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            FileRef::Open(file) => file,
            FileRef::Reopened(file) => file,
        }
    }
}

/// How a segment is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenMode {
    /// Below the recovery point: trust the data, check the indexes.
    Trusted,
    /// At or above the recovery point: validate every batch and truncate at
    /// the first bad byte.
    Recover,
}

/// What opening a segment found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) segment: FileSegment,
    /// (epoch, base offset) of each batch read during recovery.
    pub(crate) epochs: Vec<(i32, u64)>,
    /// Whether recovery cut bytes off the end.
    pub(crate) truncated: bool,
}

/// The smallest mapping of an active segment: it grows by doubling, so a
/// segment is mapped again at most a dozen times as it fills.
const MIN_ACTIVE_MAP: u64 = 1 << 20;

/// Bounds on how far ahead of its end an active segment reserves blocks.
const MIN_RESERVATION: u64 = 64 << 10;
const MAX_RESERVATION: u64 = 8 << 20;

/// Allocates the file's blocks in `from..from + len` without changing its
/// length. False if the file system cannot (or is not Linux's).
#[cfg(target_os = "linux")]
fn reserve_blocks(file: &File, from: u64, len: u64) -> bool {
    use std::os::fd::AsRawFd;
    let (Ok(from), Ok(len)) = (i64::try_from(from), i64::try_from(len)) else {
        return false;
    };
    // SAFETY: `fallocate` reads only its integer arguments; the descriptor
    // belongs to `file`, which outlives the call.
    unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, from, len) == 0 }
}

#[cfg(not(target_os = "linux"))]
fn reserve_blocks(_file: &File, _from: u64, _len: u64) -> bool {
    false
}

/// The bytes of disk blocks a file holds (which, after a reservation, may
/// run past its length): `len` when they are no more than its length
/// rounded up to whole 4 KiB blocks.
fn allocated_bytes(meta: &std::fs::Metadata, len: u64) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let allocated = meta.blocks().saturating_mul(512);
    if allocated > len.div_ceil(4096).saturating_mul(4096) {
        allocated
    } else {
        len
    }
}

/// A segment of the file storage.
///
/// Descriptors: only the active segment keeps its `.log` file open (for
/// appends). A sealed segment is read through a mapping of its file and
/// the file is closed; it is opened again only to be flushed, truncated or
/// made active. Index files are closed once mapped.
#[derive(Debug)]
pub(crate) struct FileSegment {
    base_offset: u64,
    log_path: PathBuf,
    /// The open `.log` file: always for the active segment, `None` once sealed.
    file: Option<File>,
    size: u64,
    next_offset: u64,
    max_timestamp: i64,
    created_ms: Millis,
    offset_index: MmapIndex<OffsetEntry>,
    time_index: MmapIndex<TimeEntry>,
    bytes_since_index: u64,
    index_interval: u64,
    segment_bytes: u64,
    offset_capacity: usize,
    time_capacity: usize,
    /// The whole log file, memory-mapped, once the segment is sealed.
    sealed: Option<Bytes>,
    /// The active segment's file mapped from its start, at least `size`
    /// bytes long and possibly longer than the file (only bytes below
    /// `size`, which are written, are ever read through it): reads are
    /// slices of it, with no copy. `None` if mapping failed (reads fall
    /// back to `pread`). While it lives the file is never shrunk in place.
    active_map: Option<Bytes>,
    /// Bytes from here on were appended through this handle, each batch
    /// checked (CRC and framing) before it was written: reads do not check
    /// their CRC again. Bytes below were on disk when the segment was
    /// opened, and every read checks them.
    written_from: u64,
    /// The active file's disk blocks are reserved up to here (Linux
    /// `fallocate` with `FALLOC_FL_KEEP_SIZE`: the file's length stays
    /// `size`), so that appends write into allocated blocks instead of
    /// allocating them page by page; released when the segment is sealed.
    /// `u64::MAX` once the file system has refused a reservation: appends
    /// then just write.
    reserved: u64,
}

impl FileSegment {
    /// A new, empty, active segment (old files with the same name are replaced).
    pub(crate) fn create(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now: Millis,
    ) -> Result<Self> {
        let [log, index, timeindex] = segment_paths(dir, base_offset);
        // A leftover file is unlinked, never truncated: readers may still map it.
        remove_if_exists(&log)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&log)
            .map_err(|e| Error::io(log.display(), e))?;
        let offset_capacity = index_capacity(config, 8);
        let time_capacity = index_capacity(config, 12);
        Ok(Self {
            base_offset,
            log_path: log,
            file: Some(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            created_ms: now,
            offset_index: MmapIndex::create(&index, base_offset, offset_capacity)?,
            time_index: MmapIndex::create(&timeindex, base_offset, time_capacity)?,
            bytes_since_index: 0,
            index_interval: config.index_interval_bytes,
            segment_bytes: config.segment_bytes,
            offset_capacity,
            time_capacity,
            sealed: None,
            active_map: None,
            written_from: 0,
            reserved: 0,
        })
    }

    /// Opens an existing segment. `min_offset` is where the previous segment
    /// ended: no batch here may start below it.
    pub(crate) fn open(
        dir: &Path,
        base_offset: u64,
        config: &LogConfig,
        now: Millis,
        mode: OpenMode,
        min_offset: u64,
    ) -> Result<Opened> {
        let [log, index_path, time_path] = segment_paths(dir, base_offset);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&log)
            .map_err(|e| Error::io(log.display(), e))?;
        let meta = file.metadata().map_err(|e| Error::io(log.display(), e))?;
        let len = meta.len();
        let data = map_file(&file, len, &log)?;
        let offset_capacity = index_capacity(config, 8);
        let time_capacity = index_capacity(config, 12);
        let checked_indexes = match mode {
            OpenMode::Trusted => check_indexes(&index_path, &time_path, base_offset, &data)?,
            OpenMode::Recover => None,
        };
        let (offset_index, time_index, rebuild) = match checked_indexes {
            Some((offsets, times)) => (
                MmapIndex::open(&index_path, base_offset, offsets, offsets)?,
                MmapIndex::open(&time_path, base_offset, times, times)?,
                false,
            ),
            None => (
                MmapIndex::create(&index_path, base_offset, offset_capacity)?,
                MmapIndex::create(&time_path, base_offset, time_capacity)?,
                true,
            ),
        };
        let mut segment = FileSegment {
            base_offset,
            log_path: log.clone(),
            file: Some(file),
            size: 0,
            next_offset: base_offset,
            max_timestamp: i64::MIN,
            created_ms: now,
            offset_index,
            time_index,
            bytes_since_index: 0,
            index_interval: config.index_interval_bytes,
            segment_bytes: config.segment_bytes,
            offset_capacity,
            time_capacity,
            sealed: None,
            active_map: None,
            written_from: u64::MAX,
            // Blocks past the end (a reservation a crash left) are released
            // when the segment is sealed.
            reserved: allocated_bytes(&meta, len),
        };
        let mut epochs = Vec::new();
        let mut cut_at = None;
        if rebuild {
            // Walk every batch, rebuilding both indexes; in recovery also check
            // each batch's CRC and framing.
            let mut pos = 0usize;
            let mut expected = min_offset.max(base_offset);
            while pos < data.len() {
                let step = walk_one(&data, pos, expected, base_offset).and_then(|head| {
                    if mode == OpenMode::Recover {
                        let batch = RecordBatch::from_bytes(data.slice(pos..pos + head.size))
                            .and_then(|b| b.validate().map(|()| b))
                            .map_err(|e| format!("batch at byte {pos}: {e}"))?;
                        epochs.push((batch.partition_leader_epoch(), head.base_offset));
                    }
                    Ok(head)
                });
                match step {
                    Ok(head) => {
                        segment.track(head, pos as u64);
                        expected = head.last_offset + 1;
                        pos += head.size;
                    }
                    Err(_) if mode == OpenMode::Recover => {
                        cut_at = Some(pos as u64);
                        break;
                    }
                    Err(reason) => {
                        return Err(Error::CorruptLog {
                            path: log,
                            offset: expected,
                            reason,
                        });
                    }
                }
            }
            segment.size = pos as u64;
        } else {
            // Indexes are sound: walk only the tail after the last entry.
            let (mut pos, mut max_ts) = (0usize, i64::MIN);
            if let Some(last) = segment.offset_index.last() {
                pos = last.position as usize;
            }
            if let Some(last) = segment.time_index.last() {
                max_ts = last.timestamp;
            }
            let mut expected = min_offset.max(base_offset);
            if let Some(last) = segment.offset_index.last() {
                expected = expected.max(last.offset);
            }
            let tail_start = pos;
            while pos < data.len() {
                let head = walk_one(&data, pos, expected, base_offset).map_err(|reason| {
                    Error::CorruptLog {
                        path: log.clone(),
                        offset: expected,
                        reason,
                    }
                })?;
                max_ts = max_ts.max(head.max_timestamp);
                segment.next_offset = head.last_offset + 1;
                expected = head.last_offset + 1;
                pos += head.size;
            }
            segment.size = pos as u64;
            segment.max_timestamp = max_ts;
            segment.bytes_since_index = (pos - tail_start) as u64;
        }
        if let Some(cut) = cut_at {
            // A mapping of this file may live on in a reader of an earlier
            // handle: keep the old inode intact and swap in a shorter copy.
            segment.file = Some(replace_with_prefix(&log, &data[..cut as usize])?);
            segment.reserved = cut;
        }
        drop(data);
        segment.written_from = segment.size;
        Ok(Opened {
            segment,
            epochs,
            truncated: cut_at.is_some(),
        })
    }

    /// Updates index entries and counters for a batch written at `position`.
    fn track(&mut self, head: BatchHead, position: u64) {
        let at_index_point = self.bytes_since_index >= self.index_interval && position > 0;
        if at_index_point {
            self.offset_index.append(OffsetEntry {
                offset: head.base_offset,
                position: position as u32,
            });
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += head.size as u64;
        self.max_timestamp = self.max_timestamp.max(head.max_timestamp);
        self.next_offset = head.last_offset + 1;
        if at_index_point
            && self
                .time_index
                .last()
                .is_none_or(|e| self.max_timestamp > e.timestamp)
        {
            self.time_index.append(TimeEntry {
                timestamp: self.max_timestamp,
                offset: head.base_offset,
            });
        }
    }

    /// `len` bytes at `pos` (below `size`): a slice of the mapping, or read
    /// if there is none.
    fn bytes_at(&self, pos: u64, len: usize) -> Result<Bytes> {
        let start = pos as usize;
        if let Some(map) = &self.sealed {
            return Ok(map.slice(start..start + len));
        }
        if let Some(map) = &self.active_map
            && start + len <= map.len()
        {
            return Ok(map.slice(start..start + len));
        }
        let mut buf = vec![0u8; len];
        self.open_file()?
            .read_exact_at(&mut buf, pos)
            .map_err(|e| Error::io(self.log_path.display(), e))?;
        Ok(Bytes::from(buf))
    }

    /// The `.log` file: the open one, or opened again for this call (a
    /// sealed segment closed its file).
    fn open_file(&self) -> Result<FileRef<'_>> {
        match &self.file {
            Some(file) => Ok(FileRef::Open(file)),
            None => self.reopen().map(FileRef::Reopened),
        }
    }

    fn reopen(&self) -> Result<File> {
        OpenOptions::new()
            .read(true)
            .write(true)
            .open(&self.log_path)
            .map_err(|e| Error::io(self.log_path.display(), e))
    }

    /// Maps the active segment's file again if `size` grew past the
    /// mapping: to twice the size (at least 1 MiB, at most the segment's
    /// capacity). A failed mapping only makes reads copy.
    fn grow_active_map(&mut self) {
        let mapped = self.active_map.as_ref().map_or(0, |m| m.len() as u64);
        if self.size <= mapped {
            return;
        }
        let len = (self.size * 2)
            .max(MIN_ACTIVE_MAP)
            .min(self.segment_bytes.max(self.size));
        self.active_map = self
            .file
            .as_ref()
            .and_then(|file| map_range(file, len).ok());
    }

    fn head_at(&self, pos: u64) -> Result<BatchHead> {
        let corrupt = |reason: &str| Error::CorruptLog {
            path: self.log_path.clone(),
            offset: self.base_offset,
            reason: format!("{reason} at byte {pos}"),
        };
        if pos + WALK_HEADER as u64 > self.size {
            return Err(corrupt("batch header runs past the end of the segment"));
        }
        let bytes = self.bytes_at(pos, WALK_HEADER)?;
        let head = BatchHead::parse(&bytes).ok_or_else(|| corrupt("bad batch header"))?;
        if pos + head.size as u64 > self.size {
            return Err(corrupt("batch runs past the end of the segment"));
        }
        Ok(head)
    }

    /// Position and header of the first batch whose last offset is ≥ `offset`.
    fn find(&self, offset: u64) -> Result<Option<(u64, BatchHead)>> {
        let mut pos = 0;
        if let Some(entry) = self.offset_index.last_where(|e| e.offset <= offset) {
            // Trust an entry only if a batch with its offset starts there: a
            // damaged index costs a longer scan, never a wrong answer.
            let at = u64::from(entry.position);
            if self
                .head_at(at)
                .is_ok_and(|h| h.base_offset == entry.offset)
            {
                pos = at;
            }
        }
        while pos < self.size {
            let head = self.head_at(pos)?;
            if head.last_offset >= offset {
                return Ok(Some((pos, head)));
            }
            pos += head.size as u64;
        }
        Ok(None)
    }

    /// Maps the log file so reads become zero-copy, and closes it.
    /// Reserves blocks for at least `needed` bytes past the end, and ahead
    /// in proportion to the segment's size (64 KiB to 8 MiB, never past
    /// `segment_bytes`), so an idle partition reserves little.
    fn reserve(&mut self, needed: u64) {
        let Some(file) = &self.file else { return };
        let ahead = self.size.clamp(MIN_RESERVATION, MAX_RESERVATION);
        let end = (self.size + ahead)
            .min(self.segment_bytes)
            .max(self.size + needed);
        let from = self.reserved.max(self.size);
        self.reserved = if reserve_blocks(file, from, end - from) {
            end
        } else {
            u64::MAX
        };
    }

    /// Gives back the blocks reserved past the end (a same-length truncate
    /// frees them and leaves every byte below `size` as it was).
    fn release_reservation(&mut self) -> Result<()> {
        if self.reserved > self.size
            && let Some(file) = &self.file
        {
            file.set_len(self.size)
                .map_err(|e| Error::io(self.log_path.display(), e))?;
        }
        self.reserved = self.size;
        Ok(())
    }

    fn map_sealed(&mut self) -> Result<()> {
        self.release_reservation()?;
        if self.size > 0 {
            let map = map_file(&*self.open_file()?, self.size, &self.log_path)?;
            self.sealed = Some(map);
        }
        self.active_map = None;
        self.file = None;
        Ok(())
    }

    /// Marks an opened segment as the active one or as sealed.
    pub(crate) fn set_active(&mut self, active: bool) -> Result<()> {
        if active {
            self.offset_index.reopen_for_append(self.offset_capacity)?;
            self.time_index.reopen_for_append(self.time_capacity)?;
            if self.file.is_none() {
                self.file = Some(self.reopen()?);
            }
            self.sealed = None;
            self.active_map = None;
            self.grow_active_map();
            Ok(())
        } else {
            self.offset_index.resize(true)?;
            self.time_index.resize(true)?;
            self.map_sealed()
        }
    }
}

/// Atomically replaces `path` with a file holding `prefix`: written to a
/// temporary file, fsynced, renamed over, and the directory fsynced. The old
/// inode lives on for any reader that still maps it. Returns the new file.
fn replace_with_prefix(path: &Path, prefix: &[u8]) -> Result<File> {
    let tmp = path.with_extension("log.tmp");
    let io = |e| Error::io(path.display(), e);
    let mut file = File::create(&tmp).map_err(io)?;
    file.write_all(prefix).map_err(io)?;
    file.sync_all().map_err(io)?;
    drop(file);
    std::fs::rename(&tmp, path).map_err(io)?;
    if let Some(dir) = path.parent() {
        crate::storage::checkpoint::sync_dir(dir)?;
    }
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(io)
}

/// Writes `batches` to a new file at `path` and fsyncs it.
fn write_synced(path: &Path, batches: &[RecordBatch]) -> Result<()> {
    let io = |e| Error::io(path.display(), e);
    remove_if_exists(path)?;
    let file = File::create(path).map_err(io)?;
    let mut out = std::io::BufWriter::with_capacity(256 * 1024, file);
    for batch in batches {
        out.write_all(batch.as_bytes()).map_err(io)?;
    }
    let file = out.into_inner().map_err(|e| io(e.into_error()))?;
    file.sync_all().map_err(io)
}

/// The first `len` bytes of `file`'s address range, mapped read-only and
/// shared; `len` may exceed the file's length (pages past its end must then
/// never be read: callers read only written bytes).
fn map_range(file: &File, len: u64) -> std::io::Result<Bytes> {
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    // SAFETY: read-only; the active segment's file only grows while this
    // mapping lives (truncation writes a new file and renames it over), and
    // only bytes already written are sliced out of it.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file) }?;
    Ok(Bytes::from_owner(map))
}

/// Reads a file whole as `Bytes` backed by a read-only mapping.
fn map_file(file: &File, len: u64, path: &Path) -> Result<Bytes> {
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the mapping is read-only and the file is never shrunk while a
    // mapping of it lives: truncating a sealed segment writes a new file and
    // renames it over this one, leaving this inode intact for existing readers.
    let map = unsafe { Mmap::map(file) }.map_err(|e| Error::io(path.display(), e))?;
    Ok(Bytes::from_owner(map))
}

/// Reads the batch header at `pos` and checks its framing against the data and
/// the expected offsets. Errors are reasons (the caller decides what they mean).
fn walk_one(
    data: &[u8],
    pos: usize,
    expected: u64,
    base_offset: u64,
) -> std::result::Result<BatchHead, String> {
    let head = BatchHead::parse(&data[pos..])
        .ok_or_else(|| format!("no valid batch header at byte {pos}"))?;
    if pos + head.size > data.len() {
        return Err(format!("batch at byte {pos} runs past the end of the file"));
    }
    if head.base_offset != expected {
        // Offsets are dense; the base offset is not under the CRC, so this is
        // the check that catches a damaged one.
        return Err(format!(
            "batch at byte {pos} starts at offset {}, expected {expected}",
            head.base_offset
        ));
    }
    if head.last_offset - base_offset > u64::from(u32::MAX) {
        return Err(format!(
            "batch at byte {pos} is out of the segment's offset range"
        ));
    }
    Ok(head)
}

/// Validates existing index files of a trusted segment. Returns their entry
/// counts, or `None` if either must be rebuilt (missing, torn, unordered, or
/// pointing outside the log).
fn check_indexes(
    index_path: &Path,
    time_path: &Path,
    base_offset: u64,
    data: &[u8],
) -> Result<Option<(usize, usize)>> {
    let Some(offsets) = MmapIndex::<OffsetEntry>::read_entries(index_path, base_offset)? else {
        return Ok(None);
    };
    let Some(times) = MmapIndex::<TimeEntry>::read_entries(time_path, base_offset)? else {
        return Ok(None);
    };
    let ordered = offsets
        .windows(2)
        .all(|w| w[0].offset < w[1].offset && w[0].position < w[1].position)
        && times
            .windows(2)
            .all(|w| w[0].timestamp < w[1].timestamp && w[0].offset <= w[1].offset);
    let in_file = offsets
        .iter()
        .all(|e| (e.position as usize) < data.len() && e.position > 0);
    let last_matches = offsets.last().is_none_or(|e| {
        data.get(e.position as usize..)
            .and_then(BatchHead::parse)
            .is_some_and(|h| h.base_offset == e.offset)
    });
    let times_in_range = times.last().is_none_or(|t| {
        offsets
            .last()
            .is_some_and(|o| t.offset <= o.offset && t.offset >= base_offset)
    });
    if ordered && in_file && last_matches && times_in_range {
        Ok(Some((offsets.len(), times.len())))
    } else {
        Ok(None)
    }
}

impl crate::storage::log::Segment for FileSegment {
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
        self.max_timestamp
    }

    fn created_ms(&self) -> Millis {
        self.created_ms
    }

    fn has_room(&self, size: usize, last_offset: u64) -> bool {
        self.size + size as u64 <= self.segment_bytes
            && last_offset - self.base_offset <= u64::from(u32::MAX)
            && !self.offset_index.is_full()
            && !self.time_index.is_full()
    }

    fn append(&mut self, batch: RecordBatch, base_offset: u64, epoch: Option<i32>) -> Result<()> {
        // Stamping is in place when the caller handed over the only reference
        // (the usual case); one contiguous write is much cheaper than a
        // vectored write of a patched header plus the rest.
        let batch = match epoch {
            Some(epoch) => batch.stamped(base_offset, epoch),
            None => batch,
        };
        let bytes = batch.as_bytes();
        if self.size + bytes.len() as u64 > self.reserved {
            self.reserve(bytes.len() as u64);
        }
        let Some(file) = &self.file else {
            return Err(Error::io(
                self.log_path.display(),
                std::io::Error::other("append to a sealed segment"),
            ));
        };
        if let Err(e) = file.write_all_at(bytes, self.size) {
            // Drop whatever part was written so the next append lands where
            // `size` says (bytes no reader was given); if even that fails
            // the log goes offline.
            let _ = file.set_len(self.size);
            self.reserved = self.size;
            return Err(Error::io(self.log_path.display(), e));
        }
        let position = self.size;
        self.size += bytes.len() as u64;
        self.grow_active_map();
        self.track(
            BatchHead {
                base_offset,
                size: bytes.len(),
                last_offset: base_offset + batch.last_offset_delta() as u64,
                max_timestamp: batch.max_timestamp(),
            },
            position,
        );
        Ok(())
    }

    fn read(&self, offset: u64, max_bytes: usize, out: &mut Records) -> Result<bool> {
        let Some((pos, head)) = self.find(offset)? else {
            return Ok(false);
        };
        let want = (self.size - pos).min(max_bytes.max(head.size) as u64) as usize;
        let chunk = self.bytes_at(pos, want)?;
        // Cut at the last whole batch and refuse to serve a corrupt one.
        let mut cut = 0;
        let mut expected = head.base_offset;
        while cut < chunk.len() {
            let Some(size) = batch_size_at(&chunk[cut..]).filter(|&s| cut + s <= chunk.len())
            else {
                break;
            };
            // The CRC covers neither base offset nor length: check that each
            // batch continues the previous one, too. A batch this handle
            // wrote was checked before it was written.
            let checked = pos + (cut as u64) >= self.written_from;
            let batch = RecordBatch::from_bytes(chunk.slice(cut..cut + size))
                .and_then(|b| {
                    if checked {
                        Ok(b)
                    } else {
                        b.validate().map(|()| b)
                    }
                })
                .and_then(|b| {
                    if b.base_offset() == expected {
                        Ok(b)
                    } else {
                        Err(Error::corrupt(format!(
                            "batch at offset {} where {expected} was expected",
                            b.base_offset()
                        )))
                    }
                });
            match batch {
                Ok(b) => expected = b.next_offset(),
                Err(e) if cut == 0 => {
                    return Err(Error::CorruptLog {
                        path: self.log_path.clone(),
                        offset: head.base_offset,
                        reason: e.to_string(),
                    });
                }
                Err(_) => break,
            }
            cut += size;
        }
        if cut == 0 {
            return Err(Error::CorruptLog {
                path: self.log_path.clone(),
                offset: head.base_offset,
                reason: "batch framing is broken".into(),
            });
        }
        out.push_chunk(chunk.slice(..cut));
        Ok(true)
    }

    fn time_hint(&self, timestamp: i64) -> u64 {
        self.time_index
            .last_where(|e| e.timestamp < timestamp)
            .map_or(self.base_offset, |e| e.offset)
    }

    fn truncate_to(&mut self, offset: u64) -> Result<()> {
        let Some((pos, head)) = self.find(offset)? else {
            return Ok(());
        };
        let path = self.log_path.clone();
        let io = |e| Error::io(path.display(), e);
        if self.sealed.is_some() || self.active_map.is_some() {
            // Readers may hold slices of the mapping: never shrink a mapped
            // file (a page past its end would fault). Write the kept prefix
            // to a new file and rename it over; the old inode lives on for
            // those readers.
            let prefix = self.bytes_at(0, pos as usize)?;
            self.file = Some(replace_with_prefix(&path, &prefix)?);
            self.sealed = None;
            self.active_map = None;
            self.size = pos;
            self.set_active(true)?;
        } else {
            self.open_file()?.set_len(pos).map_err(io)?;
        }
        self.size = pos;
        // A shrinking truncate or a new file holds no blocks past `pos`.
        self.reserved = pos;
        self.written_from = self.written_from.min(pos);
        self.next_offset = if pos == 0 {
            self.base_offset
        } else {
            head.base_offset
        };
        self.offset_index
            .truncate_where(|e| u64::from(e.position) < pos);
        let next = self.next_offset;
        self.time_index.truncate_where(|e| e.offset < next);
        // Recompute the largest timestamp from the last time entry on.
        let (mut scan, mut max_ts) = (0u64, i64::MIN);
        if let Some(t) = self.time_index.last() {
            max_ts = t.timestamp;
            if let Some(o) = self.offset_index.last_where(|e| e.offset <= t.offset) {
                scan = u64::from(o.position);
            }
        }
        while scan < pos {
            let h = self.head_at(scan)?;
            max_ts = max_ts.max(h.max_timestamp);
            scan += h.size as u64;
        }
        self.max_timestamp = max_ts;
        self.bytes_since_index = pos
            - self
                .offset_index
                .last()
                .map_or(0, |e| u64::from(e.position));
        Ok(())
    }

    fn replace(&mut self, batches: Vec<RecordBatch>) -> Result<()> {
        // 1. The new contents go to `.cleaned` and are fsynced. A crash here
        //    leaves the old segment whole and a partial file open deletes.
        // 2. Renamed to `.swap` (directory fsynced): from here on the new
        //    contents are the segment's; open finishes the swap after a crash.
        // 3. `finish_swap`: stale indexes deleted, `.swap` renamed over the log.
        // 4. Reopened: indexes rebuilt from the new file, sealed and mapped.
        //    Readers holding slices of the old mapping keep the old inode.
        let dir = self
            .log_path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let cleaned = cleaned_path(&self.log_path);
        let written = write_synced(&cleaned, &batches);
        if written.is_err() {
            let _ = remove_if_exists(&cleaned);
        }
        written?;
        let swap = swap_path(&self.log_path);
        std::fs::rename(&cleaned, &swap).map_err(|e| Error::io(cleaned.display(), e))?;
        crate::storage::checkpoint::sync_dir(&dir)?;
        finish_swap(&dir, self.base_offset)?;
        let config = LogConfig {
            segment_bytes: self.segment_bytes,
            index_interval_bytes: self.index_interval,
            ..LogConfig::default()
        };
        let base = self.base_offset;
        let mut opened = FileSegment::open(
            &dir,
            base,
            &config,
            self.created_ms,
            OpenMode::Trusted,
            base,
        )?
        .segment;
        opened.set_active(false)?;
        *self = opened;
        Ok(())
    }

    fn seal(&mut self) -> Result<()> {
        if self.sealed.is_none() {
            self.set_active(false)?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<()> {
        self.open_file()?
            .sync_data()
            .map_err(|e| Error::io(self.log_path.display(), e))?;
        self.offset_index.flush()?;
        self.time_index.flush()
    }

    fn delete(self) -> Result<()> {
        let FileSegment {
            log_path,
            file,
            offset_index,
            time_index,
            sealed,
            active_map,
            ..
        } = self;
        drop((file, sealed, active_map));
        offset_index.delete()?;
        time_index.delete()?;
        std::fs::remove_file(&log_path).map_err(|e| Error::io(log_path.display(), e))
    }
}
