//! [`FaultyTransport`]: a wrapper that loses, delays, duplicates and
//! reorders messages, and cuts the network, for tests.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashSet};
use std::fmt;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use super::{Inbox, Peer, Transport, undeliverable};
use crate::error::{Error, Result};
use crate::protocol::{Envelope, Message, NodeId};

/// What a [`FaultyTransport`] has done so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Requests handed on.
    pub delivered: u64,
    /// Requests lost before reaching their node (the sender is told the
    /// network failed, as a broken connection tells it).
    pub dropped_requests: u64,
    /// Responses lost after the node handled the request (the sender sees a
    /// network error although the request took effect).
    pub dropped_responses: u64,
    /// Requests delivered a second time (the sender keeps the first answer
    /// and ignores the second).
    pub duplicated: u64,
    /// Requests held back before delivery.
    pub delayed: u64,
    /// Requests and responses refused because the network was cut between
    /// the two sides (the requester is told the network failed).
    pub cut: u64,
}

impl FaultStats {
    /// Faults injected: everything but plain deliveries.
    pub fn faults(&self) -> u64 {
        self.dropped_requests + self.dropped_responses + self.duplicated + self.delayed + self.cut
    }
}

#[derive(Debug, Default)]
struct Faults {
    rng: u64,
    drop_request: f64,
    drop_response: f64,
    duplicate: f64,
    delay: Option<(Duration, Duration)>,
    isolated: HashSet<NodeId>,
    groups: Vec<HashSet<NodeId>>,
    stats: FaultStats,
}

impl Faults {
    /// xorshift64*: small, seedable, good enough to pick faults.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn chance(&mut self, p: f64) -> bool {
        p > 0.0 && ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// Whether an answer from node `from` back to `to` is cut now.
    fn cut_back(&self, from: NodeId, to: Peer) -> bool {
        match to {
            Peer::Broker(node) => self.cut(Peer::Broker(from), node),
            Peer::Client(_) => self.isolated.contains(&from),
        }
    }

    /// Whether a request from `from` to node `to` is cut now.
    fn cut(&self, from: Peer, to: NodeId) -> bool {
        if self.isolated.contains(&to) {
            return true;
        }
        let Peer::Broker(from) = from else {
            return false;
        };
        if self.isolated.contains(&from) {
            return true;
        }
        let group = |n: NodeId| self.groups.iter().position(|g| g.contains(&n));
        match (group(from), group(to)) {
            (Some(a), Some(b)) => a != b,
            _ => false,
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    envelope: Envelope,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}

impl Eq for Delayed {}

impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// Wraps another transport and injects faults: lost requests, lost
/// responses, duplicates, random delays (which also reorder messages), an
/// isolated broker, and the cluster split into groups that cannot reach each
/// other. Clients reach every broker that is not isolated. Faults are drawn
/// from a seeded generator, so a seed replays the same choices for the same
/// sequence of messages. Clones share the same faults.
///
/// ```
/// use ferrolog::transport::{FaultyTransport, LocalTransport};
/// use ferrolog::{Admin, Cluster, NewTopic};
///
/// let faulty = FaultyTransport::new(LocalTransport::new(), 7);
/// let cluster = Cluster::builder().brokers(2).transport(faulty.clone()).build()?;
/// faulty.isolate(1); // broker 1 reaches nobody and nobody reaches it
/// Admin::new(&cluster)?.create_topic(NewTopic::new("t", 1))?;
/// assert!(faulty.stats().cut > 0); // the controller's update to broker 1 was cut
/// faulty.heal();
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Clone)]
pub struct FaultyTransport {
    inner: Arc<dyn Transport>,
    faults: Arc<Mutex<Faults>>,
    delayed: Arc<Mutex<Option<mpsc::Sender<Delayed>>>>,
}

impl fmt::Debug for FaultyTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyTransport")
            .field("inner", &self.inner)
            .field("stats", &self.stats())
            .finish()
    }
}

impl FaultyTransport {
    /// Wraps `inner`; no fault is injected until one is configured.
    pub fn new(inner: impl Transport + 'static, seed: u64) -> Self {
        Self {
            inner: Arc::new(inner),
            faults: Arc::new(Mutex::new(Faults {
                rng: splitmix64(seed).max(1),
                ..Faults::default()
            })),
            delayed: Arc::default(),
        }
    }

    fn faults(&self) -> std::sync::MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Loses each request with probability `p` (clamped to 0..=1).
    pub fn drop_requests(&self, p: f64) {
        self.faults().drop_request = p.clamp(0.0, 1.0);
    }

    /// Loses each response with probability `p`: the request took effect
    /// but its sender is told the network failed.
    pub fn drop_responses(&self, p: f64) {
        self.faults().drop_response = p.clamp(0.0, 1.0);
    }

    /// Delivers each request twice with probability `p`.
    pub fn duplicate_requests(&self, p: f64) {
        self.faults().duplicate = p.clamp(0.0, 1.0);
    }

    /// Holds each request back for a random time in `min..=max` before
    /// delivering it (messages overtake each other); `None` stops delaying.
    pub fn delay(&self, range: Option<(Duration, Duration)>) {
        self.faults().delay = range.map(|(a, b)| (a.min(b), a.max(b)));
    }

    /// Cuts `node` off from everyone, clients included.
    pub fn isolate(&self, node: NodeId) {
        self.faults().isolated.insert(node);
    }

    /// Splits nodes into groups that only reach their own members. A node in
    /// no group (say, the controller, unless listed) reaches everyone, and
    /// clients still reach every node.
    pub fn partition(&self, groups: &[&[NodeId]]) {
        self.faults().groups = groups.iter().map(|g| g.iter().copied().collect()).collect();
    }

    /// Ends every fault: no loss, duplicate, delay, isolation or partition.
    /// Messages already held back are still delivered when due.
    pub fn heal(&self) {
        let mut faults = self.faults();
        faults.drop_request = 0.0;
        faults.drop_response = 0.0;
        faults.duplicate = 0.0;
        faults.delay = None;
        faults.isolated.clear();
        faults.groups.clear();
    }

    /// What was injected so far.
    pub fn stats(&self) -> FaultStats {
        self.faults().stats
    }

    fn hold(&self, message: Delayed) {
        let mut sender = self.delayed.lock().unwrap_or_else(PoisonError::into_inner);
        let sender = sender.get_or_insert_with(|| {
            let (tx, rx) = mpsc::channel();
            let inner = self.inner.clone();
            thread::Builder::new()
                .name("ferrolog-faulty-transport".into())
                .spawn(move || deliver_when_due(inner, rx))
                .map(|_| tx)
                .unwrap_or_else(|_| mpsc::channel().0)
        });
        // If the delivery thread is gone the message is lost, which its
        // reply reports as a network error.
        let _ = sender.send(message);
    }
}

/// Spreads a seed over all 64 bits (xorshift needs a non-zero state, and
/// nearby seeds should not give nearby sequences).
fn splitmix64(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The delay thread: delivers held messages in due order; ends when every
/// handle to the transport is gone (what is still held is then lost).
fn deliver_when_due(inner: Arc<dyn Transport>, incoming: mpsc::Receiver<Delayed>) {
    let mut held: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let now = Instant::now();
        while held.peek().is_some_and(|Reverse(m)| m.due <= now) {
            if let Some(Reverse(m)) = held.pop() {
                inner.send(m.envelope);
            }
        }
        let next = match held.peek() {
            Some(Reverse(m)) => incoming.recv_timeout(m.due.saturating_duration_since(now)),
            None => incoming
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok(message) => held.push(Reverse(message)),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl FaultyTransport {
    /// Tells the requester of `envelope` (a request, or the answer to one)
    /// that the network failed: what a broken connection tells it.
    fn fail(&self, envelope: &Envelope, reason: &str) {
        let failure = match &envelope.message {
            Message::Request(_) => undeliverable(envelope, reason),
            Message::Response(_) => Some(Envelope {
                from: envelope.from,
                to: envelope.to,
                correlation_id: envelope.correlation_id,
                message: Message::Response(Err(Error::Network {
                    node: super::node_of(envelope.from),
                    reason: reason.to_string(),
                })),
            }),
        };
        if let Some(failure) = failure {
            self.inner.send(failure);
        }
    }

    fn send_response(&self, envelope: Envelope) {
        let Peer::Broker(from) = envelope.from else {
            return self.inner.send(envelope);
        };
        let failure = {
            let mut f = self.faults();
            if f.cut_back(from, envelope.to) {
                f.stats.cut += 1;
                Some("the network is cut")
            } else {
                let p = f.drop_response;
                if f.chance(p) {
                    f.stats.dropped_responses += 1;
                    Some("the response was lost")
                } else {
                    None
                }
            }
        };
        match failure {
            Some(reason) => self.fail(&envelope, reason),
            None => self.inner.send(envelope),
        }
    }
}

impl Transport for FaultyTransport {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn client_peer(&self) -> Peer {
        self.inner.client_peer()
    }

    fn send(&self, envelope: Envelope) {
        if matches!(envelope.message, Message::Response(_)) {
            return self.send_response(envelope);
        }
        let Peer::Broker(to) = envelope.to else {
            return self.inner.send(envelope);
        };
        let (lose, twice, delay) = {
            let mut f = self.faults();
            if f.cut(envelope.from, to) {
                f.stats.cut += 1;
                drop(f);
                return self.fail(&envelope, "the network is cut");
            }
            let (drop_request, duplicate) = (f.drop_request, f.duplicate);
            let lose = f.chance(drop_request);
            let twice = !lose && f.chance(duplicate);
            let delay = match f.delay {
                Some((min, max)) if !lose => {
                    let span = (max - min).as_micros() as u64;
                    let extra = if span == 0 { 0 } else { f.next() % (span + 1) };
                    Some(min + Duration::from_micros(extra))
                }
                _ => None,
            };
            let stats = &mut f.stats;
            stats.dropped_requests += u64::from(lose);
            stats.duplicated += u64::from(twice);
            stats.delayed += u64::from(delay.is_some());
            stats.delivered += u64::from(!lose);
            (lose, twice, delay)
        };
        if lose {
            return self.fail(&envelope, "the request was lost");
        }
        if twice {
            self.inner.send(envelope.clone());
        }
        match delay {
            Some(delay) => {
                let seq = self.faults().next();
                self.hold(Delayed {
                    due: Instant::now() + delay,
                    seq,
                    envelope,
                });
            }
            None => self.inner.send(envelope),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{MetadataRequest, Request, Response};
    use crate::transport::{Endpoint, LocalTransport, PendingAnswer};
    use std::sync::atomic::{AtomicU64, Ordering};

    /// A node that answers every request and counts them.
    struct Counter {
        transport: Mutex<Option<Arc<dyn Transport>>>,
        seen: AtomicU64,
    }

    impl Inbox for Counter {
        fn deliver(&self, envelope: Envelope) {
            self.seen.fetch_add(1, Ordering::SeqCst);
            let transport = self.transport.lock().unwrap().clone();
            if let Some(transport) = transport {
                transport.send(envelope.reply(Ok(Response::UpdateMetadata(Vec::new()))));
            }
        }
    }

    fn setup(seed: u64) -> (Arc<FaultyTransport>, Arc<Counter>) {
        let faulty = Arc::new(FaultyTransport::new(LocalTransport::new(), seed));
        let counter = Arc::new(Counter {
            transport: Mutex::new(Some(faulty.clone())),
            seen: AtomicU64::new(0),
        });
        faulty.register(Peer::Broker(0), counter.clone()).unwrap();
        faulty.register(Peer::Broker(1), counter.clone()).unwrap();
        (faulty, counter)
    }

    fn ask(endpoint: &Endpoint, to: NodeId) -> PendingAnswer {
        endpoint.send(to, Request::Metadata(MetadataRequest::default()))
    }

    fn answer(pending: PendingAnswer) -> Result<Response> {
        pending.wait_timeout(Duration::from_secs(5)).unwrap()
    }

    /// A peer that sends as node `id` (registered as a client, so the
    /// answers reach it).
    fn node_peer(t: &Arc<FaultyTransport>, id: NodeId, to: NodeId) -> PendingAnswer {
        struct Back(std::sync::Mutex<Option<PendingAnswerSlot>>);
        type PendingAnswerSlot = std::sync::mpsc::Sender<Result<Response>>;
        impl Inbox for Back {
            fn deliver(&self, envelope: Envelope) {
                if let (Message::Response(r), Some(tx)) =
                    (envelope.message, self.0.lock().unwrap().take())
                {
                    let _ = tx.send(r);
                }
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        let me = Peer::Broker(1000 + id);
        let _ = t.register(me, Arc::new(Back(std::sync::Mutex::new(Some(tx)))));
        t.send(Envelope::request(
            me,
            Peer::Broker(to),
            1,
            Request::Metadata(MetadataRequest::default()),
        ));
        let slot = Arc::new((parking_lot::Mutex::new(None), parking_lot::Condvar::new()));
        *slot.0.lock() = rx.recv_timeout(Duration::from_secs(5)).ok();
        t.deregister(me);
        PendingAnswer { slot }
    }

    #[test]
    fn lost_requests_and_lost_responses_differ_in_whether_the_node_saw_them() {
        let (t, counter) = setup(1);
        let client = Endpoint::new(t.clone()).unwrap();
        t.drop_requests(1.0);
        let r = answer(ask(&client, 0));
        assert!(matches!(r, Err(Error::Network { .. })));
        assert_eq!(counter.seen.load(Ordering::SeqCst), 0);
        t.heal();
        t.drop_responses(1.0);
        let r = answer(ask(&client, 0));
        assert!(matches!(r, Err(Error::Network { .. })));
        assert_eq!(
            counter.seen.load(Ordering::SeqCst),
            1,
            "handled, answer lost"
        );
        assert_eq!(
            (t.stats().dropped_requests, t.stats().dropped_responses),
            (1, 1)
        );
    }

    #[test]
    fn partitions_cut_nodes_apart_but_not_clients() {
        let (t, _) = setup(2);
        let client = Endpoint::new(t.clone()).unwrap();
        t.partition(&[&[0, 1000], &[1, 1001]]);
        let r = node_peer(&t, 0, 1).try_take().unwrap();
        assert!(r.is_err(), "0 cannot reach 1");
        let r = node_peer(&t, 1, 1).try_take().unwrap();
        assert!(r.is_ok(), "a group reaches itself");
        assert!(answer(ask(&client, 1)).is_ok());
        t.isolate(1);
        assert!(answer(ask(&client, 1)).is_err());
        t.heal();
        assert!(node_peer(&t, 0, 1).try_take().unwrap().is_ok());
        assert_eq!(t.stats().cut, 2);
    }

    #[test]
    fn duplicates_are_delivered_twice_and_delays_reorder() {
        let (t, counter) = setup(3);
        let client = Endpoint::new(t.clone()).unwrap();
        t.duplicate_requests(1.0);
        assert!(answer(ask(&client, 0)).is_ok());
        assert_eq!(counter.seen.load(Ordering::SeqCst), 2);
        t.heal();
        t.delay(Some((Duration::from_millis(1), Duration::from_millis(30))));
        let answers: Vec<_> = (0..20).map(|_| ask(&client, 0)).collect();
        for pending in answers {
            assert!(answer(pending).is_ok());
        }
        assert_eq!(t.stats().delayed, 20);
    }

    #[test]
    fn the_same_seed_makes_the_same_choices() {
        let run = |seed| {
            let (t, _) = setup(seed);
            let client = Endpoint::new(t.clone()).unwrap();
            t.drop_requests(0.5);
            (0..64)
                .map(|_| answer(ask(&client, 0)).is_ok())
                .collect::<Vec<_>>()
        };
        assert_eq!(run(42), run(42));
        assert_ne!(run(42), run(43));
    }
}
