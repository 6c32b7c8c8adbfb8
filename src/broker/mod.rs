//! A broker: request dispatch over the partition logs it hosts.
//!
//! This module owns what one broker does with a request: Produce appends to
//! the leader's log, Fetch reads below the high watermark or parks in the
//! [`purgatory`] until data arrives, ListOffsets and Metadata answer from the
//! log and the broker's copy of the cluster metadata, and the admin requests
//! go to the [`Controller`] when this broker hosts it, whose new metadata is
//! then published to every broker (UpdateMetadata) before the admin request is
//! answered.
//!
//! Request handling never blocks on anything but the local log: a request
//! that must wait keeps its [`Reply`] and is completed by whoever changes the
//! state it waits for (an append) or by the broker's one runtime thread at its
//! deadline. The runtime thread also runs log maintenance (retention, timed
//! flushes). Nothing here calls a client back except through a `Reply`, and no
//! lock is held while a `Reply` is completed.

mod purgatory;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};

use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::protocol::{
    ClusterMetadata, FetchPartition, FetchRequest, FetchResponse, FetchedData, FetchedPartition,
    ListOffsetsRequest, ListOffsetsResponse, ListedOffset, MetadataRequest, MetadataResponse,
    NodeId, OffsetAndTimestamp, OffsetSpec, ProduceAck, ProducePartition, ProduceRequest,
    ProduceResponse, ProducedPartition, Request, Response, TopicResults, UpdateMetadataRequest,
};
use crate::record::{RecordBatch, Records};
use crate::storage::{PartitionLog, Storage};
use crate::time::{Clock, Millis};
use crate::topic::{INTERNAL_TOPIC_PREFIX, TopicPartition};
use crate::transport::{Peer, Reply, RequestHandler, Transport};
use purgatory::{FetchPurgatory, PendingFetch};

/// Longest the runtime thread sleeps between checks, so deadlines are met
/// within this much even under a [`ManualClock`](crate::ManualClock).
const MAX_RUNTIME_SLEEP_MS: Millis = 50;

/// Settings of a broker, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How often the broker applies retention and timed flushes to its logs
    /// (Kafka's `log.retention.check.interval.ms`, default 300,000 = 5 min).
    pub log_retention_check_interval_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            log_retention_check_interval_ms: 300_000,
        }
    }
}

impl BrokerConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        crate::client::at_most_max_ms(
            "log_retention_check_interval_ms",
            self.log_retention_check_interval_ms,
        )?;
        if self.log_retention_check_interval_ms == 0 {
            return Err(Error::config(
                "log_retention_check_interval_ms",
                "must be positive",
            ));
        }
        Ok(())
    }
}

/// One broker of a cluster, with its runtime thread.
#[derive(Debug)]
pub(crate) struct Broker {
    shared: Arc<BrokerShared>,
    runtime: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug, Default)]
struct RuntimeState {
    shutdown: bool,
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
    purgatory: Mutex<FetchPurgatory>,
    controller: Option<Mutex<Option<Controller>>>,
    runtime: Mutex<RuntimeState>,
    runtime_wake: Condvar,
    /// Set first by shutdown: requests are refused from then on.
    shutting_down: AtomicBool,
}

impl std::fmt::Debug for BrokerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("id", &self.id)
            .field("partitions", &self.partitions.read().len())
            .field("controller", &self.controller.is_some())
            .finish()
    }
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
struct Partition {
    tp: TopicPartition,
    /// The id of the topic incarnation this log belongs to.
    topic_id: u64,
    state: Mutex<PartitionState>,
    /// Mirror of the log's high watermark, read without the lock to detect an
    /// append racing with a fetch that is about to park.
    high_watermark: AtomicU64,
}

#[derive(Debug)]
struct PartitionState {
    /// `None` once the partition was removed (topic deleted).
    log: Option<Box<dyn PartitionLog>>,
    leader_epoch: i32,
    leader: bool,
}

impl Partition {
    fn log<'a>(&self, state: &'a mut PartitionState) -> Result<&'a mut Box<dyn PartitionLog>> {
        state
            .log
            .as_mut()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: self.tp.topic().to_string(),
            })
    }
}

impl Broker {
    /// Starts broker `id`: registers it with `transport` and starts its
    /// runtime thread. It knows no topics until metadata is published to it.
    pub(crate) fn start(
        id: NodeId,
        config: BrokerConfig,
        storage: Arc<dyn Storage>,
        clock: Arc<dyn Clock>,
        transport: Arc<dyn Transport>,
        controller: Option<Controller>,
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
            purgatory: Mutex::new(FetchPurgatory::default()),
            controller: controller.map(|c| Mutex::new(Some(c))),
            runtime: Mutex::new(RuntimeState::default()),
            runtime_wake: Condvar::new(),
            shutting_down: AtomicBool::new(false),
        });
        transport.register(id, shared.clone())?;
        let runner = shared.clone();
        let handle = std::thread::Builder::new()
            .name(format!("ferrolog-broker-{id}"))
            .spawn(move || runner.run())
            .map_err(|e| Error::io("spawning the broker thread", e))?;
        Ok(Self {
            shared,
            runtime: Mutex::new(Some(handle)),
        })
    }

    /// The broker's id.
    pub(crate) fn id(&self) -> NodeId {
        self.shared.id
    }

    /// The metadata the controller on this broker holds, if it hosts one.
    pub(crate) fn controller_metadata(&self) -> Option<Arc<ClusterMetadata>> {
        let controller = self.shared.controller.as_ref()?;
        controller.lock().as_ref().map(Controller::metadata)
    }

    /// Stops taking requests, answers parked fetches with what there is,
    /// stops the runtime thread, then flushes and closes every log. The first
    /// error is returned after everything was tried. Calling it again does
    /// nothing.
    pub(crate) fn shutdown(&self) -> Result<()> {
        let shared = &self.shared;
        shared.shutting_down.store(true, Ordering::Release);
        shared.transport.deregister(shared.id);
        // Wait out a metadata change in progress; later ones are refused.
        drop(shared.apply_lock.lock());
        {
            let mut runtime = shared.runtime.lock();
            runtime.shutdown = true;
            shared.runtime_wake.notify_all();
        }
        if let Some(handle) = self.runtime.lock().take() {
            let _ = handle.join();
        }
        let parked = shared.purgatory.lock().drain();
        for waiter in parked {
            shared.complete_fetch(waiter);
        }
        let partitions: Vec<Arc<Partition>> =
            shared.partitions.write().drain().map(|(_, p)| p).collect();
        let mut first_error = None;
        for partition in partitions {
            let log = partition.state.lock().log.take();
            if let Some(Err(e)) = log.map(|log| log.close()) {
                first_error.get_or_insert(e);
            }
        }
        if let Some(controller) = &shared.controller
            && let Some(Err(e)) = controller.lock().take().map(Controller::close)
        {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
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
            Request::Fetch(request) => self.fetch(request, reply),
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
            admin @ (Request::CreateTopics(_)
            | Request::DeleteTopics(_)
            | Request::CreatePartitions(_)) => self.admin(admin, reply),
        }
    }
}

impl BrokerShared {
    // ----- produce -------------------------------------------------------

    fn produce(&self, request: ProduceRequest, reply: Reply) {
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut appended = Vec::with_capacity(request.partitions.len());
        for ProducePartition { partition, batch } in request.partitions {
            let size = batch.size() as u64;
            let result = self.append(&partition, batch);
            if result.is_ok() {
                appended.push((partition.clone(), size));
            }
            results.push(ProducedPartition { partition, result });
        }
        self.wake_fetches(&appended);
        reply.send(Ok(Response::Produce(ProduceResponse {
            partitions: results,
        })));
    }

    fn append(&self, tp: &TopicPartition, batch: RecordBatch) -> Result<ProduceAck> {
        if batch.is_control() {
            return Err(Error::InvalidRecord {
                reason: "clients cannot write control batches".into(),
            });
        }
        let partition = self.leader_partition(tp)?;
        let mut state = partition.state.lock();
        let epoch = state.leader_epoch;
        let log = partition.log(&mut state)?;
        let info = log.append(batch, epoch)?;
        // One replica: the in-sync replica set is the leader alone, so the
        // high watermark is the log end.
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        partition.high_watermark.store(end, Ordering::Release);
        Ok(ProduceAck {
            base_offset: info.base_offset,
            log_start_offset: log.log_start_offset(),
        })
    }

    // ----- fetch ---------------------------------------------------------

    fn fetch(&self, request: FetchRequest, reply: Reply) {
        let (response, bytes, seen) = self.read_fetch(&request);
        let failed = response.partitions.iter().any(|p| p.result.is_err());
        if request.max_wait_ms == 0 || bytes >= u64::from(request.min_bytes) || failed {
            reply.send(Ok(Response::Fetch(response)));
            return;
        }
        let deadline = self.clock.now_ms() + Millis::from(request.max_wait_ms);
        let mut purgatory = self.purgatory.lock();
        // An append between the read and now would not find this fetch
        // parked; its high watermark move shows it, so read again instead.
        // A broker shutting down drains the purgatory once; answer now.
        if self.any_high_watermark_moved(&seen) || self.shutting_down.load(Ordering::Acquire) {
            drop(purgatory);
            let (response, _, _) = self.read_fetch(&request);
            reply.send(Ok(Response::Fetch(response)));
            return;
        }
        purgatory.park(request, reply, bytes, deadline);
        drop(purgatory);
        self.kick_runtime();
    }

    /// Reads every partition of `request`: the response, its size in bytes,
    /// and the high watermark each partition had.
    fn read_fetch(
        &self,
        request: &FetchRequest,
    ) -> (FetchResponse, u64, Vec<(Arc<Partition>, u64)>) {
        let mut budget = request.max_bytes as usize;
        let mut total = 0u64;
        let mut seen = Vec::with_capacity(request.partitions.len());
        let partitions = request
            .partitions
            .iter()
            .map(|fp| {
                let result = self.read_partition(fp, budget, &mut seen);
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
        (FetchResponse { partitions }, total, seen)
    }

    fn read_partition(
        &self,
        fp: &FetchPartition,
        budget: usize,
        seen: &mut Vec<(Arc<Partition>, u64)>,
    ) -> Result<FetchedData> {
        let partition = self.leader_partition(&fp.partition)?;
        let mut state = partition.state.lock();
        let log = partition.log(&mut state)?;
        let high_watermark = log.high_watermark();
        seen.push((partition.clone(), high_watermark));
        let log_start_offset = log.log_start_offset();
        let end = log.log_end_offset();
        if fp.fetch_offset < log_start_offset || fp.fetch_offset > end {
            return Err(Error::OffsetOutOfRange {
                offset: fp.fetch_offset,
                log_start_offset,
                log_end_offset: end,
            });
        }
        let max_bytes = (fp.max_bytes as usize).min(budget);
        let records = if fp.fetch_offset >= high_watermark || max_bytes == 0 {
            Records::empty()
        } else {
            let mut records = log.read(fp.fetch_offset, max_bytes)?;
            records.truncate_at_offset(high_watermark);
            records
        };
        Ok(FetchedData {
            high_watermark,
            log_start_offset,
            records,
        })
    }

    fn any_high_watermark_moved(&self, seen: &[(Arc<Partition>, u64)]) -> bool {
        seen.iter()
            .any(|(p, hw)| p.high_watermark.load(Ordering::Acquire) != *hw)
    }

    fn complete_fetch(&self, waiter: PendingFetch) {
        let (response, _, _) = self.read_fetch(&waiter.request);
        waiter.reply.send(Ok(Response::Fetch(response)));
    }

    fn wake_fetches(&self, appended: &[(TopicPartition, u64)]) {
        if appended.is_empty() {
            return;
        }
        let ready: Vec<PendingFetch> = {
            let mut purgatory = self.purgatory.lock();
            if purgatory.len() == 0 {
                return;
            }
            appended
                .iter()
                .flat_map(|(tp, bytes)| purgatory.on_append(tp, *bytes))
                .collect()
        };
        for waiter in ready {
            self.complete_fetch(waiter);
        }
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
        let log = partition.log(&mut state)?;
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
            && p.state.lock().leader
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
    /// id). A log that fails to open or remove is skipped and reported; the
    /// rest of the change still applies, and the next metadata retries it.
    fn apply_metadata(&self, metadata: Arc<ClusterMetadata>) -> Result<()> {
        let _serial = self.apply_lock.lock();
        if self.shutting_down.load(Ordering::Acquire) {
            return Err(self.shutting_down_error());
        }
        let first = {
            let current = self.metadata.read();
            if metadata.version <= current.version {
                return Ok(());
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
        let hosted: HashMap<TopicPartition, u64> = self
            .partitions
            .read()
            .iter()
            .map(|(tp, p)| (tp.clone(), p.topic_id))
            .collect();
        let is_current = |tp: &TopicPartition, topic_id: u64| {
            wanted.get(tp).is_some_and(|(_, t)| t.id == topic_id)
        };
        let mut first_error = None;
        // Replaced incarnations go first, so their files are gone before the
        // new topic's log is opened at the same place.
        let stale: Vec<TopicPartition> = hosted
            .iter()
            .filter(|&(tp, &id)| !is_current(tp, id))
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
            let closed = log.map_or(Ok(()), |log| log.close());
            if let Err(e) = closed.and_then(|()| self.storage.remove(&partition.tp, self.id)) {
                first_error.get_or_insert(e);
            }
        }
        let mut opened = Vec::new();
        for (tp, (p, topic)) in &wanted {
            if hosted.get(tp) == Some(&topic.id) {
                continue;
            }
            match self.storage.open(tp, self.id, &topic.config) {
                Ok(mut log) => {
                    let leader = p.leader == Some(self.id);
                    if leader && p.isr.len() <= 1 {
                        // The leader is the whole in-sync replica set: all it
                        // holds is committed, including what came after the
                        // last checkpointed high watermark before a crash.
                        let end = log.log_end_offset();
                        log.set_high_watermark(end);
                    }
                    let high_watermark = log.high_watermark();
                    opened.push(Arc::new(Partition {
                        tp: tp.clone(),
                        topic_id: topic.id,
                        state: Mutex::new(PartitionState {
                            log: Some(log),
                            leader_epoch: p.leader_epoch,
                            leader,
                        }),
                        high_watermark: AtomicU64::new(high_watermark),
                    }));
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
        if first && metadata.version > 1 {
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
        first_error.map_or(Ok(()), Err)
    }

    fn shutting_down_error(&self) -> Error {
        Error::Network {
            node: self.id,
            reason: "the broker is shutting down".into(),
        }
    }

    fn admin(&self, request: Request, reply: Reply) {
        let not_controller = || Error::NotController { broker: self.id };
        let Some(controller) = &self.controller else {
            reply.send(Err(not_controller()));
            return;
        };
        let now = self.clock.now_ms();
        let (response, metadata, changed) = {
            let mut guard = controller.lock();
            let Some(controller) = guard.as_mut() else {
                drop(guard);
                reply.send(Err(not_controller()));
                return;
            };
            let before = controller.metadata().version;
            let response = match request {
                Request::CreateTopics(r) => Response::CreateTopics(TopicResults {
                    topics: controller.create_topics(r.topics, now),
                }),
                Request::DeleteTopics(r) => Response::DeleteTopics(TopicResults {
                    topics: controller.delete_topics(r.topics, now),
                }),
                Request::CreatePartitions(r) => Response::CreatePartitions(TopicResults {
                    topics: controller.create_partitions(r.topics, now),
                }),
                other => {
                    drop(guard);
                    reply.send(Err(Error::InvalidRequest {
                        reason: format!("{} is not an admin request", other.api_name()),
                    }));
                    return;
                }
            };
            let metadata = controller.metadata();
            let changed = metadata.version != before;
            (response, metadata, changed)
        };
        if changed {
            self.publish(metadata, reply, response);
        } else {
            reply.send(Ok(response));
        }
    }

    /// Sends `metadata` to every broker; answers `reply` once all have
    /// answered (a broker that cannot be reached gets it when it restarts).
    fn publish(&self, metadata: Arc<ClusterMetadata>, reply: Reply, response: Response) {
        let pending = Arc::new(Mutex::new((
            metadata.brokers.len(),
            Some((reply, response)),
        )));
        for broker in &metadata.brokers {
            let pending = pending.clone();
            self.transport.send(
                Peer::Broker(self.id),
                broker.id,
                Request::UpdateMetadata(UpdateMetadataRequest {
                    metadata: metadata.clone(),
                }),
                Reply::new(broker.id, move |_| {
                    let done = {
                        let mut pending = pending.lock();
                        pending.0 -= 1;
                        if pending.0 == 0 {
                            pending.1.take()
                        } else {
                            None
                        }
                    };
                    if let Some((reply, response)) = done {
                        reply.send(Ok(response));
                    }
                }),
            );
        }
    }

    // ----- runtime -------------------------------------------------------

    fn kick_runtime(&self) {
        let mut runtime = self.runtime.lock();
        runtime.kicks += 1;
        self.runtime_wake.notify_one();
    }

    /// The runtime thread: expires parked fetches and maintains logs.
    fn run(&self) {
        let interval = self.config.log_retention_check_interval_ms as Millis;
        let mut next_maintenance = self.clock.now_ms() + interval;
        loop {
            let kicks = {
                let runtime = self.runtime.lock();
                if runtime.shutdown {
                    return;
                }
                runtime.kicks
            };
            let now = self.clock.now_ms();
            let expired = self.purgatory.lock().expire(now);
            for waiter in expired {
                self.complete_fetch(waiter);
            }
            if now >= next_maintenance {
                self.maintain_logs();
                next_maintenance = now + interval;
            }
            let next = self
                .purgatory
                .lock()
                .next_deadline()
                .unwrap_or(Millis::MAX)
                .min(next_maintenance);
            let sleep = next
                .saturating_sub(self.clock.now_ms())
                .min(MAX_RUNTIME_SLEEP_MS);
            let mut runtime = self.runtime.lock();
            if !runtime.shutdown && runtime.kicks == kicks && sleep > 0 {
                self.runtime_wake
                    .wait_for(&mut runtime, Duration::from_millis(sleep as u64));
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
