//! Client configs: Kafka's names and defaults, validated at construction.
//!
//! Each config is a struct with public fields and a `Default` matching
//! Kafka's documented defaults, plus a builder whose `build()` validates:
//!
//! ```
//! use ferrolog::client::{Acks, ProducerConfig};
//! let config = ProducerConfig::builder().acks(Acks::Leader).linger_ms(10).build()?;
//! assert_eq!(config.batch_size, 16_384);
//! let bad = ProducerConfig::builder().request_timeout_ms(0).build();
//! assert!(matches!(bad, Err(ferrolog::Error::InvalidConfig { field: "request_timeout_ms", .. })));
//! let negative = ProducerConfig::builder().linger_ms(-1).build();
//! assert!(matches!(negative, Err(ferrolog::Error::InvalidConfig { field: "linger_ms", .. })));
//! # Ok::<(), ferrolog::Error>(())
//! ```
//!
//! Setters take what reads naturally: integer literals of any integer type
//! (a value out of the field's range is refused by `build()`), `&str` or
//! `String` for text, `&str` for an optional text (`.group_id("billing")`);
//! see [`SettingValue`].
//!
//! A config built with struct syntax is validated when the client is created.

use crate::error::{Error, Result};
use crate::protocol::Acks;
use crate::record::{BATCH_HEADER_LEN, Compression};

/// What a config builder's setter takes for a field of type `T`: the
/// value itself, any integer (an integer literal such as `.linger_ms(1)`
/// included) for an integer field, `&str` for a `String`, `&str`, `String`
/// or an `Option` of them for an `Option<String>`. A value that does not
/// fit (a negative or too large integer) makes `build()` fail with
/// [`Error::InvalidConfig`] naming the field.
pub trait SettingValue<T> {
    /// The field's value, or why this one does not fit.
    fn into_setting(self) -> std::result::Result<T, String>;
}

macro_rules! integer_settings {
    ($($target:ty),*) => {$(
        integer_settings!(@from $target: i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);
    )*};
    (@from $target:ty: $($source:ty),*) => {$(
        impl SettingValue<$target> for $source {
            fn into_setting(self) -> std::result::Result<$target, String> {
                <$target>::try_from(self).map_err(|_| {
                    format!("{self} is outside {}..={}", <$target>::MIN, <$target>::MAX)
                })
            }
        }
    )*};
}
integer_settings!(u16, u32, u64, usize);

macro_rules! same_settings {
    ($($t:ty),*) => {$(
        impl SettingValue<$t> for $t {
            fn into_setting(self) -> std::result::Result<$t, String> {
                Ok(self)
            }
        }
    )*};
}
same_settings!(
    bool,
    String,
    Acks,
    AutoOffsetReset,
    Option<String>,
    Compression
);

impl SettingValue<Compression> for &str {
    fn into_setting(self) -> std::result::Result<Compression, String> {
        Compression::from_name(self)
            .ok_or_else(|| format!("{self:?} is not one of none, gzip, snappy, lz4, zstd"))
    }
}

impl SettingValue<String> for &str {
    fn into_setting(self) -> std::result::Result<String, String> {
        Ok(self.to_string())
    }
}

impl SettingValue<Option<String>> for &str {
    fn into_setting(self) -> std::result::Result<Option<String>, String> {
        Ok(Some(self.to_string()))
    }
}

impl SettingValue<Option<String>> for String {
    fn into_setting(self) -> std::result::Result<Option<String>, String> {
        Ok(Some(self))
    }
}

impl SettingValue<Option<String>> for Option<&str> {
    fn into_setting(self) -> std::result::Result<Option<String>, String> {
        Ok(self.map(str::to_string))
    }
}

/// Generates `<Config>Builder` with one setter per field and a validating
/// `build()`, and `<Config>::builder()`.
macro_rules! config_builder {
    ($config:ident, $builder:ident { $($field:ident: $ty:ty),* $(,)? }) => {
        #[doc = concat!("Builds a [`", stringify!($config), "`] from its defaults; `build()` validates it.")]
        #[derive(Debug, Clone, Default)]
        pub struct $builder {
            config: $config,
            /// The first setter value that did not fit its field.
            refused: Option<Error>,
        }

        impl $builder {
            $(
                #[doc = concat!("Sets [`", stringify!($config), "::", stringify!($field), "`] (see [`SettingValue`] for what it takes).")]
                pub fn $field(mut self, value: impl SettingValue<$ty>) -> Self {
                    match value.into_setting() {
                        Ok(value) => self.config.$field = value,
                        Err(reason) => {
                            self.refused.get_or_insert(Error::config(stringify!($field), reason));
                        }
                    }
                    self
                }
            )*

            /// Validates the config; a bad value (or one a setter could
            /// not take) is [`Error::InvalidConfig`] naming the field.
            pub fn build(self) -> Result<$config> {
                if let Some(refused) = self.refused {
                    return Err(refused);
                }
                self.config.validate()?;
                Ok(self.config)
            }
        }

        impl $config {
            /// A builder starting from the defaults.
            pub fn builder() -> $builder {
                $builder::default()
            }
        }
    };
}

pub use crate::time::MAX_CONFIG_MS;
pub(crate) use crate::time::at_most_max_ms;

fn positive(field: &'static str, value: u64) -> Result<()> {
    if value == 0 {
        return Err(Error::config(field, "must be positive"));
    }
    Ok(())
}

/// Settings of a [`Producer`](super::Producer), with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerConfig {
    /// A name for the producer in errors and logs (default: empty).
    pub client_id: String,
    /// What a send waits for (default [`Acks::All`], as in Kafka 3.0+).
    pub acks: Acks,
    /// Bytes of records collected per partition before a batch is sent
    /// (default 16,384). A larger record gets a batch of its own.
    pub batch_size: usize,
    /// How long a batch waits for more records before it is sent, in ms
    /// (default 5, as in Kafka 4.0). 0 sends as soon as the sender is free.
    pub linger_ms: u64,
    /// Bytes of records the producer may hold before `send` blocks
    /// (default 33,554,432 = 32 MiB).
    pub buffer_memory: usize,
    /// Longest `send` blocks for metadata or buffer space, in ms
    /// (default 60,000); then it fails.
    pub max_block_ms: u64,
    /// How often a batch is retried after a retriable error (default
    /// 2,147,483,647: bounded in practice by `delivery_timeout_ms`).
    pub retries: u32,
    /// Wait before the first retry of a batch, in ms (default 100); doubles per
    /// attempt up to `retry_backoff_max_ms`.
    pub retry_backoff_ms: u64,
    /// Longest wait between retries, in ms (default 1,000).
    pub retry_backoff_max_ms: u64,
    /// Upper bound on the time from `send` to success or failure, in ms
    /// (default 120,000). At least `linger_ms + request_timeout_ms`.
    pub delivery_timeout_ms: u64,
    /// How long the broker may wait for replicas before answering a Produce,
    /// and how long a metadata look-up waits, in ms (default 30,000). A
    /// Produce request that gets no answer is not sent again while it might
    /// still land (that could write its records twice, or after later ones);
    /// `delivery_timeout_ms` bounds the wait, and a transport reports a lost
    /// request as a retriable [`Error::Network`] that is retried at once.
    pub request_timeout_ms: u64,
    /// Largest request, hence largest record, in bytes (default 1,048,576).
    pub max_request_size: usize,
    /// Metadata older than this is refreshed before use, in ms (default 300,000).
    pub metadata_max_age_ms: u64,
    /// Number batches so a leader writes each exactly once and in order,
    /// whatever the retries (Kafka's `enable.idempotence`, default true). In
    /// force with `acks=all`; off for acks 0 and 1, as Kafka does when it is
    /// not set explicitly.
    pub enable_idempotence: bool,
    /// Batches per partition in flight at once (Kafka's
    /// `max.in.flight.requests.per.connection`, default 5, at most 5 with
    /// idempotence). Without idempotence one batch per partition is in flight
    /// whatever this says, so retries cannot reorder records.
    pub max_in_flight_requests_per_connection: usize,
    /// Record [metrics](crate::metrics) (default true). Recording costs a
    /// counter or histogram bucket per event; turning it off is for
    /// measuring that cost — snapshots then read zeros.
    pub metrics_enabled: bool,
    /// The codec of every batch the producer sends (Kafka's
    /// `compression.type`, default [`Compression::None`]). Each codec needs
    /// its cargo feature; `batch_size` keeps counting uncompressed bytes.
    pub compression_type: Compression,
}

impl Default for ProducerConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            acks: Acks::All,
            batch_size: 16_384,
            linger_ms: 5,
            buffer_memory: 32 << 20,
            max_block_ms: 60_000,
            retries: i32::MAX as u32,
            retry_backoff_ms: 100,
            retry_backoff_max_ms: 1_000,
            delivery_timeout_ms: 120_000,
            request_timeout_ms: 30_000,
            max_request_size: 1 << 20,
            metadata_max_age_ms: 300_000,
            enable_idempotence: true,
            max_in_flight_requests_per_connection: 5,
            metrics_enabled: true,
            compression_type: Compression::None,
        }
    }
}

impl ProducerConfig {
    /// Whether batches are numbered: `enable_idempotence` with `acks=all`.
    pub fn idempotent(&self) -> bool {
        self.enable_idempotence && self.acks == Acks::All
    }

    /// Batches per partition allowed in flight.
    pub(crate) fn in_flight_per_partition(&self) -> usize {
        if self.idempotent() {
            self.max_in_flight_requests_per_connection
        } else {
            1
        }
    }

    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        if self.batch_size > i32::MAX as usize {
            return Err(Error::config("batch_size", "must fit in a batch (< 2 GiB)"));
        }
        if self.max_request_size <= BATCH_HEADER_LEN || self.max_request_size > i32::MAX as usize {
            return Err(Error::config(
                "max_request_size",
                format!(
                    "must be more than a batch header ({BATCH_HEADER_LEN} bytes) and below 2 GiB"
                ),
            ));
        }
        for (field, ms) in [
            ("linger_ms", self.linger_ms),
            ("max_block_ms", self.max_block_ms),
            ("retry_backoff_ms", self.retry_backoff_ms),
            ("retry_backoff_max_ms", self.retry_backoff_max_ms),
            ("delivery_timeout_ms", self.delivery_timeout_ms),
            ("request_timeout_ms", self.request_timeout_ms),
            ("metadata_max_age_ms", self.metadata_max_age_ms),
        ] {
            at_most_max_ms(field, ms)?;
        }
        positive("buffer_memory", self.buffer_memory as u64)?;
        if !self.compression_type.is_enabled() {
            return Err(Error::config(
                "compression_type",
                format!(
                    "{} needs ferrolog's `{}` cargo feature",
                    self.compression_type.name(),
                    self.compression_type.feature()
                ),
            ));
        }
        positive(
            "max_in_flight_requests_per_connection",
            self.max_in_flight_requests_per_connection as u64,
        )?;
        if self.idempotent()
            && self.max_in_flight_requests_per_connection > crate::replication::BATCHES_KEPT
        {
            return Err(Error::config(
                "max_in_flight_requests_per_connection",
                format!(
                    "at most {} with enable_idempotence (leaders remember that many batches per producer)",
                    crate::replication::BATCHES_KEPT
                ),
            ));
        }
        positive("request_timeout_ms", self.request_timeout_ms)?;
        positive("metadata_max_age_ms", self.metadata_max_age_ms)?;
        if self.retry_backoff_max_ms < self.retry_backoff_ms {
            return Err(Error::config(
                "retry_backoff_max_ms",
                format!(
                    "must be at least retry_backoff_ms ({})",
                    self.retry_backoff_ms
                ),
            ));
        }
        let floor = self.linger_ms.saturating_add(self.request_timeout_ms);
        if self.delivery_timeout_ms < floor {
            return Err(Error::config(
                "delivery_timeout_ms",
                format!(
                    "{} is less than linger_ms + request_timeout_ms ({floor})",
                    self.delivery_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

config_builder!(
    ProducerConfig,
    ProducerConfigBuilder {
        client_id: String,
        acks: Acks,
        batch_size: usize,
        linger_ms: u64,
        buffer_memory: usize,
        max_block_ms: u64,
        retries: u32,
        retry_backoff_ms: u64,
        retry_backoff_max_ms: u64,
        delivery_timeout_ms: u64,
        request_timeout_ms: u64,
        max_request_size: usize,
        metadata_max_age_ms: u64,
        enable_idempotence: bool,
        max_in_flight_requests_per_connection: usize,
        metrics_enabled: bool,
        compression_type: Compression,
    }
);

/// Where a consumer starts when it has no valid position (Kafka's
/// `auto.offset.reset`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AutoOffsetReset {
    /// The first offset still in the log.
    Earliest,
    /// The high watermark: only records produced from now on (Kafka's default).
    Latest,
    /// No reset: `poll` fails with [`Error::NoOffsetForPartition`].
    None,
}

/// Settings of a [`Consumer`](super::Consumer), with Kafka's names and defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerConfig {
    /// A name for the consumer in errors and logs (default: empty).
    pub client_id: String,
    /// Where to start without a valid position (default `Latest`).
    pub auto_offset_reset: AutoOffsetReset,
    /// A fetch is answered once this many bytes are available (default 1).
    pub fetch_min_bytes: u32,
    /// Most bytes a fetch returns across partitions (default 52,428,800).
    pub fetch_max_bytes: u32,
    /// Longest a broker holds a fetch waiting for `fetch_min_bytes`, in ms
    /// (default 500).
    pub fetch_max_wait_ms: u32,
    /// Most bytes a fetch returns per partition (default 1,048,576).
    pub max_partition_fetch_bytes: u32,
    /// Most records one `poll` returns (default 500).
    pub max_poll_records: usize,
    /// Verify each fetched batch's CRC (default true).
    pub check_crcs: bool,
    /// How long to wait for a broker's response, in ms (default 30,000).
    pub request_timeout_ms: u64,
    /// Bound on blocking calls other than `poll` (`position`,
    /// `offsets_for_times`, …), in ms (default 60,000).
    pub default_api_timeout_ms: u64,
    /// Metadata older than this is refreshed before use, in ms (default 300,000).
    pub metadata_max_age_ms: u64,
    /// The consumer group to join with [`subscribe`](super::Consumer::subscribe)
    /// and to commit offsets for (default `None`: no group; only `assign`).
    pub group_id: Option<String>,
    /// Makes the consumer a static member: restarting with the same id
    /// within `session_timeout_ms` takes its partitions back without a
    /// rebalance (default `None`).
    pub group_instance_id: Option<String>,
    /// Commit the positions of the assigned partitions automatically (default
    /// true): at the start of a `poll` once `auto_commit_interval_ms` passed
    /// since the last one — so what it commits is what earlier polls
    /// returned, which the application had time to process — before
    /// partitions are revoked, and on close. Not from a background thread:
    /// a consumer that stops polling stops committing. At-least-once as
    /// long as the application finishes a poll's records before it polls
    /// again (see [`Consumer`](super::Consumer#delivery-semantics)).
    pub enable_auto_commit: bool,
    /// How often auto-commit runs, in ms (default 5,000).
    pub auto_commit_interval_ms: u64,
    /// The coordinator removes a member it has not heard from for this
    /// long, and moves its partitions, in ms (default 45,000).
    pub session_timeout_ms: u64,
    /// How often the consumer heartbeats to its coordinator, in ms (default
    /// 3,000); below `session_timeout_ms`.
    pub heartbeat_interval_ms: u64,
    /// A member that does not call `poll` for this long leaves the group and
    /// its partitions move; also how long it may take to give up revoked
    /// partitions, in ms (default 300,000).
    pub max_poll_interval_ms: u64,
    /// The assignor the group uses, by name: `range` (default, as Kafka),
    /// `roundrobin`, `sticky`, `cooperative-sticky`, or a custom one the
    /// cluster was built with.
    pub partition_assignment_strategy: String,
    /// Wait before retrying a failed group request, in ms (default 100).
    pub retry_backoff_ms: u64,
    /// Record [metrics](crate::metrics) (default true). Recording costs a
    /// counter or histogram bucket per event; turning it off is for
    /// measuring that cost — snapshots then read zeros.
    pub metrics_enabled: bool,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            client_id: String::new(),
            auto_offset_reset: AutoOffsetReset::Latest,
            fetch_min_bytes: 1,
            fetch_max_bytes: 52_428_800,
            fetch_max_wait_ms: 500,
            max_partition_fetch_bytes: 1 << 20,
            max_poll_records: 500,
            check_crcs: true,
            request_timeout_ms: 30_000,
            default_api_timeout_ms: 60_000,
            metadata_max_age_ms: 300_000,
            group_id: None,
            group_instance_id: None,
            enable_auto_commit: true,
            auto_commit_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            heartbeat_interval_ms: 3_000,
            max_poll_interval_ms: 300_000,
            partition_assignment_strategy: "range".to_string(),
            retry_backoff_ms: 100,
            metrics_enabled: true,
        }
    }
}

impl ConsumerConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        for (field, ms) in [
            ("request_timeout_ms", self.request_timeout_ms),
            ("default_api_timeout_ms", self.default_api_timeout_ms),
            ("metadata_max_age_ms", self.metadata_max_age_ms),
            ("auto_commit_interval_ms", self.auto_commit_interval_ms),
            ("session_timeout_ms", self.session_timeout_ms),
            ("heartbeat_interval_ms", self.heartbeat_interval_ms),
            ("max_poll_interval_ms", self.max_poll_interval_ms),
            ("retry_backoff_ms", self.retry_backoff_ms),
        ] {
            at_most_max_ms(field, ms)?;
            if field != "retry_backoff_ms" {
                positive(field, ms)?;
            }
        }
        if let Some(group) = &self.group_id {
            crate::group::validate_group_id(group)?;
        }
        match &self.group_instance_id {
            Some(_) if self.group_id.is_none() => {
                return Err(Error::config("group_instance_id", "needs a group_id"));
            }
            Some(id) if id.is_empty() => {
                return Err(Error::config("group_instance_id", "must not be empty"));
            }
            _ => {}
        }
        if self.heartbeat_interval_ms >= self.session_timeout_ms {
            return Err(Error::config(
                "heartbeat_interval_ms",
                format!(
                    "must be less than session_timeout_ms ({})",
                    self.session_timeout_ms
                ),
            ));
        }
        if self.partition_assignment_strategy.is_empty() {
            return Err(Error::config(
                "partition_assignment_strategy",
                "names no assignor",
            ));
        }
        positive("fetch_max_bytes", self.fetch_max_bytes.into())?;
        positive(
            "max_partition_fetch_bytes",
            self.max_partition_fetch_bytes.into(),
        )?;
        positive("max_poll_records", self.max_poll_records as u64)?;
        positive("request_timeout_ms", self.request_timeout_ms)?;
        positive("default_api_timeout_ms", self.default_api_timeout_ms)?;
        positive("metadata_max_age_ms", self.metadata_max_age_ms)?;
        if self.fetch_min_bytes > self.fetch_max_bytes {
            return Err(Error::config(
                "fetch_min_bytes",
                format!("must not exceed fetch_max_bytes ({})", self.fetch_max_bytes),
            ));
        }
        if u64::from(self.fetch_max_wait_ms) >= self.request_timeout_ms {
            return Err(Error::config(
                "fetch_max_wait_ms",
                format!(
                    "must be less than request_timeout_ms ({})",
                    self.request_timeout_ms
                ),
            ));
        }
        Ok(())
    }
}

config_builder!(
    ConsumerConfig,
    ConsumerConfigBuilder {
        client_id: String,
        auto_offset_reset: AutoOffsetReset,
        fetch_min_bytes: u32,
        fetch_max_bytes: u32,
        fetch_max_wait_ms: u32,
        max_partition_fetch_bytes: u32,
        max_poll_records: usize,
        check_crcs: bool,
        request_timeout_ms: u64,
        default_api_timeout_ms: u64,
        metadata_max_age_ms: u64,
        group_id: Option<String>,
        group_instance_id: Option<String>,
        enable_auto_commit: bool,
        auto_commit_interval_ms: u64,
        session_timeout_ms: u64,
        heartbeat_interval_ms: u64,
        max_poll_interval_ms: u64,
        partition_assignment_strategy: String,
        retry_backoff_ms: u64,
        metrics_enabled: bool,
    }
);

/// Settings of an [`Admin`](super::Admin) client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminConfig {
    /// Bound on each admin call, retries included, in ms (Kafka's
    /// `default.api.timeout.ms`, default 60,000).
    pub default_api_timeout_ms: u64,
    /// Wait between retries of a retriable failure, in ms (default 100).
    pub retry_backoff_ms: u64,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            default_api_timeout_ms: 60_000,
            retry_backoff_ms: 100,
        }
    }
}

impl AdminConfig {
    /// Checks every value; the error names the first bad field.
    pub fn validate(&self) -> Result<()> {
        at_most_max_ms("default_api_timeout_ms", self.default_api_timeout_ms)?;
        at_most_max_ms("retry_backoff_ms", self.retry_backoff_ms)?;
        positive("default_api_timeout_ms", self.default_api_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Setters take integer literals, `&str` for text and for optional
    /// text; a value out of the field's range fails `build()` naming it.
    #[test]
    fn setters_take_plain_literals_and_refuse_what_does_not_fit() {
        let producer = ProducerConfig::builder()
            .linger_ms(1)
            .batch_size(1 << 20)
            .retries(3)
            .client_id("billing-producer")
            .build()
            .unwrap();
        assert_eq!(producer.linger_ms, 1);
        assert_eq!(producer.batch_size, 1 << 20);
        assert_eq!(producer.client_id, "billing-producer");
        let consumer = ConsumerConfig::builder()
            .group_id("billing")
            .fetch_max_wait_ms(50)
            .max_poll_records(100)
            .build()
            .unwrap();
        assert_eq!(consumer.group_id.as_deref(), Some("billing"));
        assert_eq!(consumer.fetch_max_wait_ms, 50);
        let none = ConsumerConfig::builder()
            .group_id("billing")
            .group_id(None::<&str>)
            .build()
            .unwrap();
        assert_eq!(none.group_id, None);
        for (refused, field) in [
            (ProducerConfig::builder().linger_ms(-1).build(), "linger_ms"),
            (ProducerConfig::builder().retries(-5).build(), "retries"),
            (
                ProducerConfig::builder().retries(u64::MAX).build(),
                "retries",
            ),
        ] {
            match refused {
                Err(Error::InvalidConfig { field: f, reason }) => {
                    assert_eq!(f, field);
                    assert!(reason.contains("outside"), "{reason}");
                }
                other => panic!("{field}: {other:?}"),
            }
        }
        let fetch = ConsumerConfig::builder()
            .fetch_max_wait_ms(5_000_000_000u64)
            .build();
        assert!(
            matches!(
                fetch,
                Err(Error::InvalidConfig {
                    field: "fetch_max_wait_ms",
                    ..
                })
            ),
            "{fetch:?}"
        );
    }
}
