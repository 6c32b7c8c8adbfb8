//! Metadata from the controller: which replicas this broker hosts and what
//! role each one has.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::{BrokerCore, Partition};
use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{ClusterMetadata, NodeId, PartitionMetadata, TopicMetadata};
use crate::replication::{ProducerStateTable, ReplicaSet};
use crate::time::Millis;
use crate::topic::{INTERNAL_TOPIC_PREFIX, TopicPartition};

impl BrokerCore {
    /// Makes the hosted partitions match `metadata`: opens the logs of new
    /// replicas, closes and removes the logs of deleted topics (and of a
    /// topic deleted and created again under the same name, told apart by its
    /// id), and gives each replica its role: leader, or follower of whom. A
    /// log that fails to open or remove is skipped and returned with its
    /// error; the rest of the change still applies, and the next metadata
    /// retries it. Metadata older than what the broker has (by controller
    /// epoch, then version) is ignored. `Err`: the storage could not list
    /// the logs left behind by an interrupted deletion.
    pub(super) fn apply_metadata(
        &mut self,
        now: Millis,
        metadata: Arc<ClusterMetadata>,
    ) -> Result<Vec<(TopicPartition, Error)>> {
        let current = (self.metadata.controller_epoch, self.metadata.version);
        if (metadata.controller_epoch, metadata.version) <= current {
            return Ok(Vec::new());
        }
        let first = self.metadata.version == 0;
        let mut wanted: BTreeMap<TopicPartition, (&PartitionMetadata, &TopicMetadata)> =
            BTreeMap::new();
        for topic in metadata.topics.values() {
            for p in &topic.partitions {
                if p.replicas.contains(&self.id) {
                    let tp = TopicPartition::from_shared(topic.name.clone(), p.partition);
                    wanted.insert(tp, (p, topic));
                }
            }
        }
        let mut failed = Vec::new();
        let mut listing_error = None;
        // Replaced incarnations go first, so their files are gone before the
        // new topic's log is opened at the same place.
        let stale: Vec<TopicPartition> = self
            .partitions
            .iter()
            .filter(|(tp, p)| wanted.get(*tp).is_none_or(|(_, t)| t.id != p.topic_id))
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in stale {
            if let Some(partition) = self.partitions.remove(&tp) {
                self.moved.insert(tp.clone());
                let removed = partition
                    .log
                    .close()
                    .and_then(|()| self.storage.remove(&tp, self.id));
                if let Err(e) = removed {
                    failed.push((tp, e));
                }
            }
        }
        let brokers = &metadata.brokers;
        let fenced = |p: &PartitionMetadata| -> Vec<NodeId> {
            let live = |r: &NodeId| brokers.iter().any(|b| b.id == *r);
            p.replicas.iter().copied().filter(|r| !live(r)).collect()
        };
        for (tp, (p, topic)) in &wanted {
            if let Some(existing) = self.partitions.get_mut(tp) {
                if assign_role(existing, self.id, p, now) {
                    self.moved.insert(tp.clone());
                }
                existing.replicas.set_fenced(fenced(p));
                continue;
            }
            match self.open_partition(tp, p, topic) {
                Ok(mut partition) => {
                    // Without its producers' state the replica still serves;
                    // duplicate checks start from what it copies next.
                    if let Err(e) = partition.rebuild_producers() {
                        failed.push((tp.clone(), e));
                    }
                    assign_role(&mut partition, self.id, p, now);
                    partition.replicas.set_fenced(fenced(p));
                    self.partitions.insert(tp.clone(), partition);
                    self.moved.insert(tp.clone());
                }
                Err(e) => failed.push((tp.clone(), e)),
            }
        }
        // A log left behind by a deletion that a crash interrupted. Only
        // trusted when the metadata has history: a lost metadata log must not
        // make the broker delete data it merely cannot name.
        if first && metadata.version > 2 {
            match self.storage.partitions(self.id) {
                Ok(on_disk) => {
                    for tp in on_disk {
                        if !tp.topic().starts_with(INTERNAL_TOPIC_PREFIX)
                            && !wanted.contains_key(&tp)
                            && let Err(e) = self.storage.remove(&tp, self.id)
                        {
                            failed.push((tp, e));
                        }
                    }
                }
                Err(e) => listing_error = Some(e),
            }
        }
        drop(wanted);
        self.follower.roles_changed();
        self.metadata = metadata;
        listing_error.map_or(Ok(failed), Err)
    }

    /// Opens the log of a replica new to this broker.
    fn open_partition(
        &self,
        tp: &TopicPartition,
        p: &PartitionMetadata,
        topic: &TopicMetadata,
    ) -> Result<Partition> {
        let mut config = topic.config.clone();
        config.flush_messages = config
            .flush_messages
            .or(self.config.log_flush_interval_messages);
        config.flush_ms = config
            .flush_ms
            .or(self.config.log_flush_interval_ms.map(|ms| ms as Millis));
        let log = self.storage.open(tp, self.id, &config)?;
        let replicas = ReplicaSet::new(
            tp.clone(),
            self.id,
            p.replicas.clone(),
            usize::from(topic.config.min_insync_replicas),
            self.config.replica_lag_time_max_ms as Millis,
            log.high_watermark(),
        );
        Ok(Partition {
            tp: tp.clone(),
            topic_id: topic.id,
            compacted: topic.config.cleanup_policy.compacts(),
            log,
            replicas,
            producers: ProducerStateTable::new(),
            stats: Default::default(),
        })
    }
}

/// Gives a replica on broker `id` the role `p` says. Returns whether
/// anything changed.
fn assign_role(partition: &mut Partition, id: u32, p: &PartitionMetadata, now: Millis) -> bool {
    let r = &partition.replicas;
    let lead = p.leader == Some(id);
    let new_epoch = p.leader_epoch > r.leader_epoch() || (lead != r.is_leader());
    if !new_epoch && p.partition_epoch <= r.partition_epoch() {
        return false;
    }
    let end = partition.log.log_end_offset();
    if new_epoch && lead {
        let update = partition.replicas.become_leader(
            p.leader_epoch,
            p.partition_epoch,
            p.replicas.clone(),
            p.isr.clone(),
            end,
            now,
        );
        partition.apply(&update);
    } else if new_epoch {
        if planted(PlantedBug::TruncateToHighWatermark) {
            let hw = partition.log.high_watermark();
            if hw < end && partition.log.truncate_to(hw).is_ok() {
                let _ = partition.rebuild_producers();
            }
        }
        partition.replicas.become_follower(
            p.leader,
            p.leader_epoch,
            p.partition_epoch,
            p.replicas.clone(),
            p.isr.clone(),
        );
    } else {
        partition.replicas.reassigned(p.replicas.clone());
        let update = partition
            .replicas
            .isr_committed(p.isr.clone(), p.partition_epoch, end);
        partition.apply(&update);
    }
    true
}
