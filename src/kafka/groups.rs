//! Consumer groups over Kafka's wire: FindCoordinator, OffsetCommit,
//! OffsetFetch, ListGroups and ConsumerGroupHeartbeat (KIP-848). A group request goes to the broker whose
//! port it came in on, as a Kafka client sends it to the coordinator it
//! found; a broker that does not coordinate the group says so
//! (`NOT_COORDINATOR`) and the client looks again.

use bytes::{BufMut, Bytes, BytesMut};
use kafka_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup as ConsumerDescribedGroup,
    Member as DescribedMember, TopicPartitions as DescribedTopicPartitions,
};
use kafka_protocol::messages::consumer_group_heartbeat_response::{
    Assignment as HeartbeatAssignment, TopicPartitions as HeartbeatTopicPartitions,
};
use kafka_protocol::messages::consumer_protocol_assignment::TopicPartition as AssignedTopic;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{
    BrokerId, ConsumerGroupDescribeResponse, ConsumerGroupHeartbeatResponse,
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, DescribeGroupsResponse,
    FindCoordinatorResponse, GroupId, ListGroupsResponse, OffsetCommitResponse,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::{Encodable, StrBytes};

use super::api::{Context, Handled};
use super::data::{Routes, answered, finish_now, gather};
use super::server::Reply;
use super::wire::{self, Read, Reader, RequestHeader};
use crate::error::Error;
use crate::protocol::{
    CommittedOffsets, DEFAULT_ASSIGNOR, GroupDescription, GroupHeartbeatRequest,
    GroupHeartbeatResponse, GroupState, JOIN_GROUP_EPOCH, MetadataRequest, NodeId,
    OffsetAndMetadata, OffsetCommitRequest, OffsetFetchRequest, Request, Response, Subscription,
};
use crate::topic::TopicPartition;

/// Kafka's `COORDINATOR_NOT_AVAILABLE`.
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
/// Kafka's `INVALID_REQUEST`.
const INVALID_REQUEST: i16 = 42;
/// Kafka's `UNKNOWN_TOPIC_OR_PARTITION`.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's `ILLEGAL_GENERATION`.
const ILLEGAL_GENERATION: i16 = 22;
/// Kafka's `FENCED_MEMBER_EPOCH` (ferrolog's `FencedMemberEpoch`).
const FENCED_MEMBER_EPOCH: i16 = 110;
/// Kafka's `STALE_MEMBER_EPOCH`.
const STALE_MEMBER_EPOCH: i16 = 113;

/// The protocol type of ferrolog's groups (Kafka's consumer groups).
const CONSUMER: &str = "consumer";

/// An OffsetCommit partition's index, and the code it is refused with at
/// once (`None`: it is committed with the rest).
type CommitAnswer = (i32, Option<i16>);

/// An OffsetFetch partition's index, committed offset (-1: none) and
/// metadata.
type FetchAnswer = (i32, i64, String);

/// A failure as Kafka shows it: its code and message.
type Failure = (i16, String);

fn failure(e: &Error) -> Failure {
    (e.code(), e.to_string())
}

fn unexpected(kind: &str) -> Failure {
    let e = Error::InvalidRequest {
        reason: format!("an unexpected answer {kind}"),
    };
    failure(&e)
}

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// Sends `request` to `broker`; `read` takes the answer (or the failure)
/// and `answer` builds the frame on the listener's thread.
pub(super) fn ask<T: Send + 'static>(
    context: &Context,
    broker: NodeId,
    request: Request,
    read: impl FnOnce(Response) -> Option<T> + Send + 'static,
    reply: Reply,
    answer: impl FnOnce(std::result::Result<T, Failure>) -> wire::Answer + Send + 'static,
) -> Handled {
    context.endpoint.send_with(broker, request, move |result| {
        let result = match result {
            Ok(response) => {
                let kind = response.api_name();
                read(response).ok_or_else(|| unexpected(kind))
            }
            Err(e) => Err(failure(&e)),
        };
        reply.answer(move || answer(result));
    });
    Handled::Later
}

/// Sends each of `requests` to `broker`; once all are answered (at once
/// when there are none) `finish` gets the answers as `read` takes them, or
/// the failures, in the same order.
pub(super) fn ask_each<T: Send + 'static>(
    context: &Context,
    broker: NodeId,
    requests: Vec<Request>,
    read: impl Fn(Response) -> Option<T> + Clone + Send + 'static,
    finish: impl FnOnce(Vec<std::result::Result<T, Failure>>) + Send + 'static,
) {
    let slots = (0..requests.len()).map(|_| None).collect();
    let g = gather(slots, requests.len(), move |slots| {
        finish(
            slots
                .into_iter()
                .map(|s| s.unwrap_or_else(|| Err(unexpected("none"))))
                .collect(),
        );
    });
    for (slot, request) in requests.into_iter().enumerate() {
        let (g, read) = (g.clone(), read.clone());
        context.endpoint.send_with(broker, request, move |result| {
            let answer = match result {
                Ok(response) => {
                    let kind = response.api_name();
                    read(response).ok_or_else(|| unexpected(kind))
                }
                Err(e) => Err(failure(&e)),
            };
            answered(&g, [(slot, answer)]);
        });
    }
    finish_now(&g);
}

/// FindCoordinator (v0–v6): the broker coordinating each group, from the
/// broker the request came to. Transaction coordinators are not served.
pub(super) fn find_coordinator(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let (key_type, keys) = if version >= 4 {
        let key_type = body.i8("key type")?;
        let keys = body.array("coordinator keys", |r| r.string("key"))?;
        (key_type, keys.unwrap_or_default())
    } else {
        let key = body.string("key")?;
        let key_type = if version >= 1 {
            body.i8("key type")?
        } else {
            0
        };
        (key_type, vec![key])
    };
    body.tagged_fields()?;
    let ports = context.advertised.clone();
    let host = context.host.clone();
    let coordinator = move |key: String, found: std::result::Result<NodeId, Failure>| {
        let found = found.and_then(|node| {
            ports
                .iter()
                .find(|(id, _)| *id == node)
                .map(|&(id, port)| (id, port))
                .ok_or_else(|| {
                    (
                        COORDINATOR_NOT_AVAILABLE,
                        format!("broker {node} has no port on this listener"),
                    )
                })
        });
        let c = Coordinator::default().with_key(text(key));
        match found {
            Ok((id, port)) => c
                .with_node_id(BrokerId(id as i32))
                .with_host(text(host.clone()))
                .with_port(port),
            Err((code, message)) => c
                .with_error_code(code)
                .with_error_message(Some(text(message)))
                .with_node_id(BrokerId(-1))
                .with_host(text(""))
                .with_port(-1),
        }
    };
    let finish = move |found: Vec<Coordinator>| {
        let response = if version >= 4 {
            FindCoordinatorResponse::default().with_coordinators(found)
        } else {
            let c = found.into_iter().next().unwrap_or_default();
            FindCoordinatorResponse::default()
                .with_error_code(c.error_code)
                .with_error_message(c.error_message.filter(|_| version >= 1))
                .with_node_id(c.node_id)
                .with_host(c.host)
                .with_port(c.port)
        };
        wire::response_frame(&header, &response, version)
    };
    if key_type != 0 {
        let why = || {
            (
                INVALID_REQUEST,
                "transaction coordinators are not served".to_string(),
            )
        };
        let found = keys
            .into_iter()
            .map(|k| coordinator(k, Err(why())))
            .collect();
        reply.answer(move || finish(found));
        return Ok(Handled::Later);
    }
    let requests = keys.iter().cloned().map(Request::FindCoordinator).collect();
    let read = |r| match r {
        Response::FindCoordinator(node) => Some(node),
        _ => None,
    };
    ask_each(context, broker, requests, read, move |results| {
        let found = keys
            .into_iter()
            .zip(results)
            .map(|(key, found)| coordinator(key, found))
            .collect();
        reply.answer(move || finish(found));
    });
    Ok(Handled::Later)
}

/// OffsetCommit (v2–v9): a member's commit (its id and generation, or
/// member epoch from v9), or a commit from outside the group's membership
/// (empty id, generation -1), which the coordinator takes while the group
/// has no members. ferrolog commits a request's offsets all or none, so
/// one error answers every partition; a partition with a negative offset
/// or index is refused alone (`INVALID_REQUEST`,
/// `UNKNOWN_TOPIC_OR_PARTITION`).
pub(super) fn offset_commit(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let member_epoch = body.i32("generation id or member epoch")?;
    let member_id = body.string("member id")?;
    if version >= 7 {
        body.nullable_string("group instance id")?;
    }
    if version <= 4 {
        body.i64("retention time")?;
    }
    let topics = body.topics(|r| {
        let index = r.i32("partition index")?;
        let offset = r.i64("committed offset")?;
        if version >= 6 {
            r.i32("committed leader epoch")?;
        }
        let metadata = r.nullable_string("committed metadata")?;
        r.tagged_fields()?;
        Ok((index, offset, metadata.unwrap_or_default()))
    })?;
    body.tagged_fields()?;
    let mut layout: Vec<(String, Vec<CommitAnswer>)> = Vec::new();
    let mut offsets = Vec::new();
    for (name, partitions) in topics {
        let mut answers = Vec::new();
        for (index, offset, metadata) in partitions {
            let tp = u32::try_from(index)
                .ok()
                .and_then(|p| TopicPartition::new(name.as_str(), p).ok());
            let refused = match (tp, u64::try_from(offset)) {
                (Some(tp), Ok(offset)) => {
                    offsets.push((
                        tp,
                        OffsetAndMetadata {
                            offset,
                            metadata,
                            commit_timestamp: 0,
                        },
                    ));
                    None
                }
                (None, _) => Some(UNKNOWN_TOPIC_OR_PARTITION),
                (_, Err(_)) => Some(INVALID_REQUEST),
            };
            answers.push((index, refused));
        }
        layout.push((name, answers));
    }
    let answer = move |result: std::result::Result<(), Failure>| {
        // A stale member epoch is a classic member's stale generation, and
        // a KIP-848 member's stale epoch (v9) as Kafka answers commits.
        let code = match result.err().map_or(0, |(code, _)| code) {
            FENCED_MEMBER_EPOCH if version >= 9 => STALE_MEMBER_EPOCH,
            FENCED_MEMBER_EPOCH => ILLEGAL_GENERATION,
            code => code,
        };
        let topics = layout
            .into_iter()
            .map(|(name, partitions)| {
                let partitions = partitions
                    .into_iter()
                    .map(|(index, refused)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(index)
                            .with_error_code(refused.unwrap_or(code))
                    })
                    .collect();
                OffsetCommitResponseTopic::default()
                    .with_name(TopicName(text(name)))
                    .with_partitions(partitions)
            })
            .collect();
        let response = OffsetCommitResponse::default().with_topics(topics);
        wire::response_frame(&header, &response, version)
    };
    if offsets.is_empty() {
        reply.answer(move || answer(Ok(())));
        return Ok(Handled::Later);
    }
    let request = Request::OffsetCommit(OffsetCommitRequest {
        group,
        member_id,
        member_epoch,
        offsets,
    });
    let read = |r| matches!(r, Response::OffsetCommit).then_some(());
    Ok(ask(context, broker, request, read, reply, answer))
}

/// One group's part of an OffsetFetch: its id and the partitions asked
/// (`None`: all it has).
type FetchAsk = (String, Option<Vec<(String, Vec<i32>)>>);

/// OffsetFetch (v1–v9): the committed offsets of one group (v1–v7) or of
/// several (v8+). A partition with nothing committed is answered with
/// offset -1, as Kafka does.
pub(super) fn offset_fetch(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let topics = |r: &mut Reader| {
        r.array("topics", |r| {
            let name = r.string("topic name")?;
            let partitions = r
                .array("partition indexes", |r| r.i32("partition index"))?
                .unwrap_or_default();
            r.tagged_fields()?;
            Ok((name, partitions))
        })
    };
    let asks: Vec<FetchAsk> = if version >= 8 {
        body.array("groups", |r| {
            let group = r.string("group id")?;
            if version >= 9 {
                r.nullable_string("member id")?;
                r.i32("member epoch")?;
            }
            let asked = topics(r)?;
            r.tagged_fields()?;
            Ok((group, asked))
        })?
        .unwrap_or_default()
    } else {
        let group = body.string("group id")?;
        vec![(group, topics(&mut body)?)]
    };
    if version >= 7 {
        body.bool("require stable")?;
    }
    body.tagged_fields()?;
    let layout: Vec<FetchAsk> = asks.clone();
    let requests = asks
        .into_iter()
        .map(|(group, asked)| {
            let partitions = asked.map(|topics| {
                topics
                    .iter()
                    .flat_map(|(name, indexes)| {
                        indexes.iter().filter_map(move |&i| {
                            TopicPartition::new(name.as_str(), u32::try_from(i).ok()?).ok()
                        })
                    })
                    .collect()
            });
            Request::OffsetFetch(OffsetFetchRequest { group, partitions })
        })
        .collect();
    let read = |r| match r {
        Response::OffsetFetch(offsets) => Some(offsets),
        _ => None,
    };
    ask_each(context, broker, requests, read, move |results| {
        reply.answer(move || {
            let response = fetch_response(version, layout, results);
            wire::response_frame(&header, &response, version)
        });
    });
    Ok(Handled::Later)
}

/// One partition's committed offset as OffsetFetch answers it.
fn committed(offsets: &CommittedOffsets, tp: &TopicPartition) -> (i64, String) {
    offsets.get(tp).map_or((-1, String::new()), |o| {
        (o.offset.min(i64::MAX as u64) as i64, o.metadata.clone())
    })
}

/// The (topic, partitions) an OffsetFetch answers: those asked, or every
/// one with a committed offset.
fn answered_partitions(
    asked: Option<Vec<(String, Vec<i32>)>>,
    offsets: &CommittedOffsets,
) -> Vec<(String, Vec<FetchAnswer>)> {
    match asked {
        Some(topics) => topics
            .into_iter()
            .map(|(name, indexes)| {
                let partitions = indexes
                    .into_iter()
                    .map(|i| {
                        let (offset, metadata) = u32::try_from(i)
                            .ok()
                            .and_then(|p| TopicPartition::new(name.as_str(), p).ok())
                            .map_or((-1, String::new()), |tp| committed(offsets, &tp));
                        (i, offset, metadata)
                    })
                    .collect();
                (name, partitions)
            })
            .collect(),
        None => {
            let mut topics: Vec<(String, Vec<FetchAnswer>)> = Vec::new();
            for tp in offsets.keys() {
                let (offset, metadata) = committed(offsets, tp);
                let p = (tp.partition() as i32, offset, metadata);
                match topics.last_mut() {
                    Some((t, parts)) if t == tp.topic() => parts.push(p),
                    _ => topics.push((tp.topic().to_string(), vec![p])),
                }
            }
            topics
        }
    }
}

/// OffsetFetch's topics and partitions as `$topic` and `$partition`:
/// the one-group (v1–v7) and several-group (v8+) answers have types of
/// their own with the same fields.
macro_rules! answer_topics {
    ($topics:expr, $topic:ident, $partition:ident) => {
        $topics
            .into_iter()
            .map(|(name, parts)| {
                let partitions = parts
                    .into_iter()
                    .map(|(index, offset, metadata)| {
                        $partition::default()
                            .with_partition_index(index)
                            .with_committed_offset(offset)
                            .with_committed_leader_epoch(-1)
                            .with_metadata(Some(text(metadata)))
                    })
                    .collect();
                $topic::default()
                    .with_name(TopicName(text(name)))
                    .with_partitions(partitions)
            })
            .collect::<Vec<_>>()
    };
}

fn fetch_response(
    version: i16,
    asks: Vec<FetchAsk>,
    results: Vec<std::result::Result<CommittedOffsets, Failure>>,
) -> OffsetFetchResponse {
    let empty = CommittedOffsets::new();
    let mut groups = Vec::new();
    let mut single = None;
    for ((group, asked), result) in asks.into_iter().zip(results) {
        let (offsets, code) = match &result {
            Ok(offsets) => (offsets, 0),
            Err((code, _)) => (&empty, *code),
        };
        let topics = if code == 0 {
            answered_partitions(asked, offsets)
        } else {
            Vec::new()
        };
        if version >= 8 {
            let topics = answer_topics!(
                topics,
                OffsetFetchResponseTopics,
                OffsetFetchResponsePartitions
            );
            groups.push(
                OffsetFetchResponseGroup::default()
                    .with_group_id(GroupId(text(group)))
                    .with_topics(topics)
                    .with_error_code(code),
            );
        } else {
            single = Some((topics, code));
        }
    }
    if version >= 8 {
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let (topics, code) = single.unwrap_or_default();
    let topics = answer_topics!(
        topics,
        OffsetFetchResponseTopic,
        OffsetFetchResponsePartition
    );
    let mut response = OffsetFetchResponse::default().with_topics(topics);
    if version >= 2 {
        response = response.with_error_code(code);
    }
    response
}

/// A group state as Kafka names the states of its consumer groups.
fn state_name(state: GroupState) -> &'static str {
    match state {
        GroupState::Empty => "Empty",
        GroupState::Reconciling => "Reconciling",
        GroupState::Stable => "Stable",
    }
}

/// ListGroups (v0–v5): the groups the broker the request came to
/// coordinates, filtered by state (v4) and type (v5) as asked.
pub(super) fn list_groups(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let states = if version >= 4 {
        body.array("states filter", |r| r.string("state"))?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let types = if version >= 5 {
        body.array("types filter", |r| r.string("type"))?
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    body.tagged_fields()?;
    let read = |r| match r {
        Response::ListGroups(groups) => Some(groups),
        _ => None,
    };
    let answer = move |result: std::result::Result<Vec<crate::protocol::GroupListing>, Failure>| {
        let response = match result {
            Ok(groups) => {
                let wanted = |g: &crate::protocol::GroupListing| {
                    let state = state_name(g.state);
                    (states.is_empty() || states.iter().any(|s| s.eq_ignore_ascii_case(state)))
                        && (types.is_empty()
                            || types.iter().any(|t| t.eq_ignore_ascii_case(CONSUMER)))
                };
                let groups = groups
                    .iter()
                    .filter(|g| wanted(g))
                    .map(|g| {
                        ListedGroup::default()
                            .with_group_id(GroupId(text(g.group.clone())))
                            .with_protocol_type(text(CONSUMER))
                            .with_group_state(text(state_name(g.state)))
                            .with_group_type(text(CONSUMER))
                    })
                    .collect();
                ListGroupsResponse::default().with_groups(groups)
            }
            Err((code, _)) => ListGroupsResponse::default().with_error_code(code),
        };
        wire::response_frame(&header, &response, version)
    };
    Ok(ask(
        context,
        broker,
        Request::ListGroups,
        read,
        reply,
        answer,
    ))
}

/// Kafka's name for the assignor its consumer groups use by default; the
/// closest of ferrolog's is [`DEFAULT_ASSIGNOR`].
const UNIFORM: &str = "uniform";

/// ConsumerGroupHeartbeat (v0–v1, KIP-848): a member of a consumer group
/// joins (epoch 0, with the member id it made, KIP-1082), heartbeats, or
/// leaves (epoch -1, or -2 for a static member stopping for now), onto
/// the coordinator's heartbeat. What a Kafka client leaves out (null:
/// unchanged) is left out of ferrolog's request too; the partitions it
/// owns are named by topic id, as is the assignment it is sent, which it
/// is sent only when it joins, sends everything, or its assignment
/// changed.
pub(super) fn consumer_group_heartbeat(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let member_id = body.string("member id")?;
    let member_epoch = body.i32("member epoch")?;
    let instance_id = body.nullable_string("instance id")?;
    body.nullable_string("rack id")?;
    let rebalance_timeout_ms = body.i32("rebalance timeout")?;
    let names = body.array("subscribed topic names", |r| r.string("topic name"))?;
    let regex = if version >= 1 {
        body.nullable_string("subscribed topic regex")?
    } else {
        None
    };
    let server_assignor = body.nullable_string("server assignor")?;
    let owned = body.array("topic partitions", |r| {
        let id = r.uuid("topic id")?;
        let partitions = r
            .array("partitions", |r| r.i32("partition"))?
            .unwrap_or_default();
        r.tagged_fields()?;
        Ok((uuid::Uuid::from_bytes(id), partitions))
    })?;
    body.tagged_fields()?;
    let full = member_epoch == JOIN_GROUP_EPOCH
        || (rebalance_timeout_ms != -1 && names.is_some() && owned.is_some());
    let subscription = match (regex.filter(|r| !r.is_empty()), names) {
        (Some(regex), _) => Some(Subscription::Pattern(regex)),
        (None, Some(names)) => Some(Subscription::Topics(names.into_iter().collect())),
        (None, None) => None,
    };
    // Owned partitions named by an id this listener has not seen are not
    // guessed at: the coordinator then counts the member as holding all
    // it was given.
    let owned = owned.and_then(|topics| {
        let routes = context.routes.lock();
        let mut held = Vec::new();
        for (id, partitions) in topics {
            let topic = routes.topic_named(&id)?;
            for p in partitions {
                held.push(TopicPartition::new(topic, u32::try_from(p).ok()?).ok()?);
            }
        }
        Some(held)
    });
    let request = GroupHeartbeatRequest {
        group,
        member_id,
        member_epoch,
        group_instance_id: instance_id,
        client_id: header.client_id.clone(),
        subscription,
        assignor: server_assignor.map(|name| match name.as_str() {
            UNIFORM => DEFAULT_ASSIGNOR.to_string(),
            _ => name,
        }),
        acked_assignment: if owned.is_some() { u64::MAX } else { 0 },
        owned,
        session_timeout_ms: Some(context.session_timeout_ms),
        rebalance_timeout_ms: u32::try_from(rebalance_timeout_ms).ok(),
        max_wait_ms: 0,
    };
    let interval = context.heartbeat_interval_ms as i32;
    let routes = context.routes.clone();
    let answer = move |result: std::result::Result<GroupHeartbeatResponse, Failure>| {
        let response = match result {
            Ok(r) => {
                let assignment = (r.member_epoch >= 0 && (full || r.assignment_changed))
                    .then(|| assignment_by_id(&routes.lock(), &r.assignment));
                ConsumerGroupHeartbeatResponse::default()
                    .with_member_id(Some(text(r.member_id)))
                    .with_member_epoch(r.member_epoch)
                    .with_heartbeat_interval_ms(interval)
                    .with_assignment(assignment)
            }
            Err((code, message)) => ConsumerGroupHeartbeatResponse::default()
                .with_error_code(code)
                .with_error_message(Some(text(message)))
                .with_heartbeat_interval_ms(interval),
        };
        wire::response_frame(&header, &response, version)
    };
    // The assignment names topics by id: one this listener has not seen
    // yet is looked up before the answer goes.
    let lookup = IdLookup::new(context, broker);
    context
        .endpoint
        .send_with(broker, Request::GroupHeartbeat(request), move |result| {
            let result = match result {
                Ok(Response::GroupHeartbeat(r)) => Ok(r),
                Ok(other) => Err(unexpected(other.api_name())),
                Err(e) => Err(failure(&e)),
            };
            let topics = match &result {
                Ok(r) => r
                    .assignment
                    .iter()
                    .map(|tp| tp.topic().to_string())
                    .collect(),
                Err(_) => Vec::new(),
            };
            lookup.then(topics, move || reply.answer(move || answer(result)));
        });
    Ok(Handled::Later)
}

/// An assignment as Kafka's clients take it: partitions by topic id (a
/// topic whose id is still unknown is left out; the client is sent the
/// whole assignment again when it next changes).
fn assignment_by_id(routes: &Routes, assignment: &[TopicPartition]) -> HeartbeatAssignment {
    let mut topics: Vec<HeartbeatTopicPartitions> = Vec::new();
    for tp in assignment {
        let Some(id) = routes.topic_id(tp.topic()) else {
            continue;
        };
        let p = tp.partition() as i32;
        match topics.last_mut() {
            Some(t) if t.topic_id == id => t.partitions.push(p),
            _ => topics.push(
                HeartbeatTopicPartitions::default()
                    .with_topic_id(id)
                    .with_partitions(vec![p]),
            ),
        }
    }
    HeartbeatAssignment::default().with_topic_partitions(topics)
}

/// Makes sure the listener knows the topic ids of some topics (asking a
/// broker for their metadata if not) before an answer that names them by
/// id is built.
struct IdLookup {
    endpoint: std::sync::Arc<crate::transport::Endpoint>,
    routes: std::sync::Arc<parking_lot::Mutex<Routes>>,
    ask: NodeId,
}

impl IdLookup {
    fn new(context: &Context, broker: NodeId) -> Self {
        Self {
            endpoint: context.endpoint.clone(),
            routes: context.routes.clone(),
            ask: context.bootstrap.first().copied().unwrap_or(broker),
        }
    }

    /// Runs `done` once the ids of `topics` are known (or could not be).
    fn then(self, mut topics: Vec<String>, done: impl FnOnce() + Send + 'static) {
        {
            let routes = self.routes.lock();
            topics.retain(|t| routes.topic_id(t).is_none());
        }
        topics.sort();
        topics.dedup();
        if topics.is_empty() {
            return done();
        }
        let routes = self.routes;
        let request = Request::Metadata(MetadataRequest {
            topics: Some(topics),
        });
        self.endpoint.send_with(self.ask, request, move |found| {
            if let Ok(Response::Metadata(m)) = found {
                routes.lock().learn(&m, false);
            }
            done();
        });
    }
}

/// Kafka's `GROUP_ID_NOT_FOUND`.
const GROUP_ID_NOT_FOUND: i16 = 69;
/// Authorized operations not asked for (Kafka's `INT32_MIN`).
const OPERATIONS_NOT_ASKED: i32 = i32::MIN;

/// A member's subscription in Kafka's consumer protocol encoding
/// (version 0: the topics it takes in now).
fn encode_subscription(topics: &[String]) -> Bytes {
    let mut out = BytesMut::new();
    out.put_i16(0);
    // Encoding a list of names in version 0 cannot fail.
    let _ = ConsumerProtocolSubscription::default()
        .with_topics(topics.iter().map(|t| text(t.clone())).collect())
        .encode(&mut out, 0);
    out.freeze()
}

/// An assignment in Kafka's consumer protocol encoding (version 0).
pub(super) fn encode_assignment(assignment: &[TopicPartition]) -> Bytes {
    let mut topics: Vec<AssignedTopic> = Vec::new();
    for tp in assignment {
        let p = tp.partition() as i32;
        match topics.last_mut() {
            Some(t) if *t.topic.0 == *tp.topic() => t.partitions.push(p),
            _ => topics.push(
                AssignedTopic::default()
                    .with_topic(TopicName(text(tp.topic().to_string())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let mut out = BytesMut::new();
    out.put_i16(0);
    // Encoding a list of names and numbers in version 0 cannot fail.
    let _ = ConsumerProtocolAssignment::default()
        .with_assigned_partitions(topics)
        .encode(&mut out, 0);
    out.freeze()
}

/// Asks `broker` to describe each of `groups`; `finish` gets the
/// descriptions (or failures) in the same order.
fn describe_each(
    context: &Context,
    broker: NodeId,
    groups: Vec<String>,
    finish: impl FnOnce(Vec<std::result::Result<GroupDescription, Failure>>) + Send + 'static,
) {
    let requests = groups.into_iter().map(Request::DescribeGroup).collect();
    let read = |r| match r {
        Response::DescribeGroup(d) => Some(d),
        _ => None,
    };
    ask_each(context, broker, requests, read, finish);
}

/// DescribeGroups (v0–v5): each group's state, assignor and members, with
/// each member's subscription and assignment in Kafka's consumer protocol
/// encoding (what Kafka's admin tools decode). A group the coordinator
/// does not know is `Dead`, as Kafka answers.
pub(super) fn describe_groups(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let groups = body
        .array("groups", |r| r.string("group id"))?
        .unwrap_or_default();
    if version >= 3 {
        body.bool("include authorized operations")?;
    }
    body.tagged_fields()?;
    let names = groups.clone();
    describe_each(context, broker, groups, move |results| {
        let described = names
            .into_iter()
            .zip(results)
            .map(|(group, result)| {
                let d = DescribedGroup::default()
                    .with_group_id(GroupId(text(group)))
                    .with_authorized_operations(OPERATIONS_NOT_ASKED);
                match result {
                    Ok(g) => d
                        .with_group_state(text(state_name(g.state)))
                        .with_protocol_type(text(CONSUMER))
                        .with_protocol_data(text(g.assignor))
                        .with_members(
                            g.members
                                .into_iter()
                                .map(|m| {
                                    DescribedGroupMember::default()
                                        .with_member_metadata(encode_subscription(
                                            &m.subscribed_topics,
                                        ))
                                        .with_member_assignment(encode_assignment(&m.assignment))
                                        .with_member_id(text(m.member_id))
                                        .with_group_instance_id(m.group_instance_id.map(text))
                                        .with_client_id(text(m.client_id))
                                        .with_client_host(text(""))
                                })
                                .collect(),
                        ),
                    Err((GROUP_ID_NOT_FOUND, _)) => d
                        .with_group_state(text("Dead"))
                        .with_protocol_type(text("")),
                    Err((code, _)) => d.with_error_code(code),
                }
            })
            .collect();
        let response = DescribeGroupsResponse::default().with_groups(described);
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    Ok(Handled::Later)
}

/// ConsumerGroupDescribe (v0–v1, KIP-848's describe): each group's state,
/// epochs, assignor and members, with each member's subscription, current
/// and target assignment (topics by id and name). A group the coordinator
/// does not know is `GROUP_ID_NOT_FOUND`.
pub(super) fn consumer_group_describe(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let groups = body
        .array("group ids", |r| r.string("group id"))?
        .unwrap_or_default();
    body.bool("include authorized operations")?;
    body.tagged_fields()?;
    let names = groups.clone();
    let lookup = IdLookup::new(context, broker);
    let routes = context.routes.clone();
    describe_each(context, broker, groups, move |results| {
        let topics: Vec<String> = results
            .iter()
            .flatten()
            .flat_map(|g| &g.members)
            .flat_map(|m| m.assignment.iter().chain(&m.target))
            .map(|tp| tp.topic().to_string())
            .collect();
        lookup.then(topics, move || {
            let routes = routes.lock();
            let by_id = |partitions: &[TopicPartition]| {
                let mut topics: Vec<DescribedTopicPartitions> = Vec::new();
                for tp in partitions {
                    let p = tp.partition() as i32;
                    match topics.last_mut() {
                        Some(t) if *t.topic_name.0 == *tp.topic() => t.partitions.push(p),
                        _ => topics.push(
                            DescribedTopicPartitions::default()
                                .with_topic_id(routes.topic_id(tp.topic()).unwrap_or_default())
                                .with_topic_name(TopicName(text(tp.topic().to_string())))
                                .with_partitions(vec![p]),
                        ),
                    }
                }
                DescribedAssignment::default().with_topic_partitions(topics)
            };
            let described = names
                .into_iter()
                .zip(results)
                .map(|(group, result)| {
                    let d = ConsumerDescribedGroup::default()
                        .with_group_id(GroupId(text(group)))
                        .with_authorized_operations(OPERATIONS_NOT_ASKED);
                    match result {
                        Ok(g) => d
                            .with_group_state(text(state_name(g.state)))
                            .with_group_epoch(g.group_epoch)
                            .with_assignment_epoch(g.group_epoch)
                            .with_assignor_name(text(g.assignor.clone()))
                            .with_members(
                                g.members
                                    .iter()
                                    .map(|m| {
                                        let (names, regex) = match &m.subscription {
                                            Subscription::Topics(t) => {
                                                (t.iter().cloned().collect::<Vec<_>>(), None)
                                            }
                                            Subscription::Pattern(p) => {
                                                (Vec::new(), Some(text(p.clone())))
                                            }
                                        };
                                        DescribedMember::default()
                                            .with_member_id(text(m.member_id.clone()))
                                            .with_instance_id(m.group_instance_id.clone().map(text))
                                            .with_member_epoch(m.member_epoch)
                                            .with_client_id(text(m.client_id.clone()))
                                            .with_client_host(text(""))
                                            .with_subscribed_topic_names(
                                                names
                                                    .into_iter()
                                                    .map(|n| TopicName(text(n)))
                                                    .collect(),
                                            )
                                            .with_subscribed_topic_regex(regex)
                                            .with_assignment(by_id(&m.assignment))
                                            .with_target_assignment(by_id(&m.target))
                                            .with_member_type(-1)
                                    })
                                    .collect(),
                            ),
                        Err((code, message)) => d
                            .with_error_code(code)
                            .with_error_message(Some(text(message))),
                    }
                })
                .collect();
            let response = ConsumerGroupDescribeResponse::default().with_groups(described);
            reply.answer(move || wire::response_frame(&header, &response, version));
        });
    });
    Ok(Handled::Later)
}
