//! Consumer groups through the public API: membership, rebalancing,
//! liveness, committed offsets, coordinator failover, admin.
//!
//! Consumers are driven from the test thread in rounds (each polls once for
//! a few ms); after every round the partitions the consumers hold are checked
//! to be disjoint, and so is the coordinator's view. Waits are loops with a
//! deadline, never sleeps.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ferrolog::broker::BrokerConfig;
use ferrolog::client::{Bootstrap, OffsetReset, RebalanceListener};
use ferrolog::group::{GroupState, OffsetAndMetadata};
use ferrolog::protocol::{Envelope, OffsetCommitRequest, Request, Response};
use ferrolog::transport::{Endpoint, Inbox, Peer, Transport, undeliverable};
use ferrolog::{
    Admin, AutoOffsetReset, CONTROLLER_ID, Cluster, Consumer, ConsumerConfig, Error, NewTopic,
    Producer, ProducerConfig, ProducerRecord, TopicPartition,
};
use parking_lot::Mutex;

const WAIT: Duration = Duration::from_secs(20);

fn cluster(brokers: u32) -> Cluster {
    Cluster::builder()
        .brokers(brokers)
        .broker_config(BrokerConfig {
            offsets_topic_num_partitions: 5,
            broker_heartbeat_interval_ms: 50,
            broker_session_timeout_ms: 400,
            ..BrokerConfig::default()
        })
        .build()
        .unwrap()
}

fn create(cluster: &Cluster, topic: &str, partitions: u32) {
    Admin::new(cluster)
        .unwrap()
        .create_topic(
            NewTopic::new(topic, partitions)
                .replication_factor(cluster.broker_ids().len().min(3) as u16),
        )
        .unwrap();
}

fn member_config(group: &str) -> ConsumerConfig {
    ConsumerConfig {
        group_id: Some(group.to_string()),
        auto_offset_reset: AutoOffsetReset::Earliest,
        enable_auto_commit: false,
        session_timeout_ms: 600,
        heartbeat_interval_ms: 20,
        max_poll_interval_ms: 10_000,
        fetch_max_wait_ms: 20,
        ..ConsumerConfig::default()
    }
}

type Member = Consumer<String, String>;

fn member(cluster: &Cluster, config: ConsumerConfig, topics: &[&str]) -> Member {
    let mut consumer = Consumer::new(cluster, config).unwrap();
    consumer.subscribe(topics.iter().copied()).unwrap();
    consumer
}

/// Sends `n` keyed records `v{first}..` to `topic`, round robin over its
/// partitions, and waits until all are written.
fn produce(cluster: &Cluster, topic: &str, first: u32, n: u32) {
    let partitions = Admin::new(cluster)
        .unwrap()
        .describe_topic(topic)
        .unwrap()
        .partitions
        .len() as u32;
    let producer: Producer<String, String> =
        Producer::new(cluster, ProducerConfig::default()).unwrap();
    let sent: Vec<_> = (first..first + n)
        .map(|i| {
            producer
                .send(
                    ProducerRecord::new(topic.to_string(), format!("v{i}"))
                        .with_key(format!("k{i}"))
                        .with_partition(i % partitions),
                )
                .unwrap()
        })
        .collect();
    for future in sent {
        future.wait().unwrap();
    }
}

/// Panics if two consumers hold the same partition, or the coordinator
/// says two members own one.
fn check_disjoint(cluster: &Cluster, group: &str, members: &[&Member]) {
    let mut held: BTreeMap<TopicPartition, usize> = BTreeMap::new();
    for (i, m) in members.iter().enumerate() {
        for tp in m.assignment() {
            if let Some(other) = held.insert(tp.clone(), i) {
                panic!("{tp} is held by consumers {other} and {i}");
            }
        }
    }
    if let Ok(d) = Admin::new(cluster).unwrap().describe_group(group) {
        let mut owned = BTreeSet::new();
        for m in &d.description.members {
            for tp in m.assignment.iter().chain(&m.pending_revocation) {
                assert!(owned.insert(tp.clone()), "the coordinator gave {tp} twice");
            }
        }
    }
}

/// Polls every consumer in rounds until `done` holds, checking after each
/// round that no partition has two owners. Returns the records each read.
fn drive(
    cluster: &Cluster,
    group: &str,
    members: &mut [&mut Member],
    mut done: impl FnMut(&[&mut Member], &[Vec<(TopicPartition, u64)>]) -> bool,
) -> Vec<Vec<(TopicPartition, u64)>> {
    let deadline = Instant::now() + WAIT;
    let mut read = vec![Vec::new(); members.len()];
    loop {
        for (i, m) in members.iter_mut().enumerate() {
            for r in m.poll(Duration::from_millis(5)).unwrap() {
                read[i].push((r.topic_partition.clone(), r.offset));
            }
        }
        let view: Vec<&Member> = members.iter().map(|m| &**m).collect();
        check_disjoint(cluster, group, &view);
        if done(members, &read) {
            return read;
        }
        assert!(
            Instant::now() < deadline,
            "the group did not settle in time"
        );
    }
}

/// Whether the coordinator reports the group stable with `n` members.
fn stable(cluster: &Cluster, group: &str, n: usize) -> bool {
    Admin::new(cluster)
        .unwrap()
        .describe_group(group)
        .is_ok_and(|d| {
            d.description.state == GroupState::Stable && d.description.members.len() == n
        })
}

fn assigned(members: &[&mut Member]) -> Vec<usize> {
    members.iter().map(|m| m.assignment().len()).collect()
}

#[test]
fn three_partitions_and_four_members_leave_one_member_idle() {
    let cluster = cluster(1);
    create(&cluster, "t", 3);
    let mut ms: Vec<Member> = (0..4)
        .map(|_| member(&cluster, member_config("g"), &["t"]))
        .collect();
    let mut refs: Vec<&mut Member> = ms.iter_mut().collect();
    drive(&cluster, "g", &mut refs, |m, _| {
        stable(&cluster, "g", 4) && assigned(m).iter().sum::<usize>() == 3
    });
    let mut counts = assigned(&refs);
    counts.sort();
    assert_eq!(counts, [0, 1, 1, 1]);
}

#[test]
fn two_groups_each_receive_every_record() {
    let cluster = cluster(1);
    create(&cluster, "t", 4);
    produce(&cluster, "t", 0, 200);
    let mut a1 = member(&cluster, member_config("a"), &["t"]);
    let mut a2 = member(&cluster, member_config("a"), &["t"]);
    let mut b = member(&cluster, member_config("b"), &["t"]);
    let whole = |read: &[Vec<(TopicPartition, u64)>]| {
        read.iter().flatten().cloned().collect::<BTreeSet<_>>()
    };
    let read_a = drive(&cluster, "a", &mut [&mut a1, &mut a2], |_, r| {
        whole(r).len() == 200
    });
    let read_b = drive(&cluster, "b", &mut [&mut b], |_, r| whole(r).len() == 200);
    assert_eq!(whole(&read_a), whole(&read_b));
    // Within a group each record went to one member only.
    let total: usize = read_a.iter().map(Vec::len).sum();
    assert_eq!(total, 200, "a record was read by both members of group a");
}

#[test]
fn a_member_that_stops_polling_loses_its_partitions_after_max_poll_interval() {
    let cluster = cluster(1);
    create(&cluster, "t", 4);
    let config = ConsumerConfig {
        max_poll_interval_ms: 400,
        ..member_config("g")
    };
    let mut a = member(&cluster, config.clone(), &["t"]);
    let mut b = member(&cluster, config, &["t"]);
    drive(&cluster, "g", &mut [&mut a, &mut b], |m, _| {
        stable(&cluster, "g", 2) && assigned(m) == [2, 2]
    });
    // b stops polling (its heartbeat thread keeps running).
    let stopped = Instant::now();
    drive(&cluster, "g", &mut [&mut a], |m, _| {
        let view = [&*m[0], &b];
        check_disjoint(&cluster, "g", &view);
        assigned(m) == [4]
    });
    let took = stopped.elapsed();
    assert!(b.assignment().is_empty());
    assert!(
        took >= Duration::from_millis(350),
        "moved after {took:?}, before max_poll_interval_ms"
    );
}

/// A transport that can cut one client off the cluster.
#[derive(Debug)]
struct Switch {
    inner: Arc<dyn Transport>,
    cut: AtomicBool,
}

impl Transport for Switch {
    fn register(&self, peer: Peer, inbox: Arc<dyn Inbox>) -> ferrolog::Result<()> {
        self.inner.register(peer, inbox)
    }

    fn deregister(&self, peer: Peer) {
        self.inner.deregister(peer)
    }

    fn send(&self, envelope: Envelope) {
        if self.cut.load(Ordering::SeqCst) {
            // The client's connection is broken: its requests fail.
            if let Some(failed) = undeliverable(&envelope, "cut off") {
                self.inner.send(failed);
            }
            return;
        }
        self.inner.send(envelope)
    }
}

fn switched(cluster: &Cluster) -> (Arc<Switch>, Bootstrap) {
    let switch = Arc::new(Switch {
        inner: cluster.transport(),
        cut: AtomicBool::new(false),
    });
    let mut nodes = cluster.broker_ids();
    nodes.push(CONTROLLER_ID);
    (switch.clone(), Bootstrap::new(switch, nodes))
}

#[test]
fn a_member_that_stops_heartbeating_loses_its_partitions_after_session_timeout() {
    let cluster = cluster(1);
    create(&cluster, "t", 4);
    let mut a = member(&cluster, member_config("g"), &["t"]);
    let (switch, bootstrap) = switched(&cluster);
    let mut b: Member = Consumer::new(bootstrap, member_config("g")).unwrap();
    b.subscribe(["t"]).unwrap();
    drive(&cluster, "g", &mut [&mut a, &mut b], |m, _| {
        stable(&cluster, "g", 2) && assigned(m) == [2, 2]
    });
    switch.cut.store(true, Ordering::SeqCst);
    let cut = Instant::now();
    // Both keep polling; b's heartbeats are lost.
    drive(&cluster, "g", &mut [&mut a, &mut b], |m, _| {
        assigned(m) == [4, 0]
    });
    let took = cut.elapsed();
    assert!(
        took >= Duration::from_millis(550),
        "moved after {took:?}, before session_timeout_ms"
    );
}

#[test]
fn commit_then_crash_resumes_after_the_commit() {
    let cluster = cluster(1);
    create(&cluster, "t", 2);
    produce(&cluster, "t", 0, 100);
    let (switch, bootstrap) = switched(&cluster);
    let config = ConsumerConfig {
        max_poll_records: 10,
        ..member_config("g")
    };
    let mut first: Member = Consumer::new(bootstrap, config.clone()).unwrap();
    first.subscribe(["t"]).unwrap();
    let read = drive(&cluster, "g", &mut [&mut first], |_, r| r[0].len() >= 40);
    first.commit_sync().unwrap();
    let committed: BTreeMap<TopicPartition, u64> = first
        .committed(&first.assignment())
        .unwrap()
        .into_iter()
        .map(|(tp, o)| (tp, o.offset))
        .collect();
    // Crash: cut off, then gone without leaving or committing.
    switch.cut.store(true, Ordering::SeqCst);
    drop(first);
    let mut second = member(&cluster, config, &["t"]);
    let again = drive(&cluster, "g", &mut [&mut second], |_, r| {
        r[0].len() + read[0].len() >= 100
    });
    for (tp, offset) in &committed {
        let first_again = again[0]
            .iter()
            .filter(|(p, _)| p == tp)
            .map(|&(_, o)| o)
            .min()
            .unwrap();
        assert_eq!(
            first_again, *offset,
            "{tp} resumed elsewhere than its commit"
        );
    }
    let all: BTreeSet<_> = read[0].iter().chain(&again[0]).cloned().collect();
    assert_eq!(all.len(), 100);
}

#[test]
fn process_then_commit_redelivers_at_most_the_uncommitted_records() {
    let cluster = cluster(1);
    create(&cluster, "t", 1);
    produce(&cluster, "t", 0, 100);
    let (switch, bootstrap) = switched(&cluster);
    let config = ConsumerConfig {
        max_poll_records: 7,
        ..member_config("g")
    };
    let mut first: Member = Consumer::new(bootstrap, config.clone()).unwrap();
    first.subscribe(["t"]).unwrap();
    let mut processed = Vec::new();
    let mut uncommitted = 0;
    let deadline = Instant::now() + WAIT;
    while processed.len() < 50 {
        assert!(Instant::now() < deadline);
        let batch = first.poll(Duration::from_millis(10)).unwrap();
        processed.extend(batch.iter().map(|r| r.offset));
        if processed.len() >= 50 {
            // Crash after processing this batch, before committing it.
            uncommitted = batch.len();
            break;
        }
        first.commit_sync().unwrap();
    }
    switch.cut.store(true, Ordering::SeqCst);
    drop(first);
    let mut second = member(&cluster, config, &["t"]);
    let again = drive(&cluster, "g", &mut [&mut second], |_, r| {
        r[0].last().is_some_and(|(_, o)| *o == 99)
    });
    let again: Vec<u64> = again[0].iter().map(|(_, o)| *o).collect();
    let redelivered = again.iter().filter(|o| processed.contains(o)).count();
    assert!(redelivered <= uncommitted, "{redelivered} > {uncommitted}");
    assert_eq!(
        redelivered, uncommitted,
        "exactly the uncommitted batch comes again"
    );
    let all: BTreeSet<u64> = processed.iter().chain(&again).copied().collect();
    assert_eq!(all.len(), 100, "nothing is lost");
}

#[test]
fn a_commit_from_a_fenced_member_or_a_stale_generation_is_rejected() {
    let cluster = cluster(1);
    create(&cluster, "t", 2);
    produce(&cluster, "t", 0, 20);
    let (switch, bootstrap) = switched(&cluster);
    let mut zombie: Member = Consumer::new(bootstrap, member_config("g")).unwrap();
    zombie.subscribe(["t"]).unwrap();
    let mut live = member(&cluster, member_config("g"), &["t"]);
    drive(&cluster, "g", &mut [&mut zombie, &mut live], |m, r| {
        assigned(m) == [1, 1] && r.iter().flatten().collect::<BTreeSet<_>>().len() == 20
    });
    switch.cut.store(true, Ordering::SeqCst);
    drive(&cluster, "g", &mut [&mut live], |m, _| {
        stable(&cluster, "g", 1) && assigned(m) == [2]
    });
    live.commit_sync().unwrap();
    let committed = live.committed(&live.assignment()).unwrap();
    switch.cut.store(false, Ordering::SeqCst);
    // The zombie still has positions for its old partition; committing them
    // is refused, and nothing changes.
    let err = zombie.commit_sync().unwrap_err();
    assert!(
        matches!(
            err,
            Error::UnknownMemberId { .. } | Error::FencedMemberEpoch { .. }
        ),
        "{err}"
    );
    assert_eq!(live.committed(&live.assignment()).unwrap(), committed);

    // A commit carrying a generation the member no longer has.
    let meta = live.group_metadata().unwrap();
    assert!(meta.generation_id >= 3, "{meta:?}");
    let admin_view = Admin::new(&cluster).unwrap().describe_group("g").unwrap();
    let coordinator = admin_view.description.coordinator;
    let tp = TopicPartition::new("t", 0).unwrap();
    for stale in [meta.generation_id - 2, meta.generation_id + 1] {
        let request = Request::OffsetCommit(OffsetCommitRequest {
            group: "g".into(),
            member_id: meta.member_id.clone(),
            member_epoch: stale,
            offsets: vec![(tp.clone(), OffsetAndMetadata::new(0))],
        });
        let endpoint = Endpoint::new(cluster.transport()).unwrap();
        let answer: ferrolog::Result<Response> =
            endpoint.call(coordinator, request, Duration::from_secs(5));
        assert!(
            matches!(answer, Err(Error::FencedMemberEpoch { epoch, .. }) if epoch == stale),
            "{answer:?}"
        );
    }
    assert_eq!(live.committed(&live.assignment()).unwrap(), committed);
}

#[test]
fn a_new_topic_matching_the_pattern_and_new_partitions_trigger_a_rebalance() {
    let cluster = cluster(1);
    create(&cluster, "metrics-a", 2);
    create(&cluster, "other", 2);
    let mut c: Member = Consumer::new(&cluster, member_config("g")).unwrap();
    c.subscribe_pattern("metrics-.*").unwrap();
    drive(&cluster, "g", &mut [&mut c], |m, _| assigned(m) == [2]);
    create(&cluster, "metrics-b", 1);
    produce(&cluster, "metrics-b", 0, 5);
    let read = drive(&cluster, "g", &mut [&mut c], |m, r| {
        assigned(m) == [3] && r[0].len() == 5
    });
    assert!(read[0].iter().all(|(tp, _)| tp.topic() == "metrics-b"));
    Admin::new(&cluster)
        .unwrap()
        .create_partitions("metrics-a", 4)
        .unwrap();
    drive(&cluster, "g", &mut [&mut c], |m, _| assigned(m) == [5]);
    assert!(c.assignment().iter().all(|tp| tp.topic() != "other"));
    assert!(matches!(
        c.subscribe_pattern("metrics-("),
        Err(Error::InvalidPattern { .. })
    ));
}

#[test]
fn committed_offsets_survive_the_coordinator_brokers_crash() {
    let cluster = cluster(3);
    create(&cluster, "t", 3);
    produce(&cluster, "t", 0, 60);
    let mut c = member(&cluster, member_config("g"), &["t"]);
    drive(&cluster, "g", &mut [&mut c], |_, r| r[0].len() == 60);
    c.commit_sync().unwrap();
    let committed = c.committed(&c.assignment()).unwrap();
    assert_eq!(committed.values().map(|o| o.offset).sum::<u64>(), 60);
    let coordinator = Admin::new(&cluster)
        .unwrap()
        .describe_group("g")
        .unwrap()
        .description
        .coordinator;
    cluster.crash_broker(coordinator).unwrap();
    // A new coordinator takes over from its replica of the partition.
    let deadline = Instant::now() + WAIT;
    let moved = loop {
        if let Ok(d) = Admin::new(&cluster).unwrap().describe_group("g")
            && d.description.coordinator != coordinator
        {
            break d;
        }
        assert!(Instant::now() < deadline, "no new coordinator");
    };
    let offsets: BTreeMap<_, _> = moved.description.offsets.clone();
    assert_eq!(offsets, committed);
    // The member goes on with the new coordinator, and a new member of the
    // group starts from the commits.
    produce(&cluster, "t", 60, 30);
    drive(&cluster, "g", &mut [&mut c], |_, r| r[0].len() == 30);
    c.commit_sync().unwrap();
    drop(c);
    let mut d = member(&cluster, member_config("g"), &["t"]);
    produce(&cluster, "t", 90, 3);
    let read = drive(&cluster, "g", &mut [&mut d], |_, r| r[0].len() == 3);
    assert!(read[0].iter().all(|(_, o)| *o >= 30));
}

/// A listener call: 'R' revoked or 'A' assigned, with the partitions.
type Event = (char, Vec<TopicPartition>);

/// Records listener calls in order.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl RebalanceListener<String, String> for Events {
    fn on_partitions_revoked(&mut self, _: &mut Member, partitions: &[TopicPartition]) {
        self.0.lock().push(('R', partitions.to_vec()));
    }

    fn on_partitions_assigned(&mut self, _: &mut Member, partitions: &[TopicPartition]) {
        self.0.lock().push(('A', partitions.to_vec()));
    }
}

fn with_listener(cluster: &Cluster, config: ConsumerConfig, events: &Events) -> Member {
    let mut consumer = member(cluster, config, &["t"]);
    consumer.set_rebalance_listener(events.clone());
    consumer
}

#[test]
fn cooperative_sticky_keeps_unaffected_partitions_flowing_and_eager_revokes_all() {
    for (assignor, cooperative) in [("cooperative-sticky", true), ("range", false)] {
        let cluster = cluster(1);
        create(&cluster, "t", 6);
        // Auto-commit commits what was read before a partition is revoked,
        // so its next owner continues from there.
        let config = ConsumerConfig {
            partition_assignment_strategy: assignor.into(),
            enable_auto_commit: true,
            ..member_config("g")
        };
        let (e1, e2) = (Events::default(), Events::default());
        let mut m1 = with_listener(&cluster, config.clone(), &e1);
        let mut m2 = with_listener(&cluster, config.clone(), &e2);
        drive(&cluster, "g", &mut [&mut m1, &mut m2], |m, _| {
            stable(&cluster, "g", 2) && assigned(m) == [3, 3]
        });
        let before = [m1.assignment(), m2.assignment()];
        e1.0.lock().clear();
        e2.0.lock().clear();
        produce(&cluster, "t", 0, 60);
        let mut m3 = member(&cluster, config, &["t"]);
        let read = drive(&cluster, "g", &mut [&mut m1, &mut m2, &mut m3], |m, r| {
            stable(&cluster, "g", 3)
                && assigned(m) == [2, 2, 2]
                && r.iter().map(Vec::len).sum::<usize>() >= 60
        });
        for (i, events) in [&e1, &e2].iter().enumerate() {
            let events = events.0.lock().clone();
            let revoked: BTreeSet<TopicPartition> = events
                .iter()
                .filter(|(kind, _)| *kind == 'R')
                .flat_map(|(_, p)| p.clone())
                .collect();
            let first_revoke = events.iter().position(|(k, _)| *k == 'R');
            let first_assign = events.iter().position(|(k, _)| *k == 'A');
            if cooperative {
                // Only the partition that moved was revoked; the kept ones
                // were never interrupted.
                assert_eq!(revoked.len(), 1, "member {i}: {events:?}");
                let kept: BTreeSet<_> = before[i]
                    .iter()
                    .filter(|tp| !revoked.contains(tp))
                    .collect();
                assert_eq!(kept.len(), 2);
                assert!(
                    first_assign.is_none(),
                    "nothing new for member {i}: {events:?}"
                );
            } else {
                // Eager: everything is revoked first, then assigned again.
                assert_eq!(revoked, before[i].iter().cloned().collect(), "member {i}");
                assert!(first_revoke < first_assign, "member {i}: {events:?}");
            }
        }
        // Nothing read twice within the group: revoked partitions were
        // handed over at their positions.
        let all: Vec<_> = read.iter().flatten().collect();
        let unique: BTreeSet<_> = all.iter().collect();
        assert_eq!(all.len(), unique.len(), "{assignor}: a record came twice");
    }
}

#[test]
fn a_static_member_restarting_within_its_session_keeps_its_partitions_without_a_rebalance() {
    let cluster = cluster(1);
    create(&cluster, "t", 4);
    let config = ConsumerConfig {
        group_instance_id: Some("instance-a".into()),
        session_timeout_ms: 3_000,
        ..member_config("g")
    };
    let mut a = member(&cluster, config.clone(), &["t"]);
    let events = Events::default();
    let mut b = with_listener(&cluster, member_config("g"), &events);
    drive(&cluster, "g", &mut [&mut a, &mut b], |m, _| {
        stable(&cluster, "g", 2) && assigned(m) == [2, 2]
    });
    let before = a.assignment();
    let epoch = Admin::new(&cluster)
        .unwrap()
        .describe_group("g")
        .unwrap()
        .description
        .group_epoch;
    events.0.lock().clear();
    a.close();
    let mut restarted = member(&cluster, config, &["t"]);
    drive(&cluster, "g", &mut [&mut restarted, &mut b], |m, _| {
        stable(&cluster, "g", 2) && assigned(m) == [2, 2]
    });
    assert_eq!(restarted.assignment(), before);
    let after = Admin::new(&cluster).unwrap().describe_group("g").unwrap();
    assert_eq!(after.description.group_epoch, epoch, "no rebalance");
    assert!(events.0.lock().is_empty(), "b was not disturbed");
}

#[test]
fn admin_lists_and_describes_groups_with_lag_and_resets_offsets() {
    let cluster = cluster(1);
    create(&cluster, "t", 2);
    produce(&cluster, "t", 0, 40);
    let admin = Admin::new(&cluster).unwrap();
    let mut c: Member = Consumer::new(
        &cluster,
        ConsumerConfig {
            max_poll_records: 5,
            client_id: "reader".into(),
            ..member_config("g")
        },
    )
    .unwrap();
    c.subscribe(["t"]).unwrap();
    drive(&cluster, "g", &mut [&mut c], |_, r| r[0].len() >= 10);
    c.commit_sync().unwrap();
    let positions: BTreeMap<TopicPartition, u64> = c
        .assignment()
        .into_iter()
        .map(|tp| {
            let p = c.position(&tp).unwrap();
            (tp, p)
        })
        .collect();
    let listed = admin.list_groups().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].group.as_str(), listed[0].members), ("g", 1));
    let d = admin.describe_group("g").unwrap();
    assert_eq!(d.partitions.len(), 2);
    for lag in &d.partitions {
        assert_eq!(lag.current_offset, Some(positions[&lag.partition]));
        assert_eq!(lag.log_end_offset, 20);
        assert_eq!(lag.lag, Some(20 - positions[&lag.partition]));
        assert_eq!(lag.client_id.as_deref(), Some("reader"));
        assert!(lag.member_id.is_some());
    }
    let tps: Vec<TopicPartition> = positions.keys().cloned().collect();
    assert!(matches!(
        admin.reset_group_offsets("g", tps.clone(), OffsetReset::Earliest),
        Err(Error::NonEmptyGroup { members: 1, .. })
    ));
    c.close();
    let reset = |to| admin.reset_group_offsets("g", tps.clone(), to).unwrap();
    assert!(reset(OffsetReset::Earliest).values().all(|&o| o == 0));
    assert!(reset(OffsetReset::Latest).values().all(|&o| o == 20));
    assert!(reset(OffsetReset::Offset(7)).values().all(|&o| o == 7));
    assert!(reset(OffsetReset::Offset(500)).values().all(|&o| o == 20));
    assert!(reset(OffsetReset::Timestamp(0)).values().all(|&o| o == 0));
    let d = admin.describe_group("g").unwrap();
    assert_eq!(d.description.state, GroupState::Empty);
    assert!(
        d.partitions
            .iter()
            .all(|l| l.current_offset == Some(0) && l.member_id.is_none())
    );
    // A consumer of the group starts from the reset offsets.
    let mut again = member(&cluster, member_config("g"), &["t"]);
    let read = drive(&cluster, "g", &mut [&mut again], |_, r| r[0].len() == 40);
    assert_eq!(read[0].len(), 40);
    assert!(matches!(
        admin.describe_group("nobody"),
        Err(Error::GroupIdNotFound { .. })
    ));
}

#[test]
fn unknown_assignors_and_group_ids_get_their_own_errors_and_custom_assignors_work() {
    let cluster = Cluster::builder()
        .assignor(ferrolog::group::RoundRobinAssignor)
        .broker_config(BrokerConfig {
            offsets_topic_num_partitions: 3,
            ..BrokerConfig::default()
        })
        .build()
        .unwrap();
    create(&cluster, "t", 2);
    let mut bad: Member = Consumer::new(
        &cluster,
        ConsumerConfig {
            partition_assignment_strategy: "no-such".into(),
            ..member_config("g")
        },
    )
    .unwrap();
    bad.subscribe(["t"]).unwrap();
    let deadline = Instant::now() + WAIT;
    let err = loop {
        match bad.poll(Duration::from_millis(10)) {
            Err(e) => break e,
            Ok(_) => assert!(Instant::now() < deadline),
        }
    };
    assert!(
        matches!(err, Error::InconsistentGroupProtocol { .. }),
        "{err}"
    );
    let no_group: Result<Member, _> = Consumer::new(
        &cluster,
        ConsumerConfig {
            group_id: Some(String::new()),
            ..ConsumerConfig::default()
        },
    );
    assert!(matches!(no_group, Err(Error::InvalidGroupId { .. })));
    let mut plain: Member = Consumer::new(&cluster, ConsumerConfig::default()).unwrap();
    assert!(matches!(
        plain.subscribe(["t"]),
        Err(Error::InvalidGroupId { .. })
    ));
    let mut rr = member(
        &cluster,
        ConsumerConfig {
            partition_assignment_strategy: "roundrobin".into(),
            ..member_config("h")
        },
        &["t"],
    );
    drive(&cluster, "h", &mut [&mut rr], |m, _| assigned(m) == [2]);
}

#[test]
fn membership_churn_never_gives_a_partition_to_two_members() {
    // Members join, leave and rejoin; after every round of polls the
    // consumers' partitions are disjoint (checked inside `drive`).
    let cluster = cluster(1);
    create(&cluster, "t", 7);
    produce(&cluster, "t", 0, 70);
    for assignor in ["range", "cooperative-sticky"] {
        let group = format!("churn-{assignor}");
        let config = ConsumerConfig {
            partition_assignment_strategy: assignor.into(),
            ..member_config(&group)
        };
        let mut pool: Vec<Option<Member>> = (0..5).map(|_| None).collect();
        // A fixed schedule of joins (Some) and leaves (None) by slot.
        let schedule = [0, 1, 2, 3, 1, 4, 0, 2, 1, 3, 4, 0];
        for (step, &slot) in schedule.iter().enumerate() {
            pool[slot] = match pool[slot].take() {
                Some(mut m) => {
                    m.close();
                    None
                }
                None => Some(member(&cluster, config.clone(), &["t"])),
            };
            let live = pool.iter().flatten().count();
            let mut refs: Vec<&mut Member> = pool.iter_mut().flatten().collect();
            drive(&cluster, &group, &mut refs, |m, _| {
                live == 0
                    || (stable(&cluster, &group, live) && assigned(m).iter().sum::<usize>() == 7)
            });
            let counts = assigned(&refs);
            if live > 0 {
                let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
                assert!(max - min <= 1, "step {step}: unbalanced {counts:?}");
            }
        }
    }
}

/// Offset commits are validated and groups survive their topics (issue
/// 15): a commit naming a partition that does not exist is
/// `UnknownTopicOrPartition` (or `InvalidPartition`), an offset past the high watermark
/// `OffsetOutOfRange`, one naming a partition another member owns is
/// `PartitionNotAssigned`, and none writes anything; after the group's
/// topic is deleted the group still describes (that partition's lag
/// unknown) and its offsets of the deleted topic can be deleted; an empty
/// group is deleted with its offsets; a group with members refuses both
/// with `NonEmptyGroup`.
#[test]
fn commits_are_validated_and_a_group_outlives_its_deleted_topic() {
    let cluster = cluster(1);
    create(&cluster, "t", 2);
    create(&cluster, "gone", 1);
    produce(&cluster, "t", 0, 20);
    produce(&cluster, "gone", 0, 5);
    let admin = Admin::new(&cluster).unwrap();
    let mut a = member(&cluster, member_config("g"), &["t", "gone"]);
    drive(&cluster, "g", &mut [&mut a], |_, r| r[0].len() >= 25);
    a.commit_sync().unwrap();
    let t0 = TopicPartition::new("t", 0).unwrap();
    for (bad, what) in [
        (TopicPartition::new("t", 7).unwrap(), "no such partition"),
        (
            TopicPartition::new("never-created", 0).unwrap(),
            "no such topic",
        ),
    ] {
        let refused = a.commit_offsets_sync([
            (t0.clone(), OffsetAndMetadata::new(3)),
            (bad, OffsetAndMetadata::new(1)),
        ]);
        // Kafka's code 3 either way; the partition's own variant says how
        // many there are.
        assert!(
            matches!(
                refused,
                Err(Error::UnknownTopicOrPartition { .. }
                    | Error::InvalidPartition {
                        partition: 7,
                        partition_count: 2,
                        ..
                    })
            ),
            "{what}: {refused:?}"
        );
        assert_eq!(refused.unwrap_err().code(), 3);
    }
    let beyond = a.commit_offsets_sync([(t0.clone(), OffsetAndMetadata::new(11))]);
    assert!(
        matches!(
            beyond,
            Err(Error::OffsetOutOfRange {
                offset: 11,
                log_start_offset: 0,
                log_end_offset: 10,
            })
        ),
        "{beyond:?}"
    );
    let t0_offset = |c: &Member| c.committed([&t0]).unwrap()[&t0].offset;
    assert_eq!(t0_offset(&a), 10, "nothing of a refused commit is written");

    // A second member takes partitions; committing one of them from the
    // first member is refused.
    let mut b = member(&cluster, member_config("g"), &["t", "gone"]);
    drive(&cluster, "g", &mut [&mut a, &mut b], |m, _| {
        m[0].assignment().len() + m[1].assignment().len() == 3 && !m[1].assignment().is_empty()
    });
    let taken = b.assignment()[0].clone();
    let refused = a.commit_offsets_sync([(taken.clone(), OffsetAndMetadata::new(0))]);
    assert!(
        matches!(&refused, Err(Error::PartitionNotAssigned { partition }) if *partition == taken),
        "{refused:?}"
    );

    // Both stop; the topic "gone" is deleted: the group still describes.
    a.close();
    b.close();
    admin.delete_topic("gone").unwrap();
    let gone = TopicPartition::new("gone", 0).unwrap();
    let d = admin.describe_group("g").unwrap();
    let lag = |p: &TopicPartition| d.partitions.iter().find(|l| l.partition == *p).cloned();
    assert_eq!(lag(&gone).unwrap().lag, None, "no end to measure against");
    assert_eq!(lag(&t0).unwrap().lag, Some(0));
    admin.delete_group_offsets("g", [gone.clone()]).unwrap();
    let d = admin.describe_group("g").unwrap();
    assert!(d.partitions.iter().all(|l| l.partition != gone));
    // The whole group goes; describing it then finds nothing.
    cluster.consumer_group("g").delete().unwrap();
    assert!(matches!(
        admin.describe_group("g"),
        Err(Error::GroupIdNotFound { .. })
    ));

    // With a member, neither is allowed.
    let mut c = member(&cluster, member_config("h"), &["t"]);
    drive(&cluster, "h", &mut [&mut c], |m, _| {
        !m[0].assignment().is_empty()
    });
    assert!(matches!(
        admin.delete_group("h"),
        Err(Error::NonEmptyGroup { members: 1, .. })
    ));
    assert!(matches!(
        admin.delete_group_offsets("h", [t0.clone()]),
        Err(Error::NonEmptyGroup { .. })
    ));
}
