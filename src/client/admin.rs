//! The admin client: topics, partitions and the cluster's shape.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::core::{ClientCore, unexpected};
use super::{AdminConfig, Bootstrap};
use crate::error::{Error, Result};
use crate::protocol::{
    AlterPartitionReassignmentsRequest, BrokerInfo, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteTopicsRequest, NodeId, Request, Response, TopicMetadata, TopicResults,
};
use crate::topic::{NewTopic, TopicPartition};

/// The brokers of a cluster and which one is the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
    /// The controller's id.
    pub controller: Option<NodeId>,
}

/// Creates, grows, deletes and describes topics.
///
/// Every call blocks until the controller has recorded the change and sent
/// it to every reachable broker (or fails), retrying retriable errors for up
/// to `default_api_timeout_ms`. A broker that was unreachable gets the change
/// when it is next told the metadata.
///
/// ```
/// use ferrolog::{Admin, Cluster, NewTopic};
/// let cluster = Cluster::builder().build()?;
/// let admin = Admin::new(&cluster)?;
/// admin.create_topic(NewTopic::new("orders", 3))?;
/// admin.create_partitions("orders", 6)?;
/// let topic = admin.describe_topic("orders")?;
/// assert_eq!(topic.partitions.len(), 6);
/// assert_eq!(topic.partitions[0].leader, Some(0));
/// admin.delete_topic("orders")?;
/// assert!(admin.list_topics()?.is_empty());
/// # Ok::<(), ferrolog::Error>(())
/// ```
#[derive(Debug)]
pub struct Admin {
    core: Arc<ClientCore>,
    config: AdminConfig,
}

impl Admin {
    /// An admin client with the default [`AdminConfig`].
    pub fn new(bootstrap: impl Into<Bootstrap>) -> Result<Self> {
        Self::with_config(bootstrap, AdminConfig::default())
    }

    /// An admin client with `config` (validated).
    pub fn with_config(bootstrap: impl Into<Bootstrap>, config: AdminConfig) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            core: ClientCore::new(bootstrap.into())?,
            config,
        })
    }

    /// Creates one topic. Errors: [`Error::TopicAlreadyExists`],
    /// [`Error::InvalidTopic`], [`Error::InvalidPartitions`],
    /// [`Error::InvalidReplicationFactor`], [`Error::InvalidConfig`].
    pub fn create_topic(&self, topic: NewTopic) -> Result<()> {
        only(self.create_topics(vec![topic])?)
    }

    /// Creates topics; one result per topic, in order.
    pub fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<(String, Result<()>)>> {
        self.controller_call(Request::CreateTopics(CreateTopicsRequest { topics }))
    }

    /// Deletes a topic and all its records.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        only(self.delete_topics(vec![name.to_string()])?)
    }

    /// Deletes topics; one result per topic, in order.
    pub fn delete_topics(&self, names: Vec<String>) -> Result<Vec<(String, Result<()>)>> {
        self.controller_call(Request::DeleteTopics(DeleteTopicsRequest { topics: names }))
    }

    /// Grows `topic` to `total` partitions (keys may then map to other
    /// partitions, as in Kafka). A count not above the current one is
    /// [`Error::InvalidPartitions`].
    pub fn create_partitions(&self, topic: &str, total: u32) -> Result<()> {
        only(
            self.controller_call(Request::CreatePartitions(CreatePartitionsRequest {
                topics: vec![(topic.to_string(), total)],
            }))?,
        )
    }

    /// A topic's partitions (leader, replicas, in-sync replicas, epoch) and
    /// settings, freshly asked.
    pub fn describe_topic(&self, name: &str) -> Result<TopicMetadata> {
        let metadata = self.core.refresh_metadata(self.timeout())?;
        metadata
            .topics
            .get(name)
            .map(|t| (**t).clone())
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
            })
    }

    /// The names of all topics, sorted.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        let metadata = self.core.refresh_metadata(self.timeout())?;
        let mut names: Vec<String> = metadata.topics.keys().map(|n| n.to_string()).collect();
        names.sort();
        Ok(names)
    }

    /// The brokers and the controller.
    pub fn describe_cluster(&self) -> Result<ClusterDescription> {
        self.core.refresh_metadata(self.timeout())?;
        let deadline = Instant::now() + self.timeout();
        let metadata = self.core.metadata();
        let node = metadata.brokers.first().copied().unwrap_or_default();
        let left = deadline.saturating_duration_since(Instant::now());
        match self
            .core
            .call(node, Request::Metadata(Default::default()), left)?
        {
            Response::Metadata(m) => Ok(ClusterDescription {
                brokers: m.brokers,
                controller: m.controller,
            }),
            other => Err(unexpected("Metadata", &other)),
        }
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.default_api_timeout_ms)
    }

    /// Sends an admin request to the controller, retrying retriable errors.
    fn controller_call(&self, request: Request) -> Result<Vec<(String, Result<()>)>> {
        let name = request.api_name();
        match self.call_controller(request)? {
            Response::CreateTopics(TopicResults { topics })
            | Response::DeleteTopics(TopicResults { topics })
            | Response::CreatePartitions(TopicResults { topics }) => Ok(topics),
            other => Err(unexpected(name, &other)),
        }
    }

    /// Sends a request to the controller, retrying retriable errors until
    /// `default_api_timeout_ms`, then refreshes the cached metadata.
    fn call_controller(&self, request: Request) -> Result<Response> {
        let deadline = Instant::now() + self.timeout();
        let backoff = Duration::from_millis(self.config.retry_backoff_ms);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let metadata = match self.core.metadata().controller {
                Some(_) => self.core.metadata(),
                None => self.core.refresh_metadata(left)?,
            };
            let outcome = match metadata.controller {
                Some(node) => self.core.call(node, request.clone(), left),
                None => Err(Error::NotController { broker: 0 }),
            };
            match outcome {
                Ok(response) => {
                    self.core
                        .refresh_metadata(deadline.saturating_duration_since(Instant::now()))?;
                    return Ok(response);
                }
                Err(e) if e.is_retriable() && Instant::now() + backoff < deadline => {
                    std::thread::sleep(backoff);
                    let _ = self
                        .core
                        .refresh_metadata(deadline.saturating_duration_since(Instant::now()));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Moves partitions to new replicas (preferred leader first), as Kafka's
    /// `kafka-reassign-partitions`: the new replicas copy each partition while
    /// producers and consumers keep using it; once all are in sync the old
    /// ones are dropped and, if needed, leadership moves. Returns when the
    /// move has started; [`describe_topic`](Self::describe_topic) shows
    /// `reassigning_to` until it is done.
    pub fn reassign_partitions(
        &self,
        partitions: Vec<(TopicPartition, Vec<NodeId>)>,
    ) -> Result<Vec<(TopicPartition, Result<()>)>> {
        let request =
            Request::AlterPartitionReassignments(AlterPartitionReassignmentsRequest { partitions });
        match self.call_controller(request)? {
            Response::AlterPartitionReassignments(results) => Ok(results),
            other => Err(unexpected("AlterPartitionReassignments", &other)),
        }
    }
}

fn only(results: Vec<(String, Result<()>)>) -> Result<()> {
    results.into_iter().next().map_or_else(
        || {
            Err(Error::InvalidRequest {
                reason: "no result".into(),
            })
        },
        |(_, r)| r,
    )
}
