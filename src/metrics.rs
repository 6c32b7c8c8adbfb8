//! Metrics (SPEC O4): typed snapshots of counters, gauges and latency
//! summaries, read through an API — [`Cluster::metrics`](crate::Cluster::metrics),
//! [`BrokerCore::metrics`](crate::broker::BrokerCore::metrics),
//! [`Producer::metrics`](crate::Producer::metrics) and
//! [`Consumer::metrics`](crate::Consumer::metrics).
//!
//! Recording is always on and costs an increment or a histogram bucket per
//! event, on state the recording node already holds (no lock, no atomic,
//! no clock read of its own: latencies are measured on the node's input
//! time). Nothing here exports anything or starts a server: a snapshot is a
//! plain value to print, assert on, or hand to an exporter of your choice.
//!
//! Latencies are kept in a [`Histogram`] of fixed size whose buckets are
//! exact up to 16 and then within 12.5 % of the value (eight buckets per
//! power of two), so percentiles cost a walk over a few hundred counters
//! and never an allocation per event.

use std::collections::BTreeMap;

use crate::protocol::GroupState;
use crate::protocol::NodeId;
use crate::topic::TopicPartition;

/// Exact buckets below this value.
const LINEAR: u64 = 16;
/// Buckets per power of two above it (as a shift: 8).
const SUB_BITS: u32 = 3;
const BUCKETS: usize = LINEAR as usize + (64 - 4) * (1 << SUB_BITS);

/// A latency (or size) distribution of fixed size; see the
/// [module docs](self).
#[derive(Clone, PartialEq, Eq)]
pub struct Histogram {
    buckets: Box<[u64; BUCKETS]>,
    count: u64,
    sum: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self {
            buckets: Box::new([0; BUCKETS]),
            count: 0,
            sum: 0,
            max: 0,
        }
    }
}

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.summary().fmt(f)
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    /// Counts one value.
    pub fn record(&mut self, value: u64) {
        self.buckets[bucket_of(value)] += 1;
        self.count += 1;
        self.sum = self.sum.saturating_add(value);
        self.max = self.max.max(value);
    }

    /// How many values were counted.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The largest value counted (0 when empty).
    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0.0..=1.0): the upper bound of the bucket
    /// holding it, never above [`max`](Self::max); 0 when empty.
    pub fn quantile(&self, q: f64) -> u64 {
        if self.count == 0 {
            return 0;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.count as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (index, &n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return upper_bound(index).min(self.max);
            }
        }
        self.max
    }

    /// Count, mean, p50, p99 and max.
    pub fn summary(&self) -> Summary {
        Summary {
            count: self.count,
            mean: if self.count == 0 {
                0.0
            } else {
                self.sum as f64 / self.count as f64
            },
            p50: self.quantile(0.50),
            p99: self.quantile(0.99),
            max: self.max,
        }
    }
}

fn bucket_of(value: u64) -> usize {
    if value < LINEAR {
        return value as usize;
    }
    let exponent = 63 - value.leading_zeros(); // >= 4
    let sub = (value >> (exponent - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    LINEAR as usize + ((exponent - 4) as usize) * (1 << SUB_BITS) + sub as usize
}

/// The largest value of bucket `index`.
fn upper_bound(index: usize) -> u64 {
    if index < LINEAR as usize {
        return index as u64;
    }
    let above = index - LINEAR as usize;
    let exponent = (above >> SUB_BITS) as u32 + 4;
    let sub = (above & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (exponent - SUB_BITS);
    ((1u64 << exponent) + sub * width).saturating_add(width - 1)
}

/// A distribution's summary (latencies in milliseconds unless the field
/// says otherwise).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Summary {
    /// Values counted.
    pub count: u64,
    /// Their mean.
    pub mean: f64,
    /// The median (bucket upper bound).
    pub p50: u64,
    /// The 99th percentile (bucket upper bound).
    pub p99: u64,
    /// The largest.
    pub max: u64,
}

/// One request kind as a broker served it.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMetrics {
    /// Requests received.
    pub count: u64,
    /// Answered with an error.
    pub errors: u64,
    /// From receipt to answer, in milliseconds of the broker's clock
    /// (parked requests — acks=all produces, long-poll fetches, group
    /// writes — wait in purgatory; the rest answer at once).
    pub latency_ms: Summary,
}

/// Requests parked in a broker's purgatories now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgatoryMetrics {
    /// acks=all produces waiting for the high watermark.
    pub produce: usize,
    /// Fetches waiting for data (`fetch_min_bytes`) or their wait.
    pub fetch: usize,
    /// Group requests waiting for their records to commit.
    pub group: usize,
    /// Group heartbeats held until their group changes.
    pub heartbeat: usize,
}

/// A follower as its leader sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerMetrics {
    /// The follower's broker.
    pub broker: NodeId,
    /// Its log end offset at its last fetch.
    pub log_end_offset: u64,
    /// How far behind the leader's log end offset it is.
    pub lag: u64,
}

/// One partition replica's counters and gauges, as the broker holding it
/// sees them (the leader's is the partition's).
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionMetrics {
    /// The partition.
    pub partition: TopicPartition,
    /// The broker holding this replica.
    pub broker: NodeId,
    /// The leader this replica knows (`None`: offline).
    pub leader: Option<NodeId>,
    /// The replicas, preferred leader first.
    pub replicas: Vec<NodeId>,
    /// The in-sync replicas.
    pub isr: Vec<NodeId>,
    /// The first offset of the log.
    pub log_start_offset: u64,
    /// The offset the next record gets.
    pub log_end_offset: u64,
    /// The high watermark: offsets below it are committed.
    pub high_watermark: u64,
    /// Records appended by producers (on the leader; Kafka's
    /// `MessagesInPerSec` as a count).
    pub records_in: u64,
    /// Bytes appended by producers (on the leader; `BytesInPerSec`).
    pub bytes_in: u64,
    /// Bytes served to consumers, not followers (on the leader;
    /// `BytesOutPerSec`).
    pub bytes_out: u64,
    /// Fewer in-sync replicas than replicas.
    pub under_replicated: bool,
    /// No leader.
    pub offline: bool,
    /// The followers, with their lag (on the leader; empty elsewhere).
    pub followers: Vec<FollowerMetrics>,
}

/// A consumer group as its coordinator holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMetrics {
    /// The group id.
    pub group: String,
    /// Its state.
    pub state: GroupState,
    /// Its group epoch (KIP-848's generation): bumped by every change of
    /// members, subscriptions or subscribed partitions.
    pub group_epoch: i32,
    /// Its members.
    pub members: usize,
    /// The broker coordinating it.
    pub coordinator: NodeId,
}

/// One broker's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct BrokerMetrics {
    /// The broker.
    pub broker: NodeId,
    /// Per request kind (Kafka's API names), what it served.
    pub requests: BTreeMap<&'static str, RequestMetrics>,
    /// Requests parked now.
    pub purgatory: PurgatoryMetrics,
    /// The replicas it holds.
    pub partitions: Vec<PartitionMetrics>,
    /// The groups it coordinates.
    pub groups: Vec<GroupMetrics>,
}

/// A whole embedded cluster's snapshot: every running broker's, and each
/// partition as its leader reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterMetrics {
    /// Each running broker's snapshot.
    pub brokers: Vec<BrokerMetrics>,
    /// Each partition of every topic, as its leader reports it; a
    /// partition without a running leader as the metadata has it, marked
    /// offline.
    pub partitions: Vec<PartitionMetrics>,
    /// Partitions with fewer in-sync replicas than replicas.
    pub under_replicated_partitions: usize,
    /// Partitions without a leader.
    pub offline_partitions: usize,
    /// Every consumer group, from its coordinator.
    pub groups: Vec<GroupMetrics>,
}

impl ClusterMetrics {
    /// The snapshot in Prometheus' text exposition format (version 0.0.4),
    /// for an HTTP endpoint of the application's own (the library serves
    /// nothing): per partition its counters and gauges, per broker its
    /// requests (count, errors, latency as a summary) and purgatory sizes,
    /// per group its members, and the cluster's under-replicated and
    /// offline partition counts. Metric names start with `ferrolog_`.
    pub fn prometheus_text(&self) -> String {
        let mut out = Exposition::default();
        let partition_labels = |p: &PartitionMetrics| {
            vec![
                ("topic", p.partition.topic().to_string()),
                ("partition", p.partition.partition().to_string()),
            ]
        };
        type PartitionValue = fn(&PartitionMetrics) -> u64;
        let partition_metrics: [(&str, &str, &str, PartitionValue); 9] = [
            (
                "partition_records_in_total",
                "counter",
                "Records appended by producers.",
                |p| p.records_in,
            ),
            (
                "partition_bytes_in_total",
                "counter",
                "Bytes appended by producers.",
                |p| p.bytes_in,
            ),
            (
                "partition_bytes_out_total",
                "counter",
                "Bytes served to consumers.",
                |p| p.bytes_out,
            ),
            (
                "partition_log_start_offset",
                "gauge",
                "First offset of the log.",
                |p| p.log_start_offset,
            ),
            (
                "partition_log_end_offset",
                "gauge",
                "Offset the next record gets.",
                |p| p.log_end_offset,
            ),
            (
                "partition_high_watermark",
                "gauge",
                "Offsets below it are committed.",
                |p| p.high_watermark,
            ),
            ("partition_isr_size", "gauge", "In-sync replicas.", |p| {
                p.isr.len() as u64
            }),
            (
                "partition_under_replicated",
                "gauge",
                "1 if fewer in-sync replicas than replicas.",
                |p| u64::from(p.under_replicated),
            ),
            (
                "partition_offline",
                "gauge",
                "1 if the partition has no leader.",
                |p| u64::from(p.offline),
            ),
        ];
        for (name, kind, help, value) in partition_metrics {
            out.family(name, kind, help);
            for p in &self.partitions {
                out.sample(name, &partition_labels(p), value(p) as f64);
            }
        }
        out.family(
            "broker_requests_total",
            "counter",
            "Requests received, by API.",
        );
        out.family(
            "broker_request_errors_total",
            "counter",
            "Requests answered with an error, by API.",
        );
        for b in &self.brokers {
            for (api, r) in &b.requests {
                let labels = [("broker", b.broker.to_string()), ("api", api.to_string())];
                out.sample("broker_requests_total", &labels, r.count as f64);
                out.sample("broker_request_errors_total", &labels, r.errors as f64);
            }
        }
        let latency = "broker_request_latency_ms";
        out.family(latency, "summary", "From receipt to answer, in ms, by API.");
        for b in &self.brokers {
            for (api, r) in &b.requests {
                let labels = vec![("broker", b.broker.to_string()), ("api", api.to_string())];
                out.summary(latency, &labels, &r.latency_ms);
            }
        }
        out.family(
            "broker_purgatory_size",
            "gauge",
            "Requests parked now, by kind.",
        );
        for b in &self.brokers {
            let p = &b.purgatory;
            for (kind, n) in [
                ("produce", p.produce),
                ("fetch", p.fetch),
                ("group", p.group),
                ("heartbeat", p.heartbeat),
            ] {
                let labels = [("broker", b.broker.to_string()), ("kind", kind.to_string())];
                out.sample("broker_purgatory_size", &labels, n as f64);
            }
        }
        out.family("group_members", "gauge", "Members of each consumer group.");
        for g in &self.groups {
            out.sample(
                "group_members",
                &[("group", g.group.clone())],
                g.members as f64,
            );
        }
        out.family(
            "group_epoch",
            "gauge",
            "Each consumer group's epoch (generation).",
        );
        for g in &self.groups {
            let labels = [("group", g.group.clone())];
            out.sample("group_epoch", &labels, f64::from(g.group_epoch));
        }
        for (name, help, value) in [
            (
                "under_replicated_partitions",
                "Partitions with fewer in-sync replicas than replicas.",
                self.under_replicated_partitions,
            ),
            (
                "offline_partitions",
                "Partitions without a leader.",
                self.offline_partitions,
            ),
        ] {
            out.family(name, "gauge", help);
            out.sample(name, &[], value as f64);
        }
        out.text
    }
}

/// Builds Prometheus text exposition.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        use std::fmt::Write;
        let _ = writeln!(self.text, "# HELP ferrolog_{name} {help}");
        let _ = writeln!(self.text, "# TYPE ferrolog_{name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: f64) {
        use std::fmt::Write;
        let _ = write!(self.text, "ferrolog_{name}");
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, value)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(value));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {value}");
    }

    fn summary(&mut self, name: &str, labels: &[(&str, String)], s: &Summary) {
        for (q, v) in [("0.5", s.p50), ("0.99", s.p99)] {
            let mut with_q = labels.to_vec();
            with_q.push(("quantile", q.to_string()));
            self.sample(name, &with_q, v as f64);
        }
        self.sample(&format!("{name}_sum"), labels, s.mean * s.count as f64);
        self.sample(&format!("{name}_count"), labels, s.count as f64);
    }
}

/// A label value with `\`, `"` and newlines escaped, as the format wants.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A producer's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ProducerMetrics {
    /// Records acknowledged (or sent, with acks=0).
    pub records_sent: u64,
    /// Records whose send failed for good.
    pub record_errors: u64,
    /// Batch sends that were retries.
    pub retries: u64,
    /// Produce requests sent.
    pub requests: u64,
    /// Records per batch, per first send.
    pub batch_records: Summary,
    /// From a batch's first record to its first send, in milliseconds
    /// (`linger_ms`, waiting for a leader or for room in flight).
    pub queue_time_ms: Summary,
    /// From a batch's first record to its acknowledgement, in milliseconds.
    pub produce_latency_ms: Summary,
    /// Bytes of `buffer_memory` taken by records not yet settled.
    pub buffer_memory_used: usize,
}

/// A consumer's snapshot.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumerMetrics {
    /// Records handed to the application.
    pub records_consumed: u64,
    /// Bytes of record batches fetched (Kafka's `bytes-consumed`: what
    /// fetches brought, framing included).
    pub bytes_fetched: u64,
    /// Fetch requests answered.
    pub fetches: u64,
    /// From a fetch's send to its answer, in milliseconds.
    pub fetch_latency_ms: Summary,
    /// Per assigned partition with a known high watermark: how far the
    /// position is behind it.
    pub lag: BTreeMap<TopicPartition, u64>,
    /// Assignment changes taken (group members).
    pub rebalances: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn buckets_are_exact_small_and_within_an_eighth_large() {
        for v in 0..16 {
            assert_eq!(upper_bound(bucket_of(v)), v);
        }
        for v in [16, 17, 100, 1_000, 65_535, 1 << 40, u64::MAX] {
            let upper = upper_bound(bucket_of(v));
            assert!(upper >= v, "{v} -> {upper}");
            assert!((upper - v) as f64 <= v as f64 / 8.0, "{v} -> {upper}");
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn prometheus_text_has_each_family_once_and_escapes_labels() {
        let mut latency = Histogram::new();
        latency.record(3);
        latency.record(5);
        let tp = TopicPartition::new("orders", 2).unwrap();
        let partition = PartitionMetrics {
            partition: tp,
            broker: 1,
            leader: Some(1),
            replicas: vec![1, 2, 3],
            isr: vec![1, 2],
            log_start_offset: 4,
            log_end_offset: 960,
            high_watermark: 958,
            records_in: 960,
            bytes_in: 28_314,
            bytes_out: 100,
            under_replicated: true,
            offline: false,
            followers: Vec::new(),
        };
        let broker = BrokerMetrics {
            broker: 1,
            requests: [(
                "Produce",
                RequestMetrics {
                    count: 2,
                    errors: 1,
                    latency_ms: latency.summary(),
                },
            )]
            .into_iter()
            .collect(),
            purgatory: PurgatoryMetrics::default(),
            partitions: vec![partition.clone()],
            groups: Vec::new(),
        };
        let metrics = ClusterMetrics {
            brokers: vec![broker],
            partitions: vec![partition],
            under_replicated_partitions: 1,
            offline_partitions: 0,
            groups: vec![GroupMetrics {
                group: "billing \"eu\"\\x".into(),
                state: GroupState::Stable,
                group_epoch: 3,
                members: 2,
                coordinator: 1,
            }],
        };
        let text = metrics.prometheus_text();
        for line in [
            "ferrolog_partition_log_end_offset{topic=\"orders\",partition=\"2\"} 960",
            "ferrolog_partition_under_replicated{topic=\"orders\",partition=\"2\"} 1",
            "ferrolog_broker_request_errors_total{broker=\"1\",api=\"Produce\"} 1",
            "ferrolog_broker_request_latency_ms{broker=\"1\",api=\"Produce\",quantile=\"0.99\"} 5",
            "ferrolog_broker_request_latency_ms_sum{broker=\"1\",api=\"Produce\"} 8",
            "ferrolog_broker_request_latency_ms_count{broker=\"1\",api=\"Produce\"} 2",
            "ferrolog_group_members{group=\"billing \\\"eu\\\"\\\\x\"} 2",
            "ferrolog_group_epoch{group=\"billing \\\"eu\\\"\\\\x\"} 3",
            "ferrolog_under_replicated_partitions 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
        let types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE")).collect();
        let mut unique = types.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(types.len(), unique.len(), "a family declared twice");
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let family = line.split(['{', ' ']).next().unwrap();
            let base = family.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(
                types.iter().any(|t| t.split(' ').nth(2) == Some(base)),
                "{family} has no TYPE line"
            );
        }
    }

    #[test]
    fn an_empty_histogram_summarises_to_zeros() {
        assert_eq!(Histogram::new().summary(), Summary::default());
    }

    proptest! {
        /// Every quantile lies within an eighth above the exact one (and
        /// never above the max); count and max are exact.
        #[test]
        fn quantiles_are_within_an_eighth_of_the_exact_ones(
            mut values in prop::collection::vec(0u64..10_000_000, 1..400),
            q in 0.0f64..=1.0,
        ) {
            let mut h = Histogram::new();
            for &v in &values {
                h.record(v);
            }
            values.sort_unstable();
            prop_assert_eq!(h.count(), values.len() as u64);
            prop_assert_eq!(h.max(), *values.last().unwrap());
            let rank = ((q * values.len() as f64).ceil() as usize).max(1);
            let exact = values[rank - 1];
            let got = h.quantile(q);
            prop_assert!(got >= exact, "{} < {}", got, exact);
            prop_assert!((got - exact) as f64 <= exact as f64 / 8.0 + 1.0, "{} vs {}", got, exact);
        }
    }
}
