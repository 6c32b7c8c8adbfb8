//! Runs the deterministic simulator over many seeds and prints one summary
//! line, plus one line per seed that found an anomaly:
//!
//! ```sh
//! cargo run --release --example simulate -- --seeds 1000 [--from 0]
//! cargo run --release --example simulate -- --seeds 1000 --plant DuplicateBatchAppended
//! cargo run --release --example simulate -- --seeds 1000 --group-members 0   # no group
//! # the faults and workload of earlier runs:
//! cargo run --release --example simulate -- --seeds 1000 --pauses 0 --clock-jumps 0 \
//!     --controller-crashes 0 --membership-changes 0 --storage-faults 0 --commit-first-groups 0 \
//!     --topics 1 --member-stalls 0 --graceful-stops 0 --leader-acks-producers 0 \
//!     --controller-quorum-per-million 0 --voter-cuts 0
//! # every run's controller a Raft quorum of three voters:
//! cargo run --release --example simulate -- --seeds 1000 --controller-quorum-per-million 1000000
//! FERROLOG_SIM_SEED=13 cargo run --release --example simulate   # one seed, with its trace hash
//! ```

use std::time::Instant;

use ferrolog::sim::{PlantedBug, SimConfig, run, run_seeds_with};

fn main() {
    let mut seeds = 100u64;
    let mut from = 0u64;
    let mut template = SimConfig::new(0);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match (arg.as_str(), value.parse().ok()) {
            ("--seeds", Some(n)) => seeds = n,
            ("--from", Some(n)) => from = n,
            ("--group-members", Some(n)) => template.group_members = n as u32,
            ("--topics", Some(n)) => template.topics = n as u32,
            ("--pauses", Some(n)) => template.pauses = n != 0,
            ("--clock-jumps", Some(n)) => template.clock_jumps = n != 0,
            ("--controller-crashes", Some(n)) => template.controller_crashes = n != 0,
            ("--membership-changes", Some(n)) => template.membership_changes = n != 0,
            ("--storage-faults", Some(n)) => template.storage_faults = n != 0,
            ("--commit-first-groups", Some(n)) => template.commit_first_groups = n != 0,
            ("--member-stalls", Some(n)) => template.member_stalls = n != 0,
            ("--graceful-stops", Some(n)) => template.graceful_stops = n != 0,
            ("--leader-acks-producers", Some(n)) => template.leader_acks_producers = n as u32,
            ("--voter-cuts", Some(n)) => template.voter_cuts = n != 0,
            ("--controller-quorum-per-million", Some(n)) => {
                template.controller_quorum_per_million = n as u32
            }
            ("--plant", _) => {
                template.planted = PlantedBug::ALL
                    .into_iter()
                    .find(|bug| format!("{bug:?}") == value);
                if template.planted.is_none() {
                    eprintln!("unknown bug {value:?}; one of {:?}", PlantedBug::ALL);
                    std::process::exit(2);
                }
            }
            _ => {
                eprintln!(
                    "usage: simulate [--seeds N] [--from S] [--topics N] [--group-members N] [--pauses 0|1] [--clock-jumps 0|1]\n                 [--controller-crashes 0|1] [--membership-changes 0|1]\n                 [--storage-faults 0|1] [--commit-first-groups 0|1] [--member-stalls 0|1]\n                 [--graceful-stops 0|1] [--leader-acks-producers N]\n                 [--controller-quorum-per-million N] [--voter-cuts 0|1] [--plant BUG]"
                );
                std::process::exit(2);
            }
        }
    }
    if let Some(seed) = std::env::var("FERROLOG_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let report = run(&SimConfig { seed, ..template });
        println!("{report}");
        std::process::exit(i32::from(!report.anomalies.is_empty()));
    }
    let started = Instant::now();
    let summary = run_seeds_with(&template, from..from + seeds);
    for report in &summary.failed {
        println!("FAILED {report}");
    }
    println!("{summary} seconds={:.1}", started.elapsed().as_secs_f64());
    if !summary.failed.is_empty() {
        std::process::exit(1);
    }
}
