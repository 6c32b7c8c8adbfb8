//! One broker end to end, through the public API only: producer, consumer,
//! admin, broker long-poll fetch, errors, and restart over files.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolog::client::{
    Acks, AutoOffsetReset, Consumer, ConsumerConfig, DefaultSerde, Partitioner, Postcard, Producer,
    ProducerConfig, ProducerInterceptor, ProducerRecord, RecordMetadata,
};
use ferrolog::protocol::{Envelope, FetchPartition, FetchRequest, Message, Request, Response};
use ferrolog::transport::{
    Endpoint, Inbox, LocalTransport, Peer, PendingAnswer, Transport, undeliverable,
};
use ferrolog::{Admin, Cluster, Error, NewTopic, TopicConfig, TopicPartition};

const WAIT: Duration = Duration::from_secs(10);

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition).unwrap()
}

fn cluster_with(topics: &[(&str, u32)]) -> Cluster {
    let cluster = Cluster::builder().build().unwrap();
    create(&cluster, topics);
    cluster
}

fn create(cluster: &Cluster, topics: &[(&str, u32)]) {
    let admin = Admin::new(cluster).unwrap();
    for &(name, partitions) in topics {
        admin.create_topic(NewTopic::new(name, partitions)).unwrap();
    }
}

fn fast_producer() -> ProducerConfig {
    ProducerConfig::builder().linger_ms(0u64).build().unwrap()
}

fn earliest() -> ConsumerConfig {
    ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .fetch_max_wait_ms(100u32)
        .build()
        .unwrap()
}

/// Polls until `count` records arrived (or fails after `WAIT`).
fn consume<K, V>(
    consumer: &mut Consumer<K, V>,
    count: usize,
) -> Vec<ferrolog::ConsumerRecord<K, V>> {
    let deadline = Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < count {
        assert!(
            Instant::now() < deadline,
            "only {} of {count} records arrived",
            out.len()
        );
        out.extend(consumer.poll(Duration::from_millis(200)).unwrap());
    }
    out
}

/// The high watermark of partition 0 of `topic`.
fn end_offset<K, V>(consumer: &Consumer<K, V>, topic: &str) -> u64 {
    consumer.end_offsets([&tp(topic, 0)]).unwrap()[&tp(topic, 0)]
}

fn all_partitions(topic: &str, n: u32) -> Vec<TopicPartition> {
    (0..n).map(|p| tp(topic, p)).collect()
}

/// A transport that passes everything to a [`LocalTransport`] except the
/// Produce requests `fault` decides to stall (keep, never deliver) or lose
/// (the producer is told the network failed).
#[derive(Debug, Clone)]
struct FaultyProduce {
    inner: LocalTransport,
    produce_requests: Arc<AtomicUsize>,
    mode: Arc<parking_lot::Mutex<Fault>>,
    stalled: Arc<parking_lot::Mutex<Vec<Envelope>>>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Fault {
    None,
    StallAll,
    LoseFirst(usize),
}

impl FaultyProduce {
    fn new(mode: Fault) -> Self {
        Self {
            inner: LocalTransport::new(),
            produce_requests: Arc::new(AtomicUsize::new(0)),
            mode: Arc::new(parking_lot::Mutex::new(mode)),
            stalled: Arc::default(),
        }
    }
}

impl Transport for FaultyProduce {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> ferrolog::Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn send(&self, envelope: Envelope) {
        if let Message::Request(Request::Produce(_)) = &envelope.message {
            let n = self.produce_requests.fetch_add(1, Ordering::SeqCst);
            match *self.mode.lock() {
                Fault::StallAll => return self.stalled.lock().push(envelope),
                Fault::LoseFirst(k) if n < k => {
                    if let Some(failed) = undeliverable(&envelope, "lost") {
                        self.inner.send(failed);
                    }
                    return;
                }
                _ => {}
            }
        }
        self.inner.send(envelope)
    }
}

#[test]
fn records_of_a_partition_are_consumed_in_send_order() {
    let cluster = cluster_with(&[("orders", 3)]);
    let producer: Producer<String, u64> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let futures: Vec<_> = (0..3000u64)
        .map(|i| {
            let record = ProducerRecord::new("orders", i).with_key(format!("key-{}", i % 17));
            producer.send(record).unwrap()
        })
        .collect();
    let mut sent: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for (i, f) in futures.into_iter().enumerate() {
        let meta = f.wait().unwrap();
        sent.entry(meta.partition.partition())
            .or_default()
            .push((meta.offset, i as u64));
    }
    assert_eq!(sent.len(), 3, "17 keys spread over all partitions");
    for list in sent.values() {
        let offsets: Vec<u64> = list.iter().map(|&(o, _)| o).collect();
        assert_eq!(
            offsets,
            (0..list.len() as u64).collect::<Vec<_>>(),
            "send order = offset order"
        );
    }
    let mut consumer: Consumer<String, u64> = Consumer::new(&cluster, earliest()).unwrap();
    consumer.assign(all_partitions("orders", 3)).unwrap();
    let mut got: BTreeMap<u32, Vec<(u64, u64)>> = BTreeMap::new();
    for r in consume(&mut consumer, 3000) {
        got.entry(r.partition())
            .or_default()
            .push((r.offset, r.value.unwrap()));
    }
    assert_eq!(got, sent);
}

#[test]
fn keys_land_in_the_partition_kafka_would_choose() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kafka-vectors.json"
    ))
    .unwrap();
    let vectors: serde_json::Value = serde_json::from_str(&text).unwrap();
    let entries = vectors["murmur2"].as_array().unwrap();
    let cluster = Cluster::builder().build().unwrap();
    let counts = [1u32, 3, 6, 10, 64];
    create(
        &cluster,
        &counts
            .map(|n| (format!("k{n}"), n))
            .iter()
            .map(|(s, n)| (s.as_str(), *n))
            .collect::<Vec<_>>(),
    );
    let producer: Producer<Bytes, Bytes> = Producer::new(&cluster, fast_producer()).unwrap();
    let mut checked = 0;
    for e in entries {
        let hex = e["key_hex"].as_str().unwrap();
        let key: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        for n in counts {
            let expected = e["partition"][n.to_string()].as_u64().unwrap() as u32;
            let record = ProducerRecord::new(format!("k{n}"), Bytes::from_static(b"v"))
                .with_key(Bytes::from(key.clone()));
            let meta = producer.send(record).unwrap().wait().unwrap();
            assert_eq!(
                meta.partition.partition(),
                expected,
                "key {hex} over {n} partitions"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, entries.len() * counts.len());
}

/// Sends one record with `acks` through a producer of its own.
fn send_with_acks(cluster: &Cluster, acks: Acks, value: &str) -> RecordMetadata {
    let config = ProducerConfig::builder()
        .acks(acks)
        .linger_ms(0u64)
        .build()
        .unwrap();
    let producer: Producer<(), String> =
        Producer::with_serializers(cluster, config, Postcard, DefaultSerde).unwrap();
    let sent = producer
        .send(ProducerRecord::new("t", value.to_string()))
        .unwrap();
    sent.wait().unwrap()
}

#[test]
fn acks_zero_gives_no_offset_and_acks_one_gives_the_offset_read_back() {
    let cluster = cluster_with(&[("t", 1)]);
    let meta = send_with_acks(&cluster, Acks::None, "zero");
    assert!(!meta.has_offset(), "acks=0: the offset is unknown");
    assert_eq!(meta.offset, RecordMetadata::UNKNOWN_OFFSET);
    let meta = send_with_acks(&cluster, Acks::Leader, "one");
    assert_eq!(
        meta.offset, 1,
        "acks=1: the leader's offset, after the acks=0 record"
    );
    let meta = send_with_acks(&cluster, Acks::All, "all");
    assert_eq!(
        meta.offset, 2,
        "acks=all with one replica: the same as acks=1"
    );

    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let values: Vec<_> = consume(&mut consumer, 3)
        .into_iter()
        .map(|r| (r.offset, r.value.unwrap()))
        .collect();
    assert_eq!(
        values,
        [
            (0, "zero".to_string()),
            (1, "one".to_string()),
            (2, "all".to_string())
        ]
    );
}

#[test]
fn an_undeliverable_send_fails_with_delivery_timeout_and_never_hangs() {
    let transport = FaultyProduce::new(Fault::StallAll);
    let cluster = Cluster::builder()
        .transport(transport.clone())
        .build()
        .unwrap();
    create(&cluster, &[("t", 1)]);
    let config = ProducerConfig::builder()
        .linger_ms(0u64)
        .request_timeout_ms(150u64)
        .delivery_timeout_ms(600u64)
        .retry_backoff_ms(20u64)
        .enable_idempotence(false)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    let started = Instant::now();
    let outcome = producer
        .send(ProducerRecord::new("t", "lost".to_string()))
        .unwrap()
        .wait();
    let elapsed = started.elapsed();
    match outcome {
        Err(Error::DeliveryTimeout {
            records: 1,
            last_error: Some(last),
            elapsed_ms,
            ..
        }) => {
            assert!(last.contains("timed out"), "{last}");
            assert!(elapsed_ms >= 600, "{elapsed_ms}");
        }
        other => panic!("expected DeliveryTimeout, got {other:?}"),
    }
    // Millisecond clock: the batch may count from up to 1 ms before `started`.
    assert!(
        elapsed >= Duration::from_millis(598) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
    // The unanswered request might still land: sending it again could write
    // the record twice, so the producer (not idempotent) waited instead.
    assert_eq!(transport.produce_requests.load(Ordering::SeqCst), 1);
}

#[test]
fn retriable_errors_are_retried_and_fatal_ones_are_not() {
    let transport = FaultyProduce::new(Fault::LoseFirst(2));
    let cluster = Cluster::builder()
        .transport(transport.clone())
        .build()
        .unwrap();
    create(&cluster, &[("t", 1)]);
    let retrying = ProducerConfig::builder()
        .linger_ms(0u64)
        .retry_backoff_ms(10u64)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, retrying).unwrap();
    let meta = producer
        .send(ProducerRecord::new("t", "third time".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(meta.offset, 0, "two lost requests, then delivered once");
    assert_eq!(transport.produce_requests.load(Ordering::SeqCst), 3);

    *transport.mode.lock() = Fault::LoseFirst(4);
    let no_retries = ProducerConfig::builder()
        .linger_ms(0u64)
        .retries(0u32)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, no_retries).unwrap();
    let outcome = producer
        .send(ProducerRecord::new("t", "once".to_string()))
        .unwrap()
        .wait();
    assert!(matches!(outcome, Err(Error::Network { .. })), "{outcome:?}");

    // RecordTooLarge from the broker is not retriable: one attempt only.
    let admin = Admin::new(&cluster).unwrap();
    let small = TopicConfig {
        max_message_bytes: 1000,
        ..TopicConfig::default()
    };
    admin
        .create_topic(NewTopic::new("small", 1).config(small))
        .unwrap();
    *transport.mode.lock() = Fault::None;
    let before = transport.produce_requests.load(Ordering::SeqCst);
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    let outcome = producer
        .send(ProducerRecord::new("small", "x".repeat(2000)))
        .unwrap()
        .wait();
    assert!(
        matches!(outcome, Err(Error::RecordTooLarge { max: 1000, .. })),
        "{outcome:?}"
    );
    assert_eq!(
        transport.produce_requests.load(Ordering::SeqCst),
        before + 1
    );
}

#[test]
fn full_buffer_memory_blocks_send_for_max_block_ms_then_fails() {
    let transport = FaultyProduce::new(Fault::StallAll);
    let cluster = Cluster::builder().transport(transport).build().unwrap();
    create(&cluster, &[("t", 1)]);
    let config = ProducerConfig::builder()
        .buffer_memory(8_192usize)
        .max_block_ms(300u64)
        .linger_ms(0u64)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    let mut accepted = 0;
    loop {
        let started = Instant::now();
        match producer.send(ProducerRecord::new("t", "v".repeat(1000))) {
            Ok(_) => accepted += 1,
            Err(Error::BufferExhausted {
                buffer_memory: 8192,
                max_block_ms: 300,
                ..
            }) => {
                let waited = started.elapsed();
                assert!(waited >= Duration::from_millis(300), "blocked {waited:?}");
                assert!(waited < Duration::from_secs(5), "blocked {waited:?}");
                break;
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
        assert!(accepted < 100, "buffer_memory never filled");
    }
    assert!(
        (5..=8).contains(&accepted),
        "{accepted} records of ~1 KB fit in 8 KiB"
    );
    // Nothing can be delivered: a bounded close fails what is held.
    producer.close_timeout(Duration::from_millis(100));
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "x".into())),
        Err(Error::ClientClosed { .. })
    ));
}

struct DropAndShout {
    acknowledged: Arc<parking_lot::Mutex<Vec<Result<RecordMetadata, String>>>>,
}

impl ProducerInterceptor<String, String> for DropAndShout {
    fn on_send(
        &self,
        mut record: ProducerRecord<String, String>,
    ) -> Option<ProducerRecord<String, String>> {
        let value = record.value.take()?;
        if value.contains("secret") {
            return None;
        }
        record.value = Some(value.to_uppercase());
        Some(record)
    }

    fn on_acknowledgement(&self, result: &ferrolog::Result<RecordMetadata>) {
        self.acknowledged
            .lock()
            .push(result.clone().map_err(|e| e.to_string()));
    }
}

#[test]
fn a_dropping_interceptor_drops_and_sees_every_outcome() {
    let cluster = cluster_with(&[("t", 1)]);
    let acknowledged = Arc::default();
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer())
        .unwrap()
        .with_interceptor(DropAndShout {
            acknowledged: Arc::clone(&acknowledged),
        });
    let mut outcomes = Vec::new();
    for v in ["a", "secret b", "c", "secret d", "e"] {
        outcomes.push(producer.send(ProducerRecord::new("t", v.to_string())));
    }
    assert!(matches!(outcomes[1], Err(Error::DroppedByInterceptor)));
    assert!(matches!(outcomes[3], Err(Error::DroppedByInterceptor)));
    producer.flush();
    let acks = acknowledged.lock().clone();
    assert_eq!(acks.len(), 5, "on_acknowledgement saw every send: {acks:?}");
    assert_eq!(acks.iter().filter(|a| a.is_ok()).count(), 3);

    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    consumer.assign([tp("t", 0)]).unwrap();
    let values: Vec<String> = consume(&mut consumer, 3)
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(values, ["A", "C", "E"]);
    assert!(
        consumer
            .poll(Duration::from_millis(100))
            .unwrap()
            .is_empty()
    );
}

fn raw_fetch(
    cluster: &Cluster,
    partition: &TopicPartition,
    offset: u64,
    max_wait_ms: u32,
) -> (Endpoint, PendingAnswer) {
    let request = Request::Fetch(FetchRequest {
        max_wait_ms,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![FetchPartition {
            partition: partition.clone(),
            fetch_offset: offset,
            max_bytes: 1 << 20,
            current_leader_epoch: None,
            last_fetched_epoch: None,
        }],
        replica: None,
        session: None,
        forgotten: Vec::new(),
    });
    let endpoint = Endpoint::new(cluster.transport()).unwrap();
    let pending = endpoint.send(0, request);
    (endpoint, pending)
}

fn fetched_values(response: ferrolog::Result<Response>) -> Vec<Bytes> {
    let Ok(Response::Fetch(f)) = response else {
        panic!("expected a fetch response, got {response:?}")
    };
    f.partitions[0]
        .result
        .as_ref()
        .unwrap()
        .records
        .records()
        .map(|r| r.unwrap().value.unwrap())
        .collect()
}

#[test]
fn a_fetch_without_data_waits_max_wait_ms_then_answers_empty() {
    let cluster = cluster_with(&[("t", 1)]);
    let started = Instant::now();
    let (_endpoint, pending) = raw_fetch(&cluster, &tp("t", 0), 0, 300);
    let response = pending.wait_timeout(WAIT).expect("answered");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300),
        "answered after {waited:?}"
    );
    assert!(waited < Duration::from_secs(5), "answered after {waited:?}");
    assert!(fetched_values(response).is_empty());
}

#[test]
fn a_waiting_fetch_returns_as_soon_as_data_arrives() {
    let cluster = cluster_with(&[("t", 1)]);
    let started = Instant::now();
    // Parked: the broker holds it for up to 60 s.
    let (_endpoint, pending) = raw_fetch(&cluster, &tp("t", 0), 0, 60_000);
    assert!(
        pending.try_take().is_none(),
        "no data yet, so no answer yet"
    );
    let producer: Producer<(), Bytes> =
        Producer::with_serializers(&cluster, fast_producer(), Postcard, DefaultSerde).unwrap();
    producer
        .send(ProducerRecord::new("t", Bytes::from_static(b"wake up")))
        .unwrap()
        .wait()
        .unwrap();
    let response = pending
        .wait_timeout(WAIT)
        .expect("answered once data arrived");
    assert_eq!(fetched_values(response), [Bytes::from_static(b"wake up")]);
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[test]
fn records_over_max_request_size_or_max_message_bytes_are_record_too_large() {
    let cluster = cluster_with(&[("t", 1)]);
    let small_requests = ProducerConfig::builder()
        .max_request_size(1000usize)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, small_requests).unwrap();
    let refused = producer.send(ProducerRecord::new("t", "x".repeat(2000)));
    assert!(
        matches!(refused, Err(Error::RecordTooLarge { max: 1000, .. })),
        "{refused:?}"
    );
    producer
        .send(ProducerRecord::new("t", "x".repeat(500)))
        .unwrap()
        .wait()
        .unwrap();

    let admin = Admin::new(&cluster).unwrap();
    let small = TopicConfig {
        max_message_bytes: 1000,
        ..TopicConfig::default()
    };
    admin
        .create_topic(NewTopic::new("small", 1).config(small))
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    let outcome = producer
        .send(ProducerRecord::new("small", "x".repeat(2000)))
        .unwrap()
        .wait();
    assert!(
        matches!(outcome, Err(Error::RecordTooLarge { max: 1000, .. })),
        "{outcome:?}"
    );
    let consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    assert_eq!(end_offset(&consumer, "small"), 0, "nothing was written");
}

#[test]
fn unknown_topic_bad_partition_and_bad_config_each_get_their_own_error() {
    let cluster = cluster_with(&[("t", 3)]);
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    let unknown = producer.send(ProducerRecord::new("nope", "v".to_string()));
    assert!(
        matches!(&unknown, Err(Error::UnknownTopicOrPartition { topic }) if topic == "nope"),
        "{unknown:?}"
    );
    let bad = producer.send(ProducerRecord::new("t", "v".to_string()).with_partition(7));
    assert!(
        matches!(
            bad,
            Err(Error::InvalidPartition {
                partition: 7,
                partition_count: 3,
                ..
            })
        ),
        "{bad:?}"
    );
    let config = ProducerConfig::builder().delivery_timeout_ms(10u64).build();
    assert!(
        matches!(
            config,
            Err(Error::InvalidConfig {
                field: "delivery_timeout_ms",
                ..
            })
        ),
        "{config:?}"
    );
    let config = ProducerConfig {
        retry_backoff_max_ms: 1,
        ..ProducerConfig::default()
    };
    let producer = Producer::<String, String>::new(&cluster, config);
    assert!(matches!(
        producer,
        Err(Error::InvalidConfig {
            field: "retry_backoff_max_ms",
            ..
        })
    ));
    let config = ConsumerConfig {
        max_poll_records: 0,
        ..ConsumerConfig::default()
    };
    let consumer = Consumer::<String, String>::new(&cluster, config);
    assert!(matches!(
        consumer,
        Err(Error::InvalidConfig {
            field: "max_poll_records",
            ..
        })
    ));

    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    assert!(matches!(
        consumer.assign([tp("nope", 0)]),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        consumer.assign([tp("t", 3)]),
        Err(Error::InvalidPartition { partition: 3, .. })
    ));
    assert!(matches!(
        consumer.poll(Duration::ZERO),
        Err(Error::NotAssigned)
    ));
    assert!(matches!(
        consumer.seek(&tp("t", 0), 0),
        Err(Error::PartitionNotAssigned { .. })
    ));

    let admin = Admin::new(&cluster).unwrap();
    let bad_topic = TopicConfig {
        segment_bytes: 10,
        ..TopicConfig::default()
    };
    let created = admin.create_topic(NewTopic::new("u", 1).config(bad_topic));
    assert!(
        matches!(
            created,
            Err(Error::InvalidConfig {
                field: "segment_bytes",
                ..
            })
        ),
        "{created:?}"
    );
    assert!(matches!(
        admin.create_topic(NewTopic::new("t", 1)),
        Err(Error::TopicAlreadyExists { .. })
    ));
    assert!(matches!(
        admin.create_topic(NewTopic::new("z", 0)),
        Err(Error::InvalidPartitions { .. })
    ));
    assert!(matches!(
        admin.create_topic(NewTopic::new("r", 1).replication_factor(2)),
        Err(Error::InvalidReplicationFactor { .. })
    ));
    assert!(matches!(
        admin.delete_topic("nope"),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    assert!(matches!(
        Cluster::builder().brokers(0).build(),
        Err(Error::InvalidConfig {
            field: "brokers",
            ..
        })
    ));
}

#[test]
fn a_restarted_file_cluster_keeps_every_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let mut acknowledged: BTreeMap<(u32, u64), String> = BTreeMap::new();
    {
        let cluster = Cluster::builder().data_dir(dir.path()).build().unwrap();
        create(&cluster, &[("kept", 3)]);
        let producer: Producer<String, String> =
            Producer::new(&cluster, ProducerConfig::default()).unwrap();
        let futures: Vec<_> = (0..1000)
            .map(|i| {
                let value = format!("record {i}");
                (
                    value.clone(),
                    producer
                        .send(ProducerRecord::new("kept", value).with_key(format!("{}", i % 7)))
                        .unwrap(),
                )
            })
            .collect();
        for (value, f) in futures {
            let meta = f.wait().unwrap();
            acknowledged.insert((meta.partition.partition(), meta.offset), value);
        }
        drop(producer);
        cluster.shutdown().unwrap();
    }
    let cluster = Cluster::builder().data_dir(dir.path()).build().unwrap();
    let admin = Admin::new(&cluster).unwrap();
    assert_eq!(
        admin.describe_topic("kept").unwrap().partitions.len(),
        3,
        "the topic came back"
    );
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    consumer.assign(all_partitions("kept", 3)).unwrap();
    let read: BTreeMap<(u32, u64), String> = consume(&mut consumer, 1000)
        .into_iter()
        .map(|r| ((r.partition(), r.offset), r.value.unwrap()))
        .collect();
    assert_eq!(read, acknowledged);
    // Appends continue after the recovered records.
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    let meta = producer
        .send(ProducerRecord::new("kept", "after".to_string()).with_partition(0))
        .unwrap()
        .wait()
        .unwrap();
    let before = acknowledged.keys().filter(|(p, _)| *p == 0).count() as u64;
    assert_eq!(meta.offset, before);
}

#[test]
fn seek_pause_resume_offsets_for_times_and_offset_reset() {
    let cluster = cluster_with(&[("t", 2)]);
    let producer: Producer<(), i64> =
        Producer::with_serializers(&cluster, fast_producer(), Postcard, DefaultSerde).unwrap();
    for p in 0..2 {
        for i in 0..10i64 {
            let record = ProducerRecord::new("t", i)
                .with_partition(p)
                .with_timestamp(1_000 + i * 10);
            let _pending = producer.send(record).unwrap();
        }
    }
    producer.flush();
    let (p0, p1) = (tp("t", 0), tp("t", 1));

    // Latest (the default) starts at the end; earliest at the start; none fails.
    let mut latest: Consumer<(), i64> = Consumer::with_deserializers(
        &cluster,
        ConsumerConfig::builder()
            .fetch_max_wait_ms(50u32)
            .build()
            .unwrap(),
        Postcard,
        DefaultSerde,
    )
    .unwrap();
    latest.assign([p0.clone()]).unwrap();
    assert_eq!(latest.position(&p0).unwrap(), 10);
    assert!(latest.poll(Duration::from_millis(100)).unwrap().is_empty());
    let strict = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::None)
        .build()
        .unwrap();
    let mut strict: Consumer<(), i64> =
        Consumer::with_deserializers(&cluster, strict, Postcard, DefaultSerde).unwrap();
    strict.assign([p0.clone()]).unwrap();
    assert!(matches!(
        strict.poll(Duration::ZERO),
        Err(Error::NoOffsetForPartition { .. })
    ));
    strict.seek(&p0, 99).unwrap();
    let out_of_range = (0..20).find_map(|_| strict.poll(Duration::from_millis(50)).err());
    assert!(
        matches!(
            out_of_range,
            Some(Error::OffsetOutOfRange { offset: 99, .. })
        ),
        "{out_of_range:?}"
    );

    let mut c: Consumer<(), i64> =
        Consumer::with_deserializers(&cluster, earliest(), Postcard, DefaultSerde).unwrap();
    c.assign([p0.clone(), p1.clone()]).unwrap();
    c.pause([&p1]).unwrap();
    assert_eq!(c.paused(), vec![p1.clone()]);
    let first = consume(&mut c, 10);
    assert!(
        first.iter().all(|r| r.partition() == 0),
        "paused partition 1 returned nothing"
    );
    assert!(c.poll(Duration::from_millis(100)).unwrap().is_empty());
    c.resume([&p1]).unwrap();
    let second = consume(&mut c, 10);
    assert!(second.iter().all(|r| r.partition() == 1));

    c.seek(&p0, 7).unwrap();
    c.pause([&p1]).unwrap();
    let again: Vec<i64> = consume(&mut c, 3)
        .into_iter()
        .map(|r| r.value.unwrap())
        .collect();
    assert_eq!(again, [7, 8, 9]);
    c.seek_to_beginning([&p0]).unwrap();
    assert_eq!(c.position(&p0).unwrap(), 0);
    c.seek_to_end([&p0]).unwrap();
    assert_eq!(c.position(&p0).unwrap(), 10);

    let times = HashMap::from([(p0.clone(), 1_035), (p1.clone(), 5_000)]);
    let found = c.offsets_for_times(&times).unwrap();
    let at = found[&p0].unwrap();
    assert_eq!((at.offset, at.timestamp), (4, Some(1_040)));
    assert_eq!(found[&p1], None, "no record that late");
    assert_eq!(c.beginning_offsets([&p1]).unwrap()[&p1], 0);
    assert_eq!(c.end_offsets([&p1]).unwrap()[&p1], 10);
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Order {
    id: u64,
    items: Vec<String>,
    total: f64,
}

#[test]
fn serde_integers_strings_and_bytes_round_trip_through_the_log() {
    let cluster = cluster_with(&[("orders", 1), ("numbers", 1)]);
    let orders: Producer<u64, Order> =
        Producer::with_serializers(&cluster, fast_producer(), DefaultSerde, Postcard).unwrap();
    let order = Order {
        id: 7,
        items: vec!["tea".into(), "milk".into()],
        total: 4.5,
    };
    orders
        .send(ProducerRecord::new("orders", order.clone()).with_key(7))
        .unwrap()
        .wait()
        .unwrap();
    let mut c: Consumer<u64, Order> =
        Consumer::with_deserializers(&cluster, earliest(), DefaultSerde, Postcard).unwrap();
    c.assign([tp("orders", 0)]).unwrap();
    let r = consume(&mut c, 1).remove(0);
    assert_eq!((r.key, r.value), (Some(7), Some(order)));

    let numbers: Producer<i32, f64> = Producer::new(&cluster, fast_producer()).unwrap();
    let _pending = numbers
        .send(ProducerRecord::new("numbers", -2.5).with_key(-1))
        .unwrap();
    let _pending = numbers
        .send(ProducerRecord::tombstone("numbers", 3))
        .unwrap();
    numbers.flush();
    let mut raw: Consumer<Bytes, Bytes> = Consumer::new(&cluster, earliest()).unwrap();
    raw.assign([tp("numbers", 0)]).unwrap();
    let records = consume(&mut raw, 2);
    assert_eq!(
        records[0].key.as_deref(),
        Some(&(-1i32).to_be_bytes()[..]),
        "Kafka's IntegerSerializer bytes"
    );
    assert_eq!(
        records[0].value.as_deref(),
        Some(&(-2.5f64).to_be_bytes()[..])
    );
    assert_eq!(records[1].value, None, "a tombstone has no value");

    // A value that does not deserialize stops at its offset.
    let mut wrong: Consumer<i32, String> = Consumer::new(&cluster, earliest()).unwrap();
    wrong.assign([tp("numbers", 0)]).unwrap();
    let failed = (0..20).find_map(|_| wrong.poll(Duration::from_millis(50)).err());
    assert!(
        matches!(failed, Some(Error::RecordDeserialization { offset: 0, .. })),
        "{failed:?}"
    );
    assert_eq!(wrong.position(&tp("numbers", 0)).unwrap(), 0);
}

#[test]
fn callbacks_futures_and_async_await_see_the_same_outcome() {
    let cluster = cluster_with(&[("t", 1)]);
    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let (tx, rx) = mpsc::channel();
    let future = producer
        .send_with_callback(ProducerRecord::new("t", "a".to_string()), move |r| {
            tx.send(r).unwrap()
        })
        .unwrap();
    let from_callback = rx.recv_timeout(WAIT).unwrap().unwrap();
    let from_future = future.wait().unwrap();
    assert_eq!(from_callback, from_future);
    assert_eq!(from_future.offset, 0);

    let future = producer
        .send(ProducerRecord::new("t", "b".to_string()))
        .unwrap();
    let from_async = block_on(future).unwrap();
    assert_eq!(from_async.offset, 1);
}

/// A minimal executor: polls a future on this thread, parking between wakes.
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut future = std::pin::pin!(future);
    loop {
        if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

#[test]
fn records_without_key_stick_to_one_partition_per_batch() {
    let cluster = cluster_with(&[("t", 4)]);
    let config = ProducerConfig::builder()
        .batch_size(2_000usize)
        .linger_ms(1_000u64)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    let futures: Vec<_> = (0..200)
        .map(|_| {
            producer
                .send(ProducerRecord::new("t", "v".repeat(100)))
                .unwrap()
        })
        .collect();
    producer.flush();
    let partitions: Vec<u32> = futures
        .into_iter()
        .map(|f| f.wait().unwrap().partition.partition())
        .collect();
    let runs = partitions.windows(2).filter(|w| w[0] != w[1]).count() + 1;
    let used: std::collections::BTreeSet<u32> = partitions.iter().copied().collect();
    assert_eq!(used.len(), 4, "null keys spread over every partition");
    assert!(
        (8..=16).contains(&runs),
        "~20 KB in 2 KB batches switch partition per batch: {runs} runs"
    );
}

struct Always(u32);

impl Partitioner for Always {
    fn partition(&self, _: &str, _: Option<&[u8]>, _: Option<&[u8]>, _: u32) -> Option<u32> {
        Some(self.0)
    }
}

#[test]
fn a_custom_partitioner_decides_unless_the_record_names_a_partition() {
    let cluster = cluster_with(&[("t", 3)]);
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer())
        .unwrap()
        .with_partitioner(Always(2));
    let keyed = producer
        .send(ProducerRecord::new("t", "v".to_string()).with_key("k".into()))
        .unwrap();
    let named = producer
        .send(ProducerRecord::new("t", "v".to_string()).with_partition(0))
        .unwrap();
    assert_eq!(keyed.wait().unwrap().partition.partition(), 2);
    assert_eq!(named.wait().unwrap().partition.partition(), 0);
    let broken: Producer<String, String> = Producer::new(&cluster, fast_producer())
        .unwrap()
        .with_partitioner(Always(5));
    assert!(matches!(
        broken.send(ProducerRecord::new("t", "v".to_string())),
        Err(Error::InvalidPartition { .. })
    ));
}

#[test]
fn flush_sends_lingering_batches_and_close_refuses_new_sends() {
    let cluster = cluster_with(&[("t", 1)]);
    let config = ProducerConfig::builder()
        .linger_ms(60_000u64)
        .delivery_timeout_ms(120_000u64)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    let future = producer
        .send(ProducerRecord::new("t", "v".to_string()))
        .unwrap();
    assert!(
        future.wait_timeout(Duration::from_millis(50)).is_none(),
        "lingering"
    );
    producer.flush();
    assert!(future.is_done());
    producer.close();
    assert!(matches!(
        producer.send(ProducerRecord::new("t", "v".to_string())),
        Err(Error::ClientClosed { client: "producer" })
    ));
}

#[test]
fn admin_creates_grows_describes_and_deletes_topics() {
    let cluster = Cluster::builder().build().unwrap();
    let admin = Admin::new(&cluster).unwrap();
    admin.create_topic(NewTopic::new("a", 2)).unwrap();
    admin.create_topic(NewTopic::new("b", 1)).unwrap();
    assert_eq!(admin.list_topics().unwrap(), ["a", "b"]);
    admin.create_partitions("a", 5).unwrap();
    let a = admin.describe_topic("a").unwrap();
    assert_eq!(a.partitions.len(), 5);
    for (i, p) in a.partitions.iter().enumerate() {
        assert_eq!(
            (p.partition, p.leader, &p.replicas[..], &p.isr[..]),
            (i as u32, Some(0), &[0][..], &[0][..])
        );
    }
    let description = admin.describe_cluster().unwrap();
    assert_eq!(
        (description.brokers.len(), description.controller),
        (1, Some(ferrolog::CONTROLLER_ID))
    );

    // The new partitions take writes; a deleted topic is gone with its data.
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    producer
        .send(ProducerRecord::new("a", "v".to_string()).with_partition(4))
        .unwrap()
        .wait()
        .unwrap();
    producer
        .send(ProducerRecord::new("b", "v".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    admin.delete_topic("b").unwrap();
    assert_eq!(admin.list_topics().unwrap(), ["a"]);
    assert!(matches!(
        admin.describe_topic("b"),
        Err(Error::UnknownTopicOrPartition { .. })
    ));
    admin.create_topic(NewTopic::new("b", 1)).unwrap();
    let mut c: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    assert_eq!(end_offset(&c, "b"), 0, "recreated empty");
    c.assign([tp("a", 4)]).unwrap();
    assert_eq!(consume(&mut c, 1)[0].offset, 0);
}

#[test]
fn a_callback_may_flush_and_close_its_own_producer_without_hanging() {
    let cluster = cluster_with(&[("t", 1)]);
    let producer: Arc<Producer<String, String>> =
        Arc::new(Producer::new(&cluster, fast_producer()).unwrap());
    let (tx, rx) = mpsc::channel();
    let inner = Arc::clone(&producer);
    let future = producer
        .send_with_callback(ProducerRecord::new("t", "v".to_string()), move |result| {
            inner.flush();
            inner.close();
            tx.send(result.map(|m| m.offset)).unwrap();
        })
        .unwrap();
    assert_eq!(rx.recv_timeout(WAIT).unwrap().unwrap(), 0);
    assert_eq!(future.wait().unwrap().offset, 0);
    let closing = thread_with_timeout(move || producer.close());
    assert!(
        closing.is_ok(),
        "close after a callback closed the producer returned"
    );
}

fn thread_with_timeout(f: impl FnOnce() + Send + 'static) -> Result<(), mpsc::RecvTimeoutError> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        f();
        let _ = tx.send(());
    });
    rx.recv_timeout(WAIT)
}

/// Holds every Produce reply for `delay` before passing it on.
#[derive(Debug, Clone)]
struct SlowAnswers {
    inner: LocalTransport,
    delay: Duration,
    produce_requests: Arc<AtomicUsize>,
}

impl Transport for SlowAnswers {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> ferrolog::Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn send(&self, envelope: Envelope) {
        if let Message::Response(Ok(Response::Produce(_))) = &envelope.message {
            let (inner, delay) = (self.inner.clone(), self.delay);
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                inner.send(envelope);
            });
            return;
        }
        if let Message::Request(Request::Produce(_)) = &envelope.message {
            self.produce_requests.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.send(envelope)
    }
}

#[test]
fn a_slow_answer_is_waited_for_not_sent_twice() {
    let transport = SlowAnswers {
        inner: LocalTransport::new(),
        delay: Duration::from_millis(400),
        produce_requests: Arc::default(),
    };
    let cluster = Cluster::builder()
        .transport(transport.clone())
        .build()
        .unwrap();
    create(&cluster, &[("t", 1)]);
    let config = ProducerConfig::builder()
        .linger_ms(0u64)
        .request_timeout_ms(100u64)
        .delivery_timeout_ms(10_000u64)
        .enable_idempotence(false)
        .build()
        .unwrap();
    let producer: Producer<String, String> = Producer::new(&cluster, config).unwrap();
    // Each answer takes 4 request timeouts to come back.
    for (i, value) in ["a", "b"].into_iter().enumerate() {
        let sent = producer
            .send(ProducerRecord::new("t", value.to_string()))
            .unwrap();
        assert_eq!(sent.wait().unwrap().offset, i as u64);
    }
    assert_eq!(
        transport.produce_requests.load(Ordering::SeqCst),
        2,
        "no request sent twice"
    );
    let consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    assert_eq!(end_offset(&consumer, "t"), 2, "written once each");
}

#[test]
fn an_answer_to_a_fetch_from_before_a_reassignment_is_not_delivered_twice() {
    let cluster = cluster_with(&[("a", 1), ("b", 1)]);
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, earliest()).unwrap();
    consumer.assign([tp("a", 0)]).unwrap();
    // Parks a fetch of a-0 at the broker.
    assert!(consumer.poll(Duration::from_millis(20)).unwrap().is_empty());
    consumer.assign([tp("b", 0)]).unwrap();
    consumer.assign([tp("a", 0)]).unwrap();
    assert!(consumer.poll(Duration::from_millis(20)).unwrap().is_empty());
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    producer
        .send(ProducerRecord::new("a", "once".to_string()))
        .unwrap()
        .wait()
        .unwrap();
    let mut got = consume(&mut consumer, 1);
    got.extend(consumer.poll(Duration::from_millis(300)).unwrap());
    let offsets: Vec<u64> = got.iter().map(|r| r.offset).collect();
    assert_eq!(offsets, [0], "the record arrived exactly once");
}

/// A replica whose log cannot be opened (here a file stands where its
/// directory goes) makes `create_topic` fail with the storage's error,
/// naming that path, instead of leaving the partition silently unserved;
/// the partition that opened serves, and once the obstacle is gone the
/// next metadata change opens the other.
#[test]
fn a_partition_whose_log_cannot_open_fails_create_topics_with_that_error() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::builder().data_dir(dir.path()).build().unwrap();
    let blocker = dir.path().join("broker-0").join("blocked-1");
    std::fs::create_dir_all(blocker.parent().unwrap()).unwrap();
    std::fs::write(&blocker, b"not a directory").unwrap();
    let admin = Admin::new(&cluster).unwrap();
    match admin.create_topic(NewTopic::new("blocked", 2)) {
        Err(Error::Io { context, .. }) => assert!(context.contains("blocked-1"), "{context}"),
        other => panic!("expected the storage's error, got {other:?}"),
    }
    let producer: Producer<String, String> = Producer::new(&cluster, fast_producer()).unwrap();
    let send = |partition: u32| {
        producer
            .send(ProducerRecord::new("blocked", "v".to_string()).with_partition(partition))
            .unwrap()
            .wait()
    };
    send(0).expect("the partition that opened serves");
    std::fs::remove_file(&blocker).unwrap();
    admin.create_topic(NewTopic::new("other", 1)).unwrap();
    send(1).expect("opened at the next metadata change");
}

/// A `data_dir` that cannot be one is refused at `build()` with
/// `InvalidConfig` naming `data_dir` and saying why: empty, or an existing
/// file.
#[test]
fn a_data_dir_that_is_empty_or_a_file_is_refused_saying_so() {
    let empty = Cluster::builder().data_dir("").build();
    match empty {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "data_dir");
            assert!(reason.contains("empty"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    match Cluster::builder().data_dir(&file).build() {
        Err(Error::InvalidConfig { field, reason }) => {
            assert_eq!(field, "data_dir");
            assert!(reason.contains("is not a directory"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"x", "the file is untouched");
}

/// A log that went offline (its disk fails every write) answers produce
/// and fetch with a storage error at once — the failing append with the
/// `Io` error, everything after with `LogOffline` (both Kafka's
/// `KAFKA_STORAGE_ERROR`, 56), a fetch at the log's end too and a fetch
/// already waiting on it as soon as the append fails — never an empty
/// fetch or a stored half-write. Restarted on a repaired disk, the broker
/// serves every record acknowledged before.
#[test]
fn an_offline_log_answers_produce_and_fetch_with_a_storage_error_at_once() {
    use ferrolog::broker::BrokerConfig;
    use ferrolog::sim::storage::{DiskFaults, SimStorage};
    let storage = SimStorage::new(Arc::new(ferrolog::SystemClock), 3);
    let cluster = Cluster::builder()
        .storage(storage.clone())
        .broker_config(BrokerConfig {
            // No heartbeat (and so no halt) during the test.
            broker_heartbeat_interval_ms: 600_000,
            broker_session_timeout_ms: 1_200_000,
            ..BrokerConfig::default()
        })
        .build()
        .unwrap();
    Admin::new(&cluster)
        .unwrap()
        .create_topic(NewTopic::new("disk", 1))
        .unwrap();
    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    for i in 0..10 {
        producer
            .send(ProducerRecord::new("disk", format!("r{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    let tp = TopicPartition::new("disk", 0).unwrap();
    let endpoint = Endpoint::new(cluster.transport()).unwrap();
    let fetch = |offset: u64, max_wait_ms: u32| {
        let request = Request::Fetch(FetchRequest {
            max_wait_ms,
            min_bytes: 1,
            max_bytes: 1 << 20,
            replica: None,
            session: None,
            forgotten: Vec::new(),
            partitions: vec![FetchPartition {
                partition: tp.clone(),
                fetch_offset: offset,
                max_bytes: 1 << 20,
                current_leader_epoch: None,
                last_fetched_epoch: None,
            }],
        });
        let endpoint = Endpoint::new(cluster.transport()).unwrap();
        std::thread::spawn(move || match endpoint.call(0, request, WAIT) {
            Ok(Response::Fetch(mut r)) => r.partitions.remove(0).result,
            other => panic!("{other:?}"),
        })
    };
    // A consumer at the end waits (long poll) for more.
    let waiting = fetch(10, 30_000);
    storage.set_faults(
        0,
        DiskFaults {
            error_per_million: 1_000_000,
            space_left: None,
        },
    );
    let produce = |value: &[u8]| {
        let mut batch = ferrolog::record::RecordBatchBuilder::new();
        batch.append(1, None, Some(value), &[]);
        let request = Request::Produce(ferrolog::protocol::ProduceRequest {
            acks: ferrolog::Acks::Leader,
            timeout_ms: 1_000,
            partitions: vec![ferrolog::protocol::ProducePartition {
                partition: tp.clone(),
                batch: batch.build(),
            }],
        });
        match endpoint.call(0, request, WAIT) {
            Ok(Response::Produce(mut r)) => r.partitions.remove(0).result,
            other => panic!("{other:?}"),
        }
    };
    let first = produce(b"lost");
    assert!(matches!(&first, Err(Error::Io { .. })), "{first:?}");
    let waited = waiting.join().unwrap();
    assert!(
        matches!(&waited, Err(Error::LogOffline { .. })),
        "the parked fetch: {waited:?}"
    );
    let second = produce(b"refused");
    assert!(
        matches!(&second, Err(Error::LogOffline { .. })),
        "{second:?}"
    );
    assert_eq!(second.as_ref().unwrap_err().code(), 56);
    for offset in [0, 10] {
        let read = fetch(offset, 0).join().unwrap();
        assert!(
            matches!(&read, Err(Error::LogOffline { .. })),
            "fetch at {offset}: {read:?}"
        );
    }

    // Repaired and restarted: every acknowledged record, nothing else.
    storage.clear_faults();
    cluster.crash_broker(0).unwrap();
    cluster.restart_broker(0).unwrap();
    cluster
        .wait_for_metadata(WAIT, |m| m.topics["disk"].partitions[0].leader == Some(0))
        .unwrap();
    let config = ConsumerConfig {
        auto_offset_reset: ferrolog::AutoOffsetReset::Earliest,
        ..ConsumerConfig::default()
    };
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config).unwrap();
    consumer.assign([tp.clone()]).unwrap();
    let mut read = Vec::new();
    let deadline = Instant::now() + WAIT;
    while read.len() < 10 {
        assert!(Instant::now() < deadline, "read {read:?}");
        for r in consumer.poll(Duration::from_millis(100)).unwrap() {
            read.push(r.value.unwrap());
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("r{i}")).collect();
    assert_eq!(read, expected);
    assert_eq!(
        consumer.end_offsets([&tp]).unwrap()[&tp],
        10,
        "the failed append left nothing"
    );
}

/// A topic deleted and made again under the same name (issue 15): records
/// a producer had accepted for it fail with `UnknownTopicOrPartition` once
/// fresh metadata shows it gone (not `DeliveryTimeout` two minutes later),
/// and a consumer positioned on the old incarnation notices the new topic
/// id and starts over per `auto_offset_reset` at once (it used to wait
/// out 30 s of "a deposed leader may lag" patience on an offset past the
/// new log's end).
#[test]
fn a_deleted_and_recreated_topic_fails_pending_sends_and_resets_consumers() {
    let cluster = Cluster::builder().build().unwrap();
    let admin = Admin::new(&cluster).unwrap();
    admin.create_topic(NewTopic::new("again", 1)).unwrap();
    let producer: Producer<String, String> = Producer::new(
        &cluster,
        ProducerConfig::builder().linger_ms(0).build().unwrap(),
    )
    .unwrap();
    let send = |value: &str| producer.send(ProducerRecord::new("again", value.to_string()));
    for i in 0..5 {
        send(&format!("old-{i}")).unwrap().wait().unwrap();
    }
    let tp = TopicPartition::new("again", 0).unwrap();
    let config = ConsumerConfig {
        auto_offset_reset: AutoOffsetReset::Earliest,
        fetch_max_wait_ms: 50,
        ..ConsumerConfig::default()
    };
    let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config).unwrap();
    consumer.assign([tp.clone()]).unwrap();
    let poll_values = |consumer: &mut Consumer<String, String>, n: usize| {
        let mut values = Vec::new();
        let deadline = Instant::now() + WAIT;
        while values.len() < n {
            assert!(Instant::now() < deadline, "read only {values:?}");
            for r in consumer.poll(Duration::from_millis(50)).unwrap() {
                values.push(r.value.unwrap());
            }
        }
        values
    };
    assert_eq!(poll_values(&mut consumer, 5).len(), 5);
    assert_eq!(consumer.position(&tp).unwrap(), 5);

    admin.delete_topic("again").unwrap();
    // The producer's metadata still has the topic: the record is accepted,
    // refused by the broker, and fails once a refresh shows it gone.
    let pending = send("into-the-void").unwrap();
    let failed = pending.wait();
    assert!(
        matches!(&failed, Err(Error::UnknownTopicOrPartition { .. })),
        "{failed:?}"
    );

    admin.create_topic(NewTopic::new("again", 1)).unwrap();
    for i in 0..2 {
        send(&format!("new-{i}")).unwrap().wait().unwrap();
    }
    assert_eq!(poll_values(&mut consumer, 2), ["new-0", "new-1"]);
}
