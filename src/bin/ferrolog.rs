//! The `ferrolog` command (feature `cli`): run a node of a cluster, manage
//! its topics and groups, produce and consume lines, dump a segment file.
//!
//! ```text
//! ferrolog node <server.properties>
//! ferrolog topics --bootstrap-server H:P --create --topic T [--partitions N]
//!                 [--replication-factor R] [--config key=value]...
//! ferrolog topics --bootstrap-server H:P --describe [--topic T] | --list | --delete --topic T
//! ferrolog produce --bootstrap-server H:P --topic T [--acks all|1|0] [--key-separator S]
//!                  [--enable-idempotence true|false] [--linger-ms MS]
//!                  [--request-timeout-ms MS] [--report]
//! ferrolog consume --bootstrap-server H:P --topic T [--group G] [--from-beginning]
//!                  [--max-messages N] [--timeout-ms MS]
//! ferrolog groups --bootstrap-server H:P --describe --group G | --list
//! ferrolog dump-log <segment.log>
//! ferrolog perf-produce --bootstrap-server H:P --topic T --num-records N --record-size B
//!                       [--acks all|1|0] [--linger-ms MS] [--batch-size B]
//! ```

use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ferrolog::client::{
    Acks, AutoOffsetReset, Bootstrap, Consumer, ConsumerConfig, Producer, ProducerConfig,
    ProducerRecord,
};
use ferrolog::record::{RecordBatch, batch_size_at};
use ferrolog::{Admin, Error, NewTopic, Node, NodeConfig, TopicPartition};

const USAGE: &str = "usage:
  ferrolog node <server.properties>
  ferrolog topics --bootstrap-server H:P (--create --topic T [--partitions N] [--replication-factor R] [--config k=v]... | --describe [--topic T] | --list | --delete --topic T)
  ferrolog produce --bootstrap-server H:P --topic T [--acks all|1|0] [--enable-idempotence true|false] [--linger-ms MS] [--request-timeout-ms MS] [--key-separator S] [--report]   (lines from stdin)
  ferrolog consume --bootstrap-server H:P --topic T [--group G] [--from-beginning] [--max-messages N] [--timeout-ms MS]
  ferrolog groups --bootstrap-server H:P (--describe --group G | --list)
  ferrolog dump-log <segment.log>
  ferrolog perf-produce --bootstrap-server H:P --topic T --num-records N --record-size B [--acks all|1|0] [--linger-ms MS] [--batch-size B]";

/// A command line's options: `--name value` pairs, flags, and the rest.
struct Args {
    values: BTreeMap<String, Vec<String>>,
    flags: Vec<String>,
    positional: Vec<String>,
}

/// Options that take no value.
const FLAGS: &[&str] = &[
    "--report",
    "--create",
    "--describe",
    "--delete",
    "--list",
    "--from-beginning",
];

impl Args {
    fn parse(args: impl Iterator<Item = String>) -> Result<Self, String> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut flags = Vec::new();
        let mut positional = Vec::new();
        let mut args = args.peekable();
        while let Some(arg) = args.next() {
            if FLAGS.contains(&arg.as_str()) {
                flags.push(arg);
            } else if arg.starts_with("--") {
                let value = args.next().ok_or(format!("{arg} needs a value"))?;
                values.entry(arg).or_default().push(value);
            } else {
                positional.push(arg);
            }
        }
        Ok(Self {
            values,
            flags,
            positional,
        })
    }

    fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.values
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    fn required(&self, name: &str) -> Result<&str, String> {
        self.value(name).ok_or(format!("{name} is required"))
    }

    fn number<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.value(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("{name} {v:?} is not a number")),
        }
    }

    fn bootstrap(&self) -> Result<Bootstrap, String> {
        Bootstrap::servers(self.required("--bootstrap-server")?).map_err(|e| e.to_string())
    }
}

fn main() -> ExitCode {
    let mut argv = std::env::args().skip(1);
    let Some(command) = argv.next() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let args = match Args::parse(argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("ferrolog: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if command != "node" {
        // A tool whose output is cut short (`| head`) ends quietly, as
        // Unix tools do. (Not a node: its sockets must see EPIPE.)
        // SAFETY: setting a signal's disposition before any thread runs.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match command.as_str() {
        "node" => node(&args),
        "topics" => topics(&args),
        "produce" => produce(&args),
        "consume" => consume(&args),
        "groups" => groups(&args),
        "dump-log" => dump_log(&args),
        "perf-produce" => perf_produce(&args),
        "-h" | "--help" | "help" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ferrolog: {e}");
            ExitCode::FAILURE
        }
    }
}

fn err(e: Error) -> String {
    e.to_string()
}

/// Runs a node until SIGINT or SIGTERM.
fn node(args: &Args) -> Result<(), String> {
    let [path] = args.positional.as_slice() else {
        return Err(format!("node takes one properties file\n{USAGE}"));
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
    let config = NodeConfig::from_properties(&text).map_err(err)?;
    // Block the stop signals in every thread (the node's threads inherit
    // this mask) so that this thread takes them with sigwait.
    let signals = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    let node = Node::start(config).map_err(err)?;
    println!(
        "ferrolog node {} listening on {}",
        node.config().node_id,
        node.local_addr()
    );
    let _ = std::io::stdout().flush();
    let mut signal = 0;
    // SAFETY: `signals` is an initialised set; sigwait writes one int.
    unsafe { libc::sigwait(&signals, &mut signal) };
    eprintln!("ferrolog node: signal {signal}, stopping");
    node.shutdown().map_err(err)
}

fn topics(args: &Args) -> Result<(), String> {
    let admin = Admin::new(args.bootstrap()?).map_err(err)?;
    if args.flag("--create") {
        let name = args.required("--topic")?;
        let topic = NewTopic::new(name, args.number("--partitions", 1)?)
            .replication_factor(args.number("--replication-factor", 1)?);
        let mut config = ferrolog::TopicConfig::default();
        for pair in args.values.get("--config").into_iter().flatten() {
            let (k, v) = pair
                .split_once('=')
                .ok_or(format!("--config {pair:?} is not key=value"))?;
            config.set(k, v).map_err(err)?;
        }
        admin.create_topic(topic.config(config)).map_err(err)?;
        println!("Created topic {name}.");
    } else if args.flag("--delete") {
        let name = args.required("--topic")?;
        admin.delete_topic(name).map_err(err)?;
        println!("Deleted topic {name}.");
    } else if args.flag("--list") {
        for name in admin.list_topics().map_err(err)? {
            println!("{name}");
        }
    } else if args.flag("--describe") {
        let names = match args.value("--topic") {
            Some(name) => vec![name.to_string()],
            None => admin.list_topics().map_err(err)?,
        };
        for name in names {
            let topic = admin.describe_topic(&name).map_err(err)?;
            println!(
                "Topic: {}\tPartitionCount: {}\tReplicationFactor: {}",
                topic.name,
                topic.partitions.len(),
                topic.partitions.first().map_or(0, |p| p.replicas.len())
            );
            for (i, p) in topic.partitions.iter().enumerate() {
                let list =
                    |ids: &[u32]| ids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
                println!(
                    "\tTopic: {}\tPartition: {i}\tLeader: {}\tLeaderEpoch: {}\tReplicas: {}\tIsr: {}",
                    topic.name,
                    p.leader.map_or("none".to_string(), |l| l.to_string()),
                    p.leader_epoch,
                    list(&p.replicas),
                    list(&p.isr)
                );
            }
        }
    } else {
        return Err(format!(
            "topics needs --create, --describe, --list or --delete\n{USAGE}"
        ));
    }
    Ok(())
}

fn produce(args: &Args) -> Result<(), String> {
    let topic = args.required("--topic")?.to_string();
    let acks = acks(args)?;
    let idempotent = match args.value("--enable-idempotence").unwrap_or("true") {
        "true" => true,
        "false" => false,
        other => {
            return Err(format!(
                "--enable-idempotence {other:?} is not true or false"
            ));
        }
    };
    let mut config = ProducerConfig::builder().acks(acks).build().map_err(err)?;
    config.enable_idempotence = idempotent && acks == Acks::All;
    config.linger_ms = args.number("--linger-ms", config.linger_ms)?;
    config.request_timeout_ms = args.number("--request-timeout-ms", config.request_timeout_ms)?;
    config.validate().map_err(err)?;
    let producer = Producer::<String, String>::new(args.bootstrap()?, config).map_err(err)?;
    let separator = args.value("--key-separator");
    // With --report, each record's outcome is printed as it comes:
    // `ACK <value> <partition> <offset>` or `FAIL <value> <error>`.
    let report = args.flag("--report");
    let mut pending = Vec::new();
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let record = match separator.and_then(|s| line.split_once(s)) {
            Some((key, value)) => {
                ProducerRecord::new(topic.clone(), value.to_string()).with_key(key.to_string())
            }
            None => ProducerRecord::new(topic.clone(), line),
        };
        let value = record.value.clone().unwrap_or_default();
        let sent = producer.send_with_callback(record, move |outcome| {
            if report {
                match outcome {
                    Ok(m) => println!("ACK {value} {} {}", m.partition.partition(), m.offset),
                    Err(e) => println!("FAIL {value} {e}"),
                }
            }
        });
        pending.push(sent.map_err(err)?);
    }
    let count = pending.len();
    let mut failed = 0;
    for p in pending {
        if let Err(e) = p.wait() {
            failed += 1;
            if !report {
                eprintln!("ferrolog: a record failed: {e}");
            }
        }
    }
    let _ = std::io::stdout().flush();
    eprintln!("Produced {} records to {topic}.", count - failed);
    if failed > 0 {
        return Err(format!("{failed} of {count} records failed"));
    }
    Ok(())
}

fn acks(args: &Args) -> Result<Acks, String> {
    match args.value("--acks").unwrap_or("all") {
        "all" | "-1" => Ok(Acks::All),
        "1" => Ok(Acks::Leader),
        "0" => Ok(Acks::None),
        other => Err(format!("--acks {other:?} is not all, 1 or 0")),
    }
}

/// Sends `--num-records` records of `--record-size` bytes as fast as the
/// producer takes them (as `kafka-producer-perf-test --throughput -1`),
/// then prints one line: records/s, MB/s and the send-to-acknowledgement
/// latency percentiles.
fn perf_produce(args: &Args) -> Result<(), String> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};
    // One name for every record (no allocation per record).
    let topic: &'static str = Box::leak(args.required("--topic")?.to_string().into_boxed_str());
    let records: usize = args.number("--num-records", 0)?;
    let size: usize = args.number("--record-size", 100)?;
    if records == 0 {
        return Err("--num-records must be positive".into());
    }
    let mut config = ProducerConfig::builder()
        .acks(acks(args)?)
        .build()
        .map_err(err)?;
    config.linger_ms = args.number("--linger-ms", config.linger_ms)?;
    config.batch_size = args.number("--batch-size", config.batch_size)?;
    config.validate().map_err(err)?;
    let producer = Producer::<Bytes, Bytes>::new(args.bootstrap()?, config).map_err(err)?;
    let value = Bytes::from(vec![b'x'; size]);
    // Microseconds from send to acknowledgement of every 16th record (as
    // Kafka's perf tool samples), failures from the producer's metrics.
    const SAMPLE_EVERY: usize = 16;
    let samples: Arc<Vec<AtomicU32>> = Arc::new(
        (0..records.div_ceil(SAMPLE_EVERY))
            .map(|_| AtomicU32::new(0))
            .collect(),
    );
    let start = Instant::now();
    for i in 0..records {
        let record = ProducerRecord::new(topic, value.clone());
        // The outcome is counted below; the future is not needed.
        if i % SAMPLE_EVERY == 0 {
            let sent = Instant::now();
            let samples = samples.clone();
            drop(
                producer
                    .send_with_callback(record, move |_| {
                        let micros = sent.elapsed().as_micros().min(u32::MAX as u128) as u32;
                        samples[i / SAMPLE_EVERY].store(micros.max(1), Ordering::Relaxed);
                    })
                    .map_err(err)?,
            );
        } else {
            drop(producer.send(record).map_err(err)?);
        }
    }
    producer.flush();
    let secs = start.elapsed().as_secs_f64();
    let mut sorted: Vec<u32> = samples.iter().map(|l| l.load(Ordering::Relaxed)).collect();
    sorted.sort_unstable();
    let at = |q: f64| f64::from(sorted[((sorted.len() - 1) as f64 * q) as usize]) / 1000.0;
    println!(
        "records={records} record_bytes={size} secs={secs:.3} records_per_s={:.0} mb_per_s={:.1} \
         p50_ms={:.2} p99_ms={:.2} max_ms={:.2} failed={}",
        records as f64 / secs,
        (records * size) as f64 / secs / 1e6,
        at(0.5),
        at(0.99),
        at(1.0),
        producer.metrics().record_errors
    );
    Ok(())
}

fn consume(args: &Args) -> Result<(), String> {
    let topic = args.required("--topic")?.to_string();
    let max: usize = args.number("--max-messages", usize::MAX)?;
    let timeout = Duration::from_millis(args.number("--timeout-ms", u64::MAX / 4)?);
    let reset = if args.flag("--from-beginning") {
        AutoOffsetReset::Earliest
    } else {
        AutoOffsetReset::Latest
    };
    let mut config = ConsumerConfig::builder()
        .auto_offset_reset(reset)
        .build()
        .map_err(err)?;
    config.group_id = args.value("--group").map(str::to_string);
    let grouped = config.group_id.is_some();
    let bootstrap = args.bootstrap()?;
    let mut consumer = Consumer::<Bytes, Bytes>::new(bootstrap.clone(), config).map_err(err)?;
    if grouped {
        consumer.subscribe([topic.clone()]).map_err(err)?;
    } else {
        let partitions = Admin::new(bootstrap)
            .map_err(err)?
            .describe_topic(&topic)
            .map_err(err)?
            .partitions
            .len() as u32;
        let assigned = (0..partitions)
            .map(|p| TopicPartition::new(topic.as_str(), p))
            .collect::<ferrolog::Result<Vec<_>>>()
            .map_err(err)?;
        consumer.assign(assigned).map_err(err)?;
    }
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    let mut out = std::io::stdout().lock();
    while seen < max && Instant::now() < deadline {
        for record in consumer.poll(Duration::from_millis(200)).map_err(err)? {
            if seen == max {
                break;
            }
            let value = record.value.unwrap_or_default();
            let _ = out.write_all(&value);
            let _ = out.write_all(b"\n");
            seen += 1;
        }
        let _ = out.flush();
    }
    if grouped {
        consumer.commit_sync().map_err(err)?;
    }
    eprintln!("Consumed {seen} records.");
    Ok(())
}

fn groups(args: &Args) -> Result<(), String> {
    let admin = Admin::new(args.bootstrap()?).map_err(err)?;
    if args.flag("--list") {
        for group in admin.list_groups().map_err(err)? {
            println!("{}", group.group);
        }
        return Ok(());
    }
    if !args.flag("--describe") {
        return Err(format!("groups needs --describe or --list\n{USAGE}"));
    }
    let group = args.required("--group")?;
    let description = admin.describe_group(group).map_err(err)?;
    println!(
        "GROUP\tTOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tCONSUMER-ID\tCLIENT-ID"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    for p in description.partitions {
        println!(
            "{group}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            p.partition.topic(),
            p.partition.partition(),
            or_dash(p.current_offset.map(|o| o.to_string())),
            p.log_end_offset,
            or_dash(p.lag.map(|l| l.to_string())),
            or_dash(p.member_id),
            or_dash(p.client_id)
        );
    }
    Ok(())
}

/// Prints every batch of a segment file, as `kafka-dump-log` does: offsets,
/// counts, producer fields, size, codec, CRC and whether it checks.
fn dump_log(args: &Args) -> Result<(), String> {
    let [path] = args.positional.as_slice() else {
        return Err(format!("dump-log takes one segment file\n{USAGE}"));
    };
    let bytes = Bytes::from(std::fs::read(path).map_err(|e| format!("{path}: {e}"))?);
    println!("Dumping {path}");
    let mut position = 0;
    let mut batches = 0;
    while position < bytes.len() {
        let rest = &bytes[position..];
        if rest.iter().all(|&b| b == 0) {
            break; // preallocated space past the last batch
        }
        let Some(size) = batch_size_at(rest).filter(|&s| s <= rest.len()) else {
            return Err(format!(
                "position {position}: a batch header that does not fit the file ({} bytes left)",
                rest.len()
            ));
        };
        let batch = RecordBatch::from_bytes(bytes.slice(position..position + size))
            .map_err(|e| format!("position {position}: {e}"))?;
        let valid = batch.crc() == batch.compute_crc();
        println!(
            "baseOffset: {} lastOffset: {} count: {} baseSequence: {} producerId: {} \
             producerEpoch: {} partitionLeaderEpoch: {} isTransactional: {} isControl: {} \
             position: {position} CreateTime: {} size: {size} magic: {} compresscodec: {} \
             crc: {} isvalid: {valid}",
            batch.base_offset(),
            batch.last_offset(),
            batch.record_count(),
            batch.base_sequence(),
            batch.producer_id(),
            batch.producer_epoch(),
            batch.partition_leader_epoch(),
            batch.is_transactional(),
            batch.is_control(),
            batch.max_timestamp(),
            batch.magic(),
            batch
                .compression()
                .map_or("unknown".to_string(), |c| format!("{c:?}").to_lowercase()),
            batch.crc()
        );
        position += size;
        batches += 1;
    }
    eprintln!("{batches} batches.");
    Ok(())
}
