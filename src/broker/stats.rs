//! What a broker counts for its [metrics](crate::metrics): requests by
//! kind (count, errors, latency from receipt to answer) and, per partition,
//! records and bytes in and out. Recorded on the core's own state at its
//! input time; read as a snapshot by [`BrokerCore::metrics`].

use std::collections::BTreeMap;

use super::{BrokerCore, Partition};
use crate::metrics::{
    BrokerMetrics, FollowerMetrics, Histogram, PartitionMetrics, PurgatoryMetrics, RequestMetrics,
};
use crate::protocol::{Peer, ReplyTo, Request};
use crate::time::Millis;

/// One request kind's counters.
#[derive(Debug)]
struct RequestStats {
    name: &'static str,
    count: u64,
    errors: u64,
    latency_ms: Histogram,
}

/// A broker's request counters; see the [module docs](self).
#[derive(Debug, Default)]
pub(super) struct BrokerStats {
    /// By API key.
    requests: BTreeMap<i16, RequestStats>,
    /// Requests owed an answer: their API key and when they arrived.
    waiting: BTreeMap<(Peer, u64), (i16, Millis)>,
}

impl BrokerStats {
    /// A request arrived at `now`.
    pub(super) fn received(&mut self, reply: &ReplyTo, request: &Request, now: Millis) {
        let api = request.api_key();
        self.requests
            .entry(api)
            .or_insert_with(|| RequestStats {
                name: request.api_name(),
                count: 0,
                errors: 0,
                latency_ms: Histogram::new(),
            })
            .count += 1;
        if request.expects_answer() {
            self.waiting
                .insert((reply.peer, reply.correlation_id), (api, now));
        }
    }

    /// The request `reply` names was answered at `now`.
    pub(super) fn answered(&mut self, reply: &ReplyTo, failed: bool, now: Millis) {
        let Some((api, at)) = self.waiting.remove(&(reply.peer, reply.correlation_id)) else {
            return;
        };
        if let Some(stats) = self.requests.get_mut(&api) {
            stats
                .latency_ms
                .record(now.saturating_sub(at).max(0) as u64);
            stats.errors += u64::from(failed);
        }
    }

    /// Requests dropped unanswered (a crash) no longer wait.
    pub(super) fn forget_waiting(&mut self) {
        self.waiting.clear();
    }
}

/// A partition replica's traffic counters.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PartitionStats {
    pub(super) records_in: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
}

impl Partition {
    fn metrics(&self, broker: u32) -> PartitionMetrics {
        let replicas = &self.replicas;
        let log_end_offset = self.log.log_end_offset();
        let leader = replicas.leader();
        let isr = replicas.isr();
        let followers = replicas
            .follower_log_end_offsets()
            .into_iter()
            .map(|(broker, leo)| FollowerMetrics {
                broker,
                log_end_offset: leo,
                lag: log_end_offset.saturating_sub(leo),
            })
            .collect();
        PartitionMetrics {
            partition: self.tp.clone(),
            broker,
            leader,
            replicas: replicas.replicas().to_vec(),
            under_replicated: isr.len() < replicas.replicas().len(),
            isr,
            log_start_offset: self.log.log_start_offset(),
            log_end_offset,
            high_watermark: self.log.high_watermark(),
            records_in: self.stats.records_in,
            bytes_in: self.stats.bytes_in,
            bytes_out: self.stats.bytes_out,
            offline: leader.is_none(),
            followers,
        }
    }
}

impl BrokerCore {
    /// The metrics of the replica of `tp` this broker holds, if any.
    pub fn partition_metrics(&self, tp: &crate::TopicPartition) -> Option<PartitionMetrics> {
        self.partitions.get(tp).map(|p| p.metrics(self.id))
    }

    /// A snapshot of this broker's metrics (SPEC O4): requests by kind with
    /// their latency, purgatory sizes, every replica it holds (counters,
    /// offsets, ISR, followers' lag on the leader) and the groups it
    /// coordinates.
    pub fn metrics(&self) -> BrokerMetrics {
        let requests = self
            .stats
            .requests
            .values()
            .map(|s| {
                let metrics = RequestMetrics {
                    count: s.count,
                    errors: s.errors,
                    latency_ms: s.latency_ms.summary(),
                };
                (s.name, metrics)
            })
            .collect();
        let groups = self.groups.metrics();
        BrokerMetrics {
            broker: self.id,
            requests,
            purgatory: PurgatoryMetrics {
                produce: self.produces.len(),
                fetch: self.fetches.len(),
                group: self.group_waits.len(),
                heartbeat: self.held_heartbeats.len(),
            },
            partitions: self
                .partitions
                .values()
                .map(|p| p.metrics(self.id))
                .collect(),
            groups,
        }
    }
}
