//! The deterministic simulator as the main correctness test: many seeds of
//! a 3-broker cluster under network faults and crashes, checked for lost,
//! duplicated and inconsistent records; and one seed run twice gives the
//! same trace.

use ferrolog::sim::{AnomalyKind, PlantedBug, SimConfig, run, run_seeds};

/// How many seeds `cargo test` runs (more with `FERROLOG_SIM_SEEDS`).
const SEEDS: u64 = 40;

#[test]
fn seeds_find_no_anomaly() {
    let seeds = std::env::var("FERROLOG_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEEDS);
    let from = std::env::var("FERROLOG_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let summary = run_seeds(from..from + seeds);
    println!("{summary}");
    let failed: Vec<String> = summary.failed.iter().map(|r| r.to_string()).collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(summary.acked > 0, "records were acknowledged");
}

/// Seeds that found bugs, kept as regression tests:
/// - 13 and 110: an acknowledged acks=all record lost — a leader whose ISR
///   expansion was committed by the controller but whose answer was lost
///   went back to the smaller ISR, acknowledged a record the new member
///   lacked, and the controller then elected that member;
/// - 8, 12, 20, 61, 66, 68, 81, 90, 143, 226, 252, 258, 267, 269: sends
///   that never finished — a new leader with no state for an idempotent
///   producer took a later batch first, then refused the earlier ones as
///   out of order forever (and the log had the records out of order);
/// - 339, 344, 501, 567, 996: sends that never finished — an idempotent
///   producer sent more batches after one whose outcome it did not know
///   than the broker remembers, so the broker no longer recognised its
///   retry as a duplicate and refused it forever;
/// - 885: a consumer core whose backoff had ended kept asking for a timer
///   in the past while its records waited to be drained (a busy loop).
const REGRESSIONS: &[u64] = &[
    8, 12, 13, 20, 61, 66, 68, 81, 90, 110, 143, 226, 252, 258, 267, 269, 339, 344, 501, 567, 885,
    996,
];

/// (The seeds below were found before pauses, clock jumps, controller
/// crashes, membership changes and the acks=1 producer: they run without
/// them, in the world they were found in.)
///
/// Seeds that found bugs once the group joined the simulation (before
/// slow requests did), kept as regression tests:
/// - 40: a group member whose committed offset lay past the end of a
///   deposed leader that did not know it yet reset to the start of the
///   partition and read it again (a poll out of order, then a committed
///   offset going back);
/// - 339: a broker that restarted and loaded its group shard again under
///   the same leader epoch handed a joining member the id of a member that
///   still held its partition (two owners at once).
const GROUP_REGRESSIONS: &[u64] = &[40, 339];

/// Seeds on which the checker itself was wrong, kept so that it stays
/// right: a member's commit that took the slow path and was overtaken by
/// its own later commit lowered the committed offset, which the first
/// version of the check took for a coordinator fault (a TCP connection
/// would have kept the two in order; no coordinator can tell).
const CHECKER_REGRESSIONS: &[u64] = &[1992, 3175, 3784, 4080, 5763, 7107, 7532, 8096, 9832];

/// Seeds that found bugs once pauses, clock jumps, controller crashes,
/// membership changes and an acks=1 producer joined the simulation, kept as
/// regression tests (in the default world of then):
/// - 71: a partition added while two of three brokers were fenced got one
///   replica, under `min_insync_replicas` 2 for good (sends never
///   finished); new partitions now keep the topic's replication factor or
///   fail with `InvalidReplicationFactor`;
/// - 215: a broker whose metadata did not have a new partition yet refused
///   produces to it with the non-retriable `InvalidPartition`; the
///   idempotent producer failed those batches and its later ones to the
///   partition were out of sequence forever. A broker now answers
///   `UnknownTopicOrPartition` (retriable), as Kafka's brokers do.
///
/// And two on which the simulator itself was wrong: 235, a partition added
/// whose answer the controller's crash lost was missing from the group's
/// "settled" check (the simulator now learns the count from the
/// controller); 2970 (of a 10,000-seed run), a commit answered
/// `NotCoordinator` (its coordinator lost the partition while the commit
/// replicated) was taken as not applied, though the new coordinator had it,
/// so the next member's commit from that offset looked backwards.
const MEMBERSHIP_REGRESSIONS: &[u64] = &[71, 215, 235, 2970];

/// Seeds that found bugs once storage faults (power losses, failing and
/// full disks) joined the simulation, kept as regression tests in the
/// world of then:
/// - 908: a leader's pending ISR addition (of a follower with 1 record) was
///   dropped when metadata arrived again at the same partition epoch; the
///   high watermark moved to 11 over the old ISR, the controller then
///   committed the addition and made that follower leader, and it wrote
///   other records at offsets the old leader had committed (replicas
///   diverged below the high watermark). Only a newer partition epoch
///   settles a pending change now.
const STORAGE_REGRESSIONS: &[u64] = &[908];

/// Seeds that found bugs once groups that commit first and a second topic
/// joined the simulation (in a 10,000-seed run), kept as regression tests
/// in the world of then:
/// - 6747: a follower paused for 1.4 s took, on resuming, a fetch answer its
///   leader had sent before crashing, when the same broker led again in a
///   newer epoch: it appended the old leadership's records at offsets the
///   new one had filled otherwise (replicas diverged below the high
///   watermark). A follower now applies a partition's answer only if the
///   partition still has the leader epoch and log end offset it fetched
///   with, as Kafka's fetcher does.
/// - 3880: a broker whose log went offline just before healing halted after
///   it, and nobody restarted it (the simulator now restarts halted brokers
///   while the cluster settles, as an operator would);
/// - 6200: a member's commit that took the slow path and was accepted after
///   its own later one lowered the committed offset, and the next owner
///   processed those records again (the checker now allows that one
///   reprocessing: one TCP connection keeps a member's commits in order).
const TOPICS_REGRESSIONS: &[u64] = &[3880, 6200, 6747];

/// Seeds that found bugs once applications that stop polling joined, kept
/// in the default world:
/// - 9330 (of a 10,000-seed run): the checker gave an overtaken commit's
///   allowance to reprocess only to records processed by then; the member
///   processed them just after (its later commit's answer came first), and
///   their next processing looked like a second one. The allowance now
///   covers the whole range the commit put back.
const STALLS_REGRESSIONS: &[u64] = &[9330];

/// Seeds that found bugs in follower fetch sessions (in the 1,000 seeds of
/// CI), kept in the default world:
/// - 333 and 519: to keep idle partitions' followers in the ISR, the leader
///   took the offset a follower's session last listed as that follower's
///   position; a follower that had listed it in an older leader epoch (its
///   log since diverged) counted as holding the leader's records, the high
///   watermark passed records it did not have, and replicas diverged below
///   it. Now only a position a fetch established in the current epoch
///   counts; the session only says the follower is still fetching.
const SESSION_REGRESSIONS: &[u64] = &[333, 519];

/// Seeds that found bugs once the controller quorum joined the simulation
/// (in its first world: no voter cut off from the others alone), kept as
/// regression tests:
/// - 3: a broker that registered itself again (every broker of a quorum
///   does at each start) was refused as "already registered" for want of an
///   address, and registered again forever without heartbeating;
/// - 11: an idempotent producer kept asking the first voter, not the
///   active controller, for its producer id (its metadata named none yet)
///   and never produced; it now refreshes metadata when refused;
/// - 331 and 764: an active controller cut off from the other voters
///   answered heartbeats with metadata pushes, and metadata requests,
///   from records the quorum never committed; brokers led partitions in a
///   leader epoch the next controller never knew, and replicas diverged
///   below the high watermark. Nothing leaves an active controller now
///   before the records it was made from commit.
const QUORUM_REGRESSIONS: &[u64] = &[3, 11, 331, 764];

/// The world of the first runs with a controller quorum.
fn before_voter_cuts(seed: u64) -> SimConfig {
    SimConfig {
        voter_cuts: false,
        ..SimConfig::new(seed)
    }
}

/// The world of the seeds kept from before the controller quorum.
fn before_quorum(seed: u64) -> SimConfig {
    SimConfig {
        controller_quorum_per_million: 0,
        ..SimConfig::new(seed)
    }
}

/// The world of the seeds kept from before graceful stops.
fn before_graceful_stops(seed: u64) -> SimConfig {
    SimConfig {
        graceful_stops: false,
        ..before_quorum(seed)
    }
}

/// The world of the seeds kept from before applications that stop polling.
fn before_member_stalls(seed: u64) -> SimConfig {
    SimConfig {
        member_stalls: false,
        ..before_graceful_stops(seed)
    }
}

/// The world of the seeds kept from before groups that commit first and
/// several topics.
fn before_commit_first(seed: u64) -> SimConfig {
    SimConfig {
        commit_first_groups: false,
        topics: 1,
        ..before_member_stalls(seed)
    }
}

/// The world of the seeds kept from before storage faults.
fn before_storage(seed: u64) -> SimConfig {
    SimConfig {
        storage_faults: false,
        ..before_commit_first(seed)
    }
}

/// The world of the seeds kept from before pauses, clock jumps, controller
/// crashes, membership changes and the acks=1 producer.
fn before_pauses(seed: u64) -> SimConfig {
    SimConfig {
        pauses: false,
        clock_jumps: false,
        controller_crashes: false,
        leader_acks_producers: 0,
        membership_changes: false,
        ..before_storage(seed)
    }
}

#[test]
fn seeds_that_found_bugs_stay_clean() {
    for &seed in REGRESSIONS {
        // The world they were found in: no group.
        let report = run(&SimConfig {
            group_members: 0,
            ..before_pauses(seed)
        });
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in CHECKER_REGRESSIONS {
        let report = run(&before_pauses(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in MEMBERSHIP_REGRESSIONS {
        let report = run(&before_storage(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in STORAGE_REGRESSIONS {
        let report = run(&before_commit_first(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in TOPICS_REGRESSIONS {
        let report = run(&before_member_stalls(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in STALLS_REGRESSIONS {
        let report = run(&before_graceful_stops(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in SESSION_REGRESSIONS {
        let report = run(&before_quorum(seed));
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in QUORUM_REGRESSIONS {
        let report = run(&before_voter_cuts(seed));
        assert!(report.controller_quorum, "{report}");
        assert!(report.anomalies.is_empty(), "{report}");
    }
    for &seed in GROUP_REGRESSIONS {
        let report = run(&SimConfig {
            slow_request_per_million: 0,
            ..before_pauses(seed)
        });
        assert!(report.anomalies.is_empty(), "{report}");
    }
}

#[test]
fn a_seed_replays_with_the_same_trace() {
    let first = run(&SimConfig::new(1234));
    let again = run(&SimConfig::new(1234));
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert_ne!(first.trace_hash, run(&SimConfig::new(1235)).trace_hash);
}

/// Every run's controller a quorum of three voters.
fn quorum(seed: u64) -> SimConfig {
    SimConfig {
        controller_quorum_per_million: 1_000_000,
        ..SimConfig::new(seed)
    }
}

#[test]
fn a_quorum_seed_replays_with_the_same_trace_and_elects_controllers() {
    // raft-rs draws election timeouts from a thread RNG; the quorum makes
    // the draw a constant, so a quorum run replays too.
    let first = run(&quorum(1234));
    let again = run(&quorum(1234));
    assert!(first.controller_quorum);
    assert!(first.controller_elections >= 1, "{first}");
    assert_eq!(first.trace_hash, again.trace_hash);
    assert_eq!(first.events, again.events);
    assert!(first.anomalies.is_empty(), "{first}");
}

/// Finds planted `bug` within 1,000 seeds and checks that the checker names
/// it `kind`. (One test per bug, so that they run side by side.)
fn planted_bug_is_found(bug: PlantedBug, kind: AnomalyKind) {
    planted_bug_is_found_in(bug, kind, SimConfig::new);
}

/// [`planted_bug_is_found`] in the world `world` makes for a seed.
fn planted_bug_is_found_in(bug: PlantedBug, kind: AnomalyKind, world: fn(u64) -> SimConfig) {
    let found = (0..1_000).find_map(|seed| {
        let report = run(&SimConfig {
            planted: Some(bug),
            ..world(seed)
        });
        report.anomalies.iter().find(|a| a.kind == kind).map(|a| {
            format!(
                "seed {seed}: {:?} at event {}: {}",
                a.kind, a.event, a.detail
            )
        })
    });
    let found = found.unwrap_or_else(|| panic!("{bug:?}: no {kind:?} in 1,000 seeds"));
    println!("planted {bug:?}: found by {found}");
}

#[test]
fn planted_high_watermark_from_the_leader_alone_is_found() {
    planted_bug_is_found(
        PlantedBug::HighWatermarkFromLeaderAlone,
        AnomalyKind::InconsistentOffsets,
    );
}

#[test]
fn planted_truncation_to_the_high_watermark_is_found() {
    planted_bug_is_found(PlantedBug::TruncateToHighWatermark, AnomalyKind::LostWrite);
}

#[test]
fn planted_stale_leader_epoch_accepted_is_found() {
    planted_bug_is_found(PlantedBug::StaleLeaderEpochAccepted, AnomalyKind::LostWrite);
}

#[test]
fn planted_duplicate_batch_appended_is_found() {
    planted_bug_is_found(PlantedBug::DuplicateBatchAppended, AnomalyKind::Duplicate);
}

#[test]
fn planted_commit_answered_before_replicated_is_found() {
    // A failover loses a commit its member was told of; the next owner
    // reads from the older offset, and in a group that commits before
    // processing, records are processed twice.
    planted_bug_is_found(
        PlantedBug::CommitAnsweredBeforeReplicated,
        AnomalyKind::ProcessedTwice,
    );
}

#[test]
fn planted_fenced_commit_accepted_is_found() {
    planted_bug_is_found(
        PlantedBug::FencedCommitAccepted,
        AnomalyKind::CommittedOffsetBackwards,
    );
}

#[test]
fn planted_metadata_published_before_committed_is_found() {
    // An active controller cut off from the other voters publishes leader
    // elections the quorum never commits; the next controller's leaders
    // write other records at the offsets the deposed ones' leaders wrote.
    // (Without a group, whose traffic has no part in it: faster runs.)
    planted_bug_is_found_in(
        PlantedBug::MetadataPublishedBeforeCommitted,
        AnomalyKind::ReplicasDiverge,
        |seed| SimConfig {
            group_members: 0,
            ..quorum(seed)
        },
    );
}
