//! Consumer groups:
//!
//! - `consume/group-3`: three members of one group, each on its own thread,
//!   read 1,000,000 records of 100 bytes from a 6-partition topic on file
//!   storage (one broker), from `subscribe` until the group has read every
//!   record, joining included (heartbeat interval 50 ms; `__consumer_offsets`
//!   exists already, as in any cluster that has seen a group). Compare with
//!   `consume/file` of the pipeline bench (one consumer, one partition).
//! - `rebalance/100x10` (range, the default assignor) and
//!   `rebalance/100x10-cooperative`: ten members consume a 100-partition
//!   topic while a producer keeps writing; an eleventh joins. Each sample is
//!   the time from its `subscribe` until the coordinator reports every member
//!   holding exactly its target partitions and the new member has returned a
//!   record. The new member then leaves and the group settles again before
//!   the next sample. Heartbeat interval 50 ms.
//!
//! Run with `cargo bench --bench groups`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Run, percentile, report};
use ferrolog::broker::BrokerConfig;
use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::group::GroupState;
use ferrolog::{Admin, Cluster, NewTopic};

const RECORDS: usize = 1_000_000;
const VALUE_BYTES: usize = 100;
const GROUP_PARTITIONS: u32 = 6;
const REBALANCE_PARTITIONS: u32 = 100;
const REBALANCE_MEMBERS: usize = 10;
const REBALANCE_SAMPLES: usize = 200;

/// Auto-commit commits before partitions are revoked, so a partition that
/// moves while the members join is not read twice.
fn member_config(group: &str, assignor: &str, heartbeat_ms: u64) -> ConsumerConfig {
    ConsumerConfig::builder()
        .group_id(group.to_string())
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .heartbeat_interval_ms(heartbeat_ms)
        .session_timeout_ms(10_000u64)
        .fetch_max_wait_ms(100u32)
        .partition_assignment_strategy(assignor.to_string())
        .build()
        .expect("config")
}

/// Writes `records` values round robin over the topic's partitions.
fn fill(cluster: &Cluster, topic: &'static str, partitions: u32, records: usize) {
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger_ms(5u64)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(cluster, config).expect("producer");
    let value = Bytes::from(vec![b'x'; VALUE_BYTES]);
    let mut last = None;
    for i in 0..records {
        let record =
            ProducerRecord::new(topic, value.clone()).with_partition(i as u32 % partitions);
        last = Some(producer.send(record).expect("send"));
    }
    producer.flush();
    last.expect("sent").wait().expect("acknowledged");
}

/// Makes the cluster create `__consumer_offsets` (which the first group of
/// a cluster waits for), so the runs time groups, not that one-off.
fn warm_up(cluster: &Cluster) {
    let admin = Admin::new(cluster).expect("admin");
    assert!(matches!(
        admin.describe_group("nobody-yet"),
        Err(ferrolog::Error::GroupIdNotFound { .. })
    ));
}

fn consume_group_3() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cluster = Cluster::builder()
        .data_dir(dir.path())
        .build()
        .expect("cluster");
    Admin::new(&cluster)
        .and_then(|a| a.create_topic(NewTopic::new("events", GROUP_PARTITIONS)))
        .expect("topic");
    fill(&cluster, "events", GROUP_PARTITIONS, RECORDS);
    warm_up(&cluster);
    let read = Arc::new(AtomicUsize::new(0));
    let bytes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let members: Vec<_> = (0..3)
        .map(|_| {
            let mut consumer: Consumer<Bytes, Bytes> =
                Consumer::new(&cluster, member_config("readers", "range", 50)).expect("consumer");
            let (read, bytes) = (read.clone(), bytes.clone());
            thread::spawn(move || {
                consumer.subscribe(["events"]).expect("subscribe");
                while read.load(Ordering::Relaxed) < RECORDS {
                    let records = consumer.poll(Duration::from_millis(50)).expect("poll");
                    let size: usize = records
                        .iter()
                        .filter_map(|r| r.value.as_ref())
                        .map(|v| v.len())
                        .sum();
                    bytes.fetch_add(size, Ordering::Relaxed);
                    read.fetch_add(records.len(), Ordering::Relaxed);
                }
                consumer.assignment().len()
            })
        })
        .collect();
    let owned: Vec<usize> = members
        .into_iter()
        .map(|m| m.join().expect("member"))
        .collect();
    let elapsed = started.elapsed();
    assert_eq!(
        read.load(Ordering::Relaxed),
        RECORDS,
        "each record read once"
    );
    assert_eq!(bytes.load(Ordering::Relaxed), RECORDS * VALUE_BYTES);
    report(
        "consume/group-3",
        RECORDS,
        RECORDS * VALUE_BYTES,
        &Run {
            elapsed,
            latencies_ns: Vec::new(),
        },
        &format!("partitions_per_member={owned:?}"),
    );
}

/// A member consuming on its own thread until told to stop.
struct Running {
    stop: Arc<AtomicBool>,
    first_record_ns: Arc<AtomicU64>,
    thread: thread::JoinHandle<()>,
}

fn run_member(cluster: &Cluster, assignor: &str, epoch: Instant) -> Running {
    let mut consumer: Consumer<Bytes, Bytes> =
        Consumer::new(cluster, member_config("rebalancers", assignor, 50)).expect("consumer");
    let stop = Arc::new(AtomicBool::new(false));
    let first_record_ns = Arc::new(AtomicU64::new(0));
    let (stop2, first2) = (stop.clone(), first_record_ns.clone());
    let thread = thread::spawn(move || {
        consumer.subscribe(["busy"]).expect("subscribe");
        while !stop2.load(Ordering::Relaxed) {
            let records = consumer.poll(Duration::from_millis(10)).expect("poll");
            if !records.is_empty() && first2.load(Ordering::Relaxed) == 0 {
                first2.store(epoch.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
        }
        consumer.close();
    });
    Running {
        stop,
        first_record_ns,
        thread,
    }
}

fn stable_with(admin: &Admin, members: usize) -> bool {
    admin.describe_group("rebalancers").is_ok_and(|d| {
        d.description.state == GroupState::Stable && d.description.members.len() == members
    })
}

fn wait_stable(admin: &Admin, members: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !stable_with(admin, members) {
        assert!(Instant::now() < deadline, "the group did not settle");
        thread::sleep(Duration::from_millis(1));
    }
}

fn rebalance(name: &str, assignor: &str) {
    let cluster = Cluster::builder()
        .broker_config(BrokerConfig {
            offsets_topic_num_partitions: 10,
            ..BrokerConfig::default()
        })
        .build()
        .expect("cluster");
    let admin = Admin::new(&cluster).expect("admin");
    admin
        .create_topic(NewTopic::new("busy", REBALANCE_PARTITIONS))
        .expect("topic");
    warm_up(&cluster);
    // A steady trickle of records over every partition.
    let producing = Arc::new(AtomicBool::new(true));
    let producer_thread = {
        let producing = producing.clone();
        let producer: Producer<Bytes, Bytes> = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .acks(Acks::Leader)
                .linger_ms(1u64)
                .build()
                .expect("config"),
        )
        .expect("producer");
        thread::spawn(move || {
            let mut i = 0u32;
            while producing.load(Ordering::Relaxed) {
                for _ in 0..100 {
                    let record = ProducerRecord::new("busy", Bytes::from_static(b"x"))
                        .with_partition(i % REBALANCE_PARTITIONS);
                    let _ = producer.send(record);
                    i = i.wrapping_add(1);
                }
                thread::sleep(Duration::from_millis(5));
            }
        })
    };
    let epoch = Instant::now();
    let members: Vec<Running> = (0..REBALANCE_MEMBERS)
        .map(|_| run_member(&cluster, assignor, epoch))
        .collect();
    wait_stable(&admin, REBALANCE_MEMBERS);
    let mut samples = Vec::with_capacity(REBALANCE_SAMPLES);
    for _ in 0..REBALANCE_SAMPLES {
        let joined = epoch.elapsed().as_nanos() as u64;
        let newcomer = run_member(&cluster, assignor, epoch);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let first = newcomer.first_record_ns.load(Ordering::Relaxed);
            if first != 0 && stable_with(&admin, REBALANCE_MEMBERS + 1) {
                samples.push(epoch.elapsed().as_nanos() as u64 - joined);
                break;
            }
            assert!(Instant::now() < deadline, "the join did not settle");
            thread::sleep(Duration::from_millis(1));
        }
        newcomer.stop.store(true, Ordering::Relaxed);
        newcomer.thread.join().expect("newcomer");
        wait_stable(&admin, REBALANCE_MEMBERS);
    }
    producing.store(false, Ordering::Relaxed);
    producer_thread.join().expect("producer");
    for m in members {
        m.stop.store(true, Ordering::Relaxed);
        m.thread.join().expect("member");
    }
    samples.sort_unstable();
    let ms = |p| percentile(&samples, p) / 1000.0;
    println!(
        "BENCH name={name} samples={} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} heartbeat_ms=50",
        samples.len(),
        ms(0.50),
        ms(0.99),
        ms(1.0)
    );
}

fn main() {
    consume_group_3();
    rebalance("rebalance/100x10", "range");
    rebalance("rebalance/100x10-cooperative", "cooperative-sticky");
}
