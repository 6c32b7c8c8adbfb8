//! An offset lookup across partitions, without blocking: one ListOffsets
//! request per leader, retriable failures asked again (after a metadata
//! refresh) until the lookup's deadline. A partition the cluster does not
//! have fails the lookup once a refresh asked for after it started says so.
//!
//! An [`OffsetQuery`] is a piece of a client core: it sends through the
//! core's `send`, reads leaders from the core's [`MetadataCache`], and the
//! core hands it the answers to its requests.

use std::collections::{BTreeMap, HashMap};

use super::metadata::MetadataCache;
use crate::error::{Error, Result};
use crate::protocol::{
    ListOffsetsRequest, NodeId, OffsetAndTimestamp, OffsetSpec, Request, Response,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Wait before asking again for offsets of partitions whose leader failed.
const RETRY_BACKOFF_MS: Millis = 100;

/// What a finished lookup found, per partition (`None`: no record at or
/// after the timestamp).
pub(crate) type FoundOffsets = HashMap<TopicPartition, Option<OffsetAndTimestamp>>;

/// One lookup; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct OffsetQuery {
    /// Partitions still to ask, with when they may be asked.
    waiting: BTreeMap<TopicPartition, (OffsetSpec, Millis)>,
    /// Requests in flight: their partitions and deadline.
    in_flight: BTreeMap<u64, (Vec<(TopicPartition, OffsetSpec)>, Millis)>,
    found: FoundOffsets,
    deadline: Millis,
    request_timeout: Millis,
    /// The metadata refresh whose answer decides whether a partition
    /// without a leader exists.
    refresh: Option<u64>,
    last_error: Option<Error>,
    outcome: Option<Result<FoundOffsets>>,
}

impl OffsetQuery {
    /// Looks up `wanted`, failing at `deadline`.
    pub(crate) fn new(
        wanted: Vec<(TopicPartition, OffsetSpec)>,
        now: Millis,
        deadline: Millis,
        request_timeout: Millis,
    ) -> Self {
        let outcome = wanted.is_empty().then(|| Ok(HashMap::new()));
        Self {
            waiting: wanted
                .into_iter()
                .map(|(tp, spec)| (tp, (spec, now)))
                .collect(),
            in_flight: BTreeMap::new(),
            found: HashMap::new(),
            deadline,
            request_timeout,
            refresh: None,
            last_error: None,
            outcome,
        }
    }

    /// Whether the request `correlation_id` is this lookup's.
    pub(crate) fn owns(&self, correlation_id: u64) -> bool {
        self.in_flight.contains_key(&correlation_id)
    }

    /// The outcome, once finished.
    pub(crate) fn take_outcome(&mut self) -> Option<Result<FoundOffsets>> {
        self.outcome.take()
    }

    /// Whether the lookup finished (its outcome may be taken already).
    pub(crate) fn is_finished(&self) -> bool {
        self.outcome.is_some() || (self.waiting.is_empty() && self.in_flight.is_empty())
    }

    fn finish(&mut self, outcome: Result<FoundOffsets>) {
        self.outcome.get_or_insert(outcome);
        self.waiting.clear();
        self.in_flight.clear();
    }

    fn retry(&mut self, now: Millis, tp: TopicPartition, spec: OffsetSpec, e: Error) {
        self.waiting.insert(tp, (spec, now + RETRY_BACKOFF_MS));
        self.last_error = Some(e);
    }

    /// Applies the answer to one of its requests.
    pub(crate) fn handle_response(
        &mut self,
        now: Millis,
        correlation_id: u64,
        response: Result<Response>,
        metadata: &mut MetadataCache,
    ) {
        let Some((partitions, _)) = self.in_flight.remove(&correlation_id) else {
            return;
        };
        match response {
            Ok(Response::ListOffsets(listed)) => {
                let specs: BTreeMap<_, _> = partitions.into_iter().collect();
                for answer in listed.partitions {
                    let Some(&spec) = specs.get(&answer.partition) else {
                        continue;
                    };
                    match answer.result {
                        Ok(offset) => {
                            self.found.insert(answer.partition, offset);
                        }
                        Err(e) if e.is_retriable() => {
                            metadata.want_refresh();
                            self.retry(now, answer.partition, spec, e);
                        }
                        Err(e) => return self.finish(Err(e)),
                    }
                }
            }
            Ok(other) => return self.finish(Err(super::unexpected("ListOffsets", &other))),
            Err(e) if e.is_retriable() => {
                metadata.want_refresh();
                for (tp, spec) in partitions {
                    self.retry(now, tp, spec, e.clone());
                }
            }
            Err(e) => return self.finish(Err(e)),
        }
        self.complete_if_done();
    }

    fn complete_if_done(&mut self) {
        if self.outcome.is_none() && self.waiting.is_empty() && self.in_flight.is_empty() {
            self.outcome = Some(Ok(std::mem::take(&mut self.found)));
        }
    }

    /// Does what is due at `now`: fails the lookup past its deadline,
    /// settles partitions the metadata says do not exist, and asks the
    /// leaders of the rest, through `send` (which returns the correlation id).
    pub(crate) fn poll(
        &mut self,
        now: Millis,
        metadata: &mut MetadataCache,
        mut send: impl FnMut(NodeId, Request) -> u64,
    ) {
        if self.is_finished() {
            return;
        }
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            let timed_out = Err(Error::RequestTimedOut {
                operation: "ListOffsets",
                timeout_ms: self.request_timeout as u64,
            });
            self.handle_response(now, id, timed_out, metadata);
        }
        if self.is_finished() {
            return;
        }
        if now >= self.deadline {
            let e = self.last_error.take().unwrap_or(Error::RequestTimedOut {
                operation: "ListOffsets",
                timeout_ms: self.request_timeout as u64,
            });
            return self.finish(Err(e));
        }
        let refreshed = self
            .refresh
            .is_some_and(|target| metadata.last_success >= target);
        let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for (tp, &(spec, not_before)) in &self.waiting {
            if not_before > now {
                continue;
            }
            match metadata.leader(tp) {
                Some(node) => by_node.entry(node).or_default().push((tp.clone(), spec)),
                None if refreshed => match metadata.topic(tp.topic()) {
                    None => {
                        let e = Error::UnknownTopicOrPartition {
                            topic: tp.topic().to_string(),
                        };
                        return self.finish(Err(e));
                    }
                    Some(topic) if tp.partition() as usize >= topic.partitions.len() => {
                        let e = Error::InvalidPartition {
                            topic: tp.topic().to_string(),
                            partition: tp.partition(),
                            partition_count: topic.partitions.len() as u32,
                        };
                        return self.finish(Err(e));
                    }
                    // Exists, between leaders: ask again.
                    Some(_) => leaderless.push(tp.clone()),
                },
                None => leaderless.push(tp.clone()),
            }
        }
        if !leaderless.is_empty() && (self.refresh.is_none() || refreshed) {
            self.refresh = Some(metadata.sent + 1);
            metadata.want_refresh();
        }
        // Look again after a backoff (or when the metadata answer comes and
        // the core polls).
        for tp in leaderless {
            if let Some((_, not_before)) = self.waiting.get_mut(&tp) {
                *not_before = now + RETRY_BACKOFF_MS;
            }
        }
        let deadline = (now + self.request_timeout).min(self.deadline);
        for (node, partitions) in by_node {
            for (tp, _) in &partitions {
                self.waiting.remove(tp);
            }
            let id = send(
                node,
                Request::ListOffsets(ListOffsetsRequest {
                    partitions: partitions.clone(),
                }),
            );
            self.in_flight.insert(id, (partitions, deadline));
        }
    }

    /// When [`poll`](Self::poll) next has something to do (a partition
    /// waiting for metadata moves when the metadata answer comes).
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        if self.is_finished() {
            return None;
        }
        let flights = self.in_flight.values().map(|(_, deadline)| *deadline);
        let retries = self.waiting.values().map(|(_, not_before)| *not_before);
        flights
            .chain(retries)
            .chain(std::iter::once(self.deadline))
            .min()
    }
}
