//! The admin client: topics, partitions, consumer groups and the cluster's
//! shape.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use parking_lot::Mutex;

use super::admin_core::{AdminAnswer, AdminAsk, AdminCore, AdminOp, MetadataView};
use super::offsets::FoundOffsets;
use super::{AdminConfig, Bootstrap, ClientInbox, unexpected};
use crate::error::{Error, Result};
use crate::group::{
    CONSUMER_OFFSETS_TOPIC, GroupDescription, GroupListing, OffsetAndMetadata,
    offsets_partition_for,
};
use crate::protocol::{
    AlterPartitionReassignmentsRequest, BrokerInfo, CreatePartitionsRequest, CreateTopicsRequest,
    DeleteRecordsRequest, DeleteTopicsRequest, NodeId, OffsetCommitRequest, OffsetDeleteRequest,
    OffsetSpec, Peer, Request, Response, TopicMetadata, TopicResults,
};
use crate::time::{Clock, Millis, SystemClock};
use crate::topic::INTERNAL_TOPIC_PREFIX;
use crate::topic::{NewTopic, TopicPartition};

/// The brokers of a cluster and which one is the controller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// The brokers.
    pub brokers: Vec<BrokerInfo>,
    /// The controller's id.
    pub controller: Option<NodeId>,
}

/// One partition of a consumer group, as `kafka-consumer-groups --describe`
/// prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub partition: TopicPartition,
    /// The group's committed offset (`None`: nothing committed).
    pub current_offset: Option<u64>,
    /// The partition's end: its high watermark (the next offset a committed
    /// record gets).
    pub log_end_offset: u64,
    /// How far the group is behind: `log_end_offset - current_offset`
    /// (`None` without a committed offset).
    pub lag: Option<u64>,
    /// The member that owns the partition now, if any.
    pub member_id: Option<String>,
    /// That member's `client_id`.
    pub client_id: Option<String>,
}

/// A consumer group with its lag per partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerGroupDescription {
    /// Members, assignment, state and committed offsets, from the coordinator.
    pub description: GroupDescription,
    /// Every partition the group has an offset for or a member owns, sorted.
    pub partitions: Vec<PartitionLag>,
}

/// Where [`Admin::reset_group_offsets`] moves a group's offsets (as
/// `kafka-consumer-groups --reset-offsets --to-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    /// The first offset still in each log.
    Earliest,
    /// Each partition's high watermark: skip everything there is.
    Latest,
    /// The first offset whose timestamp is at or after this (ms); the end of
    /// the log if there is none.
    Timestamp(i64),
    /// This offset, clamped to the log's range.
    Offset(u64),
}

/// Creates, grows, deletes and describes topics; lists, describes and
/// resets consumer groups.
///
/// Every call blocks until the controller has recorded the change and sent
/// it to every reachable broker (or fails), retrying retriable errors for up
/// to `default_api_timeout_ms`. A broker that was unreachable gets the change
/// when it is next told the metadata. The work runs on the calling thread;
/// `Admin` is `Send + Sync`, and calls from several threads proceed
/// together.
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
pub struct Admin {
    /// The requests in flight and the metadata (see [`AdminCore`]).
    core: Mutex<AdminCore>,
    /// Finished requests not yet taken by the call that made them.
    finished: Mutex<BTreeMap<AdminOp, Result<AdminAnswer>>>,
    peer: Peer,
    bootstrap: Bootstrap,
    inbox: Arc<ClientInbox>,
    clock: SystemClock,
    config: AdminConfig,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.bootstrap.transport.deregister(self.peer);
    }
}

impl Admin {
    /// An admin client with the default [`AdminConfig`].
    pub fn new(bootstrap: impl Into<Bootstrap>) -> Result<Self> {
        Self::with_config(bootstrap, AdminConfig::default())
    }

    /// An admin client with `config` (validated).
    pub fn with_config(bootstrap: impl Into<Bootstrap>, config: AdminConfig) -> Result<Self> {
        config.validate()?;
        let bootstrap: Bootstrap = bootstrap.into();
        let (peer, inbox) = bootstrap.register_client()?;
        let core = AdminCore::new(
            peer,
            bootstrap.nodes.clone(),
            config.default_api_timeout_ms as Millis,
            config.retry_backoff_ms as Millis,
        );
        Ok(Self {
            core: Mutex::new(core),
            finished: Mutex::new(BTreeMap::new()),
            peer,
            bootstrap,
            inbox,
            clock: SystemClock,
            config,
        })
    }

    /// Runs `ask` to its end (at most `default_api_timeout_ms`), driving the
    /// core on this thread.
    fn run(&self, ask: AdminAsk) -> Result<AdminAnswer> {
        let now = self.clock.now_ms();
        let deadline = now + self.config.default_api_timeout_ms as Millis;
        let id = self.core.lock().submit(now, ask, deadline);
        loop {
            self.inbox.unwake();
            let core_wake = self.pump();
            if let Some(outcome) = self.finished.lock().remove(&id) {
                return outcome;
            }
            self.inbox.wait(&self.clock, core_wake, None);
        }
    }

    /// Feeds the core what arrived and the time, sends what it wants sent,
    /// and files what finished (waking the other calls); returns the core's
    /// next deadline.
    fn pump(&self) -> Option<Millis> {
        let answers = self.inbox.take();
        let now = self.clock.now_ms();
        let mut core = self.core.lock();
        for envelope in answers {
            core.handle_message(now, envelope);
        }
        core.handle_timeout(now);
        let outputs: Vec<_> = std::iter::from_fn(|| core.poll_transmit()).collect();
        let done: Vec<_> = std::iter::from_fn(|| core.poll_completion()).collect();
        let next = core.poll_timeout();
        drop(core);
        for envelope in outputs {
            self.bootstrap.transport.send(envelope);
        }
        if !done.is_empty() {
            self.finished.lock().extend(done);
            self.inbox.wake();
        }
        next
    }

    fn request(&self, ask: AdminAsk) -> Result<Response> {
        match self.run(ask)? {
            AdminAnswer::Response(response) => Ok(response),
            _ => Err(Error::InvalidRequest {
                reason: "expected a response".into(),
            }),
        }
    }

    fn fresh_metadata(&self) -> Result<MetadataView> {
        match self.run(AdminAsk::Metadata)? {
            AdminAnswer::Metadata(view) => Ok(view),
            _ => Err(Error::InvalidRequest {
                reason: "expected metadata".into(),
            }),
        }
    }

    fn list_offsets(&self, wanted: Vec<(TopicPartition, OffsetSpec)>) -> Result<FoundOffsets> {
        match self.run(AdminAsk::Offsets(wanted))? {
            AdminAnswer::Offsets(found) => Ok(found),
            _ => Err(Error::InvalidRequest {
                reason: "expected offsets".into(),
            }),
        }
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
        let metadata = self.fresh_metadata()?;
        metadata
            .topics
            .get(name)
            .map(|t| (**t).clone())
            .ok_or_else(|| Error::UnknownTopicOrPartition {
                topic: name.to_string(),
            })
    }

    /// Deletes the records of each partition before its offset (Kafka's
    /// `DeleteRecords`, `kafka-delete-records`): the log start moves there
    /// and whole segments below it are deleted, on the leader at once and
    /// on followers at their next fetch. Returns per partition its new log
    /// start (low watermark), or why not: an offset above the high
    /// watermark is [`Error::OffsetOutOfRange`] (only committed records are
    /// deleted), an unknown partition [`Error::UnknownTopicOrPartition`].
    /// A partition whose leader moved is asked again after fresh metadata.
    pub fn delete_records(
        &self,
        partitions: impl IntoIterator<Item = (TopicPartition, u64)>,
    ) -> Result<BTreeMap<TopicPartition, Result<u64>>> {
        let mut left: Vec<(TopicPartition, u64)> = partitions.into_iter().collect();
        let mut results = BTreeMap::new();
        for attempt in 0..3 {
            let metadata = self.fresh_metadata()?;
            let mut by_leader: BTreeMap<NodeId, Vec<(TopicPartition, u64)>> = BTreeMap::new();
            for (tp, offset) in left.drain(..) {
                let partition = metadata
                    .topics
                    .get(tp.topic())
                    .and_then(|t| t.partitions.get(tp.partition() as usize));
                match partition.map(|p| p.leader) {
                    Some(Some(leader)) => by_leader.entry(leader).or_default().push((tp, offset)),
                    Some(None) => {
                        let partition = tp.clone();
                        results.insert(tp, Err(Error::LeaderNotAvailable { partition }));
                    }
                    None => {
                        let topic = tp.to_string();
                        results.insert(tp, Err(Error::UnknownTopicOrPartition { topic }));
                    }
                }
            }
            for (leader, partitions) in by_leader {
                let asked = partitions.clone();
                let request = Request::DeleteRecords(DeleteRecordsRequest { partitions });
                let answers = match self.request(AdminAsk::Node(leader, request)) {
                    Ok(Response::DeleteRecords(answers)) => answers,
                    Ok(other) => return Err(unexpected("DeleteRecords", &other)),
                    Err(e) => asked
                        .iter()
                        .map(|(tp, _)| (tp.clone(), Err(e.clone())))
                        .collect(),
                };
                for (tp, result) in answers {
                    let moved = matches!(result, Err(Error::NotLeaderOrFollower { .. }));
                    match asked.iter().find(|(t, _)| *t == tp) {
                        Some(&(_, offset)) if moved && attempt < 2 => left.push((tp, offset)),
                        _ => {
                            results.insert(tp, result);
                        }
                    }
                }
            }
            if left.is_empty() {
                break;
            }
        }
        Ok(results)
    }

    /// The names of all topics but the internal ones (`__consumer_offsets`),
    /// sorted.
    pub fn list_topics(&self) -> Result<Vec<String>> {
        let metadata = self.fresh_metadata()?;
        let mut names: Vec<String> = metadata
            .topics
            .keys()
            .filter(|n| !n.starts_with(INTERNAL_TOPIC_PREFIX))
            .map(|n| n.to_string())
            .collect();
        names.sort();
        Ok(names)
    }

    /// The brokers and the controller.
    pub fn describe_cluster(&self) -> Result<ClusterDescription> {
        let metadata = self.fresh_metadata()?;
        let mut nodes = metadata.brokers.clone();
        if nodes.is_empty() {
            nodes.push(NodeId::default());
        }
        // The first broker that answers (one listed may have just died).
        let mut last_error = None;
        for node in nodes {
            match self.request(AdminAsk::Node(node, Request::Metadata(Default::default()))) {
                Ok(Response::Metadata(m)) => {
                    return Ok(ClusterDescription {
                        brokers: m.brokers,
                        controller: m.controller,
                    });
                }
                Ok(other) => return Err(unexpected("Metadata", &other)),
                Err(e) if e.is_retriable() => last_error = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last_error.unwrap_or_else(|| Error::Network {
            node: u32::MAX,
            reason: "no broker answered".into(),
        }))
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
    /// `default_api_timeout_ms`; answers once the metadata shows the change.
    fn call_controller(&self, request: Request) -> Result<Response> {
        self.request(AdminAsk::Controller(request))
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

impl Admin {
    /// Sends `request` to `group`'s coordinator, retrying while it moves.
    fn group_call(&self, group: &str, request: Request) -> Result<Response> {
        crate::group::validate_group_id(group)?;
        self.request(AdminAsk::Coordinator(group.to_string(), request))
    }

    /// Every consumer group the cluster knows (with members or committed
    /// offsets), sorted by id, as their coordinators report them.
    pub fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let metadata = self.fresh_metadata()?;
        // The coordinator of a group is the leader of its partition; a
        // broker that just lost the partition may still list it.
        let offsets = metadata.topics.get(CONSUMER_OFFSETS_TOPIC).cloned();
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        for &node in &metadata.brokers {
            let listed = match self.request(AdminAsk::Node(node, Request::ListGroups)) {
                Ok(Response::ListGroups(listed)) => listed,
                Ok(other) => return Err(unexpected("ListGroups", &other)),
                Err(e) if e.is_retriable() => continue,
                Err(e) => return Err(e),
            };
            for listing in listed {
                let current = offsets.as_ref().is_some_and(|t| {
                    let p = offsets_partition_for(&listing.group, t.partitions.len() as u32);
                    t.partitions.get(p as usize).and_then(|p| p.leader) == Some(node)
                });
                if current || !groups.contains_key(&listing.group) {
                    groups.insert(listing.group.clone(), listing);
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// A group's members, assignment and committed offsets, with the lag of
    /// every partition it has an offset for or owns (what
    /// `kafka-consumer-groups --describe` prints). A group without members
    /// or offsets is [`Error::GroupIdNotFound`].
    pub fn describe_group(&self, group: &str) -> Result<ConsumerGroupDescription> {
        let description = match self.group_call(group, Request::DescribeGroup(group.to_string()))? {
            Response::DescribeGroup(d) => d,
            other => return Err(unexpected("ConsumerGroupDescribe", &other)),
        };
        let mut owners: BTreeMap<TopicPartition, (String, String)> = BTreeMap::new();
        for m in &description.members {
            for tp in m.assignment.iter().chain(&m.pending_revocation) {
                owners.insert(tp.clone(), (m.member_id.clone(), m.client_id.clone()));
            }
        }
        let partitions: BTreeSet<TopicPartition> = description
            .offsets
            .keys()
            .chain(owners.keys())
            .cloned()
            .collect();
        // A partition of a topic deleted since (or never created) has no
        // end to look up: its lag is unknown, the rest still describe.
        let metadata = self.fresh_metadata()?;
        let exists = |tp: &TopicPartition| {
            metadata
                .topics
                .get(tp.topic())
                .is_some_and(|t| (tp.partition() as usize) < t.partitions.len())
        };
        let ends = self.list_offsets(
            partitions
                .iter()
                .filter(|tp| exists(tp))
                .map(|tp| (tp.clone(), OffsetSpec::Latest))
                .collect(),
        )?;
        let partitions = partitions
            .into_iter()
            .map(|tp| {
                let current_offset = description.offsets.get(&tp).map(|o| o.offset);
                let end = ends.get(&tp).cloned().flatten().map(|o| o.offset);
                let log_end_offset = end.unwrap_or(0);
                let owner = owners.get(&tp);
                PartitionLag {
                    lag: current_offset
                        .zip(end)
                        .map(|(c, end)| end.saturating_sub(c)),
                    current_offset,
                    log_end_offset,
                    member_id: owner.map(|o| o.0.clone()),
                    client_id: owner.map(|o| o.1.clone()),
                    partition: tp,
                }
            })
            .collect();
        Ok(ConsumerGroupDescription {
            description,
            partitions,
        })
    }

    /// Deletes a group's committed offsets for `partitions` (Kafka's
    /// `OffsetDelete`, `kafka-consumer-groups --delete-offsets`): the group
    /// resumes those partitions per `auto_offset_reset`. The group must have
    /// no members ([`Error::NonEmptyGroup`]); an unknown group is
    /// [`Error::GroupIdNotFound`]. Offsets of deleted topics can go too.
    pub fn delete_group_offsets(
        &self,
        group: &str,
        partitions: impl IntoIterator<Item = TopicPartition>,
    ) -> Result<()> {
        let request = OffsetDeleteRequest {
            group: group.to_string(),
            partitions: Some(partitions.into_iter().collect()),
        };
        self.offset_delete(group, request)
    }

    /// Deletes a group: every committed offset and the group itself
    /// (Kafka's `DeleteGroups`, `kafka-consumer-groups --delete`). The group
    /// must have no members ([`Error::NonEmptyGroup`]); an unknown group is
    /// [`Error::GroupIdNotFound`].
    pub fn delete_group(&self, group: &str) -> Result<()> {
        let request = OffsetDeleteRequest {
            group: group.to_string(),
            partitions: None,
        };
        self.offset_delete(group, request)
    }

    fn offset_delete(&self, group: &str, request: OffsetDeleteRequest) -> Result<()> {
        match self.group_call(group, Request::OffsetDelete(request))? {
            Response::OffsetDelete => Ok(()),
            other => Err(unexpected("OffsetDelete", &other)),
        }
    }

    /// Moves a group's committed offsets for `partitions` to `to`, as
    /// `kafka-consumer-groups --reset-offsets --execute` does, and returns
    /// the new offsets. The group must have no members
    /// ([`Error::NonEmptyGroup`]): stop its consumers first.
    pub fn reset_group_offsets(
        &self,
        group: &str,
        partitions: impl IntoIterator<Item = TopicPartition>,
        to: OffsetReset,
    ) -> Result<BTreeMap<TopicPartition, u64>> {
        let partitions: Vec<TopicPartition> = partitions.into_iter().collect();
        match self.group_call(group, Request::DescribeGroup(group.to_string())) {
            Ok(Response::DescribeGroup(d)) if !d.members.is_empty() => {
                return Err(Error::NonEmptyGroup {
                    group: group.to_string(),
                    members: d.members.len(),
                });
            }
            Ok(_) | Err(Error::GroupIdNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let ask = |spec: OffsetSpec| {
            self.list_offsets(partitions.iter().map(|tp| (tp.clone(), spec)).collect())
        };
        let earliest = ask(OffsetSpec::Earliest)?;
        let latest = ask(OffsetSpec::Latest)?;
        let found = match to {
            OffsetReset::Timestamp(ts) => Some(ask(OffsetSpec::Timestamp(ts))?),
            _ => None,
        };
        let offset_of = |map: &FoundOffsets, tp: &TopicPartition| {
            map.get(tp).cloned().flatten().map(|o| o.offset)
        };
        let mut offsets = BTreeMap::new();
        for tp in &partitions {
            let (low, high) = (
                offset_of(&earliest, tp).unwrap_or(0),
                offset_of(&latest, tp).unwrap_or(0),
            );
            let offset = match to {
                OffsetReset::Earliest => low,
                OffsetReset::Latest => high,
                OffsetReset::Timestamp(_) => found
                    .as_ref()
                    .and_then(|f| offset_of(f, tp))
                    .unwrap_or(high),
                OffsetReset::Offset(o) => o.clamp(low, high.max(low)),
            };
            offsets.insert(tp.clone(), offset);
        }
        let commit = offsets
            .iter()
            .map(|(tp, &o)| (tp.clone(), OffsetAndMetadata::new(o)))
            .collect();
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: group.to_string(),
            member_id: String::new(),
            member_epoch: -1,
            offsets: commit,
        });
        match self.group_call(group, request) {
            Ok(Response::OffsetCommit) => Ok(offsets),
            Ok(other) => Err(unexpected("OffsetCommit", &other)),
            Err(Error::UnknownMemberId { .. }) => Err(Error::NonEmptyGroup {
                group: group.to_string(),
                members: 1,
            }),
            Err(e) => Err(e),
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
