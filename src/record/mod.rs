//! The record format: one byte layout on disk, in memory and on the wire.
//!
//! This module owns Kafka's RecordBatch v2 encoding ([`RecordBatch`],
//! [`RecordBatchBuilder`]) and the plain [`Record`] a user sees. It knows
//! nothing about logs, partitions or brokers; storage and the network layer hold
//! batches as [`bytes::Bytes`] and use this module to check and read them.

mod batch;
mod compression;
mod hash;
mod varint;

pub(crate) use batch::BatchHeader;
pub use batch::{
    BATCH_HEADER_LEN, BatchBody, HeaderViews, LOG_OVERHEAD, MAGIC_V2, NO_PARTITION_LEADER_EPOCH,
    NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, RecordBatch, RecordBatchBuilder, RecordIter,
    RecordView, RecordViews, batch_size_at, stamp_header,
};
pub use compression::MAX_DECOMPRESSED_BATCH_BYTES;
pub use hash::murmur2;

use bytes::Bytes;

use crate::error::{Error, Result};

/// One record: what a producer sends and a consumer receives.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Position in the partition, assigned by the log on append.
    pub offset: u64,
    /// Milliseconds since the Unix epoch: the producer's create time, or the
    /// log's append time when the topic says so.
    pub timestamp: i64,
    /// Optional key; the partitioner and compaction use it.
    pub key: Option<Bytes>,
    /// Optional value; `None` is a tombstone.
    pub value: Option<Bytes>,
    /// Application headers, in order; names may repeat.
    pub headers: Vec<Header>,
}

/// A record header: a UTF-8 name and an optional byte value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// The header's name.
    pub key: String,
    /// The header's value; `None` is Kafka's null header value.
    pub value: Option<Bytes>,
}

/// Batch compression codecs, with Kafka's attribute ids. Each codec but
/// `None` needs its cargo feature (`gzip`, `snappy`, `lz4`, `zstd`, or
/// `compression` for all four); see [`Compression::is_enabled`].
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
pub enum Compression {
    /// Id 0.
    #[default]
    None = 0,
    /// Id 1.
    Gzip = 1,
    /// Id 2.
    Snappy = 2,
    /// Id 3.
    Lz4 = 3,
    /// Id 4.
    Zstd = 4,
}

impl Compression {
    /// The codec for a Kafka attribute id, if known.
    pub fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::None,
            1 => Self::Gzip,
            2 => Self::Snappy,
            3 => Self::Lz4,
            4 => Self::Zstd,
            _ => return None,
        })
    }

    /// The codec's lower-case name, as in Kafka's `compression.type`.
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Gzip => "gzip",
            Self::Snappy => "snappy",
            Self::Lz4 => "lz4",
            Self::Zstd => "zstd",
        }
    }
}

/// What a batch's timestamps mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TimestampType {
    /// Set by the producer when the record was created.
    CreateTime,
    /// Set by the log when it appended the batch (the batch's max timestamp).
    LogAppendTime,
}

/// Whole batches laid end to end in one or more buffers: what a log read
/// returns. Each chunk is a slice of the log's own memory (a memory-mapped
/// segment or an in-memory batch); nothing was copied to build it.
#[derive(Debug, Clone, Default)]
pub struct Records {
    chunks: Vec<Bytes>,
    size: usize,
}

impl Records {
    /// No batches.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Adds a buffer holding one or more whole batches.
    pub fn push_chunk(&mut self, chunk: Bytes) {
        self.size += chunk.len();
        self.chunks.push(chunk);
    }

    /// Total size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Whether there is no batch.
    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    /// The underlying buffers, in order (for vectored network writes).
    #[inline]
    pub fn chunks(&self) -> &[Bytes] {
        &self.chunks
    }

    /// Drops every batch whose base offset is `end_offset` or more (a read
    /// trimmed to the high watermark). Batches are not split; a buffer that
    /// does not parse as batches is kept as it is up to the first bad header.
    pub fn truncate_at_offset(&mut self, end_offset: u64) {
        let mut kept = 0;
        for i in 0..self.chunks.len() {
            let chunk = &self.chunks[i];
            let mut pos = 0;
            while pos + 8 <= chunk.len() {
                let base = u64::from_be_bytes(chunk[pos..pos + 8].try_into().unwrap_or_default());
                if base >= end_offset {
                    break;
                }
                match batch_size_at(&chunk[pos..]) {
                    Some(size) if pos + size <= chunk.len() => pos += size,
                    _ => {
                        pos = chunk.len();
                        break;
                    }
                }
            }
            if pos < chunk.len() {
                let cut = self.chunks[i].slice(..pos);
                self.chunks.truncate(i);
                if !cut.is_empty() {
                    self.chunks.push(cut);
                }
                self.size = kept + pos;
                return;
            }
            kept += chunk.len();
        }
    }

    /// The batches, split by their length fields. A buffer that does not split
    /// into whole batches yields [`Error::CorruptRecord`].
    #[inline]
    pub fn batches(&self) -> impl Iterator<Item = Result<RecordBatch>> + '_ {
        self.chunks.iter().flat_map(|chunk| BatchSplitter {
            rest: chunk.clone(),
        })
    }

    /// All records of all batches, decoded.
    pub fn records(&self) -> impl Iterator<Item = Result<Record>> + '_ {
        self.batches().flat_map(|batch| {
            let iter: Box<dyn Iterator<Item = Result<Record>>> = match batch {
                Ok(batch) => Box::new(batch.records()),
                Err(e) => Box::new(std::iter::once(Err(e))),
            };
            iter
        })
    }
}

/// Splits a buffer of concatenated batches.
#[derive(Debug)]
pub(crate) struct BatchSplitter {
    pub(crate) rest: Bytes,
}

impl Iterator for BatchSplitter {
    type Item = Result<RecordBatch>;

    #[inline]
    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.rest.is_empty() {
            return None;
        }
        let item = match batch_size_at(&self.rest) {
            Some(size) if size <= self.rest.len() => {
                RecordBatch::from_bytes(self.rest.split_to(size))
            }
            _ => Err(Error::corrupt("buffer ends inside a batch")),
        };
        if item.is_err() {
            self.rest.clear();
        }
        Some(item)
    }
}
