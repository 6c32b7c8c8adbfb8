//! `TcpTransport`: an embedded cluster's process listens, and clients on a
//! transport of their own (another process, as far as either knows) reach
//! it over loopback TCP. Then what the wire must refuse: frames with wrong
//! lengths, unknown message kinds, huge declared sizes, a peer of another
//! cluster, a connection closed mid-frame — each closes its connection with
//! a reason, and the cluster goes on serving the others. And what a sender
//! sees when the far end is gone, slow or silent.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ferrolog::client::{
    Acks, AutoOffsetReset, Bootstrap, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use ferrolog::protocol::{
    Envelope, MetadataRequest, Peer, ProducePartition, ProduceRequest, Request, Response, codec,
};
use ferrolog::record::RecordBatchBuilder;
use ferrolog::transport::{Endpoint, TcpTransport, TcpTransportConfig};
use ferrolog::{Admin, CONTROLLER_ID, Cluster, Error, NewTopic, TopicPartition};

const WAIT: Duration = Duration::from_secs(20);

/// A cluster of `brokers` whose process listens on loopback.
fn serving(cluster_id: &str, brokers: u32) -> (Cluster, TcpTransport) {
    let server = TcpTransport::start(TcpTransportConfig {
        cluster_id: cluster_id.into(),
        node_id: Some(0),
        listener: Some("127.0.0.1:0".into()),
        ..TcpTransportConfig::default()
    })
    .unwrap();
    let cluster = Cluster::builder()
        .brokers(brokers)
        .transport(server.clone())
        .build()
        .unwrap();
    (cluster, server)
}

/// A client process's transport that knows where nodes `0..brokers` and
/// the controller are.
fn dialing(cluster_id: &str, server: SocketAddr, brokers: u32) -> TcpTransport {
    let nodes: BTreeMap<u32, String> = (0..brokers)
        .chain([CONTROLLER_ID])
        .map(|id| (id, server.to_string()))
        .collect();
    TcpTransport::start(TcpTransportConfig {
        cluster_id: cluster_id.into(),
        nodes,
        ..TcpTransportConfig::default()
    })
    .unwrap()
}

fn bootstrap(transport: &TcpTransport, brokers: u32) -> Bootstrap {
    Bootstrap::new(Arc::new(transport.clone()), 0..brokers)
}

fn metadata(endpoint: &Endpoint) -> Result<Response, Error> {
    endpoint.call(
        0,
        Request::Metadata(MetadataRequest::default()),
        Duration::from_secs(10),
    )
}

/// Waits until `transport` has logged a closed connection whose reason
/// contains `needle`.
fn wait_closed(transport: &TcpTransport, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(c) = transport
            .closed()
            .into_iter()
            .find(|c| c.reason.contains(needle))
        {
            return c.reason;
        }
        assert!(
            Instant::now() < deadline,
            "no connection closed for {needle:?}; closed: {:?}",
            transport.closed()
        );
        std::thread::yield_now();
    }
}

/// Reads until the far end closes the socket; panics if it stays open.
fn assert_closed_by_peer(stream: &mut TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => continue, // the handshake the transport sent first
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the transport did not close the connection: {e}"),
        }
    }
}

/// A handshake frame as ferrolog writes it, for `cluster_id`, from a
/// client process.
fn handshake(cluster_id: &str) -> Vec<u8> {
    let mut body = b"FRLG".to_vec();
    body.extend_from_slice(&1u16.to_be_bytes());
    body.push(0);
    body.extend_from_slice(&0u32.to_be_bytes());
    body.push(cluster_id.len() as u8);
    body.extend_from_slice(cluster_id.as_bytes());
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(&body);
    frame
}

#[test]
fn producer_consumer_and_admin_on_another_transport_reach_the_cluster_over_tcp() {
    let (cluster, server) = serving("tcp-e2e", 3);
    let addr = server.local_addr().unwrap();
    let client = dialing("tcp-e2e", addr, 3);
    let admin = Admin::new(bootstrap(&client, 3)).unwrap();
    admin
        .create_topic(NewTopic::new("orders", 3).replication_factor(3))
        .unwrap();
    let producer = Producer::<String, String>::new(
        bootstrap(&client, 3),
        ProducerConfig::builder()
            .acks(Acks::All)
            .linger_ms(1u64)
            .build()
            .unwrap(),
    )
    .unwrap();
    let sent: Vec<_> = (0..3_000)
        .map(|i| {
            producer
                .send(ProducerRecord::new("orders", format!("value-{i}")).with_key(format!("k{i}")))
                .unwrap()
        })
        .collect();
    for pending in sent {
        pending.wait().unwrap();
    }
    let mut consumer = Consumer::<String, String>::new(
        bootstrap(&client, 3),
        ConsumerConfig::builder()
            .auto_offset_reset(AutoOffsetReset::Earliest)
            .fetch_max_wait_ms(100u32)
            .build()
            .unwrap(),
    )
    .unwrap();
    consumer
        .assign((0..3).map(|p| TopicPartition::new("orders", p).unwrap()))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let mut values = Vec::new();
    while values.len() < 3_000 {
        assert!(Instant::now() < deadline, "read {} of 3000", values.len());
        values.extend(
            consumer
                .poll(Duration::from_millis(200))
                .unwrap()
                .into_iter()
                .filter_map(|r| r.value),
        );
    }
    values.sort_by_key(|v: &String| v[6..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..3_000).map(|i| format!("value-{i}")).collect();
    assert_eq!(values, expected, "every record once");
    // Every client of this process came in on connections to the cluster's
    // process, and none was refused.
    assert!(client.connections() >= 1);
    assert!(
        server.closed().is_empty(),
        "nothing closed: {:?}",
        server.closed()
    );
    drop((producer, consumer, admin));
    cluster.shutdown().unwrap();
}

#[test]
fn bad_frames_close_only_their_connection_with_a_reason() {
    let (cluster, server) = serving("tcp-bad", 1);
    let addr = server.local_addr().unwrap();
    let client = dialing("tcp-bad", addr, 1);
    let endpoint = Endpoint::new(Arc::new(client.clone())).unwrap();
    assert!(matches!(metadata(&endpoint), Ok(Response::Metadata(_))));

    let good_frame = codec::encode(&Envelope::request(
        Peer::Client(u64::MAX - 1),
        Peer::Broker(0),
        1,
        Request::Metadata(MetadataRequest::default()),
    ));
    type Case = (&'static str, Box<dyn Fn() -> Vec<u8>>, &'static str);
    let cases: Vec<Case> = vec![
        (
            "another cluster's handshake",
            Box::new(|| handshake("some-other-cluster")),
            "belongs to cluster \"some-other-cluster\"",
        ),
        (
            "no handshake first",
            Box::new(move || good_frame.to_vec()),
            "not a ferrolog handshake",
        ),
        (
            "a huge declared size",
            Box::new(|| {
                let mut bytes = handshake("tcp-bad");
                bytes.extend_from_slice(&(u32::MAX - 7).to_be_bytes());
                bytes.extend_from_slice(b"only a few bytes follow");
                bytes
            }),
            "declaring 4294967288 bytes, over the limit",
        ),
        (
            "a length shorter than an envelope",
            Box::new(|| {
                let mut bytes = handshake("tcp-bad");
                bytes.extend_from_slice(&3u32.to_be_bytes());
                bytes.extend_from_slice(&[0, 1, 0]);
                bytes
            }),
            "undecodable frame",
        ),
        (
            "an unknown message kind",
            Box::new(|| {
                let mut envelope = codec::encode(&Envelope::request(
                    Peer::Client(u64::MAX - 2),
                    Peer::Broker(0),
                    2,
                    Request::Metadata(MetadataRequest::default()),
                ))
                .to_vec();
                // The byte after version, sender, receiver and correlation
                // id says request or response; make it neither.
                let kind_at = 4 + 2 + 9 + 5 + 8;
                envelope[kind_at] = 0xEE;
                let mut bytes = handshake("tcp-bad");
                bytes.extend_from_slice(&envelope);
                bytes
            }),
            "message tag 238",
        ),
        (
            "a connection closed mid-frame",
            Box::new(|| {
                let mut bytes = handshake("tcp-bad");
                bytes.extend_from_slice(&100u32.to_be_bytes());
                bytes.extend_from_slice(&[7; 40]);
                bytes
            }),
            "in the middle of a frame (44 bytes of it read)",
        ),
    ];
    for (name, bytes, reason) in cases {
        let before = server.closed().len();
        let mut raw = TcpStream::connect(addr).unwrap();
        raw.write_all(&bytes()).unwrap();
        if name == "a connection closed mid-frame" {
            raw.shutdown(std::net::Shutdown::Write).unwrap();
        }
        assert_closed_by_peer(&mut raw);
        let logged = wait_closed(&server, reason);
        assert!(server.closed().len() > before, "{name}: logged");
        eprintln!("{name}: {logged}");
        // The cluster still serves a well-behaved client.
        assert!(
            matches!(metadata(&endpoint), Ok(Response::Metadata(_))),
            "{name}: the good client is still served"
        );
    }
    drop(endpoint);
    cluster.shutdown().unwrap();
}

#[test]
fn a_client_of_another_cluster_is_refused_on_its_own_side_too() {
    let (cluster, server) = serving("blue", 1);
    let stranger = dialing("green", server.local_addr().unwrap(), 1);
    let endpoint = Endpoint::new(Arc::new(stranger.clone())).unwrap();
    match metadata(&endpoint) {
        Err(Error::Network { node: 0, reason }) => {
            assert!(
                reason.contains("cluster") || reason.contains("closed"),
                "{reason}"
            )
        }
        other => panic!("expected a network error, got {other:?}"),
    }
    wait_closed(&server, "belongs to cluster \"green\", not \"blue\"");
    wait_closed(&stranger, "belongs to cluster \"blue\", not \"green\"");
    drop(endpoint);
    cluster.shutdown().unwrap();
}

#[test]
fn an_unreachable_node_fails_fast_backs_off_and_is_dialed_again_when_back() {
    // A free port: nobody listens there yet.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let client = TcpTransport::start(TcpTransportConfig {
        cluster_id: "later".into(),
        nodes: [(0, addr.to_string())].into(),
        reconnect_backoff_ms: 200,
        reconnect_backoff_max_ms: 400,
        ..TcpTransportConfig::default()
    })
    .unwrap();
    let endpoint = Endpoint::new(Arc::new(client.clone())).unwrap();
    let started = Instant::now();
    match metadata(&endpoint) {
        Err(Error::Network { node: 0, reason }) => assert!(reason.contains("connect"), "{reason}"),
        other => panic!("expected a network error, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5), "failed fast");
    // Within the backoff the node is not dialed again: the answer says when.
    match metadata(&endpoint) {
        Err(Error::Network { reason, .. }) => {
            assert!(reason.contains("reconnecting to"), "{reason}")
        }
        other => panic!("expected a network error, got {other:?}"),
    }
    // The node comes up on that port; after the backoff a request gets
    // through.
    let server = TcpTransport::start(TcpTransportConfig {
        cluster_id: "later".into(),
        node_id: Some(0),
        listener: Some(addr.to_string()),
        ..TcpTransportConfig::default()
    })
    .unwrap();
    let cluster = Cluster::builder()
        .transport(server.clone())
        .build()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    loop {
        match metadata(&endpoint) {
            Ok(Response::Metadata(_)) => break,
            Err(Error::Network { .. }) if Instant::now() < deadline => std::thread::yield_now(),
            other => panic!("expected metadata once the node is back, got {other:?}"),
        }
    }
    drop(endpoint);
    cluster.shutdown().unwrap();
}

/// A peer that accepts connections and never reads or answers.
fn silent_peer() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

fn big_produce(bytes: usize) -> Request {
    let mut batch = RecordBatchBuilder::with_capacity(bytes + 64);
    batch.append(0, None, Some(&vec![7u8; bytes]), &[]);
    Request::Produce(ProduceRequest {
        acks: ferrolog::protocol::Acks::All,
        timeout_ms: 1_000,
        partitions: vec![ProducePartition {
            partition: TopicPartition::new("t", 0).unwrap(),
            batch: batch.build(),
        }],
    })
}

#[test]
fn a_full_send_queue_is_a_typed_error_and_a_silent_peer_times_requests_out() {
    let (listener, addr) = silent_peer();
    let client = TcpTransport::start(TcpTransportConfig {
        cluster_id: "slow".into(),
        nodes: [(5, addr.to_string())].into(),
        send_buffer_max_bytes: 1 << 20,
        request_timeout_ms: 300,
        ..TcpTransportConfig::default()
    })
    .unwrap();
    let endpoint = Endpoint::new(Arc::new(client.clone())).unwrap();
    // The peer never accepts: the kernel completes the connection and
    // buffers what it can, then nothing more is taken. 64 KiB requests until the queue (the kernel's buffers full, then 1
    // MiB of our own) refuses one.
    let mut pending = Vec::new();
    let mut refused = None;
    for _ in 0..4_000 {
        let answer = endpoint.send(5, big_produce(64 << 10));
        if let Some(Err(e @ Error::SendBufferFull { .. })) = answer.try_take() {
            refused = Some(e);
            break;
        }
        pending.push(answer);
    }
    match refused {
        Some(Error::SendBufferFull {
            node: 5,
            limit_bytes,
        }) => assert_eq!(limit_bytes, 1 << 20),
        other => panic!("expected SendBufferFull, got {other:?}"),
    }
    // Nothing answers: each request sent times out after request_timeout_ms.
    let first = pending[0]
        .wait_timeout(WAIT)
        .expect("answered by the transport");
    assert!(
        matches!(
            first,
            Err(Error::RequestTimedOut {
                operation: "Produce",
                timeout_ms: 300
            })
        ),
        "{first:?}"
    );
    drop(listener);
}
