//! Our Lambda endpoint kind, `statefun-aws.endpoints.v1/lambda` (not a StateFun kind, hence
//! the project's own namespace).
//!
//! ```yaml
//! kind: statefun-aws.endpoints.v1/lambda
//! spec:
//!   functions: shop/*                         # or shop/cart
//!   functionName: arn:aws:lambda:eu-west-1:123456789012:function:shop-fns:live
//!   qualifier: live                           # optional; must agree with a qualifier in functionName
//!   maxNumBatchRequests: 1000
//!   transport:
//!     call: 2m
//!     payload_max_bytes: 6291456              # at most the synchronous Invoke limit
//! ```
//!
//! `functionName` takes every form the Invoke API does: a name (`shop-fns`), a partial ARN
//! (`123456789012:function:shop-fns`) or a full ARN, each optionally ending in `:qualifier`.
//! The loader moves that suffix into [`EndpointTarget::Lambda::qualifier`] so the invoker sees
//! one spelling.

use super::endpoint::{
    self, DEFAULT_CALL_TIMEOUT, DEFAULT_CONNECT_TIMEOUT, DEFAULT_POOL_SIZE, DEFAULT_POOL_TTL, EndpointConfig,
    EndpointTarget, LAMBDA_PAYLOAD_MAX_BYTES,
};
use super::walk::{Node, Walked};

/// The `kind` this file parses.
pub const KIND: &str = "statefun-aws.endpoints.v1/lambda";

const SPEC_FIELDS: &[&str] = &["functions", "functionName", "qualifier", "maxNumBatchRequests", "transport"];
const TRANSPORT_FIELDS: &[&str] = &["call", "payload_max_bytes"];

/// Parses the `spec` of one Lambda endpoint document.
pub(crate) fn parse(spec: &Node<'_>, document: usize) -> Walked<EndpointConfig> {
    let fields = spec.fields(SPEC_FIELDS, &[])?;
    let functions = endpoint::functions(&fields.required("functions")?)?;

    let name_node = fields.required("functionName")?;
    let (function_name, name_qualifier) =
        parse_function_name(name_node.non_empty_str()?).map_err(|problem| name_node.fault(problem))?;
    let qualifier = match fields.optional("qualifier") {
        None => name_qualifier,
        Some(node) => {
            let qualifier = node.text()?;
            check_qualifier(&qualifier).map_err(|problem| node.fault(problem))?;
            if let Some(from_name) = name_qualifier.filter(|from_name| *from_name != qualifier) {
                return Err(node.fault(format!(
                    "{qualifier:?} conflicts with the qualifier {from_name:?} in {}",
                    name_node.path()
                )));
            }
            Some(qualifier)
        }
    };

    let mut config = EndpointConfig {
        functions,
        target: EndpointTarget::Lambda { function_name, qualifier },
        max_batch: endpoint::max_batch(fields.optional("maxNumBatchRequests"))?,
        call_timeout: DEFAULT_CALL_TIMEOUT,
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        pool_ttl: DEFAULT_POOL_TTL,
        pool_size: DEFAULT_POOL_SIZE,
        payload_max_bytes: LAMBDA_PAYLOAD_MAX_BYTES,
        document,
    };
    if let Some(transport) = fields.optional("transport") {
        let transport = transport.fields(TRANSPORT_FIELDS, &[])?;
        if let Some(call) = transport.optional("call") {
            config.call_timeout = call.nonzero_duration()?;
        }
        if let Some(max) = transport.optional("payload_max_bytes") {
            let bytes = max.positive_usize()?;
            if bytes > LAMBDA_PAYLOAD_MAX_BYTES {
                return Err(max.fault(format!(
                    "{bytes} is above the Lambda synchronous Invoke limit of {LAMBDA_PAYLOAD_MAX_BYTES} bytes (6 MB)"
                )));
            }
            config.payload_max_bytes = bytes;
        }
    }
    Ok(config)
}

/// Splits a Lambda `FunctionName` into the unqualified name or ARN and its optional qualifier.
pub(crate) fn parse_function_name(text: &str) -> Result<(String, Option<String>), String> {
    let parts: Vec<&str> = text.split(':').collect();
    let (unqualified, qualifier) = if parts[0] == "arn" {
        // arn:partition:lambda:region:account:function:name[:qualifier]
        if !(7..=8).contains(&parts.len()) {
            return Err(format!(
                "{text:?} is not a Lambda function ARN; expected arn:aws:lambda:<region>:<account>:function:<name>[:<qualifier>]"
            ));
        }
        let (partition, service, region, account, resource) = (parts[1], parts[2], parts[3], parts[4], parts[5]);
        if !partition.starts_with("aws") || service != "lambda" || resource != "function" {
            return Err(format!("{text:?} is not a Lambda function ARN (arn:aws:lambda:...:function:...)"));
        }
        if region.is_empty() || !region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
            return Err(format!("{text:?}: {region:?} is not an AWS region"));
        }
        check_account(text, account)?;
        check_name(text, parts[6])?;
        (parts[..7].join(":"), parts.get(7))
    } else {
        match parts.len() {
            1 | 2 => {
                check_name(text, parts[0])?;
                (parts[0].to_owned(), parts.get(1))
            }
            3 | 4 if parts[1] == "function" => {
                check_account(text, parts[0])?;
                check_name(text, parts[2])?;
                (parts[..3].join(":"), parts.get(3))
            }
            _ => {
                return Err(format!(
                    "{text:?} is not a Lambda function name, partial ARN (<account>:function:<name>) or ARN"
                ));
            }
        }
    };
    if let Some(qualifier) = qualifier {
        check_qualifier(qualifier).map_err(|problem| format!("{text:?}: {problem}"))?;
    }
    Ok((unqualified, qualifier.map(|q| (*q).to_owned())))
}

fn check_name(text: &str, name: &str) -> Result<(), String> {
    let valid =
        (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if valid {
        Ok(())
    } else {
        Err(format!("{text:?}: {name:?} is not a Lambda function name (1-64 letters, digits, '-' or '_')"))
    }
}

fn check_account(text: &str, account: &str) -> Result<(), String> {
    if account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(format!("{text:?}: {account:?} is not a 12-digit AWS account id"))
    }
}

/// A version (`$LATEST` or digits) or an alias (1-128 letters, digits, '-' or '_').
fn check_qualifier(qualifier: &str) -> Result<(), String> {
    let valid = qualifier == "$LATEST"
        || ((1..=128).contains(&qualifier.len())
            && qualifier.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if valid { Ok(()) } else { Err(format!("{qualifier:?} is not a Lambda version or alias")) }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{error_of, loads};
    use super::*;
    use std::time::Duration;

    fn lambda(function_name: &str, qualifier: Option<&str>) -> EndpointTarget {
        EndpointTarget::Lambda { function_name: function_name.to_owned(), qualifier: qualifier.map(str::to_owned) }
    }

    #[test]
    fn lambda_endpoint_with_qualified_arn_loads_with_lambda_defaults() {
        let config = loads(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/*\n  functionName: arn:aws:lambda:eu-west-1:123456789012:function:shop-fns:live\n  qualifier: live\n",
        );
        let endpoint = &config.endpoints[0];
        assert_eq!(endpoint.target, lambda("arn:aws:lambda:eu-west-1:123456789012:function:shop-fns", Some("live")));
        assert_eq!(endpoint.payload_max_bytes, 6_291_456);
        assert_eq!(endpoint.call_timeout, Duration::from_secs(120));
        assert_eq!(endpoint.max_batch, 1000);
        assert_eq!(endpoint.url_for(&crate::address::FunctionType::new("shop", "cart")), None);
    }

    #[test]
    fn function_names_in_every_invoke_form_are_accepted() {
        let cases = [
            ("shop-fns", ("shop-fns", None)),
            ("shop-fns:7", ("shop-fns", Some("7"))),
            ("shop-fns:$LATEST", ("shop-fns", Some("$LATEST"))),
            ("123456789012:function:shop-fns", ("123456789012:function:shop-fns", None)),
            ("123456789012:function:shop-fns:live", ("123456789012:function:shop-fns", Some("live"))),
            (
                "arn:aws-cn:lambda:cn-north-1:123456789012:function:f",
                ("arn:aws-cn:lambda:cn-north-1:123456789012:function:f", None),
            ),
        ];
        for (text, (name, qualifier)) in cases {
            assert_eq!(parse_function_name(text), Ok((name.to_owned(), qualifier.map(str::to_owned))), "{text}");
        }
        for bad in [
            "shop fns",
            "a:b:c",
            "12345:function:f",
            "arn:aws:s3:eu-west-1:123456789012:function:f",
            "arn:aws:lambda:eu-west-1:123456789012:function",
            "f:bad qualifier",
            "f:",
        ] {
            assert!(parse_function_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn qualifier_field_fills_in_for_an_unqualified_name() {
        let config = loads(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/cart\n  functionName: shop-fns\n  qualifier: 3\n",
        );
        assert_eq!(config.endpoints[0].target, lambda("shop-fns", Some("3")));
    }

    #[test]
    fn conflicting_qualifiers_are_rejected() {
        let error = error_of(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/*\n  functionName: shop-fns:live\n  qualifier: canary\n",
        );
        assert_eq!(
            error,
            "module.yaml, document 1 (statefun-aws.endpoints.v1/lambda): spec.qualifier: \"canary\" conflicts with the qualifier \"live\" in spec.functionName"
        );
    }

    #[test]
    fn payload_limit_above_the_invoke_limit_is_rejected() {
        let error = error_of(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/*\n  functionName: f\n  transport:\n    payload_max_bytes: 33554432\n",
        );
        assert!(error.contains("(statefun-aws.endpoints.v1/lambda): spec.transport.payload_max_bytes: 33554432 is above the Lambda synchronous Invoke limit"), "{error}");
    }

    #[test]
    fn http_only_transport_fields_are_unknown_for_lambda() {
        let error = error_of(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/*\n  functionName: f\n  transport:\n    pool_size: 3\n",
        );
        assert!(
            error.contains("spec.transport.pool_size: unknown field; allowed fields are: call, payload_max_bytes"),
            "{error}"
        );
    }

    #[test]
    fn bad_function_name_is_reported_with_its_path() {
        let error = error_of(
            "kind: statefun-aws.endpoints.v1/lambda\nspec:\n  functions: shop/*\n  functionName: arn:aws:lambda:eu-west-1:42:function:f\n",
        );
        assert!(
            error.contains("document 1 (statefun-aws.endpoints.v1/lambda): spec.functionName: ")
                && error.contains("12-digit"),
            "{error}"
        );
    }
}
