//! What every benchmark prints: one `BENCH name=... records_per_s=...
//! mb_per_s=...` line per workload, with latency percentiles when measured.

#![allow(dead_code)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolog::Cluster;
use ferrolog::client::{Acks, Producer, ProducerConfig, ProducerRecord};

/// One timed run: wall time and, optionally, per-operation latencies.
pub struct Run {
    /// Wall time of the whole run.
    pub elapsed: Duration,
    /// Per-operation latencies (may be empty).
    pub latencies_ns: Vec<u64>,
}

/// The `p` quantile of sorted nanoseconds, in microseconds.
pub fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as f64 / 1000.0
}

/// Prints the BENCH line; returns MB/s.
pub fn report(name: &str, records: usize, bytes: usize, run: &Run, extra: &str) -> f64 {
    let secs = run.elapsed.as_secs_f64();
    let mb_per_s = bytes as f64 / secs / 1e6;
    let mut line = format!(
        "BENCH name={name} records_per_s={:.0} mb_per_s={:.1} secs={secs:.3}",
        records as f64 / secs,
        mb_per_s
    );
    if !run.latencies_ns.is_empty() {
        let mut l = run.latencies_ns.clone();
        l.sort_unstable();
        line.push_str(&format!(
            " p50_us={:.1} p99_us={:.1} p999_us={:.1}",
            percentile(&l, 0.50),
            percentile(&l, 0.99),
            percentile(&l, 0.999)
        ));
    }
    if !extra.is_empty() {
        line.push(' ');
        line.push_str(extra);
    }
    println!("{line}");
    mb_per_s
}

/// Sends `records` values of `value_bytes` to `topic` with one producer
/// (`acks`, linger 5 ms) and times it until every record is acknowledged.
pub fn produce(
    cluster: &Cluster,
    topic: &'static str,
    acks: Acks,
    records: usize,
    value_bytes: usize,
) -> Run {
    produce_with(cluster, topic, acks, records, value_bytes, true)
}

/// [`produce`] with the producer's metrics recording on or off.
pub fn produce_with(
    cluster: &Cluster,
    topic: &'static str,
    acks: Acks,
    records: usize,
    value_bytes: usize,
    metrics_enabled: bool,
) -> Run {
    let config = ProducerConfig::builder()
        .acks(acks)
        .linger_ms(5u64)
        .metrics_enabled(metrics_enabled)
        .build()
        .expect("config");
    let producer: Producer<Bytes, Bytes> = Producer::new(cluster, config).expect("producer");
    let value = Bytes::from(vec![b'x'; value_bytes]);
    let started = Instant::now();
    let mut last = None;
    for _ in 0..records {
        last = Some(
            producer
                .send(ProducerRecord::new(topic, value.clone()))
                .expect("send"),
        );
    }
    producer.flush();
    let elapsed = started.elapsed();
    let meta = last.expect("sent").wait().expect("acknowledged");
    assert_eq!(meta.offset, records as u64 - 1, "every record acknowledged");
    Run {
        elapsed,
        latencies_ns: Vec::new(),
    }
}
