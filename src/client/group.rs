//! A consumer's side of its group: finding the coordinator, committing and
//! fetching offsets, and (after `subscribe`) membership.
//!
//! A consumer with a `group_id` talks to its group through a member core
//! (the deterministic state machine of the member, with no thread or lock
//! of its own), driven by one background thread per consumer, as Kafka's
//! heartbeat thread: it joins, heartbeats every `heartbeat_interval_ms` with
//! the partitions the consumer holds, and hands each new assignment to the
//! application thread, which applies it inside `poll` (revoking first,
//! calling the [`RebalanceListener`], then taking new partitions). The core
//! also enforces the member's own limits: a consumer that has not polled for
//! `max_poll_interval_ms` leaves the group, and one that has not reached its
//! coordinator for `session_timeout_ms` (or could not give up revoked
//! partitions in time) drops its partitions as lost, always before the
//! coordinator could give them to someone else.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use super::coordinator::OpId;
use super::member_core::{Limits, MemberConfig, MemberCore};
use super::{Bootstrap, ConsumerConfig, unexpected};
use crate::error::{Error, Result};
use crate::protocol::{CommittedOffsets, Envelope, Response};
use crate::runtime::{Core, NodeRuntime};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;

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

/// Where an answer from the member core waits for the thread that asked.
#[derive(Debug, Default)]
struct Slot {
    outcome: Mutex<Option<Result<Response>>>,
    done: Condvar,
}

impl Slot {
    fn complete(&self, result: Result<Response>) {
        self.outcome.lock().get_or_insert(result);
        self.done.notify_all();
    }

    fn wait(&self) -> Result<Response> {
        let mut outcome = self.outcome.lock();
        loop {
            if let Some(result) = outcome.as_ref() {
                return result.clone();
            }
            self.done.wait(&mut outcome);
        }
    }
}

/// The outcome of [`Consumer::commit_async`](super::Consumer::commit_async).
#[derive(Debug, Clone)]
pub struct CommitHandle {
    slot: Arc<Slot>,
}

impl CommitHandle {
    fn failed(e: Error) -> Self {
        let slot = Arc::new(Slot::default());
        slot.complete(Err(e));
        Self { slot }
    }

    /// Whether the commit finished (either way).
    pub fn is_done(&self) -> bool {
        self.slot.outcome.lock().is_some()
    }

    /// Blocks until the commit finished, and returns how.
    pub fn wait(&self) -> Result<()> {
        match self.slot.wait()? {
            Response::OffsetCommit => Ok(()),
            other => Err(unexpected("OffsetCommit", &other)),
        }
    }
}

/// The answers the application waits for, by the core's request number.
type Waiting = Arc<Mutex<BTreeMap<OpId, Arc<Slot>>>>;

/// A consumer's member core, running: its thread, and the application's
/// requests waiting for answers.
pub(crate) struct GroupMember {
    runtime: NodeRuntime<MemberCore>,
    waiting: Waiting,
    clock: SystemClock,
    request_timeout: Millis,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember").finish_non_exhaustive()
    }
}

impl Core for MemberCore {
    fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        MemberCore::handle_message(self, now, envelope);
    }
    fn handle_timeout(&mut self, now: Millis) {
        MemberCore::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Millis> {
        MemberCore::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Envelope> {
        MemberCore::poll_transmit(self)
    }
    fn shutdown(&mut self, _now: Millis) -> Result<()> {
        Ok(())
    }
}

impl GroupMember {
    /// Starts the member core of `group` for a consumer with `config`;
    /// `notify` wakes the consumer's `poll` when the membership changed.
    pub(crate) fn start(
        bootstrap: &Bootstrap,
        group: String,
        config: &ConsumerConfig,
        notify: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self> {
        let clock = SystemClock;
        let member = MemberConfig {
            group: group.clone(),
            instance_id: config.group_instance_id.clone(),
            client_id: config.client_id.clone(),
            assignor: config.partition_assignment_strategy.clone(),
            limits: Limits {
                session_timeout: config.session_timeout_ms as Millis,
                heartbeat_interval: config.heartbeat_interval_ms as Millis,
                max_poll_interval: config.max_poll_interval_ms as Millis,
            },
            request_timeout: config.request_timeout_ms as Millis,
            retry_backoff: config.retry_backoff_ms as Millis,
        };
        let request_timeout = member.request_timeout;
        let peer = bootstrap.transport.client_peer();
        let core = MemberCore::new(peer, member, bootstrap.nodes.clone(), clock.now_ms());
        let waiting: Waiting = Arc::default();
        let answers = waiting.clone();
        let after_step = Box::new(move |core: &mut MemberCore| {
            while let Some((op, result)) = core.poll_completion() {
                if let Some(slot) = answers.lock().remove(&op) {
                    slot.complete(result);
                }
            }
            if core.take_changed() {
                notify();
            }
        });
        let runtime = NodeRuntime::start_peer(
            peer,
            core,
            bootstrap.transport.clone(),
            Arc::new(clock),
            format!("ferrolog-member-{group}"),
            Some(after_step),
        )?;
        Ok(Self {
            runtime,
            waiting,
            clock,
            request_timeout,
        })
    }

    /// Runs `f` on the core as one step, at the clock's time.
    pub(crate) fn step<T>(&self, f: impl FnOnce(&mut MemberCore, Millis) -> T) -> T {
        self.runtime.step(f)
    }

    /// Looks at the core at the clock's time, without a step.
    pub(crate) fn look<T>(&self, f: impl FnOnce(&MemberCore, Millis) -> T) -> T {
        let now = self.clock.now_ms();
        self.runtime.with_core(|core| f(core, now))
    }

    /// Registers a slot for the answer to `op` (inside the step that
    /// submitted it, so the answer cannot come first).
    fn slot_for(waiting: &Waiting, op: OpId) -> Arc<Slot> {
        let slot = Arc::new(Slot::default());
        waiting.lock().insert(op, slot.clone());
        slot
    }

    /// Commits `offsets` as the member now is, without waiting; with
    /// `retry`, resent while the coordinator moves, until `timeout_ms`.
    fn start_commit(
        &self,
        offsets: Vec<(TopicPartition, crate::protocol::OffsetAndMetadata)>,
        timeout_ms: Millis,
        retry: bool,
    ) -> CommitHandle {
        let waiting = &self.waiting;
        let started = self.step(|core, now| {
            let op = core.commit(now, offsets, now + timeout_ms, retry)?;
            Ok(Self::slot_for(waiting, op))
        });
        match started {
            Ok(slot) => CommitHandle { slot },
            Err(e) => CommitHandle::failed(e),
        }
    }

    /// Commits `offsets` as the member now is and waits, at most
    /// `timeout_ms`, retrying while the coordinator moves.
    pub(crate) fn commit(
        &self,
        offsets: Vec<(TopicPartition, crate::protocol::OffsetAndMetadata)>,
        timeout_ms: Millis,
    ) -> Result<()> {
        self.start_commit(offsets, timeout_ms, true).wait()
    }

    /// Commits without waiting (and without retrying: a later commit
    /// supersedes it); the handle tells the outcome.
    pub(crate) fn commit_async(
        &self,
        offsets: Vec<(TopicPartition, crate::protocol::OffsetAndMetadata)>,
    ) -> CommitHandle {
        self.start_commit(offsets, self.request_timeout, false)
    }

    /// The group's committed offsets for `partitions` (all if `None`),
    /// waiting at most `timeout_ms`.
    pub(crate) fn committed(
        &self,
        partitions: Option<Vec<TopicPartition>>,
        timeout_ms: Millis,
    ) -> Result<CommittedOffsets> {
        let waiting = &self.waiting;
        let slot = self.step(|core, now| {
            let op = core.fetch_committed(now, partitions, now + timeout_ms);
            Self::slot_for(waiting, op)
        });
        match slot.wait()? {
            Response::OffsetFetch(offsets) => Ok(offsets),
            other => Err(unexpected("OffsetFetch", &other)),
        }
    }

    /// Leaves the group (see [`MemberCore::leave`]) and waits for the
    /// coordinator's answer, which may be a failure.
    pub(crate) fn leave(&self) {
        let waiting = &self.waiting;
        let slot = self.step(|core, now| core.leave(now).map(|op| Self::slot_for(waiting, op)));
        if let Some(slot) = slot {
            let _ = slot.wait();
        }
    }
}
