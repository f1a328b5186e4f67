//! The functions as an AWS Lambda.
//!
//! The Lambda Invoke API carries JSON only, so requests arrive as API Gateway
//! proxy-shaped events: REST API (v1, `httpMethod`), HTTP API and Function URL
//! (v2, `requestContext.http.method`), or the same shape built by the runtime
//! for a direct Invoke. All carry `body` and `isBase64Encoded`; a body that is
//! not base64 is taken as the bytes of the string. The answer is a proxy
//! response with the `FromFunction` bytes in base64:
//!
//! ```json
//! {"statusCode":200,"headers":{"content-type":"application/octet-stream"},
//!  "body":"<base64>","isBase64Encoded":true}
//! ```
//!
//! Errors answer `statusCode` 500 with the message as a text body (405 for a
//! method other than POST) rather than failing the invocation, so API Gateway
//! and direct callers see the same thing. Events are read as plain
//! `serde_json::Value`s: one code path for every event shape.

use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

use crate::functions::Functions;

/// Why an event is not a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("the Lambda event is not a JSON object")]
    NotAnObject,
    /// The event has no `body` (or it is null).
    #[error("the Lambda event has no `body`; expected an API Gateway or Function URL proxy event")]
    MissingBody,
    /// `body` is not a string.
    #[error("the Lambda event's `body` is not a string")]
    BodyNotAString,
    /// `isBase64Encoded` is not a boolean.
    #[error("the Lambda event's `isBase64Encoded` is not a boolean")]
    Base64FlagNotABool,
    /// `body` is marked base64 but is not.
    #[error("the Lambda event's `body` is not valid base64: {0}")]
    BadBase64(#[source] base64::DecodeError),
    /// The HTTP method is not POST.
    #[error("method {0} is not allowed: only POST is supported")]
    MethodNotAllowed(String),
}

/// Runs the functions as a Lambda until the Lambda runtime stops.
///
/// ```no_run
/// # async fn example(functions: statefun_sdk::Functions) -> Result<(), lambda_runtime::Error> {
/// statefun_sdk::lambda::run(functions).await
/// # }
/// ```
pub async fn run(functions: Functions) -> Result<(), lambda_runtime::Error> {
    let functions = Arc::new(functions);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| {
        let functions = Arc::clone(&functions);
        async move { Ok::<Value, lambda_runtime::Error>(handle_event(&functions, &event.payload)) }
    }))
    .await
}

/// Answers one proxy event with a proxy response (never fails: errors become
/// a 500 response).
///
/// ```
/// use statefun_sdk::Functions;
/// use serde_json::json;
///
/// let response = statefun_sdk::lambda::handle_event(&Functions::new(), &json!({"body": null}));
/// assert_eq!(response["statusCode"], 500);
/// ```
pub fn handle_event(functions: &Functions, event: &Value) -> Value {
    let request = match request_body(event) {
        Ok(request) => request,
        Err(EventError::MethodNotAllowed(method)) => {
            return text_response(405, &EventError::MethodNotAllowed(method).to_string());
        }
        Err(error) => return text_response(500, &error.to_string()),
    };
    match functions.handle(&request) {
        Ok(bytes) => json!({
            "statusCode": 200,
            "headers": {"content-type": "application/octet-stream"},
            "body": BASE64.encode(bytes),
            "isBase64Encoded": true,
        }),
        Err(error) => {
            tracing::warn!(%error, "request failed");
            text_response(500, &error.to_string())
        }
    }
}

/// The request bytes of a proxy event.
pub fn request_body(event: &Value) -> Result<Vec<u8>, EventError> {
    let event = event.as_object().ok_or(EventError::NotAnObject)?;
    let method = event
        .get("httpMethod")
        .or_else(|| event.get("requestContext")?.get("http")?.get("method"))
        .and_then(Value::as_str);
    if let Some(method) = method
        && !method.eq_ignore_ascii_case("POST")
    {
        return Err(EventError::MethodNotAllowed(method.to_owned()));
    }
    let body = match event.get("body") {
        None | Some(Value::Null) => return Err(EventError::MissingBody),
        Some(Value::String(body)) => body,
        Some(_) => return Err(EventError::BodyNotAString),
    };
    let is_base64 = match event.get("isBase64Encoded") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(flag)) => *flag,
        Some(_) => return Err(EventError::Base64FlagNotABool),
    };
    if is_base64 { BASE64.decode(body).map_err(EventError::BadBase64) } else { Ok(body.as_bytes().to_vec()) }
}

fn text_response(status: u16, message: &str) -> Value {
    json!({
        "statusCode": status,
        "headers": {"content-type": "text/plain; charset=utf-8"},
        "body": format!("{message}\n"),
        "isBase64Encoded": false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{TestRequest, invocation_result};
    use crate::{FunctionType, StringType, ValueSpec};
    use prost::Message as _;
    use statefun_proto::reqreply::FromFunction;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    #[test]
    fn rest_api_v1_event_body_is_base64_decoded() -> TestResult {
        let event = json!({
            "resource": "/{proxy+}",
            "path": "/statefun",
            "httpMethod": "POST",
            "headers": {"Content-Type": "application/octet-stream"},
            "body": "AQID",
            "isBase64Encoded": true
        });
        assert_eq!(request_body(&event)?, vec![1, 2, 3]);
        Ok(())
    }

    #[test]
    fn http_api_v2_event_body_is_base64_decoded() -> TestResult {
        let event = json!({
            "version": "2.0",
            "routeKey": "$default",
            "rawPath": "/",
            "requestContext": {"http": {"method": "POST", "path": "/"}},
            "body": "BAUG",
            "isBase64Encoded": true
        });
        assert_eq!(request_body(&event)?, vec![4, 5, 6]);
        Ok(())
    }

    #[test]
    fn non_base64_body_is_the_bytes_of_the_string() -> TestResult {
        let event = json!({"httpMethod": "POST", "body": "hi", "isBase64Encoded": false});
        assert_eq!(request_body(&event)?, b"hi".to_vec());
        let event = json!({"body": "hi"});
        assert_eq!(request_body(&event)?, b"hi".to_vec());
        Ok(())
    }

    #[test]
    fn missing_body_and_bad_base64_are_clear_errors() {
        let missing = request_body(&json!({"httpMethod": "POST"})).map_err(|e| e.to_string());
        assert_eq!(
            missing.err().as_deref(),
            Some("the Lambda event has no `body`; expected an API Gateway or Function URL proxy event")
        );
        let bad = request_body(&json!({"body": "***", "isBase64Encoded": true})).map_err(|e| e.to_string());
        assert!(bad.err().is_some_and(|e| e.starts_with("the Lambda event's `body` is not valid base64")));
    }

    #[test]
    fn get_request_answers_405() {
        let event = json!({"requestContext": {"http": {"method": "GET"}}, "body": ""});
        let response = handle_event(&Functions::new(), &event);
        assert_eq!(response["statusCode"], 405);
    }

    #[test]
    fn event_round_trip_answers_200_with_base64_from_function() -> TestResult {
        let greeting = ValueSpec::new("greeting", StringType);
        let ft = FunctionType::new("t", "greeter");
        let functions = Functions::new().with(ft.clone(), &[&greeting], {
            let greeting = greeting.clone();
            move |ctx, msg| {
                let name = msg.as_value(&StringType)?;
                ctx.set(&greeting, &format!("hello {name}"))?;
                Ok(())
            }
        });
        let request = TestRequest::new(ft.address("1")).with_state(&greeting, None)?.with_invocation(
            None,
            &StringType,
            &"bob".to_owned(),
        )?;
        let event = json!({
            "httpMethod": "POST",
            "headers": {"content-type": "application/octet-stream"},
            "body": BASE64.encode(request.to_bytes()),
            "isBase64Encoded": true,
        });
        let response = handle_event(&functions, &event);
        assert_eq!(response["statusCode"], 200);
        assert_eq!(response["isBase64Encoded"], true);
        assert_eq!(response["headers"]["content-type"], "application/octet-stream");
        let body = BASE64.decode(response["body"].as_str().unwrap_or_default())?;
        let result = invocation_result(FromFunction::decode(body.as_slice())?).unwrap_or_default();
        let value = result.state_mutations.first().and_then(|m| m.state_value.clone());
        assert_eq!(value.map(|v| v.value), Some(b"\x0a\x09hello bob".to_vec()));
        Ok(())
    }

    #[test]
    fn function_error_answers_500_with_the_message() {
        let event = json!({"body": "", "isBase64Encoded": true});
        let response = handle_event(&Functions::new(), &event);
        assert_eq!(response["statusCode"], 500);
        assert_eq!(response["isBase64Encoded"], false);
        assert_eq!(response["body"], "the ToFunction request holds no invocation batch\n");
    }
}
