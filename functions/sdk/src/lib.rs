//! Write StateFun-compatible stateful functions in Rust.
//!
//! A function is a plain Rust closure `Fn(&mut Context, Message) ->
//! Result<(), BoxError>`, registered with [`Functions::with`] under a
//! [`FunctionType`] together with the states it declares ([`ValueSpec`]); one
//! that must await another service (DynamoDB, an HTTP API) is an async closure
//! `Fn(Context, Message) -> impl Future<Output = Result<Context, BoxError>>`,
//! registered with [`Functions::with_async`]. An error is retried by the
//! runtime; a [`Permanent`] one (input the function will never accept) is
//! dead-lettered at once.
//! The runtime (ours, or Apache Flink StateFun 3.x) keeps the state and sends
//! it with every batch of messages over StateFun's remote protocol v3; the
//! function answers with the state changes and the messages it sends. The
//! function holds nothing between calls.
//!
//! - [`Functions::handle`]: the request-reply handler, `ToFunction` bytes in,
//!   `FromFunction` bytes out (batch semantics and state negotiation).
//! - [`http::Server`]: serve the functions as a StateFun HTTP endpoint.
//! - [`lambda::run`]: serve them as an AWS Lambda, behind API Gateway, a
//!   Function URL, or the Invoke API.
//! - [`Type`]: how values are encoded; built-in StateFun types, JSON,
//!   protobuf and raw bytes ship with the SDK.
//! - [`testing`]: build requests and read responses in unit tests.
//!
//! ```no_run
//! use statefun_sdk::{Context, Functions, FunctionType, IntType, Message, ValueSpec};
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let seen = ValueSpec::new("seen", IntType);
//!     let functions = Functions::new().with(FunctionType::new("example", "greeter"), &[&seen], {
//!         let seen = seen.clone();
//!         move |ctx: &mut Context, _msg: Message| {
//!             let n = ctx.get(&seen)?.unwrap_or(0) + 1;
//!             ctx.set(&seen, &n)?;
//!             Ok(())
//!         }
//!     });
//!     let server = statefun_sdk::http::Server::bind("127.0.0.1:8000").await?;
//!     println!("listening on http://{}", server.local_addr());
//!     server.serve(functions).await?;
//!     Ok(())
//! }
//! ```
#![warn(missing_docs)]

mod address;
mod context;
mod egress;
mod error;
mod functions;
mod message;
mod spec;
mod storage;
pub mod types;

pub mod http;
pub mod lambda;
pub mod testing;

pub use address::{Address, FunctionType};
pub use context::Context;
pub use egress::{EgressIdentifier, EgressMessage, KinesisEgressRecord};
pub use error::{BoxError, Error, Permanent};
pub use functions::{AsyncHandler, Functions, Handler, HandlerFuture};
pub use message::Message;
pub use spec::{AnyValueSpec, Expiration, StateSpec, ValueSpec};
pub use types::{
    BoolType, DoubleType, FloatType, IntType, JsonType, LongType, ProtobufType, RawType, StringType, Type,
};

/// The generated protocol messages, for reading responses in tests and tools.
pub use statefun_proto as proto;

#[cfg(test)]
mod tests;

/// The README's example must compile.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExample;
