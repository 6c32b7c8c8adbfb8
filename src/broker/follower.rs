//! The follower side of replication: copying the logs of the partitions this
//! broker follows from their leaders.
//!
//! At most one Fetch is in flight per leader, carrying, per partition, the
//! follower's log end offset, its leader epoch and its newest epoch — in a
//! fetch session ([`FetchSession`]), only for the partitions where one of
//! those changed since the previous fetch: the leader remembers the rest,
//! and answers with the partitions that have something new. Any error
//! closes the session, and the next fetch lists everything again. An
//! answer is applied as it comes: the leader's batches appended as they
//! are, the leader's high watermark taken (bounded by the own log end), or —
//! when the leader reports a diverging epoch — the log truncated to where the
//! two agree, never just to the high watermark (KIP-101, KIP-279). Then the
//! next fetch to that leader goes out at once; a leader that answered with an
//! error is left alone for a moment. A partition's answer is applied only if
//! the partition is where the fetch left it (the same leader epoch, the same
//! log end offset): an answer that arrives late — after a pause, across a
//! change of leader and back — is data of another leadership, and is dropped.

use std::collections::{BTreeMap, BTreeSet};

use super::{BrokerCore, Partition, Truncation};
use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{
    FetchPartition, FetchRequest, FetchSession, FetchedData, NodeId, Request, Response,
};
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

/// What a follower last told a leader of one partition: leader epoch,
/// fetch offset, newest epoch in its log.
type Position = (i32, u64, Option<i32>);

/// A follower's fetch session with one leader.
#[derive(Debug, Default)]
struct Session {
    /// 0 until the leader's answer to the opening fetch names it.
    id: u32,
    /// The epoch the next fetch carries.
    epoch: u32,
    /// Per partition, the position the leader has, and the fetch round
    /// that last saw the partition followed from this leader.
    sent: BTreeMap<TopicPartition, (Position, u64)>,
    round: u64,
}

/// A fetch in flight to one leader.
#[derive(Debug)]
struct InFlight {
    correlation_id: u64,
    deadline: Millis,
}

/// The fetches in flight, the leaders backed off, the fetch sessions.
#[derive(Debug, Default)]
pub(super) struct Fetcher {
    /// Leader → its fetch in flight.
    in_flight: BTreeMap<NodeId, InFlight>,
    /// Leader → until when it is left alone.
    backoff: BTreeMap<NodeId, Millis>,
    /// Leader → the session with it.
    sessions: BTreeMap<NodeId, Session>,
    /// The leaders of the partitions followed, as of the last metadata
    /// applied (`None`: to be worked out again), so that a broker with
    /// every fetch out looks at no partition.
    leaders: Option<BTreeSet<NodeId>>,
    /// Leaders whose partitions were all looked at since roles last
    /// changed and whose session still stands: their next fetch looks only
    /// at `changed`.
    scanned: BTreeSet<NodeId>,
    /// Followed partitions whose position may have changed since their
    /// leader's last fetch (a leader answered for them).
    changed: BTreeSet<TopicPartition>,
}

impl Fetcher {
    /// The leader whose fetch `correlation_id` answers, if it is the one in
    /// flight (it is no longer in flight then).
    pub(super) fn answered(&mut self, correlation_id: u64) -> Option<NodeId> {
        let leader = self
            .in_flight
            .iter()
            .find(|(_, f)| f.correlation_id == correlation_id)
            .map(|(&leader, _)| leader)?;
        self.in_flight.remove(&leader)?;
        Some(leader)
    }

    /// Forgets fetches unanswered past their deadline (and their sessions:
    /// the leader may or may not have seen them) and backoffs that ran out.
    pub(super) fn expire(&mut self, now: Millis) {
        let (sessions, scanned) = (&mut self.sessions, &mut self.scanned);
        self.in_flight.retain(|leader, f| {
            let alive = f.deadline > now;
            if !alive {
                sessions.remove(leader);
                scanned.remove(leader);
            }
            alive
        });
        self.backoff.retain(|_, until| *until > now);
    }

    /// Roles (or logs) changed: the leaders followed are worked out again,
    /// and each one's next fetch looks at all its partitions.
    pub(super) fn roles_changed(&mut self) {
        self.leaders = None;
        self.scanned.clear();
    }

    /// When a fetch times out or a backoff ends.
    pub(super) fn next_deadline(&self) -> Option<Millis> {
        let fetches = self.in_flight.values().map(|f| f.deadline);
        fetches.chain(self.backoff.values().copied()).min()
    }
}

impl BrokerCore {
    /// Sends a fetch to every leader of a followed partition that has none
    /// in flight and is not backed off. Each lists the partitions whose
    /// position its session does not have; only a leader new to its
    /// session or to the roles has all its partitions looked at, the others
    /// only those a leader answered for since.
    pub(super) fn send_follower_fetches(&mut self, now: Millis) {
        let me = self.id;
        let fetcher = &mut self.follower;
        if fetcher.leaders.is_none() {
            let leaders = self
                .partitions
                .values()
                .filter(|p| !p.replicas.is_leader())
                .filter_map(|p| p.replicas.leader())
                .filter(|&leader| leader != me)
                .collect();
            fetcher.leaders = Some(leaders);
        }
        let due: BTreeSet<NodeId> = fetcher
            .leaders
            .iter()
            .flatten()
            .copied()
            .filter(|l| !fetcher.in_flight.contains_key(l) && !fetcher.backoff.contains_key(l))
            .collect();
        if due.is_empty() {
            return;
        }
        let full: BTreeSet<NodeId> = due
            .iter()
            .copied()
            .filter(|l| !fetcher.scanned.contains(l))
            .collect();
        for &leader in &full {
            // A new round: what it does not see is forgotten.
            fetcher.sessions.entry(leader).or_default().round += 1;
        }
        let changed = std::mem::take(&mut fetcher.changed);
        let candidates: Vec<&Partition> = if full.is_empty() {
            changed
                .iter()
                .filter_map(|tp| self.partitions.get(tp))
                .collect()
        } else {
            self.partitions.values().collect()
        };
        // Leaders due a fetch → the partitions to list in it.
        let mut by_leader: BTreeMap<NodeId, Vec<FetchPartition>> =
            due.iter().map(|&leader| (leader, Vec::new())).collect();
        for partition in candidates {
            let r = &partition.replicas;
            let Some(leader) = r.leader() else {
                continue;
            };
            if r.is_leader() || leader == me {
                continue;
            }
            let Some(listed) = by_leader.get_mut(&leader) else {
                if changed.contains(&partition.tp) {
                    // Its leader's fetch is out: looked at next time.
                    fetcher.changed.insert(partition.tp.clone());
                }
                continue;
            };
            let session = fetcher.sessions.entry(leader).or_default();
            let end = partition.log.log_end_offset();
            // An empty log fetched nothing, whatever epoch is in force.
            let last_fetched_epoch = (end > partition.log.log_start_offset())
                .then(|| partition.log.latest_epoch())
                .flatten();
            let position = (r.leader_epoch(), end, last_fetched_epoch);
            let round = session.round;
            let unchanged = session.id != 0
                && session
                    .sent
                    .get(&partition.tp)
                    .is_some_and(|(sent, _)| *sent == position);
            match session.sent.get_mut(&partition.tp) {
                Some(entry) => *entry = (position, round),
                None => {
                    session.sent.insert(partition.tp.clone(), (position, round));
                }
            }
            if unchanged {
                continue;
            }
            listed.push(FetchPartition {
                partition: partition.tp.clone(),
                fetch_offset: end,
                max_bytes: PARTITION_FETCH_BYTES,
                current_leader_epoch: Some(r.leader_epoch()),
                last_fetched_epoch,
            });
        }
        fetcher.scanned.extend(full.iter().copied());
        let wait_ms = self.config.replica_fetch_wait_max_ms;
        for (leader, partitions) in by_leader {
            let session = self.follower.sessions.entry(leader).or_default();
            let round = session.round;
            // Partitions no longer followed from this leader (only a full
            // look tells).
            let forgotten: Vec<TopicPartition> = if full.contains(&leader) {
                session
                    .sent
                    .iter()
                    .filter(|(_, (_, seen))| *seen != round)
                    .map(|(tp, _)| tp.clone())
                    .collect()
            } else {
                Vec::new()
            };
            for tp in &forgotten {
                session.sent.remove(tp);
            }
            let (fetch_session, forgotten) = if session.id == 0 {
                (FetchSession { id: 0, epoch: 0 }, Vec::new())
            } else {
                let epoch = session.epoch;
                session.epoch = session.epoch.wrapping_add(1).max(1);
                (
                    FetchSession {
                        id: session.id,
                        epoch,
                    },
                    forgotten,
                )
            };
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: wait_ms as u32,
                min_bytes: 1,
                max_bytes: FETCH_BYTES,
                partitions,
                replica: Some(self.id),
                session: Some(fetch_session),
                forgotten,
            });
            let correlation_id = self.send_request(leader, request);
            let deadline = now + wait_ms as Millis + FETCH_TIMEOUT_MS;
            self.follower.in_flight.insert(
                leader,
                InFlight {
                    correlation_id,
                    deadline,
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
        response: Result<Response>,
    ) {
        let healthy = match response {
            Ok(Response::Fetch(response)) => {
                let mut healthy = true;
                let session = self.follower.sessions.entry(leader).or_default();
                if session.id == 0 {
                    session.id = response.session_id;
                    session.epoch = 1;
                }
                for part in response.partitions {
                    let tp = part.partition;
                    let Some(partition) = self.partitions.get_mut(&tp) else {
                        continue;
                    };
                    self.follower.changed.insert(tp.clone());
                    let now_state = (
                        partition.replicas.leader_epoch(),
                        partition.log.log_end_offset(),
                    );
                    let sent = session
                        .sent
                        .get(&tp)
                        .map(|((epoch, offset, _), _)| (*epoch, *offset));
                    if sent != Some(now_state) {
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
            _ => {
                // No answer, or the session refused: the next fetch opens a
                // new session and lists everything again.
                self.follower.sessions.remove(&leader);
                self.follower.scanned.remove(&leader);
                false
            }
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
