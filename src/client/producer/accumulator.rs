//! Per-partition batches waiting to be sent (Kafka's `RecordAccumulator`).
//!
//! `send` appends records to the open batch at the back of their partition's
//! queue; the sender drains the front batch of each partition once it is full,
//! has lingered `linger_ms`, or a flush or close asks for it. A partition has
//! at most one batch in flight, and a batch that is retried goes back to the
//! front of its queue, so records reach the log in send order. The accumulator
//! is plain data inside the producer core: it never blocks, sends or calls
//! back, and it knows batches by id (the producer's handle keeps what waits
//! for them).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::client::ProducerConfig;
use crate::error::Error;
use crate::protocol::NodeId;
use crate::record::{
    BATCH_HEADER_LEN, Compression, Header, Record, RecordBatch, RecordBatchBuilder,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Records bound for one partition, sent together.
pub(crate) struct ProducerBatch {
    pub(crate) id: u64,
    pub(crate) partition: TopicPartition,
    builder: Option<RecordBatchBuilder>,
    built: Option<RecordBatch>,
    pub(crate) created_ms: Millis,
    pub(crate) attempts: u32,
    pub(crate) last_error: Option<Error>,
    records: usize,
    size: usize,
    /// The sequence of its first record, once an idempotent producer
    /// numbered it (on first send; retries keep it).
    base_sequence: Option<i32>,
    /// The batch the records were sent into ([`Appended::batch`]): this
    /// one, or the one it was split from.
    pub(crate) origin: u64,
    /// The index in `origin` of this batch's first record.
    pub(crate) first_index: u32,
    /// The partition's [`PartitionQueue::generation`] when the batch was
    /// numbered: the holes registered since then shift its sequence.
    seq_generation: u32,
}

impl ProducerBatch {
    /// The batch's bytes, built once on first send and reused by retries.
    pub(crate) fn bytes(&mut self) -> RecordBatch {
        if let Some(builder) = self.builder.take() {
            self.built = Some(builder.build());
        }
        self.built
            .clone()
            .unwrap_or_else(|| RecordBatchBuilder::new().build())
    }

    /// Numbers the batch for an idempotent producer, before it is built.
    fn assign_sequence(&mut self, producer_id: i64, epoch: i16, sequence: i32) {
        self.builder = self
            .builder
            .take()
            .map(|b| b.producer(producer_id, epoch, sequence));
        self.base_sequence = Some(sequence);
    }

    /// Moves a numbered batch's sequence down past the holes registered
    /// after it was numbered (batches that failed unwritten before it).
    fn close_holes(&mut self, holes: &[(u32, i32, i32)], generation: u32) {
        let Some(mut sequence) = self.base_sequence else {
            return;
        };
        let original = sequence;
        for &(at, hole, count) in holes {
            if at > self.seq_generation && original > hole {
                sequence = sequence.wrapping_sub(count);
            }
        }
        self.seq_generation = generation;
        if sequence != original {
            self.base_sequence = Some(sequence);
            let built = self.bytes();
            self.size = built.size();
            self.built = Some(built.with_base_sequence(sequence));
        }
    }

    /// Records in the batch.
    pub(crate) fn record_count(&self) -> usize {
        self.records
    }
}

#[derive(Default)]
struct PartitionQueue {
    batches: VecDeque<ProducerBatch>,
    in_flight: usize,
    retry_at: Millis,
    /// An idempotent producer's sent batches from the oldest one whose
    /// outcome is not known yet, in sequence order, with whether each is
    /// settled: the broker remembers only the last few batches of a
    /// producer, so a retry is recognised as a duplicate only while at
    /// most `max_in_flight` batches were sent from it on.
    window: VecDeque<(u64, bool)>,
    /// Bumped when a numbered batch fails without being written.
    generation: u32,
    /// (generation, base sequence, records) of each numbered batch that
    /// failed without being written: the batches numbered before it with
    /// later sequences move down by its records, so the broker sees no gap
    /// (Kafka's producer adjusts its sequences the same way).
    holes: Vec<(u32, i32, i32)>,
}

impl PartitionQueue {
    /// Where a batch goes back into the queue to be sent again: an
    /// idempotent one before the first batch with a later (or no)
    /// sequence, any other at the front.
    fn retry_position(&self, base_sequence: Option<i32>) -> usize {
        match base_sequence {
            Some(seq) => self
                .batches
                .iter()
                .position(|b| b.base_sequence.is_none_or(|s| s > seq))
                .unwrap_or(self.batches.len()),
            None => 0,
        }
    }

    /// Batch `id` has its outcome: the window moves past what is settled.
    fn settle(&mut self, id: u64) {
        if let Some(entry) = self.window.iter_mut().find(|(b, _)| *b == id) {
            entry.1 = true;
        }
        while self.window.front().is_some_and(|&(_, settled)| settled) {
            self.window.pop_front();
        }
    }
}

/// What [`Accumulator::append`] did.
pub(crate) struct Appended {
    /// The batch the record went to.
    pub(crate) batch: u64,
    /// The record's index in it.
    pub(crate) index: u32,
    /// The sender should look now (new first batch, full batch, no linger).
    pub(crate) wake_sender: bool,
}

/// What [`Accumulator::drain`] found.
#[derive(Default)]
pub(crate) struct Drained {
    /// Batches to send now, with their leader.
    pub(crate) ready: Vec<(NodeId, ProducerBatch)>,
    /// Batches that waited longer than `delivery_timeout_ms`.
    pub(crate) expired: Vec<ProducerBatch>,
    /// Batches of partitions whose topic was deleted since they were made.
    pub(crate) gone: Vec<ProducerBatch>,
    /// When something next becomes due.
    pub(crate) next_wake: Millis,
    /// Some ready batch's leader is unknown: metadata should be refreshed.
    pub(crate) leader_unknown: bool,
}

/// The producer's batches; see the [module docs](self).
pub(crate) struct Accumulator {
    queues: BTreeMap<TopicPartition, PartitionQueue>,
    sticky: BTreeMap<Arc<str>, (u32, usize)>,
    seed: u32,
    next_batch_id: u64,
    /// An idempotent producer's next sequence per partition.
    next_sequence: BTreeMap<TopicPartition, i32>,
    /// Flushes in progress: while non-zero every batch is ready.
    pub(crate) flushing: usize,
    /// The producer is closing: every batch is ready, `send` is refused.
    pub(crate) closed: bool,
}

impl Accumulator {
    pub(crate) fn new(seed: u32) -> Self {
        Self {
            queues: BTreeMap::new(),
            sticky: BTreeMap::new(),
            seed,
            next_batch_id: 0,
            next_sequence: BTreeMap::new(),
            flushing: 0,
            closed: false,
        }
    }

    /// The partition for a record without key or explicit partition: the same
    /// one until `batch_size` bytes went to it, then the next (Kafka's
    /// uniform sticky partitioning, KIP-794).
    pub(crate) fn sticky_partition(
        &mut self,
        topic: &Arc<str>,
        count: u32,
        size: usize,
        batch_size: usize,
    ) -> u32 {
        let seed = self.seed;
        let entry = match self.sticky.get_mut(topic) {
            Some(entry) => entry,
            None => self.sticky.entry(topic.clone()).or_insert((seed, 0)),
        };
        let partition = entry.0 % count;
        entry.1 += size;
        if entry.1 >= batch_size.max(1) {
            *entry = (partition + 1, 0);
        } else {
            entry.0 = partition;
        }
        partition
    }

    /// Appends one record to `tp`'s open batch, opening one if needed.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn append(
        &mut self,
        tp: &TopicPartition,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
        reserved: usize,
        now: Millis,
        config: &ProducerConfig,
    ) -> Appended {
        let queue = match self.queues.get_mut(tp) {
            Some(queue) => queue,
            None => self.queues.entry(tp.clone()).or_default(),
        };
        let fits = queue.batches.back().is_some_and(|batch| {
            batch.builder.as_ref().is_some_and(|builder| {
                batch.size + builder.record_size(timestamp, key, value, headers)
                    <= config.batch_size
            })
        });
        if !fits {
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            // Grown as records arrive, so memory follows what `buffer_memory`
            // accounts for rather than `batch_size` per open batch.
            let needed = BATCH_HEADER_LEN + reserved;
            queue.batches.push_back(ProducerBatch {
                id,
                partition: tp.clone(),
                builder: Some(
                    RecordBatchBuilder::with_capacity(needed.max(1024))
                        .compression(config.compression_type),
                ),
                built: None,
                created_ms: now,
                attempts: 0,
                last_error: None,
                records: 0,
                size: BATCH_HEADER_LEN,
                base_sequence: None,
                origin: id,
                first_index: 0,
                seq_generation: 0,
            });
        }
        let opened = !fits;
        let only_batch = queue.batches.len() == 1;
        let Some(batch) = queue.batches.back_mut() else {
            unreachable!("a batch was just pushed or found");
        };
        let Some(builder) = batch.builder.as_mut() else {
            unreachable!("the back batch is open");
        };
        builder.append(timestamp, key, value, headers);
        batch.size = builder.size();
        let index = batch.records as u32;
        batch.records += 1;
        let full = batch.size >= config.batch_size;
        Appended {
            batch: batch.id,
            index,
            wake_sender: (opened && only_batch) || full || config.linger_ms == 0,
        }
    }

    /// Takes the batches that are due, with their leaders; expires those that
    /// waited longer than `delivery_timeout_ms`.
    pub(crate) fn drain(
        &mut self,
        now: Millis,
        config: &ProducerConfig,
        leader: impl Fn(&TopicPartition) -> Option<NodeId>,
        gone: impl Fn(&TopicPartition, Millis) -> bool,
        max_in_flight: usize,
        producer: Option<(i64, i16)>,
    ) -> Drained {
        let linger = config.linger_ms as Millis;
        let delivery_timeout = config.delivery_timeout_ms as Millis;
        let hurry = self.closed || self.flushing > 0;
        let mut out = Drained {
            next_wake: Millis::MAX,
            ..Drained::default()
        };
        for (tp, queue) in &mut self.queues {
            // The topic was deleted after these batches were made: they
            // fail now, not at the delivery timeout; a topic made again
            // under the name starts its sequences afresh.
            let mut deleted = false;
            while queue
                .batches
                .front()
                .is_some_and(|b| gone(tp, b.created_ms))
            {
                if let Some(batch) = queue.batches.pop_front() {
                    queue.settle(batch.id);
                    out.gone.push(batch);
                    deleted = true;
                }
            }
            if deleted && queue.batches.is_empty() && queue.in_flight == 0 {
                queue.window.clear();
                self.next_sequence.remove(tp);
            }
            while queue
                .batches
                .front()
                .is_some_and(|b| now.saturating_sub(b.created_ms) >= delivery_timeout)
            {
                if let Some(batch) = queue.batches.pop_front() {
                    queue.settle(batch.id);
                    out.expired.push(batch);
                }
            }
            let Some(front) = queue.batches.front() else {
                continue;
            };
            out.next_wake = out.next_wake.min(front.created_ms + delivery_timeout);
            if queue.in_flight >= max_in_flight {
                continue;
            }
            // An idempotent producer's retried batch goes alone, once
            // nothing else of its partition is in flight, and before any
            // newer batch: its outcome is unknown (the broker may have
            // appended it), and only while at most `max_in_flight` batches
            // followed it does the broker still remember it and answer a
            // retry as a duplicate (found by simulator seeds 339 and 996).
            if producer.is_some() && front.base_sequence.is_some() && queue.in_flight > 0 {
                continue;
            }
            if producer.is_some()
                && front.base_sequence.is_none()
                && queue.window.len() >= max_in_flight
            {
                continue;
            }
            if queue.retry_at > now {
                out.next_wake = out.next_wake.min(queue.retry_at);
                continue;
            }
            let ready = hurry
                || queue.batches.len() > 1
                || front.builder.is_none()
                || front.size >= config.batch_size
                || now >= front.created_ms + linger;
            if !ready {
                out.next_wake = out.next_wake.min(front.created_ms + linger);
                continue;
            }
            let Some(node) = leader(tp) else {
                out.leader_unknown = true;
                out.next_wake = out
                    .next_wake
                    .min(now + (config.retry_backoff_ms as Millis).max(50));
                continue;
            };
            if let Some(mut batch) = queue.batches.pop_front() {
                if let (Some((id, epoch)), None) = (producer, batch.base_sequence) {
                    let next = self.next_sequence.entry(tp.clone()).or_insert(0);
                    batch.assign_sequence(id, epoch, *next);
                    batch.seq_generation = queue.generation;
                    *next = next.wrapping_add(batch.record_count() as i32);
                    queue.window.push_back((batch.id, false));
                }
                queue.in_flight += 1;
                out.ready.push((node, batch));
            }
        }
        out
    }

    /// Puts a batch that will be retried back into its queue, before every
    /// batch sent after it (by sequence), so it goes first again.
    pub(crate) fn requeue(&mut self, mut batch: ProducerBatch, retry_at: Millis) {
        let queue = self.queues.entry(batch.partition.clone()).or_default();
        batch.close_holes(&queue.holes, queue.generation);
        queue.in_flight = queue.in_flight.saturating_sub(1);
        queue.retry_at = queue.retry_at.max(retry_at);
        let at = queue.retry_position(batch.base_sequence);
        queue.batches.insert(at, batch);
    }

    /// Splits `batch`, in flight and refused as larger than `max` bytes, into
    /// batches of at most `max` bytes of records each (at least two),
    /// queued in its place as Kafka's producer does: each keeps the
    /// records' order, timestamps and codec, the original's creation time
    /// (its delivery timeout) and origin, and an idempotent batch's
    /// sequence numbers run on from its own, so the batches sent after it
    /// still follow. Gives the batch back if its records do not decode.
    pub(crate) fn split(
        &mut self,
        mut batch: ProducerBatch,
        max: usize,
        codec: Compression,
    ) -> Result<(), Box<ProducerBatch>> {
        let built = batch.bytes();
        let Ok(records) = built
            .records()
            .collect::<crate::error::Result<Vec<Record>>>()
        else {
            return Err(Box::new(batch));
        };
        if records.len() < 2 {
            return Err(Box::new(batch));
        }
        // Greedy packing by uncompressed size; halves if that keeps one.
        let mut pieces: Vec<std::ops::Range<usize>> = Vec::new();
        let mut builder = RecordBatchBuilder::new();
        let mut start = 0;
        for (i, r) in records.iter().enumerate() {
            let size = builder.record_size(
                r.timestamp,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            );
            if i > start && builder.size() + size > max {
                pieces.push(start..i);
                start = i;
                builder = RecordBatchBuilder::new();
            }
            builder.push(r);
        }
        pieces.push(start..records.len());
        if pieces.len() < 2 {
            let half = records.len() / 2;
            pieces = vec![0..half, half..records.len()];
        }
        let queue = self.queues.entry(batch.partition.clone()).or_default();
        let mut children = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let mut builder = RecordBatchBuilder::new().compression(codec);
            let sequence = batch
                .base_sequence
                .map(|s| s.wrapping_add(piece.start as i32));
            if let Some(sequence) = sequence {
                builder = builder.producer(built.producer_id(), built.producer_epoch(), sequence);
            }
            for r in &records[piece.clone()] {
                builder.push(r);
            }
            let id = self.next_batch_id;
            self.next_batch_id += 1;
            let child = builder.build();
            children.push(ProducerBatch {
                id,
                partition: batch.partition.clone(),
                builder: None,
                size: child.size(),
                built: Some(child),
                created_ms: batch.created_ms,
                attempts: 0,
                last_error: batch.last_error.take(),
                records: piece.len(),
                base_sequence: sequence,
                origin: batch.origin,
                first_index: batch.first_index + piece.start as u32,
                seq_generation: batch.seq_generation,
            });
        }
        queue.in_flight = queue.in_flight.saturating_sub(1);
        if let Some(at) = queue.window.iter().position(|&(id, _)| id == batch.id) {
            queue.window.remove(at);
            for (i, child) in children.iter().enumerate() {
                queue.window.insert(at + i, (child.id, false));
            }
        }
        let at = queue.retry_position(batch.base_sequence);
        for (i, child) in children.into_iter().enumerate() {
            queue.batches.insert(at + i, child);
        }
        Ok(())
    }

    /// A numbered batch failed without being written (refused as too
    /// large or malformed): its sequence numbers are given back, and the
    /// batches numbered before with later sequences move down — those
    /// queued now, those in flight when they come back to be retried.
    pub(crate) fn unwritten(&mut self, batch: &ProducerBatch) {
        let Some(sequence) = batch.base_sequence else {
            return;
        };
        let count = batch.record_count() as i32;
        let queue = self.queues.entry(batch.partition.clone()).or_default();
        queue.generation += 1;
        queue.holes.push((queue.generation, sequence, count));
        if let Some(next) = self.next_sequence.get_mut(&batch.partition) {
            *next = next.wrapping_sub(count);
        }
        let (holes, generation) = (queue.holes.clone(), queue.generation);
        for queued in &mut queue.batches {
            queued.close_holes(&holes, generation);
        }
    }

    /// One of the partition's in-flight batches, `batch`, is done.
    pub(crate) fn release(&mut self, tp: &TopicPartition, batch: u64) {
        if let Some(queue) = self.queues.get_mut(tp) {
            queue.in_flight = queue.in_flight.saturating_sub(1);
            queue.settle(batch);
            if queue.in_flight == 0 && queue.batches.iter().all(|b| b.base_sequence.is_none()) {
                // No batch numbered before a hole is left to move.
                queue.holes.clear();
            }
        }
    }

    /// Removes every queued batch (a forced close).
    pub(crate) fn take_all(&mut self) -> Vec<ProducerBatch> {
        self.queues
            .values_mut()
            .flat_map(|q| std::mem::take(&mut q.batches))
            .collect()
    }

    /// Whether no batch waits in any queue.
    pub(crate) fn is_empty(&self) -> bool {
        self.queues.values().all(|q| q.batches.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An idempotent producer never sends more batches after one whose
    /// outcome it does not know than the broker remembers, and sends a
    /// retry alone (found by simulator seeds 339, 567 and 996).
    #[test]
    fn an_idempotent_retry_stays_within_what_the_broker_remembers() {
        let config = ProducerConfig {
            linger_ms: 0,
            batch_size: 1,
            ..ProducerConfig::default()
        };
        let tp = TopicPartition::new("t", 0).unwrap();
        let mut acc = Accumulator::new(1);
        for _ in 0..12 {
            acc.append(&tp, 0, None, Some(b"v"), &[], 16, 0, &config);
        }
        let producer = Some((7, 0));
        let drain = |acc: &mut Accumulator| {
            let drained = acc.drain(0, &config, |_| Some(0), |_, _| false, 5, producer);
            drained
                .ready
                .into_iter()
                .map(|(_, b)| b)
                .collect::<Vec<_>>()
        };
        let mut sent = Vec::new();
        for _ in 0..5 {
            sent.extend(drain(&mut acc));
        }
        assert_eq!(sent.len(), 5, "five in flight");
        assert!(drain(&mut acc).is_empty());
        // The first one's answer is lost; the others succeed.
        let first = sent.remove(0);
        acc.requeue(first, 0);
        for b in &sent {
            acc.release(&tp, b.id);
        }
        // The window still starts at the unsettled first batch: nothing new
        // goes, only the retry, alone.
        let retry = drain(&mut acc);
        assert_eq!(retry.len(), 1);
        assert_eq!(retry[0].base_sequence, Some(0));
        assert!(drain(&mut acc).is_empty(), "nothing beside the retry");
        acc.release(&tp, retry[0].id);
        assert_eq!(drain(&mut acc).len(), 1, "settled: new batches go again");
    }
}
