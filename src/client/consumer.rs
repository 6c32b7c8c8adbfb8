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
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::ConsumerCore;
use super::group::{CommitHandle, ConsumerGroupMetadata, GroupMember, RebalanceListener};
use super::offsets::FoundOffsets;
use super::{Bootstrap, ClientInbox, ConsumerConfig, DefaultSerde, Deserializer};
use crate::error::{Error, Result};
use crate::group::OffsetAndMetadata;
use crate::metrics::ConsumerMetrics;
use crate::protocol::{
    CommittedOffsets, Envelope, OffsetAndTimestamp, OffsetSpec, Peer, Subscription,
};
use crate::record::{Header, TimestampType};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::TopicPartition;

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

/// Reads records from assigned partitions; see the [`client` module docs](crate::client).
///
/// # Delivery semantics
///
/// What a crash can do to a group member's records depends on where it
/// commits (SPEC C7):
///
/// - **At least once** (nothing is lost, a record may be processed twice):
///   process every record a `poll` returned, *then* commit — with
///   `commit_sync()` after processing, or with auto-commit, which commits at
///   the start of the next `poll` what earlier polls returned. A crash after
///   processing and before the commit delivers those records again.
/// - **At most once** (nothing is processed twice, a record may be
///   skipped): commit *before* processing — `commit_sync()` right after
///   `poll`, with `enable_auto_commit` off — then process. A crash after the
///   commit and before processing skips those records.
/// - A position moved by `seek` is committed like any other: commit only
///   what was processed.
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
    /// Positions, fetches, fetched records and offset lookups (locked only
    /// by the `&self` methods; the others reach it directly).
    core: Mutex<ConsumerCore>,
    peer: Peer,
    bootstrap: Bootstrap,
    inbox: Arc<ClientInbox>,
    clock: SystemClock,
    config: ConsumerConfig,
    key_deserializer: Box<dyn Deserializer<K>>,
    value_deserializer: Box<dyn Deserializer<V>>,
    closed: bool,
    /// The member core's driver, started at the first use of the group.
    member: OnceLock<GroupMember>,
    /// Whether the consumer subscribed (its partitions come from the group).
    subscribed: bool,
    listener: Option<Box<dyn RebalanceListener<K, V>>>,
    /// Set while a listener runs (it must not poll).
    in_listener: bool,
    next_auto_commit: Instant,
    /// Group assignments taken, for the metrics.
    rebalances: u64,
}

impl<K, V> std::fmt::Debug for Consumer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consumer")
            .field("client_id", &self.config.client_id)
            .field("assignment", &self.core.lock().assignment())
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
        let (peer, inbox) = bootstrap.register_client()?;
        Ok(Self {
            core: Mutex::new(ConsumerCore::new(
                peer,
                config.clone(),
                bootstrap.nodes.clone(),
            )),
            peer,
            bootstrap,
            inbox,
            clock: SystemClock,
            next_auto_commit: Instant::now()
                + Duration::from_millis(config.auto_commit_interval_ms),
            member: OnceLock::new(),
            subscribed: false,
            listener: None,
            in_listener: false,
            rebalances: 0,
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

    /// The core, for the `&mut self` methods.
    fn fetch(&mut self) -> &mut ConsumerCore {
        self.core.get_mut()
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
        if self.subscribed {
            return Err(Error::InvalidRequest {
                reason: "the consumer is subscribed; unsubscribe before assigning partitions"
                    .into(),
            });
        }
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        self.check_partitions(&partitions)?;
        self.fetch().assign(partitions);
        Ok(())
    }

    /// The assigned partitions. A group member that was removed from its
    /// group (or hit its own session or poll limits) owns nothing, even
    /// before its next `poll` applies that.
    pub fn assignment(&self) -> Vec<TopicPartition> {
        if self.subscribed
            && let Some(member) = self.member.get()
            && member.look(|core, now| core.holds_nothing(now))
        {
            return Vec::new();
        }
        self.core.lock().assignment()
    }

    /// A snapshot of this consumer's metrics (SPEC O4): records and bytes
    /// handed to the application, fetches and their latency, each assigned
    /// partition's lag behind the high watermark of its last fetch, and the
    /// group assignments it took (rebalances).
    pub fn metrics(&self) -> ConsumerMetrics {
        let mut metrics = self.core.lock().metrics();
        metrics.rebalances = self.rebalances;
        metrics
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
        if self.fetch().is_empty() && !self.subscribed {
            return Err(Error::NotAssigned);
        }
        let deadline = Instant::now().checked_add(timeout);
        let max_wait = Millis::from(self.config.fetch_max_wait_ms);
        let mut last_round = false;
        loop {
            self.inbox.unwake();
            self.apply_group_changes()?;
            self.maybe_auto_commit();
            self.fetch().check_resettable(None)?;
            self.pump(max_wait);
            if let Some(e) = self.fetch().take_error() {
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
            self.wait(deadline, true);
        }
    }

    /// Feeds the core the answers that arrived and the time, and sends what
    /// it wants sent; a fetch may wait at the broker up to `max_wait_ms`.
    fn pump(&self, max_wait_ms: Millis) {
        let answers = self.inbox.take();
        let now = self.clock.now_ms();
        let mut core = self.core.lock();
        for envelope in answers {
            core.handle_message(now, envelope);
        }
        core.handle_timeout(now, max_wait_ms);
        let outputs: Vec<Envelope> = std::iter::from_fn(|| core.poll_transmit()).collect();
        drop(core);
        for envelope in outputs {
            self.bootstrap.transport.send(envelope);
        }
    }

    /// Waits for an answer, a group change, the core's next deadline, or
    /// `deadline`, whichever comes first; with `for_records`, not at all
    /// while records wait to be returned.
    fn wait(&self, deadline: Option<Instant>, for_records: bool) {
        let core_wake = {
            let core = self.core.lock();
            if for_records && core.has_records() {
                return;
            }
            core.poll_timeout()
        };
        self.inbox.wait(&self.clock, core_wake, deadline);
    }

    /// Moves the position of `tp` to `offset`; the next `poll` returns the
    /// record there. Buffered records of `tp` are dropped.
    pub fn seek(&mut self, tp: &TopicPartition, offset: u64) -> Result<()> {
        self.fetch().seek(tp, offset)
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
        self.fetch().check_assigned(partitions.iter().copied())?;
        for tp in partitions {
            self.fetch().seek_to(tp, spec)?;
        }
        Ok(())
    }

    /// The offset of the next record `poll` would return for `tp`, resolving
    /// a pending reset first.
    pub fn position(&mut self, tp: &TopicPartition) -> Result<u64> {
        let deadline = Instant::now() + self.api_timeout();
        loop {
            if let Some(position) = self.fetch().position(tp)? {
                return Ok(position);
            }
            self.fetch().check_resettable(Some(tp))?;
            self.pump(Millis::from(self.config.fetch_max_wait_ms));
            if let Some(e) = self.fetch().take_error() {
                return Err(e);
            }
            if self.fetch().position(tp)?.is_some() {
                continue;
            }
            if Instant::now() >= deadline {
                return Err(Error::RequestTimedOut {
                    operation: "ListOffsets",
                    timeout_ms: self.config.default_api_timeout_ms,
                });
            }
            self.wait(Some(deadline), true);
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
        self.fetch().check_assigned(partitions.iter().copied())?;
        for tp in partitions {
            self.fetch().set_paused(tp, paused)?;
        }
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        self.core.lock().paused()
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
        if self.config.enable_auto_commit && self.config.group_id.is_some() {
            let _ = self.commit_sync();
        }
        // Dropping the member stops its thread.
        if let Some(member) = self.member.take()
            && self.subscribed
        {
            member.leave();
        }
        self.subscribed = false;
        self.closed = true;
        self.fetch().clear();
        self.bootstrap.transport.deregister(self.peer);
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
        if self.config.group_id.is_none() {
            return Err(Error::InvalidGroupId {
                group: String::new(),
                reason: "subscribing needs a group_id in the consumer's config",
            });
        }
        if !self.subscribed && !self.fetch().is_empty() {
            return Err(Error::InvalidRequest {
                reason: "the consumer assigned partitions by hand; assign an empty set before subscribing".into(),
            });
        }
        self.member()?
            .step(|core, now| core.subscribe(now, subscription));
        self.subscribed = true;
        Ok(())
    }

    /// Leaves the group (committing first with auto-commit) and drops every
    /// partition; the consumer may then `assign` or subscribe again.
    pub fn unsubscribe(&mut self) -> Result<()> {
        self.check_open()?;
        if !self.subscribed {
            self.fetch().clear();
            return Ok(());
        }
        if self.config.enable_auto_commit {
            let _ = self.commit_sync();
        }
        if let Some(member) = self.member.get() {
            member.leave();
        }
        self.subscribed = false;
        self.fetch().clear();
        Ok(())
    }

    /// Calls `listener` when the group revokes, loses or assigns partitions
    /// (from inside `poll`, on the caller's thread).
    pub fn set_rebalance_listener(&mut self, listener: impl RebalanceListener<K, V> + 'static) {
        self.listener = Some(Box::new(listener));
    }

    /// The consumer's place in its group, if it has a `group_id`.
    pub fn group_metadata(&self) -> Option<ConsumerGroupMetadata> {
        let group_id = self.config.group_id.clone()?;
        let (member_id, generation_id) = match self.member.get() {
            Some(member) => member.look(|core, _| core.identity()),
            None => (String::new(), -1),
        };
        Some(ConsumerGroupMetadata {
            group_id,
            member_id,
            generation_id,
            group_instance_id: self.config.group_instance_id.clone(),
        })
    }

    /// The group member's driver, started at its first use.
    fn member(&self) -> Result<&GroupMember> {
        if let Some(member) = self.member.get() {
            return Ok(member);
        }
        let Some(group) = self.config.group_id.clone() else {
            return Err(Error::InvalidGroupId {
                group: String::new(),
                reason: "committing offsets needs a group_id in the consumer's config",
            });
        };
        let inbox = self.inbox.clone();
        let member =
            GroupMember::start(&self.bootstrap, group, &self.config, move || inbox.wake())?;
        Ok(self.member.get_or_init(|| member))
    }

    /// The position of every assigned partition that has one.
    fn consumed_offsets(&mut self) -> Vec<(TopicPartition, OffsetAndMetadata)> {
        self.fetch()
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
    /// waits until they are replicated. An offset beyond its partition's
    /// high watermark is [`Error::OffsetOutOfRange`] and nothing is
    /// committed (checked against the last fetch's high watermark, or with
    /// an offset look-up when that does not vouch for it); a partition that
    /// does not exist is [`Error::UnknownTopicOrPartition`]; a group member
    /// committing a partition it does not own gets
    /// [`Error::PartitionNotAssigned`].
    pub fn commit_offsets_sync(
        &mut self,
        offsets: impl IntoIterator<Item = (TopicPartition, OffsetAndMetadata)>,
    ) -> Result<()> {
        self.check_open()?;
        if self.config.group_id.is_none() {
            self.member()?; // the error saying a group_id is needed
        }
        let offsets: Vec<_> = offsets.into_iter().collect();
        if offsets.is_empty() {
            return Ok(());
        }
        self.check_within_logs(&offsets)?;
        self.member()?
            .commit(offsets, self.config.default_api_timeout_ms as Millis)
    }

    /// Refuses offsets past their partitions' high watermarks.
    fn check_within_logs(&mut self, offsets: &[(TopicPartition, OffsetAndMetadata)]) -> Result<()> {
        let core = self.fetch();
        let unsure: Vec<&TopicPartition> = offsets
            .iter()
            .filter(|(tp, o)| core.known_high_watermark(tp).is_none_or(|hw| o.offset > hw))
            .map(|(tp, _)| tp)
            .collect();
        if unsure.is_empty() {
            return Ok(());
        }
        let ends = self.end_offsets(unsure)?;
        for (tp, o) in offsets {
            if let Some(&end) = ends.get(tp)
                && o.offset > end
            {
                let start = self.beginning_offsets([tp])?.get(tp).copied().unwrap_or(0);
                return Err(Error::OffsetOutOfRange {
                    offset: o.offset,
                    log_start_offset: start,
                    log_end_offset: end,
                });
            }
        }
        Ok(())
    }

    /// Commits the positions of all assigned partitions without waiting; the
    /// handle tells the outcome. Not retried: a later commit supersedes it.
    pub fn commit_async(&mut self) -> Result<CommitHandle> {
        self.check_open()?;
        self.member()?;
        let offsets = self.consumed_offsets();
        Ok(self.member()?.commit_async(offsets))
    }

    /// The group's committed offsets for `partitions` (absent: none yet).
    pub fn committed<'a>(
        &self,
        partitions: impl IntoIterator<Item = &'a TopicPartition>,
    ) -> Result<CommittedOffsets> {
        self.check_open()?;
        let partitions = partitions.into_iter().cloned().collect();
        self.member()?.committed(
            Some(partitions),
            self.config.default_api_timeout_ms as Millis,
        )
    }

    fn maybe_auto_commit(&mut self) {
        if !self.config.enable_auto_commit || self.config.group_id.is_none() {
            return;
        }
        let now = Instant::now();
        if now < self.next_auto_commit {
            return;
        }
        self.next_auto_commit = now + Duration::from_millis(self.config.auto_commit_interval_ms);
        let offsets = self.consumed_offsets();
        if !offsets.is_empty()
            && let Ok(member) = self.member()
        {
            let _ = member.commit_async(offsets);
        }
    }

    /// Drops every partition as lost, telling the listener.
    fn drop_lost(&mut self) {
        let lost = self.fetch().assignment();
        self.fetch().clear();
        if !lost.is_empty() {
            self.call_listener(|l, c| l.on_partitions_lost(c, &lost));
        }
    }

    /// Applies what the member core learned: partitions lost, then revoked,
    /// then assigned, calling the listener for each step.
    fn apply_group_changes(&mut self) -> Result<()> {
        if !self.subscribed {
            return Ok(());
        }
        let changes = self.member()?.step(|core, now| core.changes(now));
        if let Some(e) = changes.fatal {
            self.drop_lost();
            return Err(e);
        }
        if changes.lost {
            self.drop_lost();
        }
        let Some((id, target)) = changes.target else {
            return Ok(());
        };
        let incarnation = changes.incarnation;
        let assigned = self.fetch().assignment();
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
                self.fetch().remove(tp);
            }
            self.member()?.step(|core, _| core.release(&revoked));
        }
        let assigned = self.fetch().assignment();
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
                    self.member()?
                        .step(|core, _| core.retry_target((id, target)));
                    return if e.is_retriable() { Ok(()) } else { Err(e) };
                }
            };
            // The membership may have ended while the offsets were looked
            // up: its assignment is no one's to take then. Otherwise the
            // partitions count as held from here on, so an end of the
            // membership from now marks them lost.
            if !self
                .member()?
                .step(|core, _| core.hold(incarnation, &added))
            {
                return Ok(());
            }
            for tp in &added {
                let position = committed.get(tp).map(|o| o.offset);
                self.fetch().add(tp.clone(), position);
            }
            self.call_listener(|l, c| l.on_partitions_assigned(c, &added));
        }
        self.member()?
            .step(|core, now| core.reconciled(now, incarnation, id));
        self.rebalances += 1;
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
    fn list_offsets(&self, wanted: Vec<(TopicPartition, OffsetSpec)>) -> Result<FoundOffsets> {
        let deadline = Instant::now() + self.api_timeout();
        let now = self.clock.now_ms();
        let timeout = self.config.default_api_timeout_ms as Millis;
        let id = self.core.lock().query_offsets(now, wanted, now + timeout);
        let max_wait = Millis::from(self.config.fetch_max_wait_ms);
        loop {
            self.pump(max_wait);
            if let Some(outcome) = self.core.lock().take_query(id) {
                return outcome;
            }
            // The query's own deadline ends it; this one only guards
            // against a clock that stands still.
            let _ = deadline;
            self.wait(None, false);
        }
    }

    /// Checks that the cluster has `partitions`, asking for fresh metadata
    /// once if the cached one does not say so: an unknown topic is
    /// [`Error::UnknownTopicOrPartition`], a partition past its count
    /// [`Error::InvalidPartition`].
    fn check_partitions(&mut self, partitions: &[TopicPartition]) -> Result<()> {
        let deadline = Instant::now() + self.api_timeout();
        let mut refresh = None;
        loop {
            self.pump(self.config.fetch_max_wait_ms as Millis);
            let core = self.core.get_mut();
            let missing = partitions
                .iter()
                .find_map(|tp| match core.metadata.topic(tp.topic()) {
                    Some(t) if (tp.partition() as usize) < t.partitions.len() => None,
                    None => Some(Error::UnknownTopicOrPartition {
                        topic: tp.topic().to_string(),
                    }),
                    Some(t) => Some(Error::InvalidPartition {
                        topic: tp.topic().to_string(),
                        partition: tp.partition(),
                        partition_count: t.partitions.len() as u32,
                    }),
                });
            let Some(missing) = missing else {
                return Ok(());
            };
            match refresh {
                // A refresh asked for after the call still lacks it.
                Some(target) if core.metadata.last_success >= target => return Err(missing),
                Some(_) => {}
                None => {
                    refresh = Some(core.metadata.sent + 1);
                    core.metadata.want_refresh_now();
                    continue;
                }
            }
            if Instant::now() >= deadline {
                let core = self.core.get_mut();
                return Err(core
                    .metadata
                    .last_error
                    .clone()
                    .unwrap_or(Error::RequestTimedOut {
                        operation: "Metadata",
                        timeout_ms: self.config.default_api_timeout_ms,
                    }));
            }
            self.wait(Some(deadline), false);
        }
    }

    /// Takes up to `max_poll_records` buffered records, deserialized. A
    /// record that does not deserialize stops the poll with the position on
    /// it; what was read before it is returned first.
    fn drain(&mut self) -> Result<Vec<ConsumerRecord<K, V>>> {
        let mut out = Vec::new();
        let (keys, values) = (&self.key_deserializer, &self.value_deserializer);
        let drained = self.core.get_mut().drain(
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
