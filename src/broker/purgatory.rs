//! Fetches waiting for data (Kafka's fetch purgatory).
//!
//! A fetch that finds fewer than `min_bytes` parks here with its [`Reply`]
//! and a deadline. An append to one of its partitions adds the appended bytes
//! to its count and completes it once the count reaches `min_bytes`; the
//! broker's runtime completes it at its deadline. This module only keeps the
//! book: it never reads a log or replies; it hands completed waiters back.

use std::collections::{BTreeSet, HashMap};

use crate::protocol::FetchRequest;
use crate::time::Millis;
use crate::topic::TopicPartition;
use crate::transport::Reply;

/// A parked fetch.
#[derive(Debug)]
pub(crate) struct PendingFetch {
    pub(crate) request: FetchRequest,
    pub(crate) reply: Reply,
    deadline: Millis,
    bytes: u64,
}

/// The waiting fetches of one broker.
#[derive(Debug, Default)]
pub(crate) struct FetchPurgatory {
    next_id: u64,
    waiters: HashMap<u64, PendingFetch>,
    by_partition: HashMap<TopicPartition, Vec<u64>>,
    deadlines: BTreeSet<(Millis, u64)>,
}

impl FetchPurgatory {
    /// Parks `request`, which found `bytes` available, until `deadline`.
    pub(crate) fn park(
        &mut self,
        request: FetchRequest,
        reply: Reply,
        bytes: u64,
        deadline: Millis,
    ) {
        let id = self.next_id;
        self.next_id += 1;
        for p in &request.partitions {
            self.by_partition
                .entry(p.partition.clone())
                .or_default()
                .push(id);
        }
        self.deadlines.insert((deadline, id));
        self.waiters.insert(
            id,
            PendingFetch {
                request,
                reply,
                deadline,
                bytes,
            },
        );
    }

    /// Counts `bytes` appended to `partition` and returns the waiters that now
    /// have `min_bytes`.
    pub(crate) fn on_append(
        &mut self,
        partition: &TopicPartition,
        bytes: u64,
    ) -> Vec<PendingFetch> {
        let Some(ids) = self.by_partition.get(partition) else {
            return Vec::new();
        };
        let mut ready = Vec::new();
        for &id in ids {
            if let Some(w) = self.waiters.get_mut(&id) {
                w.bytes += bytes;
                if w.bytes >= u64::from(w.request.min_bytes.max(1)) {
                    ready.push(id);
                }
            }
        }
        ready.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns the waiters whose deadline is at or before `now`.
    pub(crate) fn expire(&mut self, now: Millis) -> Vec<PendingFetch> {
        let due: Vec<u64> = self
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, id)| id)
            .collect();
        due.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// Removes and returns every waiter (shutdown).
    pub(crate) fn drain(&mut self) -> Vec<PendingFetch> {
        let ids: Vec<u64> = self.waiters.keys().copied().collect();
        ids.into_iter().filter_map(|id| self.remove(id)).collect()
    }

    /// The earliest deadline, if any fetch waits.
    pub(crate) fn next_deadline(&self) -> Option<Millis> {
        self.deadlines.first().map(|&(deadline, _)| deadline)
    }

    /// How many fetches wait.
    pub(crate) fn len(&self) -> usize {
        self.waiters.len()
    }

    fn remove(&mut self, id: u64) -> Option<PendingFetch> {
        let waiter = self.waiters.remove(&id)?;
        self.deadlines.remove(&(waiter.deadline, id));
        for p in &waiter.request.partitions {
            if let Some(ids) = self.by_partition.get_mut(&p.partition) {
                ids.retain(|&x| x != id);
                if ids.is_empty() {
                    self.by_partition.remove(&p.partition);
                }
            }
        }
        Some(waiter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::FetchPartition;

    fn fetch(partitions: &[&TopicPartition], min_bytes: u32) -> FetchRequest {
        FetchRequest {
            max_wait_ms: 100,
            min_bytes,
            max_bytes: 1 << 20,
            partitions: partitions
                .iter()
                .map(|&tp| FetchPartition {
                    partition: tp.clone(),
                    fetch_offset: 0,
                    max_bytes: 1 << 20,
                })
                .collect(),
        }
    }

    #[test]
    fn appends_complete_a_waiter_once_it_has_min_bytes() {
        let a = TopicPartition::new("a", 0).unwrap();
        let b = TopicPartition::new("b", 0).unwrap();
        let mut p = FetchPurgatory::default();
        p.park(fetch(&[&a, &b], 100), Reply::ignored(0), 10, 50);
        assert!(p.on_append(&a, 40).is_empty());
        assert!(
            p.on_append(&TopicPartition::new("c", 0).unwrap(), 1000)
                .is_empty()
        );
        assert_eq!(p.on_append(&b, 50).len(), 1);
        assert_eq!(p.len(), 0);
        assert!(p.by_partition.is_empty() && p.deadlines.is_empty());
    }

    #[test]
    fn deadlines_expire_in_order() {
        let a = TopicPartition::new("a", 0).unwrap();
        let mut p = FetchPurgatory::default();
        p.park(fetch(&[&a], 1), Reply::ignored(0), 0, 30);
        p.park(fetch(&[&a], 1), Reply::ignored(0), 0, 10);
        assert_eq!(p.next_deadline(), Some(10));
        assert!(p.expire(9).is_empty());
        assert_eq!(p.expire(10).len(), 1);
        assert_eq!(p.next_deadline(), Some(30));
        assert_eq!(p.expire(100).len(), 1);
        assert_eq!(p.next_deadline(), None);
        assert!(p.by_partition.is_empty());
    }
}
