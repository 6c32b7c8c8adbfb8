//! The crate's one error type.
//!
//! Every fallible operation in ferrolog returns [`Result<T>`]. Variants are named
//! after Kafka's error codes where Kafka has one, so a Kafka user recognises them,
//! and each says whether retrying the same operation can succeed
//! ([`Error::is_retriable`]).

use std::path::PathBuf;

/// Shorthand for `std::result::Result<T, ferrolog::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in ferrolog.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A configuration value is out of range or inconsistent with another one.
    /// Raised when the config is built, never later.
    #[error("invalid config `{field}`: {reason}")]
    InvalidConfig {
        /// The setting's name, in Kafka's snake_case spelling.
        field: &'static str,
        /// What is wrong with the value.
        reason: String,
    },

    /// A topic name Kafka would also refuse (empty, too long, or characters
    /// outside `[a-zA-Z0-9._-]`).
    #[error("invalid topic name {name:?}: {reason}")]
    InvalidTopic {
        /// The refused name.
        name: String,
        /// Why it was refused.
        reason: &'static str,
    },

    /// Bytes that should hold a record batch do not: bad length, magic, CRC or
    /// record framing (Kafka: `CORRUPT_MESSAGE`). Raised for input from a client,
    /// the network or a user; the data is not stored.
    #[error("corrupt record batch: {reason}")]
    CorruptRecord {
        /// What check failed.
        reason: String,
    },

    /// Data already in a log file failed validation where it cannot be safely
    /// truncated (below the recovery point, i.e. data that was flushed). The log
    /// refuses to serve it (Kafka: `KAFKA_STORAGE_ERROR`).
    #[error("corrupt log file {}: at offset {offset}: {reason}", path.display())]
    CorruptLog {
        /// The file that holds the bad bytes.
        path: PathBuf,
        /// The offset of the first record that could not be read.
        offset: u64,
        /// What check failed.
        reason: String,
    },

    /// A batch uses a compression codec this build does not include
    /// (Kafka: `UNSUPPORTED_COMPRESSION_TYPE`).
    #[error("compression codec `{codec}` is not supported by this build")]
    UnsupportedCompression {
        /// The codec's name.
        codec: &'static str,
    },

    /// A batch or request is larger than the configured limit
    /// (`max_message_bytes` on a log; Kafka: `MESSAGE_TOO_LARGE`).
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    RecordTooLarge {
        /// The size that was offered.
        size: usize,
        /// The configured maximum.
        max: usize,
    },

    /// A read asked for an offset outside `[log_start_offset, log_end_offset]`.
    #[error(
        "offset {offset} is out of range: the log holds [{log_start_offset}, {log_end_offset})"
    )]
    OffsetOutOfRange {
        /// The offset asked for.
        offset: u64,
        /// The first offset still in the log.
        log_start_offset: u64,
        /// The next offset to be written.
        log_end_offset: u64,
    },

    /// A replicated append did not start at the log end offset
    /// (Kafka: `UnexpectedAppendOffsetException`).
    #[error("replicated batch starts at offset {got}, but the log ends at {expected}")]
    UnexpectedAppendOffset {
        /// The log end offset the batch had to start at.
        expected: u64,
        /// The batch's base offset.
        got: u64,
    },

    /// A leader tried to append with an epoch older than one the log already
    /// holds, or a negative one (Kafka: `FENCED_LEADER_EPOCH`).
    #[error("leader epoch {epoch} is fenced: the log already holds epoch {latest}")]
    FencedLeaderEpoch {
        /// The epoch the append carried.
        epoch: i32,
        /// The newest epoch in the log (-1 if none).
        latest: i32,
    },

    /// An I/O error in the middle of a change left the log inconsistent with
    /// its files; it refuses every operation until reopened, which recovers it
    /// (Kafka: `KAFKA_STORAGE_ERROR`, an offline log directory).
    #[error("the log is offline: {reason}")]
    LogOffline {
        /// The error that took it offline.
        reason: String,
    },

    /// A log was opened while another handle to it is still open.
    #[error("the log of {partition} is already open")]
    LogInUse {
        /// The partition (and replica) whose log is open.
        partition: String,
    },

    /// An operating-system I/O error, with the file or step it happened on.
    #[error("I/O error on {context}: {source}")]
    Io {
        /// The path or the step that failed.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// Whether the same operation may succeed if it is tried again later.
    ///
    /// Mirrors Kafka's `RetriableException` split: a corrupt batch on the wire and
    /// a storage I/O error are retriable (the next attempt may carry or find good
    /// bytes); bad config, oversized records and out-of-range offsets are not.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            Error::CorruptRecord { .. } | Error::Io { .. } | Error::LogOffline { .. }
        )
    }

    pub(crate) fn corrupt(reason: impl Into<String>) -> Self {
        Error::CorruptRecord {
            reason: reason.into(),
        }
    }

    pub(crate) fn config(field: &'static str, reason: impl Into<String>) -> Self {
        Error::InvalidConfig {
            field,
            reason: reason.into(),
        }
    }

    pub(crate) fn io(context: impl std::fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }
}
