//! Runs the deterministic simulator over many seeds and prints one summary
//! line, plus one line per seed that found an anomaly:
//!
//! ```sh
//! cargo run --release --example simulate -- --seeds 1000 [--from 0]
//! FERROLOG_SIM_SEED=13 cargo run --release --example simulate   # one seed, with its trace hash
//! ```

use std::time::Instant;

use ferrolog::sim::{SimConfig, run, run_seeds};

fn main() {
    let mut seeds = 100u64;
    let mut from = 0u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--seeds", Some(n)) => seeds = n,
            ("--from", Some(n)) => from = n,
            _ => {
                eprintln!("usage: simulate [--seeds N] [--from S]");
                std::process::exit(2);
            }
        }
    }
    if let Some(seed) = std::env::var("FERROLOG_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        let report = run(&SimConfig::new(seed));
        println!("{report}");
        std::process::exit(i32::from(!report.anomalies.is_empty()));
    }
    let started = Instant::now();
    let summary = run_seeds(from..from + seeds);
    for report in &summary.failed {
        println!("FAILED {report}");
    }
    println!("{summary} seconds={:.1}", started.elapsed().as_secs_f64());
    if !summary.failed.is_empty() {
        std::process::exit(1);
    }
}
