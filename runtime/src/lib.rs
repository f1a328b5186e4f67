//! The partition worker of statefun-aws: a StateFun-compatible runtime for
//! stateful functions, built on logs, object storage and conditional writes.
//!
//! ```text
//!  ingress shards ─┐                       ┌─> invoke (HTTP / Lambda) ─┐
//!  exchange shard ─┴─> worker ─────────────┤                           │
//!                         ▲    │           └────────── replies <───────┘
//!                         │    └─ sealed epochs ─> committer ─> checkpoint object
//!                         │                                  ─> conditional commit
//!                         └──── other partitions <─ exchange <─ publish outbox ─> egress, dead letters
//! ```
//!
//! - [`address`], [`partition`]: the engine (routing, mailboxes, batching, state, timers, expiry,
//!   epochs), a crate of its own (`statefun-engine`) free of AWS, HTTP and files, re-exported here.
//! - [`worker`]: drives one partition: reads its inputs, invokes, seals epochs; its committer stores
//!   and publishes them.
//! - [`config`]: `module.yaml` (StateFun kinds and ours), validated at load.
//! - [`invoke`]: endpoints, the HTTP transport, retries.
//! - [`log`], [`checkpoint`], [`coordination`]: the storage seams, with embedded local backends
//!   and AWS ones (Kinesis, S3, DynamoDB); [`aws`]: what the AWS backends share.
//! - [`node`]: wires one process: leases, recovery, one worker per partition.
//! - [`values`]: reading and writing values by typename for the CLI.
//!
//! Glossary: an *epoch* is the unit of commit of a partition; the *outbox* is
//! what an epoch publishes once committed; the *exchange* is the log that
//! carries messages between partitions.

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
pub mod observe;
pub mod values;
pub mod worker;

pub use statefun_engine::{address, now_ms, partition};

/// A boxed future, so the storage and transport traits stay object-safe.
pub type BoxFuture<'a, T> = std::pin::Pin<Box<dyn std::future::Future<Output = T> + Send + 'a>>;
