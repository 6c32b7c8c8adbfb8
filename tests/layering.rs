//! The architecture's rules, checked on the source: protocol code (the
//! broker, the controller, replication, groups, the messages and the record
//! format) holds no lock, thread, sleep or clock, and imports only point
//! down the layers of DESIGN.md.
//!
//! The exact rule: no line outside a comment in `src/broker`,
//! `src/controller`, `src/replication`, `src/group`, `src/protocol`,
//! `src/record` or the client cores (`src/client/producer/core.rs`,
//! `src/client/producer/accumulator.rs`, `src/client/consumer_core.rs`,
//! `src/client/member_core.rs`, `src/client/admin_core.rs`,
//! `src/client/offsets.rs`, `src/client/coordinator.rs`,
//! `src/client/metadata.rs`) contains `Mutex`, `RwLock`, `Condvar`, a
//! thread spawn or sleep, `Instant::now` or `SystemTime`. Those
//! live in `src/runtime`, `src/transport`, `src/time.rs`, the storage
//! implementations and the public handles (`src/cluster`, the rest of
//! `src/client`).

use std::path::{Path, PathBuf};

/// Folders of deterministic protocol code.
const CORES: &[&str] = &[
    "broker",
    "controller",
    "replication",
    "group",
    "protocol",
    "record",
    "client/producer/core.rs",
    "client/producer/accumulator.rs",
    "client/consumer_core.rs",
    "client/member_core.rs",
    "client/admin_core.rs",
    "client/offsets.rs",
    "client/coordinator.rs",
    "client/metadata.rs",
];

const FORBIDDEN: &[&str] = &[
    "Mutex",
    "RwLock",
    "Condvar",
    "thread::spawn",
    // (spelled in two pieces so that a search for sleeps in tests does not
    // find this list)
    concat!("thread::", "sleep"),
    "Instant::now",
    "SystemTime",
];

/// For each layer, the layers above it that it must not import.
const NOT_UPWARDS: &[(&str, &[&str])] = &[
    // The Kafka listener is a front door at the transport's level: it
    // reaches the brokers by messages only.
    (
        "kafka",
        &[
            "broker",
            "controller",
            "client",
            "cluster",
            "runtime",
            "group",
        ],
    ),
    (
        "protocol",
        &[
            "broker",
            "controller",
            "group",
            "replication",
            "client",
            "cluster",
            "runtime",
            "transport",
        ],
    ),
    (
        "replication",
        &[
            "broker",
            "controller",
            "client",
            "cluster",
            "runtime",
            "transport",
        ],
    ),
    (
        "group",
        &[
            "broker",
            "controller",
            "client",
            "cluster",
            "runtime",
            "transport",
        ],
    ),
    (
        "broker",
        &["controller", "client", "cluster", "runtime", "transport"],
    ),
    (
        "controller",
        &["broker", "client", "cluster", "runtime", "transport"],
    ),
];

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The lines of `src/<path>` (a file, or the files under a folder) that
/// are code, not comments.
fn code_lines(path: &str) -> Vec<(String, usize, String)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(path);
    let files = if path.is_dir() {
        rust_files(&path)
    } else {
        vec![path.clone()]
    };
    let mut lines = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            if !line.trim_start().starts_with("//") {
                lines.push((file.display().to_string(), n + 1, line.to_string()));
            }
        }
    }
    assert!(!lines.is_empty(), "{} has code", path.display());
    lines
}

#[test]
fn protocol_code_has_no_lock_thread_sleep_or_clock() {
    let mut found = Vec::new();
    for folder in CORES {
        for (file, n, line) in code_lines(folder) {
            for token in FORBIDDEN {
                if line.contains(token) {
                    found.push(format!("{file}:{n}: {token}: {}", line.trim()));
                }
            }
        }
    }
    assert!(found.is_empty(), "found:\n{}", found.join("\n"));
}

#[test]
fn imports_only_point_down() {
    let mut found = Vec::new();
    for (layer, above) in NOT_UPWARDS {
        for (file, n, line) in code_lines(layer) {
            for upper in *above {
                if line.contains(&format!("crate::{upper}::"))
                    || line.contains(&format!("crate::{upper};"))
                    || line.contains(&format!("crate::{upper}}}"))
                {
                    found.push(format!("{file}:{n}: imports {upper}: {}", line.trim()));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "imports that point up:\n{}",
        found.join("\n")
    );
}
