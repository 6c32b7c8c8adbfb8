//! The group member's state machine: a consumer's side of its group
//! (KIP-848), with no thread, lock or clock of its own.
//!
//! The core heartbeats while subscribed (every `heartbeat_interval_ms`, or
//! at once when the application asks), learns its member id, epoch and
//! target assignment from the answers, and keeps what the application
//! reconciled (partitions it holds, the assignment it acknowledged). It also
//! enforces the member's own limits: a member that has not polled for
//! `max_poll_interval_ms` leaves the group, and one that has not reached its
//! coordinator for `session_timeout_ms` (or could not give up revoked
//! partitions in time) drops its partitions as lost, always before the
//! coordinator could give them to someone else. Commits and committed-offset
//! lookups go to the coordinator through the same core.
//!
//! The application applies changes itself (see
//! [`changes`](MemberCore::changes)): lost partitions first, then revoked
//! ones, then assigned ones; the handle calls the rebalance listener in
//! between.

use std::collections::{BTreeSet, VecDeque};

use super::coordinator::{CoordinatorLink, OpId, coordinator_moved};
use super::metadata::queue_request;
use crate::error::{Error, Result};
use crate::protocol::{
    Envelope, GroupHeartbeatRequest, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, Message, NodeId,
    OffsetAndMetadata, OffsetCommitRequest, OffsetFetchRequest, Peer, Request, Response,
    STATIC_LEAVE_EPOCH, Subscription,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// While a member is still receiving partitions, it heartbeats at least
/// this often (ms) so that it takes them soon after they are released.
const RECONCILING_HEARTBEAT_MS: Millis = 5;

/// A member's time limits (ms).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) session_timeout: Millis,
    pub(crate) heartbeat_interval: Millis,
    pub(crate) max_poll_interval: Millis,
}

impl Limits {
    /// How long the coordinator may hold a heartbeat with nothing new. The
    /// member counts its session from the last answered heartbeat's send, so
    /// an interval plus a hold must stay well inside the session.
    fn max_hold(&self) -> Millis {
        let spare = (self.session_timeout - self.heartbeat_interval).max(0) / 2;
        self.heartbeat_interval.min(spare)
    }

    /// Wait before heartbeating again after the coordinator could not be
    /// reached.
    fn backoff(&self) -> Millis {
        (self.heartbeat_interval / 4).clamp(5, 100)
    }
}

/// Who the member is and how it talks to its coordinator.
#[derive(Debug, Clone)]
pub(crate) struct MemberConfig {
    pub(crate) group: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) client_id: String,
    pub(crate) assignor: String,
    pub(crate) limits: Limits,
    pub(crate) request_timeout: Millis,
    pub(crate) retry_backoff: Millis,
}

/// What the application must apply at its next poll.
#[derive(Debug)]
pub(crate) struct GroupChanges {
    /// Membership ended for good: drop everything and fail with this.
    pub(crate) fatal: Option<Error>,
    /// Everything held is lost: drop it first.
    pub(crate) lost: bool,
    /// The newest assignment not reconciled yet: (id, partitions).
    pub(crate) target: Option<(u64, BTreeSet<TopicPartition>)>,
    /// The membership the changes belong to (see
    /// [`MemberCore::hold`]).
    pub(crate) incarnation: u64,
}

/// A heartbeat in flight.
#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    op: OpId,
    sent: Millis,
    incarnation: u64,
}

/// A group member's state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct MemberCore {
    peer: Peer,
    config: MemberConfig,
    link: CoordinatorLink,
    subscription: Option<Subscription>,
    member_id: String,
    epoch: i32,
    /// Partitions the application holds.
    owned: BTreeSet<TopicPartition>,
    /// The assignment id the application reconciled last.
    acked: u64,
    /// The newest assignment not reconciled yet: (id, partitions).
    target: Option<(u64, BTreeSet<TopicPartition>)>,
    /// Everything owned is lost (removed from the group); the application
    /// drops it at its next poll.
    lost: bool,
    /// Why the partitions were lost, until the application drops them:
    /// commits of their positions fail with it.
    lost_because: Option<Error>,
    /// An error that ends membership (fenced instance, bad assignor).
    fatal: Option<Error>,
    last_poll: Millis,
    /// When the last answered heartbeat was sent.
    last_ok_sent: Option<Millis>,
    /// When the heartbeat that may have asked for a still-unfinished
    /// revocation was sent (the first one since the last answer).
    revocation_since: Option<Millis>,
    /// When the first heartbeat since the last answer was sent: any of the
    /// unanswered ones may have made the coordinator start a revocation.
    first_unanswered: Option<Millis>,
    next_heartbeat: Millis,
    heartbeat: Option<Heartbeat>,
    /// Bumped whenever membership restarts, so a late answer to an older
    /// heartbeat is ignored and a reconciliation of the old membership is
    /// abandoned.
    incarnation: u64,
    /// The application's requests (commits, lookups, a leave) in flight.
    requests: BTreeSet<OpId>,
    completions: VecDeque<(OpId, Result<Response>)>,
    /// Something the application must apply happened.
    changed: bool,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
}

impl MemberCore {
    /// A member of `config.group` that is not subscribed yet, asking
    /// `nodes` for its coordinator.
    pub(crate) fn new(peer: Peer, config: MemberConfig, nodes: Vec<NodeId>, now: Millis) -> Self {
        let link = CoordinatorLink::new(
            config.group.clone(),
            nodes,
            config.request_timeout,
            config.retry_backoff,
        );
        Self {
            peer,
            config,
            link,
            subscription: None,
            member_id: String::new(),
            epoch: JOIN_GROUP_EPOCH,
            owned: BTreeSet::new(),
            acked: 0,
            target: None,
            lost: false,
            lost_because: None,
            fatal: None,
            last_poll: now,
            last_ok_sent: None,
            revocation_since: None,
            first_unanswered: None,
            next_heartbeat: now,
            heartbeat: None,
            incarnation: 0,
            requests: BTreeSet::new(),
            completions: VecDeque::new(),
            changed: false,
            next_correlation_id: 0,
            outbox: VecDeque::new(),
        }
    }

    /// The group.
    pub(crate) fn group(&self) -> &str {
        self.link.group()
    }

    // ----- the application's calls -------------------------------------------

    /// Subscribes (or changes the subscription); the next heartbeat goes out
    /// at once.
    pub(crate) fn subscribe(&mut self, now: Millis, subscription: Subscription) {
        self.subscription = Some(subscription);
        self.last_poll = now;
        self.next_heartbeat = now;
        self.step(now);
    }

    /// Whether something the application must apply happened since the last
    /// call; clears the flag.
    pub(crate) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The member id and epoch (`("", -1)` outside the membership).
    pub(crate) fn identity(&self) -> (String, i32) {
        match self.subscription {
            Some(_) => (self.member_id.clone(), self.epoch),
            None => (String::new(), -1),
        }
    }

    /// Whether the member holds nothing any more at `now`: removed from the
    /// group, or past its own limits, even before its next poll applies it.
    pub(crate) fn holds_nothing(&self, now: Millis) -> bool {
        self.lost || self.expired(now)
    }

    /// What the application must apply now: marks the poll, and hands over
    /// a lost flag and the newest target (the fatal error stays).
    pub(crate) fn changes(&mut self, now: Millis) -> GroupChanges {
        self.last_poll = now;
        let lost = std::mem::take(&mut self.lost);
        if lost {
            self.owned.clear();
            self.lost_because = None;
        }
        GroupChanges {
            fatal: self.fatal.clone(),
            lost,
            target: if self.fatal.is_some() {
                None
            } else {
                self.target.take()
            },
            incarnation: self.incarnation,
        }
    }

    /// The application gave these partitions up.
    pub(crate) fn release(&mut self, partitions: &[TopicPartition]) {
        self.owned.retain(|tp| !partitions.contains(tp));
    }

    /// The application could not finish reconciling `target` yet: it is
    /// applied again at the next poll, unless a newer one came.
    pub(crate) fn retry_target(&mut self, target: (u64, BTreeSet<TopicPartition>)) {
        self.target.get_or_insert(target);
    }

    /// The application takes `partitions` under the membership
    /// `incarnation`; false (and nothing taken) if that membership ended.
    pub(crate) fn hold(&mut self, incarnation: u64, partitions: &[TopicPartition]) -> bool {
        if incarnation != self.incarnation {
            return false;
        }
        self.owned.extend(partitions.iter().cloned());
        true
    }

    /// The application reconciled assignment `id` under membership
    /// `incarnation`; a heartbeat says so at once (unless one is in flight:
    /// then the next one, as soon as it is answered).
    pub(crate) fn reconciled(&mut self, now: Millis, incarnation: u64, id: u64) {
        if incarnation == self.incarnation {
            self.acked = id;
            self.next_heartbeat = now;
            self.step(now);
        }
    }

    /// The member id and epoch to commit as, or why the partitions the
    /// application holds are no longer this member's.
    pub(crate) fn commit_identity(&self, now: Millis) -> Result<(String, i32)> {
        if self.subscription.is_none() {
            return Ok((String::new(), -1));
        }
        if self.expired(now) {
            return Err(self.gone());
        }
        if let Some(e) = &self.lost_because {
            return Err(e.clone());
        }
        Ok((self.member_id.clone(), self.epoch))
    }

    /// Commits `offsets` as this member; completes by `deadline`. With
    /// `retry`, a commit that reached a coordinator that moved is sent again.
    pub(crate) fn commit(
        &mut self,
        now: Millis,
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
        deadline: Millis,
        retry: bool,
    ) -> Result<OpId> {
        let (member_id, member_epoch) = self.commit_identity(now)?;
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: self.group().to_string(),
            member_id,
            member_epoch,
            offsets,
        });
        Ok(self.submit(now, request, deadline, retry))
    }

    /// Looks up the group's committed offsets of `partitions` (all if
    /// `None`).
    pub(crate) fn fetch_committed(
        &mut self,
        now: Millis,
        partitions: Option<Vec<TopicPartition>>,
        deadline: Millis,
    ) -> OpId {
        let request = Request::OffsetFetch(OffsetFetchRequest {
            group: self.group().to_string(),
            partitions,
        });
        self.submit(now, request, deadline, true)
    }

    fn submit(&mut self, now: Millis, request: Request, deadline: Millis, retry: bool) -> OpId {
        let op = self.link.submit(now, request, deadline, retry);
        self.requests.insert(op);
        self.step(now);
        op
    }

    /// Ends the membership: the member leaves the group (a static one keeps
    /// its partitions until its session times out, waiting for its restart)
    /// and is no longer subscribed. Returns the leave request, if one went
    /// out, to wait for.
    pub(crate) fn leave(&mut self, now: Millis) -> Option<OpId> {
        let request = match (&self.subscription, self.epoch > 0) {
            (Some(subscription), true) => {
                let epoch = if self.config.instance_id.is_some() {
                    STATIC_LEAVE_EPOCH
                } else {
                    LEAVE_GROUP_EPOCH
                };
                Some(self.heartbeat_request(self.member_id.clone(), epoch, subscription.clone()))
            }
            _ => None,
        };
        self.subscription = None;
        self.member_id.clear();
        self.epoch = JOIN_GROUP_EPOCH;
        self.owned.clear();
        self.target = None;
        self.acked = 0;
        self.lost = false;
        self.lost_because = None;
        self.fatal = None;
        self.last_ok_sent = None;
        self.revocation_since = None;
        self.first_unanswered = None;
        self.heartbeat = None;
        self.incarnation += 1;
        let deadline = now + self.config.request_timeout;
        request.map(|request| self.submit(now, request, deadline, false))
    }

    /// The next finished request of the application's.
    pub(crate) fn poll_completion(&mut self) -> Option<(OpId, Result<Response>)> {
        self.completions.pop_front()
    }

    // ----- the driver's calls --------------------------------------------------

    /// Handles an answer to one of the core's requests.
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        let Message::Response(response) = envelope.message else {
            return; // a member serves no requests
        };
        let _ = self
            .link
            .handle_response(now, envelope.correlation_id, response);
        self.step(now);
    }

    /// Does what is due at `now`.
    pub(crate) fn handle_timeout(&mut self, now: Millis) {
        self.step(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let heartbeat = self.may_heartbeat().then_some(self.next_heartbeat);
        // The member's own limits (strictly past them: `expired` uses `>`).
        let limits = if self.epoch > 0 {
            let l = &self.config.limits;
            vec![
                Some(self.last_poll + l.max_poll_interval + 1),
                self.last_ok_sent.map(|at| at + l.session_timeout + 1),
                self.revocation_since.map(|at| at + l.max_poll_interval + 1),
                self.first_unanswered.map(|at| at + l.max_poll_interval + 1),
            ]
        } else {
            Vec::new()
        };
        [self.link.poll_timeout(), heartbeat]
            .into_iter()
            .chain(limits)
            .flatten()
            .min()
    }

    /// The next request to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    // ----- internals -----------------------------------------------------------

    /// Whether a heartbeat would go out once `next_heartbeat` comes.
    fn may_heartbeat(&self) -> bool {
        self.subscription.is_some()
            && self.fatal.is_none()
            && self.heartbeat.is_none()
            && !self.stalled(self.next_heartbeat)
    }

    fn stalled(&self, now: Millis) -> bool {
        now - self.last_poll > self.config.limits.max_poll_interval
    }

    /// Works off answers, limits, heartbeats and sends, until nothing moves.
    fn step(&mut self, now: Millis) {
        self.send_link(now);
        while let Some((op, result)) = self.link.take_done() {
            match self.heartbeat {
                Some(h) if h.op == op => {
                    self.heartbeat = None;
                    self.heartbeat_answered(now, h, result);
                }
                _ if self.requests.remove(&op) => self.completions.push_back((op, result)),
                // A heartbeat of an ended membership, or a leave nobody
                // waits for.
                _ => {}
            }
        }
        if self.expired(now) {
            // Drop everything before the coordinator could give it away;
            // leave if the poll loop stalled.
            let stalled = self.stalled(now);
            let leave = stalled.then(|| (self.member_id.clone(), self.subscription.clone()));
            let because = self.gone();
            self.reset(now, because);
            if let Some((member_id, Some(subscription))) = leave {
                let request = self.heartbeat_request(member_id, LEAVE_GROUP_EPOCH, subscription);
                let deadline = now + self.heartbeat_deadline();
                self.link.submit(now, request, deadline, false);
            }
        }
        if self.stalled(now) {
            // No heartbeat until the application polls again.
            self.next_heartbeat = self.next_heartbeat.max(now);
        }
        if self.may_heartbeat()
            && now >= self.next_heartbeat
            && let Some(subscription) = self.subscription.clone()
        {
            let request = self.heartbeat_request(self.member_id.clone(), self.epoch, subscription);
            self.first_unanswered.get_or_insert(now);
            let deadline = now + self.heartbeat_deadline();
            let op = self.link.submit(now, request, deadline, false);
            self.heartbeat = Some(Heartbeat {
                op,
                sent: now,
                incarnation: self.incarnation,
            });
        }
        self.send_link(now);
    }

    fn send_link(&mut self, now: Millis) {
        let Self {
            peer,
            link,
            next_correlation_id,
            outbox,
            ..
        } = self;
        link.poll(now, |node, request| {
            queue_request(*peer, next_correlation_id, outbox, node, request)
        });
    }

    fn heartbeat_deadline(&self) -> Millis {
        self.config
            .limits
            .session_timeout
            .min(self.config.request_timeout)
    }

    fn heartbeat_request(
        &self,
        member_id: String,
        member_epoch: i32,
        subscription: Subscription,
    ) -> Request {
        let limits = &self.config.limits;
        let ms = |ms: Millis| ms.clamp(0, Millis::from(u32::MAX)) as u32;
        let leaving = member_epoch == LEAVE_GROUP_EPOCH || member_epoch == STATIC_LEAVE_EPOCH;
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: self.group().to_string(),
            member_id,
            member_epoch,
            group_instance_id: self.config.instance_id.clone(),
            client_id: self.config.client_id.clone(),
            subscription: Some(subscription),
            assignor: Some(self.config.assignor.clone()),
            owned: Some(if leaving {
                Vec::new()
            } else {
                self.owned.iter().cloned().collect()
            }),
            acked_assignment: if leaving { 0 } else { self.acked },
            session_timeout_ms: Some(ms(limits.session_timeout)),
            rebalance_timeout_ms: Some(ms(limits.max_poll_interval)),
            max_wait_ms: if member_epoch > 0 {
                ms(limits.max_hold())
            } else {
                0
            },
        })
    }

    fn heartbeat_answered(&mut self, now: Millis, sent: Heartbeat, result: Result<Response>) {
        if sent.incarnation != self.incarnation || self.subscription.is_none() {
            return;
        }
        match result {
            Ok(Response::GroupHeartbeat(response)) => {
                self.member_id = response.member_id;
                self.epoch = response.member_epoch;
                self.last_ok_sent = Some(sent.sent);
                // The coordinator may have asked for a revocation in any
                // heartbeat since the last answer: time it from the first.
                let asked_since = self
                    .first_unanswered
                    .take()
                    .unwrap_or(sent.sent)
                    .min(sent.sent);
                let assignment: BTreeSet<TopicPartition> =
                    response.assignment.into_iter().collect();
                if self.owned.is_subset(&assignment) {
                    self.revocation_since = None;
                } else {
                    self.revocation_since.get_or_insert(asked_since);
                }
                let changed = response.assignment_id != self.acked || assignment != self.owned;
                if changed {
                    self.target = Some((response.assignment_id, assignment));
                    self.changed = true;
                }
                // In step with the coordinator, the next heartbeat goes out at
                // once and the coordinator holds it until the group changes
                // (or for its interval): a long poll. With a new assignment
                // the application applies it first and then asks for a
                // heartbeat; while partitions are still coming, ask often.
                let quick = self
                    .config
                    .limits
                    .heartbeat_interval
                    .min(RECONCILING_HEARTBEAT_MS);
                self.next_heartbeat = if response.reconciling {
                    now + quick
                } else if !changed {
                    sent.sent + quick
                } else {
                    sent.sent + self.config.limits.heartbeat_interval
                };
            }
            Ok(other) => {
                self.fatal = Some(super::unexpected("ConsumerGroupHeartbeat", &other));
                self.changed = true;
            }
            Err(e @ (Error::UnknownMemberId { .. } | Error::FencedMemberEpoch { .. })) => {
                self.reset(now, e);
            }
            Err(e) if coordinator_moved(&e) => {
                self.next_heartbeat = now + self.config.limits.backoff();
            }
            Err(e) => {
                self.fatal = Some(e.clone());
                self.reset(now, e);
            }
        }
    }

    /// Ends the membership: what is owned is lost, and the next heartbeat
    /// joins afresh.
    fn reset(&mut self, now: Millis, because: Error) {
        self.lost |= !self.owned.is_empty() || self.target.is_some();
        if self.lost {
            self.lost_because = Some(because);
        }
        self.member_id.clear();
        self.epoch = JOIN_GROUP_EPOCH;
        self.target = None;
        self.acked = 0;
        self.last_ok_sent = None;
        self.revocation_since = None;
        self.first_unanswered = None;
        self.heartbeat = None;
        self.incarnation += 1;
        self.next_heartbeat = now;
        self.changed = true;
    }

    fn gone(&self) -> Error {
        Error::UnknownMemberId {
            group: self.group().to_string(),
            member_id: self.member_id.clone(),
        }
    }

    /// Whether the member's own limits say it no longer owns its partitions:
    /// always before the coordinator could give them away, because every
    /// clock here starts no later than the coordinator's.
    fn expired(&self, now: Millis) -> bool {
        let limits = &self.config.limits;
        let older = |at: Option<Millis>, limit| at.is_some_and(|at| now - at > limit);
        self.epoch > 0
            && (self.stalled(now)
                || older(self.last_ok_sent, limits.session_timeout)
                || older(self.revocation_since, limits.max_poll_interval)
                // An unanswered heartbeat may have started a revocation.
                || older(self.first_unanswered, limits.max_poll_interval))
    }
}
