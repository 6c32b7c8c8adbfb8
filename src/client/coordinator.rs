//! The way to a group's coordinator, without blocking: which broker
//! coordinates the group (asked with FindCoordinator, in turn, of the nodes
//! the client knows), and the requests waiting for it, each with its own
//! deadline. A request whose coordinator moved (or did not answer) is sent
//! again to the new one if its caller asked for retries, until its deadline.
//!
//! A [`CoordinatorLink`] is a piece of a client core: it numbers nothing
//! itself but sends through the core's `send`, and the core hands it every
//! answer first.

use std::collections::{BTreeMap, VecDeque};

use crate::error::{Error, Result};
use crate::protocol::{NodeId, Request, Response};
use crate::time::Millis;

/// A request handed to the link, known by this number until it completes.
pub(crate) type OpId = u64;

/// Whether `e` means "ask another broker who coordinates the group".
pub(crate) fn coordinator_moved(e: &Error) -> bool {
    matches!(
        e,
        Error::NotCoordinator { .. }
            | Error::CoordinatorNotAvailable { .. }
            | Error::CoordinatorLoadInProgress { .. }
            | Error::Network { .. }
            | Error::RequestTimedOut { .. }
    )
}

/// A request for the coordinator, from submission to completion.
#[derive(Debug)]
struct Op {
    request: Request,
    /// When it fails for good.
    deadline: Millis,
    /// Sent again to a new coordinator after a "moved" error.
    retry: bool,
    /// Not sent before this (a backoff after a failed attempt).
    not_before: Millis,
    /// The attempt in flight: its correlation id.
    sent: Option<u64>,
    /// Why the last attempt failed.
    last_error: Option<Error>,
}

/// What is in flight, by correlation id.
#[derive(Debug, Clone, Copy)]
enum Flight {
    Find { deadline: Millis },
    Op { op: OpId, deadline: Millis },
}

impl Flight {
    fn deadline(self) -> Millis {
        match self {
            Flight::Find { deadline } | Flight::Op { deadline, .. } => deadline,
        }
    }
}

/// A group's coordinator as a client core sees it; see the
/// [module docs](self).
#[derive(Debug)]
pub(crate) struct CoordinatorLink {
    group: String,
    /// Where FindCoordinator goes, in turn.
    nodes: Vec<NodeId>,
    next_node: usize,
    coordinator: Option<NodeId>,
    /// No FindCoordinator before this (after a round of failures).
    find_not_before: Millis,
    /// Why the last FindCoordinator failed.
    find_error: Option<Error>,
    ops: BTreeMap<OpId, Op>,
    next_op: OpId,
    in_flight: BTreeMap<u64, Flight>,
    done: VecDeque<(OpId, Result<Response>)>,
    request_timeout: Millis,
    retry_backoff: Millis,
}

impl CoordinatorLink {
    /// The link to `group`'s coordinator, found by asking `nodes`.
    pub(crate) fn new(
        group: String,
        nodes: Vec<NodeId>,
        request_timeout: Millis,
        retry_backoff: Millis,
    ) -> Self {
        Self {
            group,
            nodes,
            next_node: 0,
            coordinator: None,
            find_not_before: Millis::MIN,
            find_error: None,
            ops: BTreeMap::new(),
            next_op: 0,
            in_flight: BTreeMap::new(),
            done: VecDeque::new(),
            request_timeout,
            retry_backoff,
        }
    }

    /// The group.
    pub(crate) fn group(&self) -> &str {
        &self.group
    }

    /// Queues `request` for the coordinator. It completes (see
    /// [`take_done`](Self::take_done)) with the coordinator's answer, or
    /// with the last error by `deadline`; with `retry`, an answer saying the
    /// coordinator moved sends it again to the new one.
    pub(crate) fn submit(
        &mut self,
        now: Millis,
        request: Request,
        deadline: Millis,
        retry: bool,
    ) -> OpId {
        let id = self.next_op;
        self.next_op += 1;
        self.ops.insert(
            id,
            Op {
                request,
                deadline,
                retry,
                not_before: now,
                sent: None,
                last_error: None,
            },
        );
        id
    }

    /// A finished request and its outcome.
    pub(crate) fn take_done(&mut self) -> Option<(OpId, Result<Response>)> {
        self.done.pop_front()
    }

    /// Takes the answer to request `correlation_id` if it is the link's;
    /// otherwise gives it back.
    pub(crate) fn handle_response(
        &mut self,
        now: Millis,
        correlation_id: u64,
        response: Result<Response>,
    ) -> Option<Result<Response>> {
        let Some(flight) = self.in_flight.remove(&correlation_id) else {
            return Some(response);
        };
        match flight {
            Flight::Find { .. } => self.found(now, response),
            Flight::Op { op, .. } => self.answered(now, op, response),
        }
        None
    }

    fn found(&mut self, now: Millis, response: Result<Response>) {
        match response {
            Ok(Response::FindCoordinator(node)) => {
                self.coordinator = Some(node);
                self.find_error = None;
            }
            // The group itself is wrong: no node will find it.
            Err(e @ Error::InvalidGroupId { .. }) => self.fail_waiting(e),
            // Anything else (a node that is not a broker, or not ready, or
            // gone): ask the next one.
            Ok(_) | Err(_) => {
                let e = match response {
                    Ok(other) => super::unexpected("FindCoordinator", &other),
                    Err(e) => e,
                };
                // Ask the next node; after a whole round, back off.
                self.next_node = self.next_node.wrapping_add(1);
                if self.next_node.is_multiple_of(self.nodes.len().max(1)) {
                    self.find_not_before = now + self.retry_backoff;
                }
                self.find_error = Some(e);
            }
        }
    }

    /// Fails every request not sent yet with `e` (the group cannot be
    /// found at all).
    fn fail_waiting(&mut self, e: Error) {
        let waiting: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.sent.is_none())
            .map(|(&id, _)| id)
            .collect();
        for id in waiting {
            self.ops.remove(&id);
            self.done.push_back((id, Err(e.clone())));
        }
    }

    fn answered(&mut self, now: Millis, id: OpId, response: Result<Response>) {
        let Some(op) = self.ops.get_mut(&id) else {
            return;
        };
        op.sent = None;
        if let Err(e) = &response
            && coordinator_moved(e)
        {
            self.coordinator = None;
            if op.retry && now < op.deadline {
                op.not_before = now + self.retry_backoff;
                op.last_error = Some(e.clone());
                return;
            }
        }
        self.ops.remove(&id);
        self.done.push_back((id, response));
    }

    /// Does what is due at `now`: fails what is overdue, finds the
    /// coordinator when a request waits for it, and sends the requests that
    /// may go, each through `send` (which returns the correlation id).
    pub(crate) fn poll(&mut self, now: Millis, mut send: impl FnMut(NodeId, Request) -> u64) {
        let overdue: Vec<(u64, Flight)> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline() <= now)
            .map(|(&id, &f)| (id, f))
            .collect();
        for (id, flight) in overdue {
            let operation = match flight {
                Flight::Find { .. } => "FindCoordinator",
                Flight::Op { op, .. } => self.ops.get(&op).map_or("", |o| o.request.api_name()),
            };
            let timed_out = Err(Error::RequestTimedOut {
                operation,
                timeout_ms: self.request_timeout as u64,
            });
            self.handle_response(now, id, timed_out);
        }
        // Requests past their deadline and not in flight fail.
        let expired: Vec<OpId> = self
            .ops
            .iter()
            .filter(|(_, op)| op.sent.is_none() && op.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            if let Some(op) = self.ops.remove(&id) {
                let e = op.last_error.or_else(|| self.find_error.clone()).unwrap_or(
                    Error::RequestTimedOut {
                        operation: op.request.api_name(),
                        timeout_ms: self.request_timeout as u64,
                    },
                );
                self.done.push_back((id, Err(e)));
            }
        }
        let waiting = self
            .ops
            .values()
            .any(|op| op.sent.is_none() && op.not_before <= now);
        if !waiting {
            return;
        }
        let Some(coordinator) = self.coordinator else {
            let finding = self
                .in_flight
                .values()
                .any(|f| matches!(f, Flight::Find { .. }));
            if !finding && now >= self.find_not_before && !self.nodes.is_empty() {
                let node = self.nodes[self.next_node % self.nodes.len()];
                let id = send(node, Request::FindCoordinator(self.group.clone()));
                let deadline = now + self.request_timeout;
                self.in_flight.insert(id, Flight::Find { deadline });
            }
            return;
        };
        for (&id, op) in self.ops.iter_mut() {
            if op.sent.is_some() || op.not_before > now {
                continue;
            }
            let correlation_id = send(coordinator, op.request.clone());
            op.sent = Some(correlation_id);
            let deadline = op.deadline.min(now + self.request_timeout);
            self.in_flight
                .insert(correlation_id, Flight::Op { op: id, deadline });
        }
    }

    /// When [`poll`](Self::poll) next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let flights = self.in_flight.values().map(|f| f.deadline());
        let finding = self
            .in_flight
            .values()
            .any(|f| matches!(f, Flight::Find { .. }));
        let ops = self.ops.values().filter(|op| op.sent.is_none()).map(|op| {
            let ready = match self.coordinator {
                Some(_) => op.not_before,
                // The answer to the lookup in flight moves it on.
                None if finding => Millis::MAX,
                None => op.not_before.max(self.find_not_before),
            };
            ready.min(op.deadline)
        });
        flights.chain(ops).min()
    }
}
