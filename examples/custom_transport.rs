//! Plugging in a transport of your own.
//!
//! `CountingDelayTransport` wraps the in-process [`LocalTransport`]: it counts
//! every request by API and holds each Produce request back for a fixed delay
//! (on a thread of its own, so `send` never blocks) before passing it on —
//! the shape of a transport that simulates a slow network. The cluster and
//! its clients run on it unchanged.
//!
//! Run with `cargo run --example custom_transport`.

use std::collections::BTreeMap;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use ferrolog::client::{Producer, ProducerConfig};
use ferrolog::protocol::{NodeId, Request};
use ferrolog::transport::{LocalTransport, Peer, Reply, RequestHandler, Transport};
use ferrolog::{Admin, Cluster, NewTopic, ProducerRecord};

/// A message held back until `due`.
struct Delayed {
    due: Instant,
    from: Peer,
    to: NodeId,
    request: Request,
    reply: Reply,
}

#[derive(Debug, Clone)]
struct CountingDelayTransport {
    inner: LocalTransport,
    counts: Arc<Mutex<BTreeMap<&'static str, u64>>>,
    produce_delay: Duration,
    delayed: mpsc::Sender<Delayed>,
}

impl CountingDelayTransport {
    fn new(produce_delay: Duration) -> Self {
        let inner = LocalTransport::new();
        let (delayed, queue) = mpsc::channel::<Delayed>();
        let forward = inner.clone();
        // Messages arrive in due order (one fixed delay), so a FIFO suffices.
        thread::spawn(move || {
            for message in queue {
                if let Some(wait) = message.due.checked_duration_since(Instant::now()) {
                    thread::sleep(wait);
                }
                forward.send(message.from, message.to, message.request, message.reply);
            }
        });
        Self {
            inner,
            counts: Arc::default(),
            produce_delay,
            delayed,
        }
    }
}

impl Transport for CountingDelayTransport {
    fn register(&self, node: NodeId, handler: Arc<dyn RequestHandler>) -> ferrolog::Result<()> {
        self.inner.register(node, handler)
    }

    fn deregister(&self, node: NodeId) {
        self.inner.deregister(node)
    }

    fn send(&self, from: Peer, to: NodeId, request: Request, reply: Reply) {
        *self
            .counts
            .lock()
            .unwrap()
            .entry(request.api_name())
            .or_default() += 1;
        if let Request::Produce(_) = request {
            let message = Delayed {
                due: Instant::now() + self.produce_delay,
                from,
                to,
                request,
                reply,
            };
            // If the delay thread is gone the message (and its reply) is
            // dropped, which the client sees as a retriable network error.
            let _ = self.delayed.send(message);
            return;
        }
        self.inner.send(from, to, request, reply)
    }
}

fn main() -> ferrolog::Result<()> {
    let transport = CountingDelayTransport::new(Duration::from_millis(20));
    let cluster = Cluster::builder().transport(transport.clone()).build()?;
    Admin::new(&cluster)?.create_topic(NewTopic::new("slow", 1))?;

    let producer: Producer<String, String> = Producer::new(&cluster, ProducerConfig::default())?;
    let started = Instant::now();
    let delivered = producer
        .send(ProducerRecord::new("slow", "over a slow link".to_string()))?
        .wait()?;
    println!(
        "delivered to {} at offset {:?} after {:?} (the transport adds 20 ms to every Produce)",
        delivered.partition,
        delivered.offset,
        started.elapsed()
    );
    drop(producer);

    println!("requests seen by the transport:");
    for (api, count) in transport.counts.lock().unwrap().iter() {
        println!("  {api:<14} {count}");
    }
    cluster.shutdown()
}
