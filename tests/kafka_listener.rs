//! The Kafka listener (feature `kafka`): raw frames, good and bad, and
//! Kafka's own tools (kcat, librdkafka) against an embedded cluster.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use ferrolog::{Admin, Cluster, NewTopic};

fn connect(addr: SocketAddr) -> TcpStream {
    let socket = TcpStream::connect(addr).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    socket
}

/// A request frame: size, key, version, correlation id, client id
/// (header v1), then `body`.
fn frame(key: i16, version: i16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut payload = Vec::new();
    payload.extend_from_slice(&key.to_be_bytes());
    payload.extend_from_slice(&version.to_be_bytes());
    payload.extend_from_slice(&correlation_id.to_be_bytes());
    payload.extend_from_slice(&4i16.to_be_bytes());
    payload.extend_from_slice(b"test");
    payload.extend_from_slice(body);
    let mut out = (payload.len() as i32).to_be_bytes().to_vec();
    out.extend_from_slice(&payload);
    out
}

/// Reads one answer frame; `None` if the listener closed the connection.
fn answer(socket: &mut TcpStream) -> Option<Vec<u8>> {
    let mut size = [0u8; 4];
    socket.read_exact(&mut size).ok()?;
    let mut body = vec![0u8; u32::from_be_bytes(size) as usize];
    socket.read_exact(&mut body).ok()?;
    Some(body)
}

/// ApiVersions v0 on a fresh connection: the listener still serves.
fn still_serves(addr: SocketAddr) {
    let mut socket = connect(addr);
    socket.write_all(&frame(18, 0, 99, &[])).unwrap();
    let body = answer(&mut socket).expect("an answer");
    assert_eq!(
        &body[..6],
        &[0, 0, 0, 99, 0, 0],
        "correlation id 99, no error"
    );
}

fn with_listener() -> (Cluster, SocketAddr) {
    let cluster = Cluster::builder()
        .brokers(3)
        .kafka_listener("127.0.0.1:0")
        .build()
        .unwrap();
    let addr = cluster.kafka_listener_addr().unwrap();
    (cluster, addr)
}

/// Creates an RF 3 topic of `partitions` and waits until each has a
/// leader; the metadata then.
fn create_led(
    cluster: &Cluster,
    topic: &str,
    partitions: u32,
) -> std::sync::Arc<ferrolog::protocol::ClusterMetadata> {
    Admin::new(cluster)
        .unwrap()
        .create_topic(NewTopic::new(topic, partitions).replication_factor(3))
        .unwrap();
    cluster
        .wait_for_metadata(Duration::from_secs(10), |m| {
            m.topics
                .get(topic)
                .is_some_and(|t| t.partitions.iter().all(|p| p.leader.is_some()))
        })
        .unwrap()
}

#[test]
fn api_versions_lists_what_is_served_and_answers_an_unknown_version_in_v0() {
    let (_cluster, addr) = with_listener();
    let mut socket = connect(addr);
    socket.write_all(&frame(18, 3, 1, &[0, 0, 0])).unwrap();
    let body = answer(&mut socket).unwrap();
    // v3 answers: header v0 (correlation id), error code, compact array.
    assert_eq!(&body[..6], &[0, 0, 0, 1, 0, 0]);
    let count = body[6] as usize - 1;
    let keys: Vec<(i16, i16, i16)> = (0..count)
        .map(|i| {
            let at = 7 + i * 7;
            let v = |o: usize| i16::from_be_bytes([body[at + o], body[at + o + 1]]);
            (v(0), v(2), v(4))
        })
        .collect();
    assert!(keys.contains(&(18, 0, 3)), "{keys:?}");
    assert!(keys.contains(&(3, 0, 12)), "{keys:?}");
    // A version from the future: v0, UNSUPPORTED_VERSION (35), the ranges.
    socket.write_all(&frame(18, 9, 2, &[])).unwrap();
    let body = answer(&mut socket).unwrap();
    assert_eq!(&body[..6], &[0, 0, 0, 2, 0, 35]);
    let count = i32::from_be_bytes([body[6], body[7], body[8], body[9]]);
    assert_eq!(count as usize, keys.len(), "the same ranges in v0");
}

#[test]
fn malformed_frames_close_their_connection_with_a_reason_and_others_go_on() {
    let (cluster, addr) = with_listener();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "negative size",
            (-5i32).to_be_bytes().to_vec(),
            "negative size",
        ),
        (
            "a declared size of 2 GiB",
            0x7fff_ffffi32.to_be_bytes().to_vec(),
            "over socket_request_max_bytes",
        ),
        (
            "a header shorter than its fields",
            vec![0, 0, 0, 3, 0, 18, 0],
            "malformed request header",
        ),
        ("an unknown API key", frame(999, 0, 3, &[]), "not served"),
        (
            "an unsupported version",
            frame(3, 99, 4, &[]),
            "version 99 of API key 3 is not served",
        ),
        (
            "a truncated body",
            frame(3, 1, 5, &[0, 0, 0, 1, 0, 9, b'a']),
            "malformed request",
        ),
        (
            "an array claiming 2^31 - 1 topics",
            frame(3, 1, 6, &0x7fff_ffffi32.to_be_bytes()),
            "claims 2147483647 elements",
        ),
    ];
    let listener = cluster.kafka_listener().unwrap();
    for (name, bytes, reason) in cases {
        let mut socket = connect(addr);
        socket.write_all(&bytes).unwrap();
        assert_eq!(
            answer(&mut socket),
            None,
            "{name}: closed without an answer"
        );
        let closed = listener.closed();
        assert!(
            closed.iter().any(|(_, r)| r.contains(reason)),
            "{name}: {closed:?}"
        );
        still_serves(addr);
    }
    // A peer gone in the middle of a frame.
    let mut socket = connect(addr);
    socket.write_all(&[0, 0, 0, 50, 0, 3]).unwrap();
    drop(socket);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listener
        .closed()
        .iter()
        .any(|(_, r)| r.contains("in the middle of a frame"))
    {
        assert!(Instant::now() < deadline, "{:?}", listener.closed());
        std::thread::yield_now();
    }
    still_serves(addr);
}

/// kcat, or `None` when it is not installed (CI installs it: there its
/// absence fails the test).
fn kcat() -> Option<Command> {
    match Command::new("kcat").arg("-V").output() {
        Ok(out) if out.status.success() => Some(Command::new("kcat")),
        _ => {
            assert!(
                std::env::var_os("CI").is_none(),
                "kcat is not installed, and CI must run this test"
            );
            eprintln!("SKIPPED: kcat is not installed (apt-get install kcat)");
            None
        }
    }
}

/// `kcat -P` of `input` (lines of `key:value`) into `topic`, with `extra`
/// arguments; the finished process.
fn kcat_produce(
    addr: SocketAddr,
    topic: &str,
    input: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut child = Command::new("kcat")
        .args(["-b", &addr.to_string(), "-P", "-t", topic, "-K:"])
        .args(extra)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(input.as_bytes()).unwrap();
    drop(stdin);
    child.wait_with_output().unwrap()
}

/// `kcat -C -e` of `topic` from the beginning, each record printed with
/// `format`; what it printed.
fn kcat_consume(addr: SocketAddr, topic: &str, format: &str) -> String {
    let out = Command::new("kcat")
        .args([
            "-b",
            &addr.to_string(),
            "-C",
            "-t",
            topic,
            "-e",
            "-o",
            "beginning",
        ])
        .args(["-f", format])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn kcat_lists_brokers_topics_partitions_and_leaders() {
    let Some(mut kcat) = kcat() else {
        return;
    };
    let (cluster, addr) = with_listener();
    create_led(&cluster, "orders", 3);
    let out = kcat
        .args(["-b", &addr.to_string(), "-L", "-t", "orders", "-m", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains(" 3 brokers:"), "{text}");
    let addrs = cluster.kafka_listener().unwrap().broker_addrs().to_vec();
    assert_eq!(addrs.len(), 3);
    for (id, broker) in addrs.iter().enumerate() {
        assert!(text.contains(&format!("broker {id} at {broker}")), "{text}");
    }
    assert!(
        text.contains("topic \"orders\" with 3 partitions:"),
        "{text}"
    );
    let metadata = cluster.wait_for_metadata(Duration::ZERO, |_| true).unwrap();
    for p in &metadata.topics["orders"].partitions {
        let leader = p.leader.unwrap();
        assert!(
            text.contains(&format!(
                "partition {}, leader {leader}, replicas: ",
                p.partition
            )),
            "{text}"
        );
    }
    // A topic that does not exist is reported as such.
    let out = Command::new("kcat")
        .args(["-b", &addr.to_string(), "-L", "-t", "missing", "-m", "10"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("topic \"missing\" with 0 partitions: Broker: Unknown topic or partition"),
        "{text}"
    );
}

/// kcat produces 10,000 keyed records with a header into a 3-partition RF 3
/// topic on 3 brokers, and reads every one back with its key, value and
/// header; the records are where ferrolog's own metadata says.
#[test]
fn kcat_produces_and_consumes_every_record_with_keys_values_and_headers() {
    let Some(_) = kcat() else {
        return;
    };
    let (cluster, addr) = with_listener();
    Admin::new(&cluster)
        .unwrap()
        .create_topic(NewTopic::new("events", 3).replication_factor(3))
        .unwrap();
    cluster
        .wait_for_metadata(Duration::from_secs(10), |m| {
            m.topics["events"]
                .partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == 3)
        })
        .unwrap();
    let input: String = (0..10_000)
        .map(|i| format!("key-{i}:value-{i}\n"))
        .collect();
    let out = kcat_produce(
        addr,
        "events",
        &input,
        &["-H", "origin=kcat", "-X", "acks=all"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = kcat_consume(addr, "events", "%k|%s|%h|%p\\n");
    let mut seen = std::collections::BTreeSet::new();
    let mut per_partition = [0usize; 3];
    for line in text.lines() {
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(fields.len(), 4, "{line}");
        let i: usize = fields[0]
            .strip_prefix("key-")
            .and_then(|n| n.parse().ok())
            .expect(line);
        assert_eq!(fields[1], format!("value-{i}"), "{line}");
        assert_eq!(fields[2], "origin=kcat", "{line}");
        per_partition[fields[3].parse::<usize>().unwrap()] += 1;
        assert!(seen.insert(i), "record {i} read twice");
    }
    assert_eq!(seen.len(), 10_000, "every record read back");
    assert!(per_partition.iter().all(|&n| n > 0), "{per_partition:?}");
    // ferrolog's own view: the high watermarks add up to the same count.
    let total: u64 = (0..3)
        .map(|p| {
            cluster
                .topic("events")
                .partition(p)
                .unwrap()
                .high_watermark()
                .unwrap()
        })
        .sum();
    assert_eq!(total, 10_000);
}

/// The Python with `module` (kafka-python's `kafka`, confluent-kafka's
/// `confluent_kafka`) installed: `$FERROLOG_PYTHON`, or the virtualenv
/// `.ci/run` makes in `target/kafka-venv`; `None` (the test says it
/// skipped) when neither has it outside CI.
fn python_with(module: &str) -> Option<std::path::PathBuf> {
    let python = std::env::var_os("FERROLOG_PYTHON")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-venv/bin/python")
        });
    let ok = Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some(python);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no Python with {module} at {python:?}, and CI must run this test"
    );
    eprintln!("SKIPPED: no Python with {module} (see .ci/run)");
    None
}

/// Runs `tests/kafka/<script>` with `args`; its JSON line.
fn run_python(python: &std::path::Path, script: &str, args: &[&str]) -> String {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/kafka")
        .join(script);
    let out = Command::new(python)
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// kafka-python: admin creates (with a config) and describes a 6-partition
/// RF 3 topic, an acks=all producer writes 600 keyed records with a
/// header, a consumer reads each back at the offset its send returned,
/// admin grows the topic to 8 partitions and deletes partition 0's records
/// below offset 2 (a consumer's earliest offset is then 2); a consumer
/// outside any group's membership commits offsets 10..=15 for a group and
/// another consumer and admin read them back (OffsetCommit, OffsetFetch,
/// ListGroups); admin deletes the topic (ferrolog's metadata agrees).
#[test]
fn kafka_python_admin_produces_consumes_and_deletes() {
    let Some(python) = python_with("kafka") else {
        return;
    };
    let (cluster, addr) = with_listener();
    let stdout = run_python(&python, "python_clients.py", &[&addr.to_string()]);
    assert!(
        stdout.contains(
            r#""partitions": 6, "produced": 600, "consumed": 600, "grown_to": 8, "log_start": 2, "committed": 75"#
        ),
        "{stdout}"
    );
    let metadata = cluster
        .wait_for_metadata(Duration::from_secs(10), |m| {
            !m.topics.contains_key("py-orders")
        })
        .unwrap();
    assert!(!metadata.topics.contains_key("py-orders"), "deleted");
}

/// kcat with `enable.idempotence=true`: the producer gets an id
/// (InitProducerId) and its batches carry it and their sequences; every
/// record is read back once.
#[test]
fn an_idempotent_kcat_producer_gets_a_producer_id_and_writes_once() {
    let Some(_) = kcat() else {
        return;
    };
    let (cluster, addr) = with_listener();
    Admin::new(&cluster)
        .unwrap()
        .create_topic(NewTopic::new("once", 2).replication_factor(3))
        .unwrap();
    let input: String = (0..1_000).map(|i| format!("k{i}:v{i}\n")).collect();
    let out = kcat_produce(
        addr,
        "once",
        &input,
        &["-X", "enable.idempotence=true", "-d", "eos"],
    );
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("Acquired PID"), "{log}");
    let mut keys: Vec<String> = kcat_consume(addr, "once", "%k\\n")
        .lines()
        .map(str::to_string)
        .collect();
    keys.sort();
    let mut want: Vec<String> = (0..1_000).map(|i| format!("k{i}")).collect();
    want.sort();
    assert_eq!(keys, want);
}

/// confluent-kafka (librdkafka) in a consumer group of `protocol`
/// (`consumer`: KIP-848, or `classic`): an idempotent producer writes 600
/// keyed records into a 6-partition RF 3 topic; two consumers of one group
/// split the partitions (disjoint, together all six) and read every
/// record, then commit and leave; a third consumer of the group resumes
/// from those commits and reads only the 60 records written after them,
/// and commits too. ferrolog's own admin sees all 660 committed.
fn confluent_kafka_group(protocol: &str, assignor: Option<&str>) {
    let Some(python) = python_with("confluent_kafka") else {
        return;
    };
    let config = ferrolog::kafka::KafkaListenerConfig {
        group_consumer_heartbeat_interval_ms: 250,
        group_consumer_session_timeout_ms: 10_000,
        ..Default::default()
    };
    let cluster = Cluster::builder()
        .brokers(3)
        .kafka_listener_with("127.0.0.1:0", config)
        .build()
        .unwrap();
    let addr = cluster.kafka_listener_addr().unwrap();
    let stdout = run_python(
        &python,
        "confluent_group.py",
        &[&addr.to_string(), "cg-orders", "cg", protocol]
            .into_iter()
            .chain(assignor)
            .collect::<Vec<_>>(),
    );
    assert!(
        stdout.contains(r#""consumed": 600, "committed": 600, "resumed": 60"#),
        "{stdout}"
    );
    let group = Admin::new(&cluster).unwrap().describe_group("cg").unwrap();
    let offsets = &group.description.offsets;
    let committed: u64 = offsets.values().map(|o| o.offset).sum();
    assert_eq!(
        committed, 660,
        "the third consumer's commits too: {offsets:?}"
    );
}

#[test]
fn confluent_kafka_consumers_split_a_kip_848_group_and_a_third_resumes_from_their_commits() {
    confluent_kafka_group("consumer", None);
}

#[test]
fn confluent_kafka_consumers_split_a_classic_group_and_a_third_resumes_from_their_commits() {
    confluent_kafka_group("classic", None);
}

/// The classic protocol with `cooperative-sticky`: members keep their
/// partitions across a rebalance and list them when they join again.
#[test]
fn confluent_kafka_consumers_split_a_cooperative_classic_group_and_a_third_resumes() {
    confluent_kafka_group("classic", Some("cooperative-sticky"));
}

/// kafka-python in a classic consumer group (JoinGroup, SyncGroup,
/// Heartbeat, LeaveGroup; the coordinator assigns): two consumers split a
/// 6-partition RF 3 topic (disjoint, together all six) and read all 600
/// records, commit and leave; a third consumer of the group resumes from
/// the commits and reads only the 60 records written after them.
#[test]
fn kafka_python_consumers_split_a_classic_group_and_a_third_resumes_from_their_commits() {
    let Some(python) = python_with("kafka") else {
        return;
    };
    let (cluster, addr) = with_listener();
    let stdout = run_python(
        &python,
        "python_group.py",
        &[&addr.to_string(), "py-group", "py-classic"],
    );
    assert!(
        stdout.contains(r#""consumed": 600, "resumed": 60"#),
        "{stdout}"
    );
    let group = Admin::new(&cluster)
        .unwrap()
        .describe_group("py-classic")
        .unwrap();
    let committed: u64 = group.description.offsets.values().map(|o| o.offset).sum();
    assert_eq!(committed, 660, "{:?}", group.description.offsets);
}

/// `kcat -G` (librdkafka's classic group protocol, eager `range`): a group
/// consumer reads all 300 records of a 3-partition RF 3 topic and commits
/// on its way out; the next one of the same group resumes from those
/// commits and reads only the 30 records written since.
#[test]
fn kcat_consumes_as_a_group_and_the_next_member_resumes_from_its_commits() {
    let Some(_) = kcat() else {
        return;
    };
    let (cluster, addr) = with_listener();
    create_led(&cluster, "grouped", 3);
    let group_read = || {
        let out = Command::new("kcat")
            .args(["-b", &addr.to_string(), "-G", "kcat-group", "grouped", "-e"])
            .args(["-X", "auto.offset.reset=earliest", "-f", "%k\n"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut keys: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect();
        keys.sort();
        keys
    };
    let lines = |prefix: &str, n: usize| -> String {
        (0..n).map(|i| format!("{prefix}{i}:v{i}\n")).collect()
    };
    let expected = |prefix: &str, n: usize| -> Vec<String> {
        let mut keys: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
        keys.sort();
        keys
    };
    assert!(
        kcat_produce(addr, "grouped", &lines("k", 300), &[])
            .status
            .success()
    );
    assert_eq!(group_read(), expected("k", 300));
    assert!(
        kcat_produce(addr, "grouped", &lines("new", 30), &[])
            .status
            .success()
    );
    assert_eq!(
        group_read(),
        expected("new", 30),
        "resumed from the commits"
    );
}

/// Keys of records a ferrolog consumer reads until `count` arrived and
/// nothing more does for a second.
fn read_keys(
    consumer: &mut ferrolog::client::Consumer<String, String>,
    count: usize,
) -> Vec<String> {
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut quiet_since = None;
    while Instant::now() < deadline {
        let records = consumer.poll(Duration::from_millis(100)).unwrap();
        keys.extend(records.into_iter().filter_map(|r| r.key));
        if keys.len() >= count {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(1) {
                break;
            }
        }
    }
    keys.sort();
    keys
}

/// Across clients: records a ferrolog `Producer` writes (keys, values,
/// headers, timestamps) are what kafka-python reads, and the other way
/// round; a ferrolog consumer group's commits are where a kafka-python
/// member of the group resumes, and the other way round.
#[test]
fn ferrolog_and_kafka_python_read_each_others_records_and_resume_from_each_others_commits() {
    use ferrolog::client::{AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig};
    use ferrolog::{ProducerRecord, TopicPartition};
    let Some(python) = python_with("kafka") else {
        return;
    };
    let (cluster, addr) = with_listener();
    for topic in ["from-ferrolog", "from-python"] {
        create_led(&cluster, topic, 3);
    }
    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    let send = |topic: &str, prefix: &str, n: usize| -> Vec<(u32, u64, usize)> {
        let deliveries: Vec<_> = (0..n)
            .map(|i| {
                let record = ProducerRecord::new(topic.to_string(), format!("v{i}"))
                    .with_key(format!("{prefix}{i}"))
                    .with_header("n", i.to_string().into_bytes())
                    .with_timestamp(1_700_000_000_000 + i as i64);
                producer.send(record).unwrap()
            })
            .collect();
        deliveries
            .into_iter()
            .enumerate()
            .map(|(i, d)| {
                let m = d.wait().unwrap();
                (m.partition.partition(), m.offset, i)
            })
            .collect()
    };

    // ferrolog writes, kafka-python reads the same records.
    let mut sent = send("from-ferrolog", "k", 30);
    sent.sort();
    let expected: Vec<String> = sent
        .iter()
        .map(|(p, o, i)| {
            format!(
                r#"[{p}, {o}, "k{i}", "v{i}", [["n", "{i}"]], {}]"#,
                1_700_000_000_000 + *i as i64
            )
        })
        .collect();
    let read = run_python(
        &python,
        "cross_clients.py",
        &["read", &addr.to_string(), "from-ferrolog", "30"],
    );
    assert_eq!(read.trim(), format!("[{}]", expected.join(", ")));

    // kafka-python writes, ferrolog reads the same records.
    let written = run_python(
        &python,
        "cross_clients.py",
        &["write", &addr.to_string(), "from-python", "30"],
    );
    let numbers: Vec<u64> = written
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let places: Vec<(u64, u64)> = numbers.chunks(2).map(|c| (c[0], c[1])).collect();
    assert_eq!(places.len(), 30, "{written}");
    let config = ConsumerConfig::builder()
        .auto_offset_reset(AutoOffsetReset::Earliest)
        .build()
        .unwrap();
    let mut reader: Consumer<String, String> = Consumer::new(&cluster, config).unwrap();
    reader
        .assign((0..3).map(|p| TopicPartition::new("from-python", p).unwrap()))
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while got.len() < 30 && Instant::now() < deadline {
        got.extend(reader.poll(Duration::from_millis(100)).unwrap());
    }
    assert_eq!(got.len(), 30);
    for r in &got {
        let i: usize = r.key.as_deref().unwrap()[1..].parse().unwrap();
        assert_eq!(
            (u64::from(r.partition()), r.offset),
            places[i],
            "record {i}'s place"
        );
        assert_eq!(r.value.as_deref(), Some(format!("v{i}").as_str()));
        assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
        assert_eq!(r.headers.len(), 1);
        assert_eq!(r.headers[0].key, "n");
        assert_eq!(
            r.headers[0].value.as_deref(),
            Some(i.to_string().as_bytes())
        );
    }

    // A ferrolog group commits; a kafka-python member resumes from there.
    let group_config = || {
        let mut config = ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .build()
            .unwrap();
        config.group_id = Some("shared".into());
        config.enable_auto_commit = false;
        config
    };
    let mut member: Consumer<String, String> = Consumer::new(&cluster, group_config()).unwrap();
    member.subscribe(["from-ferrolog"]).unwrap();
    assert_eq!(read_keys(&mut member, 30).len(), 30);
    member.commit_sync().unwrap();
    member.close();
    send("from-ferrolog", "m", 5);
    let resumed = run_python(
        &python,
        "cross_clients.py",
        &["resume", &addr.to_string(), "from-ferrolog", "shared", "5"],
    );
    assert_eq!(
        resumed.trim(),
        r#"["m0", "m1", "m2", "m3", "m4"]"#,
        "kafka-python resumes from ferrolog's commits"
    );

    // And a ferrolog member resumes from kafka-python's commits.
    send("from-ferrolog", "z", 3);
    let mut member: Consumer<String, String> = Consumer::new(&cluster, group_config()).unwrap();
    member.subscribe(["from-ferrolog"]).unwrap();
    assert_eq!(
        read_keys(&mut member, 3),
        ["z0", "z1", "z2"],
        "ferrolog resumes from kafka-python's commits"
    );
    member.close();
}

/// The jars of Kafka's Java client (`target/kafka-java/lib`, which
/// `.ci/run` fills with Maven) and a `java` to run them; `None` (the test
/// says it skipped) outside CI when either is missing.
fn java_kafka_clients() -> Option<std::path::PathBuf> {
    let lib = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/kafka-java/lib");
    let has_jars = std::fs::read_dir(&lib).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with("kafka-clients"))
    });
    let has_java = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if has_jars && has_java {
        return Some(lib);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "no kafka-clients jars in {lib:?} or no java, and CI must run this test"
    );
    eprintln!("SKIPPED: Kafka's Java client is not at {lib:?} (see .ci/run)");
    None
}

/// Kafka's Java client (kafka-clients 4.x): AdminClient creates and
/// describes a 6-partition RF 3 topic; a KafkaProducer with its defaults
/// (idempotent, acks=all) writes 600 keyed records, each landing in the
/// partition ferrolog's own partitioner (murmur2) gives its key; a
/// KafkaConsumer in a KIP-848 group reads all 600 and commits; AdminClient
/// lists and describes the group and its committed offsets.
#[test]
fn java_clients_place_keys_by_murmur2_consume_in_a_kip_848_group_and_administer() {
    let Some(lib) = java_kafka_clients() else {
        return;
    };
    let (_cluster, addr) = with_listener();
    let program =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/kafka/KafkaClients.java");
    let out = Command::new("java")
        .arg("-cp")
        .arg(format!("{}/*", lib.display()))
        .arg(program)
        .arg(addr.to_string())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut placed = 0;
    for line in stdout.lines().filter(|l| l.starts_with("PLACED ")) {
        let fields: Vec<&str> = line.split(' ').collect();
        let partition: u32 = fields[2].parse().unwrap();
        assert_eq!(
            partition,
            ferrolog::client::partitioner::partition_for_key(fields[1].as_bytes(), 6),
            "{line}: not where murmur2 puts it"
        );
        placed += 1;
    }
    assert_eq!(placed, 600);
    assert!(
        stdout.contains("SUMMARY consumed=600 listed=true members=1 assigned=6"),
        "{stdout}"
    );
}

/// OffsetForLeaderEpoch v2 by hand: the current leader epoch ends at the
/// log end; a caller that knows an older leader epoch than the leader's is
/// fenced (`FENCED_LEADER_EPOCH`, 74), one that knows a newer one is told
/// to look again (`NOT_LEADER_OR_FOLLOWER`, 6).
#[test]
fn offset_for_leader_epoch_ends_the_current_epoch_at_the_log_end_and_fences_old_callers() {
    use ferrolog::ProducerRecord;
    use ferrolog::client::{Producer, ProducerConfig};
    let (cluster, addr) = with_listener();
    let metadata = create_led(&cluster, "epochs", 1);
    let epoch = metadata.topics["epochs"].partitions[0].leader_epoch;
    let producer: Producer<String, String> =
        Producer::new(&cluster, ProducerConfig::default()).unwrap();
    for i in 0..5 {
        producer
            .send(ProducerRecord::new("epochs", format!("v{i}")))
            .unwrap()
            .wait()
            .unwrap();
    }
    // As a client does first: Metadata (v1, topics ["epochs"]), which
    // tells the listener where the partition's leader is.
    let mut socket = connect(addr);
    let mut topics = 1i32.to_be_bytes().to_vec();
    topics.extend_from_slice(&6i16.to_be_bytes());
    topics.extend_from_slice(b"epochs");
    socket.write_all(&frame(3, 1, 4, &topics)).unwrap();
    answer(&mut socket).expect("metadata");
    // topics [ "epochs" [ partition 0, current epoch, epoch ] ]
    let ask = |current: i32, asked: i32| {
        let mut body = Vec::new();
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&6i16.to_be_bytes());
        body.extend_from_slice(b"epochs");
        body.extend_from_slice(&1i32.to_be_bytes());
        body.extend_from_slice(&0i32.to_be_bytes());
        body.extend_from_slice(&current.to_be_bytes());
        body.extend_from_slice(&asked.to_be_bytes());
        let mut socket = connect(addr);
        socket.write_all(&frame(23, 2, 5, &body)).unwrap();
        let answer = answer(&mut socket).expect("an answer");
        // correlation id, throttle, 1 topic, "epochs", 1 partition, then
        // error code, partition, leader epoch, end offset.
        let at = 4 + 4 + 4 + 2 + 6 + 4;
        let code = i16::from_be_bytes(answer[at..at + 2].try_into().unwrap());
        let leader_epoch = i32::from_be_bytes(answer[at + 6..at + 10].try_into().unwrap());
        let end_offset = i64::from_be_bytes(answer[at + 10..at + 18].try_into().unwrap());
        (code, leader_epoch, end_offset)
    };
    assert_eq!(ask(epoch, epoch), (0, epoch, 5));
    assert_eq!(
        ask(-1, epoch),
        (0, epoch, 5),
        "no current epoch: not checked"
    );
    if epoch > 0 {
        assert_eq!(ask(epoch - 1, epoch).0, 74, "an older caller is fenced");
    }
    // A caller ahead of this leader is sent to look again
    // (`NOT_LEADER_OR_FOLLOWER`).
    assert_eq!(ask(epoch + 1, epoch).0, 6);
}
