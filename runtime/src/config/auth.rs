//! The project's own keys of an HTTP endpoint, under `spec.statefun-aws`:
//! request headers (API keys) and AWS SigV4 signing (Lambda Function URLs
//! whose auth type is `AWS_IAM`). StateFun never reads this key, so a StateFun
//! module.yaml loads here unchanged and one of ours differs only in it.
//!
//! ```yaml
//! spec:
//!   urlPathTemplate: https://abc123.lambda-url.eu-west-1.on.aws/{function.name}
//!   statefun-aws:
//!     headers:
//!       x-api-key: { env: SHOP_API_KEY }   # read from the environment at start
//!       x-team: shop                       # or given as it is
//!     signing:
//!       type: aws-sigv4                    # the only kind
//!       service: lambda                    # the default
//!       region: eu-west-1                  # default: a Function URL's region, else the worker's
//! ```
//!
//! Header values may be secrets: they are read once, here, and never shown
//! (the `Debug` of [`EndpointAuth`] lists header names only).

use std::fmt;

use super::walk::{Node, Walked};

/// The key under `spec` this module reads.
pub const KEY: &str = "statefun-aws";

const FIELDS: &[&str] = &["headers", "signing"];
const SIGNING_FIELDS: &[&str] = &["type", "service", "region"];
const VALUE_FIELDS: &[&str] = &["env"];
/// The only signing type.
pub const SIGV4: &str = "aws-sigv4";
/// The service a Lambda Function URL is signed for.
pub const DEFAULT_SIGNING_SERVICE: &str = "lambda";

/// Headers the transport sets itself.
const RESERVED: &[&str] = &["host", "content-type", "content-length", "transfer-encoding", "connection"];
/// Headers the signature sets.
const SIGNED: &[&str] = &["authorization", "x-amz-date", "x-amz-security-token", "x-amz-content-sha256"];

/// Extra headers and signing of one HTTP endpoint.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct EndpointAuth {
    /// Sent with every request; the values are marked sensitive and never shown.
    pub headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub signing: Option<Signing>,
}

/// AWS SigV4 signing of every request with the worker's AWS credentials.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signing {
    pub service: String,
    /// `None`: the region of a Lambda Function URL's host, else the worker's.
    pub region: Option<String>,
}

impl fmt::Debug for EndpointAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(name, _)| name.as_str()).collect();
        f.debug_struct("EndpointAuth").field("headers", &names).field("signing", &self.signing).finish()
    }
}

/// Reads `spec.statefun-aws`; `env` looks up environment variables (the process's, at start).
pub(crate) fn parse(node: &Node<'_>, env: &dyn Fn(&str) -> Option<String>) -> Walked<EndpointAuth> {
    let fields = node.fields(FIELDS, &[])?;
    let signing = match fields.optional("signing") {
        Some(signing) => Some(parse_signing(&signing)?),
        None => None,
    };
    let mut headers = Vec::new();
    if let Some(node) = fields.optional("headers") {
        for (name, value) in node.entries()? {
            let Ok(header) = http::HeaderName::from_bytes(name.as_bytes()) else {
                return Err(value.fault("is not a valid HTTP header name"));
            };
            let lower = header.as_str();
            if RESERVED.contains(&lower) {
                return Err(value.fault("is set by the transport itself and cannot be given"));
            }
            if signing.is_some() && SIGNED.contains(&lower) {
                return Err(value.fault("is set by the SigV4 signature (`signing`) and cannot be given with it"));
            }
            let Ok(mut text) = http::HeaderValue::from_str(&header_value(&value, env)?) else {
                // The value may be a secret: the message does not repeat it.
                return Err(value.fault("the value is not valid in an HTTP header (control characters or non-ASCII)"));
            };
            text.set_sensitive(true);
            headers.push((header, text));
        }
    }
    Ok(EndpointAuth { headers, signing })
}

/// A header's value: a string as it is, or `{ env: NAME }`.
fn header_value(node: &Node<'_>, env: &dyn Fn(&str) -> Option<String>) -> Walked<String> {
    if node.value().is_mapping() {
        let fields = node.fields(VALUE_FIELDS, &[])?;
        let variable = fields.required("env")?;
        let name = variable.non_empty_str()?;
        return env(name).ok_or_else(|| variable.fault(format!("the environment variable {name} is not set")));
    }
    node.text()
}

fn parse_signing(node: &Node<'_>) -> Walked<Signing> {
    let fields = node.fields(SIGNING_FIELDS, &[])?;
    let kind = fields.required("type")?;
    if kind.non_empty_str()? != SIGV4 {
        return Err(kind.fault(format!("unknown signing type; the one there is is {SIGV4}")));
    }
    let service = match fields.optional("service") {
        Some(service) => service.non_empty_str()?.to_owned(),
        None => DEFAULT_SIGNING_SERVICE.to_owned(),
    };
    let region = match fields.optional("region") {
        Some(region) => Some(region.non_empty_str()?.to_owned()),
        None => None,
    };
    Ok(Signing { service, region })
}

/// The region in a Lambda Function URL's host (`<id>.lambda-url.<region>.on.aws`).
pub fn function_url_region(url: &str) -> Option<&str> {
    let host = url.split_once("://")?.1.split(['/', ':']).next()?;
    let (_, rest) = host.split_once(".lambda-url.")?;
    rest.strip_suffix(".on.aws").filter(|region| !region.is_empty() && !region.contains('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(yaml: &str) -> Result<EndpointAuth, String> {
        let value: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).expect("YAML");
        let env = |name: &str| (name == "SHOP_KEY").then(|| "s3cret-value".to_owned());
        parse(&Node::root(&value, "spec.statefun-aws"), &env).map_err(|f| format!("{}: {}", f.path, f.message))
    }

    #[test]
    fn headers_are_given_or_read_from_the_environment_and_never_shown() {
        let auth = parsed("headers:\n  X-Api-Key: { env: SHOP_KEY }\n  x-team: shop\n").expect("valid");
        let headers: Vec<(&str, &[u8])> = auth.headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes())).collect();
        assert_eq!(headers, [("x-api-key", &b"s3cret-value"[..]), ("x-team", b"shop")]);
        assert_eq!(auth.signing, None);
        let shown = format!("{auth:?}");
        assert!(shown.contains("x-api-key") && !shown.contains("s3cret"), "{shown}");
    }

    #[test]
    fn signing_has_defaults_and_one_type() {
        let auth = parsed("signing: { type: aws-sigv4 }").expect("valid");
        assert_eq!(auth.signing, Some(Signing { service: "lambda".into(), region: None }));
        let auth = parsed("signing: { type: aws-sigv4, service: execute-api, region: eu-west-1 }").expect("valid");
        assert_eq!(auth.signing, Some(Signing { service: "execute-api".into(), region: Some("eu-west-1".into()) }));
        let error = parsed("signing: { type: sigv2 }").expect_err("unknown type");
        assert_eq!(error, "spec.statefun-aws.signing.type: unknown signing type; the one there is is aws-sigv4");
    }

    #[test]
    fn bad_headers_are_refused_naming_the_header_and_never_the_value() {
        let error = parsed("headers:\n  x-api-key: { env: MISSING_KEY }\n").expect_err("unset");
        assert_eq!(error, "spec.statefun-aws.headers.x-api-key.env: the environment variable MISSING_KEY is not set");
        let error = parsed("headers:\n  Host: example.com\n").expect_err("reserved");
        assert_eq!(error, "spec.statefun-aws.headers.Host: is set by the transport itself and cannot be given");
        let error = parsed("headers:\n  authorization: Bearer x\nsigning: { type: aws-sigv4 }\n").expect_err("signed");
        assert!(error.starts_with("spec.statefun-aws.headers.authorization: is set by the SigV4 signature"), "{error}");
        assert!(parsed("headers:\n  authorization: Bearer x\n").is_ok(), "a bearer token without signing");
        let error = parsed("headers:\n  \"bad name\": x\n").expect_err("name");
        assert_eq!(error, "spec.statefun-aws.headers.bad name: is not a valid HTTP header name");
        let error = parsed("headers:\n  x-key: \"secret\\nvalue\"\n").expect_err("value");
        assert!(error.starts_with("spec.statefun-aws.headers.x-key: the value is not valid"), "{error}");
        assert!(!error.contains("secret"), "{error}");
        let error = parsed("header: {}").expect_err("unknown field");
        assert!(error.contains("unknown field"), "{error}");
    }

    #[test]
    fn the_region_of_a_function_url_is_read_from_its_host() {
        assert_eq!(function_url_region("https://abc123.lambda-url.eu-west-1.on.aws/cart"), Some("eu-west-1"));
        assert_eq!(function_url_region("HTTPS://abc.lambda-url.us-east-2.on.aws:443/x"), Some("us-east-2"));
        assert_eq!(function_url_region("https://fns.example.com/cart"), None);
        assert_eq!(function_url_region("https://x.lambda-url.on.aws/cart"), None);
    }
}
