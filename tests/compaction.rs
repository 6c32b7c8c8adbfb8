//! Log compaction (`cleanup_policy = compact`, L9), proved on `MemoryStorage`
//! and `FileStorage` through the public storage API, plus crash recovery of an
//! interrupted clean and a compacted topic read end to end by a consumer.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolog::client::{
    AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig, ProducerRecord,
};
use ferrolog::record::{RecordBatch, RecordBatchBuilder};
use ferrolog::storage::{
    CleanupPolicy, FileStorage, LogConfig, MemoryStorage, PartitionLog, Storage,
};
use ferrolog::{Admin, Cluster, Error, ManualClock, NewTopic, TopicPartition};

mod common;

use common::{T0, on_both};

type Entry = (u64, Vec<u8>, Option<Vec<u8>>);

fn tp() -> TopicPartition {
    TopicPartition::new("compacted", 0).unwrap()
}

fn compacted() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: 1_000,
        ..LogConfig::default()
    }
}

/// One batch of (key, value) records, all at `timestamp`.
fn batch(records: &[(&str, Option<&str>)], timestamp: i64) -> RecordBatch {
    let mut b = RecordBatchBuilder::new();
    for (k, v) in records {
        b.append(timestamp, Some(k.as_bytes()), v.map(str::as_bytes), &[]);
    }
    b.build()
}

/// Every record from the log start, checking that offsets strictly increase
/// and that each batch starts where the previous one ended.
fn read_all(log: &dyn PartitionLog) -> Vec<Entry> {
    let mut out: Vec<Entry> = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let records = log.read(offset, 300).unwrap();
        assert!(!records.is_empty(), "a read below the end returns a batch");
        for batch in records.batches() {
            let batch = batch.unwrap();
            assert!(batch.next_offset() > offset);
            for r in batch.records() {
                let r = r.unwrap();
                assert!(r.offset >= batch.base_offset() && r.offset <= batch.last_offset());
                if r.offset < offset {
                    continue;
                }
                if let Some(last) = out.last() {
                    assert!(r.offset > last.0, "offsets strictly increase");
                }
                out.push((
                    r.offset,
                    r.key.unwrap().to_vec(),
                    r.value.map(|v| v.to_vec()),
                ));
            }
            offset = batch.next_offset();
        }
    }
    assert_eq!(offset, log.log_end_offset());
    out
}

fn entry(offset: u64, key: &str, value: Option<&str>) -> Entry {
    (
        offset,
        key.as_bytes().to_vec(),
        value.map(|v| v.as_bytes().to_vec()),
    )
}

/// The records of `all` that compaction keeps: the latest of each key below
/// `active_base`, and everything from it on.
fn latest_per_key(all: &[Entry], active_base: u64) -> Vec<Entry> {
    let mut latest: HashMap<&[u8], u64> = HashMap::new();
    for (offset, key, _) in all {
        latest.insert(key, *offset);
    }
    all.iter()
        .filter(|(o, k, _)| *o >= active_base || latest[k.as_slice()] == *o)
        .cloned()
        .collect()
}

/// Appends `n` single-record batches cycling over `keys` keys; returns what
/// was appended.
fn append_updates(log: &mut dyn PartitionLog, n: usize, keys: usize, tag: &str) -> Vec<Entry> {
    (0..n)
        .map(|i| {
            let key = format!("key-{}", i % keys);
            let value = format!("{tag}-{i}");
            let info = log
                .append(batch(&[(&key, Some(&value))], T0 + i as i64), 3)
                .unwrap();
            entry(info.base_offset, &key, Some(&value))
        })
        .collect()
}

#[test]
fn compaction_keeps_the_latest_record_per_key_at_its_offset() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
        let mut all = append_updates(log.as_mut(), 150, 5, "old");
        // A multi-record batch whose middle records are superseded within it.
        let info = log
            .append(
                batch(
                    &[
                        ("key-0", Some("a")),
                        ("key-9", Some("b")),
                        ("key-0", Some("c")),
                    ],
                    T0,
                ),
                3,
            )
            .unwrap();
        all.push(entry(info.base_offset, "key-0", Some("a")));
        all.push(entry(info.base_offset + 1, "key-9", Some("b")));
        all.push(entry(info.base_offset + 2, "key-0", Some("c")));
        log.roll().unwrap();
        let active_base = log.log_end_offset();
        // Keys written to the active segment supersede older ones too.
        let info = log
            .append(batch(&[("key-1", Some("newest"))], T0), 3)
            .unwrap();
        all.push(entry(info.base_offset, "key-1", Some("newest")));
        let end = log.log_end_offset();
        log.set_high_watermark(end);
        let (start, size, segments) = (
            log.log_start_offset(),
            log.size_bytes(),
            log.segment_count(),
        );
        let epoch_end = log.end_offset_for_epoch(3);
        assert!(segments > 5, "small segments roll");

        let report = log.compact().unwrap();
        let expected = latest_per_key(&all, active_base);
        assert_eq!(read_all(log.as_ref()), expected);
        assert_eq!(
            expected.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![147, 148, 149, 151, 152, 153],
            "key-2..key-4, key-9, key-0, then key-1 in the active segment"
        );
        assert_eq!(report.records_removed, (all.len() - expected.len()) as u64);
        assert!(
            report.segments_cleaned >= 1 && report.segments_cleaned < segments,
            "{report:?}"
        );
        assert!(report.bytes_after < report.bytes_before);
        assert_eq!(
            log.size_bytes(),
            size - (report.bytes_before - report.bytes_after)
        );
        // Offsets, the high watermark and the epochs are untouched.
        assert_eq!(log.log_start_offset(), start);
        assert_eq!(log.log_end_offset(), end);
        assert_eq!(log.high_watermark(), end);
        assert_eq!(log.segment_count(), segments);
        assert_eq!(log.end_offset_for_epoch(3), epoch_end);
        // A read at a removed offset starts with a batch that reaches it.
        for offset in 0..end {
            let first = log
                .read(offset, 1)
                .unwrap()
                .batches()
                .next()
                .unwrap()
                .unwrap();
            assert!(first.base_offset() <= offset && offset <= first.last_offset());
        }
        // Time lookups skip removed records.
        let found = log.offset_for_timestamp(T0 + 10).unwrap().unwrap();
        assert_eq!(found.offset, 147);
        assert_eq!(found.timestamp, T0 + 147);
        // Nothing new to clean: the next run does nothing.
        assert_eq!(log.compact().unwrap(), Default::default());
        // Appends go on at the log end.
        assert_eq!(
            log.append(batch(&[("k", Some("v"))], T0), 3)
                .unwrap()
                .base_offset,
            end
        );
    });
}

#[test]
fn compaction_skips_segments_at_or_above_the_high_watermark() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
        let all = append_updates(log.as_mut(), 60, 3, "v");
        log.roll().unwrap();
        assert_eq!(log.high_watermark(), 0);
        assert_eq!(log.compact().unwrap(), Default::default());
        assert_eq!(read_all(log.as_ref()), all);
        // With the high watermark in the middle, only segments wholly below it
        // are cleaned; the rest keeps every record.
        log.set_high_watermark(30);
        log.compact().unwrap();
        let read = read_all(log.as_ref());
        for e in all.iter().filter(|e| e.0 >= 30) {
            assert!(read.contains(e), "{e:?} is above the high watermark");
        }
        assert!(read.len() < all.len(), "something below it was cleaned");
    });
}

#[test]
fn a_compacted_log_refuses_records_without_a_key() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
        log.append(batch(&[("k", Some("v"))], T0), 0).unwrap();
        let mut b = RecordBatchBuilder::new();
        b.append(T0, Some(b"k"), Some(b"v"), &[]);
        b.append(T0, None, Some(b"no key"), &[]);
        let refused = log.append(b.build(), 0);
        assert!(
            matches!(refused, Err(Error::InvalidRecord { ref reason }) if reason.contains("key")),
            "{refused:?}"
        );
        assert_eq!(log.log_end_offset(), 1, "nothing of the batch was appended");
        assert_eq!(read_all(log.as_ref()).len(), 1);
        // A log that only deletes takes keyless records.
        let other = TopicPartition::new("deleted", 0).unwrap();
        let mut plain = storage.open(&other, 0, &LogConfig::default()).unwrap();
        let mut b = RecordBatchBuilder::new();
        b.append(T0, None, Some(b"no key"), &[]);
        plain.append(b.build(), 0).unwrap();
    });
}

#[test]
fn tombstones_stay_for_delete_retention_ms_after_the_first_clean() {
    on_both(|storage, clock| {
        let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
        log.append(batch(&[("gone", Some("1")), ("kept", Some("1"))], T0), 0)
            .unwrap();
        // The tombstone's own timestamp is long past: the horizon is taken
        // from the log's clock when the cleaner first keeps it, not from it.
        log.append(batch(&[("gone", None)], T0 - 10_000_000), 0)
            .unwrap();
        log.roll().unwrap();
        log.append(batch(&[("other", Some("1"))], T0), 0).unwrap();
        log.set_high_watermark(log.log_end_offset());
        log.compact().unwrap();
        assert_eq!(
            read_all(log.as_ref()),
            vec![
                entry(1, "kept", Some("1")),
                entry(2, "gone", None),
                entry(3, "other", Some("1"))
            ]
        );
        let tomb = log.read(2, 1).unwrap().batches().next().unwrap().unwrap();
        assert_eq!(tomb.delete_horizon_ms(), Some(T0 + 1_000));
        let read_ts = tomb.records().next().unwrap().unwrap().timestamp;
        assert_eq!(read_ts, T0 - 10_000_000, "record timestamps read the same");

        clock.advance(999);
        log.compact().unwrap();
        assert!(read_all(log.as_ref()).contains(&entry(2, "gone", None)));
        clock.advance(1);
        let report = log.compact().unwrap();
        assert_eq!(report.records_removed, 1);
        assert_eq!(
            read_all(log.as_ref()),
            vec![entry(1, "kept", Some("1")), entry(3, "other", Some("1"))]
        );
        assert_eq!(log.log_end_offset(), 4);
    });
}

#[test]
fn retention_deletes_segments_only_when_the_policy_deletes() {
    on_both(|storage, clock| {
        for (i, policy) in [CleanupPolicy::Compact, CleanupPolicy::CompactDelete]
            .into_iter()
            .enumerate()
        {
            let config = LogConfig {
                retention_ms: Some(1_000),
                retention_bytes: Some(1024),
                cleanup_policy: policy,
                ..compacted()
            };
            let tp = TopicPartition::new("retention", i as u32).unwrap();
            let mut log = storage.open(&tp, 0, &config).unwrap();
            append_updates(log.as_mut(), 100, 100, "v");
            log.set_high_watermark(log.log_end_offset());
            clock.advance(10_000_000_000);
            let report = log.maintain().unwrap();
            if policy.deletes() {
                assert!(report.segments_deleted > 0);
                assert!(log.log_start_offset() > 0);
            } else {
                assert_eq!(report.segments_deleted, 0);
                assert_eq!(log.log_start_offset(), 0);
                assert_eq!(read_all(log.as_ref()).len(), 100);
            }
        }
    });
}

#[test]
fn a_log_that_does_not_compact_is_left_alone() {
    on_both(|storage, _| {
        let config = LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..compacted()
        };
        let mut log = storage.open(&tp(), 0, &config).unwrap();
        let all = append_updates(log.as_mut(), 60, 2, "v");
        log.roll().unwrap();
        log.set_high_watermark(log.log_end_offset());
        assert_eq!(log.compact().unwrap(), Default::default());
        assert_eq!(read_all(log.as_ref()), all);
    });
}

#[test]
fn a_compacted_file_log_reads_the_same_after_reopen_and_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let storage = FileStorage::with_clock(dir.path(), Arc::new(clock)).unwrap();
    let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
    append_updates(log.as_mut(), 200, 7, "v");
    log.append(batch(&[("key-3", None)], T0), 3).unwrap();
    log.roll().unwrap();
    log.set_high_watermark(log.log_end_offset());
    assert!(log.compact().unwrap().segments_cleaned > 0);
    let expected = read_all(log.as_ref());
    let end = log.log_end_offset();
    log.close().unwrap();

    let log = storage.open(&tp(), 0, &compacted()).unwrap();
    assert_eq!(read_all(log.as_ref()), expected);
    assert_eq!(log.log_end_offset(), end);
    drop(log); // a crash: recovery validates the cleaned segments again
    let mut log = storage.open(&tp(), 0, &compacted()).unwrap();
    assert_eq!(read_all(log.as_ref()), expected);
    assert_eq!(log.high_watermark(), end);
    // A clean after reopening has nothing left to remove.
    assert_eq!(log.compact().unwrap().records_removed, 0);
    assert_eq!(read_all(log.as_ref()), expected);
}

fn segment_logs(dir: &Path) -> Vec<PathBuf> {
    let mut logs: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    logs
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let path = e.unwrap().path();
        if path.file_name().unwrap() != "lock" {
            fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// What the cleaner leaves behind when it crashes: a partial `.log.cleaned`
/// is thrown away, a complete `.log.swap` is swapped in; either way the log
/// serves the data of one side, with rebuilt indexes.
#[test]
fn an_interrupted_clean_is_rolled_back_or_finished_at_open() {
    let root = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let original =
        FileStorage::with_clock(root.path().join("original"), Arc::new(clock.clone())).unwrap();
    let mut log = original.open(&tp(), 0, &compacted()).unwrap();
    append_updates(log.as_mut(), 120, 4, "v");
    log.roll().unwrap();
    log.set_high_watermark(log.log_end_offset());
    log.close().unwrap();
    let original_dir = original.partition_dir(&tp(), 0);

    // The same log compacted, to take cleaned segment files from.
    let cleaned =
        FileStorage::with_clock(root.path().join("cleaned"), Arc::new(clock.clone())).unwrap();
    let cleaned_dir = cleaned.partition_dir(&tp(), 0);
    copy_dir(&original_dir, &cleaned_dir);
    let mut log = cleaned.open(&tp(), 0, &compacted()).unwrap();
    assert!(log.compact().unwrap().segments_cleaned >= 3);
    let compacted_reads = read_all(log.as_ref());
    log.close().unwrap();
    let log = original.open(&tp(), 0, &compacted()).unwrap();
    let uncompacted_reads = read_all(log.as_ref());
    log.close().unwrap();

    let logs = segment_logs(&cleaned_dir);
    let name = |i: usize| logs[i].file_name().unwrap().to_str().unwrap().to_string();
    // Segment 0 crashed after its swap file was complete; segment 1 while
    // its cleaned file was still being written (a torn copy).
    let crashed = FileStorage::with_clock(root.path().join("crashed"), Arc::new(clock)).unwrap();
    let crashed_dir = crashed.partition_dir(&tp(), 0);
    copy_dir(&original_dir, &crashed_dir);
    fs::copy(&logs[0], crashed_dir.join(format!("{}.swap", name(0)))).unwrap();
    let cleaned_1 = fs::read(&logs[1]).unwrap();
    fs::write(
        crashed_dir.join(format!("{}.cleaned", name(1))),
        &cleaned_1[..cleaned_1.len() / 2],
    )
    .unwrap();

    let log = crashed.open(&tp(), 0, &compacted()).unwrap();
    let leftovers: Vec<_> = fs::read_dir(&crashed_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".swap") || n.ends_with(".cleaned"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(
        fs::read(crashed_dir.join(name(0))).unwrap(),
        fs::read(&logs[0]).unwrap()
    );
    assert_eq!(
        fs::read(crashed_dir.join(name(1))).unwrap(),
        fs::read(original_dir.join(name(1))).unwrap()
    );
    // Segment 0 reads as compacted, the rest as before.
    let read = read_all(log.as_ref());
    let seg1_base: u64 = name(1)[..20].parse().unwrap();
    let mut expected: Vec<Entry> = compacted_reads
        .iter()
        .filter(|e| e.0 < seg1_base)
        .cloned()
        .collect();
    expected.extend(
        uncompacted_reads
            .iter()
            .filter(|e| e.0 >= seg1_base)
            .cloned(),
    );
    assert_eq!(read, expected);
    // The swapped segment's indexes were rebuilt for its new contents.
    let index = crashed_dir.join(name(0).replace(".log", ".index"));
    assert!(index.exists());
    for e in &expected {
        let first = log.read(e.0, 1).unwrap().batches().next().unwrap().unwrap();
        assert!(first.base_offset() <= e.0 && e.0 <= first.last_offset());
    }
    let found = log.offset_for_timestamp(T0).unwrap().unwrap();
    assert_eq!(found.offset, expected[0].0);
    // And the log cleans to the same result as the uninterrupted one.
    let mut log = log;
    log.compact().unwrap();
    assert_eq!(read_all(log.as_ref()), compacted_reads);
}

/// A consumer reads a compacted topic from the start across the gaps and the
/// emptied batches compaction left, and gets the latest value of every key
/// without stalling. (The log is compacted while its broker is stopped, as
/// its cleaner would: the broker's cleaner timer is tested on virtual time
/// in the crate's core tests.)
#[test]
fn a_consumer_reads_a_compacted_topic_across_its_gaps() {
    let storage = MemoryStorage::new();
    let cluster = Cluster::builder().storage(storage.clone()).build().unwrap();
    let admin = Admin::new(&cluster).unwrap();
    admin
        .create_topic(NewTopic::new("table", 1).config(compacted()))
        .unwrap();
    let producer: Producer<String, String> = Producer::new(
        &cluster,
        ProducerConfig::builder().linger_ms(0u64).build().unwrap(),
    )
    .unwrap();
    let mut latest = HashMap::new();
    for i in 0..400 {
        let key = format!("key-{}", i % 6);
        let value = format!("value-{i}");
        producer
            .send(ProducerRecord::new("table", value.clone()).with_key(key.clone()))
            .unwrap()
            .wait()
            .unwrap();
        latest.insert(key, value);
    }
    producer.flush();
    let tp = TopicPartition::new("table", 0).unwrap();
    cluster.stop_broker(0).unwrap();
    let mut log = storage.open(&tp, 0, &compacted()).unwrap();
    let report = log.compact().unwrap();
    assert!(report.records_removed > 0, "{report:?}");
    log.close().unwrap();
    cluster.restart_broker(0).unwrap();

    let mut consumer: Consumer<String, String> = Consumer::new(
        &cluster,
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait_ms(50u32)
            // One batch per fetch: some fetches return only emptied batches.
            .max_partition_fetch_bytes(1u32)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer.assign(vec![tp]).unwrap();
    let mut seen: Vec<(u64, String, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.last().is_none_or(|l| l.0 != 399) {
        assert!(Instant::now() < deadline, "stalled after {:?}", seen.last());
        for r in consumer.poll(Duration::from_millis(50)).unwrap() {
            seen.push((r.offset, r.key.unwrap(), r.value.unwrap()));
        }
    }
    assert!(seen.windows(2).all(|w| w[0].0 < w[1].0));
    assert!(seen.len() < 400, "read across the gaps compaction left");
    let mut last: HashMap<String, String> = HashMap::new();
    for (_, k, v) in &seen {
        last.insert(k.clone(), v.clone());
    }
    assert_eq!(last, latest, "the latest value of every key is there");
}
