//! Properties of the built-in assignors, checked through the public API on
//! generated groups: validity for any input, balance for equal
//! subscriptions, and minimal movement for the sticky ones.

use std::collections::{BTreeMap, BTreeSet};

use ferrolog::TopicPartition;
use ferrolog::group::{
    Assignment, Assignor, CooperativeStickyAssignor, MemberSubscription, RangeAssignor,
    RoundRobinAssignor, StickyAssignor, built_in_assignors,
};
use proptest::collection::vec;
use proptest::option;
use proptest::prelude::*;

/// Topic `i` of a generated case; index 10 is a topic that does not exist.
fn topic_name(i: usize) -> String {
    if i < 10 {
        format!("t{i}")
    } else {
        "absent".to_string()
    }
}

/// The topics a subscription mask names (bits 0..10 existing ones, bit 10
/// the absent one).
fn topics_of(mask: u16) -> BTreeSet<String> {
    (0..=10)
        .filter(|i| mask & (1 << i) != 0)
        .map(topic_name)
        .collect()
}

fn partition_counts(counts: &[u32]) -> BTreeMap<String, u32> {
    (0..counts.len())
        .map(|i| (topic_name(i), counts[i]))
        .collect()
}

/// One generated member: subscription mask, static instance number, and
/// owned partitions as (topic index, partition), valid or not.
type RawMember = (u16, Option<u8>, Vec<(usize, u32)>);

fn raw_members(max: usize) -> impl Strategy<Value = Vec<RawMember>> {
    vec(
        (
            any::<u16>(),
            option::weighted(0.3, 0u8..16),
            vec((0usize..=10, 0u32..=70), 0..8),
        ),
        0..=max,
    )
}

/// Builds the members; `shared` replaces every mask when given.
fn build_members(
    raw: &[RawMember],
    shared: Option<u16>,
    with_owned: bool,
) -> Vec<MemberSubscription> {
    raw.iter()
        .enumerate()
        .map(|(i, (mask, instance, owned))| MemberSubscription {
            member_id: format!("m{i:02}"),
            group_instance_id: instance.map(|k| format!("static-{k}")),
            topics: topics_of(shared.unwrap_or(*mask)),
            owned: if with_owned {
                owned
                    .iter()
                    .map(|&(t, p)| TopicPartition::new(topic_name(t), p).unwrap())
                    .collect()
            } else {
                vec![]
            },
        })
        .collect()
}

/// The members with `owned` set to their lists in `previous`.
fn owning(members: &[MemberSubscription], previous: &Assignment) -> Vec<MemberSubscription> {
    members
        .iter()
        .map(|m| MemberSubscription {
            owned: previous.get(&m.member_id).cloned().unwrap_or_default(),
            ..m.clone()
        })
        .collect()
}

/// Partitions owned in `before` that have another owner (or none) in
/// `after`. Partitions that did not exist in `before` do not count.
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

/// Every member appears; every partition of a topic with a subscriber is
/// assigned exactly once, to a member subscribed to its topic; nothing else
/// is assigned.
fn check_valid(
    name: &str,
    partitions: &BTreeMap<String, u32>,
    members: &[MemberSubscription],
    result: &Assignment,
) -> Result<(), TestCaseError> {
    let ids: BTreeSet<&String> = members.iter().map(|m| &m.member_id).collect();
    prop_assert_eq!(result.keys().collect::<BTreeSet<_>>(), ids, "{}", name);
    let mut expected = BTreeSet::new();
    for (topic, &count) in partitions {
        if members.iter().any(|m| m.topics.contains(topic)) {
            for p in 0..count {
                expected.insert(TopicPartition::new(topic.as_str(), p).unwrap());
            }
        }
    }
    let mut seen = BTreeSet::new();
    for member in members {
        for tp in &result[&member.member_id] {
            prop_assert!(
                member.topics.contains(tp.topic()),
                "{}: {} given to {} which does not subscribe to it",
                name,
                tp,
                member.member_id
            );
            prop_assert!(seen.insert(tp.clone()), "{}: {} assigned twice", name, tp);
        }
    }
    prop_assert_eq!(seen, expected, "{}", name);
    Ok(())
}

/// The members' partition counts differ by at most one.
fn check_balanced(name: &str, result: &Assignment) -> Result<(), TestCaseError> {
    let sizes: Vec<usize> = result.values().map(Vec::len).collect();
    if let (Some(min), Some(max)) = (sizes.iter().min(), sizes.iter().max()) {
        prop_assert!(max - min <= 1, "{}: unbalanced counts {:?}", name, sizes);
    }
    Ok(())
}

/// No chain of hand-overs (each member giving a partition to one subscribed
/// to its topic) leads from a member to one with at least two fewer: the
/// balance cannot be improved.
fn check_no_improving_chain(
    members: &[MemberSubscription],
    result: &Assignment,
) -> Result<(), TestCaseError> {
    let count = |m: &MemberSubscription| result[&m.member_id].len();
    for start in members {
        let mut reached = BTreeSet::from([&start.member_id]);
        let mut frontier = vec![start];
        while let Some(giver) = frontier.pop() {
            for taker in members {
                let can_take = result[&giver.member_id]
                    .iter()
                    .any(|tp| taker.topics.contains(tp.topic()));
                if can_take && reached.insert(&taker.member_id) {
                    prop_assert!(
                        count(taker) + 2 > count(start),
                        "{} ({}) could shed a partition to {} ({})",
                        start.member_id,
                        count(start),
                        taker.member_id,
                        count(taker)
                    );
                    frontier.push(taker);
                }
            }
        }
    }
    Ok(())
}

/// Whether the subscribed partitions can be assigned with at most `limit`
/// per member (a max-flow from topics to members).
fn fits_within(
    partitions: &BTreeMap<String, u32>,
    members: &[MemberSubscription],
    limit: usize,
) -> bool {
    // Nodes: source, topics, members, sink; capacities in a dense matrix.
    let topics: Vec<(&String, usize)> = partitions
        .iter()
        .filter(|(t, _)| members.iter().any(|m| m.topics.contains(*t)))
        .map(|(t, &n)| (t, n as usize))
        .collect();
    let (source, sink) = (0, 1 + topics.len() + members.len());
    let mut cap = vec![vec![0usize; sink + 1]; sink + 1];
    for (i, (topic, n)) in topics.iter().enumerate() {
        cap[source][1 + i] = *n;
        for (j, m) in members.iter().enumerate() {
            if m.topics.contains(*topic) {
                cap[1 + i][1 + topics.len() + j] = *n;
            }
        }
    }
    for j in 0..members.len() {
        cap[1 + topics.len() + j][sink] = limit;
    }
    let mut flow = 0;
    loop {
        let mut parent = vec![usize::MAX; sink + 1];
        parent[source] = source;
        let mut queue = std::collections::VecDeque::from([source]);
        while let Some(u) = queue.pop_front() {
            for v in 0..=sink {
                if parent[v] == usize::MAX && cap[u][v] > 0 {
                    parent[v] = u;
                    queue.push_back(v);
                }
            }
        }
        if parent[sink] == usize::MAX {
            break;
        }
        let mut push = usize::MAX;
        let mut v = sink;
        while v != source {
            push = push.min(cap[parent[v]][v]);
            v = parent[v];
        }
        let mut v = sink;
        while v != source {
            cap[parent[v]][v] -= push;
            cap[v][parent[v]] += push;
            v = parent[v];
        }
        flow += push;
    }
    flow == topics.iter().map(|(_, n)| n).sum::<usize>()
}

fn sticky_assignors() -> [&'static dyn Assignor; 2] {
    [&StickyAssignor, &CooperativeStickyAssignor]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any subscriptions and any owned claims (duplicates, unsubscribed or
    /// absent topics, partitions beyond the count) give a valid assignment.
    #[test]
    fn every_assignor_assigns_every_subscribed_partition_once_to_a_subscriber(
        counts in vec(0u32..=64, 1..=10),
        raw in raw_members(12),
    ) {
        let partitions = partition_counts(&counts);
        let members = build_members(&raw, None, true);
        for assignor in built_in_assignors() {
            let result = assignor.assign(&partitions, &members);
            check_valid(assignor.name(), &partitions, &members, &result)?;
        }
    }

    /// The result does not depend on the order the members come in.
    #[test]
    fn every_assignor_ignores_member_order(
        counts in vec(0u32..=64, 1..=10),
        raw in raw_members(12),
    ) {
        let partitions = partition_counts(&counts);
        let members = build_members(&raw, None, true);
        let mut reversed = members.clone();
        reversed.reverse();
        for assignor in built_in_assignors() {
            prop_assert_eq!(
                assignor.assign(&partitions, &members),
                assignor.assign(&partitions, &reversed),
                "{}", assignor.name()
            );
        }
    }

    /// With equal subscriptions Range balances each topic, the others the
    /// whole assignment (to within one partition).
    #[test]
    fn equal_subscriptions_are_balanced(
        counts in vec(0u32..=64, 1..=10),
        raw in raw_members(12),
        shared in any::<u16>(),
        with_owned in any::<bool>(),
    ) {
        let partitions = partition_counts(&counts);
        let members = build_members(&raw, Some(shared), with_owned);
        let range = RangeAssignor.assign(&partitions, &members);
        check_valid("range", &partitions, &members, &range)?;
        for topic in partitions.keys() {
            let per_topic: Assignment = range
                .iter()
                .map(|(m, tps)| (m.clone(), tps.iter().filter(|tp| tp.topic() == topic).cloned().collect()))
                .collect();
            check_balanced("range", &per_topic)?;
        }
        let others: [&dyn Assignor; 3] =
            [&RoundRobinAssignor, &StickyAssignor, &CooperativeStickyAssignor];
        for assignor in others {
            let result = assignor.assign(&partitions, &members);
            check_valid(assignor.name(), &partitions, &members, &result)?;
            check_balanced(assignor.name(), &result)?;
        }
    }

    /// Equal subscriptions, starting from the assignor's own balanced
    /// assignment: with no change nothing moves; when a member leaves exactly
    /// its partitions move; when a member joins exactly floor(P / (M + 1))
    /// partitions move, all to it; when partitions are added nothing owned
    /// moves. Every result stays balanced.
    #[test]
    fn sticky_assignors_move_the_fewest_partitions(
        counts in vec(0u32..=64, 1..=10),
        raw in raw_members(12).prop_filter("at least one member", |r| !r.is_empty()),
        shared in 1u16..1024,
        leaver in any::<prop::sample::Index>(),
        newcomer_first in any::<bool>(),
        added in vec(0u32..=8, 10),
    ) {
        let partitions = partition_counts(&counts);
        let members = build_members(&raw, Some(shared), false);
        let total: usize = partitions
            .iter()
            .filter(|(t, _)| members[0].topics.contains(*t))
            .map(|(_, &n)| n as usize)
            .sum();
        for assignor in sticky_assignors() {
            let name = assignor.name();
            let before = assignor.assign(&partitions, &members);
            check_balanced(name, &before)?;

            let again = assignor.assign(&partitions, &owning(&members, &before));
            prop_assert_eq!(&again, &before, "{}: no change, yet partitions moved", name);

            if members.len() >= 2 {
                let gone = leaver.index(members.len());
                let mut remaining = owning(&members, &before);
                let left = remaining.remove(gone);
                let after = assignor.assign(&partitions, &remaining);
                check_valid(name, &partitions, &remaining, &after)?;
                check_balanced(name, &after)?;
                prop_assert_eq!(moved(&before, &after), before[&left.member_id].len(), "{}: leave", name);
            }

            let newcomer = MemberSubscription {
                member_id: if newcomer_first { "a-new".into() } else { "z-new".into() },
                group_instance_id: None,
                topics: members[0].topics.clone(),
                owned: vec![],
            };
            let mut joined = owning(&members, &before);
            joined.push(newcomer.clone());
            let after = assignor.assign(&partitions, &joined);
            check_valid(name, &partitions, &joined, &after)?;
            check_balanced(name, &after)?;
            let got = after[&newcomer.member_id].len();
            prop_assert_eq!(got, total / joined.len(), "{}: newcomer's share", name);
            prop_assert_eq!(moved(&before, &after), got, "{}: join", name);

            let grown: Vec<u32> = counts.iter().zip(&added).map(|(n, a)| n + a).collect();
            let grown = partition_counts(&grown);
            let after = assignor.assign(&grown, &owning(&members, &before));
            check_valid(name, &grown, &members, &after)?;
            check_balanced(name, &after)?;
            prop_assert_eq!(moved(&before, &after), 0, "{}: partitions added", name);
        }
    }

    /// Different subscriptions: no chain of hand-overs could improve the
    /// balance, the largest count is the smallest possible, and re-running on
    /// the result moves nothing.
    #[test]
    fn sticky_assignors_balance_and_settle_with_different_subscriptions(
        counts in vec(0u32..=64, 1..=10),
        raw in raw_members(12),
        with_owned in any::<bool>(),
    ) {
        let partitions = partition_counts(&counts);
        let members = build_members(&raw, None, with_owned);
        for assignor in sticky_assignors() {
            let result = assignor.assign(&partitions, &members);
            check_valid(assignor.name(), &partitions, &members, &result)?;
            check_no_improving_chain(&members, &result)?;
            let largest = result.values().map(Vec::len).max().unwrap_or(0);
            if largest > 0 {
                prop_assert!(
                    !fits_within(&partitions, &members, largest - 1),
                    "{}: a largest count below {} was possible", assignor.name(), largest
                );
            }
            let again = assignor.assign(&partitions, &owning(&members, &result));
            prop_assert_eq!(again, result, "{}: re-run moved partitions", assignor.name());
        }
    }
}
