//! Metrics through the public API (SPEC O4): what the cluster, a producer
//! and a consumer report matches what was done.

use std::time::{Duration, Instant};

use ferrolog::client::{Acks, ProducerConfig};
use ferrolog::group::GroupState;
use ferrolog::{
    Admin, AutoOffsetReset, Cluster, Consumer, ConsumerConfig, NewTopic, Producer, ProducerRecord,
    TopicConfig, TopicPartition,
};

const WAIT: Duration = Duration::from_secs(20);

#[test]
fn cluster_producer_and_consumer_metrics_count_what_happened() {
    let cluster = Cluster::builder().brokers(3).build().unwrap();
    let topic = NewTopic::new("orders", 2)
        .replication_factor(3)
        .config(TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        });
    Admin::new(&cluster).unwrap().create_topic(topic).unwrap();
    cluster
        .wait_for_metadata(WAIT, |m| {
            m.topics["orders"]
                .partitions
                .iter()
                .all(|p| p.isr.len() == 3)
        })
        .unwrap();

    let config = ProducerConfig::builder()
        .acks(Acks::All)
        .linger_ms(0u64)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    let n = 200u64;
    let futures: Vec<_> = (0..n)
        .map(|i| {
            let record = ProducerRecord::new("orders", format!("value-{i:04}"))
                .with_key(format!("k{i}"))
                .with_partition((i % 2) as u32);
            producer.send(record).unwrap()
        })
        .collect();
    for f in futures {
        f.wait().unwrap();
    }
    let sent = producer.metrics();
    assert_eq!(sent.records_sent, n);
    assert_eq!(sent.record_errors, 0);
    assert!(sent.requests >= 1 && sent.requests <= n, "{sent:?}");
    assert_eq!(
        sent.produce_latency_ms.count, sent.batch_records.count,
        "one latency per batch: {sent:?}"
    );
    assert!(sent.batch_records.max >= 1);
    assert_eq!(sent.buffer_memory_used, 0, "everything settled");

    let metrics = cluster.metrics();
    let orders: Vec<_> = metrics
        .partitions
        .iter()
        .filter(|p| p.partition.topic() == "orders")
        .collect();
    assert_eq!(orders.len(), 2);
    assert_eq!(orders.iter().map(|p| p.records_in).sum::<u64>(), n);
    for p in &orders {
        assert_eq!(p.records_in, n / 2, "{p:?}");
        assert!(p.bytes_in > p.records_in * 10, "{p:?}");
        assert_eq!(p.log_end_offset, n / 2);
        assert_eq!(p.high_watermark, n / 2, "acks=all: committed");
        assert_eq!(p.isr.len(), 3);
        assert!(!p.under_replicated && !p.offline);
        assert_eq!(p.followers.len(), 2);
        assert!(p.followers.iter().all(|f| f.lag == 0), "{p:?}");
        assert_eq!(p.broker, p.leader.unwrap(), "the leader reports it");
    }
    assert_eq!(metrics.under_replicated_partitions, 0);
    assert_eq!(metrics.offline_partitions, 0);
    let produces: u64 = metrics
        .brokers
        .iter()
        .filter_map(|b| b.requests.get("Produce"))
        .map(|r| r.count)
        .sum();
    assert_eq!(produces, sent.requests, "each request counted once");
    assert!(
        metrics
            .brokers
            .iter()
            .filter_map(|b| b.requests.get("Produce"))
            .all(|r| r.errors == 0 && r.latency_ms.count == r.count)
    );
    assert!(
        metrics
            .brokers
            .iter()
            .any(|b| b.requests.contains_key("Fetch")),
        "followers fetch"
    );

    // A group member reads everything.
    let config = ConsumerConfig::builder()
        .group_id("billing")
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()
        .unwrap();
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config).unwrap();
    consumer.subscribe(["orders"]).unwrap();
    let deadline = Instant::now() + WAIT;
    let mut read = 0u64;
    while read < n {
        assert!(Instant::now() < deadline, "read {read} of {n}");
        read += consumer.poll(Duration::from_millis(100)).unwrap().len() as u64;
    }
    let consumed = consumer.metrics();
    assert_eq!(consumed.records_consumed, n);
    assert!(consumed.bytes_fetched >= n * 12, "{consumed:?}");
    assert!(consumed.fetches >= 1);
    assert_eq!(consumed.fetch_latency_ms.count, consumed.fetches);
    assert!(consumed.rebalances >= 1, "{consumed:?}");
    assert_eq!(consumed.lag.len(), 2, "{consumed:?}");
    assert!(consumed.lag.values().all(|&lag| lag == 0), "{consumed:?}");

    let metrics = cluster.metrics();
    let out: u64 = metrics
        .partitions
        .iter()
        .filter(|p| p.partition.topic() == "orders")
        .map(|p| p.bytes_out)
        .sum();
    assert!(out >= n * 10, "consumers read {out} bytes");
    let group = metrics
        .groups
        .iter()
        .find(|g| g.group == "billing")
        .expect("the group is reported by its coordinator");
    assert_eq!((group.state, group.members), (GroupState::Stable, 1));
    assert!(group.group_epoch >= 1, "{group:?}");

    // One broker stopped: its replicas leave the ISRs.
    cluster.stop_broker(2).unwrap();
    let metrics = cluster.metrics();
    assert_eq!(metrics.brokers.len(), 2);
    let orders = TopicPartition::new("orders", 0).unwrap();
    let p0 = metrics
        .partitions
        .iter()
        .find(|p| p.partition == orders)
        .unwrap();
    assert_eq!(p0.isr.len(), 2, "{p0:?}");
    assert!(p0.under_replicated);
    assert!(metrics.under_replicated_partitions >= 2, "{metrics:?}");
}
