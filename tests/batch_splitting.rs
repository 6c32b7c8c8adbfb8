//! A batch the log refuses as too large (`max_message_bytes`) is split and
//! sent again, as Kafka's producer does: every record lands once, in order,
//! and each future gets its own record's offset. Only a single record over
//! the limit fails.

use std::time::Duration;

use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::{Cluster, Compression, Error, NewTopic, TopicConfig, TopicPartition};

const RECORDS: usize = 300;

fn value(i: usize) -> String {
    format!("{i:05}-{}", "v".repeat(94))
}

fn read_back(cluster: &Cluster, topic: &str) -> Vec<(u64, String)> {
    let mut consumer: Consumer<String, String> = Consumer::new(
        cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer
        .assign([TopicPartition::new(topic.to_string(), 0).unwrap()])
        .unwrap();
    let mut out = Vec::new();
    while out.len() < RECORDS {
        let polled = consumer.poll(Duration::from_secs(10)).unwrap();
        assert!(!polled.is_empty(), "records missing: {} read", out.len());
        out.extend(polled.into_iter().map(|r| (r.offset, r.value.unwrap())));
    }
    out
}

fn split_and_check(
    cluster: &Cluster,
    topic: &str,
    acks: Acks,
    codec: Compression,
    idempotent: bool,
) {
    cluster
        .create_topic(
            NewTopic::new(topic.to_string(), 1)
                .replication_factor(3)
                .config(TopicConfig {
                    max_message_bytes: 2_000,
                    ..TopicConfig::default()
                }),
        )
        .unwrap();
    // Batches of up to 64 KiB of ~110-byte records, lingering long enough
    // to fill: each is refused by the log and must be split.
    let producer: Producer<String, String> = Producer::new(
        cluster,
        ProducerConfig::builder()
            .acks(acks)
            .enable_idempotence(idempotent)
            .batch_size(65_536)
            .linger_ms(200)
            .compression_type(codec)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sends: Vec<_> = (0..RECORDS)
        .map(|i| {
            producer
                .send(ProducerRecord::new(topic.to_string(), value(i)))
                .unwrap()
        })
        .collect();
    let offsets: Vec<u64> = sends
        .into_iter()
        .map(|s| {
            s.wait()
                .expect("every record of a split batch is delivered")
                .offset
        })
        .collect();
    let metrics = producer.metrics();
    assert!(
        metrics.batch_records.count > 1,
        "{topic}: more than one batch went out"
    );
    let read = read_back(cluster, topic);
    assert_eq!(read.len(), RECORDS, "{topic}: each record once");
    for (i, (offset, v)) in read.iter().enumerate() {
        assert_eq!(*offset, i as u64, "{topic}: dense offsets");
        assert_eq!(v, &value(i), "{topic}: in send order");
        assert_eq!(
            offsets[i], *offset,
            "{topic}: the future names its record's offset"
        );
    }
}

#[test]
fn refused_batches_are_split_and_every_record_lands_once_in_order() {
    let cluster = Cluster::builder().brokers(3).build().unwrap();
    split_and_check(&cluster, "idempotent", Acks::All, Compression::None, true);
    split_and_check(&cluster, "acks-1", Acks::Leader, Compression::None, false);
    // Compressed, the batch is smaller than its records; still split when
    // refused (this text compresses about 8:1, so the batches are larger).
    split_and_check(&cluster, "lz4", Acks::All, Compression::Lz4, true);
}

#[test]
fn a_single_record_over_the_limit_fails_alone() {
    let cluster = Cluster::builder().build().unwrap();
    cluster
        .create_topic(NewTopic::new("small", 1).config(TopicConfig {
            max_message_bytes: 1_000,
            ..TopicConfig::default()
        }))
        .unwrap();
    let producer: Producer<String, String> = Producer::new(
        &cluster,
        ProducerConfig::builder().linger_ms(100).build().unwrap(),
    )
    .unwrap();
    let before = producer
        .send(ProducerRecord::new("small", "a".to_string()))
        .unwrap();
    let huge = producer
        .send(ProducerRecord::new("small", "x".repeat(5_000)))
        .unwrap();
    let after = producer
        .send(ProducerRecord::new("small", "b".to_string()))
        .unwrap();
    let error = huge.wait().unwrap_err();
    assert!(
        matches!(error, Error::RecordTooLarge { max: 1_000, .. }),
        "{error:?}"
    );
    let (a, b) = (before.wait().unwrap().offset, after.wait().unwrap().offset);
    assert_eq!((a, b), (0, 1), "the records around it are delivered");
}
