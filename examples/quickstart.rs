//! An embedded cluster in a few lines: create a topic with three partitions,
//! produce ten keyed records, and read them all back with their partition and
//! offset.
//!
//! Run with `cargo run --example quickstart`.

use std::time::Duration;

use ferrolog::client::{AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig};
use ferrolog::{Admin, Cluster, NewTopic, ProducerRecord, TopicPartition};

fn main() -> ferrolog::Result<()> {
    // One broker, in memory, in this process.
    let cluster = Cluster::builder().build()?;
    Admin::new(&cluster)?.create_topic(NewTopic::new("greetings", 3))?;

    // Records with the same key always land in the same partition (Kafka's murmur2).
    let producer: Producer<String, String> = Producer::new(&cluster, ProducerConfig::default())?;
    let mut deliveries = Vec::new();
    for i in 0..10 {
        let record = ProducerRecord::new("greetings", format!("hello #{i}"))
            .with_key(format!("user-{}", i % 4));
        deliveries.push(producer.send(record)?); // batched, sent in the background
    }
    for delivery in deliveries {
        delivery.wait()?; // acknowledged by the broker (acks=all)
    }

    let config = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()?;
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config)?;
    let partitions = (0..3)
        .map(|p| TopicPartition::new("greetings", p))
        .collect::<ferrolog::Result<Vec<_>>>()?;
    consumer.assign(partitions)?;

    let mut received = 0;
    while received < 10 {
        for record in consumer.poll(Duration::from_secs(5))? {
            println!(
                "partition {} offset {}: {} = {}",
                record.partition(),
                record.offset,
                record.key.as_deref().unwrap_or("-"),
                record.value.as_deref().unwrap_or("-"),
            );
            received += 1;
        }
    }
    println!("consumed {received} records");
    cluster.shutdown()
}
