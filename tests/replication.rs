//! Replication across brokers in one process, through the public API:
//! high watermark, ISR, acks=all, failover, epoch truncation, unclean
//! elections, and a stale leader behind a network partition.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ferrolog::broker::BrokerConfig;
use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::protocol::{Envelope, Message};
use ferrolog::protocol::{PartitionMetadata, ProducePartition, ProduceRequest, Request, Response};
use ferrolog::record::RecordBatchBuilder;
use ferrolog::storage::{LogConfig, MemoryStorage, Storage};
use ferrolog::transport::{Endpoint, FaultyTransport, Inbox, LocalTransport, Peer};
use ferrolog::{Admin, CONTROLLER_ID, Cluster, Error, NewTopic, TopicConfig, TopicPartition};

const WAIT: Duration = Duration::from_secs(20);

/// Brokers that notice a dead peer within ~150 ms.
fn fast_brokers() -> BrokerConfig {
    BrokerConfig {
        replica_lag_time_max_ms: 300,
        replica_fetch_wait_max_ms: 50,
        broker_heartbeat_interval_ms: 20,
        broker_session_timeout_ms: 150,
        ..BrokerConfig::default()
    }
}

struct Setup {
    cluster: Cluster,
    storage: MemoryStorage,
    faults: FaultyTransport,
}

fn cluster(brokers: u32, config: BrokerConfig, seed: u64) -> Setup {
    let storage = MemoryStorage::new();
    let faults = FaultyTransport::new(LocalTransport::new(), seed);
    let cluster = Cluster::builder()
        .brokers(brokers)
        .storage(storage.clone())
        .transport(faults.clone())
        .broker_config(config)
        .build()
        .unwrap();
    Setup {
        cluster,
        storage,
        faults,
    }
}

fn topic(setup: &Setup, name: &str, rf: u16, config: TopicConfig) {
    Admin::new(&setup.cluster)
        .unwrap()
        .create_topic(NewTopic::new(name, 1).replication_factor(rf).config(config))
        .unwrap();
}

fn min_isr(n: u16) -> TopicConfig {
    TopicConfig {
        min_insync_replicas: n,
        ..TopicConfig::default()
    }
}

fn describe(setup: &Setup, name: &str) -> PartitionMetadata {
    Admin::new(&setup.cluster)
        .unwrap()
        .describe_topic(name)
        .unwrap()
        .partitions[0]
        .clone()
}

/// Waits (woken by the controller at each change) until `check` holds for
/// the partition's metadata.
fn wait_for(
    setup: &Setup,
    name: &str,
    what: &str,
    check: impl Fn(&PartitionMetadata) -> bool,
) -> PartitionMetadata {
    let partition = |m: &ferrolog::protocol::ClusterMetadata| {
        m.topics
            .get(name)
            .and_then(|t| t.partitions.first())
            .cloned()
    };
    match setup
        .cluster
        .wait_for_metadata(WAIT, |m| partition(m).is_some_and(|p| check(&p)))
    {
        Ok(m) => partition(&m).expect("checked"),
        Err(e) => panic!("{what}: {e}; now {:?}", describe(setup, name)),
    }
}

fn producer(setup: &Setup, acks: Acks) -> Producer<(), String> {
    let config = ProducerConfig::builder()
        .acks(acks)
        .linger_ms(0u64)
        .request_timeout_ms(2_000u64)
        .delivery_timeout_ms(15_000u64)
        .retry_backoff_ms(20u64)
        .build()
        .unwrap();
    Producer::with_serializers(
        &setup.cluster,
        config,
        ferrolog::client::Postcard,
        ferrolog::client::DefaultSerde,
    )
    .unwrap()
}

/// A consumer of partition 0 of `name`, from the start.
fn consumer_of(setup: &Setup, name: &str) -> (Consumer<(), String>, TopicPartition) {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait_ms(50u32)
        .build()
        .unwrap();
    let mut consumer: Consumer<(), String> = Consumer::with_deserializers(
        &setup.cluster,
        config,
        ferrolog::client::Postcard,
        ferrolog::client::DefaultSerde,
    )
    .unwrap();
    let tp = TopicPartition::new(name, 0).unwrap();
    consumer.assign([tp.clone()]).unwrap();
    (consumer, tp)
}

/// Polls `consumer` until it has read `n` records (each poll waits for
/// records to arrive).
fn read_until(consumer: &mut Consumer<(), String>, n: u64) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (out.len() as u64) < n {
        assert!(Instant::now() < deadline, "read {} of {n}", out.len());
        for r in consumer.poll(Duration::from_millis(100)).unwrap() {
            out.push((r.offset, r.value.unwrap()));
        }
    }
    out
}

/// Every record below the high watermark of partition 0 of `name`.
fn read_all(setup: &Setup, name: &str) -> Vec<(u64, String)> {
    let (mut consumer, tp) = consumer_of(setup, name);
    let end = consumer.end_offsets([&tp]).unwrap()[&tp];
    read_until(&mut consumer, end)
}

/// The first `n` records of partition 0 of `name`, waiting for them to be
/// committed.
fn read_at_least(setup: &Setup, name: &str, n: u64) -> Vec<(u64, String)> {
    read_until(&mut consumer_of(setup, name).0, n)
}

/// Every replica's records below `hw`, read from the storage after shutdown.
fn replica_logs(
    storage: &MemoryStorage,
    name: &str,
    replicas: &[u32],
) -> BTreeMap<u32, Vec<(u64, Option<bytes::Bytes>)>> {
    let tp = TopicPartition::new(name, 0).unwrap();
    replicas
        .iter()
        .map(|&r| {
            let log = storage.open(&tp, r, &LogConfig::default()).unwrap();
            let records = log
                .read(log.log_start_offset(), usize::MAX)
                .unwrap()
                .records()
                .map(|rec| rec.map(|rec| (rec.offset, rec.value)).unwrap())
                .collect();
            (r, records)
        })
        .collect()
}

/// Sends one acks=all record straight to broker `node` as a client would
/// (no producer retries) and returns that partition's result.
fn raw_produce(
    setup: &Setup,
    topic: &str,
    node: u32,
    value: &[u8],
) -> ferrolog::Result<ferrolog::protocol::ProduceAck> {
    let mut batch = RecordBatchBuilder::new();
    batch.append(1, None, Some(value), &[]);
    let request = Request::Produce(ProduceRequest {
        acks: Acks::All,
        timeout_ms: 1_000,
        partitions: vec![ProducePartition {
            partition: TopicPartition::new(topic, 0).unwrap(),
            batch: batch.build(),
        }],
    });
    let endpoint = Endpoint::new(setup.cluster.transport()).unwrap();
    let Ok(Response::Produce(mut response)) = endpoint.call(node, request, WAIT) else {
        panic!("no produce response")
    };
    response.partitions.remove(0).result
}

#[test]
fn a_record_on_the_leader_alone_is_invisible_until_the_isr_has_it() {
    let setup = cluster(
        3,
        BrokerConfig {
            replica_lag_time_max_ms: 60_000,
            ..fast_brokers()
        },
        1,
    );
    topic(&setup, "hw", 3, min_isr(1));
    let p = wait_for(&setup, "hw", "a leader", |p| p.leader.is_some());
    let leader = p.leader.unwrap();
    let followers: Vec<u32> = p
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != leader)
        .collect();
    let first = producer(&setup, Acks::All)
        .send(ProducerRecord::new("hw", "committed".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(first.offset, 0);

    // Followers can no longer fetch from the leader (the controller still
    // hears everyone, so nothing is re-elected).
    let majority: Vec<u32> = followers.clone();
    setup.faults.partition(&[&[leader], &majority]);
    let only_leader = producer(&setup, Acks::Leader)
        .send(ProducerRecord::new("hw", "leader only".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(only_leader.offset, 1, "acks=1: the leader has it");
    let visible = read_all(&setup, "hw");
    assert_eq!(
        visible,
        [(0, "committed".to_string())],
        "offset 1 is above the high watermark"
    );

    setup.faults.heal();
    // Visible once the followers have it: a consumer's fetch waits for it.
    assert_eq!(
        read_at_least(&setup, "hw", 2)[1],
        (1, "leader only".to_string())
    );
}

#[test]
fn isr_below_min_insync_replicas_refuses_acks_all_and_appends_nothing() {
    let setup = cluster(3, fast_brokers(), 2);
    topic(&setup, "min", 3, min_isr(2));
    let p = wait_for(&setup, "min", "a full ISR", |p| p.isr.len() == 3);
    let leader = p.leader.unwrap();
    for &r in p.replicas.iter().filter(|&&r| r != leader) {
        setup.cluster.stop_broker(r).unwrap();
    }
    wait_for(&setup, "min", "the ISR to shrink to the leader", |p| {
        p.isr == [leader]
    });
    let result = raw_produce(&setup, "min", leader, b"refused");
    assert!(
        matches!(
            result,
            Err(Error::NotEnoughReplicas {
                isr: 1,
                min_insync_replicas: 2,
                ..
            })
        ),
        "{result:?}"
    );
    assert!(read_all(&setup, "min").is_empty(), "nothing was appended");
    // acks=1 is still served.
    let meta = producer(&setup, Acks::Leader)
        .send(ProducerRecord::new("min", "one".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(meta.offset, 0);
}

#[test]
fn acks_all_survives_the_leaders_crash_without_losing_an_acknowledged_record() {
    for seed in 0..6u64 {
        let setup = cluster(3, fast_brokers(), 100 + seed);
        topic(&setup, "safe", 3, min_isr(2));
        let p = wait_for(&setup, "safe", "a full ISR", |p| p.isr.len() == 3);
        let old_leader = p.leader.unwrap();
        let producer = producer(&setup, Acks::All);
        let crash_at = 5 + (seed as usize * 7) % 30;
        let mut acknowledged = Vec::new();
        let mut pending = Vec::new();
        for i in 0..40 {
            if i == crash_at {
                setup.cluster.crash_broker(old_leader).unwrap();
            }
            let value = format!("r{i}");
            pending.push((
                value.clone(),
                producer.send(ProducerRecord::new("safe", value)).unwrap(),
            ));
            if i % 5 == 4 {
                for (value, f) in pending.drain(..) {
                    if f.wait().is_ok() {
                        acknowledged.push(value);
                    }
                }
            }
        }
        for (value, f) in pending.drain(..) {
            if f.wait().is_ok() {
                acknowledged.push(value);
            }
        }
        let p = wait_for(&setup, "safe", "a new leader", |p| {
            p.leader.is_some_and(|l| l != old_leader)
        });
        assert!(p.leader_epoch > 0, "the epoch was bumped");
        let read: Vec<String> = read_all(&setup, "safe")
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        for value in &acknowledged {
            assert!(
                read.contains(value),
                "seed {seed}: acknowledged {value} lost; read {read:?}"
            );
        }
        assert!(
            acknowledged.len() >= 30,
            "seed {seed}: only {} acknowledged",
            acknowledged.len()
        );
    }
}

#[test]
fn a_stale_leader_behind_a_partition_cannot_acknowledge_acks_all() {
    let setup = cluster(3, fast_brokers(), 3);
    topic(&setup, "stale", 3, min_isr(2));
    let p = wait_for(&setup, "stale", "a full ISR", |p| p.isr.len() == 3);
    let old = p.leader.unwrap();
    let others: Vec<u32> = p
        .replicas
        .iter()
        .copied()
        .filter(|&r| r != old)
        .chain([CONTROLLER_ID])
        .collect();
    setup.faults.partition(&[&[old], &others]);
    // A client that still reaches the old leader sends it an acks=all write.
    let result = raw_produce(&setup, "stale", old, b"split brain");
    assert!(
        result.is_err(),
        "the stale leader acknowledged an acks=all write: {result:?}"
    );
    // The majority side elected a new leader in a new epoch.
    let p = wait_for(&setup, "stale", "a new leader", |p| {
        p.leader.is_some_and(|l| l != old)
    });
    assert!(p.leader_epoch > 0);
    setup.faults.heal();
    let meta = producer(&setup, Acks::All)
        .send(ProducerRecord::new("stale", "after".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    let read: Vec<String> = read_all(&setup, "stale")
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    assert_eq!(
        read,
        ["after"],
        "the split-brain record never became visible; got {read:?} ({meta:?})"
    );
}

#[test]
fn unclean_election_off_keeps_the_partition_offline_on_brings_it_back_and_reports_the_loss() {
    for unclean in [false, true] {
        let setup = cluster(2, fast_brokers(), 4);
        let config = TopicConfig {
            unclean_leader_election_enable: unclean,
            ..TopicConfig::default()
        };
        topic(&setup, "u", 2, config);
        let p = wait_for(&setup, "u", "a full ISR", |p| p.isr.len() == 2);
        let (a, b) = (
            p.leader.unwrap(),
            p.replicas
                .iter()
                .copied()
                .find(|&r| Some(r) != p.leader)
                .unwrap(),
        );
        setup.cluster.stop_broker(b).unwrap();
        wait_for(&setup, "u", "b out of the ISR", |p| p.isr == [a]);
        producer(&setup, Acks::All)
            .send(ProducerRecord::new("u", "only on a".to_string()))
            .unwrap()
            .wait()
            .unwrap();
        setup.cluster.stop_broker(a).unwrap();
        setup.cluster.restart_broker(b).unwrap();
        if !unclean {
            // Once the controller has fenced a, it has decided: b is not in
            // sync, so the partition stays offline.
            setup
                .cluster
                .wait_for_metadata(WAIT, |m| m.brokers.iter().all(|info| info.id != a))
                .expect("a is fenced");
            let p = describe(&setup, "u");
            assert_eq!(
                p.leader, None,
                "b is not in sync: the partition stays offline"
            );
            let stuck = producer(&setup, Acks::All);
            let pending = stuck
                .send(ProducerRecord::new("u", "x".to_string()))
                .unwrap();
            assert!(
                pending.wait_timeout(Duration::from_millis(200)).is_none(),
                "no leader, no delivery"
            );
            stuck.close_timeout(Duration::ZERO);
            continue;
        }
        let p = wait_for(&setup, "u", "b to lead uncleanly", |p| p.leader == Some(b));
        assert_eq!(p.isr, [b]);
        producer(&setup, Acks::All)
            .send(ProducerRecord::new("u", "on b".to_string()))
            .unwrap()
            .wait()
            .unwrap();
        setup.cluster.restart_broker(a).unwrap();
        // a rejoins the ISR only after truncating to b's log and catching up.
        wait_for(&setup, "u", "a back in the ISR", |p| p.isr.contains(&a));
        let truncation = setup
            .cluster
            .truncations()
            .into_iter()
            .find(|t| t.broker == a)
            .expect("a truncated");
        assert_eq!(
            truncation.removed,
            0..1,
            "the acknowledged record on a was discarded, and reported"
        );
        assert_eq!(read_all(&setup, "u"), [(0, "on b".to_string())]);
    }
}

/// Two brokers (no ISR shrink during the test) and an rf=2 topic in sync:
/// the setup, the leader and the follower.
fn leader_and_follower(name: &str, seed: u64) -> (Setup, u32, u32) {
    let config = BrokerConfig {
        replica_lag_time_max_ms: 60_000,
        ..fast_brokers()
    };
    let setup = cluster(2, config, seed);
    topic(&setup, name, 2, min_isr(1));
    let p = wait_for(&setup, name, "a full ISR", |p| p.isr.len() == 2);
    let leader = p.leader.unwrap();
    let follower = p.replicas.iter().copied().find(|&r| r != leader).unwrap();
    (setup, leader, follower)
}

#[test]
fn divergent_logs_after_two_fast_failures_end_identical() {
    // KIP-101 scenario 2: a has a record b never got; both fail; b comes
    // back first and leads; a must drop its record, not keep a forked log.
    let (setup, a, b) = leader_and_follower("fork", 5);
    producer(&setup, Acks::All)
        .send(ProducerRecord::new("fork", "both".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    setup.faults.partition(&[&[a], &[b]]);
    producer(&setup, Acks::Leader)
        .send(ProducerRecord::new("fork", "a only".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    setup.cluster.crash_broker(a).unwrap();
    setup.cluster.crash_broker(b).unwrap();
    setup.faults.heal();
    setup.cluster.restart_broker(b).unwrap();
    wait_for(&setup, "fork", "b to lead", |p| p.leader == Some(b));
    producer(&setup, Acks::All)
        .send(ProducerRecord::new("fork", "b new".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    setup.cluster.restart_broker(a).unwrap();
    wait_for(&setup, "fork", "a back in sync", |p| p.isr.len() == 2);
    let expected = [(0, "both".to_string()), (1, "b new".to_string())];
    assert_eq!(read_all(&setup, "fork"), expected);
    let Setup {
        cluster, storage, ..
    } = setup;
    cluster.shutdown().unwrap();
    let logs = replica_logs(&storage, "fork", &[a, b]);
    assert_eq!(logs[&a], logs[&b], "identical logs");
}

/// Passes everything on, except that the answer to the first Produce is
/// lost after the leader handled it (and told on `lost`).
#[derive(Debug, Clone)]
struct LoseFirstProduceAnswer {
    inner: LocalTransport,
    armed: std::sync::Arc<std::sync::atomic::AtomicBool>,
    lost: std::sync::Arc<std::sync::Mutex<Option<std::sync::mpsc::Sender<u32>>>>,
}

impl ferrolog::transport::Transport for LoseFirstProduceAnswer {
    fn register(&self, peer: Peer, inbox: std::sync::Arc<dyn Inbox>) -> ferrolog::Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn send(&self, envelope: Envelope) {
        use std::sync::atomic::Ordering;
        if let (Message::Response(Ok(Response::Produce(_))), Peer::Broker(leader)) =
            (&envelope.message, envelope.from)
            && self.armed.swap(false, Ordering::SeqCst)
        {
            if let Some(tx) = self.lost.lock().unwrap().take() {
                let _ = tx.send(leader);
            }
            // The producer is told the network failed.
            let lost = Envelope {
                message: Message::Response(Err(Error::Network {
                    node: leader,
                    reason: "the answer was lost".into(),
                })),
                ..envelope
            };
            return self.inner.send(lost);
        }
        self.inner.send(envelope)
    }
}

#[test]
fn retries_after_a_leader_change_write_once_with_idempotence_and_twice_without() {
    for idempotent in [true, false] {
        let (tx, rx) = std::sync::mpsc::channel();
        let transport = LoseFirstProduceAnswer {
            inner: LocalTransport::new(),
            armed: Default::default(),
            lost: std::sync::Arc::new(std::sync::Mutex::new(Some(tx))),
        };
        let cluster = Cluster::builder()
            .brokers(3)
            .transport(transport.clone())
            .broker_config(fast_brokers())
            .build()
            .unwrap();
        let setup = Setup {
            cluster,
            storage: MemoryStorage::new(),
            faults: FaultyTransport::new(LocalTransport::new(), 0),
        };
        topic(&setup, "once", 3, min_isr(2));
        let p = wait_for(&setup, "once", "a full ISR", |p| p.isr.len() == 3);
        let config = ProducerConfig::builder()
            .acks(Acks::All)
            .enable_idempotence(idempotent)
            .linger_ms(0u64)
            .retry_backoff_ms(300u64)
            .retry_backoff_max_ms(300u64)
            .request_timeout_ms(5_000u64)
            .delivery_timeout_ms(20_000u64)
            .build()
            .unwrap();
        let producer: Producer<(), String> = Producer::with_serializers(
            &setup.cluster,
            config,
            ferrolog::client::Postcard,
            ferrolog::client::DefaultSerde,
        )
        .unwrap();
        transport
            .armed
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let sent = producer
            .send(ProducerRecord::new("once", "exactly once?".to_string()))
            .unwrap();
        // The leader replicated and acknowledged it, but the answer was lost:
        // the producer will retry. Crash the leader before it does.
        let leader = rx.recv_timeout(WAIT).expect("the first answer was lost");
        assert_eq!(Some(leader), p.leader);
        setup.cluster.crash_broker(leader).unwrap();
        let meta = sent.wait().unwrap();
        let p = describe(&setup, "once");
        assert_ne!(p.leader, Some(leader), "the retry went to a new leader");
        let copies = read_all(&setup, "once")
            .into_iter()
            .filter(|(_, v)| v == "exactly once?")
            .count();
        if idempotent {
            assert_eq!(copies, 1, "the new leader recognised the retry");
            assert_eq!(meta.offset, 0, "with the original offset");
        } else {
            assert_eq!(copies, 2, "without idempotence the retry is written again");
        }
    }
}

#[test]
fn a_restarted_follower_keeps_records_above_its_stale_high_watermark() {
    // KIP-101 scenario 1: a follower that restarts must not truncate to its
    // (stale) high watermark; if it did, the leader's death right after
    // would lose acknowledged records.
    let (setup, a, b) = leader_and_follower("stale-hw", 6);
    let producer = producer(&setup, Acks::All);
    for value in ["m1", "m2"] {
        producer
            .send(ProducerRecord::new("stale-hw", value.to_string()))
            .unwrap()
            .wait()
            .unwrap();
    }
    // b restarts and cannot fetch again before a dies.
    setup.faults.partition(&[&[a], &[b]]);
    setup.cluster.crash_broker(b).unwrap();
    setup.cluster.restart_broker(b).unwrap();
    setup.cluster.crash_broker(a).unwrap();
    let p = wait_for(&setup, "stale-hw", "b to lead", |p| p.leader == Some(b));
    assert!(p.leader_epoch > 0);
    assert!(
        setup.cluster.truncations().is_empty(),
        "b truncated nothing"
    );
    setup.faults.heal();
    let expected = [(0, "m1".to_string()), (1, "m2".to_string())];
    assert_eq!(
        read_all(&setup, "stale-hw"),
        expected,
        "no acknowledged record lost"
    );
    setup.cluster.restart_broker(a).unwrap();
    wait_for(&setup, "stale-hw", "a back in sync", |p| p.isr.len() == 2);
    drop(producer);
    let Setup {
        cluster, storage, ..
    } = setup;
    cluster.shutdown().unwrap();
    let logs = replica_logs(&storage, "stale-hw", &[a, b]);
    assert_eq!(logs[&a], logs[&b], "identical logs");
}

#[test]
fn a_new_controller_takes_over_and_an_older_controllers_metadata_is_ignored() {
    let setup = cluster(3, fast_brokers(), 8);
    topic(&setup, "before", 3, min_isr(2));
    wait_for(&setup, "before", "a full ISR", |p| p.isr.len() == 3);
    let producer = producer(&setup, Acks::All);
    let mut acknowledged = Vec::new();
    let mut send = |value: &str| {
        let meta = producer
            .send(ProducerRecord::new("before", value.to_string()))
            .unwrap()
            .wait()
            .unwrap();
        acknowledged.push((meta.offset, value.to_string()));
    };
    send("with the first controller");
    setup.cluster.crash_controller();
    send("without a controller"); // brokers serve on their own
    let admin = Admin::with_config(
        &setup.cluster,
        ferrolog::client::AdminConfig {
            default_api_timeout_ms: 300,
            ..Default::default()
        },
    )
    .unwrap();
    assert!(
        admin.create_topic(NewTopic::new("during", 1)).is_err(),
        "no controller, no topic changes"
    );
    setup.cluster.restart_controller().unwrap();
    Admin::new(&setup.cluster)
        .unwrap()
        .create_topic(NewTopic::new("after", 1).replication_factor(3))
        .unwrap();
    send("with the second controller");

    // Metadata from the first controller's epoch is ignored, however new its
    // version looks.
    let stale = ferrolog::protocol::ClusterMetadata {
        controller_epoch: 1,
        version: u64::MAX,
        ..Default::default()
    };
    let request = Request::UpdateMetadata(ferrolog::protocol::UpdateMetadataRequest::full(
        std::sync::Arc::new(stale),
    ));
    let endpoint = Endpoint::new(setup.cluster.transport()).unwrap();
    assert!(endpoint.call(0, request, WAIT).is_ok());
    let ask = Request::Metadata(ferrolog::protocol::MetadataRequest::default());
    let Ok(Response::Metadata(seen)) = endpoint.call(0, ask, WAIT) else {
        panic!("no metadata")
    };
    let names: Vec<&str> = seen.topics.iter().map(|t| &*t.name).collect();
    assert_eq!(
        names,
        ["after", "before"],
        "broker 0 kept the newer controller's metadata"
    );

    // The new controller also handles failures.
    let leader = describe(&setup, "before").leader.unwrap();
    setup.cluster.crash_broker(leader).unwrap();
    wait_for(&setup, "before", "a new leader", |p| {
        p.leader.is_some_and(|l| l != leader)
    });
    send("after a failover under the second controller");
    let read = read_all(&setup, "before");
    for record in &acknowledged {
        assert!(read.contains(record), "{record:?} lost: {read:?}");
    }
}

#[test]
fn partitions_move_to_an_added_broker_while_clients_keep_running() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let setup = cluster(3, fast_brokers(), 9);
    let admin = Admin::new(&setup.cluster).unwrap();
    admin
        .create_topic(
            NewTopic::new("grow", 2)
                .replication_factor(2)
                .config(min_isr(1)),
        )
        .unwrap();
    setup
        .cluster
        .wait_for_metadata(WAIT, |m| {
            m.topics["grow"].partitions.iter().all(|p| p.isr.len() == 2)
        })
        .expect("both partitions in sync");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let producer = producer(&setup, Acks::All);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acknowledged: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) || i < 200 {
                let p = i % 2;
                let value = format!("v{i}");
                let meta = producer
                    .send(ProducerRecord::new("grow", value.clone()).with_partition(p))
                    .unwrap()
                    .wait()
                    .unwrap();
                acknowledged
                    .entry(p)
                    .or_default()
                    .push((meta.offset, value));
                i += 1;
            }
            acknowledged
        })
    };
    let added = setup.cluster.add_broker(None).unwrap();
    assert_eq!(added, 3);
    let before = admin.describe_topic("grow").unwrap();
    let targets: Vec<(TopicPartition, Vec<u32>)> = before
        .partitions
        .iter()
        .map(|p| {
            (
                TopicPartition::new("grow", p.partition).unwrap(),
                vec![added, p.replicas[1]],
            )
        })
        .collect();
    let results = admin.reassign_partitions(targets.clone()).unwrap();
    assert!(results.iter().all(|(_, r)| r.is_ok()), "{results:?}");
    let moved = setup.cluster.wait_for_metadata(WAIT, |m| {
        m.topics["grow"]
            .partitions
            .iter()
            .zip(&targets)
            .all(|(p, (_, target))| {
                p.reassigning_to.is_none()
                    && &p.replicas == target
                    && p.leader.is_some_and(|l| target.contains(&l))
            })
    });
    if let Err(e) = moved {
        panic!(
            "the move never finished ({e}): {:?}",
            admin.describe_topic("grow")
        );
    }
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writer.join().unwrap();
    let partitions: Vec<TopicPartition> = targets.iter().map(|(tp, _)| tp.clone()).collect();
    assert_eq!(
        read_partitions(&setup, &partitions),
        acknowledged,
        "every acknowledged record, once, in order, across the move"
    );
}

/// Every record of `partitions` up to their end offsets, by partition.
fn read_partitions(
    setup: &Setup,
    partitions: &[TopicPartition],
) -> BTreeMap<u32, Vec<(u64, String)>> {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait_ms(50u32)
        .build()
        .unwrap();
    let mut consumer: Consumer<(), String> = Consumer::with_deserializers(
        &setup.cluster,
        config,
        ferrolog::client::Postcard,
        ferrolog::client::DefaultSerde,
    )
    .unwrap();
    consumer.assign(partitions.to_vec()).unwrap();
    let ends = consumer.end_offsets(partitions).unwrap();
    let mut read: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let total: u64 = ends.values().sum();
    let deadline = Instant::now() + WAIT;
    while read.values().map(Vec::len).sum::<usize>() < total as usize {
        assert!(Instant::now() < deadline);
        for r in consumer.poll(Duration::from_millis(100)).unwrap() {
            read.entry(r.partition())
                .or_default()
                .push((r.offset, r.value.unwrap()));
        }
    }
    read
}

/// Controlled shutdown (SPEC O5, issue 15 acceptance 3): while an acks=all
/// producer keeps writing to three partitions, one of the three brokers is
/// stopped gracefully. Its leaderships move to in-sync followers before it
/// stops, so the longest gap between two acknowledged sends stays under
/// 500 ms — with the default session timeout of 9 s, which a stop without
/// handover would wait out. Nothing acknowledged is lost or written twice,
/// and once the broker is back and in sync it leads its preferred
/// partition again.
#[test]
fn a_graceful_stop_hands_leadership_over_without_a_pause_and_the_preferred_leader_returns() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::mpsc;
    let config = BrokerConfig {
        replica_fetch_wait_max_ms: 50,
        ..BrokerConfig::default()
    };
    assert_eq!(config.broker_session_timeout_ms, 9_000);
    let setup = cluster(3, config, 15);
    let admin = Admin::new(&setup.cluster).unwrap();
    admin
        .create_topic(
            NewTopic::new("orders", 3)
                .replication_factor(3)
                .config(min_isr(2)),
        )
        .unwrap();
    let preferred = |m: &ferrolog::protocol::ClusterMetadata| {
        m.topics["orders"]
            .partitions
            .iter()
            .all(|p| p.isr.len() == 3 && p.leader == p.replicas.first().copied())
    };
    setup
        .cluster
        .wait_for_metadata(WAIT, preferred)
        .expect("all in sync, preferred leaders");
    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let (acks, acked) = mpsc::channel::<()>();
    let producer = producer(&setup, Acks::All);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acknowledged: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
            let mut times = Vec::new();
            let mut i = 0u32;
            while !stop.load(Ordering::SeqCst) {
                let p = i % 3;
                let value = format!("v{i}");
                let meta = producer
                    .send(ProducerRecord::new("orders", value.clone()).with_partition(p))
                    .unwrap()
                    .wait()
                    .unwrap();
                times.push(Instant::now());
                acknowledged
                    .entry(p)
                    .or_default()
                    .push((meta.offset, value));
                let _ = acks.send(());
                i += 1;
            }
            (acknowledged, times)
        })
    };
    let wait_acks = |n: usize| {
        for _ in 0..n {
            acked.recv_timeout(WAIT).expect("the producer keeps going");
        }
    };
    wait_acks(300);
    let stopped = 1;
    let led_before = admin.describe_topic("orders").unwrap();
    assert!(
        led_before
            .partitions
            .iter()
            .any(|p| p.leader == Some(stopped))
    );
    setup.cluster.stop_broker(stopped).unwrap();
    let during = admin.describe_topic("orders").unwrap();
    for p in &during.partitions {
        assert!(p.leader.is_some_and(|l| l != stopped), "{p:?}");
        assert!(!p.isr.contains(&stopped), "{p:?}");
    }
    wait_acks(300);
    setup.cluster.restart_broker(stopped).unwrap();
    if let Err(e) = setup.cluster.wait_for_metadata(WAIT, preferred) {
        panic!(
            "the preferred leader never returned ({e}): {:?}",
            admin.describe_topic("orders")
        );
    }
    wait_acks(300);
    stop.store(true, Ordering::SeqCst);
    let (acknowledged, times) = writer.join().unwrap();
    let longest = times.windows(2).map(|w| w[1] - w[0]).max().expect("acks");
    println!(
        "controlled shutdown: {} acknowledged sends, longest gap between two {:.1} ms",
        times.len(),
        longest.as_secs_f64() * 1e3
    );
    assert!(
        longest < Duration::from_millis(500),
        "longest gap {longest:?}"
    );
    let partitions: Vec<TopicPartition> = (0..3)
        .map(|p| TopicPartition::new("orders", p).unwrap())
        .collect();
    assert_eq!(
        read_partitions(&setup, &partitions),
        acknowledged,
        "every acknowledged record, once, in order, across the handover"
    );
}

/// New partitions keep the topic's replication factor: with fewer live
/// brokers than that, `create_partitions` fails with
/// `InvalidReplicationFactor` and adds nothing, down to no live broker at
/// all (it used to add under-replicated partitions, or none and answer
/// `Ok`).
#[test]
fn create_partitions_refuses_a_replication_factor_the_live_brokers_cannot_hold() {
    let setup = cluster(3, fast_brokers(), 11);
    topic(&setup, "grow", 3, min_isr(2));
    wait_for(&setup, "grow", "a full ISR", |p| p.isr.len() == 3);
    let admin = Admin::new(&setup.cluster).unwrap();
    for (stopped, live) in [(1, 2), (2, 1), (0, 0)] {
        setup.cluster.stop_broker(stopped).unwrap();
        setup
            .cluster
            .wait_for_metadata(WAIT, |m| m.brokers.iter().all(|b| b.id != stopped))
            .expect("the stopped broker is fenced");
        let refused = admin.create_partitions("grow", 2);
        assert!(
            matches!(refused, Err(Error::InvalidReplicationFactor { .. })),
            "{live} live brokers: {refused:?}"
        );
        assert_eq!(admin.describe_topic("grow").unwrap().partitions.len(), 1);
    }
    for id in 0..3 {
        setup.cluster.restart_broker(id).unwrap();
    }
    setup
        .cluster
        .wait_for_metadata(WAIT, |m| m.brokers.len() == 3)
        .expect("all three back");
    admin.create_partitions("grow", 2).unwrap();
    let grown = admin.describe_topic("grow").unwrap();
    assert_eq!(grown.partitions.len(), 2);
    assert_eq!(grown.partitions[1].replicas.len(), 3);
}

/// `Admin::delete_records` (SPEC O1, Kafka's DeleteRecords): the log start
/// moves to the offset on the leader at once and on the followers with
/// their next fetch, so a new leader starts there too; an offset above the
/// high watermark is refused with `OffsetOutOfRange`, an unknown partition
/// with `UnknownTopicOrPartition`, and nothing at or after the offset is
/// lost.
#[test]
fn delete_records_moves_the_log_start_on_the_leader_and_its_followers() {
    let setup = cluster(3, fast_brokers(), 21);
    topic(&setup, "trim", 3, min_isr(2));
    wait_for(&setup, "trim", "a full ISR", |p| p.isr.len() == 3);
    let producer = producer(&setup, Acks::All);
    for i in 0..100 {
        producer
            .send(ProducerRecord::new("trim", format!("r{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    let admin = Admin::new(&setup.cluster).unwrap();
    let tp = TopicPartition::new("trim", 0).unwrap();
    let unknown = TopicPartition::new("nothing-here", 0).unwrap();
    let results = admin
        .delete_records([(tp.clone(), 40), (unknown.clone(), 1)])
        .unwrap();
    assert_eq!(results[&tp].as_ref().ok(), Some(&40), "{results:?}");
    assert!(
        matches!(
            results[&unknown],
            Err(Error::UnknownTopicOrPartition { .. })
        ),
        "{results:?}"
    );
    let beyond = admin.delete_records([(tp.clone(), 101)]).unwrap();
    assert!(
        matches!(
            beyond[&tp],
            Err(Error::OffsetOutOfRange {
                offset: 101,
                log_start_offset: 40,
                ..
            })
        ),
        "{beyond:?}"
    );
    let partition = setup.cluster.topic("trim").partition(0).unwrap();
    assert_eq!(partition.log_start_offset().unwrap(), 40);
    // One more acknowledged record: the followers fetched after the delete.
    producer
        .send(ProducerRecord::new("trim", "r100".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    let old_leader = partition.leader().unwrap().unwrap();
    setup.cluster.stop_broker(old_leader).unwrap();
    let new_leader = partition.leader().unwrap().unwrap();
    assert_ne!(new_leader, old_leader);
    assert_eq!(
        partition.log_start_offset().unwrap(),
        40,
        "the new leader followed the log start"
    );
    let read = read_until(&mut consumer_of(&setup, "trim").0, 61);
    let expected: Vec<(u64, String)> = (40..101).map(|i| (i, format!("r{i}"))).collect();
    assert_eq!(read, expected, "nothing at or after the offset is lost");
}

/// `Admin::create_topic` fails fast when there is no controller (issue 15):
/// once the brokers have not heard from one for a session
/// (`broker_session_timeout_ms`, 150 ms here) they say so in their
/// metadata, and the call fails with `ControllerNotAvailable` instead of
/// retrying for `default_api_timeout_ms` (60 s); nothing is created. With a
/// controller back, the same call succeeds.
#[test]
fn admin_fails_fast_without_a_controller_and_works_again_once_one_is_back() {
    let setup = cluster(3, fast_brokers(), 31);
    let admin = Admin::new(&setup.cluster).unwrap();
    admin.create_topic(NewTopic::new("before", 1)).unwrap();
    setup.cluster.crash_controller();
    let started = Instant::now();
    let refused = admin.create_topic(NewTopic::new("during", 1));
    let took = started.elapsed();
    assert!(
        matches!(refused, Err(Error::ControllerNotAvailable { .. })),
        "{refused:?}"
    );
    println!("create_topic without a controller failed after {took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}, not fast");
    let describe = admin.describe_topic("before").unwrap();
    assert_eq!(describe.partitions.len(), 1, "the brokers still serve");

    setup.cluster.restart_controller().unwrap();
    // The brokers hear from the new controller at their next heartbeat;
    // until then the call may still be refused, never anything else.
    let deadline = Instant::now() + WAIT;
    loop {
        match admin.create_topic(NewTopic::new("after", 1)) {
            Ok(()) => break,
            Err(Error::ControllerNotAvailable { .. }) if Instant::now() < deadline => {}
            other => panic!("{other:?}"),
        }
    }
    let topics = admin.list_topics().unwrap();
    assert_eq!(topics, ["after", "before"], "nothing made while refused");
}
