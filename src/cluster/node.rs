//! [`Node`]: one process's part of a cluster of separate processes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::broker::{BrokerConfig, BrokerCore};
use crate::client::Bootstrap;
use crate::controller::{ControllerCore, QuorumSeat, SNAPSHOT_AFTER_RECORDS};
use crate::error::{Error, Result};
use crate::group::built_in_assignors;
use crate::protocol::{BrokerInfo, CONTROLLER_ID, NodeId, Peer};
use crate::runtime::NodeRuntime;
use crate::storage::{FileStorage, Storage};
use crate::time::{Clock, Millis, SystemClock};
use crate::transport::{TcpTransport, TcpTransportConfig, Transport};

/// What a node does (Kafka's `process.roles`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ProcessRole {
    /// Holds partition replicas and serves clients.
    Broker,
    /// Keeps the cluster's metadata: topics, placements, leaders, ISRs.
    Controller,
}

/// Settings of a [`Node`], with Kafka's names: a `server.properties` file
/// reads into one with [`from_properties`](Self::from_properties).
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id (`node.id`), below [`CONTROLLER_ID`]. Its broker is
    /// broker `node_id`; its controller is peer `CONTROLLER_ID + node_id`.
    pub node_id: NodeId,
    /// Its roles (`process.roles`): broker, controller, or both.
    pub process_roles: Vec<ProcessRole>,
    /// Where it listens, `host:port` (`listeners`; Kafka's
    /// `NAME://host:port` form is read too). Port 0 picks a free one.
    pub listeners: String,
    /// Where other processes reach it (`advertised.listeners`); by default
    /// the address it listens on.
    pub advertised_listeners: Option<String>,
    /// The controller quorum's voters, as `id@host:port`
    /// (`controller.quorum.voters`).
    pub controller_quorum_voters: Vec<(NodeId, String)>,
    /// The directory of its logs and metadata (`log.dirs`).
    pub log_dirs: PathBuf,
    /// The cluster's id (`cluster.id`): nodes of different clusters never
    /// talk to each other.
    pub cluster_id: String,
    /// Its broker's rack (`broker.rack`).
    pub broker_rack: Option<String>,
    /// Its broker's settings.
    pub broker: BrokerConfig,
}

impl NodeConfig {
    /// Reads `key=value` lines (`#` and `!` start comments) with Kafka's
    /// setting names: `node.id`, `process.roles`, `listeners`,
    /// `advertised.listeners`, `controller.quorum.voters`, `log.dirs`,
    /// `cluster.id`, `broker.rack`, and the broker settings of
    /// [`BrokerConfig`] under their Kafka names (`broker.session.timeout.ms`,
    /// `replica.lag.time.max.ms`, ...). An unknown key, a bad value or a
    /// missing required one is [`Error::InvalidConfig`].
    ///
    /// ```
    /// use ferrolog::cluster::{NodeConfig, ProcessRole};
    /// let config = NodeConfig::from_properties("
    ///     node.id=1
    ///     process.roles=broker,controller
    ///     listeners=PLAINTEXT://127.0.0.1:9093
    ///     controller.quorum.voters=1@127.0.0.1:9093
    ///     log.dirs=/tmp/ferrolog-1
    ///     cluster.id=orders
    /// ")?;
    /// assert_eq!(config.node_id, 1);
    /// assert_eq!(config.process_roles, [ProcessRole::Broker, ProcessRole::Controller]);
    /// assert_eq!(config.listeners, "127.0.0.1:9093");
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn from_properties(text: &str) -> Result<Self> {
        let mut values: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(Error::config(
                    "properties",
                    format!("{line:?} is not key=value"),
                ));
            };
            values.insert(key.trim().to_string(), value.trim().to_string());
        }
        let mut take = |key: &str| values.remove(key);
        let required = |value: Option<String>, key: &'static str| {
            value.ok_or_else(|| Error::config(key, "is required"))
        };
        let node_id = parse(&required(take("node.id"), "node.id")?, "node.id")?;
        let process_roles = required(take("process.roles"), "process.roles")?
            .split(',')
            .map(|r| match r.trim() {
                "broker" => Ok(ProcessRole::Broker),
                "controller" => Ok(ProcessRole::Controller),
                other => Err(Error::config(
                    "process.roles",
                    format!("{other:?} is neither broker nor controller"),
                )),
            })
            .collect::<Result<Vec<_>>>()?;
        let listeners = strip_listener_name(&required(take("listeners"), "listeners")?);
        let advertised_listeners = take("advertised.listeners").map(|l| strip_listener_name(&l));
        let controller_quorum_voters = parse_voters(&required(
            take("controller.quorum.voters"),
            "controller.quorum.voters",
        )?)?;
        let log_dirs = PathBuf::from(required(take("log.dirs"), "log.dirs")?);
        let cluster_id = required(take("cluster.id"), "cluster.id")?;
        let broker_rack = take("broker.rack");
        let mut broker = BrokerConfig::default();
        macro_rules! broker_settings {
            ($($key:literal => $field:ident),* $(,)?) => {
                $(if let Some(v) = take($key) { broker.$field = parse(&v, $key)?; })*
            };
        }
        broker_settings!(
            "log.retention.check.interval.ms" => log_retention_check_interval_ms,
            "log.flush.scheduler.interval.ms" => log_flush_scheduler_interval_ms,
            "log.cleaner.backoff.ms" => log_cleaner_backoff_ms,
            "replica.lag.time.max.ms" => replica_lag_time_max_ms,
            "replica.fetch.wait.max.ms" => replica_fetch_wait_max_ms,
            "broker.heartbeat.interval.ms" => broker_heartbeat_interval_ms,
            "broker.session.timeout.ms" => broker_session_timeout_ms,
            "offsets.topic.num.partitions" => offsets_topic_num_partitions,
            "offsets.topic.replication.factor" => offsets_topic_replication_factor,
            "offsets.topic.segment.bytes" => offsets_topic_segment_bytes,
            "offsets.commit.timeout.ms" => offsets_commit_timeout_ms,
            "metrics.enabled" => metrics_enabled,
        );
        if let Some(v) = take("log.flush.interval.messages") {
            broker.log_flush_interval_messages = Some(parse(&v, "log.flush.interval.messages")?);
        }
        if let Some(v) = take("log.flush.interval.ms") {
            broker.log_flush_interval_ms = Some(parse(&v, "log.flush.interval.ms")?);
        }
        if let Some(key) = values.keys().next() {
            return Err(Error::config(
                "properties",
                format!("unknown setting {key:?}"),
            ));
        }
        let config = Self {
            node_id,
            process_roles,
            listeners,
            advertised_listeners,
            controller_quorum_voters,
            log_dirs,
            cluster_id,
            broker_rack,
            broker,
        };
        config.validate()?;
        Ok(config)
    }

    /// Checks every setting; a bad one is [`Error::InvalidConfig`].
    pub fn validate(&self) -> Result<()> {
        if self.node_id >= CONTROLLER_ID {
            return Err(Error::config(
                "node.id",
                format!("{} is not below {CONTROLLER_ID}", self.node_id),
            ));
        }
        if self.process_roles.is_empty() {
            return Err(Error::config("process.roles", "names no role"));
        }
        if self.cluster_id.is_empty() {
            return Err(Error::config("cluster.id", "must not be empty"));
        }
        if self.controller_quorum_voters.is_empty() {
            return Err(Error::config("controller.quorum.voters", "names no voter"));
        }
        if self.controller_quorum_voters.len() > MAX_VOTERS {
            return Err(Error::config(
                "controller.quorum.voters",
                format!(
                    "{} voters; at most {MAX_VOTERS}",
                    self.controller_quorum_voters.len()
                ),
            ));
        }
        if self.has(ProcessRole::Controller)
            && !self
                .controller_quorum_voters
                .iter()
                .any(|(v, _)| *v == self.node_id)
        {
            return Err(Error::config(
                "controller.quorum.voters",
                format!(
                    "node {} has the controller role but is not a voter",
                    self.node_id
                ),
            ));
        }
        if let Some((voter, _)) = self
            .controller_quorum_voters
            .iter()
            .find(|(v, _)| *v >= CONTROLLER_ID)
        {
            return Err(Error::config(
                "controller.quorum.voters",
                format!("voter id {voter} is not below {CONTROLLER_ID}"),
            ));
        }
        self.broker.validate()
    }

    fn has(&self, role: ProcessRole) -> bool {
        self.process_roles.contains(&role)
    }
}

/// Most voters a controller quorum may have.
pub const MAX_VOTERS: usize = 9;

fn parse<T: std::str::FromStr>(value: &str, key: &'static str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Error::config(key, format!("{value:?}: {e}")))
}

/// `PLAINTEXT://host:port` → `host:port`; the first of a list.
fn strip_listener_name(listener: &str) -> String {
    let first = listener.split(',').next().unwrap_or("").trim();
    first
        .split_once("://")
        .map_or(first, |(_, addr)| addr)
        .to_string()
}

fn parse_voters(text: &str) -> Result<Vec<(NodeId, String)>> {
    let mut voters: Vec<(NodeId, String)> = Vec::new();
    for voter in text.split(',').map(str::trim).filter(|v| !v.is_empty()) {
        let Some((id, addr)) = voter.split_once('@') else {
            return Err(Error::config(
                "controller.quorum.voters",
                format!("{voter:?} is not id@host:port"),
            ));
        };
        let id: NodeId = parse(id, "controller.quorum.voters")?;
        if voters.iter().any(|(v, _)| *v == id) {
            return Err(Error::config(
                "controller.quorum.voters",
                format!("voter {id} appears twice"),
            ));
        }
        voters.push((id, addr.to_string()));
    }
    Ok(voters)
}

/// One process's part of a cluster of separate processes: its broker, its
/// controller, or both, over a [`TcpTransport`] listening at `listeners`,
/// with files under `log_dirs`. The embedded [`Cluster`](crate::Cluster)
/// runs the same broker and controller cores in one process.
///
/// A broker registers itself with the controller (with its rack and
/// advertised address) and heartbeats; the controller publishes the
/// metadata to every live broker, and clients anywhere find every broker
/// from one address ([`Bootstrap::servers`]). The controllers of the
/// voters named in `controller_quorum_voters` replicate the metadata log
/// with Raft: the elected leader is the active controller, its term fences
/// older ones, and when its process dies another voter takes over with
/// every committed change. A broker process may crash and come back; its
/// partitions fail over to in-sync replicas in other processes.
///
/// ```no_run
/// use ferrolog::cluster::{Node, NodeConfig};
/// let node = Node::start(NodeConfig::from_properties("
///     node.id=0
///     process.roles=broker,controller
///     listeners=127.0.0.1:9092
///     controller.quorum.voters=0@127.0.0.1:9092
///     log.dirs=/tmp/ferrolog-0
///     cluster.id=demo
/// ")?)?;
/// println!("listening on {}", node.local_addr());
/// node.shutdown()?;
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug)]
pub struct Node {
    config: NodeConfig,
    transport: TcpTransport,
    broker: Option<NodeRuntime<BrokerCore>>,
    controller: Option<NodeRuntime<ControllerCore>>,
}

impl Node {
    /// Checks `config`, opens the storage under `log_dirs`, listens, and
    /// starts the node's roles.
    pub fn start(config: NodeConfig) -> Result<Self> {
        config.validate()?;
        let clock: Arc<dyn Clock> = Arc::new(SystemClock);
        let storage: Arc<dyn Storage> = Arc::new(FileStorage::with_clock(
            config.log_dirs.clone(),
            clock.clone(),
        )?);
        let voters: BTreeMap<NodeId, String> = config
            .controller_quorum_voters
            .iter()
            .map(|(id, addr)| (CONTROLLER_ID + id, addr.clone()))
            .collect();
        let transport = TcpTransport::start(TcpTransportConfig {
            cluster_id: config.cluster_id.clone(),
            node_id: Some(config.node_id),
            listener: Some(config.listeners.clone()),
            nodes: voters,
            ..TcpTransportConfig::default()
        })?;
        let addr = transport
            .local_addr()
            .ok_or_else(|| Error::config("listeners", "the transport does not listen"))?;
        let shared: Arc<dyn Transport> = Arc::new(transport.clone());
        let voter_ids: Vec<NodeId> = config
            .controller_quorum_voters
            .iter()
            .map(|(id, _)| *id)
            .collect();
        let voter_peers: Vec<NodeId> = voter_ids.iter().map(|v| CONTROLLER_ID + v).collect();
        let controller_id = CONTROLLER_ID + config.node_id;
        let session = config.broker.broker_session_timeout_ms as Millis;
        let controller = if config.has(ProcessRole::Controller) {
            let seat = QuorumSeat {
                voter: config.node_id,
                voters: &voter_ids,
                seed: 0,
                snapshot_after: SNAPSHOT_AFTER_RECORDS,
            };
            let core = ControllerCore::quorum(
                &seat,
                &*storage,
                clock.now_ms(),
                session,
                (session / 10).clamp(1, 100),
            )?;
            Some(NodeRuntime::start_peer(
                Peer::Broker(controller_id),
                core,
                shared.clone(),
                clock.clone(),
                format!("ferrolog-controller-{}", config.node_id),
                None,
            )?)
        } else {
            None
        };
        let broker = if config.has(ProcessRole::Broker) {
            let mut core = BrokerCore::new(
                config.node_id,
                config.broker.clone(),
                storage.clone(),
                built_in_assignors(),
                clock.now_ms(),
            )?;
            let endpoint = config
                .advertised_listeners
                .clone()
                .unwrap_or_else(|| addr.to_string());
            core.register_as(
                BrokerInfo {
                    id: config.node_id,
                    rack: config.broker_rack.clone(),
                    endpoint: Some(endpoint),
                },
                voter_peers,
            );
            Some(NodeRuntime::start(
                config.node_id,
                core,
                shared,
                clock,
                format!("ferrolog-broker-{}", config.node_id),
            )?)
        } else {
            None
        };
        Ok(Self {
            config,
            transport,
            broker,
            controller,
        })
    }

    /// The address the node listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.transport
            .local_addr()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The node's settings.
    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    /// Where clients in this process find the cluster: this node's broker
    /// (and the brokers it learns of), through the node's own transport.
    pub fn bootstrap(&self) -> Bootstrap {
        let mut nodes = Vec::new();
        if self.broker.is_some() {
            nodes.push(self.config.node_id);
        }
        nodes.extend(
            self.config
                .controller_quorum_voters
                .iter()
                .map(|(v, _)| CONTROLLER_ID + v),
        );
        Bootstrap::new(Arc::new(self.transport.clone()), nodes)
    }

    /// The node's transport (its connections and what it closed, and why).
    pub fn transport(&self) -> &TcpTransport {
        &self.transport
    }

    /// Stops the node: its broker first asks the controller to fence it
    /// (its leaderships move to in-sync replicas elsewhere without waiting
    /// out a session), then stops; then the controller. Logs are flushed
    /// and closed.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        let mut result = Ok(());
        if let Some(broker) = self.broker.take() {
            broker.step(|core, now| core.begin_controlled_shutdown(now));
            if let Err(e) = broker.stop(BrokerCore::shutdown) {
                result = Err(e);
            }
        }
        if let Some(controller) = self.controller.take()
            && let Err(e) = controller.stop(|core, _| core.shutdown())
        {
            result = result.and(Err(e));
        }
        self.transport.shutdown();
        result
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
