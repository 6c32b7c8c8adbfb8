//! What an application uses to talk to a cluster.
//!
//! This module will hold the producer, consumer and admin clients. For now it
//! owns the piece of the producer that is pure computation and must match
//! Kafka exactly: the key hash that picks a partition ([`partitioner`]).

pub mod partitioner;
