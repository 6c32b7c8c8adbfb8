//! Consumer groups: membership, generations, assignment and committed offsets.
//!
//! This module owns the group coordinator's state machine and the assignors.
//! A group's coordinator is the leader of partition `hash(group) % N` of the
//! internal topic `__consumer_offsets`. It keeps the members, the group epoch
//! (generation) and the target assignment computed by the group's
//! [`Assignor`]; members heartbeat, receive their assignment and reconcile
//! (revoking before anyone else is given a partition). Offset commits and the
//! group's state are records in that partition (compacted, replicated like any
//! data), so a new coordinator rebuilds everything by reading it.
//!
//! Like every protocol module it never blocks, sleeps, reads the clock or
//! spawns threads: time comes in as `now`, and what must be written to the log
//! comes out as records for the broker to append.

pub mod assignor;

pub use assignor::{
    Assignment, Assignor, CooperativeStickyAssignor, MemberSubscription, RangeAssignor,
    RebalanceProtocol, RoundRobinAssignor, StickyAssignor, built_in_assignors,
};
