//! The broker's side of consumer groups: it hosts the
//! [`GroupCoordinator`] of the `__consumer_offsets` partitions it leads,
//! loads a partition's groups when it becomes its leader, appends what the
//! coordinator writes, and answers a group request only once the records it
//! depends on are committed (the partition's high watermark covers them).
//! It asks the controller for `__consumer_offsets` when the first group
//! shows up.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::purgatory::{HeldHeartbeat, PendingGroup};
use super::{BrokerShared, Partition};
use crate::error::{Error, Result};
use crate::group::coordinator::{GroupCoordinator, Outcome, TopicCounts};
use crate::group::records::GroupRecord;
use crate::group::{CONSUMER_OFFSETS_TOPIC, offsets_partition_for, validate_group_id};
use crate::protocol::{CreateTopicsRequest, GroupHeartbeatRequest, NodeId, Request, Response};
use crate::record::RecordBatchBuilder;
use crate::storage::CleanupPolicy;
use crate::time::Millis;
use crate::topic::{INTERNAL_TOPIC_PREFIX, NewTopic, TopicConfig, TopicPartition};
use crate::transport::{Peer, Reply};

/// How often a broker asks the controller again for `__consumer_offsets`
/// while it does not exist.
const OFFSETS_TOPIC_RETRY_MS: Millis = 1_000;

impl BrokerShared {
    /// The broker that coordinates `group`: the leader of its
    /// `__consumer_offsets` partition. Creates the topic on first use.
    pub(super) fn find_coordinator(&self, group: &str) -> Result<NodeId> {
        validate_group_id(group)?;
        let metadata = self.metadata.read().clone();
        let unavailable = || Error::CoordinatorNotAvailable {
            group: group.to_string(),
        };
        let Some(topic) = metadata.topics.get(CONSUMER_OFFSETS_TOPIC) else {
            self.request_offsets_topic();
            return Err(unavailable());
        };
        let p = offsets_partition_for(group, topic.partitions.len() as u32);
        topic
            .partitions
            .get(p as usize)
            .and_then(|p| p.leader)
            .ok_or_else(unavailable)
    }

    /// Asks the controller to create `__consumer_offsets` (compacted, with
    /// `offsets_topic_num_partitions` partitions and as many replicas as
    /// `offsets_topic_replication_factor` and the live brokers allow).
    fn request_offsets_topic(&self) {
        let now = self.clock.now_ms();
        {
            let mut last = self.offsets_topic_requested.lock();
            if last.is_some_and(|at| now < at + OFFSETS_TOPIC_RETRY_MS) {
                return;
            }
            *last = Some(now);
        }
        let live = self.metadata.read().brokers.len().max(1);
        let replication_factor = usize::from(self.config.offsets_topic_replication_factor)
            .min(live)
            .max(1) as u16;
        let topic = NewTopic::new(
            CONSUMER_OFFSETS_TOPIC,
            self.config.offsets_topic_num_partitions,
        )
        .replication_factor(replication_factor)
        .config(TopicConfig {
            cleanup_policy: CleanupPolicy::Compact,
            segment_bytes: self.config.offsets_topic_segment_bytes,
            ..TopicConfig::default()
        });
        let controller = self.controller();
        self.transport.send(
            Peer::Broker(self.id),
            controller,
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![topic],
            }),
            Reply::ignored(controller),
        );
    }

    /// The partitions members can be assigned, from the current metadata.
    fn topic_counts(&self) -> TopicCounts {
        self.metadata
            .read()
            .topics
            .values()
            .filter(|t| !t.name.starts_with(INTERNAL_TOPIC_PREFIX))
            .map(|t| (t.name.to_string(), t.partitions.len() as u32))
            .collect()
    }

    /// The `__consumer_offsets` partition of `group` if this broker leads
    /// it: (its number, the hosted partition, the leader epoch).
    fn coordinator_partition(&self, group: &str) -> Result<(u32, Arc<Partition>, i32)> {
        validate_group_id(group)?;
        let not_coordinator = || Error::NotCoordinator {
            group: group.to_string(),
            node: self.id,
        };
        let count = self
            .metadata
            .read()
            .topics
            .get(CONSUMER_OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(not_coordinator)?;
        let p = offsets_partition_for(group, count);
        let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), p);
        let partition = self
            .partitions
            .read()
            .get(&tp)
            .cloned()
            .ok_or_else(not_coordinator)?;
        let epoch = {
            let state = partition.state.lock();
            if !state.replicas.is_leader() {
                return Err(not_coordinator());
            }
            state.replicas.leader_epoch()
        };
        Ok((p, partition, epoch))
    }

    /// Runs a group request on the coordinator: loads the group's partition
    /// if needed, appends what the request wrote, and answers once the
    /// partition's high watermark covers the group's records.
    pub(super) fn coordinate<T>(
        &self,
        group: &str,
        reply: Reply,
        run: impl FnOnce(&mut GroupCoordinator, u32, &TopicCounts, Millis) -> Result<Outcome<T>>,
        respond: impl FnOnce(T) -> Response,
    ) {
        self.coordinate_or_hold(group, reply, run, respond, |_, reply, _, _| Some(reply));
    }

    /// [`coordinate`](Self::coordinate), but when the request wrote nothing
    /// `hold` may keep its reply (returning `None`) to answer later.
    fn coordinate_or_hold<T>(
        &self,
        group: &str,
        reply: Reply,
        run: impl FnOnce(&mut GroupCoordinator, u32, &TopicCounts, Millis) -> Result<Outcome<T>>,
        respond: impl FnOnce(T) -> Response,
        hold: impl FnOnce(&T, Reply, u64, &TopicPartition) -> Option<Reply>,
    ) {
        let (p, partition, epoch) = match self.coordinator_partition(group) {
            Ok(found) => found,
            Err(e) => return reply.send(Err(e)),
        };
        let topics = self.topic_counts();
        let now = self.clock.now_ms();
        let mut coordinator = self.groups.lock();
        if !coordinator.is_loaded(p, epoch)
            && let Err(e) = self.load_groups(&mut coordinator, p, &partition, epoch, now)
        {
            drop(coordinator);
            return reply.send(Err(e));
        }
        let outcome = match run(&mut coordinator, p, &topics, now) {
            Ok(outcome) => outcome,
            Err(e) => {
                drop(coordinator);
                return reply.send(Err(e));
            }
        };
        let wrote = !outcome.records.is_empty();
        let wait_for = if !wrote {
            outcome.wait_for
        } else {
            match self.append_group_records(&partition, epoch, &outcome.records, now) {
                Ok(end) => {
                    coordinator.written(p, group, end);
                    self.group_writes.fetch_add(1, Ordering::AcqRel);
                    end
                }
                Err(e) => {
                    // The state in memory is ahead of the log: read it again.
                    coordinator.unload(p);
                    drop(coordinator);
                    return reply.send(Err(self.append_failure(group, e)));
                }
            }
        };
        let writes_seen = self.group_writes.load(Ordering::Acquire);
        drop(coordinator);
        let reply = if wrote {
            reply
        } else {
            match hold(&outcome.value, reply, writes_seen, &partition.tp) {
                Some(reply) => reply,
                None => return,
            }
        };
        let wait = PendingGroup {
            reply,
            response: respond(outcome.value),
            partition: partition.tp.clone(),
            required: wait_for,
            leader_epoch: epoch,
            group: group.to_string(),
            deadline: now + self.config.offsets_commit_timeout_ms as Millis,
        };
        if wrote {
            // Followers waiting for data copy the records now; members
            // whose heartbeats were held look at the group again.
            self.partition_moved(&partition.tp);
            self.wake_heartbeats(&partition.tp);
        }
        self.settle_group(wait);
    }

    /// A member's heartbeat. One that brings nothing new and learns nothing
    /// new is held for up to its `max_wait_ms` (a long poll), and answered
    /// as soon as its group writes something: so members learn of a
    /// rebalance at once, not at their next heartbeat. `held_until` is the
    /// deadline of a heartbeat held before.
    pub(super) fn group_heartbeat(
        &self,
        request: GroupHeartbeatRequest,
        reply: Reply,
        held_until: Option<Millis>,
    ) {
        let group = request.group.clone();
        let now = self.clock.now_ms();
        let until = held_until.unwrap_or(now + Millis::from(request.max_wait_ms));
        let parked = (request.member_epoch > 0 && until > now).then(|| request.clone());
        let (epoch, acked) = (request.member_epoch, request.acked_assignment);
        self.coordinate_or_hold(
            &group,
            reply,
            |c, p, topics, now| c.heartbeat(p, request, topics, now),
            Response::GroupHeartbeat,
            |response, reply, writes_seen, tp| {
                let idle = response.member_epoch == epoch
                    && response.assignment_id == acked
                    && !response.reconciling;
                let request = match parked {
                    Some(request) if idle => request,
                    _ => return Some(reply),
                };
                let mut held = self.held_heartbeats.lock();
                let held_one = HeldHeartbeat {
                    request,
                    reply,
                    deadline: until,
                };
                if self.group_writes.load(Ordering::Acquire) != writes_seen {
                    // A group wrote since this one was looked at, and its
                    // wake-up may have missed it: look again.
                    drop(held);
                    self.group_heartbeat(held_one.request, held_one.reply, Some(until));
                    return None;
                }
                held.park(held_one, vec![tp.clone()], until);
                drop(held);
                self.kick_runtime();
                None
            },
        );
    }

    /// Looks again at the heartbeats held for groups of `tp`.
    pub(super) fn wake_heartbeats(&self, tp: &TopicPartition) {
        let held = self.held_heartbeats.lock().take_watching(tp);
        for h in held {
            self.group_heartbeat(h.request, h.reply, Some(h.deadline));
        }
    }

    /// A lost leadership is the client's cue to find the coordinator again.
    fn append_failure(&self, group: &str, e: Error) -> Error {
        match e {
            Error::NotLeaderOrFollower { .. } | Error::FencedLeaderEpoch { .. } => {
                Error::NotCoordinator {
                    group: group.to_string(),
                    node: self.id,
                }
            }
            other => other,
        }
    }

    /// Reads partition `p` of `__consumer_offsets` from its start to its end
    /// and rebuilds its groups. A record that does not decode (which the
    /// coordinator never writes) is skipped.
    fn load_groups(
        &self,
        coordinator: &mut GroupCoordinator,
        p: u32,
        partition: &Partition,
        epoch: i32,
        now: Millis,
    ) -> Result<()> {
        let mut chunks = Vec::new();
        let end = {
            let mut state = partition.state.lock();
            let log = state.log()?;
            let end = log.log_end_offset();
            let mut offset = log.log_start_offset();
            while offset < end {
                let records = log.read(offset, 1 << 20)?;
                let mut next = offset;
                for batch in records.batches() {
                    next = next.max(batch?.next_offset());
                }
                if next == offset {
                    break;
                }
                chunks.push(records);
                offset = next;
            }
            end
        };
        let mut decoded = Vec::new();
        for records in &chunks {
            for batch in records.batches() {
                let batch = batch?;
                if batch.is_control() {
                    continue;
                }
                for record in batch.records() {
                    let record = record?;
                    let Some(key) = record.key.as_deref() else {
                        continue;
                    };
                    if let Ok(r) = GroupRecord::decode(key, record.value.as_deref()) {
                        decoded.push(r);
                    }
                }
            }
        }
        coordinator.load(p, epoch, decoded, end, now)
    }

    /// Appends the coordinator's records as the partition's leader in
    /// `epoch`; returns the log end offset after them.
    fn append_group_records(
        &self,
        partition: &Partition,
        epoch: i32,
        records: &[GroupRecord],
        now: Millis,
    ) -> Result<u64> {
        let mut builder = RecordBatchBuilder::new();
        for record in records {
            let (key, value) = record.encode()?;
            builder.append(now, Some(&key), value.as_deref(), &[]);
        }
        let batch = builder.build();
        let proposals = {
            let mut state = partition.state.lock();
            let r = &state.replicas;
            if !r.is_leader() || r.leader_epoch() != epoch {
                return Err(Error::NotLeaderOrFollower {
                    broker: self.id,
                    partition: partition.tp.clone(),
                });
            }
            state.replicas.check_acks_all()?;
            let log = state.log()?;
            log.append(batch, epoch)?;
            let end = log.log_end_offset();
            let update = state.replicas.on_append(end);
            state.apply(&update);
            partition.changed();
            (end, update.proposal)
        };
        let (end, proposal) = proposals;
        self.send_proposals(proposal.into_iter().collect());
        Ok(end)
    }

    /// Answers a group request whose records are committed, or parks it.
    pub(super) fn settle_group(&self, wait: PendingGroup) {
        let mut wait = wait;
        loop {
            let seen = self.change_counts(std::iter::once(&wait.partition));
            let now = self.clock.now_ms();
            wait = match self.finish_group(wait, now, false) {
                None => return,
                Some(w) => w,
            };
            wait = match self.park_unless_moved(&self.group_waits, wait, &seen) {
                None => return,
                Some(w) => w,
            };
        }
    }

    /// Replies if the wait is over: committed, leadership lost, or due.
    pub(super) fn finish_group(
        &self,
        wait: PendingGroup,
        now: Millis,
        force: bool,
    ) -> Option<PendingGroup> {
        let state = self
            .partitions
            .read()
            .get(&wait.partition)
            .cloned()
            .map(|p| {
                let state = p.state.lock();
                let r = &state.replicas;
                let leads = r.is_leader() && r.leader_epoch() == wait.leader_epoch;
                (leads, r.high_watermark())
            });
        let outcome = match state {
            Some((true, hw)) if hw >= wait.required => Some(Ok(wait.response.clone())),
            Some((true, _)) if force || now >= wait.deadline => Some(Err(Error::RequestTimedOut {
                operation: "replication of a group record",
                timeout_ms: self.config.offsets_commit_timeout_ms,
            })),
            Some((true, _)) => None,
            _ => Some(Err(Error::NotCoordinator {
                group: wait.group.clone(),
                node: self.id,
            })),
        };
        match outcome {
            Some(result) => {
                wait.reply.send(result);
                None
            }
            None => Some(wait),
        }
    }

    /// Expires members whose session or revocation time ran out, forgets
    /// the groups of partitions this broker no longer leads, and appends
    /// what changed.
    pub(super) fn tick_groups(&self, now: Millis) {
        let topics = self.topic_counts();
        let mut coordinator = self.groups.lock();
        for (p, epoch) in coordinator.loaded() {
            let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), p);
            let still = self.partitions.read().get(&tp).is_some_and(|partition| {
                let state = partition.state.lock();
                state.replicas.is_leader() && state.replicas.leader_epoch() == epoch
            });
            if !still {
                coordinator.unload(p);
            }
        }
        let writes = coordinator.tick(&topics, now);
        let mut moved = Vec::new();
        for write in writes {
            let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), write.partition);
            let Some(partition) = self.partitions.read().get(&tp).cloned() else {
                coordinator.unload(write.partition);
                continue;
            };
            let epoch = partition.state.lock().replicas.leader_epoch();
            match self.append_group_records(&partition, epoch, &write.records, now) {
                Ok(end) => {
                    coordinator.written(write.partition, &write.group, end);
                    self.group_writes.fetch_add(1, Ordering::AcqRel);
                    moved.push(tp);
                }
                Err(_) => coordinator.unload(write.partition),
            }
        }
        drop(coordinator);
        for tp in &moved {
            self.partition_moved(tp);
            self.wake_heartbeats(tp);
        }
    }

    /// When the coordinator next needs a tick.
    pub(super) fn next_group_deadline(&self) -> Option<Millis> {
        self.groups.lock().next_deadline()
    }
}
