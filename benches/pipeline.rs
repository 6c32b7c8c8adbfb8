//! The whole pipeline through an embedded one-broker cluster:
//!
//! - `produce/memory`, `produce/file`: 1,000,000 records of 100 bytes, acks=1,
//!   one producer, one partition, linger 5 ms, from the first `send` until
//!   every record is acknowledged.
//! - `consume/file`: the same records read back by one consumer.
//! - `produce/keyed-default`: what a user writes first — a
//!   `Producer<Vec<u8>, Vec<u8>>` with `ProducerConfig::default()` (acks=all,
//!   idempotent, linger 5 ms) sending 1,000,000 records of an 8-byte key and
//!   a 100-byte value, each a fresh `Vec`, to one partition in memory; five
//!   rounds, each on a new cluster, the median reported (with the slowest
//!   and fastest).
//! - `produce/gzip`, `produce/snappy`, `produce/lz4`, `produce/zstd`:
//!   `produce/memory` with the producer compressing JSON-like 100-byte
//!   values; also prints the bytes stored per record (`produce/none` is the
//!   same values uncompressed).
//! - `latency/memory`: 100,000 records sent at a steady 20,000 records/s with
//!   linger 0; latency from `send` to the consumer's `poll` returning it.
//! - `metrics/produce`, `metrics/consume`: `produce/memory` and reading it
//!   all back, with metrics recording on (broker, producer, consumer) and
//!   off, twenty pairs of rounds (off, then on); prints the median rates and
//!   `metrics_cost=`, the median over the pairs of 1 − t_off/t_on (the
//!   share of throughput recording costs; the target is at most 0.03).
//!
//! Run with `cargo bench --bench pipeline` (add `-- latency` for the
//! workloads whose name contains `latency`).

mod common;

use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Run, report};
use ferrolog::broker::BrokerConfig;
use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::{Admin, Cluster, Compression, NewTopic, TopicPartition};

const RECORDS: usize = 1_000_000;
const VALUE_BYTES: usize = 100;
const LATENCY_RECORDS: usize = 100_000;
/// Rounds of `produce/keyed-default`; the median is reported.
const KEYED_ROUNDS: usize = 5;
const LATENCY_RATE: f64 = 20_000.0;

fn topic(cluster: &Cluster, name: &str) -> TopicPartition {
    Admin::new(cluster)
        .and_then(|admin| admin.create_topic(NewTopic::new(name, 1)))
        .expect("create topic");
    TopicPartition::new(name, 0).expect("name")
}

/// A consumer of `partition` from its first offset.
fn consumer_from_start(cluster: &Cluster, partition: TopicPartition) -> Consumer<Bytes, Bytes> {
    consumer_with(cluster, partition, true)
}

fn consumer_with(
    cluster: &Cluster,
    partition: TopicPartition,
    metrics_enabled: bool,
) -> Consumer<Bytes, Bytes> {
    let config = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .metrics_enabled(metrics_enabled)
        .build()
        .expect("config");
    let mut consumer: Consumer<Bytes, Bytes> = Consumer::new(cluster, config).expect("consumer");
    consumer.assign([partition]).expect("assign");
    consumer
}

fn consume_all(cluster: &Cluster, partition: &TopicPartition) -> Run {
    consume_all_with(cluster, partition, true)
}

fn consume_all_with(cluster: &Cluster, partition: &TopicPartition, metrics_enabled: bool) -> Run {
    let mut consumer = consumer_with(cluster, partition.clone(), metrics_enabled);
    let started = Instant::now();
    let mut read = 0;
    let mut bytes = 0;
    while read < RECORDS {
        for record in consumer.poll(Duration::from_secs(5)).expect("poll") {
            bytes += record.value.map_or(0, |v| v.len());
            read += 1;
        }
    }
    let elapsed = started.elapsed();
    assert_eq!(bytes, RECORDS * VALUE_BYTES);
    Run {
        elapsed,
        latencies_ns: Vec::new(),
    }
}

/// A JSON-like value of exactly `VALUE_BYTES`, different for every `i`.
fn json_value(i: usize) -> Vec<u8> {
    let mut v = format!(
        "{{\"id\":{i},\"user\":\"user-{}\",\"event\":\"click\",\"path\":\"/items/{}\",\"ok\":true",
        i % 1000,
        i * 7919 % 10_000
    )
    .into_bytes();
    v.resize(VALUE_BYTES - 1, b' ');
    v.push(b'}');
    v
}

/// `RECORDS` JSON-like values through a producer compressing with `codec`
/// (acks=1, linger 5 ms), timed until all are acknowledged; prints records/s
/// and the batch bytes the broker stored per record.
fn produce_compressed(codec: Compression) {
    let cluster = Cluster::builder().build().expect("cluster");
    let partition = topic(&cluster, "bench");
    let values: Vec<Bytes> = (0..1000).map(|i| Bytes::from(json_value(i))).collect();
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .compression_type(codec)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(&cluster, config).expect("producer");
    let started = Instant::now();
    let mut last = None;
    for i in 0..RECORDS {
        let record = ProducerRecord::new("bench", values[i % values.len()].clone());
        last = Some(producer.send(record).expect("send"));
    }
    producer.flush();
    let run = Run {
        elapsed: started.elapsed(),
        latencies_ns: Vec::new(),
    };
    last.expect("sent").wait().expect("acknowledged");
    let state = cluster
        .topic(partition.topic())
        .partition(0)
        .and_then(|p| p.state())
        .expect("partition state");
    assert_eq!(state.records_in, RECORDS as u64);
    let per_record = state.bytes_in as f64 / RECORDS as f64;
    report(
        &format!("produce/{}", codec.name()),
        RECORDS,
        RECORDS * VALUE_BYTES,
        &run,
        &format!("stored_bytes_per_record={per_record:.1}"),
    );
}

/// `produce/keyed-default`: fresh `Vec<u8>` keys and values, default config.
fn produce_keyed_default() -> Run {
    let cluster = Cluster::builder().build().expect("cluster");
    topic(&cluster, "bench");
    let producer: Producer<Vec<u8>, Vec<u8>> =
        Producer::new(&cluster, ProducerConfig::default()).expect("producer");
    let started = Instant::now();
    let mut last = None;
    for i in 0..RECORDS {
        let key = (i as u64).to_be_bytes().to_vec();
        let value = vec![b'x'; VALUE_BYTES];
        let record = ProducerRecord::new("bench", value).with_key(key);
        last = Some(producer.send(record).expect("send"));
    }
    producer.flush();
    let elapsed = started.elapsed();
    let meta = last.expect("sent").wait().expect("acknowledged");
    assert_eq!(meta.offset, RECORDS as u64 - 1);
    Run {
        elapsed,
        latencies_ns: Vec::new(),
    }
}

fn latency(cluster: &Cluster) -> Run {
    let mut consumer = consumer_from_start(cluster, topic(cluster, "latency"));
    let origin = Instant::now();
    let reader = thread::spawn(move || {
        let mut latencies = Vec::with_capacity(LATENCY_RECORDS);
        while latencies.len() < LATENCY_RECORDS {
            for record in consumer.poll(Duration::from_secs(5)).expect("poll") {
                let now = origin.elapsed().as_nanos() as u64;
                let value = record.value.expect("value");
                let sent = u64::from_be_bytes(value[..8].try_into().expect("stamp"));
                latencies.push(now.saturating_sub(sent));
            }
        }
        latencies
    });
    let config = ProducerConfig::builder()
        .acks(Acks::Leader)
        .linger_ms(0u64)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(cluster, config).expect("producer");
    let interval = Duration::from_secs_f64(1.0 / LATENCY_RATE);
    let started = Instant::now();
    for i in 0..LATENCY_RECORDS {
        // Keep the average rate: sleep while ahead, catch up when behind.
        let due = started + interval * i as u32;
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        let mut value = vec![b'x'; VALUE_BYTES];
        let stamp = origin.elapsed().as_nanos() as u64;
        value[..8].copy_from_slice(&stamp.to_be_bytes());
        let _pending = producer
            .send(ProducerRecord::new("latency", Bytes::from(value)))
            .expect("send");
    }
    producer.flush();
    let latencies_ns = reader.join().expect("reader");
    Run {
        elapsed: started.elapsed(),
        latencies_ns,
    }
}

/// Prints the BENCH line of a throughput run of `RECORDS` records, with
/// whether it met `goal` records/s.
fn report_rate(name: &str, run: &Run, goal: f64) {
    let rate = RECORDS as f64 / run.elapsed.as_secs_f64();
    let met = if rate >= goal { "yes" } else { "no" };
    report(
        name,
        RECORDS,
        RECORDS * VALUE_BYTES,
        run,
        &format!("target={goal:.0} met={met}"),
    );
}

fn main() {
    // `cargo bench --bench pipeline -- <substring>` runs only matching
    // workloads (`consume/file` needs `produce/file` and runs with it).
    let filter: Option<String> = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));

    if wanted("produce/memory") {
        let memory = Cluster::builder().build().expect("cluster");
        topic(&memory, "bench");
        let run = common::produce(&memory, "bench", Acks::Leader, RECORDS, VALUE_BYTES);
        report_rate("produce/memory", &run, 2_000_000.0);
    }

    if wanted("produce/file") || wanted("consume/file") {
        let dir = tempfile::tempdir().expect("tempdir");
        let files = Cluster::builder()
            .data_dir(dir.path())
            .build()
            .expect("cluster");
        let partition = topic(&files, "bench");
        let run = common::produce(&files, "bench", Acks::Leader, RECORDS, VALUE_BYTES);
        report_rate("produce/file", &run, 1_000_000.0);
        let run = consume_all(&files, &partition);
        report_rate("consume/file", &run, 3_000_000.0);
        files.shutdown().expect("shutdown");
    }

    if wanted("produce/keyed-default") {
        // One round takes a quarter of a second, short enough for a
        // scheduler hiccup to move it by a third: the median of five.
        let mut runs: Vec<Run> = (0..KEYED_ROUNDS).map(|_| produce_keyed_default()).collect();
        runs.sort_by_key(|r| r.elapsed);
        let slowest = runs
            .last()
            .map(|r| RECORDS as f64 / r.elapsed.as_secs_f64());
        let fastest = runs
            .first()
            .map(|r| RECORDS as f64 / r.elapsed.as_secs_f64());
        let median = runs.swap_remove(KEYED_ROUNDS / 2);
        let rate = RECORDS as f64 / median.elapsed.as_secs_f64();
        let goal = 3_000_000.0;
        report(
            "produce/keyed-default",
            RECORDS,
            RECORDS * VALUE_BYTES,
            &median,
            &format!(
                "rounds={KEYED_ROUNDS} statistic=median min_records_per_s={:.0} max_records_per_s={:.0} target={goal:.0} met={}",
                slowest.unwrap_or(0.0),
                fastest.unwrap_or(0.0),
                if rate >= goal { "yes" } else { "no" }
            ),
        );
    }

    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        if wanted(&format!("produce/{}", codec.name())) {
            produce_compressed(codec);
        }
    }

    if wanted("metrics") {
        // Seconds per round: [off, on] × [produce, consume], in pairs.
        let mut secs: [[Vec<f64>; 2]; 2] = Default::default();
        for round in 0..40 {
            let on = round % 2 == 1;
            let cluster = Cluster::builder()
                .broker_config(BrokerConfig {
                    metrics_enabled: on,
                    ..BrokerConfig::default()
                })
                .build()
                .expect("cluster");
            let partition = topic(&cluster, "bench");
            let produced =
                common::produce_with(&cluster, "bench", Acks::Leader, RECORDS, VALUE_BYTES, on);
            let consumed = consume_all_with(&cluster, &partition, on);
            let side = &mut secs[usize::from(on)];
            side[0].push(produced.elapsed.as_secs_f64());
            side[1].push(consumed.elapsed.as_secs_f64());
        }
        let median = |mut v: Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        for (i, name) in ["metrics/produce", "metrics/consume"]
            .into_iter()
            .enumerate()
        {
            // Each pair ran back to back, off then on: the median of the
            // pairs' costs is robust to the machine drifting over the run.
            let costs: Vec<f64> = secs[0][i]
                .iter()
                .zip(&secs[1][i])
                .map(|(off, on)| 1.0 - off / on)
                .collect();
            let cost = median(costs);
            let (off, on) = (median(secs[0][i].clone()), median(secs[1][i].clone()));
            println!(
                "BENCH name={name} records_per_s={:.0} off_records_per_s={:.0} metrics_cost={cost:.3} target=0.03 met={}",
                RECORDS as f64 / on,
                RECORDS as f64 / off,
                if cost <= 0.03 { "yes" } else { "no" }
            );
        }
    }

    if wanted("latency/memory") {
        let memory = Cluster::builder().build().expect("cluster");
        let run = latency(&memory);
        let mut sorted = run.latencies_ns.clone();
        sorted.sort_unstable();
        let p99 = common::percentile(&sorted, 0.99);
        report(
            "latency/memory",
            LATENCY_RECORDS,
            LATENCY_RECORDS * VALUE_BYTES,
            &run,
            &format!(
                "target_p99_us=1000 met={}",
                if p99 <= 1000.0 { "yes" } else { "no" }
            ),
        );
    }
}
