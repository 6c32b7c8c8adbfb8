//! The controller: the one owner of the cluster's metadata.
//!
//! This module owns the truth about topics, partitions and where their
//! replicas live. The [`Controller`] is a state machine over a metadata log:
//! every change (topic created, partitions added, topic deleted) is first
//! appended as a record to the internal partition `__cluster_metadata-0` and
//! flushed, then applied to the in-memory [`ClusterMetadata`]; at start-up the
//! log is replayed. That is KRaft's shape, with the log kept by the
//! controller's own storage; a replicated (Raft) metadata log can replace it
//! behind the same calls.
//!
//! The log sits behind the `MetadataStore` seam (`store.rs`), so a
//! replicated store can replace the in-process one.
//!
//! Snapshots bound the log: a store that has gathered enough records since
//! its last snapshot replaces them with [`snapshot_records`] — the same
//! metadata as a few image records (each broker, each topic with its
//! partitions' full state, and the counters) — so that neither the log
//! nor a replay grows with the cluster's history, only with its size.
//!
//! The controller decides; it does not talk to brokers. Its node
//! (`ControllerCore`) turns requests into its calls and publishes each new
//! [`ClusterMetadata`] to every live broker.
//!
//! Placement follows Kafka's round-robin assignment (R2): partition `p`'s first
//! replica is broker `(start + p) mod n`, followers follow with a shift that
//! grows every `n` partitions, and no broker holds two replicas of one
//! partition.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

mod node;
#[cfg(feature = "quorum")]
// Used by `node` and `sim`; `quorum` alone only builds it.
#[cfg_attr(not(any(feature = "node", feature = "sim")), allow(dead_code))]
mod quorum;
mod store;

pub use crate::protocol::CONTROLLER_ID;
pub(crate) use node::ControllerCore;
#[cfg(any(feature = "node", feature = "sim"))]
pub(crate) use node::QuorumSeat;
#[cfg(feature = "node")]
pub(crate) use store::SNAPSHOT_AFTER_RECORDS;
use store::{LogMetadataStore, MetadataStore};

use crate::error::{Error, Result};
use crate::planted::{PlantedBug, planted};
use crate::protocol::{BrokerInfo, ClusterMetadata, NodeId, PartitionMetadata, TopicMetadata};
use crate::record::murmur2;
use crate::storage::Storage;
use crate::time::Millis;
use crate::topic::{
    INTERNAL_TOPIC_PREFIX, NewTopic, TopicConfig, TopicPartition, validate_topic_name,
};

/// The internal topic holding the metadata log.
pub(crate) const METADATA_TOPIC: &str = "__cluster_metadata";

/// One tick of the controller quorum's Raft.
pub(crate) const RAFT_TICK_MS: Millis = 100;

/// Most partitions one topic may have.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 100_000;

/// One change to the metadata, as stored in the metadata log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
enum MetadataRecord {
    TopicCreated {
        name: String,
        config: TopicConfig,
        assignments: Vec<Vec<NodeId>>,
    },
    PartitionsCreated {
        name: String,
        assignments: Vec<Vec<NodeId>>,
    },
    TopicDeleted {
        name: String,
    },
    /// A partition's leader or ISR changed.
    PartitionChanged {
        name: String,
        partition: u32,
        leader: Option<NodeId>,
        leader_epoch: i32,
        isr: Vec<NodeId>,
        partition_epoch: u32,
    },
    /// A controller took over; commands of older epochs are ignored.
    ControllerElected {
        epoch: u32,
    },
    /// A producer id was handed out.
    ProducerIdAllocated {
        id: i64,
    },
    /// A broker joined the cluster.
    BrokerRegistered {
        id: NodeId,
        rack: Option<String>,
    },
    /// A partition's replicas changed (a reassignment started or finished).
    AssignmentChanged {
        name: String,
        partition: u32,
        replicas: Vec<NodeId>,
        reassigning_to: Option<Vec<NodeId>>,
        leader: Option<NodeId>,
        leader_epoch: i32,
        isr: Vec<NodeId>,
        partition_epoch: u32,
    },
    /// Where a registered broker is reached from other processes (written
    /// at its registration, and again when it comes back elsewhere).
    BrokerEndpoint {
        id: NodeId,
        endpoint: Option<String>,
    },
    /// A topic as a snapshot holds it: its id (the offset of its creation)
    /// and every partition's whole state.
    TopicImage {
        name: String,
        id: u64,
        config: TopicConfig,
        partitions: Vec<PartitionImage>,
    },
    /// The last record of a snapshot: the counters no other record carries.
    ImageEnd {
        version: u64,
        controller_epoch: u32,
        next_producer_id: i64,
    },
}

/// A partition's state as a snapshot holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct PartitionImage {
    replicas: Vec<NodeId>,
    reassigning_to: Option<Vec<NodeId>>,
    leader: Option<NodeId>,
    leader_epoch: i32,
    isr: Vec<NodeId>,
    partition_epoch: u32,
}

/// The metadata and registered brokers that `records` (with their
/// offsets) give, replayed in order over `brokers`.
fn replay(
    records: &[(u64, Bytes)],
    brokers: Vec<BrokerInfo>,
) -> Result<(ClusterMetadata, Vec<BrokerInfo>)> {
    let mut metadata = ClusterMetadata {
        version: 1,
        ..ClusterMetadata::default()
    };
    let mut registered = brokers;
    for (offset, value) in records {
        let change: MetadataRecord = postcard::from_bytes(value)
            .map_err(|e| Error::corrupt(format!("metadata record at offset {offset}: {e}")))?;
        match &change {
            MetadataRecord::BrokerRegistered { id, rack }
                if !registered.iter().any(|b: &BrokerInfo| b.id == *id) =>
            {
                registered.push(BrokerInfo {
                    id: *id,
                    rack: rack.clone(),
                    endpoint: None,
                });
            }
            MetadataRecord::BrokerEndpoint { id, endpoint } => {
                if let Some(b) = registered.iter_mut().find(|b| b.id == *id) {
                    b.endpoint = endpoint.clone();
                }
            }
            _ => {}
        }
        apply(&mut metadata, &change, *offset);
        if !matches!(change, MetadataRecord::ImageEnd { .. }) {
            metadata.version += 1;
        }
    }
    Ok((metadata, registered))
}

/// A snapshot of `records` (a metadata log's committed records, in order,
/// maybe starting with an earlier snapshot's): records that, replayed, give
/// the same metadata and registered brokers, as many as the cluster has
/// brokers and topics, plus one.
pub(crate) fn snapshot_records(records: &[(u64, Bytes)]) -> Result<Vec<Vec<u8>>> {
    let (metadata, registered) = replay(records, Vec::new())?;
    let mut image = Vec::with_capacity(registered.len() * 2 + metadata.topics.len() + 1);
    for broker in registered {
        image.push(MetadataRecord::BrokerRegistered {
            id: broker.id,
            rack: broker.rack,
        });
        if broker.endpoint.is_some() {
            image.push(MetadataRecord::BrokerEndpoint {
                id: broker.id,
                endpoint: broker.endpoint,
            });
        }
    }
    for topic in metadata.topics.values() {
        image.push(MetadataRecord::TopicImage {
            name: topic.name.to_string(),
            id: topic.id,
            config: topic.config.clone(),
            partitions: topic
                .partitions
                .iter()
                .map(|p| PartitionImage {
                    replicas: p.replicas.clone(),
                    reassigning_to: p.reassigning_to.clone(),
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    isr: p.isr.clone(),
                    partition_epoch: p.partition_epoch,
                })
                .collect(),
        });
    }
    image.push(MetadataRecord::ImageEnd {
        version: metadata.version,
        controller_epoch: metadata.controller_epoch,
        next_producer_id: metadata.next_producer_id,
    });
    image.iter().map(encode_record).collect()
}

fn encode_record(record: &MetadataRecord) -> Result<Vec<u8>> {
    postcard::to_allocvec(record).map_err(|e| Error::Serialization {
        reason: format!("metadata record: {e}"),
    })
}

/// The controller's state machine; see the [module docs](self).
#[derive(Debug)]
pub(crate) struct Controller {
    store: Box<dyn MetadataStore>,
    metadata: Arc<ClusterMetadata>,
    registered: Vec<BrokerInfo>,
    last_heartbeat: BTreeMap<NodeId, Millis>,
    session_timeout_ms: Millis,
}

impl Controller {
    /// Opens (or creates) the metadata log of broker `id` in `storage` and
    /// replays it.
    /// Every broker of `brokers` counts as alive until `session_timeout_ms`
    /// passes from `now` without a heartbeat from it. Loading takes a new
    /// controller epoch.
    pub(crate) fn load(
        storage: &dyn Storage,
        id: NodeId,
        brokers: Vec<BrokerInfo>,
        now: Millis,
        session_timeout_ms: Millis,
    ) -> Result<Self> {
        let store = LogMetadataStore::open(storage, id)?;
        Self::from_store(Box::new(store), id, brokers, now, session_timeout_ms)
    }

    /// A controller over `store` (its committed records replayed), with
    /// id `id`; see [`load`](Self::load). Takes a new controller epoch, by
    /// appending to the store.
    pub(crate) fn from_store(
        store: Box<dyn MetadataStore>,
        id: NodeId,
        brokers: Vec<BrokerInfo>,
        now: Millis,
        session_timeout_ms: Millis,
    ) -> Result<Self> {
        let (mut metadata, registered) = replay(&store.replay()?, brokers)?;
        metadata.controller = Some(id);
        let epoch = metadata.controller_epoch + 1;
        metadata.brokers = registered.clone();
        let mut controller = Self {
            store,
            metadata: Arc::new(metadata),
            last_heartbeat: registered.iter().map(|b| (b.id, now)).collect(),
            registered,
            session_timeout_ms,
        };
        controller.commit_all(vec![MetadataRecord::ControllerElected { epoch }], now)?;
        Ok(controller)
    }

    /// Broker `broker` is alive at `now`. A broker that was fenced comes
    /// back: leaderless partitions it can lead get it as leader. A broker
    /// that `want_shutdown` is fenced at once instead (controlled shutdown):
    /// its leaderships move to live in-sync followers and it leaves every
    /// ISR it is not the last member of, as when its session expires, but
    /// without the wait. Returns whether the metadata changed.
    pub(crate) fn heartbeat(
        &mut self,
        broker: NodeId,
        want_shutdown: bool,
        now: Millis,
    ) -> Result<bool> {
        if !self.registered.iter().any(|b| b.id == broker) {
            return Err(Error::InvalidRequest {
                reason: format!("broker {broker} is not part of this cluster"),
            });
        }
        if want_shutdown {
            return self.fence(&[broker], now);
        }
        let returned = self.last_heartbeat.insert(broker, now).is_none();
        if !returned {
            return Ok(false);
        }
        self.set_live_brokers();
        let changes = self.elections(now);
        self.commit_all(changes, now)?;
        Ok(true)
    }

    /// Fences brokers whose session expired (their partitions get new
    /// leaders from the ISR, and they leave every ISR), and moves leadership
    /// back to preferred replicas that are in sync. Returns whether the
    /// metadata changed.
    pub(crate) fn tick(&mut self, now: Millis) -> Result<bool> {
        let expired: Vec<NodeId> = self
            .last_heartbeat
            .iter()
            .filter(|&(_, &at)| now.saturating_sub(at) > self.session_timeout_ms)
            .map(|(&b, _)| b)
            .collect();
        self.fence(&expired, now)
    }

    /// Fences `brokers` (those still live) and runs the elections that
    /// calls for, or that are due anyway. Returns whether the metadata
    /// changed.
    fn fence(&mut self, brokers: &[NodeId], now: Millis) -> Result<bool> {
        let mut fenced = false;
        for b in brokers {
            if self.last_heartbeat.remove(b).is_some() {
                trace_event!(warn, broker = *b, "broker fenced");
                fenced = true;
            }
        }
        if fenced {
            self.set_live_brokers();
        }
        let changes = self.elections(now);
        let changed = fenced || !changes.is_empty();
        self.commit_all(changes, now)?;
        Ok(changed)
    }

    /// The brokers alive now.
    fn set_live_brokers(&mut self) {
        let live: Vec<BrokerInfo> = self
            .registered
            .iter()
            .filter(|b| self.last_heartbeat.contains_key(&b.id))
            .cloned()
            .collect();
        let metadata = Arc::make_mut(&mut self.metadata);
        metadata.brokers = live;
        metadata.version += 1;
    }

    fn is_live(&self, broker: NodeId) -> bool {
        self.last_heartbeat.contains_key(&broker)
    }

    /// The leader and ISR changes that liveness calls for: a dead broker
    /// leaves every ISR it is in (unless it is the last member, so the ISR
    /// still names who has every committed record); a partition without a
    /// live leader gets the first live in-sync replica (preferred order) —
    /// or, with `unclean_leader_election_enable`, any live replica; a live,
    /// in-sync preferred replica takes leadership back.
    fn elections(&self, _now: Millis) -> Vec<MetadataRecord> {
        let mut changes = Vec::new();
        for topic in self.metadata.topics.values() {
            for p in &topic.partitions {
                let live_isr: Vec<NodeId> =
                    p.isr.iter().copied().filter(|&r| self.is_live(r)).collect();
                let leader_live = p.leader.is_some_and(|l| self.is_live(l));
                let preferred = p.replicas.first().copied();
                let mut leader = p.leader;
                let mut isr = if live_isr.is_empty() {
                    p.isr.clone()
                } else {
                    live_isr.clone()
                };
                if !leader_live {
                    leader = p.replicas.iter().copied().find(|r| live_isr.contains(r));
                    if leader.is_none() && topic.config.unclean_leader_election_enable {
                        leader = p.replicas.iter().copied().find(|&r| self.is_live(r));
                        if let Some(l) = leader {
                            isr = vec![l];
                        }
                    }
                } else if preferred != p.leader && preferred.is_some_and(|r| live_isr.contains(&r))
                {
                    leader = preferred;
                }
                isr.sort_unstable();
                if let Some(target) = &p.reassigning_to
                    && target.iter().all(|r| isr.contains(r))
                {
                    // Every new replica is in sync: drop the old ones; the
                    // leader moves to the new preferred replica if it must.
                    let isr: Vec<NodeId> =
                        isr.iter().copied().filter(|r| target.contains(r)).collect();
                    let leader = match leader {
                        Some(l) if target.contains(&l) => Some(l),
                        _ => target.iter().copied().find(|r| isr.contains(r)),
                    };
                    changes.push(MetadataRecord::AssignmentChanged {
                        name: topic.name.to_string(),
                        partition: p.partition,
                        replicas: target.clone(),
                        reassigning_to: None,
                        leader,
                        leader_epoch: p.leader_epoch + 1,
                        isr,
                        partition_epoch: p.partition_epoch + 1,
                    });
                    continue;
                }
                if leader == p.leader && isr == p.isr {
                    continue;
                }
                let leader_epoch = if leader == p.leader {
                    p.leader_epoch
                } else {
                    p.leader_epoch + 1
                };
                changes.push(MetadataRecord::PartitionChanged {
                    name: topic.name.to_string(),
                    partition: p.partition,
                    leader,
                    leader_epoch,
                    isr,
                    partition_epoch: p.partition_epoch + 1,
                });
            }
        }
        changes
    }

    /// A leader's ISR change, accepted only if made in the current leader
    /// epoch against the current partition epoch (compare-and-set), keeping
    /// the leader in the ISR and dead brokers out. Returns the committed ISR
    /// and partition epoch.
    pub(crate) fn alter_partition(
        &mut self,
        proposal: &crate::replication::IsrProposal,
        now: Millis,
    ) -> Result<(Vec<NodeId>, u32)> {
        let tp = &proposal.partition;
        let p = self.existing_partition(tp)?;
        let fenced = !planted(PlantedBug::StaleLeaderEpochAccepted);
        if fenced && proposal.leader_epoch != p.leader_epoch {
            return Err(Error::FencedLeaderEpoch {
                epoch: proposal.leader_epoch,
                latest: p.leader_epoch,
            });
        }
        if fenced && proposal.partition_epoch != p.partition_epoch {
            return Err(Error::InvalidUpdateVersion {
                partition: tp.clone(),
                version: proposal.partition_epoch,
                current: p.partition_epoch,
            });
        }
        // KIP-841: a fenced broker (or one in controlled shutdown) does not
        // join the ISR; committing the proposal without it would only bump
        // the partition epoch, and the leader would propose it again.
        if let Some(&replica) = proposal
            .isr
            .iter()
            .find(|&&r| !p.isr.contains(&r) && p.replicas.contains(&r) && !self.is_live(r))
        {
            return Err(Error::IneligibleReplica {
                partition: tp.clone(),
                replica,
            });
        }
        let mut isr: Vec<NodeId> = proposal
            .isr
            .iter()
            .copied()
            .filter(|&r| p.replicas.contains(&r) && (self.is_live(r) || Some(r) == p.leader))
            .collect();
        if let Some(leader) = p.leader
            && !isr.contains(&leader)
        {
            isr.push(leader);
        }
        isr.sort_unstable();
        isr.dedup();
        let partition_epoch = p.partition_epoch + 1;
        self.commit_all(
            vec![MetadataRecord::PartitionChanged {
                name: tp.topic().to_string(),
                partition: tp.partition(),
                leader: p.leader,
                leader_epoch: p.leader_epoch,
                isr: isr.clone(),
                partition_epoch,
            }],
            now,
        )?;
        Ok((isr, partition_epoch))
    }

    /// The current metadata.
    pub(crate) fn metadata(&self) -> Arc<ClusterMetadata> {
        self.metadata.clone()
    }

    /// Creates topics; per-topic results, and whether anything changed.
    #[cfg(test)]
    pub(crate) fn create_topics(
        &mut self,
        topics: Vec<NewTopic>,
        now: Millis,
    ) -> Vec<(String, Result<()>)> {
        self.create_topics_as(topics, false, now)
    }

    /// Creates topics; `internal` allows the internal topics brokers create
    /// (`__consumer_offsets`), which clients may not.
    pub(crate) fn create_topics_as(
        &mut self,
        topics: Vec<NewTopic>,
        internal: bool,
        now: Millis,
    ) -> Vec<(String, Result<()>)> {
        topics
            .into_iter()
            .map(|topic| {
                let result = self.check_new_topic(&topic, internal).and_then(|()| {
                    let brokers = self.live_brokers();
                    let assignments = assign_replicas(
                        &topic.name,
                        &brokers,
                        0,
                        topic.partitions,
                        topic.replication_factor,
                    );
                    self.commit(
                        MetadataRecord::TopicCreated {
                            name: topic.name.clone(),
                            config: topic.config,
                            assignments,
                        },
                        now,
                    )
                });
                (topic.name, result)
            })
            .collect()
    }

    /// Deletes topics.
    pub(crate) fn delete_topics(
        &mut self,
        names: Vec<String>,
        now: Millis,
    ) -> Vec<(String, Result<()>)> {
        names
            .into_iter()
            .map(|name| {
                let result = check_user_topic(&name)
                    .and_then(|()| self.existing(&name).map(|_| ()))
                    .and_then(|()| {
                        self.commit(MetadataRecord::TopicDeleted { name: name.clone() }, now)
                    });
                (name, result)
            })
            .collect()
    }

    /// Grows topics to the given partition counts.
    pub(crate) fn create_partitions(
        &mut self,
        topics: Vec<(String, u32)>,
        now: Millis,
    ) -> Vec<(String, Result<()>)> {
        topics
            .into_iter()
            .map(|(name, total)| {
                let result = check_user_topic(&name)
                    .and_then(|()| self.existing(&name))
                    .and_then(|topic| {
                        let current = topic.partitions.len() as u32;
                        if total > MAX_PARTITIONS_PER_TOPIC {
                            return Err(Error::InvalidPartitions {
                                reason: format!(
                                    "{total} is more than the maximum of {MAX_PARTITIONS_PER_TOPIC}"
                                ),
                            });
                        }
                        if total <= current {
                            return Err(Error::InvalidPartitions {
                                reason: format!(
                                    "topic {name:?} has {current} partitions; the new count {total} must be larger"
                                ),
                            });
                        }
                        // The topic's replication factor: a partition's
                        // replicas, or those it is moving to.
                        let replication_factor = topic.partitions.first().map_or(1, |p| {
                            p.reassigning_to.as_ref().unwrap_or(&p.replicas).len()
                        });
                        let brokers = self.live_brokers();
                        // As Kafka: never fewer replicas than the topic's
                        // other partitions have.
                        if brokers.len() < replication_factor {
                            return Err(Error::InvalidReplicationFactor {
                                reason: format!(
                                    "topic {name:?} has replication factor {replication_factor}; \
                                     only {} brokers are live",
                                    brokers.len()
                                ),
                            });
                        }
                        let replication_factor = replication_factor as u16;
                        let assignments = assign_replicas(
                            &name,
                            &brokers,
                            current,
                            total - current,
                            replication_factor,
                        );
                        self.commit(
                            MetadataRecord::PartitionsCreated {
                                name: name.clone(),
                                assignments,
                            },
                            now,
                        )
                    });
                (name, result)
            })
            .collect()
    }

    /// Flushes and closes the metadata log.
    pub(crate) fn close(self) -> Result<()> {
        self.store.close()
    }

    /// Gives the metadata log back (the controller's own state, including
    /// records not committed yet, is dropped).
    pub(crate) fn into_store(self) -> Box<dyn MetadataStore> {
        self.store
    }

    /// The metadata log.
    pub(crate) fn store(&self) -> &dyn MetadataStore {
        &*self.store
    }

    /// The metadata log, to step its quorum.
    pub(crate) fn store_mut(&mut self) -> &mut dyn MetadataStore {
        &mut *self.store
    }

    /// Adds a broker to the cluster (recorded, so it stays a member across
    /// controller restarts); it counts as alive for one session. `itself`:
    /// the broker asks for itself (at every start of its process).
    pub(crate) fn register_broker(
        &mut self,
        info: BrokerInfo,
        itself: bool,
        now: Millis,
    ) -> Result<()> {
        if let Some(known) = self.registered.iter().position(|b| b.id == info.id) {
            // A broker registers itself at every start: the same rack is
            // the same broker coming back (perhaps at another address). An
            // admin registering a known id again is refused.
            let known = &self.registered[known];
            if known.rack != info.rack || !(itself || info.endpoint.is_some()) {
                return Err(Error::InvalidRequest {
                    reason: format!("broker {} is already registered", info.id),
                });
            }
            if known.endpoint != info.endpoint {
                self.commit(
                    MetadataRecord::BrokerEndpoint {
                        id: info.id,
                        endpoint: info.endpoint.clone(),
                    },
                    now,
                )?;
                if let Some(b) = self.registered.iter_mut().find(|b| b.id == info.id) {
                    b.endpoint = info.endpoint.clone();
                }
            }
            self.last_heartbeat.insert(info.id, now);
            self.set_live_brokers();
            let changes = self.elections(now);
            return self.commit_all(changes, now);
        }
        let mut records = vec![MetadataRecord::BrokerRegistered {
            id: info.id,
            rack: info.rack.clone(),
        }];
        if info.endpoint.is_some() {
            records.push(MetadataRecord::BrokerEndpoint {
                id: info.id,
                endpoint: info.endpoint.clone(),
            });
        }
        self.commit_all(records, now)?;
        self.registered.push(info.clone());
        self.last_heartbeat.insert(info.id, now);
        self.set_live_brokers();
        Ok(())
    }

    /// Starts moving partitions to new replicas: each partition's replicas
    /// become the old ones and the new ones together until every new one is
    /// in sync ([`tick`](Self::tick) then finishes the move).
    pub(crate) fn reassign(
        &mut self,
        partitions: Vec<(TopicPartition, Vec<NodeId>)>,
        now: Millis,
    ) -> Vec<(TopicPartition, Result<()>)> {
        partitions
            .into_iter()
            .map(|(tp, target)| {
                let result = self.start_reassignment(&tp, target, now);
                (tp, result)
            })
            .collect()
    }

    fn start_reassignment(
        &mut self,
        tp: &TopicPartition,
        target: Vec<NodeId>,
        now: Millis,
    ) -> Result<()> {
        let p = self.existing_partition(tp)?;
        let mut distinct = target.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if target.is_empty() || distinct.len() != target.len() {
            return Err(Error::InvalidReplicationFactor {
                reason: format!("{target:?} is not a list of distinct brokers"),
            });
        }
        if let Some(unknown) = target
            .iter()
            .find(|r| !self.registered.iter().any(|b| b.id == **r))
        {
            return Err(Error::InvalidReplicationFactor {
                reason: format!("broker {unknown} is not part of the cluster"),
            });
        }
        let mut replicas = target.clone();
        replicas.extend(p.replicas.iter().copied().filter(|r| !target.contains(r)));
        let change = MetadataRecord::AssignmentChanged {
            name: tp.topic().to_string(),
            partition: tp.partition(),
            replicas,
            reassigning_to: Some(target),
            leader: p.leader,
            leader_epoch: p.leader_epoch,
            isr: p.isr.clone(),
            partition_epoch: p.partition_epoch + 1,
        };
        self.commit(change, now)
    }

    /// Hands out a new producer id (epoch 0), recorded so that no id is
    /// given twice, even across controller restarts.
    pub(crate) fn allocate_producer_id(&mut self, now: Millis) -> Result<(i64, i16)> {
        let id = self.metadata.next_producer_id;
        self.commit(MetadataRecord::ProducerIdAllocated { id }, now)?;
        Ok((id, 0))
    }

    /// The live brokers: where new replicas go.
    fn live_brokers(&self) -> Vec<BrokerInfo> {
        self.metadata.brokers.clone()
    }

    fn existing(&self, name: &str) -> Result<Arc<TopicMetadata>> {
        self.metadata
            .topics
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
            })
    }

    fn existing_partition(&self, tp: &TopicPartition) -> Result<PartitionMetadata> {
        let topic = self.existing(tp.topic())?;
        topic
            .partitions
            .get(tp.partition() as usize)
            .cloned()
            .ok_or_else(|| Error::InvalidPartition {
                topic: tp.topic().to_string(),
                partition: tp.partition(),
                partition_count: topic.partitions.len() as u32,
            })
    }

    fn check_new_topic(&self, topic: &NewTopic, internal: bool) -> Result<()> {
        if internal && topic.name == crate::group::CONSUMER_OFFSETS_TOPIC {
            validate_topic_name(&topic.name)?;
        } else {
            check_user_topic(&topic.name)?;
        }
        if self.metadata.topics.contains_key(topic.name.as_str()) {
            return Err(Error::TopicAlreadyExists {
                topic: topic.name.clone(),
            });
        }
        if topic.partitions == 0 || topic.partitions > MAX_PARTITIONS_PER_TOPIC {
            return Err(Error::InvalidPartitions {
                reason: format!(
                    "{} is outside 1..={MAX_PARTITIONS_PER_TOPIC}",
                    topic.partitions
                ),
            });
        }
        let brokers = self.metadata.brokers.len();
        if topic.replication_factor == 0 || topic.replication_factor as usize > brokers {
            return Err(Error::InvalidReplicationFactor {
                reason: format!(
                    "replication factor {} is outside 1..={brokers} (the number of live brokers)",
                    topic.replication_factor
                ),
            });
        }
        if topic.config.min_insync_replicas > topic.replication_factor {
            return Err(Error::config(
                "min_insync_replicas",
                format!(
                    "{} is more than the replication factor {}: acks=all could never succeed",
                    topic.config.min_insync_replicas, topic.replication_factor
                ),
            ));
        }
        topic.config.validate()
    }

    /// Appends `change` to the metadata log, flushes it, then applies it.
    fn commit(&mut self, change: MetadataRecord, now: Millis) -> Result<()> {
        self.commit_all(vec![change], now)
    }

    /// Appends `changes` as one batch, flushes, then applies them in order.
    fn commit_all(&mut self, changes: Vec<MetadataRecord>, now: Millis) -> Result<()> {
        if changes.is_empty() {
            return Ok(());
        }
        let values = changes
            .iter()
            .map(encode_record)
            .collect::<Result<Vec<_>>>()?;
        let base = self.store.append(&values, now)?;
        let metadata = Arc::make_mut(&mut self.metadata);
        for (i, change) in changes.iter().enumerate() {
            trace_change(metadata, change);
            apply(metadata, change, base + i as u64);
            metadata.version += 1;
        }
        Ok(())
    }
}

/// Reports a committed change where a user would look: a partition's
/// leader elected (or lost) and its ISR changed.
#[cfg_attr(not(feature = "tracing"), allow(unused_variables))]
fn trace_change(before: &ClusterMetadata, change: &MetadataRecord) {
    let (MetadataRecord::PartitionChanged {
        name,
        partition,
        leader,
        leader_epoch,
        isr,
        ..
    }
    | MetadataRecord::AssignmentChanged {
        name,
        partition,
        leader,
        leader_epoch,
        isr,
        ..
    }) = change
    else {
        return;
    };
    let old = before
        .topics
        .get(name.as_str())
        .and_then(|t| t.partitions.get(*partition as usize));
    if old.is_none_or(|p| p.leader != *leader) {
        trace_event!(
            info,
            topic = %name,
            partition,
            leader = ?leader,
            leader_epoch,
            isr = ?isr,
            "partition leader elected"
        );
    } else if old.is_some_and(|p| p.isr != *isr) {
        trace_event!(
            info,
            topic = %name,
            partition,
            isr = ?isr,
            "partition ISR changed"
        );
    }
}

fn check_user_topic(name: &str) -> Result<()> {
    validate_topic_name(name)?;
    if name.starts_with(INTERNAL_TOPIC_PREFIX) {
        return Err(Error::InvalidTopic {
            name: name.to_string(),
            reason: "names starting with `__` are reserved for internal topics",
        });
    }
    Ok(())
}

fn partitions_from(
    first: u32,
    assignments: &[Vec<NodeId>],
) -> impl Iterator<Item = PartitionMetadata> + '_ {
    assignments
        .iter()
        .enumerate()
        .map(move |(i, replicas)| PartitionMetadata {
            partition: first + i as u32,
            leader: replicas.first().copied(),
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: replicas.clone(),
            isr: replicas.clone(),
            reassigning_to: None,
        })
}

fn apply(metadata: &mut ClusterMetadata, change: &MetadataRecord, offset: u64) {
    match change {
        MetadataRecord::TopicCreated {
            name,
            config,
            assignments,
        } => {
            let name: Arc<str> = name.as_str().into();
            let topic = TopicMetadata {
                name: name.clone(),
                id: offset,
                partitions: partitions_from(0, assignments).collect(),
                config: config.clone(),
            };
            metadata.topics.insert(name, Arc::new(topic));
        }
        MetadataRecord::PartitionsCreated { name, assignments } => {
            if let Some(topic) = metadata.topics.get_mut(name.as_str()) {
                let topic = Arc::make_mut(topic);
                let first = topic.partitions.len() as u32;
                topic.partitions.extend(partitions_from(first, assignments));
            }
        }
        MetadataRecord::TopicDeleted { name } => {
            metadata.topics.remove(name.as_str());
        }
        MetadataRecord::PartitionChanged {
            name,
            partition,
            leader,
            leader_epoch,
            isr,
            partition_epoch,
        } => {
            if let Some(p) = partition_mut(metadata, name, *partition) {
                p.leader = *leader;
                p.leader_epoch = *leader_epoch;
                p.isr = isr.clone();
                p.partition_epoch = *partition_epoch;
            }
        }
        MetadataRecord::ControllerElected { epoch } => {
            metadata.controller_epoch = *epoch;
        }
        MetadataRecord::ProducerIdAllocated { id } => {
            metadata.next_producer_id = metadata.next_producer_id.max(id + 1);
        }
        MetadataRecord::BrokerRegistered { .. } | MetadataRecord::BrokerEndpoint { .. } => {}
        MetadataRecord::TopicImage {
            name,
            id,
            config,
            partitions,
        } => {
            let name: Arc<str> = name.as_str().into();
            let partitions = partitions
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionMetadata {
                    partition: i as u32,
                    leader: p.leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    replicas: p.replicas.clone(),
                    isr: p.isr.clone(),
                    reassigning_to: p.reassigning_to.clone(),
                })
                .collect();
            let topic = TopicMetadata {
                name: name.clone(),
                id: *id,
                partitions,
                config: config.clone(),
            };
            metadata.topics.insert(name, Arc::new(topic));
        }
        MetadataRecord::ImageEnd {
            version,
            controller_epoch,
            next_producer_id,
        } => {
            metadata.version = *version;
            metadata.controller_epoch = *controller_epoch;
            metadata.next_producer_id = *next_producer_id;
        }
        MetadataRecord::AssignmentChanged {
            name,
            partition,
            replicas,
            reassigning_to,
            leader,
            leader_epoch,
            isr,
            partition_epoch,
        } => {
            if let Some(p) = partition_mut(metadata, name, *partition) {
                p.replicas = replicas.clone();
                p.reassigning_to = reassigning_to.clone();
                p.leader = *leader;
                p.leader_epoch = *leader_epoch;
                p.isr = isr.clone();
                p.partition_epoch = *partition_epoch;
            }
        }
    }
}

/// The partition `name`-`partition` in `metadata`, for a change to apply.
fn partition_mut<'a>(
    metadata: &'a mut ClusterMetadata,
    name: &str,
    partition: u32,
) -> Option<&'a mut PartitionMetadata> {
    let topic = metadata.topics.get_mut(name)?;
    Arc::make_mut(topic).partitions.get_mut(partition as usize)
}

/// Kafka's replica placement: `count` partitions numbered from
/// `first_partition`, each with `replication_factor` distinct brokers of the
/// live `brokers`. Without racks, partition `p`'s first replica is broker
/// `(start + p) mod n` and followers come after it with a shift that grows
/// every `n` partitions; when every broker has a rack, brokers are first
/// arranged alternating racks and each partition's replicas go to as many
/// different racks as there are (Kafka's rack-aware assignment). The start
/// index and initial shift come from the topic name's hash, so placement is
/// deterministic yet spread across topics.
pub(crate) fn assign_replicas(
    topic: &str,
    brokers: &[BrokerInfo],
    first_partition: u32,
    count: u32,
    replication_factor: u16,
) -> Vec<Vec<NodeId>> {
    let racks: Option<Vec<(&str, NodeId)>> = brokers
        .iter()
        .map(|b| b.rack.as_deref().map(|r| (r, b.id)))
        .collect();
    let (arranged, rack_of): (Vec<NodeId>, BTreeMap<NodeId, &str>) = match &racks {
        Some(racks) if !racks.is_empty() => (
            rack_alternated(racks),
            racks.iter().map(|&(r, b)| (b, r)).collect(),
        ),
        _ => {
            let mut ids: Vec<NodeId> = brokers.iter().map(|b| b.id).collect();
            ids.sort_unstable();
            (ids, BTreeMap::new())
        }
    };
    let n = arranged.len();
    if n == 0 {
        return Vec::new();
    }
    let rack_count = rack_of
        .values()
        .collect::<std::collections::BTreeSet<_>>()
        .len()
        .max(1);
    let seed = (murmur2(topic.as_bytes()) & 0x7fff_ffff) as usize;
    let start = seed % n;
    let mut shift = (seed / n) % n;
    let rf = (replication_factor as usize).min(n);
    let index =
        |first: usize, shift: usize, j: usize| (first + 1 + (shift + j) % (n - 1).max(1)) % n;
    (0..count)
        .map(|i| {
            let p = (first_partition + i) as usize;
            if p > 0 && p.is_multiple_of(n) {
                shift += 1;
            }
            let first = (p + start) % n;
            let mut replicas = Vec::with_capacity(rf);
            replicas.push(arranged[first]);
            if rack_of.is_empty() {
                for j in 0..rf.saturating_sub(1) {
                    replicas.push(arranged[index(first, shift, j)]);
                }
                return replicas;
            }
            let mut racks_used: Vec<&str> = vec![rack_of[&arranged[first]]];
            let mut k = 0;
            while replicas.len() < rf && k < n * n {
                let broker = arranged[index(first, shift * rack_count, k)];
                let rack = rack_of[&broker];
                k += 1;
                // Skip a broker whose rack already has a replica while some
                // rack has none, and a broker that already has one.
                let rack_ok = !racks_used.contains(&rack) || racks_used.len() == rack_count;
                if rack_ok && !replicas.contains(&broker) {
                    replicas.push(broker);
                    if !racks_used.contains(&rack) {
                        racks_used.push(rack);
                    }
                }
            }
            replicas
        })
        .collect()
}

/// Brokers ordered so consecutive ones are on different racks: the first
/// broker of each rack (racks sorted), then the second of each, and so on.
fn rack_alternated(racks: &[(&str, NodeId)]) -> Vec<NodeId> {
    let mut by_rack: BTreeMap<&str, Vec<NodeId>> = BTreeMap::new();
    for &(rack, broker) in racks {
        by_rack.entry(rack).or_default().push(broker);
    }
    for brokers in by_rack.values_mut() {
        brokers.sort_unstable();
    }
    let deepest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    (0..deepest)
        .flat_map(|i| by_rack.values().filter_map(move |b| b.get(i).copied()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemoryStorage;

    fn brokers(n: u32) -> Vec<BrokerInfo> {
        (0..n)
            .map(|id| BrokerInfo {
                id,
                rack: None,
                endpoint: None,
            })
            .collect()
    }

    #[test]
    fn placement_spreads_leaders_and_never_repeats_a_broker() {
        for rf in 1..=5u16 {
            let a = assign_replicas("orders", &brokers(5), 0, 20, rf);
            let mut leaders = [0usize; 5];
            for replicas in &a {
                assert_eq!(replicas.len(), rf as usize);
                let mut sorted = replicas.clone();
                sorted.sort_unstable();
                sorted.dedup();
                assert_eq!(sorted.len(), rf as usize, "{replicas:?}");
                leaders[replicas[0] as usize] += 1;
            }
            assert!(leaders.iter().all(|&l| l == 4), "{leaders:?}");
        }
    }

    #[test]
    fn with_racks_every_partition_spans_as_many_racks_as_it_can() {
        let racks = ["a", "a", "b", "b", "c", "c"];
        let infos: Vec<BrokerInfo> = racks
            .iter()
            .enumerate()
            .map(|(id, r)| BrokerInfo {
                id: id as NodeId,
                rack: Some(r.to_string()),
                endpoint: None,
            })
            .collect();
        for rf in 1..=6u16 {
            let a = assign_replicas("orders", &infos, 0, 30, rf);
            let mut leaders = [0usize; 6];
            for replicas in &a {
                assert_eq!(replicas.len(), rf as usize, "{replicas:?}");
                let mut distinct = replicas.clone();
                distinct.sort_unstable();
                distinct.dedup();
                assert_eq!(distinct.len(), rf as usize, "{replicas:?}");
                let mut used: Vec<&str> = replicas.iter().map(|&b| racks[b as usize]).collect();
                used.sort_unstable();
                used.dedup();
                assert_eq!(
                    used.len(),
                    (rf as usize).min(3),
                    "rf {rf}: {replicas:?} on {used:?}"
                );
                leaders[replicas[0] as usize] += 1;
            }
            assert!(leaders.iter().all(|&l| l == 5), "{leaders:?}");
        }
    }

    #[test]
    fn snapshots_bound_the_metadata_log_and_a_reload_gives_the_same_metadata() {
        let storage = MemoryStorage::new();
        let store = LogMetadataStore::open(&storage, 0)
            .unwrap()
            .snapshot_after(10);
        let mut c = Controller::from_store(Box::new(store), 0, brokers(3), 0, 1_000).unwrap();
        let mut now = 0;
        for round in 0..40 {
            now += 10;
            let name = format!("t{round}");
            let topic = NewTopic::new(name.as_str(), 2).replication_factor(3);
            assert!(c.create_topics(vec![topic], now)[0].1.is_ok());
            c.allocate_producer_id(now).unwrap();
            // Broker 1 misses its session (leaders move, ISRs shrink),
            // then comes back (it leads again where preferred).
            for b in [0, 2] {
                c.heartbeat(b, false, now).unwrap();
            }
            now += 2_000;
            for b in [0, 2] {
                c.heartbeat(b, false, now).unwrap();
            }
            c.tick(now).unwrap();
            c.heartbeat(1, false, now).unwrap();
            if round % 3 == 0 {
                assert!(c.delete_topics(vec![name], now)[0].1.is_ok());
            }
        }
        let endpoint = BrokerInfo {
            id: 3,
            rack: Some("r".into()),
            endpoint: Some("h:1".into()),
        };
        c.register_broker(endpoint, true, now).unwrap();
        let before = c.metadata();
        let written = c.store().committed_offset();
        assert!(written > 300, "{written} records written");
        c.close().unwrap();
        // The log holds the last snapshot and what followed it, not the
        // history: about one record per broker and topic, plus fewer than
        // ten changes.
        let log = store::open_log(&storage, METADATA_TOPIC, 0).unwrap();
        let kept = store::read_all(&*log, "metadata").unwrap().len();
        assert!(log.log_start_offset() > 0);
        assert!(
            kept <= 4 + 2 + 27 + 1 + 10,
            "{kept} records kept of {written}"
        );
        log.close().unwrap();
        // (The embedded cluster names its first brokers at every load.)
        let reloaded = Controller::load(&storage, 0, brokers(3), now, 1_000).unwrap();
        let after = reloaded.metadata();
        assert_eq!(after.topics, before.topics);
        assert_eq!(after.brokers, before.brokers);
        assert_eq!(after.next_producer_id, before.next_producer_id);
        assert_eq!(after.controller_epoch, before.controller_epoch + 1);
    }

    fn any_record() -> impl proptest::strategy::Strategy<Value = MetadataRecord> {
        use proptest::prelude::*;
        let name = || prop::sample::select(vec!["a", "b", "c"]).prop_map(String::from);
        let nodes = || prop::collection::vec(0u32..4, 1..4);
        prop_oneof![
            (name(), prop::collection::vec(nodes(), 1..3)).prop_map(|(name, assignments)| {
                MetadataRecord::TopicCreated {
                    name,
                    config: TopicConfig::default(),
                    assignments,
                }
            }),
            (name(), prop::collection::vec(nodes(), 1..3)).prop_map(|(name, assignments)| {
                MetadataRecord::PartitionsCreated { name, assignments }
            }),
            name().prop_map(|name| MetadataRecord::TopicDeleted { name }),
            (
                name(),
                0u32..3,
                proptest::option::of(0u32..4),
                0i32..9,
                nodes(),
                0u32..9
            )
                .prop_map(
                    |(name, partition, leader, leader_epoch, isr, partition_epoch)| {
                        MetadataRecord::PartitionChanged {
                            name,
                            partition,
                            leader,
                            leader_epoch,
                            isr,
                            partition_epoch,
                        }
                    }
                ),
            (0u32..9).prop_map(|epoch| MetadataRecord::ControllerElected { epoch }),
            (0i64..99).prop_map(|id| MetadataRecord::ProducerIdAllocated { id }),
            (0u32..4, proptest::option::of("[a-z]{1,3}"))
                .prop_map(|(id, rack)| MetadataRecord::BrokerRegistered { id, rack }),
            (0u32..4, proptest::option::of("h:[0-9]{1,4}"))
                .prop_map(|(id, endpoint)| MetadataRecord::BrokerEndpoint { id, endpoint }),
            (
                name(),
                0u32..3,
                nodes(),
                proptest::option::of(nodes()),
                proptest::option::of(0u32..4),
                (0i32..9, nodes(), 0u32..9)
            )
                .prop_map(
                    |(name, partition, replicas, reassigning_to, leader, (epoch, isr, pe))| {
                        MetadataRecord::AssignmentChanged {
                            name,
                            partition,
                            replicas,
                            reassigning_to,
                            leader,
                            leader_epoch: epoch,
                            isr,
                            partition_epoch: pe,
                        }
                    }
                ),
        ]
    }

    proptest::proptest! {
        /// A snapshot of any history, followed by more records, replays to
        /// the metadata and brokers the whole history and those records
        /// give; and a snapshot of a snapshot is the snapshot.
        #[test]
        fn a_snapshot_replays_as_the_history_it_replaces(
            history in proptest::collection::vec(any_record(), 0..40),
            more in proptest::collection::vec(any_record(), 0..20),
        ) {
            let encode = |records: &[MetadataRecord], from: u64| -> Vec<(u64, Bytes)> {
                records
                    .iter()
                    .enumerate()
                    .map(|(i, r)| (from + i as u64, Bytes::from(encode_record(r).unwrap())))
                    .collect()
            };
            let old = encode(&history, 0);
            let later = encode(&more, history.len() as u64);
            let whole: Vec<_> = old.iter().chain(&later).cloned().collect();
            let image: Vec<(u64, Bytes)> = snapshot_records(&old)
                .unwrap()
                .into_iter()
                .map(|r| (0, Bytes::from(r)))
                .collect();
            let from_image: Vec<_> = image.iter().chain(&later).cloned().collect();
            let expected = replay(&whole, Vec::new()).unwrap();
            proptest::prop_assert_eq!(replay(&from_image, Vec::new()).unwrap(), expected);
            let again: Vec<(u64, Bytes)> = snapshot_records(&image)
                .unwrap()
                .into_iter()
                .map(|r| (0, Bytes::from(r)))
                .collect();
            proptest::prop_assert_eq!(again, image);
        }
    }

    #[test]
    fn metadata_survives_a_reload_from_the_log() {
        let storage = MemoryStorage::new();
        let mut c = Controller::load(&storage, 0, brokers(1), 0, 1_000).unwrap();
        let created = c.create_topics(vec![NewTopic::new("a", 2), NewTopic::new("b", 1)], 1);
        assert!(created.iter().all(|(_, r)| r.is_ok()));
        assert!(c.create_partitions(vec![("a".into(), 5)], 2)[0].1.is_ok());
        assert!(c.delete_topics(vec!["b".into()], 3)[0].1.is_ok());
        let before = c.metadata();
        c.close().unwrap();
        let reloaded = Controller::load(&storage, 0, brokers(1), 0, 1_000)
            .unwrap()
            .metadata();
        assert_eq!(reloaded.topics, before.topics);
        assert_eq!(
            reloaded.controller_epoch,
            before.controller_epoch + 1,
            "a new controller epoch"
        );
        assert_eq!(reloaded.topics["a"].partitions.len(), 5);
        assert!(!reloaded.topics.contains_key("b"));
    }

    /// Found by the simulator (a partition added while two of three
    /// brokers were fenced got one replica, under `min_insync_replicas` 2
    /// for good).
    #[test]
    fn new_partitions_keep_the_replication_factor_or_fail() {
        let mut c = Controller::load(&MemoryStorage::new(), 0, brokers(3), 0, 1_000).unwrap();
        let topic = NewTopic::new("t", 1).replication_factor(3);
        assert!(c.create_topics(vec![topic], 0)[0].1.is_ok());
        // Brokers 0 and 1 heartbeat; 2 does not and is fenced.
        for b in [0, 1] {
            c.heartbeat(b, false, 900).unwrap();
        }
        c.tick(1_500).unwrap();
        assert_eq!(c.metadata().brokers.len(), 2);
        let results = c.create_partitions(vec![("t".into(), 2)], 1_500);
        assert!(
            matches!(results[0].1, Err(Error::InvalidReplicationFactor { .. })),
            "{results:?}"
        );
        assert_eq!(
            c.metadata().topics["t"].partitions.len(),
            1,
            "nothing added"
        );
        c.heartbeat(2, false, 1_600).unwrap();
        assert!(
            c.create_partitions(vec![("t".into(), 2)], 1_600)[0]
                .1
                .is_ok()
        );
        assert_eq!(c.metadata().topics["t"].partitions[1].replicas.len(), 3);
    }

    /// Controlled shutdown (SPEC O5): a broker that asks to stop is fenced
    /// at once, its leaderships go to in-sync followers and it leaves the
    /// ISRs; it stays fenced while it asks; back (a restart), it is a
    /// follower until it is in sync again, then the preferred leader.
    #[test]
    fn controlled_shutdown_hands_leadership_over_and_the_preferred_replica_takes_it_back() {
        let mut c = Controller::load(&MemoryStorage::new(), 0, brokers(3), 0, 1_000).unwrap();
        let topic = NewTopic::new("t", 3).replication_factor(3);
        assert!(c.create_topics(vec![topic], 0)[0].1.is_ok());
        let led_by_1 = |c: &Controller| {
            c.metadata().topics["t"]
                .partitions
                .iter()
                .filter(|p| p.leader == Some(1))
                .count()
        };
        assert_eq!(led_by_1(&c), 1);
        assert!(c.heartbeat(1, true, 10).unwrap(), "fenced at once");
        let m = c.metadata();
        assert_eq!(m.brokers.iter().map(|b| b.id).collect::<Vec<_>>(), [0, 2]);
        for p in &m.topics["t"].partitions {
            assert_ne!(p.leader, Some(1), "{p:?}");
            assert!(p.leader.is_some(), "an in-sync follower took over: {p:?}");
            assert_eq!(p.isr.len(), 2, "{p:?}");
            assert!(!p.isr.contains(&1), "{p:?}");
        }
        assert!(!c.heartbeat(1, true, 20).unwrap(), "stays fenced");
        assert!(!c.tick(30).unwrap());
        // Restarted: live again, but not in sync, so not a leader yet.
        assert!(c.heartbeat(1, false, 40).unwrap());
        assert_eq!(c.metadata().brokers.len(), 3);
        assert_eq!(led_by_1(&c), 0);
        // Its leaders take it back into their ISRs once it caught up...
        for p in c.metadata().topics["t"].partitions.clone() {
            let mut isr = p.isr.clone();
            isr.push(1);
            isr.sort_unstable();
            let proposal = crate::replication::IsrProposal {
                partition: TopicPartition::new("t", p.partition).unwrap(),
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            };
            c.alter_partition(&proposal, 50).unwrap();
        }
        // ...and the next tick gives its preferred partition back to it.
        c.tick(60).unwrap();
        assert_eq!(led_by_1(&c), 1);
        let preferred = c.metadata().topics["t"]
            .partitions
            .iter()
            .all(|p| p.leader == p.replicas.first().copied());
        assert!(preferred);
    }

    #[test]
    fn bad_topics_get_their_own_errors() {
        let mut c = Controller::load(&MemoryStorage::new(), 0, brokers(1), 0, 1_000).unwrap();
        assert!(c.create_topics(vec![NewTopic::new("t", 1)], 0)[0].1.is_ok());
        let results = c.create_topics(
            vec![
                NewTopic::new("t", 1),
                NewTopic::new("z", 0),
                NewTopic::new("r", 1).replication_factor(2),
                NewTopic::new("m", 1).config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
                NewTopic::new("__x", 1),
                NewTopic::new("bad name", 1),
            ],
            0,
        );
        let errs: Vec<_> = results.into_iter().map(|(_, r)| r.unwrap_err()).collect();
        assert!(matches!(errs[0], Error::TopicAlreadyExists { .. }));
        assert!(matches!(errs[1], Error::InvalidPartitions { .. }));
        assert!(matches!(errs[2], Error::InvalidReplicationFactor { .. }));
        assert!(matches!(
            errs[3],
            Error::InvalidConfig {
                field: "min_insync_replicas",
                ..
            }
        ));
        assert!(matches!(errs[4], Error::InvalidTopic { .. }));
        assert!(matches!(errs[5], Error::InvalidTopic { .. }));
        assert!(matches!(
            c.create_partitions(vec![("t".into(), 1)], 0)[0].1,
            Err(Error::InvalidPartitions { .. })
        ));
        assert!(matches!(
            c.delete_topics(vec!["nope".into()], 0)[0].1,
            Err(Error::UnknownTopicOrPartition { .. })
        ));
    }
}
