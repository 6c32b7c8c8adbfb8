//! The consumer's fetch state as a deterministic state machine
//! ([`ConsumerCore`], Kafka's `Fetcher` and `SubscriptionState` without
//! threads or waits).
//!
//! The core keeps, per assigned partition, the position (the offset of the
//! next record to return), a pending reset, whether it is paused, the fetch
//! in flight and the records fetched but not yet returned. It looks up the
//! positions it lacks (ListOffsets at the leaders), sends one long-poll
//! fetch per leader for the partitions that need data, buffers what comes
//! back (below the high watermark only), and hands records out in order. It
//! never blocks, sleeps, reads a clock or calls anyone: the consumer's handle
//! feeds it answers and the time and sends what it wants sent.

use std::collections::{BTreeMap, VecDeque};

use super::metadata::{MetadataCache, queue_request};
use super::offsets::{FoundOffsets, OffsetQuery};
use super::{AutoOffsetReset, ConsumerConfig};
use crate::error::{Error, Result};
use crate::metrics::{ConsumerMetrics, Histogram};
use crate::protocol::{
    Envelope, FetchPartition, FetchRequest, ListOffsetsRequest, Message, NodeId, OffsetSpec, Peer,
    Request, Response,
};
use crate::record::{Record, Records, TimestampType};
use crate::time::Millis;
use crate::topic::TopicPartition;

/// Wait before looking at a partition again after a retriable error.
const RETRY_BACKOFF_MS: Millis = 100;
/// How long a position the log once had (see `PartitionState::proven`) is
/// kept while leaders say it lies past their end: a deposed leader that has
/// not learned it yet lags behind the new one, and resetting then would
/// read the partition again from the start (or skip to its end).
const STALE_LEADER_PATIENCE_MS: Millis = 30_000;

#[derive(Debug, Default)]
struct PartitionState {
    /// Offset of the next record to return; `None` until reset.
    position: Option<u64>,
    /// A pending seek to the beginning or end.
    reset: Option<OffsetSpec>,
    paused: bool,
    /// The fetch in flight for this partition: only its answer is used, so
    /// an answer to a fetch from before a re-assignment is ignored.
    fetch: Option<u64>,
    /// The offset lookup in flight for this partition.
    lookup: Option<u64>,
    retry_at: Option<Millis>,
    buffered: VecDeque<(Record, TimestampType)>,
    /// The offset after the last fetched batch: once the buffer is drained
    /// the position moves there, past offsets compaction removed and
    /// control batches.
    skip_to: Option<u64>,
    /// The position is one the log had: reached by reading, or a committed
    /// offset (not a seek of the application's).
    proven: bool,
    /// Since when leaders say the (proven) position lies past their end.
    beyond_end_since: Option<Millis>,
    /// The high watermark of the last fetch answer, for the lag.
    high_watermark: Option<u64>,
    /// The id of the topic incarnation the position belongs to, once
    /// metadata named it: a different id means the topic was deleted and
    /// made again, and the position is meaningless there.
    topic_id: Option<u64>,
}

/// A request in flight: a fetch or an offset lookup, its partitions (with
/// the fetch offset or the spec) and its deadline.
#[derive(Debug)]
enum InFlight {
    Fetch {
        partitions: Vec<(TopicPartition, u64)>,
        deadline: Millis,
        sent: Millis,
    },
    Lookup {
        partitions: Vec<TopicPartition>,
        deadline: Millis,
    },
}

impl InFlight {
    fn deadline(&self) -> Millis {
        match self {
            InFlight::Fetch { deadline, .. } | InFlight::Lookup { deadline, .. } => *deadline,
        }
    }
}

/// The consumer's fetch state; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct ConsumerCore {
    peer: Peer,
    config: ConsumerConfig,
    pub(crate) metadata: MetadataCache,
    partitions: BTreeMap<TopicPartition, PartitionState>,
    in_flight: BTreeMap<u64, InFlight>,
    /// The longest a fetch may wait at the broker (the poll's time left).
    max_wait_ms: Millis,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
    /// The first error an answer brought that the application must see.
    error: Option<Error>,
    /// Where the next drain starts, for fairness between partitions.
    drain_from: usize,
    /// The application's offset lookups, by number.
    queries: BTreeMap<u64, OffsetQuery>,
    next_query: u64,
    stats: ConsumerStats,
}

/// What the consumer counts for its metrics.
#[derive(Debug, Default)]
struct ConsumerStats {
    records_consumed: u64,
    bytes_fetched: u64,
    fetches: u64,
    fetch_latency_ms: Histogram,
}

impl ConsumerCore {
    /// A consumer core for client `peer`, asking `bootstrap` first.
    pub(crate) fn new(peer: Peer, config: ConsumerConfig, bootstrap: Vec<NodeId>) -> Self {
        Self {
            peer,
            max_wait_ms: Millis::from(config.fetch_max_wait_ms),
            config,
            metadata: MetadataCache::new(bootstrap),
            partitions: BTreeMap::new(),
            in_flight: BTreeMap::new(),
            next_correlation_id: 0,
            outbox: VecDeque::new(),
            error: None,
            drain_from: 0,
            queries: BTreeMap::new(),
            next_query: 0,
            stats: ConsumerStats::default(),
        }
    }

    // ----- the assignment ------------------------------------------------------

    /// The assigned partitions, in order.
    pub(crate) fn assignment(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Whether nothing is assigned.
    pub(crate) fn is_empty(&self) -> bool {
        self.partitions.is_empty()
    }

    /// Reads exactly these partitions from now on; kept ones keep their
    /// state.
    pub(crate) fn assign(&mut self, partitions: Vec<TopicPartition>) {
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self.partitions.remove(&tp).unwrap_or_default();
            next.insert(tp, state);
        }
        self.partitions = next;
    }

    /// Adds a partition at `position` (`None`: where the reset policy says).
    pub(crate) fn add(&mut self, tp: TopicPartition, position: Option<u64>) {
        self.partitions.insert(
            tp,
            PartitionState {
                position,
                proven: position.is_some(),
                ..PartitionState::default()
            },
        );
    }

    /// Stops reading `tp`.
    pub(crate) fn remove(&mut self, tp: &TopicPartition) {
        self.partitions.remove(tp);
    }

    /// Stops reading everything; answers still on their way are ignored.
    pub(crate) fn clear(&mut self) {
        self.partitions.clear();
        self.in_flight.clear();
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.partitions
            .get_mut(tp)
            .ok_or_else(|| Error::PartitionNotAssigned {
                partition: tp.clone(),
            })
    }

    /// Checks that every partition is assigned.
    pub(crate) fn check_assigned<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        for tp in partitions {
            if !self.partitions.contains_key(tp) {
                return Err(Error::PartitionNotAssigned {
                    partition: tp.clone(),
                });
            }
        }
        Ok(())
    }

    /// Moves the position of `tp` to `offset`, dropping what is buffered.
    pub(crate) fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        let state = self.state(tp)?;
        *state = PartitionState {
            position: Some(offset),
            paused: state.paused,
            topic_id: state.topic_id,
            ..PartitionState::default()
        };
        Ok(())
    }

    /// Makes `tp` look its position up again per `spec`.
    pub(crate) fn seek_to(&mut self, tp: &TopicPartition, spec: OffsetSpec) -> Result<()> {
        let state = self.state(tp)?;
        *state = PartitionState {
            reset: Some(spec),
            paused: state.paused,
            topic_id: state.topic_id,
            ..PartitionState::default()
        };
        Ok(())
    }

    /// The position of `tp`, if it has one.
    pub(crate) fn position(&self, tp: &TopicPartition) -> Result<Option<u64>> {
        self.partitions
            .get(tp)
            .map(|s| s.position)
            .ok_or_else(|| Error::PartitionNotAssigned {
                partition: tp.clone(),
            })
    }

    /// The position of every assigned partition that has one.
    pub(crate) fn positions(&self) -> Vec<(TopicPartition, u64)> {
        self.partitions
            .iter()
            .filter_map(|(tp, s)| s.position.map(|p| (tp.clone(), p)))
            .collect()
    }

    /// Pauses or resumes `tp`.
    pub(crate) fn set_paused(&mut self, tp: &TopicPartition, paused: bool) -> Result<()> {
        self.state(tp)?.paused = paused;
        Ok(())
    }

    /// The paused partitions.
    pub(crate) fn paused(&self) -> Vec<TopicPartition> {
        self.partitions
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The spec a partition without a position resets by: its pending seek,
    /// else `auto_offset_reset` (`None` for a consumer that must not
    /// reset).
    fn reset_spec(&self, state: &PartitionState) -> Option<OffsetSpec> {
        state.reset.or(match self.config.auto_offset_reset {
            AutoOffsetReset::Earliest => Some(OffsetSpec::Earliest),
            AutoOffsetReset::Latest => Some(OffsetSpec::Latest),
            AutoOffsetReset::None => None,
        })
    }

    /// The error of the first partition (of `only`, or all) that has no
    /// position and may not look one up.
    pub(crate) fn check_resettable(&self, only: Option<&TopicPartition>) -> Result<()> {
        for (tp, state) in &self.partitions {
            if state.position.is_none()
                && only.is_none_or(|o| o == tp)
                && self.reset_spec(state).is_none()
            {
                return Err(Error::NoOffsetForPartition {
                    partition: tp.clone(),
                });
            }
        }
        Ok(())
    }

    /// Whether an unpaused partition has records to return.
    pub(crate) fn has_records(&self) -> bool {
        self.partitions
            .values()
            .any(|s| !s.paused && !s.buffered.is_empty())
    }

    // ----- the driver's calls --------------------------------------------------

    /// Handles an answer to one of the core's requests.
    pub(crate) fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        let Message::Response(response) = envelope.message else {
            return; // a consumer serves no requests
        };
        let id = envelope.correlation_id;
        if self.metadata.handle_response(now, id, &response) {
            self.notice_recreated_topics();
            return;
        }
        if let Some(query) = self.queries.values_mut().find(|q| q.owns(id)) {
            query.handle_response(now, id, response, &mut self.metadata);
            return;
        }
        match self.in_flight.remove(&id) {
            Some(InFlight::Fetch {
                partitions, sent, ..
            }) => {
                if self.config.metrics_enabled {
                    self.stats.fetches += 1;
                    let latency = now.saturating_sub(sent).max(0) as u64;
                    self.stats.fetch_latency_ms.record(latency);
                }
                self.fetched(now, id, &partitions, response)
            }
            Some(InFlight::Lookup { partitions, .. }) => {
                self.looked_up(now, id, &partitions, response)
            }
            None => {}
        }
    }

    /// Does what is due at `now`: times out unanswered requests, refreshes
    /// metadata, looks up missing positions and sends fetches. A fetch may
    /// wait at the broker for up to `max_wait_ms` (at most
    /// `fetch_max_wait_ms`).
    pub(crate) fn handle_timeout(&mut self, now: Millis, max_wait_ms: Millis) {
        self.max_wait_ms = max_wait_ms.clamp(0, Millis::from(self.config.fetch_max_wait_ms));
        let overdue: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, r)| r.deadline() <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            let timed_out = |operation| {
                Err(Error::RequestTimedOut {
                    operation,
                    timeout_ms: self.config.request_timeout_ms,
                })
            };
            match self.in_flight.remove(&id) {
                Some(InFlight::Fetch { partitions, .. }) => {
                    let answer = timed_out("Fetch");
                    self.fetched(now, id, &partitions, answer)
                }
                Some(InFlight::Lookup { partitions, .. }) => {
                    let answer = timed_out("ListOffsets");
                    self.looked_up(now, id, &partitions, answer)
                }
                None => {}
            }
        }
        // Backoffs that ended are over: a partition that cannot go yet
        // (records still buffered, a fetch out, paused) waits for that, not
        // for a deadline in the past, which would have the driver call
        // again at once, forever (found by simulator seed 885).
        for state in self.partitions.values_mut() {
            if state.retry_at.is_some_and(|at| at <= now) {
                state.retry_at = None;
            }
        }
        let Self {
            peer,
            metadata,
            next_correlation_id,
            outbox,
            config,
            ..
        } = self;
        metadata.poll(
            now,
            config.metadata_max_age_ms as Millis,
            config.retry_backoff_ms as Millis,
            config.request_timeout_ms as Millis,
            |node, request| queue_request(*peer, next_correlation_id, outbox, node, request),
        );
        for query in self.queries.values_mut() {
            query.poll(now, metadata, |node, request| {
                queue_request(*peer, next_correlation_id, outbox, node, request)
            });
        }
        self.send_lookups(now);
        self.send_fetches(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has something to do.
    pub(crate) fn poll_timeout(&self) -> Option<Millis> {
        let requests = self.in_flight.values().map(InFlight::deadline);
        let retries = self.partitions.values().filter_map(|s| s.retry_at);
        let metadata = [
            self.metadata.due(
                self.config.metadata_max_age_ms as Millis,
                self.config.retry_backoff_ms as Millis,
            ),
            self.metadata.deadline(),
        ];
        let queries = self.queries.values().filter_map(OffsetQuery::poll_timeout);
        requests
            .chain(retries)
            .chain(metadata.into_iter().flatten())
            .chain(queries)
            .min()
    }

    // ----- offset lookups ------------------------------------------------------

    /// Starts looking up `wanted` (any partitions, assigned or not), failing
    /// at `deadline`; returns the lookup's number for
    /// [`take_query`](Self::take_query).
    pub(crate) fn query_offsets(
        &mut self,
        now: Millis,
        wanted: Vec<(TopicPartition, OffsetSpec)>,
        deadline: Millis,
    ) -> u64 {
        let id = self.next_query;
        self.next_query += 1;
        let timeout = self.config.request_timeout_ms as Millis;
        self.queries
            .insert(id, OffsetQuery::new(wanted, now, deadline, timeout));
        id
    }

    /// The outcome of lookup `id`, once it finished.
    pub(crate) fn take_query(&mut self, id: u64) -> Option<Result<FoundOffsets>> {
        let outcome = self.queries.get_mut(&id)?.take_outcome()?;
        self.queries.remove(&id);
        Some(outcome)
    }

    /// The next request to send.
    pub(crate) fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// The first error an answer brought, once.
    pub(crate) fn take_error(&mut self) -> Option<Error> {
        self.error.take()
    }

    /// Hands buffered records of unpaused partitions to `take`, in offset
    /// order per partition, starting from a different partition each time
    /// for fairness, at most `max` of them. A record `take` accepts moves the
    /// position past it; the first it refuses stops the drain and stays
    /// buffered (the position stays on it), and its error is returned.
    pub(crate) fn drain(
        &mut self,
        max: usize,
        mut take: impl FnMut(&TopicPartition, &Record, TimestampType) -> Result<()>,
    ) -> Result<usize> {
        let count = self.partitions.len();
        let start = self.drain_from % count.max(1);
        self.drain_from = self.drain_from.wrapping_add(1);
        let keys: Vec<TopicPartition> = self.partitions.keys().cloned().collect();
        let mut taken = 0;
        for i in 0..count {
            let tp = &keys[(start + i) % count];
            let Some(state) = self.partitions.get_mut(tp) else {
                continue;
            };
            if state.paused {
                continue;
            }
            while taken < max {
                let Some((record, timestamp_type)) = state.buffered.front() else {
                    if let (Some(end), Some(position)) = (state.skip_to.take(), state.position)
                        && end > position
                    {
                        state.position = Some(end);
                    }
                    break;
                };
                if let Err(e) = take(tp, record, *timestamp_type) {
                    self.count_consumed(taken);
                    return Err(e);
                }
                state.position = Some(record.offset + 1);
                state.proven = true;
                state.buffered.pop_front();
                taken += 1;
            }
        }
        self.count_consumed(taken);
        Ok(taken)
    }

    fn count_consumed(&mut self, records: usize) {
        if self.config.metrics_enabled {
            self.stats.records_consumed += records as u64;
        }
    }

    /// The high watermark of `tp` from the last fetch answer, if any.
    pub(crate) fn known_high_watermark(&self, tp: &TopicPartition) -> Option<u64> {
        self.partitions.get(tp)?.high_watermark
    }

    /// A snapshot of the consumer's counters and each assigned partition's
    /// lag (its position behind the high watermark of the last fetch
    /// answer); `rebalances` is the handle's to fill in.
    pub(crate) fn metrics(&self) -> ConsumerMetrics {
        let lag = self
            .partitions
            .iter()
            .filter_map(|(tp, s)| {
                let lag = s.high_watermark?.saturating_sub(s.position?);
                Some((tp.clone(), lag))
            })
            .collect();
        ConsumerMetrics {
            records_consumed: self.stats.records_consumed,
            bytes_fetched: self.stats.bytes_fetched,
            fetches: self.stats.fetches,
            fetch_latency_ms: self.stats.fetch_latency_ms.summary(),
            lag,
            rebalances: 0,
        }
    }

    // ----- internals -----------------------------------------------------------

    /// A partition whose topic was deleted and made again (its id changed)
    /// starts over: no position (`auto_offset_reset` applies, or
    /// `NoOffsetForPartition`), nothing buffered from the old incarnation.
    fn notice_recreated_topics(&mut self) {
        for (tp, state) in &mut self.partitions {
            let Some(topic) = self.metadata.topics.get(tp.topic()) else {
                continue;
            };
            match state.topic_id {
                Some(id) if id != topic.id => {
                    *state = PartitionState {
                        paused: state.paused,
                        topic_id: Some(topic.id),
                        ..PartitionState::default()
                    };
                }
                Some(_) => {}
                None => state.topic_id = Some(topic.id),
            }
        }
    }

    fn send_request(&mut self, to: NodeId, request: Request) -> u64 {
        queue_request(
            self.peer,
            &mut self.next_correlation_id,
            &mut self.outbox,
            to,
            request,
        )
    }

    fn note(&mut self, e: Error) {
        self.error.get_or_insert(e);
    }

    /// Looks up the positions partitions lack, one request per leader.
    fn send_lookups(&mut self, now: Millis) {
        let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
        let mut leaderless = false;
        for (tp, state) in &self.partitions {
            if state.position.is_some()
                || state.lookup.is_some()
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            let Some(spec) = self.reset_spec(state) else {
                continue;
            };
            match self.metadata.leader(tp) {
                Some(node) => by_node.entry(node).or_default().push((tp.clone(), spec)),
                None => leaderless = true,
            }
        }
        if leaderless {
            self.metadata.want_refresh();
        }
        let deadline = now + self.config.request_timeout_ms as Millis;
        for (node, partitions) in by_node {
            let tps: Vec<TopicPartition> = partitions.iter().map(|(tp, _)| tp.clone()).collect();
            let id = self.send_request(
                node,
                Request::ListOffsets(ListOffsetsRequest { partitions }),
            );
            for tp in &tps {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.lookup = Some(id);
                    state.retry_at = None;
                }
            }
            self.in_flight.insert(
                id,
                InFlight::Lookup {
                    partitions: tps,
                    deadline,
                },
            );
        }
    }

    fn looked_up(
        &mut self,
        now: Millis,
        id: u64,
        partitions: &[TopicPartition],
        response: Result<Response>,
    ) {
        let mine: Vec<TopicPartition> = partitions
            .iter()
            .filter(|tp| {
                self.partitions
                    .get(*tp)
                    .is_some_and(|s| s.lookup == Some(id))
            })
            .cloned()
            .collect();
        for tp in &mine {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.lookup = None;
            }
        }
        let retry = |core: &mut Self, tp: &TopicPartition| {
            if let Some(state) = core.partitions.get_mut(tp) {
                state.retry_at = Some(now + RETRY_BACKOFF_MS);
            }
        };
        match response {
            Ok(Response::ListOffsets(listed)) => {
                for answer in listed.partitions {
                    if !mine.contains(&answer.partition) {
                        continue;
                    }
                    match answer.result {
                        Ok(offset) => {
                            if let Some(state) = self.partitions.get_mut(&answer.partition)
                                && state.position.is_none()
                            {
                                state.position = offset.map(|o| o.offset);
                                state.reset = None;
                            }
                        }
                        Err(e) if e.is_retriable() => {
                            retry(self, &answer.partition);
                            self.metadata.want_refresh();
                        }
                        Err(e) => self.note(e),
                    }
                }
            }
            Ok(other) => self.note(super::unexpected("ListOffsets", &other)),
            Err(e) => {
                for tp in &mine {
                    retry(self, tp);
                }
                self.metadata.want_refresh();
                if !e.is_retriable() {
                    self.note(e);
                }
            }
        }
    }

    /// Sends one fetch per leader for the partitions that need data.
    fn send_fetches(&mut self, now: Millis) {
        let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, u64, i32)>> = BTreeMap::new();
        let mut leaderless = Vec::new();
        for (tp, state) in &self.partitions {
            let Some(position) = state.position else {
                continue;
            };
            if state.paused
                || state.fetch.is_some()
                || !state.buffered.is_empty()
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            match self.metadata.leader_and_epoch(tp) {
                Some((node, epoch)) => {
                    by_node
                        .entry(node)
                        .or_default()
                        .push((tp.clone(), position, epoch));
                }
                None => leaderless.push(tp.clone()),
            }
        }
        for tp in &leaderless {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.retry_at = Some(now + RETRY_BACKOFF_MS);
            }
        }
        if !leaderless.is_empty() {
            self.metadata.want_refresh();
        }
        let max_wait = self.max_wait_ms;
        for (node, partitions) in by_node {
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: max_wait.clamp(0, Millis::from(u32::MAX)) as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                replica: None,
                session: None,
                forgotten: Vec::new(),
                // The leader epoch the metadata names (KIP-320): a deposed
                // leader that does not know it yet refuses the fetch
                // instead of serving what it had when it was cut off.
                partitions: partitions
                    .iter()
                    .map(|(tp, offset, epoch)| FetchPartition {
                        partition: tp.clone(),
                        fetch_offset: *offset,
                        max_bytes: self.config.max_partition_fetch_bytes,
                        current_leader_epoch: Some(*epoch),
                        last_fetched_epoch: None,
                    })
                    .collect(),
            });
            let id = self.send_request(node, request);
            for (tp, _, _) in &partitions {
                if let Some(state) = self.partitions.get_mut(tp) {
                    state.fetch = Some(id);
                    state.retry_at = None;
                }
            }
            let deadline = now + max_wait + self.config.request_timeout_ms as Millis;
            self.in_flight.insert(
                id,
                InFlight::Fetch {
                    partitions: partitions
                        .into_iter()
                        .map(|(tp, offset, _)| (tp, offset))
                        .collect(),
                    deadline,
                    sent: now,
                },
            );
        }
    }

    /// Moves fetched data into the partitions' buffers.
    fn fetched(
        &mut self,
        now: Millis,
        id: u64,
        partitions: &[(TopicPartition, u64)],
        response: Result<Response>,
    ) {
        let mine: Vec<TopicPartition> = partitions
            .iter()
            .map(|(tp, _)| tp)
            .filter(|tp| {
                self.partitions
                    .get(*tp)
                    .is_some_and(|s| s.fetch == Some(id))
            })
            .cloned()
            .collect();
        for tp in &mine {
            if let Some(state) = self.partitions.get_mut(tp) {
                state.fetch = None;
            }
        }
        let fetched = match response {
            Ok(Response::Fetch(fetched)) => fetched,
            Ok(other) => return self.note(super::unexpected("Fetch", &other)),
            Err(e) => {
                self.metadata.want_refresh();
                for tp in &mine {
                    if let Some(state) = self.partitions.get_mut(tp) {
                        state.retry_at = Some(now + RETRY_BACKOFF_MS);
                    }
                }
                if !e.is_retriable() {
                    self.note(e);
                }
                return;
            }
        };
        for part in fetched.partitions {
            let requested = partitions
                .iter()
                .find(|(tp, _)| *tp == part.partition && mine.contains(tp))
                .map(|&(_, offset)| offset);
            let auto_reset = self.config.auto_offset_reset;
            let check_crcs = self.config.check_crcs;
            let Some(state) = self.partitions.get_mut(&part.partition) else {
                continue;
            };
            if requested.is_none() || state.position != requested {
                continue; // seeked or reassigned since
            }
            let fetch_offset = requested.unwrap_or_default();
            let past_end = matches!(&part.result, Err(Error::OffsetOutOfRange {
                    offset, log_end_offset, ..
                }) if offset > log_end_offset);
            if past_end && state.proven {
                // Most likely a deposed leader that does not know it yet: ask
                // again after fresh metadata, for a while, before resetting.
                let since = *state.beyond_end_since.get_or_insert(now);
                if now - since < STALE_LEADER_PATIENCE_MS {
                    state.retry_at = Some(now + RETRY_BACKOFF_MS);
                    self.metadata.want_refresh();
                    continue;
                }
            }
            if part.result.is_ok() {
                state.beyond_end_since = None;
            }
            if let Ok(data) = &part.result {
                state.high_watermark = Some(data.high_watermark);
                if self.config.metrics_enabled {
                    self.stats.bytes_fetched += data.records.size() as u64;
                }
            }
            match part.result {
                Ok(data) => match buffer(
                    state,
                    &data.records,
                    fetch_offset..data.high_watermark,
                    check_crcs,
                ) {
                    Ok(end) => state.skip_to = end,
                    Err(e) => self.note(e),
                },
                Err(Error::OffsetOutOfRange { .. }) if auto_reset != AutoOffsetReset::None => {
                    state.position = None;
                    state.reset = Some(match auto_reset {
                        AutoOffsetReset::Earliest => OffsetSpec::Earliest,
                        _ => OffsetSpec::Latest,
                    });
                }
                // Our metadata is older than the leader's epoch (Kafka's
                // FENCED_LEADER_EPOCH is an invalid-metadata error too).
                Err(e) if e.is_retriable() || matches!(e, Error::FencedLeaderEpoch { .. }) => {
                    state.retry_at = Some(now + RETRY_BACKOFF_MS);
                    self.metadata.want_refresh();
                }
                Err(e) => self.note(e),
            }
        }
    }
}

/// Appends the records of `records` within `wanted` (from the fetch offset to
/// the high watermark) to the partition's buffer. Returns the offset after
/// the last batch read (within `wanted`), if it read any: once the buffer is
/// drained the position moves there, past what a batch no longer holds (a
/// compacted log's emptied batches, records removed from the end of a
/// batch, control batches), so the next fetch does not ask for the same
/// batches again.
fn buffer(
    state: &mut PartitionState,
    records: &Records,
    wanted: std::ops::Range<u64>,
    check_crcs: bool,
) -> Result<Option<u64>> {
    let mut end = None;
    for batch in records.batches() {
        let batch = batch?;
        if check_crcs {
            batch.validate()?;
        }
        if batch.last_offset() < wanted.start {
            continue;
        }
        end = Some(batch.next_offset().min(wanted.end));
        if batch.is_control() {
            continue;
        }
        let timestamp_type = batch.timestamp_type();
        for record in batch.records() {
            let record = record?;
            if wanted.contains(&record.offset) {
                state.buffered.push_back((record, timestamp_type));
            }
        }
    }
    Ok(end)
}
