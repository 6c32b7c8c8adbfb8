//! The follower side of replication: copying the logs of the partitions this
//! broker follows from their leaders.
//!
//! At most one Fetch is in flight per leader, carrying, per partition, the
//! follower's log end offset, its leader epoch and its newest epoch. An
//! answer is applied as it comes: the leader's batches appended as they
//! are, the leader's high watermark taken (bounded by the own log end), or —
//! when the leader reports a diverging epoch — the log truncated to where the
//! two agree, never just to the high watermark (KIP-101, KIP-279). Then the
//! next fetch to that leader goes out at once; a leader that answered with an
//! error is left alone for a moment. A partition's answer is applied only if
//! the partition is where the fetch left it (the same leader epoch, the same
//! log end offset): an answer that arrives late — after a pause, across a
//! change of leader and back — is data of another leadership, and is dropped.

use std::collections::BTreeMap;

use super::{BrokerCore, Partition, Truncation};
use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{FetchPartition, FetchRequest, FetchedData, NodeId, Request, Response};
use crate::replication::truncation_offset;
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Wait before fetching again from a leader that answered with an error.
const ERROR_BACKOFF_MS: Millis = 50;
/// A fetch unanswered this long after its wait is given up (a later answer
/// is ignored).
const FETCH_TIMEOUT_MS: Millis = 30_000;
/// Bytes per partition and per fetch a follower asks for.
const PARTITION_FETCH_BYTES: u32 = 1 << 20;
const FETCH_BYTES: u32 = 16 << 20;

/// Per partition, the leader epoch and fetch offset a fetch was sent with.
pub(super) type FetchedWith = BTreeMap<TopicPartition, (i32, u64)>;

/// A fetch in flight to one leader.
#[derive(Debug)]
struct InFlight {
    correlation_id: u64,
    deadline: Millis,
    /// Per partition, the leader epoch and fetch offset it was sent with.
    sent: FetchedWith,
}

/// The fetches in flight and the leaders backed off.
#[derive(Debug, Default)]
pub(super) struct Fetcher {
    /// Leader → its fetch in flight.
    in_flight: BTreeMap<NodeId, InFlight>,
    /// Leader → until when it is left alone.
    backoff: BTreeMap<NodeId, Millis>,
}

impl Fetcher {
    /// The leader whose fetch `correlation_id` answers, if it is the one in
    /// flight (it is no longer in flight then), with the leader epoch and
    /// offset each partition was fetched with.
    pub(super) fn answered(&mut self, correlation_id: u64) -> Option<(NodeId, FetchedWith)> {
        let leader = self
            .in_flight
            .iter()
            .find(|(_, f)| f.correlation_id == correlation_id)
            .map(|(&leader, _)| leader)?;
        let fetch = self.in_flight.remove(&leader)?;
        Some((leader, fetch.sent))
    }

    /// Forgets fetches unanswered past their deadline and backoffs that ran
    /// out.
    pub(super) fn expire(&mut self, now: Millis) {
        self.in_flight.retain(|_, f| f.deadline > now);
        self.backoff.retain(|_, until| *until > now);
    }

    /// When a fetch times out or a backoff ends.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        let fetches = self.in_flight.values().map(|f| f.deadline);
        fetches.chain(self.backoff.values().copied()).min()
    }
}

impl BrokerCore {
    /// Sends a fetch to every leader of a followed partition that has none
    /// in flight and is not backed off.
    pub(super) fn send_follower_fetches(&mut self, now: Millis) {
        let mut by_leader: BTreeMap<NodeId, Vec<FetchPartition>> = BTreeMap::new();
        for partition in self.partitions.values() {
            let r = &partition.replicas;
            let Some(leader) = r.leader() else {
                continue;
            };
            if r.is_leader()
                || leader == self.id
                || self.follower.in_flight.contains_key(&leader)
                || self.follower.backoff.contains_key(&leader)
            {
                continue;
            }
            by_leader.entry(leader).or_default().push(FetchPartition {
                partition: partition.tp.clone(),
                fetch_offset: partition.log.log_end_offset(),
                max_bytes: PARTITION_FETCH_BYTES,
                current_leader_epoch: Some(r.leader_epoch()),
                // An empty log fetched nothing, whatever epoch is in force.
                last_fetched_epoch: (partition.log.log_end_offset()
                    > partition.log.log_start_offset())
                .then(|| partition.log.latest_epoch())
                .flatten(),
            });
        }
        let wait_ms = self.config.replica_fetch_wait_max_ms;
        for (leader, partitions) in by_leader {
            let sent = partitions
                .iter()
                .map(|p| {
                    let epoch = p.current_leader_epoch.unwrap_or(-1);
                    (p.partition.clone(), (epoch, p.fetch_offset))
                })
                .collect();
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: wait_ms as u32,
                min_bytes: 1,
                max_bytes: FETCH_BYTES,
                partitions,
                replica: Some(self.id),
            });
            let correlation_id = self.send_request(leader, request);
            let deadline = now + wait_ms as Millis + FETCH_TIMEOUT_MS;
            self.follower.in_flight.insert(
                leader,
                InFlight {
                    correlation_id,
                    deadline,
                    sent,
                },
            );
        }
    }

    /// Applies a leader's answer; a leader that answered with an error is
    /// left alone for a moment.
    pub(super) fn apply_fetched(
        &mut self,
        now: Millis,
        leader: NodeId,
        sent: &FetchedWith,
        response: Result<Response>,
    ) {
        let healthy = match response {
            Ok(Response::Fetch(response)) => {
                let mut healthy = true;
                for part in response.partitions {
                    let tp = part.partition;
                    let Some(partition) = self.partitions.get_mut(&tp) else {
                        continue;
                    };
                    let now_state = (
                        partition.replicas.leader_epoch(),
                        partition.log.log_end_offset(),
                    );
                    if sent.get(&tp) != Some(&now_state) {
                        continue; // the answer of another leadership, or stale
                    }
                    let applied = part.result.and_then(|data| {
                        apply_partition_data(
                            partition,
                            self.id,
                            leader,
                            data,
                            &mut self.truncations,
                        )
                    });
                    match applied {
                        Ok(moved) => {
                            if moved {
                                self.moved.insert(tp);
                            }
                        }
                        Err(Error::OffsetOutOfRange {
                            log_start_offset, ..
                        }) if partition.log.log_end_offset() < log_start_offset => {
                            // The leader deleted what we would fetch next:
                            // start over at its log start.
                            if partition
                                .log
                                .truncate_fully_and_start_at(log_start_offset)
                                .is_err()
                            {
                                healthy = false;
                            }
                        }
                        Err(_) => healthy = false,
                    }
                }
                healthy
            }
            _ => false,
        };
        if !healthy {
            self.follower.backoff.insert(leader, now + ERROR_BACKOFF_MS);
        }
    }
}

/// Applies one partition's data from `leader` to the follower `partition`
/// on broker `id`; returns whether the partition moved.
fn apply_partition_data(
    partition: &mut Partition,
    id: NodeId,
    leader: NodeId,
    data: FetchedData,
    truncations: &mut Vec<Truncation>,
) -> Result<bool> {
    if partition.replicas.is_leader() || partition.replicas.leader() != Some(leader) {
        return Ok(false); // the role changed while the fetch was out
    }
    let log = &mut partition.log;
    if let Some((epoch, leader_end)) = data.diverging_epoch {
        let end = log.log_end_offset();
        let own = log.end_offset_for_epoch(epoch);
        let target = if planted(PlantedBug::TruncateToHighWatermark) {
            log.high_watermark()
        } else {
            truncation_offset(epoch, leader_end, own, log.log_start_offset())
        };
        if target >= end {
            // Nothing to remove, yet the leader sees a divergence: asking
            // again at once would get the same answer.
            return Err(Error::InvalidRequest {
                reason: format!(
                    "the leader reports epoch {epoch} diverging at {leader_end}, \
                     but this log already ends at {end}"
                ),
            });
        }
        log.truncate_to(target)?;
        trace_event!(
            warn,
            broker = id,
            partition = %partition.tp,
            from = end,
            to = target,
            epoch,
            "follower truncated its log to the leader's"
        );
        truncations.push(Truncation {
            broker: id,
            partition: partition.tp.clone(),
            removed: target..end,
        });
        partition.rebuild_producers()?;
        return Ok(true);
    }
    let mut appended = false;
    for batch in data.records.batches() {
        let batch = batch?;
        let end = log.log_end_offset();
        if batch.next_offset() <= end {
            continue;
        }
        if batch.base_offset() != end {
            return Err(Error::UnexpectedAppendOffset {
                expected: end,
                got: batch.base_offset(),
            });
        }
        log.append_replicated(batch.clone())?;
        partition.producers.record(&batch);
        appended = true;
    }
    let end = log.log_end_offset();
    let hw = partition
        .replicas
        .follower_high_watermark(data.high_watermark, end);
    if let Some(hw) = hw {
        log.set_high_watermark(hw);
    }
    // The leader deleted records (DeleteRecords, retention): follow its log
    // start, as far as this replica's committed records reach.
    let start = data.log_start_offset.min(log.high_watermark());
    let started = start > log.log_start_offset();
    if started {
        log.delete_records_before(start)?;
    }
    Ok(appended || hw.is_some() || started)
}
