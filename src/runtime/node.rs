//! [`NodeRuntime`]: one node's core, its registration with the transport,
//! and its timer thread.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::{Core, MAX_TIMER_SLEEP_MS, deliver};
use crate::error::{Error, Result};
use crate::protocol::{Envelope, Message, NodeId, Peer};
use crate::time::{Clock, Millis};
use crate::transport::{Inbox, Transport};

/// A running node (or client core): its core, registered with the transport
/// as its peer, and the thread that calls its timeouts. Stopping it (or
/// dropping it) shuts the core down.
pub(crate) struct NodeRuntime<C: Core> {
    shared: Arc<Shared<C>>,
    timer: Mutex<Option<JoinHandle<()>>>,
}

impl<C: Core> std::fmt::Debug for NodeRuntime<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeRuntime")
            .field("peer", &self.shared.peer)
            .finish_non_exhaustive()
    }
}

/// Called with the core after each step, under the core's lock: where a
/// client handle picks up completions and wakes its application threads.
/// It must be quick and must not call into the runtime.
pub(crate) type AfterStep<C> = Box<dyn Fn(&mut C) + Send + Sync>;

struct Shared<C> {
    peer: Peer,
    node: Mutex<Node<C>>,
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    after_step: Option<AfterStep<C>>,
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

/// A core and the answers it owes.
struct Node<C> {
    core: C,
    /// The requests handed to the core and not answered yet, by sender and
    /// correlation id: when the node stops, each gets a network error, as a
    /// closed connection would give it.
    owed: BTreeSet<(Peer, u64)>,
}

impl<C: Core> Node<C> {
    /// The core's outputs, crossing off the answers among them.
    fn drain(&mut self) -> Vec<Envelope> {
        let outputs: Vec<Envelope> = std::iter::from_fn(|| self.core.poll_transmit()).collect();
        for envelope in &outputs {
            if let Message::Response(_) = envelope.message {
                self.owed.remove(&(envelope.to, envelope.correlation_id));
            }
        }
        outputs
    }
}

/// Where the transport delivers this node's envelopes.
struct NodeInbox<C>(Arc<Shared<C>>);

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
        Self::start_peer(Peer::Broker(id), core, transport, clock, name, None)
    }

    /// Like [`start`](Self::start), for any peer (a client core too), with
    /// `after_step` called after each step.
    pub(crate) fn start_peer(
        peer: Peer,
        core: C,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        name: String,
        after_step: Option<AfterStep<C>>,
    ) -> Result<Self> {
        let shared = Arc::new(Shared {
            peer,
            node: Mutex::new(Node {
                core,
                owed: BTreeSet::new(),
            }),
            transport: transport.clone(),
            clock,
            after_step,
            timer: Mutex::new(TimerState::default()),
            timer_wake: Condvar::new(),
            planned_wake: AtomicI64::new(Millis::MAX),
        });
        transport.register(peer, Arc::new(NodeInbox(shared.clone())))?;
        let runner = shared.clone();
        let timer = std::thread::Builder::new()
            .name(name)
            .spawn(move || runner.run_timer())
            .map_err(|e| {
                transport.deregister(peer);
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
        f(&mut self.shared.node.lock().core)
    }

    /// Runs `f` on the core as one step (an application's call into a
    /// client core), then sends what it produced and wakes the timer if its
    /// deadline came closer.
    pub(crate) fn step<T>(&self, f: impl FnOnce(&mut C, Millis) -> T) -> T {
        let shared = &self.shared;
        let (value, outputs, next) = {
            let mut node = shared.node.lock();
            let value = f(&mut node.core, shared.clock.now_ms());
            let (outputs, next) = shared.finish_step(&mut node);
            (value, outputs, next)
        };
        shared.wake_timer_for(next);
        let sender = shared.clone();
        deliver(Box::new(move || {
            for envelope in outputs {
                sender.transport.send(envelope);
            }
        }));
        value
    }

    /// Stops the node: it is deregistered, its timer thread ends, and `stop`
    /// runs on the core (a shutdown or a crash); what that sends goes out,
    /// and requests still owed an answer then get a network error (as a
    /// closed connection gives). Calling it again does nothing.
    pub(crate) fn stop(&self, stop: impl FnOnce(&mut C, Millis) -> Result<()>) -> Result<()> {
        let Some(timer) = self.timer.lock().take() else {
            return Ok(());
        };
        let shared = &self.shared;
        shared.transport.deregister(shared.peer);
        {
            let mut state = shared.timer.lock();
            state.stop = true;
            shared.timer_wake.notify_all();
        }
        let _ = timer.join();
        let (result, mut outputs, owed) = {
            let mut node = shared.node.lock();
            let result = stop(&mut node.core, shared.clock.now_ms());
            let outputs = node.drain();
            (result, outputs, std::mem::take(&mut node.owed))
        };
        // Only nodes are owed answers.
        if let Peer::Broker(id) = shared.peer {
            outputs.extend(owed.into_iter().map(|(peer, correlation_id)| {
                Envelope::connection_closed(id, peer, correlation_id, "the node stopped")
            }));
        }
        let last = shared.clone();
        deliver(Box::new(move || {
            for envelope in outputs {
                last.transport.send(envelope);
            }
        }));
        result
    }
}

impl<C: Core> Drop for NodeRuntime<C> {
    fn drop(&mut self) {
        let _ = self.stop(C::shutdown);
    }
}

impl<C: Core> Inbox for NodeInbox<C> {
    fn deliver(&self, envelope: Envelope) {
        let shared = self.0.clone();
        deliver(Box::new(move || shared.process(envelope)));
    }
}

impl<C: Core> Shared<C> {
    /// Feeds one envelope to the core, then sends what it produced.
    fn process(self: &Arc<Self>, envelope: Envelope) {
        let (outputs, next) = {
            let mut node = self.node.lock();
            if let Message::Request(request) = &envelope.message
                && request.expects_answer()
            {
                node.owed.insert((envelope.from, envelope.correlation_id));
            }
            node.core.handle_message(self.clock.now_ms(), envelope);
            self.finish_step(&mut node)
        };
        self.wake_timer_for(next);
        for envelope in outputs {
            self.transport.send(envelope);
        }
    }

    /// After a step: the hook, then the core's outputs and next deadline.
    fn finish_step(&self, node: &mut Node<C>) -> (Vec<Envelope>, Option<Millis>) {
        if let Some(after_step) = &self.after_step {
            after_step(&mut node.core);
        }
        (node.drain(), node.core.poll_timeout())
    }

    /// Wakes the timer thread if `next` comes before its planned wake.
    fn wake_timer_for(&self, next: Option<Millis>) {
        if next.is_some_and(|at| at < self.planned_wake.load(Ordering::Acquire)) {
            self.timer.lock().woken = true;
            self.timer_wake.notify_one();
        }
    }

    fn drain_and_send(self: &Arc<Self>) {
        let outputs = self.node.lock().drain();
        for envelope in outputs {
            self.transport.send(envelope);
        }
    }

    /// The timer thread: calls the core's timeout when due, and sleeps until
    /// its next deadline (at most [`MAX_TIMER_SLEEP_MS`]).
    fn run_timer(self: Arc<Self>) {
        loop {
            let now = self.clock.now_ms();
            let (outputs, next) = {
                let mut node = self.node.lock();
                if node.core.poll_timeout().is_some_and(|at| at <= now) {
                    node.core.handle_timeout(now);
                }
                self.finish_step(&mut node)
            };
            if !outputs.is_empty() {
                let shared = self.clone();
                deliver(Box::new(move || {
                    for envelope in outputs {
                        shared.transport.send(envelope);
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
