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
//! Snapshots bound all of it: once [`SNAPSHOT_AFTER_RECORDS`] committed
//! records follow a voter's last snapshot, the voter snapshots on its own
//! (the image of [`snapshot_records`](super::snapshot_records), taken at
//! its applied index), stores it in a third partition log, and drops the
//! Raft entries it covers from memory and disk. A voter too far behind
//! for the leader's log gets the leader's snapshot in a Raft
//! `MsgSnapshot`, and continues from there.
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
use raft::eraftpb::Snapshot;
use raft::eraftpb::{self, ConfState, Entry, EntryType, HardState, MessageType};
use raft::storage::MemStorage;
use raft::{Config, GetEntriesContext, RaftState, RawNode, SnapshotStatus, StateRole};
use serde::{Deserialize, Serialize};

use super::store::{MetadataStore, SNAPSHOT_AFTER_RECORDS, open_log, read_all};
use crate::error::{Error, Result};
use crate::protocol::NodeId;
use crate::record::RecordBatchBuilder;
use crate::storage::{PartitionLog, Storage};
use crate::time::Millis;

/// The partition holding a voter's Raft log.
const RAFT_LOG_TOPIC: &str = "__cluster_metadata_raft";
/// The partition holding a voter's term and vote.
const RAFT_STATE_TOPIC: &str = "__cluster_metadata_vote";
/// The partition holding a voter's latest snapshot.
const RAFT_SNAPSHOT_TOPIC: &str = "__cluster_metadata_snapshot";

/// Raft's timing, in ticks of [`RAFT_TICK_MS`].
const HEARTBEAT_TICKS: usize = 2;
const ELECTION_TICKS: usize = 6;
/// Largest Raft message payload a voter accepts (the frame limit bounds it
/// too); bigger ones are refused, not decoded.
const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// A Raft message as it travels (raft-rs's `eraftpb::Message`, the fields
/// voters use).
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
    snapshot: Option<WireSnapshot>,
}

/// A snapshot as it travels and as it is stored: where it ends in the Raft
/// log, and its [`SnapshotData`] encoded.
#[derive(Debug, Serialize, Deserialize)]
struct WireSnapshot {
    index: u64,
    term: u64,
    data: Vec<u8>,
}

/// What a snapshot holds: the image of the committed metadata records up
/// to its index, and how many records that image replaces (the offset of
/// the first record after it).
#[derive(Debug, Serialize, Deserialize)]
struct SnapshotData {
    records_offset: u64,
    image: Vec<Vec<u8>>,
}

impl WireSnapshot {
    fn from_snapshot(snapshot: &Snapshot) -> Self {
        Self {
            index: snapshot.get_metadata().index,
            term: snapshot.get_metadata().term,
            data: snapshot.data.to_vec(),
        }
    }

    /// What the snapshot holds.
    fn contents(&self) -> Result<SnapshotData> {
        postcard::from_bytes(&self.data)
            .map_err(|e| Error::corrupt(format!("Raft snapshot at index {}: {e}", self.index)))
    }

    /// The snapshot for the quorum of `voters`, and what it holds.
    fn into_snapshot(self, conf_state: &ConfState) -> Result<(Snapshot, SnapshotData)> {
        let data = self.contents()?;
        let mut snapshot = Snapshot {
            data: Bytes::from(self.data),
            ..Snapshot::default()
        };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.index;
        metadata.term = self.term;
        metadata.set_conf_state(conf_state.clone());
        Ok((snapshot, data))
    }
}

/// A voter's Raft log in memory — raft-rs's `MemStorage` — with its latest
/// snapshot's data, which `MemStorage` does not keep (its snapshots are
/// metadata only).
struct SnapshottedStorage {
    entries: MemStorage,
    snapshot: Snapshot,
}

impl SnapshottedStorage {
    /// Drops the entries `snapshot` covers (keeping later ones, and the
    /// commit index) and keeps it as the latest.
    fn compact(&mut self, snapshot: Snapshot) -> raft::Result<()> {
        let index = snapshot.get_metadata().index;
        let last = raft::Storage::last_index(&self.entries)?;
        let later = if last > index {
            raft::Storage::entries(
                &self.entries,
                index + 1,
                last + 1,
                None::<u64>,
                GetEntriesContext::empty(false),
            )?
        } else {
            Vec::new()
        };
        let mut core = self.entries.wl();
        let hard_state = core.hard_state().clone();
        core.apply_snapshot(snapshot.clone())?;
        core.append(&later)?;
        if hard_state.commit > index {
            core.set_hardstate(hard_state);
        }
        drop(core);
        self.snapshot = snapshot;
        Ok(())
    }

    /// Replaces the whole log with `snapshot` (the leader's, for a voter
    /// too far behind: what it held after the snapshot's index is not the
    /// leader's).
    fn install(&mut self, snapshot: Snapshot) -> raft::Result<()> {
        self.entries.wl().apply_snapshot(snapshot.clone())?;
        self.snapshot = snapshot;
        Ok(())
    }
}

impl raft::Storage for SnapshottedStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        self.entries.initial_state()
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.entries.entries(low, high, max_size, context)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.entries.term(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        self.entries.first_index()
    }

    fn last_index(&self) -> raft::Result<u64> {
        self.entries.last_index()
    }

    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if self.snapshot.get_metadata().index < request_index.max(1) {
            return Err(raft::Error::Store(
                raft::StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        Ok(self.snapshot.clone())
    }
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
        7 => MessageType::MsgSnapshot,
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
        snapshot: (m.msg_type == MessageType::MsgSnapshot)
            .then(|| WireSnapshot::from_snapshot(m.get_snapshot())),
    };
    postcard::to_allocvec(&wire).ok().map(Bytes::from)
}

fn decode_message(payload: &[u8], conf_state: &ConfState) -> Result<eraftpb::Message> {
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
    let snapshot = match (msg_type, wire.snapshot) {
        (MessageType::MsgSnapshot, Some(snapshot)) => Some(
            snapshot
                .into_snapshot(conf_state)
                .map_err(|e| Error::InvalidRequest {
                    reason: e.to_string(),
                })?
                .0,
        ),
        (MessageType::MsgSnapshot, None) => {
            return Err(Error::InvalidRequest {
                reason: "a Raft snapshot message without its snapshot".into(),
            });
        }
        _ => None,
    };
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
        snapshot: snapshot.into(),
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
    raw: RawNode<SnapshottedStorage>,
    /// The durable Raft log: the entry of index `i` at offset `i − 1`,
    /// from the one after the latest snapshot.
    log: Box<dyn PartitionLog>,
    /// The durable terms and votes, the last one current.
    votes: Box<dyn PartitionLog>,
    /// The durable latest snapshot.
    snapshots: Box<dyn PartitionLog>,
    conf_state: ConfState,
    persisted_vote: (u64, u64),
    /// The latest snapshot's image of the committed records before
    /// `snapshot_offset`.
    image: Vec<Bytes>,
    snapshot_offset: u64,
    /// The committed metadata records after the snapshot, in order, with
    /// their offsets (the count of records before each).
    committed: Vec<(u64, Bytes)>,
    /// Snapshot once this many records follow the last snapshot.
    snapshot_after: u64,
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
            .field("snapshot_offset", &self.snapshot_offset)
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

/// Appends `value` as the log's one current record, flushed; the ones
/// before it go.
fn replace_value(log: &mut dyn PartitionLog, value: &[u8], now: Millis) -> Result<()> {
    append_value(log, value, now)?;
    log.flush()?;
    let last = log.log_end_offset() - 1;
    log.delete_records_before(last)?;
    log.maintain()?;
    Ok(())
}

fn raft_error(what: &str, e: raft::Error) -> Error {
    Error::corrupt(format!("Raft {what}: {e}"))
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
        let snapshots = open_log(storage, RAFT_SNAPSHOT_TOPIC, replica)?;
        let conf_state = ConfState::from((
            voters.iter().map(|&v| raft_id(v)).collect::<Vec<_>>(),
            vec![],
        ));
        let mut raft_storage = SnapshottedStorage {
            entries: MemStorage::new_with_conf_state(conf_state.clone()),
            snapshot: Snapshot::default(),
        };
        let (mut image, mut snapshot_offset) = (Vec::new(), 0);
        if let Some((_, value)) = read_all(&*snapshots, "Raft snapshot")?.pop() {
            let stored: WireSnapshot = postcard::from_bytes(&value)
                .map_err(|e| Error::corrupt(format!("Raft snapshot record: {e}")))?;
            let (snapshot, data) = stored.into_snapshot(&conf_state)?;
            image = data.image.into_iter().map(Bytes::from).collect();
            snapshot_offset = data.records_offset;
            raft_storage
                .compact(snapshot)
                .map_err(|e| raft_error("snapshot", e))?;
        }
        let snapshot_index = raft_storage.snapshot.get_metadata().index;
        let mut entries = Vec::new();
        for (offset, value) in read_all(&*log, "Raft")? {
            let wire: WireEntry = postcard::from_bytes(&value)
                .map_err(|e| Error::corrupt(format!("Raft log entry at offset {offset}: {e}")))?;
            if wire.index != offset + 1 {
                return Err(Error::corrupt(format!(
                    "Raft log entry at offset {offset} has index {}",
                    wire.index
                )));
            }
            if wire.index <= snapshot_index {
                continue; // the snapshot has it (a crash kept it)
            }
            if entries.is_empty() && wire.index != snapshot_index + 1 {
                return Err(Error::corrupt(format!(
                    "the Raft log resumes at index {} after a snapshot at {snapshot_index}",
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
            let mut core = raft_storage.entries.wl();
            core.append(&entries)
                .map_err(|e| Error::corrupt(format!("Raft log: {e}")))?;
            core.set_hardstate(HardState {
                term: persisted_vote
                    .0
                    .max(raft_storage.snapshot.get_metadata().term),
                vote: persisted_vote.1,
                commit: snapshot_index,
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
        let raw = RawNode::new(&config, raft_storage, &logger)
            .map_err(|e| Error::config("controller_quorum_voters", e.to_string()))?;
        Ok(Self {
            voter,
            raw,
            log,
            votes,
            snapshots,
            conf_state,
            persisted_vote,
            image,
            snapshot_offset,
            committed: Vec::new(),
            snapshot_after: SNAPSHOT_AFTER_RECORDS,
            proposed: 0,
            leading_from: None,
            outbox: VecDeque::new(),
        })
    }

    /// Snapshots once `records` committed records follow the last
    /// snapshot (instead of [`SNAPSHOT_AFTER_RECORDS`]).
    pub(crate) fn snapshot_after(mut self, records: u64) -> Self {
        self.snapshot_after = records.max(1);
        self
    }

    /// Runs what Raft has ready: persists entries and the vote, queues
    /// messages, applies committed entries. `now` stamps what is written.
    fn process_ready(&mut self, now: Millis) -> Result<()> {
        while self.raw.has_ready() {
            let mut ready = self.raw.ready();
            let mut sent_snapshots = self.queue(ready.take_messages());
            if !ready.snapshot().is_empty() {
                let snapshot = ready.snapshot().clone();
                self.install_snapshot(snapshot, now)?;
            }
            self.apply(ready.take_committed_entries())?;
            let entries = ready.take_entries();
            if !entries.is_empty() {
                self.persist_entries(&entries, now)?;
                self.raw
                    .mut_store()
                    .entries
                    .wl()
                    .append(&entries)
                    .map_err(|e| Error::corrupt(format!("Raft log: {e}")))?;
            }
            if let Some(hs) = ready.hs() {
                let hs = hs.clone();
                self.persist_vote(&hs, now)?;
                self.raw.mut_store().entries.wl().set_hardstate(hs);
            }
            sent_snapshots.extend(self.queue(ready.take_persisted_messages()));
            let mut light = self.raw.advance(ready);
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().entries.wl().mut_hard_state().commit = commit;
            }
            sent_snapshots.extend(self.queue(light.take_messages()));
            self.apply(light.take_committed_entries())?;
            self.raw.advance_apply();
            // A snapshot sent counts as delivered: the voter is probed
            // again, and one lost on the way is sent again.
            for to in sent_snapshots {
                self.raw.report_snapshot(to, SnapshotStatus::Finish);
            }
        }
        self.track_leadership();
        self.maybe_snapshot(now)
    }

    /// Queues `messages`; the voters sent a snapshot (their Raft ids).
    fn queue(&mut self, messages: Vec<eraftpb::Message>) -> Vec<u64> {
        let mut snapshots = Vec::new();
        for m in messages {
            if let (Some(to), Some(payload)) = (voter_of(m.to), encode_message(&m)) {
                if m.msg_type == MessageType::MsgSnapshot {
                    snapshots.push(m.to);
                }
                self.outbox.push_back((to, payload));
            }
        }
        snapshots
    }

    /// Every committed record, from the snapshot's image on.
    fn committed_records(&self) -> Vec<(u64, Bytes)> {
        let image = self.image.iter().map(|r| (self.snapshot_offset, r.clone()));
        image.chain(self.committed.iter().cloned()).collect()
    }

    /// Snapshots at the applied index once enough records follow the last
    /// snapshot: stored first, then the entries it covers go.
    fn maybe_snapshot(&mut self, now: Millis) -> Result<()> {
        if (self.committed.len() as u64) < self.snapshot_after {
            return Ok(());
        }
        let index = self.raw.raft.raft_log.applied;
        let term = self
            .raw
            .raft
            .raft_log
            .term(index)
            .map_err(|e| raft_error("snapshot", e))?;
        let image = super::snapshot_records(&self.committed_records())?;
        let data = SnapshotData {
            records_offset: self.committed_offset(),
            image,
        };
        let data = postcard::to_allocvec(&data).map_err(|e| Error::Serialization {
            reason: format!("Raft snapshot: {e}"),
        })?;
        let wire = WireSnapshot { index, term, data };
        self.persist_snapshot(&wire, now)?;
        let (snapshot, data) = wire.into_snapshot(&self.conf_state)?;
        self.raw
            .mut_store()
            .compact(snapshot)
            .map_err(|e| raft_error("snapshot", e))?;
        // Entry `i` is at offset `i − 1`: the ones up to `index` go.
        self.log.delete_records_before(index)?;
        self.log.maintain()?;
        self.adopt(data);
        Ok(())
    }

    /// The leader's snapshot arrived (this voter was too far behind):
    /// stored first, then it replaces this voter's log and records.
    fn install_snapshot(&mut self, snapshot: Snapshot, now: Millis) -> Result<()> {
        let wire = WireSnapshot::from_snapshot(&snapshot);
        let data = wire.contents()?;
        self.persist_snapshot(&wire, now)?;
        self.raw
            .mut_store()
            .install(snapshot)
            .map_err(|e| raft_error("snapshot", e))?;
        self.log.truncate_fully_and_start_at(wire.index)?;
        self.log.flush()?;
        self.adopt(data);
        self.proposed = 0;
        Ok(())
    }

    /// The committed records are a snapshot's now.
    fn adopt(&mut self, data: SnapshotData) {
        self.image = data.image.into_iter().map(Bytes::from).collect();
        self.snapshot_offset = data.records_offset;
        self.committed.clear();
    }

    fn persist_snapshot(&mut self, snapshot: &WireSnapshot, now: Millis) -> Result<()> {
        let value = postcard::to_allocvec(snapshot).map_err(|e| Error::Serialization {
            reason: format!("Raft snapshot: {e}"),
        })?;
        replace_value(&mut *self.snapshots, &value, now)
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
        replace_value(&mut *self.votes, &value, now)?;
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
                let offset = self.committed_offset();
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
        Ok(self.committed_records())
    }

    fn close(self: Box<Self>) -> Result<()> {
        let Self {
            log,
            votes,
            snapshots,
            ..
        } = *self;
        log.close()?;
        votes.close()?;
        snapshots.close()
    }

    fn committed_offset(&self) -> u64 {
        self.snapshot_offset + self.committed.len() as u64
    }

    fn end_offset(&self) -> u64 {
        self.committed_offset() + self.proposed
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
        let message = decode_message(payload, &self.conf_state)?;
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
            Self::snapshotting_after(storages, SNAPSHOT_AFTER_RECORDS)
        }

        fn snapshotting_after(storages: &[MemoryStorage], records: u64) -> Self {
            let voters = (0..3)
                .map(|v| {
                    RaftMetadataStore::open(&storages[v], 100 + v as u32, v as u32, &[0, 1, 2], 0)
                        .unwrap()
                        .snapshot_after(records)
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

    /// A metadata record (snapshots replay what they hold).
    fn record(id: i64) -> Vec<u8> {
        super::super::encode_record(&super::super::MetadataRecord::ProducerIdAllocated { id })
            .unwrap()
    }

    /// The next producer id voter `v`'s committed records give.
    fn next_producer_id(q: &Quorum, v: usize) -> i64 {
        let records = q.voters[v].replay().unwrap();
        super::super::replay(&records, Vec::new())
            .unwrap()
            .0
            .next_producer_id
    }

    #[test]
    fn snapshots_bound_the_raft_log_and_a_voter_far_behind_catches_up_from_one() {
        let storages: Vec<MemoryStorage> = (0..3).map(|_| MemoryStorage::new()).collect();
        let mut q = Quorum::snapshotting_after(&storages, 5);
        q.run(30);
        let leader = q.active()[0];
        let behind = (leader + 1) % 3;
        let other = 3 - leader - behind;
        q.down[behind] = true;
        for id in 0..40 {
            let now = q.now;
            q.voters[leader].append(&[record(id)], now).unwrap();
            q.run(1);
        }
        q.run(3);
        for v in [leader, other] {
            let voter = &q.voters[v];
            assert_eq!(voter.committed_offset(), 40, "voter {v}");
            assert!(voter.snapshot_offset >= 35, "voter {v}: {voter:?}");
            assert!(voter.committed.len() < 5, "voter {v}: {voter:?}");
            // The durable log starts after the snapshot: a few entries.
            let (start, end) = (voter.log.log_start_offset(), voter.log.log_end_offset());
            assert!(start >= 35 && end - start < 6, "voter {v}: {start}..{end}");
            assert_eq!(
                voter.snapshots.log_end_offset() - voter.snapshots.log_start_offset(),
                1
            );
            assert_eq!(next_producer_id(&q, v), 40);
        }
        // The voter that was down needs entries the others no longer
        // have: it gets the leader's snapshot, then what follows.
        q.down[behind] = false;
        q.run(10);
        assert_eq!(q.voters[behind].committed_offset(), 40);
        assert!(
            q.voters[behind].snapshot_offset > 0,
            "{:?}",
            q.voters[behind]
        );
        assert_eq!(next_producer_id(&q, behind), 40);
        let now = q.now;
        q.voters[leader].append(&[record(40)], now).unwrap();
        q.run(2);
        assert_eq!(next_producer_id(&q, behind), 41);
        // Every voter restarts over its storage: snapshot, entries after
        // it and vote come back, and a new leader has all 41 records.
        drop(q);
        let mut q = Quorum::snapshotting_after(&storages, 5);
        q.run(40);
        let leader = q.active()[0];
        assert_eq!(q.voters[leader].committed_offset(), 41);
        assert_eq!(next_producer_id(&q, leader), 41);
    }

    #[test]
    fn snapshot_messages_travel_and_malformed_ones_are_refused() {
        let conf_state = ConfState::from((vec![1, 2, 3], vec![]));
        let data = postcard::to_allocvec(&SnapshotData {
            records_offset: 7,
            image: vec![record(6)],
        })
        .unwrap();
        let (snapshot, _) = WireSnapshot {
            index: 12,
            term: 3,
            data,
        }
        .into_snapshot(&conf_state)
        .unwrap();
        let m = eraftpb::Message {
            msg_type: MessageType::MsgSnapshot,
            to: raft_id(1),
            from: raft_id(0),
            term: 3,
            snapshot: Some(snapshot.clone()).into(),
            ..eraftpb::Message::default()
        };
        let decoded = decode_message(&encode_message(&m).unwrap(), &conf_state).unwrap();
        assert_eq!(decoded.get_snapshot(), &snapshot);
        // A snapshot whose data is not a snapshot's is refused.
        let mut bad = m.clone();
        bad.mut_snapshot().data = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert!(decode_message(&encode_message(&bad).unwrap(), &conf_state).is_err());
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
        m.msg_type = MessageType::MsgPropose;
        assert!(encode_message(&m).is_none(), "proposals never travel");
    }
}
