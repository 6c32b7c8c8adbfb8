//! Kafka's RecordBatch v2: building, decoding, validating and stamping batches.
//!
//! Layout (big-endian), as in Kafka's `DefaultRecordBatch`:
//!
//! ```text
//! 0  base_offset            i64   ┐ not covered by the CRC: the broker
//! 8  batch_length           i32   │ rewrites base offset and leader epoch
//! 12 partition_leader_epoch i32   ┘ in place when it appends
//! 16 magic                  i8    (= 2)
//! 17 crc                    u32   CRC-32C of bytes 21..end
//! 21 attributes             i16   compression:3 | timestamp type:1 | transactional:1 | control:1
//!                                 | delete horizon:1 (bit 6, set by the log cleaner)
//! 23 last_offset_delta      i32
//! 27 base_timestamp         i64   the first record's timestamp, or the delete horizon
//! 35 max_timestamp          i64
//! 43 producer_id            i64
//! 51 producer_epoch         i16
//! 53 base_sequence          i32
//! 57 record_count           i32
//! 61 records…               each: varint length, i8 attributes, varlong timestamp
//!                           delta, varint offset delta, key, value, headers
//! ```

use bytes::Bytes;

use super::compression;
use super::varint::{
    get_varint, get_varlong, put_varint, put_varlong, varint_fast, varint_len, varlong_fast,
    varlong_len,
};
use super::{Compression, Header, Record, TimestampType};
use crate::error::{Error, Result};

const BASE_OFFSET: usize = 0;
const BATCH_LENGTH: usize = 8;
const PARTITION_LEADER_EPOCH: usize = 12;
const MAGIC: usize = 16;
const CRC: usize = 17;
const ATTRIBUTES: usize = 21;
const LAST_OFFSET_DELTA: usize = 23;
const BASE_TIMESTAMP: usize = 27;
const MAX_TIMESTAMP: usize = 35;
const PRODUCER_ID: usize = 43;
const PRODUCER_EPOCH: usize = 51;
const BASE_SEQUENCE: usize = 53;
const RECORD_COUNT: usize = 57;

/// Bytes before `batch_length` counts: base offset (8) and the length itself (4).
pub const LOG_OVERHEAD: usize = 12;
/// Size of the v2 batch header; records start here.
pub const BATCH_HEADER_LEN: usize = 61;
/// The only batch format ferrolog reads and writes.
pub const MAGIC_V2: i8 = 2;
/// Producer id, epoch and sequence of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_PRODUCER_EPOCH: i16 = -1;
/// See [`NO_PRODUCER_ID`].
pub const NO_SEQUENCE: i32 = -1;
/// The partition leader epoch of a batch no leader has stamped yet.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

const ATTR_COMPRESSION_MASK: i16 = 0x07;
/// The codec name of compression ids 5 to 7, which Kafka does not define.
const UNKNOWN_CODEC: &str = "unknown";
const ATTR_TIMESTAMP_TYPE: i16 = 0x08;
const ATTR_TRANSACTIONAL: i16 = 0x10;
const ATTR_CONTROL: i16 = 0x20;
/// Kafka's attribute bit 6 (KIP-534): the base timestamp is the batch's delete
/// horizon, set by the log cleaner, not the first record's timestamp.
const ATTR_DELETE_HORIZON: i16 = 0x40;

#[inline]
fn be_i16(b: &[u8], at: usize) -> i16 {
    i16::from_be_bytes([b[at], b[at + 1]])
}
#[inline]
fn be_i32(b: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
#[inline]
fn be_i64(b: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads the total size of the batch that starts `buf`, from its `batch_length`
/// field, without validating anything else. `None` if fewer than
/// [`LOG_OVERHEAD`] bytes are given or the length field is negative.
pub fn batch_size_at(buf: &[u8]) -> Option<usize> {
    if buf.len() < LOG_OVERHEAD {
        return None;
    }
    let len = be_i32(buf, BATCH_LENGTH);
    usize::try_from(len).ok().map(|l| l + LOG_OVERHEAD)
}

/// Writes a base offset and partition leader epoch into the header at the start
/// of `header` (at least 16 bytes). The CRC does not cover these fields, so the
/// batch stays valid.
pub fn stamp_header(header: &mut [u8], base_offset: u64, partition_leader_epoch: i32) {
    header[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&(base_offset as i64).to_be_bytes());
    header[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&partition_leader_epoch.to_be_bytes());
}

/// One v2 record batch over a shared, immutable buffer.
///
/// Construction ([`RecordBatch::from_bytes`]) checks only the framing: enough
/// bytes, a length that matches, magic 2. [`RecordBatch::validate`] checks the
/// CRC and the record framing; storage runs it on every append. Decoding records
/// ([`RecordBatch::records`]) hands out keys and values as slices of the same
/// buffer: nothing is copied.
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    bytes: Bytes,
}

impl std::fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatch")
            .field("base_offset", &self.base_offset())
            .field("record_count", &self.record_count())
            .field("size", &self.size())
            .field("partition_leader_epoch", &self.partition_leader_epoch())
            .finish_non_exhaustive()
    }
}

impl RecordBatch {
    /// Wraps `bytes`, which must hold exactly one v2 batch.
    pub fn from_bytes(bytes: Bytes) -> Result<Self> {
        let size = batch_size_at(&bytes)
            .ok_or_else(|| Error::corrupt("batch shorter than its 12-byte log overhead"))?;
        if size < BATCH_HEADER_LEN {
            return Err(Error::corrupt(format!(
                "batch length {size} is shorter than the 61-byte v2 header"
            )));
        }
        if size != bytes.len() {
            return Err(Error::corrupt(format!(
                "batch length field says {size} bytes but {} were given",
                bytes.len()
            )));
        }
        let magic = bytes[MAGIC] as i8;
        if magic != MAGIC_V2 {
            return Err(Error::corrupt(format!(
                "magic byte {magic}; only v2 batches are supported"
            )));
        }
        Ok(Self { bytes })
    }

    /// The whole batch as bytes (header and records).
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Gives back the buffer.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// Total size in bytes, header included.
    #[inline]
    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// Offset of the first record.
    #[inline]
    pub fn base_offset(&self) -> u64 {
        be_i64(&self.bytes, BASE_OFFSET) as u64
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    #[inline]
    pub fn last_offset(&self) -> u64 {
        self.base_offset()
            .wrapping_add(self.last_offset_delta().max(0) as u64)
    }

    /// The offset after this batch's last record.
    #[inline]
    pub fn next_offset(&self) -> u64 {
        self.last_offset().wrapping_add(1)
    }

    /// The `batch_length` field: size minus [`LOG_OVERHEAD`].
    pub fn batch_length(&self) -> i32 {
        be_i32(&self.bytes, BATCH_LENGTH)
    }

    /// Epoch of the leader that appended the batch.
    pub fn partition_leader_epoch(&self) -> i32 {
        be_i32(&self.bytes, PARTITION_LEADER_EPOCH)
    }

    /// Format version; always 2.
    pub fn magic(&self) -> i8 {
        self.bytes[MAGIC] as i8
    }

    /// The stored CRC-32C.
    pub fn crc(&self) -> u32 {
        be_i32(&self.bytes, CRC) as u32
    }

    /// The CRC-32C computed over attributes..end.
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(&self.bytes[ATTRIBUTES..])
    }

    /// The raw attributes field.
    #[inline]
    pub fn attributes(&self) -> i16 {
        be_i16(&self.bytes, ATTRIBUTES)
    }

    /// The compression codec named by the attributes (`None` for unknown bits).
    #[inline]
    pub fn compression(&self) -> Option<Compression> {
        Compression::from_id((self.attributes() & ATTR_COMPRESSION_MASK) as u8)
    }

    /// Whether timestamps are the producer's create time or the log's append time.
    #[inline]
    pub fn timestamp_type(&self) -> TimestampType {
        if self.attributes() & ATTR_TIMESTAMP_TYPE != 0 {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Whether the batch belongs to a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes() & ATTR_TRANSACTIONAL != 0
    }

    /// Whether the batch holds a control record (transaction marker).
    pub fn is_control(&self) -> bool {
        self.attributes() & ATTR_CONTROL != 0
    }

    /// Offset delta of the last record.
    #[inline]
    pub fn last_offset_delta(&self) -> i32 {
        be_i32(&self.bytes, LAST_OFFSET_DELTA)
    }

    /// The base timestamp, from which every record's timestamp is a delta: the
    /// first record's timestamp, or, in a batch the log cleaner marked, the
    /// delete horizon ([`delete_horizon_ms`](Self::delete_horizon_ms)).
    #[inline]
    pub fn first_timestamp(&self) -> i64 {
        be_i64(&self.bytes, BASE_TIMESTAMP)
    }

    /// When the log cleaner may remove this batch's tombstones (Kafka's
    /// KIP-534 delete horizon: attribute bit 6 set, the base timestamp holds
    /// the horizon), or `None` if no cleaner has marked the batch.
    pub fn delete_horizon_ms(&self) -> Option<i64> {
        (self.attributes() & ATTR_DELETE_HORIZON != 0).then(|| self.first_timestamp())
    }

    /// Largest timestamp in the batch.
    #[inline]
    pub fn max_timestamp(&self) -> i64 {
        be_i64(&self.bytes, MAX_TIMESTAMP)
    }

    /// Idempotent producer id, or [`NO_PRODUCER_ID`].
    pub fn producer_id(&self) -> i64 {
        be_i64(&self.bytes, PRODUCER_ID)
    }

    /// Idempotent producer epoch, or [`NO_PRODUCER_EPOCH`].
    pub fn producer_epoch(&self) -> i16 {
        be_i16(&self.bytes, PRODUCER_EPOCH)
    }

    /// Sequence number of the first record, or [`NO_SEQUENCE`].
    pub fn base_sequence(&self) -> i32 {
        be_i32(&self.bytes, BASE_SEQUENCE)
    }

    /// Number of records in the batch, as the header says.
    #[inline]
    pub fn record_count(&self) -> i32 {
        be_i32(&self.bytes, RECORD_COUNT)
    }

    /// Checks the CRC and, for uncompressed batches, that the records region
    /// holds exactly `record_count` length-framed records whose lengths add up.
    /// Compressed batches are stored as they come (the leader checked their
    /// records); they are decoded when read. A compression id Kafka does not
    /// define is [`Error::UnsupportedCompression`]. This is the check for
    /// batches a log already assigned offsets to (replication, recovery, reads).
    pub fn validate(&self) -> Result<()> {
        self.check(false)
    }

    /// [`validate`](Self::validate), plus what a leader must check before it
    /// assigns offsets to a producer's batch: at least one record, offset
    /// deltas exactly `0..record_count`, first and max timestamps in the
    /// header that match the records (retention and time lookups trust them),
    /// and every record decodable — key, value and headers within the record,
    /// header keys present and UTF-8, no byte left over — so that no batch a
    /// consumer cannot read is ever stored (Kafka's broker decodes every
    /// record of a produced batch too). An uncompressed batch is checked in
    /// place; a compressed one is decompressed (at most
    /// [`MAX_DECOMPRESSED_BATCH_BYTES`](super::MAX_DECOMPRESSED_BATCH_BYTES))
    /// and its records checked, but it is not re-compressed: its bytes are
    /// stored as the producer sent them. A codec this build lacks (see
    /// [`Compression::is_enabled`]) or does not know is
    /// [`Error::UnsupportedCompression`].
    pub fn validate_produced(&self) -> Result<()> {
        self.check(true)
    }

    fn check(&self, produced: bool) -> Result<()> {
        let stored = self.crc();
        let computed = self.compute_crc();
        if stored != computed {
            return Err(Error::corrupt(format!(
                "CRC mismatch: stored {stored:#010x}, computed {computed:#010x}"
            )));
        }
        let count = self.record_count();
        let last_delta = self.last_offset_delta();
        if count < 0 || last_delta < 0 {
            return Err(Error::corrupt(format!(
                "record count {count}, last offset delta {last_delta}"
            )));
        }
        if produced && (count == 0 || last_delta != count - 1) {
            return Err(Error::corrupt(format!(
                "a produced batch needs offset deltas 0..{count}, but its last is {last_delta}"
            )));
        }
        let inflated;
        let body = match self.compression() {
            Some(Compression::None) => &self.bytes[BATCH_HEADER_LEN..],
            // Stored as they come after a leader checked them; decoded when read.
            Some(_) if !produced => return Ok(()),
            Some(codec) => {
                inflated = compression::decompress(codec, &self.bytes[BATCH_HEADER_LEN..])?;
                &inflated[..]
            }
            None => {
                return Err(Error::UnsupportedCompression {
                    codec: UNKNOWN_CODEC,
                });
            }
        };
        let first_ts = self.first_timestamp();
        let (pos, max_ts) = match produced
            .then(|| walk_produced_fast(body, count, first_ts))
            .flatten()
        {
            Some(walked) => walked,
            None => walk_records_checked(body, count, first_ts, produced)?,
        };
        if pos != body.len() {
            return Err(Error::corrupt(format!(
                "{} bytes after the last of {count} records",
                body.len() - pos
            )));
        }
        if produced
            && self.timestamp_type() == TimestampType::CreateTime
            && max_ts != self.max_timestamp()
        {
            return Err(Error::corrupt(format!(
                "header max timestamp {} but the records' largest is {max_ts}",
                self.max_timestamp()
            )));
        }
        Ok(())
    }

    /// This batch with its base sequence replaced and the CRC made valid
    /// again (a producer renumbering a batch it has not had written).
    pub(crate) fn with_base_sequence(&self, sequence: i32) -> RecordBatch {
        let mut bytes = self.bytes.to_vec();
        bytes[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&sequence.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        RecordBatch {
            bytes: Bytes::from(bytes),
        }
    }

    /// This batch with `base_offset` and `partition_leader_epoch` written into
    /// its header. The CRC is untouched. In place when this is the only handle
    /// to the buffer; otherwise the batch is copied once.
    pub fn stamped(self, base_offset: u64, partition_leader_epoch: i32) -> RecordBatch {
        let bytes = match self.bytes.try_into_mut() {
            Ok(mut unique) => {
                stamp_header(&mut unique, base_offset, partition_leader_epoch);
                unique.freeze()
            }
            Err(shared) => {
                let mut copy = shared.to_vec();
                stamp_header(&mut copy, base_offset, partition_leader_epoch);
                Bytes::from(copy)
            }
        };
        RecordBatch { bytes }
    }

    /// Decodes the records one by one. Keys, values and header values are
    /// slices of this batch's buffer, or, for a compressed batch, of one
    /// buffer holding its decompressed records. A codec this build lacks is
    /// one [`Error::UnsupportedCompression`] item; records that do not
    /// decompress are one [`Error::CorruptRecord`].
    ///
    /// What decoding checks, each failure an [`Error::CorruptRecord`] item
    /// that ends the iteration: a negative record count, each record's
    /// length and that its fields (key, value, headers) fill it exactly,
    /// header keys present and UTF-8, and no bytes after the last record.
    /// What only [`validate`](Self::validate) checks is the CRC: a byte
    /// flipped in the header (timestamps, attributes, base offset) or inside
    /// a key or value decodes to a wrong value without an error, so check a
    /// batch from outside with `validate` first (every log does, on append
    /// and on recovery).
    pub fn records(&self) -> RecordIter {
        match self.body() {
            Ok(body) => RecordIter {
                pending_error: None,
                remaining: body.count,
                body,
                pos: 0,
            },
            Err(e) => RecordIter {
                pending_error: Some(e),
                remaining: 1,
                body: BatchBody::default(),
                pos: 0,
            },
        }
    }

    /// The batch's records region, decompressed if the batch is compressed
    /// (a slice of this batch's buffer if not: nothing is copied), ready to
    /// be walked without allocating: see [`BatchBody::views`]. A negative
    /// record count, or bytes in a batch of none, is
    /// [`Error::CorruptRecord`]; a codec this build lacks
    /// [`Error::UnsupportedCompression`].
    ///
    /// ```
    /// use ferrolog::record::RecordBatchBuilder;
    /// let mut builder = RecordBatchBuilder::new();
    /// builder.append(1_700_000_000_000, Some(b"k"), Some(b"v"), &[]);
    /// let batch = builder.build();
    /// let body = batch.body()?;
    /// for record in body.views() {
    ///     let record = record?;
    ///     assert_eq!((record.key, record.value), (Some(&b"k"[..]), Some(&b"v"[..])));
    /// }
    /// # Ok::<(), ferrolog::Error>(())
    /// ```
    pub fn body(&self) -> Result<BatchBody> {
        let count = self.record_count();
        let stored = self.bytes.slice(BATCH_HEADER_LEN..);
        let bytes = match self.compression() {
            Some(Compression::None) => stored,
            Some(_) if stored.is_empty() => stored,
            Some(codec) => Bytes::from(compression::decompress(codec, &stored)?),
            None => {
                return Err(Error::UnsupportedCompression {
                    codec: UNKNOWN_CODEC,
                });
            }
        };
        if count < 0 {
            return Err(Error::corrupt(format!("record count {count}")));
        }
        if count == 0 && !bytes.is_empty() {
            return Err(Error::corrupt(format!(
                "{} bytes in a batch of 0 records",
                bytes.len()
            )));
        }
        Ok(BatchBody {
            bytes,
            count: count as usize,
            base_offset: self.base_offset(),
            first_timestamp: self.first_timestamp(),
            log_append_time: (self.timestamp_type() == TimestampType::LogAppendTime)
                .then(|| self.max_timestamp()),
        })
    }
}

/// The records region of one batch, uncompressed: what
/// [`RecordBatch::body`] gives. [`views`](Self::views) walks it record by
/// record with keys, values and headers borrowed from it.
#[derive(Debug, Clone, Default)]
pub struct BatchBody {
    bytes: Bytes,
    count: usize,
    base_offset: u64,
    first_timestamp: i64,
    log_append_time: Option<i64>,
}

impl BatchBody {
    /// The records, uncompressed, as their bytes.
    #[inline]
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The number of records the batch header promises.
    pub fn record_count(&self) -> usize {
        self.count
    }

    /// A decoded record's view: offset and timestamp from the batch's
    /// base, offset and timestamp deltas.
    #[inline(always)]
    fn view<'a>(
        &self,
        offset_delta: i32,
        ts_delta: i64,
        key: Option<&'a [u8]>,
        value: Option<&'a [u8]>,
        header_count: usize,
        headers: &'a [u8],
    ) -> RecordView<'a> {
        RecordView {
            offset: self.base_offset.wrapping_add(offset_delta as u64),
            timestamp: self
                .log_append_time
                .unwrap_or(self.first_timestamp.wrapping_add(ts_delta)),
            key,
            value,
            header_count,
            headers,
        }
    }

    /// The records one by one, borrowed: decoding allocates nothing and
    /// touches no reference count. Each record's length, offset delta, key
    /// and value are checked as it is decoded (an error ends the walk);
    /// headers are decoded only when [`RecordView::headers`] is iterated.
    #[inline]
    pub fn views(&self) -> RecordViews<'_> {
        RecordViews {
            body: self,
            pos: 0,
            remaining: self.count,
        }
    }
}

/// One record borrowed from a [`BatchBody`]; see [`BatchBody::views`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordView<'a> {
    /// Position in the partition.
    pub offset: u64,
    /// The record's timestamp (the batch's, for log-append-time batches).
    pub timestamp: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
    /// The value; `None` is a tombstone.
    pub value: Option<&'a [u8]>,
    header_count: usize,
    headers: &'a [u8],
}

impl<'a> RecordView<'a> {
    /// The number of headers the record declares.
    pub fn header_count(&self) -> usize {
        self.header_count
    }

    /// The headers as (key, value) pairs, decoded as they are iterated. A
    /// header that runs past the record, a null or non-UTF-8 key, or bytes
    /// after the last header is an [`Error::CorruptRecord`] item that ends
    /// the iteration.
    #[inline]
    pub fn headers(&self) -> HeaderViews<'a> {
        HeaderViews {
            rest: self.headers,
            remaining: self.header_count,
        }
    }
}

/// Iterator over a [`RecordView`]'s headers.
#[derive(Debug, Clone)]
pub struct HeaderViews<'a> {
    rest: &'a [u8],
    remaining: usize,
}

impl<'a> Iterator for HeaderViews<'a> {
    type Item = Result<(&'a str, Option<&'a [u8]>)>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            if self.rest.is_empty() {
                return None;
            }
            let left = self.rest.len();
            self.rest = &[];
            return Some(Err(Error::corrupt(format!(
                "{left} bytes after the record's last header"
            ))));
        }
        let mut pos = 0;
        let item = nullable_slice(self.rest, &mut pos)
            .and_then(|key| key.ok_or_else(|| Error::corrupt("null header key")))
            .and_then(|key| {
                std::str::from_utf8(key).map_err(|_| Error::corrupt("header key is not UTF-8"))
            })
            .and_then(|key| Ok((key, nullable_slice(self.rest, &mut pos)?)));
        match item {
            Ok(_) => {
                self.remaining -= 1;
                self.rest = &self.rest[pos..];
            }
            Err(_) => {
                self.remaining = 0;
                self.rest = &[];
            }
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining + 1))
    }
}

/// Iterator over a [`BatchBody`]'s records; see [`BatchBody::views`].
#[derive(Debug, Clone)]
pub struct RecordViews<'a> {
    body: &'a BatchBody,
    pos: usize,
    remaining: usize,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = Result<RecordView<'a>>;

    #[inline]
    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        Some(next_view(self.body, &mut self.pos, &mut self.remaining))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// The next of the `remaining` records of `body` at `*pos`: an error ends
/// the walk (`remaining` drops to 0), and so do bytes after the last one.
#[inline]
fn next_view<'a>(
    body: &'a BatchBody,
    pos: &mut usize,
    remaining: &mut usize,
) -> Result<RecordView<'a>> {
    *remaining -= 1;
    let item = decode_view(body, pos);
    if item.is_err() {
        *remaining = 0;
    } else if *remaining == 0 && *pos != body.bytes.len() {
        return Err(Error::corrupt("bytes after the last record"));
    }
    item
}

/// Decodes the record at `*pos` of `body`, moving `pos` past it: the fast
/// path, and on any doubt the checked one for the precise error.
#[inline]
fn decode_view<'a>(body: &'a BatchBody, pos: &mut usize) -> Result<RecordView<'a>> {
    let mut at = *pos;
    match decode_view_fast(body, &mut at) {
        Some(view) => {
            *pos = at;
            Ok(view)
        }
        None => decode_view_checked(body, pos),
    }
}

/// A field of `rec` at `pos`, for [`decode_view_fast`]: `Some(None)` is null.
#[inline(always)]
fn nullable_fast<'a>(rec: &'a [u8], pos: &mut usize) -> Option<Option<&'a [u8]>> {
    let len = varint_fast(rec, pos)?;
    if len < 0 {
        return Some(None);
    }
    let start = *pos;
    let end = start.checked_add(len as usize)?;
    let field = rec.get(start..end)?;
    *pos = end;
    Some(Some(field))
}

/// [`decode_view_checked`] without building errors: `None` wherever it
/// would fail, so errors never slow the common case down.
#[inline(always)]
fn decode_view_fast<'a>(body: &'a BatchBody, pos: &mut usize) -> Option<RecordView<'a>> {
    let buf = &body.bytes[..];
    let len = usize::try_from(varint_fast(buf, pos)?).ok()?;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len())?;
    let rec = &buf[..end];
    if *pos >= end {
        return None;
    }
    let mut at = *pos + 1; // record attributes: unused in v2
    let ts_delta = varlong_fast(rec, &mut at)?;
    let offset_delta = varint_fast(rec, &mut at)?;
    if offset_delta < 0 {
        return None;
    }
    let key = nullable_fast(rec, &mut at)?;
    let value = nullable_fast(rec, &mut at)?;
    let header_count = usize::try_from(varint_fast(rec, &mut at)?).ok()?;
    if header_count > (end - at) / 2 {
        return None;
    }
    *pos = end;
    Some(body.view(offset_delta, ts_delta, key, value, header_count, &rec[at..]))
}

/// Decodes the record at `*pos` of `body` with every check spelled out as
/// an error, moving `pos` past it.
fn decode_view_checked<'a>(body: &'a BatchBody, pos: &mut usize) -> Result<RecordView<'a>> {
    let buf = &body.bytes[..];
    let len = get_varint(buf, pos)?;
    let len = usize::try_from(len)
        .map_err(|_| Error::corrupt(format!("negative record length {len}")))?;
    let end = pos
        .checked_add(len)
        .filter(|&e| e <= buf.len())
        .ok_or_else(|| Error::corrupt("record runs past the end of the batch"))?;
    let rec = &buf[..end];
    let mut at = *pos;
    if rec.get(at).is_none() {
        return Err(Error::corrupt("empty record"));
    }
    at += 1; // record attributes: unused in v2
    let ts_delta = get_varlong(rec, &mut at)?;
    let offset_delta = get_varint(rec, &mut at)?;
    if offset_delta < 0 {
        return Err(Error::corrupt(format!("offset delta {offset_delta}")));
    }
    let key = nullable_slice(rec, &mut at)?;
    let value = nullable_slice(rec, &mut at)?;
    let header_count = get_varint(rec, &mut at)?;
    let header_count = usize::try_from(header_count)
        .map_err(|_| Error::corrupt(format!("header count {header_count}")))?;
    // Each header takes at least two bytes, which bounds what a caller
    // collecting them allocates.
    if header_count > (end - at) / 2 {
        return Err(Error::corrupt(format!(
            "header count {header_count} exceeds the record"
        )));
    }
    *pos = end;
    Ok(body.view(offset_delta, ts_delta, key, value, header_count, &rec[at..]))
}

/// Walks the `count` records of a batch body, checking each one's framing
/// (and, for a produced batch, its offset delta, timestamp and fields) with
/// every failure spelled out as an error. Returns where the walk ended and
/// the largest timestamp seen.
fn walk_records_checked(
    body: &[u8],
    count: i32,
    first_ts: i64,
    produced: bool,
) -> Result<(usize, i64)> {
    let mut max_ts = i64::MIN;
    let mut pos = 0;
    for index in 0..count {
        let len = get_varint(body, &mut pos)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or_else(|| Error::corrupt(format!("record length {len}")))?;
        let end = pos
            .checked_add(len)
            .filter(|&p| p <= body.len())
            .ok_or_else(|| Error::corrupt("record runs past the end of the batch"))?;
        if produced {
            let record = &body[..end];
            let mut at = pos + 1; // skip the record attributes
            let ts_delta = get_varlong(record, &mut at)?;
            let offset_delta = get_varint(record, &mut at)?;
            if offset_delta != index {
                return Err(Error::corrupt(format!(
                    "record {index} has offset delta {offset_delta}"
                )));
            }
            let ts = first_ts.wrapping_add(ts_delta);
            if index == 0 && ts != first_ts {
                return Err(Error::corrupt("first record's timestamp delta is not 0"));
            }
            max_ts = max_ts.max(ts);
            check_fields(record, at)?;
        }
        pos = end;
    }
    Ok((pos, max_ts))
}

/// [`walk_records_checked`] for a produced batch without building errors:
/// `None` wherever it would fail (the caller then walks again for the
/// precise error), so a valid batch is checked at the fast decoders' speed.
#[inline]
fn walk_produced_fast(body: &[u8], count: i32, first_ts: i64) -> Option<(usize, i64)> {
    let mut max_ts = i64::MIN;
    let mut pos = 0;
    for index in 0..count {
        let len = usize::try_from(varint_fast(body, &mut pos)?).ok()?;
        let end = pos
            .checked_add(len)
            .filter(|&e| e <= body.len() && len > 0)?;
        let record = &body[..end];
        let mut at = pos + 1; // skip the record attributes
        let ts_delta = varlong_fast(record, &mut at)?;
        if varint_fast(record, &mut at)? != index || (index == 0 && ts_delta != 0) {
            return None;
        }
        max_ts = max_ts.max(first_ts.wrapping_add(ts_delta));
        nullable_fast(record, &mut at)?;
        nullable_fast(record, &mut at)?;
        let headers = usize::try_from(varint_fast(record, &mut at)?).ok()?;
        if headers > (end - at) / 2 {
            return None;
        }
        for _ in 0..headers {
            std::str::from_utf8(nullable_fast(record, &mut at)??).ok()?;
            nullable_fast(record, &mut at)?;
        }
        if at != end {
            return None;
        }
        pos = end;
    }
    Some((pos, max_ts))
}

/// Iterator over the records of one batch; see [`RecordBatch::records`].
#[derive(Debug)]
pub struct RecordIter {
    /// An error found before decoding (a bad record count), yielded first.
    pending_error: Option<Error>,
    body: BatchBody,
    pos: usize,
    remaining: usize,
}

impl RecordIter {
    fn decode_one(&mut self) -> Result<Record> {
        let view = next_view(&self.body, &mut self.pos, &mut self.remaining)?;
        let bytes = &self.body.bytes;
        let owned = |field: Option<&[u8]>| field.map(|f| bytes.slice_ref(f));
        let mut headers = Vec::with_capacity(view.header_count);
        for header in view.headers() {
            let (key, value) = header?;
            headers.push(Header {
                key: key.to_string(),
                value: owned(value),
            });
        }
        Ok(Record {
            offset: view.offset,
            timestamp: view.timestamp,
            key: owned(view.key),
            value: owned(view.value),
            headers,
        })
    }
}

/// A length-prefixed field of `rec` at `pos` (a negative length is null),
/// moving `pos` past it.
fn nullable_slice<'a>(rec: &'a [u8], pos: &mut usize) -> Result<Option<&'a [u8]>> {
    let len = get_varint(rec, pos)?;
    if len < 0 {
        return Ok(None);
    }
    let start = *pos;
    let end = start
        .checked_add(len as usize)
        .filter(|&e| e <= rec.len())
        .ok_or_else(|| Error::corrupt("field runs past the end of the record"))?;
    *pos = end;
    Ok(Some(&rec[start..end]))
}

/// Checks the fields of `record` from `at` (its key) to its end as
/// [`RecordIter`] decodes them, without copying.
fn check_fields(record: &[u8], mut at: usize) -> Result<()> {
    nullable_slice(record, &mut at)?;
    nullable_slice(record, &mut at)?;
    let count = get_varint(record, &mut at)?;
    let count =
        usize::try_from(count).map_err(|_| Error::corrupt(format!("header count {count}")))?;
    // Each header takes at least two bytes.
    if count > record.len().saturating_sub(at) / 2 {
        return Err(Error::corrupt(format!(
            "header count {count} exceeds the record"
        )));
    }
    for _ in 0..count {
        let key =
            nullable_slice(record, &mut at)?.ok_or_else(|| Error::corrupt("null header key"))?;
        std::str::from_utf8(key).map_err(|_| Error::corrupt("header key is not UTF-8"))?;
        nullable_slice(record, &mut at)?;
    }
    if at != record.len() {
        return Err(Error::corrupt(format!(
            "{} bytes after the record's last field",
            record.len() - at
        )));
    }
    Ok(())
}

impl Iterator for RecordIter {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        if self.remaining == 0 {
            return None;
        }
        if let Some(error) = self.pending_error.take() {
            self.remaining = 0;
            return Some(Err(error));
        }
        let item = self.decode_one();
        if item.is_err() {
            // A header that does not decode ends the walk too.
            self.remaining = 0;
        }
        Some(item)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

/// Builds one uncompressed v2 batch, record by record.
///
/// Offsets are deltas from 0 (the log assigns the base offset when it appends),
/// timestamps are deltas from the first record's.
///
/// ```
/// use ferrolog::record::RecordBatchBuilder;
/// let mut builder = RecordBatchBuilder::new();
/// builder.append(1_700_000_000_000, Some(b"key"), Some(b"value"), &[]);
/// let batch = builder.build();
/// batch.validate()?;
/// let record = batch.records().next().unwrap()?;
/// assert_eq!(record.value.as_deref(), Some(&b"value"[..]));
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    buf: Vec<u8>,
    count: i32,
    first_timestamp: i64,
    max_timestamp: i64,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    attributes: i16,
    compression: Compression,
}

impl Default for RecordBatchBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl RecordBatchBuilder {
    /// An empty builder for a batch without producer id (not idempotent).
    pub fn new() -> Self {
        Self::with_capacity(1024)
    }

    /// An empty builder whose buffer starts with `bytes` of capacity.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(bytes.max(BATCH_HEADER_LEN));
        buf.resize(BATCH_HEADER_LEN, 0);
        Self {
            buf,
            count: 0,
            first_timestamp: -1,
            max_timestamp: -1,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            attributes: 0,
            compression: Compression::None,
        }
    }

    /// Compresses the batch's records with `codec` when it is built
    /// ([`Compression::None`], the default, leaves them as they are).
    /// [`size`](Self::size) and [`record_size`](Self::record_size) keep
    /// counting uncompressed bytes. A codec this build lacks (see
    /// [`Compression::is_enabled`]) leaves the records uncompressed.
    pub fn compression(mut self, codec: Compression) -> Self {
        self.compression = codec;
        self
    }

    /// Marks the batch as written by an idempotent producer.
    pub fn producer(mut self, producer_id: i64, producer_epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = producer_epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Marks the batch as part of a transaction.
    pub fn transactional(mut self, yes: bool) -> Self {
        if yes {
            self.attributes |= ATTR_TRANSACTIONAL;
        } else {
            self.attributes &= !ATTR_TRANSACTIONAL;
        }
        self
    }

    /// Number of records appended so far.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The batch's size in bytes if it were built now.
    #[inline]
    pub fn size(&self) -> usize {
        self.buf.len()
    }

    /// What appending a record with these fields would add to [`Self::size`].
    pub fn record_size(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let body = self.body_len(timestamp, key, value, headers);
        varint_len(body as i32) + body
    }

    fn body_len(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) -> usize {
        let first = if self.count == 0 {
            timestamp
        } else {
            self.first_timestamp
        };
        record_body_len(
            timestamp.wrapping_sub(first),
            self.count,
            key,
            value,
            headers,
        )
    }

    /// Appends one record with the next offset delta.
    pub fn append(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[Header],
    ) {
        if self.count == 0 {
            self.first_timestamp = timestamp;
            self.max_timestamp = timestamp;
        }
        self.max_timestamp = self.max_timestamp.max(timestamp);
        put_record(
            &mut self.buf,
            timestamp.wrapping_sub(self.first_timestamp),
            self.count,
            key,
            value,
            headers,
        );
        self.count += 1;
    }

    /// Appends a [`Record`]'s timestamp, key, value and headers (its offset is
    /// ignored: the builder assigns the next delta).
    pub fn push(&mut self, record: &Record) {
        self.append(
            record.timestamp,
            record.key.as_deref(),
            record.value.as_deref(),
            &record.headers,
        )
    }

    /// Writes the header and CRC, compressing the records if asked. Base
    /// offset is 0 and the partition leader epoch is
    /// [`NO_PARTITION_LEADER_EPOCH`] until a log stamps them.
    pub fn build(self) -> RecordBatch {
        let header = BatchHeader {
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            attributes: self.attributes | self.compression as i16,
            last_offset_delta: (self.count - 1).max(0),
            base_timestamp: self.first_timestamp,
            max_timestamp: self.max_timestamp,
            producer_id: self.producer_id,
            producer_epoch: self.producer_epoch,
            base_sequence: self.base_sequence,
        };
        finish_compressed(self.buf, &header, self.count)
    }
}

/// Every header field of a batch except those derived from its records
/// (length, record count, CRC), for code that writes batches with explicit
/// offsets and attributes, like the log cleaner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchHeader {
    pub(crate) base_offset: u64,
    pub(crate) partition_leader_epoch: i32,
    pub(crate) attributes: i16,
    pub(crate) last_offset_delta: i32,
    pub(crate) base_timestamp: i64,
    pub(crate) max_timestamp: i64,
    pub(crate) producer_id: i64,
    pub(crate) producer_epoch: i16,
    pub(crate) base_sequence: i32,
}

impl BatchHeader {
    /// The header fields of `batch`.
    pub(crate) fn of(batch: &RecordBatch) -> Self {
        Self {
            base_offset: batch.base_offset(),
            partition_leader_epoch: batch.partition_leader_epoch(),
            attributes: batch.attributes(),
            last_offset_delta: batch.last_offset_delta(),
            base_timestamp: batch.first_timestamp(),
            max_timestamp: batch.max_timestamp(),
            producer_id: batch.producer_id(),
            producer_epoch: batch.producer_epoch(),
            base_sequence: batch.base_sequence(),
        }
    }

    /// This header with the delete-horizon flag set and the base timestamp
    /// holding `horizon`, or with the flag cleared.
    pub(crate) fn with_delete_horizon(mut self, horizon: Option<i64>) -> Self {
        match horizon {
            Some(h) => {
                self.attributes |= ATTR_DELETE_HORIZON;
                self.base_timestamp = h;
            }
            None => self.attributes &= !ATTR_DELETE_HORIZON,
        }
        self
    }
}

impl RecordBatch {
    /// An uncompressed batch with `header` holding `records`, whose offsets
    /// must lie in `header.base_offset..=base_offset + last_offset_delta` and
    /// increase (they need not be dense: the log cleaner leaves gaps). Each
    /// record's timestamp is stored as a delta from `header.base_timestamp`,
    /// so decoding gives back the same timestamps whatever the base. The
    /// records are compressed with the codec `header.attributes` names when
    /// this build has it and there are records; otherwise the compression
    /// bits are cleared.
    pub(crate) fn encode(header: &BatchHeader, records: &[Record]) -> RecordBatch {
        let mut buf = Vec::with_capacity(BATCH_HEADER_LEN + records.len() * 32);
        buf.resize(BATCH_HEADER_LEN, 0);
        for r in records {
            let offset_delta = r.offset.wrapping_sub(header.base_offset) as i32;
            put_record(
                &mut buf,
                r.timestamp.wrapping_sub(header.base_timestamp),
                offset_delta,
                r.key.as_deref(),
                r.value.as_deref(),
                &r.headers,
            );
        }
        let mut header = *header;
        let codec = Compression::from_id((header.attributes & ATTR_COMPRESSION_MASK) as u8);
        if records.is_empty() || !codec.is_some_and(Compression::is_enabled) {
            header.attributes &= !ATTR_COMPRESSION_MASK;
        }
        finish_compressed(buf, &header, records.len() as i32)
    }

    /// This batch with its records compressed by `codec` instead (what a
    /// topic whose `compression_type` names a codec does to a producer's
    /// batch). Header fields — producer id, epoch, sequence, timestamps,
    /// offsets — are kept. Both codecs must be enabled.
    pub fn recompressed(&self, codec: Compression) -> Result<RecordBatch> {
        if !codec.is_enabled() {
            return Err(Error::UnsupportedCompression {
                codec: codec.name(),
            });
        }
        let records = self.records().collect::<Result<Vec<_>>>()?;
        let mut header = BatchHeader::of(self);
        header.attributes = (header.attributes & !ATTR_COMPRESSION_MASK) | codec as i16;
        Ok(RecordBatch::encode(&header, &records))
    }
}

/// [`finish_batch`] after compressing the records region of `buf` with the
/// codec `header.attributes` names. A codec failure (none is expected:
/// encoders write to memory) leaves the batch uncompressed, which is valid.
fn finish_compressed(buf: Vec<u8>, header: &BatchHeader, count: i32) -> RecordBatch {
    let codec = Compression::from_id((header.attributes & ATTR_COMPRESSION_MASK) as u8)
        .unwrap_or(Compression::None);
    if codec == Compression::None {
        return finish_batch(buf, header, count);
    }
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + buf.len() / 2);
    out.resize(BATCH_HEADER_LEN, 0);
    match compression::compress(codec, &buf[BATCH_HEADER_LEN..], &mut out) {
        Ok(()) => finish_batch(out, header, count),
        Err(_) => {
            let plain = BatchHeader {
                attributes: header.attributes & !ATTR_COMPRESSION_MASK,
                ..*header
            };
            finish_batch(buf, &plain, count)
        }
    }
}

/// Writes `header`, the length, the record count and the CRC into the first
/// [`BATCH_HEADER_LEN`] bytes of `buf`, which already holds the records.
fn finish_batch(mut buf: Vec<u8>, header: &BatchHeader, count: i32) -> RecordBatch {
    let len = (buf.len() - LOG_OVERHEAD) as i32;
    let h = header;
    buf[BASE_OFFSET..BASE_OFFSET + 8].copy_from_slice(&(h.base_offset as i64).to_be_bytes());
    buf[BATCH_LENGTH..BATCH_LENGTH + 4].copy_from_slice(&len.to_be_bytes());
    buf[PARTITION_LEADER_EPOCH..PARTITION_LEADER_EPOCH + 4]
        .copy_from_slice(&h.partition_leader_epoch.to_be_bytes());
    buf[MAGIC] = MAGIC_V2 as u8;
    buf[ATTRIBUTES..ATTRIBUTES + 2].copy_from_slice(&h.attributes.to_be_bytes());
    buf[LAST_OFFSET_DELTA..LAST_OFFSET_DELTA + 4]
        .copy_from_slice(&h.last_offset_delta.to_be_bytes());
    buf[BASE_TIMESTAMP..BASE_TIMESTAMP + 8].copy_from_slice(&h.base_timestamp.to_be_bytes());
    buf[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&h.max_timestamp.to_be_bytes());
    buf[PRODUCER_ID..PRODUCER_ID + 8].copy_from_slice(&h.producer_id.to_be_bytes());
    buf[PRODUCER_EPOCH..PRODUCER_EPOCH + 2].copy_from_slice(&h.producer_epoch.to_be_bytes());
    buf[BASE_SEQUENCE..BASE_SEQUENCE + 4].copy_from_slice(&h.base_sequence.to_be_bytes());
    buf[RECORD_COUNT..RECORD_COUNT + 4].copy_from_slice(&count.to_be_bytes());
    let crc = crc32c::crc32c(&buf[ATTRIBUTES..]);
    buf[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
    RecordBatch {
        bytes: Bytes::from(buf),
    }
}

fn put_nullable(buf: &mut Vec<u8>, field: Option<&[u8]>) {
    match field {
        None => put_varint(buf, -1),
        Some(b) => {
            put_varint(buf, b.len() as i32);
            buf.extend_from_slice(b);
        }
    }
}

/// Length of a record's body (everything after its length varint).
fn record_body_len(
    ts_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) -> usize {
    let field = |f: Option<&[u8]>| match f {
        None => 1,
        Some(b) => varint_len(b.len() as i32) + b.len(),
    };
    let mut n = 1
        + varlong_len(ts_delta)
        + varint_len(offset_delta)
        + field(key)
        + field(value)
        + varint_len(headers.len() as i32);
    for h in headers {
        n += field(Some(h.key.as_bytes())) + field(h.value.as_deref());
    }
    n
}

/// Appends one length-framed record.
fn put_record(
    buf: &mut Vec<u8>,
    ts_delta: i64,
    offset_delta: i32,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[Header],
) {
    let body = record_body_len(ts_delta, offset_delta, key, value, headers);
    buf.reserve(body + 5);
    put_varint(buf, body as i32);
    buf.push(0);
    put_varlong(buf, ts_delta);
    put_varint(buf, offset_delta);
    put_nullable(buf, key);
    put_nullable(buf, value);
    put_varint(buf, headers.len() as i32);
    for h in headers {
        put_nullable(buf, Some(h.key.as_bytes()));
        put_nullable(buf, h.value.as_deref());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sample() -> RecordBatch {
        let mut b = RecordBatchBuilder::new().producer(7, 1, 42);
        b.append(1000, Some(b"k1"), Some(b"v1"), &[]);
        b.append(
            990,
            None,
            None,
            &[Header {
                key: "h".into(),
                value: None,
            }],
        );
        b.build()
    }

    #[test]
    fn builder_output_validates_and_decodes() {
        let batch = sample();
        batch.validate().unwrap();
        assert_eq!(batch.record_count(), 2);
        assert_eq!(batch.max_timestamp(), 1000);
        assert_eq!(batch.producer_id(), 7);
        let recs: Vec<_> = batch.records().collect::<Result<_>>().unwrap();
        assert_eq!(recs[1].timestamp, 990);
        assert_eq!(recs[1].offset, 1);
        assert_eq!(recs[1].key, None);
        assert_eq!(recs[1].headers[0].key, "h");
    }

    #[test]
    fn encoding_with_gaps_and_a_delete_horizon_reads_back_the_same_records() {
        let original = sample().stamped(100, 4);
        let records: Vec<Record> = original.records().collect::<Result<_>>().unwrap();
        let header = BatchHeader::of(&original).with_delete_horizon(Some(9_999_999));
        let kept = RecordBatch::encode(&header, &records[1..]);
        kept.validate().unwrap();
        assert_eq!(kept.delete_horizon_ms(), Some(9_999_999));
        assert_eq!((kept.base_offset(), kept.last_offset()), (100, 101));
        assert_eq!(kept.record_count(), 1);
        assert_eq!(kept.partition_leader_epoch(), 4);
        assert_eq!(
            (
                kept.producer_id(),
                kept.producer_epoch(),
                kept.base_sequence()
            ),
            (7, 1, 42)
        );
        let read: Vec<Record> = kept.records().collect::<Result<_>>().unwrap();
        assert_eq!(read, records[1..]);
        assert_eq!(original.delete_horizon_ms(), None);
        // Clearing the flag gives the plain layout back.
        let plain = BatchHeader::of(&original).with_delete_horizon(None);
        assert_eq!(RecordBatch::encode(&plain, &records), original);
    }

    #[test]
    fn stamping_keeps_the_crc_valid() {
        let batch = sample().stamped(1 << 40, 9);
        batch.validate().unwrap();
        assert_eq!(batch.base_offset(), 1 << 40);
        assert_eq!(batch.partition_leader_epoch(), 9);
        assert_eq!(batch.records().next().unwrap().unwrap().offset, 1 << 40);
    }

    #[test]
    fn stamping_a_shared_buffer_copies_and_leaves_the_other_alone() {
        let batch = sample();
        let other = batch.clone();
        let stamped = batch.stamped(5, 1);
        assert_eq!(other.base_offset(), 0);
        assert_eq!(stamped.base_offset(), 5);
    }

    #[test]
    fn flipped_byte_fails_crc() {
        let mut bytes = sample().into_bytes().to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let batch = RecordBatch::from_bytes(Bytes::from(bytes)).unwrap();
        assert!(matches!(batch.validate(), Err(Error::CorruptRecord { .. })));
    }

    #[test]
    fn produced_batches_must_have_dense_deltas_and_true_timestamps() {
        let batch = sample();
        batch.validate_produced().unwrap();
        // Rewrite the header's max timestamp (and fix the CRC): framing and CRC
        // pass, the producer check does not.
        let mut bytes = batch.into_bytes().to_vec();
        bytes[MAX_TIMESTAMP..MAX_TIMESTAMP + 8].copy_from_slice(&5i64.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[ATTRIBUTES..]);
        bytes[CRC..CRC + 4].copy_from_slice(&crc.to_be_bytes());
        let lying = RecordBatch::from_bytes(Bytes::from(bytes)).unwrap();
        lying.validate().unwrap();
        assert!(matches!(
            lying.validate_produced(),
            Err(Error::CorruptRecord { .. })
        ));
        let empty = RecordBatchBuilder::new().build();
        assert!(empty.validate().is_ok());
        assert!(empty.validate_produced().is_err());
    }

    #[test]
    fn wrong_length_or_magic_is_refused() {
        let bytes = sample().into_bytes();
        assert!(RecordBatch::from_bytes(bytes.slice(..bytes.len() - 1)).is_err());
        let mut v = bytes.to_vec();
        v[MAGIC] = 1;
        assert!(RecordBatch::from_bytes(Bytes::from(v)).is_err());
    }

    proptest! {
        #[test]
        fn decoding_arbitrary_bytes_never_panics(mut bytes in proptest::collection::vec(any::<u8>(), 0..300)) {
            if bytes.len() >= LOG_OVERHEAD {
                let len = (bytes.len() - LOG_OVERHEAD) as i32;
                bytes[8..12].copy_from_slice(&len.to_be_bytes());
            }
            if bytes.len() > MAGIC { bytes[MAGIC] = 2; }
            if let Ok(batch) = RecordBatch::from_bytes(Bytes::from(bytes)) {
                let _ = batch.validate();
                for r in batch.records().take(1000) { let _ = r; }
            }
        }

        #[test]
        fn records_round_trip(recs in proptest::collection::vec(
            (any::<i64>(), proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
             proptest::option::of(proptest::collection::vec(any::<u8>(), 0..50)),
             proptest::collection::vec(("[a-z]{0,5}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..5))), 0..3)),
            1..20)) {
            let mut b = RecordBatchBuilder::new();
            let base_ts = 1_700_000_000_000i64;
            for (ts, k, v, hs) in &recs {
                let headers: Vec<Header> = hs.iter().map(|(k, v)| Header { key: k.clone(), value: v.clone().map(Bytes::from) }).collect();
                let ts = base_ts + ts % 1_000_000;
                let before = b.size();
                let expect = b.record_size(ts, k.as_deref(), v.as_deref(), &headers);
                b.append(ts, k.as_deref(), v.as_deref(), &headers);
                prop_assert_eq!(b.size() - before, expect);
            }
            let batch = b.build();
            batch.validate().unwrap();
            let out: Vec<Record> = batch.records().collect::<Result<_>>().unwrap();
            prop_assert_eq!(out.len(), recs.len());
            for (i, ((ts, k, v, hs), r)) in recs.iter().zip(&out).enumerate() {
                prop_assert_eq!(r.offset, i as u64);
                prop_assert_eq!(r.timestamp, base_ts + ts % 1_000_000);
                prop_assert_eq!(r.key.as_deref(), k.as_deref());
                prop_assert_eq!(r.value.as_deref(), v.as_deref());
                prop_assert_eq!(r.headers.len(), hs.len());
            }
        }

        #[test]
        fn the_fast_record_walk_agrees_with_the_checked_one(
            recs in proptest::collection::vec(
                (0i64..5000, proptest::option::of(proptest::collection::vec(any::<u8>(), 0..20)),
                 proptest::collection::vec(("[a-zé]{0,4}", proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4))), 0..3)),
                1..12),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..3),
        ) {
            let mut b = RecordBatchBuilder::new();
            for (i, (ts, v, hs)) in recs.iter().enumerate() {
                let headers: Vec<Header> = hs.iter().map(|(k, v)| Header { key: k.clone(), value: v.clone().map(Bytes::from) }).collect();
                let ts = if i == 0 { 0 } else { *ts };
                b.append(1_700_000_000_000 + ts, Some(b"k"), v.as_deref(), &headers);
            }
            let batch = b.build();
            let mut body = batch.as_bytes()[BATCH_HEADER_LEN..].to_vec();
            for (at, byte) in flips {
                if !body.is_empty() {
                    let at = at % body.len();
                    body[at] = byte;
                }
            }
            let (count, first_ts) = (batch.record_count(), batch.first_timestamp());
            let checked = walk_records_checked(&body, count, first_ts, true).ok();
            let fast = walk_produced_fast(&body, count, first_ts);
            // The fast walk may give up where the checked one succeeds
            // (a 10-byte varint), never the other way round, and never
            // with a different answer.
            if let Some(fast) = fast {
                prop_assert_eq!(checked, Some(fast));
            }
            if body[..] == batch.as_bytes()[BATCH_HEADER_LEN..] {
                prop_assert!(fast.is_some());
            }
        }
    }
}
