// Kafka's Java client (kafka-clients 4.x) against ferrolog's Kafka
// listener: AdminClient creates and describes a 6-partition RF 3 topic; a
// KafkaProducer with its defaults (idempotent, acks=all) writes 600 keyed
// records and prints the partition each landed in; a KafkaConsumer in a
// KIP-848 group (group.protocol=consumer) reads them all and commits;
// AdminClient lists the group and describes it while the consumer is in it.
// Prints `PLACED <key> <partition>` lines and one `SUMMARY ...` line; exits
// non-zero on any mismatch.
//
// Run: java -cp 'target/kafka-java/lib/*' tests/kafka/KafkaClients.java <bootstrap>

import java.time.Duration;
import java.util.*;
import java.util.concurrent.*;
import org.apache.kafka.clients.admin.*;
import org.apache.kafka.clients.consumer.*;
import org.apache.kafka.clients.producer.*;
import org.apache.kafka.common.*;
import org.apache.kafka.common.serialization.*;

public class KafkaClients {
    static void check(boolean ok, String what) {
        if (!ok) {
            throw new IllegalStateException("check failed: " + what);
        }
    }

    public static void main(String[] args) throws Exception {
        String bootstrap = args[0];
        String topic = "java-orders";
        String group = "java-group";
        Properties common = new Properties();
        common.put("bootstrap.servers", bootstrap);

        try (Admin admin = Admin.create(common)) {
            admin.createTopics(List.of(new NewTopic(topic, 6, (short) 3))).all().get(30, TimeUnit.SECONDS);
            TopicDescription described =
                admin.describeTopics(List.of(topic)).allTopicNames().get(30, TimeUnit.SECONDS).get(topic);
            check(described.partitions().size() == 6, "6 partitions: " + described);
            for (TopicPartitionInfo p : described.partitions()) {
                check(p.leader() != null && p.replicas().size() == 3, "led, 3 replicas: " + p);
            }
        }

        Properties producerProps = new Properties();
        producerProps.putAll(common);
        try (KafkaProducer<String, String> producer =
                 new KafkaProducer<>(producerProps, new StringSerializer(), new StringSerializer())) {
            List<Future<RecordMetadata>> sent = new ArrayList<>();
            for (int i = 0; i < 600; i++) {
                sent.add(producer.send(new ProducerRecord<>(topic, "key-" + i, "value-" + i)));
            }
            for (int i = 0; i < 600; i++) {
                System.out.println("PLACED key-" + i + " " + sent.get(i).get(30, TimeUnit.SECONDS).partition());
            }
        }

        Properties consumerProps = new Properties();
        consumerProps.putAll(common);
        consumerProps.put("group.id", group);
        consumerProps.put("group.protocol", "consumer");
        consumerProps.put("auto.offset.reset", "earliest");
        consumerProps.put("enable.auto.commit", "false");
        Set<String> keys = new HashSet<>();
        int members;
        int assignedInDescribe;
        boolean listed;
        try (KafkaConsumer<String, String> consumer =
                 new KafkaConsumer<>(consumerProps, new StringDeserializer(), new StringDeserializer());
             Admin admin = Admin.create(common)) {
            consumer.subscribe(List.of(topic));
            long deadline = System.currentTimeMillis() + 60_000;
            while (keys.size() < 600 && System.currentTimeMillis() < deadline) {
                for (ConsumerRecord<String, String> r : consumer.poll(Duration.ofMillis(200))) {
                    check(r.value().equals("value-" + r.key().substring(4)), "value of " + r.key());
                    keys.add(r.key());
                }
            }
            check(keys.size() == 600, "read all 600, got " + keys.size());
            consumer.commitSync();
            listed = admin.listGroups().all().get(30, TimeUnit.SECONDS).stream()
                .anyMatch(g -> g.groupId().equals(group));
            ConsumerGroupDescription description = admin.describeConsumerGroups(List.of(group))
                .all().get(30, TimeUnit.SECONDS).get(group);
            members = description.members().size();
            assignedInDescribe = description.members().stream()
                .mapToInt(m -> m.assignment().topicPartitions().size()).sum();
            Map<TopicPartition, OffsetAndMetadata> committed = admin.listConsumerGroupOffsets(group)
                .partitionsToOffsetAndMetadata().get(30, TimeUnit.SECONDS);
            long total = committed.values().stream().mapToLong(OffsetAndMetadata::offset).sum();
            check(total == 600, "committed offsets add up to 600: " + committed);
        }
        check(listed, "listGroups shows " + group);
        check(members == 1 && assignedInDescribe == 6, "one member with all 6 partitions");
        System.out.println("SUMMARY consumed=" + keys.size() + " listed=" + listed + " members=" + members
            + " assigned=" + assignedInDescribe);
    }
}
