//! The outcome of a send: [`DeliveryFuture`] and the batch result it reads.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Result;
use crate::topic::TopicPartition;

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// The partition it went to.
    pub partition: TopicPartition,
    /// Its offset: with acks ≥ 1 always the one the leader gave it. With
    /// `acks=0` the broker does not answer, and it is
    /// [`UNKNOWN_OFFSET`](Self::UNKNOWN_OFFSET) (Kafka's -1; see
    /// [`has_offset`](Self::has_offset)).
    pub offset: u64,
    /// Its timestamp (the one given, or the producer's clock at `send`).
    pub timestamp: i64,
}

impl RecordMetadata {
    /// The offset of a record sent with `acks=0`: not known.
    pub const UNKNOWN_OFFSET: u64 = u64::MAX;

    /// Whether the offset is known (acks ≥ 1).
    pub fn has_offset(&self) -> bool {
        self.offset != Self::UNKNOWN_OFFSET
    }
}

/// How the records of one send batch ended: as one batch, or, when the
/// batch was split after a `RecordTooLarge`, as parts with outcomes of
/// their own.
#[derive(Debug, Clone)]
pub(crate) enum BatchOutcome {
    /// Base offset (`None` for acks=0), or why the batch failed.
    Whole(Result<Option<u64>>),
    /// (first record index, its offset or why it failed), by index.
    Parts(Vec<(u32, Result<Option<u64>>)>),
}

impl BatchOutcome {
    /// The outcome of the part holding record `index`, and that part's
    /// first index.
    fn part(&self, index: u32) -> (&Result<Option<u64>>, u32) {
        match self {
            BatchOutcome::Whole(outcome) => (outcome, 0),
            BatchOutcome::Parts(parts) => {
                let at = parts.partition_point(|(first, _)| *first <= index);
                let (first, outcome) = &parts[at.saturating_sub(1)];
                (outcome, *first)
            }
        }
    }
}

#[derive(Debug, Default)]
struct BatchState {
    outcome: Option<BatchOutcome>,
    wakers: Vec<Waker>,
}

/// The shared outcome of one producer batch; every record's future reads it.
#[derive(Debug)]
pub(crate) struct BatchResult {
    partition: TopicPartition,
    state: Mutex<BatchState>,
    done: Condvar,
}

impl BatchResult {
    pub(crate) fn new(partition: TopicPartition) -> Arc<Self> {
        Arc::new(Self {
            partition,
            state: Mutex::new(BatchState::default()),
            done: Condvar::new(),
        })
    }

    /// Records the outcome and wakes every waiter. The first outcome wins.
    pub(crate) fn complete(&self, outcome: BatchOutcome) {
        let wakers = {
            let mut state = self.state.lock();
            if state.outcome.is_some() {
                return;
            }
            state.outcome = Some(outcome);
            std::mem::take(&mut state.wakers)
        };
        self.done.notify_all();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Blocks until the outcome is known.
    pub(crate) fn wait(&self) {
        let mut state = self.state.lock();
        while state.outcome.is_none() {
            self.done.wait(&mut state);
        }
    }

    /// The record at `index`'s metadata, given the batch outcome.
    pub(crate) fn metadata(
        &self,
        outcome: &BatchOutcome,
        index: u32,
        timestamp: i64,
    ) -> Result<RecordMetadata> {
        let (outcome, first) = outcome.part(index);
        match outcome {
            Ok(base) => Ok(RecordMetadata {
                partition: self.partition.clone(),
                offset: base.map_or(RecordMetadata::UNKNOWN_OFFSET, |b| {
                    b + u64::from(index - first)
                }),
                timestamp,
            }),
            Err(e) => Err(e.clone()),
        }
    }
}

/// The pending outcome of one [`Producer::send`](super::Producer::send).
///
/// A `std::future::Future` for async code, and blocking with
/// [`wait`](Self::wait) for everything else. It resolves to the record's
/// [`RecordMetadata`] once the broker acknowledged it (per `acks`), or to the
/// error that ended its delivery: a non-retriable error, or
/// [`Error::DeliveryTimeout`](crate::Error::DeliveryTimeout) once
/// `delivery_timeout_ms` passed. It always resolves: the producer fails what
/// it cannot deliver in time.
#[derive(Debug)]
#[must_use = "a send's outcome is only known by waiting for it (or use a callback)"]
pub struct DeliveryFuture {
    batch: Arc<BatchResult>,
    index: u32,
    timestamp: i64,
}

impl DeliveryFuture {
    pub(crate) fn new(batch: Arc<BatchResult>, index: u32, timestamp: i64) -> Self {
        Self {
            batch,
            index,
            timestamp,
        }
    }

    /// Blocks until the outcome is known.
    pub fn wait(self) -> Result<RecordMetadata> {
        let mut state = self.batch.state.lock();
        loop {
            if let Some(outcome) = &state.outcome {
                return self.batch.metadata(outcome, self.index, self.timestamp);
            }
            self.batch.done.wait(&mut state);
        }
    }

    /// Blocks at most `timeout`; `None` if the outcome is still unknown.
    pub fn wait_timeout(&self, timeout: Duration) -> Option<Result<RecordMetadata>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut state = self.batch.state.lock();
        while state.outcome.is_none() {
            match deadline {
                Some(deadline) => {
                    if self.batch.done.wait_until(&mut state, deadline).timed_out() {
                        break;
                    }
                }
                None => self.batch.done.wait(&mut state),
            }
        }
        let outcome = state.outcome.as_ref()?;
        Some(self.batch.metadata(outcome, self.index, self.timestamp))
    }

    /// Whether the outcome is known.
    pub fn is_done(&self) -> bool {
        self.batch.state.lock().outcome.is_some()
    }
}

impl Future for DeliveryFuture {
    type Output = Result<RecordMetadata>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.batch.state.lock();
        match &state.outcome {
            Some(outcome) => Poll::Ready(self.batch.metadata(outcome, self.index, self.timestamp)),
            None => {
                if !state.wakers.iter().any(|w| w.will_wake(cx.waker())) {
                    state.wakers.push(cx.waker().clone());
                }
                Poll::Pending
            }
        }
    }
}
