//! The registry of functions and the request-reply handler.
//!
//! [`Functions`] maps function types to their declared states and handlers, and
//! turns one `ToFunction` into one `FromFunction` with StateFun's semantics:
//!
//! 1. **Negotiation.** If a declared state is missing from the request, answer
//!    `incomplete_invocation_context` with the missing specs and run no user code;
//!    the runtime registers them and re-sends the batch.
//! 2. **Batch.** Apply every invocation in order against one evolving
//!    [`Context`]; the first error (or panic) fails the whole batch, and nothing
//!    of it is answered, so the runtime retries it as a unit.
//! 3. **Net result.** Answer one `InvocationResponse`: the net state mutations,
//!    then every message, delayed message and egress record in the order sent.
//!
//! A function is synchronous ([`Functions::with`]) or asynchronous
//! ([`Functions::with_async`]: it may await other services); either way the
//! messages of a batch are applied strictly one after the other. The handler
//! maps bytes to bytes: the adapters in [`http`](crate::http) and
//! [`lambda`](crate::lambda) only move them.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;

use prost::Message as _;
use statefun_proto::reqreply::from_function::{IncompleteInvocationContext, Response};
use statefun_proto::reqreply::to_function::Request;
use statefun_proto::reqreply::{FromFunction, ToFunction};

use crate::address::{Address, FunctionType};
use crate::context::Context;
use crate::error::{BoxError, Error};
use crate::message::Message;
use crate::spec::{AnyValueSpec, StateSpec};
use crate::storage::Storage;

/// A function: called once per message of a batch, in order.
pub type Handler = dyn Fn(&mut Context, Message) -> Result<(), BoxError> + Send + Sync;

/// An asynchronous function: called once per message of a batch, in order,
/// each call awaited before the next; it owns the context while it runs and
/// hands it back, with its effects, when done.
pub type AsyncHandler = dyn Fn(Context, Message) -> HandlerFuture + Send + Sync;

/// What an [`AsyncHandler`] returns.
pub type HandlerFuture = Pin<Box<dyn Future<Output = Result<Context, BoxError>> + Send>>;

/// The functions an endpoint serves, by function type.
///
/// ```
/// use statefun_sdk::testing::TestRequest;
/// use statefun_sdk::{Context, Functions, FunctionType, IntType, Message, ValueSpec};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), statefun_sdk::Error> {
/// let seen = ValueSpec::new("seen", IntType);
/// let counter = FunctionType::new("example", "counter");
/// let functions = Functions::new().with(counter.clone(), &[&seen], {
///     let seen = seen.clone();
///     move |ctx: &mut Context, _msg: Message| {
///         let n = ctx.get(&seen)?.unwrap_or(0);
///         ctx.set(&seen, &(n + 1))?;
///         Ok(())
///     }
/// });
///
/// // What the runtime would POST: the state `seen` (no value yet) and one message.
/// let request = TestRequest::new(counter.address("c1"))
///     .with_state(&seen, None)?
///     .with_invocation(None, &IntType, &7)?;
/// let response_bytes = functions.handle(&request.to_bytes()).await?;
/// assert!(!response_bytes.is_empty());
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Default)]
pub struct Functions {
    registered: HashMap<FunctionType, Registration>,
}

#[derive(Clone)]
struct Registration {
    specs: Vec<StateSpec>,
    handler: Registered,
}

#[derive(Clone)]
enum Registered {
    Sync(Arc<Handler>),
    Async(Arc<AsyncHandler>),
}

impl Functions {
    /// No functions yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Serves `function_type` with `handler`, declaring the states `specs`.
    /// Registering a type again replaces it; a state name declared twice keeps
    /// its last declaration.
    pub fn with<F>(self, function_type: FunctionType, specs: &[&dyn AnyValueSpec], handler: F) -> Self
    where
        F: Fn(&mut Context, Message) -> Result<(), BoxError> + Send + Sync + 'static,
    {
        self.register(function_type, specs, Registered::Sync(Arc::new(handler)))
    }

    /// Serves `function_type` with an asynchronous `handler`, which may await
    /// other services: it takes the context and the message and returns the
    /// context. Messages of a batch still go one at a time, in order. As with
    /// [`Functions::with`], an error or a panic fails the whole batch.
    ///
    /// ```
    /// use statefun_sdk::{Context, Functions, FunctionType, IntType, Message, ValueSpec};
    ///
    /// let total = ValueSpec::new("total", IntType);
    /// let functions = Functions::new().with_async(FunctionType::new("example", "adder"), &[&total], {
    ///     let total = total.clone();
    ///     move |mut ctx: Context, message: Message| {
    ///         let total = total.clone();
    ///         async move {
    ///             let n = message.as_value(&IntType)?;
    ///             tokio::task::yield_now().await; // a call to another service, say
    ///             let sum = ctx.get(&total)?.unwrap_or(0) + n;
    ///             ctx.set(&total, &sum)?;
    ///             Ok(ctx)
    ///         }
    ///     }
    /// });
    /// # assert!(functions.specs(&FunctionType::new("example", "adder")).is_some());
    /// ```
    pub fn with_async<F, Fut>(self, function_type: FunctionType, specs: &[&dyn AnyValueSpec], handler: F) -> Self
    where
        F: Fn(Context, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Context, BoxError>> + Send + 'static,
    {
        let handler = move |ctx: Context, message: Message| -> HandlerFuture { Box::pin(handler(ctx, message)) };
        self.register(function_type, specs, Registered::Async(Arc::new(handler)))
    }

    fn register(mut self, function_type: FunctionType, specs: &[&dyn AnyValueSpec], handler: Registered) -> Self {
        let mut declared: Vec<StateSpec> = Vec::with_capacity(specs.len());
        for spec in specs.iter().map(|s| s.to_state_spec()) {
            declared.retain(|d| d.name() != spec.name());
            declared.push(spec);
        }
        self.registered.insert(function_type, Registration { specs: declared, handler });
        self
    }

    /// The function types served.
    pub fn function_types(&self) -> impl Iterator<Item = &FunctionType> {
        self.registered.keys()
    }

    /// The states declared for `function_type`, `None` if it is not served.
    pub fn specs(&self, function_type: &FunctionType) -> Option<&[StateSpec]> {
        self.registered.get(function_type).map(|r| r.specs.as_slice())
    }

    /// Handles one request: `ToFunction` bytes in, `FromFunction` bytes out.
    pub async fn handle(&self, request: &[u8]) -> Result<Vec<u8>, Error> {
        let request = ToFunction::decode(request).map_err(Error::DecodeRequest)?;
        Ok(self.handle_request(request).await?.encode_to_vec())
    }

    /// Handles one decoded request.
    pub async fn handle_request(&self, request: ToFunction) -> Result<FromFunction, Error> {
        let Some(Request::Invocation(batch)) = request.request else {
            return Err(Error::EmptyRequest);
        };
        let target = Address::from(batch.target.ok_or(Error::MissingTarget)?);
        let registration = self
            .registered
            .get(target.function_type())
            .ok_or_else(|| Error::UnknownFunctionType(target.function_type().clone()))?;

        let missing: Vec<_> = registration
            .specs
            .iter()
            .filter(|spec| !batch.state.iter().any(|v| v.state_name == spec.name()))
            .map(StateSpec::to_proto)
            .collect();
        if !missing.is_empty() {
            tracing::debug!(%target, missing = missing.len(), "incomplete invocation context");
            return Ok(FromFunction {
                response: Some(Response::IncompleteInvocationContext(IncompleteInvocationContext {
                    missing_values: missing,
                })),
            });
        }

        let storage = Storage::new(target.function_type().clone(), &registration.specs, &batch.state);
        let mut ctx = Context::new(target.clone(), storage);
        for (index, invocation) in batch.invocations.into_iter().enumerate() {
            let argument =
                invocation.argument.ok_or_else(|| Error::MissingArgument { target: target.clone(), index })?;
            ctx.set_caller(invocation.caller.map(Address::from));
            let message = Message::from_typed_value(target.clone(), argument);
            let typename = message.typename().to_owned();
            ctx = apply(&registration.handler, ctx, message).await.map_err(|source| Error::Function {
                address: target.clone(),
                index,
                typename,
                source,
            })?;
        }
        Ok(FromFunction { response: Some(Response::InvocationResult(ctx.into_response())) })
    }
}

/// Applies one message, turning a panic into an error so that one bad message
/// fails its batch instead of the endpoint.
async fn apply(handler: &Registered, mut ctx: Context, message: Message) -> Result<Context, BoxError> {
    match handler {
        Registered::Sync(handler) => match catch_unwind(AssertUnwindSafe(|| handler(&mut ctx, message))) {
            Ok(result) => result.map(|()| ctx),
            Err(panic) => Err(panicked(panic)),
        },
        Registered::Async(handler) => {
            let future = catch_unwind(AssertUnwindSafe(|| handler(ctx, message))).map_err(panicked)?;
            CatchPanic(future).await
        }
    }
}

/// A handler's future whose panics, at any poll, become its error.
struct CatchPanic(HandlerFuture);

impl Future for CatchPanic {
    type Output = Result<Context, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let future = self.0.as_mut();
        catch_unwind(AssertUnwindSafe(|| future.poll(cx))).unwrap_or_else(|panic| Poll::Ready(Err(panicked(panic))))
    }
}

fn panicked(panic: Box<dyn std::any::Any + Send>) -> BoxError {
    let reason = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic payload".to_owned());
    format!("panicked: {reason}").into()
}

impl fmt::Debug for Functions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut types: Vec<_> = self.registered.keys().map(ToString::to_string).collect();
        types.sort();
        f.debug_struct("Functions").field("types", &types).finish()
    }
}
