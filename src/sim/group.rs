//! The consumer-group workload of the simulator: members that join, read,
//! commit what they processed, leave, crash and stall, each one a member
//! core and a consumer core driven the way `Consumer::poll` drives them; and
//! the checks that belong to groups.

use std::collections::{BTreeMap, BTreeSet};

use super::{AnomalyKind, Node, T0, World};
use crate::client::member_core::{Limits, MemberConfig, MemberCore};
use crate::client::{AutoOffsetReset, ConsumerConfig, ConsumerCore};
use crate::protocol::{NodeId, OffsetAndMetadata, Peer, Response, Subscription};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// The simulated group.
pub(super) const GROUP: &str = "sim-group";
/// Member cores are clients 1000, 1002, ...; each one's consumer core is the
/// next number.
const FIRST_MEMBER: u64 = 1_000;
/// Whether `peer` is a member core.
pub(super) fn is_member(peer: Peer) -> bool {
    matches!(peer, Peer::Client(id) if id >= FIRST_MEMBER && (id - FIRST_MEMBER).is_multiple_of(2))
}

/// How often a member commits what it processed (ms).
const COMMIT_INTERVAL_MS: Millis = 300;
/// How long a member's request may take before it gives up (ms).
const REQUEST_TIMEOUT_MS: Millis = 3_000;

/// Where a member is in applying its newest assignment.
#[derive(Debug)]
enum Phase {
    /// Nothing under way.
    Idle,
    /// Committing the positions of the partitions it gives up.
    Revoking {
        op: u64,
        target: (u64, BTreeSet<TopicPartition>),
        incarnation: u64,
    },
    /// Looking up the committed offsets of the partitions it takes.
    Assigning {
        op: u64,
        target: (u64, BTreeSet<TopicPartition>),
        incarnation: u64,
        added: Vec<TopicPartition>,
    },
}

/// One member as its application sees it.
#[derive(Debug)]
pub(super) struct GroupApp {
    pub(super) member: Peer,
    pub(super) consumer: Peer,
    /// The partitions the application holds (reads and commits).
    held: BTreeSet<TopicPartition>,
    phase: Phase,
    /// A target to apply once the phase under way ends.
    waiting: Option<((u64, BTreeSet<TopicPartition>), u64)>,
    /// The offset the next record of each held partition must have.
    next: BTreeMap<u32, u64>,
    /// The periodic commit in flight, if any.
    commit: Option<u64>,
    next_commit: Millis,
    /// In a group that commits before processing: records read and not
    /// processed yet, as (partition, offset).
    unprocessed: Vec<(u32, u64)>,
    /// ... and the records each commit in flight covers: processed once it
    /// is acknowledged, dropped if it fails (at most once).
    committing: BTreeMap<u64, Vec<(u32, u64)>>,
    /// The application does not poll until then (a long pause in its
    /// processing); its member core keeps heartbeating, and leaves the
    /// group once `max_poll_interval_ms` passes.
    stalled_until: Millis,
}

impl GroupApp {
    fn idle(&self) -> bool {
        matches!(self.phase, Phase::Idle) && self.waiting.is_none()
    }
}

/// What the group checks keep.
#[derive(Debug, Default)]
pub(super) struct GroupChecks {
    /// Commit requests by (member, correlation id): the partitions and
    /// offsets they carry.
    pub(super) commits: BTreeMap<(Peer, u64), Vec<(u32, u64)>>,
    /// The commit answers the coordinators gave, so that a duplicated
    /// request's second answer is not taken for a new commit.
    answered: BTreeSet<(Peer, u64)>,
    /// Each partition's committed offset as last accepted, and the commit
    /// that set it (member, correlation id).
    committed: BTreeMap<u32, (u64, Peer, u64)>,
    /// In a group that commits before processing: the records processed,
    /// and by whom.
    processed: BTreeMap<(u32, u64), Peer>,
    /// Records a commit put back below the committed offset (a member's own
    /// overtaken commit, see [`World::commit_accepted`]): how many more times
    /// each may be processed.
    reprocessable: BTreeMap<(u32, u64), u32>,
}

/// The members' `session_timeout_ms`.
pub(super) const SESSION_TIMEOUT_MS: Millis = 2_000;

fn member_config(group: &str) -> MemberConfig {
    MemberConfig {
        group: group.to_string(),
        instance_id: None,
        client_id: "sim-member".into(),
        assignor: "cooperative-sticky".into(),
        limits: Limits {
            session_timeout: SESSION_TIMEOUT_MS,
            heartbeat_interval: 100,
            max_poll_interval: 10_000,
        },
        request_timeout: REQUEST_TIMEOUT_MS,
        retry_backoff: 50,
    }
}

impl World {
    /// Starts a new member of the group: its member core subscribes at once.
    pub(super) fn start_member(&mut self) {
        let n = self.next_member;
        self.next_member += 1;
        let member = Peer::Client(FIRST_MEMBER + 2 * n);
        let consumer = Peer::Client(FIRST_MEMBER + 2 * n + 1);
        let bootstrap: Vec<NodeId> = (0..self.config.brokers).collect();
        let mut core = MemberCore::new(member, member_config(GROUP), bootstrap.clone(), self.now);
        let subscription = Subscription::Topics(
            self.topics
                .names
                .iter()
                .map(|name| name.to_string())
                .collect(),
        );
        core.subscribe(self.now, subscription);
        let config = ConsumerConfig {
            auto_offset_reset: AutoOffsetReset::Earliest,
            ..ConsumerConfig::default()
        };
        let fetcher = ConsumerCore::new(consumer, config, bootstrap);
        self.nodes.insert(member, Node::Member(Box::new(core)));
        self.nodes
            .insert(consumer, Node::Consumer(Box::new(fetcher)));
        self.log(|| format!("member {member:?} starts"));
        self.apps.push(GroupApp {
            member,
            consumer,
            held: BTreeSet::new(),
            phase: Phase::Idle,
            waiting: None,
            next: BTreeMap::new(),
            commit: None,
            next_commit: self.now + COMMIT_INTERVAL_MS,
            unprocessed: Vec::new(),
            committing: BTreeMap::new(),
            stalled_until: 0,
        });
        self.drain(member);
        self.drain(consumer);
    }

    /// Crashes member `index`: both its cores are gone, nothing is sent.
    pub(super) fn crash_member(&mut self, index: usize) {
        let app = self.apps.remove(index);
        self.log(|| format!("member {:?} crashes", app.member));
        self.nodes.remove(&app.member);
        self.nodes.remove(&app.consumer);
    }

    /// Member `index` leaves: it commits what it processed and leaves the
    /// group, then stops.
    pub(super) fn leave_member(&mut self, index: usize) {
        let app = self.apps.remove(index);
        self.log(|| format!("member {:?} leaves", app.member));
        let now = self.now;
        let offsets = self.positions(&app);
        if let Some(Node::Member(core)) = self.nodes.get_mut(&app.member) {
            if !offsets.is_empty() {
                let _ = core.commit(now, offsets, now + REQUEST_TIMEOUT_MS, false);
            }
            core.leave(now);
        }
        self.drain(app.member);
        // Its answers are nobody's now.
        self.nodes.remove(&app.member);
        self.nodes.remove(&app.consumer);
    }

    fn positions(&self, app: &GroupApp) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        match self.nodes.get(&app.consumer) {
            Some(Node::Consumer(c)) => c
                .positions()
                .into_iter()
                .filter(|(tp, _)| app.held.contains(tp))
                .map(|(tp, p)| (tp, OffsetAndMetadata::new(p)))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn member_core(&mut self, peer: Peer) -> Option<&mut MemberCore> {
        match self.nodes.get_mut(&peer) {
            Some(Node::Member(m)) => Some(m),
            _ => None,
        }
    }

    fn consumer_core(&mut self, peer: Peer) -> Option<&mut ConsumerCore> {
        match self.nodes.get_mut(&peer) {
            Some(Node::Consumer(c)) => Some(c),
            _ => None,
        }
    }

    /// One poll of every member: answers, group changes, records, commits;
    /// then the check that no partition has two owners.
    pub(super) fn poll_members(&mut self) {
        for index in 0..self.apps.len() {
            self.poll_member(index);
        }
        self.check_owners();
    }

    /// Member `index`'s application stops polling until `until`.
    pub(super) fn stall_application(&mut self, index: usize, until: Millis) {
        if let Some(app) = self.apps.get_mut(index) {
            app.stalled_until = app.stalled_until.max(until);
            let member = app.member;
            self.log(|| format!("member {member:?} stops polling until t={}", until - T0));
        }
    }

    fn poll_member(&mut self, index: usize) {
        let now = self.now;
        if now < self.apps[index].stalled_until {
            return;
        }
        let (member, consumer) = (self.apps[index].member, self.apps[index].consumer);
        // Answers to the application's requests.
        let mut done = Vec::new();
        if let Some(core) = self.member_core(member) {
            while let Some(completion) = core.poll_completion() {
                done.push(completion);
            }
        }
        for (op, result) in done {
            let app = &mut self.apps[index];
            if app.commit == Some(op) {
                app.commit = None;
            }
            if let Some(records) = app.committing.remove(&op)
                && result.is_ok()
            {
                self.process(member, records);
            }
            let app = &mut self.apps[index];
            match std::mem::replace(&mut app.phase, Phase::Idle) {
                Phase::Revoking {
                    op: revoking,
                    target,
                    incarnation,
                } if revoking == op => {
                    // Given up whether the commit succeeded or not, as
                    // `Consumer::poll` does.
                    self.release(index, &target.1);
                    self.take(index, target, incarnation);
                }
                Phase::Assigning {
                    op: assigning,
                    target,
                    incarnation,
                    added,
                } if assigning == op => match result {
                    Ok(Response::OffsetFetch(found)) => {
                        let taken = self
                            .member_core(member)
                            .is_some_and(|m| m.hold(incarnation, &added));
                        let parts: Vec<u32> =
                            added.iter().map(|tp| self.topics.index(tp)).collect();
                        self.log(|| {
                            format!(
                                "member {member:?} takes {parts:?} of assignment {}: {taken}",
                                target.0
                            )
                        });
                        if taken {
                            for tp in added {
                                let position = found.get(&tp).map(|o| o.offset);
                                if let Some(c) = self.consumer_core(consumer) {
                                    c.add(tp.clone(), position);
                                }
                                let n = self.topics.index(&tp);
                                let app = &mut self.apps[index];
                                app.next.insert(n, position.unwrap_or(0));
                                app.held.insert(tp);
                            }
                            if let Some(m) = self.member_core(member) {
                                m.reconciled(now, incarnation, target.0);
                            }
                        }
                    }
                    // Tried again at the next poll, unless a newer one came.
                    _ => {
                        let app = &mut self.apps[index];
                        app.waiting.get_or_insert((target, incarnation));
                    }
                },
                other => self.apps[index].phase = other,
            }
        }
        // The group's changes, as a poll applies them.
        let Some(changes) = self.member_core(member).map(|m| m.changes(now)) else {
            return;
        };
        if let Some(e) = changes.fatal {
            self.anomaly(
                AnomalyKind::Liveness,
                format!("member {member:?} failed: {e}"),
            );
        }
        if changes.lost {
            let held = std::mem::take(&mut self.apps[index].held);
            self.log(|| format!("member {member:?} lost {} partitions", held.len()));
            if let Some(c) = self.consumer_core(consumer) {
                for tp in &held {
                    c.remove(tp);
                }
            }
            let app = &mut self.apps[index];
            app.next.clear();
            app.unprocessed.clear();
            app.phase = Phase::Idle;
            app.waiting = None;
        }
        if let Some(target) = changes.target {
            self.apps[index].waiting = Some((target, changes.incarnation));
        }
        if matches!(self.apps[index].phase, Phase::Idle)
            && let Some((target, incarnation)) = self.apps[index].waiting.take()
        {
            self.apply(index, target, incarnation);
        }
        self.read_member(index);
        // Process, then commit what was processed; or commit what was read,
        // then process it.
        let app = &self.apps[index];
        if app.idle() && app.commit.is_none() && now >= app.next_commit && !app.held.is_empty() {
            let offsets = self.positions(app);
            let op = self
                .member_core(member)
                .and_then(|m| m.commit(now, offsets, now + REQUEST_TIMEOUT_MS, false).ok());
            let app = &mut self.apps[index];
            app.commit = op;
            app.next_commit = now + COMMIT_INTERVAL_MS;
            if let Some(op) = op {
                let covered = std::mem::take(&mut app.unprocessed);
                app.committing.insert(op, covered);
            }
        }
        self.drain(member);
        self.drain(consumer);
    }

    /// Starts applying `target`: commits and gives up what is revoked first.
    fn apply(&mut self, index: usize, target: (u64, BTreeSet<TopicPartition>), incarnation: u64) {
        let now = self.now;
        let member = self.apps[index].member;
        let parts: Vec<u32> = target.1.iter().map(|tp| self.topics.index(tp)).collect();
        self.log(|| {
            format!(
                "member {member:?} applies assignment {}: {parts:?}",
                target.0
            )
        });
        let revoked: BTreeSet<TopicPartition> = self.apps[index]
            .held
            .iter()
            .filter(|tp| !target.1.contains(*tp))
            .cloned()
            .collect();
        if revoked.is_empty() {
            self.take(index, target, incarnation);
            return;
        }
        let offsets: Vec<_> = self
            .positions(&self.apps[index])
            .into_iter()
            .filter(|(tp, _)| revoked.contains(tp))
            .collect();
        let op = self
            .member_core(member)
            .and_then(|m| m.commit(now, offsets, now + REQUEST_TIMEOUT_MS, true).ok());
        // What was read of the revoked partitions is processed only if this
        // commit is acknowledged.
        let app = &mut self.apps[index];
        let (covered, kept) = std::mem::take(&mut app.unprocessed)
            .into_iter()
            .partition(|(p, _)| revoked.iter().any(|tp| self.topics.index(tp) == *p));
        app.unprocessed = kept;
        if let Some(op) = op {
            app.committing.insert(op, covered);
        }
        match op {
            Some(op) => {
                self.apps[index].phase = Phase::Revoking {
                    op,
                    target,
                    incarnation,
                }
            }
            None => {
                self.release(index, &target.1);
                self.take(index, target, incarnation);
            }
        }
    }

    /// Gives up every held partition not in `keep`.
    fn release(&mut self, index: usize, keep: &BTreeSet<TopicPartition>) {
        let (member, consumer) = (self.apps[index].member, self.apps[index].consumer);
        let revoked: Vec<TopicPartition> = self.apps[index]
            .held
            .iter()
            .filter(|tp| !keep.contains(*tp))
            .cloned()
            .collect();
        if let Some(c) = self.consumer_core(consumer) {
            for tp in &revoked {
                c.remove(tp);
            }
        }
        if !revoked.is_empty() {
            let parts: Vec<u32> = revoked.iter().map(|tp| self.topics.index(tp)).collect();
            self.log(|| format!("member {member:?} gives up {parts:?}"));
        }
        let app = &mut self.apps[index];
        for tp in &revoked {
            let n = self.topics.index(tp);
            app.held.remove(tp);
            app.next.remove(&n);
            app.unprocessed.retain(|(p, _)| *p != n);
        }
        if let Some(m) = self.member_core(member) {
            m.release(&revoked);
        }
    }

    /// Takes what `target` adds (after looking up its committed offsets),
    /// or says the target is reconciled if it adds nothing.
    fn take(&mut self, index: usize, target: (u64, BTreeSet<TopicPartition>), incarnation: u64) {
        let now = self.now;
        let member = self.apps[index].member;
        let added: Vec<TopicPartition> = target
            .1
            .iter()
            .filter(|tp| !self.apps[index].held.contains(*tp))
            .cloned()
            .collect();
        let Some(core) = self.member_core(member) else {
            return;
        };
        if added.is_empty() {
            core.reconciled(now, incarnation, target.0);
            return;
        }
        let op = core.fetch_committed(now, Some(added.clone()), now + REQUEST_TIMEOUT_MS);
        self.apps[index].phase = Phase::Assigning {
            op,
            target,
            incarnation,
            added,
        };
    }

    /// Takes the records member `index` fetched, checking that each held
    /// partition is read in order, without a gap.
    fn read_member(&mut self, index: usize) {
        let consumer = self.apps[index].consumer;
        let member = self.apps[index].member;
        let (got, _) = self.poll_consumer(consumer);
        for (partition, offset, value) in got {
            let expected = self.apps[index].next.get(&partition).copied();
            if expected.is_some_and(|e| e != offset) {
                let detail = format!(
                    "member {member:?} read partition {partition} offset {offset}, \
                     expected offset {expected:?}"
                );
                self.anomaly(AnomalyKind::PollOrder, detail);
            }
            self.apps[index].next.insert(partition, offset + 1);
            self.check_read(partition, offset, value);
            if self.commit_first {
                self.apps[index].unprocessed.push((partition, offset));
            }
        }
    }

    /// The records of `partition` at `offsets` may be processed once more
    /// (whether they were processed yet or are about to be): a commit
    /// lowered the committed offset below them.
    fn reprocessable(&mut self, partition: u32, offsets: std::ops::Range<u64>) {
        for offset in offsets {
            *self
                .group_checks
                .reprocessable
                .entry((partition, offset))
                .or_default() += 1;
        }
    }

    /// Takes one of the extra processings `(partition, offset)` may have.
    fn allowed_again(&mut self, partition: u32, offset: u64) -> bool {
        match self
            .group_checks
            .reprocessable
            .get_mut(&(partition, offset))
        {
            Some(left) if *left > 0 => {
                *left -= 1;
                true
            }
            _ => false,
        }
    }

    /// Member `member` processes `records`, its commit of them acknowledged:
    /// in a group that commits first, no record is processed twice (unless
    /// a commit the simulated network let overtake a later one put it back).
    fn process(&mut self, member: Peer, records: Vec<(u32, u64)>) {
        for (partition, offset) in records {
            if let Some(&before) = self.group_checks.processed.get(&(partition, offset))
                && !self.allowed_again(partition, offset)
            {
                let detail = format!(
                    "partition {partition} offset {offset}: processed by {member:?} after \
                     {before:?}, each after its commit was acknowledged"
                );
                self.anomaly(AnomalyKind::ProcessedTwice, detail);
            }
            self.group_checks
                .processed
                .insert((partition, offset), member);
        }
    }

    /// No partition is held by two members that both still consider it
    /// theirs at this moment — unless a clock jumped lately: a coordinator
    /// whose clock runs ahead ends sessions its members still count as
    /// live, and hands their partitions on before they let go (Kafka's
    /// too; exclusive ownership rests on clocks agreeing on elapsed time,
    /// and the fencing of a zombie's commits is what stays checked).
    fn check_owners(&mut self) {
        let now = self.now;
        if now < self.owners_unchecked_until {
            return;
        }
        let mut owners: BTreeMap<u32, Vec<Peer>> = BTreeMap::new();
        for app in &self.apps {
            let current = match self.nodes.get(&app.member) {
                Some(Node::Member(m)) => !m.holds_nothing(now),
                _ => false,
            };
            if current {
                for tp in &app.held {
                    owners
                        .entry(self.topics.index(tp))
                        .or_default()
                        .push(app.member);
                }
            }
        }
        for (partition, members) in owners {
            if members.len() > 1 {
                let detail = format!("partition {partition} held by {members:?} at once");
                self.anomaly(AnomalyKind::TwoOwners, detail);
            }
        }
    }

    /// Notes a commit request leaving member `from`.
    pub(super) fn note_commit(
        &mut self,
        from: Peer,
        correlation_id: u64,
        offsets: Vec<(u32, u64)>,
    ) {
        self.group_checks
            .commits
            .insert((from, correlation_id), offsets);
    }

    /// A coordinator accepted commit `(to, correlation_id)`: no partition's
    /// committed offset may go below the one accepted last — unless both
    /// are the same member's and this one was sent first: the simulated
    /// network let a later request overtake it, which one connection (TCP)
    /// would not, and which no coordinator can tell.
    pub(super) fn commit_accepted(&mut self, to: Peer, correlation_id: u64) {
        let key = (to, correlation_id);
        if !self.group_checks.answered.insert(key) {
            return; // the answer to a duplicated request
        }
        let Some(offsets) = self.group_checks.commits.get(&key).cloned() else {
            return;
        };
        for (partition, offset) in offsets {
            if let Some(&(current, by, by_id)) = self.group_checks.committed.get(&partition)
                && offset < current
            {
                if by == to && correlation_id < by_id {
                    // Overtaken: what was processed between the two
                    // offsets is below the committed offset again, and
                    // its next owner processes it once more.
                    self.reprocessable(partition, offset..current);
                } else {
                    let detail = format!(
                        "partition {partition}: {to:?} committed offset {offset} after \
                         {by:?} committed {current}"
                    );
                    self.anomaly(AnomalyKind::CommittedOffsetBackwards, detail);
                }
            }
            self.group_checks
                .committed
                .insert(partition, (offset, to, correlation_id));
        }
    }

    /// Commit `(to, correlation_id)` failed (an error answer, or its
    /// coordinator crashed) — possibly after it was written: a coordinator
    /// that loses its partition while the commit replicates answers
    /// `NotCoordinator`, yet the new one may have the record (as in Kafka,
    /// such an error leaves the outcome unknown). Its offsets may be the
    /// committed ones from now on, so a later commit at or above them is
    /// not backwards (found on seed 2970 of a 10,000-seed run).
    pub(super) fn commit_indeterminate(&mut self, to: Peer, correlation_id: u64) {
        let key = (to, correlation_id);
        let Some(offsets) = self.group_checks.commits.get(&key).cloned() else {
            return;
        };
        if !self.group_checks.answered.insert(key) {
            return;
        }
        for (partition, offset) in offsets {
            // Only lower the reference: if it was not applied, the offset
            // committed before stands (and with none, nothing does).
            if let Some(&(committed, _, _)) = self.group_checks.committed.get(&partition)
                && offset < committed
            {
                self.reprocessable(partition, offset..committed);
                self.group_checks
                    .committed
                    .insert(partition, (offset, to, correlation_id));
            }
        }
    }

    /// Whether every partition is held by exactly one member and every
    /// member is done applying its assignment.
    pub(super) fn group_settled(&self) -> bool {
        let mut held: BTreeMap<u32, usize> = BTreeMap::new();
        for app in &self.apps {
            if !app.idle() || app.stalled_until > self.now {
                return false;
            }
            for tp in &app.held {
                *held.entry(self.topics.index(tp)).or_default() += 1;
            }
        }
        self.apps.is_empty()
            || (held.len() == self.partitions as usize && held.values().all(|&n| n == 1))
    }

    /// The group did not settle after healing.
    pub(super) fn group_unsettled(&mut self) {
        let states: Vec<String> = self
            .apps
            .iter()
            .map(|a| {
                format!(
                    "{:?} holds {:?} ({:?})",
                    a.member,
                    a.held
                        .iter()
                        .map(|tp| self.topics.index(tp))
                        .collect::<Vec<_>>(),
                    a.phase
                )
            })
            .collect();
        let detail = format!(
            "the group did not settle by t={}: {}",
            self.now - T0,
            states.join("; ")
        );
        self.anomaly(AnomalyKind::Liveness, detail);
    }
}
