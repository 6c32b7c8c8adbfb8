//! File descriptors of the file storage: one per partition's active segment
//! and one lock per replica directory, however many segments each log has.
//! (A file of its own: it counts this process's descriptors, which tests
//! running beside it in the same binary would disturb.)

use ferrolog::record::RecordBatchBuilder;
use ferrolog::storage::{FileStorage, LogConfig, PartitionLog, Storage};
use ferrolog::{Error, TopicPartition};

fn open_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd (Linux)")
        .count()
}

#[test]
fn each_log_holds_one_descriptor_whatever_its_segment_count() {
    const PARTITIONS: u32 = 200;
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorage::new(dir.path()).unwrap();
    let config = LogConfig {
        segment_bytes: 4096,
        index_interval_bytes: 512,
        ..LogConfig::default()
    };
    let before = open_descriptors();
    let mut logs: Vec<Box<dyn PartitionLog>> = Vec::new();
    for p in 0..PARTITIONS {
        let tp = TopicPartition::new("fds", p).unwrap();
        let mut log = storage.open(&tp, 0, &config).unwrap();
        for i in 0..40u32 {
            let mut b = RecordBatchBuilder::new();
            b.append(
                1_700_000_000_000,
                Some(&i.to_be_bytes()),
                Some(&[7; 200]),
                &[],
            );
            log.append(b.build(), 0).unwrap();
        }
        assert!(log.segment_count() >= 3, "{}", log.segment_count());
        // Reads of sealed and active segments, and a flush, open nothing
        // that stays open.
        assert!(log.read(0, 1 << 20).unwrap().records().count() > 0);
        log.flush().unwrap();
        logs.push(log);
    }
    let held = open_descriptors() - before;
    println!(
        "{PARTITIONS} logs, {} segments: {held} descriptors",
        logs.iter().map(|l| l.segment_count()).sum::<usize>()
    );
    assert!(
        held <= PARTITIONS as usize + 1,
        "{held} descriptors for {PARTITIONS} logs"
    );
    // A second handle to an open log is still refused.
    let tp = TopicPartition::new("fds", 0).unwrap();
    assert!(matches!(
        storage.open(&tp, 0, &config),
        Err(Error::LogInUse { .. })
    ));
    for log in logs {
        log.close().unwrap();
    }
    assert_eq!(open_descriptors(), before, "closing gives every one back");
    // Reopened, the logs have all their records.
    let log = storage.open(&tp, 0, &config).unwrap();
    assert_eq!(log.log_end_offset(), 40);
}
