//! The functions as an AWS Lambda.
//!
//! The Lambda Invoke API carries JSON only, so requests arrive as API Gateway
//! proxy events, read through the typed events of `aws_lambda_events`: REST
//! API (v1, [`ApiGatewayProxyRequest`]), HTTP API (v2,
//! [`ApiGatewayV2httpRequest`]) and Function URL
//! ([`LambdaFunctionUrlRequest`]); a direct Invoke may send the REST shape the
//! runtime builds, or just `body` and `isBase64Encoded`. A body that is not
//! base64 is taken as the bytes of the string. The answer is a proxy response
//! ([`ApiGatewayProxyResponse`]) with the `FromFunction` bytes in base64:
//!
//! ```json
//! {"statusCode":200,"headers":{"content-type":"application/octet-stream"},
//!  "body":"<base64>","isBase64Encoded":true}
//! ```
//!
//! Errors answer `statusCode` 500 with the message as a text body (422 for a
//! function's [`Permanent`](crate::Permanent) error, 405 for a method other
//! than POST) rather than failing the invocation, so API Gateway and direct
//! callers see the same thing.

use std::sync::Arc;

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayProxyResponse, ApiGatewayV2httpRequest};
use aws_lambda_events::encodings::Body;
use aws_lambda_events::lambda_function_urls::LambdaFunctionUrlRequest;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hyper::StatusCode;
use hyper::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use lambda_runtime::{LambdaEvent, service_fn};
use serde::Deserialize;
use serde_json::Value;

use crate::functions::Functions;
use crate::http::error_status;

/// Why an event is not a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event is not a JSON object.
    #[error("the Lambda event is not a JSON object")]
    NotAnObject,
    /// The event does not read as the kind of event its fields say it is.
    #[error("the Lambda event is not a valid {kind} event: {source}")]
    Malformed {
        /// The kind of event it looked like.
        kind: &'static str,
        /// What does not fit.
        #[source]
        source: serde_json::Error,
    },
    /// The event has no `body` (or it is null).
    #[error("the Lambda event has no `body`; expected an API Gateway or Function URL proxy event")]
    MissingBody,
    /// `body` is marked base64 but is not.
    #[error("the Lambda event's `body` is not valid base64: {0}")]
    BadBase64(#[source] base64::DecodeError),
    /// The HTTP method is not POST.
    #[error("method {0} is not allowed: only POST is supported")]
    MethodNotAllowed(String),
}

/// The events a request arrives in.
#[derive(Debug)]
#[non_exhaustive]
pub enum ProxyEvent {
    /// API Gateway REST API (v1), and the runtime's own direct Invoke.
    RestApi(Box<ApiGatewayProxyRequest>),
    /// API Gateway HTTP API (payload format 2.0).
    HttpApi(Box<ApiGatewayV2httpRequest>),
    /// A Lambda Function URL.
    FunctionUrl(Box<LambdaFunctionUrlRequest>),
    /// A direct Invoke carrying only the body (and perhaps the method).
    Direct(DirectInvoke),
}

/// A direct Invoke's event without the API Gateway envelope.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct DirectInvoke {
    /// The method, if the caller says.
    #[serde(default)]
    pub http_method: Option<String>,
    /// The request, base64 or text.
    #[serde(default)]
    pub body: Option<String>,
    /// Whether `body` is base64.
    #[serde(default)]
    pub is_base64_encoded: Option<bool>,
}

impl ProxyEvent {
    /// Tells the kind of event by its fields (`requestContext.http` for the
    /// v2 shapes, a Function URL by its `lambda-url` domain; `httpMethod` with
    /// a `requestContext` for REST) and reads it as that kind.
    pub fn from_json(event: Value) -> Result<Self, EventError> {
        let object = event.as_object().ok_or(EventError::NotAnObject)?;
        let context = object.get("requestContext");
        let read = |kind| move |source| EventError::Malformed { kind, source };
        if context.and_then(|c| c.get("http")).is_some() {
            let domain = context.and_then(|c| c.get("domainName")).and_then(Value::as_str).unwrap_or_default();
            return if domain.contains(".lambda-url.") {
                serde_json::from_value(event).map(|e| Self::FunctionUrl(Box::new(e))).map_err(read("Function URL"))
            } else {
                serde_json::from_value(event).map(|e| Self::HttpApi(Box::new(e))).map_err(read("HTTP API"))
            };
        }
        if context.is_some() && object.contains_key("httpMethod") {
            return serde_json::from_value(event).map(|e| Self::RestApi(Box::new(e))).map_err(read("REST API"));
        }
        serde_json::from_value(event).map(Self::Direct).map_err(read("direct Invoke"))
    }

    /// The HTTP method, where the event has one.
    fn method(&self) -> Option<&str> {
        match self {
            Self::RestApi(e) => Some(e.http_method.as_str()),
            Self::HttpApi(e) => Some(e.request_context.http.method.as_str()),
            Self::FunctionUrl(e) => e.request_context.http.method.as_deref(),
            Self::Direct(e) => e.http_method.as_deref(),
        }
    }

    /// The body and whether it is base64.
    fn body(&self) -> (Option<&str>, bool) {
        match self {
            Self::RestApi(e) => (e.body.as_deref(), e.is_base64_encoded),
            Self::HttpApi(e) => (e.body.as_deref(), e.is_base64_encoded),
            Self::FunctionUrl(e) => (e.body.as_deref(), e.is_base64_encoded),
            Self::Direct(e) => (e.body.as_deref(), e.is_base64_encoded.unwrap_or(false)),
        }
    }

    /// The request bytes: the body, base64-decoded if marked so.
    pub fn request_body(&self) -> Result<Vec<u8>, EventError> {
        if let Some(method) = self.method()
            && !method.eq_ignore_ascii_case("POST")
        {
            return Err(EventError::MethodNotAllowed(method.to_owned()));
        }
        match self.body() {
            (None, _) => Err(EventError::MissingBody),
            (Some(body), true) => BASE64.decode(body).map_err(EventError::BadBase64),
            (Some(body), false) => Ok(body.as_bytes().to_vec()),
        }
    }
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
        async move { Ok::<_, lambda_runtime::Error>(handle_event(&functions, event.payload).await) }
    }))
    .await
}

/// Answers one proxy event with a proxy response (never fails: errors become
/// a 500 response, or 422 for a function's permanent error).
///
/// ```
/// use statefun_sdk::Functions;
/// use serde_json::json;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let response = statefun_sdk::lambda::handle_event(&Functions::new(), json!({"body": null})).await;
/// assert_eq!(response.status_code, 500);
/// # }
/// ```
pub async fn handle_event(functions: &Functions, event: Value) -> ApiGatewayProxyResponse {
    let request = match ProxyEvent::from_json(event).and_then(|e| e.request_body()) {
        Ok(request) => request,
        Err(error @ EventError::MethodNotAllowed(_)) => {
            return text_response(StatusCode::METHOD_NOT_ALLOWED, &error.to_string());
        }
        Err(error) => return text_response(StatusCode::INTERNAL_SERVER_ERROR, &error.to_string()),
    };
    match functions.handle(&request).await {
        Ok(bytes) => response(StatusCode::OK, "application/octet-stream", Body::Binary(bytes), true),
        Err(error) => {
            tracing::warn!(%error, "request failed");
            text_response(error_status(&error), &error.to_string())
        }
    }
}

/// The request bytes of a proxy event given as JSON.
pub fn request_body(event: &Value) -> Result<Vec<u8>, EventError> {
    ProxyEvent::from_json(event.clone())?.request_body()
}

fn text_response(status: StatusCode, message: &str) -> ApiGatewayProxyResponse {
    response(status, "text/plain; charset=utf-8", Body::Text(format!("{message}\n")), false)
}

fn response(status: StatusCode, content_type: &'static str, body: Body, is_base64: bool) -> ApiGatewayProxyResponse {
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    let mut response = ApiGatewayProxyResponse::default();
    response.status_code = i64::from(status.as_u16());
    response.headers = headers;
    response.body = Some(body);
    response.is_base64_encoded = is_base64;
    response
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

    #[tokio::test]
    async fn get_request_answers_405() {
        let event = json!({"requestContext": {"http": {"method": "GET"}}, "body": ""});
        let response =
            serde_json::to_value(handle_event(&Functions::new(), event).await).expect("a proxy response serializes");
        assert_eq!(response["statusCode"], 405);
    }

    #[tokio::test]
    async fn event_round_trip_answers_200_with_base64_from_function() -> TestResult {
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
        let response =
            serde_json::to_value(handle_event(&functions, event).await).expect("a proxy response serializes");
        assert_eq!(response["statusCode"], 200);
        assert_eq!(response["isBase64Encoded"], true);
        assert_eq!(response["headers"]["content-type"], "application/octet-stream");
        let body = BASE64.decode(response["body"].as_str().unwrap_or_default())?;
        let result = invocation_result(FromFunction::decode(body.as_slice())?).unwrap_or_default();
        let value = result.state_mutations.first().and_then(|m| m.state_value.clone());
        assert_eq!(value.map(|v| v.value), Some(b"\x0a\x09hello bob".to_vec()));
        Ok(())
    }

    #[tokio::test]
    async fn function_error_answers_500_with_the_message() {
        let event = json!({"body": "", "isBase64Encoded": true});
        let response =
            serde_json::to_value(handle_event(&Functions::new(), event).await).expect("a proxy response serializes");
        assert_eq!(response["statusCode"], 500);
        assert_eq!(response["isBase64Encoded"], false);
        assert_eq!(response["body"], "the ToFunction request holds no invocation batch\n");
    }

    fn strict() -> (FunctionType, Functions) {
        let ft = FunctionType::new("t", "strict");
        let functions = Functions::new().with(ft.clone(), &[], |_ctx, msg| {
            if msg.as_value(&StringType)?.is_empty() {
                return Err(crate::Permanent::new("an empty name").into());
            }
            Ok(())
        });
        (ft, functions)
    }

    fn request_base64(ft: &FunctionType, name: &str) -> Result<String, crate::Error> {
        let request = TestRequest::new(ft.address("1")).with_invocation(None, &StringType, &name.to_owned())?;
        Ok(BASE64.encode(request.to_bytes()))
    }

    /// The events as API Gateway and Lambda send them (the fields of their
    /// documented examples), each read through its typed struct.
    fn events(body: &str) -> Vec<(&'static str, Value)> {
        vec![
            (
                "REST API",
                json!({
                    "resource": "/{proxy+}", "path": "/statefun", "httpMethod": "POST",
                    "headers": {"Content-Type": "application/octet-stream", "Host": "abc.execute-api.us-east-1.amazonaws.com"},
                    "multiValueHeaders": {"Content-Type": ["application/octet-stream"]},
                    "queryStringParameters": null, "multiValueQueryStringParameters": null,
                    "pathParameters": {"proxy": "statefun"}, "stageVariables": null,
                    "requestContext": {
                        "accountId": "123456789012", "resourceId": "abc123", "stage": "prod",
                        "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef", "requestTime": "09/Apr/2015:12:34:56 +0000",
                        "requestTimeEpoch": 1428582896000_i64, "path": "/prod/statefun", "resourcePath": "/{proxy+}",
                        "httpMethod": "POST", "apiId": "1234567890", "protocol": "HTTP/1.1",
                        "identity": {"sourceIp": "127.0.0.1", "userAgent": "statefun"}
                    },
                    "body": body, "isBase64Encoded": true
                }),
            ),
            ("HTTP API", v2_event(body, "id.execute-api.us-east-1.amazonaws.com", "POST /statefun", "/statefun")),
            ("Function URL", v2_event(body, "urlid.lambda-url.us-east-1.on.aws", "$default", "/")),
        ]
    }

    /// Payload format 2.0, shared by HTTP APIs and Function URLs (told apart by the domain).
    fn v2_event(body: &str, domain: &str, route: &str, path: &str) -> Value {
        let prefix = domain.split('.').next().unwrap_or_default();
        json!({
            "version": "2.0", "routeKey": route, "rawPath": path, "rawQueryString": "",
            "headers": {"content-type": "application/octet-stream"},
            "requestContext": {
                "accountId": "123456789012", "apiId": prefix, "domainName": domain, "domainPrefix": prefix,
                "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "192.0.2.1", "userAgent": "statefun"},
                "requestId": "id", "routeKey": route, "stage": "$default",
                "time": "12/Mar/2020:19:03:58 +0000", "timeEpoch": 1583348638390_i64
            },
            "body": body, "isBase64Encoded": true
        })
    }

    #[tokio::test]
    async fn rest_http_api_and_function_url_events_are_read_as_their_kinds_and_answered() -> TestResult {
        let (ft, functions) = strict();
        for (kind, event) in events(&request_base64(&ft, "bob")?) {
            let parsed = ProxyEvent::from_json(event.clone())?;
            let matches = match kind {
                "REST API" => matches!(parsed, ProxyEvent::RestApi(_)),
                "HTTP API" => matches!(parsed, ProxyEvent::HttpApi(_)),
                _ => matches!(parsed, ProxyEvent::FunctionUrl(_)),
            };
            assert!(matches, "{kind} read as {parsed:?}");
            let response = serde_json::to_value(handle_event(&functions, event).await)?;
            assert_eq!(response["statusCode"], 200, "{kind}: {response}");
            assert_eq!(response["isBase64Encoded"], true, "{kind}");
        }
        Ok(())
    }

    #[tokio::test]
    async fn a_permanent_error_answers_422_through_every_event_kind() -> TestResult {
        let (ft, functions) = strict();
        for (kind, event) in events(&request_base64(&ft, "")?) {
            let response = serde_json::to_value(handle_event(&functions, event).await)?;
            assert_eq!(response["statusCode"], 422, "{kind}: {response}");
            assert!(response["body"].as_str().is_some_and(|b| b.contains("an empty name")), "{kind}: {response}");
        }
        Ok(())
    }

    #[test]
    fn an_event_that_looks_like_a_kind_but_does_not_read_as_it_is_named() {
        let event = json!({"requestContext": {"http": {"method": 7}}, "body": ""});
        let error = ProxyEvent::from_json(event).map(drop).map_err(|e| e.to_string());
        assert!(error.err().is_some_and(|e| e.starts_with("the Lambda event is not a valid HTTP API event")));
    }
}
