//! Kafka's default key → partition mapping.
//!
//! A keyed record goes to `toPositive(murmur2(key)) % partitions`, exactly as
//! in Kafka's Java client (`Utils.murmur2`, `BuiltInPartitioner`), so a
//! ferrolog producer and a Kafka producer put the same key in the same
//! partition.

pub use crate::record::murmur2;

/// The partition Kafka's default partitioner gives a record with `key` in a
/// topic of `partitions` partitions (`partitions` must be at least 1).
///
/// ```
/// use ferrolog::client::partitioner::partition_for_key;
/// assert_eq!(partition_for_key(b"", 6), 3);
/// ```
pub fn partition_for_key(key: &[u8], partitions: u32) -> u32 {
    // Kafka's `toPositive`: clear the sign bit (not `abs`, which overflows).
    let positive = (murmur2(key) & 0x7fff_ffff) as u32;
    positive % partitions.max(1)
}
