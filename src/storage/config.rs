//! Per-log settings, with Kafka's names and defaults.

use crate::error::{Error, Result};
use crate::record::Compression;
use crate::time::Millis;

/// Settings of one partition log, which are a topic's settings
/// ([`TopicConfig`](crate::TopicConfig) is this type, as in Kafka, where a
/// topic's configs are its log's). Names and defaults follow Kafka's topic
/// configs (`segment.bytes` → `segment_bytes`, …). Build one with struct update
/// syntax and let [`LogConfig::validate`] (called by every `Storage::open`)
/// reject bad values:
///
/// ```
/// use ferrolog::storage::LogConfig;
/// let config = LogConfig { segment_bytes: 64 << 20, ..LogConfig::default() };
/// config.validate()?;
/// assert!(LogConfig { index_interval_bytes: 0, ..config }.validate().is_err());
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LogConfig {
    /// Roll to a new segment once the active one holds this many bytes.
    /// Default 1 GiB; at most `i32::MAX` (index positions are 32-bit).
    pub segment_bytes: u64,
    /// Roll to a new segment once the active one's first batch is this old
    /// (by the clock), even if it is small. Default 7 days.
    pub segment_ms: Millis,
    /// Bytes between two entries of the sparse offset and time indexes.
    /// Default 4096. A read scans at most this much past the index entry.
    pub index_interval_bytes: u64,
    /// Delete whole segments whose newest record is older than this. `None`
    /// keeps data forever (Kafka's -1). Default 7 days.
    pub retention_ms: Option<Millis>,
    /// Delete the oldest whole segments while the log is larger than this.
    /// `None` (default) sets no size limit.
    pub retention_bytes: Option<u64>,
    /// fsync after this many records. `None` (default) leaves flushing to the
    /// operating system, as Kafka does.
    pub flush_messages: Option<u64>,
    /// fsync when this much time has passed since the last flush (checked on
    /// append and by [`PartitionLog::maintain`](super::PartitionLog::maintain)).
    /// `None` (default) leaves flushing to the operating system.
    pub flush_ms: Option<Millis>,
    /// Largest batch the log accepts from a producer, in bytes (Kafka's
    /// `max.message.bytes`, default 1,048,588). A batch must also fit in a
    /// segment (`segment_bytes`).
    pub max_message_bytes: usize,
    /// With `acks=all`, a produce fails with `NotEnoughReplicas` unless at
    /// least this many replicas are in sync, and the high watermark only
    /// moves while they are (Kafka's `min.insync.replicas`, default 1).
    pub min_insync_replicas: u16,
    /// Whether a replica that is not in sync may become leader when no
    /// in-sync one is alive, trading committed records for availability
    /// (Kafka's `unclean.leader.election.enable`, default false).
    pub unclean_leader_election_enable: bool,
    /// What happens to old records: deleted by retention, compacted to the
    /// latest record per key, or both (Kafka's `cleanup.policy`, default
    /// delete). `__consumer_offsets` is compacted.
    pub cleanup_policy: CleanupPolicy,
    /// How long a compacted log keeps a tombstone (a record with a key and no
    /// value) after the cleaner first sees it, so that consumers reading from
    /// the start still see the deletion (Kafka's `delete.retention.ms`,
    /// default 1 day).
    pub delete_retention_ms: Millis,
    /// How the log stores batches' records (Kafka's `compression.type`,
    /// default `producer`: as the producer compressed them). A codec here
    /// makes the leader re-compress a batch that arrives with another one.
    pub compression_type: TopicCompression,
}

/// A topic's `compression.type`: keep the producer's codec, or store every
/// batch with one codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum TopicCompression {
    /// Batches are stored as the producer compressed them (`producer`).
    #[default]
    Producer,
    /// Records are stored uncompressed (`uncompressed`).
    Uncompressed,
    /// gzip (`gzip`).
    Gzip,
    /// snappy (`snappy`).
    Snappy,
    /// lz4 (`lz4`).
    Lz4,
    /// zstd (`zstd`).
    Zstd,
}

impl TopicCompression {
    /// The codec every batch is stored with, or `None` for `producer`.
    pub fn codec(self) -> Option<Compression> {
        Some(match self {
            TopicCompression::Producer => return None,
            TopicCompression::Uncompressed => Compression::None,
            TopicCompression::Gzip => Compression::Gzip,
            TopicCompression::Snappy => Compression::Snappy,
            TopicCompression::Lz4 => Compression::Lz4,
            TopicCompression::Zstd => Compression::Zstd,
        })
    }

    /// Kafka's name for the setting's value.
    pub fn name(self) -> &'static str {
        match self.codec() {
            None => "producer",
            Some(Compression::None) => "uncompressed",
            Some(codec) => codec.name(),
        }
    }

    /// The setting for Kafka's name (`producer`, `uncompressed`, `gzip`,
    /// `snappy`, `lz4`, `zstd`).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "producer" => TopicCompression::Producer,
            "uncompressed" => TopicCompression::Uncompressed,
            "gzip" => TopicCompression::Gzip,
            "snappy" => TopicCompression::Snappy,
            "lz4" => TopicCompression::Lz4,
            "zstd" => TopicCompression::Zstd,
            _ => return None,
        })
    }

    /// The codec a batch compressed with `sent` is stored with, when that
    /// differs from `sent`.
    pub(crate) fn recompress(self, sent: Option<Compression>) -> Option<Compression> {
        self.codec().filter(|&codec| Some(codec) != sent)
    }
}

/// What a log does with records it no longer needs (Kafka's `cleanup.policy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum CleanupPolicy {
    /// Delete whole segments by `retention_ms` / `retention_bytes` (`delete`).
    #[default]
    Delete,
    /// Keep only the latest record of every key in sealed segments; records
    /// without a key are refused (`compact`).
    Compact,
    /// Both: compact, and delete segments past retention (`compact,delete`).
    CompactDelete,
}

impl CleanupPolicy {
    /// Whether the log cleaner compacts this log.
    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }

    /// Whether retention deletes old segments of this log.
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }
}

/// One day in milliseconds, Kafka's default for `delete.retention.ms`.
pub const ONE_DAY_MS: Millis = 24 * 60 * 60 * 1000;

/// Seven days in milliseconds, Kafka's default for `segment.ms` and `retention.ms`.
pub const SEVEN_DAYS_MS: Millis = 7 * 24 * 60 * 60 * 1000;

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            segment_bytes: 1 << 30,
            segment_ms: SEVEN_DAYS_MS,
            index_interval_bytes: 4096,
            retention_ms: Some(SEVEN_DAYS_MS),
            retention_bytes: None,
            flush_messages: None,
            flush_ms: None,
            max_message_bytes: 1_048_588,
            min_insync_replicas: 1,
            unclean_leader_election_enable: false,
            cleanup_policy: CleanupPolicy::Delete,
            delete_retention_ms: ONE_DAY_MS,
            compression_type: TopicCompression::Producer,
        }
    }
}

impl LogConfig {
    /// Sets one topic setting by its Kafka name (`cleanup.policy`,
    /// `retention.ms` (-1: forever), `retention.bytes` (-1: no limit),
    /// `segment.bytes`, `segment.ms`, `max.message.bytes`,
    /// `min.insync.replicas`, `delete.retention.ms`,
    /// `unclean.leader.election.enable`, `compression.type`,
    /// `flush.messages`, `flush.ms` (Kafka's `Long.MAX_VALUE`: no flush
    /// policy), `index.interval.bytes`). An unknown name or a bad value is
    /// [`Error::InvalidConfig`]; call [`validate`](Self::validate) after the
    /// last one.
    ///
    /// ```
    /// use ferrolog::TopicConfig;
    /// let mut config = TopicConfig::default();
    /// config.set("cleanup.policy", "compact")?;
    /// config.set("min.insync.replicas", "2")?;
    /// assert_eq!(config.min_insync_replicas, 2);
    /// assert!(config.set("colour", "blue").is_err());
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let invalid =
            |reason: &str| Error::config("topic config", format!("{key}={value}: {reason}"));
        let number = || value.parse::<i64>().map_err(|_| invalid("not a number"));
        let positive =
            || number().and_then(|n| u64::try_from(n).map_err(|_| invalid("must not be negative")));
        match key {
            "cleanup.policy" => {
                self.cleanup_policy = match value {
                    "delete" => CleanupPolicy::Delete,
                    "compact" => CleanupPolicy::Compact,
                    "compact,delete" | "delete,compact" => CleanupPolicy::CompactDelete,
                    _ => return Err(invalid("one of delete, compact, compact,delete")),
                }
            }
            "retention.ms" => {
                let n = number()?;
                self.retention_ms = (n >= 0).then_some(n as _);
            }
            "retention.bytes" => {
                let n = number()?;
                self.retention_bytes = u64::try_from(n).ok();
            }
            "segment.bytes" => self.segment_bytes = positive()?,
            "segment.ms" => self.segment_ms = positive()? as _,
            "max.message.bytes" => self.max_message_bytes = positive()? as usize,
            "min.insync.replicas" => {
                self.min_insync_replicas =
                    u16::try_from(positive()?).map_err(|_| invalid("too large"))?
            }
            "delete.retention.ms" => self.delete_retention_ms = positive()? as _,
            "unclean.leader.election.enable" => {
                self.unclean_leader_election_enable = match value {
                    "true" => true,
                    "false" => false,
                    _ => return Err(invalid("true or false")),
                }
            }
            "compression.type" => {
                self.compression_type =
                    TopicCompression::from_name(value).ok_or_else(|| invalid("an unknown codec"))?
            }
            "flush.messages" if value == i64::MAX.to_string() => self.flush_messages = None,
            "flush.messages" => self.flush_messages = Some(positive()?),
            "flush.ms" if value == i64::MAX.to_string() => self.flush_ms = None,
            "flush.ms" => self.flush_ms = Some(positive()? as _),
            "index.interval.bytes" => self.index_interval_bytes = positive()?,
            _ => return Err(invalid("not a topic setting ferrolog has")),
        }
        Ok(())
    }

    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.segment_bytes < 1024 || self.segment_bytes > i32::MAX as u64 {
            return Err(Error::config(
                "segment_bytes",
                format!(
                    "{} is outside 1024..={} bytes",
                    self.segment_bytes,
                    i32::MAX
                ),
            ));
        }
        if self.segment_ms <= 0 {
            return Err(Error::config("segment_ms", "must be positive"));
        }
        if self.index_interval_bytes == 0 || self.index_interval_bytes > self.segment_bytes {
            return Err(Error::config(
                "index_interval_bytes",
                format!(
                    "{} is outside 1..=segment_bytes ({})",
                    self.index_interval_bytes, self.segment_bytes
                ),
            ));
        }
        if matches!(self.retention_ms, Some(ms) if ms <= 0) {
            return Err(Error::config(
                "retention_ms",
                "must be positive (None keeps data forever)",
            ));
        }
        if self.retention_bytes == Some(0) {
            return Err(Error::config(
                "retention_bytes",
                "must be positive (None sets no limit)",
            ));
        }
        if self.flush_messages == Some(0) {
            return Err(Error::config(
                "flush_messages",
                "must be positive (None leaves flushing to the OS)",
            ));
        }
        if matches!(self.flush_ms, Some(ms) if ms <= 0) {
            return Err(Error::config(
                "flush_ms",
                "must be positive (None leaves flushing to the OS)",
            ));
        }
        if self.delete_retention_ms < 0 {
            return Err(Error::config("delete_retention_ms", "must not be negative"));
        }
        if self.min_insync_replicas == 0 {
            return Err(Error::config("min_insync_replicas", "must be at least 1"));
        }
        if let Some(codec) = self.compression_type.codec().filter(|c| !c.is_enabled()) {
            return Err(Error::config(
                "compression_type",
                format!(
                    "{} needs ferrolog's `{}` cargo feature",
                    codec.name(),
                    codec.feature()
                ),
            ));
        }
        if self.max_message_bytes < crate::record::BATCH_HEADER_LEN {
            return Err(Error::config(
                "max_message_bytes",
                format!(
                    "{} is smaller than a batch header (61 bytes)",
                    self.max_message_bytes
                ),
            ));
        }
        Ok(())
    }
}
