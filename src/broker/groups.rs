//! The broker's side of consumer groups: it hosts the
//! [`GroupCoordinator`] of the `__consumer_offsets` partitions it leads,
//! loads a partition's groups when it becomes its leader, appends what the
//! coordinator writes, and answers a group request only once the records it
//! depends on are committed (the partition's high watermark covers them).
//! It asks the controller for `__consumer_offsets` when the first group
//! shows up.

use super::BrokerCore;
use super::purgatory::{HeldHeartbeat, PendingGroup};
use crate::error::{Error, Result};
use crate::group::coordinator::{GroupCoordinator, Outcome, TopicCounts};
use crate::group::records::GroupRecord;
use crate::group::{CONSUMER_OFFSETS_TOPIC, offsets_partition_for, validate_group_id};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{
    CreateTopicsRequest, GroupHeartbeatRequest, NodeId, ReplyTo, Request, Response,
};
use crate::record::RecordBatchBuilder;
use crate::storage::CleanupPolicy;
use crate::time::Millis;
use crate::topic::{INTERNAL_TOPIC_PREFIX, NewTopic, TopicConfig, TopicPartition};

/// How often a broker asks the controller again for `__consumer_offsets`
/// while it does not exist.
const OFFSETS_TOPIC_RETRY_MS: Millis = 1_000;

/// A group request the coordinator ran: its answer's value, and what the
/// answer waits for.
struct Coordinated<T> {
    value: T,
    /// Whether the request wrote records.
    wrote: bool,
    /// The offset the partition's high watermark must reach.
    wait_for: u64,
    partition: TopicPartition,
    leader_epoch: i32,
}

impl BrokerCore {
    /// The broker that coordinates `group`: the leader of its
    /// `__consumer_offsets` partition. Creates the topic on first use.
    pub(super) fn find_coordinator(&mut self, now: Millis, group: &str) -> Result<NodeId> {
        validate_group_id(group)?;
        let unavailable = || Error::CoordinatorNotAvailable {
            group: group.to_string(),
        };
        let Some(topic) = self.metadata.topics.get(CONSUMER_OFFSETS_TOPIC) else {
            self.request_offsets_topic(now);
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
    fn request_offsets_topic(&mut self, now: Millis) {
        if self
            .offsets_topic_requested
            .is_some_and(|at| now < at + OFFSETS_TOPIC_RETRY_MS)
        {
            return;
        }
        self.offsets_topic_requested = Some(now);
        let live = self.metadata.brokers.len().max(1);
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
        let request = Request::CreateTopics(CreateTopicsRequest {
            topics: vec![topic],
        });
        self.send_request(self.controller(), request);
    }

    /// The partitions members can be assigned, from the current metadata.
    fn topic_counts(&self) -> TopicCounts {
        self.metadata
            .topics
            .values()
            .filter(|t| !t.name.starts_with(INTERNAL_TOPIC_PREFIX))
            .map(|t| (t.name.to_string(), t.partitions.len() as u32))
            .collect()
    }

    /// The `__consumer_offsets` partition of `group` if this broker leads
    /// it: (its number, the partition, the leader epoch).
    fn coordinator_partition(&self, group: &str) -> Result<(u32, TopicPartition, i32)> {
        validate_group_id(group)?;
        let not_coordinator = || Error::NotCoordinator {
            group: group.to_string(),
            node: self.id,
        };
        let count = self
            .metadata
            .topics
            .get(CONSUMER_OFFSETS_TOPIC)
            .map(|t| t.partitions.len() as u32)
            .ok_or_else(not_coordinator)?;
        let p = offsets_partition_for(group, count);
        let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), p);
        match self.partitions.get(&tp) {
            Some(partition) if partition.replicas.is_leader() => {
                let epoch = partition.replicas.leader_epoch();
                Ok((p, tp, epoch))
            }
            _ => Err(not_coordinator()),
        }
    }

    /// Runs a group request on the coordinator and answers it once the
    /// partition's high watermark covers the group's records.
    pub(super) fn coordinate<T>(
        &mut self,
        now: Millis,
        group: &str,
        reply: ReplyTo,
        run: impl FnOnce(&mut GroupCoordinator, u32, &TopicCounts, Millis) -> Result<Outcome<T>>,
        respond: impl FnOnce(T) -> Response,
    ) {
        if let Some(done) = self.run_group(now, group, reply, run) {
            self.wait_group(now, group, reply, done, respond);
        }
    }

    /// Runs a group request on the coordinator: loads the group's partition
    /// if needed and appends what the request wrote. An error is answered
    /// here (`None`).
    fn run_group<T>(
        &mut self,
        now: Millis,
        group: &str,
        reply: ReplyTo,
        run: impl FnOnce(&mut GroupCoordinator, u32, &TopicCounts, Millis) -> Result<Outcome<T>>,
    ) -> Option<Coordinated<T>> {
        let (p, tp, epoch) = match self.coordinator_partition(group) {
            Ok(found) => found,
            Err(e) => {
                self.respond(reply, Err(e));
                return None;
            }
        };
        let topics = self.topic_counts();
        if !self.groups.is_loaded(p, epoch)
            && let Err(e) = self.load_groups(p, &tp, epoch, now)
        {
            let e = self.append_failure(group, e);
            self.respond(reply, Err(e));
            return None;
        }
        let outcome = match run(&mut self.groups, p, &topics, now) {
            Ok(outcome) => outcome,
            Err(e) => {
                self.respond(reply, Err(e));
                return None;
            }
        };
        let wrote = !outcome.records.is_empty();
        let wait_for = if !wrote {
            outcome.wait_for
        } else {
            match self.append_group_records(now, &tp, epoch, &outcome.records) {
                Ok(end) => {
                    self.groups.written(p, group, end);
                    // Followers waiting for data copy the records now;
                    // members whose heartbeats were held look again.
                    self.group_written.insert(tp.clone());
                    end
                }
                Err(e) => {
                    // The state in memory is ahead of the log: read it again.
                    self.groups.unload(p);
                    let e = self.append_failure(group, e);
                    self.respond(reply, Err(e));
                    return None;
                }
            }
        };
        Some(Coordinated {
            value: outcome.value,
            wrote,
            wait_for,
            partition: tp,
            leader_epoch: epoch,
        })
    }

    /// Answers a group request once its records are committed.
    fn wait_group<T>(
        &mut self,
        now: Millis,
        group: &str,
        reply: ReplyTo,
        done: Coordinated<T>,
        respond: impl FnOnce(T) -> Response,
    ) {
        let wait = PendingGroup {
            reply,
            response: respond(done.value),
            partition: done.partition,
            required: done.wait_for,
            leader_epoch: done.leader_epoch,
            group: group.to_string(),
            deadline: now + self.config.offsets_commit_timeout_ms as Millis,
        };
        self.settle_group(now, wait);
    }

    /// A member's heartbeat. One that brings nothing new and learns nothing
    /// new is held for up to its `max_wait_ms` (a long poll), and answered
    /// as soon as its group writes something: so members learn of a
    /// rebalance at once, not at their next heartbeat. `held_until` is the
    /// deadline of a heartbeat held before.
    pub(super) fn group_heartbeat(
        &mut self,
        now: Millis,
        request: GroupHeartbeatRequest,
        reply: ReplyTo,
        held_until: Option<Millis>,
    ) {
        let group = request.group.clone();
        let until = held_until.unwrap_or(now + Millis::from(request.max_wait_ms));
        let holdable = (request.member_epoch > 0 && until > now).then(|| request.clone());
        let (epoch, acked) = (request.member_epoch, request.acked_assignment);
        let Some(done) = self.run_group(now, &group, reply, |c, p, topics, now| {
            c.heartbeat(p, request, topics, now)
        }) else {
            return;
        };
        let idle = !done.wrote
            && done.value.member_epoch == epoch
            && done.value.assignment_id == acked
            && !done.value.reconciling;
        if let (true, Some(request)) = (idle, holdable) {
            self.held_heartbeats.park(HeldHeartbeat {
                request,
                reply,
                partition: done.partition,
                deadline: until,
            });
            return;
        }
        self.wait_group(now, &group, reply, done, Response::GroupHeartbeat);
    }

    /// A lost leadership, or a log that went offline, is the client's cue
    /// to find the coordinator again (Kafka answers `NOT_COORDINATOR` for
    /// `KAFKA_STORAGE_ERROR` too: the broker gives the partition up).
    fn append_failure(&self, group: &str, e: Error) -> Error {
        match e {
            Error::NotLeaderOrFollower { .. }
            | Error::FencedLeaderEpoch { .. }
            | Error::LogOffline { .. }
            | Error::Io { .. }
            | Error::CorruptLog { .. } => Error::NotCoordinator {
                group: group.to_string(),
                node: self.id,
            },
            other => other,
        }
    }

    /// Reads partition `p` of `__consumer_offsets` from its start to its end
    /// and rebuilds its groups. A record that does not decode (which the
    /// coordinator never writes) is skipped.
    fn load_groups(&mut self, p: u32, tp: &TopicPartition, epoch: i32, now: Millis) -> Result<()> {
        let partition = self
            .partitions
            .get(tp)
            .ok_or_else(|| Error::NotCoordinator {
                group: String::new(),
                node: self.id,
            })?;
        let log = &partition.log;
        let end = log.log_end_offset();
        let mut offset = log.log_start_offset();
        let mut decoded = Vec::new();
        while offset < end {
            let records = log.read(offset, 1 << 20)?;
            let mut next = offset;
            for batch in records.batches() {
                let batch = batch?;
                next = next.max(batch.next_offset());
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
            if next == offset {
                break;
            }
            offset = next;
        }
        self.groups.load(p, epoch, decoded, end, now)
    }

    /// Appends the coordinator's records as the partition's leader in
    /// `epoch`; returns the log end offset after them.
    fn append_group_records(
        &mut self,
        now: Millis,
        tp: &TopicPartition,
        epoch: i32,
        records: &[GroupRecord],
    ) -> Result<u64> {
        let mut builder = RecordBatchBuilder::new();
        for record in records {
            let (key, value) = record.encode()?;
            builder.append(now, Some(&key), value.as_deref(), &[]);
        }
        let batch = builder.build();
        let not_leader = || Error::NotLeaderOrFollower {
            broker: self.id,
            partition: tp.clone(),
        };
        let partition = self.partitions.get_mut(tp).ok_or_else(not_leader)?;
        if !partition.leads_in(epoch) {
            return Err(not_leader());
        }
        partition.replicas.check_acks_all()?;
        partition.log.append(batch, epoch)?;
        let end = partition.log.log_end_offset();
        let update = partition.replicas.on_append(end);
        partition.apply(&update);
        self.moved.insert(tp.clone());
        if let Some(proposal) = update.proposal {
            self.send_proposal(now, proposal);
        }
        Ok(end)
    }

    /// Answers a group request whose records are committed, or parks it.
    pub(super) fn settle_group(&mut self, now: Millis, wait: PendingGroup) {
        if let Some(wait) = self.finish_group(now, wait, false) {
            self.group_waits.park(wait);
        }
    }

    /// Answers if the wait is over: committed, leadership lost, or due.
    pub(super) fn finish_group(
        &mut self,
        now: Millis,
        wait: PendingGroup,
        force: bool,
    ) -> Option<PendingGroup> {
        let state = self
            .partitions
            .get(&wait.partition)
            .map(|p| (p.leads_in(wait.leader_epoch), p.replicas.high_watermark()));
        let outcome = match state {
            Some((true, hw))
                if hw >= wait.required || planted(PlantedBug::CommitAnsweredBeforeReplicated) =>
            {
                Some(Ok(wait.response.clone()))
            }
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
                self.respond(wait.reply, result);
                None
            }
            None => Some(wait),
        }
    }

    /// Expires members whose session or revocation time ran out, forgets
    /// the groups of partitions this broker no longer leads, and appends
    /// what changed.
    pub(super) fn tick_groups(&mut self, now: Millis) {
        let topics = self.topic_counts();
        for (p, epoch) in self.groups.loaded() {
            let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), p);
            let still = self
                .partitions
                .get(&tp)
                .is_some_and(|partition| partition.leads_in(epoch));
            if !still {
                self.groups.unload(p);
            }
        }
        for write in self.groups.tick(&topics, now) {
            let tp = TopicPartition::from_shared(CONSUMER_OFFSETS_TOPIC.into(), write.partition);
            let Some(epoch) = self.partitions.get(&tp).map(|p| p.replicas.leader_epoch()) else {
                self.groups.unload(write.partition);
                continue;
            };
            match self.append_group_records(now, &tp, epoch, &write.records) {
                Ok(end) => {
                    self.groups.written(write.partition, &write.group, end);
                    self.group_written.insert(tp);
                }
                Err(_) => self.groups.unload(write.partition),
            }
        }
    }
}
