//! The controller as a node of its own, as a deterministic state machine
//! ([`ControllerCore`]): it answers admin requests, broker heartbeats and
//! ISR changes, runs the liveness clock, and publishes every new
//! [`ClusterMetadata`] to the live brokers.
//!
//! Like KRaft's controllers it is separate from the brokers, so a broker can
//! crash and restart without taking the metadata with it. The decisions are
//! the [`Controller`]'s; this core turns requests into its calls and its
//! changes into messages, and never talks to anyone itself: everything it
//! sends leaves through [`ControllerCore::poll_transmit`].

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use super::Controller;
use super::store::MetadataStore;
use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{
    BrokerHeartbeatRequest, BrokerInfo, ClusterMetadata, Envelope, Message, MetadataRequest,
    MetadataResponse, NodeId, Peer, ReplyTo, Request, Response, TopicResults,
    UpdateMetadataRequest,
};
use crate::storage::Storage;
use crate::time::Millis;
use crate::topic::TopicPartition;

/// A metadata change being published: the answer to the request that made
/// it waits until every live broker has answered the push (or the deadline
/// passed), so that a client that hears "created" finds the topic on any
/// broker it asks next.
#[derive(Debug)]
struct Publish {
    /// What is published.
    metadata: Arc<ClusterMetadata>,
    /// The correlation ids of the pushes not answered yet.
    waiting: BTreeSet<u64>,
    answer: Option<(ReplyTo, Result<Response>)>,
    deadline: Millis,
    /// Replicas the brokers that answered could not open or remove.
    failed: Vec<(TopicPartition, Error)>,
}

/// What the active controller said or changed while records of its were
/// not committed yet: nothing leaves it before they are (a quorum may
/// still drop them), so it waits for them to commit.
#[derive(Debug)]
struct Deferred {
    /// The store's end offset when the answer was made (after the
    /// change's records, if it made one).
    end: u64,
    metadata: Arc<ClusterMetadata>,
    answer: Option<(ReplyTo, Result<Response>)>,
    /// Publish `metadata` to every live broker and to this one, before
    /// answering: the answer made a change.
    publish: Option<Option<NodeId>>,
    /// Push `metadata` to this broker alone (a heartbeat showed it behind).
    push_to: Option<NodeId>,
}

/// One voter's place in a controller quorum.
#[cfg(feature = "quorum")]
#[derive(Debug, Clone, Copy)]
pub(crate) struct QuorumSeat<'a> {
    /// This voter.
    pub(crate) voter: NodeId,
    /// Every voter of the quorum.
    pub(crate) voters: &'a [NodeId],
    /// Turns which voter's election timeout is shortest.
    pub(crate) seed: u64,
    /// Committed records after which a voter snapshots (see
    /// [`SNAPSHOT_AFTER_RECORDS`](super::store::SNAPSHOT_AFTER_RECORDS)).
    pub(crate) snapshot_after: u64,
}

/// A push of a publish, waiting for its broker's answer.
#[derive(Debug, Clone, Copy)]
struct PushSent {
    publish: u64,
    broker: NodeId,
    /// Sent as a delta (a broker that does not hold its base refuses it,
    /// and gets the whole metadata instead).
    delta: bool,
}

/// The controller node; see the [module docs](self).
pub(crate) struct ControllerCore {
    id: NodeId,
    /// The active controller; `None` while this node is a standby of the
    /// quorum, and once shut down or crashed.
    controller: Option<Controller>,
    /// A quorum voter's metadata log while it is not the active
    /// controller's.
    standby: Option<Box<dyn MetadataStore>>,
    /// When the quorum ticks next (`None`: no quorum).
    next_quorum_tick: Option<Millis>,
    /// Changes waiting for their records to commit, oldest first.
    deferred: VecDeque<Deferred>,
    session_timeout_ms: Millis,
    tick_ms: Millis,
    next_tick: Millis,
    /// How long a publish waits for a broker's answer.
    publish_timeout_ms: Millis,
    publishes: BTreeMap<u64, Publish>,
    /// Push correlation id → the publish it belongs to.
    pushes: BTreeMap<u64, PushSent>,
    /// The metadata last pushed to each broker: the next push to it is a
    /// delta from that one (forgotten when a push fails or is refused).
    sent: BTreeMap<NodeId, Arc<ClusterMetadata>>,
    next_publish: u64,
    /// The newest metadata whose publish ended (every live broker answered
    /// its push, or the publish timed out), and the publish's id.
    published: Option<(u64, Arc<ClusterMetadata>)>,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
}

impl std::fmt::Debug for ControllerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let term = match (&self.controller, &self.standby) {
            (Some(c), _) => Some(c.store().term()),
            (None, Some(s)) => Some(s.term()),
            (None, None) => None,
        };
        f.debug_struct("ControllerCore")
            .field("id", &self.id)
            .field("running", &self.controller.is_some())
            .field("quorum_term", &term)
            .finish_non_exhaustive()
    }
}

impl ControllerCore {
    /// Loads the controller `id` from its metadata log in `storage` (a new
    /// controller epoch) at `now`. Every broker of `brokers` counts as alive
    /// until `session_timeout_ms` passes without a heartbeat from it;
    /// sessions are checked every `tick_ms`.
    pub(crate) fn load(
        id: NodeId,
        storage: &dyn Storage,
        brokers: Vec<BrokerInfo>,
        now: Millis,
        session_timeout_ms: Millis,
        tick_ms: Millis,
    ) -> Result<Self> {
        let controller = Controller::load(storage, id, brokers, now, session_timeout_ms)?;
        Ok(Self::new(
            id,
            Some(controller),
            None,
            now,
            session_timeout_ms,
            tick_ms,
        ))
    }

    /// A voter of a controller quorum (Raft over the wire): controller
    /// `CONTROLLER_ID + seat.voter` with its metadata log in `storage`.
    /// It starts as a standby; when the quorum
    /// elects it and everything before its term is committed, it replays
    /// the committed metadata and becomes the active controller (every
    /// registered broker then gets a session to heartbeat in), and stops
    /// being it when the quorum elects another.
    #[cfg(feature = "quorum")]
    #[cfg_attr(not(any(feature = "node", feature = "sim")), allow(dead_code))]
    pub(crate) fn quorum(
        seat: &QuorumSeat<'_>,
        storage: &dyn Storage,
        now: Millis,
        session_timeout_ms: Millis,
        tick_ms: Millis,
    ) -> Result<Self> {
        let id = crate::protocol::CONTROLLER_ID.saturating_add(seat.voter);
        let store = super::quorum::RaftMetadataStore::open(
            storage,
            id,
            seat.voter,
            seat.voters,
            seat.seed,
        )?
        .snapshot_after(seat.snapshot_after);
        let mut core = Self::new(
            id,
            None,
            Some(Box::new(store)),
            now,
            session_timeout_ms,
            tick_ms,
        );
        core.next_quorum_tick = Some(now + super::RAFT_TICK_MS);
        Ok(core)
    }

    fn new(
        id: NodeId,
        controller: Option<Controller>,
        standby: Option<Box<dyn MetadataStore>>,
        now: Millis,
        session_timeout_ms: Millis,
        tick_ms: Millis,
    ) -> Self {
        let tick_ms = tick_ms.max(1);
        Self {
            id,
            controller,
            standby,
            next_quorum_tick: None,
            deferred: VecDeque::new(),
            session_timeout_ms,
            tick_ms,
            next_tick: now + tick_ms,
            publish_timeout_ms: session_timeout_ms,
            publishes: BTreeMap::new(),
            pushes: BTreeMap::new(),
            sent: BTreeMap::new(),
            next_publish: 0,
            published: None,
            // 0 is what quorum messages carry (they have no answer).
            next_correlation_id: 1,
            outbox: VecDeque::new(),
        }
    }

    /// The metadata log, active or standby.
    fn store_mut(&mut self) -> Option<&mut dyn MetadataStore> {
        match (&mut self.controller, &mut self.standby) {
            (Some(c), _) => Some(c.store_mut()),
            (None, Some(s)) => Some(&mut **s),
            (None, None) => None,
        }
    }

    /// After every input: leadership changes, committed changes published,
    /// quorum messages sent.
    fn settle(&mut self, now: Millis) {
        // A standby whose store became active takes over.
        if self.controller.is_none()
            && self.standby.as_ref().is_some_and(|s| s.is_active())
            && let Some(store) = self.standby.take()
        {
            match Controller::from_store(store, self.id, Vec::new(), now, self.session_timeout_ms) {
                Ok(controller) => {
                    #[cfg(feature = "tracing")]
                    tracing::info!(
                        controller = self.id,
                        term = controller.store().term(),
                        "became the active controller"
                    );
                    self.controller = Some(controller);
                    self.change_made(now, None, None);
                }
                Err(_e) => {
                    // The store went with the failed load: this node stops
                    // taking part, as a controller whose log fails does.
                    #[cfg(feature = "tracing")]
                    tracing::error!(controller = self.id, error = %_e,
                        "could not take over as the active controller");
                }
            }
        }
        // An active controller whose quorum moved on steps down: what it
        // had not committed is dropped, and what waited for it fails.
        if self.next_quorum_tick.is_some()
            && self
                .controller
                .as_ref()
                .is_some_and(|c| !c.store().is_active())
            && let Some(controller) = self.controller.take()
        {
            #[cfg(feature = "tracing")]
            tracing::info!(controller = self.id, "no longer the active controller");
            self.standby = Some(controller.into_store());
            self.publishes.clear();
            self.pushes.clear();
            self.sent.clear();
            let not_controller = Err(Error::NotController { broker: self.id });
            for deferred in std::mem::take(&mut self.deferred) {
                if let Some((reply, _)) = deferred.answer {
                    self.answer(Some((reply, not_controller.clone())));
                }
            }
        }
        // Changes whose records committed are published, in order.
        let committed = self
            .controller
            .as_ref()
            .map_or(0, |c| c.store().committed_offset());
        while self.deferred.front().is_some_and(|d| d.end <= committed) {
            if let Some(d) = self.deferred.pop_front() {
                self.release(now, d);
            }
        }
        // Quorum messages go out.
        let mut messages = Vec::new();
        if let Some(store) = self.store_mut() {
            while let Some(message) = store.poll_message() {
                messages.push(message);
            }
        }
        for (voter, payload) in messages {
            self.outbox.push_back(Envelope::request(
                Peer::Broker(self.id),
                Peer::Broker(crate::protocol::CONTROLLER_ID.saturating_add(voter)),
                0,
                Request::Raft(payload),
            ));
        }
    }

    /// The metadata changed: publish it once its records are committed
    /// (at once with a local store), then answer.
    fn change_made(
        &mut self,
        now: Millis,
        answer: Option<(ReplyTo, Result<Response>)>,
        also_to: Option<NodeId>,
    ) {
        self.after_commit(now, answer, Some(also_to), None);
    }

    /// An answer (and a publish, if `publish` says to whom besides the live
    /// brokers; or a push of the current metadata to `push_to`) made from
    /// the current metadata: sent at once, unless records of it are not
    /// committed yet (a quorum's active controller between a change and its
    /// commit), which it then waits for.
    fn after_commit(
        &mut self,
        now: Millis,
        answer: Option<(ReplyTo, Result<Response>)>,
        publish: Option<Option<NodeId>>,
        push_to: Option<NodeId>,
    ) {
        let Some(controller) = self.controller.as_ref() else {
            return self.answer(answer);
        };
        let store = controller.store();
        let deferred = Deferred {
            end: store.end_offset(),
            metadata: controller.metadata(),
            answer,
            publish,
            push_to,
        };
        if self.deferred.is_empty()
            && (store.committed_offset() >= deferred.end
                || planted(PlantedBug::MetadataPublishedBeforeCommitted))
        {
            self.release(now, deferred);
        } else {
            self.deferred.push_back(deferred);
        }
    }

    /// Sends what waited for its records to commit.
    fn release(&mut self, now: Millis, deferred: Deferred) {
        match deferred.publish {
            Some(also_to) => self.publish(now, deferred.metadata, deferred.answer, also_to),
            None => {
                if let Some(broker) = deferred.push_to {
                    self.push(&deferred.metadata, broker, false);
                }
                self.answer(deferred.answer);
            }
        }
    }

    /// The current metadata (`None` once stopped).
    pub(crate) fn metadata(&self) -> Option<Arc<ClusterMetadata>> {
        self.controller.as_ref().map(Controller::metadata)
    }

    /// The quorum term in which this voter is the active controller
    /// (`None`: a standby, stopped, or not part of a quorum).
    #[cfg(feature = "sim")]
    pub(crate) fn active_term(&self) -> Option<u64> {
        self.next_quorum_tick?;
        let store = self.controller.as_ref()?.store();
        store.is_active().then(|| store.term())
    }

    /// The newest metadata every live broker has (its publish ended: each
    /// answered the push, or the push timed out).
    pub(crate) fn published_metadata(&self) -> Option<Arc<ClusterMetadata>> {
        self.published.as_ref().map(|(_, m)| m.clone())
    }

    /// Publish `id` of `metadata` ended.
    fn published(&mut self, id: u64, metadata: Arc<ClusterMetadata>) {
        if self.published.as_ref().is_none_or(|(last, _)| *last < id) {
            self.published = Some((id, metadata));
        }
    }

    /// Handles a request to the controller, or a broker's answer to a push.
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        let reply = envelope.reply_to();
        match envelope.message {
            Message::Request(Request::Raft(payload)) => {
                if let Some(store) = self.store_mut()
                    && let Err(_e) = store.step(&payload, now)
                {
                    #[cfg(feature = "tracing")]
                    tracing::warn!(controller = self.id, error = %_e, "refused a quorum message");
                }
            }
            Message::Request(request) => self.handle_request(now, reply, request),
            Message::Response(response) => {
                let id = reply.correlation_id;
                if let Some(push) = self.pushes.remove(&id) {
                    let failed = match response {
                        Ok(Response::UpdateMetadata(failed)) => {
                            if let Some(p) = self.publishes.get_mut(&push.publish) {
                                p.failed.extend(failed);
                            }
                            false
                        }
                        Ok(_) => false,
                        Err(_) => true,
                    };
                    if failed {
                        // The broker may not hold what it was sent.
                        self.sent.remove(&push.broker);
                    }
                    if failed
                        && push.delta
                        && let Some(metadata) = self
                            .publishes
                            .get(&push.publish)
                            .map(|p| p.metadata.clone())
                    {
                        // A delta refused (or lost): the publish waits for
                        // the whole metadata to reach that broker instead.
                        let (again, _) = self.push(&metadata, push.broker, false);
                        if let Some(p) = self.publishes.get_mut(&push.publish) {
                            p.waiting.insert(again);
                        }
                        self.pushes.insert(
                            again,
                            PushSent {
                                delta: false,
                                ..push
                            },
                        );
                    }
                    self.push_answered(push.publish, id);
                }
            }
        }
        self.settle(now);
    }

    /// Fences brokers whose session expired and publishes the result;
    /// answers publishes whose brokers did not answer in time.
    pub(crate) fn handle_timeout(&mut self, now: Millis) {
        if let Some(at) = self.next_quorum_tick
            && now >= at
        {
            self.next_quorum_tick = Some(now + super::RAFT_TICK_MS);
            if let Some(store) = self.store_mut() {
                let _ = store.tick(now);
            }
            self.settle(now);
        }
        if now >= self.next_tick {
            self.next_tick = now + self.tick_ms;
            let ticked = self
                .controller
                .as_mut()
                .filter(|c| c.store().is_active())
                .map(|c| c.tick(now));
            if let Some(Ok(true)) = ticked {
                self.change_made(now, None, None);
            }
        }
        let overdue: Vec<u64> = self
            .publishes
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            if let Some(publish) = self.publishes.remove(&id) {
                self.pushes.retain(|_, p| p.publish != id);
                self.publish_ended(id, publish);
            }
        }
        self.settle(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        if self.controller.is_none() {
            return self.next_quorum_tick.filter(|_| self.standby.is_some());
        }
        let publishes = self.publishes.values().map(|p| p.deadline);
        publishes
            .chain([self.next_tick])
            .chain(self.next_quorum_tick)
            .min()
    }

    /// The next envelope to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// Stops and closes the metadata log. Calling it again does nothing.
    pub(crate) fn shutdown(&mut self) -> Result<()> {
        let standby = self.standby.take().map_or(Ok(()), |s| s.close());
        let active = self.controller.take().map_or(Ok(()), Controller::close);
        active.and(standby)
    }

    /// Stops at once; the metadata log is dropped, not closed.
    pub(crate) fn crash(&mut self) {
        self.controller = None;
        self.standby = None;
        self.deferred.clear();
        self.publishes.clear();
        self.pushes.clear();
        self.sent.clear();
        self.outbox.clear();
    }

    fn handle_request(&mut self, now: Millis, reply: ReplyTo, request: Request) {
        let Some(controller) = self.controller.as_mut() else {
            let stopped = Err(Error::NotController { broker: self.id });
            return self.answer(Some((reply, stopped)));
        };
        if !controller.store().is_active() {
            let standby = Err(Error::NotController { broker: self.id });
            return self.answer(Some((reply, standby)));
        }
        let before = controller.metadata();
        let mut push_to = None;
        let mut also_to = None;
        let response = match request {
            Request::Metadata(MetadataRequest { topics }) => {
                let m = &before;
                let topics = m
                    .topics
                    .values()
                    .filter(|t| {
                        topics
                            .as_ref()
                            .is_none_or(|names| names.iter().any(|n| **n == *t.name))
                    })
                    .map(|t| (**t).clone())
                    .collect();
                Ok(Response::Metadata(MetadataResponse {
                    version: m.version,
                    controller: m.controller,
                    brokers: m.brokers.clone(),
                    topics,
                }))
            }
            Request::CreateTopics(r) => Ok(Response::CreateTopics(TopicResults {
                topics: controller.create_topics_as(
                    r.topics,
                    matches!(reply.peer, Peer::Broker(_)),
                    now,
                ),
            })),
            Request::DeleteTopics(r) => Ok(Response::DeleteTopics(TopicResults {
                topics: controller.delete_topics(r.topics, now),
            })),
            Request::CreatePartitions(r) => Ok(Response::CreatePartitions(TopicResults {
                topics: controller.create_partitions(r.topics, now),
            })),
            Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                broker,
                metadata_version,
                want_shutdown,
            }) => controller.heartbeat(broker, want_shutdown, now).map(|_| {
                let m = controller.metadata();
                if want_shutdown {
                    // Fenced, so not among the brokers a publish reaches:
                    // it is told itself that it leads nothing now.
                    also_to = Some(broker);
                }
                if metadata_version < (m.controller_epoch, m.version) {
                    // The broker is behind: send it the metadata again.
                    push_to = Some(broker);
                }
                Response::BrokerHeartbeat(m.version)
            }),
            Request::AlterPartition(r) => Ok(Response::AlterPartition(
                controller.alter_partition(&r.proposal, now),
            )),
            Request::InitProducerId => Ok(Response::InitProducerId(
                controller.allocate_producer_id(now),
            )),
            Request::AlterPartitionReassignments(r) => Ok(Response::AlterPartitionReassignments(
                controller.reassign(r.partitions, now),
            )),
            Request::RegisterBroker(info) => {
                let itself = reply.peer == Peer::Broker(info.id);
                Ok(Response::RegisterBroker(
                    controller.register_broker(info, itself, now),
                ))
            }
            other => Err(Error::InvalidRequest {
                reason: format!("the controller does not serve {}", other.api_name()),
            }),
        };
        let after = controller.metadata();
        let answer = Some((reply, response));
        if (after.controller_epoch, after.version) != (before.controller_epoch, before.version) {
            self.change_made(now, answer, also_to);
        } else {
            self.after_commit(now, answer, None, push_to);
        }
    }

    /// Publishes the current metadata to every live broker, and to
    /// `also_to` (a broker that was just fenced at its own request);
    /// `answer` waits for their answers.
    fn publish(
        &mut self,
        now: Millis,
        after: Arc<ClusterMetadata>,
        answer: Option<(ReplyTo, Result<Response>)>,
        also_to: Option<NodeId>,
    ) {
        let id = self.next_publish;
        self.next_publish += 1;
        let mut waiting = BTreeSet::new();
        let live = after.brokers.iter().map(|b| b.id);
        let targets: BTreeSet<NodeId> = live.chain(also_to).collect();
        for broker in targets {
            let (correlation_id, delta) = self.push(&after, broker, true);
            waiting.insert(correlation_id);
            self.pushes.insert(
                correlation_id,
                PushSent {
                    publish: id,
                    broker,
                    delta,
                },
            );
        }
        if waiting.is_empty() {
            self.published(id, after);
            self.answer(answer);
        } else {
            let deadline = now + self.publish_timeout_ms;
            self.publishes.insert(
                id,
                Publish {
                    metadata: after,
                    waiting,
                    answer,
                    deadline,
                    failed: Vec::new(),
                },
            );
        }
    }

    /// Sends `metadata` to `broker` — as a delta from what it was sent
    /// last, if `delta` allows and it was sent something of this controller
    /// epoch — and returns the push's correlation id and whether it went
    /// as a delta.
    fn push(
        &mut self,
        metadata: &Arc<ClusterMetadata>,
        broker: NodeId,
        delta: bool,
    ) -> (u64, bool) {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        let base = self
            .sent
            .get(&broker)
            .filter(|base| delta && base.controller_epoch == metadata.controller_epoch);
        let update = match base {
            Some(base) => UpdateMetadataRequest::delta(base, metadata),
            None => UpdateMetadataRequest::full(metadata.clone()),
        };
        let as_delta = update.delta_from.is_some();
        self.sent.insert(broker, metadata.clone());
        self.outbox.push_back(Envelope::request(
            Peer::Broker(self.id),
            Peer::Broker(broker),
            correlation_id,
            Request::UpdateMetadata(update),
        ));
        (correlation_id, as_delta)
    }

    /// A broker answered a push (however): the last answer of a publish
    /// releases the request's answer.
    fn push_answered(&mut self, publish: u64, correlation_id: u64) {
        let done = match self.publishes.get_mut(&publish) {
            Some(p) => {
                p.waiting.remove(&correlation_id);
                p.waiting.is_empty()
            }
            None => false,
        };
        if done && let Some(p) = self.publishes.remove(&publish) {
            self.publish_ended(publish, p);
        }
    }

    /// Publish `id` ended: its metadata is the published one, and the
    /// request that made it is answered. A topic created (or grown) whose
    /// replica a broker could not open fails with that broker's error:
    /// the topic exists, but that replica is not served until a later
    /// metadata change opens it or the topic is deleted.
    fn publish_ended(&mut self, id: u64, publish: Publish) {
        self.published(id, publish.metadata);
        let mut answer = publish.answer;
        if let Some((
            _,
            Ok(Response::CreateTopics(results) | Response::CreatePartitions(results)),
        )) = &mut answer
        {
            for (name, result) in &mut results.topics {
                let failure = publish.failed.iter().find(|(tp, _)| tp.topic() == name);
                if let (Ok(()), Some((_, e))) = (&result, failure) {
                    *result = Err(e.clone());
                }
            }
        }
        self.answer(answer);
    }

    fn answer(&mut self, answer: Option<(ReplyTo, Result<Response>)>) {
        if let Some((reply, response)) = answer {
            let answer = reply.answer(Peer::Broker(self.id), response);
            self.outbox.push_back(answer);
        }
    }
}
