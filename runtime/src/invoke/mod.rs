//! Calling functions: which endpoint serves a function type, one attempt over
//! a transport ([`FunctionClient`]), and retries with backoff ([`retry`]).
//!
//! The invoker turns a batch request into a `FromFunction` or a final error
//! string after the retry budget; it knows nothing of mailboxes or state.

pub mod http;
pub mod lambda;
pub mod pkcs8;
pub mod pool;
pub mod retry;
pub mod sigv4;
pub mod tls;
pub mod turns;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use statefun_proto::reqreply::{Address, FromFunction, ToFunction, to_function};

use crate::address::{self, FunctionType};
use crate::config::{EndpointConfig, EndpointTarget, ModuleConfig};
use crate::log::BoxFuture;
use crate::observe::Observer;
use crate::observe::metrics::FunctionMetrics;
use retry::RetryPolicy;

/// Why one attempt failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("transport error: {0}")]
    Transport(String),
    /// No connection could be made: the endpoint is down or being replaced.
    #[error("endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("throttled: {0}")]
    Throttled(String),
    #[error("function error: {0}")]
    Function(String),
    #[error("malformed reply: {0}")]
    Malformed(String),
}

impl InvokeError {
    /// Whether trying again cannot help: a 4xx answer other than 408 (timeout)
    /// and 429 (throttling), as StateFun classifies them. A function refuses
    /// input it will never accept this way (the SDK's `Permanent` error, 422).
    pub fn is_permanent(&self) -> bool {
        matches!(self, InvokeError::Status { status, .. } if (400..500).contains(status) && !matches!(status, 408 | 429))
    }
}

/// One attempt to call a function over some transport.
pub trait FunctionClient: Send + Sync {
    /// Calls once; without an answer within `timeout` from when the request
    /// may go out (not while it waits its turn), the attempt is a
    /// [`InvokeError::Timeout`].
    fn call<'a>(
        &'a self,
        function_type: &'a FunctionType,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>>;
}

/// A function type's transport and limits.
#[derive(Clone)]
pub struct Route {
    pub client: Arc<dyn FunctionClient>,
    /// The endpoint's `maxNumBatchRequests`.
    pub max_batch: usize,
    /// What one request may carry (the endpoint's payload limit, or Lambda's).
    pub max_request_bytes: usize,
    /// The budget of a whole call, retries included (`transport.call`).
    pub call_budget: std::time::Duration,
    /// The function type's call metrics, when the invoker records them.
    pub metrics: Option<FunctionMetrics>,
}

/// Resolves function types to endpoints (once per type) and invokes with retries.
pub struct Invoker {
    module: Arc<ModuleConfig>,
    clients: Vec<Arc<dyn FunctionClient>>,
    routes: Mutex<HashMap<FunctionType, Option<Route>>>,
    retry: RetryPolicy,
    observer: Option<Arc<Observer>>,
}

#[derive(Debug, thiserror::Error)]
#[error("endpoint in document {document}: {detail}")]
pub struct EndpointError {
    pub document: usize,
    pub detail: String,
}

/// Wraps the client of each endpoint as it is built (tests wrap them with a fault plan).
pub type ClientLayer<'a> = &'a dyn Fn(Arc<dyn FunctionClient>, &EndpointConfig) -> Arc<dyn FunctionClient>;

impl Invoker {
    /// Builds one pooled client per endpoint of the module, each passed through
    /// `layer`; Lambda endpoints need a Lambda client (the AWS mode has one),
    /// signed HTTP endpoints the worker's AWS identity.
    pub fn new(
        module: Arc<ModuleConfig>,
        retry: RetryPolicy,
        lambda: Option<aws_sdk_lambda::Client>,
        identity: Option<&sigv4::AwsIdentity>,
        layer: ClientLayer<'_>,
    ) -> Result<Self, EndpointError> {
        let clients = module
            .endpoints
            .iter()
            .map(|e| Ok(layer(client_for(e, lambda.as_ref(), identity)?, e)))
            .collect::<Result<Vec<_>, EndpointError>>()?;
        Ok(Self { module, clients, routes: Mutex::new(HashMap::new()), retry, observer: None })
    }

    /// Records every call's outcome, attempts and batch size in `observer`'s metrics.
    pub fn with_observer(self, observer: Arc<Observer>) -> Self {
        Self { observer: Some(observer), ..self }
    }

    pub fn route(&self, function_type: &FunctionType) -> Option<Route> {
        let mut routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(known) = routes.get(function_type) {
            return known.clone();
        }
        routes
            .entry(function_type.clone())
            .or_insert_with(|| {
                let chosen = self.module.endpoint_for(function_type)?;
                let index = self.module.endpoints.iter().position(|e| std::ptr::eq(e, chosen))?;
                let endpoint = &self.module.endpoints[index];
                let max_bytes = match endpoint.target {
                    EndpointTarget::Http { .. } => endpoint.payload_max_bytes,
                    EndpointTarget::Lambda { .. } => lambda::max_request_bytes(endpoint.payload_max_bytes),
                };
                Some(Route {
                    client: self.clients[index].clone(),
                    max_batch: endpoint.max_batch,
                    max_request_bytes: max_bytes,
                    call_budget: endpoint.call_timeout,
                    metrics: self.observer.as_ref().map(|o| o.metrics.function(function_type)),
                })
            })
            .clone()
    }

    /// Invokes with retries; `Err` carries the reason after the budget is spent.
    ///
    /// The endpoint's call budget (`transport.call`) bounds the whole call,
    /// retries and waits included, as in StateFun; failed attempts are also
    /// bounded by the retry policy. An endpoint that cannot be reached at all
    /// (it is down, or being deployed) spends no attempts, only the budget, so
    /// an outage shorter than the budget dead-letters nothing.
    pub async fn invoke(&self, address: &Address, request: ToFunction) -> Result<FromFunction, String> {
        let function_type = FunctionType::of(address);
        let Some(route) = self.route(&function_type) else {
            return Err(format!("no endpoint serves function type {function_type}"));
        };
        let messages = match &request.request {
            Some(to_function::Request::Invocation(batch)) => batch.invocations.len(),
            None => 0,
        };
        let body = request.encode_to_vec();
        // Held encoded only: the request is as large as its body, and an attempt can take long.
        drop(request);
        let budget = route.call_budget;
        let metrics = route.metrics.as_ref();
        let started = std::time::Instant::now();
        let (mut attempt, mut unreachable) = (0, 0);
        loop {
            // The budget starts with the first attempt, which has it whole.
            let remaining = if attempt + unreachable == 0 { budget } else { budget.saturating_sub(started.elapsed()) };
            let attempt_started = std::time::Instant::now();
            let outcome = route.client.call(&function_type, body.clone(), remaining).await.and_then(|reply| {
                FromFunction::decode(reply.as_slice()).map_err(|e| {
                    InvokeError::Malformed(format!("not a FromFunction message ({} bytes): {e}", reply.len()))
                })
            });
            if let Some(metrics) = metrics {
                metrics.attempt(messages, attempt_started.elapsed().as_secs_f64());
            }
            let error = match outcome {
                Ok(reply) => {
                    metrics.inspect(|m| m.ok());
                    return Ok(reply);
                }
                Err(error) => error,
            };
            let failed = |reason: String| {
                metrics.inspect(|m| m.dead_lettered());
                Err(reason)
            };
            let target = address::display(address);
            if error.is_permanent() {
                return failed(format!(
                    "invoking {target} failed with an answer that trying again cannot change (not retried): {error}"
                ));
            }
            let delay = if matches!(error, InvokeError::Unreachable(_)) {
                unreachable += 1;
                self.retry.ceiling(unreachable, false)
            } else {
                attempt += 1;
                let Some(delay) = self.retry.backoff(attempt, matches!(error, InvokeError::Throttled(_))) else {
                    return failed(format!("invoking {target} failed after {attempt} attempts; last error: {error}"));
                };
                delay
            };
            if started.elapsed() + delay >= budget {
                return failed(if attempt == 0 {
                    format!(
                        "invoking {target}: the endpoint stayed unreachable for the call budget of {budget:?}; last \
                         error: {error}"
                    )
                } else {
                    format!(
                        "invoking {target}: the call budget of {budget:?} is spent after {attempt} failed attempts \
                         ({unreachable} unreachable); last error: {error}"
                    )
                });
            }
            tracing::debug!(address = %target, attempt, unreachable, "invocation failed, retrying: {error}");
            metrics.inspect(|m| m.retried());
            tokio::time::sleep(delay).await;
        }
    }
}

fn client_for(
    endpoint: &EndpointConfig,
    lambda: Option<&aws_sdk_lambda::Client>,
    identity: Option<&sigv4::AwsIdentity>,
) -> Result<Arc<dyn FunctionClient>, EndpointError> {
    match &endpoint.target {
        EndpointTarget::Http { .. } => Ok(Arc::new(
            http::HttpClient::new(endpoint, identity)
                .map_err(|detail| EndpointError { document: endpoint.document, detail })?,
        )),
        EndpointTarget::Lambda { function_name, qualifier } => match lambda {
            Some(client) => {
                Ok(Arc::new(lambda::LambdaClient::new(client.clone(), function_name.clone(), qualifier.clone())))
            }
            None => Err(EndpointError {
                document: endpoint.document,
                detail: format!(
                    "Lambda endpoint `{function_name}` needs the AWS mode (`statefun run --aws`); the local mode invokes HTTP endpoints only"
                ),
            }),
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use statefun_proto::reqreply::to_function::InvocationBatchRequest;

    use super::*;

    /// Answers every call with `status` and counts the calls.
    struct Answers {
        status: u16,
        calls: AtomicUsize,
    }

    impl FunctionClient for Answers {
        fn call<'a>(
            &'a self,
            _: &'a FunctionType,
            _: Vec<u8>,
            _: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            let status = self.status;
            Box::pin(async move { Err(InvokeError::Status { status, body: "refused".into() }) })
        }
    }

    /// Unreachable for its first `down` calls (all of them with `None`), then answers.
    struct Outage {
        down: Option<usize>,
        calls: AtomicUsize,
    }

    impl FunctionClient for Outage {
        fn call<'a>(
            &'a self,
            _: &'a FunctionType,
            _: Vec<u8>,
            _: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let up = self.down.is_some_and(|down| call >= down);
            Box::pin(async move {
                if up {
                    let reply = FromFunction { response: None };
                    Ok(reply.encode_to_vec())
                } else {
                    Err(InvokeError::Unreachable("connection refused".into()))
                }
            })
        }
    }

    /// Never answers: each attempt ends at the timeout it was given, which it records.
    struct Silent {
        timeouts: Mutex<Vec<Duration>>,
    }

    impl FunctionClient for Silent {
        fn call<'a>(
            &'a self,
            _: &'a FunctionType,
            _: Vec<u8>,
            timeout: Duration,
        ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
            self.timeouts.lock().unwrap_or_else(|e| e.into_inner()).push(timeout);
            Box::pin(async move {
                tokio::time::sleep(timeout).await;
                Err(InvokeError::Timeout(timeout))
            })
        }
    }

    /// Invokes once through `client`, with 4 attempts and a call budget of `call`.
    async fn invoke_through(client: Arc<dyn FunctionClient>, call: &str) -> Result<FromFunction, String> {
        let yaml = format!(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: t/*\n  urlPathTemplate: http://127.0.0.1:1/\n  transport:\n    call: {call}\n"
        );
        let module = Arc::new(ModuleConfig::parse(&yaml, "test").expect("valid module.yaml"));
        let retry = RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
        };
        let invoker = Invoker::new(module, retry, None, None, &|_, _| client.clone()).expect("invoker");
        let target = FunctionType::new("t", "f").address("a");
        let batch = InvocationBatchRequest { target: Some(target.clone()), ..Default::default() };
        let request = ToFunction { request: Some(statefun_proto::reqreply::to_function::Request::Invocation(batch)) };
        invoker.invoke(&target, request).await
    }

    /// How many calls one invocation makes when every answer is `status`, and its error.
    async fn calls_when_answered(status: u16) -> (usize, String) {
        let answers = Arc::new(Answers { status, calls: AtomicUsize::new(0) });
        let error = invoke_through(answers.clone(), "2m").await.expect_err("every answer fails");
        (answers.calls.load(Ordering::SeqCst), error)
    }

    #[tokio::test]
    async fn an_unreachable_endpoint_spends_no_attempts_while_the_call_budget_lasts() {
        let outage = Arc::new(Outage { down: Some(10), calls: AtomicUsize::new(0) });
        invoke_through(outage.clone(), "1m").await.expect("answered once the endpoint is back");
        assert_eq!(outage.calls.load(Ordering::SeqCst), 11, "10 refused connections, more than the 4 attempts");

        let outage = Arc::new(Outage { down: None, calls: AtomicUsize::new(0) });
        let error = invoke_through(outage.clone(), "50ms").await.expect_err("down for longer than the budget");
        assert!(error.contains("stayed unreachable for the call budget of 50ms"), "{error}");
        assert!(outage.calls.load(Ordering::SeqCst) >= 2, "retried within the budget");
    }

    #[tokio::test]
    async fn a_4xx_answer_fails_at_once_and_5xx_408_429_spend_the_retry_budget() {
        for status in [400, 404, 413, 422] {
            let (calls, error) = calls_when_answered(status).await;
            assert_eq!(calls, 1, "HTTP {status} is permanent");
            assert!(error.contains("not retried") && error.contains(&format!("HTTP {status}")), "{error}");
        }
        for status in [408, 429, 500, 503] {
            let (calls, error) = calls_when_answered(status).await;
            assert_eq!(calls, 4, "HTTP {status} is retried");
            assert!(error.contains("after 4 attempts"), "{error}");
        }
    }

    #[tokio::test]
    async fn the_call_budget_bounds_the_whole_call_even_with_attempts_left() {
        // Four attempts are allowed; the first one has the whole budget and is the last.
        let silent = Arc::new(Silent { timeouts: Mutex::new(Vec::new()) });
        let error = invoke_through(silent.clone(), "100ms").await.expect_err("never answered");
        assert!(error.contains("the call budget of 100ms is spent after 1 failed attempts"), "{error}");
        assert!(error.contains("no answer within 100ms"), "{error}");
        assert_eq!(*silent.timeouts.lock().unwrap_or_else(|e| e.into_inner()), [Duration::from_millis(100)]);
    }
}
