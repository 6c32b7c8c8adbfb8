//! Many partitions (`cargo bench --bench scale`):
//!
//! - `scale/idle`: three in-process brokers hosting 10,000 RF 3 partitions
//!   (memory storage), no clients: the process's CPU over 10 s of wall time,
//!   from `/proc/self/stat`, as a share of one core (target < 5 %), with
//!   threads and resident memory.
//! - `scale/acks-all-each`: one acks=all record to every one of those
//!   partitions, timed from the first send to the last acknowledgement
//!   (target < 1 s).
//! - `scale/file-descriptors`: one broker with 10,000 file-backed
//!   partitions, in a child process whose descriptor limit is 12,000
//!   (`ulimit -n` before it starts): whether every partition got a leader,
//!   and the descriptors in use.
//!
//! `cargo bench --bench scale -- <substring>` runs the matching workloads.

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolog::client::{Acks, Producer, ProducerConfig, ProducerRecord};
use ferrolog::{Admin, Cluster, NewTopic};

const PARTITIONS: u32 = 10_000;
const IDLE_SECS: u64 = 10;
const FD_LIMIT: u32 = 12_000;

/// This process's user + system CPU time, from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat");
    // Fields after the command name (which may hold spaces) start after ')'.
    let rest = &stat[stat.rfind(')').expect("stat format") + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 here.
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    Duration::from_millis(ticks * 10) // USER_HZ is 100 on Linux
}

/// A line of `/proc/self/status`, e.g. `Threads` or `VmRSS`.
fn status(field: &str) -> String {
    std::fs::read_to_string("/proc/self/status")
        .expect("/proc/self/status")
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)
                .map(|v| v.trim_start_matches(':').trim().to_string())
        })
        .unwrap_or_default()
}

fn descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Waits until every partition of `topic` has a leader and, with `full_isr`,
/// all its replicas in sync.
fn wait_ready(cluster: &Cluster, topic: &str, full_isr: bool) -> Duration {
    let started = Instant::now();
    cluster
        .wait_for_metadata(Duration::from_secs(600), |m| {
            m.topics.get(topic).is_some_and(|t| {
                t.partitions.len() == PARTITIONS as usize
                    && t.partitions.iter().all(|p| {
                        p.leader.is_some() && (!full_isr || p.isr.len() == p.replicas.len())
                    })
            })
        })
        .expect("every partition led");
    started.elapsed()
}

/// How many partitions of `topic` have every replica in sync, as the
/// metadata has it now.
fn in_sync(cluster: &Cluster, topic: &str) -> usize {
    cluster
        .wait_for_metadata(Duration::ZERO, |_| true)
        .map(|m| {
            m.topics.get(topic).map_or(0, |t| {
                t.partitions
                    .iter()
                    .filter(|p| p.isr.len() == p.replicas.len())
                    .count()
            })
        })
        .unwrap_or(0)
}

fn replicated() {
    let cluster = Cluster::builder().brokers(3).build().expect("cluster");
    let started = Instant::now();
    Admin::new(&cluster)
        .and_then(|admin| {
            admin.create_topic(NewTopic::new("wide", PARTITIONS).replication_factor(3))
        })
        .expect("topic");
    wait_ready(&cluster, "wide", true);
    println!(
        "# 3 brokers, {PARTITIONS} RF 3 partitions created, all led with a full ISR in the metadata, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Let the creation's own work settle before measuring idleness.
    std::thread::sleep(Duration::from_secs(2));
    let full_before = in_sync(&cluster, "wide");
    let (cpu0, wall0) = (cpu_time(), Instant::now());
    std::thread::sleep(Duration::from_secs(IDLE_SECS));
    let (cpu, wall) = (cpu_time() - cpu0, wall0.elapsed());
    println!(
        "# full ISR: {} partitions before the idle period, {} after",
        full_before,
        in_sync(&cluster, "wide")
    );
    let share = cpu.as_secs_f64() / wall.as_secs_f64();
    println!(
        "BENCH name=scale/idle partitions={PARTITIONS} brokers=3 replication_factor=3 cpu_share={share:.3} target=0.05 met={} threads={} rss={}",
        if share < 0.05 { "yes" } else { "no" },
        status("Threads"),
        status("VmRSS").replace(' ', "")
    );

    let config = ProducerConfig::builder()
        .acks(Acks::All)
        .linger_ms(5u64)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(&cluster, config).expect("producer");
    let value = Bytes::from_static(&[b'x'; 100]);
    let started = Instant::now();
    let sends: Vec<_> = (0..PARTITIONS)
        .map(|p| {
            producer
                .send(ProducerRecord::new("wide", value.clone()).with_partition(p))
                .expect("send")
        })
        .collect();
    for send in sends {
        send.wait().expect("acknowledged");
    }
    let took = started.elapsed().as_secs_f64();
    println!(
        "BENCH name=scale/acks-all-each partitions={PARTITIONS} records_per_s={:.0} secs={took:.3} target_secs=1.0 met={}",
        f64::from(PARTITIONS) / took,
        if took < 1.0 { "yes" } else { "no" }
    );
    println!(
        "# full ISR after the sends: {} partitions",
        in_sync(&cluster, "wide")
    );
    drop(producer);
    cluster.shutdown().expect("shutdown");
}

/// Runs in the child process under the descriptor limit.
fn file_backed_child() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("dir");
    let before = descriptors();
    let cluster = Cluster::builder()
        .data_dir(dir.path())
        .build()
        .expect("cluster");
    let started = Instant::now();
    let created = Admin::new(&cluster)
        .and_then(|admin| admin.create_topic(NewTopic::new("files", PARTITIONS)));
    let led = cluster
        .wait_for_metadata(Duration::from_secs(120), |m| {
            m.topics.get("files").is_some_and(|t| {
                t.partitions.len() == PARTITIONS as usize
                    && t.partitions.iter().all(|p| p.leader.is_some())
            })
        })
        .is_ok();
    let offline = cluster.metrics().offline_partitions;
    println!(
        "BENCH name=scale/file-descriptors partitions={PARTITIONS} fd_limit={FD_LIMIT} created={} all_led={led} offline_partitions={offline} descriptors={} descriptors_before={before} secs={:.1} met={}",
        created.is_ok(),
        descriptors(),
        started.elapsed().as_secs_f64(),
        if created.is_ok() && led && offline == 0 {
            "yes"
        } else {
            "no"
        }
    );
    cluster.shutdown().expect("shutdown");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--file-child") {
        file_backed_child();
        return;
    }
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let wanted = |name: &str| filter.as_deref().is_none_or(|f| name.contains(f));
    if wanted("scale/idle") || wanted("scale/acks-all-each") {
        replicated();
    }
    if wanted("scale/file-descriptors") {
        let exe = std::env::current_exe().expect("own path");
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("ulimit -n {FD_LIMIT} && exec \"$0\" --file-child"))
            .arg(exe)
            .status()
            .expect("child");
        assert!(status.success(), "the file-backed child failed: {status}");
    }
}
