//! The messages brokers and clients exchange.
//!
//! This module owns the request and response types that travel over a
//! transport: one [`Request`] variant per API
//! (named after Kafka's: Produce, Fetch, ListOffsets, Metadata, CreateTopics,
//! DeleteTopics, CreatePartitions, the consumer-group APIs, and the
//! controller's UpdateMetadata), each
//! answered by the [`Response`] variant of the same name. Record data travels as
//! [`RecordBatch`]es and [`Records`], i.e. `Bytes` in Kafka's own format, so an
//! in-process transport passes it through without copying or encoding.
//!
//! Per-partition outcomes are `Result`s inside a response: one partition can
//! fail (unknown, not the leader, record too large) while the others succeed.
//! The `Err` of a whole exchange (the node is unreachable, the request was
//! lost) is the transport's, not the broker's.
//!
//! The module holds data only; it must not know brokers, storage or clients.

pub mod codec;
mod envelope;
mod group;

use std::sync::Arc;

pub use envelope::{Envelope, Message, ReplyTo};
pub use group::{
    CommittedOffsets, DEFAULT_ASSIGNOR, DEFAULT_REBALANCE_TIMEOUT_MS, DEFAULT_SESSION_TIMEOUT_MS,
    GroupDescription, GroupHeartbeatRequest, GroupHeartbeatResponse, GroupListing, GroupState,
    JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, MemberDescription, OffsetAndMetadata, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, STATIC_LEAVE_EPOCH, Subscription,
};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::record::{RecordBatch, Records};
use crate::topic::{NewTopic, TopicConfig, TopicPartition};

/// A broker's id within its cluster.
pub type NodeId = u32;

/// The node id of an embedded cluster's controller.
pub const CONTROLLER_ID: NodeId = 1 << 16;

/// The offset a [`DeleteRecordsRequest`] gives to delete everything below
/// the partition's high watermark (Kafka's -1).
pub const DELETE_TO_HIGH_WATERMARK: u64 = u64::MAX;

/// Who sends or receives a message: a client (producer, consumer, admin)
/// by a process-unique id, or a node (a broker or the controller) by its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Peer {
    /// A client (producer, consumer, admin), by a process-unique id.
    Client(u64),
    /// A node by its id: a broker, or the controller ([`CONTROLLER_ID`]).
    Broker(NodeId),
}

/// How many replicas must have a record before the producer is told it is
/// written (Kafka's `acks`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Acks {
    /// `acks=0`: do not wait for the broker; the offset is unknown and a lost
    /// request is a lost record.
    None,
    /// `acks=1`: the leader has appended it to its log.
    Leader,
    /// `acks=all`: every in-sync replica has it, i.e. it is below the high
    /// watermark. With a single replica this is the same as `Leader`.
    All,
}

/// A request to a broker.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Request {
    /// Append batches to partition leaders.
    Produce(ProduceRequest),
    /// Read batches from partition leaders, possibly waiting for data.
    Fetch(FetchRequest),
    /// Look up offsets: earliest, latest, or the first at a timestamp.
    ListOffsets(ListOffsetsRequest),
    /// Ask what topics, partitions, leaders and brokers there are.
    Metadata(MetadataRequest),
    /// Create topics (answered by the controller).
    CreateTopics(CreateTopicsRequest),
    /// Delete topics (answered by the controller).
    DeleteTopics(DeleteTopicsRequest),
    /// Add partitions to topics (answered by the controller).
    CreatePartitions(CreatePartitionsRequest),
    /// The controller telling a broker the current cluster metadata.
    UpdateMetadata(UpdateMetadataRequest),
    /// A broker telling the controller it is alive.
    BrokerHeartbeat(BrokerHeartbeatRequest),
    /// A partition leader asking the controller to change the ISR.
    AlterPartition(AlterPartitionRequest),
    /// An idempotent producer asking the controller for its producer id.
    InitProducerId,
    /// Move partitions to new replica sets (answered by the controller).
    AlterPartitionReassignments(AlterPartitionReassignmentsRequest),
    /// Add a broker to the cluster (answered by the controller).
    RegisterBroker(BrokerInfo),
    /// Which broker coordinates this group (any broker answers).
    FindCoordinator(String),
    /// A group member's heartbeat: join, stay, or leave (the coordinator).
    GroupHeartbeat(GroupHeartbeatRequest),
    /// Commit a group's offsets (the coordinator).
    OffsetCommit(OffsetCommitRequest),
    /// Read a group's committed offsets (the coordinator).
    OffsetFetch(OffsetFetchRequest),
    /// The groups this broker coordinates.
    ListGroups,
    /// A group's members, assignment and offsets (the coordinator).
    DescribeGroup(String),
    /// Delete the records before an offset (partition leaders; Kafka's
    /// DeleteRecords).
    DeleteRecords(DeleteRecordsRequest),
    /// Where each leader epoch ended (Kafka's OffsetForLeaderEpoch): how a
    /// consumer checks, after a leader change, that the records it read
    /// are still in the log.
    OffsetForLeaderEpoch(OffsetForLeaderEpochRequest),
    /// Delete a group's offsets, or the group (the coordinator).
    OffsetDelete(OffsetDeleteRequest),
    /// A message of the controller quorum's Raft protocol, from one voter
    /// to another (its payload is the quorum's own encoding). Never
    /// answered: Raft's replies are messages of their own.
    Raft(Bytes),
}

impl Request {
    /// The API's key: Kafka's number for it (Produce 0, Fetch 1, …), which
    /// the wire codec writes in front of its fields.
    pub fn api_key(&self) -> i16 {
        use codec::api;
        match self {
            Request::Produce(_) => api::PRODUCE,
            Request::Fetch(_) => api::FETCH,
            Request::ListOffsets(_) => api::LIST_OFFSETS,
            Request::Metadata(_) => api::METADATA,
            Request::CreateTopics(_) => api::CREATE_TOPICS,
            Request::DeleteTopics(_) => api::DELETE_TOPICS,
            Request::CreatePartitions(_) => api::CREATE_PARTITIONS,
            Request::UpdateMetadata(_) => api::UPDATE_METADATA,
            Request::BrokerHeartbeat(_) => api::BROKER_HEARTBEAT,
            Request::AlterPartition(_) => api::ALTER_PARTITION,
            Request::InitProducerId => api::INIT_PRODUCER_ID,
            Request::AlterPartitionReassignments(_) => api::ALTER_PARTITION_REASSIGNMENTS,
            Request::RegisterBroker(_) => api::BROKER_REGISTRATION,
            Request::FindCoordinator(_) => api::FIND_COORDINATOR,
            Request::GroupHeartbeat(_) => api::CONSUMER_GROUP_HEARTBEAT,
            Request::OffsetCommit(_) => api::OFFSET_COMMIT,
            Request::OffsetFetch(_) => api::OFFSET_FETCH,
            Request::ListGroups => api::LIST_GROUPS,
            Request::DescribeGroup(_) => api::CONSUMER_GROUP_DESCRIBE,
            Request::DeleteRecords(_) => api::DELETE_RECORDS,
            Request::OffsetForLeaderEpoch(_) => api::OFFSET_FOR_LEADER_EPOCH,
            Request::OffsetDelete(_) => api::OFFSET_DELETE,
            Request::Raft(_) => api::RAFT,
        }
    }

    /// Whether the receiver answers it (all requests but acks=0 produces).
    pub fn expects_answer(&self) -> bool {
        !matches!(self, Request::Produce(p) if p.acks == Acks::None)
            && !matches!(self, Request::Raft(_))
    }

    /// The API's name, as Kafka spells it (`"Produce"`, `"Fetch"`, …).
    pub fn api_name(&self) -> &'static str {
        match self {
            Request::Produce(_) => "Produce",
            Request::Fetch(_) => "Fetch",
            Request::ListOffsets(_) => "ListOffsets",
            Request::Metadata(_) => "Metadata",
            Request::CreateTopics(_) => "CreateTopics",
            Request::DeleteTopics(_) => "DeleteTopics",
            Request::CreatePartitions(_) => "CreatePartitions",
            Request::UpdateMetadata(_) => "UpdateMetadata",
            Request::BrokerHeartbeat(_) => "BrokerHeartbeat",
            Request::AlterPartition(_) => "AlterPartition",
            Request::InitProducerId => "InitProducerId",
            Request::AlterPartitionReassignments(_) => "AlterPartitionReassignments",
            Request::RegisterBroker(_) => "RegisterBroker",
            Request::FindCoordinator(_) => "FindCoordinator",
            Request::GroupHeartbeat(_) => "ConsumerGroupHeartbeat",
            Request::OffsetCommit(_) => "OffsetCommit",
            Request::OffsetFetch(_) => "OffsetFetch",
            Request::ListGroups => "ListGroups",
            Request::DescribeGroup(_) => "ConsumerGroupDescribe",
            Request::DeleteRecords(_) => "DeleteRecords",
            Request::OffsetForLeaderEpoch(_) => "OffsetForLeaderEpoch",
            Request::OffsetDelete(_) => "OffsetDelete",
            Request::Raft(_) => "Raft",
        }
    }
}

/// A broker's answer, the variant of the same name as the request.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Response {
    /// Answer to [`Request::Produce`].
    Produce(ProduceResponse),
    /// Answer to [`Request::Fetch`].
    Fetch(FetchResponse),
    /// Answer to [`Request::ListOffsets`].
    ListOffsets(ListOffsetsResponse),
    /// Answer to [`Request::Metadata`].
    Metadata(MetadataResponse),
    /// Answer to [`Request::CreateTopics`].
    CreateTopics(TopicResults),
    /// Answer to [`Request::DeleteTopics`].
    DeleteTopics(TopicResults),
    /// Answer to [`Request::CreatePartitions`].
    CreatePartitions(TopicResults),
    /// Answer to [`Request::UpdateMetadata`]: the broker applied it, except
    /// for the replicas listed, whose logs it could not open or remove
    /// (it tries them again at the next metadata).
    UpdateMetadata(Vec<(TopicPartition, Error)>),
    /// Answer to [`Request::BrokerHeartbeat`]: the metadata version the
    /// controller holds (a broker behind it is sent the metadata again).
    BrokerHeartbeat(u64),
    /// Answer to [`Request::AlterPartition`]: the committed ISR and partition
    /// epoch, or why the change was refused.
    AlterPartition(Result<(Vec<NodeId>, u32)>),
    /// Answer to [`Request::InitProducerId`]: a producer id, unique in the
    /// cluster, and its epoch.
    InitProducerId(Result<(i64, i16)>),
    /// Answer to [`Request::AlterPartitionReassignments`]: one result per
    /// partition, in order.
    AlterPartitionReassignments(Vec<(TopicPartition, Result<()>)>),
    /// Answer to [`Request::RegisterBroker`].
    RegisterBroker(Result<()>),
    /// Answer to [`Request::FindCoordinator`]: the coordinator's id.
    FindCoordinator(NodeId),
    /// Answer to [`Request::GroupHeartbeat`].
    GroupHeartbeat(GroupHeartbeatResponse),
    /// Answer to [`Request::OffsetCommit`]: every offset is committed
    /// (replicated to the in-sync replicas of `__consumer_offsets`).
    OffsetCommit,
    /// Answer to [`Request::OffsetFetch`].
    OffsetFetch(CommittedOffsets),
    /// Answer to [`Request::ListGroups`].
    ListGroups(Vec<GroupListing>),
    /// Answer to [`Request::DescribeGroup`].
    DescribeGroup(GroupDescription),
    /// Answer to [`Request::DeleteRecords`]: per partition, in order, its
    /// new log start offset (Kafka's low watermark) or why not.
    DeleteRecords(Vec<(TopicPartition, Result<u64>)>),
    /// Answer to [`Request::OffsetForLeaderEpoch`]: per partition, in
    /// order, the largest epoch at or below the one asked and the offset
    /// where it ended (the log end for the current epoch); `None` when the
    /// log has no epoch that old.
    OffsetForLeaderEpoch(Vec<(TopicPartition, Result<Option<EpochEndOffset>>)>),
    /// Answer to [`Request::OffsetDelete`]: deleted (the tombstones are
    /// replicated).
    OffsetDelete,
}

impl Response {
    /// The API's key, the same as its request's ([`Request::api_key`]).
    pub fn api_key(&self) -> i16 {
        use codec::api;
        match self {
            Response::Produce(_) => api::PRODUCE,
            Response::Fetch(_) => api::FETCH,
            Response::ListOffsets(_) => api::LIST_OFFSETS,
            Response::Metadata(_) => api::METADATA,
            Response::CreateTopics(_) => api::CREATE_TOPICS,
            Response::DeleteTopics(_) => api::DELETE_TOPICS,
            Response::CreatePartitions(_) => api::CREATE_PARTITIONS,
            Response::UpdateMetadata(_) => api::UPDATE_METADATA,
            Response::BrokerHeartbeat(_) => api::BROKER_HEARTBEAT,
            Response::AlterPartition(_) => api::ALTER_PARTITION,
            Response::InitProducerId(_) => api::INIT_PRODUCER_ID,
            Response::AlterPartitionReassignments(_) => api::ALTER_PARTITION_REASSIGNMENTS,
            Response::RegisterBroker(_) => api::BROKER_REGISTRATION,
            Response::FindCoordinator(_) => api::FIND_COORDINATOR,
            Response::GroupHeartbeat(_) => api::CONSUMER_GROUP_HEARTBEAT,
            Response::OffsetCommit => api::OFFSET_COMMIT,
            Response::OffsetFetch(_) => api::OFFSET_FETCH,
            Response::ListGroups(_) => api::LIST_GROUPS,
            Response::DescribeGroup(_) => api::CONSUMER_GROUP_DESCRIBE,
            Response::DeleteRecords(_) => api::DELETE_RECORDS,
            Response::OffsetForLeaderEpoch(_) => api::OFFSET_FOR_LEADER_EPOCH,
            Response::OffsetDelete => api::OFFSET_DELETE,
        }
    }

    /// The API's name, as Kafka spells it.
    pub fn api_name(&self) -> &'static str {
        match self {
            Response::Produce(_) => "Produce",
            Response::Fetch(_) => "Fetch",
            Response::ListOffsets(_) => "ListOffsets",
            Response::Metadata(_) => "Metadata",
            Response::CreateTopics(_) => "CreateTopics",
            Response::DeleteTopics(_) => "DeleteTopics",
            Response::CreatePartitions(_) => "CreatePartitions",
            Response::UpdateMetadata(_) => "UpdateMetadata",
            Response::BrokerHeartbeat(_) => "BrokerHeartbeat",
            Response::AlterPartition(_) => "AlterPartition",
            Response::InitProducerId(_) => "InitProducerId",
            Response::AlterPartitionReassignments(_) => "AlterPartitionReassignments",
            Response::RegisterBroker(_) => "RegisterBroker",
            Response::FindCoordinator(_) => "FindCoordinator",
            Response::GroupHeartbeat(_) => "ConsumerGroupHeartbeat",
            Response::OffsetCommit => "OffsetCommit",
            Response::OffsetFetch(_) => "OffsetFetch",
            Response::ListGroups(_) => "ListGroups",
            Response::DescribeGroup(_) => "ConsumerGroupDescribe",
            Response::DeleteRecords(_) => "DeleteRecords",
            Response::OffsetForLeaderEpoch(_) => "OffsetForLeaderEpoch",
            Response::OffsetDelete => "OffsetDelete",
        }
    }
}

/// Batches to append, at most one per partition.
#[derive(Debug, Clone)]
pub struct ProduceRequest {
    /// What the producer waits for.
    pub acks: Acks,
    /// How long the broker may wait for replicas before answering.
    pub timeout_ms: u32,
    /// The batches.
    pub partitions: Vec<ProducePartition>,
}

/// One partition's batch in a [`ProduceRequest`].
#[derive(Debug, Clone)]
pub struct ProducePartition {
    /// Where to append.
    pub partition: TopicPartition,
    /// What to append (offsets are assigned by the leader).
    pub batch: RecordBatch,
}

/// Per-partition outcomes of a [`ProduceRequest`].
#[derive(Debug, Clone)]
pub struct ProduceResponse {
    /// One entry per partition of the request, in its order.
    pub partitions: Vec<ProducedPartition>,
}

/// One partition's outcome in a [`ProduceResponse`].
#[derive(Debug, Clone)]
pub struct ProducedPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// Where the batch went, or why it was refused.
    pub result: Result<ProduceAck>,
}

/// Where an appended batch went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProduceAck {
    /// Offset of the batch's first record.
    pub base_offset: u64,
    /// The log's start offset after the append.
    pub log_start_offset: u64,
}

/// A read of one or more partitions, possibly waiting for data (long poll).
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// Longest the broker may wait for `min_bytes` to be available.
    pub max_wait_ms: u32,
    /// Answer as soon as this many bytes are available (1: any data).
    pub min_bytes: u32,
    /// Most bytes in the whole response (at least one batch is returned).
    pub max_bytes: u32,
    /// The partitions and where to read them from.
    pub partitions: Vec<FetchPartition>,
    /// The follower fetching, or `None` for a consumer. A follower reads up
    /// to the log end (not just the high watermark), and its fetch offset
    /// tells the leader how far it got.
    pub replica: Option<NodeId>,
    /// A follower's incremental fetch session with this leader, after
    /// Kafka's KIP-227; `None` for a plain fetch of exactly `partitions`
    /// (what consumers send). See [`FetchSession`].
    pub session: Option<FetchSession>,
    /// In an incremental fetch, the partitions the session no longer holds.
    pub forgotten: Vec<TopicPartition>,
}

/// A follower's fetch session with one leader (after Kafka's KIP-227): the
/// leader remembers every partition the follower fetches and where from,
/// so that a fetch lists only the partitions whose position changed and is
/// answered with only the partitions that have something new (records, a
/// high watermark or log start that moved, an error). An idle partition
/// costs neither side anything per fetch.
///
/// `id` 0 with `epoch` 0 is a full fetch that opens a session (the answer
/// carries its id; it replaces the follower's earlier session with this
/// leader); then each fetch carries the id and the next epoch, 1, 2, ….
/// An unknown id is [`Error::FetchSessionIdNotFound`],
/// an epoch out of turn [`Error::InvalidFetchSessionEpoch`];
/// the follower then opens a new session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchSession {
    /// The session's id (0: open a new one).
    pub id: u32,
    /// This fetch's place in the session (0 opens it).
    pub epoch: u32,
}

/// One partition of a [`FetchRequest`].
#[derive(Debug, Clone)]
pub struct FetchPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// The first offset wanted.
    pub fetch_offset: u64,
    /// Most bytes for this partition (at least one batch is returned).
    pub max_bytes: u32,
    /// The leader epoch the fetcher believes current; an older one is
    /// [`Error::FencedLeaderEpoch`], a newer
    /// one [`Error::NotLeaderOrFollower`].
    pub current_leader_epoch: Option<i32>,
    /// A follower's newest epoch in its log: the leader checks the follower's
    /// log ends where its own log has that epoch end, and answers with a
    /// diverging epoch if not.
    pub last_fetched_epoch: Option<i32>,
}

/// What a [`FetchRequest`] read.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    /// One entry per partition of the request, in its order; in an
    /// incremental session fetch, the partitions with something new.
    pub partitions: Vec<FetchedPartition>,
    /// The fetch session the answer belongs to (0: none).
    pub session_id: u32,
}

/// One partition's outcome in a [`FetchResponse`].
#[derive(Debug, Clone)]
pub struct FetchedPartition {
    /// The partition.
    pub partition: TopicPartition,
    /// The data, or why it could not be read.
    pub result: Result<FetchedData>,
}

/// Data read from one partition.
#[derive(Debug, Clone)]
pub struct FetchedData {
    /// The partition's high watermark: records below it are committed.
    pub high_watermark: u64,
    /// The first offset still in the log.
    pub log_start_offset: u64,
    /// Whole batches from the one holding the fetch offset, all below the
    /// high watermark (below the log end for a follower). The first batch
    /// may start before the fetch offset.
    pub records: Records,
    /// For a follower whose log diverges from the leader's: the largest
    /// epoch the leader has at or below the follower's last epoch, and where
    /// it ends. The follower truncates there (never just to the high
    /// watermark) and fetches again.
    pub diverging_epoch: Option<(i32, u64)>,
}

/// Which offset [`ListOffsetsRequest`] asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The log start offset.
    Earliest,
    /// The high watermark (the next offset a consumer will see).
    Latest,
    /// The first offset whose timestamp is at or after this one (ms).
    Timestamp(i64),
}

/// Deletes the records of each partition before an offset (Kafka's
/// DeleteRecords): the log start moves there. The offset may be at most the
/// high watermark (only committed records are deleted); a larger one is
/// [`Error::OffsetOutOfRange`]. [`DELETE_TO_HIGH_WATERMARK`] deletes up to
/// the high watermark, whatever it is then (Kafka's -1).
#[derive(Debug, Clone)]
pub struct DeleteRecordsRequest {
    /// The partitions and the offset to delete before.
    pub partitions: Vec<(TopicPartition, u64)>,
}

/// Leader epochs to look up, to the partitions' leaders.
#[derive(Debug, Clone)]
pub struct OffsetForLeaderEpochRequest {
    /// Each partition, with the leader epoch the asker knows (`None`: not
    /// checked; an older one is [`Error::FencedLeaderEpoch`]) and the epoch
    /// to find the end of.
    pub partitions: Vec<(TopicPartition, (Option<i32>, i32))>,
}

/// Where a leader epoch ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEndOffset {
    /// The largest epoch at or below the one asked.
    pub leader_epoch: i32,
    /// The first offset after that epoch (the log end for the current one).
    pub end_offset: u64,
}

/// Offset look-ups.
#[derive(Debug, Clone)]
pub struct ListOffsetsRequest {
    /// The partitions and what to look up for each.
    pub partitions: Vec<(TopicPartition, OffsetSpec)>,
}

/// Answers to a [`ListOffsetsRequest`].
#[derive(Debug, Clone)]
pub struct ListOffsetsResponse {
    /// One entry per partition of the request, in its order.
    pub partitions: Vec<ListedOffset>,
}

/// One partition's answer in a [`ListOffsetsResponse`].
#[derive(Debug, Clone)]
pub struct ListedOffset {
    /// The partition.
    pub partition: TopicPartition,
    /// The offset found (`None`: no record at or after the timestamp).
    pub result: Result<Option<OffsetAndTimestamp>>,
}

/// An offset and, for timestamp look-ups, the timestamp of the record there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetAndTimestamp {
    /// The offset.
    pub offset: u64,
    /// The record's timestamp, for [`OffsetSpec::Timestamp`] look-ups.
    pub timestamp: Option<i64>,
}

/// Which topics' metadata to return.
#[derive(Debug, Clone, Default)]
pub struct MetadataRequest {
    /// `None`: every topic.
    pub topics: Option<Vec<String>>,
}

/// Cluster metadata as a broker knows it.
#[derive(Debug, Clone)]
pub struct MetadataResponse {
    /// The metadata version this answer was taken from.
    pub version: u64,
    /// The controller's id, if there is one.
    pub controller: Option<NodeId>,
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
    /// The topics asked for that exist (a missing name is unknown).
    pub topics: Vec<TopicMetadata>,
}

/// A broker in the cluster.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BrokerInfo {
    /// Its id.
    pub id: NodeId,
    /// Its rack, if racks are configured.
    pub rack: Option<String>,
    /// Where other processes reach it (`host:port` of its node's
    /// listener); `None` for a broker reached in-process only.
    pub endpoint: Option<String>,
}

/// A topic: its partitions and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMetadata {
    /// The name.
    pub name: Arc<str>,
    /// Tells this topic from an earlier one of the same name that was
    /// deleted (Kafka's topic id): the offset of its creation in the metadata
    /// log.
    pub id: u64,
    /// Per-partition placement, indexed by partition number.
    pub partitions: Vec<PartitionMetadata>,
    /// The topic's settings.
    pub config: TopicConfig,
}

/// A partition's placement: replicas, leader, in-sync replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionMetadata {
    /// The partition number.
    pub partition: u32,
    /// The broker that leads it, if one does.
    pub leader: Option<NodeId>,
    /// The current leader epoch.
    pub leader_epoch: i32,
    /// Version of leader and ISR, bumped by every change (the
    /// compare-and-set token of ISR changes).
    pub partition_epoch: u32,
    /// The brokers holding a replica, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The replicas in sync with the leader.
    pub isr: Vec<NodeId>,
    /// While a reassignment runs, the replicas the partition is moving to
    /// (`replicas` then holds the old and the new ones).
    pub reassigning_to: Option<Vec<NodeId>>,
}

/// The whole cluster's metadata, as the controller publishes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClusterMetadata {
    /// The epoch of the controller that published this; a broker ignores
    /// metadata from an older controller.
    pub controller_epoch: u32,
    /// Increases with every change within a controller epoch; a broker
    /// ignores an older version.
    pub version: u64,
    /// The controller's id.
    pub controller: Option<NodeId>,
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
    /// The topics by name.
    pub topics: std::collections::BTreeMap<Arc<str>, Arc<TopicMetadata>>,
    /// The next producer id the controller hands out.
    pub next_producer_id: i64,
}

/// Topics to create.
#[derive(Debug, Clone)]
pub struct CreateTopicsRequest {
    /// The topics.
    pub topics: Vec<NewTopic>,
}

/// Topics to delete.
#[derive(Debug, Clone)]
pub struct DeleteTopicsRequest {
    /// Their names.
    pub topics: Vec<String>,
}

/// Partitions to add.
#[derive(Debug, Clone)]
pub struct CreatePartitionsRequest {
    /// For each topic, the partition count it should have afterwards.
    pub topics: Vec<(String, u32)>,
}

/// Per-topic outcomes of an admin request.
#[derive(Debug, Clone)]
pub struct TopicResults {
    /// One entry per topic of the request, in its order.
    pub topics: Vec<(String, Result<()>)>,
}

/// Partitions to move, each to a new list of replicas (preferred leader
/// first). The new replicas copy the partition while the old ones keep
/// serving; once all new ones are in sync the old ones are dropped.
#[derive(Debug, Clone)]
pub struct AlterPartitionReassignmentsRequest {
    /// The partitions and their target replicas.
    pub partitions: Vec<(TopicPartition, Vec<NodeId>)>,
}

/// A broker's liveness heartbeat.
#[derive(Debug, Clone)]
pub struct BrokerHeartbeatRequest {
    /// The broker.
    pub broker: NodeId,
    /// The controller epoch and metadata version the broker holds.
    pub metadata_version: (u32, u64),
    /// The broker is stopping (Kafka's controlled shutdown, KRaft's
    /// `WantShutDown`): the controller fences it at once, moving its
    /// leaderships to in-sync followers and taking it out of every ISR it
    /// is not the last member of, and keeps it fenced while it asks.
    pub want_shutdown: bool,
}

/// An ISR change proposed by a partition's leader.
#[derive(Debug, Clone)]
pub struct AlterPartitionRequest {
    /// The leader asking.
    pub broker: NodeId,
    /// The proposal: partition, the epochs it was made in, the new ISR.
    pub proposal: IsrProposal,
}

/// The controller's push of the current metadata to a broker: the whole
/// of it, or a delta from a version the broker was sent before.
#[derive(Debug, Clone)]
pub struct UpdateMetadataRequest {
    /// The metadata. In a delta, `topics` holds only the topics created or
    /// changed since the base version (each whole); the brokers and the
    /// counters are always whole.
    pub metadata: Arc<ClusterMetadata>,
    /// `Some(base)`: a delta from the metadata of version `base`
    /// (controller epoch, version), which a broker holding another version
    /// refuses with [`Error::MetadataDeltaBaseMismatch`].
    pub delta_from: Option<(u32, u64)>,
    /// In a delta, the topics deleted since the base version.
    pub deleted_topics: Vec<Arc<str>>,
}

impl UpdateMetadataRequest {
    /// A push of the whole of `metadata`.
    pub fn full(metadata: Arc<ClusterMetadata>) -> Self {
        Self {
            metadata,
            delta_from: None,
            deleted_topics: Vec::new(),
        }
    }

    /// A push of `metadata` as a delta from `base`, the metadata the
    /// receiver was sent last: the topics whose metadata changed (a topic
    /// unchanged is the same `Arc` in both) and those deleted.
    pub fn delta(base: &ClusterMetadata, metadata: &ClusterMetadata) -> Self {
        let topics = metadata
            .topics
            .iter()
            .filter(|(name, topic)| {
                base.topics
                    .get(*name)
                    .is_none_or(|b| !Arc::ptr_eq(b, topic))
            })
            .map(|(name, topic)| (name.clone(), topic.clone()))
            .collect();
        let deleted_topics = base
            .topics
            .keys()
            .filter(|name| !metadata.topics.contains_key(*name))
            .cloned()
            .collect();
        Self {
            metadata: Arc::new(ClusterMetadata {
                controller_epoch: metadata.controller_epoch,
                version: metadata.version,
                controller: metadata.controller,
                brokers: metadata.brokers.clone(),
                topics,
                next_producer_id: metadata.next_producer_id,
            }),
            delta_from: Some((base.controller_epoch, base.version)),
            deleted_topics,
        }
    }

    /// The whole metadata this push gives a broker that holds `held`:
    /// the push itself if whole; a delta applied to `held` if `held` is
    /// its base.
    pub fn apply_to(&self, held: &ClusterMetadata) -> Result<Arc<ClusterMetadata>> {
        let Some(base) = self.delta_from else {
            return Ok(self.metadata.clone());
        };
        let version = (held.controller_epoch, held.version);
        if version != base {
            return Err(Error::MetadataDeltaBaseMismatch {
                base_epoch: base.0,
                base_version: base.1,
                held_epoch: version.0,
                held_version: version.1,
            });
        }
        let mut topics = held.topics.clone();
        for name in &self.deleted_topics {
            topics.remove(name);
        }
        for (name, topic) in &self.metadata.topics {
            topics.insert(name.clone(), topic.clone());
        }
        Ok(Arc::new(ClusterMetadata {
            controller_epoch: self.metadata.controller_epoch,
            version: self.metadata.version,
            controller: self.metadata.controller,
            brokers: self.metadata.brokers.clone(),
            topics,
            next_producer_id: self.metadata.next_producer_id,
        }))
    }
}

/// A change of the in-sync replica set for the controller to decide on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    /// The partition.
    pub partition: TopicPartition,
    /// The leader epoch the proposal was made in.
    pub leader_epoch: i32,
    /// The partition epoch (version of leader and ISR) it was made against.
    pub partition_epoch: u32,
    /// The proposed ISR, sorted.
    pub isr: Vec<NodeId>,
}
