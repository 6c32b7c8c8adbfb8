//! The crate's one error type.
//!
//! Every fallible operation in ferrolog returns [`Result<T>`]. Variants are named
//! after Kafka's error codes where Kafka has one, so a Kafka user recognises them,
//! and each says whether retrying the same operation can succeed
//! ([`Error::is_retriable`]).

use std::path::PathBuf;
use std::sync::Arc;

use crate::topic::TopicPartition;

/// Shorthand for `std::result::Result<T, ferrolog::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ferrolog.
///
/// Errors are `Clone` (an I/O error is shared behind an `Arc`), so one failure
/// can be handed to every record of a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    /// Raised when the config is built, never later.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The setting's name, in Kafka's snake_case spelling.
        field: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// A topic name Kafka would also refuse (empty, too long, or characters
    /// outside `[a-zA-Z0-9._-]`).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Bytes that should hold a record batch do not: bad length, magic, CRC or
    /// record framing (Kafka: `CORRUPT_MESSAGE`). Raised for input from a client,
    /// the network or a user; the data is not stored.
    #[error("corrupt record batch: {reason}")]
    CorruptRecord {
        /// What check failed.
        reason: String,
    },

    /// Data already in a log file failed validation where it cannot be safely
    /// truncated (below the recovery point, i.e. data that was flushed). The log
    /// refuses to serve it (Kafka: `KAFKA_STORAGE_ERROR`).
    #[error("corrupt log file {}: at offset {offset}: {reason}", path.display())]
    CorruptLog {
        /// The file that holds the bad bytes.
        path: PathBuf,
        /// The offset of the first record that could not be read.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// A batch uses a compression codec this build does not include
    /// (Kafka: `UNSUPPORTED_COMPRESSION_TYPE`).
    #[error("compression codec `{codec}` is not supported by this build")]
    UnsupportedCompression {
        /// The codec's name.
        codec: &'static str,
    },

    /// A batch or request is larger than the configured limit
    /// (`max_message_bytes` on a log; Kafka: `MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The size that was offered.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A read asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The first offset still in the log.
        log_start_offset: u64,
        /// The next offset to be written.
        log_end_offset: u64,
    },

    /// A replicated append did not start at the log end offset
    /// (Kafka: `UnexpectedAppendOffsetException`).
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    UnexpectedAppendOffset {
        /// The log end offset the batch had to start at.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },

    /// A leader tried to append with an epoch older than one the log already
    /// holds, or a negative one (Kafka: `FENCED_LEADER_EPOCH`).
    #[error("leader epoch {epoch} is fenced: the log already holds epoch {latest}")]
    FencedLeaderEpoch {
        /// The epoch the append carried.
        epoch: i32,
        /// The newest epoch in the log (-1 if none).
        latest: i32,
    },

    /// An I/O error in the middle of a change left the log inconsistent with
    /// its files; it refuses every operation until reopened, which recovers it
    /// (Kafka: `KAFKA_STORAGE_ERROR`, an offline log directory).
    #[error("the log is offline: {reason}")]
    LogOffline {
        /// The error that took it offline.
        reason: String,
    },

    /// A log was opened while another handle to it is still open.
    #[error("the log of {partition} is already open")]
    LogInUse {
        /// The partition (and replica) whose log is open.
        partition: String,
    },

    /// An operating-system I/O error, with the file or step it happened on.
    #[error("I/O error on {context}: {source}")]
    Io {
        /// The path or the step that failed.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },

    /// The topic does not exist, or this broker does not know it yet (Kafka:
    /// `UNKNOWN_TOPIC_OR_PARTITION`). Retriable: metadata may be catching up.
    #[error("unknown topic {topic:?}")]
    UnknownTopicOrPartition {
        /// The topic asked for.
        topic: String,
    },

    /// The topic exists but has no partition with this number.
    #[error(
        "topic {topic:?} has {partition_count} partitions; partition {partition} does not exist"
    )]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many partitions the topic has.
        partition_count: u32,
    },

    /// A topic with this name already exists (Kafka: `TOPIC_ALREADY_EXISTS`).
    #[error("topic {topic:?} already exists")]
    TopicAlreadyExists {
        /// The topic.
        topic: String,
    },

    /// A partition count that cannot be used: zero, or not more than the topic
    /// has when adding partitions (Kafka: `INVALID_PARTITIONS`).
    #[error("invalid partition count: {reason}")]
    InvalidPartitions {
        /// What is wrong with it.
        reason: String,
    },

    /// A replication factor that cannot be met (Kafka: `INVALID_REPLICATION_FACTOR`).
    #[error("invalid replication factor: {reason}")]
    InvalidReplicationFactor {
        /// What is wrong with it.
        reason: String,
    },

    /// The broker asked is not the leader of the partition (Kafka:
    /// `NOT_LEADER_OR_FOLLOWER`). Retriable after a metadata refresh.
    #[error("broker {broker} is not the leader of {partition}")]
    NotLeaderOrFollower {
        /// The broker that refused.
        broker: u32,
        /// The partition.
        partition: TopicPartition,
    },

    /// The partition has no leader now (Kafka: `LEADER_NOT_AVAILABLE`):
    /// its in-sync replicas are all down. Retriable: one returns, or the
    /// controller elects another.
    #[error("{partition} has no leader")]
    LeaderNotAvailable {
        /// The partition.
        partition: TopicPartition,
    },

    /// No controller is reachable: the brokers asked have not heard from one
    /// for a whole `broker_session_timeout_ms`, so a topic or partition
    /// change cannot be made now (Kafka's admin waits out its timeout
    /// instead). Retriable once a controller is back.
    #[error("no controller is available: {reason}")]
    ControllerNotAvailable {
        /// What the brokers said.
        reason: String,
    },

    /// An admin request reached a broker that is not the controller (Kafka:
    /// `NOT_CONTROLLER`). Retriable after a metadata refresh.
    #[error("broker {broker} is not the controller")]
    NotController {
        /// The broker that refused.
        broker: u32,
    },

    /// A batch is well-formed but not acceptable from a client, e.g. a control
    /// batch or offsets that are not dense (Kafka: `INVALID_RECORD`).
    #[error("invalid record: {reason}")]
    InvalidRecord {
        /// Why it was refused.
        reason: String,
    },

    /// A request (or a protocol message) is malformed or inconsistent (Kafka:
    /// `INVALID_REQUEST`).
    #[error("invalid request: {reason}")]
    InvalidRequest {
        /// What is wrong with it.
        reason: String,
    },

    /// A message frame that does not decode: wrong length, unknown version
    /// or tag, a field that runs past the frame, a count larger than the
    /// frame could hold (Kafka answers malformed requests with
    /// `INVALID_REQUEST` and closes the connection). Nothing it claims is
    /// allocated or acted on.
    #[error("malformed message frame: {reason}")]
    InvalidFrame {
        /// What did not decode.
        reason: String,
    },

    /// No response arrived within the request timeout (Kafka:
    /// `REQUEST_TIMED_OUT`). Retriable.
    #[error("{operation} timed out after {timeout_ms} ms")]
    RequestTimedOut {
        /// What was waited for.
        operation: &'static str,
        /// How long.
        timeout_ms: u64,
    },

    /// A record could not be delivered within `delivery_timeout_ms` of being
    /// sent (Kafka's `TimeoutException: Expiring N record(s)`). Final: the
    /// producer has given up on it.
    #[error(
        "expired {records} record(s) for {partition}: {elapsed_ms} ms passed since the batch was created{}",
        last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default()
    )]
    DeliveryTimeout {
        /// The partition the records were for.
        partition: TopicPartition,
        /// How many records the expired batch held.
        records: usize,
        /// Time since the batch was created.
        elapsed_ms: u64,
        /// The last error an attempt got, if any attempt was made.
        last_error: Option<String>,
    },

    /// `send` waited `max_block_ms` for room in `buffer_memory` and found none
    /// (Kafka: `BufferExhaustedException`). Retriable once the producer has
    /// delivered some of what it holds.
    #[error(
        "no room for {requested} bytes in buffer_memory ({buffer_memory} bytes) within max_block_ms ({max_block_ms} ms)"
    )]
    BufferExhausted {
        /// Bytes the record needed.
        requested: usize,
        /// The configured buffer size.
        buffer_memory: usize,
        /// How long `send` waited.
        max_block_ms: u64,
    },

    /// A node could not be reached, or a request was lost without a response
    /// (Kafka: `NetworkException`). Retriable.
    #[error("network error talking to node {node}: {reason}")]
    Network {
        /// The node the request was for.
        node: u32,
        /// What happened.
        reason: String,
    },

    /// A request found its connection's send queue full
    /// (`send_buffer_max_bytes` of frames not yet written): the far end
    /// reads slower than this process sends. Retriable once the queue
    /// drains.
    #[error("the send queue to node {node} is full ({limit_bytes} bytes, send_buffer_max_bytes)")]
    SendBufferFull {
        /// The node the request was for.
        node: u32,
        /// The queue's bound.
        limit_bytes: usize,
    },

    /// A key or value could not be serialized (Kafka: `SerializationException`).
    #[error("serialization failed: {reason}")]
    Serialization {
        /// What failed.
        reason: String,
    },

    /// A fetched record's key or value could not be deserialized (Kafka:
    /// `RecordDeserializationException`). The consumer's position stays at the
    /// record; `seek` past it to skip it.
    #[error("cannot deserialize the record at {partition} offset {offset}: {reason}")]
    RecordDeserialization {
        /// The partition.
        partition: TopicPartition,
        /// The record's offset.
        offset: u64,
        /// What failed.
        reason: String,
    },

    /// A producer interceptor's `on_send` dropped the record; it was not sent.
    #[error("the record was dropped by a producer interceptor")]
    DroppedByInterceptor,

    /// The client was closed; it accepts no more work.
    #[error("the {client} is closed")]
    ClientClosed {
        /// Which client (`"producer"`, `"consumer"`, …).
        client: &'static str,
    },

    /// An `acks=all` produce reached a leader whose in-sync replica set is
    /// smaller than `min_insync_replicas`; nothing was appended (Kafka:
    /// `NOT_ENOUGH_REPLICAS`). Retriable: followers may catch up.
    #[error(
        "{partition} has {isr} in-sync replicas, fewer than min_insync_replicas = {min_insync_replicas}"
    )]
    NotEnoughReplicas {
        /// The partition.
        partition: TopicPartition,
        /// The in-sync replicas it has.
        isr: usize,
        /// The minimum required.
        min_insync_replicas: usize,
    },

    /// An `acks=all` produce was appended, but the in-sync replica set fell
    /// below `min_insync_replicas` before it was replicated (Kafka:
    /// `NOT_ENOUGH_REPLICAS_AFTER_APPEND`). The record may or may not be
    /// kept; retrying may write it twice (idempotence prevents that).
    #[error("{partition}: the ISR fell below min_insync_replicas after the append")]
    NotEnoughReplicasAfterAppend {
        /// The partition.
        partition: TopicPartition,
    },

    /// An idempotent producer's batch does not follow its previous one
    /// (Kafka: `OUT_OF_ORDER_SEQUENCE_NUMBER`): appending it would leave a gap
    /// or reorder records, so it is refused. The producer retries it after
    /// the batches before it.
    #[error("{partition}: expected sequence {expected}, got {got}")]
    OutOfOrderSequence {
        /// The partition.
        partition: TopicPartition,
        /// The sequence the leader expected.
        expected: i32,
        /// The batch's first sequence.
        got: i32,
    },

    /// A producer id was used with an epoch older than the partition has
    /// seen (Kafka: `INVALID_PRODUCER_EPOCH`): a newer instance fenced it.
    #[error("{partition}: producer epoch {epoch} is fenced by epoch {current}")]
    InvalidProducerEpoch {
        /// The partition.
        partition: TopicPartition,
        /// The batch's producer epoch.
        epoch: i16,
        /// The newest epoch seen.
        current: i16,
    },

    /// A metadata delta from a version the broker does not hold (it missed
    /// a push, or pushes crossed): the controller sends the whole metadata
    /// instead.
    #[error(
        "a metadata delta from version {base_version} (controller epoch {base_epoch}); \
         this broker holds version {held_version} (controller epoch {held_epoch})"
    )]
    MetadataDeltaBaseMismatch {
        /// The controller epoch of the delta's base.
        base_epoch: u32,
        /// The version of the delta's base.
        base_version: u64,
        /// The controller epoch of the metadata the broker holds.
        held_epoch: u32,
        /// The version of the metadata the broker holds.
        held_version: u64,
    },

    /// An ISR change was made against an older version of the partition's
    /// leader and ISR (Kafka: `INVALID_UPDATE_VERSION`); the leader must look
    /// at the newer metadata first.
    #[error("{partition}: partition epoch {version} is stale, the current one is {current}")]
    InvalidUpdateVersion {
        /// The partition.
        partition: TopicPartition,
        /// The version the change was made against.
        version: u32,
        /// The current version.
        current: u32,
    },

    /// An ISR change would add a replica whose broker is fenced or in
    /// controlled shutdown (Kafka: `INELIGIBLE_REPLICA`, KIP-841); the
    /// change is refused and nothing of it is committed.
    #[error("{partition}: replica {replica} is fenced or shutting down and cannot join the ISR")]
    IneligibleReplica {
        /// The partition.
        partition: TopicPartition,
        /// The ineligible replica.
        replica: u32,
    },

    /// A fetch named a fetch session the leader does not have (it restarted,
    /// or replaced the session with a newer one) (Kafka:
    /// `FETCH_SESSION_ID_NOT_FOUND`). The follower opens a new session.
    #[error("fetch session {session_id} is not known to this leader")]
    FetchSessionIdNotFound {
        /// The session named.
        session_id: u32,
    },

    /// A fetch's session epoch is not the next one the leader expects (a
    /// fetch was lost or repeated) (Kafka: `INVALID_FETCH_SESSION_EPOCH`).
    /// The follower opens a new session.
    #[error("fetch session {session_id}: epoch {got}, expected {expected}")]
    InvalidFetchSessionEpoch {
        /// The session.
        session_id: u32,
        /// The epoch the leader expected.
        expected: u32,
        /// The epoch the fetch carried.
        got: u32,
    },

    /// A consumer has no position for a partition and `auto_offset_reset` is
    /// `None`, or the position fell out of the log's range (Kafka:
    /// `NoOffsetForPartitionException`).
    #[error("no valid offset for {partition} and auto_offset_reset is none")]
    NoOffsetForPartition {
        /// The partition.
        partition: TopicPartition,
    },

    /// `poll` was called on a consumer that is assigned nothing.
    #[error("the consumer is not assigned any partitions")]
    NotAssigned,

    /// A per-partition operation named a partition the consumer is not
    /// assigned; also the coordinator's answer to a group member committing,
    /// in its current epoch, a partition it does not own.
    #[error("partition {partition} is not assigned to this consumer")]
    PartitionNotAssigned {
        /// The partition.
        partition: TopicPartition,
    },

    /// The broker asked is not (or no longer) the coordinator of the group:
    /// the leader of its `__consumer_offsets` partition moved (Kafka:
    /// `NOT_COORDINATOR`). The client finds the coordinator again.
    #[error("broker {node} is not the coordinator of group {group:?}")]
    NotCoordinator {
        /// The group.
        group: String,
        /// The broker that answered.
        node: u32,
    },

    /// The coordinator is still reading its `__consumer_offsets` partition
    /// after becoming leader (Kafka: `COORDINATOR_LOAD_IN_PROGRESS`).
    #[error("the coordinator of group {group:?} is loading its state")]
    CoordinatorLoadInProgress {
        /// The group.
        group: String,
    },

    /// No coordinator can be found: the group's `__consumer_offsets`
    /// partition has no leader right now (Kafka: `COORDINATOR_NOT_AVAILABLE`).
    #[error("no coordinator is available for group {group:?}")]
    CoordinatorNotAvailable {
        /// The group.
        group: String,
    },

    /// A group id that is empty or too long (Kafka: `INVALID_GROUP_ID`).
    #[error("invalid group id {group:?}: {reason}")]
    InvalidGroupId {
        /// The refused id.
        group: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// The group has no members and no committed offsets (Kafka:
    /// `GROUP_ID_NOT_FOUND`).
    #[error("group {group:?} does not exist")]
    GroupIdNotFound {
        /// The group.
        group: String,
    },

    /// The group has active members, so its offsets cannot be reset (Kafka:
    /// `NON_EMPTY_GROUP`; stop the consumers first).
    #[error("group {group:?} has {members} active member(s)")]
    NonEmptyGroup {
        /// The group.
        group: String,
        /// How many members it has.
        members: usize,
    },

    /// The coordinator does not know the member: it left, or was removed
    /// after missing `session_timeout_ms` or `max_poll_interval_ms` (Kafka:
    /// `UNKNOWN_MEMBER_ID`). Its partitions are lost and it must rejoin.
    #[error("member {member_id:?} is not in group {group:?}")]
    UnknownMemberId {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
    },

    /// The member's epoch (generation) is stale: the group moved on without
    /// it (Kafka: `FENCED_MEMBER_EPOCH` / `ILLEGAL_GENERATION`). A commit
    /// carrying it is refused, so a zombie cannot overwrite offsets.
    #[error("member {member_id:?} of group {group:?} is fenced: epoch {epoch}, current {current}")]
    FencedMemberEpoch {
        /// The group.
        group: String,
        /// The member.
        member_id: String,
        /// The epoch the member sent.
        epoch: i32,
        /// The epoch the coordinator holds for it.
        current: i32,
    },

    /// Another consumer joined with the same `group_instance_id` and
    /// replaced this one (Kafka: `FENCED_INSTANCE_ID`).
    #[error("group {group:?}: instance {instance_id:?} was taken over by a newer member")]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The static member's instance id.
        instance_id: String,
    },

    /// The member asked for an assignor the group does not use, or one no
    /// broker knows (Kafka: `INCONSISTENT_GROUP_PROTOCOL` /
    /// `UNSUPPORTED_ASSIGNOR`).
    #[error("group {group:?}: assignor {requested:?} is not usable: {reason}")]
    InconsistentGroupProtocol {
        /// The group.
        group: String,
        /// The assignor the member asked for.
        requested: String,
        /// Why it cannot be used.
        reason: String,
    },

    /// An assignor returned an assignment that breaks the rules of
    /// [`Assignor`](crate::group::Assignor) (a partition twice, to an
    /// unsubscribed member, or one that does not exist).
    #[error("assignor {assignor:?} returned an invalid assignment: {reason}")]
    InvalidAssignment {
        /// The assignor.
        assignor: String,
        /// The broken rule.
        reason: String,
    },

    /// A subscription pattern that does not compile as a regular expression.
    #[error("invalid subscription pattern {pattern:?}: {reason}")]
    InvalidPattern {
        /// The pattern.
        pattern: String,
        /// The regex compiler's message.
        reason: String,
    },
}

impl Error {
    /// Whether the same operation may succeed if it is tried again later.
    ///
    /// Mirrors Kafka's `RetriableException` split: a corrupt batch on the wire,
    /// a storage I/O error, a leader that moved, an unknown topic (metadata may
    /// lag), a timeout and a lost connection are retriable; bad config, oversized
    /// records, out-of-range offsets and anything the producer already gave up
    /// on are not. The producer retries exactly the retriable ones.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::CorruptRecord { .. }
                | Error::Io { .. }
                | Error::LogOffline { .. }
                | Error::UnknownTopicOrPartition { .. }
                | Error::NotLeaderOrFollower { .. }
                | Error::LeaderNotAvailable { .. }
                | Error::ControllerNotAvailable { .. }
                | Error::NotController { .. }
                | Error::NotEnoughReplicas { .. }
                | Error::NotEnoughReplicasAfterAppend { .. }
                | Error::RequestTimedOut { .. }
                | Error::BufferExhausted { .. }
                | Error::Network { .. }
                | Error::SendBufferFull { .. }
                | Error::NotCoordinator { .. }
                | Error::CoordinatorLoadInProgress { .. }
                | Error::CoordinatorNotAvailable { .. }
        )
    }

    /// Kafka's numeric error code for this error (`Errors.java`), or -1
    /// (`UNKNOWN_SERVER_ERROR`) for errors Kafka has no code for (most of
    /// them happen only in a client and never cross the wire). The wire
    /// codec carries this code with every error.
    ///
    /// ```
    /// use ferrolog::{Error, TopicPartition};
    /// let e = Error::NotLeaderOrFollower { broker: 1, partition: TopicPartition::new("t", 0)? };
    /// assert_eq!(e.code(), 6);
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn code(&self) -> i16 {
        match self {
            Error::OffsetOutOfRange { .. } => 1,
            Error::CorruptRecord { .. } => 2,
            Error::UnknownTopicOrPartition { .. } | Error::InvalidPartition { .. } => 3,
            Error::LeaderNotAvailable { .. } => 5,
            Error::NotLeaderOrFollower { .. } => 6,
            Error::RequestTimedOut { .. } => 7,
            Error::RecordTooLarge { .. } => 10,
            Error::Network { .. } => 13,
            Error::CoordinatorLoadInProgress { .. } => 14,
            Error::CoordinatorNotAvailable { .. } => 15,
            Error::NotCoordinator { .. } => 16,
            Error::InvalidTopic { .. } => 17,
            Error::NotEnoughReplicas { .. } => 19,
            Error::NotEnoughReplicasAfterAppend { .. } => 20,
            Error::InconsistentGroupProtocol { .. } => 23,
            Error::InvalidGroupId { .. } => 24,
            Error::UnknownMemberId { .. } => 25,
            Error::TopicAlreadyExists { .. } => 36,
            Error::InvalidPartitions { .. } => 37,
            Error::InvalidReplicationFactor { .. } => 38,
            Error::InvalidConfig { .. } => 40,
            Error::NotController { .. } => 41,
            Error::InvalidRequest { .. } | Error::InvalidFrame { .. } => 42,
            Error::OutOfOrderSequence { .. } => 45,
            Error::InvalidProducerEpoch { .. } => 47,
            Error::CorruptLog { .. }
            | Error::LogOffline { .. }
            | Error::LogInUse { .. }
            | Error::Io { .. } => 56,
            Error::NonEmptyGroup { .. } => 68,
            Error::GroupIdNotFound { .. } => 69,
            Error::FencedLeaderEpoch { .. } => 74,
            Error::UnsupportedCompression { .. } => 76,
            Error::FencedInstanceId { .. } => 82,
            Error::InvalidRecord { .. } => 87,
            Error::InvalidUpdateVersion { .. } => 95,
            Error::IneligibleReplica { .. } => 107,
            Error::FetchSessionIdNotFound { .. } => 70,
            Error::InvalidFetchSessionEpoch { .. } => 71,
            Error::FencedMemberEpoch { .. } => 110,
            Error::InvalidPattern { .. } => 128,
            Error::UnexpectedAppendOffset { .. }
            | Error::DeliveryTimeout { .. }
            | Error::BufferExhausted { .. }
            | Error::SendBufferFull { .. }
            | Error::Serialization { .. }
            | Error::RecordDeserialization { .. }
            | Error::DroppedByInterceptor
            | Error::ClientClosed { .. }
            | Error::NoOffsetForPartition { .. }
            | Error::NotAssigned
            | Error::PartitionNotAssigned { .. }
            | Error::InvalidAssignment { .. }
            | Error::ControllerNotAvailable { .. }
            | Error::MetadataDeltaBaseMismatch { .. } => -1,
        }
    }

    /// The log of `partition` held by `replica` already has an open handle.
    pub(crate) fn log_in_use(partition: &crate::TopicPartition, replica: u32) -> Self {
        Error::LogInUse {
            partition: format!("{partition} (replica {replica})"),
        }
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        Error::CorruptRecord {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source: Arc::new(source),
        }
    }
}
