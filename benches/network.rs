//! A cluster of processes over TCP (`cargo bench --bench network`): three
//! `ferrolog node` processes on loopback (each a broker and a controller
//! quorum voter, files under a temporary directory), a topic of 6
//! partitions with replication factor 3, and one producer process
//! (`ferrolog perf-produce`) sending 1,000,000 records of 100 bytes with
//! acks=all. The same workload then runs on an embedded 3-broker cluster
//! (files too) in this process, and the line carries the ratio:
//!
//! `BENCH name=network/produce records_per_s=<n> mb_per_s=<n> p50_ms=<n> p99_ms=<n>
//!  in_process_records_per_s=<n> vs_in_process=<r> target=500000 target_vs=0.5 met=yes|no`

#[path = "../tests/support/processes.rs"]
mod support;

use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use ferrolog::client::{Acks, Bootstrap, Producer, ProducerConfig, ProducerRecord};
use ferrolog::{Admin, Cluster, NewTopic, TopicConfig};
use support::{BIN, Nodes, Process, create_replicated};

const RECORDS: usize = 1_000_000;
const RECORD_BYTES: usize = 100;
const PARTITIONS: u32 = 6;
const TARGET: f64 = 500_000.0;
const TARGET_VS: f64 = 0.5;

fn topic() -> NewTopic {
    NewTopic::new("network-bench", PARTITIONS)
        .replication_factor(3)
        .config(TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        })
}

/// A number from the perf-produce line.
fn field(line: &str, name: &str) -> f64 {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {line}"))
}

fn over_the_network() -> String {
    let dir = tempfile::tempdir().expect("dir");
    let nodes = Nodes::on_loopback(dir.path(), 3);
    let running: Vec<Process> = (0..3).map(|id| nodes.start(id)).collect();
    let servers = nodes.servers();
    let admin = Admin::new(Bootstrap::servers(&servers).expect("bootstrap")).expect("admin");
    create_replicated(&admin, "network-bench", PARTITIONS);
    let out = Command::new(BIN)
        .args([
            "perf-produce",
            "--bootstrap-server",
            &servers,
            "--topic",
            "network-bench",
            "--num-records",
            &RECORDS.to_string(),
            "--record-size",
            &RECORD_BYTES.to_string(),
            "--acks",
            "all",
            "--linger-ms",
            "5",
        ])
        .output()
        .expect("perf-produce");
    assert!(
        out.status.success(),
        "perf-produce failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(field(&line, "failed") == 0.0, "records failed: {line}");
    drop(admin);
    for process in running {
        process.stop();
    }
    line
}

fn in_process() -> f64 {
    let dir = tempfile::tempdir().expect("dir");
    let cluster = Cluster::builder()
        .brokers(3)
        .data_dir(dir.path())
        .build()
        .expect("cluster");
    Admin::new(&cluster)
        .expect("admin")
        .create_topic(topic())
        .expect("topic");
    let config = ProducerConfig::builder()
        .acks(Acks::All)
        .linger_ms(5u64)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(&cluster, config).expect("producer");
    let value = Bytes::from(vec![b'x'; RECORD_BYTES]);
    let started = Instant::now();
    let mut sent = Vec::with_capacity(RECORDS);
    for _ in 0..RECORDS {
        let record = ProducerRecord::new("network-bench", value.clone());
        sent.push(producer.send(record).expect("send"));
    }
    producer.flush();
    let elapsed = started.elapsed();
    for delivery in sent {
        delivery.wait().expect("acknowledged");
    }
    drop(producer);
    cluster.shutdown().expect("shutdown");
    RECORDS as f64 / elapsed.as_secs_f64()
}

fn main() {
    let line = over_the_network();
    let local = in_process();
    let records_per_s = field(&line, "records_per_s");
    let vs = records_per_s / local;
    let met = records_per_s >= TARGET && vs >= TARGET_VS;
    println!(
        "BENCH name=network/produce records_per_s={records_per_s:.0} mb_per_s={:.1} secs={:.3} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2} records={RECORDS} record_bytes={RECORD_BYTES} \
         processes=3 replication_factor=3 acks=all in_process_records_per_s={local:.0} \
         vs_in_process={vs:.2} target={TARGET:.0} target_vs={TARGET_VS} met={}",
        field(&line, "mb_per_s"),
        field(&line, "secs"),
        field(&line, "p50_ms"),
        field(&line, "p99_ms"),
        field(&line, "max_ms"),
        if met { "yes" } else { "no" }
    );
}
