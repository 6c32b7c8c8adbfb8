//! The data path of a leader: produce, fetch (consumers and followers),
//! offset look-ups and metadata answers.

use std::collections::BTreeMap;

use super::purgatory::{PendingFetch, PendingProduce};
use super::{BrokerCore, Partition};
use crate::error::{Error, Result};
use crate::protocol::{
    Acks, ClusterMetadata, DELETE_TO_HIGH_WATERMARK, DeleteRecordsRequest, EpochEndOffset,
    FetchPartition, FetchResponse, FetchedData, FetchedPartition, ListOffsetsRequest,
    ListOffsetsResponse, ListedOffset, MetadataRequest, MetadataResponse, NodeId,
    OffsetAndTimestamp, OffsetForLeaderEpochRequest, OffsetSpec, ProduceAck, ProducePartition,
    ProduceRequest, ProduceResponse, ProducedPartition, ReplyTo, Response,
};
use crate::record::{RecordBatch, Records};
use crate::replication::{ProducerIds, SequenceCheck, diverging_epoch};
use crate::time::Millis;
use crate::topic::{INTERNAL_TOPIC_PREFIX, TopicPartition};

impl BrokerCore {
    // ----- produce -------------------------------------------------------

    pub(super) fn produce(&mut self, now: Millis, reply: ReplyTo, request: ProduceRequest) {
        let mut results = Vec::with_capacity(request.partitions.len());
        let mut waiting: BTreeMap<TopicPartition, Vec<(usize, u64, i32)>> = BTreeMap::new();
        for (i, ProducePartition { partition, batch }) in request.partitions.into_iter().enumerate()
        {
            let result = self.append(now, &partition, batch, request.acks);
            if matches!(result, Err(Error::Io { .. } | Error::LogOffline { .. })) {
                // Fetches parked on the log learn that it went offline.
                self.moved.insert(partition.clone());
            }
            let result = result.map(|(ack, required, epoch)| {
                if request.acks == Acks::All {
                    let entry = (i, required, epoch);
                    waiting.entry(partition.clone()).or_default().push(entry);
                }
                ack
            });
            results.push(ProducedPartition { partition, result });
        }
        if request.acks == Acks::None {
            return; // acks=0: nobody waits for an answer
        }
        let produce = PendingProduce {
            reply,
            results,
            waiting,
            deadline: now + Millis::from(request.timeout_ms),
        };
        self.settle_produce(now, produce);
    }

    /// Appends as the leader. Returns the ack, the offset the HW must reach
    /// for the batch to be committed, and the leader epoch it was written in.
    fn append(
        &mut self,
        now: Millis,
        tp: &TopicPartition,
        batch: RecordBatch,
        acks: Acks,
    ) -> Result<(ProduceAck, u64, i32)> {
        if batch.is_control() {
            return Err(Error::InvalidRecord {
                reason: "clients cannot write control batches".into(),
            });
        }
        if tp.topic().starts_with(INTERNAL_TOPIC_PREFIX) {
            return Err(Error::InvalidTopic {
                name: tp.topic().to_string(),
                reason: "internal topics are written by the brokers only",
            });
        }
        let partition = leader_partition(&mut self.partitions, &self.metadata, self.id, tp)?;
        if acks == Acks::All {
            partition.replicas.check_acks_all()?;
        }
        let epoch = partition.replicas.leader_epoch();
        let ids = ProducerIds::of(&batch);
        if let SequenceCheck::Duplicate {
            base_offset,
            last_offset,
        } = partition.producers.check(tp, &batch)?
        {
            // A retry of a batch already written: its offsets, nothing new.
            let ack = ProduceAck {
                base_offset,
                log_start_offset: partition.log.log_start_offset(),
            };
            return Ok((ack, last_offset + 1, epoch));
        }
        let (records, bytes) = (batch.record_count().max(0) as u64, batch.size() as u64);
        let info = partition.log.append(batch, epoch)?;
        if self.config.metrics_enabled {
            partition.stats.records_in += records;
            partition.stats.bytes_in += bytes;
        }
        let end = partition.log.log_end_offset();
        let start = partition.log.log_start_offset();
        partition
            .producers
            .record_at(ids, info.base_offset, info.last_offset);
        let update = partition.replicas.on_append(end);
        partition.apply(&update);
        self.moved.insert(tp.clone());
        if let Some(proposal) = update.proposal {
            self.send_proposal(now, proposal);
        }
        let ack = ProduceAck {
            base_offset: info.base_offset,
            log_start_offset: start,
        };
        Ok((ack, info.last_offset + 1, epoch))
    }

    /// Answers a produce whose partitions all settled, or parks it.
    pub(super) fn settle_produce(&mut self, now: Millis, produce: PendingProduce) {
        if let Some(produce) = self.finish_produce(produce, now, false) {
            self.produces.park(produce);
        }
    }

    /// `tp` moved: settles the parked produces' entries for `tp` (each
    /// produce only there, not its other partitions) and answers those with
    /// nothing left to wait for.
    pub(super) fn settle_produces_on(&mut self, tp: &TopicPartition) {
        for id in self.produces.watching(tp) {
            let Some(produce) = self.produces.get_mut(id) else {
                continue;
            };
            let Some(mut entries) = produce.waiting.remove(tp) else {
                continue;
            };
            let results = &mut produce.results;
            entries.retain(|&(i, required, epoch)| {
                let outcome = produce_outcome(&self.partitions, self.id, tp, required, epoch);
                settle_entry(&mut results[i], outcome, false)
            });
            if !entries.is_empty() {
                produce.waiting.insert(tp.clone(), entries);
                continue;
            }
            let done = produce.waiting.is_empty();
            self.produces.unwatch(id, tp);
            if done && let Some(produce) = self.produces.take(id) {
                let response = ProduceResponse {
                    partitions: produce.results,
                };
                self.respond(produce.reply, Ok(Response::Produce(response)));
            }
        }
    }

    /// Settles what can be of every partition `produce` waits for (see
    /// [`produce_outcome`]), and at the deadline (or with `force`) the rest
    /// with `RequestTimedOut`. Answers and returns `None` once nothing
    /// waits.
    pub(super) fn finish_produce(
        &mut self,
        mut produce: PendingProduce,
        now: Millis,
        force: bool,
    ) -> Option<PendingProduce> {
        let timed_out = force || now >= produce.deadline;
        let results = &mut produce.results;
        produce.waiting.retain(|tp, entries| {
            entries.retain(|&(i, required, epoch)| {
                let outcome = produce_outcome(&self.partitions, self.id, tp, required, epoch);
                settle_entry(&mut results[i], outcome, timed_out)
            });
            !entries.is_empty()
        });
        if produce.waiting.is_empty() {
            let response = ProduceResponse {
                partitions: produce.results,
            };
            self.respond(produce.reply, Ok(Response::Produce(response)));
            return None;
        }
        Some(produce)
    }

    // ----- fetch ---------------------------------------------------------

    /// Answers a fetch that has enough data, failed, or is due; parks the
    /// rest.
    pub(super) fn try_fetch(&mut self, now: Millis, fetch: PendingFetch) {
        if let Some((replica, id)) = fetch.session {
            if self.sessions.id(replica) != Some(id) {
                // Replaced by a newer session of the same follower.
                let error = Error::FetchSessionIdNotFound { session_id: id };
                return self.respond(fetch.reply, Err(error));
            }
            self.sessions.set_parked(replica, None);
        }
        let (response, bytes) = self.read_fetch(now, &fetch);
        // A session fetch's response holds only news.
        let news = fetch.session.is_some() && !response.partitions.is_empty();
        let failed = response.partitions.iter().any(|p| {
            p.result
                .as_ref()
                .map_or(true, |d| d.diverging_epoch.is_some())
        });
        let due = now >= fetch.deadline;
        if fetch.request.max_wait_ms == 0
            || news
            || bytes >= u64::from(fetch.request.min_bytes)
            || failed
            || due
            || self.stopped
        {
            self.send_fetch_response(fetch, response);
        } else {
            let session = fetch.session;
            let parked = self.fetches.park(fetch);
            if let Some((replica, _)) = session {
                self.sessions.set_parked(replica, Some(parked));
            }
        }
    }

    /// Answers `fetch` with what its partitions hold now.
    pub(super) fn answer_fetch(&mut self, now: Millis, fetch: PendingFetch) {
        let (response, _) = self.read_fetch(now, &fetch);
        self.send_fetch_response(fetch, response);
    }

    fn send_fetch_response(&mut self, fetch: PendingFetch, mut response: FetchResponse) {
        if let Some((_, id)) = fetch.session {
            response.session_id = id;
        }
        self.respond(fetch.reply, Ok(Response::Fetch(response)));
    }

    /// Reads the partitions of `fetch`: the response and its size in
    /// bytes. A session fetch reads its session's dirty partitions and
    /// answers only those with news (see [`super::sessions`]); once the
    /// byte budget is spent the rest stay dirty for the next fetch.
    pub(super) fn read_fetch(&mut self, now: Millis, fetch: &PendingFetch) -> (FetchResponse, u64) {
        let request = &fetch.request;
        let session = fetch.session.map(|(replica, _)| replica);
        let listed = match session {
            Some(replica) => std::borrow::Cow::Owned(self.sessions.to_read(replica)),
            None => std::borrow::Cow::Borrowed(&request.partitions[..]),
        };
        let mut budget = request.max_bytes as usize;
        let mut total = 0u64;
        let mut partitions = Vec::with_capacity(listed.len());
        for fp in listed.iter() {
            if session.is_some() && budget == 0 {
                break;
            }
            let result = self.read_partition(now, fp, request.replica, budget);
            if let Ok(data) = &result {
                budget = budget.saturating_sub(data.records.size());
                total += data.records.size() as u64;
            }
            if let Some(replica) = session {
                let state = result
                    .as_ref()
                    .ok()
                    .map(|d| (d.high_watermark, d.log_start_offset));
                let news = self.sessions.read(replica, &fp.partition, state);
                let quiet = result
                    .as_ref()
                    .is_ok_and(|d| d.records.is_empty() && d.diverging_epoch.is_none());
                if quiet && !news {
                    continue;
                }
            }
            partitions.push(FetchedPartition {
                partition: fp.partition.clone(),
                result,
            });
        }
        (
            FetchResponse {
                partitions,
                session_id: 0,
            },
            total,
        )
    }

    fn read_partition(
        &mut self,
        now: Millis,
        fp: &FetchPartition,
        replica: Option<NodeId>,
        budget: usize,
    ) -> Result<FetchedData> {
        let tp = &fp.partition;
        let partition = leader_partition(&mut self.partitions, &self.metadata, self.id, tp)?;
        // An offline log says so, also to a fetch at its end (which reads
        // nothing and would otherwise be answered empty).
        if let Some(reason) = partition.log.offline() {
            return Err(Error::LogOffline {
                reason: reason.to_string(),
            });
        }
        partition
            .replicas
            .check_fetch_epoch(fp.current_leader_epoch)?;
        let log_start_offset = partition.log.log_start_offset();
        let end = partition.log.log_end_offset();
        if let (Some(_), Some(last)) = (replica, fp.last_fetched_epoch) {
            let leader_end = partition.log.end_offset_for_epoch(last);
            if let Some(diverging) =
                diverging_epoch(last, fp.fetch_offset, leader_end, log_start_offset)
            {
                return Ok(FetchedData {
                    high_watermark: partition.log.high_watermark(),
                    log_start_offset,
                    records: Records::empty(),
                    diverging_epoch: Some(diverging),
                });
            }
        }
        if fp.fetch_offset < log_start_offset || fp.fetch_offset > end {
            return Err(Error::OffsetOutOfRange {
                offset: fp.fetch_offset,
                log_start_offset,
                log_end_offset: end,
            });
        }
        let mut proposal = None;
        if let Some(follower) = replica {
            let update = partition
                .replicas
                .on_follower_fetch(follower, fp.fetch_offset, end, now);
            if partition.apply(&update) {
                self.moved.insert(tp.clone());
            }
            proposal = update.proposal;
        }
        let high_watermark = partition.log.high_watermark();
        // Followers copy everything; consumers see only what is committed.
        let visible = if replica.is_some() {
            end
        } else {
            high_watermark
        };
        let max_bytes = (fp.max_bytes as usize).min(budget);
        let records = if fp.fetch_offset >= visible || max_bytes == 0 {
            Records::empty()
        } else {
            let mut records = partition.log.read(fp.fetch_offset, max_bytes)?;
            records.truncate_at_offset(visible);
            if replica.is_none() && self.config.metrics_enabled {
                partition.stats.bytes_out += records.size() as u64;
            }
            records
        };
        if let Some(proposal) = proposal {
            self.send_proposal(now, proposal);
        }
        Ok(FetchedData {
            high_watermark,
            log_start_offset,
            records,
            diverging_epoch: None,
        })
    }

    // ----- offsets and metadata -----------------------------------------

    /// Kafka's DeleteRecords on the leader: each log's start moves to the
    /// offset (at most the high watermark), whole segments below it are
    /// deleted; followers move theirs when their next fetch answer carries
    /// the new log start.
    pub(super) fn delete_records(
        &mut self,
        request: DeleteRecordsRequest,
    ) -> Vec<(TopicPartition, Result<u64>)> {
        request
            .partitions
            .into_iter()
            .map(|(tp, offset)| {
                let result = leader_partition(&mut self.partitions, &self.metadata, self.id, &tp)
                    .and_then(|p| {
                        let offset = match offset {
                            DELETE_TO_HIGH_WATERMARK => p.log.high_watermark(),
                            offset => offset,
                        };
                        p.log.delete_records_before(offset)
                    });
                (tp, result)
            })
            .collect()
    }

    pub(super) fn list_offsets(&mut self, request: ListOffsetsRequest) -> ListOffsetsResponse {
        let partitions = request
            .partitions
            .into_iter()
            .map(|(partition, spec)| {
                let result = self.lookup_offset(&partition, spec);
                ListedOffset { partition, result }
            })
            .collect();
        ListOffsetsResponse { partitions }
    }

    /// Where each asked leader epoch ended, from the partitions this broker
    /// leads (Kafka's OffsetForLeaderEpoch).
    pub(super) fn offsets_for_leader_epochs(
        &mut self,
        request: OffsetForLeaderEpochRequest,
    ) -> Vec<(TopicPartition, Result<Option<EpochEndOffset>>)> {
        request
            .partitions
            .into_iter()
            .map(|(tp, (current, epoch))| {
                let found = leader_partition(&mut self.partitions, &self.metadata, self.id, &tp)
                    .and_then(|partition| {
                        partition.replicas.check_fetch_epoch(current)?;
                        Ok(partition.log.end_offset_for_epoch(epoch).map(
                            |(leader_epoch, end_offset)| EpochEndOffset {
                                leader_epoch,
                                end_offset,
                            },
                        ))
                    });
                (tp, found)
            })
            .collect()
    }

    fn lookup_offset(
        &mut self,
        tp: &TopicPartition,
        spec: OffsetSpec,
    ) -> Result<Option<OffsetAndTimestamp>> {
        let partition = leader_partition(&mut self.partitions, &self.metadata, self.id, tp)?;
        let log = &partition.log;
        let at = |offset| {
            Some(OffsetAndTimestamp {
                offset,
                timestamp: None,
            })
        };
        Ok(match spec {
            OffsetSpec::Earliest => at(log.log_start_offset()),
            OffsetSpec::Latest => at(log.high_watermark()),
            OffsetSpec::Timestamp(ts) => log
                .offset_for_timestamp(ts)?
                .filter(|found| found.offset < log.high_watermark())
                .map(|found| OffsetAndTimestamp {
                    offset: found.offset,
                    timestamp: Some(found.timestamp),
                }),
        })
    }

    pub(super) fn describe(&self, request: MetadataRequest) -> MetadataResponse {
        let metadata = &self.metadata;
        let topics = match request.topics {
            None => metadata.topics.values().map(|t| (**t).clone()).collect(),
            Some(names) => names
                .iter()
                .filter_map(|name| metadata.topics.get(name.as_str()))
                .map(|t| (**t).clone())
                .collect(),
        };
        // Not heard from for a session: as far as this broker can tell,
        // there is no controller (Kafka's brokers answer -1 then).
        let silent = self.now.saturating_sub(self.controller_seen)
            > self.config.broker_session_timeout_ms as Millis;
        MetadataResponse {
            version: metadata.version,
            controller: metadata.controller.filter(|_| !silent),
            brokers: metadata.brokers.clone(),
            topics,
        }
    }
}

/// The hosted partition `tp` if broker `id` leads it, else the error a
/// client should see: unknown topic or partition, or not the leader.
pub(super) fn leader_partition<'a>(
    partitions: &'a mut std::collections::BTreeMap<TopicPartition, Partition>,
    metadata: &ClusterMetadata,
    id: NodeId,
    tp: &TopicPartition,
) -> Result<&'a mut Partition> {
    if let Some(p) = partitions.get_mut(tp)
        && p.replicas.is_leader()
    {
        return Ok(p);
    }
    match metadata.topics.get(tp.topic()) {
        None => Err(Error::UnknownTopicOrPartition {
            topic: tp.topic().to_string(),
        }),
        // A partition past the count this broker knows may have been added
        // since its metadata was sent: retriable, as Kafka's
        // `UNKNOWN_TOPIC_OR_PARTITION` (a client checks partitions against
        // its own metadata before it asks).
        Some(topic) if tp.partition() as usize >= topic.partitions.len() => {
            Err(Error::UnknownTopicOrPartition {
                topic: tp.topic().to_string(),
            })
        }
        Some(_) => Err(Error::NotLeaderOrFollower {
            broker: id,
            partition: tp.clone(),
        }),
    }
}

/// Where an `acks=all` append of `tp` (to reach `required`, written in
/// leader `epoch`) stands: committed once the HW reached it, failed with
/// `NotLeaderOrFollower` once the leadership is gone, with
/// `NotEnoughReplicasAfterAppend` once the ISR fell below
/// `min_insync_replicas`; `None` while it waits.
fn produce_outcome(
    partitions: &BTreeMap<TopicPartition, Partition>,
    broker: NodeId,
    tp: &TopicPartition,
    required: u64,
    epoch: i32,
) -> Option<Result<()>> {
    let not_leader = || Error::NotLeaderOrFollower {
        broker,
        partition: tp.clone(),
    };
    match partitions.get(tp) {
        Some(p) if !p.leads_in(epoch) => Some(Err(not_leader())),
        Some(p) if p.replicas.high_watermark() >= required => Some(Ok(())),
        Some(p) if p.replicas.check_acks_all().is_err() => {
            Some(Err(Error::NotEnoughReplicasAfterAppend {
                partition: tp.clone(),
            }))
        }
        Some(_) => None,
        None => Some(Err(not_leader())),
    }
}

/// Records `outcome` in `result` (a wait still open at the deadline times
/// out); whether the entry still waits.
fn settle_entry(
    result: &mut ProducedPartition,
    outcome: Option<Result<()>>,
    timed_out: bool,
) -> bool {
    match outcome {
        Some(Ok(())) => false,
        Some(Err(e)) => {
            result.result = Err(e);
            false
        }
        None if timed_out => {
            result.result = Err(Error::RequestTimedOut {
                operation: "replication of an acks=all produce",
                timeout_ms: 0,
            });
            false
        }
        None => true,
    }
}
