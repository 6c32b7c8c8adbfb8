//! The consumer-group APIs: finding the coordinator, heartbeats (join,
//! leave and assignment in one exchange, as in Kafka's KIP-848), offset
//! commits and fetches, and describing groups.

use std::collections::BTreeMap;
use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::NodeId;
use crate::topic::TopicPartition;

/// The member epoch a consumer sends to join a group.
pub const JOIN_GROUP_EPOCH: i32 = 0;
/// The member epoch a consumer sends to leave its group for good.
pub const LEAVE_GROUP_EPOCH: i32 = -1;
/// The member epoch a static member sends when it stops for now: it keeps
/// its partitions until its session times out, so a quick restart with the
/// same `group_instance_id` needs no rebalance.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// The assignor of a group whose joining member names none: Kafka's
/// default server-side assignor is `uniform`, which balances partitions
/// and moves as few as it can, as this one does.
pub const DEFAULT_ASSIGNOR: &str = "cooperative-sticky";

/// The rebalance timeout of a member that joins without one (Kafka's
/// `max.poll.interval.ms` default).
pub const DEFAULT_REBALANCE_TIMEOUT_MS: u32 = 300_000;

/// The session timeout of a member that joins without one (Kafka's
/// `group.consumer.session.timeout.ms` default).
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 45_000;

/// What a member subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Subscription {
    /// These topics.
    Topics(BTreeSet<String>),
    /// Every non-internal topic whose whole name matches this regular
    /// expression, now or later.
    Pattern(String),
}

/// A member's heartbeat: joins (epoch 0), stays (its epoch), or leaves
/// (epoch -1, or -2 for a static member stopping for now).
#[derive(Debug, Clone)]
pub struct GroupHeartbeatRequest {
    /// The group.
    pub group: String,
    /// The member's id. Joining (epoch 0), a member may send an id of its
    /// own making, which it keeps (Kafka's clients do, KIP-1082), or an
    /// empty one and the coordinator gives it one.
    pub member_id: String,
    /// The member's epoch (generation), or one of the special epochs.
    pub member_epoch: i32,
    /// The static member's instance id.
    pub group_instance_id: Option<String>,
    /// The consumer's `client_id`, for describing the group.
    pub client_id: String,
    /// What the member subscribes to; `None`: unchanged since its last
    /// heartbeat (a member joins with one).
    pub subscription: Option<Subscription>,
    /// The assignor the member asks for (by name); `None`: the group's
    /// (for a group without members, [`DEFAULT_ASSIGNOR`]).
    pub assignor: Option<String>,
    /// The partitions the member holds right now; `None`: not said (the
    /// coordinator then counts the member as holding everything it was
    /// given and has not yet given back).
    pub owned: Option<Vec<TopicPartition>>,
    /// The `assignment_id` of the last assignment the member finished
    /// reconciling (revoked and took what it said); 0 before any. The
    /// coordinator trusts `owned` to show revocations only from then on.
    /// A value above the latest assignment's id counts as the latest (a
    /// client that does not number assignments sends `u64::MAX` with the
    /// `owned` of its latest reconciled assignment, as Kafka's clients do).
    pub acked_assignment: u64,
    /// The member is removed when no heartbeat arrives for this long;
    /// `None`: unchanged (joining: [`DEFAULT_SESSION_TIMEOUT_MS`]).
    pub session_timeout_ms: Option<u32>,
    /// The member is removed when it does not give up partitions being
    /// revoked within this long (its `max_poll_interval_ms`); `None`:
    /// unchanged (joining: [`DEFAULT_REBALANCE_TIMEOUT_MS`]).
    pub rebalance_timeout_ms: Option<u32>,
    /// How long the coordinator may hold a heartbeat that has nothing new
    /// for the member, answering it as soon as the group changes (0: answer
    /// at once). Below the session timeout.
    pub max_wait_ms: u32,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupHeartbeatResponse {
    /// The member's id (given by the coordinator on join).
    pub member_id: String,
    /// The member's epoch now.
    pub member_epoch: i32,
    /// Every partition the member may own now: partitions it holds and that
    /// are missing here must be revoked; partitions here it does not hold are
    /// newly assigned.
    pub assignment: Vec<TopicPartition>,
    /// Identifies this assignment; it changes whenever the assignment does.
    pub assignment_id: u64,
    /// This heartbeat joined the member or changed its assignment (Kafka's
    /// clients are sent their assignment only then).
    pub assignment_changed: bool,
    /// The member has not reached its target yet (partitions are still being
    /// revoked elsewhere): heartbeat again soon.
    pub reconciling: bool,
}

/// Offsets to commit for a group.
#[derive(Debug, Clone)]
pub struct OffsetCommitRequest {
    /// The group.
    pub group: String,
    /// The committing member; empty for a consumer outside the group's
    /// membership (manual assignment or admin), allowed only while the group
    /// has no members.
    pub member_id: String,
    /// The member's epoch; -1 with an empty `member_id`.
    pub member_epoch: i32,
    /// The offsets: the next offset to read per partition.
    pub offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
}

/// Committed offsets to delete (Kafka's OffsetDelete), or a whole group
/// (Kafka's DeleteGroups); the group must have no members.
#[derive(Debug, Clone)]
pub struct OffsetDeleteRequest {
    /// The group.
    pub group: String,
    /// The partitions whose offsets go; `None`: every offset, and the
    /// group with them.
    pub partitions: Option<Vec<TopicPartition>>,
}

/// Committed offsets to look up.
#[derive(Debug, Clone)]
pub struct OffsetFetchRequest {
    /// The group.
    pub group: String,
    /// These partitions, or all the group has (`None`).
    pub partitions: Option<Vec<TopicPartition>>,
}

/// Committed offsets per partition (absent: nothing committed).
pub type CommittedOffsets = BTreeMap<TopicPartition, OffsetAndMetadata>;

/// A committed offset: the next offset the group will read in a partition,
/// with the application's note and the time of the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetAndMetadata {
    /// The offset of the next record to read (last processed + 1).
    pub offset: u64,
    /// Free text the application attached to the commit.
    pub metadata: String,
    /// When the coordinator took the commit (ms since the epoch; 0 until then).
    pub commit_timestamp: i64,
}

impl OffsetAndMetadata {
    /// An offset to commit, without metadata.
    pub fn new(offset: u64) -> Self {
        Self {
            offset,
            metadata: String::new(),
            commit_timestamp: 0,
        }
    }
}

/// Where a group stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupState {
    /// No members (it may still have committed offsets).
    Empty,
    /// Members are moving towards a new target assignment: some still have
    /// partitions to revoke or to receive.
    Reconciling,
    /// Every member owns exactly its target assignment.
    Stable,
}

/// A group as `list_groups` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// How many members it has.
    pub members: usize,
    /// The broker coordinating it.
    pub coordinator: NodeId,
}

/// One member of a described group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member's id.
    pub member_id: String,
    /// The static member's instance id.
    pub group_instance_id: Option<String>,
    /// The consumer's `client_id`.
    pub client_id: String,
    /// The member's epoch (generation).
    pub member_epoch: i32,
    /// The partitions it owns now.
    pub assignment: Vec<TopicPartition>,
    /// Partitions it was asked to give up and has not yet.
    pub pending_revocation: Vec<TopicPartition>,
    /// What the assignor wants it to own.
    pub target: Vec<TopicPartition>,
    /// What it subscribes to, as it said.
    pub subscription: Subscription,
    /// The topics that subscription takes in now (for a pattern, the
    /// existing topics it matches).
    pub subscribed_topics: Vec<String>,
}

/// A group as its coordinator describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// The group epoch: bumped by every change of members, subscriptions or
    /// subscribed partitions.
    pub group_epoch: i32,
    /// The assignor the group uses.
    pub assignor: String,
    /// The broker coordinating it.
    pub coordinator: NodeId,
    /// The members, by id.
    pub members: Vec<MemberDescription>,
    /// The committed offsets.
    pub offsets: CommittedOffsets,
}
