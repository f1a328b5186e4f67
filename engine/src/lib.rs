//! The engine of statefun-aws: what a partition does with the messages that
//! reach it, as a pure state machine.
//!
//! - [`address`]: function types, addresses, the stable key-group routing.
//! - [`partition`]: mailboxes, batching, state, timers, expiry, parking, the
//!   epoch record and its outbox, and rebuilding all of it from a history.
//! - [`limits`]: Kinesis' limits on a record, which every record the engine
//!   makes keeps to, so the local mode meets the same edges as AWS.
//!
//! It knows nothing of AWS, HTTP, files or async runtimes: the runtime crate
//! drives it, reads its input, invokes functions and stores what it seals.

pub mod address;
pub mod limits;
pub mod partition;

/// Wall-clock milliseconds: the clock of timers and state expiry, which are
/// checkpointed as absolute times and so survive restarts.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}
