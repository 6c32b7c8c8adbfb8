//! The controller as a node of its own: it answers admin requests, broker
//! heartbeats and ISR changes, runs the liveness clock, and publishes every
//! new [`ClusterMetadata`] to the live brokers.
//!
//! Like KRaft's controllers it is separate from the brokers, so a broker can
//! crash and restart without taking the metadata with it. Its state machine
//! ([`Controller`]) never talks to anyone; this node does the talking, never
//! while holding the state lock.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

use super::Controller;
use crate::error::{Error, Result};
use crate::protocol::{
    BrokerHeartbeatRequest, CONTROLLER_ID, ClusterMetadata, MetadataRequest, MetadataResponse,
    NodeId, Request, Response, TopicResults, UpdateMetadataRequest,
};
use crate::time::{Clock, Millis};
use crate::transport::{Peer, Reply, RequestHandler, Transport};

/// The controller node and its liveness thread.
#[derive(Debug)]
pub(crate) struct ControllerNode {
    shared: Arc<ControllerShared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

#[derive(Debug)]
struct ControllerShared {
    transport: Arc<dyn Transport>,
    clock: Arc<dyn Clock>,
    state: Mutex<Option<Controller>>,
    stop: Mutex<bool>,
    wake: Condvar,
    tick_ms: Millis,
}

impl ControllerNode {
    /// Registers `controller` as [`CONTROLLER_ID`] and starts its liveness
    /// thread, which checks sessions every `tick_ms`.
    pub(crate) fn start(
        controller: Controller,
        transport: Arc<dyn Transport>,
        clock: Arc<dyn Clock>,
        tick_ms: Millis,
    ) -> Result<Self> {
        let shared = Arc::new(ControllerShared {
            transport: transport.clone(),
            clock,
            state: Mutex::new(Some(controller)),
            stop: Mutex::new(false),
            wake: Condvar::new(),
            tick_ms: tick_ms.max(1),
        });
        transport.register(CONTROLLER_ID, shared.clone())?;
        let runner = shared.clone();
        let thread = std::thread::Builder::new()
            .name("ferrolog-controller".into())
            .spawn(move || runner.run())
            .map_err(|e| Error::io("spawning the controller thread", e))?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// The current metadata.
    pub(crate) fn metadata(&self) -> Option<Arc<ClusterMetadata>> {
        self.shared.state.lock().as_ref().map(Controller::metadata)
    }

    fn stop(&self) -> Option<Controller> {
        self.shared.transport.deregister(CONTROLLER_ID);
        *self.shared.stop.lock() = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.lock().take() {
            let _ = thread.join();
        }
        self.shared.state.lock().take()
    }

    /// Stops the node and closes the metadata log.
    pub(crate) fn shutdown(&self) -> Result<()> {
        self.stop().map_or(Ok(()), Controller::close)
    }

    /// Stops the node at once; the metadata log is dropped, not closed.
    pub(crate) fn crash(&self) {
        drop(self.stop());
    }
}

impl Drop for ControllerNode {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

impl RequestHandler for ControllerShared {
    fn handle(&self, from: Peer, request: Request, reply: Reply) {
        let now = self.clock.now_ms();
        let mut guard = self.state.lock();
        let Some(controller) = guard.as_mut() else {
            drop(guard);
            reply.send(Err(Error::NotController {
                broker: CONTROLLER_ID,
            }));
            return;
        };
        let before = controller.metadata();
        let (response, push_to) = match request {
            Request::Metadata(MetadataRequest { topics }) => {
                let m = &before;
                let topics = m
                    .topics
                    .values()
                    .filter(|t| {
                        topics
                            .as_ref()
                            .is_none_or(|names| names.iter().any(|n| **n == *t.name))
                    })
                    .map(|t| (**t).clone())
                    .collect();
                let response = MetadataResponse {
                    version: m.version,
                    controller: m.controller,
                    brokers: m.brokers.clone(),
                    topics,
                };
                (Ok(Response::Metadata(response)), None)
            }
            Request::CreateTopics(r) => (
                Ok(Response::CreateTopics(TopicResults {
                    topics: controller.create_topics_as(
                        r.topics,
                        matches!(from, Peer::Broker(_)),
                        now,
                    ),
                })),
                None,
            ),
            Request::DeleteTopics(r) => (
                Ok(Response::DeleteTopics(TopicResults {
                    topics: controller.delete_topics(r.topics, now),
                })),
                None,
            ),
            Request::CreatePartitions(r) => (
                Ok(Response::CreatePartitions(TopicResults {
                    topics: controller.create_partitions(r.topics, now),
                })),
                None,
            ),
            Request::BrokerHeartbeat(BrokerHeartbeatRequest {
                broker,
                metadata_version,
            }) => match controller.heartbeat(broker, now) {
                Ok(_) => {
                    let m = controller.metadata();
                    let behind = metadata_version < (m.controller_epoch, m.version);
                    (
                        Ok(Response::BrokerHeartbeat(m.version)),
                        behind.then_some(broker),
                    )
                }
                Err(e) => (Err(e), None),
            },
            Request::AlterPartition(r) => (
                Ok(Response::AlterPartition(
                    controller.alter_partition(&r.proposal, now),
                )),
                None,
            ),
            Request::InitProducerId => (
                Ok(Response::InitProducerId(
                    controller.allocate_producer_id(now),
                )),
                None,
            ),
            Request::AlterPartitionReassignments(r) => (
                Ok(Response::AlterPartitionReassignments(
                    controller.reassign(r.partitions, now),
                )),
                None,
            ),
            Request::RegisterBroker(info) => (
                Ok(Response::RegisterBroker(
                    controller.register_broker(info, now),
                )),
                None,
            ),
            other => (
                Err(Error::InvalidRequest {
                    reason: format!("the controller does not serve {}", other.api_name()),
                }),
                None,
            ),
        };
        let after = controller.metadata();
        drop(guard);
        if after.version != before.version || after.controller_epoch != before.controller_epoch {
            self.publish(after, Some((reply, response)));
        } else {
            if let Some(broker) = push_to {
                self.push(&after, broker, None);
            }
            reply.send(response);
        }
    }
}

type Pending = Arc<Mutex<(usize, Option<(Reply, Result<Response>)>)>>;

impl ControllerShared {
    /// Sends `metadata` to every live broker; then answers `then`, if given.
    fn publish(&self, metadata: Arc<ClusterMetadata>, then: Option<(Reply, Result<Response>)>) {
        let pending: Pending = Arc::new(Mutex::new((metadata.brokers.len(), then)));
        if metadata.brokers.is_empty() {
            finish(&pending, true);
            return;
        }
        for broker in &metadata.brokers {
            self.push(&metadata, broker.id, Some(pending.clone()));
        }
    }

    fn push(&self, metadata: &Arc<ClusterMetadata>, broker: NodeId, pending: Option<Pending>) {
        self.transport.send(
            Peer::Broker(CONTROLLER_ID),
            broker,
            Request::UpdateMetadata(UpdateMetadataRequest {
                metadata: metadata.clone(),
            }),
            Reply::new(broker, move |_| {
                if let Some(pending) = pending {
                    finish(&pending, false);
                }
            }),
        );
    }

    /// The liveness thread: fences silent brokers and publishes the result.
    fn run(&self) {
        loop {
            {
                let mut stop = self.stop.lock();
                if *stop {
                    return;
                }
                self.wake
                    .wait_for(&mut stop, Duration::from_millis(self.tick_ms as u64));
                if *stop {
                    return;
                }
            }
            let now = self.clock.now_ms();
            let changed = {
                let mut guard = self.state.lock();
                match guard.as_mut().map(|c| c.tick(now)) {
                    Some(Ok(true)) => guard.as_ref().map(Controller::metadata),
                    _ => None,
                }
            };
            if let Some(metadata) = changed {
                self.publish(metadata, None);
            }
        }
    }
}

/// Counts one broker's answer; the last one releases the reply.
fn finish(pending: &Pending, all: bool) {
    let done = {
        let mut p = pending.lock();
        if !all {
            p.0 = p.0.saturating_sub(1);
        }
        if p.0 == 0 || all { p.1.take() } else { None }
    };
    if let Some((reply, response)) = done {
        reply.send(response);
    }
}
