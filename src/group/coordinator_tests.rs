//! Tests of the group coordinator's state machine, driven with explicit time
//! (no threads, no sleeps).
//!
//! A model of the cluster and of the real consumer's membership logic
//! (`client::group::MembershipShared` and `Consumer::apply_group_changes`)
//! drives [`GroupCoordinator`] through joins, heartbeats whose answers get
//! lost, reconciliations split between their revoke and add steps, leaves,
//! static restarts, network partitions, stalled applications, new topics and
//! partitions, commits and coordinator failovers. After every step:
//!
//! - safety: the partitions the consumers hold (those that do not consider
//!   themselves expired) are pairwise disjoint;
//! - the coordinator's view: a partition is in at most one member's
//!   `assigned ∪ pending`, and what a consumer holds is within its member's;
//! - durability: every record round-trips through its encoding, and a
//!   coordinator rebuilt from the log describes the same group.
//!
//! After the random steps, a settle phase checks liveness: the group becomes
//! Stable with every subscribed partition held by exactly one consumer,
//! balanced within one.
//!
//! The model follows the consumer, including the two rules of
//! [`ClientFixes`] that keep it safe whatever the timing; the
//! `without_rule_*` tests switch one off and show safety break. Explicit
//! scenarios replay the
//! coordinator bugs the property found (each fails without its fix), and the
//! last tests drive the coordinator's API by hand (commit fencing, expiry
//! times, static members, eager and cooperative revocation).
//!
//! `PROPTEST_CASES=n` runs the property longer than its default 128 cases.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::coordinator::{GroupCoordinator, Outcome, TopicCounts};
use super::records::GroupRecord;
use super::{GroupDescription, GroupState, MemberDescription, built_in_assignors};
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::protocol::{
    CommittedOffsets, DEFAULT_ASSIGNOR, GroupHeartbeatRequest, GroupHeartbeatResponse,
    JOIN_GROUP_EPOCH, LEAVE_GROUP_EPOCH, NodeId, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetFetchRequest, STATIC_LEAVE_EPOCH, Subscription,
};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// The `__consumer_offsets` partition the group lives in.
const P: u32 = 0;
const NODE: NodeId = 1;
const GROUP: &str = "g";
/// The consumers' time limits: `session_timeout_ms`, and
/// `max_poll_interval_ms`, which is also their rebalance (revocation)
/// timeout. The property also tries rebalance timeouts at most the session
/// timeout.
#[derive(Debug, Clone, Copy)]
struct Limits {
    session: Millis,
    rebalance: Millis,
}

const LIMITS: Limits = Limits {
    session: 3_000,
    rebalance: 5_000,
};
const START: Millis = 1_000_000;
const MAX_CLIENTS: usize = 5;
const MAX_TOPICS: usize = 4;
const MAX_PARTITIONS: u32 = 8;

fn tp(topic: &str, partition: u32) -> TopicPartition {
    TopicPartition::new(topic, partition).unwrap()
}

fn topics(list: &[(&str, u32)]) -> TopicCounts {
    list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
}

fn subscribe(list: &[&str]) -> Subscription {
    Subscription::Topics(list.iter().map(|t| t.to_string()).collect())
}

fn set(tps: &[TopicPartition]) -> BTreeSet<TopicPartition> {
    tps.iter().cloned().collect()
}

// ----- the coordinator's broker ---------------------------------------------

/// A coordinator with its `__consumer_offsets` partition: every record it
/// returns is appended (through its encoding) and acknowledged with
/// `written`; a failover loads a new coordinator from that log.
struct Coordinator {
    inner: GroupCoordinator,
    leader_epoch: i32,
    log: Vec<GroupRecord>,
}

impl Coordinator {
    fn new(now: Millis) -> Self {
        let mut c = Self {
            inner: GroupCoordinator::new(NODE, built_in_assignors()),
            leader_epoch: 0,
            log: Vec::new(),
        };
        c.reload(now);
        c
    }

    /// A new coordinator (a new leader epoch) built from the log.
    fn reload(&mut self, now: Millis) {
        self.leader_epoch += 1;
        let mut inner = GroupCoordinator::new(NODE, built_in_assignors());
        inner
            .load(
                P,
                self.leader_epoch,
                self.log.clone(),
                self.log.len() as u64,
                now,
            )
            .expect("the log loads");
        assert!(inner.is_loaded(P, self.leader_epoch));
        assert_eq!(inner.loaded(), vec![(P, self.leader_epoch)]);
        self.inner = inner;
    }

    /// A failover: the new coordinator must describe the group as the old
    /// one did.
    fn failover(&mut self, now: Millis) {
        let before = self.describe(GROUP);
        self.reload(now);
        assert_eq!(
            self.describe(GROUP),
            before,
            "a coordinator loaded from the log describes the group differently"
        );
    }

    fn append(&mut self, group: &str, records: Vec<GroupRecord>) {
        if records.is_empty() {
            return;
        }
        for record in records {
            let (key, value) = record.encode().expect("records encode");
            let back = GroupRecord::decode(&key, value.as_deref()).expect("records decode");
            assert_eq!(back, record, "a record does not round-trip");
            self.log.push(back);
        }
        self.inner.written(P, group, self.log.len() as u64);
    }

    fn settle<T>(&mut self, group: &str, outcome: Outcome<T>) -> T {
        if outcome.records.is_empty() {
            assert!(
                outcome.wait_for <= self.log.len() as u64,
                "an answer waits for records never written"
            );
        }
        self.append(group, outcome.records);
        outcome.value
    }

    fn heartbeat(
        &mut self,
        request: GroupHeartbeatRequest,
        topics: &TopicCounts,
        now: Millis,
    ) -> Result<GroupHeartbeatResponse> {
        let group = request.group.clone();
        let outcome = self.inner.heartbeat(P, request, topics, now)?;
        Ok(self.settle(&group, outcome))
    }

    fn commit(&mut self, request: OffsetCommitRequest, now: Millis) -> Result<()> {
        let group = request.group.clone();
        // Every partition committed to exists (`unknown_partitions_are_not_committed`
        // tests the check).
        let mut topics = TopicCounts::new();
        for (tp, _) in &request.offsets {
            let count = topics.entry(tp.topic().to_string()).or_default();
            *count = (*count).max(tp.partition() + 1);
        }
        let outcome = self.inner.commit(P, request, &topics, now)?;
        self.settle(&group, outcome);
        Ok(())
    }

    fn fetch(&mut self, group: &str, partitions: Option<Vec<TopicPartition>>) -> CommittedOffsets {
        let request = OffsetFetchRequest {
            group: group.to_string(),
            partitions,
        };
        let outcome = self.inner.fetch_offsets(P, &request).expect("fetch");
        self.settle(group, outcome)
    }

    fn describe(&mut self, group: &str) -> Option<GroupDescription> {
        match self.inner.describe(P, group) {
            Ok(outcome) => {
                assert!(outcome.wait_for <= self.log.len() as u64);
                Some(outcome.value)
            }
            Err(Error::GroupIdNotFound { .. }) => None,
            Err(e) => panic!("describe: {e}"),
        }
    }

    /// The broker's tick: it runs when the next deadline is due; a tick
    /// before it must change nothing.
    fn tick(&mut self, topics: &TopicCounts, now: Millis) {
        let due = self.inner.next_deadline().is_some_and(|at| at <= now);
        let writes = self.inner.tick(topics, now);
        assert!(due || writes.is_empty(), "a tick before any deadline wrote");
        for write in writes {
            assert_eq!(write.partition, P);
            self.append(&write.group, write.records);
        }
    }
}

// ----- the consumers ----------------------------------------------------------

/// Two rules of `client::group` and `Consumer::apply_group_changes` without
/// which safety breaks even with a correct coordinator (the `without_rule_*`
/// tests switch one off). The consumer follows both (earlier it did not);
/// the properties run with both.
#[derive(Debug, Clone, Copy)]
struct ClientFixes {
    /// When the membership ends (`MemberCore::reset`) while the application
    /// is between the revoke and add steps of a reconciliation, the
    /// reconciliation is abandoned. Without the rule, with nothing held and
    /// no newer assignment stored, `reset` marks nothing lost, so the
    /// application would add the dead membership's partitions and keep them,
    /// and rejoin acknowledging that membership's assignment.
    abandon_reconciliation: bool,
    /// Any heartbeat whose answer did not arrive may have asked for a
    /// revocation, and the coordinator times a revocation from when it asked.
    /// So a revocation is timed (`MemberCore::revocation_since`) from the
    /// first heartbeat since the last answer that arrived, and a member that
    /// gets no answer for its rebalance timeout gives up (this matters when
    /// that is shorter than its session timeout). Timed only from the
    /// heartbeat whose answer showed it, a member could still be consuming
    /// partitions the coordinator already gave away.
    time_revocation_from_unanswered: bool,
}

impl ClientFixes {
    const ALL: Self = Self {
        abandon_reconciliation: true,
        time_revocation_from_unanswered: true,
    };
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Running,
    /// Cut off from the coordinator: its heartbeats never arrive, but the
    /// application keeps consuming what it holds.
    Partitioned,
    /// Closed or killed: it holds nothing.
    Dead,
}

/// A consumer as `client::group` and `Consumer::apply_group_changes`
/// behave: a heartbeat thread reporting `owned`/`acked` and storing the
/// latest assignment as the target, and an application thread that
/// revokes, then adds, then acknowledges.
#[derive(Debug, Clone)]
struct Client {
    fixes: ClientFixes,
    limits: Limits,
    name: String,
    instance: Option<String>,
    subscription: Subscription,
    life: Life,
    /// The application is not polling.
    stalled: bool,
    member_id: String,
    epoch: i32,
    /// The partitions the application holds (`MemberCore::owned`).
    held: BTreeSet<TopicPartition>,
    acked: u64,
    /// The latest assignment the heartbeat thread received and the
    /// application has not taken yet.
    target: Option<(u64, BTreeSet<TopicPartition>)>,
    /// An assignment the application took and revoked for, and has yet to
    /// add the new partitions of (a split reconciliation).
    in_progress: Option<(u64, BTreeSet<TopicPartition>)>,
    /// Membership ended: the application drops everything at its next poll.
    lost: bool,
    last_poll: Millis,
    last_ok_sent: Option<Millis>,
    revocation_since: Option<Millis>,
    /// When the first heartbeat since the last answer was sent.
    unanswered_since: Option<Millis>,
}

impl Client {
    fn new(
        fixes: ClientFixes,
        limits: Limits,
        name: String,
        instance: Option<String>,
        subscription: Subscription,
        now: Millis,
    ) -> Self {
        Self {
            fixes,
            limits,
            name,
            instance,
            subscription,
            life: Life::Running,
            stalled: false,
            member_id: String::new(),
            epoch: JOIN_GROUP_EPOCH,
            held: BTreeSet::new(),
            acked: 0,
            target: None,
            in_progress: None,
            lost: false,
            last_poll: now,
            last_ok_sent: None,
            revocation_since: None,
            unanswered_since: None,
        }
    }

    /// `MemberCore::expired`.
    fn expired(&self, now: Millis) -> bool {
        self.epoch > 0
            && (now - self.last_poll > self.limits.rebalance
                || self
                    .last_ok_sent
                    .is_some_and(|at| now - at > self.limits.session)
                || self
                    .revocation_since
                    .is_some_and(|at| now - at > self.limits.rebalance)
                || self
                    .unanswered_since
                    .is_some_and(|at| now - at > self.limits.rebalance))
    }

    /// Whether what it holds counts: it is alive and does not know its
    /// partitions are lost.
    fn active(&self) -> bool {
        self.life != Life::Dead && !self.lost
    }

    /// Its heartbeat thread sends heartbeats (it stops when the
    /// application stops polling).
    fn heartbeating(&self, now: Millis) -> bool {
        self.life != Life::Dead && now - self.last_poll <= self.limits.rebalance
    }

    /// `MemberCore::reset` (see [`ClientFixes::abandon_reconciliation`]).
    fn reset(&mut self) {
        if self.fixes.abandon_reconciliation {
            self.in_progress = None;
        }
        self.unanswered_since = None;
        self.lost |= !self.held.is_empty() || self.target.is_some();
        self.member_id.clear();
        self.epoch = JOIN_GROUP_EPOCH;
        self.target = None;
        self.acked = 0;
        self.last_ok_sent = None;
        self.revocation_since = None;
    }

    fn request(&self, member_epoch: i32, assignor: &str) -> GroupHeartbeatRequest {
        GroupHeartbeatRequest {
            group: GROUP.to_string(),
            member_id: self.member_id.clone(),
            member_epoch,
            group_instance_id: self.instance.clone(),
            client_id: self.name.clone(),
            subscription: Some(self.subscription.clone()),
            assignor: Some(assignor.to_string()),
            owned: Some(self.held.iter().cloned().collect()),
            acked_assignment: self.acked,
            session_timeout_ms: Some(self.limits.session as u32),
            rebalance_timeout_ms: Some(self.limits.rebalance as u32),
            max_wait_ms: 0,
        }
    }

    /// A heartbeat got no answer (see
    /// [`ClientFixes::time_revocation_from_unanswered`]).
    fn no_answer(&mut self, sent: Millis) {
        if self.fixes.time_revocation_from_unanswered {
            self.unanswered_since.get_or_insert(sent);
        }
    }

    /// `MembershipShared::handle` for an answer.
    fn on_response(&mut self, response: GroupHeartbeatResponse, sent: Millis) {
        self.member_id = response.member_id;
        self.epoch = response.member_epoch;
        self.last_ok_sent = Some(sent);
        let asked_since = self.unanswered_since.take().unwrap_or(sent);
        let assignment: BTreeSet<TopicPartition> = response.assignment.into_iter().collect();
        if self.held.is_subset(&assignment) {
            self.revocation_since = None;
        } else {
            self.revocation_since.get_or_insert(asked_since);
        }
        if response.assignment_id != self.acked || assignment != self.held {
            self.target = Some((response.assignment_id, assignment));
        }
    }

    /// The topics its subscription covers.
    fn resolve(&self, topics: &TopicCounts) -> BTreeSet<String> {
        match &self.subscription {
            Subscription::Topics(names) => names.clone(),
            Subscription::Pattern(p) => {
                let re = regex::Regex::new(&format!("^(?:{p})$")).unwrap();
                topics.keys().filter(|t| re.is_match(t)).cloned().collect()
            }
        }
    }
}

// ----- the simulation -------------------------------------------------------

#[derive(Debug, Clone, Copy)]
enum CommitKind {
    /// The member's current epoch (as the coordinator has it): succeeds.
    Current,
    /// Its previous epoch, for partitions it owns (and, with `extra`, one
    /// it does not): succeeds only for owned partitions.
    Previous { extra: bool },
    /// An older epoch that is neither current nor previous: fenced.
    Stale(usize),
    /// An epoch the member never had: fenced.
    Future,
    /// What the consumer itself would send: its member id, epoch and
    /// held partitions.
    ClientView,
    /// A member id the group never had.
    Unknown,
    /// The id of a static member that was replaced.
    Replaced(usize),
}

#[derive(Debug, Clone)]
enum Op {
    Heartbeat {
        c: usize,
        lose: bool,
    },
    Poll {
        c: usize,
        split: bool,
    },
    Finish(usize),
    /// Time moves by `dt`, then every consumer heartbeats (answers lost
    /// where `lose` says) and polls.
    Round {
        dt: Millis,
        lose: Vec<bool>,
    },
    Advance(Millis),
    /// Time moves to the coordinator's next deadline, plus this.
    ToDeadline(Millis),
    Partition(usize),
    Heal(usize),
    Stall(usize),
    Unstall(usize),
    Leave(usize),
    Kill(usize),
    Restart(usize),
    AddPartitions {
        topic: usize,
        n: u32,
    },
    CreateTopic,
    Commit {
        c: usize,
        kind: CommitKind,
    },
    Failover,
    /// The coordinator fails before the records of this consumer's
    /// heartbeat (or, `None`, of a due tick) were replicated: they are
    /// lost, and so is the answer.
    LossyFailover(Option<usize>),
}

struct Sim {
    fixes: ClientFixes,
    limits: Limits,
    assignor: String,
    topics: TopicCounts,
    now: Millis,
    coord: Coordinator,
    clients: Vec<Client>,
    /// Per member id: (epoch, previous epoch), as observed.
    epochs: BTreeMap<String, (i32, i32)>,
    /// Replaced static members' ids, oldest first.
    replaced: Vec<String>,
    next_offset: u64,
    trace: Vec<String>,
}

impl Sim {
    fn new(
        fixes: ClientFixes,
        limits: Limits,
        assignor: &str,
        topics: TopicCounts,
        clients: Vec<(Option<String>, Subscription)>,
    ) -> Self {
        let now = START;
        let clients = clients
            .into_iter()
            .enumerate()
            .map(|(i, (instance, sub))| {
                Client::new(fixes, limits, format!("c{i}"), instance, sub, now)
            })
            .collect();
        Self {
            fixes,
            limits,
            assignor: assignor.to_string(),
            topics,
            now,
            coord: Coordinator::new(now),
            clients,
            epochs: BTreeMap::new(),
            replaced: Vec::new(),
            next_offset: 0,
            trace: Vec::new(),
        }
    }

    fn note(&mut self, event: String) {
        self.trace.push(format!("t={} {event}", self.now - START));
    }

    fn dump(&mut self) -> String {
        let desc = self.coord.describe(GROUP);
        let mut out = String::new();
        out.push_str("--- trace ---\n");
        for line in &self.trace {
            out.push_str(line);
            out.push('\n');
        }
        out.push_str("--- clients ---\n");
        for c in &self.clients {
            out.push_str(&format!(
                "{} {:?} member={} epoch={} held={:?} acked={} target={:?} in_progress={:?} lost={} stalled={} last_poll={} ok_sent={:?} revoking_since={:?} unanswered_since={:?}\n",
                c.name,
                c.life,
                c.member_id,
                c.epoch,
                c.held.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                c.acked,
                c.target.as_ref().map(|(id, t)| (id, t.iter().map(|t| t.to_string()).collect::<Vec<_>>())),
                c.in_progress.as_ref().map(|(id, t)| (id, t.iter().map(|t| t.to_string()).collect::<Vec<_>>())),
                c.lost,
                c.stalled,
                c.last_poll - START,
                c.last_ok_sent.map(|t| t - START),
                c.revocation_since.map(|t| t - START),
                c.unanswered_since.map(|t| t - START),
            ));
        }
        out.push_str(&format!("--- coordinator ---\n{desc:#?}\n"));
        out
    }

    fn run(&mut self, op: &Op) {
        let n = self.clients.len();
        match op {
            Op::Heartbeat { c, lose } => self.heartbeat(c % n, *lose),
            Op::Poll { c, split } => self.poll(c % n, *split),
            Op::Finish(c) => self.finish(c % n),
            Op::Round { dt, lose } => {
                self.advance_to(self.now + dt);
                for i in 0..n {
                    self.heartbeat(i, lose.get(i).copied().unwrap_or(false));
                    self.poll(i, false);
                }
            }
            Op::Advance(dt) => self.advance_to(self.now + dt),
            Op::ToDeadline(delta) => {
                if let Some(at) = self.coord.inner.next_deadline() {
                    self.advance_to(at + delta);
                }
            }
            Op::Partition(c) => {
                let c = &mut self.clients[c % n];
                if c.life == Life::Running {
                    c.life = Life::Partitioned;
                    let name = c.name.clone();
                    self.note(format!("{name} partitioned away"));
                }
            }
            Op::Heal(c) => {
                let c = &mut self.clients[c % n];
                if c.life == Life::Partitioned {
                    c.life = Life::Running;
                    let name = c.name.clone();
                    self.note(format!("{name} reconnected"));
                }
            }
            Op::Stall(c) => {
                let c = &mut self.clients[c % n];
                if c.life != Life::Dead && !c.stalled {
                    c.stalled = true;
                    let name = c.name.clone();
                    self.note(format!("{name} stops polling"));
                }
            }
            Op::Unstall(c) => {
                let c = &mut self.clients[c % n];
                if c.stalled {
                    c.stalled = false;
                    let name = c.name.clone();
                    self.note(format!("{name} polls again"));
                }
            }
            Op::Leave(c) => self.leave(c % n),
            Op::Kill(c) => {
                let c = &mut self.clients[c % n];
                if c.life != Life::Dead {
                    c.life = Life::Dead;
                    c.held.clear();
                    let name = c.name.clone();
                    self.note(format!("{name} killed"));
                }
            }
            Op::Restart(c) => {
                let i = c % n;
                if self.clients[i].life == Life::Dead {
                    let old = &self.clients[i];
                    self.clients[i] = Client::new(
                        self.fixes,
                        self.limits,
                        old.name.clone(),
                        old.instance.clone(),
                        old.subscription.clone(),
                        self.now,
                    );
                    self.note(format!("c{i} restarted"));
                }
            }
            Op::AddPartitions { topic, n } => {
                let names: Vec<String> = self.topics.keys().cloned().collect();
                let name = names[topic % names.len()].clone();
                let count = self.topics.get_mut(&name).unwrap();
                let new = (*count + n).min(MAX_PARTITIONS);
                if new != *count {
                    *count = new;
                    self.note(format!("{name} now has {new} partitions"));
                }
            }
            Op::CreateTopic => {
                if self.topics.len() < MAX_TOPICS {
                    let name = (0..)
                        .map(|k| format!("t{k}"))
                        .find(|t| !self.topics.contains_key(t))
                        .unwrap();
                    self.topics.insert(name.clone(), 2);
                    self.note(format!("{name} created with 2 partitions"));
                }
            }
            Op::Commit { c, kind } => self.commit(c % n, *kind),
            Op::Failover => {
                self.note("coordinator failover".to_string());
                self.coord.failover(self.now);
            }
            Op::LossyFailover(c) => self.lossy_failover(c.map(|c| c % n)),
        }
        self.check();
    }

    /// Time moves on: consumers notice their own expiry, the coordinator
    /// ticks.
    fn advance_to(&mut self, at: Millis) {
        if at <= self.now {
            return;
        }
        self.now = at;
        self.note("time".to_string());
        self.expire_clients();
        self.coord.tick(&self.topics, self.now);
        self.check();
    }

    /// The heartbeat thread's check of the member's own limits.
    fn expire_clients(&mut self) {
        let now = self.now;
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            if c.life == Life::Dead || !c.expired(now) {
                continue;
            }
            let stalled = now - c.last_poll > c.limits.rebalance;
            let leave =
                (stalled && c.life == Life::Running).then(|| c.request(LEAVE_GROUP_EPOCH, ""));
            c.reset();
            let name = c.name.clone();
            self.note(format!("{name} expired (own limits), drops its partitions"));
            if let Some(mut request) = leave {
                request.assignor = Some(self.assignor.clone());
                request.owned = Some(Vec::new());
                request.acked_assignment = 0;
                let result = self.coord.heartbeat(request, &self.topics, now);
                self.note(format!(
                    "{name} leaves after stalling: {:?}",
                    result.map(|_| ())
                ));
            }
        }
    }

    fn heartbeat(&mut self, i: usize, lose: bool) {
        let now = self.now;
        if !self.clients[i].heartbeating(now) {
            return;
        }
        let c = &self.clients[i];
        let name = c.name.clone();
        if c.life == Life::Partitioned {
            self.clients[i].no_answer(now);
            self.note(format!("{name} heartbeat does not arrive"));
            return;
        }
        let request = c.request(c.epoch, &self.assignor);
        let summary = format!(
            "{name} heartbeat member={} epoch={} owned={:?} acked={}",
            request.member_id,
            request.member_epoch,
            request
                .owned
                .iter()
                .flatten()
                .map(|t| t.to_string())
                .collect::<Vec<_>>(),
            request.acked_assignment
        );
        // A static member joining replaces its previous member.
        let replacing = match (&c.instance, c.epoch) {
            (Some(instance), JOIN_GROUP_EPOCH) => self.coord.describe(GROUP).and_then(|d| {
                d.members
                    .into_iter()
                    .find(|m| m.group_instance_id.as_ref() == Some(instance))
                    .map(|m| m.member_id)
            }),
            _ => None,
        };
        let result = self.coord.heartbeat(request, &self.topics, now);
        if let (Some(old), Ok(response)) = (replacing, &result)
            && response.member_id != old
        {
            if let Some(&e) = self.epochs.get(&old) {
                self.epochs.insert(response.member_id.clone(), e);
            }
            self.replaced.push(old);
        }
        self.note(format!(
            "{summary} -> {}{}",
            match &result {
                Ok(r) => format!(
                    "member={} epoch={} assignment#{}={:?} reconciling={}",
                    r.member_id,
                    r.member_epoch,
                    r.assignment_id,
                    r.assignment
                        .iter()
                        .map(|t| t.to_string())
                        .collect::<Vec<_>>(),
                    r.reconciling
                ),
                Err(e) => format!("error {e}"),
            },
            if lose { " (LOST)" } else { "" }
        ));
        if lose {
            self.clients[i].no_answer(now);
            return;
        }
        match result {
            Ok(response) => self.clients[i].on_response(response, now),
            Err(Error::UnknownMemberId { .. } | Error::FencedMemberEpoch { .. }) => {
                self.clients[i].reset()
            }
            Err(Error::FencedInstanceId { .. }) => {
                // Fatal: the application's next poll fails and drops all.
                let c = &mut self.clients[i];
                c.reset();
                c.life = Life::Dead;
                c.held.clear();
            }
            Err(e) => panic!("unexpected heartbeat error: {e}\n{}", self.dump()),
        }
    }

    /// The application's poll: drops lost partitions, then applies the
    /// latest assignment (revoke, then add unless `split`, then ack).
    fn poll(&mut self, i: usize, split: bool) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.life == Life::Dead || c.stalled || c.in_progress.is_some() {
            return;
        }
        c.last_poll = now;
        if c.lost {
            c.held.clear();
            c.lost = false;
        }
        let Some((id, target)) = c.target.take() else {
            return;
        };
        c.held.retain(|tp| target.contains(tp));
        if split {
            c.in_progress = Some((id, target));
        } else {
            c.held.extend(target);
            c.acked = id;
        }
        let event = format!(
            "{} applies #{id}{} held={:?}",
            c.name,
            if split {
                " (revoked, adding later)"
            } else {
                ""
            },
            c.held.iter().map(|t| t.to_string()).collect::<Vec<_>>()
        );
        self.note(event);
    }

    /// The second half of a split reconciliation: add, then ack.
    fn finish(&mut self, i: usize) {
        let c = &mut self.clients[i];
        if c.life == Life::Dead || c.stalled {
            return;
        }
        let Some((id, target)) = c.in_progress.take() else {
            return;
        };
        c.held.extend(target);
        c.acked = id;
        let event = format!(
            "{} finishes #{id} held={:?}",
            c.name,
            c.held.iter().map(|t| t.to_string()).collect::<Vec<_>>()
        );
        self.note(event);
    }

    /// `Consumer::close`: the application stops (dropping everything) and
    /// the member leaves (a static member only for now).
    fn leave(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        if c.life == Life::Dead || c.stalled || c.in_progress.is_some() {
            return;
        }
        let reachable = c.life == Life::Running;
        let epoch = if c.instance.is_some() {
            STATIC_LEAVE_EPOCH
        } else {
            LEAVE_GROUP_EPOCH
        };
        let request = (c.epoch > 0).then(|| {
            let mut r = c.request(epoch, "");
            r.owned = Some(Vec::new());
            r.acked_assignment = 0;
            r
        });
        c.held.clear();
        c.life = Life::Dead;
        let name = c.name.clone();
        match request {
            Some(mut request) if reachable => {
                request.assignor = Some(self.assignor.clone());
                let result = self.coord.heartbeat(request, &self.topics, now);
                self.note(format!(
                    "{name} closes, leaves with {epoch}: {:?}",
                    result.map(|_| ())
                ));
            }
            _ => self.note(format!("{name} closes without leaving")),
        }
    }

    /// Whether the coordinator still remembers `id` as a replaced static
    /// member (it remembers the last 32).
    fn fenced_instance(&self, id: &str) -> bool {
        self.replaced.iter().rev().take(32).any(|r| r == id)
    }

    fn commit(&mut self, i: usize, kind: CommitKind) {
        let now = self.now;
        let desc = self.coord.describe(GROUP);
        let member_of = |id: &str| -> Option<MemberDescription> {
            desc.as_ref()?
                .members
                .iter()
                .find(|m| m.member_id == id)
                .cloned()
        };
        let c = &self.clients[i];
        let all: Vec<TopicPartition> = self
            .topics
            .iter()
            .flat_map(|(t, &n)| (0..n).map(move |p| tp(t, p)))
            .collect();
        // (member id, epoch, partitions, what must happen)
        enum Expect {
            Ok,
            Fenced,
            Unknown,
            FencedInstance,
            NotAssigned,
        }
        let member = member_of(&c.member_id);
        let plan = match kind {
            CommitKind::Current => member.map(|m| {
                let tps: Vec<TopicPartition> = if c.held.is_empty() {
                    all.iter().take(1).cloned().collect()
                } else {
                    c.held.iter().cloned().collect()
                };
                // In its current epoch a member commits only what it owns
                // (assigned or being revoked).
                let owned = |tp: &TopicPartition| {
                    m.assignment.contains(tp) || m.pending_revocation.contains(tp)
                };
                let expect = if tps.iter().all(owned) {
                    Expect::Ok
                } else {
                    Expect::NotAssigned
                };
                (m.member_id, m.member_epoch, tps, expect)
            }),
            CommitKind::Previous { extra } => member.and_then(|m| {
                let (epoch, previous) = self.epochs[&m.member_id];
                assert_eq!(epoch, m.member_epoch);
                if previous == epoch {
                    return None;
                }
                let owned: BTreeSet<TopicPartition> = m
                    .assignment
                    .iter()
                    .chain(&m.pending_revocation)
                    .cloned()
                    .collect();
                let mut tps: Vec<TopicPartition> = owned.iter().cloned().collect();
                let mut expect = Expect::Ok;
                if extra && let Some(other) = all.iter().find(|tp| !owned.contains(*tp)) {
                    tps.push(other.clone());
                    expect = Expect::Fenced;
                }
                Some((m.member_id, previous, tps, expect))
            }),
            CommitKind::Stale(k) => member.and_then(|m| {
                let (epoch, previous) = self.epochs[&m.member_id];
                let stale: Vec<i32> = (0..epoch).filter(|e| *e != previous).collect();
                let e = *stale.get(k % stale.len().max(1))?;
                Some((
                    m.member_id,
                    e,
                    c.held.iter().cloned().collect(),
                    Expect::Fenced,
                ))
            }),
            CommitKind::Future => member.map(|m| {
                (
                    m.member_id,
                    m.member_epoch + 1,
                    c.held.iter().cloned().collect(),
                    Expect::Fenced,
                )
            }),
            CommitKind::ClientView => {
                if !c.active() || c.member_id.is_empty() {
                    None
                } else {
                    let tps: Vec<TopicPartition> = c.held.iter().cloned().collect();
                    let expect = match &member {
                        None if self.fenced_instance(&c.member_id) => Expect::FencedInstance,
                        None => Expect::Unknown,
                        Some(m) => {
                            let (epoch, previous) = self.epochs[&m.member_id];
                            let owned: BTreeSet<&TopicPartition> =
                                m.assignment.iter().chain(&m.pending_revocation).collect();
                            if c.epoch == epoch
                                || (c.epoch == previous && tps.iter().all(|t| owned.contains(t)))
                            {
                                Expect::Ok
                            } else {
                                Expect::Fenced
                            }
                        }
                    };
                    Some((c.member_id.clone(), c.epoch, tps, expect))
                }
            }
            CommitKind::Unknown => Some((
                "ghost".to_string(),
                1,
                all.iter().take(1).cloned().collect(),
                Expect::Unknown,
            )),
            CommitKind::Replaced(k) => {
                if self.replaced.is_empty() {
                    None
                } else {
                    let id = &self.replaced[k % self.replaced.len()];
                    let expect = if self.fenced_instance(id) {
                        Expect::FencedInstance
                    } else {
                        Expect::Unknown
                    };
                    Some((id.clone(), 1, all.iter().take(1).cloned().collect(), expect))
                }
            }
        };
        let Some((member_id, epoch, tps, expect)) = plan else {
            return;
        };
        self.next_offset += 1;
        let offset = self.next_offset;
        let request = OffsetCommitRequest {
            group: GROUP.to_string(),
            member_id: member_id.clone(),
            member_epoch: epoch,
            offsets: tps
                .iter()
                .map(|tp| (tp.clone(), OffsetAndMetadata::new(offset)))
                .collect(),
        };
        let result = self.coord.commit(request, now);
        self.note(format!(
            "commit {kind:?} as {member_id}@{epoch} {:?} -> {:?}",
            tps.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
            result
        ));
        let fine = matches!(
            (&expect, &result),
            (Expect::Ok, Ok(()))
                | (Expect::Fenced, Err(Error::FencedMemberEpoch { .. }))
                | (Expect::Unknown, Err(Error::UnknownMemberId { .. }))
                | (Expect::FencedInstance, Err(Error::FencedInstanceId { .. }))
                | (Expect::NotAssigned, Err(Error::PartitionNotAssigned { .. }))
        );
        if !fine {
            let what = match expect {
                Expect::Ok => "success",
                Expect::Fenced => "FencedMemberEpoch",
                Expect::Unknown => "UnknownMemberId",
                Expect::FencedInstance => "FencedInstanceId",
                Expect::NotAssigned => "PartitionNotAssigned",
            };
            panic!(
                "commit {kind:?}: expected {what}, got {result:?}\n{}",
                self.dump()
            );
        }
        if result.is_ok() {
            let fetched = self.coord.fetch(GROUP, Some(tps.clone()));
            for tp in &tps {
                let got = fetched.get(tp).map(|o| (o.offset, o.commit_timestamp));
                assert_eq!(got, Some((offset, now)), "committed offset of {tp}");
            }
        }
    }

    fn lossy_failover(&mut self, client: Option<usize>) {
        if client.is_none() {
            let Some(at) = self.coord.inner.next_deadline() else {
                return;
            };
            if at > self.now {
                self.now = at;
                self.note("time".to_string());
                self.expire_clients();
            }
        }
        let now = self.now;
        let before = self.coord.describe(GROUP);
        match client {
            Some(i) => {
                let c = &self.clients[i];
                if c.life != Life::Running || !c.heartbeating(now) {
                    return;
                }
                let request = c.request(c.epoch, &self.assignor);
                let _ = self.coord.inner.heartbeat(P, request, &self.topics, now);
                let name = c.name.clone();
                self.clients[i].no_answer(now);
                self.note(format!(
                    "{name} heartbeat: coordinator fails before its records are replicated (answer lost)"
                ));
            }
            None => {
                let _ = self.coord.inner.tick(&self.topics, now);
                self.note("tick: coordinator fails before its records are replicated".to_string());
            }
        }
        self.coord.reload(self.now);
        assert_eq!(
            self.coord.describe(GROUP),
            before,
            "after losing unreplicated records the group must be as before them"
        );
    }

    /// The invariants that hold after every step.
    fn check(&mut self) {
        // Safety: no partition is held by two consumers.
        let mut holder: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
        let mut clash = None;
        for c in self.clients.iter().filter(|c| c.active()) {
            for tp in &c.held {
                if let Some(other) = holder.insert(tp, &c.name) {
                    clash = Some(format!("{tp} is held by {other} and {}", c.name));
                }
            }
        }
        if let Some(clash) = clash {
            panic!("SAFETY: {clash}\n{}", self.dump());
        }
        let desc = self.coord.describe(GROUP);
        let mut problems = Vec::new();
        if let Some(desc) = &desc {
            // The coordinator's view: one owner per partition.
            let mut owner: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
            let mut targeted: BTreeMap<&TopicPartition, &str> = BTreeMap::new();
            for m in &desc.members {
                for tp in m.assignment.iter().chain(&m.pending_revocation) {
                    if let Some(other) = owner.insert(tp, &m.member_id) {
                        problems.push(format!(
                            "{tp} is in the assignment or pending revocation of {other} and {}",
                            m.member_id
                        ));
                    }
                }
                for tp in &m.target {
                    if let Some(other) = targeted.insert(tp, &m.member_id) {
                        problems.push(format!(
                            "{tp} is in the targets of {other} and {}",
                            m.member_id
                        ));
                    }
                    if self
                        .topics
                        .get(tp.topic())
                        .is_none_or(|&n| tp.partition() >= n)
                    {
                        problems.push(format!("{tp} is targeted but does not exist"));
                    }
                }
            }
            // What consumers hold is their member's.
            for c in self
                .clients
                .iter()
                .filter(|c| c.active() && !c.held.is_empty())
            {
                match desc.members.iter().find(|m| m.member_id == c.member_id) {
                    None => problems.push(format!(
                        "{} holds {:?} but its member {:?} is gone",
                        c.name, c.held, c.member_id
                    )),
                    Some(m) => {
                        let mine: BTreeSet<&TopicPartition> =
                            m.assignment.iter().chain(&m.pending_revocation).collect();
                        for tp in &c.held {
                            if !mine.contains(tp) {
                                problems.push(format!(
                                    "{} holds {tp}, not in its member's assignment or pending revocation",
                                    c.name
                                ));
                            }
                        }
                    }
                }
            }
            for m in &desc.members {
                let e = self.epochs.entry(m.member_id.clone()).or_insert((0, 0));
                if e.0 != m.member_epoch {
                    *e = (m.member_epoch, e.0);
                }
            }
        } else {
            // A deleted group forgets everything, replaced members too.
            self.replaced.clear();
            for c in self
                .clients
                .iter()
                .filter(|c| c.active() && !c.held.is_empty())
            {
                problems.push(format!(
                    "{} holds {:?} but the group is gone",
                    c.name, c.held
                ));
            }
        }
        if !problems.is_empty() {
            panic!("INVARIANT: {}\n{}", problems.join("\n"), self.dump());
        }
    }

    /// Liveness: once nothing goes wrong any more, the group settles.
    fn settle(&mut self) {
        self.note("=== settle ===".to_string());
        for c in &mut self.clients {
            c.stalled = false;
            if c.life == Life::Partitioned {
                c.life = Life::Running;
            }
        }
        for _ in 0..400 {
            self.advance_to(self.now + 100);
            for i in 0..self.clients.len() {
                self.finish(i);
                self.poll(i, false);
                self.heartbeat(i, false);
                self.poll(i, false);
                self.check();
            }
            if self.settled() {
                self.check_balance();
                return;
            }
        }
        panic!("LIVENESS: the group never settled\n{}", self.dump());
    }

    fn settled(&mut self) -> bool {
        let desc = self.coord.describe(GROUP);
        let live: Vec<&Client> = self
            .clients
            .iter()
            .filter(|c| c.life != Life::Dead)
            .collect();
        if live.iter().any(|c| {
            c.lost || c.target.is_some() || c.in_progress.is_some() || c.member_id.is_empty()
        }) {
            return false;
        }
        let members: Vec<&MemberDescription> = desc.iter().flat_map(|d| &d.members).collect();
        let ids: BTreeSet<&str> = members.iter().map(|m| m.member_id.as_str()).collect();
        let live_ids: BTreeSet<&str> = live.iter().map(|c| c.member_id.as_str()).collect();
        if ids != live_ids {
            return false;
        }
        if live.is_empty() {
            return true;
        }
        let desc = desc.as_ref().unwrap();
        if desc.state != GroupState::Stable {
            return false;
        }
        for c in &live {
            let m = members.iter().find(|m| m.member_id == c.member_id).unwrap();
            if set(&m.assignment) != c.held {
                return false;
            }
        }
        true
    }

    fn check_balance(&mut self) {
        let live: Vec<&Client> = self
            .clients
            .iter()
            .filter(|c| c.life != Life::Dead)
            .collect();
        let wanted: BTreeSet<TopicPartition> = live
            .iter()
            .flat_map(|c| c.resolve(&self.topics))
            .flat_map(|t| {
                let n = self.topics.get(&t).copied().unwrap_or(0);
                (0..n).map(move |p| tp(&t, p))
            })
            .collect();
        let held: BTreeSet<TopicPartition> = live.iter().flat_map(|c| c.held.clone()).collect();
        let mut problems = Vec::new();
        if held != wanted {
            problems.push(format!("held {held:?}, subscribed {wanted:?}"));
        }
        if live
            .windows(2)
            .all(|w| w[0].subscription == w[1].subscription)
            && !live.is_empty()
        {
            let spread =
                |counts: Vec<usize>| counts.iter().max().unwrap() - counts.iter().min().unwrap();
            if self.assignor == "range" {
                for topic in live[0].resolve(&self.topics) {
                    let counts = live
                        .iter()
                        .map(|c| c.held.iter().filter(|tp| tp.topic() == topic).count())
                        .collect();
                    if spread(counts) > 1 {
                        problems.push(format!("{topic} is not balanced"));
                    }
                }
            } else if spread(live.iter().map(|c| c.held.len()).collect()) > 1 {
                problems.push("the assignment is not balanced".to_string());
            }
        }
        if !problems.is_empty() {
            panic!("LIVENESS: {}\n{}", problems.join("\n"), self.dump());
        }
    }
}

// ----- the property -----------------------------------------------------------

#[derive(Debug, Clone)]
struct Case {
    assignor: usize,
    /// Which time limits (see `sim_for`).
    limits: usize,
    /// Per consumer: whether it is static.
    statics: Vec<bool>,
    /// 0: all `[t0, t1]`; 1: all the pattern `t[0-9]+`; 2: mixed.
    subscriptions: usize,
    t0: u32,
    t1: u32,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..MAX_CLIENTS;
    prop_oneof![
        8 => (c.clone(), prop::bool::weighted(0.2)).prop_map(|(c, lose)| Op::Heartbeat { c, lose }),
        6 => (c.clone(), prop::bool::weighted(0.4)).prop_map(|(c, split)| Op::Poll { c, split }),
        3 => c.clone().prop_map(Op::Finish),
        6 => (
            prop_oneof![Just(0i64), 100..=1_500i64],
            prop::collection::vec(prop::bool::weighted(0.2), MAX_CLIENTS)
        )
            .prop_map(|(dt, lose)| Op::Round { dt, lose }),
        4 => prop_oneof![3 => 1..=50i64, 2 => 50..=1_500i64, 1 => 2_500..=6_000i64].prop_map(Op::Advance),
        2 => (-1i64..=1).prop_map(Op::ToDeadline),
        1 => c.clone().prop_map(Op::Partition),
        1 => c.clone().prop_map(Op::Heal),
        1 => c.clone().prop_map(Op::Stall),
        1 => c.clone().prop_map(Op::Unstall),
        1 => c.clone().prop_map(Op::Leave),
        1 => c.clone().prop_map(Op::Kill),
        2 => c.clone().prop_map(Op::Restart),
        1 => (0..MAX_TOPICS, 1..=3u32).prop_map(|(topic, n)| Op::AddPartitions { topic, n }),
        1 => Just(Op::CreateTopic),
        3 => (c.clone(), commit_kind()).prop_map(|(c, kind)| Op::Commit { c, kind }),
        2 => Just(Op::Failover),
        1 => prop::option::of(c).prop_map(Op::LossyFailover),
    ]
}

fn commit_kind() -> impl Strategy<Value = CommitKind> {
    prop_oneof![
        Just(CommitKind::Current),
        any::<bool>().prop_map(|extra| CommitKind::Previous { extra }),
        (0..8usize).prop_map(CommitKind::Stale),
        Just(CommitKind::Future),
        Just(CommitKind::ClientView),
        Just(CommitKind::Unknown),
        (0..8usize).prop_map(CommitKind::Replaced),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    (
        (0..4usize, 0..3usize),
        prop::collection::vec(prop::bool::weighted(0.4), 1..=MAX_CLIENTS),
        0..3usize,
        1..=6u32,
        0..=4u32,
        prop::collection::vec(op(), 1..=60),
    )
        .prop_map(
            |((assignor, limits), statics, subscriptions, t0, t1, ops)| Case {
                assignor,
                limits,
                statics,
                subscriptions,
                t0,
                t1,
                ops,
            },
        )
}

fn sim_for(case: &Case, fixes: ClientFixes) -> Sim {
    let assignors = built_in_assignors();
    let assignor = assignors[case.assignor % assignors.len()]
        .name()
        .to_string();
    let mut cluster = topics(&[("t0", case.t0)]);
    if case.t1 > 0 {
        cluster.insert("t1".to_string(), case.t1);
    }
    let clients = case
        .statics
        .iter()
        .enumerate()
        .map(|(i, &is_static)| {
            let sub = match case.subscriptions {
                0 => subscribe(&["t0", "t1"]),
                1 => Subscription::Pattern("t[0-9]+".to_string()),
                _ if i % 2 == 0 => subscribe(&["t0"]),
                _ => Subscription::Pattern("t[1-9]".to_string()),
            };
            (is_static.then(|| format!("instance-{i}")), sub)
        })
        .collect();
    let limits = [
        LIMITS,
        Limits {
            session: 3_000,
            rebalance: 2_000,
        },
        Limits {
            session: 2_000,
            rebalance: 2_000,
        },
    ][case.limits];
    Sim::new(fixes, limits, &assignor, cluster, clients)
}

fn run_case(case: &Case) {
    run_case_with(case, ClientFixes::ALL);
}

fn run_case_with(case: &Case, fixes: ClientFixes) {
    let mut sim = sim_for(case, fixes);
    for op in &case.ops {
        sim.run(op);
    }
    sim.settle();
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128),
        ..ProptestConfig::default()
    })]

    #[test]
    fn membership_is_safe_durable_and_settles(case in case()) {
        run_case(&case);
    }
}

// ----- explicit scenarios -----------------------------------------------------

/// Indexes of [`built_in_assignors`].
const RANGE: usize = 0;
const COOPERATIVE_STICKY: usize = 3;
/// Indexes of the time limits in `sim_for`: session 3 s and rebalance 5 s,
/// or session 3 s and rebalance 2 s.
const LONG_REBALANCE: usize = 0;
const SHORT_REBALANCE: usize = 1;

fn hb(c: usize) -> Op {
    Op::Heartbeat { c, lose: false }
}

fn lost_hb(c: usize) -> Op {
    Op::Heartbeat { c, lose: true }
}

fn poll(c: usize) -> Op {
    Op::Poll { c, split: false }
}

/// Dynamic members subscribed to `t0`, which has `partitions`.
fn dynamic(assignor: usize, limits: usize, members: usize, partitions: u32, ops: Vec<Op>) -> Case {
    Case {
        assignor,
        limits,
        statics: vec![false; members],
        subscriptions: 0,
        t0: partitions,
        t1: 0,
        ops,
    }
}

/// Regression: the coordinator removed a member at exactly its session
/// timeout after its last heartbeat, while the consumer only gives up once
/// *more* than that has passed (on a finer clock, from when it sent the
/// heartbeat, which is at or before the millisecond the coordinator
/// stamped). c0 holds t0-0 and stops heartbeating; at 3000 ms c1 was given
/// t0-0 while c0 still consumed it until 3001 ms.
#[test]
fn a_member_is_removed_only_once_its_consumer_gave_up() {
    let ops = vec![
        hb(0),
        poll(0),
        Op::Advance(1_500),
        hb(1),
        poll(1),
        Op::ToDeadline(0),
        hb(1),
        poll(1),
        hb(1),
        poll(1),
    ];
    run_case(&dynamic(RANGE, LONG_REBALANCE, 2, 1, ops));
}

/// Regression: the ids of replaced static members were remembered in
/// memory only, so after a failover they got `UnknownMemberId` instead of
/// `FencedInstanceId` (and a zombie told "unknown" rejoins with its instance
/// id, taking the partitions of the member that replaced it).
#[test]
fn replaced_static_members_stay_fenced_after_a_failover() {
    let ops = vec![
        hb(0),
        poll(0),
        Op::Leave(0),
        Op::Restart(0),
        hb(0),
        Op::Failover,
        Op::Commit {
            c: 0,
            kind: CommitKind::Replaced(0),
        },
    ];
    run_case(&Case {
        statics: vec![true],
        ..dynamic(RANGE, LONG_REBALANCE, 1, 1, ops)
    });
}

/// Regression: a loaded coordinator took a pattern member's topics to be
/// every subscribed topic its pattern matches, not what it had resolved. c0
/// joined before t1 existed; c1 joined after; after a failover c0 seemed to
/// subscribe to t1 already, so its heartbeat seeing t1 changed nothing and
/// the group stayed Stable with all of t1 on c1.
#[test]
fn a_pattern_members_topics_survive_a_failover() {
    let ops = vec![hb(0), Op::CreateTopic, hb(1), Op::Failover];
    for assignor in 0..4 {
        run_case(&Case {
            subscriptions: 1,
            ..dynamic(assignor, LONG_REBALANCE, 2, 1, ops.clone())
        });
    }
}

/// Regression: the coordinator timed the revocation of a partition the
/// member never took. c0 receives [t0-0, t1-0] but has not applied it when
/// c1 joins; its next heartbeat (holding nothing) is asked to give up t1-0,
/// and the answer gives it [t0-0], which it applies. Then its heartbeats
/// stop arriving. The consumer has nothing to revoke, so only its session
/// (3 s) limits it; the coordinator removed it when the 2 s rebalance
/// timeout of t1-0 ran out, and gave t0-0 away while c0 still consumed it.
/// Likewise a coordinator loaded while t1-0 was pending timed it from the
/// load.
#[test]
fn a_partition_the_member_never_took_is_not_timed_for_revocation() {
    for failover in [false, true] {
        let mut ops = vec![
            hb(0),
            hb(1),
            hb(0),
            Op::Round {
                dt: 500,
                lose: vec![],
            },
            Op::Partition(0),
        ];
        if failover {
            ops.push(Op::Failover);
        }
        ops.extend([
            Op::Round {
                dt: 1_200,
                lose: vec![],
            },
            Op::Advance(300),
            hb(1),
            poll(1),
            Op::ToDeadline(0),
            hb(1),
            poll(1),
        ]);
        run_case(&Case {
            t1: 1,
            ..dynamic(COOPERATIVE_STICKY, SHORT_REBALANCE, 2, 1, ops)
        });
    }
}

/// Regression: the coordinator kept timing a revocation the member had
/// done but not yet acknowledged. c0 holds t0-0 and t0-1; c1 and c2 join
/// and c0 is asked to give up t0-1. 1 ms later its application revokes
/// t0-1 and is still adding (nothing) when c0 heartbeats again, reporting
/// only t0-0: the consumer stops timing the revocation, and only its poll
/// timer (from that poll) runs. The coordinator, not trusting `owned` before
/// the acknowledgement, timed t0-1 on and removed c0 1 ms before c0 would
/// give up t0-0.
#[test]
fn a_revocation_is_timed_only_while_the_member_reports_holding_what_it_gives_up() {
    let ops = vec![
        hb(0),
        poll(0),
        hb(1),
        hb(2),
        hb(0),
        Op::Advance(1),
        Op::Poll { c: 0, split: true },
        hb(0),
        hb(1),
        poll(1),
        hb(2),
        poll(2),
        Op::ToDeadline(0),
        hb(1),
        poll(1),
        hb(2),
        poll(2),
    ];
    run_case(&dynamic(COOPERATIVE_STICKY, SHORT_REBALANCE, 3, 2, ops));
}

/// c0 is asked to revoke in an answer that gets lost, polls (seeing
/// nothing), learns of the revocation from the next answer and stalls. The
/// coordinator times the revocation from the heartbeat that asked.
fn revocation_in_a_lost_answer() -> Vec<Op> {
    let mut ops = vec![
        hb(0),
        poll(0),
        hb(1),
        poll(1),
        Op::Advance(10),
        lost_hb(0),
        Op::Advance(10),
        poll(0),
        Op::Advance(10),
        hb(0),
        Op::Stall(0),
    ];
    for _ in 0..4 {
        ops.extend([Op::Advance(1_000), hb(0), hb(1), poll(1)]);
    }
    ops.extend([Op::ToDeadline(0), hb(1), poll(1)]);
    ops
}

/// c0 is asked to revoke, but no answer arrives any more; its rebalance
/// timeout is shorter than its session timeout.
fn revocation_never_answered() -> Vec<Op> {
    vec![
        hb(0),
        poll(0),
        hb(1),
        poll(1),
        lost_hb(0),
        Op::Advance(100),
        lost_hb(0),
        poll(0),
        hb(1),
        poll(1),
        Op::ToDeadline(0),
        hb(1),
        poll(1),
    ]
}

/// c0 takes its assignment, revokes, and is still adding its partitions
/// when its session runs out (its heartbeats stopped arriving). The
/// coordinator removes it and c1 takes the partition; then c0's application
/// finishes adding it.
fn reconciliation_outliving_its_membership() -> Vec<Op> {
    vec![
        hb(0),
        Op::Poll { c: 0, split: true },
        Op::Partition(0),
        hb(0),
        Op::Advance(1_000),
        hb(1),
        poll(1),
        Op::ToDeadline(0),
        hb(1),
        poll(1),
        Op::Heal(0),
        Op::Finish(0),
    ]
}

#[test]
fn revocations_are_safe_with_consumers_that_time_them_from_unanswered_heartbeats() {
    for assignor in [RANGE, COOPERATIVE_STICKY] {
        run_case(&dynamic(
            assignor,
            LONG_REBALANCE,
            2,
            2,
            revocation_in_a_lost_answer(),
        ));
        run_case(&dynamic(
            assignor,
            SHORT_REBALANCE,
            2,
            2,
            revocation_never_answered(),
        ));
    }
}

#[test]
fn a_reconciliation_outliving_its_membership_is_safe_when_abandoned() {
    run_case(&dynamic(
        RANGE,
        LONG_REBALANCE,
        2,
        1,
        reconciliation_outliving_its_membership(),
    ));
}

// The three scenarios above with one of the consumer's rules switched off
// (as the consumer was before): they must panic, with the invariant that
// breaks.

#[test]
#[should_panic(expected = "INVARIANT: c0 holds")]
fn without_rule_a_revocation_asked_in_a_lost_answer_is_timed_too_late() {
    let fixes = ClientFixes {
        time_revocation_from_unanswered: false,
        ..ClientFixes::ALL
    };
    let case = dynamic(RANGE, LONG_REBALANCE, 2, 2, revocation_in_a_lost_answer());
    run_case_with(&case, fixes);
}

#[test]
#[should_panic(expected = "INVARIANT: c0 holds")]
fn without_rule_a_revocation_never_answered_is_not_timed() {
    let fixes = ClientFixes {
        time_revocation_from_unanswered: false,
        ..ClientFixes::ALL
    };
    let case = dynamic(RANGE, SHORT_REBALANCE, 2, 2, revocation_never_answered());
    run_case_with(&case, fixes);
}

#[test]
#[should_panic(expected = "SAFETY: t0-0 is held by c0 and c1")]
fn without_rule_a_reconciliation_outliving_its_membership_is_finished() {
    let fixes = ClientFixes {
        abandon_reconciliation: false,
        ..ClientFixes::ALL
    };
    let case = dynamic(
        RANGE,
        LONG_REBALANCE,
        2,
        1,
        reconciliation_outliving_its_membership(),
    );
    run_case_with(&case, fixes);
}

// ----- the coordinator's API, step by step --------------------------------------

/// A coordinator driven directly: heartbeats built by hand.
struct Direct {
    coord: Coordinator,
    topics: TopicCounts,
    assignor: &'static str,
    limits: Limits,
    now: Millis,
}

impl Direct {
    fn new(assignor: &'static str, partitions: u32) -> Self {
        Self {
            coord: Coordinator::new(START),
            topics: topics(&[("t0", partitions)]),
            assignor,
            limits: LIMITS,
            now: START,
        }
    }

    fn beat(
        &mut self,
        member: &str,
        epoch: i32,
        instance: Option<&str>,
        owned: &[TopicPartition],
        acked: u64,
    ) -> Result<GroupHeartbeatResponse> {
        let request = GroupHeartbeatRequest {
            group: GROUP.to_string(),
            member_id: member.to_string(),
            member_epoch: epoch,
            group_instance_id: instance.map(str::to_string),
            client_id: "client".to_string(),
            subscription: Some(subscribe(&["t0"])),
            assignor: Some(self.assignor.to_string()),
            owned: Some(owned.to_vec()),
            acked_assignment: acked,
            session_timeout_ms: Some(self.limits.session as u32),
            rebalance_timeout_ms: Some(self.limits.rebalance as u32),
            max_wait_ms: 0,
        };
        self.coord.heartbeat(request, &self.topics, self.now)
    }

    fn join(&mut self, instance: Option<&str>) -> GroupHeartbeatResponse {
        self.beat("", JOIN_GROUP_EPOCH, instance, &[], 0).unwrap()
    }

    /// A heartbeat from a member that applied `last` (holds exactly it).
    fn ack(&mut self, last: &GroupHeartbeatResponse) -> GroupHeartbeatResponse {
        self.beat(
            &last.member_id,
            last.member_epoch,
            None,
            &last.assignment,
            last.assignment_id,
        )
        .unwrap()
    }

    fn commit(&mut self, member: &str, epoch: i32, tps: &[TopicPartition]) -> Result<()> {
        let request = OffsetCommitRequest {
            group: GROUP.to_string(),
            member_id: member.to_string(),
            member_epoch: epoch,
            offsets: tps
                .iter()
                .map(|tp| (tp.clone(), OffsetAndMetadata::new(7)))
                .collect(),
        };
        self.coord.commit(request, self.now)
    }

    fn member(&mut self, id: &str) -> Option<MemberDescription> {
        self.coord
            .describe(GROUP)?
            .members
            .into_iter()
            .find(|m| m.member_id == id)
    }

    fn tick_at(&mut self, at: Millis) {
        self.now = at;
        self.coord.tick(&self.topics, at);
    }
}

#[test]
fn commits_need_the_current_epoch_or_the_previous_one_for_owned_partitions() {
    let mut d = Direct::new("range", 2);
    let a = d.join(None);
    let a = d.ack(&a);
    let b = d.join(None);
    // Eager: a revokes everything, then comes back in the new epoch.
    let a_revoking = d.ack(&a);
    assert!(a_revoking.assignment.is_empty());
    let old_epoch = a_revoking.member_epoch;
    let a = d.ack(&a_revoking);
    assert_eq!(a.assignment, vec![tp("t0", 0)]);
    let epoch = a.member_epoch;
    assert!(epoch > old_epoch);
    let a_id = a.member_id.clone();

    // In its current epoch a member commits what it owns: a partition of
    // another member's is refused (it would overwrite that member's
    // progress), and nothing of the commit is written.
    assert!(matches!(
        d.commit(&a_id, epoch, &[tp("t0", 0), tp("t0", 1)]),
        Err(Error::PartitionNotAssigned { partition }) if partition == tp("t0", 1)
    ));
    assert!(d.coord.fetch(GROUP, None).is_empty());
    assert!(d.commit(&a_id, epoch, &[tp("t0", 0)]).is_ok());
    assert!(d.commit(&a_id, old_epoch, &[tp("t0", 0)]).is_ok());
    let fenced = |r: Result<()>| matches!(r, Err(Error::FencedMemberEpoch { .. }));
    assert!(fenced(d.commit(&a_id, old_epoch, &[tp("t0", 1)])));
    assert!(fenced(d.commit(&a_id, epoch + 1, &[tp("t0", 0)])));
    assert!(fenced(d.commit(&a_id, 0, &[tp("t0", 0)])));
    assert!(matches!(
        d.commit("nobody", epoch, &[tp("t0", 0)]),
        Err(Error::UnknownMemberId { .. })
    ));
    // Outside the membership only while the group has no members.
    assert!(matches!(
        d.commit("", -1, &[tp("t0", 0)]),
        Err(Error::UnknownMemberId { .. })
    ));
    let committed = d.coord.fetch(GROUP, None);
    assert_eq!(committed[&tp("t0", 0)].offset, 7);
    assert_eq!(committed[&tp("t0", 0)].commit_timestamp, START);
    assert!(!committed.contains_key(&tp("t0", 1)));

    // A static member replaced by a new incarnation is fenced, also after
    // a failover.
    let s1 = d.join(Some("s"));
    let s2 = d.join(Some("s"));
    assert_ne!(s1.member_id, s2.member_id);
    for failover in [false, true] {
        if failover {
            d.coord.failover(d.now);
        }
        assert!(matches!(
            d.commit(&s1.member_id, s1.member_epoch, &[]),
            Err(Error::FencedInstanceId { .. })
        ));
        assert!(matches!(
            d.beat(&s1.member_id, s1.member_epoch, Some("s"), &[], 0),
            Err(Error::FencedInstanceId { .. })
        ));
        assert_eq!(d.coord.fetch(GROUP, None), committed);
    }

    // Once everyone left, anyone may commit.
    for id in [&a_id, &b.member_id] {
        d.beat(id, LEAVE_GROUP_EPOCH, None, &[], 0).unwrap();
    }
    d.beat(&s2.member_id, LEAVE_GROUP_EPOCH, Some("s"), &[], 0)
        .unwrap();
    assert!(d.coord.describe(GROUP).unwrap().members.is_empty());
    assert!(d.commit("", -1, &[tp("t0", 0)]).is_ok());
}

#[test]
fn members_expire_strictly_after_their_session_or_revocation_timeout() {
    let mut d = Direct::new("range", 2);
    let a = d.join(None);
    assert_eq!(d.coord.inner.next_deadline(), Some(START + 3_001));
    d.tick_at(START + 3_000);
    assert!(d.member(&a.member_id).is_some());
    d.tick_at(START + 3_001);
    assert!(d.coord.describe(GROUP).is_none());

    let mut d = Direct::new("range", 2);
    d.limits = Limits {
        session: 3_000,
        rebalance: 2_000,
    };
    // a is given both partitions; before it takes them, b joins and a is
    // asked to give them up. It holds neither: nothing is timed.
    let a = d.join(None);
    d.now = START + 1_000;
    let b = d.join(None);
    let asked = d.beat(&a.member_id, a.member_epoch, None, &[], 0).unwrap();
    assert!(asked.assignment.is_empty());
    assert_eq!(
        d.member(&a.member_id).unwrap().pending_revocation,
        a.assignment
    );
    assert_eq!(d.coord.inner.next_deadline(), Some(START + 4_001));
    // It reports holding them (it applied the first assignment): the
    // revocation is timed from now.
    d.now = START + 1_500;
    d.beat(
        &a.member_id,
        a.member_epoch,
        None,
        &a.assignment,
        a.assignment_id,
    )
    .unwrap();
    d.beat(&b.member_id, b.member_epoch, None, &[], 0).unwrap();
    assert_eq!(d.coord.inner.next_deadline(), Some(START + 3_501));
    d.tick_at(START + 3_500);
    assert!(d.member(&a.member_id).is_some());
    d.tick_at(START + 3_501);
    assert!(d.member(&a.member_id).is_none());
    let b = d.beat(&b.member_id, b.member_epoch, None, &[], 0).unwrap();
    assert_eq!(b.assignment, vec![tp("t0", 0), tp("t0", 1)]);
}

#[test]
fn a_static_member_back_within_its_session_keeps_its_place_without_a_rebalance() {
    let mut d = Direct::new("sticky", 3);
    let s = d.join(Some("s"));
    let s = d.ack(&s);
    let other = d.join(None);
    let other = d.ack(&other);
    let s = d.ack(&s);
    let s = d.ack(&s);
    let other = d.ack(&other);
    let before = d.coord.describe(GROUP).unwrap();
    assert_eq!(before.state, GroupState::Stable);
    d.beat(&s.member_id, STATIC_LEAVE_EPOCH, Some("s"), &[], 0)
        .unwrap();
    // Still a member, with its partitions, until its session runs out.
    let kept = d.member(&s.member_id).unwrap();
    assert_eq!(kept.assignment, s.assignment);
    d.now += 2_000;
    let back = d.join(Some("s"));
    assert_ne!(back.member_id, s.member_id);
    assert_eq!(back.assignment, s.assignment);
    assert_eq!(back.member_epoch, s.member_epoch);
    let after = d.coord.describe(GROUP).unwrap();
    assert_eq!(after.group_epoch, before.group_epoch);
    assert!(matches!(
        d.beat(&s.member_id, s.member_epoch, Some("s"), &s.assignment, 0),
        Err(Error::FencedInstanceId { .. })
    ));
    // Not back in time: removed, and the others get its partitions.
    d.beat(&back.member_id, STATIC_LEAVE_EPOCH, Some("s"), &[], 0)
        .unwrap();
    d.now += 2_000;
    d.ack(&other);
    d.tick_at(d.now + 1_001);
    assert!(d.member(&back.member_id).is_none());
    let mut other = other;
    for _ in 0..3 {
        other = d.ack(&other);
    }
    assert_eq!(other.assignment.len(), 3);
    assert_eq!(d.coord.describe(GROUP).unwrap().state, GroupState::Stable);
}

#[test]
fn eager_assignors_revoke_everything_first_and_cooperative_only_what_moves() {
    for (assignor, kept) in [
        ("range", 0),
        ("roundrobin", 0),
        ("sticky", 0),
        ("cooperative-sticky", 2),
    ] {
        let mut d = Direct::new(assignor, 4);
        let a = d.join(None);
        let a = d.ack(&a);
        assert_eq!(a.assignment.len(), 4);
        let b = d.join(None);
        assert!(b.assignment.is_empty(), "{assignor}: nothing is free yet");
        let a_revoking = d.ack(&a);
        assert_eq!(a_revoking.assignment.len(), kept, "{assignor}");
        let pending = d.member(&a.member_id).unwrap().pending_revocation;
        assert_eq!(pending.len(), 4 - kept, "{assignor}");
        // Until a gives them up, b gets none of them.
        let b = d.ack(&b);
        assert!(b.assignment.is_empty(), "{assignor}");
        let a = d.ack(&a_revoking);
        let b = d.ack(&b);
        assert_eq!(a.assignment.len() + b.assignment.len(), 4, "{assignor}");
        assert_eq!(b.assignment.len(), 2, "{assignor}");
        let a = d.ack(&a);
        let _ = d.ack(&b);
        assert_eq!(a.assignment.len(), 2, "{assignor}");
        assert_eq!(d.coord.describe(GROUP).unwrap().state, GroupState::Stable);
    }
}

/// Regression (simulator seed 339): a broker that restarted and loaded its
/// shard again under the same leader epoch numbered new members from 0
/// again, so a joining member got the id of a member that still held its
/// partition, and took them over while the first one still read them.
#[test]
fn member_ids_stay_unique_when_a_shard_is_loaded_again_in_the_same_epoch() {
    let now = 1_000;
    let topics = topics(&[("t", 2)]);
    let mut c = Coordinator::new(now);
    let join = |c: &mut Coordinator, name: &str| {
        let request = GroupHeartbeatRequest {
            group: GROUP.to_string(),
            member_id: String::new(),
            member_epoch: 0,
            group_instance_id: None,
            client_id: name.to_string(),
            subscription: Some(subscribe(&["t"])),
            assignor: Some("range".to_string()),
            owned: Some(Vec::new()),
            acked_assignment: 0,
            session_timeout_ms: Some(10_000),
            rebalance_timeout_ms: Some(10_000),
            max_wait_ms: 0,
        };
        c.heartbeat(request, &topics, now).expect("joins").member_id
    };
    let first = join(&mut c, "a");
    // The broker restarts: same leader epoch, the shard loaded from the log.
    c.leader_epoch -= 1;
    c.reload(now);
    let second = join(&mut c, "a");
    assert_ne!(first, second, "a member id was handed out twice");
    assert_eq!(c.describe(GROUP).expect("the group").members.len(), 2);
}

/// Offsets of partitions that do not exist are refused with
/// `UnknownTopicOrPartition` and nothing of the commit is written; a group
/// without members deletes some offsets (Kafka's OffsetDelete) or all of
/// them and itself (DeleteGroups), durably (a reloaded coordinator agrees);
/// a group with members refuses with `NonEmptyGroup`.
#[test]
fn unknown_partitions_are_not_committed_and_an_empty_group_deletes_its_offsets() {
    let mut c = Coordinator::new(START);
    let topics = topics(&[("t0", 2)]);
    let commit = |partitions: &[TopicPartition]| OffsetCommitRequest {
        group: GROUP.into(),
        member_id: String::new(),
        member_epoch: -1,
        offsets: partitions
            .iter()
            .map(|tp| (tp.clone(), OffsetAndMetadata::new(5)))
            .collect(),
    };
    for bad in [tp("t0", 2), tp("nope", 0)] {
        let refused = c
            .inner
            .commit(P, commit(&[tp("t0", 0), bad]), &topics, START);
        assert!(
            matches!(refused, Err(Error::UnknownTopicOrPartition { .. })),
            "{:?}",
            refused.map(|_| ())
        );
    }
    assert!(c.fetch(GROUP, None).is_empty(), "nothing written");
    let outcome = c
        .inner
        .commit(P, commit(&[tp("t0", 0), tp("t0", 1)]), &topics, START)
        .unwrap();
    c.settle(GROUP, outcome);
    let delete = |partitions| OffsetDeleteRequest {
        group: GROUP.into(),
        partitions,
    };
    let outcome = c
        .inner
        .delete_offsets(P, &delete(Some(vec![tp("t0", 0)])))
        .unwrap();
    c.settle(GROUP, outcome);
    let left: Vec<TopicPartition> = c.fetch(GROUP, None).into_keys().collect();
    assert_eq!(left, [tp("t0", 1)]);
    c.failover(START);
    let outcome = c.inner.delete_offsets(P, &delete(None)).unwrap();
    c.settle(GROUP, outcome);
    assert!(c.fetch(GROUP, None).is_empty());
    assert!(c.describe(GROUP).is_none(), "the group is gone");
    assert!(matches!(
        c.inner.delete_offsets(P, &delete(None)),
        Err(Error::GroupIdNotFound { .. })
    ));
    c.reload(START);
    assert!(c.describe(GROUP).is_none(), "gone after a reload too");

    let mut d = Direct::new("range", 2);
    let a = d.join(None);
    d.ack(&a);
    assert!(matches!(
        d.coord.inner.delete_offsets(P, &delete(None)),
        Err(Error::NonEmptyGroup { members: 1, .. })
    ));
}

/// A heartbeat as a Kafka client (KIP-848) sends it: the member's own id,
/// and only what changed (`None` elsewhere).
fn kip848(member_id: &str, member_epoch: i32) -> GroupHeartbeatRequest {
    GroupHeartbeatRequest {
        group: GROUP.to_string(),
        member_id: member_id.to_string(),
        member_epoch,
        group_instance_id: None,
        client_id: "rdkafka".to_string(),
        subscription: None,
        assignor: None,
        owned: None,
        acked_assignment: 0,
        session_timeout_ms: None,
        rebalance_timeout_ms: None,
        max_wait_ms: 0,
    }
}

/// Kafka's clients join with an id they made (KIP-1082) and keep it; a
/// heartbeat that leaves fields out changes nothing; a member that does
/// not say what it owns is counted as holding everything it was given, so
/// a partition moving to a newcomer is not handed over until the old
/// owner says (with the `owned` of its latest reconciled assignment) that
/// it let go; the assignment is flagged as changed only when it changed;
/// a current member joining again keeps its place; and a join without a
/// subscription is refused.
#[test]
fn kafka_clients_keep_their_own_ids_and_say_only_what_changed() {
    let now = START;
    let topics = topics(&[("t", 4)]);
    let mut c = Coordinator::new(now);
    assert!(matches!(
        c.heartbeat(kip848("no-subscription", 0), &topics, now),
        Err(Error::InvalidRequest { .. })
    ));
    let join = |id: &str| GroupHeartbeatRequest {
        subscription: Some(subscribe(&["t"])),
        rebalance_timeout_ms: Some(60_000),
        owned: Some(Vec::new()),
        ..kip848(id, 0)
    };
    let a = c.heartbeat(join("a-uuid"), &topics, now).expect("a joins");
    assert_eq!(a.member_id, "a-uuid", "the member's own id is kept");
    assert!(a.assignment_changed);
    assert_eq!(a.assignment.len(), 4, "alone, it gets every partition");
    assert_eq!(
        c.describe(GROUP).unwrap().assignor,
        DEFAULT_ASSIGNOR,
        "no assignor named: the default"
    );
    // A plain heartbeat: nothing said, nothing changes.
    let again = c
        .heartbeat(kip848("a-uuid", a.member_epoch), &topics, now)
        .expect("a heartbeats");
    assert_eq!(again.assignment, a.assignment);
    assert!(!again.assignment_changed);
    // A newcomer: some of a's partitions are to move to it.
    let b = c.heartbeat(join("b-uuid"), &topics, now).expect("b joins");
    assert_eq!(b.member_id, "b-uuid");
    let a_told = c
        .heartbeat(kip848("a-uuid", a.member_epoch), &topics, now)
        .expect("a heartbeats");
    assert!(a_told.assignment_changed, "a is asked to give some up");
    let moving: Vec<TopicPartition> = a
        .assignment
        .iter()
        .filter(|tp| !a_told.assignment.contains(tp))
        .cloned()
        .collect();
    assert!(!moving.is_empty());
    // a says nothing of what it owns (whatever it acknowledges): b gets
    // none of the moving ones yet.
    let quiet = GroupHeartbeatRequest {
        acked_assignment: u64::MAX,
        ..kip848("a-uuid", a_told.member_epoch)
    };
    let a_quiet = c.heartbeat(quiet, &topics, now).expect("a heartbeats");
    let b_waits = c
        .heartbeat(kip848("b-uuid", b.member_epoch), &topics, now)
        .expect("b heartbeats");
    assert!(
        moving.iter().all(|tp| !b_waits.assignment.contains(tp)),
        "b was given {:?} while a may still hold them",
        b_waits.assignment
    );
    // a reconciled its latest assignment and says what it owns.
    let released = GroupHeartbeatRequest {
        owned: Some(a_told.assignment.clone()),
        acked_assignment: u64::MAX,
        ..kip848("a-uuid", a_quiet.member_epoch)
    };
    c.heartbeat(released, &topics, now).expect("a heartbeats");
    let b_gets = c
        .heartbeat(kip848("b-uuid", b_waits.member_epoch), &topics, now)
        .expect("b heartbeats");
    assert!(
        moving.iter().all(|tp| b_gets.assignment.contains(tp)),
        "b now has {:?}, not all of {moving:?}",
        b_gets.assignment
    );
    assert!(b_gets.assignment_changed);
    // The subscription it joined with still holds.
    let described = c.describe(GROUP).unwrap();
    assert_eq!(described.members.len(), 2);
    // A current member joining again (epoch 0, its own id: a Kafka client
    // after an error, a classic member's rejoin) keeps its place and its
    // assignment; the group does not rebalance.
    let epoch_before = described.group_epoch;
    let b_again = c
        .heartbeat(join("b-uuid"), &topics, now)
        .expect("b joins again");
    assert_eq!(b_again.member_id, "b-uuid");
    assert_eq!(b_again.assignment, b_gets.assignment);
    assert!(
        b_again.assignment_changed,
        "a join is always sent its assignment"
    );
    let after = c.describe(GROUP).unwrap();
    assert_eq!(after.members.len(), 2);
    assert_eq!(after.group_epoch, epoch_before, "no rebalance");
}
