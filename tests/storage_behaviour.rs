//! Named behaviours of both built-in storages, each proved on `MemoryStorage`
//! and `FileStorage` through the public API.

use ferrolog::record::{RecordBatch, RecordBatchBuilder};
use ferrolog::storage::{LogConfig, PartitionLog};
use ferrolog::{Error, TopicPartition};

mod common;

use common::{T0, on_both};

fn tp() -> TopicPartition {
    TopicPartition::new("behaviour", 0).unwrap()
}

/// A batch of `n` records of `value_len` bytes, all at `timestamp`.
fn batch(n: usize, value_len: usize, timestamp: i64) -> RecordBatch {
    let mut b = RecordBatchBuilder::new();
    for i in 0..n {
        b.append(
            timestamp,
            Some(&[i as u8]),
            Some(&vec![b'v'; value_len]),
            &[],
        );
    }
    b.build()
}

/// Number of records from `offset` to the end, reading segment by segment.
fn count_from(log: &dyn PartitionLog, mut offset: u64) -> u64 {
    let mut n = 0;
    while offset < log.log_end_offset() {
        for batch in log.read(offset, 1 << 20).unwrap().batches() {
            let batch = batch.unwrap();
            n += batch
                .records()
                .filter(|r| r.as_ref().unwrap().offset >= offset)
                .count() as u64;
            offset = batch.next_offset();
        }
    }
    n
}

fn small_segments() -> LogConfig {
    LogConfig {
        segment_bytes: 2048,
        index_interval_bytes: 256,
        max_message_bytes: 1024,
        retention_ms: None,
        ..LogConfig::default()
    }
}

#[test]
fn appends_get_dense_offsets_and_reads_return_whole_batches() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for i in 0..20u64 {
            let info = log.append(batch(3, 50, T0), 0).unwrap();
            assert_eq!((info.base_offset, info.last_offset), (i * 3, i * 3 + 2));
        }
        assert_eq!(log.log_end_offset(), 60);
        assert!(log.segment_count() > 1, "small segments roll");
        // A read in the middle of a batch starts with that whole batch.
        let first = log.read(31, 1).unwrap().batches().next().unwrap().unwrap();
        assert_eq!(first.base_offset(), 30);
        // max_bytes is honoured after the first batch.
        let records = log.read(0, 600).unwrap();
        assert!(records.size() <= 600);
        assert_eq!(records.batches().count(), 600 / first.size());
        // At LEO: empty; past it or below the start: OffsetOutOfRange.
        assert!(log.read(60, 100).unwrap().is_empty());
        assert!(matches!(
            log.read(61, 100),
            Err(Error::OffsetOutOfRange {
                offset: 61,
                log_start_offset: 0,
                log_end_offset: 60
            })
        ));
    });
}

#[test]
fn oversized_and_corrupt_batches_are_refused_and_nothing_is_appended() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        log.append(batch(1, 10, T0), 0).unwrap();
        let big = batch(1, 2000, T0);
        assert!(matches!(
            log.append(big, 0),
            Err(Error::RecordTooLarge { max: 1024, .. })
        ));
        let mut bytes = batch(2, 10, T0).into_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let corrupt = RecordBatch::from_bytes(bytes.into()).unwrap();
        assert!(matches!(
            log.append(corrupt, 0),
            Err(Error::CorruptRecord { .. })
        ));
        assert_eq!(log.log_end_offset(), 1);
        assert_eq!(log.read(0, 1 << 20).unwrap().records().count(), 1);
    });
}

#[test]
fn retention_by_time_deletes_whole_expired_segments_and_moves_the_start() {
    on_both(|storage, clock| {
        let config = LogConfig {
            retention_ms: Some(60_000),
            ..small_segments()
        };
        let mut log = storage.open(&tp(), 0, &config).unwrap();
        for _ in 0..10 {
            log.append(batch(2, 300, T0), 0).unwrap(); // old records
        }
        log.roll().unwrap();
        for _ in 0..3 {
            log.append(batch(2, 300, T0 + 120_000), 0).unwrap(); // recent ones
        }
        let old_segments = log.segment_count() - 1;
        clock.set(T0 + 100_000); // the first 20 records are now past retention
        // Nothing is committed yet: retention never deletes above the high
        // watermark, where followers may still need the records.
        assert_eq!(log.maintain().unwrap().segments_deleted, 0);
        log.set_high_watermark(26);
        let report = log.maintain().unwrap();
        assert_eq!(report.segments_deleted, old_segments);
        assert_eq!(log.log_start_offset(), 20);
        assert_eq!(log.log_end_offset(), 26);
        assert!(matches!(
            log.read(19, 100),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(count_from(log.as_ref(), 20), 6);
        // Nothing else is old enough yet.
        assert_eq!(log.maintain().unwrap().segments_deleted, 0);
    });
}

#[test]
fn retention_by_size_keeps_the_newest_segments_within_the_limit() {
    on_both(|storage, _| {
        let config = LogConfig {
            retention_bytes: Some(5000),
            ..small_segments()
        };
        let mut log = storage.open(&tp(), 0, &config).unwrap();
        for _ in 0..40 {
            log.append(batch(1, 300, T0), 0).unwrap();
        }
        // Only committed segments go: with the high watermark at 10, the log
        // start cannot pass 10 however far over the limit the log is.
        log.set_high_watermark(10);
        let report = log.maintain().unwrap();
        assert!(report.segments_deleted > 0);
        assert!(log.log_start_offset() <= 10);
        log.set_high_watermark(40);
        let before = log.size_bytes();
        let report = log.maintain().unwrap();
        assert!(report.segments_deleted > 0);
        assert_eq!(log.size_bytes(), before - report.bytes_deleted);
        assert!(log.size_bytes() <= 5000 + 2048, "at most one segment over");
        assert!(log.log_start_offset() > 0);
        assert_eq!(log.log_end_offset(), 40);
        let start = log.log_start_offset();
        assert_eq!(count_from(log.as_ref(), start), 40 - start);
    });
}

#[test]
fn segment_ms_rolls_the_active_segment_by_the_clock() {
    on_both(|storage, clock| {
        let config = LogConfig {
            segment_ms: 1000,
            ..small_segments()
        };
        let mut log = storage.open(&tp(), 0, &config).unwrap();
        log.append(batch(1, 10, T0), 0).unwrap();
        log.append(batch(1, 10, T0), 0).unwrap();
        assert_eq!(log.segment_count(), 1);
        clock.advance(1000);
        log.append(batch(1, 10, T0), 0).unwrap();
        assert_eq!(log.segment_count(), 2, "append after segment_ms rolls");
        clock.advance(1000);
        log.maintain().unwrap();
        assert_eq!(
            log.segment_count(),
            3,
            "maintain rolls an old active segment"
        );
    });
}

#[test]
fn flush_policy_moves_the_recovery_point() {
    on_both(|storage, clock| {
        let by_count = LogConfig {
            flush_messages: Some(5),
            ..small_segments()
        };
        let mut log = storage.open(&tp(), 0, &by_count).unwrap();
        log.append(batch(3, 10, T0), 0).unwrap();
        assert_eq!(log.recovery_point(), 0);
        log.append(batch(3, 10, T0), 0).unwrap();
        assert_eq!(log.recovery_point(), 6, "flushed after 5 records");
        log.close().unwrap();

        let by_time = LogConfig {
            flush_ms: Some(500),
            ..small_segments()
        };
        let other = TopicPartition::new("behaviour", 1).unwrap();
        let mut log = storage.open(&other, 0, &by_time).unwrap();
        log.append(batch(1, 10, T0), 0).unwrap();
        assert_eq!(log.recovery_point(), 0);
        clock.advance(500);
        assert!(log.maintain().unwrap().flushed);
        assert_eq!(log.recovery_point(), 1);
    });
}

#[test]
fn offset_for_timestamp_finds_the_first_record_at_or_after() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for i in 0..30 {
            log.append(batch(2, 100, T0 + i * 1000), 0).unwrap();
        }
        let hit = log.offset_for_timestamp(T0 + 12_500).unwrap().unwrap();
        assert_eq!((hit.offset, hit.timestamp), (26, T0 + 13_000));
        let exact = log.offset_for_timestamp(T0 + 13_000).unwrap().unwrap();
        assert_eq!(exact.offset, 26);
        assert_eq!(log.offset_for_timestamp(0).unwrap().unwrap().offset, 0);
        assert!(log.offset_for_timestamp(T0 + 30_000).unwrap().is_none());
    });
}

#[test]
fn truncation_removes_whole_batches_and_forgets_later_epochs() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for epoch in 0..4 {
            for _ in 0..5 {
                log.append(batch(2, 100, T0), epoch).unwrap();
            }
        }
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 20)));
        log.set_high_watermark(35);
        // 23 is inside the batch 22..=23: the whole batch goes.
        assert_eq!(log.truncate_to(23).unwrap(), 22);
        assert_eq!(log.log_end_offset(), 22);
        assert_eq!(log.high_watermark(), 22);
        assert_eq!(log.latest_epoch(), Some(2));
        assert_eq!(log.end_offset_for_epoch(2), Some((2, 22)));
        assert_eq!(log.end_offset_for_epoch(7), Some((2, 22)));
        // New appends continue at the new end, in a new epoch.
        assert_eq!(log.append(batch(1, 10, T0), 5).unwrap().base_offset, 22);
        assert_eq!(log.end_offset_for_epoch(3), Some((2, 22)));
        assert_eq!(log.end_offset_for_epoch(5), Some((5, 23)));
        // Truncating to the start empties the log but keeps its position.
        log.truncate_fully_and_start_at(100).unwrap();
        assert_eq!((log.log_start_offset(), log.log_end_offset()), (100, 100));
        assert_eq!(log.append(batch(1, 10, T0), 6).unwrap().base_offset, 100);
    });
}

#[test]
fn a_stale_leader_epoch_is_fenced_and_appends_nothing() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        log.append(batch(1, 10, T0), 4).unwrap();
        assert!(matches!(
            log.append(batch(1, 10, T0), 3),
            Err(Error::FencedLeaderEpoch {
                epoch: 3,
                latest: 4
            })
        ));
        assert!(matches!(
            log.append(batch(1, 10, T0), -1),
            Err(Error::FencedLeaderEpoch { .. })
        ));
        assert_eq!(log.log_end_offset(), 1);
        log.append(batch(1, 10, T0), 4).unwrap();
        assert_eq!(log.log_end_offset(), 2);
    });
}

#[test]
fn replicated_appends_keep_the_leaders_offsets_and_epochs() {
    on_both(|storage, _| {
        let leader_tp = TopicPartition::new("leader", 0).unwrap();
        let mut leader = storage.open(&leader_tp, 0, &small_segments()).unwrap();
        let mut follower = storage.open(&tp(), 1, &small_segments()).unwrap();
        for epoch in [3, 3, 4] {
            leader.append(batch(2, 20, T0), epoch).unwrap();
        }
        for b in leader.read(0, 1 << 20).unwrap().batches() {
            follower.append_replicated(b.unwrap()).unwrap();
        }
        assert_eq!(follower.log_end_offset(), 6);
        assert_eq!(follower.end_offset_for_epoch(3), Some((3, 4)));
        let stale = leader
            .read(2, 1)
            .unwrap()
            .batches()
            .next()
            .unwrap()
            .unwrap();
        assert!(matches!(
            follower.append_replicated(stale),
            Err(Error::UnexpectedAppendOffset {
                expected: 6,
                got: 2
            })
        ));
    });
}

#[test]
fn delete_records_before_moves_the_start_inside_a_segment() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for _ in 0..10 {
            log.append(batch(2, 300, T0), 0).unwrap();
        }
        assert!(
            matches!(
                log.delete_records_before(7),
                Err(Error::OffsetOutOfRange { .. })
            ),
            "only committed records can be deleted"
        );
        log.set_high_watermark(20);
        assert_eq!(log.delete_records_before(7).unwrap(), 7);
        assert!(matches!(
            log.read(6, 10),
            Err(Error::OffsetOutOfRange { .. })
        ));
        let first = log.read(7, 1).unwrap().batches().next().unwrap().unwrap();
        assert_eq!(
            first.base_offset(),
            6,
            "the batch holding the start is served whole"
        );
        assert_eq!(
            log.delete_records_before(3).unwrap(),
            7,
            "the start never moves back"
        );
        assert!(matches!(
            log.delete_records_before(21),
            Err(Error::OffsetOutOfRange { .. })
        ));
        assert_eq!(log.delete_records_before(20).unwrap(), 20);
        log.append(batch(1, 10, T0), 0).unwrap();
        assert_eq!(log.read(20, 100).unwrap().records().count(), 1);
    });
}

#[test]
fn a_log_is_opened_once_and_removed_only_when_closed() {
    on_both(|storage, _| {
        let log = storage.open(&tp(), 0, &small_segments()).unwrap();
        assert!(matches!(
            storage.open(&tp(), 0, &small_segments()),
            Err(Error::LogInUse { .. })
        ));
        assert!(matches!(
            storage.remove(&tp(), 0),
            Err(Error::LogInUse { .. })
        ));
        // Another replica of the same partition is a different log.
        storage
            .open(&tp(), 1, &small_segments())
            .unwrap()
            .close()
            .unwrap();
        assert_eq!(storage.partitions(0).unwrap(), vec![tp()]);
        log.close().unwrap();
        storage.remove(&tp(), 0).unwrap();
        assert!(storage.partitions(0).unwrap().is_empty());
        let reopened = storage.open(&tp(), 0, &small_segments()).unwrap();
        assert_eq!(reopened.log_end_offset(), 0, "removed means gone");
    });
}

#[test]
fn invalid_config_is_refused_at_open_naming_the_field() {
    on_both(|storage, _| {
        for (config, field) in [
            (
                LogConfig {
                    segment_bytes: 10,
                    ..LogConfig::default()
                },
                "segment_bytes",
            ),
            (
                LogConfig {
                    index_interval_bytes: 0,
                    ..LogConfig::default()
                },
                "index_interval_bytes",
            ),
            (
                LogConfig {
                    retention_ms: Some(-5),
                    ..LogConfig::default()
                },
                "retention_ms",
            ),
            (
                LogConfig {
                    flush_messages: Some(0),
                    ..LogConfig::default()
                },
                "flush_messages",
            ),
            (
                LogConfig {
                    max_message_bytes: 10,
                    ..LogConfig::default()
                },
                "max_message_bytes",
            ),
        ] {
            match storage.open(&tp(), 0, &config) {
                Err(Error::InvalidConfig { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: expected InvalidConfig, got {other:?}"),
            }
        }
    });
}

#[test]
fn reads_hand_out_the_stored_bytes_without_copying() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for _ in 0..12 {
            log.append(batch(2, 300, T0), 0).unwrap();
        }
        // Offset 0 is in a sealed segment (mmap for files, the batch itself in
        // memory): two reads see the very same memory.
        assert!(log.segment_count() > 1);
        let a = log.read(0, 1000).unwrap();
        let b = log.read(0, 1000).unwrap();
        assert_eq!(a.chunks()[0].as_ptr(), b.chunks()[0].as_ptr());
        // And a record's value points into that memory too.
        let value = a.records().next().unwrap().unwrap().value.unwrap();
        let chunk = a.chunks()[0].as_ptr_range();
        assert!(chunk.contains(&value.as_ptr()));
    });
}

#[test]
fn a_cleanly_closed_log_reopens_with_everything() {
    on_both(|storage, _| {
        let mut log = storage.open(&tp(), 0, &small_segments()).unwrap();
        for epoch in 0..3 {
            for _ in 0..7 {
                log.append(batch(3, 120, T0), epoch).unwrap();
            }
        }
        log.set_high_watermark(50);
        log.delete_records_before(4).unwrap();
        let segments = log.segment_count();
        log.close().unwrap();
        let log = storage.open(&tp(), 0, &small_segments()).unwrap();
        assert_eq!(log.log_start_offset(), 4);
        assert_eq!(log.log_end_offset(), 63);
        assert_eq!(log.high_watermark(), 50);
        assert_eq!(log.recovery_point(), 63);
        assert_eq!(log.segment_count(), segments);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 42)));
        assert_eq!(count_from(log.as_ref(), 4), 63 - 4);
    });
}
