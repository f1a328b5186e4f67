//! The fault layer of the AWS clients: an SDK interceptor that decides, and a
//! wrapped HTTP client that stands in for the service.
//!
//! The interceptor ([`FaultInterceptor`]) runs in `modify_before_signing` of
//! every attempt: it knows the operation (from the SDK's `Metadata`) and the
//! attempt, asks the plan what happens to it, takes refused records out of a
//! `PutRecords` body before it is signed, and tags the request with the
//! decision (a request extension). The HTTP client ([`FaultHttpClient`]) wraps
//! the client the SDK would use and carries the decision out when the tagged
//! request is sent: it waits (latency), answers in the service's place without
//! sending (errors, throttling, all records refused), sends and then drops the
//! answer (lost responses), or sends and puts the refused records back into
//! the answer (partial failures). Both parts are needed because interceptor
//! hooks are synchronous: they can neither wait nor read a response body,
//! which the SDK reads only after the last hook before deserialization.
//!
//! Everything after the transport is the SDK's own: fabricated answers go
//! through the real deserializers, retry classifiers and retry strategy, so the
//! runtime sees exactly the errors a real service would cause.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::connection::{CaptureSmithyConnection, ConnectionMetadata};
use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::{Intercept, SharedInterceptor};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse, Metadata};
use aws_smithy_runtime_api::client::result::ConnectorError;
use aws_smithy_runtime_api::client::runtime_components::{RuntimeComponents, RuntimeComponentsBuilder};
use aws_smithy_runtime_api::client::runtime_plugin::RuntimePlugin;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use super::{AwsFault, FaultPlan, Service};

/// Said in every fabricated answer and in the log.
const NOTE: &str = "injected by STATEFUN_FAULTS";

/// The Kinesis client configuration, with the fault layer when `plan` names Kinesis.
pub fn kinesis(
    mut builder: aws_sdk_kinesis::config::Builder,
    plan: &Arc<FaultPlan>,
) -> aws_sdk_kinesis::config::Builder {
    if let Some(layer) = Layer::for_plan(Service::Kinesis, plan) {
        let inner = builder.clone().build().http_client();
        builder.set_http_client(Some(layer.http_client(inner)));
        builder.push_interceptor(layer.interceptor);
    }
    builder
}

/// The S3 client configuration, with the fault layer when `plan` names S3.
pub fn s3(mut builder: aws_sdk_s3::config::Builder, plan: &Arc<FaultPlan>) -> aws_sdk_s3::config::Builder {
    if let Some(layer) = Layer::for_plan(Service::S3, plan) {
        let inner = builder.clone().build().http_client();
        builder.set_http_client(Some(layer.http_client(inner)));
        builder.push_interceptor(layer.interceptor);
    }
    builder
}

/// The DynamoDB client configuration, with the fault layer when `plan` names DynamoDB.
pub fn dynamodb(
    mut builder: aws_sdk_dynamodb::config::Builder,
    plan: &Arc<FaultPlan>,
) -> aws_sdk_dynamodb::config::Builder {
    if let Some(layer) = Layer::for_plan(Service::DynamoDb, plan) {
        let inner = builder.clone().build().http_client();
        builder.set_http_client(Some(layer.http_client(inner)));
        builder.push_interceptor(layer.interceptor);
    }
    builder
}

/// The Lambda client, rebuilt with the fault layer when `plan` names Lambda (else unchanged).
pub fn lambda_client(client: aws_sdk_lambda::Client, plan: &Arc<FaultPlan>) -> aws_sdk_lambda::Client {
    let Some(layer) = Layer::for_plan(Service::Lambda, plan) else { return client };
    let mut builder = client.config().to_builder();
    builder.set_http_client(Some(layer.http_client(client.config().http_client())));
    builder.push_interceptor(layer.interceptor);
    aws_sdk_lambda::Client::from_conf(builder.build())
}

/// The two parts of the layer for one client.
pub(crate) struct Layer {
    service: Service,
    pub(crate) interceptor: SharedInterceptor,
}

impl Layer {
    /// The layer of `service`, if `plan` has rules for it.
    fn for_plan(service: Service, plan: &Arc<FaultPlan>) -> Option<Self> {
        plan.covers(service).then(|| {
            tracing::info!(service = service.name(), "fault injection installed on the {} client", service.name());
            Self::new(service, plan.clone())
        })
    }

    pub(crate) fn new(service: Service, plan: Arc<FaultPlan>) -> Self {
        let interceptor = FaultInterceptor { service, plan, attempts: Mutex::new(HashMap::new()) };
        Self { service, interceptor: SharedInterceptor::new(interceptor) }
    }

    /// Wraps `inner`, or the HTTP client the SDK would use by default.
    pub(crate) fn http_client(&self, inner: Option<SharedHttpClient>) -> SharedHttpClient {
        let inner = inner.or_else(default_http_client);
        FaultHttpClient { service: self.service, inner }.into_shared()
    }
}

/// The SDK's default HTTPS client, as its default plugin would install it.
fn default_http_client() -> Option<SharedHttpClient> {
    let plugin = aws_smithy_runtime::client::defaults::default_http_client_plugin_v2(BehaviorVersion::latest())?;
    plugin.runtime_components(&RuntimeComponentsBuilder::new("statefun-faults")).http_client()
}

/// What the plan decided for one attempt, carried on its request to the transport.
#[derive(Clone, Debug)]
struct Decision {
    service: Service,
    operation: String,
    attempt: u64,
    delay: Option<std::time::Duration>,
    fault: Option<AwsFault>,
    refused: Option<Refused>,
}

/// Records taken out of a `PutRecords` request.
#[derive(Clone, Debug)]
struct Refused {
    /// Original indices, ascending.
    indices: Vec<usize>,
    total: usize,
    stream: String,
}

#[derive(Debug)]
struct FaultInterceptor {
    service: Service,
    plan: Arc<FaultPlan>,
    /// Attempts so far per operation: the `n` of the plan's decisions.
    attempts: Mutex<HashMap<String, u64>>,
}

impl FaultInterceptor {
    fn next_attempt(&self, operation: &str) -> u64 {
        let mut attempts = self.attempts.lock().unwrap_or_else(|e| e.into_inner());
        let counter = attempts.entry(operation.to_owned()).or_insert(0);
        *counter += 1;
        *counter - 1
    }
}

impl Intercept for FaultInterceptor {
    fn name(&self) -> &'static str {
        "statefun-faults"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let plan = &self.plan;
        let operation = cfg.load::<Metadata>().map(|m| m.name().to_owned()).unwrap_or_default();
        let attempt = self.next_attempt(&operation);
        let decided = plan.attempt(self.service, &operation, attempt);
        let mut decision = Decision {
            service: self.service,
            operation,
            attempt,
            delay: decided.delay,
            fault: decided.fault,
            refused: None,
        };
        if decision.fault == Some(AwsFault::Partial) {
            decision.refused = refuse_records(plan, attempt, context.request_mut());
            if decision.refused.is_none() {
                decision.fault = None;
            }
        }
        if decision.delay.is_some() || decision.fault.is_some() {
            context.request_mut().add_extension(decision);
        }
        Ok(())
    }
}

/// Takes the refused records out of a `PutRecords` body; `None` when none is refused.
fn refuse_records(plan: &FaultPlan, attempt: u64, request: &mut HttpRequest) -> Option<Refused> {
    let mut body: Value = serde_json::from_slice(request.body().bytes()?).ok()?;
    let stream =
        body.get("StreamName").or_else(|| body.get("StreamARN")).and_then(Value::as_str).unwrap_or("?").to_owned();
    let records = body.get_mut("Records")?.as_array_mut()?;
    let total = records.len();
    let indices = plan.refused_records(attempt, total);
    if indices.is_empty() {
        return None;
    }
    if indices.len() < total {
        let kept = std::mem::take(records).into_iter().enumerate().filter(|(i, _)| indices.binary_search(i).is_err());
        *records = kept.map(|(_, record)| record).collect();
        let bytes = serde_json::to_vec(&body).ok()?;
        if request.headers().get("content-length").is_some() {
            request.headers_mut().insert("content-length", bytes.len().to_string());
        }
        *request.body_mut() = SdkBody::from(bytes);
    }
    Some(Refused { indices, total, stream })
}

/// The SDK's HTTP client, with the decisions of [`FaultInterceptor`] carried out.
#[derive(Debug)]
struct FaultHttpClient {
    service: Service,
    inner: Option<SharedHttpClient>,
}

impl HttpClient for FaultHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        let inner = self.inner.as_ref().map(|client| client.http_connector(settings, components));
        FaultConnector { service: self.service, inner }.into_shared()
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.as_ref().map_or(Ok(()), |inner| inner.validate_base_client_config(components, cfg))
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.as_ref().map_or(Ok(()), |inner| inner.validate_final_config(components, cfg))
    }
}

#[derive(Debug)]
struct FaultConnector {
    service: Service,
    inner: Option<SharedHttpConnector>,
}

impl HttpConnector for FaultConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let Some(inner) = self.inner.clone() else {
            let service = self.service.name();
            return HttpConnectorFuture::ready(Err(ConnectorError::other(
                format!("the {service} client has no HTTP client to send requests with").into(),
                None,
            )));
        };
        match request.extension::<Decision>().cloned() {
            None => inner.call(request),
            Some(decision) => HttpConnectorFuture::new(decision.carry_out(inner, request)),
        }
    }
}

impl Decision {
    fn log(&self, what: &str) {
        let (service, operation, attempt) = (self.service.name(), self.operation.as_str(), self.attempt);
        tracing::info!(service, operation, attempt, "injected fault: {what} ({service}.{operation} attempt {attempt})");
    }

    async fn carry_out(self, inner: SharedHttpConnector, request: HttpRequest) -> Result<HttpResponse, ConnectorError> {
        if let Some(delay) = self.delay {
            self.log(&format!("latency {delay:?}"));
            tokio::time::sleep(delay).await;
        }
        match (self.fault, &self.refused) {
            (Some(AwsFault::Error), _) => {
                self.log("error");
                answered_without_a_connection(&request);
                service_error(self.service, &self.operation, request.method(), false)
            }
            (Some(AwsFault::Throttle), _) => {
                self.log("throttling");
                answered_without_a_connection(&request);
                service_error(self.service, &self.operation, request.method(), true)
            }
            (Some(AwsFault::Lost), _) => {
                let answer = inner.call(request).await?;
                self.log(&format!("lost response (HTTP {} dropped)", answer.status()));
                Err(ConnectorError::timeout(
                    format!("no response: the connection broke after the request was sent ({NOTE})").into(),
                ))
            }
            (Some(AwsFault::Partial), Some(refused)) if refused.indices.len() == refused.total => {
                self.log(&format!("all {} records of PutRecords refused", refused.total));
                answered_without_a_connection(&request);
                let body = put_records_answer(Vec::new(), refused).to_string();
                response(200, "application/x-amz-json-1.1", &[], body)
            }
            (Some(AwsFault::Partial), Some(refused)) => {
                let answer = inner.call(request).await?;
                self.log(&format!("{} of {} records of PutRecords refused", refused.indices.len(), refused.total));
                put_refused_back(answer, refused).await
            }
            _ => inner.call(request).await,
        }
    }
}

/// Tells the SDK which connection answered, as a real HTTP client does: none
/// here, so closing it after a transient error (the SDK's connection poisoning)
/// has nothing to do.
fn answered_without_a_connection(request: &HttpRequest) {
    if let Some(capture) = request.extension::<CaptureSmithyConnection>() {
        capture
            .set_connection_retriever(|| Some(ConnectionMetadata::builder().proxied(false).poison_fn(|| {}).build()));
    }
}

/// A `PutRecords` answer with the refused records failed at their original
/// indices among `stored` (the service's entries for the records it was sent).
fn put_records_answer(stored: Vec<Value>, refused: &Refused) -> Value {
    let mut stored = stored.into_iter();
    let mut failed = 0;
    let records: Vec<Value> = (0..refused.total)
        .map(|i| match refused.indices.binary_search(&i) {
            Ok(_) => {
                failed += 1;
                json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": format!("Rate exceeded for shard in stream {} ({NOTE})", refused.stream),
                })
            }
            Err(_) => stored.next().unwrap_or(Value::Null),
        })
        .collect();
    json!({"FailedRecordCount": failed, "Records": records})
}

/// The service's answer to the trimmed request, with the refused records put back.
async fn put_refused_back(mut answer: HttpResponse, refused: &Refused) -> Result<HttpResponse, ConnectorError> {
    if !answer.status().is_success() {
        return Ok(answer);
    }
    let bytes = answer.take_body().collect().await.map_err(ConnectorError::io)?.to_bytes();
    let parsed: Option<(Value, Vec<Value>)> = serde_json::from_slice::<Value>(&bytes).ok().and_then(|body| {
        let records = body.get("Records")?.as_array()?.clone();
        Some((body, records))
    });
    let Some((mut body, stored)) = parsed.filter(|(_, stored)| stored.len() + refused.indices.len() == refused.total)
    else {
        tracing::warn!("fault injection: a PutRecords answer of an unexpected shape is passed on unchanged");
        *answer.body_mut() = SdkBody::from(bytes);
        return Ok(answer);
    };
    let already_failed = body.get("FailedRecordCount").and_then(Value::as_u64).unwrap_or(0);
    let merged = put_records_answer(stored, refused);
    body["Records"] = merged["Records"].clone();
    body["FailedRecordCount"] = json!(already_failed + refused.indices.len() as u64);
    let text = body.to_string();
    answer.headers_mut().insert("content-length", text.len().to_string());
    *answer.body_mut() = SdkBody::from(text);
    Ok(answer)
}

/// The service's own answer to a throttled or failed request.
fn service_error(
    service: Service,
    operation: &str,
    method: &str,
    throttle: bool,
) -> Result<HttpResponse, ConnectorError> {
    const JSON_10: &str = "application/x-amz-json-1.0";
    const JSON_11: &str = "application/x-amz-json-1.1";
    let (status, content_type, headers, body): (u16, &str, Vec<(&str, &str)>, Value) = match (service, throttle) {
        (Service::Kinesis, true) => (
            400,
            JSON_11,
            vec![],
            json!({"__type": "ProvisionedThroughputExceededException", "message": format!("Rate exceeded ({NOTE})")}),
        ),
        (Service::Kinesis, false) => (
            500,
            JSON_11,
            vec![],
            json!({"__type": "InternalFailure", "message": format!("Internal service failure ({NOTE})")}),
        ),
        (Service::DynamoDb, true) if is_item_operation(operation) => (
            400,
            JSON_10,
            vec![],
            json!({
                "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
                "message": format!("The level of configured provisioned throughput for the table was exceeded ({NOTE})"),
            }),
        ),
        (Service::DynamoDb, true) => (
            400,
            JSON_10,
            vec![],
            json!({"__type": "com.amazon.coral.availability#ThrottlingException", "message": format!("Rate of requests exceeds the allowed throughput ({NOTE})")}),
        ),
        (Service::DynamoDb, false) => (
            500,
            JSON_10,
            vec![],
            json!({"__type": "com.amazonaws.dynamodb.v20120810#InternalServerError", "message": format!("Internal server error ({NOTE})")}),
        ),
        (Service::Lambda, true) => (
            429,
            "application/json",
            vec![("x-amzn-errortype", "TooManyRequestsException")],
            json!({"Reason": "ReservedFunctionConcurrentInvocationLimitExceeded", "Type": "User", "message": format!("Rate Exceeded. ({NOTE})")}),
        ),
        (Service::Lambda, false) => (
            500,
            "application/json",
            vec![("x-amzn-errortype", "ServiceException")],
            json!({"Type": "Service", "message": format!("Internal service error ({NOTE})")}),
        ),
        (Service::S3, _) => {
            let (status, code, message) = match throttle {
                true => (503, "SlowDown", "Please reduce your request rate."),
                false => (500, "InternalError", "We encountered an internal error. Please try again."),
            };
            // A HEAD answer has no body: the status alone tells the error.
            let body = match method {
                "HEAD" => String::new(),
                _ => format!(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message} ({NOTE})</Message>\
                     <RequestId>statefun-faults</RequestId><HostId>statefun-faults</HostId></Error>"
                ),
            };
            return response(status, "application/xml", &[("x-amz-request-id", "statefun-faults")], body);
        }
    };
    let mut headers = headers;
    headers.push(("x-amzn-requestid", "statefun-faults"));
    response(status, content_type, &headers, body.to_string())
}

/// DynamoDB operations on items, which throttle with `ProvisionedThroughputExceededException`.
fn is_item_operation(operation: &str) -> bool {
    matches!(
        operation,
        "GetItem"
            | "PutItem"
            | "UpdateItem"
            | "DeleteItem"
            | "Query"
            | "Scan"
            | "BatchGetItem"
            | "BatchWriteItem"
            | "TransactGetItems"
            | "TransactWriteItems"
    )
}

fn response(
    status: u16,
    content_type: &str,
    headers: &[(&str, &str)],
    body: String,
) -> Result<HttpResponse, ConnectorError> {
    let status = StatusCode::try_from(status).map_err(|e| ConnectorError::other(e.into(), None))?;
    let mut response = HttpResponse::new(status, SdkBody::from(body.clone()));
    response.headers_mut().insert("content-type", content_type.to_owned());
    response.headers_mut().insert("content-length", body.len().to_string());
    for (name, value) in headers {
        response.headers_mut().insert(name.to_string(), value.to_string());
    }
    Ok(response)
}
