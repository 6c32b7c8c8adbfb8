//! A Kafka wire-protocol listener (the `kafka` feature, SPEC T4): existing
//! Kafka clients and tools talk to an embedded cluster as if it were Kafka.
//!
//! Not a transport but a front door: one thread polls a listening socket
//! and its connections (`mio`), reads Kafka's length-prefixed request
//! frames, maps each request onto the brokers' messages (sent through an
//! [`Endpoint`] on the cluster's transport) and encodes the answers in the
//! request's version with the `kafka-protocol` crate's types. Each broker
//! has a port of its own (Kafka's clients tell brokers apart by address);
//! whichever port a request comes in on, it goes to the leader of each of
//! its partitions.
//!
//! Served so far: ApiVersions (0–3; a version it does not serve is answered
//! in v0 with `UNSUPPORTED_VERSION` and the ranges), Metadata (0–12),
//! Produce (3–9; acks 0, 1, -1; acks=0 gets no answer; each partition's
//! one v2 batch passes through as its bytes), Fetch (4–12, as a consumer:
//! long-polls `max_wait_ms` for `min_bytes`; no fetch sessions, so clients
//! send full fetches), ListOffsets (1–7: earliest, latest, by timestamp),
//! OffsetForLeaderEpoch (2–4: where a leader epoch ended, from each
//! partition's leader),
//! InitProducerId (0–4: idempotent producers; a transactional id is
//! refused), CreateTopics (2–7, with topic configs in Kafka's names),
//! CreatePartitions (0–3), DeleteTopics (1–5), DeleteRecords (0–2; -1
//! deletes up to the high watermark), and for consumer groups
//! FindCoordinator (0–6), ConsumerGroupHeartbeat (0–1, KIP-848), the
//! classic JoinGroup (0–9), SyncGroup (0–5), Heartbeat (0–4) and
//! LeaveGroup (0–5) — the coordinator assigns partitions for classic
//! members too, so none of them is elected to — OffsetCommit (2–9),
//! OffsetFetch (1–9), ListGroups (0–5), DescribeGroups (0–5) and
//! ConsumerGroupDescribe (0–1), each sent to the broker whose
//! port it came in on (a broker that does not coordinate the group answers
//! `NOT_COORDINATOR`).
//! DescribeCluster (0–2) and DescribeConfigs (1–4: a topic's settings in
//! Kafka's names, its own or the default) answer for the cluster.
//! Any other API, or a version outside its range, closes the connection
//! with the reason in [`KafkaListener::closed`].
//!
//! Limits: a frame over `socket_request_max_bytes` (Kafka's 100 MiB
//! default) or of negative size is refused before anything is allocated
//! for it; an array that claims more elements than its frame has bytes is
//! refused before it is allocated; a connection with
//! `max_in_flight_requests_per_connection` requests unanswered is not read
//! until one is answered; at most `max_connections` connections are open.
//! A malformed request closes its connection only; the others go on.
//!
//! ```
//! # #[cfg(feature = "kafka")] {
//! use std::io::{Read, Write};
//! use ferrolog::Cluster;
//!
//! let cluster = Cluster::builder().kafka_listener("127.0.0.1:0").build()?;
//! let addr = cluster.kafka_listener_addr().expect("a listener");
//! let mut socket = std::net::TcpStream::connect(addr)?;
//! // ApiVersions v0: size, key 18, version 0, correlation id 7, no client id.
//! socket.write_all(&[0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff])?;
//! let mut size = [0u8; 4];
//! socket.read_exact(&mut size)?;
//! let mut answer = vec![0u8; u32::from_be_bytes(size) as usize];
//! socket.read_exact(&mut answer)?;
//! assert_eq!(&answer[..4], &[0, 0, 0, 7], "the correlation id comes back");
//! assert_eq!(&answer[4..6], &[0, 0], "no error");
//! # }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod admin;
mod api;
mod classic;
mod data;
mod groups;
mod server;
mod wire;

use std::collections::VecDeque;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::protocol::NodeId;
use crate::transport::{Endpoint, Transport};

/// How many closing reasons [`KafkaListener::closed`] keeps.
const CLOSED_KEPT: usize = 64;

/// A Kafka listener's limits (Kafka's names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaListenerConfig {
    /// The largest request frame accepted, in bytes (Kafka's
    /// `socket.request.max.bytes`, default 100 MiB). A larger one closes
    /// its connection before anything is allocated for it.
    pub socket_request_max_bytes: usize,
    /// Requests of one connection read and not yet answered; at the bound
    /// the connection is not read until one is answered (default 100).
    pub max_in_flight_requests_per_connection: usize,
    /// Connections open at once; more are accepted and closed at once,
    /// with the reason in [`KafkaListener::closed`] (default 1,000).
    pub max_connections: usize,
    /// How often a member of a KIP-848 consumer group
    /// (`group.protocol=consumer`) is told to heartbeat, in ms (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, default 5,000).
    pub group_consumer_heartbeat_interval_ms: u32,
    /// Such a member is removed from its group when no heartbeat of its
    /// arrives for this long, in ms (Kafka's
    /// `group.consumer.session.timeout.ms`, default 45,000); above the
    /// heartbeat interval.
    pub group_consumer_session_timeout_ms: u32,
}

impl Default for KafkaListenerConfig {
    fn default() -> Self {
        Self {
            socket_request_max_bytes: 100 << 20,
            max_in_flight_requests_per_connection: 100,
            max_connections: 1_000,
            group_consumer_heartbeat_interval_ms: 5_000,
            group_consumer_session_timeout_ms: 45_000,
        }
    }
}

impl KafkaListenerConfig {
    fn validate(&self) -> Result<()> {
        if self.socket_request_max_bytes < 8 || self.socket_request_max_bytes > i32::MAX as usize {
            return Err(Error::config(
                "socket_request_max_bytes",
                format!(
                    "{} is outside 8..={}",
                    self.socket_request_max_bytes,
                    i32::MAX
                ),
            ));
        }
        if self.max_in_flight_requests_per_connection == 0 {
            return Err(Error::config(
                "max_in_flight_requests_per_connection",
                "must be at least 1",
            ));
        }
        if self.max_connections == 0 {
            return Err(Error::config("max_connections", "must be at least 1"));
        }
        if self.group_consumer_heartbeat_interval_ms == 0
            || self.group_consumer_heartbeat_interval_ms > i32::MAX as u32
        {
            return Err(Error::config(
                "group_consumer_heartbeat_interval_ms",
                format!(
                    "{} is outside 1..={}",
                    self.group_consumer_heartbeat_interval_ms,
                    i32::MAX
                ),
            ));
        }
        if self.group_consumer_session_timeout_ms <= self.group_consumer_heartbeat_interval_ms {
            return Err(Error::config(
                "group_consumer_session_timeout_ms",
                format!(
                    "{} is not above group_consumer_heartbeat_interval_ms ({})",
                    self.group_consumer_session_timeout_ms,
                    self.group_consumer_heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// Why connections were closed, newest last (bounded).
#[derive(Debug, Default)]
pub(crate) struct ListenerLog {
    closed: Mutex<VecDeque<(Option<SocketAddr>, String)>>,
}

impl ListenerLog {
    fn note(&self, peer: Option<SocketAddr>, reason: String) {
        #[cfg(feature = "tracing")]
        tracing::warn!(?peer, %reason, "kafka listener closed a connection");
        server::bounded_push(&mut self.closed.lock(), (peer, reason), CLOSED_KEPT);
    }
}

/// A running Kafka listener; see the [module docs](self). Stops when
/// dropped (or at [`shutdown`](Self::shutdown)).
#[derive(Debug)]
pub struct KafkaListener {
    addr: SocketAddr,
    brokers: Vec<SocketAddr>,
    shared: Arc<server::Shared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for server::Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").finish_non_exhaustive()
    }
}

impl KafkaListener {
    /// Listens for Kafka clients of the brokers `brokers` reachable on
    /// `transport`: the first broker on `addr`, the next ones on the
    /// following ports (with port 0, each on a free port), each advertised
    /// at its own address. `cluster_id` is what Metadata answers name.
    pub fn start(
        addr: impl ToSocketAddrs,
        transport: Arc<dyn Transport>,
        brokers: Vec<NodeId>,
        cluster_id: &str,
        config: KafkaListenerConfig,
    ) -> Result<Self> {
        config.validate()?;
        if brokers.is_empty() {
            return Err(Error::config("brokers", "a listener needs a broker"));
        }
        let io = |context: &str, e: std::io::Error| Error::Io {
            context: context.to_string(),
            source: Arc::new(e),
        };
        let addr = addr
            .to_socket_addrs()
            .map_err(|e| io("kafka listener address", e))?
            .next()
            .ok_or_else(|| Error::config("kafka_listener", "the address resolves to nothing"))?;
        // One port per broker: Kafka's clients tell brokers apart by
        // address. Port 0: each its own free port; else consecutive ones.
        let addrs: Vec<SocketAddr> = (0..brokers.len())
            .map(|i| {
                let port = match addr.port() {
                    0 => Ok(0),
                    p => u16::try_from(usize::from(p) + i),
                };
                port.map(|port| SocketAddr::new(addr.ip(), port))
                    .map_err(|_| Error::config("kafka_listener", "ports run past 65535"))
            })
            .collect::<Result<_>>()?;
        let (poll, listeners, shared) = server::bind(&addrs)
            .map_err(|e| io(&format!("binding the kafka listener to {addr}"), e))?;
        let bound: Vec<SocketAddr> = listeners
            .iter()
            .map(|l| l.local_addr())
            .collect::<std::io::Result<_>>()
            .map_err(|e| io("the kafka listener's address", e))?;
        let context = api::Context {
            heartbeat_interval_ms: config.group_consumer_heartbeat_interval_ms,
            session_timeout_ms: config.group_consumer_session_timeout_ms,
            classic_owned: Arc::default(),
            endpoint: Arc::new(Endpoint::new(transport.clone())?),
            transport,
            unanswered: std::sync::atomic::AtomicU64::new(1 << 62),
            routes: Arc::default(),
            advertised: brokers
                .iter()
                .zip(&bound)
                .map(|(&id, a)| (id, i32::from(a.port())))
                .collect(),
            bootstrap: brokers,
            host: addr.ip().to_string(),
            cluster_id: cluster_id.to_string(),
        };
        let running = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ferrolog-kafka".into())
            .spawn(move || server::run(poll, listeners, running, context, config))
            .map_err(|e| io("starting the kafka listener's thread", e))?;
        Ok(Self {
            addr: bound[0],
            brokers: bound,
            shared,
            thread: Some(thread),
        })
    }

    /// The first broker's address (with the port chosen when 0 was
    /// asked): the one to give clients as `bootstrap.servers`.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Every broker's address, in the order of the broker ids given to
    /// [`start`](Self::start).
    pub fn broker_addrs(&self) -> &[SocketAddr] {
        &self.brokers
    }

    /// The newest reasons connections were closed for (peer, reason),
    /// oldest first; at most 64 are kept.
    pub fn closed(&self) -> Vec<(Option<SocketAddr>, String)> {
        self.shared.log.closed.lock().iter().cloned().collect()
    }

    /// Stops listening and closes every connection; waits for the thread.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for KafkaListener {
    fn drop(&mut self) {
        self.stop();
    }
}
