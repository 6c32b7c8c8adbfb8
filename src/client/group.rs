//! A consumer's side of its group: finding the coordinator, committing and
//! fetching offsets, and (after `subscribe`) membership.
//!
//! Membership runs on one background heartbeat thread per subscribed
//! consumer, as in Kafka: it joins, heartbeats every `heartbeat_interval_ms`
//! with the partitions the consumer holds, and hands each new assignment to
//! the application thread, which applies it inside `poll` (revoking first,
//! calling the [`RebalanceListener`], then taking new partitions). The
//! thread also enforces the member's own limits: a consumer that has not
//! polled for `max_poll_interval_ms` leaves the group, and one that has not
//! reached its coordinator for `session_timeout_ms` (or could not give up
//! revoked partitions in time) drops its partitions as lost, always before
//! the coordinator could give them to someone else.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::ConsumerConfig;
use super::core::{ClientCore, unexpected};
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::protocol::{
    CommittedOffsets, GroupHeartbeatRequest, JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, NodeId,
    OffsetCommitRequest, OffsetFetchRequest, Request, Response, STATIC_LEAVE_EPOCH, Subscription,
};
use crate::topic::TopicPartition;

/// While a member is still receiving partitions, it heartbeats at least
/// this often (ms) so that it takes them soon after they are released.
const RECONCILING_HEARTBEAT_MS: u64 = 5;

/// Called by [`Consumer::poll`](super::Consumer::poll) when the group moves
/// partitions: revoked (or lost) partitions first, then assigned ones.
///
/// With eager assignors every partition is revoked at each rebalance and the
/// new assignment follows; with `cooperative-sticky` only the partitions that
/// move are revoked. Commit what was processed in `on_partitions_revoked`
/// (auto-commit already did, before calling it); lost partitions belong to
/// someone else already, so committing for them fails.
///
/// ```
/// use ferrolog::client::{Consumer, RebalanceListener};
/// use ferrolog::TopicPartition;
///
/// struct CommitOnRevoke;
///
/// impl RebalanceListener<String, String> for CommitOnRevoke {
///     fn on_partitions_revoked(&mut self, consumer: &mut Consumer<String, String>, _: &[TopicPartition]) {
///         let _ = consumer.commit_sync();
///     }
/// }
/// ```
pub trait RebalanceListener<K, V>: Send {
    /// These partitions are being taken away; the consumer still owns them
    /// during the call.
    fn on_partitions_revoked(
        &mut self,
        consumer: &mut super::Consumer<K, V>,
        partitions: &[TopicPartition],
    ) {
        let _ = (consumer, partitions);
    }

    /// These partitions are now the consumer's; their positions are the
    /// committed offsets (or `auto_offset_reset`), and may be changed here
    /// with `seek`.
    fn on_partitions_assigned(
        &mut self,
        consumer: &mut super::Consumer<K, V>,
        partitions: &[TopicPartition],
    ) {
        let _ = (consumer, partitions);
    }

    /// The consumer lost these partitions without giving them up: it was
    /// removed from the group (session timeout, poll timeout, fenced). By
    /// default this calls `on_partitions_revoked`, as Kafka's does.
    fn on_partitions_lost(
        &mut self,
        consumer: &mut super::Consumer<K, V>,
        partitions: &[TopicPartition],
    ) {
        self.on_partitions_revoked(consumer, partitions);
    }
}

/// Who a consumer is in its group (Kafka's `ConsumerGroupMetadata`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupMetadata {
    /// The group.
    pub group_id: String,
    /// The member id the coordinator gave it (empty before it joined).
    pub member_id: String,
    /// Its member epoch (generation); 0 before it joined.
    pub generation_id: i32,
    /// Its static instance id.
    pub group_instance_id: Option<String>,
}

/// The outcome of [`Consumer::commit_async`](super::Consumer::commit_async).
#[derive(Debug, Clone)]
pub struct CommitHandle {
    outcome: Arc<(Mutex<Option<Result<()>>>, Condvar)>,
}

impl CommitHandle {
    fn new() -> Self {
        Self {
            outcome: Arc::new((Mutex::new(None), Condvar::new())),
        }
    }

    fn complete(&self, result: Result<()>) {
        let (slot, done) = &*self.outcome;
        slot.lock().get_or_insert(result);
        done.notify_all();
    }

    /// Whether the commit finished (either way).
    pub fn is_done(&self) -> bool {
        self.outcome.0.lock().is_some()
    }

    /// Blocks until the commit finished, and returns how.
    pub fn wait(&self) -> Result<()> {
        let (slot, done) = &*self.outcome;
        let mut slot = slot.lock();
        loop {
            if let Some(result) = slot.as_ref() {
                return result.clone();
            }
            done.wait(&mut slot);
        }
    }
}

/// Whether `e` means "ask another broker who coordinates the group".
fn coordinator_moved(e: &Error) -> bool {
    matches!(
        e,
        Error::NotCoordinator { .. }
            | Error::CoordinatorNotAvailable { .. }
            | Error::CoordinatorLoadInProgress { .. }
            | Error::Network { .. }
            | Error::RequestTimedOut { .. }
    )
}

/// Finds a group's coordinator and sends it requests.
#[derive(Debug)]
pub(crate) struct GroupClient {
    core: Arc<ClientCore>,
    pub(crate) group: String,
    coordinator: Mutex<Option<NodeId>>,
    request_timeout: Duration,
    retry_backoff: Duration,
}

impl GroupClient {
    pub(crate) fn new(
        core: Arc<ClientCore>,
        group: String,
        request_timeout: Duration,
        retry_backoff: Duration,
    ) -> Self {
        Self {
            core,
            group,
            coordinator: Mutex::new(None),
            request_timeout,
            retry_backoff,
        }
    }

    /// The coordinator, asking the brokers if it is not known.
    fn coordinator(&self, deadline: Instant) -> Result<NodeId> {
        if let Some(node) = *self.coordinator.lock() {
            return Ok(node);
        }
        let mut brokers = self.core.metadata().brokers.clone();
        if brokers.is_empty() {
            brokers = self
                .core
                .refresh_metadata(self.left(deadline))?
                .brokers
                .clone();
        }
        let mut last_error = None;
        for node in brokers {
            let request = Request::FindCoordinator(self.group.clone());
            match self.core.call(node, request, self.left(deadline)) {
                Ok(Response::FindCoordinator(found)) => {
                    *self.coordinator.lock() = Some(found);
                    return Ok(found);
                }
                Ok(other) => return Err(unexpected("FindCoordinator", &other)),
                Err(e) if e.is_retriable() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        // The broker list may be stale.
        let _ = self.core.refresh_metadata(self.left(deadline));
        Err(last_error.unwrap_or(Error::CoordinatorNotAvailable {
            group: self.group.clone(),
        }))
    }

    fn left(&self, deadline: Instant) -> Duration {
        deadline
            .saturating_duration_since(Instant::now())
            .min(self.request_timeout)
    }

    /// Forgets the coordinator after an error that says it moved.
    fn note(&self, e: &Error) {
        if coordinator_moved(e) {
            *self.coordinator.lock() = None;
        }
    }

    /// Sends `request` to the coordinator once.
    fn call_once(&self, request: Request, deadline: Instant) -> Result<Response> {
        let node = self.coordinator(deadline)?;
        let result = self.core.call(node, request, self.left(deadline));
        if let Err(e) = &result {
            self.note(e);
        }
        result
    }

    /// Sends the request `make` builds to the coordinator, finding it again
    /// and retrying while the coordinator moves, until `deadline`.
    pub(crate) fn call(&self, make: impl Fn() -> Request, deadline: Instant) -> Result<Response> {
        loop {
            match self.call_once(make(), deadline) {
                Err(e) if coordinator_moved(&e) && Instant::now() < deadline => {
                    std::thread::sleep(self.retry_backoff.min(self.left(deadline)));
                }
                other => return other,
            }
        }
    }

    /// Commits `offsets` as member `member_id` in `epoch` and waits.
    pub(crate) fn commit(
        &self,
        member: (String, i32),
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
        deadline: Instant,
    ) -> Result<()> {
        let make = || {
            Request::OffsetCommit(OffsetCommitRequest {
                group: self.group.clone(),
                member_id: member.0.clone(),
                member_epoch: member.1,
                offsets: offsets.clone(),
            })
        };
        match self.call(make, deadline)? {
            Response::OffsetCommit => Ok(()),
            other => Err(unexpected("OffsetCommit", &other)),
        }
    }

    /// Commits without waiting; the handle tells the outcome.
    pub(crate) fn commit_async(
        &self,
        member: (String, i32),
        offsets: Vec<(TopicPartition, OffsetAndMetadata)>,
    ) -> CommitHandle {
        let handle = CommitHandle::new();
        let deadline = Instant::now() + self.request_timeout;
        let node = match self.coordinator(deadline) {
            Ok(node) => node,
            Err(e) => {
                handle.complete(Err(e));
                return handle;
            }
        };
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: self.group.clone(),
            member_id: member.0,
            member_epoch: member.1,
            offsets,
        });
        let done = handle.clone();
        self.core.send(node, request, move |response| {
            done.complete(match response {
                Ok(Response::OffsetCommit) => Ok(()),
                Ok(other) => Err(unexpected("OffsetCommit", &other)),
                Err(e) => Err(e),
            })
        });
        handle
    }

    /// The group's committed offsets for `partitions` (all if `None`).
    pub(crate) fn committed(
        &self,
        partitions: Option<Vec<TopicPartition>>,
        deadline: Instant,
    ) -> Result<CommittedOffsets> {
        let make = || {
            Request::OffsetFetch(OffsetFetchRequest {
                group: self.group.clone(),
                partitions: partitions.clone(),
            })
        };
        match self.call(make, deadline)? {
            Response::OffsetFetch(offsets) => Ok(offsets),
            other => Err(unexpected("OffsetFetch", &other)),
        }
    }
}

/// What the heartbeat thread and the application thread share.
#[derive(Debug)]
pub(crate) struct MemberState {
    pub(crate) subscription: Option<Subscription>,
    pub(crate) member_id: String,
    pub(crate) epoch: i32,
    /// Partitions the application holds.
    pub(crate) owned: BTreeSet<TopicPartition>,
    /// The assignment id the application reconciled last.
    pub(crate) acked: u64,
    /// The newest assignment not reconciled yet: (id, partitions).
    pub(crate) target: Option<(u64, BTreeSet<TopicPartition>)>,
    /// Everything owned is lost (removed from the group); the application
    /// drops it at its next poll.
    pub(crate) lost: bool,
    /// Why the partitions were lost, until the application drops them:
    /// commits of their positions fail with it.
    pub(crate) lost_because: Option<Error>,
    /// An error that ends membership (fenced instance, bad assignor).
    pub(crate) fatal: Option<Error>,
    pub(crate) last_poll: Instant,
    last_ok_sent: Option<Instant>,
    /// When the heartbeat that may have asked for a still-unfinished
    /// revocation was sent (the first one since the last answer).
    revocation_since: Option<Instant>,
    /// When the first heartbeat since the last answer was sent: any of the
    /// unanswered ones may have made the coordinator start a revocation.
    first_unanswered: Option<Instant>,
    next_heartbeat: Instant,
    /// Bumped whenever membership restarts, so a late answer to an older
    /// heartbeat is ignored and a reconciliation of the old membership is
    /// abandoned.
    pub(crate) incarnation: u64,
    stop: bool,
}

impl MemberState {
    /// Ends the membership: what is owned is lost, and the next heartbeat
    /// joins afresh.
    fn reset(&mut self, now: Instant, because: Error) {
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
        self.incarnation += 1;
        self.next_heartbeat = now;
    }

    /// The member id and epoch to commit as, or why the partitions the
    /// application holds are no longer this member's.
    pub(crate) fn commit_identity(&self, group: &str, limits: &Limits) -> Result<(String, i32)> {
        if self.expired(Instant::now(), limits) {
            return Err(self.gone(group));
        }
        if let Some(e) = &self.lost_because {
            return Err(e.clone());
        }
        Ok((self.member_id.clone(), self.epoch))
    }

    fn gone(&self, group: &str) -> Error {
        Error::UnknownMemberId {
            group: group.to_string(),
            member_id: self.member_id.clone(),
        }
    }

    /// Whether the member's own limits say it no longer owns its partitions:
    /// always before the coordinator could give them away, because every
    /// clock here starts no later than the coordinator's.
    pub(crate) fn expired(&self, now: Instant, limits: &Limits) -> bool {
        let older =
            |at: Option<Instant>, limit| at.is_some_and(|at| now.duration_since(at) > limit);
        self.epoch > 0
            && (now.duration_since(self.last_poll) > limits.max_poll_interval
                || older(self.last_ok_sent, limits.session_timeout)
                || older(self.revocation_since, limits.max_poll_interval)
                // An unanswered heartbeat may have started a revocation.
                || older(self.first_unanswered, limits.max_poll_interval))
    }
}

/// A member's time limits.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub(crate) session_timeout: Duration,
    pub(crate) heartbeat_interval: Duration,
    pub(crate) max_poll_interval: Duration,
}

impl Limits {
    /// How long the coordinator may hold a heartbeat with nothing new. The
    /// member counts its session from the last answered heartbeat's send, so
    /// an interval plus a hold must stay well inside the session.
    fn max_hold(&self) -> Duration {
        let spare = self.session_timeout.saturating_sub(self.heartbeat_interval) / 2;
        self.heartbeat_interval.min(spare)
    }
}

/// A subscribed consumer's membership: its state and heartbeat thread.
pub(crate) struct Membership {
    pub(crate) client: Arc<GroupClient>,
    pub(crate) shared: Arc<MembershipShared>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("group", &self.client.group)
            .finish()
    }
}

/// The part the heartbeat thread holds.
pub(crate) struct MembershipShared {
    pub(crate) state: Mutex<MemberState>,
    wake: Condvar,
    pub(crate) limits: Limits,
    instance_id: Option<String>,
    client_id: String,
    assignor: String,
    /// Wakes the application thread's `poll`.
    notify: Box<dyn Fn() + Send + Sync>,
}

impl Membership {
    /// Starts the heartbeat thread of a member of `client`'s group.
    pub(crate) fn start(
        client: Arc<GroupClient>,
        config: &ConsumerConfig,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self> {
        let now = Instant::now();
        let shared = Arc::new(MembershipShared {
            state: Mutex::new(MemberState {
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
                incarnation: 0,
                stop: false,
            }),
            wake: Condvar::new(),
            limits: Limits {
                session_timeout: Duration::from_millis(config.session_timeout_ms),
                heartbeat_interval: Duration::from_millis(config.heartbeat_interval_ms),
                max_poll_interval: Duration::from_millis(config.max_poll_interval_ms),
            },
            instance_id: config.group_instance_id.clone(),
            client_id: config.client_id.clone(),
            assignor: config.partition_assignment_strategy.clone(),
            notify: Box::new(notify),
        });
        let runner = shared.clone();
        let heartbeat_client = client.clone();
        let thread = std::thread::Builder::new()
            .name(format!("ferrolog-heartbeat-{}", client.group))
            .spawn(move || runner.run(&heartbeat_client))
            .map_err(|e| Error::io("spawning the heartbeat thread", e))?;
        Ok(Self {
            client,
            shared,
            thread: Some(thread),
        })
    }

    /// Asks for a heartbeat now (after a revocation, or a new subscription).
    pub(crate) fn heartbeat_now(&self) {
        let mut state = self.shared.state.lock();
        state.next_heartbeat = Instant::now();
        self.shared.wake.notify_all();
    }

    /// Stops the heartbeat thread; with `leave`, the member leaves the group
    /// first (a static member only for now, keeping its partitions until its
    /// session times out).
    pub(crate) fn stop(&mut self, leave: bool) {
        {
            let mut state = self.shared.state.lock();
            state.stop = true;
            self.shared.wake.notify_all();
        }
        // Not joined: it may be in a heartbeat the coordinator holds (up to
        // `heartbeat_interval_ms`); it ends when that returns, and leaving
        // below makes the coordinator answer it at once.
        drop(self.thread.take());
        let (member_id, epoch, subscription) = {
            let state = self.shared.state.lock();
            (
                state.member_id.clone(),
                state.epoch,
                state.subscription.clone(),
            )
        };
        if leave && epoch > 0 {
            let epoch = if self.shared.instance_id.is_some() {
                STATIC_LEAVE_EPOCH
            } else {
                LEAVE_GROUP_EPOCH
            };
            if let Some(subscription) = subscription {
                let request = self.shared.request(
                    &self.client,
                    member_id,
                    epoch,
                    subscription,
                    Vec::new(),
                    0,
                );
                let deadline = Instant::now() + self.client.request_timeout;
                let _ = self.client.call_once(request, deadline);
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop(false);
        }
    }
}

impl MembershipShared {
    fn request(
        &self,
        client: &GroupClient,
        member_id: String,
        member_epoch: i32,
        subscription: Subscription,
        owned: Vec<TopicPartition>,
        acked_assignment: u64,
    ) -> Request {
        let ms = |d: Duration| d.as_millis().min(u128::from(u32::MAX)) as u32;
        Request::GroupHeartbeat(GroupHeartbeatRequest {
            group: client.group.clone(),
            member_id,
            member_epoch,
            group_instance_id: self.instance_id.clone(),
            client_id: self.client_id.clone(),
            subscription,
            assignor: self.assignor.clone(),
            owned,
            acked_assignment,
            session_timeout_ms: ms(self.limits.session_timeout),
            rebalance_timeout_ms: ms(self.limits.max_poll_interval),
            max_wait_ms: if member_epoch > 0 {
                ms(self.limits.max_hold())
            } else {
                0
            },
        })
    }

    /// The heartbeat thread.
    fn run(&self, client: &GroupClient) {
        loop {
            let (request, incarnation, leave) = {
                let mut state = self.state.lock();
                loop {
                    if state.stop {
                        return;
                    }
                    let now = Instant::now();
                    if state.expired(now, &self.limits) {
                        // Drop everything before the coordinator could give
                        // it away; leave if the poll loop stalled.
                        let stalled =
                            now.duration_since(state.last_poll) > self.limits.max_poll_interval;
                        let leave =
                            stalled.then(|| (state.member_id.clone(), state.subscription.clone()));
                        let because = state.gone(&client.group);
                        state.reset(now, because);
                        (self.notify)();
                        if let Some((member_id, Some(subscription))) = leave {
                            break (
                                self.request(
                                    client,
                                    member_id,
                                    LEAVE_GROUP_EPOCH,
                                    subscription,
                                    Vec::new(),
                                    0,
                                ),
                                state.incarnation,
                                true,
                            );
                        }
                        continue;
                    }
                    let polling =
                        now.duration_since(state.last_poll) <= self.limits.max_poll_interval;
                    if let Some(subscription) = state.subscription.clone()
                        && state.fatal.is_none()
                        && polling
                        && now >= state.next_heartbeat
                    {
                        let request = self.request(
                            client,
                            state.member_id.clone(),
                            state.epoch,
                            subscription,
                            state.owned.iter().cloned().collect(),
                            state.acked,
                        );
                        state.first_unanswered.get_or_insert(now);
                        break (request, state.incarnation, false);
                    }
                    let wake = if state.subscription.is_some() && polling {
                        state.next_heartbeat
                    } else {
                        now + self.limits.heartbeat_interval
                    };
                    // Wake in time for the member's own limits too.
                    let wake = wake.min(now + self.limits.heartbeat_interval);
                    let _ = self.wake.wait_until(&mut state, wake);
                }
            };
            let sent = Instant::now();
            let deadline = sent + self.limits.session_timeout.min(client.request_timeout);
            let result = client.call_once(request, deadline);
            if leave {
                continue;
            }
            self.handle(result, sent, incarnation);
        }
    }

    fn handle(&self, result: Result<Response>, sent: Instant, incarnation: u64) {
        let mut state = self.state.lock();
        if state.incarnation != incarnation || state.stop {
            return;
        }
        let now = Instant::now();
        match result {
            Ok(Response::GroupHeartbeat(response)) => {
                state.member_id = response.member_id;
                state.epoch = response.member_epoch;
                state.last_ok_sent = Some(sent);
                // The coordinator may have asked for a revocation in any
                // heartbeat since the last answer: time it from the first.
                let asked_since = state.first_unanswered.take().unwrap_or(sent).min(sent);
                let assignment: BTreeSet<TopicPartition> =
                    response.assignment.into_iter().collect();
                let revokes = !state.owned.is_subset(&assignment);
                if revokes {
                    state.revocation_since.get_or_insert(asked_since);
                } else {
                    state.revocation_since = None;
                }
                let changed = response.assignment_id != state.acked || assignment != state.owned;
                if changed {
                    state.target = Some((response.assignment_id, assignment));
                    (self.notify)();
                }
                // In step with the coordinator, the next heartbeat goes out at
                // once and the coordinator holds it until the group changes
                // (or for its interval): a long poll. With a new assignment
                // the application applies it first and then asks for a
                // heartbeat; while partitions are still coming, ask often.
                let quick = self
                    .limits
                    .heartbeat_interval
                    .min(Duration::from_millis(RECONCILING_HEARTBEAT_MS));
                state.next_heartbeat = if response.reconciling {
                    now + quick
                } else if !changed {
                    sent + quick
                } else {
                    sent + self.limits.heartbeat_interval
                };
            }
            Ok(other) => {
                state.fatal = Some(unexpected("ConsumerGroupHeartbeat", &other));
                (self.notify)();
            }
            Err(e @ (Error::UnknownMemberId { .. } | Error::FencedMemberEpoch { .. })) => {
                state.reset(now, e);
                (self.notify)();
            }
            Err(e) if coordinator_moved(&e) => {
                state.next_heartbeat = now + client_backoff(&self.limits);
            }
            Err(e) => {
                state.fatal = Some(e.clone());
                state.reset(now, e);
                (self.notify)();
            }
        }
    }
}

/// Wait before heartbeating again after the coordinator could not be reached.
fn client_backoff(limits: &Limits) -> Duration {
    (limits.heartbeat_interval / 4).clamp(Duration::from_millis(5), Duration::from_millis(100))
}
