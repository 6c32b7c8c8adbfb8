//! What several storage test files share.

#![allow(dead_code)]

use std::sync::Arc;

use ferrolog::ManualClock;
use ferrolog::storage::{FileStorage, MemoryStorage, Storage};

/// The time every manual clock of these tests starts at.
pub const T0: i64 = 1_700_000_000_000;

/// Runs `test` once on each storage, both driven by the same manual clock.
pub fn on_both(test: impl Fn(&dyn Storage, &ManualClock)) {
    let clock = ManualClock::new(T0);
    test(&MemoryStorage::with_clock(Arc::new(clock.clone())), &clock);
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let files = FileStorage::with_clock(dir.path(), Arc::new(clock.clone())).unwrap();
    test(&files, &clock);
}
