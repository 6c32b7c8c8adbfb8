//! Time as an input.
//!
//! Protocol and storage code never read the system clock themselves: they are
//! handed a [`Clock`]. The runtime uses [`SystemClock`]; tests and simulations use
//! [`ManualClock`], whose time moves only when told to, so time-based behaviour
//! (segment rolling by `segment_ms`, retention by `retention_ms`, `flush_ms`) is
//! tested without sleeping.

use std::sync::Arc;

use crate::error::{Error, Result};
use std::sync::atomic::{AtomicI64, Ordering};

/// Milliseconds since the Unix epoch, Kafka's timestamp unit.
pub type Millis = i64;

/// A source of the current time in milliseconds since the Unix epoch.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current time.
    fn now_ms(&self) -> Millis;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when [`ManualClock::advance`] or [`ManualClock::set`]
/// is called. Clones share the same time.
///
/// ```
/// use ferrolog::{Clock, ManualClock};
/// let clock = ManualClock::new(1_000);
/// clock.advance(500);
/// assert_eq!(clock.now_ms(), 1_500);
/// ```
#[derive(Debug, Clone, Default)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock reading `start_ms`.
    pub fn new(start_ms: Millis) -> Self {
        Self {
            now: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Moves the clock forward by `ms`.
    pub fn advance(&self, ms: Millis) {
        self.now.fetch_add(ms, Ordering::SeqCst);
    }

    /// Sets the clock to `ms`.
    pub fn set(&self, ms: Millis) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.now.load(Ordering::SeqCst)
    }
}

/// Largest duration a config accepts, in ms (Kafka's int configs: about 24.8
/// days). Larger values would overflow deadline arithmetic.
pub const MAX_CONFIG_MS: u64 = i32::MAX as u64;

pub(crate) fn at_most_max_ms(field: &'static str, value: u64) -> Result<()> {
    if value > MAX_CONFIG_MS {
        return Err(Error::config(
            field,
            format!("{value} ms is more than the maximum of {MAX_CONFIG_MS} ms"),
        ));
    }
    Ok(())
}
