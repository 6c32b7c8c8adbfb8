//! A deterministic whole-cluster simulator (feature `sim`).
//!
//! One thread runs the real cores — brokers, the controller, idempotent
//! acks=all producers, an acks=1 producer, consumers and the members of a
//! consumer group — over
//! a simulated network and a
//! virtual clock, with every delay, loss, duplicate, network partition and
//! crash drawn from one seeded random source ([`SimRng`]). The same seed
//! gives the same run, event for event, on every platform: a failing seed
//! replays exactly, and its run prints the same trace hash every time.
//!
//! The network: each envelope takes 1..=`max_delay_ms` (so envelopes on one
//! link may overtake each other), may be duplicated, and may be lost; a
//! lost envelope, or one across a cut link, breaks the connection as TCP
//! would: the requester gets a network error instead of its answer, never
//! silence. Links are cut symmetrically or one way, a node may be isolated,
//! and the network heals. Brokers crash (their unanswered requests fail, as
//! closed connections make them) and restart from their storage. Brokers
//! and the controller pause and go on with stale state, their clocks jump
//! ahead, and the controller crashes and a new one takes over. In half the
//! runs the controller is a quorum of three voters replicating the metadata
//! log with Raft over the same simulated network (its messages are lost,
//! duplicated, delayed and cut like any other): a voter crashes, pauses or
//! is cut off, and the brokers follow whichever voter the quorum elects.
//!
//! The storage (`SimStorage`) runs the real segmented log over a simulated
//! page cache: a process crash keeps what was written but only the last
//! stored checkpoint (the restart recovers the tail); a power loss keeps
//! what was flushed and a random part of the rest, maybe tearing the write
//! at the cut; a failing or full disk takes a log offline and its broker
//! halts until restarted. Power losses come only in runs whose brokers
//! flush every append (see [`SimConfig::storage_faults`]).
//!
//! The checker (at the end, after the network healed, every broker
//! restarted and the cluster settled, and on every read as it goes):
//!
//! - **lost write**: a record acknowledged to an acks=all producer is not in
//!   the final log at its acknowledged offset;
//! - **duplicate**: a record of an idempotent producer at two offsets;
//! - **inconsistent offsets**: two different records read at one offset
//!   during the run, or a record read at an offset that holds another (or
//!   nothing) in the final log (a dirty read past the high watermark);
//! - **phantom**: a record read that no producer sent;
//! - **poll order**: a group member reads a partition it holds out of order
//!   or skips an offset;
//! - **two owners**: two members hold one partition at the same moment,
//!   both still considering it theirs;
//! - **committed offset backwards**: a coordinator accepts a commit below
//!   one it accepted before;
//! - **processed twice**: in a group whose members commit what they read
//!   before processing it (a third of the runs), a record is processed
//!   twice (at most once is the promise);
//! - **replicas diverge**: two replicas hold different records at one
//!   offset below their high watermarks (checked as the run goes);
//! - **high watermark backwards**: a leader's high watermark goes back
//!   within its leader epoch;
//! - **out of order**: an idempotent producer's records of one partition are
//!   not in the order it sent them;
//! - **two active controllers**: two voters of the quorum act as the active
//!   controller in one Raft term;
//! - **liveness**: a send neither acknowledged nor failed by the end, a
//!   group that does not settle after healing, a core that spins.
//!
//! ```
//! use ferrolog::sim::{SimConfig, run};
//! let report = run(&SimConfig::new(7));
//! assert!(report.anomalies.is_empty(), "{report}");
//! assert_eq!(report.trace_hash, run(&SimConfig::new(7)).trace_hash);
//! ```

mod group;
mod replicas;
mod rng;
pub mod storage;

pub use crate::planted::PlantedBug;
pub use rng::SimRng;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use crate::broker::{BrokerConfig, BrokerCore};
use crate::client::member_core::MemberCore;
use crate::client::{
    Acks, AutoOffsetReset, ConsumerConfig, ConsumerCore, ProducerConfig, ProducerCore,
};
use crate::controller::{ControllerCore, QuorumSeat};
use crate::error::Error;
use crate::group::built_in_assignors;
use crate::protocol::{
    AlterPartitionReassignmentsRequest, BrokerInfo, CONTROLLER_ID, CreatePartitionsRequest,
    CreateTopicsRequest, Envelope, Message, NodeId, Peer, Request, Response, codec,
};
use crate::time::{ManualClock, Millis};
use crate::topic::{NewTopic, TopicConfig, TopicPartition};
use storage::{DiskFaults, SimStorage};

const T0: Millis = 1_700_000_000_000;
const ADMIN: Peer = Peer::Client(1);
/// Producers are clients 100.., consumers 200...
const FIRST_PRODUCER: u64 = 100;
const FIRST_CONSUMER: u64 = 200;
/// The voters of a controller quorum (controllers `CONTROLLER_ID + v`).
const VOTERS: [NodeId; 3] = [0, 1, 2];
/// A quorum's voters snapshot this often (in committed metadata records),
/// so that runs take snapshots and send them to voters far behind.
const QUORUM_SNAPSHOT_AFTER: u64 = 20;

/// What one simulated run does.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The seed every choice is drawn from.
    pub seed: u64,
    /// Brokers (the controller is one more node).
    pub brokers: u32,
    /// Topics: `sim`, `sim-b`, `sim-c`, ... (replication factor 3, min ISR
    /// 2), each of `partitions` partitions.
    pub topics: u32,
    /// Partitions of each topic (membership changes add up to two to the
    /// last topic).
    pub partitions: u32,
    /// Idempotent acks=all producers.
    pub producers: u32,
    /// Producers with acks=1 and no idempotence, sending as many records
    /// each as the others. What they have acknowledged may be lost when a
    /// leader fails over (Kafka's acks=1 promises no more), and may be
    /// duplicated by retries; what a consumer read of it must stay.
    pub leader_acks_producers: u32,
    /// Records each producer sends, spread over the fault phase.
    pub records_per_producer: u32,
    /// Consumers reading every partition as the run goes.
    pub consumers: u32,
    /// Members of a consumer group subscribed to the topics, committing what
    /// they read; members also crash, leave, join and stall during the run
    /// (0: no group, and the faults of a run without one).
    pub group_members: u32,
    /// How long faults are drawn (ms of virtual time).
    pub fault_ms: Millis,
    /// Longest one-way delay of an envelope (ms).
    pub max_delay_ms: u64,
    /// Chance per envelope (per million) that it is lost (the connection
    /// breaks).
    pub loss_per_million: u32,
    /// Chance per envelope (per million) that it arrives twice.
    pub duplicate_per_million: u32,
    /// Chance per request of a group member (per million) that it takes a
    /// slow path (200..=3000 ms) and arrives after requests sent later.
    pub slow_request_per_million: u32,
    /// Virtual time allowed after healing for everything to finish.
    pub settle_ms: Millis,
    /// Whether the faults include pauses: a broker or the controller stops
    /// for 100..=2000 ms (as in a long GC pause or a stopped VM), then goes
    /// on from the state it stopped in, its timers late and a backlog of
    /// envelopes waiting. (`false`: the faults of runs before pauses, for
    /// seeds kept from then.)
    pub pauses: bool,
    /// Whether the faults include clock jumps: in a third of the runs, the
    /// clock of a broker or the controller steps forward by 100..=5000 ms
    /// (an NTP step, a resumed VM) and stays ahead, up to twice; its
    /// deadlines come due at once. (`false`: the faults of earlier runs.)
    pub clock_jumps: bool,
    /// Whether the faults include controller crashes and restarts: the
    /// controller stops at once (brokers keep serving; nothing that needs
    /// it happens) and a new one later replays the metadata log and takes
    /// the next controller epoch. (`false`: the faults of earlier runs.)
    pub controller_crashes: bool,
    /// Whether the faults include membership changes: a broker joins the
    /// cluster (one at most), a partition moves to other brokers, the last topic
    /// gains a partition (two at most), each through the controller as an
    /// admin would. (`false`: the faults of earlier runs.)
    pub membership_changes: bool,
    /// Whether, in a third of the runs with a group, the group's members
    /// commit what they read before processing it (at most once: a record
    /// is processed only once its commit is acknowledged, never twice) instead
    /// of processing first and committing after (at least once).
    /// (`false`: every group processes first, as in earlier runs.)
    pub commit_first_groups: bool,
    /// Whether a member's application also stops polling for 1..=15 s
    /// (past `max_poll_interval_ms`, 10 s, its member leaves the group on
    /// its own and rejoins when the application polls again). (`false`:
    /// the faults of earlier runs.)
    pub member_stalls: bool,
    /// Whether the faults include storage faults: a broker's machine loses
    /// power (what its logs had not flushed is partly lost, the last write
    /// maybe torn), a broker's disk fails writes and fsyncs or fills up
    /// (its log goes offline and the broker halts until restarted on a
    /// repaired disk). Half the runs' brokers flush every append
    /// (`log_flush_interval_messages` 1); only their brokers lose power,
    /// since without a flush an acknowledged record lives in page caches
    /// only, as in Kafka.
    /// (`false`: the faults of earlier runs, whose crashes keep the page
    /// cache.)
    pub storage_faults: bool,
    /// Whether the faults include graceful stops: a broker begins Kafka's
    /// controlled shutdown (it asks the controller to fence it and move its
    /// leaderships) and stops gracefully 0..=1000 ms later, whether the
    /// handover finished or not; it restarts like a crashed broker.
    /// (`false`: the faults of earlier runs.)
    pub graceful_stops: bool,
    /// Chance per run (per million) that the controller is a quorum of
    /// three voters (Raft over the simulated network; drawn apart from the
    /// run's other choices) instead of one: brokers register and heartbeat
    /// to the voter the quorum elects, and the controller faults (crashes,
    /// pauses, clock jumps, cut links) hit one voter at a time. (0: one
    /// controller, as in earlier runs; 1,000,000: always a quorum.)
    pub controller_quorum_per_million: u32,
    /// Whether, with a quorum, the controller faults also cut one voter off
    /// from the other voters while brokers and clients still reach it.
    /// (`false`: the faults of the first quorum runs.)
    pub voter_cuts: bool,
    /// A bug to plant in the cores for this run, to prove the checker
    /// finds it (`None`: the code as it is).
    pub planted: Option<PlantedBug>,
}

impl SimConfig {
    /// The standard run for `seed`: 3 brokers, 2 topics of 3 partitions, 2
    /// idempotent producers and an acks=1 one of 40 records each, 1
    /// consumer, a group of 3 members, 3 s of faults, a controller quorum
    /// in half the runs.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            brokers: 3,
            topics: 2,
            partitions: 3,
            producers: 2,
            leader_acks_producers: 1,
            records_per_producer: 40,
            consumers: 1,
            group_members: 3,
            fault_ms: 3_000,
            max_delay_ms: 10,
            loss_per_million: 5_000,
            duplicate_per_million: 2_000,
            slow_request_per_million: 20_000,
            settle_ms: 30_000,
            pauses: true,
            clock_jumps: true,
            controller_crashes: true,
            membership_changes: true,
            storage_faults: true,
            commit_first_groups: true,
            member_stalls: true,
            graceful_stops: true,
            controller_quorum_per_million: 500_000,
            voter_cuts: true,
            planted: None,
        }
    }
}

/// What the checker found wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// An acknowledged acks=all record absent from the final log.
    LostWrite,
    /// One record at two offsets.
    Duplicate,
    /// Two different records read at one offset, or a read the final log
    /// contradicts.
    InconsistentOffsets,
    /// A record read that was never sent.
    Phantom,
    /// A send neither acknowledged nor failed by the end, a group that did
    /// not settle, or a core that spins.
    Liveness,
    /// A group member read a held partition out of order or skipped an
    /// offset.
    PollOrder,
    /// Two members held one partition at the same moment, both still
    /// considering it theirs.
    TwoOwners,
    /// A coordinator accepted a commit below the partition's committed
    /// offset (with no reset asked for).
    CommittedOffsetBackwards,
    /// Two replicas hold different records at one offset below their high
    /// watermarks.
    ReplicasDiverge,
    /// A replica's high watermark went back while its broker ran.
    HighWatermarkBackwards,
    /// A producer's records in one partition of the final log are not in
    /// the order it sent them (idempotence keeps that order).
    OutOfOrder,
    /// In a group whose members commit before processing, a record was
    /// processed twice (each time after its commit was acknowledged).
    ProcessedTwice,
    /// Two voters of the controller quorum acted as the active controller
    /// in one Raft term.
    TwoActiveControllers,
}

/// One anomaly: what, at which event, and the details.
#[derive(Debug, Clone)]
pub struct Anomaly {
    /// What kind.
    pub kind: AnomalyKind,
    /// The index of the event at which it was seen.
    pub event: u64,
    /// The records and offsets involved.
    pub detail: String,
    /// The events just before it.
    pub trace: Vec<String>,
}

/// The outcome of one run.
#[derive(Debug, Clone)]
pub struct SimReport {
    /// The seed.
    pub seed: u64,
    /// Envelopes delivered and timers fired.
    pub events: u64,
    /// Faults injected (crashes, restarts, cuts, heals, lost and duplicated
    /// envelopes).
    pub faults: u64,
    /// Records acknowledged to producers.
    pub acked: u64,
    /// What the checker found.
    pub anomalies: Vec<Anomaly>,
    /// A hash (FNV-1a, 64 bits) of every event of the run, encoded with the
    /// wire codec: equal for equal runs.
    pub trace_hash: u64,
    /// Virtual time the run took (ms).
    pub virtual_ms: Millis,
    /// Whether the controller was a Raft quorum of three voters.
    pub controller_quorum: bool,
    /// How many times a voter of the quorum became the active controller
    /// (0 without a quorum).
    pub controller_elections: u64,
}

impl std::fmt::Display for SimReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "seed={} events={} faults={} acked={} anomalies={} trace={:016x}",
            self.seed,
            self.events,
            self.faults,
            self.acked,
            self.anomalies.len(),
            self.trace_hash
        )?;
        if self.controller_quorum {
            write!(f, " quorum elections={}", self.controller_elections)?;
        }
        for a in &self.anomalies {
            write!(f, "\n  {:?} at event {}: {}", a.kind, a.event, a.detail)?;
            for line in &a.trace {
                write!(f, "\n      {line}")?;
            }
        }
        Ok(())
    }
}

/// One node of a simulated world: any core, driven through the same four
/// calls (the consumer's fetches may wait 100 ms at the broker).
pub(crate) enum Node {
    Broker(Box<BrokerCore>),
    Controller(Box<ControllerCore>),
    Producer(Box<ProducerCore>),
    Consumer(Box<ConsumerCore>),
    Member(Box<MemberCore>),
}

impl Node {
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        match self {
            Node::Broker(c) => c.handle_message(now, envelope),
            Node::Controller(c) => c.handle_message(now, envelope),
            Node::Producer(c) => c.handle_message(now, envelope),
            Node::Consumer(c) => c.handle_message(now, envelope),
            Node::Member(c) => c.handle_message(now, envelope),
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Millis) {
        match self {
            Node::Broker(c) => c.handle_timeout(now),
            Node::Controller(c) => c.handle_timeout(now),
            Node::Producer(c) => c.handle_timeout(now),
            Node::Consumer(c) => c.handle_timeout(now, 100),
            Node::Member(c) => c.handle_timeout(now),
        }
    }

    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        match self {
            Node::Broker(c) => c.poll_timeout(),
            Node::Controller(c) => c.poll_timeout(),
            Node::Producer(c) => c.poll_timeout(),
            Node::Consumer(c) => c.poll_timeout(),
            Node::Member(c) => c.poll_timeout(),
        }
    }

    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        match self {
            Node::Broker(c) => c.poll_transmit(),
            Node::Controller(c) => c.poll_transmit(),
            Node::Producer(c) => c.poll_transmit(),
            Node::Consumer(c) => c.poll_transmit(),
            Node::Member(c) => c.poll_transmit(),
        }
    }
}

/// A sent record: who sent it, where it went, and what became of it.
#[derive(Debug, Clone)]
struct Sent {
    partition: u32,
    /// Sent with acks=all by an idempotent producer: its acknowledgement
    /// promises the record stays, once.
    acks_all: bool,
    /// `Some(Ok(offset))` acknowledged, `Some(Err)` failed.
    outcome: Option<Result<u64, String>>,
}

/// The simulated world: nodes, the network, the clock, the workload and
/// the checker's notes.
struct World {
    config: SimConfig,
    rng: SimRng,
    now: Millis,
    clock: ManualClock,
    storage: Arc<SimStorage>,
    broker_config: BrokerConfig,
    nodes: BTreeMap<Peer, Node>,
    /// Envelopes on their way, by arrival time and sending order.
    network: BTreeMap<(Millis, u64), Envelope>,
    sent_envelopes: u64,
    /// Cut links (from, to).
    cut: BTreeSet<(Peer, Peer)>,
    crashed: BTreeSet<NodeId>,
    /// Brokers in controlled shutdown, and when each stops.
    stopping: BTreeMap<NodeId, Millis>,
    /// Requests each node holds unanswered: a crash fails them.
    owed: BTreeMap<Peer, BTreeSet<(Peer, u64)>>,
    admin_answers: Vec<Envelope>,
    hash: u64,
    events: u64,
    faults: u64,
    /// Records by value, and batches waiting for their outcome.
    sent: BTreeMap<String, Sent>,
    batches: BTreeMap<(Peer, u64), Vec<(u32, String)>>,
    /// What the consumers read: (partition, offset) → value.
    read: BTreeMap<(u32, u64), (String, u64)>,
    anomalies: Vec<Anomaly>,
    /// The last events, for the trace printed with an anomaly.
    recent: std::collections::VecDeque<String>,
    /// Print every event (`FERROLOG_SIM_TRACE=1`).
    print_trace: bool,
    last_view: String,
    /// A busy loop was found: the run stops.
    stuck: bool,
    /// Links whose envelopes wait until the given time (a stalled
    /// connection), in order.
    stalls: BTreeMap<(Peer, Peer), Millis>,
    /// Paused nodes and when each goes on.
    paused: BTreeMap<Peer, Millis>,
    /// How far each node's clock runs ahead of virtual time (a jumped
    /// clock stays ahead, across restarts too).
    ahead: BTreeMap<Peer, Millis>,
    /// Until when two owners of a partition are no anomaly (after a clock
    /// jump; see `check_owners`).
    owners_unchecked_until: Millis,
    /// Clock jumps this run may still make: a third of the runs make up to
    /// two, the others none, so that most runs check single ownership
    /// throughout.
    jumps_left: u32,
    /// Brokers in the cluster (more than `config.brokers` once one joined).
    brokers: u32,
    /// The topics, and how a partition's number in the run (what the
    /// checks key by) maps to a topic and its partition.
    topics: Topics,
    /// Partitions of all topics (more than `topics × partitions` once the
    /// last topic gained some).
    partitions: u32,
    /// The group's members commit before processing.
    commit_first: bool,
    /// The brokers flush every append, and may lose power.
    flush_each_append: bool,
    /// Partition counts asked for, by the admin request's correlation id.
    asked_partitions: BTreeMap<u64, u32>,
    next_admin_request: u64,
    /// The group's members, as their applications see them.
    apps: Vec<group::GroupApp>,
    next_member: u64,
    group_checks: group::GroupChecks,
    replica_checks: replicas::ReplicaChecks,
    /// The controller is a quorum of [`VOTERS`].
    quorum: bool,
    /// The voters acting as the active controller, with their Raft term.
    active_controllers: BTreeMap<Peer, u64>,
    /// How many times a voter became the active controller.
    elections: u64,
}

/// How many recent events an anomaly shows.
const RECENT_EVENTS: usize = 12;

/// More events than this at one virtual moment is a busy loop.
const MAX_EVENTS_AT_ONE_MOMENT: u32 = 100_000;

/// A short description of an envelope, for traces.
fn describe(envelope: &Envelope) -> String {
    let what = match &envelope.message {
        Message::Request(r) => format!("{} request", r.api_name()),
        Message::Response(Ok(r @ Response::Produce(_))) => {
            let mut text = format!("{r:?}");
            text.truncate(300);
            format!("Produce answer {text}")
        }
        Message::Response(Ok(r)) => format!("{} answer", r.api_name()),
        Message::Response(Err(e)) => format!("error {e}"),
    };
    format!(
        "{:?} -> {:?} #{}: {what}",
        envelope.from, envelope.to, envelope.correlation_id
    )
}

impl World {
    fn new(config: SimConfig) -> crate::Result<Self> {
        let clock = ManualClock::new(T0);
        let storage = Arc::new(SimStorage::new(
            Arc::new(clock.clone()),
            config.seed ^ 0x5eed_d15c,
        ));
        let broker_config = BrokerConfig {
            replica_lag_time_max_ms: 400,
            replica_fetch_wait_max_ms: 50,
            broker_heartbeat_interval_ms: 20,
            broker_session_timeout_ms: 200,
            ..BrokerConfig::default()
        };
        let topics = Topics::new(config.topics.max(1), config.partitions);
        let (brokers, partitions) = (config.brokers, topics.initial_partitions());
        let mut world = Self {
            rng: SimRng::new(config.seed),
            config,
            now: T0,
            clock,
            storage,
            broker_config,
            nodes: BTreeMap::new(),
            network: BTreeMap::new(),
            sent_envelopes: 0,
            cut: BTreeSet::new(),
            crashed: BTreeSet::new(),
            stopping: BTreeMap::new(),
            owed: BTreeMap::new(),
            admin_answers: Vec::new(),
            hash: 0xcbf2_9ce4_8422_2325,
            events: 0,
            faults: 0,
            sent: BTreeMap::new(),
            batches: BTreeMap::new(),
            read: BTreeMap::new(),
            anomalies: Vec::new(),
            recent: std::collections::VecDeque::new(),
            print_trace: std::env::var_os("FERROLOG_SIM_TRACE").is_some(),
            last_view: String::new(),
            stuck: false,
            stalls: BTreeMap::new(),
            paused: BTreeMap::new(),
            ahead: BTreeMap::new(),
            owners_unchecked_until: 0,
            jumps_left: 0,
            brokers,
            topics,
            partitions,
            flush_each_append: false,
            commit_first: false,
            asked_partitions: BTreeMap::new(),
            next_admin_request: 1,
            apps: Vec::new(),
            next_member: 0,
            group_checks: group::GroupChecks::default(),
            replica_checks: replicas::ReplicaChecks::default(),
            quorum: false,
            active_controllers: BTreeMap::new(),
            elections: 0,
        };
        if world.config.clock_jumps && world.rng.chance(333_333) {
            world.jumps_left = 2;
        }
        // Drawn apart from the run's source, so that runs draw as before.
        world.commit_first = world.config.commit_first_groups
            && world.config.group_members > 0
            && SimRng::new(world.config.seed ^ 0xc0ff_ee00).chance(333_333);
        if world.config.storage_faults && world.rng.chance(500_000) {
            world.flush_each_append = true;
            world.broker_config.log_flush_interval_messages = Some(1);
        }
        // Drawn apart from the run's source too.
        world.quorum = SimRng::new(world.config.seed ^ 0x0a0e_5eed)
            .chance(world.config.controller_quorum_per_million);
        for peer in world.controller_peers() {
            world.start_controller(peer)?;
        }
        for id in 0..world.config.brokers {
            world.start_broker(id)?;
        }
        let bootstrap: Vec<NodeId> = (0..world.config.brokers).collect();
        let idempotent = u64::from(world.config.producers);
        for i in 0..idempotent + u64::from(world.config.leader_acks_producers) {
            let acks_all = i < idempotent;
            let config = ProducerConfig {
                acks: if acks_all { Acks::All } else { Acks::Leader },
                linger_ms: 0,
                enable_idempotence: acks_all,
                delivery_timeout_ms: 600_000,
                ..ProducerConfig::default()
            };
            let peer = Peer::Client(FIRST_PRODUCER + i);
            let core = ProducerCore::new(peer, config, bootstrap.clone(), i as u32 + 1);
            world.nodes.insert(peer, Node::Producer(Box::new(core)));
        }
        for i in 0..u64::from(world.config.consumers) {
            let config = ConsumerConfig {
                auto_offset_reset: AutoOffsetReset::Earliest,
                ..ConsumerConfig::default()
            };
            let peer = Peer::Client(FIRST_CONSUMER + i);
            let core = ConsumerCore::new(peer, config, bootstrap.clone());
            world.nodes.insert(peer, Node::Consumer(Box::new(core)));
        }
        let peers: Vec<Peer> = world.nodes.keys().copied().collect();
        for peer in peers {
            world.drain(peer);
        }
        Ok(world)
    }

    /// Starts the controller `peer`: a lone one replays its metadata log
    /// and takes the next controller epoch; a quorum's voter opens its Raft
    /// log and waits for the quorum to elect it. What it sends first is
    /// taken by the caller.
    fn start_controller(&mut self, peer: Peer) -> crate::Result<()> {
        let now = self.now_at(peer, self.now);
        let session = self.broker_config.broker_session_timeout_ms as Millis;
        let controller = if self.quorum {
            let voter = node_of(peer).saturating_sub(CONTROLLER_ID);
            let seat = QuorumSeat {
                voter,
                voters: &VOTERS,
                seed: self.config.seed,
                snapshot_after: QUORUM_SNAPSHOT_AFTER,
            };
            ControllerCore::quorum(&seat, &*self.storage, now, session, 20)?
        } else {
            // A joined broker is in the metadata log, which the controller
            // replays.
            let infos: Vec<BrokerInfo> = (0..self.config.brokers)
                .map(|id| BrokerInfo {
                    id,
                    rack: None,
                    endpoint: None,
                })
                .collect();
            ControllerCore::load(CONTROLLER_ID, &*self.storage, infos, now, session, 20)?
        };
        self.nodes
            .insert(peer, Node::Controller(Box::new(controller)));
        Ok(())
    }

    /// The controllers: the lone one, or the quorum's voters.
    fn controller_peers(&self) -> Vec<Peer> {
        if self.quorum {
            VOTERS
                .iter()
                .map(|&v| Peer::Broker(CONTROLLER_ID + v))
                .collect()
        } else {
            vec![Peer::Broker(CONTROLLER_ID)]
        }
    }

    /// The controller an admin asks (as one that tries each in turn would
    /// end up asking): the first that acts as the active one, or the first.
    fn admin_target(&self) -> Peer {
        self.controller_peers()
            .into_iter()
            .find(|p| matches!(self.nodes.get(p), Some(Node::Controller(c)) if c.metadata().is_some()))
            .unwrap_or(Peer::Broker(CONTROLLER_ID))
    }

    /// Notes a voter that became (or stopped being) the active controller;
    /// two active in one Raft term is an anomaly.
    fn check_controllers(&mut self, peer: Peer) {
        if !self.quorum {
            return;
        }
        let term = match self.nodes.get(&peer) {
            Some(Node::Controller(c)) => c.active_term(),
            _ => None,
        };
        let Some(term) = term else {
            self.active_controllers.remove(&peer);
            return;
        };
        if self.active_controllers.insert(peer, term) == Some(term) {
            return;
        }
        self.elections += 1;
        self.note(format!("active controller {peer:?} term {term}").as_bytes());
        self.log(|| format!("{peer:?} is the active controller in term {term}"));
        let others: Vec<Peer> = self
            .active_controllers
            .iter()
            .filter(|&(&p, &t)| p != peer && t == term)
            .map(|(&p, _)| p)
            .collect();
        if !others.is_empty() {
            self.anomaly(
                AnomalyKind::TwoActiveControllers,
                format!("{peer:?} and {others:?} active in term {term}"),
            );
        }
    }

    fn start_broker(&mut self, id: NodeId) -> crate::Result<()> {
        self.forget_replicas(id);
        let mut broker = BrokerCore::new(
            id,
            self.broker_config.clone(),
            self.storage.clone(),
            built_in_assignors(),
            self.now_at(Peer::Broker(id), self.now),
        )?;
        if self.quorum {
            // As a node's broker does: it registers with whichever voter
            // is the active controller.
            let info = BrokerInfo {
                id,
                rack: None,
                endpoint: None,
            };
            let voters = VOTERS.iter().map(|&v| CONTROLLER_ID + v).collect();
            broker.register_as(info, voters);
        }
        self.nodes
            .insert(Peer::Broker(id), Node::Broker(Box::new(broker)));
        self.drain(Peer::Broker(id));
        Ok(())
    }

    /// Remembers an event for traces (and prints it when asked to).
    fn log(&mut self, line: impl FnOnce() -> String) {
        if self.print_trace || RECENT_EVENTS > 0 {
            let line = format!("[{} t={}] {}", self.events, self.now - T0, line());
            if self.print_trace {
                eprintln!("{line}");
            }
            if self.recent.len() == RECENT_EVENTS {
                self.recent.pop_front();
            }
            self.recent.push_back(line);
        }
    }

    fn note(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn anomaly(&mut self, kind: AnomalyKind, detail: String) {
        let trace: Vec<String> = self.recent.iter().cloned().collect();
        self.anomalies.push(Anomaly {
            kind,
            event: self.events,
            detail,
            trace,
        });
    }

    /// Puts an envelope on the network: delayed, maybe duplicated, maybe
    /// lost (which the requester sees as a broken connection).
    fn send(&mut self, envelope: Envelope) {
        let (from, to) = (envelope.from, envelope.to);
        let lost = self.cut.contains(&(from, to))
            || (to != ADMIN && self.rng.chance(self.config.loss_per_million));
        if lost {
            self.faults += 1;
            // The connection breaks: the requester learns it.
            let failed = match &envelope.message {
                Message::Request(_) => {
                    crate::transport::undeliverable(&envelope, "connection lost")
                }
                Message::Response(_) => Some(Envelope::connection_closed(
                    node_of(from),
                    to,
                    envelope.correlation_id,
                    "connection lost",
                )),
            };
            if let Some(failed) = failed {
                let at = self.now + self.rng.between(1, self.config.max_delay_ms) as Millis;
                self.enqueue(at, failed);
            }
            return;
        }
        let mut at = self.now + self.rng.between(1, self.config.max_delay_ms) as Millis;
        if let Some(&until) = self.stalls.get(&(from, to)) {
            at = at.max(until);
        }
        if group::is_member(from)
            && matches!(envelope.message, Message::Request(_))
            && self.rng.chance(self.config.slow_request_per_million)
        {
            // A request that takes the slow path: it arrives, much later,
            // after requests the member sent after it.
            self.faults += 1;
            at += self.rng.between(200, 3_000) as Millis;
        }
        if to != ADMIN && self.rng.chance(self.config.duplicate_per_million) {
            self.faults += 1;
            let again = at + self.rng.between(0, self.config.max_delay_ms) as Millis;
            self.enqueue(again, envelope.clone());
        }
        self.enqueue(at, envelope);
    }

    fn enqueue(&mut self, at: Millis, envelope: Envelope) {
        self.sent_envelopes += 1;
        self.network.insert((at, self.sent_envelopes), envelope);
    }

    /// Takes what `peer` wants sent, and what its producer finished.
    fn drain(&mut self, peer: Peer) {
        let mut out = Vec::new();
        let mut done = Vec::new();
        let Some(node) = self.nodes.get_mut(&peer) else {
            return;
        };
        while let Some(envelope) = node.poll_transmit() {
            out.push(envelope);
        }
        if let Node::Producer(producer) = node {
            while let Some(completion) = producer.poll_completion() {
                done.push(completion);
            }
        }
        for envelope in out {
            if let Message::Response(_) = envelope.message
                && let Some(owed) = self.owed.get_mut(&peer)
            {
                owed.remove(&(envelope.to, envelope.correlation_id));
            }
            match &envelope.message {
                Message::Request(Request::OffsetCommit(commit)) => {
                    let offsets = commit
                        .offsets
                        .iter()
                        .map(|(tp, o)| (self.topics.index(tp), o.offset))
                        .collect();
                    self.note_commit(peer, envelope.correlation_id, offsets);
                }
                Message::Response(Ok(Response::OffsetCommit)) => {
                    self.commit_accepted(envelope.to, envelope.correlation_id);
                }
                Message::Response(Err(_)) => {
                    self.commit_indeterminate(envelope.to, envelope.correlation_id);
                }
                _ => {}
            }
            self.send(envelope);
        }
        if let Some(Node::Controller(_)) = self.nodes.get(&peer) {
            self.check_controllers(peer);
        }
        if let Some(Node::Broker(broker)) = self.nodes.get(&peer)
            && let Some(reason) = broker.halted()
        {
            let reason = reason.to_string();
            self.note(b"halt");
            self.log(|| format!("{peer:?} halts: {reason}"));
            self.crash(node_of(peer));
        }
        for completion in done {
            // A split batch's parts complete one by one.
            let parts = completion.first_index..completion.first_index + completion.records;
            let key = (peer, completion.batch);
            let all = self.batches.remove(&key).unwrap_or_default();
            let (records, rest): (Vec<_>, Vec<_>) = all
                .into_iter()
                .partition(|(index, _)| parts.contains(index));
            if !rest.is_empty() {
                self.batches.insert(key, rest);
            }
            for (index, value) in records {
                let index = index - completion.first_index;
                if self.print_trace {
                    let outcome = completion.outcome.clone();
                    self.log(|| format!("{peer:?} {value} -> {outcome:?} + {index}"));
                }
                if let Some(sent) = self.sent.get_mut(&value) {
                    sent.outcome = Some(match &completion.outcome {
                        Ok(Some(base)) => Ok(base + u64::from(index)),
                        Ok(None) => Err("no offset for acks=all".into()),
                        Err(e) => Err(e.to_string()),
                    });
                }
            }
        }
    }

    /// Delivers one envelope.
    fn deliver(&mut self, envelope: Envelope) {
        if let Some(&until) = self.paused.get(&envelope.to)
            && until > self.now
        {
            // A paused node handles it, in order, when it goes on.
            self.enqueue(until, envelope);
            return;
        }
        self.events += 1;
        self.note(&self.now.to_be_bytes());
        self.note(&codec::encode(&envelope));
        self.log(|| describe(&envelope));
        let to = envelope.to;
        if to == ADMIN {
            if let Some(total) = self.asked_partitions.remove(&envelope.correlation_id)
                && let Message::Response(Ok(Response::CreatePartitions(r))) = &envelope.message
                && r.topics.iter().all(|(_, outcome)| outcome.is_ok())
            {
                // The producers write to the new partitions from now on.
                self.partitions = self.partitions.max(total);
            }
            self.admin_answers.push(envelope);
            return;
        }
        let now = self.now_at(to, self.now);
        let Some(node) = self.nodes.get_mut(&to) else {
            // A crashed node: its requests fail as a refused connection.
            if let Some(answer) = crate::transport::undeliverable(&envelope, "down") {
                let at = self.now + 1;
                self.enqueue(at, answer);
            }
            return;
        };
        if let Message::Request(request) = &envelope.message
            && request.expects_answer()
        {
            let key = (envelope.from, envelope.correlation_id);
            self.owed.entry(to).or_default().insert(key);
        }
        node.handle_message(now, envelope);
        self.drain(to);
        if self.print_trace {
            self.log_leadership();
        }
    }

    /// Prints the controller's view of every partition when it changed.
    fn log_leadership(&mut self) {
        let Some(Node::Controller(c)) = self.nodes.get(&self.admin_target()) else {
            return;
        };
        let Some(metadata) = c.metadata() else {
            return;
        };
        let view = format!(
            "{:?}",
            self.topics
                .names
                .iter()
                .filter_map(|name| metadata.topics.get(&**name))
                .flat_map(|topic| &topic.partitions)
                .map(|p| (p.partition, p.leader, p.leader_epoch, p.isr.clone()))
                .collect::<Vec<_>>()
        );
        if self.recent.back().is_none_or(|l| !l.ends_with(&view)) && self.last_view != view {
            self.last_view = view.clone();
            self.log(|| format!("controller: {view}"));
        }
    }

    /// Moves time to `at` and fires the timers due then.
    fn tick(&mut self, at: Millis) {
        self.now = at;
        self.clock.set(at);
        for peer in self.due(at) {
            self.events += 1;
            self.note(b"tick");
            self.note(&at.to_be_bytes());
            self.log(|| format!("timer {peer:?}"));
            let now = self.now_at(peer, at);
            if let Some(node) = self.nodes.get_mut(&peer) {
                node.handle_timeout(now);
            }
            self.drain(peer);
        }
    }

    /// The nodes whose timers are due at `at`.
    fn due(&self, at: Millis) -> Vec<Peer> {
        self.nodes
            .iter()
            .filter(|(p, n)| self.timer_of(p, n).is_some_and(|t| t <= at))
            .map(|(&p, _)| p)
            .collect()
    }

    /// What `peer`'s clock reads at virtual time `at`.
    fn now_at(&self, peer: Peer, at: Millis) -> Millis {
        at + self.ahead.get(&peer).copied().unwrap_or(0)
    }

    /// When `node`'s timer fires in virtual time: its deadline (read on
    /// its own clock), or the end of its pause.
    fn timer_of(&self, peer: &Peer, node: &Node) -> Option<Millis> {
        let at = node
            .poll_timeout()?
            .saturating_sub(self.ahead.get(peer).copied().unwrap_or(0));
        Some(match self.paused.get(peer) {
            Some(&until) if until > at => until,
            _ => at,
        })
    }

    /// The next moment anything happens, at or after now.
    fn next_event(&self) -> Option<Millis> {
        let network = self.network.keys().next().map(|&(at, _)| at);
        let timers = self
            .nodes
            .iter()
            .filter_map(|(p, n)| self.timer_of(p, n))
            .min();
        [network, timers]
            .into_iter()
            .flatten()
            .min()
            .map(|t| t.max(self.now))
    }

    /// Runs every event up to `until`. A node that keeps asking for its
    /// timer at the same moment without moving on (a busy loop, which a
    /// real process would spin on) is an anomaly and stops the run there.
    fn run_until(&mut self, until: Millis) {
        let mut same_moment = 0u32;
        let mut moment = self.now;
        while let Some(at) = self.next_event() {
            if at > until || self.stuck {
                break;
            }
            if at == moment {
                same_moment += 1;
                if same_moment > MAX_EVENTS_AT_ONE_MOMENT {
                    self.stuck = true;
                    let spinning = self.due(at);
                    let detail = format!(
                        "{MAX_EVENTS_AT_ONE_MOMENT} events at t={} without time moving; \
                         timers due: {spinning:?}",
                        at - T0
                    );
                    self.anomaly(AnomalyKind::Liveness, detail);
                    break;
                }
            } else {
                moment = at;
                same_moment = 0;
            }
            if let Some(entry) = self.network.first_entry()
                && entry.key().0 <= at
            {
                let envelope = entry.remove();
                self.now = self.now.max(at);
                self.clock.set(self.now);
                self.deliver(envelope);
                continue;
            }
            self.tick(at);
        }
        self.now = self.now.max(until);
        self.clock.set(self.now);
    }

    /// Crashes broker `id`: its state is gone, what it owed fails.
    fn crash(&mut self, id: NodeId) {
        let peer = Peer::Broker(id);
        if let Some(Node::Broker(mut broker)) = self.nodes.remove(&peer) {
            broker.crash();
        }
        self.stopping.remove(&id);
        self.crashed.insert(id);
        self.connections_closed(id);
    }

    /// Broker `id` begins a controlled shutdown; it stops by
    /// [`finish_stops`](Self::finish_stops) after `delay_ms`.
    fn begin_graceful_stop(&mut self, id: NodeId, delay_ms: Millis) {
        let peer = Peer::Broker(id);
        let now = self.now_at(peer, self.now);
        if let Some(Node::Broker(broker)) = self.nodes.get_mut(&peer) {
            broker.begin_controlled_shutdown(now);
            self.stopping.insert(id, self.now + delay_ms);
            self.drain(peer);
        }
    }

    /// Stops the brokers in controlled shutdown whose time came (`all`:
    /// every one): each answers what waits, flushes and closes its logs,
    /// and is down until restarted.
    fn finish_stops(&mut self, all: bool) {
        let due: Vec<NodeId> = self
            .stopping
            .iter()
            .filter(|&(_, &at)| all || at <= self.now)
            .map(|(&id, _)| id)
            .collect();
        for id in due {
            let peer = Peer::Broker(id);
            self.stopping.remove(&id);
            let now = self.now_at(peer, self.now);
            let stopped = match self.nodes.get_mut(&peer) {
                Some(Node::Broker(broker)) => broker.shutdown(now),
                _ => continue,
            };
            self.note(format!("stopped {id}").as_bytes());
            self.log(|| format!("broker {id} stops gracefully: {stopped:?}"));
            self.drain(peer);
            self.nodes.remove(&peer);
            self.crashed.insert(id);
            self.connections_closed(id);
        }
    }

    /// Crashes the controller `peer`: it stops without closing its
    /// metadata log.
    fn crash_controller(&mut self, peer: Peer) {
        if let Some(Node::Controller(mut controller)) = self.nodes.remove(&peer) {
            controller.crash();
        }
        self.active_controllers.remove(&peer);
        self.connections_closed(node_of(peer));
    }

    /// Node `id` is gone: it is no longer paused, and its connections close.
    fn connections_closed(&mut self, id: NodeId) {
        let peer = Peer::Broker(id);
        self.paused.remove(&peer);
        // Its connections close: answers on their way to it are lost (a
        // restarted broker numbers its requests afresh and must not take
        // them for its own).
        self.network
            .retain(|_, e| !(e.to == peer && matches!(e.message, Message::Response(_))));
        for (requester, correlation_id) in self.owed.remove(&peer).unwrap_or_default() {
            // A commit it owed an answer may have been written all the same.
            self.commit_indeterminate(requester, correlation_id);
            let failed = Envelope::connection_closed(id, requester, correlation_id, "crashed");
            let at = self.now + 1;
            self.enqueue(at, failed);
        }
    }

    /// Draws and applies one fault.
    fn fault(&mut self) {
        self.faults += 1;
        let brokers = self.brokers;
        let peers: Vec<Peer> = (0..brokers)
            .map(Peer::Broker)
            .chain(self.controller_peers())
            .collect();
        // A run with a group has its faults too; the optional kinds are
        // numbered after the others, so that a run without them draws as
        // before (their arms come first: with no group, a number of theirs
        // is one the group's faults have with one).
        let mut kinds = if self.config.group_members > 0 { 9 } else { 6 };
        let mut optional = |on: bool| {
            on.then(|| {
                kinds += 1;
                kinds - 1
            })
        };
        let pause = optional(self.config.pauses);
        let jump = optional(self.config.clock_jumps);
        let controller = optional(self.config.controller_crashes);
        let membership = optional(self.config.membership_changes);
        let storage = optional(self.config.storage_faults);
        let graceful = optional(self.config.graceful_stops);
        self.finish_stops(false);
        let down = (self.crashed.len() + self.stopping.len()) as u32;
        match self.rng.below(kinds) {
            kind if Some(kind) == graceful => {
                // Keeping at least two up (min ISR 2), as for crashes.
                let up: Vec<NodeId> = (0..brokers)
                    .filter(|b| !self.crashed.contains(b) && !self.stopping.contains_key(b))
                    .collect();
                if down + 2 < brokers
                    && let Some(&id) = self.rng.pick(&up)
                {
                    let delay = self.rng.below(1_001) as Millis;
                    self.note(format!("graceful stop {id}").as_bytes());
                    self.log(|| format!("broker {id} begins a controlled shutdown"));
                    self.begin_graceful_stop(id, delay);
                }
            }
            kind if Some(kind) == storage => self.storage_fault(),
            kind if Some(kind) == membership => self.change_membership(),
            kind if Some(kind) == controller => self.crash_or_restart_controller(),
            kind if Some(kind) == jump => self.jump_clock(&peers),
            kind if Some(kind) == pause => self.pause(&peers),
            // Crash a broker, keeping at least two up (min ISR 2).
            0 if down + 2 < brokers => {
                let up: Vec<NodeId> = (0..brokers).filter(|b| !self.crashed.contains(b)).collect();
                if let Some(&id) = self.rng.pick(&up) {
                    self.note(format!("crash {id}").as_bytes());
                    self.log(|| format!("crash {id}"));
                    self.crash(id);
                }
            }
            1 => {
                let down: Vec<NodeId> = self.crashed.iter().copied().collect();
                if let Some(&id) = self.rng.pick(&down) {
                    self.note(format!("restart {id}").as_bytes());
                    self.log(|| format!("restart {id}"));
                    self.crashed.remove(&id);
                    // Its disk was repaired first, if it failed.
                    self.storage.set_faults(id, DiskFaults::default());
                    if let Err(e) = self.start_broker(id) {
                        self.anomaly(AnomalyKind::Liveness, format!("broker {id} restart: {e}"));
                    }
                }
            }
            // Cut a link, one way or both.
            2 | 3 => {
                let (Some(&a), Some(&b)) = (self.rng.pick(&peers), self.rng.pick(&peers)) else {
                    return;
                };
                if a != b {
                    self.note(format!("cut {a:?} {b:?}").as_bytes());
                    self.log(|| format!("cut {a:?} {b:?}"));
                    self.cut.insert((a, b));
                    if self.rng.chance(500_000) {
                        self.cut.insert((b, a));
                    }
                }
            }
            // Isolate a node from every other.
            4 => {
                if let Some(&a) = self.rng.pick(&peers) {
                    self.note(format!("isolate {a:?}").as_bytes());
                    self.log(|| format!("isolate {a:?}"));
                    let others: Vec<Peer> = self.nodes.keys().copied().collect();
                    for b in others.into_iter().filter(|&b| b != a) {
                        self.cut.insert((a, b));
                        self.cut.insert((b, a));
                    }
                }
            }
            // A member crashes, or leaves, or a new one joins, or its
            // application stops polling for a while.
            6 => {
                let members = self.apps.len() as u64;
                let choices = if self.config.member_stalls { 4 } else { 3 };
                match self.rng.below(choices) {
                    3 => {
                        let index = self.rng.below(members.max(1)) as usize;
                        let until = self.now + self.rng.between(1_000, 15_000) as Millis;
                        self.note(format!("member {index} stops polling {until}").as_bytes());
                        self.stall_application(index, until);
                    }
                    0 if members > 1 => {
                        let index = self.rng.below(members) as usize;
                        self.note(format!("crash member {index}").as_bytes());
                        self.crash_member(index);
                    }
                    1 if members > 1 => {
                        let index = self.rng.below(members) as usize;
                        self.note(format!("leave member {index}").as_bytes());
                        self.leave_member(index);
                    }
                    _ if members <= u64::from(self.config.group_members) => {
                        self.note(b"start member");
                        self.start_member();
                    }
                    _ => {}
                }
            }
            // A member's connection to a broker stalls (both ways): what it
            // sends arrives, in order, only when the stall ends.
            7 => {
                let members: Vec<Peer> = self.apps.iter().map(|a| a.member).collect();
                let (Some(&member), Some(&broker)) = (
                    self.rng.pick(&members),
                    self.rng.pick(&peers[..brokers as usize]),
                ) else {
                    return;
                };
                let until = self.now + self.rng.between(500, 4_000) as Millis;
                self.note(format!("stall {member:?} {broker:?} {until}").as_bytes());
                self.log(|| format!("stall {member:?} <-> {broker:?} until t={}", until - T0));
                self.stalls.insert((member, broker), until);
                self.stalls.insert((broker, member), until);
            }
            _ => {
                self.note(b"heal");
                self.cut.clear();
            }
        }
    }

    /// A storage fault: a broker's machine loses power (in runs whose topic
    /// flushes every append), a disk starts failing or fills up, or every
    /// disk is repaired.
    fn storage_fault(&mut self) {
        let brokers = self.brokers;
        let down = (self.crashed.len() + self.stopping.len()) as u32;
        match self.rng.below(4) {
            0 if self.flush_each_append && down + 2 < brokers => {
                let up: Vec<NodeId> = (0..brokers).filter(|b| !self.crashed.contains(b)).collect();
                if let Some(&id) = self.rng.pick(&up) {
                    self.note(format!("power loss {id}").as_bytes());
                    self.crash(id);
                    let lost = self.storage.power_loss(id);
                    self.log(|| format!("power loss {id}: {lost} segments lost writes"));
                }
            }
            1 | 2 => {
                let id = self.rng.below(u64::from(brokers)) as NodeId;
                let faults = if self.rng.chance(500_000) {
                    DiskFaults {
                        error_per_million: self.rng.between(10_000, 300_000) as u32,
                        space_left: None,
                    }
                } else {
                    DiskFaults {
                        error_per_million: 0,
                        space_left: Some(self.rng.below(20_000)),
                    }
                };
                self.note(format!("disk {id} {faults:?}").as_bytes());
                self.log(|| format!("disk of broker {id} fails: {faults:?}"));
                self.storage.set_faults(id, faults);
            }
            _ => {
                self.note(b"disks repaired");
                self.log(|| "disks repaired".into());
                self.storage.clear_faults();
            }
        }
    }

    /// The controller (with a quorum: one voter) crashes, or starts again
    /// after a crash; or, with a quorum, one voter is cut off from the
    /// other voters while brokers and clients still reach it (a deposed
    /// active controller they may go on asking).
    fn crash_or_restart_controller(&mut self) {
        let peers = self.controller_peers();
        let peer = if self.quorum {
            peers[self.rng.below(peers.len() as u64) as usize]
        } else {
            peers[0]
        };
        if self.quorum && self.config.voter_cuts && self.rng.chance(333_333) {
            self.note(b"cut voter");
            self.note(&node_of(peer).to_be_bytes());
            self.log(|| format!("cut {peer:?} off from the other voters"));
            for &other in peers.iter().filter(|&&p| p != peer) {
                self.cut.insert((peer, other));
                self.cut.insert((other, peer));
            }
            return;
        }
        if self.nodes.contains_key(&peer) {
            self.note(b"crash controller");
            if self.quorum {
                self.note(&node_of(peer).to_be_bytes());
            }
            self.log(|| format!("crash controller {peer:?}"));
            self.crash_controller(peer);
            return;
        }
        self.note(b"restart controller");
        if self.quorum {
            self.note(&node_of(peer).to_be_bytes());
        }
        self.log(|| format!("restart controller {peer:?}"));
        match self.start_controller(peer) {
            Ok(()) => self.drain(peer),
            Err(e) => self.anomaly(AnomalyKind::Liveness, format!("controller restart: {e}")),
        }
    }

    /// The clock of one of `peers` jumps ahead (if the run has jumps left).
    fn jump_clock(&mut self, peers: &[Peer]) {
        if self.jumps_left == 0 {
            return;
        }
        self.jumps_left -= 1;
        let Some(&peer) = self.rng.pick(peers) else {
            return;
        };
        let by = self.rng.between(100, 5_000) as Millis;
        self.note(format!("jump {peer:?} {by}").as_bytes());
        self.log(|| format!("clock of {peer:?} jumps {by} ms ahead"));
        *self.ahead.entry(peer).or_insert(0) += by;
        self.owners_unchecked_until = self
            .owners_unchecked_until
            .max(self.now + by + group::SESSION_TIMEOUT_MS);
    }

    /// One of `peers` (if running) pauses for 100..=2000 ms.
    fn pause(&mut self, peers: &[Peer]) {
        let Some(&peer) = self.rng.pick(peers) else {
            return;
        };
        if !self.nodes.contains_key(&peer) {
            return;
        }
        let until = self.now + self.rng.between(100, 2_000) as Millis;
        self.note(format!("pause {peer:?} {until}").as_bytes());
        self.log(|| format!("pause {peer:?} until t={}", until - T0));
        let until = self.paused.get(&peer).map_or(until, |&u| u.max(until));
        self.paused.insert(peer, until);
    }

    /// A membership change, asked of the controller as an admin would: a
    /// broker joins, a partition moves, or the last topic gains a partition.
    fn change_membership(&mut self) {
        let request = match self.rng.below(3) {
            0 if self.brokers == self.config.brokers => {
                let id = self.brokers;
                self.note(format!("add broker {id}").as_bytes());
                self.log(|| format!("add broker {id}"));
                self.brokers += 1;
                if let Err(e) = self.start_broker(id) {
                    self.anomaly(AnomalyKind::Liveness, format!("adding broker {id}: {e}"));
                }
                if self.quorum {
                    return; // it registers itself
                }
                Request::RegisterBroker(BrokerInfo {
                    id,
                    rack: None,
                    endpoint: None,
                })
            }
            1 => {
                let partition = self.rng.below(u64::from(self.partitions)) as u32;
                let mut brokers: Vec<NodeId> = (0..self.brokers).collect();
                let mut target = Vec::new();
                while target.len() < 3 && !brokers.is_empty() {
                    let i = self.rng.below(brokers.len() as u64) as usize;
                    target.push(brokers.remove(i));
                }
                self.note(format!("reassign {partition} {target:?}").as_bytes());
                self.log(|| format!("reassign partition {partition} to {target:?}"));
                let tp = self.topics.tp(partition);
                Request::AlterPartitionReassignments(AlterPartitionReassignmentsRequest {
                    partitions: vec![(tp, target)],
                })
            }
            2 if self.partitions < self.topics.initial_partitions() + 2 => {
                let total = self.partitions + 1;
                let last = self.topics.last().to_string();
                let count = total - self.topics.last_base();
                self.note(format!("partitions {total}").as_bytes());
                self.log(|| format!("topic {last} grows to {count} partitions"));
                self.asked_partitions.insert(self.next_admin_request, total);
                Request::CreatePartitions(CreatePartitionsRequest {
                    topics: vec![(last, count)],
                })
            }
            _ => return,
        };
        let envelope =
            Envelope::request(ADMIN, self.admin_target(), self.next_admin_request, request);
        self.next_admin_request += 1;
        self.enqueue(self.now + 1, envelope);
    }

    /// Heals the network and restarts every crashed broker.
    fn heal(&mut self) -> crate::Result<()> {
        self.note(b"heal all");
        self.cut.clear();
        self.stalls.clear();
        self.paused.clear();
        self.storage.clear_faults();
        self.finish_stops(true);
        for peer in self.controller_peers() {
            if !self.nodes.contains_key(&peer) {
                self.start_controller(peer)?;
                self.drain(peer);
            }
        }
        let down: Vec<NodeId> = std::mem::take(&mut self.crashed).into_iter().collect();
        for id in down {
            self.start_broker(id)?;
        }
        Ok(())
    }

    /// Restarts every broker that is down (after healing, only brokers that
    /// halted are).
    fn restart_halted(&mut self) -> crate::Result<()> {
        let down: Vec<NodeId> = std::mem::take(&mut self.crashed).into_iter().collect();
        for id in down {
            self.note(format!("restart halted {id}").as_bytes());
            self.log(|| format!("restart halted {id}"));
            self.start_broker(id)?;
        }
        Ok(())
    }

    /// Sends the next record of producer `i`.
    fn produce(&mut self, i: u64, n: u32) {
        let peer = Peer::Client(FIRST_PRODUCER + i);
        let partition = self.rng.below(u64::from(self.partitions)) as u32;
        let acks_all = i < u64::from(self.config.producers);
        // "p": idempotent, acks=all; "l": acks=1.
        let value = format!("{}{i}-{n}", if acks_all { 'p' } else { 'l' });
        let now = self.now;
        let Some(Node::Producer(producer)) = self.nodes.get_mut(&peer) else {
            return;
        };
        let tp = self.topics.tp(partition);
        match producer.append(
            &tp,
            now,
            None,
            Some(value.as_bytes()),
            &[],
            value.len() + 64,
            now,
        ) {
            Ok(appended) => {
                producer.wake();
                self.batches
                    .entry((peer, appended.batch))
                    .or_default()
                    .push((appended.index, value.clone()));
                self.sent.insert(
                    value,
                    Sent {
                        partition,
                        acks_all,
                        outcome: None,
                    },
                );
            }
            Err(e) => self.anomaly(AnomalyKind::Liveness, format!("append {value}: {e}")),
        }
        self.drain(peer);
    }

    /// Takes what the consumers fetched, checking each read against the
    /// earlier ones.
    fn consume(&mut self) {
        let consumers: Vec<Peer> = (0..u64::from(self.config.consumers))
            .map(|i| Peer::Client(FIRST_CONSUMER + i))
            .collect();
        for peer in consumers {
            // (an error a running consumer hits is its to retry)
            let (got, _) = self.poll_consumer(peer);
            for (partition, offset, value) in got {
                self.check_read(partition, offset, value);
            }
            self.drain(peer);
        }
        self.poll_members();
        self.check_replicas();
        self.learn_partitions();
    }

    /// Takes the topic's partition count from the controller, as an admin
    /// would find it by looking (besides its answers): a `CreatePartitions`
    /// whose answer was lost may have added them all the same.
    fn learn_partitions(&mut self) {
        for peer in self.controller_peers() {
            let Some(Node::Controller(c)) = self.nodes.get(&peer) else {
                continue;
            };
            // A quorum's voter may hold changes that never commit: only
            // what it published counts.
            let metadata = if self.quorum {
                c.published_metadata()
            } else {
                c.metadata()
            };
            if let Some(topic) = metadata.and_then(|m| m.topics.get(self.topics.last()).cloned()) {
                let total = self.topics.last_base() + topic.partitions.len() as u32;
                self.partitions = self.partitions.max(total);
            }
        }
    }

    /// Checks one read against the earlier ones and what was sent.
    fn check_read(&mut self, partition: u32, offset: u64, value: String) {
        let event = self.events;
        match self.read.get(&(partition, offset)) {
            Some((earlier, _)) if *earlier != value => {
                let detail = format!(
                    "partition {partition} offset {offset}: read {earlier:?}, then {value:?}"
                );
                self.anomaly(AnomalyKind::InconsistentOffsets, detail);
            }
            Some(_) => {}
            None => {
                if !self.sent.contains_key(&value) {
                    let detail = format!("partition {partition} offset {offset}: {value:?}");
                    self.anomaly(AnomalyKind::Phantom, detail);
                }
                self.read.insert((partition, offset), (value, event));
            }
        }
    }

    /// What a poll of consumer `peer` returns now: its buffered records as
    /// (partition, offset, value), and the error it hit, if any; then, as a
    /// poll does, the drained partitions fetch again.
    fn poll_consumer(&mut self, peer: Peer) -> (Vec<(u32, u64, String)>, Option<Error>) {
        let mut got = Vec::new();
        let topics = &self.topics;
        let Some(Node::Consumer(consumer)) = self.nodes.get_mut(&peer) else {
            return (got, None);
        };
        let _ = consumer.drain(usize::MAX, |tp, record, _| {
            let value = record.value.as_deref().unwrap_or_default();
            got.push((
                topics.index(tp),
                record.offset,
                String::from_utf8_lossy(value).into_owned(),
            ));
            Ok(())
        });
        let failed = consumer.take_error();
        consumer.handle_timeout(self.now, 100);
        (got, failed)
    }

    /// Whether every send has an outcome.
    fn all_sent_done(&self) -> bool {
        self.sent.values().all(|s| s.outcome.is_some())
    }

    /// Creates the topics through the controller.
    fn create_topic(&mut self) -> crate::Result<()> {
        let topics = self
            .topics
            .names
            .iter()
            .map(|name| {
                NewTopic::new(&**name, self.config.partitions)
                    .replication_factor(3.min(self.config.brokers as u16))
                    .config(TopicConfig {
                        min_insync_replicas: 2,
                        ..TopicConfig::default()
                    })
            })
            .collect();
        let request = Request::CreateTopics(CreateTopicsRequest { topics });
        let limit = self.now + 10_000;
        let mut correlation_id = 0;
        loop {
            let envelope =
                Envelope::request(ADMIN, self.admin_target(), correlation_id, request.clone());
            self.enqueue(self.now + 1, envelope);
            while self.admin_answers.is_empty() && self.now < limit {
                let next = self.now + 10;
                self.run_until(next);
            }
            let answer = self.admin_answers.pop().map(|e| e.message);
            let created = match &answer {
                Some(Message::Response(Ok(Response::CreateTopics(r)))) => {
                    r.topics.iter().all(|(_, outcome)| {
                        // A retry finds what an earlier try created.
                        outcome.is_ok()
                            || (correlation_id > 0
                                && matches!(outcome, Err(Error::TopicAlreadyExists { .. })))
                    })
                }
                _ => false,
            };
            if created {
                return Ok(());
            }
            // A quorum elects its first controller, and the brokers
            // register with it, before topics can be placed: ask again.
            if !self.quorum || self.now >= limit {
                return Err(Error::InvalidRequest {
                    reason: format!("creating the simulated topics: {answer:?}"),
                });
            }
            let next = self.now + 100;
            self.run_until(next);
            correlation_id += 1;
        }
    }
}

/// The simulated topics. A partition is known to the checks by its number
/// in the run: the partitions of the first topic, then the second's, and
/// so on; only the last topic gains partitions, so numbers never move.
#[derive(Debug, Clone)]
struct Topics {
    names: Vec<Arc<str>>,
    /// Partitions each topic starts with.
    per_topic: u32,
}

impl Topics {
    fn new(count: u32, per_topic: u32) -> Self {
        let names = (0..count)
            .map(|i| match i {
                0 => Arc::from("sim"),
                _ => Arc::from(format!("sim-{}", char::from(b'a' + (i % 26) as u8))),
            })
            .collect();
        Self { names, per_topic }
    }

    fn initial_partitions(&self) -> u32 {
        self.names.len() as u32 * self.per_topic
    }

    /// The number of the last topic's first partition.
    fn last_base(&self) -> u32 {
        (self.names.len() as u32 - 1) * self.per_topic
    }

    fn last(&self) -> &str {
        self.names.last().expect("at least one topic")
    }

    /// The topic partition numbered `n` in the run.
    fn tp(&self, n: u32) -> TopicPartition {
        let topic = (n / self.per_topic.max(1)).min(self.names.len() as u32 - 1);
        let partition = n - topic * self.per_topic;
        TopicPartition::from_shared(self.names[topic as usize].clone(), partition)
    }

    /// The number of `tp` in the run.
    fn index(&self, tp: &TopicPartition) -> u32 {
        let topic = self
            .names
            .iter()
            .position(|name| **name == *tp.topic())
            .unwrap_or(0) as u32;
        topic * self.per_topic + tp.partition()
    }
}

fn node_of(peer: Peer) -> NodeId {
    match peer {
        Peer::Broker(id) => id,
        Peer::Client(_) => NodeId::MAX,
    }
}

/// What many seeds found together.
#[derive(Debug, Clone, Default)]
pub struct SimSummary {
    /// Seeds run.
    pub seeds: u64,
    /// Events, faults and acknowledged records over all of them.
    pub events: u64,
    /// See [`SimReport::faults`].
    pub faults: u64,
    /// See [`SimReport::acked`].
    pub acked: u64,
    /// Runs whose controller was a quorum.
    pub quorum_runs: u64,
    /// Active controllers elected over the quorum runs.
    pub controller_elections: u64,
    /// The reports of the seeds that found an anomaly.
    pub failed: Vec<SimReport>,
}

impl std::fmt::Display for SimSummary {
    /// The `SIM seeds=… events=… faults=… acked=… anomalies=…
    /// quorum_runs=… controller_elections=…` line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let anomalies: usize = self.failed.iter().map(|r| r.anomalies.len()).sum();
        write!(
            f,
            "SIM seeds={} events={} faults={} acked={} anomalies={anomalies} \
             quorum_runs={} controller_elections={}",
            self.seeds,
            self.events,
            self.faults,
            self.acked,
            self.quorum_runs,
            self.controller_elections
        )
    }
}

/// Runs the standard simulation ([`SimConfig::new`]) for every seed of
/// `seeds` and sums what they found.
pub fn run_seeds(seeds: std::ops::Range<u64>) -> SimSummary {
    run_seeds_with(&SimConfig::new(0), seeds)
}

/// Runs `template` (its seed replaced) for every seed of `seeds` and sums
/// what they found.
pub fn run_seeds_with(template: &SimConfig, seeds: std::ops::Range<u64>) -> SimSummary {
    let mut summary = SimSummary::default();
    for seed in seeds {
        let report = run(&SimConfig {
            seed,
            ..template.clone()
        });
        summary.seeds += 1;
        summary.events += report.events;
        summary.faults += report.faults;
        summary.acked += report.acked;
        summary.quorum_runs += u64::from(report.controller_quorum);
        summary.controller_elections += report.controller_elections;
        if !report.anomalies.is_empty() {
            summary.failed.push(report);
        }
    }
    summary
}

/// Runs one simulation and checks it; see the [module docs](self).
pub fn run(config: &SimConfig) -> SimReport {
    let seed = config.seed;
    let _planting = crate::planted::Planting::new(config.planted);
    let mut world = match World::new(config.clone()) {
        Ok(world) => world,
        Err(e) => {
            return SimReport {
                seed,
                events: 0,
                faults: 0,
                acked: 0,
                anomalies: vec![Anomaly {
                    kind: AnomalyKind::Liveness,
                    event: 0,
                    detail: format!("the cluster did not start: {e}"),
                    trace: Vec::new(),
                }],
                trace_hash: 0,
                virtual_ms: 0,
                controller_quorum: false,
                controller_elections: 0,
            };
        }
    };
    if let Err(e) = world.create_topic() {
        world.anomaly(AnomalyKind::Liveness, e.to_string());
        return world.report();
    }
    let all: Vec<TopicPartition> = (0..world.partitions).map(|p| world.topics.tp(p)).collect();
    for i in 0..u64::from(config.consumers) {
        if let Some(Node::Consumer(c)) = world.nodes.get_mut(&Peer::Client(FIRST_CONSUMER + i)) {
            c.assign(all.clone());
        }
    }
    for _ in 0..config.group_members {
        world.start_member();
    }
    // The fault phase: records go out at a steady pace while faults come.
    let start = world.now;
    let end = start + config.fault_ms;
    let producers = config.producers + config.leader_acks_producers;
    let total = producers * config.records_per_producer;
    let pace = (config.fault_ms / Millis::from(total.max(1))).max(1);
    let mut next_record = 0u32;
    let mut next_fault = start + world.rng.between(20, 300) as Millis;
    while world.now < end {
        let step_to = (world.now + pace).min(end);
        while next_fault <= step_to {
            world.run_until(next_fault);
            world.fault();
            next_fault += world.rng.between(20, 300) as Millis;
        }
        world.run_until(step_to);
        if next_record < total {
            let producer = u64::from(next_record % producers);
            world.produce(producer, next_record / producers);
            next_record += 1;
        }
        world.consume();
    }
    while next_record < total {
        let producer = u64::from(next_record % producers);
        world.produce(producer, next_record / producers);
        next_record += 1;
    }
    // Heal, then let everything finish.
    if let Err(e) = world.heal() {
        world.anomaly(AnomalyKind::Liveness, format!("restart after healing: {e}"));
    }
    let limit = world.now + config.settle_ms;
    while world.now < limit && !(world.all_sent_done() && world.group_settled()) {
        let next = world.now + 50;
        world.run_until(next);
        world.consume();
        // A broker whose log went offline before the disks were repaired
        // halts when it notices; the operator restarts it.
        if let Err(e) = world.restart_halted() {
            world.anomaly(AnomalyKind::Liveness, format!("restart after healing: {e}"));
        }
    }
    if !world.group_settled() && !world.stuck {
        world.group_unsettled();
    }
    let all: Vec<TopicPartition> = (0..world.partitions).map(|p| world.topics.tp(p)).collect();
    world.check_final(&all, limit);
    world.report()
}

impl World {
    /// Reads every partition to its end with a fresh consumer and checks
    /// the whole history against it.
    fn check_final(&mut self, all: &[TopicPartition], limit: Millis) {
        if self.stuck {
            return; // the run stopped at the busy loop it reported
        }
        let unfinished: Vec<String> = self
            .sent
            .iter()
            .filter(|(_, s)| s.outcome.is_none())
            .map(|(v, _)| v.clone())
            .collect();
        if !unfinished.is_empty() {
            let detail = format!(
                "{} sends unfinished, e.g. {}",
                unfinished.len(),
                unfinished[0]
            );
            self.anomaly(AnomalyKind::Liveness, detail);
        }
        let checker = Peer::Client(FIRST_CONSUMER + 99);
        let bootstrap: Vec<NodeId> = (0..self.config.brokers).collect();
        let config = ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        let mut core = ConsumerCore::new(checker, config, bootstrap);
        core.assign(all.to_vec());
        self.nodes.insert(checker, Node::Consumer(Box::new(core)));
        self.drain(checker);
        let acked: BTreeMap<String, (u32, u64)> = self
            .sent
            .iter()
            .filter_map(|(v, s)| match &s.outcome {
                Some(Ok(offset)) if s.acks_all => Some((v.clone(), (s.partition, *offset))),
                _ => None,
            })
            .collect();
        // Read until every acknowledged record's offset is covered and the
        // log has been quiet for a while.
        let mut log: BTreeMap<(u32, u64), String> = BTreeMap::new();
        let mut quiet_since = self.now;
        let deadline = self.now.max(limit) + 20_000;
        loop {
            let next = self.now + 50;
            self.run_until(next);
            let (got, failed) = self.poll_consumer(checker);
            if let Some(e) = failed {
                let detail = format!("the checker's consumer failed: {e}");
                self.anomaly(AnomalyKind::Liveness, detail);
            }
            self.drain(checker);
            if !got.is_empty() {
                quiet_since = self.now;
            }
            log.extend(got.into_iter().map(|(p, o, v)| ((p, o), v)));
            let covered = acked.values().all(|&(p, o)| log.contains_key(&(p, o)));
            if (covered && self.now - quiet_since >= 1_000) || self.now >= deadline {
                break;
            }
        }
        for (value, &(partition, offset)) in &acked {
            if log.get(&(partition, offset)) != Some(value) {
                let found = log.get(&(partition, offset));
                let detail = format!(
                    "{value:?} acknowledged at partition {partition} offset {offset}, final log has {found:?}"
                );
                self.anomaly(AnomalyKind::LostWrite, detail);
            }
        }
        let mut seen: BTreeMap<&String, (u32, u64)> = BTreeMap::new();
        let mut duplicates = Vec::new();
        let idempotent: Vec<(&(u32, u64), &String)> = log
            .iter()
            .filter(|(_, value)| self.sent.get(*value).is_some_and(|s| s.acks_all))
            .collect();
        for &(&(p, o), value) in &idempotent {
            if let Some(&(p0, o0)) = seen.get(value) {
                duplicates.push(format!(
                    "{value:?} at partition {p0} offset {o0} and partition {p} offset {o}"
                ));
            }
            seen.insert(value, (p, o));
        }
        for detail in duplicates {
            self.anomaly(AnomalyKind::Duplicate, detail);
        }
        // Each idempotent producer's records of a partition in the order it
        // sent them ("p{producer}-{n}").
        let mut last: BTreeMap<(u32, &str), (u64, u64)> = BTreeMap::new();
        let mut reordered = Vec::new();
        for &(&(p, o), value) in &idempotent {
            let Some((producer, n)) = value
                .split_once('-')
                .and_then(|(producer, n)| Some((producer, n.parse::<u64>().ok()?)))
            else {
                continue;
            };
            if let Some(&(n0, o0)) = last.get(&(p, producer))
                && n0 > n
            {
                reordered.push(format!(
                    "partition {p}: {producer}-{n0} at offset {o0} before {value:?} at offset {o}"
                ));
            }
            last.insert((p, producer), (n, o));
        }
        for detail in reordered {
            self.anomaly(AnomalyKind::OutOfOrder, detail);
        }
        let contradicted: Vec<String> = self
            .read
            .iter()
            .filter(|(key, (value, _))| {
                log.get(key).is_some_and(|v| v != value) || !log.contains_key(key)
            })
            .map(|(&(p, o), (value, at))| {
                format!(
                    "read {value:?} at partition {p} offset {o} (event {at}), final log has {:?}",
                    log.get(&(p, o))
                )
            })
            .collect();
        for detail in contradicted {
            self.anomaly(AnomalyKind::InconsistentOffsets, detail);
        }
    }

    fn report(&self) -> SimReport {
        SimReport {
            seed: self.config.seed,
            events: self.events,
            faults: self.faults,
            acked: self
                .sent
                .values()
                .filter(|s| matches!(s.outcome, Some(Ok(_))))
                .count() as u64,
            anomalies: self.anomalies.clone(),
            trace_hash: self.hash,
            virtual_ms: self.now - T0,
            controller_quorum: self.quorum,
            controller_elections: self.elections,
        }
    }
}
