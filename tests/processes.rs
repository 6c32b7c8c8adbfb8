//! Real OS processes on 127.0.0.1, each a `ferrolog node` (broker and
//! controller quorum voter), form one cluster; an acks=all idempotent
//! producer in another process (`ferrolog produce --report`) writes while
//! this test `kill -9`s a partition leader's process, then the active
//! controller's process, then `SIGSTOP`s a node for longer than the
//! session timeout and `SIGCONT`s it. Every acknowledged record is read
//! back exactly once, in order within its partition; a new controller is
//! active within 2 s of the kill; the paused node rejoins as a follower.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ferrolog::client::{AutoOffsetReset, Bootstrap, Consumer, ConsumerConfig};
use ferrolog::{Admin, NewTopic, TopicConfig, TopicMetadata, TopicPartition};

const WAIT: Duration = Duration::from_secs(90);
const BIN: &str = env!("CARGO_BIN_EXE_ferrolog");

/// A process this test started; killed (and reaped) when dropped.
struct Process {
    child: Child,
    name: String,
}

impl Process {
    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    fn signal(&self, signal: i32) {
        // SAFETY: signalling a child of ours by its pid.
        assert_eq!(
            unsafe { libc::kill(self.pid(), signal) },
            0,
            "{}",
            self.name
        );
    }

    /// SIGTERM, then waits for it to exit.
    fn stop(mut self) {
        self.signal(libc::SIGTERM);
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} exited with {status}", self.name);
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Nodes {
    dir: PathBuf,
    ports: Vec<u16>,
}

impl Nodes {
    fn properties(&self, id: usize) -> PathBuf {
        let voters: Vec<String> = self
            .ports
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
            .collect();
        let path = self.dir.join(format!("node-{id}.properties"));
        std::fs::write(
            &path,
            format!(
                "node.id={id}\nprocess.roles=broker,controller\n\
                 listeners=PLAINTEXT://127.0.0.1:{}\ncontroller.quorum.voters={}\n\
                 log.dirs={}\ncluster.id=processes\n\
                 broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=300\n",
                self.ports[id],
                voters.join(","),
                self.dir.join(format!("data-{id}")).display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts node `id` and waits for its "listening" line.
    fn start(&self, id: usize) -> Process {
        let mut child = Command::new(BIN)
            .arg("node")
            .arg(self.properties(id))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.contains("listening on"), "node {id}: {line:?}");
        Process {
            child,
            name: format!("node {id}"),
        }
    }

    fn servers(&self) -> String {
        self.ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// The producer process: lines in, one `ACK`/`FAIL` line out per record.
struct ProducerProcess {
    process: Process,
    stdin: Option<ChildStdin>,
    outcomes: Receiver<String>,
    sent: usize,
    acked: BTreeMap<u32, (u32, u64)>,
    failed: BTreeSet<u32>,
}

impl ProducerProcess {
    fn start(servers: &str) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "produce",
                "--bootstrap-server",
                servers,
                "--topic",
                "events",
                "--acks",
                "all",
                "--enable-idempotence",
                "true",
                "--linger-ms",
                "5",
                "--request-timeout-ms",
                "5000",
                "--key-separator",
                ":",
                "--report",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (tx, outcomes) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process: Process {
                child,
                name: "producer".into(),
            },
            stdin,
            outcomes,
            sent: 0,
            acked: BTreeMap::new(),
            failed: BTreeSet::new(),
        }
    }

    /// Writes records `range` (value `i`, key `k{i % 16}`) and waits until
    /// each has an outcome.
    fn write(&mut self, range: std::ops::Range<u32>) {
        let stdin = self.stdin.as_mut().unwrap();
        for i in range.clone() {
            writeln!(stdin, "k{}:{i}", i % 16).unwrap();
        }
        stdin.flush().unwrap();
        self.sent += range.len();
        let deadline = Instant::now() + WAIT;
        while self.acked.len() + self.failed.len() < self.sent {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self
                .outcomes
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("{} of {} outcomes", self.acked.len(), self.sent));
            let mut words = line.split(' ');
            match (words.next(), words.next()) {
                (Some("ACK"), Some(value)) => {
                    let partition = words.next().unwrap().parse().unwrap();
                    let offset = words.next().unwrap().parse().unwrap();
                    let value: u32 = value.parse().unwrap();
                    assert!(
                        self.acked.insert(value, (partition, offset)).is_none(),
                        "acknowledged twice: {value}"
                    );
                }
                (Some("FAIL"), Some(value)) => {
                    eprintln!("producer: {line}");
                    self.failed.insert(value.parse().unwrap());
                }
                _ => panic!("producer printed {line:?}"),
            }
        }
    }

    fn finish(mut self) -> (BTreeMap<u32, (u32, u64)>, BTreeSet<u32>) {
        drop(self.stdin.take());
        let status = self.process.child.wait().unwrap();
        eprintln!("producer exited with {status}");
        (
            std::mem::take(&mut self.acked),
            std::mem::take(&mut self.failed),
        )
    }
}

fn describe(admin: &Admin) -> Option<TopicMetadata> {
    admin.describe_topic("events").ok()
}

/// Waits until `ready` holds for the topic as the admin sees it.
fn wait_until(admin: &Admin, what: &str, ready: impl Fn(&TopicMetadata) -> bool) -> TopicMetadata {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = describe(admin)
            && ready(&t)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}; last {:?}",
            describe(admin)
        );
        std::thread::yield_now();
    }
}

fn fully_replicated(t: &TopicMetadata) -> bool {
    t.partitions
        .iter()
        .all(|p| p.leader.is_some() && p.isr.len() == 3)
}

fn read_back(servers: &str, partitions: u32, at_least: usize) -> Vec<(u32, u64, u32)> {
    let mut consumer = Consumer::<String, String>::new(
        Bootstrap::servers(servers).unwrap(),
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait_ms(100u32)
            .build()
            .unwrap(),
    )
    .unwrap();
    let tps: Vec<TopicPartition> = (0..partitions)
        .map(|p| TopicPartition::new("events", p).unwrap())
        .collect();
    consumer.assign(tps.clone()).unwrap();
    let ends = consumer.end_offsets(&tps).unwrap();
    let total: u64 = ends.values().sum();
    assert!(total as usize >= at_least, "{total} records in the log");
    let mut rows = Vec::new();
    let deadline = Instant::now() + WAIT;
    while (rows.len() as u64) < total {
        assert!(Instant::now() < deadline, "read {} of {total}", rows.len());
        for r in consumer.poll(Duration::from_millis(200)).unwrap() {
            rows.push((
                r.partition(),
                r.offset,
                r.value.unwrap().parse::<u32>().unwrap(),
            ));
        }
    }
    rows
}

fn leader_of(t: &TopicMetadata, not: &[u32]) -> u32 {
    t.partitions
        .iter()
        .filter_map(|p| p.leader)
        .find(|l| !not.contains(l))
        .expect("a partition led by a node that may be stopped")
}

/// The node whose controller is active, as the brokers' metadata says.
fn active_controller(admin: &Admin) -> Option<u32> {
    admin
        .describe_cluster()
        .ok()?
        .controller
        .map(|c| c - ferrolog::CONTROLLER_ID)
}

#[test]
fn acknowledged_records_survive_kill_9_of_a_leader_and_the_controller_and_a_sigstop() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes {
        dir: dir.path().to_path_buf(),
        ports: (0..3).map(|_| free_port()).collect(),
    };
    let mut running: Vec<Option<Process>> = (0..3).map(|id| Some(nodes.start(id))).collect();
    let servers = nodes.servers();
    let admin = Admin::new(Bootstrap::servers(&servers).unwrap()).unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.describe_cluster().map_or(0, |c| c.brokers.len()) < 3 {
        assert!(Instant::now() < deadline, "the brokers never registered");
        std::thread::yield_now();
    }
    admin
        .create_topic(
            NewTopic::new("events", 6)
                .replication_factor(3)
                .config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
        )
        .unwrap();
    let topic = wait_until(&admin, "fully replicated", fully_replicated);

    let mut producer = ProducerProcess::start(&servers);
    producer.write(0..500);

    // kill -9 the process of a partition leader (not the controller's).
    let controller = active_controller(&admin).expect("an active controller");
    let victim = leader_of(&topic, &[controller]) as usize;
    running[victim].as_ref().unwrap().signal(libc::SIGKILL);
    let killed_at = Instant::now();
    producer.write(500..1_500);
    let after = wait_until(&admin, "the killed node's leaderships moved", |t| {
        t.partitions
            .iter()
            .all(|p| p.leader.is_some_and(|l| l != victim as u32))
    });
    eprintln!(
        "node {victim} killed; its partitions led elsewhere {:?} later",
        killed_at.elapsed()
    );
    assert!(after.partitions.iter().all(|p| p.isr.len() == 2));
    drop(running[victim].take());
    running[victim] = Some(nodes.start(victim));
    wait_until(&admin, "the restarted node back in sync", fully_replicated);
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
        "the old controller's node back in sync",
        fully_replicated,
    );

    // SIGSTOP a node past its session, then SIGCONT.
    let controller = active_controller(&admin).expect("an active controller");
    let paused = (0..3u32).find(|&n| n != controller).unwrap() as usize;
    running[paused].as_ref().unwrap().signal(libc::SIGSTOP);
    producer.write(2_500..3_000);
    wait_until(&admin, "the paused node fenced", |t| {
        t.partitions.iter().all(|p| {
            p.leader.is_some_and(|l| l != paused as u32) && !p.isr.contains(&(paused as u32))
        })
    });
    running[paused].as_ref().unwrap().signal(libc::SIGCONT);
    wait_until(
        &admin,
        "the paused node back as a follower",
        fully_replicated,
    );
    producer.write(3_000..3_500);
    let (acked, failed) = producer.finish();
    eprintln!("acked {}, failed {}", acked.len(), failed.len());
    assert!(acked.len() >= 3_000, "most records acknowledged");

    // Every acknowledged record is there once, where its ack said; each
    // partition holds its records in the order they were sent.
    let rows = read_back(&servers, 6, acked.len());
    let mut seen: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for &(partition, offset, value) in &rows {
        assert!(
            seen.insert(value, (partition, offset)).is_none(),
            "record {value} read twice"
        );
    }
    for (value, at) in &acked {
        assert_eq!(seen.get(value), Some(at), "acknowledged record {value}");
    }
    for partition in 0..6 {
        let values: Vec<u32> = rows
            .iter()
            .filter(|r| r.0 == partition)
            .map(|r| r.2)
            .collect();
        assert!(
            values.windows(2).all(|w| w[0] < w[1]),
            "partition {partition} out of order"
        );
    }
    drop(admin);
    for process in running.into_iter().rev().flatten() {
        process.stop();
    }
    let _ = Path::new(BIN);
}
