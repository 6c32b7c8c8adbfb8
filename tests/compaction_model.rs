//! Model-based property test of log compaction on both storages: random
//! appends of keyed records and tombstones over a few keys, rolls, high
//! watermark moves, compactions, clock advances, reopens and crashes, checked
//! after every step against a model that remembers every record appended.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use ferrolog::record::RecordBatchBuilder;
use ferrolog::storage::{
    CleanupPolicy, FileStorage, LogConfig, MemoryStorage, PartitionLog, Storage,
};
use ferrolog::{Clock, ManualClock, TopicPartition};
use proptest::prelude::*;

const T0: i64 = 1_700_000_000_000;
const DELETE_RETENTION_MS: i64 = 1_000;

type Key = Vec<u8>;
type Value = Option<Vec<u8>>;
/// (offset, key, value) of a record read back.
type Read = (u64, Key, Value);

#[derive(Debug, Clone)]
enum Op {
    /// One batch of (key, value) records; a `None` value is a tombstone.
    Append(Vec<(u8, Option<(u8, usize)>)>),
    Roll,
    /// The high watermark moves to the log end.
    Commit,
    Compact,
    /// Roll, commit and compact: afterwards every segment is clean.
    Clean,
    Advance(i64),
    /// Close and open again.
    Reopen,
    /// Drop without closing (a crash of the process) and open again.
    Crash,
}

fn op() -> impl Strategy<Value = Op> {
    let record = (
        0u8..4,
        proptest::option::weighted(0.8, (any::<u8>(), 1usize..60)),
    );
    prop_oneof![
        8 => proptest::collection::vec(record, 1..5).prop_map(Op::Append),
        1 => Just(Op::Roll),
        2 => Just(Op::Commit),
        2 => Just(Op::Compact),
        2 => Just(Op::Clean),
        2 => (0i64..1_500).prop_map(Op::Advance),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash),
    ]
}

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 1024,
        index_interval_bytes: 128,
        retention_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        delete_retention_ms: DELETE_RETENTION_MS,
        ..LogConfig::default()
    }
}

fn tp() -> TopicPartition {
    TopicPartition::new("model", 0).unwrap()
}

/// Every record appended, by offset, with when it was appended.
#[derive(Debug, Default)]
struct Model {
    records: BTreeMap<u64, (Key, Value, i64)>,
    end: u64,
    /// Delete horizons seen on tombstones, by offset: set once, never changed.
    horizons: HashMap<u64, i64>,
}

impl Model {
    /// The latest offset of every key.
    fn latest(&self) -> HashMap<&Key, u64> {
        let mut latest = HashMap::new();
        for (offset, (key, _, _)) in &self.records {
            latest.insert(key, *offset);
        }
        latest
    }
}

/// Everything a read from the log start returns: (offset, key, value) and,
/// for tombstones in batches the cleaner marked, their delete horizon.
fn read_all(log: &dyn PartitionLog) -> (Vec<Read>, Vec<(u64, i64)>) {
    let mut out: Vec<Read> = Vec::new();
    let mut horizons = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let records = log.read(offset, 200).unwrap();
        assert!(!records.is_empty());
        for batch in records.batches() {
            let batch = batch.unwrap();
            assert!(batch.next_offset() > offset, "reads move forward");
            for r in batch.records() {
                let r = r.unwrap();
                if r.offset < offset {
                    continue;
                }
                assert!(r.offset <= batch.last_offset());
                if let Some(last) = out.last() {
                    assert!(r.offset > last.0, "offsets strictly increase");
                }
                if let (None, Some(h)) = (&r.value, batch.delete_horizon_ms()) {
                    horizons.push((r.offset, h));
                }
                out.push((
                    r.offset,
                    r.key.expect("a compacted log holds keys only").to_vec(),
                    r.value.map(|v| v.to_vec()),
                ));
            }
            offset = batch.next_offset();
        }
    }
    (out, horizons)
}

/// The checks that hold after every step.
fn check(log: &dyn PartitionLog, model: &mut Model, now: i64) -> Vec<Read> {
    assert_eq!(log.log_end_offset(), model.end);
    assert_eq!(log.log_start_offset(), 0);
    let (read, horizons) = read_all(log);
    // Every record read is the one appended at its offset.
    for (offset, key, value) in &read {
        let (k, v, _) = &model.records[offset];
        assert_eq!((k, v), (key, value), "record at offset {offset}");
    }
    // A tombstone's horizon is set once, delete_retention_ms after a moment
    // between its append and now.
    for (offset, horizon) in horizons {
        let appended = model.records[&offset].2;
        let known = *model.horizons.entry(offset).or_insert(horizon);
        assert_eq!(known, horizon, "the horizon of {offset} never changes");
        assert!(horizon >= appended + DELETE_RETENTION_MS && horizon <= now + DELETE_RETENTION_MS);
    }
    // The latest record of every key is there, unless it is a tombstone
    // whose horizon has passed: then the key is gone entirely.
    let read_offsets: HashMap<u64, &Key> = read.iter().map(|(o, k, _)| (*o, k)).collect();
    for (key, latest) in model.latest() {
        if read_offsets.contains_key(&latest) {
            continue;
        }
        let (_, value, _) = &model.records[&latest];
        assert!(
            value.is_none(),
            "the latest value of {key:?} (offset {latest}) is gone"
        );
        let horizon = model.horizons.get(&latest);
        assert!(
            horizon.is_some_and(|&h| now >= h),
            "tombstone {latest} removed before its horizon {horizon:?} (now {now})"
        );
        assert!(
            read.iter().all(|(_, k, _)| k != key),
            "a removed tombstone's key has no older value left"
        );
    }
    read
}

fn run(storage: &dyn Storage, clock: &ManualClock, ops: Vec<Op>) {
    let mut model = Model::default();
    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    for op in ops {
        let now = clock.now_ms();
        // Tombstones whose horizon has passed before a full clean.
        let expired: Vec<u64> = model
            .horizons
            .iter()
            .filter(|&(_, &h)| now >= h)
            .map(|(&o, _)| o)
            .collect();
        match &op {
            Op::Append(records) => {
                let mut b = RecordBatchBuilder::new();
                for (key, value) in records {
                    let value = value.map(|(byte, len)| vec![byte; len]);
                    b.append(now, Some(&[b'k', *key]), value.as_deref(), &[]);
                }
                let info = log.append(b.build(), 0).unwrap();
                assert_eq!(info.base_offset, model.end);
                for (i, (key, value)) in records.iter().enumerate() {
                    let value = value.map(|(byte, len)| vec![byte; len]);
                    model
                        .records
                        .insert(model.end + i as u64, (vec![b'k', *key], value, now));
                }
                model.end += records.len() as u64;
            }
            Op::Roll => log.roll().unwrap(),
            Op::Commit => log.set_high_watermark(model.end),
            Op::Compact => {
                let hw = log.high_watermark();
                log.compact().unwrap();
                assert_eq!(
                    log.high_watermark(),
                    hw,
                    "compaction keeps the high watermark"
                );
            }
            Op::Clean => {
                log.roll().unwrap();
                log.set_high_watermark(model.end);
                log.compact().unwrap();
            }
            Op::Advance(ms) => clock.advance(*ms),
            Op::Reopen => {
                log.close().unwrap();
                log = storage.open(&tp(), 0, &config()).unwrap();
            }
            Op::Crash => {
                drop(log);
                log = storage.open(&tp(), 0, &config()).unwrap();
            }
        }
        let now = clock.now_ms();
        let read = check(log.as_ref(), &mut model, now);
        if matches!(op, Op::Clean) {
            // Everything is in clean segments now: exactly the latest record
            // of each key, less tombstones whose horizon had passed.
            let latest = model.latest();
            let mut expected: Vec<u64> = latest
                .values()
                .copied()
                .filter(|o| !expired.contains(o))
                .collect();
            expected.sort_unstable();
            let got: Vec<u64> = read.iter().map(|r| r.0).collect();
            assert_eq!(got, expected, "after a full clean");
            // Every tombstone left now has a horizon.
            for (offset, _, value) in &read {
                if value.is_none() {
                    assert!(model.horizons.contains_key(offset), "tombstone {offset}");
                }
            }
        }
    }
    log.close().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn compacted_memory_log_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let clock = ManualClock::new(T0);
        let storage = MemoryStorage::with_clock(Arc::new(clock.clone()));
        run(&storage, &clock, ops);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn compacted_file_log_matches_the_model(ops in proptest::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let clock = ManualClock::new(T0);
        let storage = FileStorage::with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
        run(&storage, &clock, ops);
    }
}
