//! The cores without a runtime: three brokers, the controller, a producer
//! and a consumer driven in one thread by a tiny deterministic world — a
//! queue of envelopes and a virtual clock, no threads, locks or sleeps —
//! through topic creation, replicated produce, consumption, the leader's
//! crash, failover and more produce; and two group members sharing a
//! topic's partitions, committing and handing over. Every envelope
//! delivered is written to a trace with the wire codec; two runs from the
//! same inputs must give the same trace, byte for byte.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::broker::{BrokerConfig, BrokerCore};
use crate::client::member_core::{Limits, MemberConfig, MemberCore};
use crate::client::{
    Acks, AutoOffsetReset, ConsumerConfig, ConsumerCore, ProducerConfig, ProducerCore,
};
use crate::controller::ControllerCore;
use crate::group::built_in_assignors;
use crate::protocol::{
    BrokerInfo, CONTROLLER_ID, CreateTopicsRequest, Envelope, Message, NodeId, Peer, Request,
    Response, codec,
};
use crate::sim::Node;
use crate::storage::MemoryStorage;
use crate::time::{ManualClock, Millis};
use crate::topic::{NewTopic, TopicConfig, TopicPartition};

const T0: Millis = 1_700_000_000_000;
const BROKERS: u32 = 3;
const PRODUCER: Peer = Peer::Client(1);
const CONSUMER: Peer = Peer::Client(2);
const ADMIN: Peer = Peer::Client(3);

/// The nodes, the envelopes on their way, the clock, and the trace.
struct World {
    now: Millis,
    clock: ManualClock,
    nodes: BTreeMap<Peer, Node>,
    queue: VecDeque<Envelope>,
    /// Requests each node holds and has not answered: a crash answers them
    /// with a network error, as a closed connection would.
    owed: BTreeMap<Peer, BTreeSet<(Peer, u64)>>,
    /// Answers the admin peer received.
    admin_answers: Vec<Envelope>,
    trace: Vec<u8>,
    delivered: u64,
    /// Offsets acknowledged to the producer, by batch.
    acknowledged: BTreeMap<u64, crate::Result<Option<u64>>>,
    /// The leader epochs the consumer's fetches named.
    consumer_fetch_epochs: BTreeSet<Option<i32>>,
    /// Metadata pushes delivered: whole, and as deltas.
    pushes: (u64, u64),
}

impl World {
    fn new() -> Self {
        let clock = ManualClock::new(T0);
        let storage = Arc::new(MemoryStorage::with_clock(Arc::new(clock.clone())));
        Self::with_storage(clock, storage)
    }

    /// The world over `storage`, whose time-based policies read `clock`.
    fn with_storage(clock: ManualClock, storage: Arc<dyn crate::storage::Storage>) -> Self {
        let config = BrokerConfig {
            replica_lag_time_max_ms: 400,
            replica_fetch_wait_max_ms: 50,
            broker_heartbeat_interval_ms: 20,
            broker_session_timeout_ms: 200,
            ..BrokerConfig::default()
        };
        let mut nodes = BTreeMap::new();
        let infos: Vec<BrokerInfo> = (0..BROKERS)
            .map(|id| BrokerInfo {
                id,
                rack: None,
                endpoint: None,
            })
            .collect();
        let controller =
            ControllerCore::load(CONTROLLER_ID, &*storage, infos, T0, 200, 20).unwrap();
        nodes.insert(
            Peer::Broker(CONTROLLER_ID),
            Node::Controller(Box::new(controller)),
        );
        for id in 0..BROKERS {
            let broker = BrokerCore::new(
                id,
                config.clone(),
                storage.clone(),
                built_in_assignors(),
                T0,
            )
            .unwrap();
            nodes.insert(Peer::Broker(id), Node::Broker(Box::new(broker)));
        }
        let bootstrap: Vec<NodeId> = (0..BROKERS).collect();
        let producer_config = ProducerConfig {
            acks: Acks::All,
            linger_ms: 0,
            ..ProducerConfig::default()
        };
        nodes.insert(
            PRODUCER,
            Node::Producer(Box::new(ProducerCore::new(
                PRODUCER,
                producer_config,
                bootstrap.clone(),
                7,
            ))),
        );
        let consumer_config = ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        nodes.insert(
            CONSUMER,
            Node::Consumer(Box::new(ConsumerCore::new(
                CONSUMER,
                consumer_config,
                bootstrap,
            ))),
        );
        let mut world = Self {
            now: T0,
            clock,
            nodes,
            queue: VecDeque::new(),
            owed: BTreeMap::new(),
            admin_answers: Vec::new(),
            trace: Vec::new(),
            delivered: 0,
            acknowledged: BTreeMap::new(),
            consumer_fetch_epochs: BTreeSet::new(),
            pushes: (0, 0),
        };
        let peers: Vec<Peer> = world.nodes.keys().copied().collect();
        for peer in peers {
            world.drain(peer);
        }
        world
    }

    /// Takes what `peer` wants sent, and what its producer finished.
    fn drain(&mut self, peer: Peer) {
        let Some(node) = self.nodes.get_mut(&peer) else {
            return;
        };
        while let Some(envelope) = node.poll_transmit() {
            if let Message::Response(_) = envelope.message
                && let Some(owed) = self.owed.get_mut(&peer)
            {
                owed.remove(&(envelope.to, envelope.correlation_id));
            }
            self.queue.push_back(envelope);
        }
        if let Node::Producer(producer) = node {
            while let Some(done) = producer.poll_completion() {
                self.acknowledged.insert(done.batch, done.outcome);
            }
        }
    }

    fn record(&mut self, envelope: &Envelope) {
        self.trace.extend_from_slice(&self.now.to_be_bytes());
        self.trace.extend_from_slice(&codec::encode(envelope));
        self.delivered += 1;
    }

    /// Delivers one envelope, or moves the clock to the next deadline.
    /// Returns false when nothing is left to do before `until`.
    fn step(&mut self, until: Millis) -> bool {
        if let Some(envelope) = self.queue.pop_front() {
            self.record(&envelope);
            if let Message::Request(Request::Fetch(fetch)) = &envelope.message
                && envelope.from == CONSUMER
            {
                let epochs = fetch.partitions.iter().map(|p| p.current_leader_epoch);
                self.consumer_fetch_epochs.extend(epochs);
            }
            if let Message::Request(Request::UpdateMetadata(push)) = &envelope.message {
                match push.delta_from {
                    None => self.pushes.0 += 1,
                    Some(_) => self.pushes.1 += 1,
                }
            }
            let to = envelope.to;
            if to == ADMIN {
                self.admin_answers.push(envelope);
                return true;
            }
            let Some(node) = self.nodes.get_mut(&to) else {
                // A crashed node: its requests fail as a refused connection.
                if let Some(answer) = crate::transport::undeliverable(&envelope, "down") {
                    self.queue.push_back(answer);
                }
                return true;
            };
            if let Message::Request(request) = &envelope.message
                && request.expects_answer()
            {
                let key = (envelope.from, envelope.correlation_id);
                self.owed.entry(to).or_default().insert(key);
            }
            node.handle_message(self.now, envelope);
            self.drain(to);
            return true;
        }
        let next = self
            .nodes
            .values()
            .filter_map(Node::poll_timeout)
            .min()
            .unwrap_or(Millis::MAX)
            .max(self.now);
        if next > until {
            return false;
        }
        self.now = next;
        self.clock.set(next);
        self.trace.extend_from_slice(b"tick");
        self.trace.extend_from_slice(&next.to_be_bytes());
        let due: Vec<Peer> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.poll_timeout().is_some_and(|at| at <= next))
            .map(|(&p, _)| p)
            .collect();
        for peer in due {
            if let Some(node) = self.nodes.get_mut(&peer) {
                node.handle_timeout(next);
            }
            self.drain(peer);
        }
        true
    }

    /// Runs until `done` holds, at most `limit_ms` of virtual time.
    fn run_until(&mut self, limit_ms: Millis, mut done: impl FnMut(&mut World) -> bool) {
        let until = self.now + limit_ms;
        while !done(self) {
            assert!(
                self.step(until),
                "nothing happened by {until} (now {})",
                self.now
            );
        }
    }

    fn producer(&mut self) -> &mut ProducerCore {
        match self.nodes.get_mut(&PRODUCER) {
            Some(Node::Producer(p)) => p,
            _ => unreachable!("the producer runs throughout"),
        }
    }

    fn consumer(&mut self) -> &mut ConsumerCore {
        match self.nodes.get_mut(&CONSUMER) {
            Some(Node::Consumer(c)) => c,
            _ => unreachable!("the consumer runs throughout"),
        }
    }

    /// The leader of `tp` as the controller sees it.
    fn leader(&self, tp: &TopicPartition) -> Option<NodeId> {
        let Some(Node::Controller(c)) = self.nodes.get(&Peer::Broker(CONTROLLER_ID)) else {
            return None;
        };
        c.metadata()?.topics.get(tp.topic())?.partitions[tp.partition() as usize].leader
    }

    /// Crashes broker `id`: its state is gone, what it owed fails.
    fn crash(&mut self, id: NodeId) {
        let peer = Peer::Broker(id);
        if let Some(Node::Broker(mut broker)) = self.nodes.remove(&peer) {
            broker.crash();
        }
        for (requester, correlation_id) in self.owed.remove(&peer).unwrap_or_default() {
            let failed = Envelope::connection_closed(id, requester, correlation_id, "crashed");
            self.queue.push_back(failed);
        }
    }

    /// Produces 20 records `<prefix>-<i>` to `tp` and runs until every one
    /// is acknowledged (acks=all: the in-sync replicas have it).
    fn produce_acknowledged(&mut self, tp: &TopicPartition, prefix: &str) {
        let records = (0..20).map(|i| (None, format!("{prefix}-{i}"))).collect();
        self.produce_records(tp, records);
    }

    /// Produces `records` (key, value) to `tp` and runs until every one is
    /// acknowledged.
    fn produce_records(&mut self, tp: &TopicPartition, records: Vec<(Option<String>, String)>) {
        let now = self.now;
        let batches: Vec<u64> = records
            .iter()
            .map(|(key, value)| {
                let key = key.as_deref().map(str::as_bytes);
                self.producer()
                    .append(tp, now, key, Some(value.as_bytes()), &[], 64, now)
                    .unwrap()
                    .batch
            })
            .collect();
        self.producer().wake();
        self.drain(PRODUCER);
        self.run_until(20_000, |w| {
            batches.iter().all(|b| w.acknowledged.contains_key(b))
        });
        for b in &batches {
            let outcome = &self.acknowledged[b];
            assert!(matches!(outcome, Ok(Some(_))), "{outcome:?}");
        }
    }

    /// Reads records from the consumer until it has `n` in all.
    fn consume(&mut self, read: &mut Vec<(u64, String)>, n: usize) {
        self.run_until(10_000, |w| {
            let now = w.now;
            let consumer = w.consumer();
            let _ = consumer.drain(usize::MAX, |_, record, _| {
                let value = record.value.as_deref().unwrap_or_default();
                read.push((record.offset, String::from_utf8_lossy(value).into_owned()));
                Ok(())
            });
            consumer.handle_timeout(now, 100);
            w.drain(CONSUMER);
            read.len() >= n
        });
    }
}

/// A world over simulated storage (page cache, stored checkpoints, disk
/// faults) with topic `orders`: one partition, RF 3, min ISR 2.
#[cfg(feature = "sim")]
fn orders_on_sim_storage() -> (World, Arc<crate::sim::storage::SimStorage>, TopicPartition) {
    let clock = ManualClock::new(T0);
    let storage = Arc::new(crate::sim::storage::SimStorage::new(
        Arc::new(clock.clone()),
        5,
    ));
    let mut world = World::with_storage(clock, storage.clone());
    let tp = TopicPartition::new("orders", 0).unwrap();
    world.create_topic(
        NewTopic::new("orders", 1)
            .replication_factor(3)
            .config(TopicConfig {
                min_insync_replicas: 2,
                ..TopicConfig::default()
            }),
    );
    (world, storage, tp)
}

/// A leader whose disk fails halts at its next heartbeat instead of
/// serving a log that went offline; the controller fences it and elects an
/// in-sync follower, and the producer's records are acknowledged there.
#[cfg(feature = "sim")]
#[test]
fn a_broker_whose_log_goes_offline_halts_and_its_partitions_move() {
    use crate::sim::storage::DiskFaults;
    let (mut world, storage, tp) = orders_on_sim_storage();
    world.produce_acknowledged(&tp, "before");
    let leader = world.leader(&tp).expect("a leader");
    storage.set_faults(
        leader,
        DiskFaults {
            error_per_million: 1_000_000,
            space_left: None,
        },
    );
    // The leader's next append fails; it halts and the others take over.
    world.produce_acknowledged(&tp, "after");
    let new_leader = world.leader(&tp).expect("a new leader");
    assert_ne!(new_leader, leader);
    let Some(Node::Broker(halted)) = world.nodes.get(&Peer::Broker(leader)) else {
        panic!("broker {leader} is still a node");
    };
    let reason = halted.halted().expect("it halted");
    assert!(reason.contains("orders-0 went offline"), "{reason}");
    assert!(reason.contains("injected write error"), "{reason}");
}

/// An idle leader checkpoints its high watermark on the flush scheduler's
/// timer (`log_flush_scheduler_interval_ms`; a log rewrites its checkpoint
/// at most every 5 s): killed 8 s after a burst, its log reopens with the
/// burst committed. Killed at once, the log falls back to the checkpoint
/// it had — the difference the timer makes (before it, only a later append
/// or the 5-minute retention pass wrote the checkpoint).
#[cfg(feature = "sim")]
#[test]
fn an_idle_broker_checkpoints_its_high_watermark_on_a_timer() {
    use crate::storage::{LogConfig, Storage};
    for idle_ms in [0, 8_000] {
        let (mut world, storage, tp) = orders_on_sim_storage();
        world.produce_acknowledged(&tp, "burst");
        let leader = world.leader(&tp).expect("a leader");
        let until = world.now + idle_ms;
        world.run_until(idle_ms + 1_000, |w| w.now >= until);
        world.crash(leader);
        let log = storage.open(&tp, leader, &LogConfig::default()).unwrap();
        assert_eq!(log.log_end_offset(), 20, "the page cache kept the records");
        if idle_ms == 0 {
            assert!(log.high_watermark() < 20, "{}", log.high_watermark());
        } else {
            assert_eq!(log.high_watermark(), 20, "checkpointed while idle");
        }
    }
}

/// A broker compacts the logs of a compacted topic on its own, when its
/// cleaner timer (`log_cleaner_backoff_ms` of virtual time) comes due.
#[test]
fn a_broker_compacts_its_logs_when_the_cleaner_timer_comes_due() {
    let mut world = World::new();
    let tp = TopicPartition::new("table", 0).unwrap();
    world.create_topic(
        NewTopic::new("table", 1)
            .replication_factor(3)
            .config(TopicConfig {
                cleanup_policy: crate::storage::CleanupPolicy::Compact,
                segment_bytes: 1024,
                index_interval_bytes: 128,
                ..TopicConfig::default()
            }),
    );
    // 200 records over 4 keys, 10 at a time (small batches, many segments).
    for round in 0..20 {
        let records = (round * 10..round * 10 + 10)
            .map(|i| (Some(format!("k{}", i % 4)), format!("v{i}")))
            .collect();
        world.produce_records(&tp, records);
    }
    let leader = world.leader(&tp).expect("a leader");
    let held = |w: &World| match w.nodes.get(&Peer::Broker(leader)) {
        Some(Node::Broker(b)) => b.replica_records(&tp, 0).map_or(0, |(_, _, r)| r.len()),
        _ => 0,
    };
    assert_eq!(held(&world), 200, "nothing compacted yet");
    let backoff = BrokerConfig::default().log_cleaner_backoff_ms as Millis;
    assert!(world.now < T0 + backoff);
    world.run_until(2 * backoff, |w| held(w) < 200);
    assert!(
        world.now >= T0 + backoff,
        "compacted by the cleaner timer, at {}",
        world.now - T0
    );
    assert!(
        held(&world) <= 4 + 1024 / 60,
        "{} records left",
        held(&world)
    );
}

/// What a run of the scenario saw.
struct Run {
    trace: Vec<u8>,
    delivered: u64,
    read: Vec<(u64, String)>,
    leaders: (NodeId, NodeId),
    virtual_ms: Millis,
    /// Metadata pushes: whole, and as deltas.
    pushes: (u64, u64),
    /// Whether every live broker holds the controller's metadata at the end.
    brokers_agree: bool,
}

/// A world with topic `orders` (one partition, RF 3, min ISR 2) created
/// through the controller, as an admin would, and assigned to the
/// consumer.
fn orders_world() -> (World, TopicPartition) {
    let mut world = World::new();
    let tp = TopicPartition::new("orders", 0).unwrap();
    let topic = NewTopic::new("orders", 1)
        .replication_factor(3)
        .config(TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        });
    world.create_topic(topic);
    world.consumer().assign(vec![tp.clone()]);
    (world, tp)
}

/// The scenario.
fn scenario() -> Run {
    let (mut world, tp) = orders_world();

    // Replicated produce: acknowledged only once the ISR has it.
    world.produce_acknowledged(&tp, "before");
    let mut read = Vec::new();
    world.consume(&mut read, 20);

    // The leader crashes; the controller fences it after its session and
    // elects an in-sync follower; clients find it and go on.
    let old_leader = world.leader(&tp).expect("a leader");
    world.crash(old_leader);
    world.run_until(10_000, |w| w.leader(&tp).is_some_and(|l| l != old_leader));
    let new_leader = world.leader(&tp).expect("a new leader");
    world.produce_acknowledged(&tp, "after");
    world.consume(&mut read, 40);
    let Some(Node::Controller(c)) = world.nodes.get(&Peer::Broker(CONTROLLER_ID)) else {
        unreachable!("the controller runs throughout");
    };
    let metadata = c.metadata().expect("running");
    let brokers_agree = (0..BROKERS).filter(|&b| b != old_leader).all(|b| {
        matches!(world.nodes.get(&Peer::Broker(b)),
            Some(Node::Broker(broker)) if **broker.metadata() == *metadata)
    });
    Run {
        trace: world.trace,
        delivered: world.delivered,
        read,
        leaders: (old_leader, new_leader),
        virtual_ms: world.now - T0,
        pushes: world.pushes,
        brokers_agree,
    }
}

#[test]
fn three_brokers_a_controller_a_producer_and_a_consumer_run_in_one_thread_and_replay_exactly() {
    let run = scenario();
    let read = &run.read;
    assert_ne!(run.leaders.0, run.leaders.1, "leadership moved");
    // Every acknowledged record was read once, in order, at dense offsets.
    let values: Vec<&str> = read.iter().map(|(_, v)| v.as_str()).collect();
    let expected: Vec<String> = (0..20)
        .map(|i| format!("before-{i}"))
        .chain((0..20).map(|i| format!("after-{i}")))
        .collect();
    assert_eq!(values, expected);
    let offsets: Vec<u64> = read.iter().map(|(o, _)| *o).collect();
    assert_eq!(offsets, (0..40).collect::<Vec<u64>>());
    // After its first push to a broker, the controller sends what changed
    // (a delta from what it sent before); the brokers hold exactly its
    // metadata all the same.
    let (whole, deltas) = run.pushes;
    assert!(deltas > whole, "{deltas} deltas, {whole} whole pushes");
    assert!(run.brokers_agree);
    // The same inputs give the same outputs, byte for byte.
    let again = scenario();
    assert_eq!(run.delivered, again.delivered);
    assert_eq!(run.read, again.read);
    assert!(run.trace == again.trace, "the two traces differ");
    println!(
        "one-thread run: leader {} crashed, {} took over; {} envelopes delivered over {} ms of \
         virtual time; {} metadata pushes as deltas, {} whole; trace of {} bytes, identical twice",
        run.leaders.0,
        run.leaders.1,
        run.delivered,
        run.virtual_ms,
        run.pushes.1,
        run.pushes.0,
        run.trace.len()
    );
}

/// A leader paused past its session (a stopped process, a long GC pause)
/// is deposed while it sleeps; back, it still believes it leads. A
/// consumer names the leader epoch of its metadata in every fetch
/// (KIP-320), so the deposed leader refuses one that knows the new epoch
/// instead of serving what it had when it stopped.
#[test]
fn a_deposed_leader_back_from_a_pause_refuses_fetches_of_the_new_epoch() {
    let (mut world, tp) = orders_world();
    world.produce_acknowledged(&tp, "before");
    let mut read = Vec::new();
    world.consume(&mut read, 20);
    let old_leader = world.leader(&tp).expect("a leader");
    // Paused: set aside with all its state (envelopes to it fail meanwhile).
    let paused = world.nodes.remove(&Peer::Broker(old_leader)).unwrap();
    world.run_until(10_000, |w| w.leader(&tp).is_some_and(|l| l != old_leader));
    world.produce_acknowledged(&tp, "after");
    world.consume(&mut read, 40);
    let Some(Node::Controller(c)) = world.nodes.get(&Peer::Broker(CONTROLLER_ID)) else {
        unreachable!("the controller runs throughout");
    };
    let epoch = c.metadata().unwrap().topics["orders"].partitions[0].leader_epoch;
    assert!(epoch > 0);
    assert!(world.consumer_fetch_epochs.contains(&Some(epoch)));
    assert!(
        !world.consumer_fetch_epochs.contains(&None),
        "every fetch names its epoch"
    );
    // Back, before anything reaches it: asked with the epoch a consumer
    // knows, it refuses; asked without one (an old client), it would
    // serve what it had, the 20 records from before.
    world.nodes.insert(Peer::Broker(old_leader), paused);
    let fetch = |id: u64, current_leader_epoch: Option<i32>| {
        Envelope::request(
            CONSUMER,
            Peer::Broker(old_leader),
            id,
            Request::Fetch(crate::protocol::FetchRequest {
                max_wait_ms: 0,
                min_bytes: 0,
                max_bytes: 1 << 20,
                partitions: vec![crate::protocol::FetchPartition {
                    partition: tp.clone(),
                    fetch_offset: 0,
                    max_bytes: 1 << 20,
                    current_leader_epoch,
                    last_fetched_epoch: None,
                }],
                replica: None,
                session: None,
                forgotten: Vec::new(),
            }),
        )
    };
    let now = world.now;
    let Some(Node::Broker(broker)) = world.nodes.get_mut(&Peer::Broker(old_leader)) else {
        unreachable!("just put back");
    };
    broker.handle_message(now, fetch(1_001, Some(epoch)));
    broker.handle_message(now, fetch(1_002, None));
    let mut answers = BTreeMap::new();
    while let Some(envelope) = broker.poll_transmit() {
        if let Message::Response(Ok(Response::Fetch(r))) = envelope.message {
            answers.insert(envelope.correlation_id, r.partitions[0].result.clone());
        }
    }
    assert!(
        matches!(
            answers[&1_001],
            Err(crate::Error::NotLeaderOrFollower { .. })
        ),
        "{:?}",
        answers[&1_001]
    );
    let stale = answers[&1_002].as_ref().expect("an old client is served");
    assert_eq!(
        stale.high_watermark, 20,
        "only what it had before the pause"
    );
}

// ----- a group of two members ------------------------------------------------

const MEMBERS: [Peer; 2] = [Peer::Client(10), Peer::Client(11)];

impl World {
    fn member(&mut self, peer: Peer) -> &mut MemberCore {
        match self.nodes.get_mut(&peer) {
            Some(Node::Member(m)) => m,
            _ => unreachable!("members are added before they are used"),
        }
    }

    /// Applies a member's changes as a consumer's poll does: lost first,
    /// then revoked, then assigned, then says so.
    fn reconcile(&mut self, peer: Peer, held: &mut BTreeSet<TopicPartition>) {
        let now = self.now;
        let member = self.member(peer);
        let changes = member.changes(now);
        if changes.lost {
            held.clear();
        }
        if let Some((id, target)) = changes.target {
            let revoked: Vec<TopicPartition> = held.difference(&target).cloned().collect();
            held.retain(|tp| target.contains(tp));
            member.release(&revoked);
            let added: Vec<TopicPartition> = target.difference(held).cloned().collect();
            if member.hold(changes.incarnation, &added) {
                held.extend(added);
            }
            member.reconciled(now, changes.incarnation, id);
        }
        self.drain(peer);
    }

    /// Runs, reconciling both members after every step and checking that
    /// no partition is ever held twice, until `done` holds.
    fn run_group_until(
        &mut self,
        held: &mut [BTreeSet<TopicPartition>; 2],
        mut done: impl FnMut(&mut World, &[BTreeSet<TopicPartition>; 2]) -> bool,
    ) {
        let until = self.now + 20_000;
        loop {
            for (i, peer) in MEMBERS.iter().enumerate() {
                if self.nodes.contains_key(peer) {
                    self.reconcile(*peer, &mut held[i]);
                }
            }
            assert!(
                held[0].is_disjoint(&held[1]),
                "a partition held twice: {held:?}"
            );
            if done(self, held) {
                return;
            }
            assert!(self.step(until), "nothing happened by {until}");
        }
    }

    /// Creates `topic` through the controller, as an admin would.
    fn create_topic(&mut self, topic: NewTopic) {
        self.queue.push_back(Envelope::request(
            ADMIN,
            Peer::Broker(CONTROLLER_ID),
            0,
            Request::CreateTopics(CreateTopicsRequest {
                topics: vec![topic],
            }),
        ));
        self.run_until(5_000, |w| !w.admin_answers.is_empty());
        let created = self.admin_answers.remove(0);
        assert!(
            matches!(&created.message, Message::Response(Ok(Response::CreateTopics(r))) if r.topics[0].1.is_ok()),
            "{created:?}"
        );
    }
}

/// What a run of the group scenario saw.
struct GroupRun {
    trace: Vec<u8>,
    split: [BTreeSet<TopicPartition>; 2],
    committed: Vec<(TopicPartition, u64)>,
    last: BTreeSet<TopicPartition>,
}

fn group_scenario() -> GroupRun {
    let mut world = World::new();
    world.create_topic(NewTopic::new("events", 4).replication_factor(3));
    let config = MemberConfig {
        group: "billing".into(),
        instance_id: None,
        client_id: "member".into(),
        assignor: "range".into(),
        limits: Limits {
            session_timeout: 3_000,
            heartbeat_interval: 300,
            max_poll_interval: 60_000,
        },
        request_timeout: 5_000,
        retry_backoff: 50,
    };
    let bootstrap: Vec<NodeId> = (0..BROKERS).collect();
    let subscription =
        crate::protocol::Subscription::Topics(["events".to_string()].into_iter().collect());
    for peer in MEMBERS {
        let mut member = MemberCore::new(peer, config.clone(), bootstrap.clone(), world.now);
        member.subscribe(world.now, subscription.clone());
        world.nodes.insert(peer, Node::Member(Box::new(member)));
        world.drain(peer);
    }
    // Both join; the four partitions are split between them.
    let mut held: [BTreeSet<TopicPartition>; 2] = Default::default();
    world.run_group_until(&mut held, |_, held| {
        held[0].len() == 2 && held[1].len() == 2
    });
    let split = held.clone();
    // The first commits what it read of its partitions, then reads it back.
    let now = world.now;
    let offsets: Vec<_> = split[0]
        .iter()
        .map(|tp| (tp.clone(), crate::protocol::OffsetAndMetadata::new(5)))
        .collect();
    let commit = world
        .member(MEMBERS[0])
        .commit(now, offsets, now + 5_000, true);
    let commit = commit.expect("a member in the group may commit");
    let lookup = world
        .member(MEMBERS[0])
        .fetch_committed(now, None, now + 5_000);
    world.drain(MEMBERS[0]);
    let mut answers = BTreeMap::new();
    world.run_group_until(&mut held, |w, _| {
        while let Some((op, result)) = w.member(MEMBERS[0]).poll_completion() {
            answers.insert(op, result);
        }
        answers.len() == 2
    });
    assert!(
        matches!(answers[&commit], Ok(Response::OffsetCommit)),
        "{:?}",
        answers[&commit]
    );
    let committed: Vec<(TopicPartition, u64)> = match &answers[&lookup] {
        Ok(Response::OffsetFetch(found)) => {
            found.iter().map(|(tp, o)| (tp.clone(), o.offset)).collect()
        }
        other => panic!("{other:?}"),
    };
    // The first leaves: the second takes everything.
    let now = world.now;
    let leave = world.member(MEMBERS[0]).leave(now);
    assert!(leave.is_some(), "a joined member sends a leave");
    held[0].clear();
    world.drain(MEMBERS[0]);
    world.run_group_until(&mut held, |_, held| held[1].len() == 4);
    GroupRun {
        trace: world.trace,
        split,
        committed,
        last: held[1].clone(),
    }
}

#[test]
fn two_members_split_a_topic_commit_and_hand_over_in_one_thread_and_replay_exactly() {
    let run = group_scenario();
    assert!(run.split[0].is_disjoint(&run.split[1]));
    let mut committed = run.committed.clone();
    committed.sort();
    let expected: Vec<(TopicPartition, u64)> =
        run.split[0].iter().map(|tp| (tp.clone(), 5)).collect();
    assert_eq!(committed, expected, "the commit reads back");
    assert_eq!(
        run.last.len(),
        4,
        "the remaining member owns every partition"
    );
    let again = group_scenario();
    assert_eq!(run.split, again.split);
    assert!(run.trace == again.trace, "the two traces differ");
    println!(
        "group run: split {:?} / {:?}; trace of {} bytes, identical twice",
        run.split[0]
            .iter()
            .map(|tp| tp.partition())
            .collect::<Vec<_>>(),
        run.split[1]
            .iter()
            .map(|tp| tp.partition())
            .collect::<Vec<_>>(),
        run.trace.len()
    );
}
