//! Atomic checkpoint files: the small state kept beside a partition's segments.
//!
//! One file, `partition.checkpoint`, holds the log start offset, the recovery
//! point (everything below it was fsynced and validated), the high watermark and
//! the leader-epoch cache. It is written to a temporary file, fsynced, renamed
//! over the old one and the directory fsynced, so a crash leaves either the old
//! or the new checkpoint, never a mix. A CRC-32C line guards against a torn or
//! edited file; a bad checkpoint is ignored and the log recovers from its start.

use std::fs::{self, File};
use std::io::Write;
use std::path::Path;

use super::epoch::{EpochEntry, LeaderEpochCache};
use crate::error::{Error, Result};

/// File name of the checkpoint inside a partition directory.
pub(crate) const CHECKPOINT_FILE: &str = "partition.checkpoint";
const HEADER: &str = "ferrolog-checkpoint 1";

/// The state a partition log persists beside its segments.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Checkpoint {
    /// First offset still readable.
    pub log_start_offset: u64,
    /// Offset below which the log was flushed and needs no recovery.
    pub recovery_point: u64,
    /// Last known high watermark.
    pub high_watermark: u64,
    /// Epoch → start offset.
    pub epochs: LeaderEpochCache,
}

impl Checkpoint {
    fn render(&self) -> String {
        let mut body = format!(
            "{HEADER}\nlog_start_offset {}\nrecovery_point {}\nhigh_watermark {}\n",
            self.log_start_offset, self.recovery_point, self.high_watermark
        );
        for e in self.epochs.entries() {
            body.push_str(&format!("epoch {} {}\n", e.epoch, e.start_offset));
        }
        let crc = crc32c::crc32c(body.as_bytes());
        body.push_str(&format!("crc {crc:08x}\n"));
        body
    }

    fn parse(text: &str) -> Option<Self> {
        let (body, crc_line) = text.trim_end_matches('\n').rsplit_once('\n')?;
        let body = format!("{body}\n");
        let crc = u32::from_str_radix(crc_line.strip_prefix("crc ")?, 16).ok()?;
        if crc32c::crc32c(body.as_bytes()) != crc {
            return None;
        }
        let mut lines = body.lines();
        if lines.next()? != HEADER {
            return None;
        }
        let mut cp = Checkpoint::default();
        let mut epochs = Vec::new();
        for line in lines {
            let mut words = line.split(' ');
            match (words.next()?, words.next()?, words.next()) {
                ("log_start_offset", v, None) => cp.log_start_offset = v.parse().ok()?,
                ("recovery_point", v, None) => cp.recovery_point = v.parse().ok()?,
                ("high_watermark", v, None) => cp.high_watermark = v.parse().ok()?,
                ("epoch", e, Some(o)) => epochs.push(EpochEntry {
                    epoch: e.parse().ok()?,
                    start_offset: o.parse().ok()?,
                }),
                _ => return None,
            }
        }
        cp.epochs = LeaderEpochCache::from_entries(epochs);
        Some(cp)
    }

    /// Reads `dir/partition.checkpoint`. `Ok(None)` when it is missing or fails
    /// its CRC; the caller then recovers the whole log.
    pub(crate) fn load(dir: &Path) -> Result<Option<Self>> {
        let path = dir.join(CHECKPOINT_FILE);
        match fs::read(&path) {
            Ok(bytes) => Ok(std::str::from_utf8(&bytes).ok().and_then(Self::parse)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::io(path.display(), e)),
        }
    }

    /// Writes `dir/partition.checkpoint` atomically (temp file, fsync, rename,
    /// fsync of the directory).
    pub(crate) fn store(&self, dir: &Path) -> Result<()> {
        let path = dir.join(CHECKPOINT_FILE);
        let tmp = dir.join(format!("{CHECKPOINT_FILE}.tmp"));
        let io = |e| Error::io(tmp.display(), e);
        let mut f = File::create(&tmp).map_err(io)?;
        f.write_all(self.render().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(|e| Error::io(path.display(), e))?;
        sync_dir(dir)
    }
}

/// fsyncs a directory so that renames and new files in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir.display(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_edits() {
        let dir = tempfile::tempdir().unwrap();
        let mut cp = Checkpoint {
            log_start_offset: 5,
            recovery_point: 100,
            high_watermark: 90,
            epochs: LeaderEpochCache::default(),
        };
        cp.epochs.assign(2, 5);
        cp.epochs.assign(7, 60);
        cp.store(dir.path()).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), Some(cp));
        let path = dir.path().join(CHECKPOINT_FILE);
        let edited = fs::read_to_string(&path)
            .unwrap()
            .replace("recovery_point 100", "recovery_point 900");
        fs::write(&path, edited).unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
    }

    #[test]
    fn missing_file_is_none() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Checkpoint::load(dir.path()).unwrap(), None);
    }
}
