//! Replication cost and failover time on an embedded 3-broker cluster over
//! memory storage:
//!
//! - `produce/rf1`: 1,000,000 records of 100 bytes to a partition with one
//!   replica, acks=1, one producer, linger 5 ms.
//! - `produce/rf3-acks-all`: the same to a partition with three replicas,
//!   `min_insync_replicas = 2`, acks=all; prints `vs_rf1`.
//! - `failover`: the leader of an rf=3 partition crashes while a producer
//!   keeps sending; `failover_ms` is the time from the crash to the first
//!   write acknowledged by the new leader, against a session timeout of
//!   `SESSION_MS`.
//!
//! Run with `cargo bench --bench replication`.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::report;
use ferrolog::broker::BrokerConfig;
use ferrolog::client::{Acks, Producer, ProducerConfig, ProducerRecord};
use ferrolog::{Admin, Cluster, NewTopic, TopicConfig};

const RECORDS: usize = 1_000_000;
const VALUE_BYTES: usize = 100;
const SESSION_MS: u64 = 500;

fn failover(cluster: &Cluster, admin: &Admin) -> Duration {
    admin
        .create_topic(
            NewTopic::new("failover", 1)
                .replication_factor(3)
                .config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
        )
        .expect("topic");
    let config = ProducerConfig::builder()
        .acks(Acks::All)
        .linger_ms(0u64)
        .retry_backoff_ms(5u64)
        .retry_backoff_max_ms(20u64)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(cluster, config).expect("producer");
    let send = || producer.send(ProducerRecord::new("failover", Bytes::from_static(b"tick")));
    // Wait for a full ISR so the crash is a clean failover.
    let leader = loop {
        let p = admin
            .describe_topic("failover")
            .expect("describe")
            .partitions[0]
            .clone();
        if p.isr.len() == 3 {
            break p.leader.expect("leader");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    send().expect("send").wait().expect("first write");
    cluster.crash_broker(leader).expect("crash");
    let crashed = Instant::now();
    loop {
        let delivered = send().expect("send").wait();
        if let Ok(meta) = delivered {
            let p = admin
                .describe_topic("failover")
                .expect("describe")
                .partitions[0]
                .clone();
            if p.leader != Some(leader) && meta.has_offset() {
                return crashed.elapsed();
            }
        }
    }
}

fn main() {
    let brokers = BrokerConfig {
        broker_heartbeat_interval_ms: 50,
        broker_session_timeout_ms: SESSION_MS,
        ..BrokerConfig::default()
    };
    let cluster = Cluster::builder()
        .brokers(3)
        .broker_config(brokers)
        .build()
        .expect("cluster");
    let admin = Admin::new(&cluster).expect("admin");
    admin.create_topic(NewTopic::new("rf1", 1)).expect("rf1");
    admin
        .create_topic(
            NewTopic::new("rf3", 1)
                .replication_factor(3)
                .config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
        )
        .expect("rf3");
    let bytes = RECORDS * VALUE_BYTES;
    let rf1 = common::produce(&cluster, "rf1", Acks::Leader, RECORDS, VALUE_BYTES);
    let rf1_rate = RECORDS as f64 / rf1.elapsed.as_secs_f64();
    report("produce/rf1", RECORDS, bytes, &rf1, "");
    let rf3 = common::produce(&cluster, "rf3", Acks::All, RECORDS, VALUE_BYTES);
    let ratio = RECORDS as f64 / rf3.elapsed.as_secs_f64() / rf1_rate;
    report(
        "produce/rf3-acks-all",
        RECORDS,
        bytes,
        &rf3,
        &format!(
            "vs_rf1={ratio:.2} target=0.60 met={}",
            if ratio >= 0.6 { "yes" } else { "no" }
        ),
    );
    let took = failover(&cluster, &admin);
    let ms = took.as_secs_f64() * 1000.0;
    println!(
        "BENCH name=failover failover_ms={ms:.0} session_timeout_ms={SESSION_MS} target_ms={} met={}",
        2 * SESSION_MS,
        if ms < (2 * SESSION_MS) as f64 {
            "yes"
        } else {
            "no"
        }
    );
}
