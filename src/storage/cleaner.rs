//! The log cleaner's decisions: which batches and records of a compacted log
//! stay (Kafka's `cleanup.policy=compact`).
//!
//! This module only decides; [`SegmentedLog::compact`](super::log) reads the
//! segments, hands their batches here and swaps the answer in. The rules:
//!
//! - **Latest record per key.** An [`OffsetMap`] of every key's latest offset
//!   is built over the whole log, the active segment included (a key written
//!   there supersedes older records, though the active segment itself is never
//!   rewritten). A record in a cleaned segment stays only if it is the latest
//!   of its key. Records without a key cannot be appended to a compacted log;
//!   any that are there (written before the topic was compacted) are removed,
//!   as Kafka does.
//! - **Tombstones** (a key with no value) follow Kafka's KIP-534: the first
//!   time the cleaner keeps a batch holding a tombstone, it writes a *delete
//!   horizon* of `now + delete_retention_ms` (by the log's clock) into the
//!   batch: attribute bit 6 set, base timestamp = horizon (record timestamps
//!   are re-encoded as deltas from it, so they read the same). A later clean
//!   at or after the horizon removes the batch's tombstones. So a tombstone
//!   stays readable for at least `delete_retention_ms` after the cleaner first
//!   saw it, whatever timestamps producers wrote.
//! - **Offsets are kept.** A rewritten batch keeps its base offset, last
//!   offset delta (so a reader moves past records removed from its end),
//!   partition leader epoch and producer id, epoch and base sequence; only
//!   the records, the record count, the timestamps and the CRC change.
//! - **Empty batches.** A batch that loses every record is not kept on its
//!   own. Consecutive such batches of one leader epoch are replaced by one
//!   empty *filler* batch (no producer, no records) spanning their offsets.
//!   The filler keeps offsets dense at the batch level, which is what lets
//!   recovery and reads keep checking that each batch starts where the
//!   previous one ended (the base offset is not covered by the CRC), and
//!   keeps the leader-epoch boundaries recovery derives from batch headers.
//!   It costs one 61-byte header per run of removed batches.
//! - **Producer state.** The last batch of each idempotent producer is kept,
//!   emptied if need be, as Kafka keeps it: the broker rebuilds producers'
//!   sequence numbers from batch headers when it opens a log.
//! - **Left as they are:** control batches (transaction markers; ferrolog has
//!   no transactions yet, so nothing removes markers or aborted data), and
//!   compressed batches, which cannot be decoded until the codec features
//!   exist (a compacted log refuses them on append).

use std::collections::HashMap;

use bytes::Bytes;

use crate::error::Result;
use crate::record::{BatchHeader, Compression, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE};
use crate::record::{Record, RecordBatch, TimestampType};
use crate::time::Millis;

/// Every key's latest offset, and every producer's last batch, over a log.
///
/// Memory grows with the number of distinct keys (each key is a slice of the
/// batch it was read from, not a copy); Kafka bounds this with
/// `log.cleaner.dedupe.buffer.size`, ferrolog does not yet.
#[derive(Debug, Default)]
pub(crate) struct OffsetMap {
    latest: HashMap<Bytes, u64>,
    producers: HashMap<i64, u64>,
}

impl OffsetMap {
    /// Takes in one batch; batches must come in offset order.
    pub(crate) fn add(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.producer_id() >= 0 {
            self.producers
                .insert(batch.producer_id(), batch.base_offset());
        }
        if !is_cleanable(batch) {
            return Ok(());
        }
        for record in batch.records() {
            let record = record?;
            if let Some(key) = record.key {
                self.latest.insert(key, record.offset);
            }
        }
        Ok(())
    }

    fn is_latest(&self, record: &Record) -> bool {
        record
            .key
            .as_ref()
            .is_some_and(|k| self.latest.get(k) == Some(&record.offset))
    }

    fn is_producers_last(&self, batch: &RecordBatch) -> bool {
        batch.producer_id() >= 0
            && self.producers.get(&batch.producer_id()) == Some(&batch.base_offset())
    }
}

/// What cleaning one segment's batches gave.
#[derive(Debug, Default)]
pub(crate) struct CleanedBatches {
    /// The batches to keep, covering the same offsets as the input.
    pub(crate) batches: Vec<RecordBatch>,
    /// Whether anything differs from the input (else nothing need be written).
    pub(crate) changed: bool,
    /// Records removed.
    pub(crate) records_removed: u64,
    /// The earliest delete horizon of a kept batch that still holds a
    /// tombstone: when a clean would next remove something with no new data.
    pub(crate) next_horizon: Option<Millis>,
}

/// Whether the cleaner can look at this batch's records.
fn is_cleanable(batch: &RecordBatch) -> bool {
    !batch.is_control() && batch.compression().is_some_and(Compression::is_enabled)
}

/// An empty batch with no producer: what removed batches become.
fn is_filler(batch: &RecordBatch) -> bool {
    batch.record_count() == 0 && batch.producer_id() < 0 && !batch.is_control()
}

/// Consecutive removed batches of one leader epoch, waiting to become one
/// filler.
#[derive(Debug)]
struct Run {
    first: RecordBatch,
    last_offset: u64,
    max_timestamp: i64,
    len: usize,
}

impl Run {
    fn new(batch: RecordBatch) -> Self {
        Self {
            last_offset: batch.last_offset(),
            max_timestamp: batch.max_timestamp(),
            first: batch,
            len: 1,
        }
    }

    /// Adds `batch` if it can share this run's filler.
    fn extend(&mut self, batch: &RecordBatch) -> bool {
        let span = batch.last_offset() - self.first.base_offset();
        if batch.partition_leader_epoch() != self.first.partition_leader_epoch()
            || span > i32::MAX as u64
        {
            return false;
        }
        self.last_offset = batch.last_offset();
        self.max_timestamp = self.max_timestamp.max(batch.max_timestamp());
        self.len += 1;
        true
    }

    /// The filler, and whether it differs from the input.
    fn finish(self) -> (RecordBatch, bool) {
        if self.len == 1 && is_filler(&self.first) {
            return (self.first, false);
        }
        let header = BatchHeader {
            base_offset: self.first.base_offset(),
            partition_leader_epoch: self.first.partition_leader_epoch(),
            attributes: 0,
            last_offset_delta: (self.last_offset - self.first.base_offset()) as i32,
            base_timestamp: self.max_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
        };
        (RecordBatch::encode(&header, &[]), true)
    }
}

/// What becomes of one batch.
enum Outcome {
    Keep(RecordBatch),
    Rewrite(RecordBatch),
    Remove(RecordBatch),
}

/// Cleans the batches of one sealed segment (in offset order) against `map`
/// at time `now`; see the [module docs](self) for the rules.
pub(crate) fn clean_batches(
    batches: Vec<RecordBatch>,
    map: &OffsetMap,
    now: Millis,
    delete_retention_ms: Millis,
) -> Result<CleanedBatches> {
    let mut out = CleanedBatches::default();
    let mut run: Option<Run> = None;
    for batch in batches {
        let outcome = clean_one(batch, map, now, delete_retention_ms, &mut out)?;
        let kept = match outcome {
            Outcome::Remove(batch) => {
                if let Some(r) = run.as_mut()
                    && r.extend(&batch)
                {
                    continue;
                }
                if let Some(done) = run.replace(Run::new(batch)) {
                    out.push_filler(done);
                }
                continue;
            }
            Outcome::Keep(batch) => batch,
            Outcome::Rewrite(batch) => {
                out.changed = true;
                batch
            }
        };
        if let Some(done) = run.take() {
            out.push_filler(done);
        }
        if let Some(h) = kept.delete_horizon_ms()
            && has_tombstone(&kept)?
        {
            out.next_horizon = Some(out.next_horizon.map_or(h, |n| n.min(h)));
        }
        out.batches.push(kept);
    }
    if let Some(done) = run.take() {
        out.push_filler(done);
    }
    Ok(out)
}

impl CleanedBatches {
    fn push_filler(&mut self, run: Run) {
        let (filler, changed) = run.finish();
        self.changed |= changed;
        self.batches.push(filler);
    }
}

fn has_tombstone(batch: &RecordBatch) -> Result<bool> {
    if !is_cleanable(batch) {
        return Ok(false);
    }
    for record in batch.records() {
        if record?.value.is_none() {
            return Ok(true);
        }
    }
    Ok(false)
}

fn clean_one(
    batch: RecordBatch,
    map: &OffsetMap,
    now: Millis,
    delete_retention_ms: Millis,
    out: &mut CleanedBatches,
) -> Result<Outcome> {
    if !is_cleanable(&batch) {
        return Ok(Outcome::Keep(batch));
    }
    let horizon = batch.delete_horizon_ms();
    let expired = horizon.is_some_and(|h| now >= h);
    let mut kept = Vec::new();
    let mut total = 0u64;
    for record in batch.records() {
        let record = record?;
        total += 1;
        let tombstone = record.value.is_none();
        if map.is_latest(&record) && !(tombstone && expired) {
            kept.push(record);
        }
    }
    let removed = total - kept.len() as u64;
    out.records_removed += removed;
    if kept.is_empty() {
        if !map.is_producers_last(&batch) {
            return Ok(Outcome::Remove(batch));
        }
        // The producer's last batch stays, without records, so its sequence
        // numbers survive a restart.
        if total == 0 && horizon.is_none() {
            return Ok(Outcome::Keep(batch));
        }
        let header = BatchHeader {
            base_timestamp: batch.max_timestamp(),
            ..BatchHeader::of(&batch)
        }
        .with_delete_horizon(None);
        return Ok(Outcome::Rewrite(RecordBatch::encode(&header, &[])));
    }
    let new_horizon = kept
        .iter()
        .any(|r| r.value.is_none())
        .then(|| horizon.unwrap_or_else(|| now.saturating_add(delete_retention_ms)));
    if removed == 0 && new_horizon == horizon {
        return Ok(Outcome::Keep(batch));
    }
    let mut header = BatchHeader::of(&batch).with_delete_horizon(new_horizon);
    if new_horizon.is_none() {
        header.base_timestamp = kept[0].timestamp;
    }
    if batch.timestamp_type() == TimestampType::CreateTime {
        // Log-append-time batches keep theirs: it is every record's timestamp.
        header.max_timestamp = kept.iter().map(|r| r.timestamp).max().unwrap_or(i64::MIN);
    }
    Ok(Outcome::Rewrite(RecordBatch::encode(&header, &kept)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordBatchBuilder;

    const DAY: Millis = 86_400_000;

    /// A batch at `base` of (key, value) records, one offset each.
    fn batch(base: u64, epoch: i32, records: &[(&str, Option<&str>)]) -> RecordBatch {
        let mut b = RecordBatchBuilder::new();
        for (i, (k, v)) in records.iter().enumerate() {
            b.append(
                1_000 + i as i64,
                Some(k.as_bytes()),
                v.map(str::as_bytes),
                &[],
            );
        }
        b.build().stamped(base, epoch)
    }

    fn map_of(batches: &[RecordBatch]) -> OffsetMap {
        let mut map = OffsetMap::default();
        for b in batches {
            map.add(b).unwrap();
        }
        map
    }

    fn records(batches: &[RecordBatch]) -> Vec<(u64, String, Option<String>)> {
        batches
            .iter()
            .flat_map(|b| b.records())
            .map(|r| {
                let r = r.unwrap();
                let s = |b: bytes::Bytes| String::from_utf8(b.to_vec()).unwrap();
                (r.offset, s(r.key.unwrap()), r.value.map(s))
            })
            .collect()
    }

    /// Batches cover their offsets densely: each starts where the last ended.
    fn assert_dense(batches: &[RecordBatch], from: u64, to: u64) {
        let mut next = from;
        for b in batches {
            b.validate().unwrap();
            assert_eq!(b.base_offset(), next);
            next = b.next_offset();
        }
        assert_eq!(next, to);
    }

    #[test]
    fn keeps_the_latest_record_per_key_and_the_batch_offsets() {
        let input = vec![
            batch(
                0,
                1,
                &[("a", Some("1")), ("b", Some("1")), ("a", Some("2"))],
            ),
            batch(3, 1, &[("b", Some("2"))]),
        ];
        let out = clean_batches(input.clone(), &map_of(&input), 0, DAY).unwrap();
        assert!(out.changed);
        assert_eq!(out.records_removed, 2);
        assert_eq!(
            records(&out.batches),
            vec![
                (2, "a".into(), Some("2".into())),
                (3, "b".into(), Some("2".into()))
            ]
        );
        assert_dense(&out.batches, 0, 4);
        assert_eq!(out.batches[0].last_offset(), 2);
        assert_eq!(out.batches[0].partition_leader_epoch(), 1);
        // Timestamps read the same after the rewrite.
        let r = out.batches[0].records().next().unwrap().unwrap();
        assert_eq!(r.timestamp, 1_002);
        assert_eq!(out.batches[0].max_timestamp(), 1_002);
    }

    #[test]
    fn removed_batches_of_one_epoch_become_one_filler() {
        let input = vec![
            batch(0, 1, &[("a", Some("1"))]),
            batch(1, 1, &[("a", Some("2"))]),
            batch(2, 2, &[("a", Some("3"))]),
            batch(3, 2, &[("a", Some("4"))]),
            batch(4, 2, &[("a", Some("5"))]),
        ];
        let later = batch(5, 2, &[("a", Some("6"))]);
        let mut all = input.clone();
        all.push(later);
        let out = clean_batches(input, &map_of(&all), 0, DAY).unwrap();
        assert_eq!(out.records_removed, 5);
        assert_eq!(out.batches.len(), 2, "one filler per epoch");
        assert_dense(&out.batches, 0, 5);
        assert_eq!(out.batches[0].partition_leader_epoch(), 1);
        assert_eq!(out.batches[1].partition_leader_epoch(), 2);
        assert!(out.batches.iter().all(|b| b.record_count() == 0));
        // Cleaning the result again changes nothing.
        let again = clean_batches(out.batches.clone(), &map_of(&all), 0, DAY).unwrap();
        assert!(!again.changed);
        assert_eq!(again.batches, out.batches);
    }

    #[test]
    fn tombstones_get_a_horizon_and_go_after_it() {
        let input = vec![batch(
            0,
            0,
            &[("a", Some("1")), ("a", None), ("b", Some("1"))],
        )];
        let map = map_of(&input);
        let first = clean_batches(input, &map, 5_000, DAY).unwrap();
        assert_eq!(first.batches[0].delete_horizon_ms(), Some(5_000 + DAY));
        assert_eq!(first.next_horizon, Some(5_000 + DAY));
        assert_eq!(
            records(&first.batches),
            vec![(1, "a".into(), None), (2, "b".into(), Some("1".into()))]
        );
        let r: Vec<_> = first.batches[0].records().map(|r| r.unwrap()).collect();
        assert_eq!((r[0].timestamp, r[1].timestamp), (1_001, 1_002));
        // Before the horizon nothing changes.
        let early = clean_batches(first.batches.clone(), &map, 5_000 + DAY - 1, DAY).unwrap();
        assert!(!early.changed);
        // At the horizon the tombstone goes and the flag with it.
        let late = clean_batches(first.batches, &map, 5_000 + DAY, DAY).unwrap();
        assert!(late.changed);
        assert_eq!(
            records(&late.batches),
            vec![(2, "b".into(), Some("1".into()))]
        );
        assert_eq!(late.batches[0].delete_horizon_ms(), None);
        assert_eq!(late.batches[0].first_timestamp(), 1_002);
        assert_eq!(late.next_horizon, None);
        assert_dense(&late.batches, 0, 3);
    }

    #[test]
    fn a_producers_last_batch_stays_empty_with_its_sequence() {
        let mut b = RecordBatchBuilder::new().producer(7, 3, 40);
        b.append(1_000, Some(b"a"), Some(b"1"), &[]);
        b.append(1_000, Some(b"a"), Some(b"2"), &[]);
        let produced = b.build().stamped(0, 0);
        let later = batch(2, 0, &[("a", Some("3"))]);
        let map = map_of(&[produced.clone(), later]);
        let out = clean_batches(vec![produced], &map, 0, DAY).unwrap();
        let kept = &out.batches[0];
        assert_eq!(kept.record_count(), 0);
        assert_eq!(
            (
                kept.producer_id(),
                kept.producer_epoch(),
                kept.base_sequence()
            ),
            (7, 3, 40)
        );
        assert_eq!(kept.last_offset(), 1);
    }

    #[test]
    fn keyless_records_are_removed() {
        let mut b = RecordBatchBuilder::new();
        b.append(1, None, Some(b"x"), &[]);
        let keyless = b.build().stamped(0, 0);
        let kept = batch(1, 0, &[("k", Some("v"))]);
        let input = vec![keyless, kept];
        let out = clean_batches(input.clone(), &map_of(&input), 0, DAY).unwrap();
        assert_eq!(
            records(&out.batches),
            vec![(1, "k".into(), Some("v".into()))]
        );
        assert_dense(&out.batches, 0, 2);
    }
}
