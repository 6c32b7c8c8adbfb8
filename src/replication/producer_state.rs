//! Idempotent producers' state on one partition replica (Kafka's
//! `ProducerStateManager`).
//!
//! For each producer id the replica remembers its epoch and the sequence
//! ranges and offsets of its last [`BATCHES_KEPT`] batches. A leader checks
//! each produced batch against it: a batch seen before is a retry and gets
//! its original offsets back without being written again; one that does not
//! follow the last sequence is refused (a gap would reorder records); one
//! from an older epoch is fenced. Followers record the batches they copy, so
//! a new leader knows the same; a replica that opens or truncates its log
//! rebuilds the table by reading the batch headers.

use std::collections::{BTreeMap, VecDeque};

use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::record::RecordBatch;
use crate::topic::TopicPartition;

/// How many batches per producer are remembered (Kafka keeps 5, which is why
/// an idempotent producer may have at most 5 requests in flight).
pub const BATCHES_KEPT: usize = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchEntry {
    first_sequence: i32,
    last_sequence: i32,
    base_offset: u64,
    last_offset: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchEntry>,
}

/// The producer fields of a batch header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerIds {
    /// The producer id (-1: not idempotent).
    pub producer_id: i64,
    /// The producer epoch.
    pub epoch: i16,
    /// The batch's first sequence.
    pub first_sequence: i32,
    /// Records in the batch minus one.
    pub last_offset_delta: i32,
}

impl ProducerIds {
    /// The producer fields of `batch`.
    pub fn of(batch: &RecordBatch) -> Self {
        Self {
            producer_id: batch.producer_id(),
            epoch: batch.producer_epoch(),
            first_sequence: batch.base_sequence(),
            last_offset_delta: batch.last_offset_delta(),
        }
    }
}

/// What a leader should do with a produced batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SequenceCheck {
    /// Append it (the next in sequence, or not from an idempotent producer).
    Append,
    /// A retry of a batch already in the log at these offsets: answer with
    /// them and append nothing.
    Duplicate {
        /// The original batch's first offset.
        base_offset: u64,
        /// The original batch's last offset.
        last_offset: u64,
    },
}

/// The idempotent producers of one partition; see the [`replication` module docs](crate::replication).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProducerStateTable {
    producers: BTreeMap<i64, ProducerEntry>,
}

impl ProducerStateTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Checks a batch a producer sent to this leader.
    pub fn check(&self, partition: &TopicPartition, batch: &RecordBatch) -> Result<SequenceCheck> {
        let pid = batch.producer_id();
        if pid < 0 {
            return Ok(SequenceCheck::Append);
        }
        let (epoch, first) = (batch.producer_epoch(), batch.base_sequence());
        let last = first.wrapping_add(batch.last_offset_delta());
        let Some(entry) = self.producers.get(&pid) else {
            // A producer this log has no batch of starts at sequence 0: a
            // later batch arriving first (its predecessors failed and wait
            // for their retry, or went to the old leader and were lost)
            // must wait for them, or the log would take the producer's
            // records out of order and refuse the earlier ones forever.
            return first_batch(partition, first);
        };
        if epoch < entry.epoch {
            return Err(Error::InvalidProducerEpoch {
                partition: partition.clone(),
                epoch,
                current: entry.epoch,
            });
        }
        if epoch > entry.epoch {
            return first_batch(partition, first);
        }
        if let Some(seen) = entry
            .batches
            .iter()
            .find(|b| b.first_sequence == first && b.last_sequence == last)
        {
            if planted(PlantedBug::DuplicateBatchAppended) {
                return Ok(SequenceCheck::Append);
            }
            return Ok(SequenceCheck::Duplicate {
                base_offset: seen.base_offset,
                last_offset: seen.last_offset,
            });
        }
        let expected = entry
            .batches
            .back()
            .map_or(0, |b| b.last_sequence.wrapping_add(1));
        if first != expected {
            return Err(Error::OutOfOrderSequence {
                partition: partition.clone(),
                expected,
                got: first,
            });
        }
        Ok(SequenceCheck::Append)
    }

    /// Records a batch now in the log (appended by this leader, copied from
    /// the leader, or found when rebuilding).
    pub fn record(&mut self, batch: &RecordBatch) {
        let ids = ProducerIds::of(batch);
        self.record_at(ids, batch.base_offset(), batch.last_offset());
    }

    /// Records a batch with these producer fields, appended at
    /// `base_offset..=last_offset`.
    pub fn record_at(&mut self, ids: ProducerIds, base_offset: u64, last_offset: u64) {
        if ids.producer_id < 0 || ids.first_sequence < 0 {
            return;
        }
        let entry = self.producers.entry(ids.producer_id).or_default();
        if ids.epoch > entry.epoch || entry.batches.is_empty() {
            if ids.epoch != entry.epoch {
                entry.batches.clear();
            }
            entry.epoch = ids.epoch;
        }
        entry.batches.push_back(BatchEntry {
            first_sequence: ids.first_sequence,
            last_sequence: ids.first_sequence.wrapping_add(ids.last_offset_delta),
            base_offset,
            last_offset,
        });
        while entry.batches.len() > BATCHES_KEPT {
            entry.batches.pop_front();
        }
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&mut self) {
        self.producers.clear();
    }
}

/// The first batch of a producer (or of its new epoch) starts at sequence 0.
fn first_batch(partition: &TopicPartition, first: i32) -> Result<SequenceCheck> {
    if first == 0 {
        Ok(SequenceCheck::Append)
    } else {
        Err(Error::OutOfOrderSequence {
            partition: partition.clone(),
            expected: 0,
            got: first,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::RecordBatchBuilder;

    fn batch(pid: i64, epoch: i16, seq: i32, records: usize, base: u64) -> RecordBatch {
        let mut b = RecordBatchBuilder::new().producer(pid, epoch, seq);
        for _ in 0..records {
            b.append(1, None, Some(b"v"), &[]);
        }
        b.build().stamped(base, 0)
    }

    #[test]
    fn retries_are_recognised_gaps_refused_old_epochs_fenced() {
        let tp = TopicPartition::new("t", 0).unwrap();
        let mut t = ProducerStateTable::new();
        let first = batch(7, 0, 0, 3, 10);
        assert_eq!(t.check(&tp, &first).unwrap(), SequenceCheck::Append);
        t.record(&first);
        assert_eq!(
            t.check(&tp, &first).unwrap(),
            SequenceCheck::Duplicate {
                base_offset: 10,
                last_offset: 12
            }
        );
        let gap = batch(7, 0, 5, 1, 0);
        assert!(matches!(
            t.check(&tp, &gap),
            Err(Error::OutOfOrderSequence {
                expected: 3,
                got: 5,
                ..
            })
        ));
        let next = batch(7, 0, 3, 2, 13);
        assert_eq!(t.check(&tp, &next).unwrap(), SequenceCheck::Append);
        t.record(&next);
        let bumped = batch(7, 1, 0, 1, 15);
        assert_eq!(t.check(&tp, &bumped).unwrap(), SequenceCheck::Append);
        t.record(&bumped);
        assert!(matches!(
            t.check(&tp, &next),
            Err(Error::InvalidProducerEpoch {
                epoch: 0,
                current: 1,
                ..
            })
        ));
        assert_eq!(
            t.check(&tp, &batch(-1, -1, -1, 1, 0)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn a_producer_new_to_the_log_starts_at_sequence_zero() {
        // (Found by simulator seed 8 and others: a new leader took a later
        // batch first and then refused the earlier ones forever.)
        let tp = TopicPartition::new("t", 0).unwrap();
        let t = ProducerStateTable::new();
        assert!(matches!(
            t.check(&tp, &batch(7, 0, 2, 1, 0)),
            Err(Error::OutOfOrderSequence {
                expected: 0,
                got: 2,
                ..
            })
        ));
        assert_eq!(
            t.check(&tp, &batch(7, 0, 0, 1, 0)).unwrap(),
            SequenceCheck::Append
        );
    }

    #[test]
    fn only_the_last_five_batches_are_remembered() {
        let tp = TopicPartition::new("t", 0).unwrap();
        let mut t = ProducerStateTable::new();
        for i in 0..7 {
            t.record(&batch(1, 0, i, 1, i as u64));
        }
        assert!(matches!(
            t.check(&tp, &batch(1, 0, 1, 1, 0)),
            Err(Error::OutOfOrderSequence { .. })
        ));
        assert!(matches!(
            t.check(&tp, &batch(1, 0, 2, 1, 0)),
            Ok(SequenceCheck::Duplicate { base_offset: 2, .. })
        ));
    }
}
