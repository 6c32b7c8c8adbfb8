//! What the tests with real processes share: `ferrolog node` processes,
//! a `ferrolog produce --report` process, and waits on the cluster's
//! metadata.
#![allow(dead_code)] // each test uses its own part

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::{Duration, Instant};

use ferrolog::client::{AutoOffsetReset, Bootstrap, Consumer, ConsumerConfig};
use ferrolog::{Admin, NewTopic, TopicConfig, TopicMetadata, TopicPartition};

pub const WAIT: Duration = Duration::from_secs(90);
pub const BIN: &str = env!("CARGO_BIN_EXE_ferrolog");

/// A process a test started; killed (and reaped) when dropped.
pub struct Process {
    pub child: Child,
    pub name: String,
}

impl Process {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, signal: i32) {
        // SAFETY: signalling a child of ours by its pid.
        assert_eq!(
            unsafe { libc::kill(self.pid(), signal) },
            0,
            "{}",
            self.name
        );
    }

    /// SIGTERM, then waits for it to exit.
    pub fn stop(mut self) {
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

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Three `ferrolog node`s, each a broker and a controller quorum voter.
pub struct Nodes {
    pub dir: PathBuf,
    /// Each node's `host:port`.
    pub addrs: Vec<String>,
    /// The network namespace each node runs in, if any.
    pub namespaces: Vec<Option<String>>,
}

impl Nodes {
    /// `count` nodes on free ports of 127.0.0.1, with files under `dir`.
    pub fn on_loopback(dir: &std::path::Path, count: usize) -> Self {
        Self {
            dir: dir.to_path_buf(),
            addrs: (0..count)
                .map(|_| format!("127.0.0.1:{}", free_port()))
                .collect(),
            namespaces: vec![None; count],
        }
    }

    fn properties(&self, id: usize) -> PathBuf {
        let voters: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{i}@{a}"))
            .collect();
        let path = self.dir.join(format!("node-{id}.properties"));
        std::fs::write(
            &path,
            format!(
                "node.id={id}\nprocess.roles=broker,controller\n\
                 listeners=PLAINTEXT://{}\ncontroller.quorum.voters={}\n\
                 log.dirs={}\ncluster.id=processes\n\
                 broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=300\n",
                self.addrs[id],
                voters.join(","),
                self.dir.join(format!("data-{id}")).display()
            ),
        )
        .unwrap();
        path
    }

    /// Starts node `id` and waits for its "listening" line.
    pub fn start(&self, id: usize) -> Process {
        let mut command = match &self.namespaces[id] {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, BIN]);
                c
            }
            None => Command::new(BIN),
        };
        let mut child = command
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

    pub fn servers(&self) -> String {
        self.addrs.join(",")
    }
}

/// The producer process: lines in, one `ACK`/`FAIL` line out per record.
pub struct ProducerProcess {
    process: Process,
    stdin: Option<ChildStdin>,
    outcomes: Receiver<String>,
    sent: usize,
    pub acked: BTreeMap<u32, (u32, u64)>,
    pub failed: BTreeSet<u32>,
}

impl ProducerProcess {
    pub fn start(servers: &str, topic: &str) -> Self {
        let mut child = Command::new(BIN)
            .args([
                "produce",
                "--bootstrap-server",
                servers,
                "--topic",
                topic,
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
    /// each has an outcome; returns how many of them failed.
    pub fn write(&mut self, range: std::ops::Range<u32>) -> usize {
        let failed_before = self.failed.len();
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
        self.failed.len() - failed_before
    }

    /// Closes its input and waits for it to exit; what was acknowledged.
    pub fn finish(mut self) -> BTreeMap<u32, (u32, u64)> {
        drop(self.stdin.take());
        let status = self.process.child.wait().unwrap();
        eprintln!(
            "producer exited with {status}: acked {}, failed {}",
            self.acked.len(),
            self.failed.len()
        );
        std::mem::take(&mut self.acked)
    }
}

pub fn describe(admin: &Admin, topic: &str) -> Option<TopicMetadata> {
    admin.describe_topic(topic).ok()
}

/// Waits until `ready` holds for `topic` as the admin sees it.
pub fn wait_until(
    admin: &Admin,
    topic: &str,
    what: &str,
    ready: impl Fn(&TopicMetadata) -> bool,
) -> TopicMetadata {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(t) = describe(admin, topic)
            && ready(&t)
        {
            return t;
        }
        assert!(
            Instant::now() < deadline,
            "never: {what}; last {:?}",
            describe(admin, topic)
        );
        std::thread::yield_now();
    }
}

pub fn fully_replicated(t: &TopicMetadata) -> bool {
    t.partitions
        .iter()
        .all(|p| p.leader.is_some() && p.isr.len() == 3)
}

/// Once three brokers are registered: creates `topic` with `partitions`,
/// replication factor 3 and `min_insync_replicas` 2, and waits until every
/// partition has its three replicas in sync.
pub fn create_replicated(admin: &Admin, topic: &str, partitions: u32) -> TopicMetadata {
    wait_for_brokers(admin, 3);
    admin
        .create_topic(
            NewTopic::new(topic, partitions)
                .replication_factor(3)
                .config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
        )
        .unwrap();
    wait_until(admin, topic, "fully replicated", fully_replicated)
}

/// Waits until `n` brokers are registered and alive.
pub fn wait_for_brokers(admin: &Admin, n: usize) {
    let deadline = Instant::now() + WAIT;
    while admin.describe_cluster().map_or(0, |c| c.brokers.len()) < n {
        assert!(Instant::now() < deadline, "the brokers never registered");
        std::thread::yield_now();
    }
}

/// The node whose controller is active, as the brokers' metadata says.
pub fn active_controller(admin: &Admin) -> Option<u32> {
    admin
        .describe_cluster()
        .ok()?
        .controller
        .map(|c| c - ferrolog::CONTROLLER_ID)
}

/// Every record of `topic` (values are numbers): (partition, offset,
/// value), after checking the log holds at least `at_least`.
pub fn read_back(
    servers: &str,
    topic: &str,
    partitions: u32,
    at_least: usize,
) -> Vec<(u32, u64, u32)> {
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
        .map(|p| TopicPartition::new(topic, p).unwrap())
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

/// Every acknowledged record is in `rows` once, where its ack said; each
/// partition holds its records in the order they were sent.
pub fn check_acknowledged(
    rows: &[(u32, u64, u32)],
    acked: &BTreeMap<u32, (u32, u64)>,
    partitions: u32,
) {
    let mut seen: BTreeMap<u32, (u32, u64)> = BTreeMap::new();
    for &(partition, offset, value) in rows {
        assert!(
            seen.insert(value, (partition, offset)).is_none(),
            "record {value} read twice"
        );
    }
    for (value, at) in acked {
        assert_eq!(seen.get(value), Some(at), "acknowledged record {value}");
    }
    for partition in 0..partitions {
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
}
