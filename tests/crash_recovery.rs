//! Crash recovery of `FileStorage`: torn writes, flipped bytes and damaged
//! indexes in the tail of the active segment are cut off at exactly the first
//! bad batch; damage below the recovery point is refused with an error naming
//! the file and offset; missing indexes and checkpoints are rebuilt.

use std::fs::{self, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use ferrolog::record::{RecordBatch, RecordBatchBuilder};
use ferrolog::storage::{FileStorage, LogConfig, PartitionLog, Storage};
use ferrolog::{Error, ManualClock, TopicPartition};
use proptest::prelude::*;

type Rec = (Option<Vec<u8>>, Vec<u8>);

fn config() -> LogConfig {
    LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 100,
        retention_ms: None,
        max_message_bytes: 2048,
        ..LogConfig::default()
    }
}

fn tp() -> TopicPartition {
    TopicPartition::new("crash", 0).unwrap()
}

fn batch(records: &[Rec]) -> RecordBatch {
    let mut b = RecordBatchBuilder::new();
    for (i, (k, v)) in records.iter().enumerate() {
        b.append(1_700_000_000_000 + i as i64, k.as_deref(), Some(v), &[]);
    }
    b.build()
}

fn records_strategy() -> impl Strategy<Value = Vec<Rec>> {
    proptest::collection::vec(
        (
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
            proptest::collection::vec(any::<u8>(), 0..150),
        ),
        1..5,
    )
}

/// Every record in the log, in order, as (offset, key, value).
fn read_all(log: &dyn PartitionLog) -> Vec<(u64, Rec)> {
    let mut out = Vec::new();
    let mut offset = log.log_start_offset();
    while offset < log.log_end_offset() {
        let records = log.read(offset, 1000).unwrap();
        for batch in records.batches() {
            let batch = batch.unwrap();
            for r in batch.records() {
                let r = r.unwrap();
                out.push((
                    r.offset,
                    (r.key.map(|k| k.to_vec()), r.value.unwrap().to_vec()),
                ));
            }
            offset = batch.next_offset();
        }
    }
    out
}

/// (position, size) of each batch in a segment file, walked by length fields.
fn batch_frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut frames = Vec::new();
    let mut pos = 0;
    while pos + 12 <= bytes.len() {
        let len = i32::from_be_bytes(bytes[pos + 8..pos + 12].try_into().unwrap()) as usize + 12;
        frames.push((pos, len));
        pos += len;
    }
    frames
}

fn segment_files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    files
}

#[derive(Debug, Clone)]
enum Damage {
    /// The file ends at this fraction of its length (a torn write).
    Cut(f64),
    /// One byte at this fraction of the file is XORed with a non-zero mask.
    Flip(f64, u8),
    /// Garbage after the last batch (a partial write of the next one).
    Garbage(Vec<u8>),
}

#[derive(Debug, Clone)]
enum IndexDamage {
    None,
    Delete,
    Cut(f64),
    Flip(f64, u8),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (0.0..1.0f64).prop_map(Damage::Cut),
        (0.0..1.0f64, 1u8..=255).prop_map(|(at, mask)| Damage::Flip(at, mask)),
        proptest::collection::vec(any::<u8>(), 1..80).prop_map(Damage::Garbage),
    ]
}

fn index_damage() -> impl Strategy<Value = IndexDamage> {
    prop_oneof![
        Just(IndexDamage::None),
        Just(IndexDamage::Delete),
        (0.0..1.0f64).prop_map(IndexDamage::Cut),
        (0.0..1.0f64, 1u8..=255).prop_map(|(at, mask)| IndexDamage::Flip(at, mask)),
    ]
}

fn damage_file(path: &Path, damage: &IndexDamage) {
    let mut bytes = match fs::read(path) {
        Ok(b) => b,
        Err(_) => return,
    };
    match damage {
        IndexDamage::None => {}
        IndexDamage::Delete => fs::remove_file(path).unwrap(),
        IndexDamage::Cut(at) => {
            let len = (bytes.len() as f64 * at) as u64;
            OpenOptions::new()
                .write(true)
                .open(path)
                .unwrap()
                .set_len(len)
                .unwrap();
        }
        IndexDamage::Flip(at, mask) => {
            if !bytes.is_empty() {
                let i = ((bytes.len() as f64 * at) as usize).min(bytes.len() - 1);
                bytes[i] ^= mask;
                fs::write(path, bytes).unwrap();
            }
        }
    }
}

/// Runs one crash: `before` batches closed cleanly, `after` batches appended
/// and the process "killed" (log dropped without close), then the active
/// segment and its indexes damaged, then reopened.
fn crash_case(before: Vec<Vec<Rec>>, after: Vec<Vec<Rec>>, damage: Damage, index: IndexDamage) {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let storage = FileStorage::with_clock(dir.path(), Arc::new(clock)).unwrap();
    let part_dir = storage.partition_dir(&tp(), 0);
    let mut appended: Vec<Vec<Rec>> = Vec::new();

    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    for recs in &before {
        log.append(batch(recs), 1).unwrap();
        appended.push(recs.clone());
    }
    log.close().unwrap();
    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    for recs in &after {
        log.append(batch(recs), 2).unwrap();
        appended.push(recs.clone());
    }
    drop(log); // the crash: no flush, no clean-shutdown marker

    // Damage the active (last) segment.
    let active = segment_files(&part_dir, "log").pop().unwrap();
    let active_base: u64 = active
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let mut bytes = fs::read(&active).unwrap();
    let frames = batch_frames(&bytes);
    // How many of the active segment's batches must survive.
    let mut epoch_flipped = false;
    let kept_in_active = match &damage {
        Damage::Cut(at) => {
            let cut = (bytes.len() as f64 * at) as usize;
            bytes.truncate(cut);
            frames.iter().filter(|(p, s)| p + s <= cut).count()
        }
        Damage::Flip(at, mask) => {
            let i = ((bytes.len() as f64 * at) as usize).min(bytes.len().saturating_sub(1));
            if bytes.is_empty() {
                0
            } else {
                bytes[i] ^= mask;
                let hit = frames
                    .iter()
                    .position(|(p, s)| i >= *p && i < p + s)
                    .unwrap();
                let (p, _) = frames[hit];
                // Bytes 12..16 hold the partition leader epoch, which Kafka's
                // CRC does not cover and no record depends on: such a flip
                // leaves every record intact and is not detectable.
                if (12..16).contains(&(i - p)) {
                    epoch_flipped = true;
                    frames.len()
                } else {
                    hit
                }
            }
        }
        Damage::Garbage(g) => {
            bytes.extend_from_slice(g);
            frames.len()
        }
    };
    fs::write(&active, &bytes).unwrap();
    damage_file(&active.with_extension("index"), &index);
    damage_file(&active.with_extension("timeindex"), &index);

    // What must remain: every batch before the active segment, and the kept
    // prefix of the active one.
    let batches_before_active = appended.len() - frames.len();
    let kept: Vec<Vec<Rec>> = appended[..batches_before_active + kept_in_active].to_vec();
    let expected: Vec<(u64, Rec)> = kept
        .iter()
        .flatten()
        .enumerate()
        .map(|(i, r)| (i as u64, r.clone()))
        .collect();
    let expected_end = expected.len() as u64;
    assert!(expected_end >= active_base);

    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    assert_eq!(log.log_end_offset(), expected_end, "recovered log end");
    assert_eq!(read_all(log.as_ref()), expected, "recovered records");
    assert!(log.high_watermark() <= expected_end);
    assert!(
        log.recovery_point() == expected_end,
        "recovery flushes what it kept"
    );

    // Appends continue at the right offset, and survive a clean reopen.
    let extra = vec![(Some(b"after".to_vec()), b"recovery".to_vec())];
    // A flipped epoch byte (outside the CRC) can leave a higher epoch behind;
    // the next leader append must not go below it.
    let next_epoch = log.latest_epoch().map_or(3, |latest| latest.max(3));
    let info = log.append(batch(&extra), next_epoch).unwrap();
    assert_eq!(info.base_offset, expected_end);
    log.close().unwrap();
    let log = storage.open(&tp(), 0, &config()).unwrap();
    assert_eq!(log.log_end_offset(), expected_end + 1);
    let all = read_all(log.as_ref());
    assert_eq!(&all[..expected.len()], &expected[..]);
    assert_eq!(all.last().unwrap().1, extra[0]);
    assert_eq!(log.latest_epoch(), Some(next_epoch));
    assert!(epoch_flipped || next_epoch == 3);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn recovery_keeps_exactly_the_valid_prefix(
        before in proptest::collection::vec(records_strategy(), 0..30),
        after in proptest::collection::vec(records_strategy(), 1..30),
        damage in damage(),
        index in index_damage(),
    ) {
        crash_case(before, after, damage, index);
    }
}

fn filled_log(storage: &FileStorage, batches: usize) -> Vec<RecordBatch> {
    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    let mut out = Vec::new();
    for i in 0..batches {
        let recs = vec![(Some(vec![i as u8]), vec![i as u8; 200])];
        let info = log.append(batch(&recs), 0).unwrap();
        let read = log.read(info.base_offset, 1).unwrap();
        out.push(read.batches().next().unwrap().unwrap());
    }
    log.close().unwrap();
    out
}

#[test]
fn corruption_below_the_recovery_point_is_an_error_naming_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    filled_log(&storage, 60);
    let part_dir = storage.partition_dir(&tp(), 0);
    let first = segment_files(&part_dir, "log").remove(0);
    let mut bytes = fs::read(&first).unwrap();
    let frames = batch_frames(&bytes);
    let (pos, _) = frames[3];
    bytes[pos + 100] ^= 0x40; // inside the records: only the CRC can tell
    fs::write(&first, &bytes).unwrap();

    let log = storage.open(&tp(), 0, &config()).unwrap();
    assert!(
        log.read(0, 100).is_ok(),
        "batches before the damage still serve"
    );
    match log.read(3, 100) {
        Err(Error::CorruptLog { path, offset, .. }) => {
            assert_eq!(path, first);
            assert_eq!(offset, 3);
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
    // A read that starts before the damage stops short of it.
    let records = log.read(1, 1 << 20).unwrap();
    assert_eq!(records.batches().count(), 2);
    assert!(log.read(30, 100).is_ok(), "later segments are unaffected");
}

#[test]
fn a_broken_frame_below_the_recovery_point_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    filled_log(&storage, 60);
    let part_dir = storage.partition_dir(&tp(), 0);
    let first = segment_files(&part_dir, "log").remove(0);
    for index in segment_files(&part_dir, "index") {
        fs::remove_file(index).unwrap(); // force a walk of every frame
    }
    let mut bytes = fs::read(&first).unwrap();
    let (pos, _) = batch_frames(&bytes)[5];
    bytes[pos + 8] = 0x7f; // batch length now points far past the file
    fs::write(&first, &bytes).unwrap();
    match storage.open(&tp(), 0, &config()) {
        Err(Error::CorruptLog { path, offset, .. }) => {
            assert_eq!(path, first);
            assert_eq!(offset, 5);
        }
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}

#[test]
fn missing_or_garbled_indexes_of_sealed_segments_are_rebuilt() {
    for damage in [
        IndexDamage::Delete,
        IndexDamage::Cut(0.5),
        IndexDamage::Flip(0.3, 0xff),
        IndexDamage::Flip(0.9, 0x01),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path()).unwrap();
        let written = filled_log(&storage, 80);
        let part_dir = storage.partition_dir(&tp(), 0);
        let sealed = segment_files(&part_dir, "index");
        assert!(sealed.len() >= 3, "the test needs sealed segments");
        for index in &sealed[..sealed.len() - 1] {
            damage_file(index, &damage);
            damage_file(&index.with_extension("timeindex"), &damage);
        }
        let log = storage.open(&tp(), 0, &config()).unwrap();
        for (offset, expected) in written.iter().enumerate() {
            let got = log.read(offset as u64, 1).unwrap();
            let got = got.batches().next().unwrap().unwrap();
            assert_eq!(
                got.as_bytes(),
                expected.as_bytes(),
                "{damage:?} at {offset}"
            );
        }
        let ts = written[40].max_timestamp();
        assert!(log.offset_for_timestamp(ts).unwrap().is_some());
        for index in &sealed[..sealed.len() - 1] {
            assert!(index.exists(), "{damage:?}: index not rebuilt");
        }
    }
}

#[test]
fn a_lost_checkpoint_recovers_the_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let written = filled_log(&storage, 50);
    let part_dir = storage.partition_dir(&tp(), 0);
    fs::remove_file(part_dir.join("partition.checkpoint")).unwrap();
    let log = storage.open(&tp(), 0, &config()).unwrap();
    assert_eq!(log.log_end_offset(), written.len() as u64);
    assert_eq!(log.latest_epoch(), Some(0));
    assert!(part_dir.join("partition.checkpoint").exists());
}

#[test]
fn repeated_crashes_lose_nothing_that_reached_the_page_cache() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let mut total = 0u64;
    for round in 0..20u8 {
        let mut log = storage.open(&tp(), 0, &config()).unwrap();
        assert_eq!(log.log_end_offset(), total, "round {round}");
        for i in 0..7u8 {
            let recs = vec![(None, vec![round, i])];
            log.append(batch(&recs), round as i32).unwrap();
            total += 1;
        }
        drop(log);
    }
    let log = storage.open(&tp(), 0, &config()).unwrap();
    let all = read_all(log.as_ref());
    assert_eq!(all.len() as u64, total);
    assert_eq!(all[8].1.1, vec![1, 1]);
    assert_eq!(log.end_offset_for_epoch(3), Some((3, 28)));
}

#[test]
fn a_zero_length_or_foreign_file_never_panics() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let part_dir = storage.partition_dir(&tp(), 0);
    fs::create_dir_all(&part_dir).unwrap();
    fs::write(part_dir.join("00000000000000000000.log"), b"").unwrap();
    fs::write(part_dir.join("00000000000000000000.index"), b"xyz").unwrap();
    fs::write(part_dir.join("partition.checkpoint"), b"not a checkpoint").unwrap();
    fs::write(part_dir.join("notes.txt"), b"ignored").unwrap();
    let mut log = storage.open(&tp(), 0, &config()).unwrap();
    assert_eq!(log.log_end_offset(), 0);
    let info = log.append(batch(&[(None, b"x".to_vec())]), 0).unwrap();
    assert_eq!(info.base_offset, 0);
    let garbage = Bytes::from_static(&[0u8; 70]);
    assert!(RecordBatch::from_bytes(garbage).is_err());
}

#[test]
fn every_header_byte_of_the_last_batch_is_checked() {
    let recs: Vec<Rec> = vec![(Some(b"k".to_vec()), vec![7; 40]); 3];
    for i in 0..ferrolog::record::BATCH_HEADER_LEN {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::new(dir.path()).unwrap();
        let mut log = storage.open(&tp(), 0, &config()).unwrap();
        for _ in 0..4 {
            log.append(batch(&recs), 1).unwrap();
        }
        drop(log);
        let active = segment_files(&storage.partition_dir(&tp(), 0), "log")
            .pop()
            .unwrap();
        let mut bytes = fs::read(&active).unwrap();
        let (last, _) = *batch_frames(&bytes).last().unwrap();
        bytes[last + i] ^= 0x10;
        fs::write(&active, &bytes).unwrap();
        let log = storage.open(&tp(), 0, &config()).unwrap();
        // Bytes 12..16 (partition leader epoch) are outside Kafka's CRC.
        let expected_end = if (12..16).contains(&i) { 12 } else { 9 };
        assert_eq!(
            log.log_end_offset(),
            expected_end,
            "flipped header byte {i}"
        );
    }
}

#[test]
fn a_sealed_segment_shrunk_behind_its_index_is_refused_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    filled_log(&storage, 60);
    let first = segment_files(&storage.partition_dir(&tp(), 0), "log").remove(0);
    let len = fs::metadata(&first).unwrap().len();
    OpenOptions::new()
        .write(true)
        .open(&first)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    match storage.open(&tp(), 0, &config()) {
        Err(Error::CorruptLog { path, .. }) => assert_eq!(path, first),
        other => panic!("expected CorruptLog, got {other:?}"),
    }
}

#[test]
fn two_storages_on_one_directory_cannot_open_the_same_log() {
    let dir = tempfile::tempdir().unwrap();
    let a = FileStorage::new(dir.path()).unwrap();
    let b = FileStorage::new(dir.path()).unwrap();
    let log = a.open(&tp(), 0, &config()).unwrap();
    assert!(matches!(
        b.open(&tp(), 0, &config()),
        Err(Error::LogInUse { .. })
    ));
    assert!(matches!(b.remove(&tp(), 0), Err(Error::LogInUse { .. })));
    drop(log);
    b.open(&tp(), 0, &config()).unwrap();
}

/// The timed work a broker runs every `log_flush_scheduler_interval_ms`
/// (`PartitionLog::flush_due`): `flush_ms` is honoured without another
/// append, and an idle log's high watermark reaches its checkpoint once the
/// last one is 5 s old, so a log killed 8 s after a burst reopens with the
/// burst committed (before, a restart fell back to the high watermark of
/// the last append's checkpoint and a `Latest` consumer re-read it all).
#[test]
fn flush_due_honours_flush_ms_and_checkpoints_an_idle_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(1_700_000_000_000);
    let storage = FileStorage::with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
    let config = LogConfig {
        flush_ms: Some(100),
        ..config()
    };
    let mut log = storage.open(&tp(), 0, &config).unwrap();
    for i in 0..10u8 {
        log.append(batch(&[(None, vec![i; 20])]), 1).unwrap();
    }
    assert!(!log.flush_due().unwrap(), "flush_ms has not passed");
    clock.advance(150);
    assert!(log.flush_due().unwrap(), "flush_ms passed: flushed");
    assert!(!log.flush_due().unwrap(), "nothing left to flush");

    // The burst is committed; killed within 5 s, the checkpoint is older.
    log.set_high_watermark(10);
    clock.advance(1_000);
    log.flush_due().unwrap();
    drop(log); // killed
    let mut log = storage.open(&tp(), 0, &config).unwrap();
    assert_eq!(log.log_end_offset(), 10);
    assert!(log.high_watermark() < 10, "no checkpoint within 5 s");
    // Idle for 8 s with the flush scheduler running: checkpointed.
    log.set_high_watermark(10);
    for _ in 0..8 {
        clock.advance(1_000);
        log.flush_due().unwrap();
    }
    drop(log); // killed
    let log = storage.open(&tp(), 0, &config).unwrap();
    assert_eq!(log.high_watermark(), 10, "checkpointed while idle");
}
