//! Memory-mapped sparse indexes of a segment.
//!
//! Both follow Kafka's files: the offset index (`.index`) holds 8-byte entries
//! (offset relative to the segment's base: u32, byte position in the `.log`:
//! u32) and the time index (`.timeindex`) 12-byte entries (timestamp: i64,
//! relative offset: u32). Entries are big-endian and strictly increasing. The
//! active segment's index files are preallocated and mapped; sealing trims them
//! to their entries. Lookups are binary searches over the mapping.

use std::fs::{File, OpenOptions};
use std::marker::PhantomData;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::error::{Error, Result};

/// Opens (creating if missing) an index file for reading and writing.
fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| Error::io(path.display(), e))
}

/// One fixed-size index entry.
pub(crate) trait IndexEntry: Copy + std::fmt::Debug {
    /// Bytes per entry on disk.
    const SIZE: usize;
    /// Writes the entry (offsets relative to `base`) into `buf`.
    fn encode(&self, base: u64, buf: &mut [u8]);
    /// Reads an entry back.
    fn decode(base: u64, buf: &[u8]) -> Self;
}

/// An offset index entry: the batch starting at `offset` is at `position`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct OffsetEntry {
    pub(crate) offset: u64,
    pub(crate) position: u32,
}

impl IndexEntry for OffsetEntry {
    const SIZE: usize = 8;
    fn encode(&self, base: u64, buf: &mut [u8]) {
        buf[..4].copy_from_slice(&((self.offset - base) as u32).to_be_bytes());
        buf[4..8].copy_from_slice(&self.position.to_be_bytes());
    }
    fn decode(base: u64, buf: &[u8]) -> Self {
        let rel = u32::from_be_bytes(buf[..4].try_into().expect("4 bytes"));
        let position = u32::from_be_bytes(buf[4..8].try_into().expect("4 bytes"));
        OffsetEntry {
            offset: base + u64::from(rel),
            position,
        }
    }
}

/// A time index entry: every record up to and including the batch starting at
/// `offset` has a timestamp ≤ `timestamp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimeEntry {
    pub(crate) timestamp: i64,
    pub(crate) offset: u64,
}

impl IndexEntry for TimeEntry {
    const SIZE: usize = 12;
    fn encode(&self, base: u64, buf: &mut [u8]) {
        buf[..8].copy_from_slice(&self.timestamp.to_be_bytes());
        buf[8..12].copy_from_slice(&((self.offset - base) as u32).to_be_bytes());
    }
    fn decode(base: u64, buf: &[u8]) -> Self {
        let timestamp = i64::from_be_bytes(buf[..8].try_into().expect("8 bytes"));
        let rel = u32::from_be_bytes(buf[8..12].try_into().expect("4 bytes"));
        TimeEntry {
            timestamp,
            offset: base + u64::from(rel),
        }
    }
}

/// A memory-mapped index file of `E` entries. The file is closed once
/// mapped (the mapping keeps it reachable) and opened again only to be
/// resized: an index costs no file descriptor.
#[derive(Debug)]
pub(crate) struct MmapIndex<E: IndexEntry> {
    path: PathBuf,
    /// `None` while the file is empty (a zero-length file cannot be mapped).
    mmap: Option<MmapMut>,
    base_offset: u64,
    entries: usize,
    capacity: usize,
    _entry: PhantomData<E>,
}

impl<E: IndexEntry> MmapIndex<E> {
    /// Opens `path` (created if missing) and maps it with room for `capacity`
    /// entries. `entries` of the file's current entries are kept (the caller
    /// has validated them); the rest of the mapping is free space.
    fn map(path: &Path, base_offset: u64, capacity: usize, entries: usize) -> Result<Self> {
        let io = |e| Error::io(path.display(), e);
        let file = open_rw(path)?;
        let capacity = capacity.max(entries).max(1);
        file.set_len((capacity * E::SIZE) as u64).map_err(io)?;
        // SAFETY: the file is private to this index (one handle per log, enforced
        // by the storage), and its length is only changed through `self`.
        let mmap = unsafe { MmapMut::map_mut(&file) }.map_err(io)?;
        Ok(Self {
            path: path.to_path_buf(),
            mmap: Some(mmap),
            base_offset,
            entries,
            capacity,
            _entry: PhantomData,
        })
    }

    /// A new, empty index at `path` (an old file there is discarded).
    pub(crate) fn create(path: &Path, base_offset: u64, capacity: usize) -> Result<Self> {
        super::remove_if_exists(path)?;
        Self::map(path, base_offset, capacity, 0)
    }

    /// Reads the entries of an existing index file without mapping it, for
    /// validation. `None` if the file is missing or not a whole number of
    /// entries.
    pub(crate) fn read_entries(path: &Path, base_offset: u64) -> Result<Option<Vec<E>>> {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path.display(), e)),
        };
        if bytes.len() % E::SIZE != 0 {
            return Ok(None);
        }
        Ok(Some(
            bytes
                .chunks_exact(E::SIZE)
                .map(|c| E::decode(base_offset, c))
                .collect(),
        ))
    }

    /// Maps an existing file whose first `entries` entries were validated.
    pub(crate) fn open(
        path: &Path,
        base_offset: u64,
        capacity: usize,
        entries: usize,
    ) -> Result<Self> {
        Self::map(path, base_offset, capacity, entries)
    }

    pub(crate) fn is_full(&self) -> bool {
        self.entries >= self.capacity
    }

    /// Entry `i`, or `None` past the end or when the index lost its mapping
    /// (a failed resize): a missing entry only makes lookups scan further.
    fn entry(&self, i: usize) -> Option<E> {
        if i >= self.entries {
            return None;
        }
        let mmap = self.mmap.as_ref()?;
        mmap.get(i * E::SIZE..(i + 1) * E::SIZE)
            .map(|buf| E::decode(self.base_offset, buf))
    }

    pub(crate) fn last(&self) -> Option<E> {
        self.entries.checked_sub(1).and_then(|i| self.entry(i))
    }

    /// Appends an entry; false (nothing written) when the index is full.
    pub(crate) fn append(&mut self, entry: E) -> bool {
        if self.is_full() {
            return false;
        }
        let Some(mmap) = self.mmap.as_mut() else {
            return false;
        };
        let at = self.entries * E::SIZE;
        entry.encode(self.base_offset, &mut mmap[at..at + E::SIZE]);
        self.entries += 1;
        true
    }

    /// The last entry for which `before(entry)` holds, given that it holds for
    /// a prefix of the entries.
    pub(crate) fn last_where(&self, before: impl Fn(&E) -> bool) -> Option<E> {
        let (mut lo, mut hi) = (0, self.entries);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.entry(mid) {
                Some(e) if before(&e) => lo = mid + 1,
                Some(_) => hi = mid,
                None => return None,
            }
        }
        lo.checked_sub(1).and_then(|i| self.entry(i))
    }

    /// Keeps only the entries for which `keep` holds (a prefix).
    pub(crate) fn truncate_where(&mut self, keep: impl Fn(&E) -> bool) {
        let mut n = self.entries;
        while n > 0 && !self.entry(n - 1).is_some_and(|e| keep(&e)) {
            n -= 1;
        }
        self.entries = n;
    }

    /// Shrinks the file to its entries (on seal) or grows it back to capacity
    /// (when a sealed segment becomes active again).
    pub(crate) fn resize(&mut self, trimmed: bool) -> Result<()> {
        let io = |e| Error::io(self.path.display(), e);
        // Until the new mapping exists the index counts as empty, so an error
        // part-way leaves a usable (if slower) index, never a dangling one.
        let kept = std::mem::take(&mut self.entries);
        if let Some(mmap) = self.mmap.take() {
            mmap.flush().map_err(io)?;
        }
        let len = if trimmed { kept } else { self.capacity.max(1) };
        let file = open_rw(&self.path)?;
        file.set_len((len * E::SIZE) as u64).map_err(io)?;
        if len > 0 {
            // SAFETY: see `map`.
            self.mmap = Some(unsafe { MmapMut::map_mut(&file) }.map_err(io)?);
        }
        self.entries = kept;
        if trimmed {
            self.capacity = kept;
        }
        Ok(())
    }

    /// Grows the capacity of a sealed index so it can take entries again.
    pub(crate) fn reopen_for_append(&mut self, capacity: usize) -> Result<()> {
        self.capacity = capacity.max(self.entries).max(1);
        self.resize(false)
    }

    pub(crate) fn flush(&self) -> Result<()> {
        if let Some(mmap) = &self.mmap {
            mmap.flush()
                .map_err(|e| Error::io(self.path.display(), e))?;
        }
        Ok(())
    }

    pub(crate) fn delete(self) -> Result<()> {
        let path = self.path.clone();
        drop(self);
        super::remove_if_exists(&path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_lookup_trim_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.index");
        let mut idx = MmapIndex::<OffsetEntry>::create(&path, 100, 4).unwrap();
        for (i, pos) in [(100, 0), (110, 4096), (130, 9000)] {
            assert!(idx.append(OffsetEntry {
                offset: i,
                position: pos
            }));
        }
        assert_eq!(idx.last_where(|e| e.offset <= 120).unwrap().position, 4096);
        assert!(idx.last_where(|e| e.offset < 100).is_none());
        idx.resize(true).unwrap();
        drop(idx);
        let entries = MmapIndex::<OffsetEntry>::read_entries(&path, 100)
            .unwrap()
            .unwrap();
        assert_eq!(entries.len(), 3);
        assert_eq!(entries[2].offset, 130);
        let mut idx = MmapIndex::<OffsetEntry>::open(&path, 100, 4, 3).unwrap();
        assert!(idx.append(OffsetEntry {
            offset: 140,
            position: 10_000
        }));
        assert!(idx.is_full());
        assert!(!idx.append(OffsetEntry {
            offset: 150,
            position: 11_000
        }));
    }
}
