//! The threaded runtime: what drives the nodes' cores in a real process.
//!
//! This module owns the threads, locks and clock reads that the cores must
//! not have. A [`NodeRuntime`] holds one core (a broker, the controller, or
//! a consumer's group member) behind a lock, registers it with the
//! transport, and runs it:
//!
//! - **Inputs run on the thread that delivers them.** A message for the node
//!   is handled at once on the delivering thread: the core is locked, fed the
//!   message and the clock's time, and unlocked; only then are its outputs
//!   sent on. No lock is held while another node runs, so nodes cannot
//!   deadlock each other, and an in-process exchange costs no thread switch.
//! - **No re-entry, no deep stacks.** Outputs are delivered through a
//!   per-thread queue ([`deliver`]): a thread already delivering appends to
//!   its queue and returns, and the outermost delivery on that thread works
//!   the queue off in order. A core's outputs therefore never run inside the
//!   same thread's handling of another input.
//! - **One timer thread per node** sleeps until the core's next deadline
//!   ([`poll_timeout`](crate::broker::BrokerCore::poll_timeout)), at most
//!   [`MAX_TIMER_SLEEP_MS`], then calls its `handle_timeout`; a delivery that
//!   brings the deadline closer wakes it early.
//!
//! The queue of one delivering thread holds what one input fans out into
//! (answers, a metadata update per broker, follower fetches); a node never
//! queues work for later on its own, so there is no inbox to overflow.

mod node;

pub(crate) use node::NodeRuntime;

use std::cell::RefCell;
use std::collections::VecDeque;

use crate::broker::BrokerCore;
use crate::controller::ControllerCore;
use crate::protocol::Envelope;
use crate::time::Millis;

/// Longest a timer thread sleeps between looks at its core, so that
/// deadlines are met within this much even under a
/// [`ManualClock`](crate::ManualClock), whose time moves without waking
/// anyone.
pub(crate) const MAX_TIMER_SLEEP_MS: Millis = 20;

/// What a runtime drives: a node's deterministic state machine.
pub(crate) trait Core: Send + 'static {
    /// Handles one envelope addressed to the node.
    fn handle_message(&mut self, now: Millis, envelope: Envelope);
    /// Does what is due at `now`.
    fn handle_timeout(&mut self, now: Millis);
    /// When `handle_timeout` is next due.
    fn poll_timeout(&self) -> Option<Millis>;
    /// The next envelope to send.
    fn poll_transmit(&mut self) -> Option<Envelope>;
    /// A graceful stop at `now`: answers what waits, closes files.
    fn shutdown(&mut self, now: Millis) -> crate::Result<()>;
}

impl Core for BrokerCore {
    fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        BrokerCore::handle_message(self, now, envelope);
    }
    fn handle_timeout(&mut self, now: Millis) {
        BrokerCore::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Millis> {
        BrokerCore::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Envelope> {
        BrokerCore::poll_transmit(self)
    }
    fn shutdown(&mut self, now: Millis) -> crate::Result<()> {
        BrokerCore::shutdown(self, now)
    }
}

impl Core for ControllerCore {
    fn handle_message(&mut self, now: Millis, envelope: Envelope) {
        ControllerCore::handle_message(self, now, envelope);
    }
    fn handle_timeout(&mut self, now: Millis) {
        ControllerCore::handle_timeout(self, now);
    }
    fn poll_timeout(&self) -> Option<Millis> {
        ControllerCore::poll_timeout(self)
    }
    fn poll_transmit(&mut self) -> Option<Envelope> {
        ControllerCore::poll_transmit(self)
    }
    fn shutdown(&mut self, _now: Millis) -> crate::Result<()> {
        ControllerCore::shutdown(self)
    }
}

/// A piece of delivery work: runs once, on the delivering thread.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// The delivery queue of the thread's outermost delivery, if one runs.
    static QUEUE: RefCell<Option<VecDeque<Job>>> = const { RefCell::new(None) };
}

/// Runs `job` now, or — when this thread is already delivering — after the
/// jobs queued before it, once the current one returns. Either way no job
/// runs inside another.
pub(crate) fn deliver(job: Job) {
    let queued = QUEUE.with(|queue| match &mut *queue.borrow_mut() {
        Some(queue) => {
            queue.push_back(job);
            None
        }
        slot @ None => {
            *slot = Some(VecDeque::new());
            Some(job)
        }
    });
    let Some(first) = queued else {
        return;
    };
    // Ends the delivery even if a job panics, so the thread can deliver
    // again afterwards.
    struct Done;
    impl Drop for Done {
        fn drop(&mut self) {
            QUEUE.with(|queue| *queue.borrow_mut() = None);
        }
    }
    let _done = Done;
    first();
    while let Some(next) =
        QUEUE.with(|queue| queue.borrow_mut().as_mut().and_then(VecDeque::pop_front))
    {
        next();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn nested_deliveries_run_after_the_current_job_in_order() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        deliver(Box::new(move || {
            l.lock().unwrap().push("a start");
            let l2 = l.clone();
            deliver(Box::new(move || {
                l2.lock().unwrap().push("b");
                let l3 = l2.clone();
                deliver(Box::new(move || l3.lock().unwrap().push("d")));
            }));
            let l4 = l.clone();
            deliver(Box::new(move || l4.lock().unwrap().push("c")));
            l.lock().unwrap().push("a end");
        }));
        assert_eq!(
            *log.lock().unwrap(),
            ["a start", "a end", "b", "c", "d"],
            "each job runs alone, queued ones in order"
        );
        // The thread delivers afresh afterwards.
        let l = log.clone();
        deliver(Box::new(move || l.lock().unwrap().push("e")));
        assert_eq!(log.lock().unwrap().last(), Some(&"e"));
    }
}
