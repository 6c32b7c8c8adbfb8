//! Model-based property test: random sequences of append, read, truncate,
//! roll, retention, delete-records, high-watermark updates and (clean or
//! unclean) close-and-reopen, run against `MemoryStorage` and `FileStorage`,
//! with every read compared to a plain in-memory model of the log.

use std::sync::Arc;

use ferrolog::record::RecordBatchBuilder;
use ferrolog::storage::{FileStorage, LogConfig, MemoryStorage, PartitionLog, Storage};
use ferrolog::{Error, ManualClock, TopicPartition};
use proptest::prelude::*;

/// (timestamp jitter, key, value) of one record to append.
type RecordSpec = (i64, Option<Vec<u8>>, Option<Vec<u8>>);

#[derive(Debug, Clone)]
enum Op {
    Append {
        records: Vec<RecordSpec>,
        new_epoch: bool,
        /// Also move the high watermark to the new end (the records are
        /// committed, as on a leader whose followers caught up).
        commit: bool,
    },
    Read {
        at: f64,
        max_bytes: usize,
    },
    Truncate {
        at: f64,
    },
    Roll,
    DeleteBefore {
        at: f64,
    },
    AdvanceClockAndMaintain {
        ms: i64,
    },
    SetHighWatermark {
        at: f64,
    },
    OffsetForTimestamp {
        back_ms: i64,
    },
    Reopen {
        clean: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        0i64..50,
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..120)),
    );
    prop_oneof![
        6 => (
            proptest::collection::vec(record, 1..6),
            proptest::bool::weighted(0.1),
            proptest::bool::weighted(0.5),
        )
            .prop_map(|(records, new_epoch, commit)| Op::Append { records, new_epoch, commit }),
        3 => (0.0..1.2f64, 1usize..2000).prop_map(|(at, max_bytes)| Op::Read { at, max_bytes }),
        1 => (0.0..1.1f64).prop_map(|at| Op::Truncate { at }),
        1 => Just(Op::Roll),
        1 => (0.0..1.1f64).prop_map(|at| Op::DeleteBefore { at }),
        1 => (0i64..40_000).prop_map(|ms| Op::AdvanceClockAndMaintain { ms }),
        1 => (0.0..1.1f64).prop_map(|at| Op::SetHighWatermark { at }),
        1 => (0i64..60_000).prop_map(|back_ms| Op::OffsetForTimestamp { back_ms }),
        1 => any::<bool>().prop_map(|clean| Op::Reopen { clean }),
    ]
}

fn config() -> impl Strategy<Value = LogConfig> {
    (
        1024u64..4096,
        16u64..600,
        proptest::option::of(20_000i64..100_000),
        proptest::option::of(2000u64..8000),
    )
        .prop_map(
            |(segment_bytes, index_interval_bytes, retention_ms, retention_bytes)| LogConfig {
                segment_bytes,
                index_interval_bytes,
                retention_ms,
                retention_bytes,
                max_message_bytes: 1024,
                ..LogConfig::default()
            },
        )
}

#[derive(Debug, Clone, PartialEq)]
struct ModelRecord {
    offset: u64,
    timestamp: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
}

/// The log as a list of batches of records: what every read must show.
#[derive(Debug, Default)]
struct Model {
    batches: Vec<Vec<ModelRecord>>,
    start: u64,
    end: u64,
    high_watermark: u64,
}

impl Model {
    fn visible(&self) -> impl Iterator<Item = &ModelRecord> {
        self.batches
            .iter()
            .flatten()
            .filter(move |r| r.offset >= self.start)
    }

    fn offset_at(&self, at: f64) -> u64 {
        let span = (self.end + 2).saturating_sub(self.start) as f64;
        (self.start as f64 + at * span) as u64
    }

    fn truncate_to(&mut self, offset: u64) {
        if offset >= self.end {
            return;
        }
        if offset < self.start {
            self.batches.clear();
            self.start = offset;
            self.end = offset;
            self.high_watermark = offset;
            return;
        }
        self.batches
            .retain(|b| b.last().expect("non-empty").offset < offset);
        let new_end = self
            .batches
            .last()
            .map_or(0, |b| b.last().unwrap().offset + 1);
        if new_end < self.start {
            self.batches.clear();
            self.end = self.start;
            self.high_watermark = self.start;
        } else {
            self.end = new_end;
            self.high_watermark = self.high_watermark.min(new_end);
        }
    }

    /// Drops batches that lie wholly below the start (as segments go).
    fn forget_below_start(&mut self) {
        let start = self.start;
        self.batches
            .retain(|b| b.last().expect("non-empty").offset >= start);
    }
}

fn scan(log: &dyn PartitionLog, from: u64, max_bytes: usize) -> Vec<ModelRecord> {
    let mut out = Vec::new();
    let mut offset = from;
    while offset < log.log_end_offset() {
        let records = log.read(offset, max_bytes).expect("read inside the log");
        assert!(!records.is_empty(), "empty read at {offset} below LEO");
        let mut first = true;
        for batch in records.batches() {
            let batch = batch.expect("whole batches");
            if first {
                assert!(
                    batch.base_offset() <= offset && offset <= batch.last_offset(),
                    "read at {offset} began with batch {}..={}",
                    batch.base_offset(),
                    batch.last_offset()
                );
                first = false;
            }
            for record in batch.records() {
                let r = record.expect("decodable");
                if r.offset >= offset {
                    out.push(ModelRecord {
                        offset: r.offset,
                        timestamp: r.timestamp,
                        key: r.key.map(|b| b.to_vec()),
                        value: r.value.map(|b| b.to_vec()),
                    });
                }
            }
            offset = batch.next_offset();
        }
    }
    out
}

fn check(log: &dyn PartitionLog, model: &Model) {
    assert_eq!(log.log_start_offset(), model.start, "log start");
    assert_eq!(log.log_end_offset(), model.end, "log end");
    let expected: Vec<_> = model.visible().cloned().collect();
    assert_eq!(scan(log, model.start, 700), expected);
    assert_eq!(log.high_watermark(), model.high_watermark, "high watermark");
    assert!(model.high_watermark <= model.end && model.high_watermark >= model.start);
    assert!(matches!(
        log.read(model.end + 1, 100),
        Err(Error::OffsetOutOfRange { .. })
    ));
    if model.start > 0 {
        assert!(matches!(
            log.read(model.start - 1, 100),
            Err(Error::OffsetOutOfRange { .. })
        ));
    }
}

fn run(ops: Vec<Op>, config: LogConfig, storage: &dyn Storage, clock: &ManualClock) {
    let tp = TopicPartition::new("model", 0).unwrap();
    let mut log = Some(storage.open(&tp, 1, &config).unwrap());
    let mut model = Model::default();
    let mut epoch = 0;
    for op in ops {
        let l = log.as_mut().unwrap();
        match op {
            Op::Append {
                records,
                new_epoch,
                commit,
            } => {
                epoch += new_epoch as i32;
                let mut builder = RecordBatchBuilder::new();
                let base = model.end;
                let mut batch = Vec::new();
                for (i, (jitter, key, value)) in records.into_iter().enumerate() {
                    let timestamp = clock_now(clock) - jitter;
                    builder.append(timestamp, key.as_deref(), value.as_deref(), &[]);
                    batch.push(ModelRecord {
                        offset: base + i as u64,
                        timestamp,
                        key,
                        value,
                    });
                }
                let built = builder.build();
                let size = built.size();
                match l.append(built, epoch) {
                    Ok(info) => {
                        assert!(size <= config.max_message_bytes);
                        assert_eq!(info.base_offset, base);
                        model.end = base + batch.len() as u64;
                        assert_eq!(info.last_offset, model.end - 1);
                        model.batches.push(batch);
                        if commit {
                            l.set_high_watermark(model.end);
                            model.high_watermark = model.end;
                        }
                    }
                    Err(Error::RecordTooLarge { .. }) => {
                        assert!(size > config.max_message_bytes)
                    }
                    Err(e) => panic!("append failed: {e}"),
                }
            }
            Op::Read { at, max_bytes } => {
                let offset = model.offset_at(at);
                match l.read(offset, max_bytes) {
                    Ok(records) => {
                        assert!(offset >= model.start && offset <= model.end);
                        let first = records.batches().next().map(|b| b.unwrap());
                        if offset == model.end {
                            assert!(first.is_none());
                        } else {
                            let first = first.expect("a batch below LEO");
                            assert!(first.base_offset() <= offset && offset <= first.last_offset());
                            assert!(
                                records.size() <= max_bytes || records.batches().count() == 1,
                                "more than one batch beyond max_bytes"
                            );
                        }
                    }
                    Err(Error::OffsetOutOfRange { .. }) => {
                        assert!(offset < model.start || offset > model.end)
                    }
                    Err(e) => panic!("read failed: {e}"),
                }
            }
            Op::Truncate { at } => {
                let offset = model.offset_at(at);
                let new_end = l.truncate_to(offset).unwrap();
                model.truncate_to(offset);
                assert_eq!(new_end, model.end);
            }
            Op::Roll => l.roll().unwrap(),
            Op::DeleteBefore { at } => {
                let offset = model.offset_at(at);
                match l.delete_records_before(offset) {
                    Ok(start) => {
                        assert!(offset <= model.high_watermark);
                        model.start = model.start.max(offset);
                        assert_eq!(start, model.start);
                    }
                    Err(Error::OffsetOutOfRange { .. }) => {
                        assert!(
                            offset > model.high_watermark,
                            "only above the HW is refused"
                        )
                    }
                    Err(e) => panic!("delete_records_before failed: {e}"),
                }
            }
            Op::AdvanceClockAndMaintain { ms } => {
                clock.advance(ms);
                let old_start = model.start;
                l.maintain().unwrap();
                let new_start = l.log_start_offset();
                assert!(new_start >= old_start && new_start <= model.end);
                assert!(new_start <= model.high_watermark, "retention passed the HW");
                if let Some(retention) = config
                    .retention_ms
                    .filter(|_| config.retention_bytes.is_none())
                {
                    let cutoff = clock_now(clock) - retention;
                    for r in model.visible().filter(|r| r.offset < new_start) {
                        assert!(r.timestamp < cutoff, "retention deleted a live record");
                    }
                }
                model.start = new_start;
            }
            Op::SetHighWatermark { at } => {
                let offset = model.offset_at(at);
                l.set_high_watermark(offset);
                model.high_watermark = offset.clamp(model.start, model.end);
            }
            Op::OffsetForTimestamp { back_ms } => {
                let ts = clock_now(clock) - back_ms;
                let expected = model.visible().find(|r| r.timestamp >= ts);
                let got = l.offset_for_timestamp(ts).unwrap();
                assert_eq!(
                    got.map(|t| (t.offset, t.timestamp)),
                    expected.map(|r| (r.offset, r.timestamp))
                );
            }
            Op::Reopen { clean } => {
                let old = log.take().unwrap();
                let epochs: Vec<_> = (0..=epoch + 1)
                    .map(|e| old.end_offset_for_epoch(e))
                    .collect();
                let hw = old.high_watermark();
                if clean {
                    old.close().unwrap();
                } else {
                    drop(old);
                }
                let reopened = storage.open(&tp, 1, &config).unwrap();
                let now: Vec<_> = (0..=epoch + 1)
                    .map(|e| reopened.end_offset_for_epoch(e))
                    .collect();
                assert_eq!(now, epochs, "leader epochs after reopen");
                if clean {
                    assert_eq!(reopened.high_watermark(), hw);
                } else {
                    // Unclean: the last checkpointed value, within the log.
                    model.high_watermark = reopened.high_watermark();
                }
                log = Some(reopened);
            }
        }
        model.forget_below_start();
        check(log.as_deref().unwrap(), &model);
    }
}

fn clock_now(clock: &ManualClock) -> i64 {
    use ferrolog::Clock;
    clock.now_ms()
}

const START_MS: i64 = 1_700_000_000_000;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

proptest! {
    // PROPTEST_CASES=5000 for a longer hunt.
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn memory_storage_matches_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        config in config(),
    ) {
        let clock = ManualClock::new(START_MS);
        let storage = MemoryStorage::with_clock(Arc::new(clock.clone()));
        run(ops, config, &storage, &clock);
    }

    #[test]
    fn file_storage_matches_the_model(
        ops in proptest::collection::vec(op(), 1..120),
        config in config(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(START_MS);
        let storage = FileStorage::with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
        run(ops, config, &storage, &clock);
    }
}
