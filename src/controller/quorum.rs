//! The metadata log replicated across the controller quorum with Raft
//! (raft-rs's `RawNode`: step, tick, ready — a state machine like our
//! cores, with no threads, clock or I/O of its own).
//!
//! [`RaftMetadataStore`] is a [`MetadataStore`]: the active controller
//! (the Raft leader) appends metadata records by proposing them; they count
//! once committed (on a majority of voters). Every voter keeps the Raft log
//! durably in a partition log of its storage (an entry at offset
//! `index − 1`; a conflicting suffix is truncated away) and its term and
//! vote in another, both flushed before any message that depends on them
//! leaves. The committed records, in order, are what a new active
//! controller replays.
//!
//! Determinism: raft-rs draws each election timeout from a thread RNG in
//! `[min_election_tick, max_election_tick)`; this store sets
//! `max = min + 1`, with `min` spread per voter from a seed, so the draw
//! always gives the same value. Raft messages travel as
//! [`Request::Raft`](crate::protocol::Request::Raft) payloads in the wire
//! codec's frames, encoded here with postcard (never protobuf: nothing
//! parses protobuf from the network).

use std::collections::VecDeque;

use bytes::Bytes;
use raft::eraftpb::{self, ConfState, Entry, EntryType, HardState, MessageType};
use raft::storage::MemStorage;
use raft::{Config, RawNode, StateRole};
use serde::{Deserialize, Serialize};

use super::store::{MetadataStore, open_log, read_all};
use crate::error::{Error, Result};
use crate::protocol::NodeId;
use crate::record::RecordBatchBuilder;
use crate::storage::{PartitionLog, Storage};
use crate::time::Millis;

/// The partition holding a voter's Raft log.
const RAFT_LOG_TOPIC: &str = "__cluster_metadata_raft";
/// The partition holding a voter's term and vote.
const RAFT_STATE_TOPIC: &str = "__cluster_metadata_vote";

/// Raft's timing, in ticks of [`RAFT_TICK_MS`].
const HEARTBEAT_TICKS: usize = 2;
const ELECTION_TICKS: usize = 6;
/// Largest Raft message payload a voter accepts (the frame limit bounds it
/// too); bigger ones are refused, not decoded.
const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// A Raft message as it travels (raft-rs's `eraftpb::Message` without the
/// snapshot, which this store never sends).
#[derive(Debug, Serialize, Deserialize)]
struct WireMessage {
    msg_type: i32,
    to: u64,
    from: u64,
    term: u64,
    log_term: u64,
    index: u64,
    entries: Vec<WireEntry>,
    commit: u64,
    commit_term: u64,
    request_snapshot: u64,
    reject: bool,
    reject_hint: u64,
    context: Vec<u8>,
    priority: i64,
}

/// A Raft log entry as it travels and as it is stored.
#[derive(Debug, Serialize, Deserialize)]
struct WireEntry {
    entry_type: i32,
    term: u64,
    index: u64,
    data: Vec<u8>,
}

impl WireEntry {
    fn from_entry(e: &Entry) -> Self {
        Self {
            entry_type: e.entry_type as i32,
            term: e.term,
            index: e.index,
            data: e.data.to_vec(),
        }
    }

    fn into_entry(self) -> Result<Entry> {
        let entry_type = match self.entry_type {
            0 => EntryType::EntryNormal,
            other => {
                return Err(Error::corrupt(format!(
                    "a Raft entry of type {other}: the quorum's membership is static"
                )));
            }
        };
        Ok(Entry {
            entry_type,
            term: self.term,
            index: self.index,
            data: Bytes::from(self.data),
            ..Entry::default()
        })
    }
}

/// The message types voters exchange (the rest are local to a node).
fn message_type(value: i32) -> Option<MessageType> {
    Some(match value {
        3 => MessageType::MsgAppend,
        4 => MessageType::MsgAppendResponse,
        5 => MessageType::MsgRequestVote,
        6 => MessageType::MsgRequestVoteResponse,
        8 => MessageType::MsgHeartbeat,
        9 => MessageType::MsgHeartbeatResponse,
        14 => MessageType::MsgTimeoutNow,
        17 => MessageType::MsgRequestPreVote,
        18 => MessageType::MsgRequestPreVoteResponse,
        _ => return None,
    })
}

fn encode_message(m: &eraftpb::Message) -> Option<Bytes> {
    message_type(m.msg_type as i32)?;
    let wire = WireMessage {
        msg_type: m.msg_type as i32,
        to: m.to,
        from: m.from,
        term: m.term,
        log_term: m.log_term,
        index: m.index,
        entries: m.entries.iter().map(WireEntry::from_entry).collect(),
        commit: m.commit,
        commit_term: m.commit_term,
        request_snapshot: m.request_snapshot,
        reject: m.reject,
        reject_hint: m.reject_hint,
        context: m.context.to_vec(),
        priority: m.priority,
    };
    postcard::to_allocvec(&wire).ok().map(Bytes::from)
}

fn decode_message(payload: &[u8]) -> Result<eraftpb::Message> {
    if payload.len() > MAX_RAFT_MESSAGE_BYTES {
        return Err(Error::InvalidRequest {
            reason: format!("a Raft message of {} bytes", payload.len()),
        });
    }
    let wire: WireMessage = postcard::from_bytes(payload).map_err(|e| Error::InvalidRequest {
        reason: format!("an undecodable Raft message: {e}"),
    })?;
    let msg_type = message_type(wire.msg_type).ok_or_else(|| Error::InvalidRequest {
        reason: format!("Raft message type {} does not travel", wire.msg_type),
    })?;
    let entries = wire
        .entries
        .into_iter()
        .map(WireEntry::into_entry)
        .collect::<Result<Vec<_>>>()
        .map_err(|e| Error::InvalidRequest {
            reason: e.to_string(),
        })?;
    Ok(eraftpb::Message {
        msg_type,
        to: wire.to,
        from: wire.from,
        term: wire.term,
        log_term: wire.log_term,
        index: wire.index,
        entries: entries.into(),
        commit: wire.commit,
        commit_term: wire.commit_term,
        request_snapshot: wire.request_snapshot,
        reject: wire.reject,
        reject_hint: wire.reject_hint,
        context: Bytes::from(wire.context),
        priority: wire.priority,
        ..eraftpb::Message::default()
    })
}

/// A voter's term and vote, as stored.
#[derive(Debug, Serialize, Deserialize)]
struct Vote {
    term: u64,
    vote: u64,
}

/// Raft ids are the voters' node ids plus one (Raft keeps 0 for "none").
fn raft_id(voter: NodeId) -> u64 {
    u64::from(voter) + 1
}

fn voter_of(raft_id: u64) -> Option<NodeId> {
    raft_id
        .checked_sub(1)
        .and_then(|v| NodeId::try_from(v).ok())
}

/// The metadata log replicated by Raft; see the [module docs](self).
pub(crate) struct RaftMetadataStore {
    voter: NodeId,
    raw: RawNode<MemStorage>,
    /// The durable Raft log: the entry of index `i` at offset `i − 1`.
    log: Box<dyn PartitionLog>,
    /// The durable terms and votes, the last one current.
    votes: Box<dyn PartitionLog>,
    persisted_vote: (u64, u64),
    /// Every committed metadata record, in order, with its offset (the
    /// count of records before it).
    committed: Vec<(u64, Bytes)>,
    /// Records this leader proposed that are not committed yet.
    proposed: u64,
    /// The index of the first entry of this node's current leadership:
    /// once it commits, everything before it has too.
    leading_from: Option<u64>,
    /// Raft messages to send: (voter, payload).
    outbox: VecDeque<(NodeId, Bytes)>,
}

impl std::fmt::Debug for RaftMetadataStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftMetadataStore")
            .field("voter", &self.voter)
            .field("term", &self.raw.raft.term)
            .field("role", &self.raw.raft.state)
            .field("committed", &self.committed.len())
            .finish_non_exhaustive()
    }
}

fn append_value(log: &mut dyn PartitionLog, value: &[u8], now: Millis) -> Result<()> {
    let mut batch = RecordBatchBuilder::with_capacity(value.len() + 64);
    batch.append(now, None, Some(value), &[]);
    log.append(batch.build(), 0)?;
    let end = log.log_end_offset();
    log.set_high_watermark(end);
    Ok(())
}

impl RaftMetadataStore {
    /// Opens voter `voter`'s Raft log and vote in `storage` (stored as
    /// replica `replica`), for the quorum `voters`. `seed` spreads the
    /// voters' election timeouts.
    pub(crate) fn open(
        storage: &dyn Storage,
        replica: NodeId,
        voter: NodeId,
        voters: &[NodeId],
        seed: u64,
    ) -> Result<Self> {
        if !voters.contains(&voter) {
            return Err(Error::config(
                "controller_quorum_voters",
                format!("node {voter} is not a voter"),
            ));
        }
        let log = open_log(storage, RAFT_LOG_TOPIC, replica)?;
        let votes = open_log(storage, RAFT_STATE_TOPIC, replica)?;
        let store = MemStorage::new_with_conf_state(ConfState::from((
            voters.iter().map(|&v| raft_id(v)).collect::<Vec<_>>(),
            vec![],
        )));
        let mut entries = Vec::new();
        for (i, (_, value)) in read_all(&*log, "Raft")?.into_iter().enumerate() {
            let wire: WireEntry = postcard::from_bytes(&value)
                .map_err(|e| Error::corrupt(format!("Raft log entry at offset {i}: {e}")))?;
            if wire.index != i as u64 + 1 {
                return Err(Error::corrupt(format!(
                    "Raft log entry at offset {i} has index {}",
                    wire.index
                )));
            }
            entries.push(wire.into_entry()?);
        }
        let mut persisted_vote = (0, 0);
        if let Some((_, last)) = read_all(&*votes, "Raft vote")?.last() {
            let vote: Vote = postcard::from_bytes(last)
                .map_err(|e| Error::corrupt(format!("Raft vote record: {e}")))?;
            persisted_vote = (vote.term, vote.vote);
        }
        {
            let mut core = store.wl();
            core.append(&entries)
                .map_err(|e| Error::corrupt(format!("Raft log: {e}")))?;
            core.set_hardstate(HardState {
                term: persisted_vote.0,
                vote: persisted_vote.1,
                ..HardState::default()
            });
        }
        // A voter's rank spreads the election timeouts; the seed turns
        // the ranks.
        let rank = voters.iter().position(|&v| v == voter).unwrap_or(0) as u64;
        let spread = (rank + seed) % voters.len().max(1) as u64;
        let min_election = ELECTION_TICKS + 2 * spread as usize;
        let config = Config {
            id: raft_id(voter),
            heartbeat_tick: HEARTBEAT_TICKS,
            election_tick: ELECTION_TICKS,
            min_election_tick: min_election,
            max_election_tick: min_election + 1,
            check_quorum: true,
            pre_vote: true,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Config::default()
        };
        config
            .validate()
            .map_err(|e| Error::config("controller_quorum_voters", e.to_string()))?;
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        let raw = RawNode::new(&config, store, &logger)
            .map_err(|e| Error::config("controller_quorum_voters", e.to_string()))?;
        Ok(Self {
            voter,
            raw,
            log,
            votes,
            persisted_vote,
            committed: Vec::new(),
            proposed: 0,
            leading_from: None,
            outbox: VecDeque::new(),
        })
    }

    /// Runs what Raft has ready: persists entries and the vote, queues
    /// messages, applies committed entries. `now` stamps what is written.
    fn process_ready(&mut self, now: Millis) -> Result<()> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            self.queue(ready.take_messages());
            if !ready.snapshot().data.is_empty() || ready.snapshot().get_metadata().index > 0 {
                return Err(Error::corrupt(
                    "a Raft snapshot arrived; this quorum never sends one",
                ));
            }
            self.apply(ready.take_committed_entries())?;
            let entries = ready.take_entries();
            if !entries.is_empty() {
                self.persist_entries(&entries, now)?;
                self.raw
                    .raft
                    .raft_log
                    .store
                    .wl()
                    .append(&entries)
                    .map_err(|e| Error::corrupt(format!("Raft log: {e}")))?;
            }
            if let Some(hs) = ready.hs() {
                let hs = hs.clone();
                self.persist_vote(&hs, now)?;
                self.raw.raft.raft_log.store.wl().set_hardstate(hs);
            }
            self.queue(ready.take_persisted_messages());
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.raft.raft_log.store.wl().mut_hard_state().commit = commit;
            }
            self.queue(light.take_messages());
            self.apply(light.take_committed_entries())?;
            self.raw.advance_apply();
        }
        self.track_leadership();
        Ok(())
    }

    fn queue(&mut self, messages: Vec<eraftpb::Message>) {
        for m in messages {
            if let (Some(to), Some(payload)) = (voter_of(m.to), encode_message(&m)) {
                self.outbox.push_back((to, payload));
            }
        }
    }

    fn persist_entries(&mut self, entries: &[Entry], now: Millis) -> Result<()> {
        let first = entries[0].index;
        if first == 0 {
            return Err(Error::corrupt("a Raft entry of index 0"));
        }
        if first - 1 < self.log.log_end_offset() {
            // A new leader overwrote an uncommitted suffix.
            self.log.truncate_to(first - 1)?;
        }
        for entry in entries {
            let value = postcard::to_allocvec(&WireEntry::from_entry(entry)).map_err(|e| {
                Error::Serialization {
                    reason: format!("Raft entry: {e}"),
                }
            })?;
            append_value(&mut *self.log, &value, now)?;
        }
        self.log.flush()
    }

    fn persist_vote(&mut self, hs: &HardState, now: Millis) -> Result<()> {
        if (hs.term, hs.vote) == self.persisted_vote {
            return Ok(());
        }
        let value = postcard::to_allocvec(&Vote {
            term: hs.term,
            vote: hs.vote,
        })
        .map_err(|e| Error::Serialization {
            reason: format!("Raft vote: {e}"),
        })?;
        append_value(&mut *self.votes, &value, now)?;
        self.votes.flush()?;
        self.persisted_vote = (hs.term, hs.vote);
        Ok(())
    }

    /// Committed entries: their records join the committed log.
    fn apply(&mut self, entries: Vec<Entry>) -> Result<()> {
        for entry in entries {
            if entry.data.is_empty() {
                continue; // a new leader's empty entry
            }
            let records: Vec<Vec<u8>> = postcard::from_bytes(&entry.data).map_err(|e| {
                Error::corrupt(format!("Raft entry {} does not decode: {e}", entry.index))
            })?;
            for record in records {
                let offset = self.committed.len() as u64;
                self.committed.push((offset, Bytes::from(record)));
                if self.leading_from.is_some() {
                    self.proposed = self.proposed.saturating_sub(1);
                }
            }
        }
        Ok(())
    }

    fn track_leadership(&mut self) {
        let leading = self.raw.raft.state == StateRole::Leader;
        match (leading, self.leading_from) {
            (true, None) => {
                self.leading_from = Some(self.raw.raft.raft_log.last_index());
                self.proposed = 0;
            }
            (false, Some(_)) => {
                self.leading_from = None;
                self.proposed = 0;
            }
            _ => {}
        }
    }
}

impl MetadataStore for RaftMetadataStore {
    fn append(&mut self, records: &[Vec<u8>], now: Millis) -> Result<u64> {
        if !self.is_active() {
            return Err(Error::NotController { broker: self.voter });
        }
        let data = postcard::to_allocvec(records).map_err(|e| Error::Serialization {
            reason: format!("metadata records: {e}"),
        })?;
        let base = self.end_offset();
        self.raw
            .propose(vec![], data)
            .map_err(|_| Error::NotController { broker: self.voter })?;
        self.proposed += records.len() as u64;
        self.process_ready(now)?;
        Ok(base)
    }

    fn replay(&self) -> Result<Vec<(u64, Bytes)>> {
        Ok(self.committed.clone())
    }

    fn close(self: Box<Self>) -> Result<()> {
        let Self { log, votes, .. } = *self;
        log.close()?;
        votes.close()
    }

    fn committed_offset(&self) -> u64 {
        self.committed.len() as u64
    }

    fn end_offset(&self) -> u64 {
        self.committed.len() as u64 + self.proposed
    }

    fn is_active(&self) -> bool {
        self.leading_from
            .is_some_and(|from| self.raw.raft.raft_log.committed >= from)
            && self.raw.raft.state == StateRole::Leader
    }

    fn term(&self) -> u64 {
        self.raw.raft.term
    }

    fn tick(&mut self, now: Millis) -> Result<()> {
        self.raw.tick();
        self.process_ready(now)
    }

    fn step(&mut self, payload: &[u8], now: Millis) -> Result<()> {
        let message = decode_message(payload)?;
        if message.to != raft_id(self.voter) {
            return Err(Error::InvalidRequest {
                reason: format!(
                    "a Raft message for voter {:?} reached voter {}",
                    voter_of(message.to),
                    self.voter
                ),
            });
        }
        // raft-rs refuses messages from non-members; the error is the
        // sender's problem, not this voter's.
        let _ = self.raw.step(message);
        self.process_ready(now)
    }

    fn poll_message(&mut self) -> Option<(NodeId, Bytes)> {
        self.outbox.pop_front()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::RAFT_TICK_MS;
    use crate::storage::MemoryStorage;

    /// Three voters wired by hand: ticks and message delivery in order.
    struct Quorum {
        voters: Vec<RaftMetadataStore>,
        down: Vec<bool>,
        now: Millis,
    }

    impl Quorum {
        fn new(storages: &[MemoryStorage]) -> Self {
            let voters = (0..3)
                .map(|v| {
                    RaftMetadataStore::open(&storages[v], 100 + v as u32, v as u32, &[0, 1, 2], 0)
                        .unwrap()
                })
                .collect();
            Self {
                voters,
                down: vec![false; 3],
                now: 0,
            }
        }

        /// Delivers every queued message (to voters that are up).
        fn deliver(&mut self) {
            loop {
                let mut moved = false;
                for from in 0..3 {
                    while let Some((to, payload)) = self.voters[from].poll_message() {
                        moved = true;
                        if !self.down[from] && !self.down[to as usize] {
                            let now = self.now;
                            self.voters[to as usize].step(&payload, now).unwrap();
                        }
                    }
                }
                if !moved {
                    return;
                }
            }
        }

        fn run(&mut self, ticks: u32) {
            for _ in 0..ticks {
                self.now += RAFT_TICK_MS;
                for v in 0..3 {
                    if !self.down[v] {
                        let now = self.now;
                        self.voters[v].tick(now).unwrap();
                    }
                }
                self.deliver();
            }
        }

        fn active(&self) -> Vec<usize> {
            (0..3)
                .filter(|&v| !self.down[v] && self.voters[v].is_active())
                .collect()
        }
    }

    #[test]
    fn one_leader_commits_on_a_majority_and_a_new_one_takes_over_with_everything() {
        let storages: Vec<MemoryStorage> = (0..3).map(|_| MemoryStorage::new()).collect();
        let mut q = Quorum::new(&storages);
        q.run(30);
        let active = q.active();
        assert_eq!(active.len(), 1, "one active controller");
        let leader = active[0];
        let now = q.now;
        let base = q.voters[leader]
            .append(&[b"a".to_vec(), b"b".to_vec()], now)
            .unwrap();
        assert_eq!(base, 0);
        assert_eq!(q.voters[leader].end_offset(), 2);
        q.deliver();
        q.run(2);
        for v in 0..3 {
            assert_eq!(q.voters[v].committed_offset(), 2, "voter {v} has both");
        }
        // The leader goes; another takes over within a few election
        // timeouts, with the committed records, and appends after them.
        q.down[leader] = true;
        q.run(40);
        let active = q.active();
        assert_eq!(active.len(), 1, "a new active controller");
        let next = active[0];
        assert_ne!(next, leader);
        assert!(q.voters[next].term() > q.voters[leader].term());
        let now = q.now;
        assert_eq!(q.voters[next].append(&[b"c".to_vec()], now).unwrap(), 2);
        q.run(2);
        let replayed: Vec<Bytes> = q.voters[next]
            .replay()
            .unwrap()
            .into_iter()
            .map(|(_, v)| v)
            .collect();
        assert_eq!(replayed, [&b"a"[..], b"b", b"c"]);
        // A stale leader cannot append: it is not active.
        assert!(!q.voters[leader].is_active() || q.down[leader]);
    }

    #[test]
    fn a_voter_restarted_over_its_storage_keeps_its_log_and_vote() {
        let storages: Vec<MemoryStorage> = (0..3).map(|_| MemoryStorage::new()).collect();
        let mut q = Quorum::new(&storages);
        q.run(30);
        let leader = q.active()[0];
        let now = q.now;
        q.voters[leader].append(&[b"x".to_vec()], now).unwrap();
        q.run(3);
        let term = q.voters[0].term();
        // Restart every voter over its storage.
        drop(q);
        let mut q2 = Quorum::new(&storages);
        assert!(q2.voters.iter().all(|v| v.term() >= term));
        q2.run(40);
        let leader = q2.active()[0];
        assert_eq!(q2.voters[leader].committed_offset(), 1, "x survived");
    }

    #[test]
    fn undecodable_or_misaddressed_raft_messages_are_refused() {
        let storage = MemoryStorage::new();
        let mut voter = RaftMetadataStore::open(&storage, 100, 0, &[0, 1, 2], 0).unwrap();
        assert!(voter.step(&[0xff, 0xff, 0xff], 0).is_err());
        let mut m = eraftpb::Message {
            msg_type: MessageType::MsgHeartbeat,
            to: raft_id(2),
            from: raft_id(1),
            ..eraftpb::Message::default()
        };
        let payload = encode_message(&m).unwrap();
        assert!(voter.step(&payload, 0).is_err(), "for another voter");
        m.msg_type = MessageType::MsgSnapshot;
        assert!(encode_message(&m).is_none(), "snapshots never travel");
    }
}
