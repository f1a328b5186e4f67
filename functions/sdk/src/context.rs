//! What a function sees and does while it handles a message.
//!
//! One [`Context`] lives for a whole batch: its storage evolves as each
//! message is applied, and the messages, delayed messages and egress records
//! it collects become the batch's single `InvocationResponse`. Nothing is sent
//! until the whole batch succeeded.

use std::time::Duration;

use statefun_proto::reqreply::from_function::{DelayedInvocation, Invocation, InvocationResponse};

use crate::address::Address;
use crate::egress::EgressMessage;
use crate::error::Error;
use crate::message::Message;
use crate::spec::ValueSpec;
use crate::storage::Storage;

/// The function's view of its address, its state and its outputs.
///
/// ```
/// use statefun_sdk::{BoxError, Context, IntType, Message, ValueSpec};
///
/// fn count(ctx: &mut Context, _msg: Message, seen: &ValueSpec<i32>) -> Result<(), BoxError> {
///     let n = ctx.get(seen)?.unwrap_or(0) + 1;
///     ctx.set(seen, &n)?;
///     if let Some(caller) = ctx.caller().cloned() {
///         ctx.send(Message::new(caller, &IntType, &n)?);
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Context {
    self_address: Address,
    caller: Option<Address>,
    storage: Storage,
    outgoing: Vec<Invocation>,
    delayed: Vec<DelayedInvocation>,
    egress: Vec<EgressMessage>,
}

impl Context {
    pub(crate) fn new(self_address: Address, storage: Storage) -> Self {
        Self { self_address, caller: None, storage, outgoing: Vec::new(), delayed: Vec::new(), egress: Vec::new() }
    }

    pub(crate) fn set_caller(&mut self, caller: Option<Address>) {
        self.caller = caller;
    }

    /// The address of this function instance.
    pub fn self_address(&self) -> &Address {
        &self.self_address
    }

    /// The function that sent the current message; `None` for ingress messages.
    pub fn caller(&self) -> Option<&Address> {
        self.caller.as_ref()
    }

    /// The current value of a state, `None` if it has none. An error if the
    /// state was not declared, or its stored bytes are not of its type.
    pub fn get<T: 'static>(&self, spec: &ValueSpec<T>) -> Result<Option<T>, Error> {
        self.storage.get(spec)
    }

    /// Sets the value of a state.
    pub fn set<T: 'static>(&mut self, spec: &ValueSpec<T>, value: &T) -> Result<(), Error> {
        self.storage.set(spec, value)
    }

    /// Removes the value of a state.
    pub fn remove<T>(&mut self, spec: &ValueSpec<T>) -> Result<(), Error> {
        self.storage.remove(spec)
    }

    /// Sends a message to another function (or to this one).
    pub fn send(&mut self, message: Message) {
        let (target, argument) = message.into_parts();
        self.outgoing.push(Invocation { target: Some(target.to_proto()), argument: Some(argument) });
    }

    /// Sends a message after `delay`.
    pub fn send_after(&mut self, delay: Duration, message: Message) {
        self.push_delayed(delay, String::new(), message);
    }

    /// Sends a message after `delay`, cancellable with
    /// [`cancel_delayed_message`](Self::cancel_delayed_message) and `token`.
    pub fn send_after_with_token(&mut self, delay: Duration, token: impl Into<String>, message: Message) {
        self.push_delayed(delay, token.into(), message);
    }

    /// Cancels the delayed message sent with `token`, if it was not delivered yet.
    pub fn cancel_delayed_message(&mut self, token: impl Into<String>) {
        self.delayed.push(DelayedInvocation {
            is_cancellation_request: true,
            cancellation_token: token.into(),
            delay_in_ms: 0,
            target: None,
            argument: None,
        });
    }

    /// Sends a record to an egress.
    pub fn send_egress(&mut self, message: EgressMessage) {
        self.egress.push(message);
    }

    fn push_delayed(&mut self, delay: Duration, token: String, message: Message) {
        let (target, argument) = message.into_parts();
        self.delayed.push(DelayedInvocation {
            is_cancellation_request: false,
            cancellation_token: token,
            delay_in_ms: i64::try_from(delay.as_millis()).unwrap_or(i64::MAX),
            target: Some(target.to_proto()),
            argument: Some(argument),
        });
    }

    /// The net effect of the batch.
    pub(crate) fn into_response(self) -> InvocationResponse {
        InvocationResponse {
            state_mutations: self.storage.into_mutations(),
            outgoing_messages: self.outgoing,
            delayed_invocations: self.delayed,
            outgoing_egresses: self.egress.into_iter().map(EgressMessage::into_proto).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::FunctionType;
    use crate::types::StringType;

    fn context() -> Context {
        let ft = FunctionType::new("t", "f");
        Context::new(ft.address("me"), Storage::new(ft, &[], &[]))
    }

    #[test]
    fn send_after_with_token_sets_delay_token_target_and_argument() -> Result<(), Error> {
        let mut ctx = context();
        let to = FunctionType::new("t", "g").address("x");
        let msg = Message::new(to.clone(), &StringType, &"hi".to_owned())?;
        ctx.send_after_with_token(Duration::from_millis(2500), "tok-1", msg.clone());
        let delayed = ctx.into_response().delayed_invocations;
        assert_eq!(
            delayed,
            vec![DelayedInvocation {
                is_cancellation_request: false,
                cancellation_token: "tok-1".into(),
                delay_in_ms: 2500,
                target: Some(to.to_proto()),
                argument: Some(msg.typed_value().clone()),
            }]
        );
        Ok(())
    }

    #[test]
    fn send_after_without_token_leaves_the_token_empty() -> Result<(), Error> {
        let mut ctx = context();
        let to = FunctionType::new("t", "g").address("x");
        ctx.send_after(Duration::from_secs(1), Message::new(to, &StringType, &"a".into())?);
        let delayed = ctx.into_response().delayed_invocations;
        assert_eq!(delayed.len(), 1);
        assert_eq!(delayed[0].delay_in_ms, 1000);
        assert_eq!(delayed[0].cancellation_token, "");
        assert!(!delayed[0].is_cancellation_request);
        Ok(())
    }

    #[test]
    fn cancellation_carries_only_the_token() {
        let mut ctx = context();
        ctx.cancel_delayed_message("tok-1");
        let delayed = ctx.into_response().delayed_invocations;
        assert_eq!(
            delayed,
            vec![DelayedInvocation {
                is_cancellation_request: true,
                cancellation_token: "tok-1".into(),
                delay_in_ms: 0,
                target: None,
                argument: None,
            }]
        );
    }

    #[test]
    fn sends_keep_their_order() -> Result<(), Error> {
        let mut ctx = context();
        let to = FunctionType::new("t", "g").address("x");
        for s in ["a", "b", "c"] {
            ctx.send(Message::new(to.clone(), &StringType, &s.to_owned())?);
        }
        let out = ctx.into_response().outgoing_messages;
        let values: Vec<_> = out.iter().filter_map(|i| i.argument.as_ref()).map(|a| a.value.clone()).collect();
        assert_eq!(values, vec![b"\x0a\x01a".to_vec(), b"\x0a\x01b".to_vec(), b"\x0a\x01c".to_vec()]);
        Ok(())
    }
}
