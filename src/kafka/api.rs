//! Each Kafka API the listener serves: read the request body, ask the
//! brokers through an [`Endpoint`], encode the answer in the request's
//! version.

use bytes::Bytes;
use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, BrokerId, DescribeClusterResponse, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use parking_lot::Mutex;

use super::admin;
use super::classic;
use super::data::{self, Routes};
use super::groups;
use super::server::Reply;
use super::wire::{self, Answer, Malformed, Read, Reader, RequestHeader};
use crate::error::Error;
use crate::protocol::{MetadataRequest, NodeId, Request, Response};
use crate::topic::INTERNAL_TOPIC_PREFIX;
use crate::transport::{Endpoint, Transport};

/// Kafka's `UNSUPPORTED_VERSION`.
const UNSUPPORTED_VERSION: i16 = 35;
/// Kafka's `UNKNOWN_TOPIC_OR_PARTITION`.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
/// Kafka's `UNKNOWN_TOPIC_ID`.
const UNKNOWN_TOPIC_ID: i16 = 100;

/// The APIs served, with the versions of each (what ApiVersions answers).
pub(super) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
    (ApiKey::DescribeCluster, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
];

/// What the APIs need: how to reach the brokers and what to advertise.
pub(super) struct Context {
    pub(super) endpoint: Arc<Endpoint>,
    /// The transport under `endpoint`, for requests nobody answers.
    pub(super) transport: Arc<dyn Transport>,
    /// Correlation ids of requests sent without a waiter (acks=0): a range
    /// the endpoint's own ids never reach.
    pub(super) unanswered: AtomicU64,
    /// The partitions' leaders, as Metadata answers last said.
    pub(super) routes: Arc<Mutex<Routes>>,
    /// Brokers to ask for metadata, in order.
    pub(super) bootstrap: Vec<NodeId>,
    /// The host every broker is advertised at, and each broker's port.
    pub(super) host: String,
    pub(super) advertised: Vec<(NodeId, i32)>,
    pub(super) cluster_id: String,
    /// KIP-848 group members' heartbeat interval and session timeout.
    pub(super) heartbeat_interval_ms: u32,
    pub(super) session_timeout_ms: u32,
    /// What each classic member said it owned when it last joined.
    pub(super) classic_owned: Arc<Mutex<classic::Declared>>,
}

/// What became of a request.
pub(super) enum Handled {
    /// Answered at once.
    Now(Answer),
    /// The answer goes through the request's [`Reply`] later.
    Later,
    /// The connection closes, for this reason.
    Close(String),
}

fn range_of(key: i16) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(k, _, _)| *k as i16 == key)
        .map(|&(_, min, max)| (min, max))
}

/// Handles one request that came in on `broker`'s port.
pub(super) fn handle(
    context: &Context,
    mut header: RequestHeader,
    rest: Bytes,
    reply: Reply,
    broker: NodeId,
) -> Handled {
    if header.api_key == ApiKey::ApiVersions as i16 {
        // Its body (the client's software name and version, v3) is not
        // needed, and a version from the future may have any header.
        return Handled::Now(api_versions(&header));
    }
    let Some((min, max)) = range_of(header.api_key) else {
        let name = ApiKey::try_from(header.api_key)
            .map_or_else(|()| "an unknown API".to_string(), |k| format!("{k:?}"));
        return Handled::Close(format!(
            "{name} (key {}) is not served by this listener",
            header.api_key
        ));
    };
    if !(min..=max).contains(&header.api_version) {
        return Handled::Close(format!(
            "version {} of API key {} is not served (versions {min}..={max})",
            header.api_version, header.api_key
        ));
    }
    let handled =
        wire::body(&mut header, rest).and_then(|body| match ApiKey::try_from(header.api_key) {
            Ok(ApiKey::Metadata) => metadata(context, header, body, reply),
            Ok(ApiKey::Produce) => data::produce(context, header, body, reply),
            Ok(ApiKey::Fetch) => data::fetch(context, header, body, reply),
            Ok(ApiKey::ListOffsets) => data::list_offsets(context, header, body, reply),
            Ok(ApiKey::InitProducerId) => admin::init_producer_id(context, header, body, reply),
            Ok(ApiKey::CreateTopics) => admin::create_topics(context, header, body, reply),
            Ok(ApiKey::DeleteTopics) => admin::delete_topics(context, header, body, reply),
            Ok(ApiKey::CreatePartitions) => admin::create_partitions(context, header, body, reply),
            Ok(ApiKey::DeleteRecords) => data::delete_records(context, header, body, reply),
            Ok(ApiKey::OffsetForLeaderEpoch) => {
                data::offset_for_leader_epoch(context, header, body, reply)
            }
            Ok(ApiKey::FindCoordinator) => {
                groups::find_coordinator(context, header, body, reply, broker)
            }
            Ok(ApiKey::OffsetCommit) => groups::offset_commit(context, header, body, reply, broker),
            Ok(ApiKey::OffsetFetch) => groups::offset_fetch(context, header, body, reply, broker),
            Ok(ApiKey::ListGroups) => groups::list_groups(context, header, body, reply, broker),
            Ok(ApiKey::JoinGroup) => classic::join_group(context, header, body, reply, broker),
            Ok(ApiKey::SyncGroup) => classic::sync_group(context, header, body, reply, broker),
            Ok(ApiKey::Heartbeat) => {
                classic::heartbeat_request(context, header, body, reply, broker)
            }
            Ok(ApiKey::LeaveGroup) => classic::leave_group(context, header, body, reply, broker),
            Ok(ApiKey::DescribeCluster) => describe_cluster(context, header, body, reply),
            Ok(ApiKey::DescribeConfigs) => admin::describe_configs(context, header, body, reply),
            Ok(ApiKey::DescribeGroups) => {
                groups::describe_groups(context, header, body, reply, broker)
            }
            Ok(ApiKey::ConsumerGroupDescribe) => {
                groups::consumer_group_describe(context, header, body, reply, broker)
            }
            Ok(ApiKey::ConsumerGroupHeartbeat) => {
                groups::consumer_group_heartbeat(context, header, body, reply, broker)
            }
            _ => Err(Malformed("no handler".into())),
        });
    handled
        .unwrap_or_else(|Malformed(reason)| Handled::Close(format!("malformed request: {reason}")))
}

/// ApiVersions: our ranges. A version we do not serve is answered in v0
/// with `UNSUPPORTED_VERSION` and the ranges, so that the client can pick
/// one (KIP-511).
fn api_versions(header: &RequestHeader) -> Answer {
    let api_keys = SUPPORTED
        .iter()
        .map(|&(key, min, max)| {
            ApiVersion::default()
                .with_api_key(key as i16)
                .with_min_version(min)
                .with_max_version(max)
        })
        .collect();
    let response = ApiVersionsResponse::default().with_api_keys(api_keys);
    let (_, max) = range_of(ApiKey::ApiVersions as i16).unwrap_or((0, 0));
    if !(0..=max).contains(&header.api_version) {
        let response = response.with_error_code(UNSUPPORTED_VERSION);
        return wire::response_frame(header, &response, 0);
    }
    wire::response_frame(header, &response, header.api_version)
}

/// Metadata: the brokers (all at this listener's address), and the topics
/// asked for (all when the list is null, or empty in v0).
fn metadata(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    let topics = body.array("topics", |r| {
        let id = if version >= 10 {
            uuid::Uuid::from_bytes(r.uuid("topic id")?)
        } else {
            uuid::Uuid::nil()
        };
        let name = r.nullable_string("topic name")?;
        r.tagged_fields()?;
        Ok(match name {
            Some(name) => Asked::Name(name),
            None => Asked::Id(id),
        })
    })?;
    if version >= 4 {
        body.bool("allow auto topic creation")?;
    }
    if (8..=10).contains(&version) {
        body.bool("include cluster authorized operations")?;
    }
    if version >= 8 {
        body.bool("include topic authorized operations")?;
    }
    body.tagged_fields()?;
    let asked: Option<Vec<Asked>> = match topics {
        None => None,
        Some(list) if list.is_empty() && version == 0 => None,
        Some(list) => Some(list),
    };
    // Topics asked by id (v12) are found among all of them.
    let names: Option<Vec<String>> = asked.as_ref().and_then(|asked| {
        asked
            .iter()
            .map(|a| match a {
                Asked::Name(name) => Some(name.clone()),
                Asked::Id(_) => None,
            })
            .collect()
    });
    let (host, ports, cluster_id) = (
        context.host.clone(),
        context.advertised.clone(),
        context.cluster_id.clone(),
    );
    let routes = context.routes.clone();
    let everything = names.is_none();
    let request = Request::Metadata(MetadataRequest { topics: names });
    let to = context.bootstrap.first().copied().unwrap_or(0);
    context.endpoint.send_with(to, request, move |answer| {
        let response = match answer {
            Ok(Response::Metadata(m)) => {
                routes.lock().learn(&m, everything);
                kafka_metadata(&m, asked.as_deref(), &host, &ports, &cluster_id, version)
            }
            other => {
                let error = match other {
                    Err(e) => e.code(),
                    Ok(_) => Error::InvalidRequest {
                        reason: "an unexpected answer to Metadata".into(),
                    }
                    .code(),
                };
                // No brokers and each asked topic with the error: the
                // client asks again.
                let topics = asked.iter().flatten().map(|a| a.unknown(error)).collect();
                MetadataResponse::default().with_topics(topics)
            }
        };
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    Ok(Handled::Later)
}

/// A topic a Metadata request asks for.
enum Asked {
    Name(String),
    /// By topic id (v10+, with a null name).
    Id(uuid::Uuid),
}

impl Asked {
    fn is(&self, topic: &crate::protocol::TopicMetadata) -> bool {
        match self {
            Asked::Name(name) => **name == *topic.name,
            Asked::Id(id) => *id == data::topic_uuid(&topic.name, topic.id),
        }
    }

    /// This topic, answered with `error`.
    fn unknown(&self, error: i16) -> MetadataResponseTopic {
        match self {
            Asked::Name(name) => MetadataResponseTopic::default()
                .with_error_code(error)
                .with_name(Some(TopicName(StrBytes::from_string(name.clone())))),
            Asked::Id(id) => MetadataResponseTopic::default()
                .with_error_code(error)
                .with_topic_id(*id),
        }
    }
}

/// Kafka's Metadata answer for ferrolog's.
fn kafka_metadata(
    m: &crate::protocol::MetadataResponse,
    asked: Option<&[Asked]>,
    host: &str,
    ports: &[(NodeId, i32)],
    cluster_id: &str,
    version: i16,
) -> MetadataResponse {
    let brokers: Vec<MetadataResponseBroker> = m
        .brokers
        .iter()
        .filter_map(|b| {
            let port = ports.iter().find(|(id, _)| *id == b.id)?.1;
            let broker = MetadataResponseBroker::default()
                .with_node_id(BrokerId(b.id as i32))
                .with_host(StrBytes::from_string(host.to_string()))
                .with_port(port)
                .with_rack(
                    b.rack
                        .clone()
                        .filter(|_| version >= 1)
                        .map(StrBytes::from_string),
                );
            Some(broker)
        })
        .collect();
    let live = |id: NodeId| m.brokers.iter().any(|b| b.id == id);
    let node = |id: &NodeId| BrokerId(*id as i32);
    let mut topics: Vec<MetadataResponseTopic> = m
        .topics
        .iter()
        .filter(|t| asked.is_none_or(|asked| asked.iter().any(|a| a.is(t))))
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    MetadataResponsePartition::default()
                        .with_partition_index(p.partition as i32)
                        .with_leader_id(BrokerId(p.leader.map_or(-1, |l| l as i32)))
                        .with_leader_epoch(if version >= 7 { p.leader_epoch } else { -1 })
                        .with_replica_nodes(p.replicas.iter().map(node).collect())
                        .with_isr_nodes(p.isr.iter().map(node).collect())
                        .with_offline_replicas(
                            p.replicas
                                .iter()
                                .filter(|r| version >= 5 && !live(**r))
                                .map(node)
                                .collect(),
                        )
                })
                .collect();
            MetadataResponseTopic::default()
                .with_name(Some(TopicName(StrBytes::from_string(t.name.to_string()))))
                .with_topic_id(if version >= 10 {
                    data::topic_uuid(&t.name, t.id)
                } else {
                    uuid::Uuid::nil()
                })
                .with_is_internal(version >= 1 && t.name.starts_with(INTERNAL_TOPIC_PREFIX))
                .with_partitions(partitions)
        })
        .collect();
    for a in asked.into_iter().flatten() {
        if !m.topics.iter().any(|t| a.is(t)) {
            topics.push(a.unknown(match a {
                Asked::Name(_) => UNKNOWN_TOPIC_OR_PARTITION,
                Asked::Id(_) => UNKNOWN_TOPIC_ID,
            }));
        }
    }
    let controller = m
        .controller
        .filter(|c| live(*c))
        .or_else(|| m.brokers.first().map(|b| b.id))
        .map_or(-1, |id| id as i32);
    let mut response = MetadataResponse::default()
        .with_brokers(brokers)
        .with_topics(topics);
    if version >= 1 {
        response = response.with_controller_id(BrokerId(controller));
    }
    if version >= 2 {
        response = response.with_cluster_id(Some(StrBytes::from_string(cluster_id.to_string())));
    }
    response
}

/// DescribeCluster (v0–v2): the cluster id, the controller and every live
/// broker at its port on this listener.
fn describe_cluster(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    body.bool("include cluster authorized operations")?;
    if version >= 1 {
        body.i8("endpoint type")?;
    }
    if version >= 2 {
        body.bool("include fenced brokers")?;
    }
    body.tagged_fields()?;
    let (host, ports, cluster_id) = (
        context.host.clone(),
        context.advertised.clone(),
        context.cluster_id.clone(),
    );
    let request = Request::Metadata(MetadataRequest {
        topics: Some(Vec::new()),
    });
    let to = context.bootstrap.first().copied().unwrap_or(0);
    context.endpoint.send_with(to, request, move |answer| {
        let response = match answer {
            Ok(Response::Metadata(m)) => {
                // The brokers and controller as Metadata shows them.
                let shown =
                    kafka_metadata(&m, Some(&[] as &[Asked]), &host, &ports, &cluster_id, 12);
                let brokers = shown
                    .brokers
                    .into_iter()
                    .map(|b| {
                        DescribeClusterBroker::default()
                            .with_broker_id(b.node_id)
                            .with_host(b.host)
                            .with_port(b.port)
                            .with_rack(b.rack)
                    })
                    .collect();
                DescribeClusterResponse::default()
                    .with_endpoint_type(1)
                    .with_cluster_id(StrBytes::from_string(cluster_id))
                    .with_controller_id(shown.controller_id)
                    .with_brokers(brokers)
                    .with_cluster_authorized_operations(i32::MIN)
            }
            other => {
                let code = match other {
                    Err(e) => e.code(),
                    Ok(_) => Error::InvalidRequest {
                        reason: "an unexpected answer to Metadata".into(),
                    }
                    .code(),
                };
                DescribeClusterResponse::default()
                    .with_error_code(code)
                    .with_endpoint_type(1)
                    .with_cluster_id(StrBytes::from_string(cluster_id))
                    .with_controller_id(BrokerId(-1))
            }
        };
        reply.answer(move || wire::response_frame(&header, &response, version));
    });
    Ok(Handled::Later)
}
