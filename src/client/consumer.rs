//! The consumer: assigned partitions in, records out.
//!
//! A [`Consumer`] reads the partitions it is assigned ([`Consumer::assign`];
//! consumer groups come with the group coordinator). Each partition has a
//! position, the offset of the next record to return. [`Consumer::poll`] sends
//! fetches to the partitions' leaders (long polls: a broker holds a fetch
//! until data arrives or `fetch_max_wait_ms` passes), buffers what comes back,
//! and returns up to `max_poll_records` deserialized records, advancing the
//! positions past them. While the application processes them, the next fetch
//! is already on its way. Only records below the high watermark are ever
//! returned (C1).
//!
//! A partition without a position (new, or whose position fell out of the
//! log) starts where `auto_offset_reset` says; [`Consumer::seek`],
//! [`seek_to_beginning`](Consumer::seek_to_beginning) and
//! [`seek_to_end`](Consumer::seek_to_end) move it; paused partitions are not
//! fetched or returned until resumed.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::core::{ClientCore, unexpected};
use super::{AutoOffsetReset, Bootstrap, ConsumerConfig, DefaultSerde, Deserializer};
use crate::error::{Error, Result};
use crate::protocol::{
    FetchPartition, FetchRequest, ListOffsetsRequest, NodeId, OffsetAndTimestamp, OffsetSpec,
    Request, Response,
};
use crate::record::{Header, Record, TimestampType};
use crate::topic::TopicPartition;
use crate::transport::Reply;

/// Wait before re-fetching a partition whose fetch failed with a retriable
/// error.
const FETCH_RETRY_BACKOFF: Duration = Duration::from_millis(100);

/// A record as a consumer returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerRecord<K, V> {
    /// Where it was read.
    pub topic_partition: TopicPartition,
    /// Its offset.
    pub offset: u64,
    /// Its timestamp (ms).
    pub timestamp: i64,
    /// What the timestamp means.
    pub timestamp_type: TimestampType,
    /// Its key, deserialized.
    pub key: Option<K>,
    /// Its value, deserialized (`None`: a tombstone).
    pub value: Option<V>,
    /// Its headers.
    pub headers: Vec<Header>,
}

impl<K, V> ConsumerRecord<K, V> {
    /// The topic.
    pub fn topic(&self) -> &str {
        self.topic_partition.topic()
    }

    /// The partition number.
    pub fn partition(&self) -> u32 {
        self.topic_partition.partition()
    }
}

#[derive(Debug, Default)]
struct PartitionState {
    /// Offset of the next record to return; `None` until reset.
    position: Option<u64>,
    /// A pending seek to the beginning or end.
    reset: Option<OffsetSpec>,
    paused: bool,
    /// The fetch in flight for this partition: only its answer is used, so
    /// an answer to a fetch from before a re-assignment is ignored.
    fetch_id: Option<u64>,
    retry_at: Option<Instant>,
    buffered: VecDeque<(Record, TimestampType)>,
}

struct InFlightFetch {
    partitions: Vec<(TopicPartition, u64)>,
    deadline: Instant,
}

#[derive(Default)]
struct FetchInbox {
    responses: Mutex<Vec<(u64, Result<Response>)>>,
    arrived: Condvar,
}

/// Reads records from assigned partitions; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use ferrolog::client::{AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig,
///     ProducerRecord};
/// use ferrolog::{Admin, Cluster, NewTopic, TopicPartition};
///
/// let cluster = Cluster::builder().build()?;
/// Admin::new(&cluster)?.create_topic(NewTopic::new("events", 1))?;
/// let producer: Producer<(), String> = Producer::with_serializers(
///     &cluster, ProducerConfig::default(), ferrolog::client::Postcard, ferrolog::client::DefaultSerde)?;
/// producer.send(ProducerRecord::new("events", "hello".to_string()))?.wait()?;
///
/// let config = ConsumerConfig::builder().auto_offset_reset(AutoOffsetReset::Earliest).build()?;
/// let mut consumer: Consumer<String, String> = Consumer::new(&cluster, config)?;
/// consumer.assign([TopicPartition::new("events", 0)?])?;
/// let records = consumer.poll(Duration::from_secs(5))?;
/// assert_eq!(records[0].value.as_deref(), Some("hello"));
/// # Ok::<(), ferrolog::Error>(())
/// ```
pub struct Consumer<K, V> {
    core: Arc<ClientCore>,
    config: ConsumerConfig,
    key_deserializer: Box<dyn Deserializer<K>>,
    value_deserializer: Box<dyn Deserializer<V>>,
    assignment: BTreeMap<TopicPartition, PartitionState>,
    inbox: Arc<FetchInbox>,
    in_flight: HashMap<u64, InFlightFetch>,
    next_fetch: u64,
    drain_from: usize,
    closed: bool,
}

impl<K, V> std::fmt::Debug for Consumer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("client_id", &self.config.client_id)
            .field("assignment", &self.assignment.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl<K, V> Consumer<K, V> {
    /// A consumer with the [`DefaultSerde`] deserializers for `K` and `V`.
    /// An invalid `config` is [`Error::InvalidConfig`].
    pub fn new(bootstrap: impl Into<Bootstrap>, config: ConsumerConfig) -> Result<Self>
    where
        DefaultSerde: Deserializer<K> + Deserializer<V>,
    {
        Self::with_deserializers(bootstrap, config, DefaultSerde, DefaultSerde)
    }

    /// A consumer with the given key and value deserializers.
    pub fn with_deserializers(
        bootstrap: impl Into<Bootstrap>,
        config: ConsumerConfig,
        key_deserializer: impl Deserializer<K> + 'static,
        value_deserializer: impl Deserializer<V> + 'static,
    ) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            core: ClientCore::new(bootstrap.into())?,
            config,
            key_deserializer: Box::new(key_deserializer),
            value_deserializer: Box::new(value_deserializer),
            assignment: BTreeMap::new(),
            inbox: Arc::new(FetchInbox::default()),
            in_flight: HashMap::new(),
            next_fetch: 0,
            drain_from: 0,
            closed: false,
        })
    }

    /// The consumer's config.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    fn api_timeout(&self) -> Duration {
        Duration::from_millis(self.config.default_api_timeout_ms)
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            return Err(Error::ClientClosed { client: "consumer" });
        }
        Ok(())
    }

    /// Reads exactly these partitions from now on. Partitions kept from the
    /// previous assignment keep their positions. A topic the cluster does not
    /// have is [`Error::UnknownTopicOrPartition`], a partition it does not
    /// have [`Error::InvalidPartition`]; the assignment is then unchanged.
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Result<()> {
        self.check_open()?;
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        for tp in &partitions {
            self.core.check_partition(tp, self.api_timeout())?;
        }
        let mut next = BTreeMap::new();
        for tp in partitions {
            let state = self.assignment.remove(&tp).unwrap_or_default();
            next.insert(tp, state);
        }
        self.assignment = next;
        Ok(())
    }

    /// The assigned partitions.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.assignment.keys().cloned().collect()
    }

    fn state(&mut self, tp: &TopicPartition) -> Result<&mut PartitionState> {
        self.assignment
            .get_mut(tp)
            .ok_or_else(|| Error::PartitionNotAssigned {
                partition: tp.clone(),
            })
    }

    /// Returns the next records of the non-paused assigned partitions,
    /// waiting up to `timeout` for some to arrive (an empty `Vec` if none
    /// did). Errors: [`Error::NotAssigned`], [`Error::NoOffsetForPartition`]
    /// or [`Error::OffsetOutOfRange`] when `auto_offset_reset` is `None`,
    /// [`Error::RecordDeserialization`] at a record that cannot be read (the
    /// position stays on it), [`Error::CorruptRecord`] for a batch that fails
    /// its CRC.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord<K, V>>> {
        self.check_open()?;
        if self.assignment.is_empty() {
            return Err(Error::NotAssigned);
        }
        let deadline = Instant::now().checked_add(timeout);
        let mut last_round = false;
        loop {
            self.handle_responses()?;
            match self.update_positions(None, deadline) {
                // Positions not found within the poll's time are looked up
                // again by the next poll.
                Err(Error::RequestTimedOut { .. }) => {}
                other => other?,
            }
            let records = self.drain()?;
            let max_wait = Duration::from_millis(self.config.fetch_max_wait_ms.into());
            if !records.is_empty() {
                self.send_fetches(max_wait);
                return Ok(records);
            }
            if last_round {
                return Ok(records);
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            self.send_fetches(left.min(max_wait));
            if left.is_zero() {
                last_round = true;
                continue;
            }
            let retries = self
                .assignment
                .values()
                .filter(|s| !s.paused)
                .filter_map(|s| s.retry_at)
                .filter(|&at| at > now);
            let timeouts = self.in_flight.values().map(|f| f.deadline);
            let wake = retries.chain(timeouts).chain(deadline).min();
            let mut responses = self.inbox.responses.lock();
            if responses.is_empty() {
                match wake {
                    Some(wake) => {
                        let _ = self.inbox.arrived.wait_until(&mut responses, wake);
                    }
                    None => self.inbox.arrived.wait(&mut responses),
                }
            }
        }
    }

    /// Moves the position of `tp` to `offset`; the next `poll` returns the
    /// record there. Buffered records of `tp` are dropped.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        let state = self.state(tp)?;
        state.position = Some(offset);
        state.reset = None;
        state.buffered.clear();
        Ok(())
    }

    /// Moves the positions to the first offset still in each log.
    pub fn seek_to_beginning<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Earliest)
    }

    /// Moves the positions to each log's high watermark: only records
    /// produced from now on will be returned.
    pub fn seek_to_end<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        self.seek_to(partitions, OffsetSpec::Latest)
    }

    fn seek_to<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
        spec: OffsetSpec,
    ) -> Result<()> {
        let partitions: Vec<&TopicPartition> = partitions.into_iter().collect();
        for tp in &partitions {
            self.state(tp)?;
        }
        for tp in partitions {
            let state = self.state(tp)?;
            state.position = None;
            state.reset = Some(spec);
            state.buffered.clear();
        }
        Ok(())
    }

    /// The offset of the next record `poll` would return for `tp`, resolving
    /// a pending reset first.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        self.state(tp)?;
        let deadline = Instant::now().checked_add(self.api_timeout());
        self.update_positions(Some(tp), deadline)?;
        self.state(tp)?
            .position
            .ok_or_else(|| Error::NoOffsetForPartition {
                partition: tp.clone(),
            })
    }

    /// Stops fetching and returning records of these partitions.
    pub fn pause<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        self.set_paused(partitions, true)
    }

    /// Undoes [`pause`](Self::pause).
    pub fn resume<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<()> {
        self.set_paused(partitions, false)
    }

    fn set_paused<'a>(
        &mut self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
        paused: bool,
    ) -> Result<()> {
        let partitions: Vec<&TopicPartition> = partitions.into_iter().collect();
        for tp in &partitions {
            self.state(tp)?;
        }
        for tp in partitions {
            self.state(tp)?.paused = paused;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.assignment
            .iter()
            .filter(|(_, s)| s.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// For each partition, the first offset whose timestamp is at or after the
    /// given one (ms), with that record's timestamp; `None` if there is none.
    /// The partitions need not be assigned.
    pub fn offsets_for_times(
        &self,
        timestamps: &HashMap<TopicPartition, i64>,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        self.list_offsets(
            timestamps
                .iter()
                .map(|(tp, &ts)| (tp.clone(), OffsetSpec::Timestamp(ts)))
                .collect(),
        )
    }

    /// The first offset still in each partition's log.
    pub fn beginning_offsets<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.offsets_at(partitions, OffsetSpec::Earliest)
    }

    /// Each partition's high watermark (the offset the next record will get
    /// once committed).
    pub fn end_offsets<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<HashMap<TopicPartition, u64>> {
        self.offsets_at(partitions, OffsetSpec::Latest)
    }

    fn offsets_at<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
        spec: OffsetSpec,
    ) -> Result<HashMap<TopicPartition, u64>> {
        let found = self.list_offsets(
            partitions
                .into_iter()
                .map(|tp| (tp.clone(), spec))
                .collect(),
        )?;
        Ok(found
            .into_iter()
            .filter_map(|(tp, o)| o.map(|o| (tp, o.offset)))
            .collect())
    }

    /// Stops the consumer; later calls fail with [`Error::ClientClosed`].
    pub fn close(&mut self) {
        self.closed = true;
        self.assignment.clear();
        self.in_flight.clear();
    }

    // ----- internals ---------------------------------------------------------

    /// Looks offsets up at the partitions' leaders, retrying retriable errors
    /// (after a metadata refresh) until `default_api_timeout_ms`.
    fn list_offsets(
        &self,
        wanted: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        let deadline = Instant::now() + self.api_timeout();
        self.list_offsets_until(wanted, deadline)
    }

    fn list_offsets_until(
        &self,
        mut wanted: Vec<(TopicPartition, OffsetSpec)>,
        deadline: Instant,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        let mut found = HashMap::new();
        loop {
            let metadata = self.core.metadata();
            let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, OffsetSpec)>> = BTreeMap::new();
            let mut retry = Vec::new();
            let mut last_error = None;
            for (tp, spec) in wanted {
                match metadata.leader(&tp) {
                    Some(node) => by_node.entry(node).or_default().push((tp, spec)),
                    None => retry.push((tp, spec)),
                }
            }
            for (node, partitions) in by_node {
                let left = deadline.saturating_duration_since(Instant::now());
                let request = Request::ListOffsets(ListOffsetsRequest {
                    partitions: partitions.clone(),
                });
                match self.core.call(node, request, left) {
                    Ok(Response::ListOffsets(response)) => {
                        let specs: HashMap<_, _> = partitions.into_iter().collect();
                        for listed in response.partitions {
                            match listed.result {
                                Ok(offset) => {
                                    found.insert(listed.partition, offset);
                                }
                                Err(e) if e.is_retriable() => {
                                    if let Some(&spec) = specs.get(&listed.partition) {
                                        retry.push((listed.partition, spec));
                                    }
                                    last_error = Some(e);
                                }
                                Err(e) => return Err(e),
                            }
                        }
                    }
                    Ok(other) => return Err(unexpected("ListOffsets", &other)),
                    Err(e) if e.is_retriable() => {
                        retry.extend(partitions);
                        last_error = Some(e);
                    }
                    Err(e) => return Err(e),
                }
            }
            if retry.is_empty() {
                return Ok(found);
            }
            if Instant::now() >= deadline {
                return Err(last_error.unwrap_or(Error::RequestTimedOut {
                    operation: "ListOffsets",
                    timeout_ms: self.config.default_api_timeout_ms,
                }));
            }
            // Unknown partitions surface here with their own error.
            for (tp, _) in &retry {
                self.core
                    .check_partition(tp, deadline.saturating_duration_since(Instant::now()))?;
            }
            std::thread::sleep(
                FETCH_RETRY_BACKOFF.min(deadline.saturating_duration_since(Instant::now())),
            );
            self.core
                .refresh_metadata(deadline.saturating_duration_since(Instant::now()))?;
            wanted = retry;
        }
    }

    /// Gives partitions without a position (all, or just `only`) the one
    /// their pending seek or `auto_offset_reset` says, looking offsets up
    /// until `deadline` (at most `default_api_timeout_ms`).
    fn update_positions(
        &mut self,
        only: Option<&TopicPartition>,
        deadline: Option<Instant>,
    ) -> Result<()> {
        let mut wanted = Vec::new();
        for (tp, state) in &self.assignment {
            if state.position.is_some() || only.is_some_and(|o| o != tp) {
                continue;
            }
            let spec = match (state.reset, self.config.auto_offset_reset) {
                (Some(spec), _) => spec,
                (None, AutoOffsetReset::Earliest) => OffsetSpec::Earliest,
                (None, AutoOffsetReset::Latest) => OffsetSpec::Latest,
                (None, AutoOffsetReset::None) => {
                    return Err(Error::NoOffsetForPartition {
                        partition: tp.clone(),
                    });
                }
            };
            wanted.push((tp.clone(), spec));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        let limit = Instant::now() + self.api_timeout();
        let deadline = deadline.map_or(limit, |d| d.min(limit));
        for (tp, offset) in self.list_offsets_until(wanted, deadline)? {
            if let Some(state) = self.assignment.get_mut(&tp)
                && state.position.is_none()
            {
                state.position = offset.map(|o| o.offset);
                state.reset = None;
            }
        }
        Ok(())
    }

    /// Sends one fetch per leader for the partitions that need data.
    fn send_fetches(&mut self, max_wait: Duration) {
        let now = Instant::now();
        let timeout = Duration::from_millis(self.config.request_timeout_ms);
        let max_age = Duration::from_millis(self.config.metadata_max_age_ms);
        let metadata = self
            .core
            .metadata_at_most(max_age, timeout)
            .unwrap_or_else(|_| self.core.metadata());
        let mut by_node: BTreeMap<NodeId, Vec<(TopicPartition, u64)>> = BTreeMap::new();
        let mut leader_unknown = Vec::new();
        for (tp, state) in &self.assignment {
            let Some(position) = state.position else {
                continue;
            };
            if state.paused
                || state.fetch_id.is_some()
                || !state.buffered.is_empty()
                || state.retry_at.is_some_and(|at| at > now)
            {
                continue;
            }
            match metadata.leader(tp) {
                Some(node) => by_node
                    .entry(node)
                    .or_default()
                    .push((tp.clone(), position)),
                None => leader_unknown.push(tp.clone()),
            }
        }
        for tp in &leader_unknown {
            if let Some(state) = self.assignment.get_mut(tp) {
                state.retry_at = Some(now + FETCH_RETRY_BACKOFF);
            }
        }
        if !leader_unknown.is_empty() {
            let _ = self
                .core
                .refresh_metadata(Duration::from_millis(self.config.request_timeout_ms));
        }
        for (node, partitions) in by_node {
            let id = self.next_fetch;
            self.next_fetch += 1;
            let request = Request::Fetch(FetchRequest {
                max_wait_ms: max_wait.as_millis().min(u128::from(u32::MAX)) as u32,
                min_bytes: self.config.fetch_min_bytes,
                max_bytes: self.config.fetch_max_bytes,
                replica: None,
                partitions: partitions
                    .iter()
                    .map(|(tp, offset)| FetchPartition {
                        partition: tp.clone(),
                        fetch_offset: *offset,
                        max_bytes: self.config.max_partition_fetch_bytes,
                        current_leader_epoch: None,
                        last_fetched_epoch: None,
                    })
                    .collect(),
            });
            for (tp, _) in &partitions {
                if let Some(state) = self.assignment.get_mut(tp) {
                    state.fetch_id = Some(id);
                    state.retry_at = None;
                }
            }
            self.in_flight.insert(
                id,
                InFlightFetch {
                    partitions,
                    deadline: now
                        + max_wait
                        + Duration::from_millis(self.config.request_timeout_ms),
                },
            );
            let inbox = self.inbox.clone();
            self.core.send(
                node,
                request,
                Reply::new(node, move |response| {
                    inbox.responses.lock().push((id, response));
                    inbox.arrived.notify_one();
                }),
            );
        }
    }

    /// Moves fetched data into the partitions' buffers. Every response is
    /// handled; the first error is returned afterwards.
    fn handle_responses(&mut self) -> Result<()> {
        let now = Instant::now();
        let mut responses = std::mem::take(&mut *self.inbox.responses.lock());
        let timed_out: Vec<u64> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in timed_out {
            responses.push((
                id,
                Err(Error::RequestTimedOut {
                    operation: "Fetch",
                    timeout_ms: self.config.request_timeout_ms,
                }),
            ));
        }
        let mut first_error = None;
        let mut refresh = false;
        for (id, response) in responses {
            let Some(fetch) = self.in_flight.remove(&id) else {
                continue;
            };
            let mine: Vec<TopicPartition> = fetch
                .partitions
                .iter()
                .map(|(tp, _)| tp)
                .filter(|tp| {
                    self.assignment
                        .get(*tp)
                        .is_some_and(|s| s.fetch_id == Some(id))
                })
                .cloned()
                .collect();
            for tp in &mine {
                if let Some(state) = self.assignment.get_mut(tp) {
                    state.fetch_id = None;
                }
            }
            let fetched = match response {
                Ok(Response::Fetch(fetched)) => fetched,
                Ok(other) => {
                    first_error.get_or_insert(unexpected("Fetch", &other));
                    continue;
                }
                Err(e) => {
                    refresh = true;
                    for tp in &mine {
                        if let Some(state) = self.assignment.get_mut(tp) {
                            state.retry_at = Some(now + FETCH_RETRY_BACKOFF);
                        }
                    }
                    if !e.is_retriable() {
                        first_error.get_or_insert(e);
                    }
                    continue;
                }
            };
            for part in fetched.partitions {
                let requested = fetch
                    .partitions
                    .iter()
                    .find(|(tp, _)| *tp == part.partition && mine.contains(tp))
                    .map(|&(_, offset)| offset);
                let Some(state) = self.assignment.get_mut(&part.partition) else {
                    continue;
                };
                if requested.is_none() || state.position != requested {
                    continue; // seeked or reassigned since
                }
                let fetch_offset = requested.unwrap_or_default();
                match part.result {
                    Ok(data) => {
                        if let Err(e) = buffer(
                            state,
                            &data.records,
                            fetch_offset..data.high_watermark,
                            self.config.check_crcs,
                        ) {
                            first_error.get_or_insert(e);
                        }
                    }
                    Err(Error::OffsetOutOfRange { .. })
                        if self.config.auto_offset_reset != AutoOffsetReset::None =>
                    {
                        state.position = None;
                        state.reset = Some(match self.config.auto_offset_reset {
                            AutoOffsetReset::Earliest => OffsetSpec::Earliest,
                            _ => OffsetSpec::Latest,
                        });
                    }
                    Err(e) if e.is_retriable() => {
                        refresh = true;
                        state.retry_at = Some(now + FETCH_RETRY_BACKOFF);
                    }
                    Err(e) => {
                        first_error.get_or_insert(e);
                    }
                }
            }
        }
        if refresh {
            let _ = self
                .core
                .refresh_metadata(Duration::from_millis(self.config.request_timeout_ms));
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Takes up to `max_poll_records` buffered records, deserialized, starting
    /// from a different partition each time for fairness.
    fn drain(&mut self) -> Result<Vec<ConsumerRecord<K, V>>> {
        let max = self.config.max_poll_records;
        let mut out = Vec::new();
        let count = self.assignment.len();
        let start = self.drain_from % count.max(1);
        self.drain_from = self.drain_from.wrapping_add(1);
        let keys: Vec<TopicPartition> = self.assignment.keys().cloned().collect();
        for i in 0..count {
            let tp = &keys[(start + i) % count];
            let Some(state) = self.assignment.get_mut(tp) else {
                continue;
            };
            if state.paused {
                continue;
            }
            while out.len() < max {
                let Some((record, timestamp_type)) = state.buffered.front() else {
                    break;
                };
                let topic = tp.topic();
                let bad = |what: &str, e: Error| Error::RecordDeserialization {
                    partition: tp.clone(),
                    offset: record.offset,
                    reason: format!("{what}: {e}"),
                };
                let key = record
                    .key
                    .clone()
                    .map(|k| {
                        self.key_deserializer
                            .deserialize(topic, k)
                            .map_err(|e| bad("key", e))
                    })
                    .transpose();
                let value = record
                    .value
                    .clone()
                    .map(|v| {
                        self.value_deserializer
                            .deserialize(topic, v)
                            .map_err(|e| bad("value", e))
                    })
                    .transpose();
                // A bad record stops the poll; the position stays on it. What
                // was read before it is returned first.
                let (key, value) = match (key, value) {
                    (Ok(key), Ok(value)) => (key, value),
                    (Err(e), _) | (_, Err(e)) if out.is_empty() => return Err(e),
                    _ => return Ok(out),
                };
                let record = ConsumerRecord {
                    topic_partition: tp.clone(),
                    offset: record.offset,
                    timestamp: record.timestamp,
                    timestamp_type: *timestamp_type,
                    key,
                    value,
                    headers: record.headers.clone(),
                };
                state.position = Some(record.offset + 1);
                state.buffered.pop_front();
                out.push(record);
            }
        }
        Ok(out)
    }
}

/// Appends the records of `records` within `wanted` (from the fetch offset to
/// the high watermark) to the partition's buffer. When the batches hold no
/// such record (a compacted log's emptied batches, records removed from the
/// end of a batch, control batches), the position moves past them instead, so
/// the next fetch does not ask for the same batches again.
fn buffer(
    state: &mut PartitionState,
    records: &crate::record::Records,
    wanted: std::ops::Range<u64>,
    check_crcs: bool,
) -> Result<()> {
    let buffered_before = state.buffered.len();
    let mut covered = wanted.start;
    for batch in records.batches() {
        let batch = batch?;
        if check_crcs {
            batch.validate()?;
        }
        if batch.last_offset() < wanted.start {
            continue;
        }
        if batch.is_control() {
            covered = covered.max(batch.next_offset());
            continue;
        }
        let timestamp_type = batch.timestamp_type();
        for record in batch.records() {
            let record = record?;
            if wanted.contains(&record.offset) {
                state.buffered.push_back((record, timestamp_type));
            }
        }
        covered = covered.max(batch.next_offset());
    }
    if state.buffered.len() == buffered_before && covered > wanted.start {
        state.position = Some(covered.min(wanted.end.max(wanted.start)));
    }
    Ok(())
}
