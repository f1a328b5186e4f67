//! Helpers for testing functions without a runtime.
//!
//! [`TestRequest`] builds the `ToFunction` a runtime would send; feed it to
//! [`Functions::handle_request`](crate::Functions::handle_request) (or its bytes
//! to [`Functions::handle`](crate::Functions::handle)) and inspect the answer
//! with [`invocation_result`] and [`missing_values`].

use prost::Message as _;
use statefun_proto::reqreply::from_function::{InvocationResponse, PersistedValueSpec, Response};
use statefun_proto::reqreply::to_function::{Invocation, InvocationBatchRequest, PersistedValue, Request};
use statefun_proto::reqreply::{FromFunction, ToFunction, TypedValue};

use crate::address::Address;
use crate::error::Error;
use crate::message::encode;
use crate::spec::ValueSpec;
use crate::types::Type;

/// A `ToFunction` request under construction.
#[derive(Clone, Debug)]
pub struct TestRequest {
    batch: InvocationBatchRequest,
}

impl TestRequest {
    /// A batch for `target` with no state and no message.
    pub fn new(target: Address) -> Self {
        Self {
            batch: InvocationBatchRequest {
                target: Some(target.to_proto()),
                state: Vec::new(),
                invocations: Vec::new(),
            },
        }
    }

    /// Adds the state `spec` with `value` (`None`: registered but empty).
    pub fn with_state<T: 'static>(self, spec: &ValueSpec<T>, value: Option<&T>) -> Result<Self, Error> {
        let value = value.map(|v| encode(spec.value_type(), v)).transpose()?;
        Ok(self.with_state_value(spec.name(), value))
    }

    /// Adds a state with a raw value (`None`: registered but empty).
    pub fn with_state_value(mut self, name: &str, value: Option<TypedValue>) -> Self {
        self.batch.state.push(PersistedValue { state_name: name.to_owned(), state_value: value });
        self
    }

    /// Adds a message of type `ty` from `caller` (`None`: from an ingress).
    pub fn with_invocation<T: Type + ?Sized>(
        self,
        caller: Option<Address>,
        ty: &T,
        value: &T::Value,
    ) -> Result<Self, Error> {
        Ok(self.with_invocation_value(caller, encode(ty, value)?))
    }

    /// Adds a protobuf message from `caller` (`None`: from an ingress).
    pub fn with_proto_invocation<M: prost::Message + prost::Name>(self, caller: Option<Address>, value: &M) -> Self {
        self.with_invocation_value(
            caller,
            TypedValue { typename: M::type_url(), has_value: true, value: value.encode_to_vec() },
        )
    }

    /// Adds a message with a raw value.
    pub fn with_invocation_value(mut self, caller: Option<Address>, value: TypedValue) -> Self {
        self.batch.invocations.push(Invocation { caller: caller.map(|c| c.to_proto()), argument: Some(value) });
        self
    }

    /// The request.
    pub fn to_function(&self) -> ToFunction {
        ToFunction { request: Some(Request::Invocation(self.batch.clone())) }
    }

    /// The request's bytes, as a runtime would POST them.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_function().encode_to_vec()
    }
}

/// The `invocation_result` of a response, `None` if it is something else.
pub fn invocation_result(response: FromFunction) -> Option<InvocationResponse> {
    match response.response {
        Some(Response::InvocationResult(result)) => Some(result),
        _ => None,
    }
}

/// The missing specs of an `incomplete_invocation_context` response, `None`
/// if it is something else.
pub fn missing_values(response: FromFunction) -> Option<Vec<PersistedValueSpec>> {
    match response.response {
        Some(Response::IncompleteInvocationContext(context)) => Some(context.missing_values),
        _ => None,
    }
}
