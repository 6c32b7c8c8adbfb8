//! The segmented log shared by every built-in storage.
//!
//! [`SegmentedLog`] owns what does not depend on where bytes live: the list of
//! segments, offsets, rolling, retention, truncation, the leader-epoch cache,
//! the flush policy and checkpoints. A backend ([`LogDir`]) supplies segments
//! ([`Segment`]) that store and find batches, in memory or in files.

use std::sync::Arc;

use super::checkpoint::Checkpoint;
use super::cleaner::{self, OffsetMap};
use super::epoch::LeaderEpochCache;
use super::{
    AppendInfo, CompactionReport, LogConfig, MaintenanceReport, PartitionLog, TimestampOffset,
};
use crate::error::{Error, Result};
use crate::record::{RecordBatch, Records};
use crate::time::{Clock, Millis};

/// How many bytes [`SegmentedLog::offset_for_timestamp`] and the cleaner
/// read per step.
const SCAN_BYTES: usize = 256 * 1024;
/// How often [`PartitionLog::maintain`] rewrites a checkpoint whose only
/// change is the high watermark or recovery point (Kafka: 5 s).
const CHECKPOINT_INTERVAL_MS: Millis = 5_000;
/// Kafka's offsets are signed 64-bit: nothing may go beyond this.
const MAX_OFFSET: u64 = i64::MAX as u64;

/// One segment: a run of batches starting at `base_offset`.
pub(crate) trait Segment: Send + std::fmt::Debug {
    /// Offset the segment is named by; no batch in it starts below.
    fn base_offset(&self) -> u64;
    /// Offset after its last batch (`base_offset` when empty).
    fn next_offset(&self) -> u64;
    /// Bytes of batches held.
    fn size(&self) -> u64;
    /// Largest record timestamp, `i64::MIN` when empty.
    fn max_timestamp(&self) -> i64;
    /// When the segment was created or reopened (for `segment_ms`).
    fn created_ms(&self) -> Millis;
    /// Whether a batch of `size` bytes whose last offset is `last_offset` fits.
    fn has_room(&self, size: usize, last_offset: u64) -> bool;
    /// Appends a validated batch, stamping `base_offset` and, if given, the epoch.
    fn append(&mut self, batch: RecordBatch, base_offset: u64, epoch: Option<i32>) -> Result<()>;
    /// Pushes whole batches, from the one holding `offset`, up to `max_bytes`
    /// (at least one) onto `out`. False if no batch here reaches `offset`.
    fn read(&self, offset: u64, max_bytes: usize, out: &mut Records) -> Result<bool>;
    /// An offset at or below the first record with timestamp ≥ `timestamp`.
    fn time_hint(&self, timestamp: i64) -> u64;
    /// Removes batches whose last offset is ≥ `offset`; the segment becomes
    /// writable again if it was sealed.
    fn truncate_to(&mut self, offset: u64) -> Result<()>;
    /// The segment stops being the active one.
    fn seal(&mut self) -> Result<()>;
    /// Writes the segment to stable storage.
    fn flush(&mut self) -> Result<()>;
    /// Replaces the batches of this sealed segment with `batches`, the log
    /// cleaner's output: they start at the segment's base offset, end at its
    /// next offset and each starts where the previous ended. Durable and
    /// atomic when it returns: a crash part-way leaves the old batches or the
    /// new ones, never a mix. The segment stays sealed.
    fn replace(&mut self, batches: Vec<RecordBatch>) -> Result<()>;
    /// Deletes the segment's data.
    fn delete(self) -> Result<()>
    where
        Self: Sized;
}

/// Where a log's segments and checkpoint live.
pub(crate) trait LogDir: Send + std::fmt::Debug {
    /// The segment type.
    type Seg: Segment;
    /// A new, empty, writable segment.
    fn create_segment(&mut self, base_offset: u64, now: Millis) -> Result<Self::Seg>;
    /// Persists the checkpoint.
    fn store_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<()>;
    /// Called once when the log is dropped, with what it held.
    fn release(&mut self, segments: Vec<Self::Seg>, checkpoint: Checkpoint);
    /// Records that the log was flushed and closed cleanly.
    fn mark_clean(&mut self) -> Result<()> {
        Ok(())
    }
    /// Makes the creation and removal of segment files durable.
    fn sync(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What the last compaction saw, so that a run with nothing new to clean
/// returns at once (Kafka's cleaner checkpoint).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct CleanerCheckpoint {
    /// The end of the cleanable segments it cleaned.
    cleaned_to: Option<u64>,
    /// The earliest delete horizon of a tombstone it kept.
    next_horizon: Option<Millis>,
}

/// A partition log made of segments from a [`LogDir`].
#[derive(Debug)]
pub(crate) struct SegmentedLog<D: LogDir> {
    dir: D,
    config: LogConfig,
    clock: Arc<dyn Clock>,
    /// In base-offset order; the last is the active segment; never empty
    /// while the log is online.
    segments: Vec<D::Seg>,
    start: u64,
    end: u64,
    high_watermark: u64,
    recovery_point: u64,
    epochs: LeaderEpochCache,
    unflushed_records: u64,
    last_flush_ms: Millis,
    /// Segments were created or deleted since the last flush.
    dir_changed: bool,
    /// What the dir holds, to skip rewriting an unchanged checkpoint.
    last_checkpoint: Checkpoint,
    last_checkpoint_ms: Millis,
    /// Where the last compaction got to (in memory: the first run after
    /// opening a log always cleans).
    cleaner: CleanerCheckpoint,
    /// Set by an I/O error in the middle of a change: the in-memory state may
    /// no longer match the segments, so the log refuses everything until it is
    /// reopened (and recovered), like Kafka's offline log directory.
    offline: Option<String>,
}

/// Where a backend's recovery starts: the index in `bases` (segment base
/// offsets, in order) of the first segment to validate — none (`len`) when
/// the log was closed cleanly, else the one holding the recovery point.
pub(crate) fn first_to_recover(bases: &[u64], recovery_point: u64, clean: bool) -> usize {
    if clean {
        bases.len()
    } else {
        bases
            .partition_point(|&b| b <= recovery_point)
            .saturating_sub(1)
    }
}

/// Prepares `checkpoint` for recovery from the segment at `base`: the
/// epochs from there on are re-derived from the batches recovery reads
/// (except the one DeleteRecords moved to the log start, which no batch at
/// that offset may carry), and the recovery point drops to `base`.
pub(crate) fn recover_from(checkpoint: &mut Checkpoint, base: u64) {
    let keep_below = base.max(checkpoint.log_start_offset.saturating_add(1));
    checkpoint.epochs.truncate_from_end(keep_below);
    checkpoint.recovery_point = checkpoint.recovery_point.min(base);
}

impl<D: LogDir> SegmentedLog<D> {
    /// A log over what a backend loaded; if it `recovered` anything (what
    /// recovery kept came from the page cache), that is made durable and
    /// the checkpoint stored before the recovery point moves past it.
    pub(crate) fn open(
        dir: D,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        segments: Vec<D::Seg>,
        checkpoint: Checkpoint,
        recovered: bool,
    ) -> Result<Self> {
        let mut log = Self::new(dir, config, clock, segments, checkpoint)?;
        if recovered {
            trace_event!(
                warn,
                dir = ?log.dir,
                log_start_offset = log.start,
                log_end_offset = log.end,
                "log recovered after an unclean shutdown"
            );
            log.flush_and_checkpoint()?;
        }
        Ok(log)
    }

    /// Assembles a log from recovered segments (base-offset order) and the
    /// checkpoint that goes with them.
    pub(crate) fn new(
        mut dir: D,
        config: LogConfig,
        clock: Arc<dyn Clock>,
        mut segments: Vec<D::Seg>,
        checkpoint: Checkpoint,
    ) -> Result<Self> {
        let now = clock.now_ms();
        let recovered_end = segments.last().map(|s| s.next_offset());
        if recovered_end.is_none_or(|end| end < checkpoint.log_start_offset) {
            // Nothing, or less than the checkpointed log start, survived (a torn
            // tail below a DeleteRecords point): start empty at the log start
            // so no offset below it is handed out twice.
            for old in segments.drain(..) {
                old.delete()?;
            }
            segments.push(dir.create_segment(checkpoint.log_start_offset, now)?);
        }
        let end = segments.last().map_or(0, |s| s.next_offset());
        let first_base = segments[0].base_offset();
        let start = checkpoint.log_start_offset.max(first_base).min(end);
        let mut epochs = checkpoint.epochs.clone();
        // A stale checkpoint may know epochs past the end; an epoch starting
        // exactly at the end (a log emptied by DeleteRecords) is still in force.
        epochs.truncate_from_end(end.saturating_add(1));
        epochs.truncate_from_start(start);
        Ok(Self {
            dir,
            config,
            clock,
            segments,
            start,
            end,
            high_watermark: checkpoint.high_watermark.clamp(start, end),
            recovery_point: checkpoint.recovery_point.min(end),
            epochs,
            unflushed_records: 0,
            last_flush_ms: now,
            dir_changed: false,
            last_checkpoint: checkpoint,
            last_checkpoint_ms: now,
            cleaner: CleanerCheckpoint::default(),
            offline: None,
        })
    }

    /// Flushes and writes the checkpoint (after recovery at open).
    fn flush_and_checkpoint(&mut self) -> Result<()> {
        self.guarded(|log| {
            log.flush_segments()?;
            log.store_checkpoint()
        })
    }

    fn active(&self) -> &D::Seg {
        self.segments.last().expect("an online log has a segment")
    }

    fn active_mut(&mut self) -> &mut D::Seg {
        self.segments
            .last_mut()
            .expect("an online log has a segment")
    }

    fn online(&self) -> Result<()> {
        match &self.offline {
            Some(reason) => Err(Error::LogOffline {
                reason: reason.clone(),
            }),
            None if self.segments.is_empty() => Err(Error::LogOffline {
                reason: "no segment".into(),
            }),
            None => Ok(()),
        }
    }

    /// Runs a change; an I/O error or corrupt data met half-way takes the log
    /// offline. Validation errors are raised before anything changes.
    fn guarded<T>(&mut self, change: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.online()?;
        let result = change(self);
        if let Err(e @ (Error::Io { .. } | Error::CorruptLog { .. })) = &result {
            self.offline = Some(e.to_string());
        }
        if self.segments.is_empty() && self.offline.is_none() {
            self.offline = Some("a change left the log without a segment".into());
        }
        result
    }

    fn checkpoint(&self) -> Checkpoint {
        Checkpoint {
            log_start_offset: self.start,
            recovery_point: self.recovery_point,
            high_watermark: self.high_watermark,
            epochs: self.epochs.clone(),
        }
    }

    fn store_checkpoint(&mut self) -> Result<()> {
        let cp = self.checkpoint();
        self.dir.store_checkpoint(&cp)?;
        self.last_checkpoint = cp;
        self.last_checkpoint_ms = self.now();
        Ok(())
    }

    /// Refuses a batch larger than `limit` bytes.
    fn check_size(&self, batch: &RecordBatch, limit: usize) -> Result<()> {
        if batch.size() > limit {
            return Err(Error::RecordTooLarge {
                size: batch.size(),
                max: limit,
            });
        }
        Ok(())
    }

    fn check_offsets(&self, base: u64, batch: &RecordBatch) -> Result<()> {
        let last = base.checked_add(batch.last_offset_delta() as u64);
        if last.is_none_or(|l| l >= MAX_OFFSET) {
            return Err(Error::OffsetOutOfRange {
                offset: base,
                log_start_offset: self.start,
                log_end_offset: MAX_OFFSET,
            });
        }
        Ok(())
    }

    /// Index of the segment that holds `offset` (the last with base ≤ offset).
    fn segment_index(&self, offset: u64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset() <= offset)
            .saturating_sub(1)
    }

    fn roll_at(&mut self, base_offset: u64) -> Result<()> {
        let now = self.now();
        self.active_mut().seal()?;
        let segment = self.dir.create_segment(base_offset, now)?;
        self.segments.push(segment);
        self.dir_changed = true;
        Ok(())
    }

    fn append_at(
        &mut self,
        batch: RecordBatch,
        base_offset: u64,
        epoch: Option<i32>,
    ) -> Result<AppendInfo> {
        let last_offset = base_offset + batch.last_offset_delta() as u64;
        let now = self.now();
        let active = self.active();
        let expired = now.saturating_sub(active.created_ms()) >= self.config.segment_ms;
        if active.size() > 0 && (expired || !active.has_room(batch.size(), last_offset)) {
            self.roll_at(base_offset)?;
        }
        let info = AppendInfo {
            base_offset,
            last_offset,
            max_timestamp: batch.max_timestamp(),
            size: batch.size(),
        };
        let stamped_epoch = epoch.unwrap_or_else(|| batch.partition_leader_epoch());
        let records = batch.record_count().max(0) as u64;
        self.active_mut().append(batch, base_offset, epoch)?;
        self.epochs.assign(stamped_epoch, base_offset);
        self.end = last_offset + 1;
        self.unflushed_records += records;
        let by_count = matches!(self.config.flush_messages, Some(n) if self.unflushed_records >= n);
        let by_time = matches!(self.config.flush_ms, Some(ms) if now - self.last_flush_ms >= ms);
        if by_count || by_time {
            self.flush_segments()?;
        }
        Ok(info)
    }

    /// Whether retention may delete the oldest segment: it holds data, and
    /// every record in it is below the high watermark (committed), as Kafka
    /// requires, so retention never takes records followers still need.
    fn oldest_is_deletable(&self) -> bool {
        let oldest = &self.segments[0];
        oldest.size() > 0 && oldest.next_offset() <= self.high_watermark
    }

    /// The time retention judges a segment by: its newest record's timestamp,
    /// or, for records without one (≤ 0), when the segment was created.
    fn segment_time(segment: &D::Seg) -> Millis {
        match segment.max_timestamp() {
            ts if ts > 0 => ts,
            _ => segment.created_ms(),
        }
    }

    /// Deletes the oldest segment, rolling first if it is the active one.
    fn delete_oldest(&mut self) -> Result<u64> {
        if self.segments.len() == 1 {
            let end = self.end;
            self.roll_at(end)?;
        }
        let oldest = self.segments.remove(0);
        let size = oldest.size();
        self.dir_changed = true;
        oldest.delete()?;
        Ok(size)
    }

    fn move_start(&mut self, offset: u64) {
        if offset > self.start {
            // Callers only move the start up to committed data (retention and
            // DeleteRecords stop at the high watermark), so start ≤ HW holds.
            debug_assert!(offset <= self.high_watermark);
            self.start = offset;
            self.epochs.truncate_from_start(offset);
            self.recovery_point = self.recovery_point.max(offset);
        }
    }

    /// Flushes if `flush_ms` passed with records unflushed; writes the
    /// checkpoint if its structure changed, or anything changed and the last
    /// one is `CHECKPOINT_INTERVAL_MS` old. Returns whether it flushed.
    fn timed_flush_and_checkpoint(&mut self, now: Millis) -> Result<bool> {
        let mut flushed = false;
        if let Some(ms) = self.config.flush_ms
            && self.recovery_point < self.end
            && now - self.last_flush_ms >= ms
        {
            self.flush_segments()?;
            flushed = true;
        }
        let current = self.checkpoint();
        let structural = current.log_start_offset != self.last_checkpoint.log_start_offset
            || current.epochs != self.last_checkpoint.epochs;
        let periodic = current != self.last_checkpoint
            && now - self.last_checkpoint_ms >= CHECKPOINT_INTERVAL_MS;
        if structural || periodic {
            self.store_checkpoint()?;
        }
        Ok(flushed)
    }

    fn flush_segments(&mut self) -> Result<()> {
        let first = self.segment_index(self.recovery_point);
        for segment in &mut self.segments[first..] {
            segment.flush()?;
        }
        if self.dir_changed {
            self.dir.sync()?;
            self.dir_changed = false;
        }
        self.recovery_point = self.end;
        self.unflushed_records = 0;
        self.last_flush_ms = self.now();
        Ok(())
    }

    fn truncate_fully(&mut self, offset: u64) -> Result<()> {
        if offset >= MAX_OFFSET {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.start,
                log_end_offset: MAX_OFFSET,
            });
        }
        let now = self.now();
        // Delete first: the fresh segment may reuse an old one's base offset.
        // On error the log has lost segments and `guarded` takes it offline.
        for old in std::mem::take(&mut self.segments) {
            old.delete()?;
        }
        self.dir_changed = true;
        let fresh = self.dir.create_segment(offset, now)?;
        self.segments.push(fresh);
        self.start = offset;
        self.end = offset;
        self.high_watermark = offset;
        self.recovery_point = offset;
        self.epochs.clear();
        self.cleaner = CleanerCheckpoint::default();
        self.store_checkpoint()
    }

    fn now(&self) -> Millis {
        self.clock.now_ms()
    }

    /// Refuses what a compacted log cannot take: records without a key. The
    /// delete-horizon flag belongs to the log cleaner and is refused in any log.
    fn check_keys(&self, batch: &RecordBatch) -> Result<()> {
        if batch.delete_horizon_ms().is_some() {
            return Err(Error::InvalidRecord {
                reason: "the delete-horizon attribute is set by the log cleaner, not producers"
                    .into(),
            });
        }
        if self.config.cleanup_policy.compacts() {
            for record in batch.records() {
                if record?.key.is_none() {
                    return Err(Error::InvalidRecord {
                        reason: "a compacted topic cannot accept a record without a key".into(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Every batch of `segment`, in order.
    fn segment_batches(segment: &D::Seg) -> Result<Vec<RecordBatch>> {
        let mut batches = Vec::new();
        let mut offset = segment.base_offset();
        while offset < segment.next_offset() {
            let mut chunk = Records::empty();
            if !segment.read(offset, SCAN_BYTES, &mut chunk)? {
                break;
            }
            let before = offset;
            for batch in chunk.batches() {
                let batch = batch?;
                offset = offset.max(batch.next_offset());
                batches.push(batch);
            }
            if offset == before {
                break;
            }
        }
        Ok(batches)
    }

    /// How many segments, from the first, compaction may rewrite: sealed, and
    /// wholly below the high watermark, so that no replica ever cleans records
    /// that a truncation could still take away.
    fn cleanable_segments(&self) -> usize {
        let sealed = self.segments.len().saturating_sub(1);
        self.segments[..sealed].partition_point(|s| s.next_offset() <= self.high_watermark)
    }

    fn compact_segments(&mut self, cleanable: usize, now: Millis) -> Result<CompactionReport> {
        let mut map = OffsetMap::default();
        for segment in &self.segments {
            for batch in Self::segment_batches(segment)? {
                map.add(&batch)?;
            }
        }
        let mut report = CompactionReport::default();
        let mut next_horizon: Option<Millis> = None;
        for i in 0..cleanable {
            let segment = &self.segments[i];
            if segment.size() == 0 {
                continue;
            }
            let (base, next) = (segment.base_offset(), segment.next_offset());
            let batches = Self::segment_batches(segment)?;
            let cleaned =
                cleaner::clean_batches(batches, &map, now, self.config.delete_retention_ms)?;
            if let Some(h) = cleaned.next_horizon {
                next_horizon = Some(next_horizon.map_or(h, |n| n.min(h)));
            }
            let covers = cleaned.batches.first().map(RecordBatch::base_offset) == Some(base)
                && cleaned.batches.last().map(RecordBatch::next_offset) == Some(next);
            debug_assert!(covers, "the cleaner keeps a segment's offsets");
            if !cleaned.changed || !covers {
                continue;
            }
            if self.recovery_point < self.end {
                // The records that supersede what this clean removes must be
                // on disk before the removal is, or a power loss could take
                // both the old value and the new one.
                self.flush_segments()?;
            }
            let before = self.segments[i].size();
            self.segments[i].replace(cleaned.batches)?;
            report.segments_cleaned += 1;
            report.records_removed += cleaned.records_removed;
            report.bytes_before += before;
            report.bytes_after += self.segments[i].size();
        }
        self.cleaner.next_horizon = next_horizon;
        Ok(report)
    }
}

impl<D: LogDir> Drop for SegmentedLog<D> {
    fn drop(&mut self) {
        let segments = std::mem::take(&mut self.segments);
        let checkpoint = self.checkpoint();
        self.dir.release(segments, checkpoint);
    }
}

impl<D: LogDir> PartitionLog for SegmentedLog<D> {
    fn append(&mut self, batch: RecordBatch, leader_epoch: i32) -> Result<AppendInfo> {
        self.online()?;
        let limit = self
            .config
            .max_message_bytes
            .min(self.config.segment_bytes as usize);
        self.check_size(&batch, limit)?;
        batch.validate_produced()?;
        self.check_keys(&batch)?;
        let batch = match self.config.compression_type.recompress(batch.compression()) {
            Some(codec) => batch.recompressed(codec)?,
            None => batch,
        };
        let latest = self.epochs.latest_epoch();
        if leader_epoch < 0 || latest.is_some_and(|l| leader_epoch < l) {
            return Err(Error::FencedLeaderEpoch {
                epoch: leader_epoch,
                latest: latest.unwrap_or(-1),
            });
        }
        let base = self.end;
        self.check_offsets(base, &batch)?;
        self.guarded(|log| log.append_at(batch, base, Some(leader_epoch)))
    }

    fn append_replicated(&mut self, batch: RecordBatch) -> Result<AppendInfo> {
        self.online()?;
        // Like Kafka, a follower takes what the leader accepted whatever its
        // own `max_message_bytes`; only a segment must be able to hold it.
        self.check_size(&batch, self.config.segment_bytes as usize)?;
        batch.validate()?;
        let base = batch.base_offset();
        if base != self.end {
            return Err(Error::UnexpectedAppendOffset {
                expected: self.end,
                got: base,
            });
        }
        self.check_offsets(base, &batch)?;
        self.guarded(|log| log.append_at(batch, base, None))
    }

    fn read(&self, offset: u64, max_bytes: usize) -> Result<Records> {
        self.online()?;
        if offset < self.start || offset > self.end {
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.start,
                log_end_offset: self.end,
            });
        }
        let mut out = Records::empty();
        if offset == self.end {
            return Ok(out);
        }
        for segment in &self.segments[self.segment_index(offset)..] {
            if segment.read(offset, max_bytes, &mut out)? {
                break;
            }
        }
        Ok(out)
    }

    fn log_start_offset(&self) -> u64 {
        self.start
    }

    fn log_end_offset(&self) -> u64 {
        self.end
    }

    fn high_watermark(&self) -> u64 {
        self.high_watermark
    }

    fn set_high_watermark(&mut self, offset: u64) {
        self.high_watermark = offset.clamp(self.start, self.end);
    }

    fn recovery_point(&self) -> u64 {
        self.recovery_point
    }

    fn size_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.size()).sum()
    }

    fn segment_count(&self) -> usize {
        self.segments.len()
    }

    fn truncate_to(&mut self, offset: u64) -> Result<u64> {
        self.guarded(|log| {
            if offset >= log.end {
                return Ok(log.end);
            }
            if offset < log.start {
                log.truncate_fully(offset)?;
                return Ok(log.end);
            }
            while log.segments.len() > 1
                && log
                    .segments
                    .last()
                    .is_some_and(|s| s.base_offset() >= offset)
            {
                let segment = log.segments.pop().expect("checked above");
                log.dir_changed = true;
                segment.delete()?;
            }
            log.active_mut().truncate_to(offset)?;
            let new_end = log.active().next_offset();
            if new_end < log.start {
                // The batch holding the log start went: nothing readable is left.
                let start = log.start;
                log.truncate_fully(start)?;
                return Ok(log.end);
            }
            log.end = new_end;
            // The epoch in force at the log start stays, even with nothing above it.
            log.epochs
                .truncate_from_end(new_end.max(log.start.saturating_add(1)));
            log.high_watermark = log.high_watermark.min(new_end);
            log.recovery_point = log.recovery_point.min(new_end);
            log.cleaner = CleanerCheckpoint::default();
            log.store_checkpoint()?;
            Ok(new_end)
        })
    }

    fn truncate_fully_and_start_at(&mut self, offset: u64) -> Result<()> {
        self.guarded(|log| log.truncate_fully(offset))
    }

    fn delete_records_before(&mut self, offset: u64) -> Result<u64> {
        self.online()?;
        if offset > self.high_watermark {
            // Kafka's DeleteRecords: only committed records can be deleted.
            return Err(Error::OffsetOutOfRange {
                offset,
                log_start_offset: self.start,
                log_end_offset: self.high_watermark,
            });
        }
        if offset <= self.start {
            return Ok(self.start);
        }
        self.guarded(|log| {
            while log.segments[0].size() > 0 && log.segments[0].next_offset() <= offset {
                log.delete_oldest()?;
            }
            log.move_start(offset);
            log.store_checkpoint()?;
            Ok(log.start)
        })
    }

    fn roll(&mut self) -> Result<()> {
        self.guarded(|log| {
            if log.active().size() > 0 {
                let end = log.end;
                log.roll_at(end)?;
            }
            Ok(())
        })
    }

    fn maintain(&mut self) -> Result<MaintenanceReport> {
        self.guarded(|log| {
            let now = log.now();
            let mut report = MaintenanceReport::default();
            let deletes = log.config.cleanup_policy.deletes();
            if let Some(ms) = log.config.retention_ms.filter(|_| deletes) {
                let cutoff = now.saturating_sub(ms);
                while log.oldest_is_deletable() && Self::segment_time(&log.segments[0]) < cutoff {
                    report.bytes_deleted += log.delete_oldest()?;
                    report.segments_deleted += 1;
                }
            }
            if let Some(limit) = log.config.retention_bytes.filter(|_| deletes) {
                let mut excess = log.size_bytes().saturating_sub(limit);
                while log.oldest_is_deletable() && log.segments[0].size() <= excess {
                    let size = log.delete_oldest()?;
                    excess -= size;
                    report.bytes_deleted += size;
                    report.segments_deleted += 1;
                }
            }
            if report.segments_deleted > 0 {
                let first = log.segments[0].base_offset();
                log.move_start(first.min(log.end));
            }
            let active = log.active();
            if active.size() > 0 && now.saturating_sub(active.created_ms()) >= log.config.segment_ms
            {
                let end = log.end;
                log.roll_at(end)?;
            }
            report.flushed = log.timed_flush_and_checkpoint(now)?;
            Ok(report)
        })
    }

    fn flush_due(&mut self) -> Result<bool> {
        self.guarded(|log| {
            let now = log.now();
            log.timed_flush_and_checkpoint(now)
        })
    }

    fn compact(&mut self) -> Result<CompactionReport> {
        self.online()?;
        if !self.config.cleanup_policy.compacts() {
            return Ok(CompactionReport::default());
        }
        let cleanable = self.cleanable_segments();
        let cleaned_to = cleanable
            .checked_sub(1)
            .map(|last| self.segments[last].next_offset());
        let now = self.now();
        let horizon_passed = self.cleaner.next_horizon.is_some_and(|h| now >= h);
        if cleaned_to.is_none() || (cleaned_to == self.cleaner.cleaned_to && !horizon_passed) {
            return Ok(CompactionReport::default());
        }
        // The map spans the whole log, active segment included: a key written
        // there supersedes older records even though that segment is not
        // rewritten. Segments are cleaned one at a time, each swapped in
        // atomically; an I/O error takes the log offline like any change.
        let report = self.guarded(|log| log.compact_segments(cleanable, now))?;
        self.cleaner.cleaned_to = cleaned_to;
        Ok(report)
    }

    fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<TimestampOffset>> {
        self.online()?;
        for segment in &self.segments {
            if segment.size() == 0 || segment.max_timestamp() < timestamp {
                continue;
            }
            let mut offset = segment.time_hint(timestamp).max(self.start);
            while offset < segment.next_offset() {
                let mut chunk = Records::empty();
                if !segment.read(offset, SCAN_BYTES, &mut chunk)? {
                    break;
                }
                for batch in chunk.batches() {
                    let batch = batch?;
                    offset = batch.next_offset();
                    if batch.max_timestamp() < timestamp {
                        continue;
                    }
                    for record in batch.records() {
                        let record = record?;
                        if record.offset >= self.start && record.timestamp >= timestamp {
                            return Ok(Some(TimestampOffset {
                                offset: record.offset,
                                timestamp: record.timestamp,
                            }));
                        }
                    }
                }
            }
        }
        Ok(None)
    }

    fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, u64)> {
        self.epochs.end_offset_for(epoch, self.end)
    }

    fn latest_epoch(&self) -> Option<i32> {
        self.epochs.latest_epoch()
    }

    fn offline(&self) -> Option<&str> {
        match &self.offline {
            Some(reason) => Some(reason),
            None if self.segments.is_empty() => Some("no segment"),
            None => None,
        }
    }

    fn flush(&mut self) -> Result<()> {
        // The checkpoint is not rewritten here: a stale recovery point only
        // means more validation at the next open (Kafka checkpoints it
        // periodically too), and it keeps `flush_messages = 1` at one fsync of
        // the segment per append instead of four.
        self.guarded(|log| log.flush_segments())
    }

    fn close(mut self: Box<Self>) -> Result<()> {
        self.guarded(|log| {
            log.flush_segments()?;
            log.store_checkpoint()?;
            log.active_mut().seal()?;
            log.dir.mark_clean()
        })
    }
}
