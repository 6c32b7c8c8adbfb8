//! Tests of the coordinator state machine (filled in by the coordinator-tests branch).
