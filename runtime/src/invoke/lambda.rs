//! The Lambda transport: the Invoke API (RequestResponse) with the request
//! wrapped in an API Gateway proxy-shaped event, so one function works both
//! through direct Invoke and behind API Gateway or a Function URL.
//!
//! The `ToFunction` bytes travel base64 in `body`; the answer is a proxy
//! response whose base64 `body` holds the `FromFunction` bytes. A function
//! error comes back as 200 with `FunctionError` set (real Lambda) or as an
//! HTTP 500 (`cargo lambda watch`): both are function errors here.

use std::time::Duration;

use aws_sdk_lambda::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_lambda::primitives::Blob;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::{Value, json};

use super::{FunctionClient, InvokeError};
use crate::address::FunctionType;
use crate::log::BoxFuture;

/// Lambda's limit on a synchronous reply (the 6,291,556 bytes its own refusal
/// names): a larger one from an emulator meets the refusal Lambda would give.
const MAX_REPLY_BYTES: usize = 6_291_556;

/// What the JSON envelope adds to a request: base64 grows it by a third, plus the event's fields.
pub fn max_request_bytes(payload_max_bytes: usize) -> usize {
    payload_max_bytes.saturating_sub(2048) / 4 * 3
}

/// The Lambda client for invocations: the SDK's own retries are off, because
/// the invoker retries every call within its budget and two retry loops would
/// multiply each other's attempts.
pub fn sdk_client(config: &aws_config::SdkConfig) -> aws_sdk_lambda::Client {
    let config = aws_sdk_lambda::config::Builder::from(config)
        .retry_config(aws_sdk_lambda::config::retry::RetryConfig::disabled())
        .build();
    aws_sdk_lambda::Client::from_conf(config)
}

pub struct LambdaClient {
    client: aws_sdk_lambda::Client,
    function_name: String,
    qualifier: Option<String>,
}

impl LambdaClient {
    pub fn new(client: aws_sdk_lambda::Client, function_name: String, qualifier: Option<String>) -> Self {
        Self { client, function_name, qualifier }
    }

    async fn invoke(&self, event: Vec<u8>) -> Result<Vec<u8>, InvokeError> {
        let target = match &self.qualifier {
            Some(q) => format!("{}:{q}", self.function_name),
            None => self.function_name.clone(),
        };
        let sent = self
            .client
            .invoke()
            .function_name(&self.function_name)
            .set_qualifier(self.qualifier.clone())
            .payload(Blob::new(event))
            .send()
            .await;
        let mut output = match sent {
            Ok(output) => output,
            Err(error) => return Err(classify(&target, error)),
        };
        // Taken, not copied: the reply is held once.
        let payload = output.payload.take().map(Blob::into_inner).unwrap_or_default();
        if payload.len() > MAX_REPLY_BYTES {
            return Err(InvokeError::Function(format!(
                "Lambda {target}: reply of {} bytes is larger than Lambda's limit of {MAX_REPLY_BYTES} bytes",
                payload.len()
            )));
        }
        if let Some(kind) = output.function_error() {
            return Err(InvokeError::Function(format!("Lambda {target}: {kind}: {}", snippet(&payload))));
        }
        proxy_response_body(&payload)
    }
}

impl FunctionClient for LambdaClient {
    fn call<'a>(
        &'a self,
        function_type: &'a FunctionType,
        request: Vec<u8>,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        Box::pin(async move {
            let event = proxy_event(function_type, &request);
            match tokio::time::timeout(timeout, self.invoke(event)).await {
                Ok(result) => result,
                Err(_) => Err(InvokeError::Timeout(timeout)),
            }
        })
    }
}

type InvokeSdkError =
    SdkError<aws_sdk_lambda::operation::invoke::InvokeError, aws_sdk_lambda::config::http::HttpResponse>;

fn classify(target: &str, error: InvokeSdkError) -> InvokeError {
    let status = error.raw_response().map(|r| r.status().as_u16());
    let code = error.code().unwrap_or_default().to_owned();
    let message = error.message().map(str::to_owned).unwrap_or_else(|| format!("{error:?}"));
    if let Some(service) = error.as_service_error() {
        if service.is_too_many_requests_exception() || service.is_ec2_throttled_exception() {
            return InvokeError::Throttled(format!("Lambda {target}: {code}: {message}"));
        }
        if service.is_request_too_large_exception() {
            return InvokeError::Function(format!(
                "Lambda {target}: request larger than the Invoke payload limit: {message}"
            ));
        }
    }
    if let SdkError::DispatchFailure(failure) = &error {
        // No answer at all: the Lambda endpoint could not be reached (or the
        // connection broke). Calls wait within the call budget, as for an HTTP
        // endpoint that is down.
        if failure.is_io() {
            return InvokeError::Unreachable(format!("Lambda {target}: {message}"));
        }
    }
    if let Some(service) = error.as_service_error()
        && (service.is_resource_conflict_exception() || service.is_resource_not_ready_exception())
    {
        // The function is being updated or is not active yet: a deploy, which passes.
        return InvokeError::Transport(format!("Lambda {target}: {code}: {message}"));
    }
    match status {
        // `cargo lambda watch` answers a function error with HTTP 500.
        Some(500) => InvokeError::Function(format!("Lambda {target}: function error: {message}")),
        Some(status) => InvokeError::Status { status, body: format!("Lambda {target}: {code}: {message}") },
        None => InvokeError::Transport(format!("Lambda {target}: {message}")),
    }
}

/// The API Gateway (REST, v1) proxy event carrying a request.
pub fn proxy_event(function_type: &FunctionType, request: &[u8]) -> Vec<u8> {
    let path = format!("/{}", function_type.name);
    let event = json!({
        "resource": "/{proxy+}",
        "path": path,
        "httpMethod": "POST",
        "headers": {"content-type": "application/octet-stream"},
        "requestContext": {"httpMethod": "POST", "path": path},
        "body": BASE64.encode(request),
        "isBase64Encoded": true,
    });
    event.to_string().into_bytes()
}

/// The `FromFunction` bytes inside a proxy response, or why there are none.
pub fn proxy_response_body(payload: &[u8]) -> Result<Vec<u8>, InvokeError> {
    let malformed = |detail: String| InvokeError::Malformed(format!("Lambda answer is not a proxy response: {detail}"));
    let response: Value =
        serde_json::from_slice(payload).map_err(|e| malformed(format!("{e}: {}", snippet(payload))))?;
    let status = response
        .get("statusCode")
        .and_then(Value::as_u64)
        .ok_or_else(|| malformed(format!("no statusCode in {}", snippet(payload))))?;
    let body = response.get("body").and_then(Value::as_str).unwrap_or_default();
    let is_base64 = response.get("isBase64Encoded").and_then(Value::as_bool).unwrap_or(false);
    if !(200..300).contains(&status) {
        let text = if is_base64 {
            BASE64.decode(body).map(|b| String::from_utf8_lossy(&b).into_owned()).unwrap_or_else(|_| body.to_owned())
        } else {
            body.to_owned()
        };
        let status = status as u16;
        return Err(InvokeError::Status { status, body: text.chars().take(500).collect() });
    }
    if is_base64 {
        BASE64.decode(body).map_err(|e| malformed(format!("body is not base64: {e}")))
    } else {
        Ok(body.as_bytes().to_vec())
    }
}

fn snippet(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_request_travels_base64_in_a_post_proxy_event() {
        let event: Value =
            serde_json::from_slice(&proxy_event(&FunctionType::new("shop", "cart"), &[1, 2, 255])).expect("json");
        assert_eq!(event["httpMethod"], "POST");
        assert_eq!(event["isBase64Encoded"], true);
        assert_eq!(event["headers"]["content-type"], "application/octet-stream");
        assert_eq!(BASE64.decode(event["body"].as_str().expect("body")).expect("base64"), [1, 2, 255]);
    }

    #[test]
    fn a_proxy_response_yields_its_body_and_an_error_status_is_an_error() {
        let ok = json!({"statusCode": 200, "body": BASE64.encode([7, 8]), "isBase64Encoded": true}).to_string();
        assert_eq!(proxy_response_body(ok.as_bytes()).expect("ok"), [7, 8]);
        let failed = json!({"statusCode": 500, "body": "state `x` is broken", "isBase64Encoded": false}).to_string();
        let err = proxy_response_body(failed.as_bytes()).expect_err("500");
        assert!(err.to_string().contains("HTTP 500: state `x` is broken"), "{err}");
        let garbage = proxy_response_body(b"null").expect_err("not a proxy response");
        assert!(garbage.to_string().contains("not a proxy response"), "{garbage}");
    }

    /// A Lambda Invoke endpoint that answers every call with `status`, the
    /// error type `error_type` (if any) and `reply`; counts the calls.
    async fn fake_lambda(
        status: &str,
        error_type: Option<&str>,
        reply: Vec<u8>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = calls.clone();
        let error_header = error_type.map(|t| format!("x-amzn-errortype: {t}\r\n")).unwrap_or_default();
        let head = format!("HTTP/1.1 {status}\r\n{error_header}content-length: {}\r\n\r\n", reply.len());
        tokio::spawn(async move {
            while let Ok((mut connection, _)) = listener.accept().await {
                let (head, reply, counted) = (head.clone(), reply.clone(), counted.clone());
                tokio::spawn(async move {
                    // The request is small: one read takes it (its body is not needed).
                    let mut request = vec![0; 64 * 1024];
                    while matches!(connection.read(&mut request).await, Ok(n) if n > 0) {
                        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let _ = connection.write_all(head.as_bytes()).await;
                        let _ = connection.write_all(&reply).await;
                    }
                });
            }
        });
        (url, calls)
    }

    /// A client of [`sdk_client`] calling the Lambda endpoint at `url`.
    fn client_at(url: String) -> LambdaClient {
        let config = aws_config::SdkConfig::builder()
            .behavior_version(aws_config::BehaviorVersion::latest())
            .region(aws_sdk_lambda::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_lambda::config::SharedCredentialsProvider::new(
                aws_sdk_lambda::config::Credentials::new("id", "secret", None, None, "test"),
            ))
            .endpoint_url(url)
            .build();
        LambdaClient::new(sdk_client(&config), "f".into(), None)
    }

    #[tokio::test]
    async fn a_reply_beyond_lambdas_limit_is_refused() {
        let (url, _) = fake_lambda("200 OK", None, vec![b' '; MAX_REPLY_BYTES + 1]).await;
        let refused = client_at(url).invoke(b"{}".to_vec()).await.expect_err("too large");
        assert!(refused.to_string().contains("larger than Lambda's limit of 6291556 bytes"), "{refused}");
    }

    #[tokio::test]
    async fn lambda_failures_are_classified_and_the_sdk_does_not_retry_them_itself() {
        let body = br#"{"message":"it failed"}"#.to_vec();
        let cases = [
            ("503 Service Unavailable", "ServiceException", "transport"),
            ("409 Conflict", "ResourceConflictException", "transport"),
            ("429 Too Many Requests", "TooManyRequestsException", "throttled"),
            ("404 Not Found", "ResourceNotFoundException", "permanent"),
        ];
        for (status, error_type, expected) in cases {
            let (url, calls) = fake_lambda(status, Some(error_type), body.clone()).await;
            let error = client_at(url).invoke(b"{}".to_vec()).await.expect_err("fails");
            let kind = match &error {
                InvokeError::Throttled(_) => "throttled",
                e if e.is_permanent() => "permanent",
                InvokeError::Transport(_) | InvokeError::Status { .. } => "transport",
                _ => "other",
            };
            assert_eq!(kind, expected, "{error_type}: {error}");
            assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1, "{error_type}: one request, no SDK retry");
        }
        let free = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
        let error = client_at(format!("http://{free}")).invoke(b"{}".to_vec()).await.expect_err("refused");
        assert!(matches!(error, InvokeError::Unreachable(_)), "{error}");
    }

    #[test]
    fn the_batch_limit_leaves_room_for_the_envelope() {
        let limit = max_request_bytes(6 * 1024 * 1024);
        assert!(limit / 3 * 4 + 2048 <= 6 * 1024 * 1024);
        assert!(limit > 4 * 1024 * 1024);
    }
}
