// Kafka's own client library writes and reads compressed record batches for
// ferrolog's compression tests (tests/compression.rs).
//
//   java -cp 'lib/*' KafkaBatches.java generate DIR   one batch per codec
//   java -cp 'lib/*' KafkaBatches.java verify DIR     reads ferrolog's batches
//
// `.ci/run` fetches kafka-clients with Maven and runs `verify` on the batches
// ferrolog's test wrote; `generate` made tests/data/kafka-batches/.
import java.nio.ByteBuffer;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Iterator;

import org.apache.kafka.common.compress.Compression;
import org.apache.kafka.common.header.Header;
import org.apache.kafka.common.header.internals.RecordHeader;
import org.apache.kafka.common.record.CompressionType;
import org.apache.kafka.common.record.MemoryRecords;
import org.apache.kafka.common.record.MemoryRecordsBuilder;
import org.apache.kafka.common.record.Record;
import org.apache.kafka.common.record.RecordBatch;
import org.apache.kafka.common.record.TimestampType;

public class KafkaBatches {
    static final String[] CODECS = {"gzip", "snappy", "lz4", "zstd"};
    static final int RECORDS = 200;
    static final long BASE_TIMESTAMP = 1_700_000_000_000L;

    // Record i of every batch: the same on both sides of the test.
    static String key(int i) { return "user-" + (i % 17); }
    static String value(int i) {
        StringBuilder sb = new StringBuilder();
        sb.append("{\"id\":").append(i).append(",\"user\":\"user-").append(i % 17)
          .append("\",\"event\":\"click\",\"path\":\"/items/").append(i * 7919 % 1000)
          .append("\",\"pad\":\"");
        for (int j = 0; j < 400; j++) sb.append((char) ('a' + (i + j) % 26));
        return sb.append("\"}").toString();
    }

    public static void main(String[] args) throws Exception {
        Path dir = Path.of(args[1]);
        if (args[0].equals("generate")) {
            Files.createDirectories(dir);
            for (String name : CODECS) {
                ByteBuffer buf = ByteBuffer.allocate(1 << 20);
                MemoryRecordsBuilder b = MemoryRecords.builder(buf, RecordBatch.MAGIC_VALUE_V2,
                    Compression.of(CompressionType.forName(name)).build(), TimestampType.CREATE_TIME,
                    0L, RecordBatch.NO_TIMESTAMP, 4242L, (short) 3, 100);
                for (int i = 0; i < RECORDS; i++) {
                    Header[] headers = { new RecordHeader("n", Integer.toString(i).getBytes(StandardCharsets.UTF_8)) };
                    b.append(BASE_TIMESTAMP + i, key(i).getBytes(StandardCharsets.UTF_8),
                        value(i).getBytes(StandardCharsets.UTF_8), headers);
                }
                MemoryRecords records = b.build();
                ByteBuffer out = records.buffer();
                byte[] bytes = new byte[out.remaining()];
                out.get(bytes);
                Files.write(dir.resolve(name + ".bin"), bytes);
                System.out.println(name + ": " + bytes.length + " bytes");
            }
        } else {
            int checked = 0;
            for (String name : CODECS) {
                byte[] bytes = Files.readAllBytes(dir.resolve(name + ".bin"));
                MemoryRecords records = MemoryRecords.readableRecords(ByteBuffer.wrap(bytes));
                int i = 0;
                for (RecordBatch batch : records.batches()) {
                    batch.ensureValid();
                    if (batch.compressionType() != CompressionType.forName(name))
                        throw new AssertionError(name + ": batch says " + batch.compressionType());
                    for (Record r : batch) {
                        r.ensureValid();
                        String k = StandardCharsets.UTF_8.decode(r.key()).toString();
                        String v = StandardCharsets.UTF_8.decode(r.value()).toString();
                        String h = new String(r.headers()[0].value(), StandardCharsets.UTF_8);
                        if (!k.equals(key(i)) || !v.equals(value(i)) || !h.equals(Integer.toString(i))
                            || r.timestamp() != BASE_TIMESTAMP + i || r.offset() != i)
                            throw new AssertionError(name + ": record " + i + " differs");
                        i++;
                    }
                }
                if (i != RECORDS) throw new AssertionError(name + ": " + i + " records");
                checked += i;
                System.out.println("KAFKA-CHECK codec=" + name + " records=" + i + " bytes=" + bytes.length + " ok");
            }
            System.out.println("KAFKA-CHECK total=" + checked);
        }
    }
}
