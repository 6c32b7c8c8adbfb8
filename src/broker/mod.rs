//! A broker: the partition replicas it hosts and the requests it serves.
//!
//! This module owns what one broker does: as a partition's leader it appends
//! produced batches, serves consumers below the high watermark and followers
//! up to its log end, and completes `acks=all` produces once the high
//! watermark passes them; as a follower it copies its leaders' logs (the
//! fetcher thread), truncating where its log diverges. Who leads and who
//! is in sync is decided per partition by a [`ReplicaSet`] state machine and,
//! for the cluster, by the controller, which the broker tells it is alive
//! (heartbeats) and asks for ISR changes. Metadata from the controller
//! (UpdateMetadata) opens, removes, promotes and demotes replicas.
//!
//! Request handling never blocks on anything but the local log: a request
//! that must wait keeps its [`Reply`] in a purgatory and is completed by
//! whoever moves the partition it waits for (an append, a high watermark
//! advance, a leadership change) or by the broker's runtime thread at its
//! deadline. No lock is held while a `Reply` is completed or a request is
//! sent.

mod fetcher;
mod groups;
mod purgatory;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::error::{Error, Result};
use crate::group::Assignor;
use crate::group::coordinator::GroupCoordinator;
use crate::protocol::Acks;
use crate::protocol::CONTROLLER_ID;
use crate::protocol::{
    AlterPartitionRequest, BrokerHeartbeatRequest, ClusterMetadata, FetchPartition, FetchRequest,
    FetchResponse, FetchedData, FetchedPartition, ListOffsetsRequest, ListOffsetsResponse,
    ListedOffset, MetadataRequest, MetadataResponse, NodeId, OffsetAndTimestamp, OffsetSpec,
    PartitionMetadata, ProduceAck, ProducePartition, ProduceRequest, ProduceResponse,
    ProducedPartition, Request, Response, UpdateMetadataRequest,
};
use crate::record::{RecordBatch, Records};
use crate::replication::{
    IsrProposal, ProducerIds, ProducerStateTable, ReplicaSet, SequenceCheck, Update,
};
use crate::storage::{PartitionLog, Storage};
use crate::time::{Clock, Millis};
use crate::topic::{INTERNAL_TOPIC_PREFIX, TopicPartition};
use crate::transport::{Peer, Reply, RequestHandler, Transport};
use purgatory::{HeldHeartbeat, PendingFetch, PendingGroup, PendingProduce, Purgatory, Waiter};

/// Longest the runtime thread sleeps between checks, so deadlines are met
/// within this much even under a [`ManualClock`](crate::ManualClock).
const MAX_RUNTIME_SLEEP_MS: Millis = 20;

/// Settings of a broker, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How often the broker applies retention and timed flushes to its logs
    /// (Kafka's `log.retention.check.interval.ms`, default 300,000 = 5 min).
    pub log_retention_check_interval_ms: u64,
    /// How often the broker compacts its logs whose `cleanup_policy`
    /// compacts (Kafka's `log.cleaner.backoff.ms`, default 15,000). A log
    /// with nothing new to clean since its last compaction costs nothing.
    pub log_cleaner_backoff_ms: u64,
    /// A follower that has not caught up with its leader for this long
    /// leaves the ISR (Kafka's `replica.lag.time.max.ms`, default 30,000).
    pub replica_lag_time_max_ms: u64,
    /// Longest a leader holds a follower's fetch waiting for data (Kafka's
    /// `replica.fetch.wait.max.ms`, default 500).
    pub replica_fetch_wait_max_ms: u64,
    /// How often the broker tells the controller it is alive (Kafka's
    /// `broker.heartbeat.interval.ms`, default 2,000).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker silent for this long is fenced by the controller: its
    /// partitions get new leaders (Kafka's `broker.session.timeout.ms`,
    /// default 9,000). Must exceed `broker_heartbeat_interval_ms`.
    pub broker_session_timeout_ms: u64,
    /// Partitions of `__consumer_offsets`, fixed when the first group makes
    /// a broker create it (Kafka's `offsets.topic.num.partitions`, default 50).
    pub offsets_topic_num_partitions: u32,
    /// Replicas of each `__consumer_offsets` partition, capped by the live
    /// brokers at creation (Kafka's `offsets.topic.replication.factor`,
    /// default 3).
    pub offsets_topic_replication_factor: u16,
    /// Segment size of `__consumer_offsets` (Kafka's
    /// `offsets.topic.segment.bytes`, default 104,857,600).
    pub offsets_topic_segment_bytes: u64,
    /// Longest a commit (or any group change) waits to be replicated before
    /// it fails with `RequestTimedOut` (Kafka's `offsets.commit.timeout.ms`,
    /// default 5,000).
    pub offsets_commit_timeout_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            log_retention_check_interval_ms: 300_000,
            log_cleaner_backoff_ms: 15_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_commit_timeout_ms: 5_000,
        }
    }
}

impl BrokerConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        for (field, ms) in [
            (
                "log_retention_check_interval_ms",
                self.log_retention_check_interval_ms,
            ),
            ("log_cleaner_backoff_ms", self.log_cleaner_backoff_ms),
            ("replica_lag_time_max_ms", self.replica_lag_time_max_ms),
            ("replica_fetch_wait_max_ms", self.replica_fetch_wait_max_ms),
            (
                "broker_heartbeat_interval_ms",
                self.broker_heartbeat_interval_ms,
            ),
            ("broker_session_timeout_ms", self.broker_session_timeout_ms),
            ("offsets_commit_timeout_ms", self.offsets_commit_timeout_ms),
        ] {
            crate::time::at_most_max_ms(field, ms)?;
            if ms == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        if self.offsets_topic_num_partitions == 0
            || self.offsets_topic_num_partitions > crate::MAX_PARTITIONS_PER_TOPIC
        {
            return Err(Error::config(
                "offsets_topic_num_partitions",
                format!("must be within 1..={}", crate::MAX_PARTITIONS_PER_TOPIC),
            ));
        }
        if self.offsets_topic_replication_factor == 0 {
            return Err(Error::config(
                "offsets_topic_replication_factor",
                "must be at least 1",
            ));
        }
        crate::storage::LogConfig {
            segment_bytes: self.offsets_topic_segment_bytes,
            ..crate::storage::LogConfig::default()
        }
        .validate()
        .map_err(|_| {
            Error::config(
                "offsets_topic_segment_bytes",
                format!(
                    "{} is outside 1024..={}",
                    self.offsets_topic_segment_bytes,
                    i32::MAX
                ),
            )
        })?;
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms {
            return Err(Error::config(
                "broker_session_timeout_ms",
                format!(
                    "must exceed broker_heartbeat_interval_ms ({})",
                    self.broker_heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Records a follower removed from its log when it truncated to its
/// leader's: with clean elections these were never committed; after an
/// unclean election they may have been acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The broker whose replica was truncated.
    pub broker: NodeId,
    /// The partition.
    pub partition: TopicPartition,
    /// The removed offsets, `start..end`.
    pub removed: std::ops::Range<u64>,
}

/// One broker of a cluster, with its runtime and fetcher threads.
#[derive(Debug)]
pub(crate) struct Broker {
    shared: Arc<BrokerShared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct RuntimeState {
    stop: bool,
    kicks: u64,
}

struct BrokerShared {
    id: NodeId,
    config: BrokerConfig,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    transport: Arc<dyn Transport>,
    metadata: RwLock<Arc<ClusterMetadata>>,
    partitions: RwLock<HashMap<TopicPartition, Arc<Partition>>>,
    /// Serializes metadata changes (which open and close logs).
    apply_lock: Mutex<()>,
    fetches: Mutex<Purgatory<PendingFetch>>,
    produces: Mutex<Purgatory<PendingProduce>>,
    runtime: Mutex<RuntimeState>,
    runtime_wake: Condvar,
    fetcher: fetcher::FetcherHandle,
    /// Set first by shutdown and crash: requests are refused from then on.
    shutting_down: AtomicBool,
    truncations: Mutex<Vec<Truncation>>,
    /// The coordinator of the groups whose `__consumer_offsets` partition
    /// this broker leads. Lock order: `groups` before a partition's state.
    groups: Mutex<GroupCoordinator>,
    group_waits: Mutex<Purgatory<PendingGroup>>,
    /// Heartbeats held until their group changes, by the group's
    /// `__consumer_offsets` partition.
    held_heartbeats: Mutex<Purgatory<HeldHeartbeat>>,
    /// Counts group writes, so a heartbeat about to be held can tell it
    /// missed one.
    group_writes: AtomicU64,
    /// When this broker last asked for `__consumer_offsets` to be created.
    offsets_topic_requested: Mutex<Option<Millis>>,
}

impl std::fmt::Debug for BrokerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.id)
            .field("partitions", &self.partitions.read().len())
            .finish()
    }
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
struct Partition {
    tp: TopicPartition,
    /// The id of the topic incarnation this log belongs to.
    topic_id: u64,
    /// Whether the log's `cleanup_policy` compacts (it is opened with it).
    compacted: bool,
    state: Mutex<PartitionState>,
    /// Bumped on every append, high watermark move and role change, so a
    /// request about to park can tell it missed one.
    changes: AtomicU64,
}

#[derive(Debug)]
struct PartitionState {
    /// `None` once the partition was removed (topic deleted).
    log: Option<Box<dyn PartitionLog>>,
    replicas: ReplicaSet,
    /// Idempotent producers' last batches, kept by leaders and followers.
    producers: ProducerStateTable,
}

impl Partition {
    fn changed(&self) {
        self.changes.fetch_add(1, Ordering::AcqRel);
    }
}

impl PartitionState {
    fn log(&mut self) -> Result<&mut Box<dyn PartitionLog>> {
        let topic = self.replicas.partition().topic();
        self.log
            .as_mut()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: topic.to_string(),
            })
    }

    /// Reads every batch header of the log again (after opening or
    /// truncating it) to know the producers' last batches.
    fn rebuild_producers(&mut self) -> Result<()> {
        self.producers.clear();
        let Some(log) = self.log.as_ref() else {
            return Ok(());
        };
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let records = log.read(offset, 1 << 20)?;
            let before = offset;
            for batch in records.batches() {
                let batch = batch?;
                if batch.next_offset() > offset {
                    self.producers.record(&batch);
                    offset = batch.next_offset();
                }
            }
            if offset == before {
                break;
            }
        }
        Ok(())
    }

    /// Applies a replica-set update to the log; returns whether the HW moved.
    fn apply(&mut self, update: &Update) -> bool {
        match (update.high_watermark, self.log.as_mut()) {
            (Some(hw), Some(log)) => {
                log.set_high_watermark(hw);
                true
            }
            _ => false,
        }
    }
}

impl Broker {
    /// Starts broker `id`: registers it with `transport` and starts its
    /// runtime and fetcher threads. It knows no topics until the controller
    /// publishes metadata to it.
    pub(crate) fn start(
        id: NodeId,
        config: BrokerConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        assignors: Vec<Arc<dyn Assignor>>,
    ) -> Result<Self> {
        config.validate()?;
        let shared = Arc::new(BrokerShared {
            id,
            config,
            storage,
            clock,
            transport: transport.clone(),
            metadata: RwLock::new(Arc::new(ClusterMetadata::default())),
            partitions: RwLock::new(HashMap::new()),
            apply_lock: Mutex::new(()),
            fetches: Mutex::new(Purgatory::default()),
            produces: Mutex::new(Purgatory::default()),
            runtime: Mutex::new(RuntimeState::default()),
            runtime_wake: Condvar::new(),
            fetcher: fetcher::FetcherHandle::default(),
            shutting_down: AtomicBool::new(false),
            truncations: Mutex::new(Vec::new()),
            groups: Mutex::new(GroupCoordinator::new(id, assignors)),
            group_waits: Mutex::new(Purgatory::default()),
            held_heartbeats: Mutex::new(Purgatory::default()),
            group_writes: AtomicU64::new(0),
            offsets_topic_requested: Mutex::new(None),
        });
        transport.register(id, shared.clone())?;
        let spawn = |name: String, f: fn(&BrokerShared)| {
            let runner = shared.clone();
            std::thread::Builder::new()
                .name(name)
                .spawn(move || f(&runner))
                .map_err(|e| Error::io("spawning a broker thread", e))
        };
        let threads = vec![
            spawn(format!("ferrolog-broker-{id}"), BrokerShared::run)?,
            spawn(format!("ferrolog-fetcher-{id}"), fetcher::run)?,
        ];
        shared.send_heartbeat();
        Ok(Self {
            shared,
            threads: Mutex::new(threads),
        })
    }

    /// What followers on this broker truncated so far.
    pub(crate) fn truncations(&self) -> Vec<Truncation> {
        self.shared.truncations.lock().clone()
    }

    /// Stops taking requests and stops the threads. Parked requests are
    /// answered with what there is (graceful) or dropped (a crash, which the
    /// senders see as network errors).
    fn stop(&self, graceful: bool) {
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::Release);
        shared.transport.deregister(shared.id);
        drop(shared.apply_lock.lock());
        {
            let mut runtime = shared.runtime.lock();
            runtime.stop = true;
            shared.runtime_wake.notify_all();
        }
        shared.fetcher.stop();
        for handle in self.threads.lock().drain(..) {
            let _ = handle.join();
        }
        let fetches = shared.fetches.lock().drain();
        let produces = shared.produces.lock().drain();
        let group_waits = shared.group_waits.lock().drain();
        for held in shared.held_heartbeats.lock().drain() {
            held.reply.send(Err(Error::NotCoordinator {
                group: held.request.group,
                node: shared.id,
            }));
        }
        if graceful {
            let now = shared.clock.now_ms();
            for wait in group_waits {
                let _ = shared.finish_group(wait, now, true);
            }
            for fetch in fetches {
                let (response, _, _) = shared.read_fetch(&fetch.request);
                fetch.reply.send(Ok(Response::Fetch(response)));
            }
            let now = shared.clock.now_ms();
            for produce in produces {
                shared.finish_produce(produce, now, true);
            }
        }
    }

    /// Graceful shutdown: stops taking requests, answers parked requests,
    /// stops the threads, then flushes and closes every log. The first error
    /// is returned after everything was tried. Calling it again does nothing.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.stop(true);
        let partitions: Vec<Arc<Partition>> = self
            .shared
            .partitions
            .write()
            .drain()
            .map(|(_, p)| p)
            .collect();
        let mut first_error = None;
        for partition in partitions {
            let log = partition.state.lock().log.take();
            if let Some(Err(e)) = log.map(|log| log.close()) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// A crash: stops at once; logs are dropped without being flushed or
    /// closed, so the next start recovers them.
    pub(crate) fn crash(&self) {
        self.stop(false);
        let partitions: Vec<Arc<Partition>> = self
            .shared
            .partitions
            .write()
            .drain()
            .map(|(_, p)| p)
            .collect();
        for partition in partitions {
            drop(partition.state.lock().log.take());
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl RequestHandler for BrokerShared {
    fn handle(&self, _from: Peer, request: Request, reply: Reply) {
        if self.shutting_down.load(Ordering::Acquire) {
            reply.send(Err(self.shutting_down_error()));
            return;
        }
        match request {
            Request::Produce(request) => self.produce(request, reply),
            Request::Fetch(request) => {
                // +1: the clock counts whole milliseconds, and a fetch must
                // never be answered before its full wait.
                let deadline = self.clock.now_ms() + Millis::from(request.max_wait_ms) + 1;
                self.try_fetch(PendingFetch {
                    request,
                    reply,
                    deadline,
                })
            }
            Request::ListOffsets(request) => {
                reply.send(Ok(Response::ListOffsets(self.list_offsets(request))))
            }
            Request::Metadata(request) => {
                reply.send(Ok(Response::Metadata(self.describe(request))))
            }
            Request::UpdateMetadata(UpdateMetadataRequest { metadata }) => reply.send(
                self.apply_metadata(metadata)
                    .map(|()| Response::UpdateMetadata),
            ),
            Request::CreateTopics(_)
            | Request::DeleteTopics(_)
            | Request::CreatePartitions(_)
            | Request::BrokerHeartbeat(_)
            | Request::AlterPartition(_)
            | Request::InitProducerId
            | Request::AlterPartitionReassignments(_)
            | Request::RegisterBroker(_) => {
                reply.send(Err(Error::NotController { broker: self.id }))
            }
            Request::FindCoordinator(group) => {
                reply.send(self.find_coordinator(&group).map(Response::FindCoordinator))
            }
            Request::GroupHeartbeat(request) => self.group_heartbeat(request, reply, None),
            Request::OffsetCommit(request) => {
                let group = request.group.clone();
                self.coordinate(
                    &group,
                    reply,
                    |c, p, _, now| c.commit(p, request, now),
                    |()| Response::OffsetCommit,
                );
            }
            Request::OffsetFetch(request) => {
                let group = request.group.clone();
                self.coordinate(
                    &group,
                    reply,
                    |c, p, _, _| c.fetch_offsets(p, &request),
                    Response::OffsetFetch,
                );
            }
            Request::ListGroups => reply.send(Ok(Response::ListGroups(self.groups.lock().list()))),
            Request::DescribeGroup(group) => {
                self.coordinate(
                    &group.clone(),
                    reply,
                    |c, p, _, _| c.describe(p, &group),
                    Response::DescribeGroup,
                );
            }
        }
    }
}

impl BrokerShared {
    fn shutting_down_error(&self) -> Error {
        Error::Network {
            node: self.id,
            reason: "the broker is shutting down".into(),
        }
    }

    fn controller(&self) -> NodeId {
        self.metadata.read().controller.unwrap_or(CONTROLLER_ID)
    }

    // ----- produce -------------------------------------------------------

    fn produce(&self, request: ProduceRequest, reply: Reply) {
        let now = self.clock.now_ms();
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut waiting = Vec::new();
        let mut moved = Vec::with_capacity(request.partitions.len());
        let mut proposals = Vec::new();
        for (i, ProducePartition { partition, batch }) in request.partitions.into_iter().enumerate()
        {
            let result = self.append(&partition, batch, request.acks, &mut proposals);
            let result = result.map(|(ack, required, epoch)| {
                if request.acks == Acks::All {
                    waiting.push((i, required, epoch));
                }
                moved.push(partition.clone());
                ack
            });
            results.push(ProducedPartition { partition, result });
        }
        self.send_proposals(proposals);
        let produce = PendingProduce {
            reply,
            results,
            waiting,
            deadline: now + Millis::from(request.timeout_ms),
        };
        self.settle_produce(produce);
        for tp in &moved {
            self.partition_moved(tp);
        }
    }

    /// Appends as the leader. Returns the ack, the offset the HW must reach
    /// for the batch to be committed, and the leader epoch it was written in.
    fn append(
        &self,
        tp: &TopicPartition,
        batch: RecordBatch,
        acks: Acks,
        proposals: &mut Vec<IsrProposal>,
    ) -> Result<(ProduceAck, u64, i32)> {
        if batch.is_control() {
            return Err(Error::InvalidRecord {
                reason: "clients cannot write control batches".into(),
            });
        }
        if tp.topic().starts_with(INTERNAL_TOPIC_PREFIX) {
            return Err(Error::InvalidTopic {
                name: tp.topic().to_string(),
                reason: "internal topics are written by the brokers only",
            });
        }
        let partition = self.leader_partition(tp)?;
        let mut state = partition.state.lock();
        if acks == Acks::All {
            state.replicas.check_acks_all()?;
        }
        let epoch = state.replicas.leader_epoch();
        let ids = ProducerIds::of(&batch);
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = state.producers.check(tp, &batch)?
        {
            // A retry of a batch already written: its offsets, nothing new.
            let start = state.log()?.log_start_offset();
            return Ok((
                ProduceAck {
                    base_offset,
                    log_start_offset: start,
                },
                last_offset + 1,
                epoch,
            ));
        }
        let log = state.log()?;
        let info = log.append(batch, epoch)?;
        let end = log.log_end_offset();
        let start = log.log_start_offset();
        state
            .producers
            .record_at(ids, info.base_offset, info.last_offset);
        let update = state.replicas.on_append(end);
        state.apply(&update);
        proposals.extend(update.proposal);
        partition.changed();
        Ok((
            ProduceAck {
                base_offset: info.base_offset,
                log_start_offset: start,
            },
            info.last_offset + 1,
            epoch,
        ))
    }

    /// Answers a produce whose partitions all settled, or parks it.
    fn settle_produce(&self, produce: PendingProduce) {
        let mut produce = produce;
        loop {
            let seen = self.change_counts(
                produce
                    .waiting
                    .iter()
                    .map(|&(i, _, _)| &produce.results[i].partition),
            );
            let now = self.clock.now_ms();
            produce = match self.finish_produce(produce, now, false) {
                None => return,
                Some(p) => p,
            };
            produce = match self.park_unless_moved(&self.produces, produce, &seen) {
                None => return,
                Some(p) => p,
            };
        }
    }

    /// Parks `waiter` unless a partition it watches changed since `seen`
    /// (counted before it was last looked at); then it is handed back to be
    /// looked at again, so no change between the look and the park is missed.
    fn park_unless_moved<T: Waiter>(
        &self,
        purgatory: &Mutex<Purgatory<T>>,
        waiter: T,
        seen: &[(Arc<Partition>, u64)],
    ) -> Option<T> {
        let mut parked = purgatory.lock();
        if moved_since(seen) {
            return Some(waiter);
        }
        parked.park_waiter(waiter);
        drop(parked);
        self.kick_runtime();
        None
    }

    /// Settles what can be: a partition whose HW reached the batch is done,
    /// one that lost leadership fails with `NotLeaderOrFollower`, one whose ISR
    /// fell below `min_insync_replicas` with `NotEnoughReplicasAfterAppend`,
    /// and at the deadline (or with `force`) the rest with `RequestTimedOut`.
    /// Replies and returns `None` once nothing waits.
    fn finish_produce(
        &self,
        mut produce: PendingProduce,
        now: Millis,
        force: bool,
    ) -> Option<PendingProduce> {
        let timed_out = force || now >= produce.deadline;
        let results = &mut produce.results;
        produce.waiting.retain(|&(i, required, epoch)| {
            let tp = &results[i].partition;
            let outcome = self.partitions.read().get(tp).cloned().map(|p| {
                let state = p.state.lock();
                let r = &state.replicas;
                if !r.is_leader() || r.leader_epoch() != epoch {
                    Some(Err(Error::NotLeaderOrFollower {
                        broker: self.id,
                        partition: tp.clone(),
                    }))
                } else if r.high_watermark() >= required {
                    Some(Ok(()))
                } else if r.check_acks_all().is_err() {
                    Some(Err(Error::NotEnoughReplicasAfterAppend {
                        partition: tp.clone(),
                    }))
                } else {
                    None
                }
            });
            let outcome = outcome.unwrap_or_else(|| {
                Some(Err(Error::NotLeaderOrFollower {
                    broker: self.id,
                    partition: tp.clone(),
                }))
            });
            match outcome {
                Some(Ok(())) => false,
                Some(Err(e)) => {
                    results[i].result = Err(e);
                    false
                }
                None if timed_out => {
                    results[i].result = Err(Error::RequestTimedOut {
                        operation: "replication of an acks=all produce",
                        timeout_ms: 0,
                    });
                    false
                }
                None => true,
            }
        });
        if produce.waiting.is_empty() {
            produce.reply.send(Ok(Response::Produce(ProduceResponse {
                partitions: produce.results,
            })));
            return None;
        }
        Some(produce)
    }

    // ----- fetch ---------------------------------------------------------

    /// Answers a fetch that has enough data, failed, or is due; parks the
    /// rest.
    fn try_fetch(&self, mut fetch: PendingFetch) {
        loop {
            let mut proposals = Vec::new();
            let (response, bytes, seen) = self.read_fetch_with(&fetch.request, &mut proposals);
            self.send_proposals(proposals);
            let failed = response.partitions.iter().any(|p| {
                p.result
                    .as_ref()
                    .map_or(true, |d| d.diverging_epoch.is_some())
            });
            let due = self.clock.now_ms() >= fetch.deadline;
            if fetch.request.max_wait_ms == 0
                || bytes >= u64::from(fetch.request.min_bytes)
                || failed
                || due
                || self.shutting_down.load(Ordering::Acquire)
            {
                fetch.reply.send(Ok(Response::Fetch(response)));
                return;
            }
            fetch = match self.park_unless_moved(&self.fetches, fetch, &seen) {
                None => return,
                Some(f) => f,
            };
        }
    }

    fn read_fetch(
        &self,
        request: &FetchRequest,
    ) -> (FetchResponse, u64, Vec<(Arc<Partition>, u64)>) {
        let mut proposals = Vec::new();
        let out = self.read_fetch_with(request, &mut proposals);
        self.send_proposals(proposals);
        out
    }

    /// Reads every partition of `request`: the response, its size in bytes,
    /// and each partition's change count before the read.
    fn read_fetch_with(
        &self,
        request: &FetchRequest,
        proposals: &mut Vec<IsrProposal>,
    ) -> (FetchResponse, u64, Vec<(Arc<Partition>, u64)>) {
        let mut budget = request.max_bytes as usize;
        let mut total = 0u64;
        let mut seen = Vec::with_capacity(request.partitions.len());
        let mut moved = Vec::new();
        let partitions = request
            .partitions
            .iter()
            .map(|fp| {
                let result = self.read_partition(
                    fp,
                    request.replica,
                    budget,
                    &mut seen,
                    proposals,
                    &mut moved,
                );
                if let Ok(data) = &result {
                    budget = budget.saturating_sub(data.records.size());
                    total += data.records.size() as u64;
                }
                FetchedPartition {
                    partition: fp.partition.clone(),
                    result,
                }
            })
            .collect();
        for tp in moved {
            self.partition_moved(&tp);
        }
        (FetchResponse { partitions }, total, seen)
    }

    fn read_partition(
        &self,
        fp: &FetchPartition,
        replica: Option<NodeId>,
        budget: usize,
        seen: &mut Vec<(Arc<Partition>, u64)>,
        proposals: &mut Vec<IsrProposal>,
        moved: &mut Vec<TopicPartition>,
    ) -> Result<FetchedData> {
        let partition = self.leader_partition(&fp.partition)?;
        seen.push((partition.clone(), partition.changes.load(Ordering::Acquire)));
        let mut state = partition.state.lock();
        let epoch = state.replicas.leader_epoch();
        match fp.current_leader_epoch {
            Some(e) if e < epoch => {
                return Err(Error::FencedLeaderEpoch {
                    epoch: e,
                    latest: epoch,
                });
            }
            Some(e) if e > epoch => {
                return Err(Error::NotLeaderOrFollower {
                    broker: self.id,
                    partition: fp.partition.clone(),
                });
            }
            _ => {}
        }
        let log = state.log()?;
        let log_start_offset = log.log_start_offset();
        let end = log.log_end_offset();
        if let (Some(_), Some(last)) = (replica, fp.last_fetched_epoch) {
            let diverging = match log.end_offset_for_epoch(last) {
                Some((e, end_offset)) if e == last && end_offset >= fp.fetch_offset => None,
                Some(found) => Some(found),
                None => Some((-1, log_start_offset)),
            };
            if diverging.is_some() {
                let high_watermark = log.high_watermark();
                return Ok(FetchedData {
                    high_watermark,
                    log_start_offset,
                    records: Records::empty(),
                    diverging_epoch: diverging,
                });
            }
        }
        if fp.fetch_offset < log_start_offset || fp.fetch_offset > end {
            return Err(Error::OffsetOutOfRange {
                offset: fp.fetch_offset,
                log_start_offset,
                log_end_offset: end,
            });
        }
        if let Some(follower) = replica {
            let now = self.clock.now_ms();
            let update = state
                .replicas
                .on_follower_fetch(follower, fp.fetch_offset, end, now);
            if state.apply(&update) {
                partition.changed();
                moved.push(fp.partition.clone());
            }
            proposals.extend(update.proposal);
        }
        let log = state.log()?;
        let high_watermark = log.high_watermark();
        // Followers copy everything; consumers see only what is committed.
        let visible = if replica.is_some() {
            end
        } else {
            high_watermark
        };
        let max_bytes = (fp.max_bytes as usize).min(budget);
        let records = if fp.fetch_offset >= visible || max_bytes == 0 {
            Records::empty()
        } else {
            let mut records = log.read(fp.fetch_offset, max_bytes)?;
            records.truncate_at_offset(visible);
            records
        };
        Ok(FetchedData {
            high_watermark,
            log_start_offset,
            records,
            diverging_epoch: None,
        })
    }

    /// The change counts of `partitions` now.
    fn change_counts<'a>(
        &self,
        partitions: impl Iterator<Item = &'a TopicPartition>,
    ) -> Vec<(Arc<Partition>, u64)> {
        let hosted = self.partitions.read();
        partitions
            .filter_map(|tp| hosted.get(tp))
            .map(|p| (p.clone(), p.changes.load(Ordering::Acquire)))
            .collect()
    }

    /// Something happened to `tp`: parked requests watching it look again.
    fn partition_moved(&self, tp: &TopicPartition) {
        let fetches = self.fetches.lock().take_watching(tp);
        for fetch in fetches {
            self.try_fetch(fetch);
        }
        let produces = self.produces.lock().take_watching(tp);
        for produce in produces {
            self.settle_produce(produce);
        }
        let waits = self.group_waits.lock().take_watching(tp);
        for wait in waits {
            self.settle_group(wait);
        }
    }

    // ----- ISR changes -----------------------------------------------------

    /// Sends ISR proposals to the controller; the answers update the replica
    /// sets (the controller also publishes the change as metadata).
    fn send_proposals(&self, proposals: Vec<IsrProposal>) {
        if proposals.is_empty() {
            return;
        }
        let controller = self.controller();
        for proposal in proposals {
            let tp = proposal.partition.clone();
            let weak = self.partitions.read().get(&tp).map(Arc::downgrade);
            let Some(weak) = weak else { continue };
            let request = Request::AlterPartition(AlterPartitionRequest {
                broker: self.id,
                proposal,
            });
            self.transport.send(
                Peer::Broker(self.id),
                controller,
                request,
                Reply::new(controller, move |response| {
                    let Some(partition) = weak.upgrade() else {
                        return;
                    };
                    let mut state = partition.state.lock();
                    let end = state.log.as_ref().map_or(0, |l| l.log_end_offset());
                    match response {
                        Ok(Response::AlterPartition(Ok((isr, epoch)))) => {
                            let update = state.replicas.isr_committed(isr, epoch, end);
                            if state.apply(&update) {
                                partition.changed();
                            }
                        }
                        _ => state.replicas.isr_refused(),
                    }
                    // Waiters are looked at again by the runtime's next tick.
                }),
            );
        }
        self.kick_runtime();
    }

    // ----- offsets and metadata -----------------------------------------

    fn list_offsets(&self, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let partitions = request
            .partitions
            .into_iter()
            .map(|(partition, spec)| {
                let result = self.lookup_offset(&partition, spec);
                ListedOffset { partition, result }
            })
            .collect();
        ListOffsetsResponse { partitions }
    }

    fn lookup_offset(
        &self,
        tp: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<Option<OffsetAndTimestamp>> {
        let partition = self.leader_partition(tp)?;
        let mut state = partition.state.lock();
        let log = state.log()?;
        let at = |offset| {
            Some(OffsetAndTimestamp {
                offset,
                timestamp: None,
            })
        };
        Ok(match spec {
            OffsetSpec::Earliest => at(log.log_start_offset()),
            OffsetSpec::Latest => at(log.high_watermark()),
            OffsetSpec::Timestamp(ts) => log
                .offset_for_timestamp(ts)?
                .filter(|found| found.offset < log.high_watermark())
                .map(|found| OffsetAndTimestamp {
                    offset: found.offset,
                    timestamp: Some(found.timestamp),
                }),
        })
    }

    fn describe(&self, request: MetadataRequest) -> MetadataResponse {
        let metadata = self.metadata.read().clone();
        let topics = match request.topics {
            None => metadata.topics.values().map(|t| (**t).clone()).collect(),
            Some(names) => names
                .iter()
                .filter_map(|name| metadata.topics.get(name.as_str()))
                .map(|t| (**t).clone())
                .collect(),
        };
        MetadataResponse {
            version: metadata.version,
            controller: metadata.controller,
            brokers: metadata.brokers.clone(),
            topics,
        }
    }

    /// The hosted partition `tp` if this broker leads it, else the error a
    /// client should see: unknown topic, no such partition, or not the leader.
    fn leader_partition(&self, tp: &TopicPartition) -> Result<Arc<Partition>> {
        if let Some(p) = self.partitions.read().get(tp)
            && p.state.lock().replicas.is_leader()
        {
            return Ok(p.clone());
        }
        let metadata = self.metadata.read().clone();
        match metadata.topics.get(tp.topic()) {
            None => Err(Error::UnknownTopicOrPartition {
                topic: tp.topic().to_string(),
            }),
            Some(topic) if tp.partition() as usize >= topic.partitions.len() => {
                Err(Error::InvalidPartition {
                    topic: tp.topic().to_string(),
                    partition: tp.partition(),
                    partition_count: topic.partitions.len() as u32,
                })
            }
            Some(_) => Err(Error::NotLeaderOrFollower {
                broker: self.id,
                partition: tp.clone(),
            }),
        }
    }

    // ----- metadata changes ----------------------------------------------

    /// Makes the hosted partitions match `metadata`: opens the logs of new
    /// replicas, closes and removes the logs of deleted topics (and of a
    /// topic deleted and created again under the same name, told apart by its
    /// id), and gives each replica its role: leader, or follower of whom. A
    /// log that fails to open or remove is skipped and reported; the rest of
    /// the change still applies, and the next metadata retries it.
    fn apply_metadata(&self, metadata: Arc<ClusterMetadata>) -> Result<()> {
        let (moved, result) = {
            let _serial = self.apply_lock.lock();
            self.apply_metadata_serially(metadata)
        };
        // Outside the lock: waking waiters may send ISR changes to the
        // controller, whose answer may be more metadata for this broker.
        for tp in &moved {
            self.partition_moved(tp);
        }
        self.fetcher.wake();
        result
    }

    fn apply_metadata_serially(
        &self,
        metadata: Arc<ClusterMetadata>,
    ) -> (Vec<TopicPartition>, Result<()>) {
        if self.shutting_down.load(Ordering::Acquire) {
            return (Vec::new(), Err(self.shutting_down_error()));
        }
        let first = {
            let current = self.metadata.read();
            if (metadata.controller_epoch, metadata.version)
                <= (current.controller_epoch, current.version)
            {
                return (Vec::new(), Ok(()));
            }
            current.version == 0
        };
        let mut wanted = HashMap::new();
        for topic in metadata.topics.values() {
            for p in &topic.partitions {
                if p.replicas.contains(&self.id) {
                    let tp = TopicPartition::from_shared(topic.name.clone(), p.partition);
                    wanted.insert(tp, (p, topic));
                }
            }
        }
        let hosted: HashMap<TopicPartition, Arc<Partition>> = self.partitions.read().clone();
        let is_current = |tp: &TopicPartition, topic_id: u64| {
            wanted.get(tp).is_some_and(|(_, t)| t.id == topic_id)
        };
        let mut first_error = None;
        let mut moved = Vec::new();
        // Replaced incarnations go first, so their files are gone before the
        // new topic's log is opened at the same place.
        let stale: Vec<TopicPartition> = hosted
            .iter()
            .filter(|(tp, p)| !is_current(tp, p.topic_id))
            .map(|(tp, _)| tp.clone())
            .collect();
        let removed: Vec<Arc<Partition>> = {
            let mut partitions = self.partitions.write();
            stale
                .iter()
                .filter_map(|tp| partitions.remove(tp))
                .collect()
        };
        for partition in removed {
            let log = partition.state.lock().log.take();
            partition.changed();
            moved.push(partition.tp.clone());
            let closed = log.map_or(Ok(()), |log| log.close());
            if let Err(e) = closed.and_then(|()| self.storage.remove(&partition.tp, self.id)) {
                first_error.get_or_insert(e);
            }
        }
        let now = self.clock.now_ms();
        let mut opened = Vec::new();
        for (tp, (p, topic)) in &wanted {
            if let Some(existing) = hosted.get(tp).filter(|e| e.topic_id == topic.id) {
                if self.assign_role(existing, p, now) {
                    moved.push(tp.clone());
                }
                continue;
            }
            match self.storage.open(tp, self.id, &topic.config) {
                Ok(log) => {
                    let replicas = ReplicaSet::new(
                        tp.clone(),
                        self.id,
                        p.replicas.clone(),
                        usize::from(topic.config.min_insync_replicas),
                        self.config.replica_lag_time_max_ms as Millis,
                        log.high_watermark(),
                    );
                    let mut state = PartitionState {
                        log: Some(log),
                        replicas,
                        producers: ProducerStateTable::new(),
                    };
                    if let Err(e) = state.rebuild_producers() {
                        first_error.get_or_insert(e);
                    }
                    let partition = Arc::new(Partition {
                        tp: tp.clone(),
                        topic_id: topic.id,
                        compacted: topic.config.cleanup_policy.compacts(),
                        state: Mutex::new(state),
                        changes: AtomicU64::new(0),
                    });
                    self.assign_role(&partition, p, now);
                    opened.push(partition);
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        {
            let mut partitions = self.partitions.write();
            for p in opened {
                partitions.insert(p.tp.clone(), p);
            }
            *self.metadata.write() = metadata.clone();
        }
        // A log left behind by a deletion that a crash interrupted. Only
        // trusted when the metadata has history: a lost metadata log must not
        // make the broker delete data it merely cannot name.
        if first && metadata.version > 2 {
            match self.storage.partitions(self.id) {
                Ok(on_disk) => {
                    for tp in on_disk {
                        if !tp.topic().starts_with(INTERNAL_TOPIC_PREFIX)
                            && !wanted.contains_key(&tp)
                            && let Err(e) = self.storage.remove(&tp, self.id)
                        {
                            first_error.get_or_insert(e);
                        }
                    }
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        (moved, first_error.map_or(Ok(()), Err))
    }

    /// Gives a replica the role `p` says. Returns whether anything changed.
    fn assign_role(&self, partition: &Partition, p: &PartitionMetadata, now: Millis) -> bool {
        let mut state = partition.state.lock();
        let r = &state.replicas;
        let lead = p.leader == Some(self.id);
        let new_epoch = p.leader_epoch > r.leader_epoch() || (lead != r.is_leader());
        if !new_epoch && p.partition_epoch <= r.partition_epoch() {
            return false;
        }
        let end = state.log.as_ref().map_or(0, |l| l.log_end_offset());
        if new_epoch && lead {
            let update = state.replicas.become_leader(
                p.leader_epoch,
                p.partition_epoch,
                p.replicas.clone(),
                p.isr.clone(),
                end,
                now,
            );
            state.apply(&update);
        } else if new_epoch {
            state.replicas.become_follower(
                p.leader,
                p.leader_epoch,
                p.partition_epoch,
                p.replicas.clone(),
                p.isr.clone(),
            );
        } else {
            state.replicas.reassigned(p.replicas.clone());
            let update = state
                .replicas
                .isr_committed(p.isr.clone(), p.partition_epoch, end);
            state.apply(&update);
        }
        partition.changed();
        true
    }

    // ----- runtime -------------------------------------------------------

    fn kick_runtime(&self) {
        let mut runtime = self.runtime.lock();
        runtime.kicks += 1;
        self.runtime_wake.notify_one();
    }

    fn send_heartbeat(&self) {
        let version = {
            let m = self.metadata.read();
            (m.controller_epoch, m.version)
        };
        let controller = self.controller();
        self.transport.send(
            Peer::Broker(self.id),
            controller,
            Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                broker: self.id,
                metadata_version: version,
            }),
            Reply::ignored(controller),
        );
    }

    /// The runtime thread: heartbeats, ISR checks, deadlines of parked
    /// requests, log maintenance.
    fn run(&self) {
        let retention_every = self.config.log_retention_check_interval_ms as Millis;
        let clean_every = self.config.log_cleaner_backoff_ms as Millis;
        let heartbeat_every = self.config.broker_heartbeat_interval_ms as Millis;
        let isr_every = (self.config.replica_lag_time_max_ms as Millis / 4).max(1);
        let start = self.clock.now_ms();
        let (mut next_retention, mut next_heartbeat, mut next_isr) = (
            start + retention_every,
            start + heartbeat_every,
            start + isr_every,
        );
        let mut next_clean = start + clean_every;
        loop {
            let kicks = {
                let runtime = self.runtime.lock();
                if runtime.stop {
                    return;
                }
                runtime.kicks
            };
            let now = self.clock.now_ms();
            let expired = self.fetches.lock().expire(now);
            for fetch in expired {
                self.try_fetch(fetch);
            }
            let expired = self.produces.lock().expire(now);
            for produce in expired {
                self.settle_produce(produce);
            }
            let expired = self.group_waits.lock().expire(now);
            for wait in expired {
                self.settle_group(wait);
            }
            let due = self.held_heartbeats.lock().expire(now);
            for held in due {
                // Answered now: `held_until` is past.
                self.group_heartbeat(held.request, held.reply, Some(now));
            }
            if self.next_group_deadline().is_some_and(|at| now >= at) {
                self.tick_groups(now);
            }
            if now >= next_heartbeat {
                self.send_heartbeat();
                next_heartbeat = now + heartbeat_every;
            }
            if now >= next_isr {
                self.check_isr(now);
                next_isr = now + isr_every;
            }
            if now >= next_retention {
                self.maintain_logs();
                next_retention = now + retention_every;
            }
            if now >= next_clean {
                self.compact_logs();
                next_clean = self.clock.now_ms() + clean_every;
            }
            let next = [
                self.fetches.lock().next_deadline(),
                self.produces.lock().next_deadline(),
                self.group_waits.lock().next_deadline(),
                self.held_heartbeats.lock().next_deadline(),
                self.next_group_deadline(),
                Some(next_heartbeat),
                Some(next_isr),
                Some(next_retention),
                Some(next_clean),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Millis::MAX);
            let sleep = next
                .saturating_sub(self.clock.now_ms())
                .min(MAX_RUNTIME_SLEEP_MS);
            let mut runtime = self.runtime.lock();
            if !runtime.stop && runtime.kicks == kicks && sleep > 0 {
                self.runtime_wake
                    .wait_for(&mut runtime, Duration::from_millis(sleep as u64));
            }
        }
    }

    /// Lets every led partition propose dropping lagging followers, and
    /// re-evaluates waiters of partitions whose ISR changed.
    fn check_isr(&self, now: Millis) {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        let mut proposals = Vec::new();
        let mut moved = Vec::new();
        for partition in partitions {
            let mut state = partition.state.lock();
            if !state.replicas.is_leader() {
                continue;
            }
            proposals.extend(state.replicas.tick(now));
            let end = state.log.as_ref().map_or(0, |l| l.log_end_offset());
            let update = state.replicas.on_append(end);
            if state.apply(&update) {
                partition.changed();
            }
            moved.push(partition.tp.clone());
        }
        self.send_proposals(proposals);
        for tp in &moved {
            if self.produces.lock().len() > 0
                || self.fetches.lock().len() > 0
                || self.group_waits.lock().len() > 0
            {
                self.partition_moved(tp);
            }
        }
    }

    /// Compacts every hosted log whose `cleanup_policy` compacts. Each log is
    /// compacted under its partition's lock, so requests for that partition
    /// wait while it is rewritten (a log with nothing new to clean returns at
    /// once); a log that fails goes offline, the others go on.
    fn compact_logs(&self) {
        let partitions: Vec<Arc<Partition>> = self
            .partitions
            .read()
            .values()
            .filter(|p| p.compacted)
            .cloned()
            .collect();
        for partition in partitions {
            if let Some(log) = partition.state.lock().log.as_mut() {
                let _ = log.compact();
            }
        }
    }

    /// Applies retention and timed flushes to every hosted log. A log that
    /// fails goes offline (its next request reports why); the others go on.
    fn maintain_logs(&self) {
        let partitions: Vec<Arc<Partition>> = self.partitions.read().values().cloned().collect();
        for partition in partitions {
            if let Some(log) = partition.state.lock().log.as_mut() {
                let _ = log.maintain();
            }
        }
    }
}

/// Whether any partition changed since its count was taken.
fn moved_since(seen: &[(Arc<Partition>, u64)]) -> bool {
    seen.iter()
        .any(|(p, count)| p.changes.load(Ordering::Acquire) != *count)
}
