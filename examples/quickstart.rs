//! Quickstart: a durable partition log in a temporary directory.
//!
//! Appends a batch of keyed records to a `FileStorage` log, closes it, reopens
//! it (as after a restart) and reads every record back with its offset.
//!
//! Run with `cargo run --example quickstart`.

use ferrolog::TopicPartition;
use ferrolog::record::RecordBatchBuilder;
use ferrolog::storage::{FileStorage, LogConfig, Storage};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let storage = FileStorage::new(dir.path())?;
    let orders = TopicPartition::new("orders", 0)?;

    // Append: one batch of ten keyed records, as a producer would send it.
    let mut log = storage.open(&orders, 0, &LogConfig::default())?;
    let mut batch = RecordBatchBuilder::new();
    for i in 0..10 {
        let key = format!("customer-{}", i % 3);
        let value = format!("order #{i}");
        batch.append(
            1_700_000_000_000 + i,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    let appended = log.append(batch.build(), 0)?;
    println!(
        "appended offsets {}..={} to {orders}",
        appended.base_offset, appended.last_offset
    );
    log.close()?;

    // Reopen, as after a restart, and read everything back.
    let log = storage.open(&orders, 0, &LogConfig::default())?;
    println!(
        "reopened {orders}: offsets {}..{} in {}",
        log.log_start_offset(),
        log.log_end_offset(),
        storage.partition_dir(&orders, 0).display()
    );
    for record in log.read(0, 1 << 20)?.records() {
        let record = record?;
        let key = String::from_utf8_lossy(record.key.as_deref().unwrap_or_default());
        let value = String::from_utf8_lossy(record.value.as_deref().unwrap_or_default());
        println!("offset {:>2}  key {key:<12} value {value}", record.offset);
    }
    Ok(())
}
