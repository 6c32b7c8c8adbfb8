//! The consumer: assigned partitions in, records out.
//!
//! A [`Consumer`] reads the partitions it is assigned: by hand
//! ([`Consumer::assign`]), or by its consumer group after
//! [`Consumer::subscribe`] / [`Consumer::subscribe_pattern`] (see
//! [`group`](super::group) for membership). Each partition has a
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

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use super::ConsumerCore;
use super::core::ClientCore;
use super::group::{
    CommitHandle, ConsumerGroupMetadata, GroupClient, Membership, RebalanceListener,
};
use super::{Bootstrap, ConsumerConfig, DefaultSerde, Deserializer};
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::protocol::{
    CommittedOffsets, Envelope, OffsetAndTimestamp, OffsetSpec, Peer, Subscription,
};
use crate::record::{Header, TimestampType};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;
use crate::transport::Transport;

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

/// Where the transport delivers the consumer's answers; `poll` takes them.
#[derive(Default)]
struct ConsumerInbox {
    state: Mutex<Inbox>,
    arrived: Condvar,
}

#[derive(Default)]
struct Inbox {
    answers: Vec<Envelope>,
    /// The group membership changed: `poll` has something to apply.
    woken: bool,
}

impl ConsumerInbox {
    fn wake(&self) {
        self.state.lock().woken = true;
        self.arrived.notify_all();
    }
}

impl crate::transport::Inbox for ConsumerInbox {
    fn deliver(&self, envelope: Envelope) {
        self.state.lock().answers.push(envelope);
        self.arrived.notify_all();
    }
}

/// Reads records from assigned partitions; see the [`client` module docs](crate::client).
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
    /// Lookups that wait (metadata, offsets for times, committed offsets).
    core: Arc<ClientCore>,
    /// Positions, fetches and fetched records.
    fetch: ConsumerCore,
    peer: Peer,
    transport: Arc<dyn Transport>,
    inbox: Arc<ConsumerInbox>,
    clock: SystemClock,
    config: ConsumerConfig,
    key_deserializer: Box<dyn Deserializer<K>>,
    value_deserializer: Box<dyn Deserializer<V>>,
    closed: bool,
    /// The group's coordinator client, with a `group_id`.
    group: Option<Arc<GroupClient>>,
    /// Membership, while subscribed.
    membership: Option<Membership>,
    listener: Option<Box<dyn RebalanceListener<K, V>>>,
    /// Set while a listener runs (it must not poll).
    in_listener: bool,
    next_auto_commit: Instant,
}

impl<K, V> std::fmt::Debug for Consumer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("client_id", &self.config.client_id)
            .field("assignment", &self.fetch.assignment())
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
        let bootstrap: Bootstrap = bootstrap.into();
        let core = ClientCore::new(bootstrap.clone())?;
        let group = config.group_id.clone().map(|group| {
            Arc::new(GroupClient::new(
                core.clone(),
                group,
                Duration::from_millis(config.request_timeout_ms),
                Duration::from_millis(config.retry_backoff_ms),
            ))
        });
        let peer = crate::transport::new_client_peer();
        let inbox = Arc::new(ConsumerInbox::default());
        bootstrap.transport.register(peer, inbox.clone())?;
        Ok(Self {
            core,
            fetch: ConsumerCore::new(peer, config.clone(), bootstrap.nodes),
            peer,
            transport: bootstrap.transport,
            inbox,
            clock: SystemClock,
            next_auto_commit: Instant::now()
                + Duration::from_millis(config.auto_commit_interval_ms),
            group,
            membership: None,
            listener: None,
            in_listener: false,
            config,
            key_deserializer: Box::new(key_deserializer),
            value_deserializer: Box::new(value_deserializer),
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
    /// A subscribed consumer cannot also assign by hand
    /// ([`Error::InvalidRequest`]; [`unsubscribe`](Self::unsubscribe) first).
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = TopicPartition>) -> Result<()> {
        self.check_open()?;
        if self.membership.is_some() {
            return Err(Error::InvalidRequest {
                reason: "the consumer is subscribed; unsubscribe before assigning partitions"
                    .into(),
            });
        }
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        for tp in &partitions {
            self.core.check_partition(tp, self.api_timeout())?;
        }
        self.fetch.assign(partitions);
        Ok(())
    }

    /// The assigned partitions. A group member that was removed from its
    /// group (or hit its own session or poll limits) owns nothing, even
    /// before its next `poll` applies that.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        if let Some(m) = &self.membership {
            let state = m.shared.state.lock();
            if state.lost || state.expired(Instant::now(), &m.shared.limits) {
                return Vec::new();
            }
        }
        self.fetch.assignment()
    }

    /// Returns the next records of the non-paused assigned partitions,
    /// waiting up to `timeout` for some to arrive (an empty `Vec` if none
    /// did). Errors: [`Error::NotAssigned`], [`Error::NoOffsetForPartition`]
    /// or [`Error::OffsetOutOfRange`] when `auto_offset_reset` is `None`,
    /// [`Error::RecordDeserialization`] at a record that cannot be read (the
    /// position stays on it), [`Error::CorruptRecord`] for a batch that fails
    /// its CRC.
    ///
    /// A subscribed consumer applies its group's assignment changes here
    /// (calling the [`RebalanceListener`]), commits if auto-commit is due, and
    /// with nothing assigned yet waits for an assignment instead of failing.
    /// A member fenced for good fails with [`Error::FencedInstanceId`] or the
    /// error its coordinator gave.
    pub fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumerRecord<K, V>>> {
        self.check_open()?;
        if self.in_listener {
            return Err(Error::InvalidRequest {
                reason: "poll cannot be called from a rebalance listener".into(),
            });
        }
        if self.fetch.is_empty() && self.membership.is_none() {
            return Err(Error::NotAssigned);
        }
        let deadline = Instant::now().checked_add(timeout);
        let max_wait = Millis::from(self.config.fetch_max_wait_ms);
        let mut last_round = false;
        loop {
            self.inbox.state.lock().woken = false;
            self.apply_group_changes()?;
            self.maybe_auto_commit();
            self.fetch.check_resettable(None)?;
            self.pump(max_wait);
            if let Some(e) = self.fetch.take_error() {
                return Err(e);
            }
            let records = self.drain()?;
            if !records.is_empty() {
                // The next fetch goes out while the application works.
                self.pump(max_wait);
                return Ok(records);
            }
            if last_round {
                return Ok(records);
            }
            let now = Instant::now();
            let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(now));
            self.pump(max_wait.min(left.as_millis().min(Millis::MAX as u128) as Millis));
            if left.is_zero() {
                last_round = true;
                continue;
            }
            self.wait(deadline);
        }
    }

    /// Feeds the core the answers that arrived and the time, and sends what
    /// it wants sent; a fetch may wait at the broker up to `max_wait_ms`.
    fn pump(&mut self, max_wait_ms: Millis) {
        let answers = std::mem::take(&mut self.inbox.state.lock().answers);
        let now = self.clock.now_ms();
        for envelope in answers {
            self.fetch.handle_message(now, envelope);
        }
        self.fetch.handle_timeout(now, max_wait_ms);
        while let Some(envelope) = self.fetch.poll_transmit() {
            self.transport.send(envelope);
        }
    }

    /// Waits for an answer, a group change, the core's next deadline, or
    /// `deadline`, whichever comes first; not at all while records wait to
    /// be returned.
    fn wait(&self, deadline: Option<Instant>) {
        if self.fetch.has_records() {
            return;
        }
        let core_wake = self.fetch.poll_timeout().map(|at| {
            let in_ms = at.saturating_sub(self.clock.now_ms()).max(0) as u64;
            Instant::now() + Duration::from_millis(in_ms)
        });
        let wake = core_wake.into_iter().chain(deadline).min();
        let mut inbox = self.inbox.state.lock();
        if inbox.answers.is_empty() && !inbox.woken {
            match wake {
                Some(wake) => {
                    let _ = self.inbox.arrived.wait_until(&mut inbox, wake);
                }
                None => self.inbox.arrived.wait(&mut inbox),
            }
        }
    }

    /// Moves the position of `tp` to `offset`; the next `poll` returns the
    /// record there. Buffered records of `tp` are dropped.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.fetch.seek(tp, offset)
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
        self.fetch.check_assigned(partitions.iter().copied())?;
        for tp in partitions {
            self.fetch.seek_to(tp, spec)?;
        }
        Ok(())
    }

    /// The offset of the next record `poll` would return for `tp`, resolving
    /// a pending reset first.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        let deadline = Instant::now() + self.api_timeout();
        loop {
            if let Some(position) = self.fetch.position(tp)? {
                return Ok(position);
            }
            self.fetch.check_resettable(Some(tp))?;
            self.pump(Millis::from(self.config.fetch_max_wait_ms));
            if let Some(e) = self.fetch.take_error() {
                return Err(e);
            }
            if self.fetch.position(tp)?.is_some() {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Error::RequestTimedOut {
                    operation: "ListOffsets",
                    timeout_ms: self.config.default_api_timeout_ms,
                });
            }
            self.wait(Some(deadline));
        }
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
        self.fetch.check_assigned(partitions.iter().copied())?;
        for tp in partitions {
            self.fetch.set_paused(tp, paused)?;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.fetch.paused()
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
    /// A group member first commits its positions (with auto-commit) and
    /// leaves the group, so its partitions move at once; a static member
    /// keeps them until its session times out, waiting for its restart.
    pub fn close(&mut self) {
        if self.closed {
            return;
        }
        if self.config.enable_auto_commit && self.group.is_some() {
            let _ = self.commit_sync();
        }
        if let Some(mut membership) = self.membership.take() {
            membership.stop(true);
        }
        self.closed = true;
        self.fetch.clear();
        self.transport.deregister(self.peer);
    }

    // ----- groups --------------------------------------------------------------

    /// Joins the consumer's group (`group_id`) and reads the partitions of
    /// `topics` it is assigned, from the group's committed offsets (else
    /// `auto_offset_reset`). Calling it again changes the subscription.
    /// Needs a `group_id` ([`Error::InvalidGroupId`]); a consumer that
    /// assigned partitions by hand cannot subscribe ([`Error::InvalidRequest`]).
    pub fn subscribe<S: Into<String>>(
        &mut self,
        topics: impl IntoIterator<Item = S>,
    ) -> Result<()> {
        let topics: std::collections::BTreeSet<String> =
            topics.into_iter().map(Into::into).collect();
        for topic in &topics {
            crate::topic::validate_topic_name(topic)?;
        }
        self.set_subscription(Subscription::Topics(topics))
    }

    /// Like [`subscribe`](Self::subscribe), to every topic whose whole name
    /// matches the regular expression `pattern`, now or created later
    /// (internal topics excluded). A pattern that does not compile is
    /// [`Error::InvalidPattern`].
    pub fn subscribe_pattern(&mut self, pattern: &str) -> Result<()> {
        let subscription = Subscription::Pattern(pattern.to_string());
        crate::group::coordinator::compile(&subscription)?;
        self.set_subscription(subscription)
    }

    fn set_subscription(&mut self, subscription: Subscription) -> Result<()> {
        self.check_open()?;
        let Some(group) = self.group.clone() else {
            return Err(Error::InvalidGroupId {
                group: String::new(),
                reason: "subscribing needs a group_id in the consumer's config",
            });
        };
        if self.membership.is_none() && !self.fetch.is_empty() {
            return Err(Error::InvalidRequest {
                reason: "the consumer assigned partitions by hand; assign an empty set before subscribing".into(),
            });
        }
        if self.membership.is_none() {
            let inbox = self.inbox.clone();
            self.membership = Some(Membership::start(group, &self.config, move || {
                inbox.wake()
            })?);
        }
        if let Some(m) = &self.membership {
            {
                let mut state = m.shared.state.lock();
                state.subscription = Some(subscription);
                state.last_poll = Instant::now();
            }
            m.heartbeat_now();
        }
        Ok(())
    }

    /// Leaves the group (committing first with auto-commit) and drops every
    /// partition; the consumer may then `assign` or subscribe again.
    pub fn unsubscribe(&mut self) -> Result<()> {
        self.check_open()?;
        if self.membership.is_none() {
            self.fetch.clear();
            return Ok(());
        }
        if self.config.enable_auto_commit {
            let _ = self.commit_sync();
        }
        if let Some(mut membership) = self.membership.take() {
            membership.stop(true);
        }
        self.fetch.clear();
        Ok(())
    }

    /// Calls `listener` when the group revokes, loses or assigns partitions
    /// (from inside `poll`, on the caller's thread).
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener<K, V> + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The consumer's place in its group, if it has a `group_id`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let group = self.group.as_ref()?;
        let (member_id, generation_id) = match &self.membership {
            Some(m) => {
                let state = m.shared.state.lock();
                (state.member_id.clone(), state.epoch)
            }
            None => (String::new(), -1),
        };
        Some(ConsumerGroupMetadata {
            group_id: group.group.clone(),
            member_id,
            generation_id,
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// The member id and epoch commits are made as: the membership's, or
    /// ("", -1) for a consumer outside the group's membership. A member whose
    /// partitions were lost (not yet dropped by `poll`) cannot commit their
    /// positions: they are someone else's.
    fn member(&self) -> Result<(String, i32)> {
        match (&self.membership, &self.group) {
            (Some(m), Some(group)) => m
                .shared
                .state
                .lock()
                .commit_identity(&group.group, &m.shared.limits),
            _ => Ok((String::new(), -1)),
        }
    }

    fn group_client(&self) -> Result<Arc<GroupClient>> {
        self.group.clone().ok_or_else(|| Error::InvalidGroupId {
            group: String::new(),
            reason: "committing offsets needs a group_id in the consumer's config",
        })
    }

    /// The position of every assigned partition that has one.
    fn consumed_offsets(&self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.fetch
            .positions()
            .into_iter()
            .map(|(tp, p)| (tp, OffsetAndMetadata::new(p)))
            .collect()
    }

    /// Commits the positions of all assigned partitions (the offsets after
    /// the records `poll` returned) and waits until they are replicated.
    /// Errors: [`Error::UnknownMemberId`] or [`Error::FencedMemberEpoch`] if
    /// the group moved on without this member (its partitions are someone
    /// else's now), [`Error::RequestTimedOut`] after `default_api_timeout_ms`.
    pub fn commit_sync(&mut self) -> Result<()> {
        let offsets = self.consumed_offsets();
        self.commit_offsets_sync(offsets)
    }

    /// Commits the given offsets (the next offset to read per partition) and
    /// waits until they are replicated.
    pub fn commit_offsets_sync(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, OffsetAndMetadata)>,
    ) -> Result<()> {
        self.check_open()?;
        let group = self.group_client()?;
        let offsets: Vec<_> = offsets.into_iter().collect();
        if offsets.is_empty() {
            return Ok(());
        }
        group.commit(self.member()?, offsets, Instant::now() + self.api_timeout())
    }

    /// Commits the positions of all assigned partitions without waiting; the
    /// handle tells the outcome. Not retried: a later commit supersedes it.
    pub fn commit_async(&mut self) -> Result<CommitHandle> {
        self.check_open()?;
        let group = self.group_client()?;
        Ok(group.commit_async(self.member()?, self.consumed_offsets()))
    }

    /// The group's committed offsets for `partitions` (absent: none yet).
    pub fn committed<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<CommittedOffsets> {
        self.check_open()?;
        let group = self.group_client()?;
        let partitions = partitions.into_iter().cloned().collect();
        group.committed(Some(partitions), Instant::now() + self.api_timeout())
    }

    fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || self.group.is_none() {
            return;
        }
        let now = Instant::now();
        if now < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = now + Duration::from_millis(self.config.auto_commit_interval_ms);
        let offsets = self.consumed_offsets();
        if let (Some(group), false, Ok(member)) = (&self.group, offsets.is_empty(), self.member()) {
            let _ = group.commit_async(member, offsets);
        }
    }

    /// Applies what the heartbeat thread learned: partitions lost, then
    /// revoked, then assigned, calling the listener for each step.
    fn apply_group_changes(&mut self) -> Result<()> {
        let Some(m) = &self.membership else {
            return Ok(());
        };
        let shared = m.shared.clone();
        let (lost, target, incarnation) = {
            let mut state = shared.state.lock();
            state.last_poll = Instant::now();
            if let Some(e) = state.fatal.clone() {
                drop(state);
                let lost = self.fetch.assignment();
                self.fetch.clear();
                if !lost.is_empty() {
                    self.call_listener(|l, c| l.on_partitions_lost(c, &lost));
                }
                return Err(e);
            }
            let lost = std::mem::take(&mut state.lost);
            if lost {
                state.owned.clear();
                state.lost_because = None;
            }
            (lost, state.target.take(), state.incarnation)
        };
        if lost {
            let gone = self.fetch.assignment();
            self.fetch.clear();
            if !gone.is_empty() {
                self.call_listener(|l, c| l.on_partitions_lost(c, &gone));
            }
        }
        let Some((id, target)) = target else {
            return Ok(());
        };
        let assigned = self.fetch.assignment();
        let revoked: Vec<TopicPartition> = assigned
            .iter()
            .filter(|tp| !target.contains(*tp))
            .cloned()
            .collect();
        if !revoked.is_empty() {
            if self.config.enable_auto_commit {
                let offsets: Vec<_> = self
                    .consumed_offsets()
                    .into_iter()
                    .filter(|(tp, _)| revoked.contains(tp))
                    .collect();
                let _ = self.commit_offsets_sync(offsets);
            }
            self.call_listener(|l, c| l.on_partitions_revoked(c, &revoked));
            for tp in &revoked {
                self.fetch.remove(tp);
            }
            shared.state.lock().owned.retain(|tp| !revoked.contains(tp));
        }
        let assigned = self.fetch.assignment();
        let added: Vec<TopicPartition> = target
            .iter()
            .filter(|tp| !assigned.contains(*tp))
            .cloned()
            .collect();
        if !added.is_empty() {
            let committed = match self.committed(&added) {
                Ok(committed) => committed,
                Err(e) => {
                    // Try again at the next poll, unless a newer assignment
                    // came meanwhile.
                    shared.state.lock().target.get_or_insert((id, target));
                    return if e.is_retriable() { Ok(()) } else { Err(e) };
                }
            };
            {
                // The membership may have ended while the offsets were looked
                // up: its assignment is no one's to take then. Otherwise the
                // partitions count as held from here on, so an end of the
                // membership from now marks them lost.
                let mut state = shared.state.lock();
                if state.incarnation != incarnation {
                    return Ok(());
                }
                state.owned.extend(added.iter().cloned());
            }
            for tp in &added {
                let position = committed.get(tp).map(|o| o.offset);
                self.fetch.add(tp.clone(), position);
            }
            self.call_listener(|l, c| l.on_partitions_assigned(c, &added));
        }
        {
            let mut state = shared.state.lock();
            if state.incarnation != incarnation {
                return Ok(());
            }
            state.acked = id;
        }
        if let Some(m) = &self.membership {
            m.heartbeat_now();
        }
        Ok(())
    }

    fn call_listener(&mut self, call: impl FnOnce(&mut dyn RebalanceListener<K, V>, &mut Self)) {
        if let Some(mut listener) = self.listener.take() {
            self.in_listener = true;
            call(listener.as_mut(), self);
            self.in_listener = false;
            self.listener = Some(listener);
        }
    }

    // ----- internals ---------------------------------------------------------

    /// Looks offsets up at the partitions' leaders, retrying retriable errors
    /// (after a metadata refresh) until `default_api_timeout_ms`.
    fn list_offsets(
        &self,
        wanted: Vec<(TopicPartition, OffsetSpec)>,
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndTimestamp>>> {
        let deadline = Instant::now() + self.api_timeout();
        self.core.list_offsets(wanted, deadline)
    }

    /// Takes up to `max_poll_records` buffered records, deserialized. A
    /// record that does not deserialize stops the poll with the position on
    /// it; what was read before it is returned first.
    fn drain(&mut self) -> Result<Vec<ConsumerRecord<K, V>>> {
        let mut out = Vec::new();
        let (keys, values) = (&self.key_deserializer, &self.value_deserializer);
        let drained = self.fetch.drain(
            self.config.max_poll_records,
            |tp, record, timestamp_type| {
                let topic = tp.topic();
                let bad = |what: &str, e: Error| Error::RecordDeserialization {
                    partition: tp.clone(),
                    offset: record.offset,
                    reason: format!("{what}: {e}"),
                };
                let key = record
                    .key
                    .clone()
                    .map(|k| keys.deserialize(topic, k).map_err(|e| bad("key", e)))
                    .transpose()?;
                let value = record
                    .value
                    .clone()
                    .map(|v| values.deserialize(topic, v).map_err(|e| bad("value", e)))
                    .transpose()?;
                out.push(ConsumerRecord {
                    topic_partition: tp.clone(),
                    offset: record.offset,
                    timestamp: record.timestamp,
                    timestamp_type,
                    key,
                    value,
                    headers: record.headers.clone(),
                });
                Ok(())
            },
        );
        match drained {
            Err(e) if out.is_empty() => Err(e),
            _ => Ok(out),
        }
    }
}

impl<K, V> Drop for Consumer<K, V> {
    fn drop(&mut self) {
        self.close();
    }
}
