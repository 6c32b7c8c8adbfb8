//! Batches written by an independent Kafka client (kafka-python's
//! `DefaultRecordBatchBuilder`) decode field for field, and the same records
//! re-encode to the same bytes.

use bytes::Bytes;
use ferrolog::record::{Compression, Header, RecordBatch, RecordBatchBuilder};
use serde_json::Value;

fn vectors() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/kafka-vectors.json"
    ))
    .expect("tests/data/kafka-vectors.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn opt_hex(v: &Value) -> Option<Vec<u8>> {
    v.as_str().map(unhex)
}

fn int(v: &Value, field: &str) -> i64 {
    v[field]
        .as_i64()
        .unwrap_or_else(|| panic!("{field} is an integer"))
}

#[test]
fn every_kafka_batch_decodes_with_every_field() {
    let vectors = vectors();
    let batches = vectors["batches"].as_array().expect("batches");
    assert!(!batches.is_empty());
    let mut records_checked = 0;
    for (i, v) in batches.iter().enumerate() {
        let batch = RecordBatch::from_bytes(Bytes::from(unhex(v["hex"].as_str().unwrap())))
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
        batch
            .validate()
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
        assert_eq!(
            batch.base_offset() as i64,
            int(v, "base_offset"),
            "batch {i}"
        );
        assert_eq!(
            batch.partition_leader_epoch() as i64,
            int(v, "partition_leader_epoch")
        );
        assert_eq!(batch.magic() as i64, int(v, "magic"));
        assert_eq!(batch.crc() as i64, int(v, "crc"));
        assert_eq!(batch.compute_crc() as i64, int(v, "crc"));
        assert_eq!(batch.attributes() as i64, int(v, "attributes"));
        assert_eq!(
            batch.last_offset_delta() as i64,
            int(v, "last_offset_delta")
        );
        assert_eq!(batch.first_timestamp(), int(v, "first_timestamp"));
        assert_eq!(batch.max_timestamp(), int(v, "max_timestamp"));
        assert_eq!(batch.producer_id(), int(v, "producer_id"));
        assert_eq!(batch.producer_epoch() as i64, int(v, "producer_epoch"));
        assert_eq!(batch.base_sequence() as i64, int(v, "base_sequence"));
        assert_eq!(batch.record_count() as i64, int(v, "record_count"));
        assert_eq!(
            batch.compression().map(Compression::name),
            v["compression"].as_str()
        );
        assert_eq!(
            batch.is_transactional(),
            v["is_transactional"].as_bool().unwrap()
        );

        let expected = v["records"].as_array().unwrap();
        let decoded: Vec<_> = batch
            .records()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| panic!("batch {i}: {e}"));
        assert_eq!(decoded.len(), expected.len(), "batch {i}");
        for (r, e) in decoded.iter().zip(expected) {
            assert_eq!(r.offset as i64, int(e, "offset"));
            assert_eq!(r.timestamp, int(e, "timestamp"));
            assert_eq!(r.key.as_deref().map(<[u8]>::to_vec), opt_hex(&e["key"]));
            assert_eq!(r.value.as_deref().map(<[u8]>::to_vec), opt_hex(&e["value"]));
            let headers = e["headers"].as_array().unwrap();
            assert_eq!(r.headers.len(), headers.len());
            for (h, eh) in r.headers.iter().zip(headers) {
                assert_eq!(h.key, eh[0].as_str().unwrap());
                assert_eq!(h.value.as_deref().map(<[u8]>::to_vec), opt_hex(&eh[1]));
            }
            records_checked += 1;
        }
    }
    assert!(records_checked >= batches.len());
}

#[test]
fn the_same_records_reencode_to_the_same_bytes() {
    let vectors = vectors();
    for (i, v) in vectors["batches"].as_array().unwrap().iter().enumerate() {
        let mut builder = RecordBatchBuilder::new()
            .producer(
                int(v, "producer_id"),
                int(v, "producer_epoch") as i16,
                int(v, "base_sequence") as i32,
            )
            .transactional(v["is_transactional"].as_bool().unwrap());
        for r in v["records"].as_array().unwrap() {
            let headers: Vec<Header> = r["headers"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| Header {
                    key: h[0].as_str().unwrap().to_string(),
                    value: opt_hex(&h[1]).map(Bytes::from),
                })
                .collect();
            builder.append(
                int(r, "timestamp"),
                opt_hex(&r["key"]).as_deref(),
                opt_hex(&r["value"]).as_deref(),
                &headers,
            );
        }
        let batch = builder.build().stamped(
            int(v, "base_offset") as u64,
            int(v, "partition_leader_epoch") as i32,
        );
        assert_eq!(
            batch.as_bytes().as_ref(),
            unhex(v["hex"].as_str().unwrap()).as_slice(),
            "batch {i} re-encodes differently"
        );
    }
}

#[test]
fn keys_and_values_are_slices_of_the_batch_buffer() {
    let vectors = vectors();
    let hex = vectors["batches"][2]["hex"].as_str().unwrap();
    let batch = RecordBatch::from_bytes(Bytes::from(unhex(hex))).unwrap();
    let range = batch.as_bytes().as_ptr_range();
    for record in batch.records() {
        let record = record.unwrap();
        for field in [record.key, record.value].into_iter().flatten() {
            if !field.is_empty() {
                assert!(range.contains(&field.as_ptr()), "a field was copied");
            }
        }
    }
}

#[test]
fn murmur2_and_partitions_match_kafka_for_every_vector_key() {
    use ferrolog::client::partitioner::{murmur2, partition_for_key};
    let vectors = vectors();
    let entries = vectors["murmur2"].as_array().unwrap();
    assert!(!entries.is_empty());
    let mut checked = 0;
    for e in entries {
        let key = unhex(e["key_hex"].as_str().unwrap());
        assert_eq!(murmur2(&key) as i64, int(e, "murmur2"), "key {key:?}");
        for (partitions, expected) in e["partition"].as_object().unwrap() {
            let n: u32 = partitions.parse().unwrap();
            assert_eq!(
                partition_for_key(&key, n) as i64,
                expected.as_i64().unwrap(),
                "key {key:?} over {n} partitions"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, entries.len() * 5);
}
