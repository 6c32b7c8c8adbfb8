"""A librdkafka producer (confluent-kafka) for `cargo bench --bench
kafka_wire`: sends COUNT records of SIZE bytes to TOPIC at BOOTSTRAP with
librdkafka's defaults (acks=all, linger 5 ms) and prints one JSON line:
records, seconds, records/s, and produce-to-acknowledgement latency
percentiles (from librdkafka's own per-message timing)."""
import json
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, count, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
latencies = []
failed = []


def delivered(err, msg):
    if err is not None:
        failed.append(err)
    else:
        latencies.append(msg.latency())


producer = Producer({"bootstrap.servers": bootstrap, "on_delivery": delivered,
                     "queue.buffering.max.messages": 1_000_000})
payload = b"x" * size
start = time.perf_counter()
for i in range(count):
    while True:
        try:
            producer.produce(topic, payload)
            break
        except BufferError:
            producer.poll(0.001)
    if i % 10_000 == 0:
        producer.poll(0)
left = producer.flush(120)
seconds = time.perf_counter() - start
assert left == 0 and not failed, (left, failed[:3])
assert len(latencies) == count, len(latencies)
latencies.sort()


def quantile(q):
    return latencies[min(len(latencies) - 1, int(len(latencies) * q))] * 1000


print(json.dumps({"records": count, "seconds": seconds, "records_per_s": count / seconds,
                  "p50_ms": quantile(0.5), "p99_ms": quantile(0.99), "max_ms": latencies[-1] * 1000}))
