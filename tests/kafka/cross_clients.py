"""kafka-python's side of ferrolog <-> Kafka client checks. Modes:

- `read BOOTSTRAP TOPIC N`: reads N records of TOPIC from the beginning
  (partitions assigned) and prints them as a JSON list of
  [partition, offset, key, value, headers, timestamp].
- `write BOOTSTRAP TOPIC N`: writes N records (key kI, value vI, header
  ("n", I), timestamp 1700000000000 + I) and prints where each went.
- `resume BOOTSTRAP TOPIC GROUP N`: joins GROUP (classic protocol), reads
  until N records arrived and nothing more does, commits, prints their keys.
"""
import json
import sys
import time

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]


def row(r):
    return [r.partition, r.offset, r.key.decode(), r.value.decode(),
            [[k, v.decode()] for k, v in r.headers], r.timestamp]


if mode == "read":
    count = int(sys.argv[4])
    c = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                      enable_auto_commit=False)
    c.assign([TopicPartition(topic, p) for p in c.partitions_for_topic(topic)])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        for records in c.poll(timeout_ms=100).values():
            got.extend(row(r) for r in records)
    c.close()
    print(json.dumps(sorted(got)))
elif mode == "write":
    count = int(sys.argv[4])
    p = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    futures = [p.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                      headers=[("n", str(i).encode())], timestamp_ms=1_700_000_000_000 + i)
               for i in range(count)]
    sent = [[f.get(30).partition, f.get(30).offset] for f in futures]
    p.close()
    print(json.dumps(sent))
elif mode == "resume":
    group, count = sys.argv[4], int(sys.argv[5])
    c = KafkaConsumer(topic, bootstrap_servers=bootstrap, group_id=group,
                      auto_offset_reset="earliest", enable_auto_commit=False,
                      heartbeat_interval_ms=100)
    got = []
    quiet_until = None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for records in c.poll(timeout_ms=100).values():
            got.extend(r.key.decode() for r in records)
        if len(got) >= count and quiet_until is None:
            quiet_until = time.monotonic() + 1.5
        if quiet_until is not None and time.monotonic() > quiet_until:
            break
    c.commit()
    c.close()
    print(json.dumps(sorted(got)))
