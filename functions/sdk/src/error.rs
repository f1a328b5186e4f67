//! The SDK's errors.
//!
//! [`Error`] covers everything the request-reply handler can fail on: a request
//! that does not decode, a function type this endpoint does not serve, state or
//! message bytes that do not match their declared type, and a user function that
//! returned an error. Every variant names what it is about (the state, the
//! function type, the typenames), because these messages end up in the runtime's
//! dead-letter entries and are the only clue a user has.
//!
//! User functions return [`BoxError`], so `?` works on both SDK errors and the
//! user's own errors (`Err("quantity must be positive".into())`). Such errors
//! are retryable: the endpoint answers 500 and the runtime tries again. An
//! error wrapped in [`Permanent`] says the input will never be accepted: the
//! endpoint answers 422 and the runtime dead-letters the message at once.

use crate::address::{Address, FunctionType};

/// Any error, as returned by user functions and [`Type`](crate::Type) codecs.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error of a function that trying again cannot fix: input the function
/// will never accept (a quantity out of range, a message it does not handle).
/// The endpoint answers it with `422 Unprocessable Content`, which the runtime
/// takes as permanent: the message is dead-lettered without further attempts.
/// Other errors, and panics, stay retryable.
///
/// ```
/// use statefun_sdk::{BoxError, Context, IntType, Message, Permanent};
///
/// fn handle(_ctx: &mut Context, message: Message) -> Result<(), BoxError> {
///     let quantity = message.as_value(&IntType)?;
///     if quantity <= 0 {
///         return Err(Permanent::new(format!("quantity must be positive, got {quantity}")).into());
///     }
///     Ok(())
/// }
/// ```
#[derive(Debug)]
pub struct Permanent(BoxError);

impl Permanent {
    /// Marks `error` as permanent.
    pub fn new(error: impl Into<BoxError>) -> Self {
        Self(error.into())
    }

    /// The error it marks.
    pub fn into_inner(self) -> BoxError {
        self.0
    }
}

impl std::fmt::Display for Permanent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Permanent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An error of the request-reply handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The request bytes are not a `ToFunction` message.
    #[error("cannot decode the ToFunction request: {0}")]
    DecodeRequest(#[source] prost::DecodeError),

    /// The request holds no `InvocationBatchRequest`.
    #[error("the ToFunction request holds no invocation batch")]
    EmptyRequest,

    /// The invocation batch has no target address.
    #[error("the invocation batch has no target address")]
    MissingTarget,

    /// The request is for a function type this endpoint does not serve.
    #[error("function type {0} is not registered with this endpoint")]
    UnknownFunctionType(FunctionType),

    /// An invocation of the batch carries no argument.
    #[error("invocation #{index} of the batch for {target} has no argument")]
    MissingArgument {
        /// The target of the batch.
        target: Address,
        /// The position of the invocation in the batch, from 0.
        index: usize,
    },

    /// A typename is not of the form `namespace/name`.
    #[error("invalid typename `{0}`: expected `namespace/name`")]
    InvalidTypename(String),

    /// A function used a state it did not declare at registration.
    #[error("state `{state}` is not declared for function type {function_type}")]
    UndeclaredState {
        /// The state name.
        state: String,
        /// The function type.
        function_type: FunctionType,
    },

    /// A function used a state with a type other than the one it declared.
    #[error("state `{state}` of {function_type}: declared with typename {declared}, used with typename {used}")]
    StateTypeMismatch {
        /// The state name.
        state: String,
        /// The function type.
        function_type: FunctionType,
        /// The typename given at registration.
        declared: String,
        /// The typename of the spec used in the call.
        used: String,
    },

    /// The stored value of a state has another typename than its spec.
    #[error("state `{state}` of {function_type}: expected typename {expected}, got {actual}")]
    StateTypename {
        /// The state name.
        state: String,
        /// The function type.
        function_type: FunctionType,
        /// The typename of the spec.
        expected: String,
        /// The typename of the stored value.
        actual: String,
    },

    /// The stored bytes of a state do not decode as its type.
    #[error("state `{state}` of {function_type}: cannot decode {typename}: {source}")]
    StateDecode {
        /// The state name.
        state: String,
        /// The function type.
        function_type: FunctionType,
        /// The typename of the state.
        typename: String,
        /// Why the codec failed.
        #[source]
        source: BoxError,
    },

    /// A value could not be encoded.
    #[error("cannot encode a value of {typename}: {source}")]
    Encode {
        /// The typename of the value.
        typename: String,
        /// Why the codec failed.
        #[source]
        source: BoxError,
    },

    /// A message was read as a type it does not have.
    #[error("message has typename {actual}, expected {expected}")]
    MessageTypename {
        /// The typename asked for.
        expected: String,
        /// The typename of the message.
        actual: String,
    },

    /// The bytes of a message do not decode as its type.
    #[error("cannot decode a message of typename {typename}: {source}")]
    MessageDecode {
        /// The typename of the message.
        typename: String,
        /// Why the codec failed.
        #[source]
        source: BoxError,
    },

    /// A user function returned an error; the whole batch fails.
    #[error("function {address} failed on message #{index} ({typename}): {source}")]
    Function {
        /// The address the batch was for.
        address: Address,
        /// The position of the failing message in the batch, from 0.
        index: usize,
        /// The typename of the failing message.
        typename: String,
        /// The function's error.
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// Whether the error is a function's [`Permanent`] one, which retrying cannot fix.
    pub fn is_permanent(&self) -> bool {
        matches!(self, Error::Function { source, .. } if source.downcast_ref::<Permanent>().is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_stays_small_enough_to_return_by_value() {
        assert!(std::mem::size_of::<Error>() <= 112, "{}", std::mem::size_of::<Error>());
    }
}
