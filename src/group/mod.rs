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

pub(crate) mod coordinator;
pub(crate) mod records;

pub use crate::protocol::{
    GroupDescription, GroupListing, GroupState, MemberDescription, OffsetAndMetadata,
};

/// The internal topic holding committed offsets and group state.
pub const CONSUMER_OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Longest group id accepted (Kafka has no hard limit; ids end up in keys of
/// `__consumer_offsets`, so ferrolog bounds them).
pub const MAX_GROUP_ID_LEN: usize = 255;

/// Checks a group id: 1 to [`MAX_GROUP_ID_LEN`] bytes.
pub fn validate_group_id(group: &str) -> crate::Result<()> {
    let refuse = |reason| {
        Err(crate::Error::InvalidGroupId {
            group: group.to_string(),
            reason,
        })
    };
    if group.is_empty() {
        return refuse("the id is empty");
    }
    if group.len() > MAX_GROUP_ID_LEN {
        return refuse("the id is longer than 255 bytes");
    }
    Ok(())
}

/// The `__consumer_offsets` partition that holds `group`, as Kafka computes
/// it: the group id's Java `String.hashCode`, made non-negative, modulo the
/// partition count. The leader of that partition coordinates the group.
///
/// ```
/// assert_eq!(ferrolog::group::offsets_partition_for("my-group", 50), 36);
/// ```
pub fn offsets_partition_for(group: &str, partitions: u32) -> u32 {
    let hash = group.encode_utf16().fold(0i32, |h, unit| {
        h.wrapping_mul(31).wrapping_add(i32::from(unit))
    });
    (hash & 0x7fff_ffff) as u32 % partitions.max(1)
}

#[cfg(test)]
mod coordinator_tests;
