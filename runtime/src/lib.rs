//! The partition worker of statefun-aws: a StateFun-compatible runtime for
//! stateful functions, built on logs, object storage and conditional writes.
//!
//! ```text
//!  ingress shards ─┐                       ┌─> invoke (HTTP / Lambda) ─┐
//!  exchange shard ─┴─> partition::worker ──┤                           │
//!                         ▲    │           └────────── replies <───────┘
//!                         │    └─ sealed epochs ─> committer ─> checkpoint object
//!                         │                                  ─> conditional commit
//!                         └──── other partitions <─ exchange <─ publish outbox ─> egress, dead letters
//! ```
//!
//! - [`address`]: function types, addresses, the stable key-group routing.
//! - [`config`]: `module.yaml` (StateFun kinds and ours), validated at load.
//! - [`partition`]: the engine (mailboxes, batching, state, timers, expiry, epochs), its worker and committer.
//! - [`invoke`]: endpoints, the HTTP transport, retries.
//! - [`log`], [`checkpoint`], [`coordination`]: the storage seams, with embedded local backends
//!   and AWS ones (Kinesis, S3, DynamoDB); [`aws`]: what the AWS backends share.
//! - [`node`]: wires one process: leases, recovery, one worker per partition.
//! - [`values`]: reading and writing values by typename for the CLI.
//!
//! Glossary: an *epoch* is the unit of commit of a partition; the *outbox* is
//! what an epoch publishes once committed; the *exchange* is the log that
//! carries messages between partitions.

pub mod address;
pub mod aws;
pub mod backoff;
pub mod checkpoint;
pub mod config;
pub mod coordination;
pub mod dead_letters;
pub mod faults;
pub mod invoke;
pub mod log;
pub mod node;
pub mod partition;
pub mod values;

/// Wall-clock milliseconds: the clock of timers and state expiry, which are
/// checkpointed as absolute times and so survive restarts.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
