//! The catalog the partitions see ([`Catalog`]), answered from the module
//! and the invoker's routes. It lives here, where the engine and the backends
//! meet, so the invoker knows nothing of the partition engine: the partition's
//! worker uses the invoker, and the dependency goes one way.

use std::sync::Arc;

use crate::address::FunctionType;
use crate::config::ModuleConfig;
use crate::invoke::Invoker;
use crate::partition::{BatchLimits, Catalog};

/// The catalog the partitions see: routes from the invoker, egress ids from the module.
pub struct ModuleCatalog {
    pub invoker: Arc<Invoker>,
    pub module: Arc<ModuleConfig>,
    /// The exchange and dead-letter streams.
    pub internal_streams: Vec<String>,
}

impl Catalog for ModuleCatalog {
    fn batch_limits(&self, function_type: &FunctionType) -> Option<BatchLimits> {
        self.invoker
            .route(function_type)
            .map(|r| BatchLimits { max_messages: r.max_batch, max_bytes: r.max_request_bytes })
    }

    fn has_egress(&self, namespace: &str, name: &str) -> bool {
        self.module.egress(namespace, name).is_some()
    }

    fn is_internal_stream(&self, stream: &str) -> bool {
        self.internal_streams.iter().any(|s| s == stream)
    }
}
