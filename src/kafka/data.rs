//! The data path over Kafka's wire: Produce, Fetch and ListOffsets. Each
//! request's partitions are split by leader (as the listener last learned
//! them from Metadata), sent to each leader as one of ferrolog's requests,
//! and the answers gathered back into one Kafka answer in the request's
//! order. A partition whose leader the listener does not know is answered
//! `NOT_LEADER_OR_FOLLOWER` (or `UNKNOWN_TOPIC_OR_PARTITION` for a topic it
//! has never seen), so the client refreshes its metadata and retries.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::OffsetForLeaderEpochResponse;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset as KafkaEpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    DeleteRecordsResponse as KafkaDeleteRecordsResponse, FetchResponse as KafkaFetchResponse,
    ListOffsetsResponse as KafkaListOffsetsResponse, ProduceResponse as KafkaProduceResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use parking_lot::Mutex;
use uuid::Uuid;

use super::api::{Context, Handled};
use super::server::Reply;
use super::wire::{self, Answer, Read, Reader, RequestHeader};
use crate::error::{Error, Result};
use crate::protocol::{
    Acks, DELETE_TO_HIGH_WATERMARK, DeleteRecordsRequest, Envelope, FetchPartition, FetchRequest,
    FetchedData, ListOffsetsRequest, NodeId, OffsetAndTimestamp, OffsetSpec, Peer, ProduceAck,
    ProducePartition, ProduceRequest, Request, Response,
};
use crate::record::{RecordBatch, Records};
use crate::topic::TopicPartition;

/// Kafka's `UNKNOWN_TOPIC_OR_PARTITION`.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's `NOT_LEADER_OR_FOLLOWER`.
const NOT_LEADER_OR_FOLLOWER: i16 = 6;
/// Kafka's `INVALID_REQUIRED_ACKS`.
const INVALID_REQUIRED_ACKS: i16 = 21;
/// Kafka's `OFFSET_OUT_OF_RANGE`.
const OFFSET_OUT_OF_RANGE: i16 = 1;

/// Where each partition's leader is, as the last Metadata answers said.
#[derive(Debug, Default)]
pub(super) struct Routes {
    leaders: BTreeMap<TopicPartition, (NodeId, i32)>,
    topics: std::collections::BTreeSet<String>,
    /// Each topic by its Kafka topic id ([`topic_uuid`]), and the other
    /// way round.
    names: BTreeMap<Uuid, String>,
    ids: BTreeMap<String, Uuid>,
}

/// Kafka's topic id (a UUID) for a ferrolog topic: its name's 64-bit
/// FNV-1a hash, and its creation's offset in the metadata log (unique to
/// this topic, so a topic deleted and created again gets a new id) plus 2,
/// which keeps clear of Kafka's reserved ids 0 and 1.
pub(super) fn topic_uuid(name: &str, id: u64) -> Uuid {
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    Uuid::from_u64_pair(hash, id.saturating_add(2))
}

impl Routes {
    /// Takes what a Metadata answer says of `topics` (all of them when
    /// the answer was for every topic).
    pub(super) fn learn(&mut self, m: &crate::protocol::MetadataResponse, everything: bool) {
        if everything {
            self.leaders.clear();
            self.topics.clear();
            self.names.clear();
            self.ids.clear();
        }
        for t in &m.topics {
            self.topics.insert(t.name.to_string());
            let id = topic_uuid(&t.name, t.id);
            self.names.insert(id, t.name.to_string());
            self.ids.insert(t.name.to_string(), id);
            self.leaders.retain(|tp, _| tp.topic() != &*t.name);
            for p in &t.partitions {
                if let Some(leader) = p.leader {
                    let tp = TopicPartition::from_shared(t.name.clone(), p.partition);
                    self.leaders.insert(tp, (leader, p.leader_epoch));
                }
            }
        }
    }

    /// The topic with Kafka topic id `id`, as far as Metadata answers said.
    pub(super) fn topic_named(&self, id: &Uuid) -> Option<&str> {
        self.names.get(id).map(String::as_str)
    }

    /// The Kafka topic id of `topic`, as far as Metadata answers said.
    pub(super) fn topic_id(&self, topic: &str) -> Option<Uuid> {
        self.ids.get(topic).copied()
    }

    /// `tp`'s leader, or the error code a client should see.
    fn leader(&self, tp: &TopicPartition) -> std::result::Result<(NodeId, i32), i16> {
        match self.leaders.get(tp) {
            Some(&found) => Ok(found),
            None if self.topics.contains(tp.topic()) => Err(NOT_LEADER_OR_FOLLOWER),
            None => Err(UNKNOWN_TOPIC_OR_PARTITION),
        }
    }
}

/// Answers gathered from several leaders: one slot per partition of the
/// request; the last answer builds the Kafka answer.
pub(super) struct Gather<T> {
    left: usize,
    slots: Vec<Option<T>>,
    finish: Option<Finish<T>>,
}

/// What builds the Kafka answer from the filled slots.
type Finish<T> = Box<dyn FnOnce(Vec<Option<T>>) + Send>;

pub(super) type Gathered<T> = Arc<Mutex<Gather<T>>>;

pub(super) fn gather<T: Send + 'static>(
    slots: Vec<Option<T>>,
    sends: usize,
    finish: impl FnOnce(Vec<Option<T>>) + Send + 'static,
) -> Gathered<T> {
    Arc::new(Mutex::new(Gather {
        left: sends,
        slots,
        finish: Some(Box::new(finish)),
    }))
}

/// One leader answered (`filled` slot by slot); the last one finishes.
/// With no sends at all, [`finish_now`] finishes.
pub(super) fn answered<T>(g: &Gathered<T>, filled: impl IntoIterator<Item = (usize, T)>) {
    let done = {
        let mut g = g.lock();
        for (slot, item) in filled {
            if let Some(s) = g.slots.get_mut(slot) {
                *s = Some(item);
            }
        }
        g.left = g.left.saturating_sub(1);
        (g.left == 0).then(|| (g.finish.take(), std::mem::take(&mut g.slots)))
    };
    if let Some((Some(finish), slots)) = done {
        finish(slots);
    }
}

pub(super) fn finish_now<T>(g: &Gathered<T>) {
    let done = {
        let mut g = g.lock();
        (g.left == 0).then(|| (g.finish.take(), std::mem::take(&mut g.slots)))
    };
    if let Some((Some(finish), slots)) = done {
        finish(slots);
    }
}

/// Sends `leader` the request `request` makes of its parts (slot, part);
/// `read` turns the answer into each part's result, in the same order
/// (`None`: not the answer expected). Any failure fills every slot with
/// its error code.
fn ask<P, T: Send + 'static>(
    context: &Context,
    g: &Gathered<std::result::Result<T, i16>>,
    leader: NodeId,
    parts: Vec<(usize, P)>,
    request: impl FnOnce(Vec<P>) -> Request,
    read: impl FnOnce(Response) -> Option<Vec<std::result::Result<T, i16>>> + Send + 'static,
) {
    let (slots, parts): (Vec<usize>, Vec<P>) = parts.into_iter().unzip();
    let request = request(parts);
    let g = g.clone();
    context.endpoint.send_with(leader, request, move |answer| {
        let results = match answer {
            Ok(response) => {
                let kind = response.api_name();
                read(response).ok_or_else(|| {
                    Error::InvalidRequest {
                        reason: format!("unexpected answer {kind}"),
                    }
                    .code()
                })
            }
            Err(e) => Err(e.code()),
        };
        let filled: Vec<(usize, std::result::Result<T, i16>)> = match results {
            Ok(results) => slots.iter().copied().zip(results).collect(),
            Err(code) => slots.iter().map(|&s| (s, Err(code))).collect(),
        };
        answered(&g, filled);
    });
}

/// ferrolog's per-partition results as Kafka's error codes.
fn codes<T>(results: impl IntoIterator<Item = Result<T>>) -> Vec<std::result::Result<T, i16>> {
    results
        .into_iter()
        .map(|r| r.map_err(|e| e.code()))
        .collect()
}

/// The request's partitions with their results, grouped back into its
/// topics in order (`each` makes one partition's answer; a slot nobody
/// filled is `NOT_LEADER_OR_FOLLOWER`).
fn by_topic<T, P>(
    layout: Vec<(String, i32)>,
    slots: Vec<Option<std::result::Result<T, i16>>>,
    mut each: impl FnMut(i32, std::result::Result<T, i16>) -> P,
) -> Vec<(String, Vec<P>)> {
    let mut topics: Vec<(String, Vec<P>)> = Vec::new();
    for ((topic, index), slot) in layout.into_iter().zip(slots) {
        let p = each(index, slot.unwrap_or(Err(NOT_LEADER_OR_FOLLOWER)));
        match topics.last_mut() {
            Some((t, parts)) if *t == topic => parts.push(p),
            _ => topics.push((topic, vec![p])),
        }
    }
    topics
}

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// A request's partitions laid out in its order (one slot each: `None`
/// until a leader answers, or the error code it is answered with at once)
/// and split by leader as (slot, part).
struct Routed<P, T> {
    layout: Vec<(String, i32)>,
    slots: Vec<Option<std::result::Result<T, i16>>>,
    by_leader: BTreeMap<NodeId, Vec<(usize, P)>>,
}

/// Routes each partition of `topics` (index, item) to its leader: `make`
/// turns the partition, its leader epoch and its item into the part sent
/// there, or an error code.
fn route<I, P, T>(
    context: &Context,
    topics: Vec<(String, Vec<(i32, I)>)>,
    mut make: impl FnMut(TopicPartition, i32, I) -> std::result::Result<P, i16>,
) -> Routed<P, T> {
    let mut routed = Routed {
        layout: Vec::new(),
        slots: Vec::new(),
        by_leader: BTreeMap::new(),
    };
    let routes = context.routes.lock();
    for (topic, partitions) in topics {
        for (index, item) in partitions {
            let slot = routed.layout.len();
            let part = partition_of(&topic, index).and_then(|tp| {
                let (leader, epoch) = routes.leader(&tp)?;
                make(tp, epoch, item).map(|part| (leader, part))
            });
            routed.layout.push((topic.clone(), index));
            match part {
                Ok((leader, part)) => {
                    routed.slots.push(None);
                    routed
                        .by_leader
                        .entry(leader)
                        .or_default()
                        .push((slot, part));
                }
                Err(code) => routed.slots.push(Some(Err(code))),
            }
        }
    }
    routed
}

/// Reads a partition index into a [`TopicPartition`], or the error code.
fn partition_of(topic: &str, index: i32) -> std::result::Result<TopicPartition, i16> {
    let index = u32::try_from(index).map_err(|_| UNKNOWN_TOPIC_OR_PARTITION)?;
    TopicPartition::new(topic, index).map_err(|e| e.code())
}

// ----- Produce ------------------------------------------------------------

type Produced = std::result::Result<ProduceAck, i16>;

/// Produce (v3+: one v2 batch per partition). acks=0 gets no answer.
pub(super) fn produce(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    body.nullable_string("transactional id")?;
    let acks = body.i16("acks")?;
    let timeout_ms = body.i32("timeout")?;
    let topics = body
        .array("topic data", |r| {
            let topic = r.string("topic name")?;
            let partitions = r
                .array("partition data", |r| {
                    let index = r.i32("partition index")?;
                    let records = r.nullable_bytes("records")?;
                    r.tagged_fields()?;
                    Ok((index, records))
                })?
                .unwrap_or_default();
            r.tagged_fields()?;
            Ok((topic, partitions))
        })?
        .unwrap_or_default();
    body.tagged_fields()?;
    let acks = match acks {
        0 => Some(Acks::None),
        1 => Some(Acks::Leader),
        -1 => Some(Acks::All),
        _ => None,
    };
    let Routed {
        layout,
        slots,
        by_leader,
    } = route(context, topics, |tp, _, records: Option<Bytes>| {
        acks.ok_or(INVALID_REQUIRED_ACKS)?;
        let bytes = records.ok_or_else(|| {
            Error::InvalidRecord {
                reason: "null records".into(),
            }
            .code()
        })?;
        let batch = RecordBatch::from_bytes(bytes).map_err(|e| e.code())?;
        Ok(ProducePartition {
            partition: tp,
            batch,
        })
    });
    let slots: Vec<Option<Produced>> = slots;
    let timeout_ms = u32::try_from(timeout_ms).unwrap_or(0);
    if acks == Some(Acks::None) {
        for (leader, parts) in by_leader {
            let request = Request::Produce(ProduceRequest {
                acks: Acks::None,
                timeout_ms,
                partitions: parts.into_iter().map(|(_, p)| p).collect(),
            });
            context.send_unanswered(leader, request);
        }
        return Ok(Handled::Now(Answer::Nothing));
    }
    let acks = acks.unwrap_or(Acks::All);
    let version = header.api_version;
    let g = gather(slots, by_leader.len(), move |slots| {
        let topics = by_topic(layout, slots, |index, result| {
            let p = PartitionProduceResponse::default()
                .with_index(index)
                .with_log_append_time_ms(-1);
            match result {
                Ok(ack) => p
                    .with_base_offset(ack.base_offset as i64)
                    .with_log_start_offset(if version >= 5 {
                        ack.log_start_offset as i64
                    } else {
                        -1
                    }),
                Err(code) => p
                    .with_error_code(code)
                    .with_base_offset(-1)
                    .with_log_start_offset(-1),
            }
        });
        let topics = topics
            .into_iter()
            .map(|(topic, parts)| {
                TopicProduceResponse::default()
                    .with_name(name(&topic))
                    .with_partition_responses(parts)
            })
            .collect();
        let response = KafkaProduceResponse::default().with_responses(topics);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    for (leader, parts) in by_leader {
        let request = |partitions| {
            Request::Produce(ProduceRequest {
                acks,
                timeout_ms,
                partitions,
            })
        };
        ask(context, &g, leader, parts, request, |answer| match answer {
            Response::Produce(r) => Some(codes(r.partitions.into_iter().map(|p| p.result))),
            _ => None,
        });
    }
    finish_now(&g);
    Ok(Handled::Later)
}

// ----- ListOffsets ---------------------------------------------------------

type Listed = std::result::Result<(Option<OffsetAndTimestamp>, i32), i16>;

/// ListOffsets (v1+): earliest (-2), latest (-1, the high watermark) or
/// the first offset at or after a timestamp.
pub(super) fn list_offsets(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    body.i32("replica id")?;
    if version >= 2 {
        body.i8("isolation level")?;
    }
    let topics = body.topics(|r| {
        let index = r.i32("partition index")?;
        if version >= 4 {
            r.i32("current leader epoch")?;
        }
        let timestamp = r.i64("timestamp")?;
        r.tagged_fields()?;
        Ok((index, timestamp))
    })?;
    body.tagged_fields()?;
    // Each part: the partition, what to find, its leader epoch.
    let Routed {
        layout,
        slots,
        by_leader,
    } = route(context, topics, |tp, epoch, timestamp: i64| {
        let spec = match timestamp {
            -2 => OffsetSpec::Earliest,
            -1 => OffsetSpec::Latest,
            ts if ts >= 0 => OffsetSpec::Timestamp(ts),
            _ => {
                return Err(Error::InvalidRequest {
                    reason: format!("timestamp {timestamp}"),
                }
                .code());
            }
        };
        Ok((tp, spec, epoch))
    });
    let slots: Vec<Option<Listed>> = slots;
    let g = gather(slots, by_leader.len(), move |slots| {
        let topics = by_topic(layout, slots, |index, result| {
            let p = ListOffsetsPartitionResponse::default().with_partition_index(index);
            match result {
                Ok((found, epoch)) => p
                    .with_offset(found.map_or(-1, |f| f.offset as i64))
                    .with_timestamp(found.and_then(|f| f.timestamp).unwrap_or(-1))
                    .with_leader_epoch(if version >= 4 { epoch } else { -1 }),
                Err(code) => p.with_error_code(code).with_offset(-1).with_timestamp(-1),
            }
        });
        let topics = topics
            .into_iter()
            .map(|(topic, parts)| {
                ListOffsetsTopicResponse::default()
                    .with_name(name(&topic))
                    .with_partitions(parts)
            })
            .collect();
        let response = KafkaListOffsetsResponse::default().with_topics(topics);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    for (leader, parts) in by_leader {
        let epochs: Vec<i32> = parts.iter().map(|(_, (_, _, e))| *e).collect();
        let request = |asks: Vec<(TopicPartition, OffsetSpec, i32)>| {
            Request::ListOffsets(ListOffsetsRequest {
                partitions: asks.into_iter().map(|(tp, spec, _)| (tp, spec)).collect(),
            })
        };
        ask(
            context,
            &g,
            leader,
            parts,
            request,
            move |answer| match answer {
                Response::ListOffsets(r) => Some(codes(
                    r.partitions
                        .into_iter()
                        .zip(epochs)
                        .map(|(p, epoch)| p.result.map(|f| (f, epoch))),
                )),
                _ => None,
            },
        );
    }
    finish_now(&g);
    Ok(Handled::Later)
}

// ----- Fetch ---------------------------------------------------------------

type Fetched = std::result::Result<FetchedData, i16>;

/// Fetch (v4+, as a consumer; no fetch sessions: answered with session id
/// 0, so clients send full fetches). Each leader holds its part up to
/// `max_wait_ms` for `min_bytes`.
pub(super) fn fetch(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    body.i32("replica id")?;
    let max_wait_ms = body.i32("max wait")?;
    let min_bytes = body.i32("min bytes")?;
    let max_bytes = body.i32("max bytes")?;
    body.i8("isolation level")?;
    if version >= 7 {
        body.i32("session id")?;
        body.i32("session epoch")?;
    }
    let topics = body.topics(|r| {
        let index = r.i32("partition")?;
        let leader_epoch = if version >= 9 {
            r.i32("current leader epoch")?
        } else {
            -1
        };
        let offset = r.i64("fetch offset")?;
        if version >= 12 {
            r.i32("last fetched epoch")?;
        }
        if version >= 5 {
            r.i64("log start offset")?;
        }
        let max = r.i32("partition max bytes")?;
        r.tagged_fields()?;
        Ok((index, (leader_epoch, offset, max)))
    })?;
    if version >= 7 {
        body.array("forgotten topics", |r| {
            r.string("topic")?;
            r.array("partitions", |r| r.i32("partition"))?;
            r.tagged_fields()
        })?;
    }
    if version >= 11 {
        body.string("rack id")?;
    }
    body.tagged_fields()?;
    let Routed {
        layout,
        slots,
        by_leader,
    } = route(
        context,
        topics,
        |tp, _, (leader_epoch, offset, max): (i32, i64, i32)| {
            let fetch_offset = u64::try_from(offset).map_err(|_| OFFSET_OUT_OF_RANGE)?;
            Ok(FetchPartition {
                partition: tp,
                fetch_offset,
                max_bytes: u32::try_from(max).unwrap_or(0),
                current_leader_epoch: (leader_epoch >= 0).then_some(leader_epoch),
                last_fetched_epoch: None,
            })
        },
    );
    let slots: Vec<Option<Fetched>> = slots;
    let g = gather(slots, by_leader.len(), move |slots| {
        let topics = by_topic(layout, slots, |index, result| {
            let p = PartitionData::default().with_partition_index(index);
            match result {
                Ok(data) => p
                    .with_high_watermark(data.high_watermark as i64)
                    .with_last_stable_offset(data.high_watermark as i64)
                    .with_log_start_offset(if version >= 5 {
                        data.log_start_offset as i64
                    } else {
                        -1
                    })
                    .with_aborted_transactions(Some(Vec::new()))
                    .with_records(Some(records_bytes(&data.records))),
                Err(code) => p
                    .with_error_code(code)
                    .with_high_watermark(-1)
                    .with_last_stable_offset(-1)
                    .with_log_start_offset(-1)
                    .with_records(Some(Bytes::new())),
            }
        });
        let topics = topics
            .into_iter()
            .map(|(topic, parts)| {
                FetchableTopicResponse::default()
                    .with_topic(name(&topic))
                    .with_partitions(parts)
            })
            .collect();
        let response = KafkaFetchResponse::default().with_responses(topics);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    let max_wait_ms = u32::try_from(max_wait_ms).unwrap_or(0);
    let min_bytes = u32::try_from(min_bytes).unwrap_or(0);
    let max_bytes = u32::try_from(max_bytes).unwrap_or(0);
    for (leader, parts) in by_leader {
        let request = |partitions| {
            Request::Fetch(FetchRequest {
                max_wait_ms,
                min_bytes,
                max_bytes,
                partitions,
                replica: None,
                session: None,
                forgotten: Vec::new(),
            })
        };
        ask(context, &g, leader, parts, request, |answer| match answer {
            Response::Fetch(r) => Some(codes(r.partitions.into_iter().map(|p| p.result))),
            _ => None,
        });
    }
    finish_now(&g);
    Ok(Handled::Later)
}

/// A fetch's records as one buffer (no copy when they are one chunk).
fn records_bytes(records: &Records) -> Bytes {
    match records.chunks() {
        [] => Bytes::new(),
        [one] => one.clone(),
        many => {
            let mut out = BytesMut::with_capacity(records.size());
            for chunk in many {
                out.extend_from_slice(chunk);
            }
            out.freeze()
        }
    }
}

impl Context {
    /// Sends `request` without waiting for an answer (acks=0): its
    /// correlation id is one the endpoint never waits for.
    fn send_unanswered(&self, to: NodeId, request: Request) {
        let id = self
            .unanswered
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.transport.send(Envelope::request(
            self.endpoint.peer(),
            Peer::Broker(to),
            id,
            request,
        ));
    }
}

// ----- DeleteRecords -------------------------------------------------------

type Deleted = std::result::Result<u64, i16>;

/// DeleteRecords: each partition's log start moves up to the offset given
/// (at most its high watermark; -1: the high watermark).
pub(super) fn delete_records(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    let topics = body.topics(|r| {
        let index = r.i32("partition index")?;
        let offset = r.i64("offset")?;
        r.tagged_fields()?;
        Ok((index, offset))
    })?;
    body.i32("timeout")?;
    body.tagged_fields()?;
    let Routed {
        layout,
        slots,
        by_leader,
    } = route(context, topics, |tp, _, offset: i64| {
        let offset = match offset {
            -1 => DELETE_TO_HIGH_WATERMARK,
            o => u64::try_from(o).map_err(|_| OFFSET_OUT_OF_RANGE)?,
        };
        Ok((tp, offset))
    });
    let slots: Vec<Option<Deleted>> = slots;
    let g = gather(slots, by_leader.len(), move |slots| {
        let topics = by_topic(layout, slots, |index, result| {
            let p = DeleteRecordsPartitionResult::default().with_partition_index(index);
            match result {
                Ok(low) => p.with_low_watermark(low as i64),
                Err(code) => p.with_error_code(code).with_low_watermark(-1),
            }
        });
        let topics = topics
            .into_iter()
            .map(|(topic, parts)| {
                DeleteRecordsTopicResult::default()
                    .with_name(name(&topic))
                    .with_partitions(parts)
            })
            .collect();
        let response = KafkaDeleteRecordsResponse::default().with_topics(topics);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    for (leader, parts) in by_leader {
        let request = |partitions| Request::DeleteRecords(DeleteRecordsRequest { partitions });
        ask(context, &g, leader, parts, request, |answer| match answer {
            Response::DeleteRecords(r) => Some(codes(r.into_iter().map(|(_, result)| result))),
            _ => None,
        });
    }
    finish_now(&g);
    Ok(Handled::Later)
}

// ----- OffsetForLeaderEpoch ------------------------------------------------

type EpochEnded = std::result::Result<Option<crate::protocol::EpochEndOffset>, i16>;

/// OffsetForLeaderEpoch (v2–v4): where each asked leader epoch ended, from
/// each partition's leader (how a consumer checks after a leader change
/// that what it read is still in the log; an epoch older than the log's
/// oldest is answered with epoch and offset -1, as Kafka does).
pub(super) fn offset_for_leader_epoch(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    if version >= 3 {
        body.i32("replica id")?;
    }
    let topics = body.topics(|r| {
        let index = r.i32("partition")?;
        let current = r.i32("current leader epoch")?;
        let epoch = r.i32("leader epoch")?;
        r.tagged_fields()?;
        Ok((index, (current, epoch)))
    })?;
    body.tagged_fields()?;
    let Routed {
        layout,
        slots,
        by_leader,
    } = route(context, topics, |tp, _, (current, epoch): (i32, i32)| {
        Ok((tp, ((current >= 0).then_some(current), epoch)))
    });
    let slots: Vec<Option<EpochEnded>> = slots;
    let g = gather(slots, by_leader.len(), move |slots| {
        let topics = by_topic(layout, slots, |index, result| {
            let p = KafkaEpochEndOffset::default().with_partition(index);
            match result {
                Ok(Some(found)) => p
                    .with_leader_epoch(found.leader_epoch)
                    .with_end_offset(found.end_offset.min(i64::MAX as u64) as i64),
                Ok(None) => p.with_leader_epoch(-1).with_end_offset(-1),
                Err(code) => p
                    .with_error_code(code)
                    .with_leader_epoch(-1)
                    .with_end_offset(-1),
            }
        });
        let topics = topics
            .into_iter()
            .map(|(topic, parts)| {
                OffsetForLeaderTopicResult::default()
                    .with_topic(name(&topic))
                    .with_partitions(parts)
            })
            .collect();
        let response = OffsetForLeaderEpochResponse::default().with_topics(topics);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    for (leader, parts) in by_leader {
        let request = |partitions| {
            Request::OffsetForLeaderEpoch(crate::protocol::OffsetForLeaderEpochRequest {
                partitions,
            })
        };
        ask(context, &g, leader, parts, request, |answer| match answer {
            Response::OffsetForLeaderEpoch(r) => {
                Some(codes(r.into_iter().map(|(_, result)| result)))
            }
            _ => None,
        });
    }
    finish_now(&g);
    Ok(Handled::Later)
}
