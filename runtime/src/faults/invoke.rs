//! The fault wrapper of function endpoints: invocations of chosen addresses
//! fail as function errors or time out, so their batches spend the retry
//! budget and are dead-lettered while other addresses carry on.
//!
//! It wraps a [`FunctionClient`] (HTTP or Lambda alike) and reads the target
//! address from the `ToFunction` request; the wrapped transport is called only
//! when no rule fires.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use statefun_proto::reqreply::{Address, ToFunction, to_function};

use super::{FaultPlan, InvokeFault};
use crate::BoxFuture;
use crate::address::{self, FunctionType};
use crate::invoke::{FunctionClient, InvokeError};

/// `inner` with the invoke rules of `plan` applied; `inner` itself without a plan or rules.
pub fn wrap(inner: Arc<dyn FunctionClient>, plan: Option<&Arc<FaultPlan>>) -> Arc<dyn FunctionClient> {
    match plan {
        Some(plan) if plan.has_invoke_faults() => {
            Arc::new(FaultyFunctionClient { inner, plan: plan.clone(), calls: Mutex::new(HashMap::new()) })
        }
        _ => inner,
    }
}

pub struct FaultyFunctionClient {
    inner: Arc<dyn FunctionClient>,
    plan: Arc<FaultPlan>,
    /// Calls so far per address: the `n` of the plan's decisions.
    calls: Mutex<HashMap<String, u64>>,
}

impl FaultyFunctionClient {
    fn next_call(&self, address: &str) -> u64 {
        let mut calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        let counter = calls.entry(address.to_owned()).or_insert(0);
        *counter += 1;
        *counter - 1
    }
}

/// The address a request invokes, if it is a well-formed invocation batch.
fn target(request: &[u8]) -> Option<Address> {
    match ToFunction::decode(request).ok()?.request? {
        to_function::Request::Invocation(batch) => batch.target,
    }
}

impl FunctionClient for FaultyFunctionClient {
    fn call<'a>(
        &'a self,
        function_type: &'a FunctionType,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        Box::pin(async move {
            if let Some(address) = target(&request) {
                let shown = address::display(&address);
                let n = self.next_call(&shown);
                if let Some((fault, rule)) = self.plan.invoke_fault(&address, n) {
                    tracing::info!(address = %shown, call = n, "injected fault: invocation {} (`{rule}`)", fault.name());
                    match fault {
                        InvokeFault::Error => {
                            return Err(InvokeError::Function(format!(
                                "{shown}: injected by STATEFUN_FAULTS (`{rule}`)"
                            )));
                        }
                        InvokeFault::Timeout => {
                            // The caller waits the attempt's whole timeout, as for a function that never answers.
                            tokio::time::sleep(timeout).await;
                            return Err(InvokeError::Timeout(timeout));
                        }
                    }
                }
            }
            self.inner.call(function_type, request, timeout).await
        })
    }
}
