//! A seeded, time-bounded fault test in the spirit of Jepsen's queue
//! checker: an idempotent acks=all producer and a consumer run against three
//! brokers while the network loses, duplicates and delays messages and
//! brokers crash and restart. Afterwards every acknowledged record must be
//! read exactly once at the offset it was acknowledged with, each
//! partition's records must be in send order, what the consumer saw during
//! the faults must agree with the final log, and all replicas must hold the
//! same records below the high watermark.
//!
//! `FAULT_SEEDS` (default 2) seeds run from `FAULT_SEED` (default 1).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrolog::broker::BrokerConfig;
use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, DefaultSerde, Postcard, Producer,
    ProducerConfig, ProducerRecord,
};
use ferrolog::storage::{LogConfig, MemoryStorage, Storage};
use ferrolog::transport::{FaultyTransport, LocalTransport};
use ferrolog::{Admin, Cluster, NewTopic, TopicConfig, TopicPartition};

const PARTITIONS: u32 = 3;
const BROKERS: u32 = 3;
const STEPS: usize = 60;
const STEP: Duration = Duration::from_millis(30);

/// A tiny seeded generator for the fault schedule.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

type Seen = Arc<Mutex<BTreeMap<u32, Vec<(u64, String)>>>>;

fn run(seed: u64) -> (u64, usize) {
    let storage = MemoryStorage::new();
    let faults = FaultyTransport::new(LocalTransport::new(), seed);
    let brokers = BrokerConfig {
        replica_lag_time_max_ms: 400,
        replica_fetch_wait_max_ms: 20,
        broker_heartbeat_interval_ms: 20,
        broker_session_timeout_ms: 200,
        ..BrokerConfig::default()
    };
    let cluster = Cluster::builder()
        .brokers(BROKERS)
        .storage(storage.clone())
        .transport(faults.clone())
        .broker_config(brokers)
        .build()
        .unwrap();
    let config = TopicConfig {
        min_insync_replicas: 2,
        ..TopicConfig::default()
    };
    Admin::new(&cluster)
        .unwrap()
        .create_topic(
            NewTopic::new("queue", PARTITIONS)
                .replication_factor(3)
                .config(config),
        )
        .unwrap();
    let partitions: Vec<TopicPartition> = (0..PARTITIONS)
        .map(|p| TopicPartition::new("queue", p).unwrap())
        .collect();

    // A consumer polls all the while; what it sees must match the final log.
    let seen: Seen = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (seen, stop, partitions) = (seen.clone(), stop.clone(), partitions.clone());
        let mut consumer: Consumer<(), String> = Consumer::with_deserializers(
            &cluster,
            ConsumerConfig::builder()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .fetch_max_wait_ms(20u32)
                .request_timeout_ms(1_000u64)
                .default_api_timeout_ms(500u64)
                .build()
                .unwrap(),
            Postcard,
            DefaultSerde,
        )
        .unwrap();
        std::thread::spawn(move || {
            consumer.assign(partitions).unwrap();
            while !stop.load(Ordering::SeqCst) {
                // Errors during faults (timeouts, unreachable leaders) are
                // expected; the consumer carries on from its positions.
                if let Ok(records) = consumer.poll(Duration::from_millis(50)) {
                    let mut seen = seen.lock().unwrap();
                    for r in records {
                        seen.entry(r.partition())
                            .or_default()
                            .push((r.offset, r.value.unwrap()));
                    }
                }
            }
        })
    };

    let producer: Producer<(), String> = Producer::with_serializers(
        &cluster,
        ProducerConfig::builder()
            .acks(Acks::All)
            .linger_ms(1u64)
            .retry_backoff_ms(10u64)
            .retry_backoff_max_ms(50u64)
            .request_timeout_ms(1_000u64)
            .delivery_timeout_ms(10_000u64)
            .build()
            .unwrap(),
        Postcard,
        DefaultSerde,
    )
    .unwrap();
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut sent: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    let mut pending = Vec::new();
    let mut crashes = 0u64;
    let mut down: Option<u32> = None;
    for step in 0..STEPS {
        match rng.below(10) {
            0 => faults.drop_requests(0.05),
            1 => faults.duplicate_requests(0.1),
            2 => faults.delay(Some((Duration::from_micros(100), Duration::from_millis(3)))),
            3 => faults.drop_responses(0.05),
            4 | 5 => faults.heal(),
            6 if down.is_none() => {
                let b = rng.below(u64::from(BROKERS)) as u32;
                cluster.crash_broker(b).unwrap();
                down = Some(b);
                crashes += 1;
            }
            7 | 8 => {
                if let Some(b) = down.take() {
                    cluster.restart_broker(b).unwrap();
                }
            }
            _ => {}
        }
        for i in 0..20 {
            let p = (step * 20 + i) as u32 % PARTITIONS;
            let value = format!("s{step}-{i}");
            sent.entry(p).or_default().push(value.clone());
            if let Ok(f) =
                producer.send(ProducerRecord::new("queue", value.clone()).with_partition(p))
            {
                pending.push((p, value, f));
            }
        }
        std::thread::sleep(STEP);
    }
    faults.heal();
    if let Some(b) = down.take() {
        cluster.restart_broker(b).unwrap();
    }
    producer.flush();
    let mut acknowledged: HashMap<String, (u32, u64)> = HashMap::new();
    for (p, value, f) in pending {
        if let Ok(meta) = f.wait() {
            assert_eq!(meta.partition.partition(), p);
            acknowledged.insert(value, (p, meta.offset.unwrap()));
        }
    }
    assert!(
        !acknowledged.is_empty(),
        "seed {seed}: nothing was acknowledged"
    );

    // Wait for every partition to have its full ISR again, then read all.
    let admin = Admin::new(&cluster).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while admin
        .describe_topic("queue")
        .unwrap()
        .partitions
        .iter()
        .any(|p| p.isr.len() < 3)
    {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: ISRs never recovered"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut final_log: BTreeMap<u32, Vec<(u64, String)>> = BTreeMap::new();
    let mut consumer: Consumer<(), String> = Consumer::with_deserializers(
        &cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait_ms(20u32)
            .build()
            .unwrap(),
        Postcard,
        DefaultSerde,
    )
    .unwrap();
    consumer.assign(partitions.clone()).unwrap();
    let ends = consumer.end_offsets(&partitions).unwrap();
    let total: u64 = ends.values().sum();
    let mut read = 0u64;
    while read < total {
        assert!(
            Instant::now() < deadline,
            "seed {seed}: read {read} of {total}"
        );
        for r in consumer.poll(Duration::from_millis(100)).unwrap() {
            final_log
                .entry(r.partition())
                .or_default()
                .push((r.offset, r.value.unwrap()));
            read += 1;
        }
    }
    stop.store(true, Ordering::SeqCst);
    reader.join().unwrap();

    // 1. Every acknowledged record is there exactly once, at its offset.
    let mut at: HashMap<&str, Vec<(u32, u64)>> = HashMap::new();
    for (p, records) in &final_log {
        for (offset, value) in records {
            at.entry(value).or_default().push((*p, *offset));
        }
    }
    for (value, place) in &acknowledged {
        assert_eq!(
            at.get(value.as_str()),
            Some(&vec![*place]),
            "seed {seed}: acknowledged {value} lost or duplicated"
        );
    }
    // No record at all (acknowledged or not) is written twice.
    for (value, places) in &at {
        assert_eq!(
            places.len(),
            1,
            "seed {seed}: {value} written {} times",
            places.len()
        );
    }
    // 2. Per partition, the log is in send order.
    for (p, records) in &final_log {
        let order: HashMap<&str, usize> = sent[p]
            .iter()
            .enumerate()
            .map(|(i, v)| (v.as_str(), i))
            .collect();
        let positions: Vec<usize> = records.iter().map(|(_, v)| order[v.as_str()]).collect();
        assert!(
            positions.windows(2).all(|w| w[0] < w[1]),
            "seed {seed}: partition {p} out of send order"
        );
    }
    // 3. What the consumer saw during the faults agrees with the final log.
    for (p, records) in seen.lock().unwrap().iter() {
        let log: HashMap<u64, &str> = final_log[p].iter().map(|(o, v)| (*o, v.as_str())).collect();
        for (offset, value) in records {
            assert_eq!(
                log.get(offset),
                Some(&value.as_str()),
                "seed {seed}: a read at {p}/{offset} was not kept"
            );
        }
    }
    // 4. All replicas hold the same records below the high watermark (the
    // leader's, `ends`: with the ISR full again, every replica has them).
    drop(consumer);
    drop(producer);
    cluster.shutdown().unwrap();
    for tp in &partitions {
        let logs: Vec<Vec<(u64, Option<bytes::Bytes>)>> = (0..BROKERS)
            .map(|b| {
                let log = storage.open(tp, b, &LogConfig::default()).unwrap();
                let hw = ends[tp];
                let records = log.read(log.log_start_offset(), usize::MAX).unwrap();
                records
                    .records()
                    .map(|r| r.unwrap())
                    .filter(|r| r.offset < hw)
                    .map(|r| (r.offset, r.value))
                    .collect()
            })
            .collect();
        for log in &logs {
            assert_eq!(
                log.len() as u64,
                ends[tp],
                "seed {seed}: a replica of {tp} misses committed records"
            );
            assert_eq!(
                log, &logs[0],
                "seed {seed}: replicas of {tp} differ below the high watermark"
            );
        }
    }
    let stats = faults.stats();
    (stats.faults() + crashes, read as usize)
}

#[test]
fn acknowledged_records_survive_network_faults_and_crashes_exactly_once_in_order() {
    let seeds: u64 = std::env::var("FAULT_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    let first: u64 = std::env::var("FAULT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let (mut faults, mut records) = (0, 0);
    for seed in first..first + seeds {
        let (f, r) = run(seed);
        println!("fault test seed {seed}: {f} faults injected, {r} records checked");
        faults += f;
        records += r;
    }
    println!("fault test: {seeds} seeds, {faults} faults injected, {records} records checked");
}
