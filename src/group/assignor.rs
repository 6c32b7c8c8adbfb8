//! Partition assignors: who reads which partition.
//!
//! An [`Assignor`] turns the members of a group (their subscriptions and what
//! they own now) and the partition counts of the subscribed topics into a
//! target assignment. The coordinator runs it; members then move towards the
//! target, revoking before anyone else is given a partition.
//!
//! Built in, with Kafka's names: [`RangeAssignor`] (`"range"`),
//! [`RoundRobinAssignor`] (`"roundrobin"`), [`StickyAssignor`] (`"sticky"`)
//! and [`CooperativeStickyAssignor`] (`"cooperative-sticky"`);
//! [`built_in_assignors`] lists them.
//!
//! All of them are deterministic: they walk members in [`sort_key`] order
//! (ties broken by member id) and partitions in `(topic, partition)` order, so
//! equal inputs give equal assignments whatever order the members come in.
//! They accept any input without panicking: a member id given twice counts
//! once (the first), and subscriptions to topics absent from the partition
//! counts, topics with no partitions and owned partitions that do not exist
//! are ignored. Every member's list in the result is sorted.
//!
//! [`sort_key`]: MemberSubscription::sort_key

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;
use std::sync::Arc;

use crate::topic::TopicPartition;

/// How members give partitions up during a rebalance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RebalanceProtocol {
    /// Every member revokes everything it owns before anyone gets a new
    /// assignment (stop the world): Range, RoundRobin, Sticky.
    Eager,
    /// Members revoke only the partitions that move and keep consuming the
    /// rest: CooperativeSticky.
    Cooperative,
}

/// One member as an assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member's id, unique in the group.
    pub member_id: String,
    /// The static member's `group_instance_id`, if it has one. Kafka orders
    /// static members by it, so a restarted member keeps its place.
    pub group_instance_id: Option<String>,
    /// The topics the member subscribes to (patterns already resolved).
    pub topics: BTreeSet<String>,
    /// The partitions the member owns now (its previous assignment).
    pub owned: Vec<TopicPartition>,
}

impl MemberSubscription {
    /// The key members are ordered by: the instance id of a static member,
    /// else the member id.
    pub fn sort_key(&self) -> &str {
        self.group_instance_id.as_deref().unwrap_or(&self.member_id)
    }
}

/// A target assignment: member id → the partitions it should own. Every
/// member is present, with an empty list if it gets nothing.
pub type Assignment = BTreeMap<String, Vec<TopicPartition>>;

/// Computes a group's target assignment.
///
/// Rules an implementation must keep (the coordinator checks them and refuses
/// an assignment that breaks them with
/// [`Error::InvalidAssignment`](crate::Error::InvalidAssignment)): every member
/// appears in the result; a partition goes to at most one member, and only to
/// one subscribed to its topic; only partitions below the topic's count.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use ferrolog::group::{Assignment, Assignor, MemberSubscription};
/// use ferrolog::TopicPartition;
///
/// /// Gives every partition to the member whose id sorts first.
/// #[derive(Debug)]
/// struct AllToFirst;
///
/// impl Assignor for AllToFirst {
///     fn name(&self) -> &str { "all-to-first" }
///     fn assign(&self, partitions: &BTreeMap<String, u32>, members: &[MemberSubscription]) -> Assignment {
///         let mut result: Assignment = members.iter().map(|m| (m.member_id.clone(), vec![])).collect();
///         if let Some(first) = members.iter().min_by(|a, b| a.member_id.cmp(&b.member_id)) {
///             for topic in &first.topics {
///                 for p in 0..partitions.get(topic).copied().unwrap_or(0) {
///                     result.get_mut(&first.member_id).unwrap()
///                         .push(TopicPartition::new(topic.as_str(), p).unwrap());
///                 }
///             }
///         }
///         result
///     }
/// }
///
/// let member = |id: &str| MemberSubscription {
///     member_id: id.into(),
///     group_instance_id: None,
///     topics: BTreeSet::from(["t".to_string()]),
///     owned: vec![],
/// };
/// let assignment = AllToFirst.assign(&BTreeMap::from([("t".to_string(), 2)]), &[member("b"), member("a")]);
/// assert_eq!(assignment["a"].len(), 2);
/// assert!(assignment["b"].is_empty());
/// ```
pub trait Assignor: Send + Sync + fmt::Debug {
    /// The name members ask for it by (`ConsumerConfig::partition_assignment_strategy`).
    fn name(&self) -> &str;

    /// Whether members revoke everything on a rebalance or only what moves.
    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// The target assignment for `members`, given the partition count of every
    /// existing topic any of them subscribes to (`partitions`; subscribed topics
    /// that do not exist are absent).
    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &[MemberSubscription],
    ) -> Assignment;
}

/// The members in the order assignors walk them: by [`sort_key`], then by
/// member id; a member id given twice counts once (the first).
///
/// [`sort_key`]: MemberSubscription::sort_key
fn sorted_members(members: &[MemberSubscription]) -> Vec<&MemberSubscription> {
    let mut seen = BTreeSet::new();
    let mut sorted: Vec<&MemberSubscription> = members
        .iter()
        .filter(|m| seen.insert(m.member_id.as_str()))
        .collect();
    sorted.sort_by(|a, b| {
        (a.sort_key(), a.member_id.as_str()).cmp(&(b.sort_key(), b.member_id.as_str()))
    });
    sorted
}

/// An assignment giving every member nothing.
fn empty_assignment(members: &[&MemberSubscription]) -> Assignment {
    members
        .iter()
        .map(|m| (m.member_id.clone(), Vec::new()))
        .collect()
}

/// Adds `partition` of `topic` to `member`'s list.
fn give(result: &mut Assignment, member: &str, topic: &Arc<str>, partition: u32) {
    if let Some(list) = result.get_mut(member) {
        list.push(TopicPartition::from_shared(Arc::clone(topic), partition));
    }
}

/// Sorts every member's list.
fn sort_lists(mut result: Assignment) -> Assignment {
    for list in result.values_mut() {
        list.sort();
    }
    result
}

/// Kafka's `"range"` assignor: each topic on its own, its partitions cut into
/// contiguous ranges over the members subscribed to it.
///
/// With `n` partitions and `m` subscribers (in [`sort_key`] order) each gets
/// `n / m` partitions and the first `n % m` one more. Co-partitioned topics
/// therefore land together (partition `i` of every topic goes to the same
/// member), but the first members get more when there are many topics.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use ferrolog::group::{Assignor, MemberSubscription, RangeAssignor};
///
/// let member = |id: &str| MemberSubscription {
///     member_id: id.into(),
///     group_instance_id: None,
///     topics: BTreeSet::from(["t0".to_string(), "t1".to_string()]),
///     owned: vec![],
/// };
/// let partitions = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let assignment = RangeAssignor.assign(&partitions, &[member("C0"), member("C1")]);
/// let names = |id: &str| assignment[id].iter().map(|tp| tp.to_string()).collect::<Vec<_>>();
/// assert_eq!(names("C0"), ["t0-0", "t0-1", "t1-0", "t1-1"]);
/// assert_eq!(names("C1"), ["t0-2", "t1-2"]);
/// ```
///
/// [`sort_key`]: MemberSubscription::sort_key
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &[MemberSubscription],
    ) -> Assignment {
        let members = sorted_members(members);
        let mut result = empty_assignment(&members);
        for (topic, &count) in partitions {
            let subscribers: Vec<&str> = members
                .iter()
                .filter(|m| m.topics.contains(topic))
                .map(|m| m.member_id.as_str())
                .collect();
            if subscribers.is_empty() || count == 0 {
                continue;
            }
            let name: Arc<str> = Arc::from(topic.as_str());
            let count = u64::from(count);
            let per_member = count / subscribers.len() as u64;
            let with_extra = count % subscribers.len() as u64;
            for (i, member) in (0u64..).zip(subscribers) {
                let start = i * per_member + i.min(with_extra);
                let len = per_member + u64::from(i < with_extra);
                // start + len <= count <= u32::MAX, so the conversion holds.
                let range = u32::try_from(start).unwrap_or(u32::MAX)
                    ..u32::try_from(start + len).unwrap_or(u32::MAX);
                for partition in range {
                    give(&mut result, member, &name, partition);
                }
            }
        }
        sort_lists(result)
    }
}

/// Kafka's `"roundrobin"` assignor: all partitions of all subscribed topics,
/// in `(topic, partition)` order, dealt to the members in turn.
///
/// The members (in [`sort_key`] order) form a circle; each partition goes to
/// the next member in the circle subscribed to its topic, skipping the others.
/// With identical subscriptions the counts differ by at most one.
///
/// ```
/// use std::collections::{BTreeMap, BTreeSet};
/// use ferrolog::group::{Assignor, MemberSubscription, RoundRobinAssignor};
///
/// let member = |id: &str| MemberSubscription {
///     member_id: id.into(),
///     group_instance_id: None,
///     topics: BTreeSet::from(["t0".to_string(), "t1".to_string()]),
///     owned: vec![],
/// };
/// let partitions = BTreeMap::from([("t0".to_string(), 3), ("t1".to_string(), 3)]);
/// let assignment = RoundRobinAssignor.assign(&partitions, &[member("C0"), member("C1")]);
/// let names = |id: &str| assignment[id].iter().map(|tp| tp.to_string()).collect::<Vec<_>>();
/// assert_eq!(names("C0"), ["t0-0", "t0-2", "t1-1"]);
/// assert_eq!(names("C1"), ["t0-1", "t1-0", "t1-2"]);
/// ```
///
/// [`sort_key`]: MemberSubscription::sort_key
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &[MemberSubscription],
    ) -> Assignment {
        let members = sorted_members(members);
        let mut result = empty_assignment(&members);
        let mut next = 0;
        for (topic, &count) in partitions {
            let subscribed: Vec<bool> = members.iter().map(|m| m.topics.contains(topic)).collect();
            if !subscribed.contains(&true) {
                continue;
            }
            let name: Arc<str> = Arc::from(topic.as_str());
            for partition in 0..count {
                // Some member is subscribed, so one full turn finds it.
                let found = (0..members.len())
                    .map(|step| (next + step) % members.len())
                    .find(|&i| subscribed[i]);
                if let Some(i) = found {
                    give(&mut result, &members[i].member_id, &name, partition);
                    next = (i + 1) % members.len();
                }
            }
        }
        sort_lists(result)
    }
}

/// Kafka's `"sticky"` assignor: as balanced as the subscriptions allow, and
/// moving as few partitions as possible from their current owners.
///
/// Each member first keeps the partitions it owns that are still valid (the
/// partition exists and the member still subscribes to its topic; a partition
/// claimed by two members stays with the first in [`sort_key`] order).
///
/// When every member subscribes to the same topics, with `P` partitions and
/// `M` members, each member gets `P / M` partitions and `P % M` of them one
/// more; the members owning the most are the ones allowed the extra one.
/// Members keep owned partitions up to that quota, only the excess moves, and
/// the free partitions fill the members below their quota. The number of
/// partitions that change owner is then the least possible.
///
/// Otherwise free partitions go, the most constrained first, to the least
/// loaded member subscribed to their topic, and partitions are then passed
/// along chains of members (each link a member handing a partition to one
/// subscribed to its topic) while that lets a member with `c` partitions give
/// one up to a member with at most `c - 2`. When no such chain is left the
/// assignment is balanced as well as the subscriptions allow (the largest
/// count is as small as it can be, and so on). Partitions handed along prefer
/// ones the giver did not own before, so owned partitions move only when
/// balance needs them to.
///
/// Members revoke everything on a rebalance ([`RebalanceProtocol::Eager`]);
/// [`CooperativeStickyAssignor`] computes the same assignment incrementally.
///
/// [`sort_key`]: MemberSubscription::sort_key
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StickyAssignor;

impl Assignor for StickyAssignor {
    fn name(&self) -> &str {
        "sticky"
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &[MemberSubscription],
    ) -> Assignment {
        sticky_assign(partitions, members)
    }
}

/// Kafka's `"cooperative-sticky"` assignor: the [`StickyAssignor`]'s target
/// assignment, reached incrementally ([`RebalanceProtocol::Cooperative`]).
///
/// Members keep consuming the partitions that stay with them; only the ones
/// that move are revoked, and given to their new owner after that.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(
        &self,
        partitions: &BTreeMap<String, u32>,
        members: &[MemberSubscription],
    ) -> Assignment {
        sticky_assign(partitions, members)
    }
}

/// The built-in assignors, one of each: range, roundrobin, sticky and
/// cooperative-sticky.
///
/// ```
/// let names: Vec<String> = ferrolog::group::built_in_assignors()
///     .iter()
///     .map(|a| a.name().to_string())
///     .collect();
/// assert_eq!(names, ["range", "roundrobin", "sticky", "cooperative-sticky"]);
/// ```
pub fn built_in_assignors() -> Vec<Arc<dyn Assignor>> {
    vec![
        Arc::new(RangeAssignor),
        Arc::new(RoundRobinAssignor),
        Arc::new(StickyAssignor),
        Arc::new(CooperativeStickyAssignor),
    ]
}

/// The sticky algorithm shared by [`StickyAssignor`] and
/// [`CooperativeStickyAssignor`].
fn sticky_assign(partitions: &BTreeMap<String, u32>, members: &[MemberSubscription]) -> Assignment {
    let members = sorted_members(members);
    if members.is_empty() {
        return Assignment::new();
    }
    let mut run = StickyRun::new(partitions, &members);
    run.keep_owned(&members);
    if run.subscribed.windows(2).all(|w| w[0] == w[1]) {
        run.fill_to_quotas();
    } else {
        run.fill_least_loaded();
        run.balance();
    }
    run.into_assignment(&members)
}

/// A partition inside a [`StickyRun`]: (topic index, partition).
type Slot = (usize, u32);

/// One run of the sticky algorithm. Members are indices into the sorted
/// member list, topics indices into `topics` (sorted by name, so slot order is
/// `(topic, partition)` order).
struct StickyRun {
    /// The topics with partitions and at least one subscriber.
    topics: Vec<(Arc<str>, u32)>,
    /// `subscribed[member][topic]`.
    subscribed: Vec<Vec<bool>>,
    /// The members subscribed to each topic, in order.
    eligible: Vec<Vec<usize>>,
    /// The current owner of every partition, `owner[topic][partition]`.
    owner: Vec<Vec<Option<usize>>>,
    /// Who kept each partition from its owned list, `previous[topic][partition]`.
    previous: Vec<Vec<Option<usize>>>,
    /// The partitions each member has now.
    assigned: Vec<BTreeSet<Slot>>,
    /// The part of `assigned` each member did not keep from its owned list.
    fresh: Vec<BTreeSet<Slot>>,
}

impl StickyRun {
    fn new(partitions: &BTreeMap<String, u32>, members: &[&MemberSubscription]) -> Self {
        let mut topics = Vec::new();
        let mut eligible = Vec::new();
        for (topic, &count) in partitions {
            let subscribers: Vec<usize> = (0..members.len())
                .filter(|&m| members[m].topics.contains(topic))
                .collect();
            if count > 0 && !subscribers.is_empty() {
                topics.push((Arc::from(topic.as_str()), count));
                eligible.push(subscribers);
            }
        }
        let subscribed = members
            .iter()
            .map(|m| {
                topics
                    .iter()
                    .map(|(t, _)| m.topics.contains(&**t))
                    .collect()
            })
            .collect();
        let owner: Vec<Vec<Option<usize>>> = topics
            .iter()
            .map(|&(_, count)| vec![None; count as usize])
            .collect();
        Self {
            topics,
            subscribed,
            eligible,
            previous: owner.clone(),
            owner,
            assigned: vec![BTreeSet::new(); members.len()],
            fresh: vec![BTreeSet::new(); members.len()],
        }
    }

    /// Gives every member the owned partitions it may keep; a partition
    /// claimed twice goes to the first claimant in member order.
    fn keep_owned(&mut self, members: &[&MemberSubscription]) {
        let index: BTreeMap<&str, usize> = (0..self.topics.len())
            .map(|t| (&*self.topics[t].0, t))
            .collect();
        for (m, member) in members.iter().enumerate() {
            let claims: BTreeSet<&TopicPartition> = member.owned.iter().collect();
            for tp in claims {
                let Some(&t) = index.get(tp.topic()) else {
                    continue;
                };
                if !self.subscribed[m][t] {
                    continue;
                }
                let Some(slot) = self.owner[t].get_mut(tp.partition() as usize) else {
                    continue;
                };
                if slot.is_none() {
                    *slot = Some(m);
                    self.assigned[m].insert((t, tp.partition()));
                }
            }
        }
        self.previous = self.owner.clone();
    }

    /// The partitions nobody has, in `(topic, partition)` order.
    fn free(&self) -> Vec<Slot> {
        let mut free = Vec::new();
        for (t, owners) in self.owner.iter().enumerate() {
            for (p, owner) in (0u32..).zip(owners) {
                if owner.is_none() {
                    free.push((t, p));
                }
            }
        }
        free
    }

    /// Gives `slot` (which nobody has) to `member`.
    fn take(&mut self, member: usize, slot: Slot) {
        if let Some(owner) = self.owner[slot.0].get_mut(slot.1 as usize) {
            *owner = Some(member);
            self.assigned[member].insert(slot);
            if self.previous[slot.0][slot.1 as usize] != Some(member) {
                self.fresh[member].insert(slot);
            }
        }
    }

    /// Takes `slot` away from `member`, leaving it to nobody.
    fn release(&mut self, member: usize, slot: Slot) {
        self.fresh[member].remove(&slot);
        if self.assigned[member].remove(&slot)
            && let Some(owner) = self.owner[slot.0].get_mut(slot.1 as usize)
        {
            *owner = None;
        }
    }

    /// The all-subscriptions-equal case: quotas of `P / M` and `P / M + 1`,
    /// the larger ones for the members keeping the most; excess owned
    /// partitions are freed, then the free ones dealt round robin to the
    /// members below quota.
    fn fill_to_quotas(&mut self) {
        let members = self.assigned.len();
        let total: usize = self.topics.iter().map(|&(_, count)| count as usize).sum();
        let (quota, with_extra) = (total / members, total % members);
        let mut by_kept: Vec<usize> = (0..members).collect();
        by_kept.sort_by_key(|&m| (Reverse(self.assigned[m].len()), m));
        let mut target = vec![quota; members];
        for &m in &by_kept[..with_extra] {
            target[m] += 1;
        }
        for (m, &target) in target.iter().enumerate() {
            while self.assigned[m].len() > target {
                if let Some(slot) = self.assigned[m].last().copied() {
                    self.release(m, slot);
                }
            }
        }
        let below: Vec<usize> = (0..members)
            .filter(|&m| self.assigned[m].len() < target[m])
            .collect();
        let mut next = 0;
        for slot in self.free() {
            let found = (0..below.len())
                .map(|step| (next + step) % below.len())
                .find(|&i| self.assigned[below[i]].len() < target[below[i]]);
            if let Some(i) = found {
                self.take(below[i], slot);
                next = (i + 1) % below.len();
            }
        }
    }

    /// Gives each free partition, those with the fewest eligible members
    /// first, to the eligible member with the fewest partitions.
    fn fill_least_loaded(&mut self) {
        let mut free = self.free();
        free.sort_by_key(|&(t, p)| (self.eligible[t].len(), t, p));
        for slot in free {
            let least = self.eligible[slot.0]
                .iter()
                .copied()
                .min_by_key(|&m| (self.assigned[m].len(), m));
            if let Some(m) = least {
                self.take(m, slot);
            }
        }
    }

    /// Passes partitions along chains of members while some member with `c`
    /// partitions can reach one with at most `c - 2`. Each pass lowers the sum
    /// of squared counts, so this ends.
    fn balance(&mut self) {
        loop {
            let Some(least) = self.assigned.iter().map(BTreeSet::len).min() else {
                return;
            };
            let mut givers: Vec<usize> = (0..self.assigned.len())
                .filter(|&m| self.assigned[m].len() >= least + 2)
                .collect();
            givers.sort_by_key(|&m| (Reverse(self.assigned[m].len()), m));
            let Some(chain) = givers.into_iter().find_map(|m| self.chain_from(m)) else {
                return;
            };
            if !self.pass_along(&chain) {
                return;
            }
        }
    }

    /// A shortest chain from `start` to a member with at least two fewer
    /// partitions (the least loaded such member at that distance): links
    /// `(giver, topic, taker)`, each giver holding a partition of `topic` and
    /// each taker subscribed to it.
    fn chain_from(&self, start: usize) -> Option<Vec<(usize, usize, usize)>> {
        let limit = self.assigned[start].len().checked_sub(2)?;
        let mut reached_by: Vec<Option<(usize, usize)>> = vec![None; self.assigned.len()];
        let mut seen = vec![false; self.assigned.len()];
        seen[start] = true;
        let mut level = vec![start];
        while !level.is_empty() {
            let mut next = Vec::new();
            for &giver in &level {
                for topic in self.held_topics(giver) {
                    for &taker in &self.eligible[topic] {
                        if !seen[taker] {
                            seen[taker] = true;
                            reached_by[taker] = Some((giver, topic));
                            next.push(taker);
                        }
                    }
                }
            }
            let end = next
                .iter()
                .copied()
                .filter(|&m| self.assigned[m].len() <= limit)
                .min_by_key(|&m| (self.assigned[m].len(), m));
            if let Some(end) = end {
                let mut chain = Vec::new();
                let mut at = end;
                while let Some((giver, topic)) = reached_by[at] {
                    chain.push((giver, topic, at));
                    at = giver;
                }
                chain.reverse();
                return Some(chain);
            }
            level = next;
        }
        None
    }

    /// The topics `member` holds a partition of, jumping from topic to topic
    /// rather than walking every partition.
    fn held_topics(&self, member: usize) -> Vec<usize> {
        let mut topics = Vec::new();
        let mut from = (0, 0);
        while let Some(&(topic, _)) = self.assigned[member].range(from..).next() {
            topics.push(topic);
            from = (topic + 1, 0);
        }
        topics
    }

    /// Moves one partition along each link of `chain`, from its start,
    /// preferring one the giver did not keep from its owned list (the first
    /// such of the topic, else the first it kept). False if a giver had
    /// nothing to pass (which the chain's construction rules out).
    fn pass_along(&mut self, chain: &[(usize, usize, usize)]) -> bool {
        for &(giver, topic, taker) in chain {
            let of_topic = (topic, 0)..=(topic, u32::MAX);
            let fresh = self.fresh[giver].range(of_topic.clone()).next();
            let Some(&slot) = fresh.or_else(|| self.assigned[giver].range(of_topic).next()) else {
                return false;
            };
            self.release(giver, slot);
            self.take(taker, slot);
        }
        true
    }

    fn into_assignment(self, members: &[&MemberSubscription]) -> Assignment {
        let topics = self.topics;
        members
            .iter()
            .zip(self.assigned)
            .map(|(member, slots)| {
                let list = slots
                    .into_iter()
                    .map(|(t, p)| TopicPartition::from_shared(Arc::clone(&topics[t].0), p))
                    .collect();
                (member.member_id.clone(), list)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_string(),
            group_instance_id: None,
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: vec![],
        }
    }

    fn counts(topics: &[(&str, u32)]) -> BTreeMap<String, u32> {
        topics.iter().map(|&(t, n)| (t.to_string(), n)).collect()
    }

    /// Kafka's short names: `t0p1` for partition 1 of `t0`.
    fn names(assignment: &Assignment, member: &str) -> Vec<String> {
        assignment[member]
            .iter()
            .map(|tp| format!("{}p{}", tp.topic(), tp.partition()))
            .collect()
    }

    /// The partitions whose owner in `after` differs from the one in `before`
    /// (partitions new in `after` do not count).
    fn moved(before: &Assignment, after: &Assignment) -> usize {
        let owner_after: BTreeMap<&TopicPartition, &String> = after
            .iter()
            .flat_map(|(m, tps)| tps.iter().map(move |tp| (tp, m)))
            .collect();
        before
            .iter()
            .flat_map(|(m, tps)| tps.iter().map(move |tp| (tp, m)))
            .filter(|&(tp, m)| owner_after.get(tp) != Some(&m))
            .count()
    }

    fn with_owned(
        members: &[MemberSubscription],
        previous: &Assignment,
    ) -> Vec<MemberSubscription> {
        members
            .iter()
            .map(|m| MemberSubscription {
                owned: previous.get(&m.member_id).cloned().unwrap_or_default(),
                ..m.clone()
            })
            .collect()
    }

    #[test]
    fn range_matches_kafkas_javadoc_example() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let result = RangeAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(names(&result, "C0"), ["t0p0", "t0p1", "t1p0", "t1p1"]);
        assert_eq!(names(&result, "C1"), ["t0p2", "t1p2"]);
    }

    #[test]
    fn range_orders_static_members_by_instance_id() {
        let mut a = member("a", &["t"]);
        a.group_instance_id = Some("z".into());
        let b = member("b", &["t"]);
        let result = RangeAssignor.assign(&counts(&[("t", 3)]), &[a, b]);
        assert_eq!(names(&result, "b"), ["tp0", "tp1"]);
        assert_eq!(names(&result, "a"), ["tp2"]);
    }

    #[test]
    fn roundrobin_matches_kafkas_javadoc_example_with_equal_subscriptions() {
        let members = [member("C0", &["t0", "t1"]), member("C1", &["t0", "t1"])];
        let result = RoundRobinAssignor.assign(&counts(&[("t0", 3), ("t1", 3)]), &members);
        assert_eq!(names(&result, "C0"), ["t0p0", "t0p2", "t1p1"]);
        assert_eq!(names(&result, "C1"), ["t0p1", "t1p0", "t1p2"]);
    }

    #[test]
    fn roundrobin_matches_kafkas_javadoc_example_with_different_subscriptions() {
        let members = [
            member("C0", &["t0"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1", "t2"]),
        ];
        let result =
            RoundRobinAssignor.assign(&counts(&[("t0", 1), ("t1", 2), ("t2", 3)]), &members);
        assert_eq!(names(&result, "C0"), ["t0p0"]);
        assert_eq!(names(&result, "C1"), ["t1p0"]);
        assert_eq!(names(&result, "C2"), ["t1p1", "t2p0", "t2p1", "t2p2"]);
    }

    #[test]
    fn sticky_moves_only_the_leavers_partitions() {
        let partitions = counts(&[("t0", 3), ("t1", 3)]);
        let members = [
            member("C0", &["t0", "t1"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1"]),
        ];
        let before = StickyAssignor.assign(&partitions, &members);
        assert!(before.values().all(|tps| tps.len() == 2));
        let remaining = with_owned(&members[..2], &before);
        let after = StickyAssignor.assign(&partitions, &remaining);
        assert_eq!(moved(&before, &after), 2);
        for m in ["C0", "C1"] {
            assert_eq!(after[m].len(), 3);
            assert!(before[m].iter().all(|tp| after[m].contains(tp)));
        }
    }

    #[test]
    fn sticky_moves_two_partitions_when_a_member_joins_two() {
        let partitions = counts(&[("t0", 3), ("t1", 3)]);
        let members = [
            member("C0", &["t0", "t1"]),
            member("C1", &["t0", "t1"]),
            member("C2", &["t0", "t1"]),
        ];
        let before = StickyAssignor.assign(&partitions, &members[..2]);
        let after = CooperativeStickyAssignor.assign(&partitions, &with_owned(&members, &before));
        assert_eq!(moved(&before, &after), 2);
        assert!(after.values().all(|tps| tps.len() == 2));
        assert_eq!(before["C0"].len() - after["C0"].len(), 1);
        assert_eq!(before["C1"].len() - after["C1"].len(), 1);
    }

    #[test]
    fn sticky_gives_a_partition_claimed_twice_to_one_member() {
        let tp = |p| TopicPartition::new("t", p).unwrap();
        let mut a = member("a", &["t"]);
        a.owned = vec![tp(0), tp(0), tp(7)];
        let mut b = member("b", &["t"]);
        b.owned = vec![tp(0), tp(1)];
        let result = StickyAssignor.assign(&counts(&[("t", 2)]), &[b, a]);
        assert_eq!(result["a"], [tp(0)]);
        assert_eq!(result["b"], [tp(1)]);
    }

    #[test]
    fn sticky_balances_along_a_chain_of_members() {
        // x only reads t0, z only t1, y both. x owns all of t0 and y all of
        // t1; z can only be given partitions through y.
        let tp = |t: &str, p| TopicPartition::new(t, p).unwrap();
        let mut x = member("x", &["t0"]);
        x.owned = (0..4).map(|p| tp("t0", p)).collect();
        let mut y = member("y", &["t0", "t1"]);
        y.owned = (0..2).map(|p| tp("t1", p)).collect();
        let z = member("z", &["t1"]);
        let members = [x, y, z];
        let before: Assignment = members
            .iter()
            .map(|m| (m.member_id.clone(), m.owned.clone()))
            .collect();
        let result = StickyAssignor.assign(&counts(&[("t0", 4), ("t1", 2)]), &members);
        let sizes: Vec<usize> = ["x", "y", "z"].map(|m| result[m].len()).into();
        assert_eq!(sizes, [2, 2, 2]);
        // x must give two partitions to y, and z can only get y's: four moves.
        assert_eq!(moved(&before, &result), 4);
    }

    #[test]
    fn assignors_accept_degenerate_input() {
        let mut odd = member("m", &["absent", "empty", "t"]);
        odd.owned = vec![
            TopicPartition::new("absent", 0).unwrap(),
            TopicPartition::new("t", 99).unwrap(),
        ];
        let nothing = member("n", &[]);
        let partitions = counts(&[("empty", 0), ("t", 1), ("unread", 4)]);
        for assignor in built_in_assignors() {
            assert!(assignor.assign(&partitions, &[]).is_empty());
            let result = assignor.assign(&partitions, &[odd.clone(), nothing.clone(), odd.clone()]);
            assert_eq!(names(&result, "m"), ["tp0"], "{}", assignor.name());
            assert!(result["n"].is_empty());
            assert_eq!(result.len(), 2);
        }
    }
}
