//! The functions of the hostile scenario ([`crate::hostile`]), each
//! misbehaving the way a production function might. `bench-functions` serves
//! them next to the counter:
//!
//! - `bench/failing` fails every invocation (the SDK answers HTTP 500), so its
//!   messages are retried, then dead-lettered;
//! - `bench/scheduler`, given a [`Schedule`], sends that many delayed messages
//!   to `bench/arrivals`, all due at one absolute time;
//! - `bench/arrivals` counts what arrives (the timers' target);
//! - `bench/fanout` answers each message with [`FANOUT`] messages to new keys
//!   of itself, one level deeper, so the traffic grows fourfold per level until
//!   the runtime's hop limit ends the chains.
//!
//! What they did is counted in this process' statics; `bench-functions`
//! reports the counts with the counter's, every 20 ms.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use statefun_sdk::{Context, FunctionType, Functions, JsonType, LongType, Message};

use crate::counter::NAMESPACE;

/// Messages `bench/arrivals` has received.
pub static ARRIVALS: AtomicU64 = AtomicU64::new(0);
/// Messages `bench/fanout` has received.
pub static FANOUT_MESSAGES: AtomicU64 = AtomicU64::new(0);
/// The deepest level of the fan-out a message reached (the seed is level 0).
pub static FANOUT_DEPTH: AtomicU64 = AtomicU64::new(0);
/// Batches `bench/failing` failed (one per request: the first message fails it).
pub static FAILED: AtomicU64 = AtomicU64::new(0);

/// Messages `bench/fanout` sends for each it receives.
pub const FANOUT: usize = 4;

/// Keys of `bench/arrivals` the timers are spread over (several per partition).
pub const ARRIVAL_KEYS: u64 = 10_000;

/// The typename of [`Schedule`], the scheduler's ingress `valueType`.
pub const SCHEDULE_TYPENAME: &str = "bench/Schedule";

/// What one scheduler invocation sends: `count` delayed messages due at `due_at_ms`,
/// to the arrival keys from `first` on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub due_at_ms: i64,
    pub count: u64,
    pub first: u64,
}

pub fn schedule_type() -> JsonType<Schedule> {
    JsonType::new(SCHEDULE_TYPENAME)
}

pub fn failing_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "failing")
}

pub fn scheduler_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "scheduler")
}

pub fn arrivals_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "arrivals")
}

pub fn fanout_type() -> FunctionType {
    FunctionType::new(NAMESPACE, "fanout")
}

/// `functions` with the hostile scenario's four functions added.
pub fn register(functions: Functions) -> Functions {
    functions
        .with(failing_type(), &[], |ctx: &mut Context, _message: Message| {
            FAILED.fetch_add(1, Ordering::Relaxed);
            Err(format!("bench/failing fails every message (key {})", ctx.self_address().id()).into())
        })
        .with(scheduler_type(), &[], |ctx: &mut Context, message: Message| {
            let schedule = message.as_value(&schedule_type())?;
            // The runtime takes a delay, not a time: what is left until the common due time.
            let delay = Duration::from_millis((schedule.due_at_ms - crate::now_ms()).max(0) as u64);
            for n in schedule.first..schedule.first + schedule.count {
                let target = arrivals_type().address(format!("a{}", n % ARRIVAL_KEYS));
                ctx.send_after(delay, Message::new(target, &LongType, &1)?);
            }
            Ok(())
        })
        .with(arrivals_type(), &[], |_ctx: &mut Context, _message: Message| {
            ARRIVALS.fetch_add(1, Ordering::Relaxed);
            Ok(())
        })
        .with(fanout_type(), &[], |ctx: &mut Context, message: Message| {
            let depth = message.as_value(&LongType)?;
            FANOUT_MESSAGES.fetch_add(1, Ordering::Relaxed);
            FANOUT_DEPTH.fetch_max(depth.max(0) as u64, Ordering::Relaxed);
            for _ in 0..FANOUT {
                ctx.send(Message::new(fanout_type().address(fresh_key()), &LongType, &(depth + 1))?);
            }
            Ok(())
        })
}

/// A key no message of this process went to before: the fan-out keeps creating addresses.
fn fresh_key() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // Mixed, so consecutive keys land on different partitions.
    format!("f{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n >> 7))
}

/// One report line's counts after the counter's: arrivals, fan-out messages,
/// fan-out depth, failed batches.
pub fn counts() -> [u64; 4] {
    [
        ARRIVALS.load(Ordering::Relaxed),
        FANOUT_MESSAGES.load(Ordering::Relaxed),
        FANOUT_DEPTH.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use statefun_sdk::proto::reqreply::from_function::InvocationResponse;
    use statefun_sdk::testing::{TestRequest, invocation_result};

    async fn call(
        function: FunctionType,
        request: impl FnOnce(TestRequest) -> TestRequest,
    ) -> Option<InvocationResponse> {
        let request = request(TestRequest::new(function.address("k"))).to_function();
        register(Functions::new()).handle_request(request).await.ok().and_then(invocation_result)
    }

    #[tokio::test]
    async fn the_scheduler_sends_its_count_of_delayed_messages_to_the_arrivals() {
        let schedule = Schedule { due_at_ms: crate::now_ms() + 20_000, count: 3, first: 9_999 };
        let result = call(scheduler_type(), |r| r.with_invocation(None, &schedule_type(), &schedule).expect("a"))
            .await
            .expect("an invocation result");
        assert_eq!(result.delayed_invocations.len(), 3);
        let delay = result.delayed_invocations[0].delay_in_ms;
        assert!((15_000..=20_000).contains(&delay), "{delay}");
        let ids: Vec<_> = result.delayed_invocations.iter().map(|d| d.target.as_ref().map(|t| t.id.clone())).collect();
        assert_eq!(ids, [Some("a9999".into()), Some("a0".into()), Some("a1".into())]);
    }

    #[tokio::test]
    async fn the_fanout_sends_four_one_level_deeper_to_new_keys() {
        let result = call(fanout_type(), |r| r.with_invocation(None, &LongType, &2).expect("a"))
            .await
            .expect("an invocation result");
        assert_eq!(result.outgoing_messages.len(), FANOUT);
        let mut keys: Vec<_> = result.outgoing_messages.iter().filter_map(|m| m.target.as_ref()).collect();
        keys.dedup_by(|a, b| a.id == b.id);
        assert_eq!(keys.len(), FANOUT);
        assert!(FANOUT_DEPTH.load(Ordering::Relaxed) >= 2);
    }

    #[tokio::test]
    async fn the_failing_function_fails() {
        let request = TestRequest::new(failing_type().address("hot")).with_invocation(None, &LongType, &1);
        let request = request.expect("an invocation").to_function();
        assert!(register(Functions::new()).handle_request(request).await.is_err());
    }
}
