//! How a partition invokes its addresses: invocation slots and the turns of
//! the addresses waiting for one ([`super::ready`]), batches cut to the
//! endpoint's limits, state negotiation, failed batches and the search for a
//! poison message, and applying a reply (state, messages, timers, egress).
//! State-machine code: no I/O, no clocks (times are given).

use std::sync::Arc;

use prost::Message as _;
use statefun_proto::internal::Envelope;
use statefun_proto::reqreply::from_function::{
    self, InvocationResponse, PersistedValueSpec, persisted_value_mutation::MutationType,
};
use statefun_proto::reqreply::to_function::{self, InvocationBatchRequest, PersistedValue};
use statefun_proto::reqreply::{Address, FromFunction, ToFunction};

use super::record::State;
use super::{DeadLetterCause, Effect, Partition, addressed};
use crate::address::{self, FunctionType};

/// How many times a function may answer `incomplete_invocation_context` for one batch.
const MAX_NEGOTIATION_ROUNDS: u32 = 3;
/// Protobuf framing per message, added to the encoded sizes when cutting batches.
const PER_MESSAGE_OVERHEAD: usize = 16;

impl Partition {
    /// Applies the outcome of the batch identified by `token`. Errors are final:
    /// retries happen in the invoker, so an error here dead-letters the batch.
    pub fn on_invocation_result(
        &mut self,
        address: &Address,
        token: u64,
        outcome: Result<FromFunction, String>,
        now_ms: i64,
    ) {
        let mut started = Vec::new();
        self.on_invocation_result_starting(address, token, outcome, now_ms, &mut |effects| started.extend(effects));
        started.append(&mut self.effects);
        self.effects = started;
    }

    /// [`Self::on_invocation_result`] that hands the address's next batch to
    /// `start` as soon as it is dispatched, before the reply's outputs are
    /// handled: a hot address's round trip is the whole of its throughput, so
    /// the worker sends the next batch while the outputs of this one are routed.
    pub fn on_invocation_result_starting(
        &mut self,
        address: &Address,
        token: u64,
        outcome: Result<FromFunction, String>,
        now_ms: i64,
        start: &mut dyn FnMut(Vec<Effect>),
    ) {
        let Some(record) = self.addresses.get(address) else { return };
        if record.busy().token != token || record.busy().in_flight == 0 {
            tracing::debug!(address = %address::display(address), "ignoring a reply to a batch no longer in flight");
            return;
        }
        self.changed = true;
        match outcome.map(|reply| reply.response) {
            Ok(Some(from_function::Response::InvocationResult(response))) => {
                if let Err(reason) = self.apply_response(address, response, now_ms, start) {
                    self.fail_batch(address, reason, now_ms);
                }
            }
            Ok(Some(from_function::Response::IncompleteInvocationContext(context))) => {
                self.negotiate(address, context.missing_values, now_ms);
            }
            Ok(None) => self.fail_batch(
                address,
                "malformed reply: FromFunction has neither invocation_result nor incomplete_invocation_context".into(),
                now_ms,
            ),
            Err(reason) => self.fail_batch(address, reason, now_ms),
        }
    }

    /// Starts the next batch of an idle address, cut to the endpoint's limits,
    /// when a slot is free and no other address waits for one; else the address
    /// waits its turn, and the free slots go to those waiting (once the messages
    /// being delivered together are all in).
    pub(super) fn dispatch(&mut self, address: &Address, now_ms: i64) {
        if self.ready.is_empty() && self.running < self.bounds.max_running && !self.delivering_together {
            self.dispatch_at_most(address, usize::MAX, now_ms);
            return;
        }
        if let Some(record) = self.addresses.get_mut(address) {
            let busy = record.busy();
            if busy.in_flight == 0 && !busy.ready && !record.mailbox().is_empty() {
                record.busy_mut().ready = true;
                self.ready.push(address);
            }
        }
        if !self.delivering_together {
            self.fill_slots(now_ms);
        }
    }

    /// Runs `deliver`, which delivers many messages at once (an input read, the
    /// timers due, a spill read back), and only then starts the batches of the
    /// addresses it made ready: an address that received several of them sends
    /// them all in its first batch, not the first alone and the rest after it.
    pub fn delivering_together<R>(&mut self, now_ms: i64, deliver: impl FnOnce(&mut Self) -> R) -> R {
        let outer = std::mem::replace(&mut self.delivering_together, true);
        let result = deliver(self);
        self.delivering_together = outer;
        if !outer {
            self.fill_slots(now_ms);
        }
        result
    }

    /// Hands free slots to the addresses waiting for one, in turn.
    fn fill_slots(&mut self, now_ms: i64) {
        while self.running < self.bounds.max_running
            && let Some(address) = self.ready.pop()
        {
            // Gone or emptied meanwhile (its messages dead-lettered): nothing to start.
            let Some(record) = self.addresses.get_mut(&address) else { continue };
            record.leave_ready();
            self.dispatch_at_most(&address, usize::MAX, now_ms);
        }
    }

    /// Starts a batch of at most `at_most` messages, slot or not (a negotiation
    /// re-sends the same batch in the slot it holds).
    fn dispatch_at_most(&mut self, address: &Address, at_most: usize, now_ms: i64) {
        let Some(mut limits) = self.limits_of(address) else {
            // Queued for a type whose endpoint is gone (the module changed across a restart).
            let Some(record) = self.addresses.get_mut(address) else { return };
            if record.busy().in_flight > 0 || record.mailbox().is_empty() {
                return;
            }
            let stranded = record.take_messages(usize::MAX);
            let stranded = addressed(self.unqueued(address, stranded, now_ms), address);
            self.mark_dirty(address);
            let reason = format!("no endpoint serves function type {} (check module.yaml)", FunctionType::of(address));
            self.dead_letter_messages(DeadLetterCause::NoEndpoint, address, reason, stranded, now_ms);
            self.remove_if_empty(address);
            return;
        };
        limits.max_messages = limits.max_messages.min(at_most);
        if self.addresses.get(address).is_some_and(|r| r.busy().isolate > 0) {
            limits.max_messages = 1;
        }
        let specs = self.specs.of(address).cloned().unwrap_or_default();
        loop {
            let Some(record) = self.addresses.get_mut(address) else { return };
            if record.busy().in_flight > 0 || record.mailbox().is_empty() {
                return;
            }
            if record.expire(&specs, now_ms) && !self.dirty.contains(address) {
                self.dirty.insert(address.clone());
            }
            let state: Vec<PersistedValue> = specs
                .iter()
                .map(|spec| PersistedValue {
                    state_name: spec.state_name.clone(),
                    state_value: record.state(&spec.state_name).and_then(State::value),
                })
                .collect();
            let state_bytes: usize = state.iter().map(|s| s.encoded_len() + PER_MESSAGE_OVERHEAD).sum();
            let mut invocations = Vec::with_capacity(record.mailbox().len().min(limits.max_messages));
            let mut bytes = state_bytes;
            for envelope in record.mailbox().iter().take(limits.max_messages) {
                let invocation =
                    to_function::Invocation { caller: envelope.caller.clone(), argument: envelope.argument.clone() };
                let size = invocation.encoded_len() + PER_MESSAGE_OVERHEAD;
                if bytes + size > limits.max_bytes {
                    break;
                }
                bytes += size;
                invocations.push(invocation);
            }
            if invocations.is_empty() {
                // Not even one message fits with the state: it can never be delivered.
                let taken = record.take_messages(1);
                let Some(envelope) = addressed(self.unqueued(address, taken, now_ms), address).pop() else { return };
                self.mark_dirty(address);
                let size = envelope.encoded_len();
                let reason = format!(
                    "message of {size} bytes (with {state_bytes} bytes of state) exceeds the payload limit of {} bytes of the endpoint for {}",
                    limits.max_bytes,
                    FunctionType::of(address)
                );
                self.dead_letter_messages(DeadLetterCause::TooLarge, address, reason, vec![envelope], now_ms);
                continue;
            }
            self.next_token += 1;
            let busy = record.busy_mut();
            busy.token = self.next_token;
            busy.in_flight = invocations.len() as u32;
            self.slot_taken(address);
            let request = ToFunction {
                request: Some(to_function::Request::Invocation(InvocationBatchRequest {
                    target: Some(address.clone()),
                    state,
                    invocations,
                })),
            };
            self.effects.push(Effect::Invoke { address: address.clone(), token: self.next_token, request });
            return;
        }
    }

    fn negotiate(&mut self, address: &Address, missing: Vec<PersistedValueSpec>, now_ms: i64) {
        let function_type = FunctionType::of(address);
        let Some(record) = self.addresses.get_mut(address) else { return };
        let record = record.busy_mut();
        record.negotiation_rounds += 1;
        if record.negotiation_rounds > MAX_NEGOTIATION_ROUNDS || missing.is_empty() {
            let names: Vec<&str> = missing.iter().map(|s| s.state_name.as_str()).collect();
            let reason = format!(
                "state negotiation failed: {function_type} still reports missing states {names:?} after {MAX_NEGOTIATION_ROUNDS} rounds"
            );
            self.fail_batch(address, reason, now_ms);
            return;
        }
        let batch = record.in_flight as usize;
        record.in_flight = 0;
        self.slot_freed(address);
        let mut specs = self.specs.get(&function_type).map(|s| s.to_vec()).unwrap_or_default();
        for spec in missing {
            match specs.iter_mut().find(|s| s.state_name == spec.state_name) {
                Some(existing) => *existing = spec,
                None => specs.push(spec),
            }
        }
        self.specs.insert(function_type, Arc::new(specs));
        self.dispatch_at_most(address, batch, now_ms);
        self.fill_slots(now_ms);
    }

    /// A batch failed for good (the invoker's retries are spent). The first
    /// failure of several messages looks for a poison message among them, one at
    /// a time; a message that fails alone is dead-lettered, and so is a whole
    /// batch that fails right after one did: then the function fails, not one of
    /// its messages, and waiting out its retries message by message would hold
    /// the address for hours.
    fn fail_batch(&mut self, address: &Address, reason: String, now_ms: i64) {
        let Some(record) = self.addresses.get_mut(address) else { return };
        let busy = record.busy_mut();
        busy.failed_in_a_row = busy.failed_in_a_row.saturating_add(1);
        let failed_in_a_row = busy.failed_in_a_row;
        if busy.in_flight > 1 && failed_in_a_row == 1 {
            tracing::info!(address = %address::display(address), messages = busy.in_flight, "batch failed, retrying its messages one by one: {reason}");
            busy.isolate = busy.in_flight;
            busy.in_flight = 0;
            busy.negotiation_rounds = 0;
            self.slot_freed(address);
            self.dispatch(address, now_ms);
            return;
        }
        // The poison (or the only message), or a batch after it: the rest go in batches again.
        busy.isolate = 0;
        let n = busy.in_flight as usize;
        busy.in_flight = 0;
        busy.negotiation_rounds = 0;
        let failed = record.take_messages(n);
        self.slot_freed(address);
        let failed = addressed(self.unqueued(address, failed, now_ms), address);
        self.mark_dirty(address);
        let reason = if n > 1 {
            format!("{reason} (failed batches of the address in a row: {failed_in_a_row})")
        } else {
            reason
        };
        self.dead_letter_messages(DeadLetterCause::InvocationFailed, address, reason, failed, now_ms);
        self.remove_if_empty(address);
        self.dispatch(address, now_ms);
        self.unpark_if_drained(address, now_ms);
    }

    fn apply_response(
        &mut self,
        address: &Address,
        response: InvocationResponse,
        now_ms: i64,
        start: &mut dyn FnMut(Vec<Effect>),
    ) -> Result<(), String> {
        let function_type = FunctionType::of(address);
        let specs = self.specs.of(address).map(|s| s.as_slice()).unwrap_or_default();
        for mutation in &response.state_mutations {
            if !specs.iter().any(|s| s.state_name == mutation.state_name) {
                return Err(format!(
                    "malformed reply: mutation of state `{}`, which {function_type} never declared",
                    mutation.state_name
                ));
            }
            if mutation.mutation_type == MutationType::Modify as i32 && mutation.state_value.is_none() {
                return Err(format!("malformed reply: MODIFY of state `{}` carries no value", mutation.state_name));
            }
        }
        for message in &response.outgoing_messages {
            check_target(message.target.as_ref(), "outgoing message")?;
        }
        for delayed in response.delayed_invocations.iter().filter(|d| !d.is_cancellation_request) {
            check_target(delayed.target.as_ref(), "delayed message")?;
        }

        let Some((record, names)) = self.addresses.get_mut_with_names(address) else { return Ok(()) };
        for mutation in response.state_mutations {
            if mutation.mutation_type == MutationType::Modify as i32 {
                record.set_state(names, &mutation.state_name, mutation.state_value, now_ms);
            } else {
                record.remove_state(&mutation.state_name);
            }
        }
        record.touch_states(now_ms);
        let busy = record.busy_mut();
        let n = busy.in_flight as usize;
        busy.in_flight = 0;
        busy.negotiation_rounds = 0;
        busy.isolate = busy.isolate.saturating_sub(n as u32);
        busy.failed_in_a_row = 0;
        // What the batch sends continues the longest chain among its messages.
        let done = record.take_messages(n);
        self.slot_freed(address);
        let done = self.unqueued(address, done, now_ms);
        let hops = done.iter().map(|m| m.hops).max().unwrap_or(0).saturating_add(1);
        self.mark_dirty(address);
        // The next batch sees this one's state and nothing of its outputs: a message
        // the address sends itself queues behind those already waiting either way.
        self.dispatch(address, now_ms);
        start(std::mem::take(&mut self.effects));
        self.unpark_if_drained(address, now_ms);

        for delayed in response.delayed_invocations {
            self.schedule(address, delayed, now_ms);
        }
        for egress in response.outgoing_egresses {
            self.egress(address, egress, now_ms);
        }
        for message in response.outgoing_messages {
            let id = self.next_id();
            let caller = Some(address.clone());
            let envelope =
                Envelope { target: message.target, caller, argument: message.argument, id, hops, ingress: None };
            self.deliver(envelope, now_ms);
        }
        self.remove_if_empty(address);
        Ok(())
    }
}

fn check_target(target: Option<&Address>, what: &str) -> Result<(), String> {
    match target {
        Some(t) if !t.namespace.is_empty() && !t.r#type.is_empty() => Ok(()),
        Some(t) => {
            Err(format!("malformed reply: {what} to an address without a function type ({})", address::display(t)))
        }
        None => Err(format!("malformed reply: {what} has no target")),
    }
}
