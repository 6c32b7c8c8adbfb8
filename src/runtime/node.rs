//! [`NodeRuntime`]: one node's core, its registration with the transport,
//! and its timer thread.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Core, MAX_TIMER_SLEEP_MS, deliver};
use crate::error::{Error, Result};
use crate::protocol::{Acks, Envelope, Message, NodeId, Peer, Request};
use crate::time::{Clock, Millis};
use crate::transport::{Reply, RequestHandler, Transport};

/// A running node: its core, registered with the transport as `id`, and
/// the thread that calls its timeouts. Stopping it (or dropping it) shuts
/// the core down.
pub(crate) struct NodeRuntime<C: Core> {
    shared: Arc<Shared<C>>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Core> std::fmt::Debug for NodeRuntime<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRuntime")
            .field("id", &self.shared.id)
            .finish_non_exhaustive()
    }
}

struct Shared<C> {
    id: NodeId,
    core: Mutex<C>,
    /// Answers owed to requests that came with a [`Reply`], by the
    /// correlation id this runtime gave them.
    replies: Mutex<BTreeMap<u64, Reply>>,
    next_correlation_id: AtomicU64,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    timer: Mutex<TimerState>,
    timer_wake: Condvar,
    /// When the timer thread means to look at the core next; a delivery
    /// that brings the deadline closer wakes it.
    planned_wake: AtomicI64,
}

#[derive(Default)]
struct TimerState {
    stop: bool,
    woken: bool,
}

/// What the transport calls for requests to this node.
struct Handler<C>(Arc<Shared<C>>);

impl<C: Core> NodeRuntime<C> {
    /// Registers `core` as node `id` with `transport`, starts its timer
    /// thread and sends what the core already has to send.
    pub(crate) fn start(
        id: NodeId,
        core: C,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        name: String,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            id,
            core: Mutex::new(core),
            replies: Mutex::new(BTreeMap::new()),
            next_correlation_id: AtomicU64::new(0),
            transport: transport.clone(),
            clock,
            timer: Mutex::new(TimerState::default()),
            timer_wake: Condvar::new(),
            planned_wake: AtomicI64::new(Millis::MAX),
        });
        transport.register(id, Arc::new(Handler(shared.clone())))?;
        let runner = shared.clone();
        let timer = std::thread::Builder::new()
            .name(name)
            .spawn(move || runner.run_timer())
            .map_err(|e| {
                transport.deregister(id);
                Error::io("spawning a node's timer thread", e)
            })?;
        let first = shared.clone();
        deliver(Box::new(move || first.drain_and_send()));
        Ok(Self {
            shared,
            timer: Mutex::new(Some(timer)),
        })
    }

    /// Runs `f` on the core (for a look at its state).
    pub(crate) fn with_core<T>(&self, f: impl FnOnce(&mut C) -> T) -> T {
        f(&mut self.shared.core.lock())
    }

    /// Stops the node: it is deregistered, its timer thread ends, and `stop`
    /// runs on the core (a shutdown or a crash); what that sends goes out,
    /// and requests still owed an answer then get a network error. Calling it
    /// again does nothing.
    pub(crate) fn stop(&self, stop: impl FnOnce(&mut C, Millis) -> Result<()>) -> Result<()> {
        let Some(timer) = self.timer.lock().take() else {
            return Ok(());
        };
        let shared = &self.shared;
        shared.transport.deregister(shared.id);
        {
            let mut state = shared.timer.lock();
            state.stop = true;
            shared.timer_wake.notify_all();
        }
        let _ = timer.join();
        let result = {
            let mut core = shared.core.lock();
            stop(&mut core, shared.clock.now_ms())
        };
        let last = shared.clone();
        deliver(Box::new(move || last.drain_and_send()));
        drop(std::mem::take(&mut *shared.replies.lock()));
        result
    }
}

impl<C: Core> Drop for NodeRuntime<C> {
    fn drop(&mut self) {
        let _ = self.stop(C::shutdown);
    }
}

impl<C: Core> RequestHandler for Handler<C> {
    fn handle(&self, from: Peer, request: Request, reply: Reply) {
        let shared = self.0.clone();
        let correlation_id = shared.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        // An acks=0 produce is never answered.
        let unanswered = matches!(&request, Request::Produce(p) if p.acks == Acks::None);
        if !unanswered {
            shared.replies.lock().insert(correlation_id, reply);
        }
        let envelope = Envelope::request(from, Peer::Broker(shared.id), correlation_id, request);
        deliver(Box::new(move || shared.process(envelope)));
    }
}

impl<C: Core> Shared<C> {
    /// Feeds one envelope to the core, then sends what it produced.
    fn process(self: &Arc<Self>, envelope: Envelope) {
        let (outputs, next) = {
            let mut core = self.core.lock();
            core.handle_message(self.clock.now_ms(), envelope);
            (drain(&mut *core), core.poll_timeout())
        };
        if next.is_some_and(|at| at < self.planned_wake.load(Ordering::Acquire)) {
            self.timer.lock().woken = true;
            self.timer_wake.notify_one();
        }
        for envelope in outputs {
            self.send(envelope);
        }
    }

    fn drain_and_send(self: &Arc<Self>) {
        let outputs = drain(&mut *self.core.lock());
        for envelope in outputs {
            self.send(envelope);
        }
    }

    /// Sends one of the core's outputs: an answer to its owed reply, or a
    /// request whose answer comes back to the core.
    fn send(self: &Arc<Self>, envelope: Envelope) {
        let Envelope {
            to,
            correlation_id,
            message,
            ..
        } = envelope;
        match message {
            Message::Response(response) => {
                let reply = self.replies.lock().remove(&correlation_id);
                if let Some(reply) = reply {
                    reply.send(response);
                }
            }
            Message::Request(request) => {
                let Peer::Broker(node) = to else {
                    return; // nodes send requests to nodes only
                };
                let me = Peer::Broker(self.id);
                let shared = self.clone();
                let reply = Reply::new(node, move |response| {
                    let answer = Envelope {
                        from: to,
                        to: me,
                        correlation_id,
                        message: Message::Response(response),
                    };
                    deliver(Box::new(move || shared.process(answer)));
                });
                self.transport.send(me, node, request, reply);
            }
        }
    }

    /// The timer thread: calls the core's timeout when due, and sleeps until
    /// its next deadline (at most [`MAX_TIMER_SLEEP_MS`]).
    fn run_timer(self: Arc<Self>) {
        loop {
            let now = self.clock.now_ms();
            let (outputs, next) = {
                let mut core = self.core.lock();
                if core.poll_timeout().is_some_and(|at| at <= now) {
                    core.handle_timeout(now);
                }
                (drain(&mut *core), core.poll_timeout())
            };
            if !outputs.is_empty() {
                let shared = self.clone();
                deliver(Box::new(move || {
                    for envelope in outputs {
                        shared.send(envelope);
                    }
                }));
            }
            let now = self.clock.now_ms();
            let sleep = next
                .map_or(MAX_TIMER_SLEEP_MS, |at| at.saturating_sub(now))
                .clamp(0, MAX_TIMER_SLEEP_MS);
            let mut state = self.timer.lock();
            if state.stop {
                return;
            }
            if sleep > 0 && !state.woken {
                self.planned_wake.store(now + sleep, Ordering::Release);
                self.timer_wake
                    .wait_for(&mut state, Duration::from_millis(sleep as u64));
            }
            state.woken = false;
            self.planned_wake.store(Millis::MAX, Ordering::Release);
            if state.stop {
                return;
            }
        }
    }
}

fn drain(core: &mut impl Core) -> Vec<Envelope> {
    std::iter::from_fn(|| core.poll_transmit()).collect()
}
