//! The producer: records in, acknowledged offsets out.
//!
//! [`Producer::send`] runs the interceptors, serializes key and value, picks a
//! partition ([`Partitioner`]: explicit partition, else Kafka's murmur2 of the
//! key, else sticky), reserves room in `buffer_memory` (blocking up to
//! `max_block_ms`), and appends the record to its partition's open batch. The
//! background sender ([`sender`]) ships batches when they are full or have
//! lingered, retries what is retriable, and resolves each record's
//! [`DeliveryFuture`] and callback.
//!
//! Ordering: a partition has at most one batch in flight and a retried batch
//! goes first, so records of one partition are written in send order, retries
//! included.

mod accumulator;
pub(crate) mod core;
mod delivery;
mod sender;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::{JoinHandle, ThreadId};
use std::time::{Duration, Instant};

use bytes::Bytes;
use parking_lot::{Condvar, Mutex, RwLock};

use super::ProducerCore;
use super::partitioner::partition_for_key;
use super::{Bootstrap, DefaultSerde, ProducerConfig, Serializer};
use crate::error::{Error, Result};
use crate::metrics::ProducerMetrics;
use crate::protocol::{Envelope, PartitionMetadata, Peer, TopicMetadata};
use crate::record::{BATCH_HEADER_LEN, Header};
use crate::time::{Clock, SystemClock};
use crate::topic::TopicPartition;
use crate::transport::Transport;
use delivery::{BatchOutcome, BatchResult};
pub use delivery::{DeliveryFuture, RecordMetadata};

/// A record to send: topic, optional partition, key, value, timestamp and
/// headers.
///
/// ```
/// use ferrolog::client::ProducerRecord;
/// let record = ProducerRecord::new("orders", "paid".to_string())
///     .with_key("order-17".to_string())
///     .with_header("source", "web");
/// assert_eq!(record.partition, None);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerRecord<K, V> {
    /// The topic.
    pub topic: Cow<'static, str>,
    /// The partition; `None` lets the partitioner choose.
    pub partition: Option<u32>,
    /// The key; records with equal keys go to the same partition.
    pub key: Option<K>,
    /// The value; `None` is a tombstone.
    pub value: Option<V>,
    /// The timestamp in ms; `None` takes the producer's clock at `send`.
    pub timestamp: Option<i64>,
    /// Headers, in order.
    pub headers: Vec<Header>,
}

impl<K, V> ProducerRecord<K, V> {
    /// A record with a value and nothing else.
    pub fn new(topic: impl Into<Cow<'static, str>>, value: V) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value),
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// A tombstone: a key with no value (deletes the key under compaction).
    pub fn tombstone(topic: impl Into<Cow<'static, str>>, key: K) -> Self {
        Self {
            topic: topic.into(),
            partition: None,
            key: Some(key),
            value: None,
            timestamp: None,
            headers: Vec::new(),
        }
    }

    /// Sets the key.
    pub fn with_key(mut self, key: K) -> Self {
        self.key = Some(key);
        self
    }

    /// Sends to this partition, whatever the key.
    pub fn with_partition(mut self, partition: u32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Sets the timestamp (ms since the epoch).
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }

    /// Adds a header.
    pub fn with_header(mut self, key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        self.headers.push(Header {
            key: key.into(),
            value: Some(value.into()),
        });
        self
    }
}

/// Picks a record's partition.
pub trait Partitioner: Send + Sync {
    /// The partition (below `partition_count`) for a record of `topic` with
    /// these serialized key and value, or `None` to let the producer use its
    /// sticky choice. Not called for records that name their partition.
    fn partition(
        &self,
        topic: &str,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        partition_count: u32,
    ) -> Option<u32>;
}

/// Kafka's default: a keyed record goes to `murmur2(key) % partitions`
/// (the partition a Kafka producer would pick); a record without key goes to
/// the sticky partition, which moves on after `batch_size` bytes.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultPartitioner;

impl Partitioner for DefaultPartitioner {
    fn partition(
        &self,
        _topic: &str,
        key: Option<&[u8]>,
        _value: Option<&[u8]>,
        partition_count: u32,
    ) -> Option<u32> {
        key.map(|k| partition_for_key(k, partition_count))
    }
}

/// Sees (and may change or drop) each record before it is sent, and every
/// send's outcome.
pub trait ProducerInterceptor<K, V>: Send + Sync {
    /// Called first in `send`, in the order interceptors were added; return
    /// the record to send (possibly changed), or `None` to drop it: `send`
    /// then fails with [`Error::DroppedByInterceptor`] and nothing is sent.
    fn on_send(&self, record: ProducerRecord<K, V>) -> Option<ProducerRecord<K, V>> {
        Some(record)
    }

    /// Called once per record with its outcome: success, a delivery failure,
    /// or an error `send` returned. Runs on the producer's sender thread for
    /// delivered records; keep it quick.
    fn on_acknowledgement(&self, result: &Result<RecordMetadata>) {
        let _ = result;
    }
}

type AckHook = Arc<dyn Fn(&Result<RecordMetadata>) + Send + Sync>;

/// Room for records in flight (`buffer_memory`).
struct Memory {
    limit: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

impl Memory {
    fn reserve(&self, bytes: usize, deadline: &BlockDeadline, max_block_ms: u64) -> Result<()> {
        let mut used = self.used.lock();
        while *used + bytes > self.limit {
            if self.freed.wait_until(&mut used, deadline.at()).timed_out()
                && *used + bytes > self.limit
            {
                return Err(Error::BufferExhausted {
                    requested: bytes,
                    buffer_memory: self.limit,
                    max_block_ms,
                });
            }
        }
        *used += bytes;
        Ok(())
    }

    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        *self.used.lock() -= bytes;
        self.freed.notify_all();
    }
}

/// The end of `max_block_ms` from a call's start, which is read from the
/// clock only when the call first has to wait (a send that does not block
/// reads no clock for it).
struct BlockDeadline {
    at: std::cell::Cell<Option<Instant>>,
    max_block: Duration,
}

impl BlockDeadline {
    fn new(max_block_ms: u64) -> Self {
        Self {
            at: std::cell::Cell::new(None),
            max_block: Duration::from_millis(max_block_ms),
        }
    }

    fn at(&self) -> Instant {
        let at = self
            .at
            .get()
            .unwrap_or_else(|| Instant::now() + self.max_block);
        self.at.set(Some(at));
        at
    }
}

/// A completion callback given to `send_with_callback`.
type Callback = Box<dyn FnOnce(Result<RecordMetadata>) + Send>;

/// What waits for one batch the core holds: its records' futures, their
/// callbacks and timestamps, and the `buffer_memory` room it takes.
struct PendingBatch {
    result: Arc<BatchResult>,
    timestamps: Vec<i64>,
    callbacks: Vec<(u32, Callback)>,
    reserved: usize,
    /// Outcomes of the parts of a batch that was split, until all its
    /// records have one.
    parts: Vec<(u32, Result<Option<u64>>)>,
    settled: usize,
}

impl PendingBatch {
    /// Takes in the outcome of `records` records from `first_index`; the
    /// batch's whole outcome once every record has one.
    fn settle(
        &mut self,
        first_index: u32,
        records: u32,
        outcome: Result<Option<u64>>,
    ) -> Option<BatchOutcome> {
        if first_index == 0 && records as usize == self.timestamps.len() {
            return Some(BatchOutcome::Whole(outcome));
        }
        self.parts.push((first_index, outcome));
        self.settled += records as usize;
        if self.settled < self.timestamps.len() {
            return None;
        }
        let mut parts = std::mem::take(&mut self.parts);
        parts.sort_by_key(|(first, _)| *first);
        Some(BatchOutcome::Parts(parts))
    }
}

/// The core, what waits for its batches, and the answers not yet fed to it.
struct ProducerState {
    core: ProducerCore,
    batches: BTreeMap<u64, PendingBatch>,
    inbox: Vec<Envelope>,
}

/// What the producer handle and its sender thread share.
pub(crate) struct ProducerShared {
    peer: Peer,
    transport: Arc<dyn Transport>,
    config: ProducerConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<ProducerState>,
    /// Wakes the sender; used with `state`.
    wake: Condvar,
    /// Wakes sends waiting for a topic's metadata; used with `state`.
    metadata_changed: Condvar,
    memory: Memory,
    closed: AtomicBool,
    /// Set by `close_timeout` when time ran out: fail what is left and stop.
    abort: AtomicBool,
    /// Whether the sender has stopped, for `close_timeout` to wait on.
    stopped: Mutex<bool>,
    stopped_signal: Condvar,
    /// The sender thread, where callbacks and interceptors run.
    sender_thread: OnceLock<ThreadId>,
    ack_hooks: RwLock<Vec<AckHook>>,
}

impl ProducerShared {
    /// Resolves a batch: callbacks, interceptors, memory, futures.
    /// Callbacks and interceptors run first, then the futures resolve (as in
    /// Kafka), so `flush` returning means every callback has run; the
    /// batch's `buffer_memory` is given back before, so a resolved future
    /// means its room is free (as the metrics then show).
    fn finish(&self, batch: PendingBatch, outcome: BatchOutcome) {
        let metadata = |index: u32| {
            let timestamp = batch.timestamps.get(index as usize).copied().unwrap_or(-1);
            batch.result.metadata(&outcome, index, timestamp)
        };
        for (index, callback) in batch.callbacks {
            let result = metadata(index);
            // A panicking user callback must not take the sender down.
            let _ = std::panic::catch_unwind(AssertUnwindSafe(move || callback(result)));
        }
        let hooks = self.ack_hooks.read().clone();
        if !hooks.is_empty() {
            for index in 0..batch.timestamps.len() as u32 {
                let result = metadata(index);
                for hook in &hooks {
                    let _ = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&result)));
                }
            }
        }
        self.memory.release(batch.reserved);
        batch.result.complete(outcome);
    }

    /// The sender died (a panic in a transport or storage it called): refuse
    /// new sends and resolve every future still pending, so nothing waits
    /// forever.
    fn fail_everything(&self) {
        self.closed.store(true, Ordering::Release);
        let pending = {
            let mut state = self.state.lock();
            state.core.close();
            std::mem::take(&mut state.batches)
        };
        let closed = BatchOutcome::Whole(Err(Error::ClientClosed { client: "producer" }));
        for batch in pending.into_values() {
            batch.result.complete(closed.clone());
        }
    }

    fn on_sender_thread(&self) -> bool {
        self.sender_thread.get() == Some(&std::thread::current().id())
    }

    fn acknowledge_failure(&self, error: &Error) {
        let result = Err(error.clone());
        for hook in self.ack_hooks.read().iter() {
            let _ = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&result)));
        }
    }

    /// The topic's metadata: from the core's cache, else after the next
    /// refresh (asked for now), waiting at most until `deadline`.
    fn topic(
        &self,
        name: &str,
        deadline: &BlockDeadline,
        max_block_ms: u64,
    ) -> Result<Arc<TopicMetadata>> {
        let mut state = self.state.lock();
        if let Some(topic) = state.core.metadata.topic(name) {
            return Ok(topic);
        }
        let deadline = deadline.at();
        // Wait for a refresh that starts from now on and succeeds (failed
        // ones go on to the next node).
        let target = state.core.metadata.sent + 1;
        state.core.metadata.want_refresh();
        state.core.wake();
        self.wake.notify_one();
        while state.core.metadata.last_success < target {
            if self
                .metadata_changed
                .wait_until(&mut state, deadline)
                .timed_out()
                && state.core.metadata.last_success < target
            {
                let timed_out = Error::RequestTimedOut {
                    operation: "Metadata",
                    timeout_ms: max_block_ms,
                };
                return Err(state.core.metadata.last_error.clone().unwrap_or(timed_out));
            }
        }
        state
            .core
            .metadata
            .topic(name)
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
            })
    }
}

/// Sends records to a cluster; see the [`client` module docs](crate::client).
///
/// `Send + Sync`: share one producer between threads (it batches their
/// records together). Dropping it closes it, which waits until every record
/// sent has been delivered or has failed.
///
/// ```
/// use ferrolog::client::{Producer, ProducerConfig, ProducerRecord};
/// use ferrolog::{Admin, Cluster, NewTopic};
///
/// let cluster = Cluster::builder().build()?;
/// Admin::new(&cluster)?.create_topic(NewTopic::new("events", 3))?;
/// let producer: Producer<String, String> = Producer::new(&cluster, ProducerConfig::default())?;
/// let sent = producer
///     .send(ProducerRecord::new("events", "hello".to_string()).with_key("k".to_string()))?
///     .wait()?;
/// assert_eq!(sent.offset, 0);
/// # Ok::<(), ferrolog::Error>(())
/// ```
pub struct Producer<K, V> {
    shared: Arc<ProducerShared>,
    sender: Mutex<Option<JoinHandle<()>>>,
    key_serializer: Box<dyn Serializer<K>>,
    value_serializer: Box<dyn Serializer<V>>,
    partitioner: Box<dyn Partitioner>,
    interceptors: Vec<Arc<dyn ProducerInterceptor<K, V>>>,
}

impl<K, V> std::fmt::Debug for Producer<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer")
            .field("client_id", &self.shared.config.client_id)
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
            .finish()
    }
}

impl<K, V> Producer<K, V> {
    /// A producer with the [`DefaultSerde`] serializers for `K` and `V`.
    /// An invalid `config` is [`Error::InvalidConfig`].
    pub fn new(bootstrap: impl Into<Bootstrap>, config: ProducerConfig) -> Result<Self>
    where
        DefaultSerde: Serializer<K> + Serializer<V>,
    {
        Self::with_serializers(bootstrap, config, DefaultSerde, DefaultSerde)
    }

    /// A producer with the given key and value serializers.
    pub fn with_serializers(
        bootstrap: impl Into<Bootstrap>,
        config: ProducerConfig,
        key_serializer: impl Serializer<K> + 'static,
        value_serializer: impl Serializer<V> + 'static,
    ) -> Result<Self> {
        config.validate()?;
        let bootstrap: Bootstrap = bootstrap.into();
        if bootstrap.nodes.is_empty() {
            return Err(Error::config("bootstrap", "names no broker"));
        }
        let peer = bootstrap.transport.client_peer();
        let seed = match peer {
            Peer::Client(id) => id as u32,
            Peer::Broker(id) => id,
        };
        let core = ProducerCore::new(peer, config.clone(), bootstrap.nodes, seed);
        let shared = Arc::new(ProducerShared {
            peer,
            transport: bootstrap.transport,
            memory: Memory {
                limit: config.buffer_memory,
                used: Mutex::new(0),
                freed: Condvar::new(),
            },
            config,
            clock: Arc::new(SystemClock),
            state: Mutex::new(ProducerState {
                core,
                batches: BTreeMap::new(),
                inbox: Vec::new(),
            }),
            wake: Condvar::new(),
            metadata_changed: Condvar::new(),
            closed: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            stopped: Mutex::new(false),
            stopped_signal: Condvar::new(),
            sender_thread: OnceLock::new(),
            ack_hooks: RwLock::new(Vec::new()),
        });
        let inbox = Arc::new(sender::ProducerInbox(Arc::downgrade(&shared)));
        shared.transport.register(peer, inbox)?;
        let runner = shared.clone();
        let name = format!("ferrolog-producer-{seed}");
        let sender = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| sender::run(&runner)));
                if outcome.is_err() {
                    runner.fail_everything();
                }
                *runner.stopped.lock() = true;
                runner.stopped_signal.notify_all();
            })
            .map_err(|e| {
                shared.transport.deregister(peer);
                Error::io("spawning the producer's sender thread", e)
            })?;
        let _ = shared.sender_thread.set(sender.thread().id());
        Ok(Self {
            shared,
            sender: Mutex::new(Some(sender)),
            key_serializer: Box::new(key_serializer),
            value_serializer: Box::new(value_serializer),
            partitioner: Box::new(DefaultPartitioner),
            interceptors: Vec::new(),
        })
    }

    /// Replaces the [`DefaultPartitioner`].
    pub fn with_partitioner(mut self, partitioner: impl Partitioner + 'static) -> Self {
        self.partitioner = Box::new(partitioner);
        self
    }

    /// Adds an interceptor; interceptors run in the order they were added.
    pub fn with_interceptor(mut self, interceptor: impl ProducerInterceptor<K, V> + 'static) -> Self
    where
        K: 'static,
        V: 'static,
    {
        let interceptor: Arc<dyn ProducerInterceptor<K, V>> = Arc::new(interceptor);
        let hook = interceptor.clone();
        self.shared
            .ack_hooks
            .write()
            .push(Arc::new(move |result| hook.on_acknowledgement(result)));
        self.interceptors.push(interceptor);
        self
    }

    /// The producer's config.
    pub fn config(&self) -> &ProducerConfig {
        &self.shared.config
    }

    /// Sends `record`: returns once it is in a batch (blocking up to
    /// `max_block_ms` for metadata or buffer space); the future resolves when
    /// it is acknowledged or has failed.
    ///
    /// Fails at once, sending nothing, with [`Error::UnknownTopicOrPartition`]
    /// for a topic the cluster does not have, [`Error::InvalidPartition`] for a
    /// partition it does not have, [`Error::RecordTooLarge`] for a record over
    /// `max_request_size` or `buffer_memory`, [`Error::Serialization`],
    /// [`Error::BufferExhausted`] after `max_block_ms`,
    /// [`Error::DroppedByInterceptor`], or [`Error::ClientClosed`].
    pub fn send(&self, record: ProducerRecord<K, V>) -> Result<DeliveryFuture> {
        self.send_inner(record, None)
    }

    /// [`send`](Self::send), and also call `callback` with the outcome (on the
    /// producer's sender thread; keep it quick). The callback is not called
    /// when `send` itself returns an error.
    pub fn send_with_callback(
        &self,
        record: ProducerRecord<K, V>,
        callback: impl FnOnce(Result<RecordMetadata>) + Send + 'static,
    ) -> Result<DeliveryFuture> {
        self.send_inner(record, Some(Box::new(callback)))
    }

    /// Sends everything batched now and blocks until every record sent before
    /// this call has been acknowledged or has failed. Called from a send
    /// callback or interceptor (on the sender thread, which must not wait for
    /// itself) it only asks for the batches to go out and returns.
    pub fn flush(&self) {
        if self.shared.on_sender_thread() {
            self.shared.wake.notify_one();
            return;
        }
        let pending: Vec<Arc<BatchResult>> = {
            let mut state = self.shared.state.lock();
            state.core.flushing(true);
            state.batches.values().map(|b| b.result.clone()).collect()
        };
        self.shared.wake.notify_one();
        for batch in pending {
            batch.wait();
        }
        self.shared.state.lock().core.flushing(false);
    }

    /// A snapshot of this producer's metrics (SPEC O4): records sent and
    /// failed, retries, requests, records per batch, queue time and produce
    /// latency (first record to acknowledgement), and the `buffer_memory`
    /// taken now.
    pub fn metrics(&self) -> ProducerMetrics {
        let mut metrics = self.shared.state.lock().core.metrics();
        metrics.buffer_memory_used = *self.shared.memory.used.lock();
        metrics
    }

    /// The partitions of `topic`, with their leaders.
    pub fn partitions_for(&self, topic: &str) -> Result<Vec<PartitionMetadata>> {
        let max_block_ms = self.shared.config.max_block_ms;
        let deadline = BlockDeadline::new(max_block_ms);
        Ok(self
            .shared
            .topic(topic, &deadline, max_block_ms)?
            .partitions
            .clone())
    }

    /// Refuses new sends, delivers (or fails) everything held, and stops the
    /// sender thread: waits until every record has been acknowledged or has
    /// failed, which `delivery_timeout_ms` bounds. Calling it again does
    /// nothing. Dropping the producer calls it. Called from a send callback
    /// (the sender thread) it cannot wait for itself: it fails what is left
    /// with [`Error::ClientClosed`] and returns.
    pub fn close(&self) {
        self.close_timeout(Duration::MAX);
    }

    /// Like [`close`](Self::close), but waits at most `timeout` for delivery;
    /// records still unacknowledged then fail with [`Error::ClientClosed`].
    pub fn close_timeout(&self, timeout: Duration) {
        let shared = &self.shared;
        shared.closed.store(true, Ordering::Release);
        shared.state.lock().core.close();
        shared.wake.notify_one();
        if shared.on_sender_thread() {
            shared.abort.store(true, Ordering::Release);
            return;
        }
        let deadline = Instant::now().checked_add(timeout);
        {
            let mut stopped = shared.stopped.lock();
            while !*stopped {
                match deadline {
                    Some(deadline) => {
                        if shared
                            .stopped_signal
                            .wait_until(&mut stopped, deadline)
                            .timed_out()
                        {
                            break;
                        }
                    }
                    None => shared.stopped_signal.wait(&mut stopped),
                }
            }
        }
        shared.abort.store(true, Ordering::Release);
        {
            let _state = shared.state.lock();
            shared.wake.notify_one();
        }
        if let Some(sender) = self.sender.lock().take() {
            let _ = sender.join();
            shared.transport.deregister(shared.peer);
        }
    }

    fn send_inner(
        &self,
        mut record: ProducerRecord<K, V>,
        callback: Option<Callback>,
    ) -> Result<DeliveryFuture> {
        for interceptor in &self.interceptors {
            match interceptor.on_send(record) {
                Some(changed) => record = changed,
                None => {
                    let error = Error::DroppedByInterceptor;
                    self.shared.acknowledge_failure(&error);
                    return Err(error);
                }
            }
        }
        let result = self.enqueue(record, callback);
        if let Err(error) = &result {
            self.shared.acknowledge_failure(error);
        }
        result
    }

    fn enqueue(
        &self,
        record: ProducerRecord<K, V>,
        callback: Option<Callback>,
    ) -> Result<DeliveryFuture> {
        let shared = &*self.shared;
        let config = &shared.config;
        if shared.closed.load(Ordering::Acquire) {
            return Err(Error::ClientClosed { client: "producer" });
        }
        // The clock is read only if the call has to wait.
        let deadline = BlockDeadline::new(config.max_block_ms);
        let topic_name: &str = &record.topic;
        let key = match &record.key {
            Some(k) => Some(self.key_serializer.serialize(topic_name, k)?),
            None => None,
        };
        let value = match &record.value {
            Some(v) => Some(self.value_serializer.serialize(topic_name, v)?),
            None => None,
        };
        let topic = shared.topic(topic_name, &deadline, config.max_block_ms)?;
        let count = topic.partitions.len() as u32;
        let size = record_size_bound(key.as_deref(), value.as_deref(), &record.headers);
        if size + BATCH_HEADER_LEN > config.max_request_size {
            return Err(Error::RecordTooLarge {
                size: size + BATCH_HEADER_LEN,
                max: config.max_request_size,
            });
        }
        if size > config.buffer_memory {
            return Err(Error::RecordTooLarge {
                size,
                max: config.buffer_memory,
            });
        }
        let chosen = match record.partition {
            Some(p) => Some(p),
            None => self
                .partitioner
                .partition(topic_name, key.as_deref(), value.as_deref(), count),
        };
        if let Some(p) = chosen
            && p >= count
        {
            return Err(Error::InvalidPartition {
                topic: topic_name.to_string(),
                partition: p,
                partition_count: count,
            });
        }
        shared
            .memory
            .reserve(size, &deadline, config.max_block_ms)?;
        let now = shared.clock.now_ms();
        let timestamp = record.timestamp.unwrap_or(now);
        let mut state = shared.state.lock();
        let partition = match chosen {
            Some(p) => p,
            None => state.core.sticky_partition(&topic.name, count, size),
        };
        let tp = TopicPartition::from_shared(topic.name.clone(), partition);
        let appended = match state.core.append(
            &tp,
            timestamp,
            key.as_deref(),
            value.as_deref(),
            &record.headers,
            size,
            now,
        ) {
            Ok(appended) => appended,
            Err(e) => {
                drop(state);
                shared.memory.release(size);
                return Err(e);
            }
        };
        // Most records join the newest batch: look there first.
        let newest = state
            .batches
            .last_key_value()
            .is_some_and(|(&id, _)| id == appended.batch);
        let batch = match state.batches.last_entry() {
            Some(entry) if newest => entry.into_mut(),
            _ => state
                .batches
                .entry(appended.batch)
                .or_insert_with(|| PendingBatch {
                    result: BatchResult::new(tp.clone()),
                    timestamps: Vec::new(),
                    callbacks: Vec::new(),
                    reserved: 0,
                    parts: Vec::new(),
                    settled: 0,
                }),
        };
        batch.timestamps.push(timestamp);
        batch.reserved += size;
        if let Some(callback) = callback {
            batch.callbacks.push((appended.index, callback));
        }
        let future = DeliveryFuture::new(batch.result.clone(), appended.index, timestamp);
        drop(state);
        if appended.wake_sender {
            shared.wake.notify_one();
        }
        Ok(future)
    }
}

impl<K, V> Drop for Producer<K, V> {
    fn drop(&mut self) {
        self.close();
    }
}

/// An upper bound on the bytes a record adds to a batch.
fn record_size_bound(key: Option<&[u8]>, value: Option<&[u8]>, headers: &[Header]) -> usize {
    const VARINT_MAX: usize = 5;
    const VARLONG_MAX: usize = 10;
    let field = |f: Option<&[u8]>| VARINT_MAX + f.map_or(0, <[u8]>::len);
    let headers: usize = headers
        .iter()
        .map(|h| field(Some(h.key.as_bytes())) + field(h.value.as_deref()))
        .sum();
    VARINT_MAX + 1 + VARLONG_MAX + VARINT_MAX + field(key) + field(value) + VARINT_MAX + headers
}
