//! The producer's one background thread (Kafka's `Sender`): the driver of
//! the [`ProducerCore`](super::core::ProducerCore).
//!
//! It feeds the core the answers that arrived and the time, sends the
//! requests the core wants sent, and resolves the batches the core is done
//! with: user callbacks and interceptors run here, never under a lock, and
//! then the futures resolve. It sleeps until the core's next deadline, an
//! answer, or a record that makes a batch due.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::ProducerShared;
use crate::protocol::Envelope;
use crate::time::Millis;
use crate::transport::Inbox;

/// Longest the sender sleeps when nothing is due, so it re-checks its state.
const IDLE_SLEEP_MS: Millis = 1_000;

/// Where the transport delivers the producer's answers: they are queued for
/// the sender thread, which is woken.
pub(crate) struct ProducerInbox(pub(crate) std::sync::Weak<ProducerShared>);

impl Inbox for ProducerInbox {
    fn deliver(&self, envelope: Envelope) {
        if let Some(shared) = self.0.upgrade() {
            shared.state.lock().inbox.push(envelope);
            shared.wake.notify_one();
        }
    }
}

/// The sender loop; returns once the producer is closed and everything it
/// held has been delivered or failed, or at once when aborted.
pub(crate) fn run(shared: &Arc<ProducerShared>) {
    loop {
        let now = shared.clock.now_ms();
        let (requests, finished, done) = {
            let mut state = shared.state.lock();
            if shared.abort.load(Ordering::Acquire) {
                state.core.abort();
            }
            let metadata_before = state.core.metadata.finished;
            for envelope in std::mem::take(&mut state.inbox) {
                state.core.handle_message(now, envelope);
            }
            if state.core.poll_timeout().is_some_and(|at| at <= now) {
                state.core.handle_timeout(now);
            }
            if state.core.metadata.finished != metadata_before {
                shared.metadata_changed.notify_all();
            }
            let requests: Vec<Envelope> =
                std::iter::from_fn(|| state.core.poll_transmit()).collect();
            let mut finished = Vec::new();
            while let Some(c) = state.core.poll_completion() {
                let settled = state
                    .batches
                    .get_mut(&c.batch)
                    .and_then(|batch| batch.settle(c.first_index, c.records, c.outcome));
                if let Some(outcome) = settled
                    && let Some(batch) = state.batches.remove(&c.batch)
                {
                    finished.push((batch, outcome));
                }
            }
            let done = state.core.is_done() || shared.abort.load(Ordering::Acquire);
            if requests.is_empty() && finished.is_empty() && !done && state.inbox.is_empty() {
                let wake = state
                    .core
                    .poll_timeout()
                    .unwrap_or(Millis::MAX)
                    .min(now + IDLE_SLEEP_MS);
                if wake > now {
                    shared
                        .wake
                        .wait_for(&mut state, Duration::from_millis((wake - now) as u64));
                }
                continue;
            }
            (requests, finished, done)
        };
        for request in requests {
            shared.transport.send(request);
        }
        for (batch, outcome) in finished {
            shared.finish(batch, outcome);
        }
        if done {
            return;
        }
    }
}
