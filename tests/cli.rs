//! The `ferrolog` command end to end against a node process: topics are
//! created and described, lines produced and consumed in a group, the
//! group's lag table printed, a segment file dumped; bad usage is refused
//! with the usage text.

#[path = "support/processes.rs"]
mod support;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use support::{BIN, Nodes};

fn ferrolog(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(args: &[&str], stdin: Option<&str>) -> String {
    let out = ferrolog(args, stdin);
    assert!(
        out.status.success(),
        "ferrolog {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn topics_produce_consume_groups_and_dump_log_against_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::on_loopback(dir.path(), 1);
    let node = nodes.start(0);
    let server = nodes.servers();
    let bs = ["--bootstrap-server", server.as_str()];
    let with = |args: &[&'static str]| -> Vec<&str> {
        let mut all: Vec<&str> = args[..1].to_vec();
        all.extend(bs);
        all.extend(&args[1..]);
        all
    };
    // The broker registers within a moment of the node starting; the
    // create is retried until it is.
    let create = with(&[
        "topics",
        "--create",
        "--topic",
        "lines",
        "--partitions",
        "3",
        "--config",
        "cleanup.policy=delete",
    ]);
    let deadline = std::time::Instant::now() + support::WAIT;
    while !ferrolog(&create, None).status.success() {
        assert!(std::time::Instant::now() < deadline, "never created");
        std::thread::yield_now();
    }
    let described = ok(&with(&["topics", "--describe", "--topic", "lines"]), None);
    assert!(
        described.contains("Topic: lines\tPartitionCount: 3\tReplicationFactor: 1"),
        "{described}"
    );
    assert_eq!(ok(&with(&["topics", "--list"]), None).trim(), "lines");

    let input: String = (0..100).map(|i| format!("k{}:line {i}\n", i % 5)).collect();
    ok(
        &with(&["produce", "--topic", "lines", "--key-separator", ":"]),
        Some(&input),
    );
    let consumed = ok(
        &with(&[
            "consume",
            "--topic",
            "lines",
            "--group",
            "readers",
            "--from-beginning",
            "--max-messages",
            "100",
            "--timeout-ms",
            "60000",
        ]),
        None,
    );
    let mut lines: Vec<&str> = consumed.lines().collect();
    lines.sort_by_key(|l| l[5..].parse::<u32>().unwrap());
    let expected: Vec<String> = (0..100).map(|i| format!("line {i}")).collect();
    assert_eq!(lines, expected, "every line once");

    let lag = ok(&with(&["groups", "--describe", "--group", "readers"]), None);
    let rows: Vec<&str> = lag.lines().skip(1).collect();
    assert_eq!(rows.len(), 3, "{lag}");
    let committed: u64 = rows
        .iter()
        .map(|r| {
            let cols: Vec<&str> = r.split('\t').collect();
            assert_eq!(cols[5], "0", "no lag: {r}");
            cols[3].parse::<u64>().unwrap()
        })
        .sum();
    assert_eq!(committed, 100, "{lag}");

    let segment = dir
        .path()
        .join("data-0/broker-0/lines-0/00000000000000000000.log");
    let dumped = ok(&["dump-log", segment.to_str().unwrap()], None);
    assert!(dumped.contains("baseOffset: 0"), "{dumped}");
    assert!(dumped.contains("isvalid: true"), "{dumped}");
    assert!(!dumped.contains("isvalid: false"), "{dumped}");

    let usage = ferrolog(&["topics", "--frobnicate"], None);
    assert_eq!(usage.status.code(), Some(2), "a flag without its value");
    let unknown = ferrolog(&["launch"], None);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown command \"launch\""));
    node.stop();
}
