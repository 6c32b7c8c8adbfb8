"""kafka-python in a classic consumer group against ferrolog's Kafka
listener: an acks=all producer writes keyed records into a 6-partition
topic; two consumers of one group (JoinGroup, SyncGroup, Heartbeat) split
the partitions between them, read every record, commit and leave
(LeaveGroup); a third consumer of the same group resumes from those
commits, reads only what was written after them, and commits too. Prints
one JSON line; exits non-zero on any mismatch."""
import json
import sys
import time

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic

bootstrap, topic, group = sys.argv[1], sys.argv[2], sys.argv[3]
DEADLINE = time.monotonic() + 180

admin = KafkaAdminClient(bootstrap_servers=bootstrap)
admin.create_topics([NewTopic(topic, 6, 3)])
admin.close()


def produce(prefix, count):
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(count):
        producer.send(topic, key=f"{prefix}{i}".encode(), value=f"value-{i}".encode())
    producer.flush(30)
    producer.close()


def consumer(name):
    return KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group, client_id=name,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         heartbeat_interval_ms=100, session_timeout_ms=10000)


def poll_into(c, seen):
    for records in c.poll(timeout_ms=50).values():
        for r in records:
            seen[(r.partition, r.offset)] = r.key.decode()


produce("k", 600)
first, second = consumer("first"), consumer("second")
seen = {}
split = None
while time.monotonic() < DEADLINE:
    for c in (first, second):
        poll_into(c, seen)
    a, b = ({tp.partition for tp in c.assignment()} for c in (first, second))
    if len(seen) == 600 and a and b and not a & b and len(a | b) == 6:
        split = (sorted(a), sorted(b))
        break
assert split is not None, ("no split", len(seen), first.assignment(), second.assignment())
assert sorted(seen.values()) == sorted(f"k{i}" for i in range(600))
# The admin client sees both members and what each was assigned.
admin = KafkaAdminClient(bootstrap_servers=bootstrap)
described = admin.describe_groups([group])[group]
admin.close()
assert described["group_state"] == "Stable" and described["protocol_type"] == "consumer", described
members = {m["client_id"]: sorted(p for t in m["member_assignment"]["assigned_partitions"]
                                  for p in t["partitions"])
           for m in described["members"]}
assert members == {"first": split[0], "second": split[1]}, members
for c in (first, second):
    c.commit()
first.close()
second.close()

produce("new", 60)
third = consumer("third")
resumed = {}
quiet_until = None
while time.monotonic() < DEADLINE:
    poll_into(third, resumed)
    if len(resumed) >= 60 and quiet_until is None:
        # Nothing more arrives: the 600 committed records are not read again.
        quiet_until = time.monotonic() + 2
    if quiet_until is not None and time.monotonic() > quiet_until:
        break
third.commit()
third.close()
assert sorted(resumed.values()) == sorted(f"new{i}" for i in range(60)), resumed

print(json.dumps({"split": split, "consumed": len(seen), "resumed": len(resumed)}))
