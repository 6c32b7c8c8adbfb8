//! The classic consumer group protocol over Kafka's wire — JoinGroup,
//! SyncGroup, Heartbeat, LeaveGroup — for clients that do not speak
//! KIP-848 (kafka-python, `kcat -G`, librdkafka and Java consumers with
//! `group.protocol=classic`).
//!
//! Classic members join the same groups as everyone else, and the
//! coordinator assigns their partitions itself, as Kafka 4 does for
//! classic members of a consumer group: no member is elected to compute
//! the assignment, so JoinGroup is answered with no leader and no member
//! list, and SyncGroup hands each member the coordinator's assignment (in
//! Kafka's consumer protocol encoding). A Heartbeat answers
//! `REBALANCE_IN_PROGRESS` when the member's assignment or generation
//! (its member epoch) moved, and the member joins and syncs again to learn
//! the new one. An eager member (every classic assignor but
//! `cooperative-sticky`) gives up all its partitions before it joins
//! again, and is counted as owning none; one that lists what it owns
//! (subscription v1+) is taken at its word.

use std::collections::{BTreeMap, VecDeque};

use bytes::Bytes;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::api::{Context, Handled};
use super::groups::{self, ask_each, encode_assignment};
use super::server::Reply;
use super::wire::{self, Read, Reader, RequestHeader};
use crate::protocol::{
    GroupHeartbeatRequest, GroupHeartbeatResponse, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, NodeId,
    Request, Response, Subscription,
};
use crate::topic::TopicPartition;

/// Kafka's `ILLEGAL_GENERATION`.
const ILLEGAL_GENERATION: i16 = 22;
/// Kafka's `INCONSISTENT_GROUP_PROTOCOL`.
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
/// Kafka's `REBALANCE_IN_PROGRESS`.
const REBALANCE_IN_PROGRESS: i16 = 27;
/// Kafka's code for ferrolog's `FencedMemberEpoch`, which a classic
/// member knows as a stale generation.
const FENCED_MEMBER_EPOCH: i16 = 110;
/// The one protocol type of consumer groups.
const CONSUMER: &str = "consumer";
/// The classic assignor whose members keep their partitions across a
/// rebalance (every other one is eager).
const COOPERATIVE: &str = "cooperative-sticky";

fn text(s: impl Into<String>) -> StrBytes {
    StrBytes::from_string(s.into())
}

/// How many classic members' declarations [`Declared`] keeps.
const DECLARED_KEPT: usize = 10_000;

/// What each classic member said it owned when it last joined (an eager
/// member: nothing), by (group, member id): a member holds exactly that
/// between its JoinGroup and its SyncGroup, which tells the coordinator
/// so. Bounded: past [`DECLARED_KEPT`] members the oldest is forgotten (a
/// member forgotten here is counted as holding all it was given, and a
/// revocation waits for its next join).
#[derive(Debug, Default)]
pub(super) struct Declared {
    owned: BTreeMap<(String, String), Vec<TopicPartition>>,
    order: VecDeque<(String, String)>,
}

impl Declared {
    fn note(&mut self, group: &str, member: &str, owned: Vec<TopicPartition>) {
        let key = (group.to_string(), member.to_string());
        if self.owned.insert(key.clone(), owned).is_none() {
            self.order.push_back(key);
            if self.order.len() > DECLARED_KEPT
                && let Some(oldest) = self.order.pop_front()
            {
                self.owned.remove(&oldest);
            }
        }
    }

    fn get(&self, group: &str, member: &str) -> Option<Vec<TopicPartition>> {
        self.owned
            .get(&(group.to_string(), member.to_string()))
            .cloned()
    }

    fn forget(&mut self, group: &str, member: &str) {
        let key = (group.to_string(), member.to_string());
        if self.owned.remove(&key).is_some() {
            self.order.retain(|k| *k != key);
        }
    }
}

/// A failure's code as a classic member understands it.
fn classic(code: i16) -> i16 {
    match code {
        FENCED_MEMBER_EPOCH => ILLEGAL_GENERATION,
        code => code,
    }
}

/// A heartbeat of a classic member: only what it says, the rest unchanged.
fn member_request(
    group: String,
    member_id: String,
    epoch: i32,
    client_id: String,
) -> GroupHeartbeatRequest {
    GroupHeartbeatRequest {
        group,
        member_id,
        member_epoch: epoch,
        group_instance_id: None,
        client_id,
        subscription: None,
        assignor: None,
        owned: None,
        acked_assignment: 0,
        session_timeout_ms: None,
        rebalance_timeout_ms: None,
        max_wait_ms: 0,
    }
}

/// Sends a classic member's heartbeat to `broker`; `answer` builds the
/// frame from the coordinator's answer (or the code of its failure, as a
/// classic member understands it).
fn ask(
    context: &Context,
    broker: NodeId,
    request: GroupHeartbeatRequest,
    reply: Reply,
    answer: impl FnOnce(std::result::Result<GroupHeartbeatResponse, i16>) -> wire::Answer
    + Send
    + 'static,
) -> Handled {
    let read = |r| match r {
        Response::GroupHeartbeat(r) => Some(r),
        _ => None,
    };
    let request = Request::GroupHeartbeat(request);
    groups::ask(context, broker, request, read, reply, move |result| {
        answer(result.map_err(|(code, _)| classic(code)))
    })
}

/// What a classic member's subscription metadata (Kafka's
/// `ConsumerProtocolSubscription`, any version) says: its topics, and the
/// partitions it owns (v1+).
fn read_subscription(metadata: Bytes) -> Read<(Vec<String>, Option<Vec<TopicPartition>>)> {
    let mut r = Reader::new(metadata, false);
    let version = r.i16("subscription version")?;
    let topics = r
        .array("subscribed topics", |r| r.string("topic"))?
        .unwrap_or_default();
    r.nullable_bytes("user data")?;
    if version < 1 {
        return Ok((topics, None));
    }
    let owned = r
        .array("owned partitions", |r| {
            let topic = r.string("topic")?;
            let partitions = r
                .array("partitions", |r| r.i32("partition"))?
                .unwrap_or_default();
            Ok((topic, partitions))
        })?
        .unwrap_or_default();
    let owned = owned
        .into_iter()
        .flat_map(|(topic, partitions)| {
            partitions.into_iter().filter_map(move |p| {
                TopicPartition::new(topic.as_str(), u32::try_from(p).ok()?).ok()
            })
        })
        .collect();
    Ok((topics, Some(owned)))
}

/// JoinGroup (v0–v9): a classic member joins, or joins again after a
/// rebalance; answered at once with its member id, generation and the
/// protocol it named first, no leader and no members.
pub(super) fn join_group(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let session_timeout_ms = body.i32("session timeout")?;
    let rebalance_timeout_ms = if version >= 1 {
        body.i32("rebalance timeout")?
    } else {
        session_timeout_ms
    };
    let member_id = body.string("member id")?;
    let instance_id = if version >= 5 {
        body.nullable_string("group instance id")?
    } else {
        None
    };
    let protocol_type = body.string("protocol type")?;
    let protocols = body
        .array("protocols", |r| {
            let name = r.string("protocol name")?;
            let metadata = r.nullable_bytes("protocol metadata")?.unwrap_or_default();
            r.tagged_fields()?;
            Ok((name, metadata))
        })?
        .unwrap_or_default();
    if version >= 8 {
        body.nullable_string("reason")?;
    }
    body.tagged_fields()?;
    let eager = protocols.iter().all(|(name, _)| name != COOPERATIVE);
    // The member's first protocol, if its subscription reads.
    let chosen = protocols
        .into_iter()
        .next()
        .filter(|_| protocol_type == CONSUMER)
        .and_then(|(name, metadata)| Some((name, read_subscription(metadata).ok()?)));
    let Some((protocol, (topics, owned))) = chosen else {
        return Ok(Handled::Now(join_refused(
            &header,
            INCONSISTENT_GROUP_PROTOCOL,
            String::new(),
        )));
    };
    // An eager member gave up everything before joining again.
    let owned = owned.or_else(|| eager.then(Vec::new));
    let declared = owned.clone();
    let group_id = group.clone();
    let declarations = context.classic_owned.clone();
    let request = GroupHeartbeatRequest {
        subscription: Some(Subscription::Topics(topics.into_iter().collect())),
        group_instance_id: instance_id,
        acked_assignment: if owned.is_some() { u64::MAX } else { 0 },
        owned,
        session_timeout_ms: u32::try_from(session_timeout_ms).ok(),
        rebalance_timeout_ms: u32::try_from(rebalance_timeout_ms).ok(),
        ..member_request(group, member_id, JOIN_GROUP_EPOCH, header.client_id.clone())
    };
    Ok(ask(
        context,
        broker,
        request,
        reply,
        move |result| match result {
            Ok(r) => {
                if let Some(owned) = declared {
                    declarations.lock().note(&group_id, &r.member_id, owned);
                }
                let response = JoinGroupResponse::default()
                    .with_generation_id(r.member_epoch)
                    .with_protocol_type(Some(text(CONSUMER)))
                    .with_protocol_name(Some(text(protocol)))
                    .with_leader(text(String::new()))
                    .with_member_id(text(r.member_id));
                wire::response_frame(&header, &response, version)
            }
            Err(code) => join_refused(&header, code, protocol),
        },
    ))
}

/// A JoinGroup answered with `code`.
fn join_refused(header: &RequestHeader, code: i16, protocol: String) -> wire::Answer {
    let response = JoinGroupResponse::default()
        .with_error_code(code)
        .with_generation_id(-1)
        .with_protocol_name(Some(text(protocol)))
        .with_member_id(text(String::new()));
    wire::response_frame(header, &response, header.api_version)
}

/// SyncGroup (v0–v5): the member's assignment as the coordinator has it
/// (what a member sends is not used: no member computes one). A member
/// whose generation moved since it joined is told to join again.
pub(super) fn sync_group(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let generation = body.i32("generation id")?;
    let member_id = body.string("member id")?;
    if version >= 3 {
        body.nullable_string("group instance id")?;
    }
    let (protocol_type, protocol_name) = if version >= 5 {
        (
            body.nullable_string("protocol type")?,
            body.nullable_string("protocol name")?,
        )
    } else {
        (None, None)
    };
    body.array("assignments", |r| {
        r.string("member id")?;
        r.nullable_bytes("assignment")?;
        r.tagged_fields()
    })?;
    body.tagged_fields()?;
    // Until it takes this assignment, the member holds what it said it
    // owned when it joined: a partition taken from it since, which it
    // never held, goes to its new owner without waiting.
    let declared = context.classic_owned.lock().get(&group, &member_id);
    let request = GroupHeartbeatRequest {
        acked_assignment: if declared.is_some() { u64::MAX } else { 0 },
        owned: declared,
        ..member_request(group, member_id, generation, header.client_id.clone())
    };
    Ok(ask(context, broker, request, reply, move |result| {
        let response = SyncGroupResponse::default()
            .with_protocol_type(protocol_type.map(text))
            .with_protocol_name(protocol_name.map(text));
        let response = match result {
            Ok(r) if r.member_epoch == generation => {
                response.with_assignment(encode_assignment(&r.assignment))
            }
            Ok(_) => response.with_error_code(REBALANCE_IN_PROGRESS),
            Err(code) => response.with_error_code(code),
        };
        wire::response_frame(&header, &response, version)
    }))
}

/// Heartbeat (v0–v4): `REBALANCE_IN_PROGRESS` when the member's
/// assignment or generation moved (it joins and syncs again).
pub(super) fn heartbeat_request(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let generation = body.i32("generation id")?;
    let member_id = body.string("member id")?;
    if version >= 3 {
        body.nullable_string("group instance id")?;
    }
    body.tagged_fields()?;
    let request = member_request(group, member_id, generation, header.client_id.clone());
    Ok(ask(context, broker, request, reply, move |result| {
        let code = match result {
            Ok(r) if r.member_epoch == generation && !r.assignment_changed => 0,
            Ok(_) => REBALANCE_IN_PROGRESS,
            Err(code) => code,
        };
        let response = HeartbeatResponse::default().with_error_code(code);
        wire::response_frame(&header, &response, version)
    }))
}

/// LeaveGroup (v0–v5): each member leaves (static ones too: Kafka's
/// LeaveGroup removes them for good).
pub(super) fn leave_group(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
    broker: NodeId,
) -> Read<Handled> {
    let version = header.api_version;
    let group = body.string("group id")?;
    let members: Vec<(String, Option<String>)> = if version >= 3 {
        body.array("members", |r| {
            let member_id = r.string("member id")?;
            let instance = r.nullable_string("group instance id")?;
            if version >= 5 {
                r.nullable_string("reason")?;
            }
            r.tagged_fields()?;
            Ok((member_id, instance))
        })?
        .unwrap_or_default()
    } else {
        vec![(body.string("member id")?, None)]
    };
    body.tagged_fields()?;
    let requests = members
        .iter()
        .map(|(member_id, instance)| {
            context.classic_owned.lock().forget(&group, member_id);
            Request::GroupHeartbeat(GroupHeartbeatRequest {
                group_instance_id: instance.clone(),
                ..member_request(
                    group.clone(),
                    member_id.clone(),
                    LEAVE_GROUP_EPOCH,
                    header.client_id.clone(),
                )
            })
        })
        .collect();
    let read = |r| matches!(r, Response::GroupHeartbeat(_)).then_some(());
    ask_each(context, broker, requests, read, move |results| {
        let codes: Vec<i16> = results
            .into_iter()
            .map(|r| r.err().map_or(0, |(code, _)| classic(code)))
            .collect();
        reply.answer(move || {
            let response = if version >= 3 {
                let members = members
                    .into_iter()
                    .zip(&codes)
                    .map(|((member_id, instance), &code)| {
                        MemberResponse::default()
                            .with_member_id(text(member_id))
                            .with_group_instance_id(instance.map(text))
                            .with_error_code(code)
                    })
                    .collect();
                LeaveGroupResponse::default().with_members(members)
            } else {
                LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
            };
            wire::response_frame(&header, &response, version)
        });
    });
    Ok(Handled::Later)
}
