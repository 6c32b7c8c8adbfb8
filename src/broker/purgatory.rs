//! Requests waiting for the log to move (Kafka's purgatories).
//!
//! A fetch that finds fewer than `min_bytes` parks here with the address of
//! its answer and a deadline; an `acks=all` produce parks until the high
//! watermark passes its records. Whatever moves a partition (an append, a
//! high watermark advance, a leadership change) has the broker take the
//! waiters watching it and look at them again; the broker's timeout takes
//! them at their deadline. This module only keeps the book: it never reads a
//! log or answers. Everything is ordered (by id, partition and deadline), so
//! waiters come out in the same order for the same inputs.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::{FetchRequest, GroupHeartbeatRequest, ProducedPartition, ReplyTo, Response};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// A parked fetch.
#[derive(Debug)]
pub(crate) struct PendingFetch {
    pub(crate) request: FetchRequest,
    pub(crate) reply: ReplyTo,
    pub(crate) deadline: Millis,
    /// The follower and fetch session id of a session fetch.
    pub(crate) session: Option<(crate::protocol::NodeId, u32)>,
}

/// A parked `acks=all` produce: the results so far, and for each partition
/// still waiting, the offset its high watermark must reach.
#[derive(Debug)]
pub(crate) struct PendingProduce {
    pub(crate) reply: ReplyTo,
    pub(crate) results: Vec<ProducedPartition>,
    /// Per partition still waiting: (index into `results`, offset the HW
    /// must reach, leader epoch of the append).
    pub(crate) waiting: BTreeMap<TopicPartition, Vec<(usize, u64, i32)>>,
    pub(crate) deadline: Millis,
}

/// A parked group request: its answer, sent once the coordinator's
/// partition has committed the group's records up to `required`.
#[derive(Debug)]
pub(crate) struct PendingGroup {
    pub(crate) reply: ReplyTo,
    pub(crate) response: Response,
    pub(crate) partition: TopicPartition,
    pub(crate) required: u64,
    pub(crate) leader_epoch: i32,
    pub(crate) group: String,
    pub(crate) deadline: Millis,
}

/// A heartbeat held because it had nothing new: answered when its group
/// writes something, or at `deadline`.
#[derive(Debug)]
pub(crate) struct HeldHeartbeat {
    pub(crate) request: GroupHeartbeatRequest,
    pub(crate) reply: ReplyTo,
    pub(crate) partition: TopicPartition,
    pub(crate) deadline: Millis,
}

/// A request that parks until one of its partitions moves or its deadline.
pub(crate) trait Waiter {
    /// The partitions whose moves may settle it.
    fn watched(&self) -> Vec<TopicPartition>;
    /// When it is answered whatever happens.
    fn deadline(&self) -> Millis;
}

impl Waiter for PendingFetch {
    fn watched(&self) -> Vec<TopicPartition> {
        if self.session.is_some() {
            // Woken through its session, which knows all its partitions.
            return Vec::new();
        }
        self.request
            .partitions
            .iter()
            .map(|p| p.partition.clone())
            .collect()
    }

    fn deadline(&self) -> Millis {
        self.deadline
    }
}

impl Waiter for PendingProduce {
    fn watched(&self) -> Vec<TopicPartition> {
        self.waiting.keys().cloned().collect()
    }

    fn deadline(&self) -> Millis {
        self.deadline
    }
}

impl Waiter for PendingGroup {
    fn watched(&self) -> Vec<TopicPartition> {
        vec![self.partition.clone()]
    }

    fn deadline(&self) -> Millis {
        self.deadline
    }
}

impl Waiter for HeldHeartbeat {
    fn watched(&self) -> Vec<TopicPartition> {
        vec![self.partition.clone()]
    }

    fn deadline(&self) -> Millis {
        self.deadline
    }
}

/// Parked requests of one kind, indexed by partition and deadline.
#[derive(Debug)]
pub(crate) struct Purgatory<T> {
    next_id: u64,
    waiters: BTreeMap<u64, (T, Vec<TopicPartition>, Millis)>,
    by_partition: BTreeMap<TopicPartition, BTreeSet<u64>>,
    deadlines: BTreeSet<(Millis, u64)>,
}

impl<T> Default for Purgatory<T> {
    fn default() -> Self {
        Self {
            next_id: 0,
            waiters: BTreeMap::new(),
            by_partition: BTreeMap::new(),
            deadlines: BTreeSet::new(),
        }
    }
}

impl<T: Waiter> Purgatory<T> {
    /// Parks `waiter` until its deadline, watching its partitions; returns
    /// its id.
    pub(crate) fn park(&mut self, waiter: T) -> u64 {
        let (partitions, deadline) = (waiter.watched(), waiter.deadline());
        let id = self.next_id;
        self.next_id += 1;
        for tp in &partitions {
            self.by_partition.entry(tp.clone()).or_default().insert(id);
        }
        self.deadlines.insert((deadline, id));
        self.waiters.insert(id, (waiter, partitions, deadline));
        id
    }
}

impl<T> Purgatory<T> {
    /// Removes and returns the waiters watching `partition`, oldest first.
    pub(crate) fn take_watching(&mut self, partition: &TopicPartition) -> Vec<T> {
        let ids = self
            .by_partition
            .get(partition)
            .cloned()
            .unwrap_or_default();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns waiter `id`, if it is still parked.
    pub(crate) fn take(&mut self, id: u64) -> Option<T> {
        self.remove(id)
    }

    /// The ids of the waiters watching `partition`, oldest first (they stay
    /// parked: see [`get_mut`](Self::get_mut) and [`unwatch`](Self::unwatch)).
    pub(crate) fn watching(&self, partition: &TopicPartition) -> Vec<u64> {
        self.by_partition
            .get(partition)
            .map(|ids| ids.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Waiter `id`, to settle in place.
    pub(crate) fn get_mut(&mut self, id: u64) -> Option<&mut T> {
        self.waiters.get_mut(&id).map(|(waiter, _, _)| waiter)
    }

    /// Waiter `id` no longer cares whether `partition` moves (it settled
    /// there); it stays parked for the rest.
    pub(crate) fn unwatch(&mut self, id: u64, partition: &TopicPartition) {
        if let Some(ids) = self.by_partition.get_mut(partition) {
            ids.remove(&id);
            if ids.is_empty() {
                self.by_partition.remove(partition);
            }
        }
    }

    /// Removes and returns the waiters whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Millis) -> Vec<T> {
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, id)| id)
            .collect();
        due.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns every waiter, oldest first (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<T> {
        let ids: Vec<u64> = self.waiters.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// How many waiters are parked.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    /// The earliest deadline, if anything waits.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    fn remove(&mut self, id: u64) -> Option<T> {
        let (waiter, partitions, deadline) = self.waiters.remove(&id)?;
        self.deadlines.remove(&(deadline, id));
        for tp in &partitions {
            if let Some(ids) = self.by_partition.get_mut(tp) {
                ids.remove(&id);
                if ids.is_empty() {
                    self.by_partition.remove(tp);
                }
            }
        }
        Some(waiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct W(&'static str, Vec<TopicPartition>, Millis);

    impl Waiter for W {
        fn watched(&self) -> Vec<TopicPartition> {
            self.1.clone()
        }
        fn deadline(&self) -> Millis {
            self.2
        }
    }

    #[test]
    fn waiters_are_taken_by_partition_or_by_deadline_once() {
        let a = TopicPartition::new("a", 0).unwrap();
        let b = TopicPartition::new("b", 0).unwrap();
        let mut p: Purgatory<W> = Purgatory::default();
        p.park(W("ab", vec![a.clone(), b.clone()], 30));
        p.park(W("b", vec![b.clone()], 10));
        assert_eq!(p.next_deadline(), Some(10));
        let names = |v: Vec<W>| v.into_iter().map(|w| w.0).collect::<Vec<_>>();
        assert_eq!(names(p.take_watching(&a)), ["ab"]);
        assert!(p.take_watching(&a).is_empty(), "taken once");
        assert!(p.expire(9).is_empty());
        assert_eq!(names(p.expire(10)), ["b"]);
        assert_eq!((p.waiters.len(), p.next_deadline()), (0, None));
        assert!(p.by_partition.is_empty() && p.deadlines.is_empty());
    }

    #[test]
    fn a_waiter_settled_on_one_partition_stays_parked_for_the_others() {
        let a = TopicPartition::new("a", 0).unwrap();
        let b = TopicPartition::new("b", 0).unwrap();
        let mut p: Purgatory<W> = Purgatory::default();
        let id = p.park(W("ab", vec![a.clone(), b.clone()], 30));
        assert_eq!(p.watching(&a), [id]);
        p.get_mut(id).unwrap().0 = "b only";
        p.unwatch(id, &a);
        assert!(p.watching(&a).is_empty() && p.take_watching(&a).is_empty());
        let names = |v: Vec<W>| v.into_iter().map(|w| w.0).collect::<Vec<_>>();
        assert_eq!(names(p.take_watching(&b)), ["b only"]);
        assert!(p.by_partition.is_empty() && p.deadlines.is_empty());
    }
}
