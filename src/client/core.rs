//! What every client shares: an identity, a transport, and cached metadata.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Mutex, RwLock};

use super::Bootstrap;
use crate::error::{Error, Result};
use crate::protocol::{
    ListOffsetsRequest, MetadataRequest, NodeId, OffsetAndTimestamp, OffsetSpec, Request, Response,
    TopicMetadata,
};
use crate::topic::TopicPartition;
use crate::transport::Endpoint;

/// Wait before asking again for offsets of partitions whose leader failed.
const LIST_OFFSETS_BACKOFF: Duration = Duration::from_millis(100);

/// The cluster as a client last saw it.
#[derive(Debug, Default)]
pub(crate) struct MetadataSnapshot {
    pub(crate) controller: Option<NodeId>,
    pub(crate) brokers: Vec<NodeId>,
    pub(crate) topics: HashMap<Arc<str>, Arc<TopicMetadata>>,
}

impl MetadataSnapshot {
    /// The leader of `tp`, if known.
    pub(crate) fn leader(&self, tp: &TopicPartition) -> Option<NodeId> {
        self.topics
            .get(tp.topic())?
            .partitions
            .get(tp.partition() as usize)?
            .leader
    }
}

/// A client's connection to the cluster.
#[derive(Debug)]
pub(crate) struct ClientCore {
    endpoint: Endpoint,
    bootstrap: Vec<NodeId>,
    metadata: RwLock<Arc<MetadataSnapshot>>,
    refresh: Mutex<()>,
}

impl ClientCore {
    pub(crate) fn new(bootstrap: Bootstrap) -> Result<Arc<Self>> {
        if bootstrap.nodes.is_empty() {
            return Err(Error::config("bootstrap", "names no broker"));
        }
        let endpoint = Endpoint::new(bootstrap.transport)?;
        Ok(Arc::new(Self {
            endpoint,
            bootstrap: bootstrap.nodes,
            metadata: RwLock::new(Arc::new(MetadataSnapshot::default())),
            refresh: Mutex::new(()),
        }))
    }

    /// Sends without waiting; the outcome goes to `on_answer`, on whatever
    /// thread delivers it (it must be quick and must not block).
    pub(crate) fn send(
        &self,
        node: NodeId,
        request: Request,
        on_answer: impl FnOnce(Result<Response>) + Send + 'static,
    ) {
        self.endpoint.send_with(node, request, on_answer);
    }

    /// Sends and waits for the outcome, at most `timeout`.
    pub(crate) fn call(
        &self,
        node: NodeId,
        request: Request,
        timeout: Duration,
    ) -> Result<Response> {
        self.endpoint.call(node, request, timeout)
    }

    /// The cached metadata.
    pub(crate) fn metadata(&self) -> Arc<MetadataSnapshot> {
        self.metadata.read().clone()
    }

    /// Asks the known brokers, then the bootstrap ones, for fresh metadata of
    /// every topic, and caches the answer.
    pub(crate) fn refresh_metadata(&self, timeout: Duration) -> Result<Arc<MetadataSnapshot>> {
        let _one_at_a_time = self.refresh.lock();
        let deadline = Instant::now() + timeout;
        let current = self.metadata();
        let mut candidates = current.brokers.clone();
        candidates.extend(
            self.bootstrap
                .iter()
                .filter(|n| !current.brokers.contains(n)),
        );
        let mut last_error = None;
        for node in candidates {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.call(node, Request::Metadata(MetadataRequest::default()), left) {
                Ok(Response::Metadata(m)) => {
                    let snapshot = Arc::new(MetadataSnapshot {
                        controller: m.controller,
                        brokers: m.brokers.iter().map(|b| b.id).collect(),
                        topics: m
                            .topics
                            .into_iter()
                            .map(|t| (t.name.clone(), Arc::new(t)))
                            .collect(),
                    });
                    *self.metadata.write() = snapshot.clone();
                    return Ok(snapshot);
                }
                Ok(other) => last_error = Some(unexpected("Metadata", &other)),
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or(Error::RequestTimedOut {
            operation: "Metadata",
            timeout_ms: timeout.as_millis() as u64,
        }))
    }

    /// The topic's metadata: from the cache, else after one refresh.
    pub(crate) fn topic(&self, name: &str, timeout: Duration) -> Result<Arc<TopicMetadata>> {
        if let Some(topic) = self.metadata.read().topics.get(name) {
            return Ok(topic.clone());
        }
        self.refresh_metadata(timeout)?
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
            })
    }

    /// Checks that `tp` exists, refreshing once if the cache does not say so.
    pub(crate) fn check_partition(&self, tp: &TopicPartition, timeout: Duration) -> Result<()> {
        let mut topic = self.topic(tp.topic(), timeout)?;
        if tp.partition() as usize >= topic.partitions.len() {
            topic = self
                .refresh_metadata(timeout)?
                .topics
                .get(tp.topic())
                .cloned()
                .ok_or_else(|| Error::UnknownTopicOrPartition {
                    topic: tp.topic().to_string(),
                })?;
        }
        let count = topic.partitions.len() as u32;
        if tp.partition() >= count {
            return Err(Error::InvalidPartition {
                topic: tp.topic().to_string(),
                partition: tp.partition(),
                partition_count: count,
            });
        }
        Ok(())
    }

    /// Looks offsets up at the partitions' leaders, retrying retriable
    /// errors (after a metadata refresh) until `deadline`.
    pub(crate) fn list_offsets(
        &self,
        mut wanted: Vec<(TopicPartition, OffsetSpec)>,
        deadline: Instant,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        let mut found = HashMap::new();
        loop {
            let metadata = self.metadata();
            let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
            let mut retry = Vec::new();
            let mut last_error = None;
            for (tp, spec) in wanted {
                match metadata.leader(&tp) {
                    Some(node) => by_node.entry(node).or_default().push((tp, spec)),
                    None => retry.push((tp, spec)),
                }
            }
            for (node, partitions) in by_node {
                let left = deadline.saturating_duration_since(Instant::now());
                let request = Request::ListOffsets(ListOffsetsRequest {
                    partitions: partitions.clone(),
                });
                match self.call(node, request, left) {
                    Ok(Response::ListOffsets(response)) => {
                        let specs: HashMap<_, _> = partitions.into_iter().collect();
                        for listed in response.partitions {
                            match listed.result {
                                Ok(offset) => {
                                    found.insert(listed.partition, offset);
                                }
                                Err(e) if e.is_retriable() => {
                                    if let Some(&spec) = specs.get(&listed.partition) {
                                        retry.push((listed.partition, spec));
                                    }
                                    last_error = Some(e);
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Ok(other) => return Err(unexpected("ListOffsets", &other)),
                    Err(e) if e.is_retriable() => {
                        retry.extend(partitions);
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(last_error.unwrap_or(Error::RequestTimedOut {
                    operation: "ListOffsets",
                    timeout_ms: 0,
                }));
            }
            // Unknown partitions surface here with their own error.
            for (tp, _) in &retry {
                self.check_partition(tp, deadline.saturating_duration_since(Instant::now()))?;
            }
            std::thread::sleep(
                LIST_OFFSETS_BACKOFF.min(deadline.saturating_duration_since(Instant::now())),
            );
            self.refresh_metadata(deadline.saturating_duration_since(Instant::now()))?;
            wanted = retry;
        }
    }
}

/// The error for a response of the wrong kind.
pub(crate) fn unexpected(expected: &str, got: &Response) -> Error {
    Error::InvalidRequest {
        reason: format!("expected a {expected} response, got {}", got.api_name()),
    }
}
