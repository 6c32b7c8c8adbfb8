//! Partition assignors: who reads which partition.
//!
//! An [`Assignor`] turns the members of a group (their subscriptions and what
//! they own now) and the partition counts of the subscribed topics into a
//! target assignment. The coordinator runs it; members then move towards the
//! target, revoking before anyone else is given a partition.
//!
//! Built in, with Kafka's names: [`RangeAssignor`] (`"range"`),
//! [`RoundRobinAssignor`] (`"roundrobin"`), [`StickyAssignor`] (`"sticky"`)
//! and [`CooperativeStickyAssignor`] (`"cooperative-sticky"`).

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::fmt;

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
