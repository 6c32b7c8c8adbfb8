//! The card's handles on an embedded cluster: [`Topic`], [`Partition`] and
//! [`ConsumerGroup`]. Each is a name plus a borrow of the [`Cluster`];
//! every call reads the cluster's state at that moment (a live view, never
//! a cached copy) or acts through an [`Admin`] client.

use std::collections::BTreeMap;

use super::Cluster;
use crate::client::{
    Admin, Consumer, ConsumerConfig, ConsumerGroupDescription, DefaultSerde, Deserializer,
    OffsetReset,
};
use crate::error::{Error, Result};
use crate::metrics::{FollowerMetrics, PartitionMetrics};
use crate::protocol::{NodeId, TopicMetadata};
use crate::topic::{TopicConfig, TopicPartition};

/// A topic of an embedded cluster: `cluster.topic("orders")`.
///
/// ```
/// use ferrolog::{Cluster, NewTopic};
/// let cluster = Cluster::builder().build()?;
/// let orders = cluster.create_topic(NewTopic::new("orders", 2))?;
/// assert_eq!(orders.partition_count()?, 2);
/// orders.add_partitions(3)?;
/// assert_eq!(orders.partitions()?.len(), 3);
/// orders.delete()?;
/// assert!(cluster.topic("orders").describe().is_err());
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Topic<'c> {
    cluster: &'c Cluster,
    name: String,
}

impl<'c> Topic<'c> {
    pub(super) fn new(cluster: &'c Cluster, name: &str) -> Self {
        Self {
            cluster,
            name: name.to_string(),
        }
    }

    /// The topic's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn admin(&self) -> Result<Admin> {
        Admin::new(self.cluster)
    }

    /// Its metadata now: partitions with leaders, replicas, ISRs and
    /// epochs, and its settings. [`Error::UnknownTopicOrPartition`] if it
    /// does not exist.
    pub fn describe(&self) -> Result<TopicMetadata> {
        self.admin()?.describe_topic(&self.name)
    }

    /// Its settings.
    pub fn config(&self) -> Result<TopicConfig> {
        Ok(self.describe()?.config)
    }

    /// How many partitions it has.
    pub fn partition_count(&self) -> Result<u32> {
        Ok(self.describe()?.partitions.len() as u32)
    }

    /// A handle on each of its partitions.
    pub fn partitions(&self) -> Result<Vec<Partition<'c>>> {
        (0..self.partition_count()?)
            .map(|p| self.partition(p))
            .collect()
    }

    /// A handle on partition `partition` ([`Error::InvalidPartition`] for
    /// a bad name; whether it exists is checked by each call).
    pub fn partition(&self, partition: u32) -> Result<Partition<'c>> {
        Ok(Partition {
            cluster: self.cluster,
            partition: TopicPartition::new(self.name.clone(), partition)?,
        })
    }

    /// Grows it to `total` partitions (as `kafka-topics --alter
    /// --partitions`).
    pub fn add_partitions(&self, total: u32) -> Result<()> {
        self.admin()?.create_partitions(&self.name, total)
    }

    /// Deletes it, with its data.
    pub fn delete(self) -> Result<()> {
        self.admin()?.delete_topic(&self.name)
    }
}

/// One partition of an embedded cluster: a live view of its replica set as
/// its leader holds it.
///
/// ```
/// use ferrolog::{Cluster, NewTopic};
/// let cluster = Cluster::builder().brokers(3).build()?;
/// let orders = cluster.create_topic(NewTopic::new("orders", 1).replication_factor(3))?;
/// let p0 = orders.partition(0)?;
/// assert!(p0.leader()?.is_some());
/// assert_eq!(p0.replicas()?.len(), 3);
/// assert_eq!(p0.high_watermark()?, 0);
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Partition<'c> {
    cluster: &'c Cluster,
    partition: TopicPartition,
}

impl Partition<'_> {
    /// Which partition this is.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// Its state now, as its leader reports it (offline, as the metadata
    /// has it, if its leader is not running):
    /// [`Error::UnknownTopicOrPartition`] if it does not exist.
    pub fn state(&self) -> Result<PartitionMetrics> {
        self.cluster
            .partition_metrics(&self.partition)
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: self.partition.to_string(),
            })
    }

    /// The leader (`None`: offline).
    pub fn leader(&self) -> Result<Option<NodeId>> {
        Ok(self.state()?.leader)
    }

    /// The replicas, preferred leader first.
    pub fn replicas(&self) -> Result<Vec<NodeId>> {
        Ok(self.state()?.replicas)
    }

    /// The in-sync replicas.
    pub fn isr(&self) -> Result<Vec<NodeId>> {
        Ok(self.state()?.isr)
    }

    /// The first offset of the log.
    pub fn log_start_offset(&self) -> Result<u64> {
        Ok(self.state()?.log_start_offset)
    }

    /// The offset the next record gets.
    pub fn log_end_offset(&self) -> Result<u64> {
        Ok(self.state()?.log_end_offset)
    }

    /// The high watermark: records below it are committed.
    pub fn high_watermark(&self) -> Result<u64> {
        Ok(self.state()?.high_watermark)
    }

    /// Each follower with its log end offset and lag behind the leader.
    pub fn followers(&self) -> Result<Vec<FollowerMetrics>> {
        Ok(self.state()?.followers)
    }
}

/// A consumer group of an embedded cluster, by its id:
/// `cluster.consumer_group("billing")`.
///
/// ```
/// use std::time::Duration;
/// use ferrolog::{AutoOffsetReset, Cluster, ConsumerConfig, NewTopic};
/// let cluster = Cluster::builder().build()?;
/// cluster.create_topic(NewTopic::new("orders", 2))?;
/// let billing = cluster.consumer_group("billing");
/// let config = ConsumerConfig { auto_offset_reset: AutoOffsetReset::Earliest, ..Default::default() };
/// let mut member = billing.member::<String, String>(config, ["orders"])?;
/// // Polling joins the group; the coordinator assigns it the partitions.
/// for _ in 0..200 {
///     if !member.assignment().is_empty() {
///         break;
///     }
///     member.poll(Duration::from_millis(50))?;
/// }
/// assert_eq!(member.assignment().len(), 2);
/// assert_eq!(billing.describe()?.description.members.len(), 1);
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct ConsumerGroup<'c> {
    cluster: &'c Cluster,
    group: String,
}

impl ConsumerGroup<'_> {
    /// The group id.
    pub fn id(&self) -> &str {
        &self.group
    }

    /// Members, assignment, state, committed offsets and the lag of each
    /// partition (what `kafka-consumer-groups --describe` prints);
    /// [`Error::GroupIdNotFound`] for a group without members or offsets.
    pub fn describe(&self) -> Result<ConsumerGroupDescription> {
        Admin::new(self.cluster)?.describe_group(&self.group)
    }

    /// Moves the group's committed offsets for `partitions` to `to` and
    /// returns them; the group must have no members
    /// ([`Error::NonEmptyGroup`]).
    pub fn reset_offsets(
        &self,
        partitions: impl IntoIterator<Item = TopicPartition>,
        to: OffsetReset,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        Admin::new(self.cluster)?.reset_group_offsets(&self.group, partitions, to)
    }

    /// Deletes the group's committed offsets for `partitions`; the group
    /// must have no members ([`Error::NonEmptyGroup`]).
    pub fn delete_offsets(
        &self,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Result<()> {
        Admin::new(self.cluster)?.delete_group_offsets(&self.group, partitions)
    }

    /// Deletes the group with all its offsets; it must have no members
    /// ([`Error::NonEmptyGroup`]).
    pub fn delete(self) -> Result<()> {
        Admin::new(self.cluster)?.delete_group(&self.group)
    }

    /// Starts a member: a consumer with `config` (its `group_id` set to
    /// this group) subscribed to `topics`.
    pub fn member<K, V>(
        &self,
        mut config: ConsumerConfig,
        topics: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Consumer<K, V>>
    where
        DefaultSerde: Deserializer<K> + Deserializer<V>,
    {
        config.group_id = Some(self.group.clone());
        let mut consumer = Consumer::new(self.cluster, config)?;
        consumer.subscribe(topics)?;
        Ok(consumer)
    }
}

impl Cluster {
    /// A handle on topic `name` (whether it exists is checked by each
    /// call).
    pub fn topic(&self, name: &str) -> Topic<'_> {
        Topic::new(self, name)
    }

    /// Creates a topic and returns its handle.
    pub fn create_topic(&self, topic: crate::NewTopic) -> Result<Topic<'_>> {
        let name = topic.name.clone();
        Admin::new(self)?.create_topic(topic)?;
        Ok(Topic::new(self, &name))
    }

    /// A handle on consumer group `group`.
    pub fn consumer_group(&self, group: &str) -> ConsumerGroup<'_> {
        ConsumerGroup {
            cluster: self,
            group: group.to_string(),
        }
    }
}
