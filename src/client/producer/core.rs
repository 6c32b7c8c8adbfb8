//! The producer's protocol state as a deterministic state machine
//! ([`ProducerCore`], Kafka's `RecordAccumulator` and `Sender` without the
//! thread).
//!
//! The core holds the batches waiting to be sent, the Produce requests in
//! flight, the idempotent producer's id, and the cluster metadata it sends
//! by. The application appends records; the driver feeds it the answers to
//! its requests and the time, and drains the requests it wants sent and the
//! batches it finished ([`Completion`]). It never blocks, sleeps, reads a
//! clock or calls anyone: the producer's handle and its sender thread do.
//!
//! What it decides: which batches are due (full, lingered, flushed), one
//! Produce request per leader split at `max_request_size`, a partition with
//! at most one batch in flight (up to five when idempotent) so records land
//! in send order, retries of retriable errors after a capped exponential
//! backoff (a batch whose first attempt may still land is never sent again
//! while it is unanswered), `delivery_timeout_ms`, and metadata refreshes
//! when a leader is unknown or moved.

use std::collections::{BTreeMap, VecDeque};

use super::accumulator::{Accumulator, Appended, ProducerBatch};
use crate::client::ProducerConfig;
use crate::client::metadata::{MetadataCache, queue_request};
use crate::error::{Error, Result};
use crate::metrics::{Histogram, ProducerMetrics};
use crate::protocol::{
    Acks, CONTROLLER_ID, Envelope, Message, NodeId, Peer, ProduceAck, ProducePartition,
    ProduceRequest, Request, Response,
};
use crate::record::Header;
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Minimum wait between metadata refreshes asked for by failed or
/// leaderless batches, whatever `retry_backoff_ms` says.
const MIN_REFRESH_BACKOFF_MS: Millis = 50;

/// A batch the core is done with: the base offset it was written at (`None`
/// with acks=0), or why it failed.
#[derive(Debug)]
pub(crate) struct Completion {
    /// The batch, as [`Appended::batch`] named it.
    pub(crate) batch: u64,
    /// The first record the outcome is for: 0, unless the batch was split
    /// (then each part has its outcome).
    pub(crate) first_index: u32,
    /// How many records, from `first_index`, the outcome is for.
    pub(crate) records: u32,
    /// Its outcome: the offset of record `first_index`, or why it failed.
    pub(crate) outcome: Result<Option<u64>>,
}

/// A Produce request without an answer yet.
///
/// It stays in flight until its answer comes, however long that takes (a
/// transport answers an undeliverable request with a network error, and a
/// node that stops answers what it owes the same way): sending the batch
/// again while the first attempt may still land would write it twice, or
/// after the partition's next batch. Batches whose delivery timeout passes
/// in the meantime are failed at once, but their partitions stay blocked
/// until the answer comes.
struct InFlight {
    /// The leader asked.
    node: NodeId,
    sent_ms: Millis,
    batches: Vec<ProducerBatch>,
    expired: Vec<(TopicPartition, u64)>,
}

/// What the producer counts for its metrics.
#[derive(Default)]
struct ProducerStats {
    records_sent: u64,
    record_errors: u64,
    retries: u64,
    requests: u64,
    batch_records: Histogram,
    queue_time_ms: Histogram,
    produce_latency_ms: Histogram,
}

impl ProducerStats {
    /// `batch` goes out (its first send, or a retry) at `now`.
    fn sending(&mut self, batch: &ProducerBatch, now: Millis) {
        if batch.attempts == 1 {
            let queued = now.saturating_sub(batch.created_ms).max(0) as u64;
            self.queue_time_ms.record(queued);
            self.batch_records.record(batch.record_count() as u64);
        } else {
            self.retries += 1;
        }
    }

    /// `batch` has its outcome (at `now`, when known: its latency).
    fn completed(&mut self, batch: &ProducerBatch, ok: bool, now: Option<Millis>) {
        let records = batch.record_count() as u64;
        if !ok {
            self.record_errors += records;
            return;
        }
        self.records_sent += records;
        if let Some(now) = now {
            let latency = now.saturating_sub(batch.created_ms).max(0) as u64;
            self.produce_latency_ms.record(latency);
        }
    }
}

/// The producer's protocol state; see the [module docs](self).
pub(crate) struct ProducerCore {
    peer: Peer,
    config: ProducerConfig,
    acc: Accumulator,
    pub(crate) metadata: MetadataCache,
    in_flight: BTreeMap<u64, InFlight>,
    producer_id: Option<(i64, i16)>,
    /// The InitProducerId request in flight, and when to ask again.
    id_request: Option<u64>,
    next_id_attempt: Millis,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
    completions: VecDeque<Completion>,
    /// When the drain next has something to do.
    next_wake: Millis,
    stats: ProducerStats,
}

impl ProducerCore {
    /// A producer core for client `peer`, asking `bootstrap` first.
    pub(crate) fn new(
        peer: Peer,
        config: ProducerConfig,
        bootstrap: Vec<NodeId>,
        seed: u32,
    ) -> Self {
        Self {
            peer,
            config,
            acc: Accumulator::new(seed),
            metadata: MetadataCache::new(bootstrap),
            in_flight: BTreeMap::new(),
            producer_id: None,
            id_request: None,
            next_id_attempt: Millis::MIN,
            next_correlation_id: 0,
            outbox: VecDeque::new(),
            completions: VecDeque::new(),
            next_wake: Millis::MIN,
            stats: ProducerStats::default(),
        }
    }

    // ----- the application's calls -------------------------------------------

    /// The partition a record without key or explicit partition goes to (the
    /// sticky partition of `topic`, which has `count` partitions).
    pub(crate) fn sticky_partition(
        &mut self,
        topic: &std::sync::Arc<str>,
        count: u32,
        size: usize,
    ) -> u32 {
        self.acc
            .sticky_partition(topic, count, size, self.config.batch_size)
    }

    /// Appends one record; `reserved` is the room it holds in
    /// `buffer_memory`. Refused once the producer closes.
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
    ) -> Result<Appended> {
        if self.acc.closed {
            return Err(Error::ClientClosed { client: "producer" });
        }
        let appended = self.acc.append(
            tp,
            timestamp,
            key,
            value,
            headers,
            reserved,
            now,
            &self.config,
        );
        if appended.wake_sender {
            self.next_wake = Millis::MIN;
        }
        Ok(appended)
    }

    /// Makes the next [`poll_timeout`](Self::poll_timeout) due at once.
    pub(crate) fn wake(&mut self) {
        self.next_wake = Millis::MIN;
    }

    /// A flush starts (every batch is due until it ends) or ends.
    pub(crate) fn flushing(&mut self, started: bool) {
        if started {
            self.acc.flushing += 1;
            self.next_wake = Millis::MIN;
        } else {
            self.acc.flushing = self.acc.flushing.saturating_sub(1);
        }
    }

    /// The producer closes: every batch is due, new records are refused.
    pub(crate) fn close(&mut self) {
        self.acc.closed = true;
        self.next_wake = Millis::MIN;
    }

    /// Gives up: every batch, queued or in flight, fails with
    /// [`Error::ClientClosed`].
    pub(crate) fn abort(&mut self) {
        self.acc.closed = true;
        let closed = Error::ClientClosed { client: "producer" };
        let mut left = self.acc.take_all();
        left.extend(
            std::mem::take(&mut self.in_flight)
                .into_values()
                .flat_map(|r| r.batches),
        );
        for batch in left {
            self.complete(&batch, Err(closed.clone()), None);
        }
    }

    /// Whether a closing producer has nothing left to deliver (batches
    /// already failed may still wait for their answers; those do not count).
    pub(crate) fn is_done(&self) -> bool {
        self.acc.closed
            && self.acc.is_empty()
            && self.in_flight.values().all(|r| r.batches.is_empty())
    }

    // ----- the driver's calls ----------------------------------------------------

    /// Handles an answer to one of the core's requests.
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        let Message::Response(response) = envelope.message else {
            return; // a producer serves no requests
        };
        let id = envelope.correlation_id;
        if self.metadata.handle_response(now, id, &response) {
            self.next_wake = Millis::MIN;
        } else if self.id_request == Some(id) {
            self.id_request = None;
            match response {
                Ok(Response::InitProducerId(Ok(ids))) => {
                    self.producer_id = Some(ids);
                    self.next_wake = Millis::MIN;
                }
                // The controller moved (or is out of reach): fresh
                // metadata names the active one.
                Err(Error::NotController { .. } | Error::Network { .. }) => {
                    self.metadata.want_refresh();
                }
                _ => {}
            }
        } else if let Some(request) = self.in_flight.remove(&id) {
            if self.settle(request, response, now) {
                self.metadata.want_refresh();
            }
            self.next_wake = Millis::MIN;
        }
    }

    /// Does what is due at `now`: refreshes metadata, asks for a producer
    /// id, fails batches past `delivery_timeout_ms`, and sends the batches
    /// that are due.
    pub(crate) fn handle_timeout(&mut self, now: Millis) {
        let backoff = self.refresh_backoff();
        let (max_age, timeout) = (
            self.config.metadata_max_age_ms as Millis,
            self.config.request_timeout_ms as Millis,
        );
        let Self {
            peer,
            metadata,
            next_correlation_id,
            outbox,
            ..
        } = self;
        metadata.poll(now, max_age, backoff, timeout, |node, request| {
            queue_request(*peer, next_correlation_id, outbox, node, request)
        });
        if self.config.idempotent()
            && self.producer_id.is_none()
            && self.id_request.is_none()
            && now >= self.next_id_attempt
        {
            let controller = self.metadata.controller.unwrap_or(CONTROLLER_ID);
            self.id_request = Some(self.send_request(controller, Request::InitProducerId));
            self.next_id_attempt = now + backoff;
        }
        self.time_out_requests(now);
        self.expire_in_flight(now);
        self.drain(now);
    }

    /// An idempotent producer's Produce requests unanswered for
    /// `request_timeout_ms` fail with [`Error::RequestTimedOut`]
    /// (retriable: their batches go again, with the same sequence numbers,
    /// after fresh metadata), as Kafka's producer gives up on a request — a
    /// leader cut off by the network never answers. The broker drops a
    /// batch it already has by its sequence, so a request that did land is
    /// not written twice; an answer that comes later is ignored. A producer
    /// without idempotence waits for the answer instead (or for the
    /// transport to report the connection lost): sending again could
    /// write the records twice.
    fn time_out_requests(&mut self, now: Millis) {
        if !self.config.idempotent() {
            return;
        }
        let timeout = self.config.request_timeout_ms as Millis;
        let late: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, r)| now.saturating_sub(r.sent_ms) >= timeout)
            .map(|(&id, _)| id)
            .collect();
        for id in late {
            if let Some(request) = self.in_flight.remove(&id) {
                let node = request.node;
                let timed_out = Err(Error::RequestTimedOut {
                    operation: "Produce",
                    timeout_ms: timeout as u64,
                });
                // The leader may be gone: ask where the partitions are now,
                // someone else first.
                self.settle(request, timed_out, now);
                self.metadata.avoid(node);
                self.metadata.want_refresh();
                self.next_wake = Millis::MIN;
            }
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let delivery_timeout = self.config.delivery_timeout_ms as Millis;
        let request_timeout = self.config.request_timeout_ms as Millis;
        let in_flight = self
            .in_flight
            .values()
            .flat_map(|r| &r.batches)
            .map(|b| b.created_ms.saturating_add(delivery_timeout))
            .chain(
                self.in_flight
                    .values()
                    .filter(|_| self.config.idempotent())
                    .map(|r| r.sent_ms.saturating_add(request_timeout)),
            );
        let metadata = [
            self.metadata.due(
                self.config.metadata_max_age_ms as Millis,
                self.refresh_backoff(),
            ),
            self.metadata.deadline(),
        ];
        let id =
            (self.config.idempotent() && self.producer_id.is_none() && self.id_request.is_none())
                .then_some(self.next_id_attempt);
        in_flight
            .chain(metadata.into_iter().flatten())
            .chain(id)
            .chain([self.next_wake])
            .min()
    }

    /// The next request to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// The next batch the core is done with.
    pub(crate) fn poll_completion(&mut self) -> Option<Completion> {
        self.completions.pop_front()
    }

    // ----- internals -------------------------------------------------------------

    fn refresh_backoff(&self) -> Millis {
        (self.config.retry_backoff_ms as Millis).max(MIN_REFRESH_BACKOFF_MS)
    }

    fn send_request(&mut self, to: NodeId, request: Request) -> u64 {
        queue_request(
            self.peer,
            &mut self.next_correlation_id,
            &mut self.outbox,
            to,
            request,
        )
    }

    /// Batch `batch` has its outcome (at `now`, when known: its latency).
    fn complete(
        &mut self,
        batch: &ProducerBatch,
        outcome: Result<Option<u64>>,
        now: Option<Millis>,
    ) {
        if self.config.metrics_enabled {
            self.stats.completed(batch, outcome.is_ok(), now);
        }
        self.completions.push_back(Completion {
            batch: batch.origin,
            first_index: batch.first_index,
            records: batch.record_count() as u32,
            outcome,
        });
    }

    /// A snapshot of the producer's counters; `buffer_memory_used` is the
    /// handle's to fill in.
    pub(crate) fn metrics(&self) -> ProducerMetrics {
        let s = &self.stats;
        ProducerMetrics {
            records_sent: s.records_sent,
            record_errors: s.record_errors,
            retries: s.retries,
            requests: s.requests,
            batch_records: s.batch_records.summary(),
            queue_time_ms: s.queue_time_ms.summary(),
            produce_latency_ms: s.produce_latency_ms.summary(),
            buffer_memory_used: 0,
        }
    }

    /// Fails the in-flight batches whose delivery timeout passed; their
    /// partitions stay blocked until the request is answered.
    fn expire_in_flight(&mut self, now: Millis) {
        let delivery_timeout = self.config.delivery_timeout_ms as Millis;
        let mut late_batches = Vec::new();
        for request in self.in_flight.values_mut() {
            let (late, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut request.batches)
                .into_iter()
                .partition(|b| now.saturating_sub(b.created_ms) >= delivery_timeout);
            request.batches = waiting;
            for mut batch in late {
                if batch.last_error.is_none() {
                    batch.last_error = Some(Error::RequestTimedOut {
                        operation: "Produce",
                        timeout_ms: now.saturating_sub(request.sent_ms) as u64,
                    });
                }
                request.expired.push((batch.partition.clone(), batch.id));
                late_batches.push(batch);
            }
        }
        for batch in late_batches {
            let error = expired(&batch, now);
            self.complete(&batch, Err(error), Some(now));
        }
    }

    /// Takes the due batches and sends them.
    fn drain(&mut self, now: Millis) {
        // Numbered batches wait for the producer id.
        let limit = match (self.config.idempotent(), self.producer_id) {
            (true, None) => 0,
            _ => self.config.in_flight_per_partition(),
        };
        let metadata = &self.metadata;
        let drained = self.acc.drain(
            now,
            &self.config,
            |tp| metadata.leader(tp),
            |tp, since| metadata.deleted_since(tp, since),
            limit,
            self.producer_id,
        );
        self.next_wake = drained.next_wake;
        if drained.leader_unknown {
            self.metadata.want_refresh();
        }
        for batch in drained.expired {
            let error = expired(&batch, now);
            self.complete(&batch, Err(error), Some(now));
        }
        for batch in drained.gone {
            let error = Error::UnknownTopicOrPartition {
                topic: batch.partition.to_string(),
            };
            self.complete(&batch, Err(error), Some(now));
        }
        self.send(drained.ready, now);
    }

    /// Applies a response (or the transport's error) to the batches of one
    /// request. Returns whether metadata should be refreshed.
    fn settle(&mut self, request: InFlight, response: Result<Response>, now: Millis) -> bool {
        for (tp, batch) in &request.expired {
            self.acc.release(tp, *batch);
        }
        let count = request.batches.len();
        let outcomes: Vec<Result<ProduceAck>> = match response {
            Ok(Response::Produce(response)) => {
                let mut by_partition: BTreeMap<TopicPartition, Result<ProduceAck>> = response
                    .partitions
                    .into_iter()
                    .map(|p| (p.partition, p.result))
                    .collect();
                request
                    .batches
                    .iter()
                    .map(|b| {
                        by_partition.remove(&b.partition).unwrap_or_else(|| {
                            Err(Error::InvalidRequest {
                                reason: format!(
                                    "the Produce response has no result for {}",
                                    b.partition
                                ),
                            })
                        })
                    })
                    .collect()
            }
            Ok(other) => vec![Err(crate::client::unexpected("Produce", &other)); count],
            Err(e) => vec![Err(e); count],
        };
        let delivery_timeout = self.config.delivery_timeout_ms as Millis;
        let idempotent = self.config.idempotent();
        let retries = self.config.retries;
        let mut refresh = false;
        for (mut batch, outcome) in request.batches.into_iter().zip(outcomes) {
            match outcome {
                Ok(ack) => {
                    self.acc.release(&batch.partition, batch.id);
                    self.complete(&batch, Ok(Some(ack.base_offset)), Some(now));
                }
                Err(e) => {
                    // Too large for the log, with more than one record: split
                    // and sent again as Kafka's producer does; only a single
                    // record over the limit fails.
                    if let Error::RecordTooLarge { max, .. } = &e
                        && batch.record_count() > 1
                        && now.saturating_sub(batch.created_ms) < delivery_timeout
                    {
                        let max = *max;
                        match self.acc.split(batch, max, self.config.compression_type) {
                            Ok(()) => {
                                trace_event!(debug, error = %e, "producer splits a batch");
                                continue;
                            }
                            Err(back) => batch = *back,
                        }
                    }
                    // An idempotent batch refused for a gap goes again after the
                    // batches before it (which are being retried).
                    let retriable = e.is_retriable()
                        || (idempotent && matches!(e, Error::OutOfOrderSequence { .. }));
                    refresh |= matches!(
                        e,
                        Error::NotLeaderOrFollower { .. }
                            | Error::UnknownTopicOrPartition { .. }
                            | Error::Network { .. }
                    );
                    let in_time = now.saturating_sub(batch.created_ms) < delivery_timeout;
                    if retriable && in_time && batch.attempts <= retries {
                        let retry_at = now + retry_backoff(&self.config, batch.attempts);
                        trace_event!(
                            debug,
                            partition = %batch.partition,
                            attempt = batch.attempts,
                            error = %e,
                            "producer retries a batch"
                        );
                        batch.last_error = Some(e);
                        self.acc.requeue(batch, retry_at);
                    } else {
                        self.acc.release(&batch.partition, batch.id);
                        if matches!(
                            e,
                            Error::RecordTooLarge { .. }
                                | Error::CorruptRecord { .. }
                                | Error::InvalidRecord { .. }
                                | Error::UnsupportedCompression { .. }
                        ) {
                            // Certainly not written: no gap in the sequence.
                            self.acc.unwritten(&batch);
                        }
                        let error = if retriable && !in_time {
                            batch.last_error = Some(e);
                            expired(&batch, now)
                        } else {
                            e
                        };
                        self.complete(&batch, Err(error), Some(now));
                    }
                }
            }
        }
        refresh
    }

    /// Sends ready batches, one request per leader (split at
    /// `max_request_size`).
    fn send(&mut self, ready: Vec<(NodeId, ProducerBatch)>, now: Millis) {
        let mut by_node: BTreeMap<NodeId, Vec<Vec<ProducerBatch>>> = BTreeMap::new();
        let mut sizes: BTreeMap<NodeId, usize> = BTreeMap::new();
        for (node, mut batch) in ready {
            batch.attempts += 1;
            if self.config.metrics_enabled {
                self.stats.sending(&batch, now);
            }
            let size = batch.bytes().size();
            let groups = by_node.entry(node).or_default();
            let used = sizes.entry(node).or_default();
            if groups.is_empty() || *used + size > self.config.max_request_size {
                groups.push(Vec::new());
                *used = 0;
            }
            *used += size;
            if let Some(group) = groups.last_mut() {
                group.push(batch);
            }
        }
        for (node, groups) in by_node {
            for mut batches in groups {
                let partitions = batches
                    .iter_mut()
                    .map(|b| ProducePartition {
                        partition: b.partition.clone(),
                        batch: b.bytes(),
                    })
                    .collect();
                let request = Request::Produce(ProduceRequest {
                    acks: self.config.acks,
                    timeout_ms: self.config.request_timeout_ms.min(u64::from(u32::MAX)) as u32,
                    partitions,
                });
                let id = self.send_request(node, request);
                self.stats.requests += u64::from(self.config.metrics_enabled);
                if self.config.acks == Acks::None {
                    // Nobody answers: delivered as far as the producer knows.
                    for batch in batches {
                        self.acc.release(&batch.partition, batch.id);
                        self.complete(&batch, Ok(None), Some(now));
                    }
                    continue;
                }
                self.in_flight.insert(
                    id,
                    InFlight {
                        node,
                        sent_ms: now,
                        batches,
                        expired: Vec::new(),
                    },
                );
            }
        }
    }
}

/// The error of a batch that waited longer than `delivery_timeout_ms`.
fn expired(batch: &ProducerBatch, now: Millis) -> Error {
    Error::DeliveryTimeout {
        partition: batch.partition.clone(),
        records: batch.record_count(),
        elapsed_ms: now.saturating_sub(batch.created_ms) as u64,
        last_error: batch.last_error.as_ref().map(ToString::to_string),
    }
}

fn retry_backoff(config: &ProducerConfig, attempts: u32) -> Millis {
    let exp = attempts.saturating_sub(1).min(20);
    let backoff = config.retry_backoff_ms.saturating_mul(1 << exp);
    backoff.min(config.retry_backoff_max_ms) as Millis
}
