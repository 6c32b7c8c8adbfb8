//! The producer's one background thread (Kafka's `Sender`).
//!
//! It drains due batches from the accumulator, groups them by leader into
//! Produce requests, and settles the responses: success completes a batch,
//! a retriable error puts it back at the front of its queue after a backoff
//! (refreshing metadata when the leader may have moved), anything else — or
//! `delivery_timeout_ms` running out — fails it. A request is never sent
//! again while its first attempt is unanswered (see [`InFlight`]), so a slow
//! answer cannot turn into a duplicate or a reordering. Responses arrive on
//! the delivering thread, which only queues them and wakes this thread; user
//! callbacks and interceptors run here, never under a lock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ProducerShared;
use super::accumulator::{Accumulator, ProducerBatch};
use crate::client::ProducerConfig;
use crate::client::core::unexpected;
use crate::error::{Error, Result};
use crate::protocol::{
    Acks, NodeId, ProduceAck, ProducePartition, ProduceRequest, Request, Response,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Longest the sender sleeps when nothing is due, so it re-checks its state.
const IDLE_SLEEP_MS: Millis = 1_000;

/// Minimum wait between metadata refreshes asked for by failed or
/// leaderless batches, whatever `retry_backoff_ms` says.
const MIN_REFRESH_BACKOFF_MS: Millis = 50;

/// A Produce request without an answer yet.
///
/// It stays in flight until its answer comes, however long that takes (a
/// transport answers an undeliverable request with a network error, and a
/// node that stops answers what it owes the same way): sending the batch again
/// while the first attempt may still land would write it twice, or after
/// the partition's next batch. Batches whose delivery timeout passes in the
/// meantime are failed at once, but their partitions stay blocked until the
/// answer comes.
struct InFlight {
    sent_ms: Millis,
    batches: Vec<ProducerBatch>,
    expired: Vec<TopicPartition>,
}

/// The sender loop; returns once the producer is closed and everything it
/// held has been delivered or failed, or at once when aborted.
pub(crate) fn run(shared: &Arc<ProducerShared>) {
    let config = &shared.config;
    let backoff = (config.retry_backoff_ms as Millis).max(MIN_REFRESH_BACKOFF_MS);
    let delivery_timeout = config.delivery_timeout_ms as Millis;
    let mut in_flight: HashMap<u64, InFlight> = HashMap::new();
    let mut next_request = 0u64;
    let mut refresh_wanted = false;
    let mut last_refresh: Millis = Millis::MIN / 2;
    let max_age = Duration::from_millis(config.metadata_max_age_ms);
    let timeout = Duration::from_millis(config.request_timeout_ms);
    let mut producer_id: Option<(i64, i16)> = None;
    let mut next_id_attempt: Millis = Millis::MIN;
    loop {
        if config.idempotent() && producer_id.is_none() && shared.clock.now_ms() >= next_id_attempt
        {
            producer_id = init_producer_id(shared, timeout);
            next_id_attempt = shared.clock.now_ms() + backoff;
        }
        // Failure keeps the old metadata; batches retry or expire.
        let _ = shared.core.metadata_at_most(max_age, timeout);
        if refresh_wanted && shared.clock.now_ms() - last_refresh >= backoff {
            let _ = shared.core.refresh_metadata(timeout);
            last_refresh = shared.clock.now_ms();
            refresh_wanted = false;
        }
        let now = shared.clock.now_ms();
        let mut finished: Vec<(ProducerBatch, Result<Option<u64>>)> = Vec::new();
        let mut acc = shared.acc.lock();
        if shared.abort.load(Ordering::Acquire) {
            let closed = Error::ClientClosed { client: "producer" };
            let mut left = acc.take_all();
            left.extend(in_flight.drain().flat_map(|(_, r)| r.batches));
            drop(acc);
            for batch in left {
                shared.finish(batch, Err(closed.clone()));
            }
            return;
        }
        for (id, response) in std::mem::take(&mut acc.inbox) {
            if let Some(request) = in_flight.remove(&id) {
                refresh_wanted |= settle(&mut acc, request, response, now, config, &mut finished);
            }
        }
        let mut wake = now + IDLE_SLEEP_MS;
        for request in in_flight.values_mut() {
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
                request.expired.push(batch.partition.clone());
                let error = expired(&batch, now);
                finished.push((batch, Err(error)));
            }
            for batch in &request.batches {
                wake = wake.min(batch.created_ms.saturating_add(delivery_timeout));
            }
        }
        let metadata = shared.core.metadata();
        // Numbered batches wait for the producer id.
        let limit = match (config.idempotent(), producer_id) {
            (true, None) => 0,
            _ => config.in_flight_per_partition(),
        };
        let drained = acc.drain(now, config, |tp| metadata.leader(tp), limit, producer_id);
        if limit == 0 {
            wake = wake.min(next_id_attempt);
        }
        refresh_wanted |= drained.leader_unknown;
        for batch in drained.expired {
            let error = expired(&batch, now);
            finished.push((batch, Err(error)));
        }
        // Closing does not wait for answers to batches already failed.
        let done = acc.closed
            && acc.is_empty()
            && drained.ready.is_empty()
            && in_flight.values().all(|r| r.batches.is_empty());
        let refresh_due = refresh_wanted && now - last_refresh >= backoff;
        if drained.ready.is_empty() && finished.is_empty() && !done && !refresh_due {
            wake = wake.min(drained.next_wake);
            if refresh_wanted {
                wake = wake.min(last_refresh + backoff);
            }
            if acc.inbox.is_empty() && wake > now {
                shared
                    .wake
                    .wait_for(&mut acc, Duration::from_millis((wake - now) as u64));
            }
            continue;
        }
        drop(acc);
        for (batch, outcome) in finished {
            shared.finish(batch, outcome);
        }
        send(
            shared,
            drained.ready,
            &mut in_flight,
            &mut next_request,
            now,
        );
        if done {
            return;
        }
    }
}

/// Asks the controller for a producer id; `None` if it cannot be reached now.
fn init_producer_id(shared: &ProducerShared, timeout: Duration) -> Option<(i64, i16)> {
    let controller = shared
        .core
        .metadata()
        .controller
        .unwrap_or(crate::protocol::CONTROLLER_ID);
    match shared
        .core
        .call(controller, Request::InitProducerId, timeout)
    {
        Ok(Response::InitProducerId(Ok(id))) => Some(id),
        _ => None,
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

/// Applies a response (or the transport's error) to the batches of one
/// request. Returns whether metadata should be refreshed.
fn settle(
    acc: &mut Accumulator,
    request: InFlight,
    response: Result<Response>,
    now: Millis,
    config: &ProducerConfig,
    finished: &mut Vec<(ProducerBatch, Result<Option<u64>>)>,
) -> bool {
    for tp in &request.expired {
        acc.release(tp);
    }
    let count = request.batches.len();
    let outcomes: Vec<Result<ProduceAck>> = match response {
        Ok(Response::Produce(response)) => {
            let mut by_partition: HashMap<TopicPartition, Result<ProduceAck>> = response
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
        Ok(other) => vec![Err(unexpected("Produce", &other)); count],
        Err(e) => vec![Err(e); count],
    };
    let delivery_timeout = config.delivery_timeout_ms as Millis;
    let mut refresh = false;
    for (mut batch, outcome) in request.batches.into_iter().zip(outcomes) {
        match outcome {
            Ok(ack) => {
                acc.release(&batch.partition);
                finished.push((batch, Ok(Some(ack.base_offset))));
            }
            Err(e) => {
                // An idempotent batch refused for a gap goes again after the
                // batches before it (which are being retried).
                let retriable = e.is_retriable()
                    || (config.idempotent() && matches!(e, Error::OutOfOrderSequence { .. }));
                refresh |= matches!(
                    e,
                    Error::NotLeaderOrFollower { .. }
                        | Error::UnknownTopicOrPartition { .. }
                        | Error::Network { .. }
                );
                let in_time = now.saturating_sub(batch.created_ms) < delivery_timeout;
                if retriable && in_time && batch.attempts <= config.retries {
                    let retry_at = now + retry_backoff(config, batch.attempts);
                    batch.last_error = Some(e);
                    acc.requeue(batch, retry_at);
                } else {
                    acc.release(&batch.partition);
                    let error = if retriable && !in_time {
                        batch.last_error = Some(e);
                        expired(&batch, now)
                    } else {
                        e
                    };
                    finished.push((batch, Err(error)));
                }
            }
        }
    }
    refresh
}

/// Sends ready batches, one request per leader (split at `max_request_size`).
fn send(
    shared: &Arc<ProducerShared>,
    ready: Vec<(NodeId, ProducerBatch)>,
    in_flight: &mut HashMap<u64, InFlight>,
    next_request: &mut u64,
    now: Millis,
) {
    let config = &shared.config;
    let mut by_node: BTreeMap<NodeId, Vec<Vec<ProducerBatch>>> = BTreeMap::new();
    let mut sizes: BTreeMap<NodeId, usize> = BTreeMap::new();
    for (node, mut batch) in ready {
        batch.attempts += 1;
        let size = batch.bytes().size();
        let groups = by_node.entry(node).or_default();
        let used = sizes.entry(node).or_default();
        if groups.is_empty() || *used + size > config.max_request_size {
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
                acks: config.acks,
                timeout_ms: config.request_timeout_ms.min(u64::from(u32::MAX)) as u32,
                partitions,
            });
            if config.acks == Acks::None {
                shared.core.send_unanswered(node, request);
                {
                    let mut acc = shared.acc.lock();
                    for b in &batches {
                        acc.release(&b.partition);
                    }
                }
                for batch in batches {
                    shared.finish(batch, Ok(None));
                }
                continue;
            }
            let id = *next_request;
            *next_request += 1;
            in_flight.insert(
                id,
                InFlight {
                    sent_ms: now,
                    batches,
                    expired: Vec::new(),
                },
            );
            let inbox = shared.clone();
            shared.core.send(node, request, move |response| {
                inbox.acc.lock().inbox.push((id, response));
                inbox.wake.notify_one();
            });
        }
    }
}
