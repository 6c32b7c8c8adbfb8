//! What the client cores share: the cluster as a core sees it, and how the
//! core keeps it fresh without blocking (a refresh is a Metadata request the
//! core sends and an answer it applies), and how a core numbers the
//! requests it queues.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::protocol::{Envelope, MetadataRequest, NodeId, Peer, Request, Response, TopicMetadata};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Cluster metadata from the last answer, and the state of the refresh.
#[derive(Debug)]
pub(crate) struct MetadataCache {
    bootstrap: Vec<NodeId>,
    pub(crate) controller: Option<NodeId>,
    /// The last controller an answer named (kept when later answers name
    /// none).
    pub(crate) last_known_controller: Option<NodeId>,
    pub(crate) brokers: Vec<NodeId>,
    pub(crate) topics: BTreeMap<Arc<str>, Arc<TopicMetadata>>,
    fetched_at: Option<Millis>,
    /// The metadata version of the last answer, and per topic the version
    /// of the last answer that had it: a topic missing from an answer
    /// newer than that was deleted (an answer from a broker that lags
    /// behind proves nothing).
    version: u64,
    present_at: BTreeMap<Arc<str>, u64>,
    /// The refresh in flight: its correlation id, node and deadline.
    in_flight: Option<(u64, NodeId, Millis)>,
    /// A refresh is wanted before the data is due (a leader moved): one
    /// sent after the first this many.
    wanted_after: Option<u64>,
    /// When the last refresh was sent, and which candidate goes next.
    last_attempt: Option<Millis>,
    next_candidate: usize,
    /// Refreshes sent and finished (answered or failed), one in flight at a
    /// time; the number of the last one that succeeded, and the last
    /// failure.
    pub(crate) sent: u64,
    pub(crate) finished: u64,
    pub(crate) last_success: u64,
    pub(crate) last_error: Option<Error>,
}

impl MetadataCache {
    /// Nothing known yet; `bootstrap` are the nodes asked first.
    pub(crate) fn new(bootstrap: Vec<NodeId>) -> Self {
        Self {
            bootstrap,
            controller: None,
            last_known_controller: None,
            brokers: Vec::new(),
            topics: BTreeMap::new(),
            fetched_at: None,
            version: 0,
            present_at: BTreeMap::new(),
            in_flight: None,
            wanted_after: None,
            last_attempt: None,
            next_candidate: 0,
            sent: 0,
            finished: 0,
            last_success: 0,
            last_error: None,
        }
    }

    /// The leader of `tp`, if known.
    pub(crate) fn leader(&self, tp: &TopicPartition) -> Option<NodeId> {
        self.leader_and_epoch(tp).map(|(leader, _)| leader)
    }

    /// The leader of `tp` and its leader epoch, if known.
    pub(crate) fn leader_and_epoch(&self, tp: &TopicPartition) -> Option<(NodeId, i32)> {
        let partition = self
            .topics
            .get(tp.topic())?
            .partitions
            .get(tp.partition() as usize)?;
        Some((partition.leader?, partition.leader_epoch))
    }

    /// Whether `tp`'s topic (or this partition of it) was deleted, by an
    /// answer received after `since`: a newer metadata version than the
    /// last one that had it lacks it.
    pub(crate) fn deleted_since(&self, tp: &TopicPartition, since: Millis) -> bool {
        // Cheapest first: on the producer's drain path this is asked for
        // every queued partition, and metadata is rarely newer than a batch.
        self.fetched_at.is_some_and(|at| at > since)
            && self
                .topics
                .get(tp.topic())
                .is_none_or(|t| tp.partition() as usize >= t.partitions.len())
            && self
                .present_at
                .get(tp.topic())
                .is_some_and(|&v| v < self.version)
    }

    /// The metadata version of the last answer (0: none yet, or from a
    /// broker that has no metadata yet).
    pub(crate) fn version(&self) -> u64 {
        self.version
    }

    /// The topic, if known.
    pub(crate) fn topic(&self, name: &str) -> Option<Arc<TopicMetadata>> {
        self.topics.get(name).cloned()
    }

    /// Asks for a refresh sent from now on, as soon as `backoff` allows (one
    /// in flight now does not count: it may have left before what made the
    /// caller ask).
    pub(crate) fn want_refresh(&mut self) {
        // A refresh sent after this moment satisfies an earlier wish too;
        // keeping an earlier mark would let the one in flight now (which
        // may have left before the caller's cause) clear this wish.
        self.wanted_after = Some(self.sent);
    }

    /// Asks for a refresh sent from now on, at once (an explicit request of
    /// the application's, not a retry).
    pub(crate) fn want_refresh_now(&mut self) {
        self.want_refresh();
        self.last_attempt = None;
    }

    /// When a refresh is due: at once if nothing is known, after `backoff`
    /// from the last attempt if one is wanted, else when the data is
    /// `max_age` old. `None` while one is in flight.
    pub(crate) fn due(&self, max_age: Millis, backoff: Millis) -> Option<Millis> {
        if self.in_flight.is_some() {
            return None;
        }
        let after_backoff = self.last_attempt.map_or(Millis::MIN, |at| at + backoff);
        match self.fetched_at {
            None => Some(after_backoff),
            Some(_) if self.wanted_after.is_some() => Some(after_backoff),
            Some(at) => Some(at.saturating_add(max_age).max(after_backoff)),
        }
    }

    /// When the refresh in flight times out.
    pub(crate) fn deadline(&self) -> Option<Millis> {
        self.in_flight.map(|(_, _, deadline)| deadline)
    }

    /// Sends a refresh if one is due at `now`, through `send` (which returns
    /// the request's correlation id); gives up on one unanswered past its
    /// deadline.
    pub(crate) fn poll(
        &mut self,
        now: Millis,
        max_age: Millis,
        backoff: Millis,
        timeout: Millis,
        send: impl FnOnce(NodeId, Request) -> u64,
    ) {
        if self.deadline().is_some_and(|deadline| now >= deadline) {
            self.in_flight = None;
            self.failed(Error::RequestTimedOut {
                operation: "Metadata",
                timeout_ms: timeout as u64,
            });
        }
        if self.due(max_age, backoff).is_none_or(|at| now < at) {
            return;
        }
        let candidates = self.candidates();
        let Some(&node) = candidates.get(self.next_candidate % candidates.len().max(1)) else {
            return;
        };
        let id = send(node, Request::Metadata(MetadataRequest::default()));
        self.in_flight = Some((id, node, now + timeout));
        self.last_attempt = Some(now);
        self.sent += 1;
    }

    /// Applies the answer to request `correlation_id` if it is the refresh in
    /// flight; returns whether it was.
    pub(crate) fn handle_response(
        &mut self,
        now: Millis,
        correlation_id: u64,
        response: &Result<Response>,
    ) -> bool {
        if self.in_flight.is_none_or(|(id, _, _)| id != correlation_id) {
            return false;
        }
        self.in_flight = None;
        match response {
            Ok(Response::Metadata(m)) => {
                self.controller = m.controller;
                self.last_known_controller = m.controller.or(self.last_known_controller);
                self.brokers = m.brokers.iter().map(|b| b.id).collect();
                self.topics = m
                    .topics
                    .iter()
                    .map(|t| (t.name.clone(), Arc::new(t.clone())))
                    .collect();
                self.fetched_at = Some(now);
                self.version = m.version;
                for name in self.topics.keys() {
                    self.present_at.insert(name.clone(), m.version);
                }
                self.last_error = None;
                self.finished += 1;
                self.last_success = self.finished;
                if self
                    .wanted_after
                    .is_some_and(|after| self.last_success > after)
                {
                    self.wanted_after = None;
                }
            }
            Ok(other) => self.failed(Error::InvalidRequest {
                reason: format!("expected a Metadata response, got {}", other.api_name()),
            }),
            Err(e) => self.failed(e.clone()),
        }
        true
    }

    /// Node `node` did not answer: the next refresh asks another node
    /// first (when there is another).
    pub(crate) fn avoid(&mut self, node: NodeId) {
        let candidates = self.candidates();
        if candidates.len() > 1
            && candidates.get(self.next_candidate % candidates.len()) == Some(&node)
        {
            self.next_candidate = self.next_candidate.wrapping_add(1);
        }
    }

    /// A refresh failed: the next one asks another node.
    fn failed(&mut self, e: Error) {
        self.next_candidate = self.next_candidate.wrapping_add(1);
        self.last_error = Some(e);
        self.finished += 1;
    }

    /// The known brokers, then the bootstrap nodes not among them.
    fn candidates(&self) -> Vec<NodeId> {
        let mut nodes = self.brokers.clone();
        nodes.extend(self.bootstrap.iter().filter(|n| !self.brokers.contains(n)));
        nodes
    }
}

/// Queues a request of client `peer` to node `to`, numbered with the next
/// correlation id; returns that id.
pub(crate) fn queue_request(
    peer: Peer,
    next_correlation_id: &mut u64,
    outbox: &mut VecDeque<Envelope>,
    to: NodeId,
    request: Request,
) -> u64 {
    let id = *next_correlation_id;
    *next_correlation_id += 1;
    outbox.push_back(Envelope::request(peer, Peer::Broker(to), id, request));
    id
}
