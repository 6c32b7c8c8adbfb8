//! `Node`s: three nodes in this process, each with its own TCP transport
//! and data directory, form one cluster over loopback; clients elsewhere
//! find it from one address (`Bootstrap::servers`).

use std::time::{Duration, Instant};

use ferrolog::client::{
    Acks, AutoOffsetReset, Bootstrap, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use ferrolog::{Admin, Error, NewTopic, Node, NodeConfig, TopicConfig, TopicPartition};

const WAIT: Duration = Duration::from_secs(30);

fn config(id: u32, roles: &str, voter: &str, dir: &std::path::Path) -> NodeConfig {
    NodeConfig::from_properties(&format!(
        "node.id={id}\nprocess.roles={roles}\nlisteners=127.0.0.1:0\n\
         controller.quorum.voters=0@{voter}\nlog.dirs={}\ncluster.id=nodes-test\n\
         broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=300\n",
        dir.join(format!("node-{id}")).display()
    ))
    .unwrap()
}

/// Waits until every partition of `topic` has a leader and `isr` in-sync
/// replicas, as `admin` sees it.
fn wait_for_isr(admin: &Admin, topic: &str, isr: usize) {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Ok(t) = admin.describe_topic(topic)
            && t.partitions
                .iter()
                .all(|p| p.leader.is_some() && p.isr.len() == isr)
        {
            return;
        }
        assert!(Instant::now() < deadline, "{topic} never had ISR {isr}");
        std::thread::yield_now();
    }
}

fn read_all(bootstrap: Bootstrap, topic: &str, partitions: u32, count: usize) -> Vec<String> {
    let mut consumer = Consumer::<String, String>::new(
        bootstrap,
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait_ms(100u32)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer
        .assign((0..partitions).map(|p| TopicPartition::new(topic, p).unwrap()))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut values = Vec::new();
    while values.len() < count {
        assert!(
            Instant::now() < deadline,
            "read {} of {count}",
            values.len()
        );
        values.extend(
            consumer
                .poll(Duration::from_millis(200))
                .unwrap()
                .into_iter()
                .filter_map(|r| r.value),
        );
    }
    values
}

#[test]
fn three_nodes_form_a_cluster_and_a_broker_process_can_go_and_come_back() {
    let dir = tempfile::tempdir().unwrap();
    let first = Node::start(config(0, "broker,controller", "127.0.0.1:0", dir.path())).unwrap();
    let voter = first.local_addr().to_string();
    let second = Node::start(config(1, "broker", &voter, dir.path())).unwrap();
    let third = Node::start(config(2, "broker", &voter, dir.path())).unwrap();
    let third_addr = third.local_addr().to_string();

    // A client process that knows one address.
    let bootstrap = Bootstrap::servers(&second.local_addr().to_string()).unwrap();
    let admin = Admin::new(bootstrap.clone()).unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.describe_cluster().map_or(0, |c| c.brokers.len()) < 3 {
        assert!(Instant::now() < deadline, "three brokers never registered");
        std::thread::yield_now();
    }
    admin
        .create_topic(
            NewTopic::new("events", 3)
                .replication_factor(3)
                .config(TopicConfig {
                    min_insync_replicas: 2,
                    ..TopicConfig::default()
                }),
        )
        .unwrap();
    wait_for_isr(&admin, "events", 3);
    let producer = Producer::<String, String>::new(
        bootstrap.clone(),
        ProducerConfig::builder()
            .acks(Acks::All)
            .enable_idempotence(true)
            .linger_ms(1u64)
            .build()
            .unwrap(),
    )
    .unwrap();
    let send = |range: std::ops::Range<u32>| {
        let pending: Vec<_> = range
            .map(|i| {
                producer
                    .send(ProducerRecord::new("events", format!("v{i}")).with_key(format!("k{i}")))
                    .unwrap()
            })
            .collect();
        for p in pending {
            p.wait().unwrap();
        }
    };
    send(0..1_000);

    // The third node's process goes; the other two keep acks=all going.
    drop(third);
    send(1_000..2_000);

    // It comes back over its own files (at another port) and catches up.
    let mut again = config(2, "broker", &voter, dir.path());
    again.listeners = "127.0.0.1:0".into();
    let third = Node::start(again).unwrap();
    assert_ne!(third.local_addr().to_string(), third_addr);
    wait_for_isr(&admin, "events", 3);
    send(2_000..3_000);

    let mut values = read_all(bootstrap, "events", 3, 3_000);
    values.sort_by_key(|v| v[1..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..3_000).map(|i| format!("v{i}")).collect();
    assert_eq!(values, expected, "every acknowledged record, once");
    drop((producer, admin));
    for node in [third, second, first] {
        node.shutdown().unwrap();
    }
}

/// Three voters, each broker and controller; `ports` are their listeners.
fn voter_config(id: u32, ports: &[u16], dir: &std::path::Path) -> NodeConfig {
    let voters: Vec<String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{i}@127.0.0.1:{p}"))
        .collect();
    NodeConfig::from_properties(&format!(
        "node.id={id}\nprocess.roles=broker,controller\nlisteners=127.0.0.1:{}\n\
         controller.quorum.voters={}\nlog.dirs={}\ncluster.id=quorum-test\n\
         broker.session.timeout.ms=3000\nbroker.heartbeat.interval.ms=300\n",
        ports[id as usize],
        voters.join(","),
        dir.join(format!("node-{id}")).display()
    ))
    .unwrap()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The node whose controller is active, as the admin's metadata says.
fn active_controller(admin: &Admin) -> Option<u32> {
    admin
        .describe_cluster()
        .ok()?
        .controller
        .map(|c| c - ferrolog::CONTROLLER_ID)
}

#[test]
fn a_quorum_of_three_elects_a_controller_and_another_takes_over_when_it_goes() {
    let dir = tempfile::tempdir().unwrap();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let mut nodes: Vec<Option<Node>> = (0..3)
        .map(|id| Some(Node::start(voter_config(id, &ports, dir.path())).unwrap()))
        .collect();
    let servers: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let bootstrap = Bootstrap::servers(&servers.join(",")).unwrap();
    let admin = Admin::new(bootstrap.clone()).unwrap();
    let deadline = Instant::now() + WAIT;
    while admin.describe_cluster().map_or(0, |c| c.brokers.len()) < 3 {
        assert!(Instant::now() < deadline, "three brokers never registered");
        std::thread::yield_now();
    }
    let first = active_controller(&admin).expect("an active controller");
    admin
        .create_topic(NewTopic::new("before", 3).replication_factor(3))
        .unwrap();
    wait_for_isr(&admin, "before", 3);

    // The active controller's node goes; another voter takes over with
    // everything committed, and metadata changes go on.
    let gone = nodes[first as usize].take().unwrap();
    let stopped = Instant::now();
    drop(gone);
    let deadline = Instant::now() + WAIT;
    let next = loop {
        if let Some(c) = active_controller(&admin)
            && c != first
        {
            break c;
        }
        assert!(Instant::now() < deadline, "no new controller");
        std::thread::yield_now();
    };
    eprintln!(
        "controller {first} stopped; {next} active {:?} later",
        stopped.elapsed()
    );
    let topic = admin.describe_topic("before").unwrap();
    assert_eq!(
        topic.partitions.len(),
        3,
        "the new controller knows the topic"
    );
    admin
        .create_topic(
            NewTopic::new("after", 2)
                .replication_factor(2)
                .config(TopicConfig::default()),
        )
        .unwrap();
    wait_for_isr(&admin, "after", 2);

    // The old one comes back as a standby and a broker again.
    nodes[first as usize] = Some(Node::start(voter_config(first, &ports, dir.path())).unwrap());
    wait_for_isr(&admin, "before", 3);
    assert_eq!(
        active_controller(&admin),
        Some(next),
        "no needless election"
    );
    drop(admin);
    for node in nodes.into_iter().flatten() {
        node.shutdown().unwrap();
    }
}

#[test]
fn a_node_config_names_what_is_wrong() {
    let bad = |text: &str| match NodeConfig::from_properties(text) {
        Err(Error::InvalidConfig { field, reason }) => format!("{field}: {reason}"),
        other => panic!("expected InvalidConfig, got {other:?}"),
    };
    let base = "node.id=0\nprocess.roles=broker,controller\nlisteners=127.0.0.1:0\n\
                controller.quorum.voters=0@127.0.0.1:9093\nlog.dirs=/tmp/x\ncluster.id=c\n";
    assert!(NodeConfig::from_properties(base).is_ok());
    assert!(bad(&base.replace("node.id=0\n", "")).starts_with("node.id: is required"));
    assert!(bad(&base.replace("broker,controller", "broker,gateway")).contains("\"gateway\""));
    assert!(bad(&format!("{base}colour=blue\n")).contains("unknown setting \"colour\""));
    assert!(bad(&base.replace("0@127", "x@127")).starts_with("controller.quorum.voters"));
    assert!(bad(&format!("{base}broker.session.timeout.ms=soon\n")).contains("\"soon\""));
    assert!(bad(&base.replace("node.id=0", "node.id=70000")).contains("not below"));
    assert!(bad(&base.replace("node.id=0", "node.id=4")).contains("is not a voter"));
}
