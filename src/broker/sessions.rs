//! A leader's side of its followers' fetch sessions (after Kafka's KIP-227;
//! see [`FetchSession`]).
//!
//! Each follower broker has at most one session with this leader: the
//! partitions it fetches here, each with the position it last sent and the
//! high watermark and log start it was last told. A fetch lists only the
//! partitions whose position changed. The leader reads only the session's
//! dirty partitions — those just listed, and those that moved here since
//! the follower last heard of them — and answers with those that have
//! news (records, a new high watermark or log start, an error): an idle
//! partition costs no work per fetch, and a session fetch is answered as
//! soon as it has news. A parked session fetch wakes when any of its
//! partitions moves. Followers that keep fetching stay caught up on their
//! idle partitions: the ISR check asks [`FetchSessions::members`] which
//! followers fetched each partition when. Plain data: nothing here reads a
//! log or answers.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::protocol::{FetchPartition, FetchRequest, FetchSession, NodeId};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// A partition in a session: the follower's position as it last sent it,
/// and the (high watermark, log start offset) it was last told.
#[derive(Debug)]
struct SessionPartition {
    fetch: FetchPartition,
    told: Option<(u64, u64)>,
}

/// One follower's session.
#[derive(Debug)]
struct LeaderSession {
    id: u32,
    next_epoch: u32,
    partitions: BTreeMap<TopicPartition, SessionPartition>,
    /// Partitions to read at the next look: listed by the follower, or
    /// moved since the follower last got them.
    dirty: BTreeSet<TopicPartition>,
    last_fetch_ms: Millis,
    /// The purgatory id of its parked fetch.
    parked: Option<u64>,
}

/// The sessions of every follower fetching from this broker.
#[derive(Debug, Default)]
pub(super) struct FetchSessions {
    last_id: u32,
    by_replica: BTreeMap<NodeId, LeaderSession>,
    /// Which followers' sessions hold a partition.
    holders: BTreeMap<TopicPartition, BTreeSet<NodeId>>,
    /// Parked fetches whose sessions' partitions moved: looked at once
    /// everything that moves together has moved (not once per partition,
    /// which would read the growing dirty set over and over).
    waking: BTreeSet<u64>,
}

impl FetchSessions {
    /// Takes in `replica`'s fetch: opens its session (id 0), or checks the
    /// session's id and epoch and applies the listed and forgotten
    /// partitions. Returns the session's id.
    pub(super) fn receive(
        &mut self,
        replica: NodeId,
        session: FetchSession,
        request: &FetchRequest,
        now: Millis,
    ) -> Result<u32> {
        if session.id == 0 {
            self.close(replica);
            self.last_id = self.last_id.wrapping_add(1).max(1);
            self.by_replica.insert(
                replica,
                LeaderSession {
                    id: self.last_id,
                    next_epoch: 1,
                    partitions: BTreeMap::new(),
                    dirty: BTreeSet::new(),
                    last_fetch_ms: now,
                    parked: None,
                },
            );
        }
        let open = self
            .by_replica
            .get_mut(&replica)
            .filter(|s| session.id == 0 || s.id == session.id)
            .ok_or(Error::FetchSessionIdNotFound {
                session_id: session.id,
            })?;
        if session.id != 0 {
            if session.epoch != open.next_epoch {
                return Err(Error::InvalidFetchSessionEpoch {
                    session_id: session.id,
                    expected: open.next_epoch,
                    got: session.epoch,
                });
            }
            open.next_epoch = open.next_epoch.wrapping_add(1).max(1);
        }
        open.last_fetch_ms = now;
        for tp in &request.forgotten {
            open.partitions.remove(tp);
            open.dirty.remove(tp);
            unhold(&mut self.holders, tp, replica);
        }
        for fp in &request.partitions {
            match open.partitions.get_mut(&fp.partition) {
                Some(known) => known.fetch = fp.clone(),
                None => {
                    let entry = SessionPartition {
                        fetch: fp.clone(),
                        told: None,
                    };
                    open.partitions.insert(fp.partition.clone(), entry);
                }
            }
            open.dirty.insert(fp.partition.clone());
            self.holders
                .entry(fp.partition.clone())
                .or_default()
                .insert(replica);
        }
        Ok(open.id)
    }

    /// The id of `replica`'s session, if it has one.
    pub(super) fn id(&self, replica: NodeId) -> Option<u32> {
        self.by_replica.get(&replica).map(|s| s.id)
    }

    /// What a look at `replica`'s session reads: its dirty partitions, in
    /// order.
    pub(super) fn to_read(&self, replica: NodeId) -> Vec<FetchPartition> {
        self.by_replica
            .get(&replica)
            .map_or_else(Vec::new, |session| {
                session
                    .dirty
                    .iter()
                    .filter_map(|tp| session.partitions.get(tp).map(|p| p.fetch.clone()))
                    .collect()
            })
    }

    /// `replica`'s session read `tp`, finding its high watermark and log
    /// start at `state` (`None`: the read failed): `tp` is clean until it
    /// moves or is listed again. Whether `state` is news to the follower
    /// (it is then taken as told: the caller answers with it).
    pub(super) fn read(
        &mut self,
        replica: NodeId,
        tp: &TopicPartition,
        state: Option<(u64, u64)>,
    ) -> bool {
        let Some(session) = self.by_replica.get_mut(&replica) else {
            return true;
        };
        session.dirty.remove(tp);
        match (session.partitions.get_mut(tp), state) {
            (Some(p), Some(state)) if p.told != Some(state) => {
                p.told = Some(state);
                true
            }
            (Some(_), Some(_)) => false,
            _ => true,
        }
    }

    /// `tp` moved: dirty in every session holding it, and their parked
    /// fetches due a look ([`take_waking`](Self::take_waking)).
    pub(super) fn moved(&mut self, tp: &TopicPartition) {
        let Some(replicas) = self.holders.get(tp) else {
            return;
        };
        for replica in replicas {
            if let Some(session) = self.by_replica.get_mut(replica) {
                session.dirty.insert(tp.clone());
                self.waking.extend(session.parked.take());
            }
        }
    }

    /// The purgatory ids of the parked fetches due a look, oldest first.
    pub(super) fn take_waking(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.waking).into_iter().collect()
    }

    /// `replica`'s fetch parked as purgatory entry `id`, or (`None`) left it.
    pub(super) fn set_parked(&mut self, replica: NodeId, id: Option<u64>) {
        if let Some(session) = self.by_replica.get_mut(&replica) {
            session.parked = id;
        }
    }

    /// Every (follower, partition of its session, when it last fetched).
    pub(super) fn members(&self) -> impl Iterator<Item = (NodeId, &TopicPartition, Millis)> {
        self.by_replica.iter().flat_map(|(&replica, s)| {
            s.partitions
                .keys()
                .map(move |tp| (replica, tp, s.last_fetch_ms))
        })
    }

    /// How many sessions are open.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_replica.len()
    }

    fn close(&mut self, replica: NodeId) {
        if let Some(session) = self.by_replica.remove(&replica) {
            for tp in session.partitions.keys() {
                unhold(&mut self.holders, tp, replica);
            }
        }
    }
}

fn unhold(
    holders: &mut BTreeMap<TopicPartition, BTreeSet<NodeId>>,
    tp: &TopicPartition,
    replica: NodeId,
) {
    if let Some(set) = holders.get_mut(tp) {
        set.remove(&replica);
        if set.is_empty() {
            holders.remove(tp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp(p: u32, offset: u64) -> FetchPartition {
        FetchPartition {
            partition: TopicPartition::new("t", p).unwrap(),
            fetch_offset: offset,
            max_bytes: 1 << 20,
            current_leader_epoch: Some(0),
            last_fetched_epoch: None,
        }
    }

    fn fetch(
        session: FetchSession,
        partitions: Vec<FetchPartition>,
        forgotten: Vec<u32>,
    ) -> FetchRequest {
        FetchRequest {
            max_wait_ms: 500,
            min_bytes: 1,
            max_bytes: 1 << 20,
            partitions,
            replica: Some(2),
            session: Some(session),
            forgotten: forgotten
                .into_iter()
                .map(|p| TopicPartition::new("t", p).unwrap())
                .collect(),
        }
    }

    #[test]
    fn a_session_reads_what_was_listed_or_moved_and_checks_its_epochs() {
        let mut s = FetchSessions::default();
        let open = FetchSession { id: 0, epoch: 0 };
        let id = s
            .receive(
                2,
                open,
                &fetch(open, (0..100).map(|p| fp(p, 7)).collect(), vec![]),
                10,
            )
            .unwrap();
        let t = |p: u32| TopicPartition::new("t", p).unwrap();
        // Everything listed is read once; what is not news is left out.
        assert_eq!(s.to_read(2).len(), 100, "the opening fetch reads all");
        assert!(s.read(2, &t(0), Some((7, 0))), "first state: news");
        assert!(!s.read(2, &t(0), Some((7, 0))), "same state: no news");
        assert!(s.read(2, &t(1), None), "a failed read is news");
        for p in 2..100 {
            s.read(2, &t(p), Some((7, 0)));
        }
        assert!(s.to_read(2).is_empty(), "idle: nothing to read");
        s.set_parked(2, Some(41));
        s.moved(&t(5));
        s.moved(&t(6));
        assert_eq!(s.take_waking(), vec![41], "woken once");
        assert!(s.take_waking().is_empty());
        let listed = vec![fp(9, 8)];
        let next = FetchSession { id, epoch: 1 };
        s.receive(2, next, &fetch(next, listed.clone(), vec![99]), 20)
            .unwrap();
        let read: Vec<u32> = s
            .to_read(2)
            .iter()
            .map(|f| f.partition.partition())
            .collect();
        assert_eq!(read, vec![5, 6, 9], "moved or listed");
        assert_eq!(s.to_read(2)[2].fetch_offset, 8, "at the listed position");
        for p in [5, 6, 9] {
            s.read(2, &t(p), Some((8, 0)));
        }
        assert!(s.to_read(2).is_empty());
        // Forgotten partitions are no longer held; the rest were fetched at 20.
        s.set_parked(2, Some(42));
        s.moved(&TopicPartition::new("t", 99).unwrap());
        assert!(
            s.take_waking().is_empty(),
            "a forgotten partition wakes nothing"
        );
        assert_eq!(s.members().count(), 99);
        assert!(
            s.members()
                .any(|(r, tp, at)| r == 2 && tp.partition() == 9 && at == 20)
        );
        // Out-of-turn epochs and unknown ids are refused.
        let replayed = FetchSession { id, epoch: 1 };
        assert!(matches!(
            s.receive(2, replayed, &fetch(replayed, vec![], vec![]), 30),
            Err(Error::InvalidFetchSessionEpoch {
                expected: 2,
                got: 1,
                ..
            })
        ));
        let unknown = FetchSession {
            id: id + 1,
            epoch: 1,
        };
        assert!(matches!(
            s.receive(2, unknown, &fetch(unknown, vec![], vec![]), 30),
            Err(Error::FetchSessionIdNotFound { .. })
        ));
        // A new full fetch replaces the session.
        let again = s
            .receive(2, open, &fetch(open, vec![fp(1, 0)], vec![]), 40)
            .unwrap();
        assert_ne!(again, id);
        assert_eq!(s.members().count(), 1);
        assert_eq!(s.len(), 1);
    }
}
