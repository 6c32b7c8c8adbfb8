//! Bugs planted on purpose, to prove that the simulator's checker finds
//! them (feature `sim`).
//!
//! A simulated run may plant one [`PlantedBug`]
//! ([`SimConfig::planted`](crate::sim::SimConfig::planted)); the cores ask
//! [`planted`] at the few places where each bug would live. The switch is
//! per thread (a simulation runs on one), so a planted run never affects
//! another thread. Without the `sim` feature [`planted`] is a constant
//! `false` and the checks compile away.

/// A bug the simulator can plant in the cores, each one a mistake real
/// replicated logs have made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PlantedBug {
    /// A leader's high watermark is its own log end offset, not the lowest
    /// log end offset of its ISR: records count as committed before any
    /// follower has them.
    HighWatermarkFromLeaderAlone,
    /// A replica that becomes a follower truncates its log to its high
    /// watermark (as Kafka did before KIP-101), and truncates there again
    /// when its leader reports a divergence, instead of where its log and
    /// the leader's agree (the end of the leader epoch).
    TruncateToHighWatermark,
    /// The controller takes an ISR change made in a leader epoch (or
    /// against a partition epoch) that is no longer current: a deposed
    /// leader's view of the ISR overwrites its successor's.
    StaleLeaderEpochAccepted,
    /// A retried idempotent batch already in the log is appended again
    /// instead of being answered with its first offset.
    DuplicateBatchAppended,
    /// The group coordinator takes a commit from a member epoch it fenced
    /// (an older generation of a member, or a member it removed).
    FencedCommitAccepted,
    /// The group coordinator answers a commit (or any group change) once
    /// its own log has the record, before the ISR does: a failover can
    /// lose a commit the member was told had succeeded.
    CommitAnsweredBeforeReplicated,
    /// The active controller of a quorum publishes a metadata change (and
    /// answers what made it) once its own log has the records, before a
    /// majority of voters does: a controller elected after it may never
    /// have them, and undoes leaderships brokers acted on.
    MetadataPublishedBeforeCommitted,
}

#[cfg(feature = "sim")]
impl PlantedBug {
    /// Every bug, in order.
    pub const ALL: [PlantedBug; 7] = [
        PlantedBug::HighWatermarkFromLeaderAlone,
        PlantedBug::TruncateToHighWatermark,
        PlantedBug::StaleLeaderEpochAccepted,
        PlantedBug::DuplicateBatchAppended,
        PlantedBug::FencedCommitAccepted,
        PlantedBug::CommitAnsweredBeforeReplicated,
        PlantedBug::MetadataPublishedBeforeCommitted,
    ];
}

#[cfg(feature = "sim")]
thread_local! {
    static PLANTED: std::cell::Cell<Option<PlantedBug>> = const { std::cell::Cell::new(None) };
}

/// Whether `bug` is planted on this thread.
#[inline]
pub(crate) fn planted(bug: PlantedBug) -> bool {
    #[cfg(feature = "sim")]
    {
        PLANTED.with(|p| p.get() == Some(bug))
    }
    #[cfg(not(feature = "sim"))]
    {
        let _ = bug;
        false
    }
}

/// Plants a bug on this thread until dropped (then the one before is back).
#[cfg(feature = "sim")]
pub(crate) struct Planting(Option<PlantedBug>);

#[cfg(feature = "sim")]
impl Planting {
    pub(crate) fn new(bug: Option<PlantedBug>) -> Self {
        Self(PLANTED.with(|p| p.replace(bug)))
    }
}

#[cfg(feature = "sim")]
impl Drop for Planting {
    fn drop(&mut self) {
        PLANTED.with(|p| p.set(self.0));
    }
}
