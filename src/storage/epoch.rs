//! The leader-epoch cache: which leader epoch began at which offset.
//!
//! Kafka's `LeaderEpochFileCache`. Every batch carries the epoch of the leader
//! that appended it; this cache keeps the first offset of each epoch so that a
//! follower can ask "where did epoch E end?" (`OffsetForLeaderEpoch`) and
//! truncate to that instead of to its high watermark (KIP-101).

/// One epoch and the first offset written in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEntry {
    /// The leader epoch.
    pub epoch: i32,
    /// The first offset appended in that epoch.
    pub start_offset: u64,
}

/// Epoch start offsets, in increasing order of both epoch and offset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochCache {
    entries: Vec<EpochEntry>,
}

impl LeaderEpochCache {
    /// A cache holding `entries`; entries out of order are dropped.
    pub fn from_entries(entries: impl IntoIterator<Item = EpochEntry>) -> Self {
        let mut cache = Self::default();
        for e in entries {
            cache.assign(e.epoch, e.start_offset);
        }
        cache
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &[EpochEntry] {
        &self.entries
    }

    /// The newest epoch, if any batch was stamped with one.
    pub fn latest_epoch(&self) -> Option<i32> {
        self.entries.last().map(|e| e.epoch)
    }

    /// Records that `epoch` starts at `start_offset`. Negative epochs (unstamped
    /// batches), an epoch already known, or one older than the latest are
    /// ignored; a previous epoch that starts at the same offset (it wrote
    /// nothing) is replaced. Returns whether the cache changed.
    pub fn assign(&mut self, epoch: i32, start_offset: u64) -> bool {
        if epoch < 0 {
            return false;
        }
        if let Some(last) = self.entries.last() {
            if epoch <= last.epoch || start_offset < last.start_offset {
                return false;
            }
            if start_offset == last.start_offset {
                // The previous epoch wrote nothing: it no longer marks a range.
                self.entries.pop();
            }
        }
        self.entries.push(EpochEntry {
            epoch,
            start_offset,
        });
        true
    }

    /// `OffsetForLeaderEpoch`: the largest epoch ≤ `epoch` and the offset where
    /// it ended, i.e. the start of the next epoch, or `log_end_offset` when it is
    /// the latest. `None` when `epoch` is older than every entry (or none exist).
    pub fn end_offset_for(&self, epoch: i32, log_end_offset: u64) -> Option<(i32, u64)> {
        let idx = self.entries.partition_point(|e| e.epoch <= epoch);
        if idx == 0 {
            return None;
        }
        let found = self.entries[idx - 1].epoch;
        let end = self
            .entries
            .get(idx)
            .map_or(log_end_offset, |next| next.start_offset);
        Some((found, end))
    }

    /// Forgets epochs that started at or after `offset` (the log was truncated
    /// there).
    pub fn truncate_from_end(&mut self, offset: u64) -> bool {
        let keep = self.entries.partition_point(|e| e.start_offset < offset);
        let changed = keep != self.entries.len();
        self.entries.truncate(keep);
        changed
    }

    /// The log now starts at `offset`: epochs that ended before it are dropped and
    /// the one in force at `offset` is moved to start there.
    pub fn truncate_from_start(&mut self, offset: u64) -> bool {
        let first_after = self.entries.partition_point(|e| e.start_offset <= offset);
        if first_after == 0 {
            return false;
        }
        let in_force = first_after - 1;
        let changed = in_force > 0 || self.entries[in_force].start_offset != offset;
        self.entries.drain(..in_force);
        self.entries[0].start_offset = offset;
        changed
    }

    /// Removes every entry.
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> LeaderEpochCache {
        LeaderEpochCache::from_entries([
            EpochEntry {
                epoch: 1,
                start_offset: 0,
            },
            EpochEntry {
                epoch: 3,
                start_offset: 10,
            },
            EpochEntry {
                epoch: 4,
                start_offset: 25,
            },
        ])
    }

    #[test]
    fn end_offset_is_the_next_epochs_start_or_the_log_end() {
        let c = cache();
        assert_eq!(c.end_offset_for(1, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(2, 40), Some((1, 10)));
        assert_eq!(c.end_offset_for(3, 40), Some((3, 25)));
        assert_eq!(c.end_offset_for(4, 40), Some((4, 40)));
        assert_eq!(c.end_offset_for(9, 40), Some((4, 40)));
        assert_eq!(c.end_offset_for(0, 40), None);
    }

    #[test]
    fn stale_or_unstamped_epochs_are_ignored() {
        let mut c = cache();
        assert!(!c.assign(2, 30));
        assert!(!c.assign(4, 30));
        assert!(!c.assign(-1, 30));
        assert!(c.assign(5, 30));
        assert_eq!(c.latest_epoch(), Some(5));
    }

    #[test]
    fn truncation_from_either_end() {
        let mut c = cache();
        c.truncate_from_end(25);
        assert_eq!(c.latest_epoch(), Some(3));
        c.truncate_from_start(12);
        assert_eq!(
            c.entries(),
            &[EpochEntry {
                epoch: 3,
                start_offset: 12
            }]
        );
    }
}
