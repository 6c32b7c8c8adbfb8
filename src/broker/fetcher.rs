//! The follower side of replication: one thread per broker that copies the
//! logs of the partitions it follows from their leaders.
//!
//! Each round it sends one Fetch per leader (carrying, per partition, the
//! follower's log end offset, its leader epoch and its newest epoch), waits
//! for the answers, and applies them: appends the leader's batches as they
//! are, takes the leader's high watermark (bounded by its own log end), or —
//! when the leader reports a diverging epoch — truncates to where the two
//! logs agree, never just to the high watermark (KIP-101, KIP-279).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{BrokerShared, Partition, Truncation};
use crate::error::{Error, Result};
use crate::protocol::{FetchPartition, FetchRequest, FetchedData, NodeId, Request, Response};
use crate::time::Millis;
use crate::transport::{Peer, Reply};

/// Wait before fetching again from a leader that answered with an error.
const ERROR_BACKOFF_MS: Millis = 50;
/// Longest the fetcher sleeps between rounds when nothing arrives.
const IDLE_MS: u64 = 50;
/// A fetch unanswered this long after its wait is given up (a later answer
/// is ignored).
const FETCH_TIMEOUT_MS: Millis = 30_000;
/// Bytes per partition and per fetch a follower asks for.
const PARTITION_FETCH_BYTES: u32 = 1 << 20;
const FETCH_BYTES: u32 = 16 << 20;

#[derive(Debug, Default)]
struct FetcherState {
    stop: bool,
    /// Answers: fetch id, leader, outcome.
    inbox: Vec<(u64, NodeId, Result<Response>)>,
}

/// The fetcher's mailbox, shared with the reply callbacks.
#[derive(Debug, Default)]
pub(super) struct FetcherHandle {
    state: Arc<Mutex<FetcherState>>,
    wake: Arc<Condvar>,
}

impl FetcherHandle {
    /// Makes the fetcher look at its partitions now (new roles).
    pub(super) fn wake(&self) {
        let _state = self.state.lock();
        self.wake.notify_one();
    }

    /// Makes the fetcher thread return.
    pub(super) fn stop(&self) {
        self.state.lock().stop = true;
        self.wake.notify_one();
    }
}

struct InFlight {
    id: u64,
    deadline: Millis,
}

/// The fetcher loop.
pub(super) fn run(broker: &BrokerShared) {
    let handle = &broker.fetcher;
    let mut in_flight: HashMap<NodeId, InFlight> = HashMap::new();
    let mut backoff: HashMap<NodeId, Millis> = HashMap::new();
    let mut next_id = 0u64;
    let wait_ms = broker.config.replica_fetch_wait_max_ms;
    loop {
        let answers = {
            let mut state = handle.state.lock();
            if state.stop {
                return;
            }
            std::mem::take(&mut state.inbox)
        };
        let now = broker.clock.now_ms();
        for (id, leader, response) in answers {
            if in_flight.get(&leader).is_some_and(|f| f.id == id) {
                in_flight.remove(&leader);
                if !broker.apply_fetched(leader, response) {
                    backoff.insert(leader, now + ERROR_BACKOFF_MS);
                }
            }
        }
        in_flight.retain(|_, f| f.deadline > now);
        backoff.retain(|_, until| *until > now);
        for (leader, partitions) in broker.follower_fetches() {
            if in_flight.contains_key(&leader) || backoff.contains_key(&leader) {
                continue;
            }
            let id = next_id;
            next_id += 1;
            in_flight.insert(
                leader,
                InFlight {
                    id,
                    deadline: now + wait_ms as Millis + FETCH_TIMEOUT_MS,
                },
            );
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: wait_ms as u32,
                min_bytes: 1,
                max_bytes: FETCH_BYTES,
                partitions,
                replica: Some(broker.id),
            });
            let (state, wake) = (handle.state.clone(), handle.wake.clone());
            broker.transport.send(
                Peer::Broker(broker.id),
                leader,
                request,
                Reply::new(leader, move |response| {
                    state.lock().inbox.push((id, leader, response));
                    wake.notify_one();
                }),
            );
        }
        let mut state = handle.state.lock();
        if state.inbox.is_empty() && !state.stop {
            handle
                .wake
                .wait_for(&mut state, Duration::from_millis(IDLE_MS));
        }
    }
}

impl BrokerShared {
    /// What to fetch from each leader: every followed partition, from its
    /// log end.
    fn follower_fetches(&self) -> BTreeMap<NodeId, Vec<FetchPartition>> {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let mut by_leader: BTreeMap<NodeId, Vec<FetchPartition>> = BTreeMap::new();
        for partition in partitions {
            let state = partition.state.lock();
            let r = &state.replicas;
            let (Some(leader), Some(log)) = (r.leader(), state.log.as_ref()) else {
                continue;
            };
            if r.is_leader() || leader == self.id {
                continue;
            }
            by_leader.entry(leader).or_default().push(FetchPartition {
                partition: partition.tp.clone(),
                fetch_offset: log.log_end_offset(),
                max_bytes: PARTITION_FETCH_BYTES,
                current_leader_epoch: Some(r.leader_epoch()),
                last_fetched_epoch: log.latest_epoch(),
            });
        }
        by_leader
    }

    /// Applies a leader's answer. Returns false when the leader should be
    /// left alone for a moment (an error).
    fn apply_fetched(&self, leader: NodeId, response: Result<Response>) -> bool {
        let Ok(Response::Fetch(response)) = response else {
            return false;
        };
        let mut healthy = true;
        for part in response.partitions {
            let Some(partition) = self.partitions.read().get(&part.partition).cloned() else {
                continue;
            };
            let applied = part
                .result
                .and_then(|data| self.apply_partition_data(&partition, leader, data));
            match applied {
                Ok(()) => {}
                Err(Error::OffsetOutOfRange {
                    log_start_offset, ..
                }) => {
                    // The leader deleted what we would fetch next: start over
                    // at its log start.
                    let mut state = partition.state.lock();
                    if let Some(log) = state.log.as_mut()
                        && log.log_end_offset() < log_start_offset
                    {
                        let _ = log.truncate_fully_and_start_at(log_start_offset);
                    }
                }
                Err(_) => healthy = false,
            }
        }
        healthy
    }

    fn apply_partition_data(
        &self,
        partition: &Partition,
        leader: NodeId,
        data: FetchedData,
    ) -> Result<()> {
        let mut guard = partition.state.lock();
        let state = &mut *guard;
        if state.replicas.is_leader() || state.replicas.leader() != Some(leader) {
            return Ok(()); // the role changed while the fetch was out
        }
        if let Some((epoch, leader_end)) = data.diverging_epoch {
            let log = state.log()?;
            let end = log.log_end_offset();
            let target = match log.end_offset_for_epoch(epoch) {
                Some((own, own_end)) if own == epoch => own_end.min(leader_end),
                Some((_, own_end)) => own_end,
                None => log.log_start_offset(),
            };
            if target < end {
                log.truncate_to(target)?;
                self.truncations.lock().push(Truncation {
                    broker: self.id,
                    partition: partition.tp.clone(),
                    removed: target..end,
                });
                state.rebuild_producers()?;
            }
            partition.changed();
            return Ok(());
        }
        let topic = partition.tp.topic();
        let log = state
            .log
            .as_mut()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
            })?;
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
            state.producers.record(&batch);
            appended = true;
        }
        let end = log.log_end_offset();
        let hw = state
            .replicas
            .follower_high_watermark(data.high_watermark, end);
        if let Some(hw) = hw {
            log.set_high_watermark(hw);
        }
        if appended || hw.is_some() {
            partition.changed();
        }
        Ok(())
    }
}
