"""confluent-kafka (librdkafka) against ferrolog's Kafka listener: an
idempotent producer writes keyed records into a 6-partition topic; two
consumers of one group (`group.protocol` as the fourth argument: `consumer`
for KIP-848, or `classic`, with the assignor as an optional fifth) split
the partitions between them (as the admin client's describe shows too),
read every record, commit and leave; a third consumer of the same group
resumes from those commits, reads only what was written after them, and
commits too. Prints one JSON line; exits non-zero on any mismatch."""
import json
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

bootstrap, topic, group, protocol = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
# An optional fifth argument: the classic protocol's assignor. Classic
# members heartbeat (and so learn of a rebalance) every 500 ms, not 3 s; a
# KIP-848 member is told its interval by the coordinator.
assignor = {"partition.assignment.strategy": sys.argv[5]} if len(sys.argv) > 5 else {}
if protocol == "classic":
    assignor["heartbeat.interval.ms"] = 500
DEADLINE = time.monotonic() + 180

admin = AdminClient({"bootstrap.servers": bootstrap})
for future in admin.create_topics([NewTopic(topic, 6, 3)]).values():
    future.result(30)


def produce(prefix, count):
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "linger.ms": 5})
    failed = []
    for i in range(count):
        producer.produce(topic, key=f"{prefix}{i}".encode(), value=f"value-{i}".encode(),
                         on_delivery=lambda err, msg: err and failed.append(err))
    left = producer.flush(30)
    assert left == 0 and not failed, (left, failed)


def consumer(name):
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                  "group.protocol": protocol, "client.id": name,
                  "auto.offset.reset": "earliest", "enable.auto.commit": False, **assignor})
    c.subscribe([topic])
    return c


produce("k", 600)
first, second = consumer("first"), consumer("second")
seen = {}  # (partition, offset) -> key
split = None
while time.monotonic() < DEADLINE:
    for c in (first, second):
        msg = c.poll(0.05)
        if msg is not None:
            assert msg.error() is None, msg.error()
            seen[(msg.partition(), msg.offset())] = msg.key().decode()
    a, b = ({tp.partition for tp in c.assignment()} for c in (first, second))
    if len(seen) == 600 and a and b and not a & b and len(a | b) == 6:
        split = (sorted(a), sorted(b))
        break
assert split is not None, ("no split", len(seen), first.assignment(), second.assignment())
assert sorted(seen.values()) == sorted(f"k{i}" for i in range(600))
# The admin client sees both members and what each was assigned.
described = admin.describe_consumer_groups([group])[group].result(30)
members = {m.client_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
           for m in described.members}
assert members == {"first": split[0], "second": split[1]}, members
for c in (first, second):
    c.commit(asynchronous=False)
committed = {tp.partition: tp.offset
             for tp in second.committed([TopicPartition(topic, p) for p in range(6)], 10)}
first.close()
second.close()

produce("new", 60)
third = consumer("third")
resumed = {}
while time.monotonic() < DEADLINE and len(resumed) < 60:
    msg = third.poll(0.1)
    if msg is not None:
        assert msg.error() is None, msg.error()
        resumed[(msg.partition(), msg.offset())] = msg.key().decode()
# Nothing more arrives: the 600 committed records are not read again.
quiet_until = time.monotonic() + 2
while time.monotonic() < quiet_until:
    msg = third.poll(0.1)
    if msg is not None:
        resumed[(msg.partition(), msg.offset())] = msg.key().decode()
third.commit(asynchronous=False)
third.close()
assert sorted(resumed.values()) == sorted(f"new{i}" for i in range(60)), resumed

print(json.dumps({"split": split, "consumed": len(seen), "committed": sum(committed.values()),
                  "resumed": len(resumed)}))
