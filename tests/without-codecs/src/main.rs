//! Without codec features, every compressed batch is refused on append with
//! `UnsupportedCompression` and nothing is stored; settings that name a codec
//! are refused at construction. Prints one `NO-CODECS` line per codec.

use bytes::Bytes;
use ferrolog::client::ProducerConfig;
use ferrolog::record::{Compression, RecordBatch};
use ferrolog::storage::{LogConfig, MemoryStorage, Storage, TopicCompression};
use ferrolog::{Error, TopicPartition};

fn main() {
    let storage = MemoryStorage::new();
    let tp = TopicPartition::new("t", 0).expect("topic name");
    let mut log = storage
        .open(&tp, 0, &LogConfig::default())
        .expect("a log");
    for (codec, topic) in [
        (Compression::Gzip, TopicCompression::Gzip),
        (Compression::Snappy, TopicCompression::Snappy),
        (Compression::Lz4, TopicCompression::Lz4),
        (Compression::Zstd, TopicCompression::Zstd),
    ] {
        assert!(!codec.is_enabled());
        let path = format!(
            "{}/../data/kafka-batches/{}.bin",
            env!("CARGO_MANIFEST_DIR"),
            codec.name()
        );
        let bytes = std::fs::read(&path).expect("Kafka's batch");
        let batch = RecordBatch::from_bytes(Bytes::from(bytes)).expect("framing");
        batch.validate().expect("the CRC holds");
        let refused = log.append(batch.clone(), 0);
        assert!(
            matches!(refused, Err(Error::UnsupportedCompression { codec: c }) if c == codec.name()),
            "{codec:?}: {refused:?}"
        );
        assert_eq!(log.log_end_offset(), 0, "nothing stored");
        assert!(matches!(
            batch.records().next(),
            Some(Err(Error::UnsupportedCompression { .. }))
        ));
        let producer = ProducerConfig::builder()
            .compression_type(codec.name())
            .build();
        assert!(
            matches!(producer, Err(Error::InvalidConfig { field: "compression_type", .. })),
            "{producer:?}"
        );
        let topic_config = LogConfig {
            compression_type: topic,
            ..LogConfig::default()
        };
        assert!(topic_config.validate().is_err());
        println!(
            "NO-CODECS codec={} append=refused(UnsupportedCompression) producer_config=refused topic_config=refused",
            codec.name()
        );
    }
}
