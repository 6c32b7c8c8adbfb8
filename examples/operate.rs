//! What an operator looks at: the `Topic`, `Partition` and `ConsumerGroup`
//! handles and a metrics snapshot of an embedded three-broker cluster,
//! before and after one broker is stopped gracefully.
//!
//! ```text
//! cargo run --example operate
//! ```

use std::time::{Duration, Instant};

use ferrolog::{
    AutoOffsetReset, Cluster, ConsumerConfig, NewTopic, Producer, ProducerConfig, ProducerRecord,
    TopicConfig,
};

fn main() -> ferrolog::Result<()> {
    let cluster = Cluster::builder().brokers(3).build()?;
    let orders = cluster.create_topic(NewTopic::new("orders", 3).replication_factor(3).config(
        TopicConfig {
            min_insync_replicas: 2,
            ..TopicConfig::default()
        },
    ))?;
    cluster.wait_for_metadata(Duration::from_secs(10), |m| {
        m.topics["orders"]
            .partitions
            .iter()
            .all(|p| p.isr.len() == 3)
    })?;

    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::builder().linger_ms(1).build()?)?;
    let sends: Vec<_> = (0..3_000)
        .map(|i| {
            let record = ProducerRecord::new("orders", format!("order #{i}"))
                .with_key(format!("customer-{}", i % 50));
            producer.send(record)
        })
        .collect::<ferrolog::Result<_>>()?;
    for sent in sends {
        sent.wait()?;
    }

    let billing = cluster.consumer_group("billing");
    let config = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut member = billing.member::<String, String>(config, ["orders"])?;
    let (mut read, deadline) = (0, Instant::now() + Duration::from_secs(20));
    while read < 2_000 && Instant::now() < deadline {
        read += member.poll(Duration::from_millis(100))?.len();
    }
    member.commit_sync()?;

    println!(
        "topic {}: {:?}",
        orders.name(),
        orders.config()?.cleanup_policy
    );
    for partition in orders.partitions()? {
        let state = partition.state()?;
        println!(
            "  {} leader {:?} isr {:?} log [{}, {}) hw {} in {} records / {} bytes, out {} bytes, followers {:?}",
            partition.topic_partition(),
            state.leader,
            state.isr,
            state.log_start_offset,
            state.log_end_offset,
            state.high_watermark,
            state.records_in,
            state.bytes_in,
            state.bytes_out,
            state
                .followers
                .iter()
                .map(|f| (f.broker, f.lag))
                .collect::<Vec<_>>(),
        );
    }
    let group = billing.describe()?;
    println!(
        "group {}: {:?}, {} member(s), lag {:?}",
        billing.id(),
        group.description.state,
        group.description.members.len(),
        group
            .partitions
            .iter()
            .map(|p| (p.partition.to_string(), p.lag))
            .collect::<Vec<_>>()
    );
    let sent = producer.metrics();
    println!(
        "producer: {} records sent, {} requests, {} retries, batch records p50 {} max {}, latency p50 {} ms p99 {} ms",
        sent.records_sent,
        sent.requests,
        sent.retries,
        sent.batch_records.p50,
        sent.batch_records.max,
        sent.produce_latency_ms.p50,
        sent.produce_latency_ms.p99
    );
    let consumed = member.metrics();
    println!(
        "consumer: {} records consumed in {} fetches, {} rebalance(s), lag {:?}",
        consumed.records_consumed, consumed.fetches, consumed.rebalances, consumed.lag
    );

    // A graceful stop hands broker 1's leaderships over first.
    cluster.stop_broker(1)?;
    let metrics = cluster.metrics();
    println!(
        "after stopping broker 1: {} brokers running, {} under-replicated, {} offline partitions",
        metrics.brokers.len(),
        metrics.under_replicated_partitions,
        metrics.offline_partitions
    );
    for broker in &metrics.brokers {
        let requests: Vec<String> = broker
            .requests
            .iter()
            .map(|(api, r)| format!("{api} {} (p99 {} ms)", r.count, r.latency_ms.p99))
            .collect();
        println!("  broker {}: {}", broker.broker, requests.join(", "));
    }
    // The same snapshot for a Prometheus scrape endpoint of your own.
    let text = metrics.prometheus_text();
    println!(
        "prometheus exposition: {} lines, e.g.",
        text.lines().count()
    );
    for line in text
        .lines()
        .filter(|l| l.starts_with("ferrolog_partition_high_watermark{topic=\"orders\""))
    {
        println!("  {line}");
    }
    drop(member);
    cluster.shutdown()
}
