//! The file storage's read path (SPEC L10): the active segment is read
//! zero-copy like the sealed ones, a truncation never pulls bytes out from
//! under a reader, record views decode without copying, and data that was on
//! disk before the log opened is still checked on every read. And its write
//! path: the active segment reserves disk blocks ahead of its end without
//! lengthening the file, and gives them back when sealed.

use bytes::Bytes;
use ferrolog::TopicPartition;
use ferrolog::record::{RecordBatch, RecordBatchBuilder};
use ferrolog::storage::{FileStorage, LogConfig, PartitionLog, Storage};

fn tp() -> TopicPartition {
    TopicPartition::new("reads", 0).unwrap()
}

fn batch(first: u64, n: u64) -> RecordBatch {
    let mut b = RecordBatchBuilder::new();
    for i in first..first + n {
        b.append(
            1_700_000_000_000,
            Some(&i.to_be_bytes()),
            Some(format!("value-{i}").as_bytes()),
            &[],
        );
    }
    b.build()
}

/// The record at `offset`, read from the log.
fn record_at(log: &dyn PartitionLog, offset: u64) -> ferrolog::record::Record {
    log.read(offset, 1 << 20)
        .unwrap()
        .records()
        .map(Result::unwrap)
        .find(|r| r.offset == offset)
        .expect("the record")
}

fn first_chunk(log: &dyn PartitionLog, offset: u64) -> Bytes {
    log.read(offset, 1 << 20).unwrap().chunks()[0].clone()
}

#[test]
fn the_active_segment_is_read_zero_copy() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let mut log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    for b in 0..10 {
        log.append(batch(b * 10, 10), 0).unwrap();
    }
    assert_eq!(
        log.segment_count(),
        1,
        "everything is in the active segment"
    );
    // Two reads of the same bytes are slices of one mapping, not two copies.
    let a = first_chunk(log.as_ref(), 0);
    let b = first_chunk(log.as_ref(), 0);
    assert_eq!(a, b);
    assert_eq!(a.as_ptr(), b.as_ptr(), "a copy per read");
    // Appends after the mapping was made are read the same way.
    for b in 10..2_000 {
        log.append(batch(b * 10, 10), 0).unwrap();
    }
    let late = first_chunk(log.as_ref(), 19_990);
    let again = first_chunk(log.as_ref(), 19_990);
    assert_eq!(late.as_ptr(), again.as_ptr());
    let record = log
        .read(19_990, 1 << 20)
        .unwrap()
        .records()
        .next()
        .unwrap()
        .unwrap();
    assert_eq!(record.value.as_deref(), Some(&b"value-19990"[..]));
    // Keys and values of a record view point into the read's bytes.
    let read = log.read(0, 1 << 20).unwrap();
    let range = read.chunks()[0].as_ptr_range();
    let first = read.batches().next().unwrap().unwrap();
    let body = first.body().unwrap();
    for view in body.views() {
        let view = view.unwrap();
        assert!(range.contains(&view.value.unwrap().as_ptr()));
    }
}

#[test]
fn truncating_the_active_segment_leaves_what_a_reader_holds_intact() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let mut log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    for b in 0..20 {
        log.append(batch(b * 10, 10), 0).unwrap();
    }
    let held = log.read(150, 1 << 20).unwrap();
    let before: Vec<Vec<u8>> = held.chunks().iter().map(|c| c.to_vec()).collect();
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 100);
    // New records land where the old ones were.
    for b in 10..20 {
        log.append(batch(1_000 + b * 10, 10), 0).unwrap();
    }
    let after: Vec<Vec<u8>> = held.chunks().iter().map(|c| c.to_vec()).collect();
    assert_eq!(before, after, "the held bytes did not change or vanish");
    let old = held.records().next().unwrap().unwrap();
    assert_eq!(old.value.as_deref(), Some(&b"value-150"[..]));
    let new = record_at(log.as_ref(), 150);
    assert_eq!(new.value.as_deref(), Some(&b"value-1150"[..]));
    // Reopened, the log holds the new records.
    log.close().unwrap();
    let log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 200);
    let reopened = record_at(log.as_ref(), 150);
    assert_eq!(reopened.value.as_deref(), Some(&b"value-1150"[..]));
}

#[test]
fn bytes_on_disk_before_the_log_opened_are_checked_on_every_read() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let mut log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    for b in 0..5 {
        log.append(batch(b * 10, 10), 0).unwrap();
    }
    log.close().unwrap();
    // Flip a byte inside the third batch's records, in the active segment.
    let path = storage
        .partition_dir(&tp(), 0)
        .join("00000000000000000000.log");
    let mut bytes = std::fs::read(&path).unwrap();
    let third = bytes.len() / 5 * 2 + 100;
    bytes[third] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let mut log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    assert!(log.read(0, 1 << 20).is_ok(), "the batches before it serve");
    assert!(
        matches!(
            log.read(20, 1 << 20),
            Err(ferrolog::Error::CorruptLog { .. })
        ),
        "the damaged batch is refused"
    );
    // What this handle appends is served.
    log.append(batch(50, 10), 0).unwrap();
    assert_eq!(log.read(50, 1 << 20).unwrap().records().count(), 10);
}

/// The `.log` files under `dir`, with their length and allocated bytes.
fn log_files(dir: &std::path::Path) -> Vec<(std::path::PathBuf, u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            let meta = std::fs::metadata(&path).unwrap();
            if meta.is_dir() {
                todo.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                found.push((path, meta.len(), meta.blocks() * 512));
            }
        }
    }
    found.sort();
    found
}

#[test]
fn the_active_segment_reserves_blocks_ahead_and_sealing_gives_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let mut log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    let first = batch(0, 10);
    let written = first.size() as u64;
    log.append(first, 0).unwrap();
    let files = log_files(dir.path());
    assert_eq!(files.len(), 1);
    let (_, len, allocated) = files[0].clone();
    // The length is exactly what was written: recovery reads no padding.
    assert_eq!(len, written);
    if cfg!(target_os = "linux") {
        assert!(
            allocated >= 64 << 10,
            "{allocated} bytes reserved (does this file system support fallocate?)"
        );
    }
    for b in 1..100 {
        log.append(batch(b * 10, 10), 0).unwrap();
    }
    log.roll().unwrap();
    let files = log_files(dir.path());
    assert_eq!(files.len(), 2, "{files:?}");
    let (_, len, allocated) = files[0].clone();
    assert!(
        allocated <= len.div_ceil(4096) * 4096,
        "the sealed segment still holds {allocated} bytes for {len}"
    );
    assert_eq!(log.read(0, 1 << 20).unwrap().records().count(), 1_000);
    // Reopened, nothing past the written bytes is read.
    log.close().unwrap();
    let log = storage.open(&tp(), 0, &LogConfig::default()).unwrap();
    assert_eq!(log.log_end_offset(), 1_000);
}
