//! The admin client's state machine: the requests an [`Admin`](super::Admin)
//! call is waiting for, where each goes (a node, the controller, a group's
//! coordinator, the partitions' leaders), how each is retried, and the
//! metadata they share. No thread, lock or clock: the handle feeds it
//! answers and the time and sends what it wants sent.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use super::coordinator::CoordinatorLink;
use super::metadata::{MetadataCache, queue_request};
use super::offsets::{FoundOffsets, OffsetQuery};
use crate::error::{Error, Result};
use crate::protocol::{
    CONTROLLER_ID, Envelope, Message, NodeId, OffsetSpec, Peer, Request, Response, TopicMetadata,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// An admin request, known by this number until it completes.
pub(crate) type AdminOp = u64;

/// What an admin call asks.
#[derive(Debug)]
pub(crate) enum AdminAsk {
    /// Fresh metadata (a refresh asked for now).
    Metadata,
    /// `request` to one node, once.
    Node(NodeId, Request),
    /// `request` to the controller, retried (after a metadata refresh)
    /// while retriable; its answer is followed by a metadata refresh.
    Controller(Request),
    /// `request` to the group's coordinator, retried while it moves.
    Coordinator(String, Request),
    /// Offsets at the partitions' leaders.
    Offsets(Vec<(TopicPartition, OffsetSpec)>),
}

/// The cluster as a metadata answer showed it.
#[derive(Debug, Clone)]
pub(crate) struct MetadataView {
    pub(crate) brokers: Vec<NodeId>,
    pub(crate) topics: BTreeMap<Arc<str>, Arc<TopicMetadata>>,
}

/// How an admin request ended well.
#[derive(Debug)]
pub(crate) enum AdminAnswer {
    Metadata(MetadataView),
    Response(Response),
    Offsets(FoundOffsets),
}

/// A request to the controller.
#[derive(Debug)]
struct ControllerCall {
    request: Request,
    not_before: Millis,
    /// The attempt in flight (its correlation id).
    sent: Option<u64>,
    /// The answer, held until the refresh numbered here succeeds.
    answer: Option<(Response, u64)>,
    /// The refresh that should name the controller, while none is known.
    refresh: Option<u64>,
    last_error: Option<Error>,
    /// Whether the last known controller was tried since the brokers
    /// said there is none (it may be back before they have heard from it).
    tried_last_known: bool,
}

/// What [`AdminCore::advance`] does for one op.
enum Step {
    Nothing,
    Complete(Result<AdminAnswer>),
    Metadata,
    SendToController(NodeId, Request),
    RefreshForController,
}

/// What an op waits for.
#[derive(Debug)]
enum Pending {
    /// A metadata refresh numbered at least this.
    Metadata(u64),
    /// The answer to this request.
    Node,
    Controller(ControllerCall),
    /// The coordinator link of this group, and its op.
    Coordinator(String, u64),
    Offsets(OffsetQuery),
}

#[derive(Debug)]
struct Op {
    deadline: Millis,
    pending: Pending,
}

/// The admin client's state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct AdminCore {
    peer: Peer,
    bootstrap: Vec<NodeId>,
    pub(crate) metadata: MetadataCache,
    ops: BTreeMap<AdminOp, Op>,
    next_op: AdminOp,
    /// Requests to single nodes and controllers in flight: op and deadline.
    in_flight: BTreeMap<u64, (AdminOp, Millis)>,
    links: BTreeMap<String, CoordinatorLink>,
    completions: VecDeque<(AdminOp, Result<AdminAnswer>)>,
    request_timeout: Millis,
    retry_backoff: Millis,
    metadata_max_age: Millis,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
}

impl AdminCore {
    /// An admin core for client `peer`, asking `bootstrap` first.
    pub(crate) fn new(
        peer: Peer,
        bootstrap: Vec<NodeId>,
        request_timeout: Millis,
        retry_backoff: Millis,
    ) -> Self {
        Self {
            peer,
            metadata: MetadataCache::new(bootstrap.clone()),
            bootstrap,
            ops: BTreeMap::new(),
            next_op: 0,
            in_flight: BTreeMap::new(),
            links: BTreeMap::new(),
            completions: VecDeque::new(),
            request_timeout,
            retry_backoff,
            // Admin calls ask for fresh metadata when they need it.
            metadata_max_age: Millis::MAX / 4,
            next_correlation_id: 0,
            outbox: VecDeque::new(),
        }
    }

    /// Starts `ask`, failing at `deadline`.
    pub(crate) fn submit(&mut self, now: Millis, ask: AdminAsk, deadline: Millis) -> AdminOp {
        let id = self.next_op;
        self.next_op += 1;
        let pending = match ask {
            AdminAsk::Metadata => Pending::Metadata(self.refresh()),
            AdminAsk::Node(node, request) => {
                let correlation_id = self.send(node, request);
                let until = deadline.min(now + self.request_timeout);
                self.in_flight.insert(correlation_id, (id, until));
                Pending::Node
            }
            AdminAsk::Controller(request) => Pending::Controller(ControllerCall {
                request,
                not_before: now,
                sent: None,
                answer: None,
                refresh: None,
                last_error: None,
                tried_last_known: false,
            }),
            AdminAsk::Coordinator(group, request) => {
                let (timeout, backoff) = (self.request_timeout, self.retry_backoff);
                let bootstrap = &self.bootstrap;
                let link = self.links.entry(group.clone()).or_insert_with(|| {
                    CoordinatorLink::new(group.clone(), bootstrap.clone(), timeout, backoff)
                });
                let link_op = link.submit(now, request, deadline, true);
                Pending::Coordinator(group, link_op)
            }
            AdminAsk::Offsets(wanted) => Pending::Offsets(OffsetQuery::new(
                wanted,
                now,
                deadline,
                self.request_timeout,
            )),
        };
        self.ops.insert(id, Op { deadline, pending });
        self.handle_timeout(now);
        id
    }

    /// The next finished op.
    pub(crate) fn poll_completion(&mut self) -> Option<(AdminOp, Result<AdminAnswer>)> {
        self.completions.pop_front()
    }

    /// Asks for a metadata refresh sent from now on; returns the number it
    /// will have.
    fn refresh(&mut self) -> u64 {
        self.metadata.want_refresh_now();
        self.metadata.sent + 1
    }

    fn send(&mut self, node: NodeId, request: Request) -> u64 {
        queue_request(
            self.peer,
            &mut self.next_correlation_id,
            &mut self.outbox,
            node,
            request,
        )
    }

    fn complete(&mut self, id: AdminOp, outcome: Result<AdminAnswer>) {
        if self.ops.remove(&id).is_some() {
            self.completions.push_back((id, outcome));
        }
    }

    fn view(&self) -> MetadataView {
        MetadataView {
            brokers: self.metadata.brokers.clone(),
            topics: self.metadata.topics.clone(),
        }
    }

    /// Handles an answer to one of the core's requests.
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        let Message::Response(response) = envelope.message else {
            return; // an admin client serves no requests
        };
        let id = envelope.correlation_id;
        if !self.metadata.handle_response(now, id, &response) {
            self.route(now, id, response);
        }
        self.handle_timeout(now);
    }

    fn route(&mut self, now: Millis, correlation_id: u64, response: Result<Response>) {
        if let Some((op, _)) = self.in_flight.remove(&correlation_id) {
            return self.answered(now, op, response);
        }
        let mut response = Some(response);
        for link in self.links.values_mut() {
            if let Some(r) = response.take() {
                response = link.handle_response(now, correlation_id, r);
            }
        }
        if let Some(response) = response {
            let metadata = &mut self.metadata;
            if let Some(Op {
                pending: Pending::Offsets(query),
                ..
            }) = self
                .ops
                .values_mut()
                .find(|op| matches!(&op.pending, Pending::Offsets(q) if q.owns(correlation_id)))
            {
                query.handle_response(now, correlation_id, response, metadata);
            }
        }
    }

    /// An answer to a node or controller request of op `id`.
    fn answered(&mut self, now: Millis, id: AdminOp, response: Result<Response>) {
        let Some(op) = self.ops.get(&id) else {
            return;
        };
        if !matches!(op.pending, Pending::Controller(_)) {
            return self.complete(id, response.map(AdminAnswer::Response));
        }
        let retry_at = now + self.retry_backoff;
        let retry = match &response {
            Err(e) => e.is_retriable() && retry_at < op.deadline,
            Ok(_) => false,
        };
        if response.is_err() && !retry {
            return self.complete(id, response.map(AdminAnswer::Response));
        }
        // An answer waits for metadata that shows the change; a retriable
        // failure for metadata that may name another controller.
        let target = self.refresh();
        let Some(Op {
            pending: Pending::Controller(call),
            ..
        }) = self.ops.get_mut(&id)
        else {
            return;
        };
        call.sent = None;
        match response {
            Ok(answer) => call.answer = Some((answer, target)),
            Err(e) => {
                call.not_before = retry_at;
                call.refresh = None;
                call.last_error = Some(e);
            }
        }
    }

    /// Does what is due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Millis) {
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for correlation_id in overdue {
            let timed_out = Err(Error::RequestTimedOut {
                operation: "admin request",
                timeout_ms: self.request_timeout as u64,
            });
            self.route(now, correlation_id, timed_out);
        }
        let Self {
            peer,
            metadata,
            next_correlation_id,
            outbox,
            links,
            ops,
            ..
        } = self;
        metadata.poll(
            now,
            self.metadata_max_age,
            self.retry_backoff,
            self.request_timeout,
            |node, request| queue_request(*peer, next_correlation_id, outbox, node, request),
        );
        for link in links.values_mut() {
            link.poll(now, |node, request| {
                queue_request(*peer, next_correlation_id, outbox, node, request)
            });
        }
        for op in ops.values_mut() {
            if let Pending::Offsets(query) = &mut op.pending {
                query.poll(now, metadata, |node, request| {
                    queue_request(*peer, next_correlation_id, outbox, node, request)
                });
            }
        }
        let mut finished = Vec::new();
        for link in links.values_mut() {
            while let Some(done) = link.take_done() {
                finished.push((link.group().to_string(), done));
            }
        }
        for (group, (link_op, outcome)) in finished {
            let op = self.ops.iter().find_map(|(&id, op)| match &op.pending {
                Pending::Coordinator(g, o) if *g == group && *o == link_op => Some(id),
                _ => None,
            });
            if let Some(id) = op {
                self.complete(id, outcome.map(AdminAnswer::Response));
            }
        }
        self.advance(now);
    }

    /// Moves every op on: finished lookups and refreshes complete, the
    /// controller calls that may go are sent, overdue ops fail.
    fn advance(&mut self, now: Millis) {
        let ids: Vec<AdminOp> = self.ops.keys().copied().collect();
        for id in ids {
            let last_success = self.metadata.last_success;
            let controller = self.metadata.controller;
            // A broker with metadata that names no controller has not heard
            // from one for a session: nothing to wait for, once the last
            // known controller was tried (it may be back already).
            let no_controller = controller.is_none() && self.metadata.version() > 0;
            let last_known = self.metadata.last_known_controller;
            let Some(op) = self.ops.get_mut(&id) else {
                continue;
            };
            let deadline = op.deadline;
            let step = match &mut op.pending {
                Pending::Metadata(target) if last_success >= *target => Step::Metadata,
                Pending::Offsets(query) => query.take_outcome().map_or(Step::Nothing, |o| {
                    Step::Complete(o.map(AdminAnswer::Offsets))
                }),
                Pending::Controller(call) => match call.answer.take() {
                    Some((answer, target)) if last_success >= target || now >= deadline => {
                        Step::Complete(Ok(AdminAnswer::Response(answer)))
                    }
                    Some(held) => {
                        call.answer = Some(held);
                        Step::Nothing
                    }
                    None if call.sent.is_some() || call.not_before > now || now >= deadline => {
                        Step::Nothing
                    }
                    None => match controller {
                        Some(node) => Step::SendToController(node, call.request.clone()),
                        None if no_controller && !call.tried_last_known => {
                            // The last controller named, or the in-process
                            // one's well-known id (as the producer asks).
                            call.tried_last_known = true;
                            let node = last_known.unwrap_or(CONTROLLER_ID);
                            Step::SendToController(node, call.request.clone())
                        }
                        None if no_controller
                            && call.refresh.is_some_and(|t| last_success >= t) =>
                        {
                            Step::Complete(Err(Error::ControllerNotAvailable {
                                reason: "the brokers have not heard from a controller for a \
                                         session"
                                    .into(),
                            }))
                        }
                        None if call.refresh.is_none_or(|t| last_success >= t) => {
                            Step::RefreshForController
                        }
                        None => Step::Nothing,
                    },
                },
                _ => Step::Nothing,
            };
            match step {
                Step::Nothing => {}
                Step::Complete(outcome) => self.complete(id, outcome),
                Step::Metadata => {
                    let view = self.view();
                    self.complete(id, Ok(AdminAnswer::Metadata(view)));
                }
                Step::SendToController(node, request) => {
                    let correlation_id = self.send(node, request);
                    let until = deadline.min(now + self.request_timeout);
                    self.in_flight.insert(correlation_id, (id, until));
                    if let Some(call) = self.controller_call(id) {
                        call.sent = Some(correlation_id);
                    }
                }
                Step::RefreshForController => {
                    let target = self.refresh();
                    if let Some(call) = self.controller_call(id) {
                        call.refresh = Some(target);
                    }
                }
            }
        }
        // What is still open past its deadline fails (requests in flight
        // fail when their own deadline passes).
        let overdue: Vec<AdminOp> = self
            .ops
            .iter()
            .filter(|(_, op)| op.deadline <= now && !Self::ends_itself(op))
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            let e = match self.ops.get_mut(&id).map(|op| &mut op.pending) {
                Some(Pending::Controller(call)) => call.last_error.take(),
                Some(Pending::Metadata(_)) => self.metadata.last_error.clone(),
                _ => None,
            };
            let e = e.unwrap_or(Error::RequestTimedOut {
                operation: "admin request",
                timeout_ms: self.request_timeout as u64,
            });
            self.complete(id, Err(e));
        }
    }

    fn controller_call(&mut self, id: AdminOp) -> Option<&mut ControllerCall> {
        match self.ops.get_mut(&id) {
            Some(Op {
                pending: Pending::Controller(call),
                ..
            }) => Some(call),
            _ => None,
        }
    }

    /// Whether `op` ends by its own means at its deadline (a request in
    /// flight times out, a lookup or coordinator request fails).
    fn ends_itself(op: &Op) -> bool {
        match &op.pending {
            Pending::Node => true,
            Pending::Controller(call) => call.sent.is_some(),
            // These end themselves at their deadline.
            Pending::Coordinator(..) | Pending::Offsets(_) => true,
            Pending::Metadata(_) => false,
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let flights = self.in_flight.values().map(|(_, deadline)| *deadline);
        let metadata = [
            self.metadata.due(self.metadata_max_age, self.retry_backoff),
            self.metadata.deadline(),
        ];
        let links = self
            .links
            .values()
            .filter_map(CoordinatorLink::poll_timeout);
        let ops = self.ops.values().filter_map(|op| match &op.pending {
            Pending::Offsets(query) => query.poll_timeout(),
            // (while it waits for a refresh, the answer moves it on)
            Pending::Controller(call)
                if call.sent.is_none() && call.answer.is_none() && call.refresh.is_none() =>
            {
                Some(call.not_before.min(op.deadline))
            }
            Pending::Metadata(_) | Pending::Controller(_) => Some(op.deadline),
            _ => None,
        });
        flights
            .chain(metadata.into_iter().flatten())
            .chain(links)
            .chain(ops)
            .min()
    }

    /// The next request to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{CreateTopicsRequest, MetadataResponse, TopicResults};

    fn metadata() -> Result<Response> {
        Ok(Response::Metadata(MetadataResponse {
            version: 1,
            controller: Some(9),
            brokers: vec![crate::protocol::BrokerInfo {
                id: 0,
                rack: None,
                endpoint: None,
            }],
            topics: vec![],
        }))
    }

    fn answer(core: &mut AdminCore, now: Millis, id: u64, response: Result<Response>) {
        let envelope = Envelope {
            from: Peer::Broker(0),
            to: Peer::Client(1),
            correlation_id: id,
            message: Message::Response(response),
        };
        core.handle_message(now, envelope);
    }

    fn sent(core: &mut AdminCore) -> Vec<(u64, &'static str)> {
        std::iter::from_fn(|| core.poll_transmit())
            .map(|e| (e.correlation_id, e.message.api_name()))
            .collect()
    }

    #[test]
    fn a_controller_answer_before_the_refresh_in_flight_still_gets_a_later_refresh() {
        let mut core = AdminCore::new(Peer::Client(1), vec![0], 30_000, 100);
        let op = core.submit(
            0,
            AdminAsk::Controller(Request::CreateTopics(CreateTopicsRequest {
                topics: vec![],
            })),
            60_000,
        );
        core.handle_timeout(0);
        assert_eq!(sent(&mut core), [(0, "Metadata")]);
        answer(&mut core, 1, 0, metadata());
        let out = sent(&mut core);
        assert_eq!(out, [(1, "Metadata"), (2, "CreateTopics")]);
        // The controller answers first, then the refresh that left with it.
        answer(
            &mut core,
            2,
            2,
            Ok(Response::CreateTopics(TopicResults { topics: vec![] })),
        );
        answer(&mut core, 2, 1, metadata());
        let out = sent(&mut core);
        assert_eq!(out, [(3, "Metadata")], "a refresh after the change");
        answer(&mut core, 3, 3, metadata());
        assert!(std::iter::from_fn(|| core.poll_completion()).any(|(id, _)| id == op));
    }
}
