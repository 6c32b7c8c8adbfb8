//! The group coordinator's state machine.
//!
//! One [`GroupCoordinator`] per broker holds a shard per `__consumer_offsets`
//! partition the broker leads. Requests (heartbeats, commits, offset fetches)
//! and ticks (`now`) go in; responses and the records that must be appended
//! to the shard's partition come out. The broker appends the records and
//! answers once the partition's high watermark covers them, so a member only
//! ever acts on state that survives a coordinator failover.
//!
//! Membership follows Kafka's KIP-848: a member's heartbeat carries its epoch
//! and the partitions it holds; the coordinator keeps, per member, the
//! partitions it may own (`assigned`) and those it must give up
//! (`pending`). When the group changes, the assignor computes a new target;
//! each member first revokes what it must (everything for an eager assignor,
//! only what moves for a cooperative one), then advances to the target epoch
//! and receives its target partitions as their previous owners release them.
//! A partition is never in two members' `assigned ∪ pending`.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::assignor::{Assignment, Assignor, MemberSubscription, RebalanceProtocol};
use super::records::{
    GroupRecord, GroupValue, MemberValue, OffsetValue, restore, store, stored_equals,
};
use super::{
    GroupDescription, GroupListing, GroupState, MemberDescription, OffsetAndMetadata,
    validate_group_id,
};
use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{
    CommittedOffsets, DEFAULT_ASSIGNOR, DEFAULT_REBALANCE_TIMEOUT_MS, DEFAULT_SESSION_TIMEOUT_MS,
    GroupHeartbeatRequest, GroupHeartbeatResponse, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, NodeId,
    OffsetCommitRequest, OffsetDeleteRequest, OffsetFetchRequest, STATIC_LEAVE_EPOCH, Subscription,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// How many replaced static member ids a group remembers, to answer them
/// with `FencedInstanceId` rather than `UnknownMemberId`.
const REPLACED_REMEMBERED: usize = 32;

/// The topics members can be assigned: name → partition count (internal
/// topics excluded).
pub(crate) type TopicCounts = BTreeMap<String, u32>;

/// What a request did: the answer, the records to append for it, and the
/// offset the partition's high watermark must reach before the answer may
/// be sent (when nothing new is written: the group's last record).
#[derive(Debug)]
pub(crate) struct Outcome<T> {
    pub(crate) value: T,
    pub(crate) records: Vec<GroupRecord>,
    pub(crate) wait_for: u64,
}

/// Records a tick wrote for one group.
#[derive(Debug)]
pub(crate) struct TickWrite {
    pub(crate) partition: u32,
    pub(crate) group: String,
    pub(crate) records: Vec<GroupRecord>,
}

/// Every group of the `__consumer_offsets` partitions this broker leads.
#[derive(Debug)]
pub(crate) struct GroupCoordinator {
    node: NodeId,
    assignors: BTreeMap<String, Arc<dyn Assignor>>,
    shards: BTreeMap<u32, Shard>,
}

#[derive(Debug)]
struct Shard {
    partition: u32,
    leader_epoch: i32,
    groups: BTreeMap<String, Group>,
    /// The number in the next new member's id. It starts at the log's end
    /// when the shard is loaded: every member id handed out before was
    /// written in a record below that end, so a broker that restarts and
    /// loads its shard again under the same leader epoch never hands out
    /// an id twice.
    next_member: u64,
}

#[derive(Debug)]
struct Member {
    id: String,
    instance_id: Option<String>,
    client_id: String,
    subscription: Subscription,
    pattern: Option<regex::Regex>,
    /// The topics the subscription resolved to at the last heartbeat.
    topics: BTreeSet<String>,
    epoch: i32,
    previous_epoch: i32,
    assigned: BTreeSet<TopicPartition>,
    pending: BTreeSet<TopicPartition>,
    /// Changes whenever `assigned` does; members acknowledge it.
    assignment_id: u64,
    /// The `assignment_id` that asked for the `pending` revocation.
    revoked_at: u64,
    session_timeout_ms: u32,
    rebalance_timeout_ms: u32,
    last_heartbeat: Millis,
    revocation_deadline: Option<Millis>,
    left: bool,
}

#[derive(Debug)]
struct Group {
    id: String,
    group_epoch: i32,
    assignor: String,
    target_epoch: i32,
    target: Assignment,
    target_partitions: TopicCounts,
    members: BTreeMap<String, Member>,
    offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
    /// End offset of the group's last record: answers wait for the high
    /// watermark to reach it.
    last_written: u64,
    replaced: VecDeque<(String, String)>,
    /// The durable state as last written (or loaded): a request changed
    /// the group if its state no longer [matches](Group::unchanged) this.
    stored: Option<GroupValue>,
}

impl GroupCoordinator {
    /// A coordinator on broker `node` that knows these assignors (by name).
    pub(crate) fn new(node: NodeId, assignors: Vec<Arc<dyn Assignor>>) -> Self {
        Self {
            node,
            assignors: assignors
                .into_iter()
                .map(|a| (a.name().to_string(), a))
                .collect(),
            shards: BTreeMap::new(),
        }
    }

    /// Whether partition `partition`'s groups are loaded for `leader_epoch`.
    pub(crate) fn is_loaded(&self, partition: u32, leader_epoch: i32) -> bool {
        self.shards
            .get(&partition)
            .is_some_and(|s| s.leader_epoch == leader_epoch)
    }

    /// The partitions whose groups are loaded, with their leader epochs.
    pub(crate) fn loaded(&self) -> Vec<(u32, i32)> {
        self.shards
            .values()
            .map(|s| (s.partition, s.leader_epoch))
            .collect()
    }

    /// Rebuilds partition `partition`'s groups from its records, in log
    /// order (`end`: the log end offset read up to). Sessions restart at `now`.
    pub(crate) fn load(
        &mut self,
        partition: u32,
        leader_epoch: i32,
        records: impl IntoIterator<Item = GroupRecord>,
        end: u64,
        now: Millis,
    ) -> Result<()> {
        let mut groups: BTreeMap<String, Group> = BTreeMap::new();
        for record in records {
            match record {
                GroupRecord::Offset {
                    group,
                    partition,
                    value,
                } => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group));
                    match value {
                        Some(v) => {
                            g.offsets.insert(partition, v.into());
                        }
                        None => {
                            g.offsets.remove(&partition);
                        }
                    }
                }
                GroupRecord::Group { group, value } => {
                    let g = groups
                        .entry(group.clone())
                        .or_insert_with(|| Group::new(group));
                    match value {
                        Some(v) => g.restore(v, now)?,
                        None => g.clear_membership(),
                    }
                }
            }
        }
        groups.retain(|_, g| !g.members.is_empty() || !g.offsets.is_empty());
        for g in groups.values_mut() {
            g.last_written = end;
            g.stored = g.value();
        }
        self.shards.insert(
            partition,
            Shard {
                partition,
                leader_epoch,
                groups,
                next_member: end,
            },
        );
        Ok(())
    }

    /// Forgets partition `partition`'s groups (this broker no longer leads it).
    pub(crate) fn unload(&mut self, partition: u32) {
        self.shards.remove(&partition);
    }

    fn shard(&mut self, partition: u32, group: &str) -> Result<&mut Shard> {
        let node = self.node;
        self.shards
            .get_mut(&partition)
            .ok_or_else(|| Error::NotCoordinator {
                group: group.to_string(),
                node,
            })
    }

    /// Notes that `group`'s records up to `end` were appended.
    pub(crate) fn written(&mut self, partition: u32, group: &str, end: u64) {
        if let Some(g) = self
            .shards
            .get_mut(&partition)
            .and_then(|s| s.groups.get_mut(group))
        {
            g.last_written = g.last_written.max(end);
        }
    }

    /// A member's heartbeat: join, stay, or leave.
    pub(crate) fn heartbeat(
        &mut self,
        partition: u32,
        request: GroupHeartbeatRequest,
        topics: &TopicCounts,
        now: Millis,
    ) -> Result<Outcome<GroupHeartbeatResponse>> {
        validate_group_id(&request.group)?;
        // No assignor named: the group's, or the default for a new group.
        let name = match &request.assignor {
            Some(name) => name.clone(),
            None => self
                .shard(partition, &request.group)?
                .groups
                .get(&request.group)
                .filter(|g| !g.members.is_empty())
                .map_or_else(|| DEFAULT_ASSIGNOR.to_string(), |g| g.assignor.clone()),
        };
        let assignor = self.assignor(&request.group, &name)?;
        let shard = self.shard(partition, &request.group)?;
        let member_seq = shard.next_member;
        let leader_epoch = shard.leader_epoch;
        let group = shard
            .groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(request.group.clone()));
        #[cfg(feature = "tracing")]
        let state_before = group.state();
        let result = group.heartbeat(request, &assignor, topics, now, || {
            format!("{partition}-{leader_epoch}-{member_seq}")
        });
        #[cfg(feature = "tracing")]
        if group.state() != state_before {
            trace_event!(
                info,
                group = %group.id,
                from = ?state_before,
                to = ?group.state(),
                group_epoch = group.group_epoch,
                "group state changed"
            );
        }
        if matches!(&result, Ok((_, true))) {
            shard.next_member += 1;
        }
        let group_id = group.id.clone();
        let (response, _) = match result {
            Ok(r) => r,
            Err(e) => {
                // Nothing changed that needs writing; drop an empty group we
                // created for a refused join.
                if group.members.is_empty() && group.offsets.is_empty() && group.stored.is_none() {
                    shard.groups.remove(&group_id);
                }
                return Err(e);
            }
        };
        Ok(shard.finish(&group_id, response))
    }

    /// Commits offsets for a member (or for a group without members).
    pub(crate) fn commit(
        &mut self,
        partition: u32,
        request: OffsetCommitRequest,
        topics: &TopicCounts,
        now: Millis,
    ) -> Result<Outcome<()>> {
        validate_group_id(&request.group)?;
        // Offsets of partitions that do not exist would make the group's
        // description and resets fail on them later.
        if let Some((tp, _)) = request
            .offsets
            .iter()
            .find(|(tp, _)| topics.get(tp.topic()).is_none_or(|&n| tp.partition() >= n))
        {
            return Err(Error::UnknownTopicOrPartition {
                topic: tp.to_string(),
            });
        }
        let shard = self.shard(partition, &request.group)?;
        let group = shard
            .groups
            .entry(request.group.clone())
            .or_insert_with(|| Group::new(request.group.clone()));
        if let Err(e) = group.check_commit(&request) {
            if group.members.is_empty() && group.offsets.is_empty() {
                shard.groups.remove(&request.group);
            }
            return Err(e);
        }
        let mut records = Vec::with_capacity(request.offsets.len());
        for (tp, offset) in request.offsets {
            let stamped = OffsetAndMetadata {
                commit_timestamp: now,
                ..offset
            };
            records.push(GroupRecord::Offset {
                group: group.id.clone(),
                partition: tp.clone(),
                value: Some(OffsetValue::from(&stamped)),
            });
            group.offsets.insert(tp, stamped);
        }
        Ok(Outcome {
            value: (),
            records,
            wait_for: group.last_written,
        })
    }

    /// Deletes a group's committed offsets for `partitions` (Kafka's
    /// OffsetDelete), or, with `None`, every offset and the group itself
    /// (Kafka's DeleteGroups). The group must have no members
    /// ([`Error::NonEmptyGroup`]); an unknown group is
    /// [`Error::GroupIdNotFound`].
    pub(crate) fn delete_offsets(
        &mut self,
        partition: u32,
        request: &OffsetDeleteRequest,
    ) -> Result<Outcome<()>> {
        validate_group_id(&request.group)?;
        let shard = self.shard(partition, &request.group)?;
        let not_found = || Error::GroupIdNotFound {
            group: request.group.clone(),
        };
        let group = shard.groups.get_mut(&request.group).ok_or_else(not_found)?;
        if !group.members.is_empty() {
            return Err(Error::NonEmptyGroup {
                group: request.group.clone(),
                members: group.members.len(),
            });
        }
        let doomed: Vec<TopicPartition> = match &request.partitions {
            None => group.offsets.keys().cloned().collect(),
            Some(partitions) => partitions
                .iter()
                .filter(|tp| group.offsets.contains_key(*tp))
                .cloned()
                .collect(),
        };
        let mut records: Vec<GroupRecord> = doomed
            .into_iter()
            .map(|tp| {
                group.offsets.remove(&tp);
                GroupRecord::Offset {
                    group: group.id.clone(),
                    partition: tp,
                    value: None,
                }
            })
            .collect();
        if request.partitions.is_none() {
            records.push(GroupRecord::Group {
                group: group.id.clone(),
                value: None,
            });
        }
        let wait_for = group.last_written;
        if group.offsets.is_empty() {
            shard.groups.remove(&request.group);
        }
        Ok(Outcome {
            value: (),
            records,
            wait_for,
        })
    }

    /// The group's committed offsets (of `partitions`, or all).
    pub(crate) fn fetch_offsets(
        &mut self,
        partition: u32,
        request: &OffsetFetchRequest,
    ) -> Result<Outcome<CommittedOffsets>> {
        validate_group_id(&request.group)?;
        let shard = self.shard(partition, &request.group)?;
        let Some(group) = shard.groups.get(&request.group) else {
            return Ok(Outcome {
                value: CommittedOffsets::new(),
                records: Vec::new(),
                wait_for: 0,
            });
        };
        let value = match &request.partitions {
            None => group.offsets.clone().into_iter().collect(),
            Some(wanted) => wanted
                .iter()
                .filter_map(|tp| group.offsets.get(tp).map(|o| (tp.clone(), o.clone())))
                .collect(),
        };
        Ok(Outcome {
            value,
            records: Vec::new(),
            wait_for: group.last_written,
        })
    }

    /// The group's members, assignment and offsets.
    pub(crate) fn describe(
        &mut self,
        partition: u32,
        group: &str,
    ) -> Result<Outcome<GroupDescription>> {
        validate_group_id(group)?;
        let node = self.node;
        let shard = self.shard(partition, group)?;
        let g = shard
            .groups
            .get(group)
            .ok_or_else(|| Error::GroupIdNotFound {
                group: group.to_string(),
            })?;
        Ok(Outcome {
            value: g.describe(node),
            records: Vec::new(),
            wait_for: g.last_written,
        })
    }

    /// Every group this coordinator holds.
    pub(crate) fn list(&self) -> Vec<GroupListing> {
        let mut out: Vec<GroupListing> = self
            .shards
            .values()
            .flat_map(|s| s.groups.values())
            .map(|g| GroupListing {
                group: g.id.clone(),
                state: g.state(),
                members: g.members.len(),
                coordinator: self.node,
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Every group this coordinator holds, for the metrics: state, group
    /// epoch (generation) and members.
    pub(crate) fn metrics(&self) -> Vec<crate::metrics::GroupMetrics> {
        let mut out: Vec<crate::metrics::GroupMetrics> = self
            .shards
            .values()
            .flat_map(|s| s.groups.values())
            .map(|g| crate::metrics::GroupMetrics {
                group: g.id.clone(),
                state: g.state(),
                group_epoch: g.group_epoch,
                members: g.members.len(),
                coordinator: self.node,
            })
            .collect();
        out.sort_by(|a, b| a.group.cmp(&b.group));
        out
    }

    /// Removes members whose session or revocation time ran out, and
    /// returns what must be written for the groups that changed.
    pub(crate) fn tick(&mut self, topics: &TopicCounts, now: Millis) -> Vec<TickWrite> {
        let mut writes = Vec::new();
        for shard in self.shards.values_mut() {
            let expiring: Vec<String> = shard
                .groups
                .values()
                .filter(|g| g.members.values().any(|m| m.expired(now)))
                .map(|g| g.id.clone())
                .collect();
            for id in expiring {
                let Some(group) = shard.groups.get_mut(&id) else {
                    continue;
                };
                let gone: Vec<String> = group
                    .members
                    .values()
                    .filter(|m| m.expired(now))
                    .map(|m| m.id.clone())
                    .collect();
                for member in gone {
                    group.remove_member(&member);
                }
                if let Some(assignor) = self.assignors.get(&group.assignor).cloned() {
                    // An invalid assignment is reported to the next member
                    // that heartbeats; the removal stands.
                    let _ = group.refresh_target(&assignor, topics, now);
                }
                let Outcome { records, .. } = shard.finish(&id, ());
                if !records.is_empty() {
                    writes.push(TickWrite {
                        partition: shard.partition,
                        group: id,
                        records,
                    });
                }
            }
        }
        writes
    }

    /// When the next member's session or revocation time runs out.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.shards
            .values()
            .flat_map(|s| s.groups.values())
            .flat_map(|g| g.members.values())
            .map(Member::deadline)
            .min()
    }

    fn assignor(&self, group: &str, name: &str) -> Result<Arc<dyn Assignor>> {
        self.assignors
            .get(name)
            .cloned()
            .ok_or_else(|| Error::InconsistentGroupProtocol {
                group: group.to_string(),
                requested: name.to_string(),
                reason: format!(
                    "no broker knows it (known: {})",
                    self.assignors
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }
}

impl Shard {
    /// Compares the group with its state as last written and returns the
    /// outcome: a group record if anything durable changed (a tombstone if
    /// the group is gone), and what to wait for.
    fn finish<T>(&mut self, id: &str, value: T) -> Outcome<T> {
        let Some(group) = self.groups.get_mut(id) else {
            return Outcome {
                value,
                records: Vec::new(),
                wait_for: 0,
            };
        };
        let gone = group.members.is_empty() && group.offsets.is_empty();
        // A group with nothing left is deleted: a tombstone lets compaction
        // drop its records.
        let changed = if gone {
            group.stored.is_some()
        } else {
            !group.unchanged()
        };
        debug_assert_eq!(
            changed,
            group.stored != if gone { None } else { group.value() },
            "Group::unchanged disagrees with Group::value"
        );
        let wait_for = group.last_written;
        let mut records = Vec::new();
        if changed {
            let after = if gone { None } else { group.value() };
            group.stored.clone_from(&after);
            records.push(GroupRecord::Group {
                group: id.to_string(),
                value: after,
            });
        }
        if gone {
            self.groups.remove(id);
        }
        Outcome {
            value,
            records,
            wait_for,
        }
    }
}

impl Member {
    /// The first millisecond at which the member is out of time.
    ///
    /// The consumer gives its partitions up once *more* than its session
    /// timeout has passed since it sent its last answered heartbeat (or its
    /// rebalance timeout since the heartbeat it times a revocation from),
    /// measured on a clock finer than ours; it sent that heartbeat at or
    /// before the millisecond we stamped it with. So the member is out of
    /// time only strictly after the limit: removing it at the limit itself
    /// could hand its partitions to another member while it still consumes
    /// them.
    fn deadline(&self) -> Millis {
        let session = self.last_heartbeat + Millis::from(self.session_timeout_ms);
        self.revocation_deadline.map_or(session, |d| d.min(session)) + 1
    }

    fn expired(&self, now: Millis) -> bool {
        now >= self.deadline()
    }

    /// Runs the revocation clock while the member reports holding a
    /// partition it must give up: it starts at the first heartbeat that
    /// does, and stops at one that does not.
    ///
    /// That is how the consumer times a revocation: from the heartbeat
    /// whose answer showed it that partitions it holds are being revoked,
    /// until one whose answer shows it holds none of them. A pending
    /// partition it does not hold is not timed on its side, whether it
    /// never took it (a newer assignment replaced the one that gave it) or
    /// already let it go (before it acknowledged the assignment that asked).
    /// Timing such a partition here would remove the member, and give away
    /// the partitions it does hold, while it still consumes them.
    fn time_revocation(&mut self, owned: &BTreeSet<TopicPartition>, now: Millis) {
        if !self.pending.iter().any(|tp| owned.contains(tp)) {
            self.revocation_deadline = None;
        } else if self.revocation_deadline.is_none() {
            self.revocation_deadline = Some(now + Millis::from(self.rebalance_timeout_ms));
        }
    }

    fn owns(&self, tp: &TopicPartition) -> bool {
        self.assigned.contains(tp) || self.pending.contains(tp)
    }

    /// Resolves the subscription against the cluster's topics.
    fn resolve(&self, topics: &TopicCounts) -> BTreeSet<String> {
        match (&self.subscription, &self.pattern) {
            (Subscription::Topics(names), _) => names.clone(),
            (Subscription::Pattern(_), Some(regex)) => topics
                .keys()
                .filter(|name| regex.is_match(name))
                .cloned()
                .collect(),
            (Subscription::Pattern(_), None) => BTreeSet::new(),
        }
    }

    fn set_subscription(&mut self, subscription: Subscription) -> Result<()> {
        if self.subscription == subscription
            && (self.pattern.is_some() || !is_pattern(&subscription))
        {
            return Ok(());
        }
        self.pattern = compile(&subscription)?;
        self.subscription = subscription;
        Ok(())
    }

    /// Whether [`value`](Self::value) would equal `stored`, found without
    /// building it.
    fn unchanged(&self, stored: &MemberValue) -> bool {
        // Every field named, so a new one cannot be forgotten here.
        let MemberValue {
            member_id,
            instance_id,
            client_id,
            subscription,
            topics,
            epoch,
            previous_epoch,
            assigned,
            pending_revocation,
            assignment_id,
            revoked_at,
            session_timeout_ms,
            rebalance_timeout_ms,
            left,
        } = stored;
        self.id == *member_id
            && self.instance_id == *instance_id
            && self.client_id == *client_id
            && self.subscription == *subscription
            && self.topics.len() == topics.len()
            && self.topics.iter().zip(topics).all(|(t, st)| t == st)
            && self.epoch == *epoch
            && self.previous_epoch == *previous_epoch
            && stored_equals(assigned, &self.assigned)
            && stored_equals(pending_revocation, &self.pending)
            && self.assignment_id == *assignment_id
            && self.revoked_at == *revoked_at
            && self.session_timeout_ms == *session_timeout_ms
            && self.rebalance_timeout_ms == *rebalance_timeout_ms
            && self.left == *left
    }

    fn value(&self) -> MemberValue {
        MemberValue {
            member_id: self.id.clone(),
            instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            subscription: self.subscription.clone(),
            topics: self.topics.iter().cloned().collect(),
            epoch: self.epoch,
            previous_epoch: self.previous_epoch,
            assigned: store(&self.assigned),
            pending_revocation: store(&self.pending),
            assignment_id: self.assignment_id,
            revoked_at: self.revoked_at,
            session_timeout_ms: self.session_timeout_ms,
            rebalance_timeout_ms: self.rebalance_timeout_ms,
            left: self.left,
        }
    }
}

fn is_pattern(subscription: &Subscription) -> bool {
    matches!(subscription, Subscription::Pattern(_))
}

/// Compiles a pattern subscription as a whole-name match.
pub(crate) fn compile(subscription: &Subscription) -> Result<Option<regex::Regex>> {
    match subscription {
        Subscription::Topics(_) => Ok(None),
        Subscription::Pattern(pattern) => regex::Regex::new(&format!("^(?:{pattern})$"))
            .map(Some)
            .map_err(|e| Error::InvalidPattern {
                pattern: pattern.clone(),
                reason: e.to_string(),
            }),
    }
}

impl Group {
    fn new(id: String) -> Self {
        Self {
            id,
            group_epoch: 0,
            assignor: String::new(),
            target_epoch: 0,
            target: Assignment::new(),
            target_partitions: TopicCounts::new(),
            members: BTreeMap::new(),
            offsets: BTreeMap::new(),
            last_written: 0,
            replaced: VecDeque::new(),
            stored: None,
        }
    }

    /// Whether the durable state is still the one last written: what
    /// [`value`](Self::value) would compare equal to `stored`, found without
    /// building it (a heartbeat that changes nothing allocates nothing).
    fn unchanged(&self) -> bool {
        let Some(stored) = &self.stored else {
            return self.members.is_empty() && self.group_epoch == 0;
        };
        // Every field named, so a new one cannot be forgotten here.
        let GroupValue {
            group_epoch,
            assignor,
            target_epoch,
            target,
            target_partitions,
            members,
            replaced,
        } = stored;
        !(self.members.is_empty() && self.group_epoch == 0)
            && self.group_epoch == *group_epoch
            && self.assignor == *assignor
            && self.target_epoch == *target_epoch
            && self.target.len() == target.len()
            && self
                .target
                .iter()
                .zip(target)
                .all(|((m, tps), (sm, stps))| m == sm && stored_equals(stps, tps))
            && self.target_partitions.len() == target_partitions.len()
            && self
                .target_partitions
                .iter()
                .zip(target_partitions)
                .all(|((t, n), (st, sn))| t == st && n == sn)
            && self.members.len() == members.len()
            && self
                .members
                .values()
                .zip(members)
                .all(|(m, sm)| m.unchanged(sm))
            && self.replaced.len() == replaced.len()
            && self.replaced.iter().zip(replaced).all(|(r, sr)| r == sr)
    }

    /// The durable part of the group's state; `None` without members.
    fn value(&self) -> Option<GroupValue> {
        if self.members.is_empty() && self.group_epoch == 0 {
            return None;
        }
        Some(GroupValue {
            group_epoch: self.group_epoch,
            assignor: self.assignor.clone(),
            target_epoch: self.target_epoch,
            target: self
                .target
                .iter()
                .map(|(m, tps)| (m.clone(), store(tps)))
                .collect(),
            target_partitions: self
                .target_partitions
                .iter()
                .map(|(t, n)| (t.clone(), *n))
                .collect(),
            members: self.members.values().map(Member::value).collect(),
            replaced: self.replaced.iter().cloned().collect(),
        })
    }

    fn restore(&mut self, v: GroupValue, now: Millis) -> Result<()> {
        self.group_epoch = v.group_epoch;
        self.assignor = v.assignor;
        self.target_epoch = v.target_epoch;
        self.target = v
            .target
            .iter()
            .map(|(m, tps)| Ok((m.clone(), restore(tps)?)))
            .collect::<Result<_>>()?;
        self.target_partitions = v.target_partitions.into_iter().collect();
        self.replaced = v.replaced.into_iter().collect();
        self.members.clear();
        for m in v.members {
            let pending: BTreeSet<TopicPartition> =
                restore(&m.pending_revocation)?.into_iter().collect();
            let member = Member {
                pattern: compile(&m.subscription)?,
                topics: m.topics.into_iter().collect(),
                id: m.member_id,
                instance_id: m.instance_id,
                client_id: m.client_id,
                subscription: m.subscription,
                epoch: m.epoch,
                previous_epoch: m.previous_epoch,
                assigned: restore(&m.assigned)?.into_iter().collect(),
                assignment_id: m.assignment_id,
                revoked_at: m.revoked_at,
                // What the member holds is unknown until it heartbeats: the
                // revocation clock restarts then (`Member::time_revocation`).
                revocation_deadline: None,
                pending,
                session_timeout_ms: m.session_timeout_ms,
                rebalance_timeout_ms: m.rebalance_timeout_ms,
                last_heartbeat: now,
                left: m.left,
            };
            self.members.insert(member.id.clone(), member);
        }
        Ok(())
    }

    fn clear_membership(&mut self) {
        self.members.clear();
        self.target.clear();
        self.target_partitions.clear();
        self.replaced.clear();
        self.group_epoch = 0;
        self.target_epoch = 0;
        self.assignor.clear();
    }

    fn state(&self) -> GroupState {
        if self.members.is_empty() {
            return GroupState::Empty;
        }
        let settled = self.members.values().all(|m| {
            m.epoch == self.target_epoch
                && m.pending.is_empty()
                && self.target.get(&m.id).is_some_and(|t| {
                    t.len() == m.assigned.len() && t.iter().all(|tp| m.assigned.contains(tp))
                })
        });
        if settled && self.target_epoch == self.group_epoch {
            GroupState::Stable
        } else {
            GroupState::Reconciling
        }
    }

    fn describe(&self, node: NodeId) -> GroupDescription {
        GroupDescription {
            group: self.id.clone(),
            state: self.state(),
            group_epoch: self.group_epoch,
            assignor: self.assignor.clone(),
            coordinator: node,
            members: self
                .members
                .values()
                .map(|m| MemberDescription {
                    member_id: m.id.clone(),
                    group_instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    member_epoch: m.epoch,
                    assignment: m.assigned.iter().cloned().collect(),
                    pending_revocation: m.pending.iter().cloned().collect(),
                    target: self.target.get(&m.id).cloned().unwrap_or_default(),
                    subscription: m.subscription.clone(),
                    subscribed_topics: m.topics.iter().cloned().collect(),
                })
                .collect(),
            offsets: self.offsets.clone().into_iter().collect(),
        }
    }

    fn bump(&mut self) {
        self.group_epoch = self.group_epoch.saturating_add(1);
    }

    fn remove_member(&mut self, id: &str) {
        if self.members.remove(id).is_some() {
            self.target.remove(id);
            self.bump();
        }
    }

    /// Handles a heartbeat; the bool says whether a member id was handed out.
    fn heartbeat(
        &mut self,
        request: GroupHeartbeatRequest,
        assignor: &Arc<dyn Assignor>,
        topics: &TopicCounts,
        now: Millis,
        new_id: impl FnOnce() -> String,
    ) -> Result<(GroupHeartbeatResponse, bool)> {
        if !self.members.is_empty() && self.assignor != assignor.name() {
            return Err(Error::InconsistentGroupProtocol {
                group: self.id.clone(),
                requested: assignor.name().to_string(),
                reason: format!("the group's members use {:?}", self.assignor),
            });
        }
        let mut gave_id = false;
        let member_id = match request.member_epoch {
            LEAVE_GROUP_EPOCH => {
                self.remove_member(&request.member_id);
                self.refresh_target(assignor, topics, now)?;
                return Ok((left(request.member_id, LEAVE_GROUP_EPOCH), false));
            }
            STATIC_LEAVE_EPOCH => {
                let Some(m) = self.members.get_mut(&request.member_id) else {
                    return Ok((left(request.member_id, STATIC_LEAVE_EPOCH), false));
                };
                if m.instance_id.is_none() {
                    self.remove_member(&request.member_id);
                    self.refresh_target(assignor, topics, now)?;
                } else {
                    m.left = true;
                    m.last_heartbeat = now;
                }
                return Ok((left(request.member_id, STATIC_LEAVE_EPOCH), false));
            }
            JOIN_GROUP_EPOCH => {
                let Some(subscription) = &request.subscription else {
                    return Err(Error::InvalidRequest {
                        reason: format!(
                            "member {:?} joins group {:?} without a subscription",
                            request.member_id, self.id
                        ),
                    });
                };
                if !request.member_id.is_empty()
                    && self
                        .members
                        .get(&request.member_id)
                        .is_some_and(|m| !m.left)
                {
                    // A current member joining again (a Kafka client after
                    // an error, a classic member's rejoin) keeps its place,
                    // epoch and assignment; what it says it owns decides
                    // what it still holds.
                    request.member_id.clone()
                } else {
                    let pattern = compile(subscription)?;
                    let id = if request.member_id.is_empty() {
                        gave_id = true;
                        format!(
                            "{}-{}",
                            if request.client_id.is_empty() {
                                "consumer"
                            } else {
                                &request.client_id
                            },
                            new_id()
                        )
                    } else {
                        // An id of the member's own making (KIP-1082), or of a
                        // static member that left for now: whatever an old
                        // member of that id held is let go.
                        self.remove_member(&request.member_id);
                        request.member_id.clone()
                    };
                    self.assignor = assignor.name().to_string();
                    let replaced = request.group_instance_id.as_ref().and_then(|instance| {
                        let old = self
                            .members
                            .values()
                            .find(|m| m.instance_id.as_ref() == Some(instance))?
                            .id
                            .clone();
                        self.members.remove(&old)
                    });
                    let member = match replaced {
                        // A static member back within its session: it takes the
                        // old member's place, epoch and assignment; no rebalance.
                        Some(old) => {
                            if let Some(target) = self.target.remove(&old.id) {
                                self.target.insert(id.clone(), target);
                            }
                            self.replaced.push_back((
                                old.id.clone(),
                                old.instance_id.clone().unwrap_or_default(),
                            ));
                            if self.replaced.len() > REPLACED_REMEMBERED {
                                self.replaced.pop_front();
                            }
                            Member {
                                id: id.clone(),
                                pending: BTreeSet::new(),
                                revocation_deadline: None,
                                left: false,
                                assignment_id: old.assignment_id + 1,
                                ..old
                            }
                        }
                        None => {
                            self.bump();
                            Member {
                                id: id.clone(),
                                instance_id: request.group_instance_id.clone(),
                                client_id: String::new(),
                                subscription: subscription.clone(),
                                pattern,
                                topics: BTreeSet::new(),
                                epoch: 0,
                                previous_epoch: 0,
                                assigned: BTreeSet::new(),
                                pending: BTreeSet::new(),
                                assignment_id: 0,
                                revoked_at: 0,
                                session_timeout_ms: 0,
                                rebalance_timeout_ms: 0,
                                last_heartbeat: now,
                                revocation_deadline: None,
                                left: false,
                            }
                        }
                    };
                    self.members.insert(id.clone(), member);
                    id
                }
            }
            epoch => {
                // A static member that left for now sends nothing more; a
                // heartbeat of its is an old one arriving late.
                let Some(m) = self.members.get(&request.member_id).filter(|m| !m.left) else {
                    return Err(self.unknown_member(&request.member_id));
                };
                if epoch != m.epoch && epoch != m.previous_epoch {
                    return Err(Error::FencedMemberEpoch {
                        group: self.id.clone(),
                        member_id: request.member_id.clone(),
                        epoch,
                        current: m.epoch,
                    });
                }
                request.member_id.clone()
            }
        };
        let Some(m) = self.members.get_mut(&member_id) else {
            return Err(self.unknown_member(&member_id));
        };
        m.last_heartbeat = now;
        let sent_before = (request.member_epoch != JOIN_GROUP_EPOCH).then_some(m.assignment_id);
        m.client_id = request.client_id;
        if let Some(timeout) = request.session_timeout_ms {
            m.session_timeout_ms = timeout;
        } else if m.session_timeout_ms == 0 {
            m.session_timeout_ms = DEFAULT_SESSION_TIMEOUT_MS;
        }
        if let Some(timeout) = request.rebalance_timeout_ms {
            m.rebalance_timeout_ms = timeout;
        } else if m.rebalance_timeout_ms == 0 {
            m.rebalance_timeout_ms = DEFAULT_REBALANCE_TIMEOUT_MS;
        }
        if let Some(subscription) = request.subscription {
            m.set_subscription(subscription)?;
        }
        // Not said: everything it was given and has not given back.
        let owned: BTreeSet<TopicPartition> = match request.owned {
            Some(owned) => owned.into_iter().collect(),
            None => m.assigned.union(&m.pending).cloned().collect(),
        };
        let resolved = m.resolve(topics);
        if resolved != m.topics {
            m.topics = resolved;
            self.bump();
        }
        self.refresh_target(assignor, topics, now)?;
        self.reconcile(
            &member_id,
            &owned,
            request.acked_assignment,
            assignor.protocol(),
            now,
        );
        let m = &self.members[&member_id];
        let target = self.target.get(&member_id);
        let reconciling = m.epoch != self.target_epoch
            || !m.pending.is_empty()
            || target.is_some_and(|t| t.len() != m.assigned.len());
        Ok((
            GroupHeartbeatResponse {
                member_id,
                member_epoch: m.epoch,
                assignment: m.assigned.iter().cloned().collect(),
                assignment_id: m.assignment_id,
                assignment_changed: sent_before != Some(m.assignment_id),
                reconciling,
            },
            gave_id,
        ))
    }

    fn unknown_member(&self, member_id: &str) -> Error {
        match self.replaced.iter().find(|(id, _)| id == member_id) {
            Some((_, instance)) => Error::FencedInstanceId {
                group: self.id.clone(),
                instance_id: instance.clone(),
            },
            None => Error::UnknownMemberId {
                group: self.id.clone(),
                member_id: member_id.to_string(),
            },
        }
    }

    /// Computes a new target assignment if the group changed since the last
    /// one, or the subscribed topics' partition counts did.
    fn refresh_target(
        &mut self,
        assignor: &Arc<dyn Assignor>,
        topics: &TopicCounts,
        _now: Millis,
    ) -> Result<()> {
        let subscribed: BTreeSet<&String> = self.members.values().flat_map(|m| &m.topics).collect();
        let partitions: TopicCounts = subscribed
            .into_iter()
            .filter_map(|t| topics.get(t).map(|&n| (t.clone(), n)))
            .collect();
        if partitions != self.target_partitions {
            self.bump();
        }
        if self.target_epoch == self.group_epoch {
            return Ok(());
        }
        let members: Vec<MemberSubscription> = self
            .members
            .values()
            .map(|m| MemberSubscription {
                member_id: m.id.clone(),
                group_instance_id: m.instance_id.clone(),
                topics: m.topics.clone(),
                owned: self.target.get(&m.id).cloned().unwrap_or_default(),
            })
            .collect();
        let mut target = assignor.assign(&partitions, &members);
        check_assignment(assignor.name(), &partitions, &members, &target)?;
        for m in &members {
            target.entry(m.member_id.clone()).or_default();
        }
        trace_event!(
            info,
            group = %self.id,
            group_epoch = self.group_epoch,
            members = members.len(),
            assignor = assignor.name(),
            "group rebalanced: new target assignment"
        );
        self.target = target;
        self.target_partitions = partitions;
        self.target_epoch = self.group_epoch;
        Ok(())
    }

    /// Moves member `id` towards its target: drops partitions it released,
    /// asks it to revoke what it must, advances its epoch once nothing is
    /// left to revoke, and gives it target partitions nobody else owns.
    ///
    /// `owned` shows a revocation only if the member had seen it: its
    /// `acked` assignment is at least the one that asked. Until then a
    /// partition missing from `owned` may simply not have been taken yet.
    fn reconcile(
        &mut self,
        id: &str,
        owned: &BTreeSet<TopicPartition>,
        acked: u64,
        protocol: RebalanceProtocol,
        now: Millis,
    ) {
        let desired: BTreeSet<TopicPartition> = self
            .target
            .get(id)
            .map(|t| t.iter().cloned().collect())
            .unwrap_or_default();
        let others: BTreeSet<TopicPartition> = self
            .members
            .values()
            .filter(|m| m.id != id)
            .flat_map(|m| m.assigned.iter().chain(&m.pending))
            .cloned()
            .collect();
        let target_epoch = self.target_epoch;
        let Some(m) = self.members.get_mut(id) else {
            return;
        };
        // Nothing above what was sent can have been reconciled.
        let acked = acked.min(m.assignment_id);
        if acked >= m.revoked_at {
            m.pending.retain(|tp| owned.contains(tp));
        }
        m.time_revocation(owned, now);
        if m.epoch != target_epoch {
            if !m.pending.is_empty() {
                return;
            }
            let revoke: BTreeSet<TopicPartition> = match protocol {
                RebalanceProtocol::Eager => m.assigned.clone(),
                RebalanceProtocol::Cooperative => {
                    m.assigned.difference(&desired).cloned().collect()
                }
            };
            if !revoke.is_empty() {
                for tp in &revoke {
                    m.assigned.remove(tp);
                }
                m.assignment_id += 1;
                // A member that reconciled its latest assignment holds
                // exactly `owned`: what it does not hold is free at once.
                let ask: BTreeSet<TopicPartition> = if acked == m.assignment_id - 1 {
                    revoke.into_iter().filter(|tp| owned.contains(tp)).collect()
                } else {
                    revoke
                };
                if !ask.is_empty() {
                    m.pending = ask;
                    m.revoked_at = m.assignment_id;
                    m.time_revocation(owned, now);
                    return;
                }
            }
            m.previous_epoch = m.epoch;
            m.epoch = target_epoch;
        }
        let before = m.assigned.len();
        for tp in desired {
            if !m.owns(&tp) && !others.contains(&tp) {
                m.assigned.insert(tp);
            }
        }
        if m.assigned.len() != before {
            m.assignment_id += 1;
        }
    }

    fn check_commit(&self, request: &OffsetCommitRequest) -> Result<()> {
        if request.member_id.is_empty() {
            if self.members.is_empty() {
                return Ok(());
            }
            return Err(Error::UnknownMemberId {
                group: self.id.clone(),
                member_id: String::new(),
            });
        }
        let Some(m) = self.members.get(&request.member_id) else {
            return Err(self.unknown_member(&request.member_id));
        };
        let fenced = || Error::FencedMemberEpoch {
            group: self.id.clone(),
            member_id: request.member_id.clone(),
            epoch: request.member_epoch,
            current: m.epoch,
        };
        if planted(PlantedBug::FencedCommitAccepted) {
            return Ok(());
        }
        if request.member_epoch == m.epoch {
            // A member commits what it was given (or is giving back).
            return match request.offsets.iter().find(|(tp, _)| !m.owns(tp)) {
                Some((tp, _)) => Err(Error::PartitionNotAssigned {
                    partition: tp.clone(),
                }),
                None => Ok(()),
            };
        }
        if request.member_epoch == m.previous_epoch
            && request.offsets.iter().all(|(tp, _)| m.owns(tp))
        {
            return Ok(());
        }
        Err(fenced())
    }
}

fn left(member_id: String, epoch: i32) -> GroupHeartbeatResponse {
    GroupHeartbeatResponse {
        member_id,
        member_epoch: epoch,
        assignment: Vec::new(),
        assignment_id: 0,
        assignment_changed: false,
        reconciling: false,
    }
}

/// Checks an assignor's result against the rules of [`Assignor`].
fn check_assignment(
    name: &str,
    partitions: &TopicCounts,
    members: &[MemberSubscription],
    assignment: &Assignment,
) -> Result<()> {
    let invalid = |reason: String| {
        Err(Error::InvalidAssignment {
            assignor: name.to_string(),
            reason,
        })
    };
    let by_id: BTreeMap<&str, &MemberSubscription> =
        members.iter().map(|m| (m.member_id.as_str(), m)).collect();
    let mut seen = BTreeSet::new();
    for (member, tps) in assignment {
        let Some(sub) = by_id.get(member.as_str()) else {
            return invalid(format!("{member:?} is not a member"));
        };
        for tp in tps {
            if !seen.insert(tp) {
                return invalid(format!("{tp} is assigned twice"));
            }
            match partitions.get(tp.topic()) {
                Some(&count) if tp.partition() < count => {}
                _ => return invalid(format!("{tp} does not exist")),
            }
            if !sub.topics.contains(tp.topic()) {
                return invalid(format!("{member:?} does not subscribe to {}", tp.topic()));
            }
        }
    }
    Ok(())
}
