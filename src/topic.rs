//! Names of topics and partitions.

use std::fmt;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Kafka's limit on a topic name's length.
pub const MAX_TOPIC_NAME_LEN: usize = 249;

/// A partition of a topic: the unit of ordering, storage and replication.
///
/// ```
/// use ferrolog::TopicPartition;
/// let tp = TopicPartition::new("orders", 3)?;
/// assert_eq!(tp.to_string(), "orders-3");
/// # Ok::<(), ferrolog::Error>(())
/// ```
///
/// Cloning is cheap: the topic name is shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    topic: Arc<str>,
    partition: u32,
}

impl TopicPartition {
    /// A partition of `topic`; the name must be a valid Kafka topic name.
    pub fn new(topic: impl Into<String>, partition: u32) -> Result<Self> {
        let topic = topic.into();
        validate_topic_name(&topic)?;
        Ok(Self {
            topic: topic.into(),
            partition,
        })
    }

    /// A partition of a topic whose name is already shared (and valid).
    pub(crate) fn from_shared(topic: Arc<str>, partition: u32) -> Self {
        Self { topic, partition }
    }

    /// The topic's name.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition number within the topic, from 0.
    pub fn partition(&self) -> u32 {
        self.partition
    }

    /// Parses the `<topic>-<partition>` form used for directory names.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::InvalidTopic {
            name: s.to_string(),
            reason: "expected `<topic>-<partition>`",
        };
        let (topic, partition) = s.rsplit_once('-').ok_or_else(bad)?;
        let partition = partition.parse().map_err(|_| bad())?;
        Self::new(topic, partition)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// A topic's settings: retention, segment size, flush policy, largest batch.
/// Kafka keeps a topic's configs in its log config; so does ferrolog.
pub type TopicConfig = crate::storage::LogConfig;

/// A topic to create: name, partition count, replication factor and settings.
///
/// ```
/// use ferrolog::{NewTopic, TopicConfig};
/// let topic = NewTopic::new("orders", 3).config(TopicConfig {
///     retention_ms: Some(60 * 60 * 1000),
///     ..TopicConfig::default()
/// });
/// assert_eq!(topic.partitions, 3);
/// assert_eq!(topic.replication_factor, 1);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// The topic's name ([`validate_topic_name`] rules).
    pub name: String,
    /// Number of partitions, at least 1.
    pub partitions: u32,
    /// Replicas per partition, at least 1 and at most the number of brokers.
    pub replication_factor: u16,
    /// Per-topic settings.
    pub config: TopicConfig,
}

impl NewTopic {
    /// A topic with `partitions` partitions, replication factor 1 and default settings.
    pub fn new(name: impl Into<String>, partitions: u32) -> Self {
        Self {
            name: name.into(),
            partitions,
            replication_factor: 1,
            config: TopicConfig::default(),
        }
    }

    /// Sets the replication factor.
    pub fn replication_factor(mut self, replication_factor: u16) -> Self {
        self.replication_factor = replication_factor;
        self
    }

    /// Sets the topic's settings.
    pub fn config(mut self, config: TopicConfig) -> Self {
        self.config = config;
        self
    }
}

/// Topics whose names start with this are internal (`__cluster_metadata`,
/// later `__consumer_offsets`); clients cannot create or delete them.
pub const INTERNAL_TOPIC_PREFIX: &str = "__";

/// Checks a topic name against Kafka's rules: 1 to 249 characters from
/// `[a-zA-Z0-9._-]`, and neither `.` nor `..`.
pub fn validate_topic_name(name: &str) -> Result<()> {
    let refuse = |reason| {
        Err(Error::InvalidTopic {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return refuse("the name is empty");
    }
    if name == "." || name == ".." {
        return refuse("`.` and `..` are not allowed");
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return refuse("longer than 249 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return refuse("only ASCII letters, digits, `.`, `_` and `-` are allowed");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_names_with_dashes() {
        let tp = TopicPartition::new("a-b-c", 12).unwrap();
        assert_eq!(TopicPartition::parse(&tp.to_string()).unwrap(), tp);
    }

    #[test]
    fn kafka_rules_refuse_bad_names() {
        for bad in ["", ".", "..", "has space", "slash/no", &"x".repeat(250)] {
            assert!(matches!(
                validate_topic_name(bad),
                Err(Error::InvalidTopic { .. })
            ));
        }
        validate_topic_name(&"x".repeat(249)).unwrap();
    }
}
