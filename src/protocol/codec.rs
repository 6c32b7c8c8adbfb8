//! The wire codec: every [`Envelope`] as one versioned, length-prefixed
//! frame, for transports that cross a process boundary.
//!
//! A frame is a 4-byte big-endian length (of what follows), then the frame
//! version ([`FRAME_VERSION`]), the sender and receiver, the correlation id,
//! and the message: a request or a successful response by its API key
//! (Kafka's keys, [`Request::api_key`]) followed by its fields, or an error
//! answer. Integers are big-endian and fixed-width, strings and lists carry a
//! 4-byte length or count, optional values a one-byte tag.
//!
//! - Record data travels as its own bytes: a produced [`RecordBatch`] or
//!   fetched [`Records`] is written as it is and decoded as a slice of the
//!   frame's buffer, never re-encoded or copied.
//! - An [`Error`] travels as Kafka's numeric code ([`Error::code`]), then
//!   ferrolog's own variant number and the variant's fields, so the receiver
//!   gets back the very error the sender had (a storage error's source as its
//!   kind and message). A few fields hold names the crate itself chose (an
//!   operation, a config field); they decode as the same `&'static str` when
//!   ferrolog knows the name, else as `"(unknown)"`.
//! - Decoding never panics and never trusts a count: a list claiming more
//!   elements than the rest of the frame could hold is refused before
//!   anything is allocated for it, so a frame never costs more memory than a
//!   small multiple of its own size. Anything that does not decode is
//!   [`Error::InvalidFrame`].
//!
//! ```
//! use ferrolog::protocol::codec;
//! use ferrolog::protocol::{Envelope, MetadataRequest, Message, Peer, Request, CONTROLLER_ID};
//!
//! let envelope = Envelope::request(Peer::Client(7), Peer::Broker(CONTROLLER_ID), 42,
//!     Request::Metadata(MetadataRequest { topics: Some(vec!["orders".into()]) }));
//! let frame = codec::encode(&envelope);
//! let decoded = codec::decode(frame)?;
//! assert_eq!((decoded.from, decoded.correlation_id), (Peer::Client(7), 42));
//! assert!(matches!(decoded.message, Message::Request(Request::Metadata(_))));
//! # Ok::<(), ferrolog::Error>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};

use super::{
    Acks, AlterPartitionReassignmentsRequest, AlterPartitionRequest, BrokerHeartbeatRequest,
    BrokerInfo, ClusterMetadata, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, Envelope, EpochEndOffset, FetchPartition,
    FetchRequest, FetchResponse, FetchSession, FetchedData, FetchedPartition, GroupDescription,
    GroupHeartbeatRequest, GroupHeartbeatResponse, GroupListing, GroupState, IsrProposal,
    ListOffsetsRequest, ListOffsetsResponse, ListedOffset, MemberDescription, Message,
    MetadataRequest, MetadataResponse, OffsetAndMetadata, OffsetAndTimestamp, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest, OffsetForLeaderEpochRequest, OffsetSpec,
    PartitionMetadata, Peer, ProduceAck, ProducePartition, ProduceRequest, ProduceResponse,
    ProducedPartition, Request, Response, Subscription, TopicMetadata, TopicResults,
    UpdateMetadataRequest,
};
use crate::error::{Error, Result};
use crate::record::{RecordBatch, Records};
use crate::storage::{CleanupPolicy, TopicCompression};
use crate::topic::{NewTopic, TopicConfig, TopicPartition};

/// The version of the frame layout this build writes and reads.
pub const FRAME_VERSION: u16 = 3;

/// Bytes of the length prefix in front of every frame.
pub const LENGTH_PREFIX_LEN: usize = 4;

/// Largest frame [`decode`] accepts, prefix included (Kafka's
/// `socket.request.max.bytes` default, 100 MiB).
pub const MAX_FRAME_BYTES: usize = 100 << 20;

/// What a `&'static str` field decodes to when this build does not know the
/// name the sender put there.
pub const UNKNOWN_NAME: &str = "(unknown)";

/// Encodes `envelope` as one frame, length prefix included.
pub fn encode(envelope: &Envelope) -> Bytes {
    let mut out = BytesMut::with_capacity(64 + payload_hint(&envelope.message));
    encode_into(envelope, &mut out);
    out.freeze()
}

/// Appends `envelope`'s frame, length prefix included, to `out`.
pub fn encode_into(envelope: &Envelope, out: &mut BytesMut) {
    let start = out.len();
    out.put_u32(0);
    FRAME_VERSION.put(out);
    envelope.from.put(out);
    envelope.to.put(out);
    envelope.correlation_id.put(out);
    envelope.message.put(out);
    let len = (out.len() - start - LENGTH_PREFIX_LEN) as u32;
    out[start..start + LENGTH_PREFIX_LEN].copy_from_slice(&len.to_be_bytes());
}

/// The length a frame's prefix declares for the rest of the frame, once its
/// first [`LENGTH_PREFIX_LEN`] bytes are there (a stream reader reads this
/// much more, after checking it against its limit).
pub fn declared_len(prefix: &[u8]) -> Option<usize> {
    let bytes: [u8; LENGTH_PREFIX_LEN] = prefix.get(..LENGTH_PREFIX_LEN)?.try_into().ok()?;
    Some(u32::from_be_bytes(bytes) as usize)
}

/// Decodes one whole frame, length prefix included. Record data in the
/// result are slices of `frame`. A frame over [`MAX_FRAME_BYTES`], one
/// whose prefix does not match its size, one of another version, or one
/// that does not decode is [`Error::InvalidFrame`].
pub fn decode(frame: Bytes) -> Result<Envelope> {
    if frame.len() > MAX_FRAME_BYTES {
        return Err(invalid(format!(
            "{} bytes is over the limit of {MAX_FRAME_BYTES}",
            frame.len()
        )));
    }
    let declared = declared_len(&frame).ok_or_else(|| invalid("shorter than its length prefix"))?;
    if declared != frame.len() - LENGTH_PREFIX_LEN {
        return Err(invalid(format!(
            "the prefix declares {declared} bytes but {} follow",
            frame.len() - LENGTH_PREFIX_LEN
        )));
    }
    let mut r = Reader {
        buf: &frame,
        pos: LENGTH_PREFIX_LEN,
    };
    let version = u16::get(&mut r)?;
    if version != FRAME_VERSION {
        return Err(invalid(format!(
            "frame version {version}; this build reads version {FRAME_VERSION}"
        )));
    }
    let envelope = Envelope {
        from: Peer::get(&mut r)?,
        to: Peer::get(&mut r)?,
        correlation_id: u64::get(&mut r)?,
        message: Message::get(&mut r)?,
    };
    if r.remaining() != 0 {
        return Err(invalid(format!(
            "{} bytes left over after the message",
            r.remaining()
        )));
    }
    Ok(envelope)
}

fn invalid(reason: impl Into<String>) -> Error {
    Error::InvalidFrame {
        reason: reason.into(),
    }
}

/// Room to reserve for a message: its record data, which dominate.
fn payload_hint(message: &Message) -> usize {
    match message {
        Message::Request(Request::Produce(p)) => {
            p.partitions.iter().map(|p| p.batch.size() + 64).sum()
        }
        Message::Response(Ok(Response::Fetch(f))) => f
            .partitions
            .iter()
            .map(|p| p.result.as_ref().map_or(0, |d| d.records.size()) + 64)
            .sum(),
        _ => 0,
    }
}

// ----- reading ----------------------------------------------------------------

/// A cursor over a frame being decoded.
pub(crate) struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(invalid(format!(
                "a field of {n} bytes runs past the end of the frame ({} left)",
                self.remaining()
            )));
        }
        let start = self.pos;
        self.pos += n;
        Ok(&self.buf[start..self.pos])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    /// The next `n` bytes as a slice of the frame's buffer (no copy).
    fn bytes(&mut self, n: usize) -> Result<Bytes> {
        self.take(n)?;
        Ok(self.buf.slice(self.pos - n..self.pos))
    }

    /// A length or count, checked against what is left: `min_size` is the
    /// fewest bytes one element takes.
    fn count(&mut self, min_size: usize) -> Result<usize> {
        let count = u32::get(self)? as usize;
        if count.saturating_mul(min_size.max(1)) > self.remaining() {
            return Err(invalid(format!(
                "a count of {count} cannot fit in the {} bytes left",
                self.remaining()
            )));
        }
        Ok(count)
    }

    fn string(&mut self) -> Result<String> {
        let len = self.count(1)?;
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .map(str::to_owned)
            .map_err(|e| invalid(format!("a string is not UTF-8: {e}")))
    }
}

// ----- the encoding of each type ----------------------------------------------

/// A type with a wire form.
pub(crate) trait Wire: Sized {
    /// The fewest bytes a value takes on the wire; bounds how many values a
    /// count may claim.
    const MIN_SIZE: usize;
    /// Appends the value.
    fn put(&self, out: &mut BytesMut);
    /// Reads a value.
    fn get(r: &mut Reader<'_>) -> Result<Self>;
}

macro_rules! wire_int {
    ($($ty:ty),*) => {$(
        impl Wire for $ty {
            const MIN_SIZE: usize = std::mem::size_of::<$ty>();
            fn put(&self, out: &mut BytesMut) {
                out.put_slice(&self.to_be_bytes());
            }
            fn get(r: &mut Reader<'_>) -> Result<Self> {
                Ok(<$ty>::from_be_bytes(r.array()?))
            }
        }
    )*};
}

wire_int!(u8, u16, u32, u64, i16, i32, i64);

impl Wire for bool {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut BytesMut) {
        out.put_u8(u8::from(*self));
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(invalid(format!("boolean byte {other}"))),
        }
    }
}

impl Wire for usize {
    const MIN_SIZE: usize = 8;
    fn put(&self, out: &mut BytesMut) {
        (*self as u64).put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let value = u64::get(r)?;
        usize::try_from(value).map_err(|_| invalid(format!("{value} does not fit a usize")))
    }
}

impl Wire for () {
    const MIN_SIZE: usize = 0;
    fn put(&self, _: &mut BytesMut) {}
    fn get(_: &mut Reader<'_>) -> Result<Self> {
        Ok(())
    }
}

impl Wire for String {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        put_str(self, out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        r.string()
    }
}

/// Opaque bytes: a length, then the bytes (decoded as a slice of the
/// frame, no copy).
impl Wire for Bytes {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.len() as u32).put(out);
        out.put_slice(self);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let len = r.count(1)?;
        r.bytes(len)
    }
}

fn put_str(s: &str, out: &mut BytesMut) {
    (s.len() as u32).put(out);
    out.put_slice(s.as_bytes());
}

impl Wire for Arc<str> {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        put_str(self, out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        r.string().map(Arc::from)
    }
}

impl<T: Wire> Wire for Arc<T> {
    const MIN_SIZE: usize = T::MIN_SIZE;
    fn put(&self, out: &mut BytesMut) {
        (**self).put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        T::get(r).map(Arc::new)
    }
}

impl<T: Wire> Wire for Option<T> {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut BytesMut) {
        match self {
            None => out.put_u8(0),
            Some(value) => {
                out.put_u8(1);
                value.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => Ok(None),
            1 => T::get(r).map(Some),
            other => Err(invalid(format!("option tag {other}"))),
        }
    }
}

impl<T: Wire> Wire for Vec<T> {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.len() as u32).put(out);
        for item in self {
            item.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.count(T::MIN_SIZE)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(T::get(r)?);
        }
        Ok(items)
    }
}

impl<A: Wire, B: Wire> Wire for (A, B) {
    const MIN_SIZE: usize = A::MIN_SIZE + B::MIN_SIZE;
    fn put(&self, out: &mut BytesMut) {
        self.0.put(out);
        self.1.put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        Ok((A::get(r)?, B::get(r)?))
    }
}

/// Maps and sets go in key order, each key once.
impl<K: Wire + Ord, V: Wire> Wire for BTreeMap<K, V> {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.len() as u32).put(out);
        for (key, value) in self {
            key.put(out);
            value.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.count(K::MIN_SIZE + V::MIN_SIZE)?;
        let mut map = BTreeMap::new();
        for _ in 0..count {
            let key = K::get(r)?;
            if map.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return Err(invalid("map keys out of order or repeated"));
            }
            map.insert(key, V::get(r)?);
        }
        Ok(map)
    }
}

impl<T: Wire + Ord> Wire for BTreeSet<T> {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.len() as u32).put(out);
        for item in self {
            item.put(out);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let count = r.count(T::MIN_SIZE)?;
        let mut set = BTreeSet::new();
        for _ in 0..count {
            let item = T::get(r)?;
            if set.last().is_some_and(|last| *last >= item) {
                return Err(invalid("set items out of order or repeated"));
            }
            set.insert(item);
        }
        Ok(set)
    }
}

impl<T: Wire> Wire for Result<T> {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut BytesMut) {
        match self {
            Ok(value) => {
                out.put_u8(0);
                value.put(out);
            }
            Err(e) => {
                out.put_u8(1);
                e.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => T::get(r).map(Ok),
            1 => Error::get(r).map(Err),
            other => Err(invalid(format!("result tag {other}"))),
        }
    }
}

impl Wire for TopicPartition {
    const MIN_SIZE: usize = 8;
    fn put(&self, out: &mut BytesMut) {
        put_str(self.topic(), out);
        self.partition().put(out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let topic = r.string()?;
        let partition = u32::get(r)?;
        TopicPartition::new(topic, partition).map_err(|e| invalid(e.to_string()))
    }
}

impl Wire for RecordBatch {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.size() as u32).put(out);
        out.put_slice(self.as_bytes());
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let len = r.count(1)?;
        RecordBatch::from_bytes(r.bytes(len)?).map_err(|e| invalid(e.to_string()))
    }
}

/// Fetched data: whole batches as one run of bytes. They are not parsed
/// here; whoever reads them checks every batch.
impl Wire for Records {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        (self.size() as u32).put(out);
        for chunk in self.chunks() {
            out.put_slice(chunk);
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let len = r.count(1)?;
        let mut records = Records::empty();
        if len > 0 {
            records.push_chunk(r.bytes(len)?);
        }
        Ok(records)
    }
}

/// A fieldless enum as one byte.
macro_rules! wire_tags {
    ($ty:ty { $($tag:literal => $variant:path),* $(,)? }) => {
        impl Wire for $ty {
            const MIN_SIZE: usize = 1;
            fn put(&self, out: &mut BytesMut) {
                out.put_u8(match self { $($variant => $tag),* });
            }
            fn get(r: &mut Reader<'_>) -> Result<Self> {
                match u8::get(r)? {
                    $($tag => Ok($variant),)*
                    other => Err(invalid(format!(concat!(stringify!($ty), " tag {}"), other))),
                }
            }
        }
    };
}

wire_tags!(Acks { 0 => Acks::None, 1 => Acks::Leader, 2 => Acks::All });
wire_tags!(CleanupPolicy {
    0 => CleanupPolicy::Delete,
    1 => CleanupPolicy::Compact,
    2 => CleanupPolicy::CompactDelete,
});
wire_tags!(TopicCompression {
    0 => TopicCompression::Producer,
    1 => TopicCompression::Uncompressed,
    2 => TopicCompression::Gzip,
    3 => TopicCompression::Snappy,
    4 => TopicCompression::Lz4,
    5 => TopicCompression::Zstd,
});
wire_tags!(GroupState {
    0 => GroupState::Empty,
    1 => GroupState::Reconciling,
    2 => GroupState::Stable,
});

/// A struct as its fields in order (every field listed, or it does not
/// compile).
macro_rules! wire_struct {
    ($ty:ident { $($field:ident : $fty:ty),* $(,)? }) => {
        impl Wire for $ty {
            const MIN_SIZE: usize = 0 $(+ <$fty as Wire>::MIN_SIZE)*;
            fn put(&self, out: &mut BytesMut) {
                $(self.$field.put(out);)*
            }
            fn get(r: &mut Reader<'_>) -> Result<Self> {
                Ok($ty { $($field: <$fty as Wire>::get(r)?,)* })
            }
        }
    };
}

wire_struct!(TopicConfig {
    segment_bytes: u64,
    segment_ms: i64,
    index_interval_bytes: u64,
    retention_ms: Option<i64>,
    retention_bytes: Option<u64>,
    flush_messages: Option<u64>,
    flush_ms: Option<i64>,
    max_message_bytes: usize,
    min_insync_replicas: u16,
    unclean_leader_election_enable: bool,
    cleanup_policy: CleanupPolicy,
    delete_retention_ms: i64,
    compression_type: TopicCompression,
});
wire_struct!(NewTopic {
    name: String,
    partitions: u32,
    replication_factor: u16,
    config: TopicConfig,
});
wire_struct!(ProduceRequest {
    acks: Acks,
    timeout_ms: u32,
    partitions: Vec<ProducePartition>,
});
wire_struct!(ProducePartition {
    partition: TopicPartition,
    batch: RecordBatch,
});
wire_struct!(ProduceResponse {
    partitions: Vec<ProducedPartition>,
});
wire_struct!(ProducedPartition {
    partition: TopicPartition,
    result: Result<ProduceAck>,
});
wire_struct!(ProduceAck {
    base_offset: u64,
    log_start_offset: u64,
});
wire_struct!(FetchRequest {
    max_wait_ms: u32,
    min_bytes: u32,
    max_bytes: u32,
    partitions: Vec<FetchPartition>,
    replica: Option<u32>,
    session: Option<FetchSession>,
    forgotten: Vec<TopicPartition>,
});
wire_struct!(FetchSession {
    id: u32,
    epoch: u32
});
wire_struct!(FetchPartition {
    partition: TopicPartition,
    fetch_offset: u64,
    max_bytes: u32,
    current_leader_epoch: Option<i32>,
    last_fetched_epoch: Option<i32>,
});
wire_struct!(FetchResponse {
    partitions: Vec<FetchedPartition>,
    session_id: u32,
});
wire_struct!(FetchedPartition {
    partition: TopicPartition,
    result: Result<FetchedData>,
});
wire_struct!(FetchedData {
    high_watermark: u64,
    log_start_offset: u64,
    records: Records,
    diverging_epoch: Option<(i32, u64)>,
});
wire_struct!(OffsetDeleteRequest {
    group: String,
    partitions: Option<Vec<TopicPartition>>,
});
wire_struct!(DeleteRecordsRequest {
    partitions: Vec<(TopicPartition, u64)>,
});
wire_struct!(OffsetForLeaderEpochRequest {
    partitions: Vec<(TopicPartition, (Option<i32>, i32))>,
});
wire_struct!(EpochEndOffset {
    leader_epoch: i32,
    end_offset: u64,
});
wire_struct!(ListOffsetsRequest {
    partitions: Vec<(TopicPartition, OffsetSpec)>,
});
wire_struct!(ListOffsetsResponse {
    partitions: Vec<ListedOffset>,
});
wire_struct!(ListedOffset {
    partition: TopicPartition,
    result: Result<Option<OffsetAndTimestamp>>,
});
wire_struct!(OffsetAndTimestamp {
    offset: u64,
    timestamp: Option<i64>,
});
wire_struct!(MetadataRequest {
    topics: Option<Vec<String>>,
});
wire_struct!(MetadataResponse {
    version: u64,
    controller: Option<u32>,
    brokers: Vec<BrokerInfo>,
    topics: Vec<TopicMetadata>,
});
wire_struct!(BrokerInfo {
    id: u32,
    rack: Option<String>,
    endpoint: Option<String>,
});
wire_struct!(TopicMetadata {
    name: Arc<str>,
    id: u64,
    partitions: Vec<PartitionMetadata>,
    config: TopicConfig,
});
wire_struct!(PartitionMetadata {
    partition: u32,
    leader: Option<u32>,
    leader_epoch: i32,
    partition_epoch: u32,
    replicas: Vec<u32>,
    isr: Vec<u32>,
    reassigning_to: Option<Vec<u32>>,
});
wire_struct!(ClusterMetadata {
    controller_epoch: u32,
    version: u64,
    controller: Option<u32>,
    brokers: Vec<BrokerInfo>,
    topics: BTreeMap<Arc<str>, Arc<TopicMetadata>>,
    next_producer_id: i64,
});
wire_struct!(CreateTopicsRequest {
    topics: Vec<NewTopic>,
});
wire_struct!(DeleteTopicsRequest {
    topics: Vec<String>,
});
wire_struct!(CreatePartitionsRequest {
    topics: Vec<(String, u32)>,
});
wire_struct!(TopicResults {
    topics: Vec<(String, Result<()>)>,
});
wire_struct!(AlterPartitionReassignmentsRequest {
    partitions: Vec<(TopicPartition, Vec<u32>)>,
});
wire_struct!(BrokerHeartbeatRequest {
    broker: u32,
    metadata_version: (u32, u64),
    want_shutdown: bool,
});
wire_struct!(AlterPartitionRequest {
    broker: u32,
    proposal: IsrProposal,
});
wire_struct!(IsrProposal {
    partition: TopicPartition,
    leader_epoch: i32,
    partition_epoch: u32,
    isr: Vec<u32>,
});
wire_struct!(UpdateMetadataRequest {
    metadata: Arc<ClusterMetadata>,
    delta_from: Option<(u32, u64)>,
    deleted_topics: Vec<Arc<str>>,
});
wire_struct!(GroupHeartbeatRequest {
    group: String,
    member_id: String,
    member_epoch: i32,
    group_instance_id: Option<String>,
    client_id: String,
    subscription: Option<Subscription>,
    assignor: Option<String>,
    owned: Option<Vec<TopicPartition>>,
    acked_assignment: u64,
    session_timeout_ms: Option<u32>,
    rebalance_timeout_ms: Option<u32>,
    max_wait_ms: u32,
});
wire_struct!(GroupHeartbeatResponse {
    member_id: String,
    member_epoch: i32,
    assignment: Vec<TopicPartition>,
    assignment_id: u64,
    assignment_changed: bool,
    reconciling: bool,
});
wire_struct!(OffsetCommitRequest {
    group: String,
    member_id: String,
    member_epoch: i32,
    offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
});
wire_struct!(OffsetFetchRequest {
    group: String,
    partitions: Option<Vec<TopicPartition>>,
});
wire_struct!(OffsetAndMetadata {
    offset: u64,
    metadata: String,
    commit_timestamp: i64,
});
wire_struct!(GroupListing {
    group: String,
    state: GroupState,
    members: usize,
    coordinator: u32,
});
wire_struct!(MemberDescription {
    member_id: String,
    group_instance_id: Option<String>,
    client_id: String,
    member_epoch: i32,
    assignment: Vec<TopicPartition>,
    pending_revocation: Vec<TopicPartition>,
    target: Vec<TopicPartition>,
    subscription: Subscription,
    subscribed_topics: Vec<String>,
});
wire_struct!(GroupDescription {
    group: String,
    state: GroupState,
    group_epoch: i32,
    assignor: String,
    coordinator: u32,
    members: Vec<MemberDescription>,
    offsets: BTreeMap<TopicPartition, OffsetAndMetadata>,
});

impl Wire for OffsetSpec {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut BytesMut) {
        match self {
            OffsetSpec::Earliest => out.put_u8(0),
            OffsetSpec::Latest => out.put_u8(1),
            OffsetSpec::Timestamp(ts) => {
                out.put_u8(2);
                ts.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => Ok(OffsetSpec::Earliest),
            1 => Ok(OffsetSpec::Latest),
            2 => i64::get(r).map(OffsetSpec::Timestamp),
            other => Err(invalid(format!("OffsetSpec tag {other}"))),
        }
    }
}

impl Wire for Subscription {
    const MIN_SIZE: usize = 5;
    fn put(&self, out: &mut BytesMut) {
        match self {
            Subscription::Topics(topics) => {
                out.put_u8(0);
                topics.put(out);
            }
            Subscription::Pattern(pattern) => {
                out.put_u8(1);
                pattern.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => <BTreeSet<String> as Wire>::get(r).map(Subscription::Topics),
            1 => String::get(r).map(Subscription::Pattern),
            other => Err(invalid(format!("Subscription tag {other}"))),
        }
    }
}

impl Wire for Peer {
    const MIN_SIZE: usize = 5;
    fn put(&self, out: &mut BytesMut) {
        match self {
            Peer::Client(id) => {
                out.put_u8(0);
                id.put(out);
            }
            Peer::Broker(id) => {
                out.put_u8(1);
                id.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => u64::get(r).map(Peer::Client),
            1 => u32::get(r).map(Peer::Broker),
            other => Err(invalid(format!("peer tag {other}"))),
        }
    }
}

impl Wire for Message {
    const MIN_SIZE: usize = 1;
    fn put(&self, out: &mut BytesMut) {
        match self {
            Message::Request(request) => {
                out.put_u8(0);
                request.put(out);
            }
            Message::Response(Ok(response)) => {
                out.put_u8(1);
                response.put(out);
            }
            Message::Response(Err(e)) => {
                out.put_u8(2);
                e.put(out);
            }
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        match u8::get(r)? {
            0 => Request::get(r).map(Message::Request),
            1 => Response::get(r).map(|response| Message::Response(Ok(response))),
            2 => Error::get(r).map(|e| Message::Response(Err(e))),
            other => Err(invalid(format!("message tag {other}"))),
        }
    }
}

impl Wire for Request {
    const MIN_SIZE: usize = 2;
    fn put(&self, out: &mut BytesMut) {
        self.api_key().put(out);
        match self {
            Request::Produce(r) => r.put(out),
            Request::Fetch(r) => r.put(out),
            Request::ListOffsets(r) => r.put(out),
            Request::Metadata(r) => r.put(out),
            Request::CreateTopics(r) => r.put(out),
            Request::DeleteTopics(r) => r.put(out),
            Request::CreatePartitions(r) => r.put(out),
            Request::UpdateMetadata(r) => r.put(out),
            Request::BrokerHeartbeat(r) => r.put(out),
            Request::AlterPartition(r) => r.put(out),
            Request::InitProducerId | Request::ListGroups => {}
            Request::AlterPartitionReassignments(r) => r.put(out),
            Request::RegisterBroker(r) => r.put(out),
            Request::FindCoordinator(group) | Request::DescribeGroup(group) => group.put(out),
            Request::DeleteRecords(r) => r.put(out),
            Request::OffsetForLeaderEpoch(r) => r.put(out),
            Request::OffsetDelete(r) => r.put(out),
            Request::Raft(payload) => payload.put(out),
            Request::GroupHeartbeat(r) => r.put(out),
            Request::OffsetCommit(r) => r.put(out),
            Request::OffsetFetch(r) => r.put(out),
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let key = i16::get(r)?;
        Ok(match key {
            api::PRODUCE => Request::Produce(Wire::get(r)?),
            api::FETCH => Request::Fetch(Wire::get(r)?),
            api::LIST_OFFSETS => Request::ListOffsets(Wire::get(r)?),
            api::METADATA => Request::Metadata(Wire::get(r)?),
            api::CREATE_TOPICS => Request::CreateTopics(Wire::get(r)?),
            api::DELETE_TOPICS => Request::DeleteTopics(Wire::get(r)?),
            api::CREATE_PARTITIONS => Request::CreatePartitions(Wire::get(r)?),
            api::UPDATE_METADATA => Request::UpdateMetadata(Wire::get(r)?),
            api::BROKER_HEARTBEAT => Request::BrokerHeartbeat(Wire::get(r)?),
            api::ALTER_PARTITION => Request::AlterPartition(Wire::get(r)?),
            api::INIT_PRODUCER_ID => Request::InitProducerId,
            api::ALTER_PARTITION_REASSIGNMENTS => {
                Request::AlterPartitionReassignments(Wire::get(r)?)
            }
            api::BROKER_REGISTRATION => Request::RegisterBroker(Wire::get(r)?),
            api::FIND_COORDINATOR => Request::FindCoordinator(Wire::get(r)?),
            api::CONSUMER_GROUP_HEARTBEAT => Request::GroupHeartbeat(Wire::get(r)?),
            api::OFFSET_COMMIT => Request::OffsetCommit(Wire::get(r)?),
            api::OFFSET_FETCH => Request::OffsetFetch(Wire::get(r)?),
            api::LIST_GROUPS => Request::ListGroups,
            api::CONSUMER_GROUP_DESCRIBE => Request::DescribeGroup(Wire::get(r)?),
            api::DELETE_RECORDS => Request::DeleteRecords(Wire::get(r)?),
            api::OFFSET_FOR_LEADER_EPOCH => Request::OffsetForLeaderEpoch(Wire::get(r)?),
            api::OFFSET_DELETE => Request::OffsetDelete(Wire::get(r)?),
            api::RAFT => Request::Raft(Wire::get(r)?),
            other => return Err(invalid(format!("unknown request API key {other}"))),
        })
    }
}

impl Wire for Response {
    const MIN_SIZE: usize = 2;
    fn put(&self, out: &mut BytesMut) {
        self.api_key().put(out);
        match self {
            Response::Produce(r) => r.put(out),
            Response::Fetch(r) => r.put(out),
            Response::ListOffsets(r) => r.put(out),
            Response::Metadata(r) => r.put(out),
            Response::CreateTopics(r)
            | Response::DeleteTopics(r)
            | Response::CreatePartitions(r) => r.put(out),
            Response::UpdateMetadata(failed) => failed.put(out),
            Response::OffsetCommit => {}
            Response::BrokerHeartbeat(version) => version.put(out),
            Response::AlterPartition(r) => r.put(out),
            Response::InitProducerId(r) => r.put(out),
            Response::AlterPartitionReassignments(r) => r.put(out),
            Response::RegisterBroker(r) => r.put(out),
            Response::FindCoordinator(node) => node.put(out),
            Response::GroupHeartbeat(r) => r.put(out),
            Response::OffsetFetch(r) => r.put(out),
            Response::ListGroups(r) => r.put(out),
            Response::DescribeGroup(r) => r.put(out),
            Response::DeleteRecords(r) => r.put(out),
            Response::OffsetForLeaderEpoch(r) => r.put(out),
            Response::OffsetDelete => {}
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let key = i16::get(r)?;
        Ok(match key {
            api::PRODUCE => Response::Produce(Wire::get(r)?),
            api::FETCH => Response::Fetch(Wire::get(r)?),
            api::LIST_OFFSETS => Response::ListOffsets(Wire::get(r)?),
            api::METADATA => Response::Metadata(Wire::get(r)?),
            api::CREATE_TOPICS => Response::CreateTopics(Wire::get(r)?),
            api::DELETE_TOPICS => Response::DeleteTopics(Wire::get(r)?),
            api::CREATE_PARTITIONS => Response::CreatePartitions(Wire::get(r)?),
            api::UPDATE_METADATA => Response::UpdateMetadata(Wire::get(r)?),
            api::BROKER_HEARTBEAT => Response::BrokerHeartbeat(Wire::get(r)?),
            api::ALTER_PARTITION => Response::AlterPartition(Wire::get(r)?),
            api::INIT_PRODUCER_ID => Response::InitProducerId(Wire::get(r)?),
            api::ALTER_PARTITION_REASSIGNMENTS => {
                Response::AlterPartitionReassignments(Wire::get(r)?)
            }
            api::BROKER_REGISTRATION => Response::RegisterBroker(Wire::get(r)?),
            api::FIND_COORDINATOR => Response::FindCoordinator(Wire::get(r)?),
            api::CONSUMER_GROUP_HEARTBEAT => Response::GroupHeartbeat(Wire::get(r)?),
            api::OFFSET_COMMIT => Response::OffsetCommit,
            api::OFFSET_FETCH => Response::OffsetFetch(Wire::get(r)?),
            api::LIST_GROUPS => Response::ListGroups(Wire::get(r)?),
            api::CONSUMER_GROUP_DESCRIBE => Response::DescribeGroup(Wire::get(r)?),
            api::DELETE_RECORDS => Response::DeleteRecords(Wire::get(r)?),
            api::OFFSET_FOR_LEADER_EPOCH => Response::OffsetForLeaderEpoch(Wire::get(r)?),
            api::OFFSET_DELETE => Response::OffsetDelete,
            other => return Err(invalid(format!("unknown response API key {other}"))),
        })
    }
}

/// Kafka's API keys, for the APIs ferrolog has.
pub(crate) mod api {
    pub(crate) const PRODUCE: i16 = 0;
    pub(crate) const FETCH: i16 = 1;
    pub(crate) const LIST_OFFSETS: i16 = 2;
    pub(crate) const METADATA: i16 = 3;
    pub(crate) const UPDATE_METADATA: i16 = 6;
    pub(crate) const OFFSET_COMMIT: i16 = 8;
    pub(crate) const OFFSET_FETCH: i16 = 9;
    pub(crate) const FIND_COORDINATOR: i16 = 10;
    pub(crate) const LIST_GROUPS: i16 = 16;
    pub(crate) const CREATE_TOPICS: i16 = 19;
    pub(crate) const DELETE_TOPICS: i16 = 20;
    pub(crate) const DELETE_RECORDS: i16 = 21;
    pub(crate) const INIT_PRODUCER_ID: i16 = 22;
    pub(crate) const OFFSET_FOR_LEADER_EPOCH: i16 = 23;
    pub(crate) const CREATE_PARTITIONS: i16 = 37;
    pub(crate) const ALTER_PARTITION_REASSIGNMENTS: i16 = 45;
    pub(crate) const OFFSET_DELETE: i16 = 47;
    pub(crate) const ALTER_PARTITION: i16 = 56;
    pub(crate) const BROKER_REGISTRATION: i16 = 62;
    pub(crate) const BROKER_HEARTBEAT: i16 = 63;
    pub(crate) const CONSUMER_GROUP_HEARTBEAT: i16 = 68;
    pub(crate) const CONSUMER_GROUP_DESCRIBE: i16 = 69;
    /// Not Kafka's: the controller quorum's Raft messages.
    pub(crate) const RAFT: i16 = 1000;
}

// ----- errors ----------------------------------------------------------------

/// Names the crate puts in its errors' `&'static str` fields: API names,
/// operations, clients, codecs, config fields, and the reasons of refused
/// topic names and group ids. A name decodes to itself if it is here.
pub(crate) const KNOWN_NAMES: &[&str] = &[
    // API names (`Request::api_name`)
    "Produce",
    "Fetch",
    "ListOffsets",
    "Metadata",
    "CreateTopics",
    "DeleteTopics",
    "CreatePartitions",
    "UpdateMetadata",
    "BrokerHeartbeat",
    "AlterPartition",
    "InitProducerId",
    "AlterPartitionReassignments",
    "RegisterBroker",
    "FindCoordinator",
    "ConsumerGroupHeartbeat",
    "OffsetCommit",
    "OffsetFetch",
    "ListGroups",
    "ConsumerGroupDescribe",
    "DeleteRecords",
    "OffsetForLeaderEpoch",
    "OffsetDelete",
    "Raft",
    // operations that time out
    "replication of an acks=all produce",
    "replication of a group record",
    // clients
    "producer",
    "consumer",
    "admin",
    // compression codecs
    "none",
    "gzip",
    "snappy",
    "lz4",
    "zstd",
    "unknown",
    // topic config fields
    "segment_bytes",
    "segment_ms",
    "index_interval_bytes",
    "retention_ms",
    "retention_bytes",
    "flush_messages",
    "flush_ms",
    "max_message_bytes",
    "min_insync_replicas",
    "unclean_leader_election_enable",
    "cleanup_policy",
    "delete_retention_ms",
    "compression_type",
    "replication_factor",
    "partitions",
    // reasons for refused topic names
    "the name is empty",
    "`.` and `..` are not allowed",
    "longer than 249 characters",
    "only ASCII letters, digits, `.`, `_` and `-` are allowed",
    "expected `<topic>-<partition>`",
    "internal topics are written by the brokers only",
    "names starting with `__` are reserved for internal topics",
    // reasons for refused group ids
    "the id is empty",
    "the id is longer than 255 bytes",
];

/// A `&'static str` field: its text on the wire, the same static string (or
/// [`UNKNOWN_NAME`]) when read.
struct Name(&'static str);

impl Wire for Name {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        put_str(self.0, out);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let len = r.count(1)?;
        let text = r.take(len)?;
        Ok(Name(
            KNOWN_NAMES
                .iter()
                .find(|known| known.as_bytes() == text)
                .copied()
                .unwrap_or(UNKNOWN_NAME),
        ))
    }
}

/// The kinds of I/O error carried by number; others travel as `Other`.
const IO_KINDS: &[io::ErrorKind] = &[
    io::ErrorKind::Other,
    io::ErrorKind::NotFound,
    io::ErrorKind::PermissionDenied,
    io::ErrorKind::AlreadyExists,
    io::ErrorKind::WouldBlock,
    io::ErrorKind::InvalidInput,
    io::ErrorKind::InvalidData,
    io::ErrorKind::TimedOut,
    io::ErrorKind::WriteZero,
    io::ErrorKind::Interrupted,
    io::ErrorKind::Unsupported,
    io::ErrorKind::UnexpectedEof,
    io::ErrorKind::OutOfMemory,
    io::ErrorKind::StorageFull,
    io::ErrorKind::ReadOnlyFilesystem,
    io::ErrorKind::ConnectionRefused,
    io::ErrorKind::ConnectionReset,
    io::ErrorKind::ConnectionAborted,
    io::ErrorKind::BrokenPipe,
    io::ErrorKind::AddrInUse,
];

impl Wire for Arc<io::Error> {
    const MIN_SIZE: usize = 5;
    fn put(&self, out: &mut BytesMut) {
        let kind = IO_KINDS.iter().position(|k| *k == self.kind()).unwrap_or(0);
        (kind as u8).put(out);
        // The inner error's text (a custom error's message, or the OS's).
        match self.get_ref() {
            Some(inner) => put_str(&inner.to_string(), out),
            None => put_str(&self.to_string(), out),
        }
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let kind = u8::get(r)?;
        let kind = *IO_KINDS
            .get(usize::from(kind))
            .ok_or_else(|| invalid(format!("I/O error kind {kind}")))?;
        Ok(Arc::new(io::Error::new(kind, r.string()?)))
    }
}

impl Wire for PathBuf {
    const MIN_SIZE: usize = 4;
    fn put(&self, out: &mut BytesMut) {
        let bytes = self.as_os_str().as_bytes();
        (bytes.len() as u32).put(out);
        out.put_slice(bytes);
    }
    fn get(r: &mut Reader<'_>) -> Result<Self> {
        let len = r.count(1)?;
        Ok(PathBuf::from(std::ffi::OsStr::from_bytes(r.take(len)?)))
    }
}

/// Every variant of [`Error`] with its wire number and fields: the number
/// is ferrolog's (stable: a new variant takes a new number), the fields
/// follow in declaration order.
macro_rules! wire_error {
    ($($tag:literal => $variant:ident $({ $($field:ident : $wty:ty),* $(,)? })?),* $(,)?) => {
        impl Error {
            fn wire_tag(&self) -> u8 {
                match self {
                    $(Error::$variant { .. } => $tag,)*
                }
            }
        }

        impl Wire for Error {
            const MIN_SIZE: usize = 3;
            fn put(&self, out: &mut BytesMut) {
                self.code().put(out);
                self.wire_tag().put(out);
                match self {
                    $(Error::$variant $({ $($field),* })? => {
                        $($(<$wty as WireField<_>>::put_field($field, out);)*)?
                    })*
                }
            }
            fn get(r: &mut Reader<'_>) -> Result<Self> {
                let code = i16::get(r)?;
                let tag = u8::get(r)?;
                let error = match tag {
                    $($tag => Error::$variant $({ $($field: <$wty as WireField<_>>::get_field(r)?),* })?,)*
                    other => return Err(invalid(format!("unknown error number {other}"))),
                };
                if error.code() != code {
                    return Err(invalid(format!(
                        "error number {tag} has code {}, not {code}",
                        error.code()
                    )));
                }
                Ok(error)
            }
        }
    };
}

/// How an error field is written: as its own wire type, except the
/// `&'static str` names.
trait WireField<T> {
    fn put_field(value: &T, out: &mut BytesMut);
    fn get_field(r: &mut Reader<'_>) -> Result<T>;
}

impl<T: Wire> WireField<T> for T {
    fn put_field(value: &T, out: &mut BytesMut) {
        value.put(out);
    }
    fn get_field(r: &mut Reader<'_>) -> Result<T> {
        T::get(r)
    }
}

impl WireField<&'static str> for Name {
    fn put_field(value: &&'static str, out: &mut BytesMut) {
        Name(value).put(out);
    }
    fn get_field(r: &mut Reader<'_>) -> Result<&'static str> {
        Name::get(r).map(|name| name.0)
    }
}

wire_error! {
    0 => InvalidConfig { field: Name, reason: String },
    1 => InvalidTopic { name: String, reason: Name },
    2 => CorruptRecord { reason: String },
    3 => CorruptLog { path: PathBuf, offset: u64, reason: String },
    4 => UnsupportedCompression { codec: Name },
    5 => RecordTooLarge { size: usize, max: usize },
    6 => OffsetOutOfRange { offset: u64, log_start_offset: u64, log_end_offset: u64 },
    7 => UnexpectedAppendOffset { expected: u64, got: u64 },
    8 => FencedLeaderEpoch { epoch: i32, latest: i32 },
    9 => LogOffline { reason: String },
    10 => LogInUse { partition: String },
    11 => Io { context: String, source: Arc<io::Error> },
    12 => UnknownTopicOrPartition { topic: String },
    13 => InvalidPartition { topic: String, partition: u32, partition_count: u32 },
    14 => TopicAlreadyExists { topic: String },
    15 => InvalidPartitions { reason: String },
    16 => InvalidReplicationFactor { reason: String },
    17 => NotLeaderOrFollower { broker: u32, partition: TopicPartition },
    18 => NotController { broker: u32 },
    19 => InvalidRecord { reason: String },
    20 => InvalidRequest { reason: String },
    21 => InvalidFrame { reason: String },
    22 => RequestTimedOut { operation: Name, timeout_ms: u64 },
    23 => DeliveryTimeout {
        partition: TopicPartition,
        records: usize,
        elapsed_ms: u64,
        last_error: Option<String>,
    },
    24 => BufferExhausted { requested: usize, buffer_memory: usize, max_block_ms: u64 },
    25 => Network { node: u32, reason: String },
    26 => Serialization { reason: String },
    27 => RecordDeserialization { partition: TopicPartition, offset: u64, reason: String },
    28 => DroppedByInterceptor,
    29 => ClientClosed { client: Name },
    30 => NotEnoughReplicas { partition: TopicPartition, isr: usize, min_insync_replicas: usize },
    31 => NotEnoughReplicasAfterAppend { partition: TopicPartition },
    32 => OutOfOrderSequence { partition: TopicPartition, expected: i32, got: i32 },
    33 => InvalidProducerEpoch { partition: TopicPartition, epoch: i16, current: i16 },
    34 => InvalidUpdateVersion { partition: TopicPartition, version: u32, current: u32 },
    35 => NoOffsetForPartition { partition: TopicPartition },
    36 => NotAssigned,
    37 => PartitionNotAssigned { partition: TopicPartition },
    38 => NotCoordinator { group: String, node: u32 },
    39 => CoordinatorLoadInProgress { group: String },
    40 => CoordinatorNotAvailable { group: String },
    41 => InvalidGroupId { group: String, reason: Name },
    42 => GroupIdNotFound { group: String },
    43 => NonEmptyGroup { group: String, members: usize },
    44 => UnknownMemberId { group: String, member_id: String },
    45 => FencedMemberEpoch { group: String, member_id: String, epoch: i32, current: i32 },
    46 => FencedInstanceId { group: String, instance_id: String },
    47 => InconsistentGroupProtocol { group: String, requested: String, reason: String },
    48 => InvalidAssignment { assignor: String, reason: String },
    49 => InvalidPattern { pattern: String, reason: String },
    50 => IneligibleReplica { partition: TopicPartition, replica: u32 },
    51 => LeaderNotAvailable { partition: TopicPartition },
    52 => ControllerNotAvailable { reason: String },
    53 => FetchSessionIdNotFound { session_id: u32 },
    54 => InvalidFetchSessionEpoch { session_id: u32, expected: u32, got: u32 },
    55 => SendBufferFull { node: u32, limit_bytes: usize },
    56 => MetadataDeltaBaseMismatch { base_epoch: u32, base_version: u64, held_epoch: u32, held_version: u64 },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_api_name_is_a_known_name() {
        let requests = [
            Request::InitProducerId,
            Request::ListGroups,
            Request::FindCoordinator("g".into()),
        ];
        for request in &requests {
            assert!(KNOWN_NAMES.contains(&request.api_name()));
        }
        for name in [
            "Produce",
            "Fetch",
            "ListOffsets",
            "Metadata",
            "ConsumerGroupHeartbeat",
            "ConsumerGroupDescribe",
        ] {
            assert!(KNOWN_NAMES.contains(&name));
        }
    }

    #[test]
    fn a_count_larger_than_the_frame_is_refused_before_allocating() {
        let mut out = BytesMut::new();
        u32::MAX.put(&mut out);
        let buf = out.freeze();
        let mut r = Reader { buf: &buf, pos: 0 };
        assert!(matches!(
            Vec::<u64>::get(&mut r),
            Err(Error::InvalidFrame { .. })
        ));
    }
}
