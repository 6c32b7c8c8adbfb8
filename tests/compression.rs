//! Compressed batches (SPEC L11): Kafka's Java client's batches decode here,
//! ours use its framing (and `.ci/run` has the Java client read them back),
//! logs store them as sent, topics re-compress when told to, compaction
//! keeps them compressed, and a codec nobody defined is refused unstored.

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use ferrolog::client::{
    AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::protocol::{FetchPartition, FetchRequest, Request, Response};
use ferrolog::record::{Compression, Header, RecordBatch, RecordBatchBuilder};
use ferrolog::storage::{CleanupPolicy, LogConfig, TopicCompression};
use ferrolog::transport::Endpoint;
use ferrolog::{Cluster, Error, NewTopic, TopicConfig, TopicPartition};

mod common;

use common::{T0, on_both};

const CODECS: [Compression; 4] = [
    Compression::Gzip,
    Compression::Snappy,
    Compression::Lz4,
    Compression::Zstd,
];

/// What tests/kafka/KafkaBatches.java writes: 200 records of a JSON-like
/// value, keys over 17 users, a header with the index, producer 4242/3/100.
const RECORDS: usize = 200;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

fn key(i: usize) -> String {
    format!("user-{}", i % 17)
}

fn value(i: usize) -> String {
    let pad: String = (0..400)
        .map(|j| (b'a' + ((i + j) % 26) as u8) as char)
        .collect();
    format!(
        "{{\"id\":{i},\"user\":\"user-{}\",\"event\":\"click\",\"path\":\"/items/{}\",\"pad\":\"{pad}\"}}",
        i % 17,
        i * 7919 % 1000
    )
}

fn kafka_batch(codec: Compression) -> RecordBatch {
    let path = format!(
        "{}/tests/data/kafka-batches/{}.bin",
        env!("CARGO_MANIFEST_DIR"),
        codec.name()
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    RecordBatch::from_bytes(Bytes::from(bytes)).unwrap()
}

fn our_batch(codec: Compression) -> RecordBatch {
    let mut builder = RecordBatchBuilder::new()
        .producer(4242, 3, 100)
        .compression(codec);
    for i in 0..RECORDS {
        let n = i.to_string();
        builder.append(
            BASE_TIMESTAMP + i as i64,
            Some(key(i).as_bytes()),
            Some(value(i).as_bytes()),
            &[Header {
                key: "n".into(),
                value: Some(Bytes::from(n)),
            }],
        );
    }
    builder.build()
}

fn check_records(batch: &RecordBatch, what: &str) {
    let records: Vec<_> = batch
        .records()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(records.len(), RECORDS, "{what}");
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, batch.base_offset() + i as u64, "{what}");
        assert_eq!(r.timestamp, BASE_TIMESTAMP + i as i64, "{what}");
        assert_eq!(r.key.as_deref(), Some(key(i).as_bytes()), "{what}");
        assert_eq!(r.value.as_deref(), Some(value(i).as_bytes()), "{what} {i}");
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].key, "n");
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(i.to_string().as_bytes())
        );
    }
}

#[test]
fn batches_compressed_by_kafkas_java_client_decode_record_for_record() {
    for codec in CODECS {
        let batch = kafka_batch(codec);
        let what = format!("Kafka's {} batch", codec.name());
        assert_eq!(batch.compression(), Some(codec), "{what}");
        batch.validate().unwrap();
        batch.validate_produced().unwrap();
        assert_eq!(
            (
                batch.producer_id(),
                batch.producer_epoch(),
                batch.base_sequence()
            ),
            (4242, 3, 100)
        );
        assert_eq!(batch.record_count(), RECORDS as i32);
        // Compressed, and across several 32/64 KiB blocks.
        let uncompressed = our_batch(Compression::None).size();
        assert!(uncompressed > 90_000, "{uncompressed}");
        assert!(batch.size() < uncompressed / 4, "{what}: {}", batch.size());
        check_records(&batch, &what);
    }
}

#[test]
fn our_batches_use_kafkas_framing_and_are_left_for_the_java_client_to_read() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kafka-batches");
    std::fs::create_dir_all(&dir).unwrap();
    for codec in CODECS {
        let ours = our_batch(codec);
        let theirs = kafka_batch(codec);
        ours.validate_produced().unwrap();
        assert_eq!(ours.compression(), Some(codec));
        assert_eq!(ours.attributes(), theirs.attributes(), "{codec:?}");
        check_records(&ours, codec.name());
        // The stream's framing header, as the Java client writes it: gzip's
        // magic and method, xerial's magic and versions, the LZ4 frame's
        // magic, flags (independent blocks, no checksums), 64 KiB blocks
        // and header checksum, zstd's frame magic.
        let framing = match codec {
            Compression::Gzip => 3,
            Compression::Snappy => 16,
            Compression::Lz4 => 7,
            _ => 4,
        };
        let body = |b: &RecordBatch| b.as_bytes()[61..61 + framing].to_vec();
        assert_eq!(body(&ours), body(&theirs), "{codec:?} framing");
        assert!(
            ours.size() < theirs.size() * 2,
            "{codec:?}: {} bytes here, {} from Kafka",
            ours.size(),
            theirs.size()
        );
        std::fs::write(dir.join(format!("{}.bin", codec.name())), ours.as_bytes()).unwrap();
    }
}

#[test]
fn a_log_stores_compressed_batches_as_sent_and_serves_them_back() {
    on_both(|storage, _| {
        let tp = TopicPartition::new("t", 0).unwrap();
        let mut log = storage.open(&tp, 0, &LogConfig::default()).unwrap();
        for codec in CODECS {
            let sent = our_batch(codec);
            let info = log.append(sent.clone(), 0).unwrap();
            let read = log.read(info.base_offset, 1 << 20).unwrap();
            let stored = read.batches().next().unwrap().unwrap();
            assert_eq!(stored.compression(), Some(codec));
            assert_eq!(
                &stored.as_bytes()[61..],
                &sent.as_bytes()[61..],
                "{codec:?}: not re-compressed"
            );
            check_records(&stored, codec.name());
        }
        assert_eq!(log.log_end_offset(), 4 * RECORDS as u64);
    });
}

/// `batch` with compression id `id` written into its attributes and its CRC
/// made valid again.
fn with_compression_id(batch: &RecordBatch, id: u8) -> RecordBatch {
    let mut bytes = batch.as_bytes().to_vec();
    bytes[22] = (bytes[22] & !0x07) | id;
    let crc = crc32c::crc32c(&bytes[21..]);
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::from_bytes(Bytes::from(bytes)).unwrap()
}

#[test]
fn an_unknown_codec_or_a_batch_that_does_not_decompress_is_refused_and_not_stored() {
    on_both(|storage, _| {
        let tp = TopicPartition::new("t", 0).unwrap();
        let mut log = storage.open(&tp, 0, &LogConfig::default()).unwrap();
        for id in 5..=7 {
            let unknown = with_compression_id(&our_batch(Compression::Lz4), id);
            let refused = log.append(unknown.clone(), 0);
            assert!(
                matches!(
                    refused,
                    Err(Error::UnsupportedCompression { codec: "unknown" })
                ),
                "id {id}: {refused:?}"
            );
            // Replication refuses it too; a consumer gets the same error.
            assert!(log.append_replicated(unknown.clone()).is_err());
            assert!(matches!(
                unknown.records().next(),
                Some(Err(Error::UnsupportedCompression { .. }))
            ));
        }
        // Gzip's bit on zstd bytes: valid CRC, records that do not decompress.
        let mislabelled = with_compression_id(&our_batch(Compression::Zstd), 1);
        let refused = log.append(mislabelled, 0);
        assert!(
            matches!(refused, Err(Error::CorruptRecord { .. })),
            "{refused:?}"
        );
        // An uncompressed batch marked compressed.
        let plain = with_compression_id(&our_batch(Compression::None), 3);
        assert!(matches!(
            log.append(plain, 0),
            Err(Error::CorruptRecord { .. })
        ));
        assert_eq!(log.log_end_offset(), 0, "nothing stored");
    });
    // Kafka's UNSUPPORTED_COMPRESSION_TYPE.
    assert_eq!(Error::UnsupportedCompression { codec: "zstd" }.code(), 76);
}

#[test]
fn a_topics_codec_recompresses_batches_that_arrive_with_another() {
    on_both(|storage, _| {
        for (topic, sent, stored) in [
            (
                TopicCompression::Producer,
                Compression::Lz4,
                Compression::Lz4,
            ),
            (TopicCompression::Zstd, Compression::Lz4, Compression::Zstd),
            (TopicCompression::Gzip, Compression::None, Compression::Gzip),
            (
                TopicCompression::Uncompressed,
                Compression::Snappy,
                Compression::None,
            ),
            (
                TopicCompression::Snappy,
                Compression::Snappy,
                Compression::Snappy,
            ),
        ] {
            let tp = TopicPartition::new(format!("t-{}", topic.name()), 0).unwrap();
            let config = LogConfig {
                compression_type: topic,
                ..LogConfig::default()
            };
            let mut log = storage.open(&tp, 0, &config).unwrap();
            let batch = our_batch(sent);
            log.append(batch.clone(), 0).unwrap();
            let read = log.read(0, 1 << 20).unwrap();
            let got = read.batches().next().unwrap().unwrap();
            assert_eq!(got.compression(), Some(stored), "{topic:?} ← {sent:?}");
            if stored == sent {
                assert_eq!(&got.as_bytes()[61..], &batch.as_bytes()[61..]);
            }
            assert_eq!(
                (got.producer_id(), got.producer_epoch(), got.base_sequence()),
                (4242, 3, 100)
            );
            assert_eq!(got.max_timestamp(), batch.max_timestamp());
            check_records(&got, topic.name());
        }
    });
}

#[test]
fn compaction_compacts_compressed_batches_and_keeps_them_compressed() {
    on_both(|storage, _| {
        let tp = TopicPartition::new("compacted", 0).unwrap();
        let config = LogConfig {
            segment_bytes: 4096,
            index_interval_bytes: 256,
            retention_ms: None,
            cleanup_policy: CleanupPolicy::Compact,
            ..LogConfig::default()
        };
        let mut log = storage.open(&tp, 0, &config).unwrap();
        // 40 batches of 10 records over 7 keys, alternating codecs.
        let mut latest = std::collections::BTreeMap::new();
        for b in 0..40u64 {
            let codec = CODECS[b as usize % 4];
            let mut builder = RecordBatchBuilder::new().compression(codec);
            for r in 0..10u64 {
                let offset = b * 10 + r;
                let key = format!("key-{}", offset % 7);
                let value = format!("value-{offset}-{}", "x".repeat(50));
                builder.append(
                    T0 + offset as i64,
                    Some(key.as_bytes()),
                    Some(value.as_bytes()),
                    &[],
                );
                latest.insert(key, (offset, value));
            }
            log.append(builder.build(), 0).unwrap();
        }
        log.roll().unwrap();
        log.set_high_watermark(log.log_end_offset());
        let report = log.compact().unwrap();
        assert!(report.records_removed > 350, "{report:?}");
        let mut kept = Vec::new();
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            for batch in log.read(offset, 1 << 20).unwrap().batches() {
                let batch = batch.unwrap();
                batch.validate().unwrap();
                if batch.record_count() > 0 {
                    assert_ne!(batch.compression(), Some(Compression::None));
                }
                for r in batch.records() {
                    let r = r.unwrap();
                    let key = String::from_utf8(r.key.unwrap().to_vec()).unwrap();
                    kept.push((key, r.offset, r.value.unwrap()));
                }
                offset = batch.next_offset();
            }
        }
        assert_eq!(kept.len(), latest.len());
        for (key, offset, value) in kept {
            assert_eq!(latest[&key].0, offset);
            assert_eq!(latest[&key].1.as_bytes(), value.as_ref());
        }
    });
}

fn fetch_first_batch(cluster: &Cluster, tp: &TopicPartition) -> RecordBatch {
    let endpoint = Endpoint::new(cluster.transport()).unwrap();
    let request = Request::Fetch(FetchRequest {
        max_wait_ms: 0,
        min_bytes: 1,
        max_bytes: 1 << 20,
        partitions: vec![FetchPartition {
            partition: tp.clone(),
            fetch_offset: 0,
            max_bytes: 1 << 20,
            current_leader_epoch: None,
            last_fetched_epoch: None,
        }],
        replica: None,
        session: None,
        forgotten: Vec::new(),
    });
    let leader = cluster
        .topic(tp.topic())
        .partition(tp.partition())
        .unwrap()
        .leader()
        .unwrap()
        .expect("a leader");
    match endpoint.call(leader, request, Duration::from_secs(10)) {
        Ok(Response::Fetch(mut response)) => {
            let data = response.partitions.remove(0).result.unwrap();
            data.records.batches().next().unwrap().unwrap()
        }
        other => panic!("no fetch answer: {other:?}"),
    }
}

#[test]
fn a_producer_compresses_replicas_store_it_and_a_consumer_reads_it() {
    let cluster = Cluster::builder().brokers(3).build().unwrap();
    for (topic, producer_codec, stored) in [
        ("plain-zstd", Compression::Zstd, Compression::Zstd),
        ("topic-gzip", Compression::Lz4, Compression::Gzip),
    ] {
        let config = TopicConfig {
            compression_type: if topic == "topic-gzip" {
                TopicCompression::Gzip
            } else {
                TopicCompression::Producer
            },
            ..TopicConfig::default()
        };
        cluster
            .create_topic(NewTopic::new(topic, 1).replication_factor(3).config(config))
            .unwrap();
        let producer: Producer<String, String> = Producer::new(
            &cluster,
            ProducerConfig::builder()
                .compression_type(producer_codec.name())
                .linger_ms(50)
                .build()
                .unwrap(),
        )
        .unwrap();
        let sends: Vec<_> = (0..RECORDS)
            .map(|i| {
                producer
                    .send(ProducerRecord::new(topic, value(i)).with_key(key(i)))
                    .unwrap()
            })
            .collect();
        for s in sends {
            s.wait().unwrap();
        }
        let tp = TopicPartition::new(topic, 0).unwrap();
        let first = fetch_first_batch(&cluster, &tp);
        assert_eq!(first.compression(), Some(stored), "{topic}");
        let mut consumer: Consumer<String, String> = Consumer::new(
            &cluster,
            ConsumerConfig::builder()
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .build()
                .unwrap(),
        )
        .unwrap();
        consumer.assign([tp]).unwrap();
        let mut got = Vec::new();
        while got.len() < RECORDS {
            for r in consumer.poll(Duration::from_secs(10)).unwrap() {
                got.push((r.key.unwrap(), r.value.unwrap()));
            }
        }
        for (i, (k, v)) in got.into_iter().enumerate() {
            assert_eq!((k, v), (key(i), value(i)), "{topic} record {i}");
        }
    }
}

#[test]
fn compression_settings_take_kafkas_names_and_refuse_others() {
    assert_eq!(
        ProducerConfig::builder()
            .compression_type("lz4")
            .build()
            .unwrap()
            .compression_type,
        Compression::Lz4
    );
    let refused = ProducerConfig::builder().compression_type("brotli").build();
    assert!(
        matches!(
            refused,
            Err(Error::InvalidConfig {
                field: "compression_type",
                ..
            })
        ),
        "{refused:?}"
    );
    for name in ["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"] {
        assert_eq!(TopicCompression::from_name(name).unwrap().name(), name);
    }
    assert_eq!(TopicCompression::from_name("none"), None);
    for codec in CODECS {
        assert!(codec.is_enabled(), "the tests build every codec");
        assert_eq!(Compression::from_name(codec.name()), Some(codec));
    }
}
