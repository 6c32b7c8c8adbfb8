//! `tracing` events where a user would debug (feature `tracing`): run with
//! `cargo test --features tracing --test tracing`. The library never
//! installs a subscriber; this test installs one that collects messages.

#![cfg(feature = "tracing")]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolog::{
    AutoOffsetReset, Cluster, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
};
use parking_lot::Mutex;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};

/// Collects every event's message.
#[derive(Default)]
struct Collector {
    messages: Arc<Mutex<BTreeSet<String>>>,
}

struct Message(String);

impl Visit for Message {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

impl Subscriber for Collector {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut message = Message(String::new());
        event.record(&mut message);
        self.messages.lock().insert(message.0);
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

#[test]
fn elections_isr_changes_rebalances_shutdowns_and_recoveries_are_traced() {
    let collector = Collector::default();
    let messages = collector.messages.clone();
    tracing::subscriber::set_global_default(collector).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::builder()
        .brokers(3)
        .data_dir(dir.path())
        .build()
        .unwrap();
    let orders = cluster
        .create_topic(NewTopic::new("orders", 3).replication_factor(3))
        .unwrap();
    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    for i in 0..30 {
        producer
            .send(ProducerRecord::new("orders", format!("r{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    let config = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut member = cluster
        .consumer_group("billing")
        .member::<String, String>(config, ["orders"])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut read = 0;
    while read < 30 {
        assert!(Instant::now() < deadline);
        read += member.poll(Duration::from_millis(50)).unwrap().len();
    }
    let leader = orders.partition(0).unwrap().leader().unwrap().unwrap();
    cluster.stop_broker(leader).unwrap();
    cluster.crash_broker((leader + 1) % 3).unwrap();
    cluster.restart_broker((leader + 1) % 3).unwrap();
    cluster.restart_broker(leader).unwrap();
    cluster
        .wait_for_metadata(Duration::from_secs(20), |m| {
            m.topics["orders"]
                .partitions
                .iter()
                .all(|p| p.isr.len() == 3)
        })
        .unwrap();
    drop(member);
    cluster.shutdown().unwrap();

    let seen = messages.lock().clone();
    for expected in [
        "partition leader elected",
        "partition ISR changed",
        "controlled shutdown begins",
        "broker fenced",
        "group rebalanced: new target assignment",
        "group state changed",
        "log recovered after an unclean shutdown",
    ] {
        assert!(seen.contains(expected), "no {expected:?} in {seen:?}");
    }
}
