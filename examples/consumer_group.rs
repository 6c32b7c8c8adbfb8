//! Three consumers share a 6-partition topic as one group; one leaves and its
//! partitions move to the other two. Prints the assignment before and after,
//! and the group's lag per partition (what `kafka-consumer-groups --describe`
//! shows).
//!
//! Run with `cargo run --example consumer_group`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ferrolog::client::{Acks, AutoOffsetReset, Consumer, ConsumerConfig, Producer, ProducerConfig};
use ferrolog::group::GroupState;
use ferrolog::{Admin, Cluster, NewTopic, ProducerRecord, Result};

const GROUP: &str = "billing";
const TOPIC: &str = "orders";

type Member = (String, Consumer<String, String>);

fn main() -> Result<()> {
    let cluster = Cluster::builder().brokers(3).build()?;
    let admin = Admin::new(&cluster)?;
    admin.create_topic(NewTopic::new(TOPIC, 6).replication_factor(3))?;
    produce(&cluster, 0..600)?;

    let mut members: Vec<Member> = ["alice", "bob", "carol"]
        .into_iter()
        .map(|name| {
            let config = ConsumerConfig::builder()
                .client_id(name.to_string())
                .group_id(GROUP.to_string())
                .auto_offset_reset(AutoOffsetReset::Earliest)
                .enable_auto_commit(false)
                .heartbeat_interval_ms(100u64)
                .session_timeout_ms(3_000u64)
                .build()?;
            let mut consumer = Consumer::new(&cluster, config)?;
            consumer.subscribe([TOPIC])?;
            Ok((name.to_string(), consumer))
        })
        .collect::<Result<_>>()?;

    let mut read = BTreeSet::new();
    settle(&admin, &mut members, &mut read, 600)?;
    println!("assignment with three members:");
    print_assignment(&members);

    // carol leaves the group; her partitions move to alice and bob.
    let (name, mut carol) = members.pop().expect("three members");
    carol.close();
    println!("\n{name} left the group");
    produce(&cluster, 600..900)?;
    settle(&admin, &mut members, &mut read, 900)?;
    println!("assignment with two members:");
    print_assignment(&members);

    // Records the group has not read yet show up as lag.
    produce(&cluster, 900..960)?;
    println!("\nlag after 60 more records:");
    let described = admin.describe_group(GROUP)?;
    println!(
        "{:<10} {:>9} {:>15} {:>14} {:>4}  CLIENT-ID",
        "TOPIC", "PARTITION", "CURRENT-OFFSET", "LOG-END-OFFSET", "LAG"
    );
    for p in &described.partitions {
        println!(
            "{:<10} {:>9} {:>15} {:>14} {:>4}  {}",
            p.partition.topic(),
            p.partition.partition(),
            p.current_offset.map_or("-".into(), |o| o.to_string()),
            p.log_end_offset,
            p.lag.map_or("-".into(), |l| l.to_string()),
            p.client_id.as_deref().unwrap_or("-"),
        );
    }
    println!(
        "group {GROUP}: {:?}, epoch {}, {} members",
        described.description.state,
        described.description.group_epoch,
        described.description.members.len()
    );
    Ok(())
}

fn produce(cluster: &Cluster, range: std::ops::Range<u32>) -> Result<()> {
    let config = ProducerConfig::builder().acks(Acks::All).build()?;
    let producer: Producer<String, String> = Producer::new(cluster, config)?;
    let sent: Vec<_> = range
        .map(|i| {
            producer.send(
                ProducerRecord::new(TOPIC, format!("order-{i}")).with_key(format!("customer-{i}")),
            )
        })
        .collect::<Result<_>>()?;
    for delivery in sent {
        delivery.wait()?;
    }
    Ok(())
}

/// Polls every member (processing, then committing what it read) until the
/// group has read `total` records and is stable.
fn settle(
    admin: &Admin,
    members: &mut [Member],
    read: &mut BTreeSet<(u32, u64)>,
    total: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        for (_, consumer) in members.iter_mut() {
            for record in consumer.poll(Duration::from_millis(20))? {
                read.insert((record.partition(), record.offset));
            }
            consumer.commit_sync()?;
        }
        let stable = admin.describe_group(GROUP).is_ok_and(|d| {
            d.description.state == GroupState::Stable
                && d.description.members.len() == members.len()
        });
        if stable && read.len() >= total {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(ferrolog::Error::RequestTimedOut {
                operation: "settling the group",
                timeout_ms: 30_000,
            });
        }
    }
}

fn print_assignment(members: &[Member]) {
    for (name, consumer) in members {
        let partitions: Vec<String> = consumer
            .assignment()
            .iter()
            .map(|tp| tp.partition().to_string())
            .collect();
        println!("  {name:<6} {TOPIC} partitions [{}]", partitions.join(", "));
    }
}
