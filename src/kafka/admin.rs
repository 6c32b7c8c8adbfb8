//! The controller's APIs over Kafka's wire: InitProducerId (idempotent
//! producers; transactions are not served), CreateTopics, CreatePartitions
//! and DeleteTopics.

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::CreatableTopicResult;
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{
    CreatePartitionsResponse, CreateTopicsResponse, DeleteTopicsResponse, DescribeConfigsResponse,
    InitProducerIdResponse, ProducerId, TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::api::{Context, Handled};
use super::server::Reply;
use super::wire::{self, Malformed, Read, Reader, RequestHeader};
use crate::error::Result;
use crate::protocol::{
    CONTROLLER_ID, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest, Request,
    Response, TopicResults,
};
use crate::storage::CleanupPolicy;
use crate::topic::{NewTopic, TopicConfig};

/// A topic and what became of it: `Err((Kafka error code, message))`.
type TopicOutcome = (String, std::result::Result<(), (i16, String)>);

/// Kafka's `INVALID_CONFIG`.
const INVALID_CONFIG: i16 = 40;
/// Kafka's `INVALID_REQUEST`.
const INVALID_REQUEST: i16 = 42;
/// Kafka's `UNKNOWN_TOPIC_OR_PARTITION`.
const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;

fn name(s: &str) -> TopicName {
    TopicName(StrBytes::from_string(s.to_string()))
}

/// InitProducerId: a producer id for an idempotent producer, from the
/// controller. A transactional id is refused (`INVALID_REQUEST`).
pub(super) fn init_producer_id(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    let transactional_id = body.nullable_string("transactional id")?;
    body.i32("transaction timeout")?;
    if version >= 3 {
        body.i64("producer id")?;
        body.i16("producer epoch")?;
    }
    body.tagged_fields()?;
    let answer = move |result: std::result::Result<(i64, i16), i16>| {
        move || {
            let response = match result {
                Ok((id, epoch)) => InitProducerIdResponse::default()
                    .with_producer_id(ProducerId(id))
                    .with_producer_epoch(epoch),
                Err(code) => InitProducerIdResponse::default()
                    .with_error_code(code)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            };
            wire::response_frame(&header, &response, version)
        }
    };
    if transactional_id.is_some() {
        reply.answer(answer(Err(INVALID_REQUEST)));
        return Ok(Handled::Later);
    }
    context
        .endpoint
        .send_with(CONTROLLER_ID, Request::InitProducerId, move |result| {
            let result = match result {
                Ok(Response::InitProducerId(r)) => r.map_err(|e| e.code()),
                Ok(_) => Err(INVALID_REQUEST),
                Err(e) => Err(e.code()),
            };
            reply.answer(answer(result));
        });
    Ok(Handled::Later)
}

/// A topic config in Kafka's names onto ferrolog's settings.
fn apply_config(
    config: &mut TopicConfig,
    key: &str,
    value: Option<&str>,
) -> std::result::Result<(), String> {
    match value {
        // null: the default
        None => Ok(()),
        Some(value) => config.set(key, value).map_err(|e| match e {
            crate::Error::InvalidConfig { reason, .. } => reason,
            other => other.to_string(),
        }),
    }
}

/// CreateTopics: each topic with its partition count and replication
/// factor (-1: 1 partition, replication factor the smaller of 3 and the
/// brokers) and its configs; explicit replica assignments are refused.
pub(super) fn create_topics(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    type Wanted = (String, i32, i16, bool, Vec<(String, Option<String>)>);
    let topics: Vec<Wanted> = body
        .array("topics", |r| {
            let topic = r.string("topic name")?;
            let partitions = r.i32("partitions")?;
            let replication = r.i16("replication factor")?;
            let assigned = r
                .array("assignments", |r| {
                    r.i32("partition")?;
                    r.array("broker ids", |r| r.i32("broker id"))?;
                    r.tagged_fields()
                })?
                .is_some_and(|a| !a.is_empty());
            let configs = r
                .array("configs", |r| {
                    let key = r.string("config name")?;
                    let value = r.nullable_string("config value")?;
                    r.tagged_fields()?;
                    Ok((key, value))
                })?
                .unwrap_or_default();
            r.tagged_fields()?;
            Ok((topic, partitions, replication, assigned, configs))
        })?
        .unwrap_or_default();
    body.i32("timeout")?;
    let validate_only = body.bool("validate only")?;
    body.tagged_fields()?;
    let brokers = context.bootstrap.len() as i16;
    let mut results: Vec<(String, Option<(i16, String)>)> = Vec::new();
    let mut wanted = Vec::new();
    for (topic, partitions, replication, assigned, configs) in topics {
        let made = (|| {
            if assigned {
                return Err((
                    INVALID_REQUEST,
                    "replica assignments are not supported".into(),
                ));
            }
            let partitions = match partitions {
                -1 => 1,
                n => u32::try_from(n).map_err(|_| (INVALID_REQUEST, format!("{n} partitions")))?,
            };
            let replication = match replication {
                -1 => brokers.clamp(1, 3) as u16,
                n => u16::try_from(n)
                    .map_err(|_| (INVALID_REQUEST, format!("replication factor {n}")))?,
            };
            let mut config = TopicConfig::default();
            for (key, value) in &configs {
                apply_config(&mut config, key, value.as_deref())
                    .map_err(|e| (INVALID_CONFIG, e))?;
            }
            Ok(NewTopic::new(topic.clone(), partitions)
                .replication_factor(replication)
                .config(config))
        })();
        match made {
            Ok(new) if !validate_only => {
                results.push((topic, None));
                wanted.push(new);
            }
            Ok(_) => results.push((topic, None)),
            Err(e) => results.push((topic, Some(e))),
        }
    }
    let finish = move |created: Vec<TopicOutcome>| {
        move || {
            let topics = results
                .into_iter()
                .map(|(topic, early)| {
                    let outcome = outcome_of(&topic, early, &created);
                    let t = CreatableTopicResult::default().with_name(name(&topic));
                    match outcome {
                        Ok(()) => t,
                        Err((code, message)) => t
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(message))),
                    }
                })
                .collect();
            let response = CreateTopicsResponse::default().with_topics(topics);
            wire::response_frame(&header, &response, version)
        }
    };
    if wanted.is_empty() {
        reply.answer(finish(Vec::new()));
        return Ok(Handled::Later);
    }
    let request = Request::CreateTopics(CreateTopicsRequest { topics: wanted });
    context
        .endpoint
        .send_with(CONTROLLER_ID, request, move |answer| {
            reply.answer(finish(topic_results(answer)));
        });
    Ok(Handled::Later)
}

/// Per topic, ferrolog's answer as (code, message).
fn topic_results(answer: Result<Response>) -> Vec<TopicOutcome> {
    match answer {
        Ok(Response::CreateTopics(TopicResults { topics }))
        | Ok(Response::CreatePartitions(TopicResults { topics }))
        | Ok(Response::DeleteTopics(TopicResults { topics })) => topics
            .into_iter()
            .map(|(n, r)| (n, r.map_err(|e| (e.code(), e.to_string()))))
            .collect(),
        // Every topic gets the error: `find` falls back to it.
        Err(e) => vec![(String::new(), Err((e.code(), e.to_string())))],
        Ok(_) => vec![(
            String::new(),
            Err((INVALID_REQUEST, "unexpected answer".into())),
        )],
    }
}

/// DeleteTopics (v1–5: by name).
pub(super) fn delete_topics(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    let names = body
        .array("topic names", |r| r.string("topic name"))?
        .ok_or_else(|| Malformed("null topic names".into()))?;
    body.i32("timeout")?;
    body.tagged_fields()?;
    let asked = names.clone();
    let request = Request::DeleteTopics(DeleteTopicsRequest { topics: names });
    context
        .endpoint
        .send_with(CONTROLLER_ID, request, move |answer| {
            let results = topic_results(answer);
            reply.answer(move || {
                let responses = asked
                    .iter()
                    .map(|topic| {
                        let outcome = outcome_of(topic, None, &results);
                        let t = DeletableTopicResult::default().with_name(Some(name(topic)));
                        match outcome {
                            Ok(()) => t,
                            Err((code, message)) => {
                                let t = t.with_error_code(code);
                                if version >= 5 {
                                    t.with_error_message(Some(StrBytes::from_string(message)))
                                } else {
                                    t
                                }
                            }
                        }
                    })
                    .collect();
                let response = DeleteTopicsResponse::default().with_responses(responses);
                wire::response_frame(&header, &response, version)
            });
        });
    Ok(Handled::Later)
}

/// CreatePartitions: grows each topic to its new count (explicit replica
/// assignments are refused).
pub(super) fn create_partitions(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    let topics = body
        .array("topics", |r| {
            let topic = r.string("topic name")?;
            let count = r.i32("count")?;
            let assigned = r
                .array("assignments", |r| {
                    r.array("broker ids", |r| r.i32("broker id"))?;
                    r.tagged_fields()
                })?
                .is_some();
            r.tagged_fields()?;
            Ok((topic, count, assigned))
        })?
        .unwrap_or_default();
    body.i32("timeout")?;
    let validate_only = body.bool("validate only")?;
    body.tagged_fields()?;
    let mut results: Vec<(String, Option<(i16, String)>)> = Vec::new();
    let mut wanted = Vec::new();
    for (topic, count, assigned) in topics {
        let early = match u32::try_from(count) {
            _ if assigned => Some((
                INVALID_REQUEST,
                "replica assignments are not supported".into(),
            )),
            Err(_) => Some((INVALID_REQUEST, format!("{count} partitions"))),
            Ok(count) => {
                if !validate_only {
                    wanted.push((topic.clone(), count));
                }
                None
            }
        };
        results.push((topic, early));
    }
    let finish = move |grown: Vec<TopicOutcome>| {
        move || {
            let results = results
                .into_iter()
                .map(|(topic, early)| {
                    let outcome = outcome_of(&topic, early, &grown);
                    let t = CreatePartitionsTopicResult::default().with_name(name(&topic));
                    match outcome {
                        Ok(()) => t,
                        Err((code, message)) => t
                            .with_error_code(code)
                            .with_error_message(Some(StrBytes::from_string(message))),
                    }
                })
                .collect();
            let response = CreatePartitionsResponse::default().with_results(results);
            wire::response_frame(&header, &response, version)
        }
    };
    if wanted.is_empty() {
        reply.answer(finish(Vec::new()));
        return Ok(Handled::Later);
    }
    let request = Request::CreatePartitions(CreatePartitionsRequest { topics: wanted });
    context
        .endpoint
        .send_with(CONTROLLER_ID, request, move |answer| {
            reply.answer(finish(topic_results(answer)));
        });
    Ok(Handled::Later)
}

/// A topic's outcome: its early refusal, else what the controller said of
/// it (an answer that failed as a whole fails every topic).
fn outcome_of(
    topic: &str,
    early: Option<(i16, String)>,
    answered: &[TopicOutcome],
) -> std::result::Result<(), (i16, String)> {
    match early {
        Some(refused) => Err(refused),
        None => answered
            .iter()
            .find(|(n, _)| n == topic || n.is_empty())
            .map_or(Ok(()), |(_, r)| r.clone()),
    }
}

/// Every topic setting ferrolog has, in Kafka's names, with its value as
/// Kafka writes it (what [`apply_config`] reads back): unlimited retention
/// is `-1`, no flush policy is Kafka's `Long.MAX_VALUE`.
pub(super) fn topic_configs(config: &TopicConfig) -> Vec<(&'static str, String)> {
    let or_unlimited = |v: Option<String>| v.unwrap_or_else(|| "-1".to_string());
    let or_never = |v: Option<String>| v.unwrap_or_else(|| i64::MAX.to_string());
    vec![
        (
            "cleanup.policy",
            match config.cleanup_policy {
                CleanupPolicy::Delete => "delete",
                CleanupPolicy::Compact => "compact",
                CleanupPolicy::CompactDelete => "compact,delete",
            }
            .to_string(),
        ),
        (
            "compression.type",
            config.compression_type.name().to_string(),
        ),
        (
            "delete.retention.ms",
            config.delete_retention_ms.to_string(),
        ),
        (
            "flush.messages",
            or_never(config.flush_messages.map(|n| n.to_string())),
        ),
        ("flush.ms", or_never(config.flush_ms.map(|n| n.to_string()))),
        (
            "index.interval.bytes",
            config.index_interval_bytes.to_string(),
        ),
        ("max.message.bytes", config.max_message_bytes.to_string()),
        (
            "min.insync.replicas",
            config.min_insync_replicas.to_string(),
        ),
        (
            "retention.bytes",
            or_unlimited(config.retention_bytes.map(|n| n.to_string())),
        ),
        (
            "retention.ms",
            or_unlimited(config.retention_ms.map(|n| n.to_string())),
        ),
        ("segment.bytes", config.segment_bytes.to_string()),
        ("segment.ms", config.segment_ms.to_string()),
        (
            "unclean.leader.election.enable",
            config.unclean_leader_election_enable.to_string(),
        ),
    ]
}

/// Kafka's resource type of a topic.
const TOPIC_RESOURCE: i8 = 2;
/// Kafka's config sources: a topic's own setting, and the default.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const DEFAULT_CONFIG: i8 = 5;

/// DescribeConfigs (v1–v4): each topic's settings in Kafka's names, each
/// marked as the topic's own or the default. Other resources (brokers,
/// loggers) are answered `INVALID_REQUEST`: ferrolog's broker settings are
/// not Kafka's.
pub(super) fn describe_configs(
    context: &Context,
    header: RequestHeader,
    mut body: Reader,
    reply: Reply,
) -> Read<Handled> {
    let version = header.api_version;
    type Resource = (i8, String, Option<Vec<String>>);
    let resources: Vec<Resource> = body
        .array("resources", |r| {
            let kind = r.i8("resource type")?;
            let name = r.string("resource name")?;
            let keys = r.array("configuration keys", |r| r.string("key"))?;
            r.tagged_fields()?;
            Ok((kind, name, keys))
        })?
        .unwrap_or_default();
    body.bool("include synonyms")?;
    if version >= 3 {
        body.bool("include documentation")?;
    }
    body.tagged_fields()?;
    let topics: Vec<String> = resources
        .iter()
        .filter(|(kind, _, _)| *kind == TOPIC_RESOURCE)
        .map(|(_, name, _)| name.clone())
        .collect();
    let defaults = topic_configs(&TopicConfig::default());
    let answer = move |found: std::result::Result<crate::protocol::MetadataResponse, i16>| {
        let results = resources
            .into_iter()
            .map(|(kind, name, keys)| {
                let result = DescribeConfigsResult::default()
                    .with_resource_type(kind)
                    .with_resource_name(StrBytes::from_string(name.clone()));
                if kind != TOPIC_RESOURCE {
                    return result
                        .with_error_code(INVALID_REQUEST)
                        .with_error_message(Some(StrBytes::from_string(format!(
                            "resource type {kind} is not described (topics are)"
                        ))));
                }
                let topic = match &found {
                    Ok(m) => m.topics.iter().find(|t| *t.name == *name),
                    Err(_) => None,
                };
                let Some(topic) = topic else {
                    let code = found
                        .as_ref()
                        .err()
                        .copied()
                        .unwrap_or(UNKNOWN_TOPIC_OR_PARTITION);
                    return result.with_error_code(code);
                };
                let configs = topic_configs(&topic.config)
                    .into_iter()
                    .zip(&defaults)
                    .filter(|((key, _), _)| {
                        keys.as_ref()
                            .is_none_or(|keys| keys.iter().any(|k| k == key))
                    })
                    .map(|((key, value), (_, default))| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_static_str(key))
                            .with_config_source(if value == *default {
                                DEFAULT_CONFIG
                            } else {
                                DYNAMIC_TOPIC_CONFIG
                            })
                            .with_value(Some(StrBytes::from_string(value)))
                    })
                    .collect();
                result.with_configs(configs)
            })
            .collect();
        let response = DescribeConfigsResponse::default().with_results(results);
        wire::response_frame(&header, &response, version)
    };
    let request = Request::Metadata(crate::protocol::MetadataRequest {
        topics: Some(topics),
    });
    let to = context.bootstrap.first().copied().unwrap_or(0);
    context.endpoint.send_with(to, request, move |result| {
        let found = match result {
            Ok(Response::Metadata(m)) => Ok(m),
            Ok(_) => Err(INVALID_REQUEST),
            Err(e) => Err(e.code()),
        };
        reply.answer(move || answer(found));
    });
    Ok(Handled::Later)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::TopicCompression;

    /// Every setting DescribeConfigs shows reads back (CreateTopics'
    /// configs) to the same value, for the defaults and for a topic with
    /// every setting of its own.
    #[test]
    fn described_topic_configs_read_back_to_the_same_settings() {
        let own = TopicConfig {
            segment_bytes: 1 << 20,
            segment_ms: 60_000,
            index_interval_bytes: 1024,
            retention_ms: None,
            retention_bytes: Some(1 << 30),
            flush_messages: Some(10),
            flush_ms: None,
            max_message_bytes: 65_536,
            min_insync_replicas: 2,
            unclean_leader_election_enable: true,
            cleanup_policy: CleanupPolicy::CompactDelete,
            delete_retention_ms: 1_000,
            compression_type: TopicCompression::Uncompressed,
        };
        for config in [TopicConfig::default(), own] {
            let mut read = TopicConfig {
                flush_messages: Some(1),
                flush_ms: Some(1),
                retention_ms: Some(1),
                ..TopicConfig::default()
            };
            for (key, value) in topic_configs(&config) {
                apply_config(&mut read, key, Some(&value)).unwrap();
            }
            assert_eq!(read, config);
        }
    }
}
