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
//!     trust_cacerts: /etc/statefun/ca.pem           # https: CAs to trust instead of the system's
//!     client_cert: /etc/statefun/client.pem         # https: mutual TLS, with client_key
//!     client_key: /etc/statefun/client.key
//! ```
//!
//! StateFun's async transport also reads `transport.timeouts.{call,connect}` (taking precedence
//! over `call`/`connect`, kept for migration from OkHttp); `timeouts.{read,write}` are accepted and
//! reported as unused. The TLS files keep StateFun's meaning: PEM files, `~/` for the home
//! directory; `classpath:` resources are Java's and refused. The scheme is case-insensitive.

use std::path::PathBuf;

use super::auth;
use super::endpoint::{
    self, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_HTTP_PAYLOAD_MAX_BYTES, DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TTL, EndpointAuth, EndpointConfig, EndpointTarget, FUNCTION_NAME_PLACEHOLDER, TlsFiles,
};
use super::walk::{Fault, Fields, Node, Walked, check_http_url};

/// The `kind` this file parses.
pub const KIND: &str = "io.statefun.endpoints.v2/http";

/// The one transport `type` accepted (and assumed when absent, as in StateFun 3.x).
pub const ASYNC_TRANSPORT: &str = "io.statefun.transports.v1/async";
/// StateFun's older transport type; its settings mean the same here, so it loads as the async one.
pub const OKHTTP_TRANSPORT: &str = "io.statefun.transports.v1/okhttp";

const SPEC_FIELDS: &[&str] = &["functions", "urlPathTemplate", "maxNumBatchRequests", "transport", auth::KEY];
const TRANSPORT_FIELDS: &[&str] = &[
    "type",
    "call",
    "connect",
    "pool_ttl",
    "pool_size",
    "payload_max_bytes",
    "timeouts",
    "trust_cacerts",
    "client_cert",
    "client_key",
    "client_key_password",
];
const TIMEOUTS_FIELDS: &[&str] = &["call", "connect"];
const TIMEOUTS_UNUSED: &[&str] = &["read", "write"];

/// Parses the `spec` of one HTTP endpoint document. Notes about accepted-but-unused fields go to `warnings`.
pub(crate) fn parse(spec: &Node<'_>, document: usize, warnings: &mut Vec<Fault>) -> Walked<EndpointConfig> {
    let fields = spec.fields(SPEC_FIELDS, &[])?;
    let functions = endpoint::functions(&fields.required("functions")?)?;
    let url_template = url_template(&fields.required("urlPathTemplate")?)?;
    let max_batch = endpoint::max_batch(fields.optional("maxNumBatchRequests"))?;
    let auth = match fields.optional(auth::KEY) {
        Some(node) => auth::parse(&node, &|name| std::env::var(name).ok())?,
        None => EndpointAuth::default(),
    };

    let mut config = EndpointConfig {
        functions,
        target: EndpointTarget::Http { url_template, tls: TlsFiles::default(), auth },
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
    let fields = node.fields(TRANSPORT_FIELDS, &[])?;
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
    if let EndpointTarget::Http { url_template, tls, .. } = &mut config.target {
        *tls = tls_files(&fields)?;
        if !tls.is_empty() && !is_https(url_template) {
            warnings.push(Fault::new(
                node.path(),
                "the TLS files are not used: the endpoint's urlPathTemplate is http://, not https://",
            ));
        }
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

/// Whether a URL (or template) is `https://`, in any case.
pub(crate) fn is_https(url: &str) -> bool {
    url.get(..8).is_some_and(|scheme| scheme.eq_ignore_ascii_case("https://"))
}

/// Reads StateFun's TLS keys of `transport`.
fn tls_files(fields: &Fields<'_>) -> Walked<TlsFiles> {
    let path = |name: &str| -> Walked<Option<PathBuf>> {
        let Some(node) = fields.optional(name) else { return Ok(None) };
        let text = node.non_empty_str()?;
        if text.starts_with("classpath:") {
            return Err(node.fault(format!("{text:?}: classpath: resources are Java's; give a file path")));
        }
        let home = std::env::var_os("HOME").map(PathBuf::from);
        Ok(Some(match (text.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest),
            _ => PathBuf::from(text),
        }))
    };
    let files = TlsFiles {
        trust_cacerts: path("trust_cacerts")?,
        client_cert: path("client_cert")?,
        client_key: path("client_key")?,
        client_key_password: match fields.optional("client_key_password") {
            Some(node) => Some(node.non_empty_str()?.to_owned()),
            None => None,
        },
    };
    let missing = match (&files.client_cert, &files.client_key, &files.client_key_password) {
        (Some(_), None, _) => Some(("client_cert", "client_key")),
        (None, Some(_), _) => Some(("client_key", "client_cert")),
        (None, None, Some(_)) => Some(("client_key_password", "client_key")),
        _ => None,
    };
    if let Some((given, needed)) = missing
        && let Some(node) = fields.optional(given)
    {
        return Err(node.fault(format!("mutual TLS needs both client_cert and client_key: {given} without {needed}")));
    }
    Ok(files)
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
    // The scheme in lower case: `HTTPS://` is https.
    Ok(match template.split_once("://") {
        Some((scheme, rest)) => format!("{}://{rest}", scheme.to_ascii_lowercase()),
        None => template.to_owned(),
    })
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
        assert!(
            warnings.contains("spec.transport: the TLS files are not used: the endpoint's urlPathTemplate is http://"),
            "{warnings}"
        );
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
        assert!(error.starts_with("module.yaml, document 1 (io.statefun.endpoints.v2/http): spec.urlPathTemplte: unknown field (did you mean `urlPathTemplate`?); allowed fields are: functions, maxNumBatchRequests, statefun-aws, transport, urlPathTemplate"), "{error}");
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

    #[test]
    fn tls_files_keep_statefun_meaning_and_the_scheme_is_case_insensitive() {
        let config = loads(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: HTTPS://fns.example.com/{function.name}\n  transport:\n    trust_cacerts: /etc/ca.pem\n    client_cert: ~/client.pem\n    client_key: keys/client.key\n    client_key_password: secret\n",
        );
        let endpoint = &config.endpoints[0];
        assert_eq!(
            endpoint.url_for(&FunctionType::new("shop", "cart")).as_deref(),
            Some("https://fns.example.com/cart")
        );
        let super::EndpointTarget::Http { tls, .. } = &endpoint.target else { panic!("an HTTP endpoint") };
        assert_eq!(tls.trust_cacerts.as_deref(), Some(std::path::Path::new("/etc/ca.pem")));
        let home = std::env::var("HOME").unwrap_or_default();
        assert_eq!(tls.client_cert, Some(std::path::Path::new(&home).join("client.pem")));
        assert_eq!(tls.client_key.as_deref(), Some(std::path::Path::new("keys/client.key")));
        assert!(!format!("{tls:?}").contains("secret"), "the password never shows");
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
    }

    #[test]
    fn a_client_cert_without_its_key_and_classpath_files_are_refused_naming_the_field() {
        let error = error_of(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: https://fns/\n  transport:\n    client_cert: /c.pem\n",
        );
        assert!(
            error.contains("spec.transport.client_cert: mutual TLS needs both client_cert and client_key"),
            "{error}"
        );
        let error = error_of(
            "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shop/*\n  urlPathTemplate: https://fns/\n  transport:\n    trust_cacerts: classpath:ca.pem\n",
        );
        assert!(
            error.contains("spec.transport.trust_cacerts: \"classpath:ca.pem\": classpath: resources are Java's"),
            "{error}"
        );
    }
}
