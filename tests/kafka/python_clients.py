"""kafka-python against ferrolog's Kafka listener: admin creates and
describes a topic (its partitions and, with DescribeConfigs, its own and
default settings) and the cluster (DescribeCluster), an acks=all producer writes keyed records with headers,
a consumer (partitions assigned, no group) reads them all back, admin grows
the topic and deletes a partition's first records (a consumer then sees
the new log start), a consumer outside any group's membership commits
offsets for a group and another reads them back (the group is listed),
and admin deletes the topic. Prints one JSON line; exits non-zero on any mismatch."""
import json
import sys

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, OffsetAndMetadata, TopicPartition
from kafka.admin import ConfigResource, NewTopic

bootstrap = sys.argv[1]
admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="ferrolog-test")
admin.create_topics([NewTopic("py-orders", 6, 3, topic_configs={"retention.ms": "3600000"})])
described = admin.describe_topics(["py-orders"])
partitions = len(described[0]["partitions"])
assert partitions == 6, described
# The topic's own setting (DescribeConfigs: only those not at the default),
# and the cluster (DescribeCluster).
configs = admin.describe_configs([ConfigResource("TOPIC", "py-orders")])["topic"]["py-orders"]
assert list(configs) == ["retention.ms"], configs
assert configs["retention.ms"]["value"] == "3600000", configs
assert configs["retention.ms"]["config_source"] == "DYNAMIC_TOPIC_CONFIG", configs
every = admin.describe_configs([ConfigResource("TOPIC", "py-orders")], config_filter="all")
assert every["topic"]["py-orders"]["cleanup.policy"]["value"] == "delete", every
cluster = admin.describe_cluster()
assert sorted(b["broker_id"] for b in cluster["brokers"]) == [0, 1, 2], cluster
assert cluster["cluster_id"] and cluster["controller_id"] in (0, 1, 2), cluster

producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
sent = {}
for i in range(600):
    meta = producer.send(
        "py-orders",
        key=f"k{i}".encode(),
        value=f"v{i}".encode(),
        headers=[("origin", b"kafka-python")],
    ).get(timeout=30)
    sent[(meta.partition, meta.offset)] = i
producer.close()

consumer = KafkaConsumer(bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False, consumer_timeout_ms=5000)
consumer.assign([TopicPartition("py-orders", p) for p in range(6)])
got = {}
for record in consumer:
    i = int(record.key.decode()[1:])
    assert record.value == f"v{i}".encode(), record
    assert record.headers == [("origin", b"kafka-python")], record
    got[(record.partition, record.offset)] = i
    if len(got) == len(sent):
        break
consumer.close()
assert got == sent, (len(got), len(sent))

# Grow the topic, and delete the records below offset 2 of partition 0.
admin.create_partitions({"py-orders": 8})
grown = len(admin.describe_topics(["py-orders"])[0]["partitions"])
assert grown == 8, grown
tp0 = TopicPartition("py-orders", 0)
on_0 = sum(1 for (p, _) in sent if p == 0)
assert on_0 >= 2, on_0
admin.delete_records({tp0: 2})
checker = KafkaConsumer(bootstrap_servers=bootstrap)
log_start = checker.beginning_offsets([tp0])[tp0]
checker.close()
assert log_start == 2, log_start

# A consumer outside any group's membership (partitions assigned) commits
# offsets for its group; another finds them (OffsetCommit, OffsetFetch).
committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id="py-audit",
                          enable_auto_commit=False)
marks = {TopicPartition("py-orders", p): OffsetAndMetadata(10 + p, "audited", -1)
         for p in range(6)}
committer.assign(list(marks))
committer.commit(marks)
committer.close()
reader = KafkaConsumer(bootstrap_servers=bootstrap, group_id="py-audit",
                       enable_auto_commit=False)
found = {tp: reader.committed(tp) for tp in marks}
reader.close()
assert found == {tp: 10 + tp.partition for tp in marks}, found
groups = admin.list_groups()
listed = [g["group_id"] if isinstance(g, dict) else g[0] for g in groups]
assert "py-audit" in listed, groups
fetched = admin.list_group_offsets({"py-audit": None})
assert fetched, fetched

admin.delete_topics(["py-orders"])
print(json.dumps({"partitions": partitions, "produced": len(sent), "consumed": len(got),
                  "grown_to": grown, "log_start": log_start,
                  "committed": sum(found.values())}))
