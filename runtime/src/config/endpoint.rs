//! What an endpoint document resolves to: which function types it serves ([`FunctionPattern`])
//! and how to reach them ([`EndpointTarget`]), whichever kind declared it.
//!
//! Both endpoint kinds (`io.statefun.endpoints.v2/http` in `http.rs`, our
//! `statefun-aws.endpoints.v1/lambda` in `lambda.rs`) produce the same [`EndpointConfig`], so
//! the invoker picks a transport from `target` and reads every limit from one place.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::address::FunctionType;

pub use super::auth::{EndpointAuth, Signing};
use super::walk::{Node, Walked, parse_function_type};

/// The placeholder in `urlPathTemplate` replaced by the function type's name.
pub const FUNCTION_NAME_PLACEHOLDER: &str = "{function.name}";

/// Default `maxNumBatchRequests`: messages per address sent in one invocation (StateFun's default).
pub const DEFAULT_MAX_BATCH: usize = 1000;
/// Default `transport.call`: budget for one whole call, retries included (StateFun async transport).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(120);
/// Default `transport.connect`: time allowed to open one TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default `transport.pool_ttl`: how long a pooled connection lives.
pub const DEFAULT_POOL_TTL: Duration = Duration::from_secs(15);
/// Default `transport.pool_size`: maximum pooled connections per endpoint.
pub const DEFAULT_POOL_SIZE: usize = 1024;
/// Default `transport.payload_max_bytes` for HTTP: 32 MiB, as StateFun.
pub const DEFAULT_HTTP_PAYLOAD_MAX_BYTES: usize = 32 * 1024 * 1024;
/// The Lambda synchronous Invoke payload limit (6 MB = 6,291,456 bytes), also the default there.
pub const LAMBDA_PAYLOAD_MAX_BYTES: usize = 6_291_456;

/// The function types an endpoint serves: `namespace/name` or `namespace/*`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum FunctionPattern {
    /// Exactly one function type (`namespace/name`).
    Exact(FunctionType),
    /// Every function type in a namespace (`namespace/*`).
    Namespace(String),
}

impl FunctionPattern {
    /// Parses `namespace/name` or `namespace/*`, splitting at the last `/` like StateFun typenames.
    pub fn parse(text: &str) -> Result<Self, String> {
        let syntax = || format!("{text:?} is not a function pattern; use namespace/name or namespace/*");
        let (namespace, name) = text.rsplit_once('/').ok_or_else(syntax)?;
        if namespace.is_empty() || name.is_empty() {
            return Err(syntax());
        }
        if namespace.contains('*') || (name.contains('*') && name != "*") {
            return Err(format!("{text:?}: `*` may only stand for the whole name, as in namespace/*"));
        }
        if name == "*" {
            return Ok(Self::Namespace(namespace.to_owned()));
        }
        parse_function_type(text).map(Self::Exact)
    }

    /// Whether `function_type` is served by an endpoint declared with this pattern.
    pub fn matches(&self, function_type: &FunctionType) -> bool {
        match self {
            Self::Exact(exact) => exact == function_type,
            Self::Namespace(namespace) => *namespace == function_type.namespace,
        }
    }

    /// Whether this names one function type rather than a namespace.
    pub fn is_exact(&self) -> bool {
        matches!(self, Self::Exact(_))
    }
}

impl fmt::Display for FunctionPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exact(function_type) => write!(f, "{function_type}"),
            Self::Namespace(namespace) => write!(f, "{namespace}/*"),
        }
    }
}

/// Where the functions of an endpoint run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EndpointTarget {
    /// A StateFun HTTP endpoint (`io.statefun.endpoints.v2/http`).
    Http {
        /// `urlPathTemplate` as written, possibly containing [`FUNCTION_NAME_PLACEHOLDER`];
        /// see [`EndpointConfig::url_for`].
        url_template: String,
        /// The TLS files of an `https://` endpoint.
        tls: TlsFiles,
        /// Extra headers and signing (`spec.statefun-aws`).
        auth: EndpointAuth,
    },
    /// A Lambda function called through the Invoke API (`statefun-aws.endpoints.v1/lambda`).
    Lambda {
        /// Function name, partial ARN (`account:function:name`) or full ARN, always without a
        /// qualifier (a `:qualifier` suffix in `functionName` is moved to `qualifier`).
        function_name: String,
        /// Version or alias to invoke; `None` invokes `$LATEST` (unqualified).
        qualifier: Option<String>,
    },
}

/// StateFun's TLS files of an HTTP endpoint (`spec.transport.trust_cacerts`,
/// `client_cert`, `client_key`, `client_key_password`), as paths; they are read
/// when the endpoint's client is built.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates of the CAs to trust instead of the system's.
    pub trust_cacerts: Option<PathBuf>,
    /// The PEM certificate chain presented to servers that ask for one (mutual TLS).
    pub client_cert: Option<PathBuf>,
    /// The PEM private key of `client_cert`.
    pub client_key: Option<PathBuf>,
    /// The password of an encrypted `client_key`.
    pub client_key_password: Option<String>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

impl fmt::Debug for TlsFiles {
    /// The password never shows.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsFiles")
            .field("trust_cacerts", &self.trust_cacerts)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("client_key_password", &self.client_key_password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// One endpoint document: which function types it serves, how to reach them, and the limits that apply.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointConfig {
    /// The function types this endpoint serves (`spec.functions`).
    pub functions: FunctionPattern,
    /// How to reach the functions.
    pub target: EndpointTarget,
    /// Most messages for one address sent in a single invocation (`spec.maxNumBatchRequests`, default 1000).
    pub max_batch: usize,
    /// Budget for one whole call including retries (`spec.transport.call`, default 2m).
    pub call_timeout: Duration,
    /// Time to open one connection (`spec.transport.connect`, default 20s). Lambda endpoints
    /// cannot set it and keep the default, applied to the AWS SDK's HTTP client.
    pub connect_timeout: Duration,
    /// Lifetime of a pooled connection (`spec.transport.pool_ttl`, default 15s; zero disables
    /// eviction). HTTP only; Lambda endpoints keep the default.
    pub pool_ttl: Duration,
    /// Most pooled connections (`spec.transport.pool_size`, default 1024). HTTP only; Lambda
    /// endpoints keep the default.
    pub pool_size: usize,
    /// Largest request or response body (`spec.transport.payload_max_bytes`; default 32 MiB
    /// for HTTP, 6 MB for Lambda, which is also Lambda's ceiling). Larger batches are split.
    pub payload_max_bytes: usize,
    /// The 1-based number of the YAML document that declared this endpoint, for messages.
    pub document: usize,
}

impl EndpointConfig {
    /// The URL to POST to for `function_type`: the template with [`FUNCTION_NAME_PLACEHOLDER`]
    /// replaced by the type's name. `None` for Lambda endpoints. The pattern is not re-checked:
    /// callers get the endpoint from [`super::ModuleConfig::endpoint_for`].
    pub fn url_for(&self, function_type: &FunctionType) -> Option<String> {
        match &self.target {
            EndpointTarget::Http { url_template, .. } => {
                Some(url_template.replace(FUNCTION_NAME_PLACEHOLDER, &function_type.name))
            }
            EndpointTarget::Lambda { .. } => None,
        }
    }
}

/// Reads `spec.functions`.
pub(crate) fn functions(node: &Node<'_>) -> Walked<FunctionPattern> {
    let text = node.non_empty_str()?;
    FunctionPattern::parse(text).map_err(|problem| node.fault(problem))
}

/// Reads `spec.maxNumBatchRequests` (default [`DEFAULT_MAX_BATCH`]).
pub(crate) fn max_batch(node: Option<Node<'_>>) -> Walked<usize> {
    node.map_or(Ok(DEFAULT_MAX_BATCH), |node| node.positive_usize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_exact_types_and_namespaces() {
        assert_eq!(
            FunctionPattern::parse("com.example/greeter"),
            Ok(FunctionPattern::Exact(FunctionType::new("com.example", "greeter")))
        );
        assert_eq!(FunctionPattern::parse("com.example/*"), Ok(FunctionPattern::Namespace("com.example".into())));
        assert_eq!(FunctionPattern::parse("a/b/*"), Ok(FunctionPattern::Namespace("a/b".into())));
        for bad in ["greeter", "/x", "x/", "com.*/x", "com/gr*"] {
            assert!(FunctionPattern::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn namespace_pattern_matches_only_its_namespace() {
        let pattern = FunctionPattern::Namespace("shop".into());
        assert!(pattern.matches(&FunctionType::new("shop", "cart")));
        assert!(!pattern.matches(&FunctionType::new("shop.more", "cart")));
        assert_eq!(pattern.to_string(), "shop/*");
    }
}
