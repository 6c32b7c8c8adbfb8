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

use crate::broker::{Broker, BrokerConfig};
use crate::client::Bootstrap;
use crate::controller::Controller;
use crate::error::{Error, Result};
use crate::protocol::{BrokerInfo, NodeId, Request, UpdateMetadataRequest};
use crate::storage::{FileStorage, MemoryStorage, Storage};
use crate::time::{Clock, SystemClock};
use crate::transport::{self, LocalTransport, Peer, Transport};

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

    /// Settings of every broker.
    pub fn broker_config(mut self, config: BrokerConfig) -> Self {
        self.broker_config = config;
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
        let infos: Vec<BrokerInfo> = (0..count).map(|id| BrokerInfo { id, rack: None }).collect();
        let controller = Controller::load(&*storage, 0, infos)?;
        let mut cluster = Cluster {
            transport: transport.clone(),
            storage: storage.clone(),
            brokers: Vec::with_capacity(count as usize),
        };
        let mut controller = Some(controller);
        for id in 0..count {
            cluster.brokers.push(Broker::start(
                id,
                self.broker_config.clone(),
                storage.clone(),
                clock.clone(),
                transport.clone(),
                controller.take(),
            )?);
        }
        let metadata = cluster.brokers[0]
            .controller_metadata()
            .ok_or(Error::NotController { broker: 0 })?;
        for id in 0..count {
            let request = Request::UpdateMetadata(UpdateMetadataRequest {
                metadata: metadata.clone(),
            });
            transport::call(
                &*transport,
                Peer::Broker(0),
                id,
                request,
                Duration::from_secs(30),
            )?;
        }
        Ok(cluster)
    }
}

/// A running in-process cluster; see the [module docs](self).
///
/// Dropping it shuts it down (see [`Cluster::shutdown`]).
#[derive(Debug)]
pub struct Cluster {
    transport: Arc<dyn Transport>,
    storage: Arc<dyn Storage>,
    brokers: Vec<Broker>,
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

    /// Where clients find this cluster.
    pub fn bootstrap(&self) -> Bootstrap {
        Bootstrap::new(self.transport.clone(), self.broker_ids())
    }

    /// The brokers' ids.
    pub fn broker_ids(&self) -> Vec<NodeId> {
        self.brokers.iter().map(Broker::id).collect()
    }

    /// Graceful shutdown: each broker stops taking requests, answers waiting
    /// fetches, and flushes and closes its logs. Returns the first error after
    /// trying every broker.
    pub fn shutdown(self) -> Result<()> {
        self.stop()
    }

    fn stop(&self) -> Result<()> {
        let mut first_error = None;
        for broker in &self.brokers {
            if let Err(e) = broker.shutdown() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
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
