//! A produced batch whose CRC is valid but whose records do not decode is
//! refused with `CorruptRecord` and never stored — by a log and by a broker
//! — so that no client can plant a batch every consumer of the partition
//! would then fail on.

use bytes::Bytes;
use ferrolog::client::{Acks, AutoOffsetReset, Consumer, ConsumerConfig};
use ferrolog::protocol::{ProducePartition, ProduceRequest, Request, Response};
use ferrolog::record::RecordBatch;
use ferrolog::storage::{LogConfig, MemoryStorage, Storage};
use ferrolog::transport::Endpoint;
use ferrolog::{Admin, Cluster, Error, NewTopic, TopicPartition};
use std::time::Duration;

/// Appends `v` as a zigzag varint (Kafka's record encoding).
fn varint(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        let byte = (z & 0x7f) as u8;
        z >>= 7;
        if z == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// One record, length-prefixed: attributes, timestamp and offset deltas 0,
/// then `fields` (key, value, headers) exactly as given.
fn record(fields: &[u8]) -> Vec<u8> {
    let mut body = vec![0u8];
    varint(&mut body, 0);
    varint(&mut body, 0);
    body.extend_from_slice(fields);
    let mut out = Vec::new();
    varint(&mut out, body.len() as i64);
    out.extend(body);
    out
}

/// A one-record v2 batch (no producer id, timestamps 0) around `record`,
/// with a valid length and CRC.
fn batch(record: &[u8]) -> RecordBatch {
    let mut bytes = vec![0u8; 61];
    let length = (61 + record.len() - 12) as i32;
    bytes[8..12].copy_from_slice(&length.to_be_bytes());
    bytes[16] = 2; // magic
    bytes[43..51].copy_from_slice(&(-1i64).to_be_bytes()); // producer id
    bytes[51..53].copy_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    bytes[53..57].copy_from_slice(&(-1i32).to_be_bytes()); // base sequence
    bytes[57..61].copy_from_slice(&1i32.to_be_bytes()); // record count
    bytes.extend_from_slice(record);
    let crc = RecordBatch::from_bytes(Bytes::from(bytes.clone()))
        .expect("framing")
        .compute_crc();
    bytes[17..21].copy_from_slice(&crc.to_be_bytes());
    RecordBatch::from_bytes(Bytes::from(bytes)).expect("framing")
}

/// Key "k", value "v", then `headers` as given (count first).
fn with_headers(headers: &[u8]) -> Vec<u8> {
    let mut fields = Vec::new();
    varint(&mut fields, 1);
    fields.push(b'k');
    varint(&mut fields, 1);
    fields.push(b'v');
    fields.extend_from_slice(headers);
    fields
}

/// The record fields of a good record and of each poison pill.
fn cases() -> (Vec<u8>, Vec<(&'static str, Vec<u8>)>) {
    let good = with_headers(&[0]);
    let mut huge_key = Vec::new();
    varint(&mut huge_key, i32::MAX as i64);
    huge_key.push(b'k');
    varint(&mut huge_key, 1);
    huge_key.push(b'v');
    varint(&mut huge_key, 0);
    let mut long_key = Vec::new();
    varint(&mut long_key, 2);
    long_key.push(b'k');
    varint(&mut long_key, 1);
    long_key.push(b'v');
    varint(&mut long_key, 0);
    let mut many_headers = Vec::new();
    varint(&mut many_headers, i32::MAX as i64);
    let mut one_too_many = Vec::new();
    varint(&mut one_too_many, 2);
    varint(&mut one_too_many, 1);
    one_too_many.push(b'h');
    varint(&mut one_too_many, -1);
    let stray = [0, 0];
    let mut not_utf8 = Vec::new();
    varint(&mut not_utf8, 1);
    varint(&mut not_utf8, 1);
    not_utf8.push(0xff);
    varint(&mut not_utf8, -1);
    let bad = vec![
        ("a key length of 2^31-1", huge_key),
        ("a key one byte too long", long_key),
        ("a header count of 2^31-1", with_headers(&many_headers)),
        ("one header too many", with_headers(&one_too_many)),
        ("a stray byte after the headers", with_headers(&stray)),
        ("a header key that is not UTF-8", with_headers(&not_utf8)),
    ];
    (good, bad)
}

#[test]
fn a_log_refuses_a_produced_batch_whose_records_do_not_decode() {
    let storage = MemoryStorage::new();
    let tp = TopicPartition::new("t", 0).unwrap();
    let mut log = storage.open(&tp, 0, &LogConfig::default()).unwrap();
    let (good, bad) = cases();
    for (what, fields) in bad {
        let poison = batch(&record(&fields));
        poison.validate().expect("CRC and record framing hold");
        let refused = log.append(poison, 0);
        assert!(
            matches!(refused, Err(Error::CorruptRecord { .. })),
            "{what}: {refused:?}"
        );
        assert_eq!(log.log_end_offset(), 0, "{what}: nothing stored");
    }
    log.append(batch(&record(&good)), 0)
        .expect("the well-formed record is taken");
    assert_eq!(log.log_end_offset(), 1);
}

#[test]
fn a_broker_refuses_a_produced_batch_whose_records_do_not_decode() {
    let cluster = Cluster::builder().build().unwrap();
    Admin::new(&cluster)
        .unwrap()
        .create_topic(NewTopic::new("t", 1))
        .unwrap();
    let endpoint = Endpoint::new(cluster.transport()).unwrap();
    let tp = TopicPartition::new("t", 0).unwrap();
    let produce = |batch: RecordBatch| {
        let request = Request::Produce(ProduceRequest {
            acks: Acks::All,
            timeout_ms: 1_000,
            partitions: vec![ProducePartition {
                partition: tp.clone(),
                batch,
            }],
        });
        match endpoint.call(0, request, Duration::from_secs(10)) {
            Ok(Response::Produce(mut response)) => response.partitions.remove(0).result,
            other => panic!("no produce answer: {other:?}"),
        }
    };
    let (good, bad) = cases();
    for (what, fields) in bad {
        let refused = produce(batch(&record(&fields)));
        assert!(
            matches!(refused, Err(Error::CorruptRecord { .. })),
            "{what}: {refused:?}"
        );
    }
    let ack = produce(batch(&record(&good))).expect("the well-formed record is taken");
    assert_eq!(ack.base_offset, 0, "nothing was stored before it");
    // Consumers read the partition without meeting a poison pill.
    let mut consumer: Consumer<Vec<u8>, Vec<u8>> = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer.assign([tp.clone()]).unwrap();
    let records = consumer.poll(Duration::from_secs(10)).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].key.as_deref(), Some(&b"k"[..]));
}

/// Decoding a batch without `validate` still refuses a record count that
/// cannot be right: negative, or zero with records in the body.
#[test]
fn decoding_refuses_a_negative_or_empty_record_count() {
    let (good, _) = cases();
    let well_formed = batch(&record(&good));
    assert_eq!(well_formed.records().count(), 1);
    for count in [-1i32, i32::MIN, 0] {
        let mut bytes = well_formed.as_bytes().to_vec();
        bytes[57..61].copy_from_slice(&count.to_be_bytes());
        let patched = RecordBatch::from_bytes(Bytes::from(bytes)).unwrap();
        let decoded: Vec<_> = patched.records().collect();
        assert_eq!(decoded.len(), 1, "count {count}: one error, then the end");
        assert!(
            matches!(decoded[0], Err(Error::CorruptRecord { .. })),
            "count {count}: {decoded:?}"
        );
        assert!(
            patched.validate().is_err(),
            "count {count}: validate refuses it too"
        );
    }
}
