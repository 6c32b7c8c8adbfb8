//! The wire codec: every request and response type (with errors) survives an
//! encode and decode unchanged, and bytes that are not a frame — random,
//! truncated, corrupted — are refused without a panic and without
//! allocating more than a small multiple of their own size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use ferrolog::protocol::codec::{self, LENGTH_PREFIX_LEN};
use ferrolog::protocol::*;
use ferrolog::record::{RecordBatch, RecordBatchBuilder, Records};
use ferrolog::storage::{CleanupPolicy, TopicCompression};
use ferrolog::{Error, NewTopic, TopicConfig, TopicPartition};
use proptest::prelude::*;
use proptest::strategy::{Union, ValueTree};
use proptest::test_runner::{Config, TestRng, TestRunner};

// ----- counting what decoding allocates -----------------------------------

/// Counts the bytes allocated on the current thread (tests run on threads
/// of their own, so other tests do not disturb the count).
struct Counting;

thread_local! {
    static ALLOCATED: Cell<usize> = const { Cell::new(0) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + layout.size()));
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATED.try_with(|a| a.set(a.get() + new_size));
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Decodes `frame` and returns the result's kind and the bytes allocated.
fn decode_counted(frame: Bytes) -> (bool, usize) {
    let before = ALLOCATED.with(Cell::get);
    let ok = codec::decode(frame).is_ok();
    (ok, ALLOCATED.with(Cell::get) - before)
}

/// Most a decode may allocate for a frame of `len` bytes: the decoded
/// values take at most a few times their wire size, plus one error message.
fn allocation_bound(len: usize) -> usize {
    16 * len + 4096
}

// ----- strategies for every message type ---------------------------------

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9._-]{0,11}"
}

fn text() -> impl Strategy<Value = String> {
    "\\PC{0,24}"
}

fn tp() -> impl Strategy<Value = TopicPartition> {
    (name(), 0u32..64).prop_map(|(t, p)| TopicPartition::new(t, p).unwrap())
}

fn tps() -> impl Strategy<Value = Vec<TopicPartition>> {
    prop::collection::vec(tp(), 0..4)
}

fn nodes() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..8, 0..4)
}

fn batch() -> impl Strategy<Value = RecordBatch> {
    (
        any::<i64>(),
        prop::collection::vec(
            (
                prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
                prop::option::of(prop::collection::vec(any::<u8>(), 0..24)),
            ),
            1..4,
        ),
    )
        .prop_map(|(ts, records)| {
            let mut builder = RecordBatchBuilder::new();
            for (key, value) in &records {
                builder.append(ts, key.as_deref(), value.as_deref(), &[]);
            }
            builder.build()
        })
}

fn records() -> impl Strategy<Value = Records> {
    prop::collection::vec(batch(), 0..3).prop_map(|batches| {
        let mut records = Records::empty();
        let mut bytes = BytesMut::new();
        for b in batches {
            bytes.extend_from_slice(b.as_bytes());
        }
        if !bytes.is_empty() {
            records.push_chunk(bytes.freeze());
        }
        records
    })
}

fn config() -> impl Strategy<Value = TopicConfig> {
    (
        (1024u64..1 << 30, any::<i64>(), 1u64..1 << 20),
        (
            prop::option::of(any::<i64>()),
            prop::option::of(any::<u64>()),
        ),
        (
            prop::option::of(any::<u64>()),
            prop::option::of(any::<i64>()),
        ),
        (
            1usize..1 << 24,
            1u16..4,
            any::<bool>(),
            0u8..3,
            any::<i64>(),
            0u8..6,
        ),
    )
        .prop_map(
            |((sb, sm, ii), (rm, rb), (fm, fms), (mmb, mir, unclean, cp, drm, ct))| TopicConfig {
                segment_bytes: sb,
                segment_ms: sm,
                index_interval_bytes: ii,
                retention_ms: rm,
                retention_bytes: rb,
                flush_messages: fm,
                flush_ms: fms,
                max_message_bytes: mmb,
                min_insync_replicas: mir,
                unclean_leader_election_enable: unclean,
                cleanup_policy: [
                    CleanupPolicy::Delete,
                    CleanupPolicy::Compact,
                    CleanupPolicy::CompactDelete,
                ][cp as usize],
                delete_retention_ms: drm,
                compression_type: [
                    TopicCompression::Producer,
                    TopicCompression::Uncompressed,
                    TopicCompression::Gzip,
                    TopicCompression::Snappy,
                    TopicCompression::Lz4,
                    TopicCompression::Zstd,
                ][ct as usize],
            },
        )
}

/// A `&'static str` the codec knows (what the crate puts in such fields).
fn known() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec![
        "Produce",
        "Fetch",
        "replication of an acks=all produce",
        "producer",
        "consumer",
        "gzip",
        "segment_bytes",
        "the name is empty",
        "the id is empty",
    ])
}

fn io_error() -> impl Strategy<Value = Arc<std::io::Error>> {
    (
        prop::sample::select(vec![
            std::io::ErrorKind::NotFound,
            std::io::ErrorKind::PermissionDenied,
            std::io::ErrorKind::StorageFull,
            std::io::ErrorKind::Other,
        ]),
        text(),
    )
        .prop_map(|(kind, msg)| Arc::new(std::io::Error::new(kind, msg)))
}

/// Every error variant, with arbitrary fields.
fn error() -> impl Strategy<Value = Error> {
    (
        0u8..57,
        (text(), text(), text()),
        (any::<u64>(), any::<u64>(), any::<u64>()),
        (any::<i32>(), any::<i32>(), any::<u32>()),
        (tp(), known(), io_error(), prop::option::of(text())),
    )
        .prop_map(
            |(tag, (s1, s2, s3), (a, b, c), (i, j, u), (tp, k, io, opt))| {
                let n = a as usize % 1_000_000;
                match tag {
                    0 => Error::InvalidConfig {
                        field: k,
                        reason: s1,
                    },
                    1 => Error::InvalidTopic {
                        name: s1,
                        reason: k,
                    },
                    2 => Error::CorruptRecord { reason: s1 },
                    3 => Error::CorruptLog {
                        path: PathBuf::from(s1),
                        offset: a,
                        reason: s2,
                    },
                    4 => Error::UnsupportedCompression { codec: k },
                    5 => Error::RecordTooLarge {
                        size: n,
                        max: n / 2,
                    },
                    6 => Error::OffsetOutOfRange {
                        offset: a,
                        log_start_offset: b,
                        log_end_offset: c,
                    },
                    7 => Error::UnexpectedAppendOffset {
                        expected: a,
                        got: b,
                    },
                    8 => Error::FencedLeaderEpoch {
                        epoch: i,
                        latest: j,
                    },
                    9 => Error::LogOffline { reason: s1 },
                    10 => Error::LogInUse { partition: s1 },
                    11 => Error::Io {
                        context: s1,
                        source: io,
                    },
                    12 => Error::UnknownTopicOrPartition { topic: s1 },
                    13 => Error::InvalidPartition {
                        topic: s1,
                        partition: u,
                        partition_count: u / 2,
                    },
                    14 => Error::TopicAlreadyExists { topic: s1 },
                    15 => Error::InvalidPartitions { reason: s1 },
                    16 => Error::InvalidReplicationFactor { reason: s1 },
                    17 => Error::NotLeaderOrFollower {
                        broker: u,
                        partition: tp,
                    },
                    18 => Error::NotController { broker: u },
                    19 => Error::InvalidRecord { reason: s1 },
                    20 => Error::InvalidRequest { reason: s1 },
                    21 => Error::InvalidFrame { reason: s1 },
                    22 => Error::RequestTimedOut {
                        operation: k,
                        timeout_ms: a,
                    },
                    23 => Error::DeliveryTimeout {
                        partition: tp,
                        records: n,
                        elapsed_ms: b,
                        last_error: opt,
                    },
                    24 => Error::BufferExhausted {
                        requested: n,
                        buffer_memory: n * 2,
                        max_block_ms: b,
                    },
                    25 => Error::Network {
                        node: u,
                        reason: s1,
                    },
                    26 => Error::Serialization { reason: s1 },
                    27 => Error::RecordDeserialization {
                        partition: tp,
                        offset: a,
                        reason: s1,
                    },
                    28 => Error::DroppedByInterceptor,
                    29 => Error::ClientClosed { client: k },
                    30 => Error::NotEnoughReplicas {
                        partition: tp,
                        isr: n,
                        min_insync_replicas: n + 1,
                    },
                    31 => Error::NotEnoughReplicasAfterAppend { partition: tp },
                    32 => Error::OutOfOrderSequence {
                        partition: tp,
                        expected: i,
                        got: j,
                    },
                    33 => Error::InvalidProducerEpoch {
                        partition: tp,
                        epoch: i as i16,
                        current: j as i16,
                    },
                    34 => Error::InvalidUpdateVersion {
                        partition: tp,
                        version: u,
                        current: u / 3,
                    },
                    35 => Error::NoOffsetForPartition { partition: tp },
                    36 => Error::NotAssigned,
                    37 => Error::PartitionNotAssigned { partition: tp },
                    38 => Error::NotCoordinator { group: s1, node: u },
                    39 => Error::CoordinatorLoadInProgress { group: s1 },
                    40 => Error::CoordinatorNotAvailable { group: s1 },
                    41 => Error::InvalidGroupId {
                        group: s1,
                        reason: k,
                    },
                    42 => Error::GroupIdNotFound { group: s1 },
                    43 => Error::NonEmptyGroup {
                        group: s1,
                        members: n,
                    },
                    44 => Error::UnknownMemberId {
                        group: s1,
                        member_id: s2,
                    },
                    45 => Error::FencedMemberEpoch {
                        group: s1,
                        member_id: s2,
                        epoch: i,
                        current: j,
                    },
                    46 => Error::FencedInstanceId {
                        group: s1,
                        instance_id: s2,
                    },
                    47 => Error::InconsistentGroupProtocol {
                        group: s1,
                        requested: s2,
                        reason: s3,
                    },
                    48 => Error::InvalidAssignment {
                        assignor: s1,
                        reason: s2,
                    },
                    49 => Error::IneligibleReplica {
                        partition: tp,
                        replica: u,
                    },
                    50 => Error::LeaderNotAvailable { partition: tp },
                    51 => Error::ControllerNotAvailable { reason: s1 },
                    52 => Error::FetchSessionIdNotFound { session_id: u },
                    53 => Error::InvalidFetchSessionEpoch {
                        session_id: u,
                        expected: u,
                        got: u,
                    },
                    54 => Error::SendBufferFull {
                        node: u,
                        limit_bytes: n,
                    },
                    55 => Error::MetadataDeltaBaseMismatch {
                        base_epoch: u,
                        base_version: a,
                        held_epoch: u / 2,
                        held_version: b,
                    },
                    _ => Error::InvalidPattern {
                        pattern: s1,
                        reason: s2,
                    },
                }
            },
        )
}

fn result<T: std::fmt::Debug + Clone + 'static>(
    ok: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Result<T, Error>> {
    prop_oneof![3 => ok.prop_map(Ok), 1 => error().prop_map(Err)]
}

fn acks() -> impl Strategy<Value = Acks> {
    prop::sample::select(vec![Acks::None, Acks::Leader, Acks::All])
}

fn offset_spec() -> impl Strategy<Value = OffsetSpec> {
    prop_oneof![
        Just(OffsetSpec::Earliest),
        Just(OffsetSpec::Latest),
        any::<i64>().prop_map(OffsetSpec::Timestamp),
    ]
}

fn broker_info() -> impl Strategy<Value = BrokerInfo> {
    (0u32..8, prop::option::of(name()), prop::option::of(name()))
        .prop_map(|(id, rack, endpoint)| BrokerInfo { id, rack, endpoint })
}

fn partition_metadata() -> impl Strategy<Value = PartitionMetadata> {
    (
        0u32..64,
        prop::option::of(0u32..8),
        any::<i32>(),
        any::<u32>(),
        nodes(),
        nodes(),
        prop::option::of(nodes()),
    )
        .prop_map(
            |(partition, leader, leader_epoch, partition_epoch, replicas, isr, reassigning_to)| {
                PartitionMetadata {
                    partition,
                    leader,
                    leader_epoch,
                    partition_epoch,
                    replicas,
                    isr,
                    reassigning_to,
                }
            },
        )
}

fn topic_metadata() -> impl Strategy<Value = TopicMetadata> {
    (
        name(),
        any::<u64>(),
        prop::collection::vec(partition_metadata(), 0..3),
        config(),
    )
        .prop_map(|(name, id, partitions, config)| TopicMetadata {
            name: name.into(),
            id,
            partitions,
            config,
        })
}

fn cluster_metadata() -> impl Strategy<Value = ClusterMetadata> {
    (
        any::<u32>(),
        any::<u64>(),
        prop::option::of(any::<u32>()),
        prop::collection::vec(broker_info(), 0..3),
        prop::collection::vec(topic_metadata(), 0..3),
        any::<i64>(),
    )
        .prop_map(
            |(controller_epoch, version, controller, brokers, topics, next_producer_id)| {
                ClusterMetadata {
                    controller_epoch,
                    version,
                    controller,
                    brokers,
                    topics: topics
                        .into_iter()
                        .map(|t| (t.name.clone(), Arc::new(t)))
                        .collect(),
                    next_producer_id,
                }
            },
        )
}

fn offset_and_metadata() -> impl Strategy<Value = OffsetAndMetadata> {
    (any::<u64>(), text(), any::<i64>()).prop_map(|(offset, metadata, commit_timestamp)| {
        OffsetAndMetadata {
            offset,
            metadata,
            commit_timestamp,
        }
    })
}

fn group_state() -> impl Strategy<Value = GroupState> {
    prop::sample::select(vec![
        GroupState::Empty,
        GroupState::Reconciling,
        GroupState::Stable,
    ])
}

fn subscription() -> impl Strategy<Value = Subscription> {
    prop_oneof![
        prop::collection::btree_set(name(), 0..3).prop_map(Subscription::Topics),
        text().prop_map(Subscription::Pattern),
    ]
}

fn heartbeat() -> impl Strategy<Value = GroupHeartbeatRequest> {
    (
        (name(), text(), any::<i32>(), prop::option::of(text())),
        (
            text(),
            prop::option::of(subscription()),
            prop::option::of(name()),
            prop::option::of(tps()),
        ),
        (
            any::<u64>(),
            prop::option::of(any::<u32>()),
            prop::option::of(any::<u32>()),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (group, member_id, member_epoch, group_instance_id),
                (client_id, subscription, assignor, owned),
                (acked_assignment, session_timeout_ms, rebalance_timeout_ms, max_wait_ms),
            )| GroupHeartbeatRequest {
                group,
                member_id,
                member_epoch,
                group_instance_id,
                client_id,
                subscription,
                assignor,
                owned,
                acked_assignment,
                session_timeout_ms,
                rebalance_timeout_ms,
                max_wait_ms,
            },
        )
}

fn describe_group() -> impl Strategy<Value = GroupDescription> {
    let member = (
        text(),
        prop::option::of(text()),
        text(),
        any::<i32>(),
        tps(),
        tps(),
        tps(),
        subscription(),
        prop::collection::vec(name(), 0..3),
    )
        .prop_map(
            |(
                member_id,
                group_instance_id,
                client_id,
                member_epoch,
                assignment,
                pending,
                target,
                subscription,
                subscribed_topics,
            )| {
                MemberDescription {
                    member_id,
                    group_instance_id,
                    client_id,
                    member_epoch,
                    assignment,
                    pending_revocation: pending,
                    target,
                    subscription,
                    subscribed_topics,
                }
            },
        );
    (
        name(),
        group_state(),
        any::<i32>(),
        name(),
        any::<u32>(),
        prop::collection::vec(member, 0..3),
        prop::collection::btree_map(tp(), offset_and_metadata(), 0..3),
    )
        .prop_map(
            |(group, state, group_epoch, assignor, coordinator, members, offsets)| {
                GroupDescription {
                    group,
                    state,
                    group_epoch,
                    assignor,
                    coordinator,
                    members,
                    offsets,
                }
            },
        )
}

fn request() -> impl Strategy<Value = Request> {
    let fetch_partition = (
        tp(),
        any::<u64>(),
        any::<u32>(),
        prop::option::of(any::<i32>()),
        prop::option::of(any::<i32>()),
    )
        .prop_map(
            |(partition, fetch_offset, max_bytes, current_leader_epoch, last_fetched_epoch)| {
                FetchPartition {
                    partition,
                    fetch_offset,
                    max_bytes,
                    current_leader_epoch,
                    last_fetched_epoch,
                }
            },
        );
    let new_topic = (name(), any::<u32>(), any::<u16>(), config()).prop_map(
        |(name, partitions, replication_factor, config)| NewTopic {
            name,
            partitions,
            replication_factor,
            config,
        },
    );
    Union::new(vec![
        (
            acks(),
            any::<u32>(),
            prop::collection::vec((tp(), batch()), 0..3),
        )
            .prop_map(|(acks, timeout_ms, parts)| {
                Request::Produce(ProduceRequest {
                    acks,
                    timeout_ms,
                    partitions: parts
                        .into_iter()
                        .map(|(partition, batch)| ProducePartition { partition, batch })
                        .collect(),
                })
            })
            .boxed(),
        (
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            prop::collection::vec(fetch_partition, 0..3),
            prop::option::of(0u32..8),
            prop::option::of((any::<u32>(), any::<u32>())),
            prop::collection::vec(tp(), 0..3),
        )
            .prop_map(
                |(max_wait_ms, min_bytes, max_bytes, partitions, replica, session, forgotten)| {
                    Request::Fetch(FetchRequest {
                        max_wait_ms,
                        min_bytes,
                        max_bytes,
                        partitions,
                        replica,
                        session: session.map(|(id, epoch)| FetchSession { id, epoch }),
                        forgotten,
                    })
                },
            )
            .boxed(),
        prop::collection::vec((tp(), offset_spec()), 0..3)
            .prop_map(|partitions| Request::ListOffsets(ListOffsetsRequest { partitions }))
            .boxed(),
        prop::collection::vec((tp(), (prop::option::of(any::<i32>()), any::<i32>())), 0..3)
            .prop_map(|partitions| {
                Request::OffsetForLeaderEpoch(OffsetForLeaderEpochRequest { partitions })
            })
            .boxed(),
        prop::option::of(prop::collection::vec(name(), 0..3))
            .prop_map(|topics| Request::Metadata(MetadataRequest { topics }))
            .boxed(),
        prop::collection::vec(new_topic, 0..3)
            .prop_map(|topics| Request::CreateTopics(CreateTopicsRequest { topics }))
            .boxed(),
        prop::collection::vec(name(), 0..3)
            .prop_map(|topics| Request::DeleteTopics(DeleteTopicsRequest { topics }))
            .boxed(),
        prop::collection::vec((name(), any::<u32>()), 0..3)
            .prop_map(|topics| Request::CreatePartitions(CreatePartitionsRequest { topics }))
            .boxed(),
        (
            cluster_metadata(),
            prop::option::of((any::<u32>(), any::<u64>())),
            prop::collection::vec(name(), 0..3),
        )
            .prop_map(|(m, delta_from, deleted)| {
                Request::UpdateMetadata(UpdateMetadataRequest {
                    metadata: Arc::new(m),
                    delta_from,
                    deleted_topics: deleted.into_iter().map(Arc::from).collect(),
                })
            })
            .boxed(),
        (any::<u32>(), any::<u32>(), any::<u64>(), any::<bool>())
            .prop_map(|(broker, e, v, want_shutdown)| {
                Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                    broker,
                    metadata_version: (e, v),
                    want_shutdown,
                })
            })
            .boxed(),
        (any::<u32>(), tp(), any::<i32>(), any::<u32>(), nodes())
            .prop_map(|(broker, partition, leader_epoch, partition_epoch, isr)| {
                Request::AlterPartition(AlterPartitionRequest {
                    broker,
                    proposal: IsrProposal {
                        partition,
                        leader_epoch,
                        partition_epoch,
                        isr,
                    },
                })
            })
            .boxed(),
        Just(Request::InitProducerId).boxed(),
        prop::collection::vec((tp(), nodes()), 0..3)
            .prop_map(|partitions| {
                Request::AlterPartitionReassignments(AlterPartitionReassignmentsRequest {
                    partitions,
                })
            })
            .boxed(),
        broker_info().prop_map(Request::RegisterBroker).boxed(),
        text().prop_map(Request::FindCoordinator).boxed(),
        heartbeat().prop_map(Request::GroupHeartbeat).boxed(),
        (
            name(),
            text(),
            any::<i32>(),
            prop::collection::vec((tp(), offset_and_metadata()), 0..3),
        )
            .prop_map(|(group, member_id, member_epoch, offsets)| {
                Request::OffsetCommit(OffsetCommitRequest {
                    group,
                    member_id,
                    member_epoch,
                    offsets,
                })
            })
            .boxed(),
        (name(), prop::option::of(tps()))
            .prop_map(|(group, partitions)| {
                Request::OffsetFetch(OffsetFetchRequest { group, partitions })
            })
            .boxed(),
        Just(Request::ListGroups).boxed(),
        text().prop_map(Request::DescribeGroup).boxed(),
    ])
}

fn response() -> impl Strategy<Value = Response> {
    let produced = (
        tp(),
        result(
            (any::<u64>(), any::<u64>()).prop_map(|(base_offset, log_start_offset)| ProduceAck {
                base_offset,
                log_start_offset,
            }),
        ),
    )
        .prop_map(|(partition, result)| ProducedPartition { partition, result });
    let fetched = (
        tp(),
        result(
            (
                any::<u64>(),
                any::<u64>(),
                records(),
                prop::option::of((any::<i32>(), any::<u64>())),
            )
                .prop_map(
                    |(high_watermark, log_start_offset, records, diverging_epoch)| FetchedData {
                        high_watermark,
                        log_start_offset,
                        records,
                        diverging_epoch,
                    },
                ),
        ),
    )
        .prop_map(|(partition, result)| FetchedPartition { partition, result });
    let listed = (
        tp(),
        result(prop::option::of(
            (any::<u64>(), prop::option::of(any::<i64>()))
                .prop_map(|(offset, timestamp)| OffsetAndTimestamp { offset, timestamp }),
        )),
    )
        .prop_map(|(partition, result)| ListedOffset { partition, result });
    let topic_results = || {
        prop::collection::vec((name(), result(Just(()))), 0..3)
            .prop_map(|topics| TopicResults { topics })
    };
    let listing = (name(), group_state(), 0usize..100, any::<u32>()).prop_map(
        |(group, state, members, coordinator)| GroupListing {
            group,
            state,
            members,
            coordinator,
        },
    );
    Union::new(vec![
        prop::collection::vec(produced, 0..3)
            .prop_map(|partitions| Response::Produce(ProduceResponse { partitions }))
            .boxed(),
        (prop::collection::vec(fetched, 0..3), any::<u32>())
            .prop_map(|(partitions, session_id)| {
                Response::Fetch(FetchResponse {
                    partitions,
                    session_id,
                })
            })
            .boxed(),
        prop::collection::vec(listed, 0..3)
            .prop_map(|partitions| Response::ListOffsets(ListOffsetsResponse { partitions }))
            .boxed(),
        (
            any::<u64>(),
            prop::option::of(any::<u32>()),
            prop::collection::vec(broker_info(), 0..3),
            prop::collection::vec(topic_metadata(), 0..3),
        )
            .prop_map(|(version, controller, brokers, topics)| {
                Response::Metadata(MetadataResponse {
                    version,
                    controller,
                    brokers,
                    topics,
                })
            })
            .boxed(),
        topic_results().prop_map(Response::CreateTopics).boxed(),
        topic_results().prop_map(Response::DeleteTopics).boxed(),
        topic_results().prop_map(Response::CreatePartitions).boxed(),
        prop::collection::vec((tp(), error()), 0..3)
            .prop_map(Response::UpdateMetadata)
            .boxed(),
        any::<u64>().prop_map(Response::BrokerHeartbeat).boxed(),
        result((nodes(), any::<u32>()))
            .prop_map(Response::AlterPartition)
            .boxed(),
        result((any::<i64>(), any::<i16>()))
            .prop_map(Response::InitProducerId)
            .boxed(),
        prop::collection::vec((tp(), result(Just(()))), 0..3)
            .prop_map(Response::AlterPartitionReassignments)
            .boxed(),
        result(Just(())).prop_map(Response::RegisterBroker).boxed(),
        any::<u32>().prop_map(Response::FindCoordinator).boxed(),
        (
            text(),
            any::<i32>(),
            tps(),
            any::<u64>(),
            any::<bool>(),
            any::<bool>(),
        )
            .prop_map(
                |(
                    member_id,
                    member_epoch,
                    assignment,
                    assignment_id,
                    assignment_changed,
                    reconciling,
                )| {
                    Response::GroupHeartbeat(GroupHeartbeatResponse {
                        member_id,
                        member_epoch,
                        assignment,
                        assignment_id,
                        assignment_changed,
                        reconciling,
                    })
                },
            )
            .boxed(),
        prop::collection::vec(
            (
                tp(),
                result(prop::option::of((any::<i32>(), any::<u64>()).prop_map(
                    |(leader_epoch, end_offset)| EpochEndOffset {
                        leader_epoch,
                        end_offset,
                    },
                ))),
            ),
            0..3,
        )
        .prop_map(Response::OffsetForLeaderEpoch)
        .boxed(),
        Just(Response::OffsetCommit).boxed(),
        prop::collection::btree_map(tp(), offset_and_metadata(), 0..3)
            .prop_map(Response::OffsetFetch)
            .boxed(),
        prop::collection::vec(listing, 0..3)
            .prop_map(Response::ListGroups)
            .boxed(),
        describe_group().prop_map(Response::DescribeGroup).boxed(),
    ])
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        any::<u64>().prop_map(Peer::Client),
        any::<u32>().prop_map(Peer::Broker),
    ]
}

fn message() -> impl Strategy<Value = Message> {
    prop_oneof![
        request().prop_map(Message::Request),
        response().prop_map(|r| Message::Response(Ok(r))),
        error().prop_map(|e| Message::Response(Err(e))),
    ]
}

fn envelope() -> impl Strategy<Value = Envelope> {
    (peer(), peer(), any::<u64>(), message()).prop_map(|(from, to, correlation_id, message)| {
        Envelope {
            from,
            to,
            correlation_id,
            message,
        }
    })
}

// ----- the properties ------------------------------------------------------

/// What a decoded envelope must equal: the same debug picture (every field,
/// record data by their headers) and the same bytes when encoded again.
fn assert_round_trip(envelope: &Envelope) {
    let frame = codec::encode(envelope);
    let decoded = codec::decode(frame.clone()).expect("a frame the codec wrote decodes");
    assert_eq!(format!("{decoded:?}"), format!("{envelope:?}"));
    assert_eq!(
        codec::encode(&decoded),
        frame,
        "encoding again gives the same bytes"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_request_round_trips(from in peer(), to in peer(), id in any::<u64>(), request in request()) {
        assert_round_trip(&Envelope::request(from, to, id, request));
    }

    #[test]
    fn every_response_round_trips(from in peer(), to in peer(), id in any::<u64>(),
            response in response()) {
        assert_round_trip(&Envelope {
            from,
            to,
            correlation_id: id,
            message: Message::Response(Ok(response)),
        });
    }

    #[test]
    fn every_error_round_trips_with_its_kafka_code(error in error()) {
        let envelope = Envelope {
            from: Peer::Broker(1),
            to: Peer::Client(2),
            correlation_id: 3,
            message: Message::Response(Err(error.clone())),
        };
        assert_round_trip(&envelope);
        // The code is on the wire where a Kafka reader would look for it:
        // after prefix, version, two peers (tag + id) and correlation id
        // comes the message tag (2: error) and the code.
        let frame = codec::encode(&envelope);
        let at = LENGTH_PREFIX_LEN + 2 + 5 + 9 + 8;
        prop_assert_eq!(frame[at], 2);
        prop_assert_eq!(i16::from_be_bytes([frame[at + 1], frame[at + 2]]), error.code());
    }
}

proptest! {
    /// A metadata delta from `base` — some topics kept (the same `Arc`),
    /// some changed, some deleted, some new — carries only what changed,
    /// crosses the wire, and gives exactly the new metadata when applied to
    /// `base`; a broker holding anything else refuses it.
    #[test]
    fn a_metadata_delta_applied_to_its_base_gives_the_new_metadata(
        base in cluster_metadata(),
        changes in prop::collection::vec((0u8..3, topic_metadata()), 0..4),
        brokers in prop::collection::vec(broker_info(), 0..3),
        bump in 1u64..5,
    ) {
        let mut new = base.clone();
        new.version = base.version.wrapping_add(bump);
        new.brokers = brokers;
        let names: Vec<_> = base.topics.keys().cloned().collect();
        for (i, (kind, topic)) in changes.into_iter().enumerate() {
            match (kind, names.get(i)) {
                (0, Some(name)) => {
                    new.topics.remove(name);
                }
                (1, Some(name)) => {
                    let changed = TopicMetadata { name: name.clone(), ..topic };
                    new.topics.insert(name.clone(), Arc::new(changed));
                }
                _ => {
                    new.topics.insert(topic.name.clone(), Arc::new(topic));
                }
            }
        }
        let delta = UpdateMetadataRequest::delta(&base, &new);
        let kept = new
            .topics
            .iter()
            .filter(|(n, t)| base.topics.get(*n).is_some_and(|b| Arc::ptr_eq(b, t)))
            .count();
        prop_assert_eq!(delta.metadata.topics.len(), new.topics.len() - kept);
        let envelope = Envelope::request(Peer::Broker(9), Peer::Broker(1), 5,
            Request::UpdateMetadata(delta));
        let decoded = codec::decode(codec::encode(&envelope)).unwrap();
        let Message::Request(Request::UpdateMetadata(delta)) = decoded.message else {
            panic!("not a push: {decoded:?}");
        };
        prop_assert_eq!(&*delta.apply_to(&base).unwrap(), &new);
        let mut other = base.clone();
        other.version = base.version.wrapping_add(1);
        let refused = delta.apply_to(&other);
        prop_assert!(
            matches!(refused, Err(Error::MetadataDeltaBaseMismatch { .. })),
            "{:?}", refused
        );
    }
}

#[test]
fn record_data_is_decoded_as_a_slice_of_the_frame() {
    let mut builder = RecordBatchBuilder::new();
    builder.append(1, Some(b"k"), Some(b"v"), &[]);
    let batch = builder.build();
    let envelope = Envelope::request(
        Peer::Client(1),
        Peer::Broker(0),
        9,
        Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 100,
            partitions: vec![ProducePartition {
                partition: TopicPartition::new("t", 0).unwrap(),
                batch: batch.clone(),
            }],
        }),
    );
    let frame = codec::encode(&envelope);
    let range = frame.as_ptr_range();
    let Message::Request(Request::Produce(p)) = codec::decode(frame.clone()).unwrap().message
    else {
        panic!("not a produce");
    };
    let decoded = p.partitions[0].batch.as_bytes();
    assert_eq!(decoded, batch.as_bytes());
    assert!(range.contains(&decoded.as_ptr()), "no copy of the batch");
}

#[test]
fn frames_of_another_version_or_a_wrong_length_are_refused() {
    let envelope = Envelope::request(Peer::Client(1), Peer::Broker(0), 1, Request::ListGroups);
    let frame = codec::encode(&envelope);
    let mut other_version = frame.to_vec();
    other_version[LENGTH_PREFIX_LEN + 1] ^= 0x40;
    let mut short = frame.to_vec();
    short.pop();
    for bad in [other_version, short, vec![0, 0], Vec::new()] {
        assert!(matches!(
            codec::decode(Bytes::from(bad)),
            Err(Error::InvalidFrame { .. })
        ));
    }
}

/// A simple seeded generator for the byte-level cases.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Frames with a correct length prefix around `body`.
fn framed(body: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(body.len() + LENGTH_PREFIX_LEN);
    frame.extend_from_slice(&(body.len() as u32).to_be_bytes());
    frame.extend_from_slice(body);
    Bytes::from(frame)
}

#[test]
fn random_truncated_and_corrupted_frames_never_panic_or_over_allocate() {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &[7; 32]),
    );
    let strategy = envelope();
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    let mut cases = 0u64;
    let mut decoded_ok = 0u64;
    let mut worst = 0.0f64;
    let mut check = |frame: Bytes, cases: &mut u64, decoded_ok: &mut u64| {
        let len = frame.len();
        let (ok, allocated) = decode_counted(frame);
        assert!(
            allocated <= allocation_bound(len),
            "decoding {len} bytes allocated {allocated}"
        );
        worst = worst.max(allocated as f64 / (len.max(1) as f64));
        *cases += 1;
        *decoded_ok += u64::from(ok);
    };
    // Pure noise, with and without a correct length prefix and version.
    for _ in 0..20_000 {
        let len = rng.below(300);
        let mut body: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        check(Bytes::from(body.clone()), &mut cases, &mut decoded_ok);
        if body.len() >= 2 {
            body[0] = 0;
            body[1] = 1;
        }
        check(framed(&body), &mut cases, &mut decoded_ok);
    }
    // Real frames, cut short and corrupted.
    while cases < 120_000 {
        let envelope = strategy.new_tree(&mut runner).unwrap().current();
        let frame = codec::encode(&envelope);
        let body = &frame[LENGTH_PREFIX_LEN..];
        // Every cut of the body, with the prefix made to match.
        let step = (body.len() / 16).max(1);
        for cut in (0..body.len()).step_by(step) {
            check(framed(&body[..cut]), &mut cases, &mut decoded_ok);
            check(
                frame.slice(..cut + LENGTH_PREFIX_LEN),
                &mut cases,
                &mut decoded_ok,
            );
        }
        // Random bytes overwritten, counts made huge.
        for _ in 0..8 {
            let mut corrupted = body.to_vec();
            for _ in 0..1 + rng.below(3) {
                let at = rng.below(corrupted.len());
                corrupted[at] = if rng.below(2) == 0 {
                    0xff
                } else {
                    rng.next() as u8
                };
            }
            check(framed(&corrupted), &mut cases, &mut decoded_ok);
        }
    }
    println!(
        "{cases} malformed or random frames decoded without a panic ({decoded_ok} still decoded); \
         most allocated per frame byte: {worst:.1}"
    );
    assert!(cases >= 100_000);
}

#[test]
fn decoded_lists_and_maps_keep_order() {
    let offsets: BTreeMap<TopicPartition, OffsetAndMetadata> = (0..5)
        .map(|p| {
            (
                TopicPartition::new("t", p).unwrap(),
                OffsetAndMetadata::new(u64::from(p) * 10),
            )
        })
        .collect();
    let topics: BTreeSet<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
    for message in [
        Message::Response(Ok(Response::OffsetFetch(offsets))),
        Message::Request(Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: "g".into(),
            member_id: String::new(),
            member_epoch: 0,
            group_instance_id: None,
            client_id: "c".into(),
            subscription: Some(Subscription::Topics(topics)),
            assignor: Some("range".into()),
            owned: Some(Vec::new()),
            acked_assignment: 0,
            session_timeout_ms: Some(45_000),
            rebalance_timeout_ms: Some(300_000),
            max_wait_ms: 0,
        })),
    ] {
        assert_round_trip(&Envelope {
            from: Peer::Client(1),
            to: Peer::Broker(2),
            correlation_id: 3,
            message,
        });
    }
}
