//! Real OS processes on 127.0.0.1, each a `ferrolog node` (broker and
//! controller quorum voter), form one cluster; an acks=all idempotent
//! producer in another process (`ferrolog produce --report`) writes while
//! this test `kill -9`s a partition leader's process, then the active
//! controller's process, then `SIGSTOP`s a node for longer than the
//! session timeout and `SIGCONT`s it. Every acknowledged record is read
//! back exactly once, in order within its partition; a new controller is
//! active within 2 s of the kill; the paused node rejoins as a follower.

#[path = "support/processes.rs"]
mod support;

use std::time::{Duration, Instant};

use ferrolog::client::Bootstrap;
use ferrolog::{Admin, TopicMetadata};
use support::*;

fn leader_of(t: &TopicMetadata, not: &[u32]) -> u32 {
    t.partitions
        .iter()
        .filter_map(|p| p.leader)
        .find(|l| !not.contains(l))
        .expect("a partition led by a node that may be stopped")
}

#[test]
fn acknowledged_records_survive_kill_9_of_a_leader_and_the_controller_and_a_sigstop() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::on_loopback(dir.path(), 3);
    let mut running: Vec<Option<Process>> = (0..3).map(|id| Some(nodes.start(id))).collect();
    let servers = nodes.servers();
    let admin = Admin::new(Bootstrap::servers(&servers).unwrap()).unwrap();
    let topic = create_replicated(&admin, "events", 6);

    let mut producer = ProducerProcess::start(&servers, "events");
    producer.write(0..500);

    // kill -9 the process of a partition leader (not the controller's).
    let controller = active_controller(&admin).expect("an active controller");
    let victim = leader_of(&topic, &[controller]) as usize;
    running[victim].as_ref().unwrap().signal(libc::SIGKILL);
    let killed_at = Instant::now();
    producer.write(500..1_500);
    let after = wait_until(
        &admin,
        "events",
        "the killed node's leaderships moved",
        |t| {
            t.partitions
                .iter()
                .all(|p| p.leader.is_some_and(|l| l != victim as u32))
        },
    );
    eprintln!(
        "node {victim} killed; its partitions led elsewhere {:?} later",
        killed_at.elapsed()
    );
    assert!(after.partitions.iter().all(|p| p.isr.len() == 2));
    drop(running[victim].take());
    running[victim] = Some(nodes.start(victim));
    wait_until(
        &admin,
        "events",
        "the restarted node back in sync",
        fully_replicated,
    );
    producer.write(1_500..2_000);

    // kill -9 the active controller's process: another voter takes over.
    let controller = active_controller(&admin).expect("an active controller");
    running[controller as usize]
        .as_ref()
        .unwrap()
        .signal(libc::SIGKILL);
    let killed_at = Instant::now();
    let deadline = Instant::now() + WAIT;
    let elected = loop {
        if let Some(c) = active_controller(&admin)
            && c != controller
        {
            break killed_at.elapsed();
        }
        assert!(Instant::now() < deadline, "no new controller");
        std::thread::yield_now();
    };
    eprintln!("controller {controller} killed; a new one active {elected:?} later");
    assert!(
        elected < Duration::from_secs(2),
        "a new controller within 2 s, not {elected:?}"
    );
    producer.write(2_000..2_500);
    drop(running[controller as usize].take());
    running[controller as usize] = Some(nodes.start(controller as usize));
    wait_until(
        &admin,
        "events",
        "the old controller's node back in sync",
        fully_replicated,
    );

    // SIGSTOP a node past its session, then SIGCONT.
    let controller = active_controller(&admin).expect("an active controller");
    let paused = (0..3u32).find(|&n| n != controller).unwrap() as usize;
    running[paused].as_ref().unwrap().signal(libc::SIGSTOP);
    producer.write(2_500..3_000);
    wait_until(&admin, "events", "the paused node fenced", |t| {
        t.partitions.iter().all(|p| {
            p.leader.is_some_and(|l| l != paused as u32) && !p.isr.contains(&(paused as u32))
        })
    });
    running[paused].as_ref().unwrap().signal(libc::SIGCONT);
    wait_until(
        &admin,
        "events",
        "the paused node back as a follower",
        fully_replicated,
    );
    producer.write(3_000..3_500);
    let acked = producer.finish();
    assert!(acked.len() >= 3_000, "most records acknowledged");

    let rows = read_back(&servers, "events", 6, acked.len());
    check_acknowledged(&rows, &acked, 6);
    drop(admin);
    for process in running.into_iter().rev().flatten() {
        process.stop();
    }
}
