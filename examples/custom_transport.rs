//! Plugging in a transport of your own.
//!
//! A transport carries envelopes — requests and responses, each with its
//! sender, receiver and correlation id — to the inbox of their receiver.
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
use ferrolog::protocol::{Envelope, Message, Request};
use ferrolog::transport::{Inbox, LocalTransport, Peer, Transport, undeliverable};
use ferrolog::{Admin, Cluster, NewTopic, ProducerRecord};

/// A message held back until `due`.
struct Delayed {
    due: Instant,
    envelope: Envelope,
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
                forward.send(message.envelope);
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
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> ferrolog::Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn send(&self, envelope: Envelope) {
        let Message::Request(request) = &envelope.message else {
            return self.inner.send(envelope); // responses go straight back
        };
        *self
            .counts
            .lock()
            .unwrap()
            .entry(request.api_name())
            .or_default() += 1;
        if let Request::Produce(_) = request {
            let failed = undeliverable(&envelope, "the delay thread is gone");
            let message = Delayed {
                due: Instant::now() + self.produce_delay,
                envelope,
            };
            // If the delay thread is gone the request cannot go: its sender
            // is told so (a retriable network error).
            if self.delayed.send(message).is_err()
                && let Some(failed) = failed
            {
                self.inner.send(failed);
            }
            return;
        }
        self.inner.send(envelope)
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
        "delivered to {} at offset {} after {:?} (the transport adds 20 ms to every Produce)",
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
