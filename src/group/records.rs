//! What the coordinator writes to `__consumer_offsets`, and reads back.
//!
//! Two kinds of records, both keyed so that compaction keeps the latest one:
//! an offset commit (key: group, topic, partition; value: the offset) and a
//! group's state (key: group; value: its members, epochs and target
//! assignment). A record without a value is a tombstone: the offset or the
//! group is gone. Keys and values start with a version number, as Kafka's do,
//! and are encoded with postcard.

use serde::{Deserialize, Serialize};

use super::OffsetAndMetadata;
use crate::error::{Error, Result};
use crate::protocol::Subscription;
use crate::topic::TopicPartition;

/// The version written in front of every key and value.
const VERSION: u8 = 0;

/// A partition as records store it.
pub(crate) type StoredPartition = (String, u32);

/// The key of a `__consumer_offsets` record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum RecordKey {
    /// A committed offset.
    Offset {
        group: String,
        topic: String,
        partition: u32,
    },
    /// A group's membership and assignment.
    Group { group: String },
}

/// A committed offset as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OffsetValue {
    pub(crate) offset: u64,
    pub(crate) metadata: String,
    pub(crate) commit_timestamp: i64,
}

impl From<&OffsetAndMetadata> for OffsetValue {
    fn from(o: &OffsetAndMetadata) -> Self {
        Self {
            offset: o.offset,
            metadata: o.metadata.clone(),
            commit_timestamp: o.commit_timestamp,
        }
    }
}

impl From<OffsetValue> for OffsetAndMetadata {
    fn from(v: OffsetValue) -> Self {
        Self {
            offset: v.offset,
            metadata: v.metadata,
            commit_timestamp: v.commit_timestamp,
        }
    }
}

/// One member as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemberValue {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) subscription: Subscription,
    /// The topics the subscription resolved to at the member's last
    /// heartbeat (what the target was computed with).
    pub(crate) topics: Vec<String>,
    pub(crate) epoch: i32,
    pub(crate) previous_epoch: i32,
    pub(crate) assigned: Vec<StoredPartition>,
    pub(crate) pending_revocation: Vec<StoredPartition>,
    pub(crate) assignment_id: u64,
    pub(crate) revoked_at: u64,
    pub(crate) session_timeout_ms: u32,
    pub(crate) rebalance_timeout_ms: u32,
    /// A static member that left for now (it may come back within its session).
    pub(crate) left: bool,
}

/// A group's state as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct GroupValue {
    pub(crate) group_epoch: i32,
    pub(crate) assignor: String,
    pub(crate) target_epoch: i32,
    pub(crate) target: Vec<(String, Vec<StoredPartition>)>,
    pub(crate) target_partitions: Vec<(String, u32)>,
    pub(crate) members: Vec<MemberValue>,
    /// Static members replaced by a newer member with the same instance id,
    /// oldest first: (member id, instance id). They stay fenced after a
    /// failover too.
    pub(crate) replaced: Vec<(String, String)>,
}

/// A decoded record: its key and, unless it is a tombstone, its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum GroupRecord {
    Offset {
        group: String,
        partition: TopicPartition,
        value: Option<OffsetValue>,
    },
    Group {
        group: String,
        value: Option<GroupValue>,
    },
}

fn encode<T: Serialize>(what: &str, value: &T) -> Result<Vec<u8>> {
    let mut out = vec![VERSION];
    postcard::to_io(value, &mut out).map_err(|e| Error::Serialization {
        reason: format!("{what}: {e}"),
    })?;
    Ok(out)
}

fn decode<'a, T: Deserialize<'a>>(what: &str, bytes: &'a [u8]) -> Result<T> {
    match bytes.split_first() {
        Some((&VERSION, rest)) => postcard::from_bytes(rest)
            .map_err(|e| Error::corrupt(format!("__consumer_offsets {what}: {e}"))),
        Some((version, _)) => Err(Error::corrupt(format!(
            "__consumer_offsets {what} has unknown version {version}"
        ))),
        None => Err(Error::corrupt(format!(
            "__consumer_offsets {what} is empty"
        ))),
    }
}

impl GroupRecord {
    /// The record's key and value bytes.
    pub(crate) fn encode(&self) -> Result<(Vec<u8>, Option<Vec<u8>>)> {
        match self {
            GroupRecord::Offset {
                group,
                partition,
                value,
            } => {
                let key = RecordKey::Offset {
                    group: group.clone(),
                    topic: partition.topic().to_string(),
                    partition: partition.partition(),
                };
                Ok((
                    encode("key", &key)?,
                    value.as_ref().map(|v| encode("offset", v)).transpose()?,
                ))
            }
            GroupRecord::Group { group, value } => Ok((
                encode(
                    "key",
                    &RecordKey::Group {
                        group: group.clone(),
                    },
                )?,
                value.as_ref().map(|v| encode("group", v)).transpose()?,
            )),
        }
    }

    /// Decodes a record read from the log.
    pub(crate) fn decode(key: &[u8], value: Option<&[u8]>) -> Result<Self> {
        match decode::<RecordKey>("key", key)? {
            RecordKey::Offset {
                group,
                topic,
                partition,
            } => Ok(GroupRecord::Offset {
                group,
                partition: TopicPartition::new(topic, partition)?,
                value: value.map(|v| decode("offset", v)).transpose()?,
            }),
            RecordKey::Group { group } => Ok(GroupRecord::Group {
                group,
                value: value.map(|v| decode("group", v)).transpose()?,
            }),
        }
    }
}

/// Converts partitions to their stored form.
pub(crate) fn store<'a>(
    partitions: impl IntoIterator<Item = &'a TopicPartition>,
) -> Vec<StoredPartition> {
    partitions
        .into_iter()
        .map(|tp| (tp.topic().to_string(), tp.partition()))
        .collect()
}

/// Whether `stored` is what [`store`] makes of `partitions`, found without
/// building it.
pub(crate) fn stored_equals<'a, I>(stored: &[StoredPartition], partitions: I) -> bool
where
    I: IntoIterator<Item = &'a TopicPartition>,
    I::IntoIter: ExactSizeIterator,
{
    let partitions = partitions.into_iter();
    partitions.len() == stored.len()
        && partitions
            .zip(stored)
            .all(|(tp, (topic, p))| tp.topic() == topic && tp.partition() == *p)
}

/// Converts stored partitions back; names that are not valid topic names
/// (which a writer never produces) are corrupt.
pub(crate) fn restore(partitions: &[StoredPartition]) -> Result<Vec<TopicPartition>> {
    partitions
        .iter()
        .map(|(topic, p)| TopicPartition::new(topic.as_str(), *p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_bad_bytes_are_corrupt() {
        let offset = GroupRecord::Offset {
            group: "g".into(),
            partition: TopicPartition::new("t", 3).unwrap(),
            value: Some(OffsetValue {
                offset: 42,
                metadata: "m".into(),
                commit_timestamp: 7,
            }),
        };
        let (key, value) = offset.encode().unwrap();
        assert_eq!(GroupRecord::decode(&key, value.as_deref()).unwrap(), offset);
        let tombstone = GroupRecord::Group {
            group: "g".into(),
            value: None,
        };
        let (key, value) = tombstone.encode().unwrap();
        assert_eq!(GroupRecord::decode(&key, None).unwrap(), tombstone);
        assert!(value.is_none());
        assert!(GroupRecord::decode(&[9, 1, 2], None).is_err());
        assert!(GroupRecord::decode(&[], None).is_err());
        assert!(GroupRecord::decode(&[0, 200, 200, 200], None).is_err());
    }
}
