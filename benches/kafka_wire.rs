//! The Kafka listener under a Kafka client's load (`cargo bench --bench
//! kafka_wire`): librdkafka's producer (confluent-kafka, with its default
//! acks=all and linger) sends 1,000,000 records of 100 bytes to the
//! listener of a one-broker embedded cluster, as Kafka's own
//! `ProducerPerformance` would; prints records/s and the produce-to-ack
//! latency percentiles:
//!
//! `BENCH name=kafka_wire/produce records_per_s=<n> p50_ms=<n> p99_ms=<n> target=300000 met=yes|no`
//!
//! The producer runs in Python from `target/kafka-venv` (made by
//! `.ci/run`) or `$FERROLOG_PYTHON`; without it the bench says it skipped.

use std::process::Command;
use std::time::Duration;

use ferrolog::{Admin, Cluster, NewTopic};

const RECORDS: usize = 1_000_000;
const RECORD_BYTES: usize = 100;
const TARGET: f64 = 300_000.0;

fn python() -> Option<std::path::PathBuf> {
    let python = std::env::var_os("FERROLOG_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-venv/bin/python")
        });
    Command::new(&python)
        .args(["-c", "import confluent_kafka"])
        .output()
        .is_ok_and(|o| o.status.success())
        .then_some(python)
}

/// A number from the producer's JSON line.
fn field(json: &str, name: &str) -> f64 {
    let key = format!("\"{name}\": ");
    json.split(&key)
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {json}"))
}

fn main() {
    let Some(python) = python() else {
        println!("BENCH name=kafka_wire/produce skipped=no-confluent-kafka (see .ci/run)");
        return;
    };
    let cluster = Cluster::builder()
        .brokers(1)
        .kafka_listener("127.0.0.1:0")
        .build()
        .expect("cluster");
    let addr = cluster.kafka_listener_addr().expect("listener");
    Admin::new(&cluster)
        .expect("admin")
        .create_topic(NewTopic::new("wire-bench", 1))
        .expect("topic");
    cluster
        .wait_for_metadata(Duration::from_secs(10), |m| {
            m.topics
                .get("wire-bench")
                .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()))
        })
        .expect("leader");
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/kafka/wire_producer.py");
    let out = Command::new(python)
        .arg(script)
        .args([
            &addr.to_string(),
            "wire-bench",
            &RECORDS.to_string(),
            &RECORD_BYTES.to_string(),
        ])
        .output()
        .expect("the producer runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rate = field(&stdout, "records_per_s");
    let stored = cluster
        .topic("wire-bench")
        .partition(0)
        .and_then(|p| p.high_watermark())
        .expect("the partition's high watermark");
    assert_eq!(
        stored, RECORDS as u64,
        "every record acknowledged is stored"
    );
    println!(
        "BENCH name=kafka_wire/produce records_per_s={rate:.0} mb_per_s={:.1} secs={:.3} p50_ms={:.2} p99_ms={:.2} max_ms={:.2} records={RECORDS} record_bytes={RECORD_BYTES} stored={stored} client=librdkafka target={TARGET:.0} met={}",
        rate * RECORD_BYTES as f64 / 1e6,
        field(&stdout, "seconds"),
        field(&stdout, "p50_ms"),
        field(&stdout, "p99_ms"),
        field(&stdout, "max_ms"),
        if rate >= TARGET { "yes" } else { "no" }
    );
}
