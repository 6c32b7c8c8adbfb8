//! The checks that look inside the brokers as the run goes: every replica
//! agrees with every other below its high watermark, and no leader's high
//! watermark goes back within its leader epoch.

use std::collections::BTreeMap;

use bytes::Bytes;

use super::{AnomalyKind, Node, World};
use crate::protocol::{NodeId, Peer};

/// What the replica checks keep.
#[derive(Debug, Default)]
pub(super) struct ReplicaChecks {
    /// Per (broker, partition): the highest high watermark seen, up to
    /// which the replica was checked.
    seen: BTreeMap<(NodeId, u32), u64>,
    /// Per (broker, partition) that leads: its leader epoch and high
    /// watermark when last seen.
    leading: BTreeMap<(NodeId, u32), (i32, u64)>,
    /// The record each offset below some replica's high watermark holds:
    /// (partition, offset) → (value, the broker that had it first).
    committed: BTreeMap<(u32, u64), (Option<Bytes>, NodeId)>,
}

impl World {
    /// Reads what each running broker's replicas hold below their high
    /// watermarks since the last look, and compares.
    pub(super) fn check_replicas(&mut self) {
        let mut found = Vec::new();
        for id in 0..self.brokers {
            let Some(Node::Broker(broker)) = self.nodes.get(&Peer::Broker(id)) else {
                continue;
            };
            for p in 0..self.partitions {
                let tp = self.topics.tp(p);
                let seen = self.replica_checks.seen.get(&(id, p)).copied();
                let Some((hw, leading, records)) = broker.replica_records(&tp, seen.unwrap_or(0))
                else {
                    continue;
                };
                // A leader's high watermark only grows within its epoch (a
                // follower takes its leader's, which after a change of
                // leader may be lower for a while, as in Kafka).
                if let (Some(epoch), Some(&(before_epoch, before))) =
                    (leading, self.replica_checks.leading.get(&(id, p)))
                    && epoch == before_epoch
                    && hw < before
                {
                    found.push((
                        AnomalyKind::HighWatermarkBackwards,
                        format!(
                            "broker {id} partition {p}, leader in epoch {epoch}: high \
                             watermark {before}, then {hw}"
                        ),
                    ));
                }
                match leading {
                    Some(epoch) => {
                        self.replica_checks.leading.insert((id, p), (epoch, hw));
                    }
                    None => {
                        self.replica_checks.leading.remove(&(id, p));
                    }
                }
                self.replica_checks
                    .seen
                    .insert((id, p), hw.max(seen.unwrap_or(0)));
                for (offset, value) in records {
                    match self.replica_checks.committed.get(&(p, offset)) {
                        Some((first, by)) if *first != value => found.push((
                            AnomalyKind::ReplicasDiverge,
                            format!(
                                "partition {p} offset {offset} (below the high watermark): \
                                 broker {by} has {}, broker {id} has {}",
                                show(first),
                                show(&value)
                            ),
                        )),
                        Some(_) => {}
                        None => {
                            self.replica_checks
                                .committed
                                .insert((p, offset), (value, id));
                        }
                    }
                }
            }
        }
        for (kind, detail) in found {
            self.anomaly(kind, detail);
        }
    }

    /// Broker `id` restarts: its replicas are read again from the start,
    /// and its high watermarks may begin lower (they are checkpointed
    /// lazily).
    pub(super) fn forget_replicas(&mut self, id: NodeId) {
        self.replica_checks
            .seen
            .retain(|&(broker, _), _| broker != id);
        self.replica_checks
            .leading
            .retain(|&(broker, _), _| broker != id);
    }
}

fn show(value: &Option<Bytes>) -> String {
    match value {
        Some(v) => format!("{:?}", String::from_utf8_lossy(v)),
        None => "null".into(),
    }
}
