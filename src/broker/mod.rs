//! A broker: the partition replicas it hosts and the requests it serves, as
//! a deterministic state machine ([`BrokerCore`]).
//!
//! This module owns what one broker decides: as a partition's leader it
//! appends produced batches, serves consumers below the high watermark and
//! followers up to its log end, and completes `acks=all` produces once the
//! high watermark passes them; as a follower it copies its leaders' logs
//! (one fetch per leader in flight), truncating where its log diverges. Who
//! leads and who is in sync is decided per partition by a
//! [`ReplicaSet`] and, for the cluster, by
//! the controller, which the broker tells it is alive (heartbeats) and asks
//! for ISR changes. Metadata from the controller (UpdateMetadata) opens,
//! removes, promotes and demotes replicas. It also hosts the group
//! coordinator of the `__consumer_offsets` partitions it leads.
//!
//! The core never blocks, sleeps, reads a clock, takes a lock, spawns a
//! thread or calls another node: it takes envelopes and timeouts with the
//! time as an argument, and hands back envelopes to send
//! ([`BrokerCore::poll_transmit`]) and its next deadline
//! ([`BrokerCore::poll_timeout`]). A request that must wait (a long-poll
//! fetch, an `acks=all` produce, a group answer waiting for replication)
//! is parked in a purgatory and answered when the partition it watches
//! moves, or at its deadline. Its only side effects are on the logs of the
//! [`Storage`] it is given. The same inputs give the same outputs: every
//! collection it iterates is ordered.

mod follower;
mod groups;
mod metadata;
mod purgatory;
mod serve;
mod sessions;
mod stats;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::group::Assignor;
use crate::group::coordinator::GroupCoordinator;
use crate::protocol::{
    AlterPartitionRequest, BrokerHeartbeatRequest, BrokerInfo, CONTROLLER_ID, ClusterMetadata,
    Envelope, IsrProposal, Message, NodeId, Peer, ReplyTo, Request, Response,
};
use crate::replication::{ProducerStateTable, ReplicaSet, Update};
use crate::storage::{PartitionLog, Storage};
use crate::time::Millis;
use crate::topic::TopicPartition;
use purgatory::{HeldHeartbeat, PendingFetch, PendingGroup, PendingProduce, Purgatory};

/// How soon a broker that is not registered yet asks the controller again.
const REGISTRATION_RETRY_MS: Millis = 100;

/// Settings of a broker, with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConfig {
    /// How often the broker applies retention to its logs (Kafka's
    /// `log.retention.check.interval.ms`, default 300,000 = 5 min).
    pub log_retention_check_interval_ms: u64,
    /// How often the broker looks for logs whose `flush_ms` passed and for
    /// high watermarks and recovery points to checkpoint (each log's
    /// checkpoint is rewritten at most every 5 s, Kafka's
    /// `replica.high.watermark.checkpoint.interval.ms`), so that an idle
    /// log is flushed and checkpointed without waiting for an append or the
    /// retention pass (Kafka's `log.flush.scheduler.interval.ms`; default
    /// 1,000).
    pub log_flush_scheduler_interval_ms: u64,
    /// How often the broker compacts its logs whose `cleanup_policy`
    /// compacts (Kafka's `log.cleaner.backoff.ms`, default 15,000). A log
    /// with nothing new to clean since its last compaction costs nothing.
    pub log_cleaner_backoff_ms: u64,
    /// A follower that has not caught up with its leader for this long
    /// leaves the ISR (Kafka's `replica.lag.time.max.ms`, default 30,000).
    pub replica_lag_time_max_ms: u64,
    /// Longest a leader holds a follower's fetch waiting for data (Kafka's
    /// `replica.fetch.wait.max.ms`, default 500).
    pub replica_fetch_wait_max_ms: u64,
    /// How often the broker tells the controller it is alive (Kafka's
    /// `broker.heartbeat.interval.ms`, default 2,000).
    pub broker_heartbeat_interval_ms: u64,
    /// A broker silent for this long is fenced by the controller: its
    /// partitions get new leaders (Kafka's `broker.session.timeout.ms`,
    /// default 9,000). Must exceed `broker_heartbeat_interval_ms`.
    pub broker_session_timeout_ms: u64,
    /// Partitions of `__consumer_offsets`, fixed when the first group makes
    /// a broker create it (Kafka's `offsets.topic.num.partitions`, default 50).
    pub offsets_topic_num_partitions: u32,
    /// Replicas of each `__consumer_offsets` partition, capped by the live
    /// brokers at creation (Kafka's `offsets.topic.replication.factor`,
    /// default 3).
    pub offsets_topic_replication_factor: u16,
    /// Segment size of `__consumer_offsets` (Kafka's
    /// `offsets.topic.segment.bytes`, default 104,857,600).
    pub offsets_topic_segment_bytes: u64,
    /// Longest a commit (or any group change) waits to be replicated before
    /// it fails with `RequestTimedOut` (Kafka's `offsets.commit.timeout.ms`,
    /// default 5,000).
    pub offsets_commit_timeout_ms: u64,
    /// fsync a log after this many records, for topics that set no
    /// `flush_messages` of their own, `__consumer_offsets` included (Kafka's
    /// `log.flush.interval.messages`; default `None`: no count-based flush,
    /// durability comes from replication). `Some(1)` makes every record
    /// durable on each replica before that replica acknowledges it, so an
    /// acknowledged record survives the power loss of any machines that
    /// held it.
    pub log_flush_interval_messages: Option<u64>,
    /// fsync a log this long after its last flush, for topics that set no
    /// `flush_ms` of their own (Kafka's `log.flush.interval.ms`; default
    /// `None`).
    pub log_flush_interval_ms: Option<u64>,
    /// Record [metrics](crate::metrics) (default true). Recording costs a
    /// counter or histogram bucket per event; turning it off is for
    /// measuring that cost — snapshots then read zeros.
    pub metrics_enabled: bool,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        Self {
            log_retention_check_interval_ms: 300_000,
            log_flush_scheduler_interval_ms: 1_000,
            log_cleaner_backoff_ms: 15_000,
            replica_lag_time_max_ms: 30_000,
            replica_fetch_wait_max_ms: 500,
            broker_heartbeat_interval_ms: 2_000,
            broker_session_timeout_ms: 9_000,
            offsets_topic_num_partitions: 50,
            offsets_topic_replication_factor: 3,
            offsets_topic_segment_bytes: 100 << 20,
            offsets_commit_timeout_ms: 5_000,
            log_flush_interval_messages: None,
            log_flush_interval_ms: None,
            metrics_enabled: true,
        }
    }
}

impl BrokerConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        for (field, ms) in [
            (
                "log_retention_check_interval_ms",
                self.log_retention_check_interval_ms,
            ),
            ("log_cleaner_backoff_ms", self.log_cleaner_backoff_ms),
            (
                "log_flush_scheduler_interval_ms",
                self.log_flush_scheduler_interval_ms,
            ),
            ("replica_lag_time_max_ms", self.replica_lag_time_max_ms),
            ("replica_fetch_wait_max_ms", self.replica_fetch_wait_max_ms),
            (
                "broker_heartbeat_interval_ms",
                self.broker_heartbeat_interval_ms,
            ),
            ("broker_session_timeout_ms", self.broker_session_timeout_ms),
            ("offsets_commit_timeout_ms", self.offsets_commit_timeout_ms),
        ] {
            crate::time::at_most_max_ms(field, ms)?;
            if ms == 0 {
                return Err(Error::config(field, "must be positive"));
            }
        }
        if self.offsets_topic_num_partitions == 0
            || self.offsets_topic_num_partitions > crate::MAX_PARTITIONS_PER_TOPIC
        {
            return Err(Error::config(
                "offsets_topic_num_partitions",
                format!("must be within 1..={}", crate::MAX_PARTITIONS_PER_TOPIC),
            ));
        }
        if self.log_flush_interval_messages == Some(0) {
            return Err(Error::config(
                "log_flush_interval_messages",
                "must be positive (None: no count-based flush)",
            ));
        }
        if let Some(ms) = self.log_flush_interval_ms {
            crate::time::at_most_max_ms("log_flush_interval_ms", ms)?;
            if ms == 0 {
                return Err(Error::config(
                    "log_flush_interval_ms",
                    "must be positive (None: no timed flush)",
                ));
            }
        }
        if self.offsets_topic_replication_factor == 0 {
            return Err(Error::config(
                "offsets_topic_replication_factor",
                "must be at least 1",
            ));
        }
        crate::storage::LogConfig {
            segment_bytes: self.offsets_topic_segment_bytes,
            ..crate::storage::LogConfig::default()
        }
        .validate()
        .map_err(|_| {
            Error::config(
                "offsets_topic_segment_bytes",
                format!(
                    "{} is outside 1024..={}",
                    self.offsets_topic_segment_bytes,
                    i32::MAX
                ),
            )
        })?;
        if self.broker_session_timeout_ms <= self.broker_heartbeat_interval_ms {
            return Err(Error::config(
                "broker_session_timeout_ms",
                format!(
                    "must exceed broker_heartbeat_interval_ms ({})",
                    self.broker_heartbeat_interval_ms
                ),
            ));
        }
        Ok(())
    }
}

/// A replica as the simulator's checks see it: high watermark, leader
/// epoch if it leads, and records below the high watermark.
#[cfg(feature = "sim")]
pub(crate) type ReplicaView = (u64, Option<i32>, Vec<(u64, Option<bytes::Bytes>)>);

/// Records a follower removed from its log when it truncated to its
/// leader's: with clean elections these were never committed; after an
/// unclean election they may have been acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Truncation {
    /// The broker whose replica was truncated.
    pub broker: NodeId,
    /// The partition.
    pub partition: TopicPartition,
    /// The removed offsets, `start..end`.
    pub removed: std::ops::Range<u64>,
}

/// A partition replica hosted by this broker.
#[derive(Debug)]
struct Partition {
    tp: TopicPartition,
    /// The id of the topic incarnation this log belongs to.
    topic_id: u64,
    /// Whether the log's `cleanup_policy` compacts (it is opened with it).
    compacted: bool,
    log: Box<dyn PartitionLog>,
    replicas: ReplicaSet,
    /// Idempotent producers' last batches, kept by leaders and followers.
    producers: ProducerStateTable,
    /// Records and bytes in and out, for the metrics.
    stats: stats::PartitionStats,
}

impl Partition {
    /// Reads every batch header of the log again (after opening or
    /// truncating it) to know the producers' last batches.
    fn rebuild_producers(&mut self) -> Result<()> {
        self.producers.clear();
        let log = &self.log;
        let mut offset = log.log_start_offset();
        while offset < log.log_end_offset() {
            let records = log.read(offset, 1 << 20)?;
            let before = offset;
            for batch in records.batches() {
                let batch = batch?;
                if batch.next_offset() > offset {
                    self.producers.record(&batch);
                    offset = batch.next_offset();
                }
            }
            if offset == before {
                break;
            }
        }
        Ok(())
    }

    /// Applies a replica-set update to the log; returns whether the HW moved.
    fn apply(&mut self, update: &Update) -> bool {
        match update.high_watermark {
            Some(hw) => {
                self.log.set_high_watermark(hw);
                true
            }
            None => false,
        }
    }

    /// Whether this replica leads in `epoch`.
    fn leads_in(&self, epoch: i32) -> bool {
        self.replicas.is_leader() && self.replicas.leader_epoch() == epoch
    }
}

/// An ISR change sent to the controller and not answered yet.
#[derive(Debug)]
struct PendingIsrChange {
    partition: TopicPartition,
    deadline: Millis,
}

/// When the broker's periodic work is next due.
#[derive(Debug)]
struct Timers {
    heartbeat: Millis,
    isr_check: Millis,
    retention: Millis,
    clean: Millis,
    flush: Millis,
}

/// One broker as a deterministic state machine; see the [module docs](self).
///
/// The driver (the runtime's threads, or a simulator) feeds it envelopes
/// addressed to it ([`handle_message`](Self::handle_message)) and the time
/// when its deadline passes ([`handle_timeout`](Self::handle_timeout)), then
/// drains what it wants sent ([`poll_transmit`](Self::poll_transmit)) and asks
/// when to wake it next ([`poll_timeout`](Self::poll_timeout)).
///
/// ```
/// use std::sync::Arc;
/// use ferrolog::broker::{BrokerConfig, BrokerCore};
/// use ferrolog::protocol::{Envelope, Message, MetadataRequest, Peer, Request, Response};
/// use ferrolog::storage::MemoryStorage;
///
/// let mut broker = BrokerCore::new(0, BrokerConfig::default(), Arc::new(MemoryStorage::new()),
///     ferrolog::group::built_in_assignors(), 0)?;
/// // Its first output: a heartbeat to the controller.
/// let heartbeat = broker.poll_transmit().unwrap();
/// assert_eq!(heartbeat.message.api_name(), "BrokerHeartbeat");
///
/// broker.handle_message(1, Envelope::request(Peer::Client(9), Peer::Broker(0), 7,
///     Request::Metadata(MetadataRequest::default())));
/// let answer = broker.poll_transmit().unwrap();
/// assert_eq!((answer.to, answer.correlation_id), (Peer::Client(9), 7));
/// assert!(matches!(answer.message, Message::Response(Ok(Response::Metadata(_)))));
/// # Ok::<(), ferrolog::Error>(())
/// ```
pub struct BrokerCore {
    id: NodeId,
    config: BrokerConfig,
    storage: Arc<dyn Storage>,
    metadata: Arc<ClusterMetadata>,
    partitions: BTreeMap<TopicPartition, Partition>,
    fetches: Purgatory<PendingFetch>,
    /// Followers' fetch sessions with this broker as leader.
    sessions: sessions::FetchSessions,
    produces: Purgatory<PendingProduce>,
    group_waits: Purgatory<PendingGroup>,
    /// Heartbeats held until their group changes, by the group's
    /// `__consumer_offsets` partition.
    held_heartbeats: Purgatory<HeldHeartbeat>,
    /// The coordinator of the groups whose `__consumer_offsets` partition
    /// this broker leads.
    groups: GroupCoordinator,
    follower: follower::Fetcher,
    isr_changes: BTreeMap<u64, PendingIsrChange>,
    next_correlation_id: u64,
    outbox: VecDeque<Envelope>,
    truncations: Vec<Truncation>,
    timers: Timers,
    /// When this broker last asked for `__consumer_offsets` to be created.
    offsets_topic_requested: Option<Millis>,
    /// Partitions that moved (append, high watermark, role) while handling
    /// the current input: their waiters are looked at again before it ends.
    moved: BTreeSet<TopicPartition>,
    /// `__consumer_offsets` partitions a group wrote to: their held
    /// heartbeats are looked at again.
    group_written: BTreeSet<TopicPartition>,
    /// Set by shutdown and crash: requests are refused from then on.
    stopped: bool,
    /// Why the broker halted: a log went offline (see [`BrokerCore::halted`]).
    halted: Option<String>,
    /// Set by [`BrokerCore::begin_controlled_shutdown`]: every heartbeat
    /// from then on asks the controller to keep this broker fenced.
    want_shutdown: bool,
    /// What the broker registers as with the controller, and whether the
    /// controller accepted it: a broker of its own process registers at
    /// start (and again if a controller does not know it); an in-process
    /// cluster's brokers are registered for them.
    registration: Option<(BrokerInfo, bool)>,
    /// The controller to ask while the metadata names none.
    controller_hint: NodeId,
    /// The controller quorum's voters (their peer ids), to try in turn when
    /// the controller asked does not answer or is not the active one.
    controller_voters: Vec<NodeId>,
    /// The voter asked instead of the metadata's controller, after a
    /// failed heartbeat; cleared by the next metadata push.
    controller_override: Option<NodeId>,
    /// The correlation id of the heartbeat (or registration) in flight.
    heartbeat_in_flight: Option<u64>,
    /// Requests by kind, for the metrics.
    stats: stats::BrokerStats,
    /// When the controller was last heard from (a heartbeat answered, a
    /// metadata push): a broker that has not heard from it for a session
    /// tells clients there is no controller.
    controller_seen: Millis,
    /// The time of the input being handled (answers' latency is measured
    /// against it).
    now: Millis,
}

impl std::fmt::Debug for BrokerCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerCore")
            .field("id", &self.id)
            .field("partitions", &self.partitions.len())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl BrokerCore {
    /// Broker `id`, starting at `now`. It knows no topics until the
    /// controller sends it metadata; its first output is a heartbeat to the
    /// controller. Bad settings are [`Error::InvalidConfig`].
    pub fn new(
        id: NodeId,
        config: BrokerConfig,
        storage: Arc<dyn Storage>,
        assignors: Vec<Arc<dyn Assignor>>,
        now: Millis,
    ) -> Result<Self> {
        config.validate()?;
        let timers = Timers {
            heartbeat: now + config.broker_heartbeat_interval_ms as Millis,
            isr_check: now + isr_check_interval(&config),
            retention: now + config.log_retention_check_interval_ms as Millis,
            clean: now + config.log_cleaner_backoff_ms as Millis,
            flush: now + config.log_flush_scheduler_interval_ms as Millis,
        };
        let mut broker = Self {
            id,
            config,
            storage,
            metadata: Arc::new(ClusterMetadata::default()),
            partitions: BTreeMap::new(),
            fetches: Purgatory::default(),
            sessions: sessions::FetchSessions::default(),
            produces: Purgatory::default(),
            group_waits: Purgatory::default(),
            held_heartbeats: Purgatory::default(),
            groups: GroupCoordinator::new(id, assignors),
            follower: follower::Fetcher::default(),
            isr_changes: BTreeMap::new(),
            next_correlation_id: 0,
            outbox: VecDeque::new(),
            truncations: Vec::new(),
            timers,
            offsets_topic_requested: None,
            moved: BTreeSet::new(),
            group_written: BTreeSet::new(),
            stopped: false,
            halted: None,
            want_shutdown: false,
            registration: None,
            controller_hint: CONTROLLER_ID,
            controller_voters: Vec::new(),
            controller_override: None,
            heartbeat_in_flight: None,
            stats: stats::BrokerStats::default(),
            now,
            controller_seen: now,
        };
        broker.send_heartbeat();
        Ok(broker)
    }

    /// This broker's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The cluster metadata this broker holds.
    #[cfg(test)]
    pub(crate) fn metadata(&self) -> &Arc<ClusterMetadata> {
        &self.metadata
    }

    /// Handles one envelope addressed to this broker: a request (answered
    /// now or parked) or the answer to one of its own requests.
    pub fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        self.now = self.now.max(now);
        let reply = envelope.reply_to();
        match envelope.message {
            Message::Request(request) => self.handle_request(now, reply, request),
            Message::Response(response) => {
                self.handle_response(now, reply.correlation_id, response)
            }
        }
        self.settle(now);
    }

    /// Does what is due at `now`: answers parked requests whose deadline
    /// passed, expires group members, sends the heartbeat, checks the ISRs,
    /// applies retention and compaction, gives up on unanswered requests.
    pub fn handle_timeout(&mut self, now: Millis) {
        if self.stopped {
            return;
        }
        self.now = self.now.max(now);
        for fetch in self.fetches.expire(now) {
            self.try_fetch(now, fetch);
        }
        for produce in self.produces.expire(now) {
            self.settle_produce(now, produce);
        }
        for wait in self.group_waits.expire(now) {
            self.settle_group(now, wait);
        }
        for held in self.held_heartbeats.expire(now) {
            // Answered now: its hold is over.
            self.group_heartbeat(now, held.request, held.reply, Some(now));
        }
        if self.groups.next_deadline().is_some_and(|at| now >= at) {
            self.tick_groups(now);
        }
        if now >= self.timers.heartbeat {
            if let Some(reason) = self.offline_log() {
                return self.halt(now, reason);
            }
            self.send_heartbeat();
            let mut interval = self.config.broker_heartbeat_interval_ms as Millis;
            if let Some((_, false)) = self.registration {
                // Not registered yet: ask again soon (a controller that is
                // not up yet is only a refused connection away).
                interval = interval.min(REGISTRATION_RETRY_MS);
            }
            self.timers.heartbeat = now + interval;
        }
        if now >= self.timers.isr_check {
            self.check_isr(now);
            self.timers.isr_check = now + isr_check_interval(&self.config);
        }
        if now >= self.timers.retention {
            self.maintain_logs();
            self.timers.retention = now + self.config.log_retention_check_interval_ms as Millis;
        }
        if now >= self.timers.flush {
            for partition in self.partitions.values_mut() {
                // A failure takes the log offline; the next heartbeat halts.
                let _ = partition.log.flush_due();
            }
            self.timers.flush = now + self.config.log_flush_scheduler_interval_ms as Millis;
        }
        if now >= self.timers.clean {
            self.compact_logs();
            self.timers.clean = now + self.config.log_cleaner_backoff_ms as Millis;
        }
        let overdue: Vec<u64> = self
            .isr_changes
            .iter()
            .filter(|(_, change)| change.deadline <= now)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            self.handle_response(
                now,
                id,
                Err(Error::RequestTimedOut {
                    operation: "AlterPartition",
                    timeout_ms: self.config.broker_session_timeout_ms,
                }),
            );
        }
        self.follower.expire(now);
        self.settle(now);
    }

    /// When [`handle_timeout`](Self::handle_timeout) should next be called
    /// (`None` after a shutdown or crash).
    pub fn poll_timeout(&self) -> Option<Millis> {
        if self.stopped {
            return None;
        }
        [
            self.fetches.next_deadline(),
            self.produces.next_deadline(),
            self.group_waits.next_deadline(),
            self.held_heartbeats.next_deadline(),
            self.groups.next_deadline(),
            self.isr_changes.values().map(|c| c.deadline).min(),
            self.follower.next_deadline(),
            Some(self.timers.heartbeat),
            Some(self.timers.isr_check),
            Some(self.timers.retention),
            Some(self.timers.clean),
            Some(self.timers.flush),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// The next envelope to send, if any: answers to requests, and this
    /// broker's own requests (heartbeats, ISR changes, follower fetches).
    pub fn poll_transmit(&mut self) -> Option<Envelope> {
        self.outbox.pop_front()
    }

    /// What followers on this broker truncated so far.
    pub fn truncations(&self) -> &[Truncation] {
        &self.truncations
    }

    /// This broker's replica of `tp`, for the simulator's checks: its high
    /// watermark, its leader epoch if it leads, and the records from `from`
    /// up to the high watermark as (offset, value). `None` without a
    /// replica (or if the log cannot be read).
    #[cfg(feature = "sim")]
    pub(crate) fn replica_records(&self, tp: &TopicPartition, from: u64) -> Option<ReplicaView> {
        let partition = self.partitions.get(tp)?;
        let log = &partition.log;
        let leading = partition
            .replicas
            .is_leader()
            .then(|| partition.replicas.leader_epoch());
        let hw = log.high_watermark();
        let mut records = Vec::new();
        let mut offset = from.max(log.log_start_offset());
        while offset < hw {
            let mut next = offset;
            for record in log.read(offset, 1 << 20).ok()?.records() {
                let record = record.ok()?;
                if record.offset >= hw {
                    break;
                }
                if record.offset >= offset {
                    records.push((record.offset, record.value));
                }
                next = record.offset + 1;
            }
            if next <= offset {
                break;
            }
            offset = next;
        }
        Some((hw, leading, records))
    }

    /// Graceful shutdown at `now`: refuses requests from now on, answers
    /// every parked request with what there is (their answers are the last
    /// outputs), then flushes and closes every log. The first error is
    /// returned after everything was tried. Calling it again does nothing.
    pub fn shutdown(&mut self, now: Millis) -> Result<()> {
        if self.stopped {
            return Ok(());
        }
        self.now = self.now.max(now);
        self.answer_and_stop(now);
        let mut first_error = None;
        for (_, partition) in std::mem::take(&mut self.partitions) {
            if let Err(e) = partition.log.close() {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Starts Kafka's controlled shutdown: sends the controller a heartbeat
    /// that asks to be fenced now (and every later heartbeat asks again), so
    /// that the controller moves this broker's leaderships to in-sync
    /// followers and takes it out of the ISRs before it stops — producers
    /// then see a retriable error and a new leader at once, not a pause of
    /// the whole session timeout. The broker keeps serving until
    /// [`shutdown`](Self::shutdown); the metadata the controller then
    /// publishes (which this broker is sent too) shows when the handover is
    /// done. Calling it again does nothing.
    pub fn begin_controlled_shutdown(&mut self, _now: Millis) {
        if self.want_shutdown || self.stopped {
            return;
        }
        self.want_shutdown = true;
        trace_event!(info, broker = self.id, "controlled shutdown begins");
        self.send_heartbeat();
    }

    /// The first hosted log that went offline, and why.
    fn offline_log(&self) -> Option<String> {
        self.partitions.iter().find_map(|(tp, partition)| {
            let reason = partition.log.offline()?;
            Some(format!("the log of {tp} went offline: {reason}"))
        })
    }

    /// Stops the broker because its storage failed, as Kafka halts a broker
    /// whose last log directory went offline: waiting requests are
    /// answered with what there is, logs are dropped without a flush (the
    /// next start recovers them), heartbeats stop (the controller fences the
    /// broker and moves its leaderships). [`halted`](Self::halted) says why;
    /// the broker serves again only once restarted.
    fn halt(&mut self, now: Millis, reason: String) {
        trace_event!(error, broker = self.id, reason = %reason, "broker halts");
        self.answer_and_stop(now);
        self.partitions.clear();
        self.halted = Some(reason);
    }

    /// Why the broker halted, if a hosted log went offline (an I/O error, a
    /// full disk): it found that at its next heartbeat and stopped instead;
    /// its node should be restarted once the storage is repaired.
    pub fn halted(&self) -> Option<&str> {
        self.halted.as_deref()
    }

    /// Refuses requests from now on and answers every parked one with what
    /// there is (their answers are the last outputs).
    fn answer_and_stop(&mut self, now: Millis) {
        self.stopped = true;
        for held in self.held_heartbeats.drain() {
            let error = Error::NotCoordinator {
                group: held.request.group,
                node: self.id,
            };
            self.respond(held.reply, Err(error));
        }
        for wait in self.group_waits.drain() {
            self.finish_group(now, wait, true);
        }
        for fetch in self.fetches.drain() {
            self.answer_fetch(now, fetch);
        }
        for produce in self.produces.drain() {
            self.finish_produce(produce, now, true);
        }
    }

    /// A crash: stops at once. Parked requests are dropped unanswered and
    /// logs are dropped without being flushed or closed, so the next start
    /// recovers them.
    pub fn crash(&mut self) {
        self.stopped = true;
        self.fetches = Purgatory::default();
        self.produces = Purgatory::default();
        self.group_waits = Purgatory::default();
        self.held_heartbeats = Purgatory::default();
        self.outbox.clear();
        self.partitions.clear();
        self.stats.forget_waiting();
    }

    // ----- dispatch --------------------------------------------------------

    fn handle_request(&mut self, now: Millis, reply: ReplyTo, request: Request) {
        if self.config.metrics_enabled {
            self.stats.received(&reply, &request, self.now);
        }
        if self.stopped {
            return self.respond(reply, Err(self.shutting_down_error()));
        }
        match request {
            // Brokers are not quorum voters; nothing answers a Raft
            // message.
            Request::Raft(_) => {}
            Request::Produce(request) => self.produce(now, reply, request),
            Request::Fetch(request) => {
                // +1: the clock counts whole milliseconds, and a fetch must
                // never be answered before its full wait.
                let deadline = now + Millis::from(request.max_wait_ms) + 1;
                let session = match (request.session, request.replica) {
                    (Some(session), Some(replica)) => {
                        match self.sessions.receive(replica, session, &request, now) {
                            Ok(id) => Some((replica, id)),
                            Err(e) => return self.respond(reply, Err(e)),
                        }
                    }
                    _ => None,
                };
                self.try_fetch(
                    now,
                    PendingFetch {
                        request,
                        reply,
                        deadline,
                        session,
                    },
                );
            }
            Request::ListOffsets(request) => {
                let response = self.list_offsets(request);
                self.respond(reply, Ok(Response::ListOffsets(response)));
            }
            Request::OffsetForLeaderEpoch(request) => {
                let response = self.offsets_for_leader_epochs(request);
                self.respond(reply, Ok(Response::OffsetForLeaderEpoch(response)));
            }
            Request::DeleteRecords(request) => {
                let response = self.delete_records(request);
                self.respond(reply, Ok(Response::DeleteRecords(response)));
            }
            Request::Metadata(request) => {
                let response = self.describe(request);
                self.respond(reply, Ok(Response::Metadata(response)));
            }
            Request::UpdateMetadata(update) => {
                self.controller_seen = now;
                self.controller_override = None;
                let pushed = &update.metadata;
                let held = (self.metadata.controller_epoch, self.metadata.version);
                // An older push (crossed by a newer one) changes nothing.
                let applied = if (pushed.controller_epoch, pushed.version) <= held {
                    Ok(Vec::new())
                } else {
                    update
                        .apply_to(&self.metadata)
                        .and_then(|metadata| self.apply_metadata(now, metadata))
                };
                self.respond(reply, applied.map(Response::UpdateMetadata));
            }
            Request::CreateTopics(_)
            | Request::DeleteTopics(_)
            | Request::CreatePartitions(_)
            | Request::BrokerHeartbeat(_)
            | Request::AlterPartition(_)
            | Request::InitProducerId
            | Request::AlterPartitionReassignments(_)
            | Request::RegisterBroker(_) => {
                self.respond(reply, Err(Error::NotController { broker: self.id }))
            }
            Request::FindCoordinator(group) => {
                let found = self.find_coordinator(now, &group);
                self.respond(reply, found.map(Response::FindCoordinator));
            }
            Request::GroupHeartbeat(request) => self.group_heartbeat(now, request, reply, None),
            Request::OffsetCommit(request) => {
                let group = request.group.clone();
                self.coordinate(
                    now,
                    &group,
                    reply,
                    |c, p, topics, now| c.commit(p, request, topics, now),
                    |()| Response::OffsetCommit,
                );
            }
            Request::OffsetDelete(request) => {
                let group = request.group.clone();
                self.coordinate(
                    now,
                    &group,
                    reply,
                    |c, p, _, _| c.delete_offsets(p, &request),
                    |()| Response::OffsetDelete,
                );
            }
            Request::OffsetFetch(request) => {
                let group = request.group.clone();
                self.coordinate(
                    now,
                    &group,
                    reply,
                    |c, p, _, _| c.fetch_offsets(p, &request),
                    Response::OffsetFetch,
                );
            }
            Request::ListGroups => {
                let groups = self.groups.list();
                self.respond(reply, Ok(Response::ListGroups(groups)));
            }
            Request::DescribeGroup(group) => {
                self.coordinate(
                    now,
                    &group.clone(),
                    reply,
                    |c, p, _, _| c.describe(p, &group),
                    Response::DescribeGroup,
                );
            }
        }
    }

    /// An answer to one of this broker's own requests; answers nobody waits
    /// for (heartbeats, topic creation) are dropped.
    fn handle_response(&mut self, now: Millis, correlation_id: u64, response: Result<Response>) {
        if self.stopped {
            return;
        }
        if let Some(change) = self.isr_changes.remove(&correlation_id) {
            self.isr_change_answered(change.partition, response);
        } else if let Some(leader) = self.follower.answered(correlation_id) {
            self.apply_fetched(now, leader, response);
        } else {
            if self.heartbeat_in_flight == Some(correlation_id) {
                self.heartbeat_in_flight = None;
                if let Err(
                    Error::Network { .. }
                    | Error::NotController { .. }
                    | Error::RequestTimedOut { .. },
                ) = &response
                {
                    self.next_controller();
                }
            }
            match response {
                Ok(Response::BrokerHeartbeat(_)) => self.controller_seen = now,
                Ok(Response::RegisterBroker(Ok(()))) => {
                    self.controller_seen = now;
                    if let Some((_, registered)) = &mut self.registration {
                        *registered = true;
                    }
                    self.send_heartbeat();
                }
                // A controller that does not know this broker: register.
                Err(Error::InvalidRequest { .. }) => {
                    if let Some((_, registered)) = &mut self.registration {
                        *registered = false;
                    }
                }
                _ => {}
            }
        }
    }

    /// Looks again at the waiters of every partition that moved and the
    /// held heartbeats of groups that wrote, until nothing moves; then sends
    /// the follower fetches that are due.
    fn settle(&mut self, now: Millis) {
        loop {
            if let Some(tp) = self.moved.pop_first() {
                for fetch in self.fetches.take_watching(&tp) {
                    self.try_fetch(now, fetch);
                }
                self.sessions.moved(&tp);
                self.settle_produces_on(&tp);
                for wait in self.group_waits.take_watching(&tp) {
                    self.settle_group(now, wait);
                }
            } else if let Some(tp) = self.group_written.pop_first() {
                for held in self.held_heartbeats.take_watching(&tp) {
                    self.group_heartbeat(now, held.request, held.reply, Some(held.deadline));
                }
            } else {
                let waking = self.sessions.take_waking();
                if waking.is_empty() {
                    break;
                }
                for parked in waking {
                    if let Some(fetch) = self.fetches.take(parked) {
                        self.try_fetch(now, fetch);
                    }
                }
            }
        }
        if !self.stopped {
            self.send_follower_fetches(now);
        }
    }

    fn respond(&mut self, reply: ReplyTo, response: Result<Response>) {
        if self.config.metrics_enabled {
            self.stats.answered(&reply, response.is_err(), self.now);
        }
        let answer = reply.answer(Peer::Broker(self.id), response);
        self.outbox.push_back(answer);
    }

    /// Queues a request of this broker's own; returns its correlation id.
    fn send_request(&mut self, to: NodeId, request: Request) -> u64 {
        let correlation_id = self.next_correlation_id;
        self.next_correlation_id += 1;
        self.outbox.push_back(Envelope::request(
            Peer::Broker(self.id),
            Peer::Broker(to),
            correlation_id,
            request,
        ));
        correlation_id
    }

    fn shutting_down_error(&self) -> Error {
        Error::Network {
            node: self.id,
            reason: "the broker is shutting down".into(),
        }
    }

    fn controller(&self) -> NodeId {
        self.controller_override
            .unwrap_or_else(|| self.metadata.controller.unwrap_or(self.controller_hint))
    }

    /// Makes this broker register itself with the controller as `info`
    /// before it heartbeats (and again whenever a controller answers that
    /// it does not know it): what a broker in a process of its own does.
    /// `voters` are the controller quorum's voters (their controllers'
    /// peer ids): the first is asked while the metadata names no
    /// controller, and the next in turn whenever the one asked fails to
    /// answer a heartbeat or is not the active controller.
    pub fn register_as(&mut self, info: BrokerInfo, voters: Vec<NodeId>) {
        self.registration = Some((info, false));
        if let Some(&first) = voters.first() {
            self.controller_hint = first;
        }
        self.controller_voters = voters;
        self.send_heartbeat();
    }

    /// A heartbeat (or registration) failed: ask the next voter.
    fn next_controller(&mut self) {
        let voters = &self.controller_voters;
        if voters.len() < 2 {
            return;
        }
        let current = self.controller();
        let next = voters
            .iter()
            .position(|&v| v == current)
            .map_or(voters[0], |i| voters[(i + 1) % voters.len()]);
        self.controller_override = Some(next);
    }

    fn send_heartbeat(&mut self) {
        if let Some((info, false)) = &self.registration {
            let request = Request::RegisterBroker(info.clone());
            let id = self.send_request(self.controller(), request);
            self.heartbeat_in_flight = Some(id);
            return;
        }
        let version = (self.metadata.controller_epoch, self.metadata.version);
        let request = Request::BrokerHeartbeat(BrokerHeartbeatRequest {
            broker: self.id,
            metadata_version: version,
            want_shutdown: self.want_shutdown,
        });
        let id = self.send_request(self.controller(), request);
        self.heartbeat_in_flight = Some(id);
    }

    // ----- ISR changes -----------------------------------------------------

    /// Asks the controller for an ISR change; the answer updates the replica
    /// set (the controller also publishes the change as metadata).
    fn send_proposal(&mut self, now: Millis, proposal: IsrProposal) {
        let partition = proposal.partition.clone();
        let request = Request::AlterPartition(AlterPartitionRequest {
            broker: self.id,
            proposal,
        });
        let id = self.send_request(self.controller(), request);
        let deadline = now + self.config.broker_session_timeout_ms as Millis;
        self.isr_changes.insert(
            id,
            PendingIsrChange {
                partition,
                deadline,
            },
        );
    }

    fn isr_change_answered(&mut self, tp: TopicPartition, response: Result<Response>) {
        let Some(partition) = self.partitions.get_mut(&tp) else {
            return;
        };
        let end = partition.log.log_end_offset();
        match response {
            Ok(Response::AlterPartition(Ok((isr, epoch)))) => {
                let update = partition.replicas.isr_committed(isr, epoch, end);
                partition.apply(&update);
                // Waiting produces may now be committed, or short of
                // replicas.
                self.moved.insert(tp);
            }
            // Refused for good: nothing of it was committed.
            Ok(Response::AlterPartition(Err(Error::IneligibleReplica { .. }))) => {
                partition.replicas.isr_change_refused();
                self.moved.insert(tp);
            }
            // Not confirmed: a pending removal is dropped, a pending
            // addition waits for metadata or the next ISR check's resend
            // (looking at the waiters now would propose at once).
            _ => partition.replicas.isr_change_failed(),
        }
    }

    /// Lets every led partition propose dropping lagging followers, and
    /// re-evaluates waiters of partitions whose high watermark moved.
    fn check_isr(&mut self, now: Millis) {
        let mut proposals = Vec::new();
        // A follower in a fetch session lists a partition only when its
        // position changes: one that was at the log end when it last
        // fetched is caught up then.
        for (follower, tp, at) in self.sessions.members() {
            if let Some(partition) = self.partitions.get_mut(tp) {
                let end = partition.log.log_end_offset();
                proposals.extend(partition.replicas.still_fetching(follower, end, at));
            }
        }
        for partition in self.partitions.values_mut() {
            if !partition.replicas.is_leader() {
                continue;
            }
            proposals.extend(partition.replicas.tick(now));
            // An unconfirmed change with no request out goes again.
            let asking = self
                .isr_changes
                .values()
                .any(|change| change.partition == partition.tp);
            if !asking {
                proposals.extend(partition.replicas.pending_proposal());
            }
            let end = partition.log.log_end_offset();
            let update = partition.replicas.on_append(end);
            if partition.apply(&update) {
                self.moved.insert(partition.tp.clone());
            }
        }
        for proposal in proposals {
            self.send_proposal(now, proposal);
        }
    }

    // ----- log maintenance -------------------------------------------------

    /// Compacts every hosted log whose `cleanup_policy` compacts (a log with
    /// nothing new to clean returns at once); a log that fails goes
    /// offline, the others go on.
    fn compact_logs(&mut self) {
        for partition in self.partitions.values_mut().filter(|p| p.compacted) {
            let _ = partition.log.compact();
        }
    }

    /// Applies retention and timed flushes to every hosted log. A log that
    /// fails goes offline (its next request reports why); the others go on.
    fn maintain_logs(&mut self) {
        for partition in self.partitions.values_mut() {
            let _ = partition.log.maintain();
        }
        // Retention may have emptied a followed log (its position then has
        // no epoch): the next fetches look at every partition.
        self.follower.roles_changed();
    }
}

/// How often leaders look for lagging followers.
fn isr_check_interval(config: &BrokerConfig) -> Millis {
    (config.replica_lag_time_max_ms as Millis / 4).max(1)
}
