//! An in-process cluster: brokers, a controller, storage and a transport.
//!
//! This module owns the wiring: [`Cluster::builder`] picks the storage (in
//! memory by default, files with [`ClusterBuilder::data_dir`], or any
//! [`Storage`]), the transport ([`LocalTransport`] by default) and the number
//! of brokers, starts them, loads the controller (on broker 0) from its
//! metadata log, and publishes the metadata to every broker. Clients connect
//! with `&cluster` wherever a [`Bootstrap`] is expected.
//!
//! ```
//! use ferrolog::{Admin, Cluster, NewTopic};
//! let cluster = Cluster::builder().build()?;
//! Admin::new(&cluster)?.create_topic(NewTopic::new("events", 3))?;
//! cluster.shutdown()?;
//! # Ok::<(), ferrolog::Error>(())
//! ```

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::broker::{BrokerConfig, BrokerCore, Truncation};
use crate::client::Bootstrap;
use crate::controller::{CONTROLLER_ID, ControllerCore};
use crate::error::{Error, Result};
use crate::group::{Assignor, built_in_assignors};
use crate::metrics::{BrokerMetrics, ClusterMetrics, PartitionMetrics};
use crate::protocol::{
    BrokerInfo, ClusterMetadata, NodeId, PartitionMetadata, Peer, Request, Response,
    UpdateMetadataRequest,
};
use crate::runtime::NodeRuntime;
use crate::storage::{FileStorage, MemoryStorage, Storage};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;
use crate::transport::{Endpoint, LocalTransport, Transport};

mod handles;
#[cfg(feature = "node")]
mod node;

pub use handles::{ConsumerGroup, Partition, Topic};
#[cfg(feature = "node")]
pub use node::{MAX_VOTERS, Node, NodeConfig, ProcessRole};

/// A broker running in this process.
type Broker = NodeRuntime<BrokerCore>;
/// The controller running in this process.
type ControllerNode = NodeRuntime<ControllerCore>;

/// Most brokers one in-process cluster may have.
pub const MAX_BROKERS: u32 = 1024;

/// Builds a [`Cluster`]; see the [module docs](self).
#[derive(Debug, Default)]
pub struct ClusterBuilder {
    brokers: Option<u32>,
    storage: Option<Arc<dyn Storage>>,
    data_dir: Option<PathBuf>,
    transport: Option<Arc<dyn Transport>>,
    clock: Option<Arc<dyn Clock>>,
    broker_config: BrokerConfig,
    racks: Option<Vec<String>>,
    assignors: Vec<Arc<dyn Assignor>>,
    #[cfg(feature = "kafka")]
    kafka_listener: Option<(String, crate::kafka::KafkaListenerConfig)>,
}

impl ClusterBuilder {
    /// The number of brokers (default 1), ids `0..n`.
    pub fn brokers(mut self, n: u32) -> Self {
        self.brokers = Some(n);
        self
    }

    /// Keeps the partition logs in `storage` (default: a new [`MemoryStorage`]).
    /// Pass a clone of a storage to restart a cluster over the same logs.
    pub fn storage(mut self, storage: impl Storage + 'static) -> Self {
        self.storage = Some(Arc::new(storage));
        self
    }

    /// Keeps the partition logs in files under `dir` ([`FileStorage`]); a
    /// cluster built again on the same directory finds its topics and records.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Connects brokers and clients through `transport` (default: a new
    /// [`LocalTransport`]).
    pub fn transport(mut self, transport: impl Transport + 'static) -> Self {
        self.transport = Some(Arc::new(transport));
        self
    }

    /// The brokers' clock (default [`SystemClock`]).
    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Some(Arc::new(clock));
        self
    }

    /// The rack of each broker, by id (one per broker). With racks, the
    /// replicas of a partition are spread over as many racks as possible.
    pub fn racks(mut self, racks: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.racks = Some(racks.into_iter().map(Into::into).collect());
        self
    }

    /// Makes a custom [`Assignor`] available to consumer groups, by its
    /// name (consumers ask for it in `partition_assignment_strategy`). The
    /// built-in ones (`range`, `roundrobin`, `sticky`,
    /// `cooperative-sticky`) are always there; a custom one with the same
    /// name replaces the built-in.
    pub fn assignor(mut self, assignor: impl Assignor + 'static) -> Self {
        self.assignors.push(Arc::new(assignor));
        self
    }

    /// Settings of every broker.
    pub fn broker_config(mut self, config: BrokerConfig) -> Self {
        self.broker_config = config;
        self
    }

    /// Opens a Kafka wire-protocol listener on `addr` (`host:port`; port 0
    /// picks a free one, see [`Cluster::kafka_listener_addr`]) so that
    /// Kafka's clients and tools reach the cluster (the `kafka` feature;
    /// see [`crate::kafka`]).
    #[cfg(feature = "kafka")]
    pub fn kafka_listener(self, addr: impl Into<String>) -> Self {
        self.kafka_listener_with(addr, crate::kafka::KafkaListenerConfig::default())
    }

    /// [`kafka_listener`](Self::kafka_listener) with limits of its own.
    #[cfg(feature = "kafka")]
    pub fn kafka_listener_with(
        mut self,
        addr: impl Into<String>,
        config: crate::kafka::KafkaListenerConfig,
    ) -> Self {
        self.kafka_listener = Some((addr.into(), config));
        self
    }

    /// Starts the cluster. Bad settings are [`Error::InvalidConfig`]; a storage
    /// that cannot be opened or replayed fails here, not later.
    pub fn build(self) -> Result<Cluster> {
        let count = self.brokers.unwrap_or(1);
        if count == 0 || count > MAX_BROKERS {
            return Err(Error::config(
                "brokers",
                format!("{count} is outside 1..={MAX_BROKERS}"),
            ));
        }
        self.broker_config.validate()?;
        let clock: Arc<dyn Clock> = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let storage: Arc<dyn Storage> = match (self.storage, self.data_dir) {
            (Some(_), Some(_)) => {
                return Err(Error::config(
                    "storage",
                    "give either a storage or a data_dir, not both",
                ));
            }
            (Some(storage), None) => storage,
            (None, Some(dir)) => Arc::new(FileStorage::with_clock(dir, clock.clone())?),
            (None, None) => Arc::new(MemoryStorage::with_clock(clock.clone())),
        };
        let transport: Arc<dyn Transport> = self
            .transport
            .unwrap_or_else(|| Arc::new(LocalTransport::new()));
        if let Some(racks) = &self.racks
            && racks.len() != count as usize
        {
            return Err(Error::config(
                "racks",
                format!("{} racks given for {count} brokers", racks.len()),
            ));
        }
        let infos: Vec<BrokerInfo> = (0..count)
            .map(|id| BrokerInfo {
                id,
                rack: self.racks.as_ref().map(|r| r[id as usize].clone()),
                endpoint: None,
            })
            .collect();
        let cluster = Cluster {
            endpoint: Endpoint::new(transport.clone())?,
            transport,
            storage,
            clock,
            broker_config: self.broker_config,
            broker_infos: infos,
            assignors: built_in_assignors()
                .into_iter()
                .chain(self.assignors)
                .collect(),
            controller: Mutex::new(None),
            metadata: Arc::default(),
            brokers: Mutex::new((0..count).map(|_| None).collect()),
            #[cfg(feature = "kafka")]
            kafka: None,
        };
        cluster.restart_controller()?;
        for id in 0..count {
            cluster.restart_broker(id)?;
        }
        #[cfg(feature = "kafka")]
        let cluster = {
            let mut cluster = cluster;
            if let Some((addr, config)) = self.kafka_listener {
                cluster.kafka = Some(crate::kafka::KafkaListener::start(
                    addr.as_str(),
                    cluster.transport.clone(),
                    (0..count).collect(),
                    "ferrolog",
                    config,
                )?);
            }
            cluster
        };
        Ok(cluster)
    }
}

/// The controller's newest metadata, and a condition variable its changes
/// notify.
#[derive(Debug, Default)]
struct MetadataWatch {
    latest: Mutex<Option<Arc<ClusterMetadata>>>,
    changed: parking_lot::Condvar,
}

impl MetadataWatch {
    /// Called after each step of the controller: quick, under its lock.
    fn update(&self, metadata: Arc<ClusterMetadata>) {
        let mut latest = self.latest.lock();
        if latest.as_ref().is_some_and(|l| Arc::ptr_eq(l, &metadata)) {
            return;
        }
        *latest = Some(metadata);
        self.changed.notify_all();
    }

    fn wait_for(
        &self,
        timeout: Duration,
        ready: impl Fn(&ClusterMetadata) -> bool,
    ) -> Result<Arc<ClusterMetadata>> {
        let deadline = std::time::Instant::now() + timeout;
        let mut latest = self.latest.lock();
        loop {
            if let Some(metadata) = latest.as_ref()
                && ready(metadata)
            {
                return Ok(metadata.clone());
            }
            if self.changed.wait_until(&mut latest, deadline).timed_out() {
                return match latest.as_ref() {
                    Some(metadata) if ready(metadata) => Ok(metadata.clone()),
                    _ => Err(Error::RequestTimedOut {
                        operation: "waiting for cluster metadata",
                        timeout_ms: timeout.as_millis().min(u64::MAX as u128) as u64,
                    }),
                };
            }
        }
    }
}

/// A running in-process cluster; see the [module docs](self).
///
/// Dropping it shuts it down (see [`Cluster::shutdown`]).
#[derive(Debug)]
pub struct Cluster {
    transport: Arc<dyn Transport>,
    /// How the cluster itself sends requests (start-up metadata, broker
    /// registration).
    endpoint: Endpoint,
    storage: Arc<dyn Storage>,
    clock: Arc<dyn Clock>,
    broker_config: BrokerConfig,
    broker_infos: Vec<BrokerInfo>,
    assignors: Vec<Arc<dyn Assignor>>,
    /// `None` while the controller is down.
    controller: Mutex<Option<ControllerNode>>,
    /// The controller's newest metadata, for
    /// [`wait_for_metadata`](Self::wait_for_metadata).
    metadata: Arc<MetadataWatch>,
    /// Indexed by broker id; `None` while a broker is stopped.
    brokers: Mutex<Vec<Option<Broker>>>,
    /// The Kafka listener, if one was asked for.
    #[cfg(feature = "kafka")]
    kafka: Option<crate::kafka::KafkaListener>,
}

impl Cluster {
    /// A builder with the defaults: one broker, memory storage, local transport.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    /// The transport brokers and clients share.
    pub fn transport(&self) -> Arc<dyn Transport> {
        self.transport.clone()
    }

    /// The storage holding the brokers' logs.
    pub fn storage(&self) -> Arc<dyn Storage> {
        self.storage.clone()
    }

    /// Where clients find this cluster: every broker, then the controller.
    pub fn bootstrap(&self) -> Bootstrap {
        let mut nodes = self.broker_ids();
        nodes.push(CONTROLLER_ID);
        Bootstrap::new(self.transport.clone(), nodes)
    }

    /// The brokers' ids (running or stopped).
    pub fn broker_ids(&self) -> Vec<NodeId> {
        (0..self.brokers.lock().len() as NodeId).collect()
    }

    /// Whether broker `id` is running.
    pub fn is_running(&self, id: NodeId) -> bool {
        self.brokers
            .lock()
            .get(id as usize)
            .is_some_and(Option::is_some)
    }

    fn no_broker(id: NodeId) -> Error {
        Error::InvalidRequest {
            reason: format!("the cluster has no broker {id}"),
        }
    }

    fn take_broker(&self, id: NodeId) -> Result<Option<Broker>> {
        let mut brokers = self.brokers.lock();
        let slot = brokers
            .get_mut(id as usize)
            .ok_or_else(|| Self::no_broker(id))?;
        Ok(slot.take())
    }

    /// Stops broker `id` gracefully, with Kafka's controlled shutdown
    /// (SPEC O5): first the controller moves the broker's leaderships to
    /// in-sync followers and takes it out of the ISRs, and every live broker
    /// learns that; then the broker stops, answering what waits and flushing
    /// and closing its logs. Producers see one retriable error and carry on
    /// with the new leaders, with no pause of a session timeout. A partition
    /// whose only in-sync replica this broker is has no leader until it
    /// returns. When it restarts and has caught up, it leads its preferred
    /// partitions again. If the controller is down or does not answer
    /// within `broker_session_timeout_ms`, the broker stops anyway (its
    /// session then expires as after a crash). Stopping a stopped broker
    /// does nothing.
    pub fn stop_broker(&self, id: NodeId) -> Result<()> {
        let Some(broker) = self.take_broker(id)? else {
            return Ok(());
        };
        if self.controller.lock().is_some() {
            broker.step(|core, now| core.begin_controlled_shutdown(now));
            let timeout = Duration::from_millis(self.broker_config.broker_session_timeout_ms);
            // Timing out is no reason not to stop: the session expires.
            let _ = self.wait_for_metadata(timeout, |m| handed_over(m, id));
        }
        broker.stop(BrokerCore::shutdown)
    }

    /// Crashes broker `id`: it stops at once, without flushing or closing its
    /// logs (a restart recovers them as after a process crash).
    pub fn crash_broker(&self, id: NodeId) -> Result<()> {
        if let Some(broker) = self.take_broker(id)? {
            broker.stop(|core, _| {
                core.crash();
                Ok(())
            })?;
        }
        Ok(())
    }

    /// Starts broker `id` again (or for the first time) over the cluster's
    /// storage; it rejoins with its logs and catches up with its leaders.
    /// Restarting a running broker does nothing.
    pub fn restart_broker(&self, id: NodeId) -> Result<()> {
        let mut brokers = self.brokers.lock();
        let slot = brokers
            .get_mut(id as usize)
            .ok_or_else(|| Self::no_broker(id))?;
        if slot.is_some() {
            return Ok(());
        }
        let core = BrokerCore::new(
            id,
            self.broker_config.clone(),
            self.storage.clone(),
            self.assignors.clone(),
            self.clock.now_ms(),
        )?;
        let broker = Broker::start(
            id,
            core,
            self.transport.clone(),
            self.clock.clone(),
            format!("ferrolog-broker-{id}"),
        )?;
        *slot = Some(broker);
        drop(brokers);
        // Tell it the metadata now rather than at its first heartbeat. If
        // the network loses this, the heartbeat's answer brings it.
        let metadata = self
            .controller
            .lock()
            .as_ref()
            .and_then(|controller| controller.with_core(|core| core.metadata()));
        if let Some(metadata) = metadata {
            let request = Request::UpdateMetadata(UpdateMetadataRequest::full(metadata));
            let _ = self.endpoint.call(id, request, Duration::from_secs(30));
        }
        Ok(())
    }

    /// Adds a broker (the next id, in `rack` if racks are used) and starts
    /// it. It holds nothing until partitions are created on it or moved to it
    /// ([`Admin::reassign_partitions`](crate::Admin::reassign_partitions)).
    pub fn add_broker(&self, rack: Option<String>) -> Result<NodeId> {
        let id = self.brokers.lock().len() as NodeId;
        if id >= MAX_BROKERS {
            return Err(Error::config(
                "brokers",
                format!("at most {MAX_BROKERS} brokers"),
            ));
        }
        let request = Request::RegisterBroker(BrokerInfo {
            id,
            rack,
            endpoint: None,
        });
        match self
            .endpoint
            .call(CONTROLLER_ID, request, Duration::from_secs(30))?
        {
            Response::RegisterBroker(result) => result?,
            other => {
                return Err(Error::InvalidRequest {
                    reason: format!("unexpected answer {} to RegisterBroker", other.api_name()),
                });
            }
        }
        self.brokers.lock().push(None);
        self.restart_broker(id)?;
        Ok(id)
    }

    /// Crashes the controller: it stops at once without closing its metadata
    /// log. Brokers keep serving; nothing that needs the controller (topic
    /// changes, elections, ISR changes) happens until
    /// [`restart_controller`](Self::restart_controller).
    pub fn crash_controller(&self) {
        if let Some(controller) = self.controller.lock().take() {
            let _ = controller.stop(|core, _| {
                core.crash();
                Ok(())
            });
        }
    }

    /// Starts a controller (a new one after a crash): it replays the metadata
    /// log, takes the next controller epoch — brokers then ignore anything
    /// an older controller still sends — and gives every broker a session
    /// to heartbeat in. Does nothing if a controller runs.
    pub fn restart_controller(&self) -> Result<()> {
        let mut slot = self.controller.lock();
        if slot.is_some() {
            return Ok(());
        }
        let session = self.broker_config.broker_session_timeout_ms as Millis;
        let core = ControllerCore::load(
            CONTROLLER_ID,
            &*self.storage,
            self.broker_infos.clone(),
            self.clock.now_ms(),
            session,
            (session / 10).clamp(1, 100),
        )?;
        let watch = self.metadata.clone();
        *slot = Some(ControllerNode::start_peer(
            Peer::Broker(CONTROLLER_ID),
            core,
            self.transport.clone(),
            self.clock.clone(),
            "ferrolog-controller".into(),
            Some(Box::new(move |core: &mut ControllerCore| {
                if let Some(metadata) = core.published_metadata() {
                    watch.update(metadata);
                }
            })),
        )?);
        Ok(())
    }

    /// What followers truncated from their logs so far, over all running
    /// brokers (records an unclean election discarded show up here).
    pub fn truncations(&self) -> Vec<Truncation> {
        self.brokers
            .lock()
            .iter()
            .flatten()
            .flat_map(|broker| broker.with_core(|core| core.truncations().to_vec()))
            .collect()
    }

    /// Waits until the cluster's metadata (topics, partitions with their
    /// leaders, ISRs and epochs, live brokers) satisfies `ready`, and returns
    /// it; [`Error::RequestTimedOut`] if it does not within `timeout` (real
    /// time). The metadata is the controller's newest that every live
    /// broker has been given and answered for (or whose push timed out), so
    /// the brokers act on what it says once this returns. No polling: the
    /// controller wakes the waiting thread at every change. What a test
    /// waits for after a failure (a leader elected, a broker fenced, a
    /// follower back in the ISR, a reassignment done), and what an
    /// application may wait for after creating a topic.
    ///
    /// ```
    /// use std::time::Duration;
    /// use ferrolog::{Admin, Cluster, NewTopic};
    ///
    /// let cluster = Cluster::builder().brokers(3).build()?;
    /// Admin::new(&cluster)?.create_topic(NewTopic::new("orders", 2).replication_factor(3))?;
    /// let metadata = cluster.wait_for_metadata(Duration::from_secs(10), |m| {
    ///     m.topics["orders"].partitions.iter().all(|p| p.isr.len() == 3)
    /// })?;
    /// assert!(metadata.topics["orders"].partitions.iter().all(|p| p.leader.is_some()));
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn wait_for_metadata(
        &self,
        timeout: Duration,
        ready: impl Fn(&ClusterMetadata) -> bool,
    ) -> Result<Arc<ClusterMetadata>> {
        self.metadata.wait_for(timeout, ready)
    }

    /// A snapshot of the cluster's metrics (SPEC O4): every running
    /// broker's ([`BrokerCore::metrics`]: requests by kind with latency
    /// percentiles, purgatory sizes, replicas, groups), each partition as
    /// its leader reports it (internal topics' too: records and bytes in, bytes out, log start and
    /// end offsets, high watermark, ISR, followers' lag; a partition whose
    /// leader is not running as the metadata has it, marked offline), the
    /// under-replicated and offline counts, and every consumer group.
    ///
    /// ```
    /// use ferrolog::{Admin, Cluster, NewTopic};
    /// let cluster = Cluster::builder().build()?;
    /// Admin::new(&cluster)?.create_topic(NewTopic::new("orders", 2))?;
    /// let metrics = cluster.metrics();
    /// assert_eq!(metrics.partitions.len(), 2);
    /// assert_eq!(metrics.offline_partitions, 0);
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn metrics(&self) -> ClusterMetrics {
        let brokers: Vec<BrokerMetrics> = self
            .brokers
            .lock()
            .iter()
            .flatten()
            .map(|broker| broker.with_core(|core| core.metrics()))
            .collect();
        let metadata = self.current_metadata();
        let mut partitions = Vec::new();
        for topic in metadata.topics.values() {
            for p in &topic.partitions {
                let tp = TopicPartition::from_shared(topic.name.clone(), p.partition);
                let reported = p.leader.and_then(|leader| {
                    let broker = brokers.iter().find(|b| b.broker == leader)?;
                    broker
                        .partitions
                        .iter()
                        .find(|m| m.partition == tp && m.leader == Some(leader))
                        .cloned()
                });
                partitions.push(reported.unwrap_or_else(|| offline(tp, p)));
            }
        }
        let groups = brokers.iter().flat_map(|b| b.groups.clone()).collect();
        ClusterMetrics {
            under_replicated_partitions: partitions.iter().filter(|p| p.under_replicated).count(),
            offline_partitions: partitions.iter().filter(|p| p.offline).count(),
            brokers,
            partitions,
            groups,
        }
    }

    /// One partition's state as its leader reports it (offline, as the
    /// metadata has it, if the leader is not running); `None` if the
    /// partition does not exist.
    pub(crate) fn partition_metrics(&self, tp: &TopicPartition) -> Option<PartitionMetrics> {
        let metadata = self.current_metadata();
        let p = metadata
            .topics
            .get(tp.topic())?
            .partitions
            .get(tp.partition() as usize)?;
        let reported = p.leader.and_then(|leader| {
            let brokers = self.brokers.lock();
            let broker = brokers.get(leader as usize)?.as_ref()?;
            broker
                .with_core(|core| core.partition_metrics(tp))
                .filter(|m| m.leader == Some(leader))
        });
        Some(reported.unwrap_or_else(|| offline(tp.clone(), p)))
    }

    /// The controller's metadata now (the last published one while it is
    /// down).
    fn current_metadata(&self) -> Arc<ClusterMetadata> {
        self.controller
            .lock()
            .as_ref()
            .and_then(|c| c.with_core(|core| core.metadata()))
            .or_else(|| self.metadata.latest.lock().clone())
            .unwrap_or_default()
    }

    /// Graceful shutdown: each broker stops taking requests, answers waiting
    /// requests, and flushes and closes its logs; then the controller closes
    /// its metadata log. Returns the first error after trying everything.
    pub fn shutdown(self) -> Result<()> {
        self.stop()
    }

    /// The address of the Kafka listener (the `kafka` feature), if the
    /// cluster has one ([`ClusterBuilder::kafka_listener`]).
    #[cfg(feature = "kafka")]
    pub fn kafka_listener_addr(&self) -> Option<std::net::SocketAddr> {
        self.kafka
            .as_ref()
            .map(crate::kafka::KafkaListener::local_addr)
    }

    /// The Kafka listener itself, if the cluster has one: why it closed
    /// connections ([`KafkaListener::closed`](crate::kafka::KafkaListener::closed)).
    #[cfg(feature = "kafka")]
    pub fn kafka_listener(&self) -> Option<&crate::kafka::KafkaListener> {
        self.kafka.as_ref()
    }

    fn stop(&self) -> Result<()> {
        let mut first_error = None;
        let brokers: Vec<Broker> = self
            .brokers
            .lock()
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for broker in brokers {
            if let Err(e) = broker.stop(BrokerCore::shutdown) {
                first_error.get_or_insert(e);
            }
        }
        let controller = self.controller.lock().take();
        if let Some(Err(e)) = controller.map(|c| c.stop(|core, _| core.shutdown())) {
            first_error.get_or_insert(e);
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// A partition without a running leader, as the metadata has it.
fn offline(tp: TopicPartition, p: &PartitionMetadata) -> PartitionMetrics {
    PartitionMetrics {
        partition: tp,
        broker: p.leader.unwrap_or(CONTROLLER_ID),
        leader: None,
        replicas: p.replicas.clone(),
        isr: p.isr.clone(),
        log_start_offset: 0,
        log_end_offset: 0,
        high_watermark: 0,
        records_in: 0,
        bytes_in: 0,
        bytes_out: 0,
        under_replicated: p.isr.len() < p.replicas.len(),
        offline: true,
        followers: Vec::new(),
    }
}

/// Whether `metadata` shows broker `id` fenced and leading nothing: its
/// controlled shutdown is done.
fn handed_over(metadata: &ClusterMetadata, id: NodeId) -> bool {
    let leads = metadata
        .topics
        .values()
        .flat_map(|t| &t.partitions)
        .any(|p| p.leader == Some(id));
    !leads && !metadata.brokers.iter().any(|b| b.id == id)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

impl From<&Cluster> for Bootstrap {
    fn from(cluster: &Cluster) -> Self {
        cluster.bootstrap()
    }
}
