//! The StateFun HTTP endpoint kind, `io.statefun.endpoints.v2/http`.
//!
//! ```yaml
//! kind: io.statefun.endpoints.v2/http
//! spec:
//!   functions: com.example/*                       # or com.example/greeter
//!   urlPathTemplate: https://fns.example.com/{function.name}
//!   maxNumBatchRequests: 1000
//!   transport:
//!     type: io.statefun.transports.v1/async         # the only transport type there is here
//!     call: 2m
//!     connect: 20s
//!     pool_ttl: 15s
//!     pool_size: 1024
//!     payload_max_bytes: 33554432
//! ```
//!
//! StateFun's async transport also reads `transport.timeouts.{call,connect}` (taking precedence
//! over `call`/`connect`, kept for migration from OkHttp) and mTLS files; timeouts are honoured,
//! while `timeouts.{read,write}` and the TLS fields are accepted and reported as unused.

use super::endpoint::{
    self, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HTTP_PAYLOAD_MAX_BYTES, DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TTL, EndpointConfig, EndpointTarget, FUNCTION_NAME_PLACEHOLDER,
};
use super::walk::{Fault, Node, Walked, check_http_url};

/// The `kind` this file parses.
pub const KIND: &str = "io.statefun.endpoints.v2/http";

/// The one transport `type` accepted (and assumed when absent, as in StateFun 3.x).
pub const ASYNC_TRANSPORT: &str = "io.statefun.transports.v1/async";
/// StateFun's older transport type; its settings mean the same here, so it loads as the async one.
pub const OKHTTP_TRANSPORT: &str = "io.statefun.transports.v1/okhttp";

const SPEC_FIELDS: &[&str] = &["functions", "urlPathTemplate", "maxNumBatchRequests", "transport"];
const TRANSPORT_FIELDS: &[&str] =
    &["type", "call", "connect", "pool_ttl", "pool_size", "payload_max_bytes", "timeouts"];
const TRANSPORT_UNUSED: &[&str] = &["trust_cacerts", "client_cert", "client_key", "client_key_password"];
const TIMEOUTS_FIELDS: &[&str] = &["call", "connect"];
const TIMEOUTS_UNUSED: &[&str] = &["read", "write"];

/// Parses the `spec` of one HTTP endpoint document. Notes about accepted-but-unused fields go to `warnings`.
pub(crate) fn parse(spec: &Node<'_>, document: usize, warnings: &mut Vec<Fault>) -> Walked<EndpointConfig> {
    let fields = spec.fields(SPEC_FIELDS, &[])?;
    let functions = endpoint::functions(&fields.required("functions")?)?;
    let url_template = url_template(&fields.required("urlPathTemplate")?)?;
    let max_batch = endpoint::max_batch(fields.optional("maxNumBatchRequests"))?;

    let mut config = EndpointConfig {
        functions,
        target: EndpointTarget::Http { url_template },
        max_batch,
        call_timeout: DEFAULT_CALL_TIMEOUT,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        pool_ttl: DEFAULT_POOL_TTL,
        pool_size: DEFAULT_POOL_SIZE,
        payload_max_bytes: DEFAULT_HTTP_PAYLOAD_MAX_BYTES,
        document,
    };
    if let Some(transport) = fields.optional("transport") {
        apply_transport(&transport, &mut config, warnings)?;
    }
    Ok(config)
}

fn apply_transport(node: &Node<'_>, config: &mut EndpointConfig, warnings: &mut Vec<Fault>) -> Walked<()> {
    let fields = node.fields(TRANSPORT_FIELDS, TRANSPORT_UNUSED)?;
    if let Some(kind) = fields.optional("type") {
        let kind_text = kind.non_empty_str()?;
        if kind_text != ASYNC_TRANSPORT && kind_text != OKHTTP_TRANSPORT {
            return Err(kind.fault(format!(
                "unsupported transport {kind_text:?}; this runtime has one HTTP transport, \
                 {ASYNC_TRANSPORT} (remove `type` or set it to that; `timeouts` carry over)"
            )));
        }
    }
    if let Some(call) = fields.optional("call") {
        config.call_timeout = call.nonzero_duration()?;
    }
    if let Some(connect) = fields.optional("connect") {
        config.connect_timeout = connect.nonzero_duration()?;
    }
    if let Some(ttl) = fields.optional("pool_ttl") {
        config.pool_ttl = ttl.duration()?;
    }
    if let Some(size) = fields.optional("pool_size") {
        config.pool_size = size.positive_usize()?;
    }
    if let Some(max) = fields.optional("payload_max_bytes") {
        config.payload_max_bytes = max.positive_usize()?;
    }
    for path in fields.unused_present() {
        warnings.push(Fault::new(
            path,
            "accepted for StateFun compatibility but not used by this runtime (TLS uses the system's trust roots)",
        ));
    }
    if let Some(timeouts) = fields.optional("timeouts") {
        let timeout_fields = timeouts.fields(TIMEOUTS_FIELDS, TIMEOUTS_UNUSED)?;
        // StateFun's async transport lets `timeouts.*` win over the flat fields.
        for (name, slot) in [("call", &mut config.call_timeout), ("connect", &mut config.connect_timeout)] {
            if let Some(value) = timeout_fields.optional(name) {
                *slot = value.nonzero_duration()?;
                if fields.optional(name).is_some() {
                    warnings.push(Fault::new(
                        format!("{}.{name}", node.path()),
                        format!("overridden by {}, as in StateFun", value.path()),
                    ));
                }
            }
        }
        for path in timeout_fields.unused_present() {
            warnings.push(Fault::new(
                path,
                "accepted for StateFun compatibility but not used; `call` bounds the whole call",
            ));
        }
    }
    Ok(())
}

/// Checks `urlPathTemplate`: only the `{function.name}` placeholder, and an http(s) URL once filled in.
fn url_template(node: &Node<'_>) -> Walked<String> {
    let template = node.non_empty_str()?;
    let filled = template.replace(FUNCTION_NAME_PLACEHOLDER, "name");
    if let Some(start) = filled.find(['{', '}']) {
        let rest = &filled[start..];
        let placeholder = rest.find('}').map_or(rest, |end| &rest[..=end]);
        return Err(node.fault(format!(
            "{template:?} contains {placeholder:?}; the only placeholder is {FUNCTION_NAME_PLACEHOLDER}"
        )));
    }
    check_http_url(&filled).map_err(|_| node.fault(format!("{template:?} is not an http:// or https:// URL")))?;
    Ok(template.to_owned())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{error_of, loads};
    use crate::address::FunctionType;
    use std::time::Duration;

    #[test]
    fn http_endpoint_without_transport_gets_statefun_defaults() {
        let config = loads(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: http://fns:8000/{function.name}\n",
        );
        let endpoint = &config.endpoints[0];
        assert_eq!(endpoint.max_batch, 1000);
        assert_eq!(endpoint.call_timeout, Duration::from_secs(120));
        assert_eq!(endpoint.connect_timeout, Duration::from_secs(20));
        assert_eq!(endpoint.pool_ttl, Duration::from_secs(15));
        assert_eq!(endpoint.pool_size, 1024);
        assert_eq!(endpoint.payload_max_bytes, 33_554_432);
        assert_eq!(endpoint.document, 1);
        assert!(config.warnings.is_empty());
    }

    #[test]
    fn url_for_substitutes_the_function_name() {
        let config = loads(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: https://fns.example.com/v1/{function.name}?x={function.name}\n",
        );
        let cart = FunctionType::new("shop", "cart");
        assert_eq!(config.endpoints[0].url_for(&cart).as_deref(), Some("https://fns.example.com/v1/cart?x=cart"));
    }

    #[test]
    fn statefun_timeouts_block_wins_and_read_write_are_reported_unused() {
        let config = loads(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/cart\n  urlPathTemplate: http://fns/\n  transport:\n    call: 2m\n    timeouts:\n      call: 1 min\n      connect: 10 sec\n      read: 10 sec\n      write: 10 sec\n    trust_cacerts: ~/cas.pem\n",
        );
        let endpoint = &config.endpoints[0];
        assert_eq!(endpoint.call_timeout, Duration::from_secs(60));
        assert_eq!(endpoint.connect_timeout, Duration::from_secs(10));
        let warnings: Vec<String> = config.warnings.iter().map(ToString::to_string).collect();
        let warnings = warnings.join("\n");
        assert!(
            warnings.contains("document 1 (io.statefun.endpoints.v2/http): spec.transport.timeouts.read: accepted"),
            "{warnings}"
        );
        assert!(warnings.contains("spec.transport.timeouts.write"), "{warnings}");
        assert!(warnings.contains("spec.transport.trust_cacerts"), "{warnings}");
        assert!(warnings.contains("spec.transport.call: overridden by spec.transport.timeouts.call"), "{warnings}");
    }

    #[test]
    fn non_http_url_is_rejected_with_its_path() {
        let error =
            error_of("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: ftp://x\n");
        assert_eq!(
            error,
            "module.yaml, document 1 (io.statefun.endpoints.v2/http): spec.urlPathTemplate: \"ftp://x\" is not an http:// or https:// URL"
        );
    }

    #[test]
    fn unknown_placeholder_in_url_template_is_rejected() {
        let error = error_of(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: http://x/{function.namespace}\n",
        );
        assert!(error.contains("spec.urlPathTemplate: ") && error.contains("{function.namespace}"), "{error}");
    }

    #[test]
    fn misspelt_spec_field_names_the_allowed_ones() {
        let error =
            error_of("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplte: http://x/\n");
        assert!(error.starts_with("module.yaml, document 1 (io.statefun.endpoints.v2/http): spec.urlPathTemplte: unknown field (did you mean `urlPathTemplate`?); allowed fields are: functions, maxNumBatchRequests, transport, urlPathTemplate"), "{error}");
    }

    #[test]
    fn missing_url_template_is_reported() {
        let error = error_of("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n");
        assert!(
            error.ends_with("document 1 (io.statefun.endpoints.v2/http): spec.urlPathTemplate: missing required field"),
            "{error}"
        );
    }

    #[test]
    fn bad_durations_and_transport_types_are_reported() {
        let base = "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: http://x/\n  transport:\n";
        let error = error_of(&format!("{base}    call: soon\n"));
        assert!(
            error.contains("(io.statefun.endpoints.v2/http): spec.transport.call: \"soon\" is not a duration"),
            "{error}"
        );
        let error = error_of(&format!("{base}    connect: 0s\n"));
        assert!(error.contains("spec.transport.connect: must be greater than zero"), "{error}");
        let error = error_of(&format!("{base}    type: io.statefun.transports.v1/grpc\n"));
        assert!(error.contains("spec.transport.type: unsupported transport"), "{error}");
        let error = error_of(&format!("{base}    pool_size: -3\n"));
        assert!(error.contains("spec.transport.pool_size: must be at least 1, found -3"), "{error}");
    }

    #[test]
    fn wrong_types_say_what_was_found() {
        let base = "kind: io.statefun.endpoints.v2/http\nspec:\n  urlPathTemplate: http://x/\n";
        let error = error_of(&format!("{base}  functions: [shop/cart]\n"));
        assert!(error.ends_with("spec.functions: expected a string, found a list"), "{error}");
        let error = error_of(&format!("{base}  functions: shop/*\n  maxNumBatchRequests: many\n"));
        assert!(
            error.ends_with("spec.maxNumBatchRequests: expected a positive integer, found a string (\"many\")"),
            "{error}"
        );
        let error = error_of(&format!("{base}  functions: shop/*\n  maxNumBatchRequests: 1.5\n"));
        assert!(error.ends_with("spec.maxNumBatchRequests: expected a positive integer, found 1.5"), "{error}");
        let error = error_of(&format!("{base}  functions: shop/*\n  transport: fast\n"));
        assert!(error.ends_with("spec.transport: expected a mapping, found a string (\"fast\")"), "{error}");
    }

    #[test]
    fn bad_function_patterns_are_reported() {
        let error =
            error_of("kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop\n  urlPathTemplate: http://x/\n");
        assert!(
            error.contains("spec.functions: \"shop\" is not a function pattern; use namespace/name or namespace/*"),
            "{error}"
        );
        let error = error_of(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: sh*/cart\n  urlPathTemplate: http://x/\n",
        );
        assert!(error.contains("spec.functions: \"sh*/cart\": `*` may only stand for the whole name"), "{error}");
    }
}
