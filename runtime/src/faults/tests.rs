//! The plan's grammar and decisions, and the layers against fake transports:
//! what a caller of the real SDK clients and of the invoker gets.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_smithy_runtime_api::client::http::{
    HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpConnector,
};
use aws_smithy_runtime_api::client::orchestrator::{HttpRequest, HttpResponse};
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_runtime_api::http::StatusCode;
use aws_smithy_runtime_api::shared::IntoShared;
use aws_smithy_types::body::SdkBody;
use prost::Message;
use serde_json::{Value, json};
use statefun_proto::reqreply::to_function::InvocationBatchRequest;
use statefun_proto::reqreply::{Address, ToFunction, to_function};

use super::sdk::Layer;
use super::*;
use crate::BoxFuture;
use crate::address::FunctionType;
use crate::invoke::{FunctionClient, InvokeError};

fn error_of(text: &str) -> FaultPlanError {
    FaultPlan::parse(text).expect_err("an invalid plan")
}

fn address(namespace: &str, name: &str, id: &str) -> Address {
    Address { namespace: namespace.into(), r#type: name.into(), id: id.into() }
}

// --- grammar --------------------------------------------------------------------------------

#[test]
fn a_plan_reads_seed_services_operations_rates_latencies_and_invoke_rules() {
    let plan = FaultPlan::parse(
        " seed=42 ; aws.throttle=5%; s3.error=0.1;dynamodb.UpdateItem.lost=1; kinesis.PutRecords.partial=0.25;
          kinesis.latency=10ms..20ms@50%; lambda.latency=5ms; invoke:shoppingcart/cart/bad-*.error=1; invoke.timeout=0 ;",
    )
    .expect("a valid plan");
    assert_eq!(plan.seed, 42);
    assert_eq!(plan.aws.len(), 6);
    assert_eq!(
        plan.aws[0],
        AwsRule {
            service: None,
            operation: None,
            fault: AwsFault::Throttle,
            rate: 0.05,
            delay: (Duration::ZERO, Duration::ZERO)
        }
    );
    assert_eq!(plan.aws[2].operation.as_deref(), Some("UpdateItem"));
    assert_eq!(plan.aws[4].delay, (Duration::from_millis(10), Duration::from_millis(20)));
    assert_eq!(plan.aws[4].rate, 0.5);
    assert_eq!((plan.aws[5].rate, plan.aws[5].delay.0), (1.0, Duration::from_millis(5)));
    assert_eq!(plan.invoke.len(), 2);
    assert_eq!(plan.invoke[0].fault, InvokeFault::Error);
    assert_eq!(plan.invoke[1].pattern, None);
    assert!(Service::ALL.iter().all(|s| plan.covers(*s)));
    assert!(plan.has_invoke_faults());
}

#[test]
fn an_empty_plan_has_nothing_and_a_plan_for_one_service_covers_only_it() {
    assert_eq!(FaultPlan::parse(" ; ").expect("empty"), FaultPlan::default());
    let plan = FaultPlan::parse("dynamodb.GetItem.error=1").expect("valid");
    assert!(plan.covers(Service::DynamoDb));
    assert!(!plan.covers(Service::S3) && !plan.covers(Service::Kinesis) && !plan.covers(Service::Lambda));
    assert!(!plan.has_invoke_faults());
}

#[test]
fn errors_name_the_item_and_what_is_wrong_with_it() {
    let cases = [
        ("s3.error=0.1; sqs.error=0.1", "sqs.error=0.1", "unknown service `sqs`"),
        ("kinesis.slow=0.1", "kinesis.slow=0.1", "unknown fault `slow`"),
        ("kinesis.error", "kinesis.error", "expected `target.fault=value`"),
        ("kinesis=0.1", "kinesis=0.1", "names no fault"),
        ("s3.error=1.5", "s3.error=1.5", "rate `1.5` is not between 0 and 1"),
        ("s3.error=often", "s3.error=often", "rate `often` is not a number"),
        ("s3.error=150%", "s3.error=150%", "not between 0 and 1"),
        ("seed=-1", "seed=-1", "seed `-1`"),
        ("kinesis.latency=fast", "kinesis.latency=fast", "latency `fast` is not a duration"),
        ("kinesis.latency=50ms..10ms", "kinesis.latency=50ms..10ms", "ends before it starts"),
        ("kinesis.latency=10ms@2", "kinesis.latency=10ms@2", "rate `2`"),
        ("s3.partial=0.1", "s3.partial=0.1", "kinesis.PutRecords only"),
        ("kinesis.GetRecords.partial=0.1", "kinesis.GetRecords.partial=0.1", "kinesis.PutRecords only"),
        ("kinesis.put_records.error=1", "kinesis.put_records.error=1", "operation `put_records`"),
        ("aws.PutRecords.error=1", "aws.PutRecords.error=1", "takes no operation"),
        ("invoke:cart.error=1", "invoke:cart.error=1", "address pattern `cart`"),
        ("invoke:shop/cart/.error=1", "invoke:shop/cart/.error=1", "empty id"),
        ("invoke:shop/cart.crash=1", "invoke:shop/cart.crash=1", "unknown invoke fault `crash`"),
    ];
    for (text, item, detail) in cases {
        let error = error_of(text);
        assert_eq!(error.item, item, "{text}");
        assert!(error.detail.contains(detail), "{text}: {}", error.detail);
        let shown = error.to_string();
        assert!(shown.starts_with("STATEFUN_FAULTS: item `") && shown.contains(item), "{shown}");
    }
}

#[test]
fn globs_match_runs_and_single_characters() {
    assert!(glob("user-00?", "user-007"));
    assert!(!glob("user-00?", "user-0071"));
    assert!(glob("*", ""));
    assert!(glob("a*b*c", "a-x-b-y-b-c"));
    assert!(!glob("a*b*c", "a-x-c-b"));
    assert!(glob("*-bad", "lambda-1-bad"));
    assert!(!glob("bad", "badge"));
}

// --- decisions ------------------------------------------------------------------------------

#[test]
fn the_most_specific_rule_wins_and_the_later_among_equals() {
    let plan = FaultPlan::parse("aws.error=1; kinesis.error=0; kinesis.PutRecords.error=1; s3.error=0; s3.error=1")
        .expect("valid");
    assert_eq!(plan.attempt(Service::Kinesis, "PutRecords", 0).fault, Some(AwsFault::Error));
    assert_eq!(plan.attempt(Service::Kinesis, "GetRecords", 0).fault, None, "kinesis.error=0 overrides aws.error=1");
    assert_eq!(plan.attempt(Service::DynamoDb, "GetItem", 0).fault, Some(AwsFault::Error), "aws.error applies");
    assert_eq!(plan.attempt(Service::S3, "PutObject", 0).fault, Some(AwsFault::Error), "the later s3.error wins");
}

#[test]
fn error_comes_before_throttle_before_lost_and_partial_only_when_nothing_else_fires() {
    let all =
        FaultPlan::parse("kinesis.error=1; kinesis.throttle=1; kinesis.lost=1; kinesis.partial=1").expect("valid");
    assert_eq!(all.attempt(Service::Kinesis, "PutRecords", 3).fault, Some(AwsFault::Error));
    let no_error = FaultPlan::parse("kinesis.throttle=1; kinesis.lost=1; kinesis.partial=1").expect("valid");
    assert_eq!(no_error.attempt(Service::Kinesis, "PutRecords", 3).fault, Some(AwsFault::Throttle));
    let lost = FaultPlan::parse("kinesis.lost=1; kinesis.partial=1").expect("valid");
    assert_eq!(lost.attempt(Service::Kinesis, "PutRecords", 3).fault, Some(AwsFault::Lost));
    let partial = FaultPlan::parse("kinesis.partial=0.1").expect("valid");
    assert_eq!(partial.attempt(Service::Kinesis, "PutRecords", 3).fault, Some(AwsFault::Partial));
    assert_eq!(partial.attempt(Service::Kinesis, "GetRecords", 3).fault, None, "partial applies to PutRecords only");
}

#[test]
fn decisions_follow_the_rate_and_repeat_with_the_seed() {
    let plan = FaultPlan::parse("seed=7; s3.throttle=0.2").expect("valid");
    let fired: Vec<bool> = (0..5000).map(|n| plan.attempt(Service::S3, "PutObject", n).fault.is_some()).collect();
    let count = fired.iter().filter(|f| **f).count();
    assert!((850..1150).contains(&count), "about 20% of 5000 attempts throttled, got {count}");
    let again: Vec<bool> = (0..5000).map(|n| plan.attempt(Service::S3, "PutObject", n).fault.is_some()).collect();
    assert_eq!(fired, again, "the same seed decides the same");
    let other = FaultPlan::parse("seed=8; s3.throttle=0.2").expect("valid");
    let reseeded: Vec<bool> = (0..5000).map(|n| other.attempt(Service::S3, "PutObject", n).fault.is_some()).collect();
    assert_ne!(fired, reseeded, "another seed decides otherwise");
    let never = FaultPlan::parse("s3.throttle=0").expect("valid");
    assert!((0..1000).all(|n| never.attempt(Service::S3, "PutObject", n).fault.is_none()));
}

#[test]
fn latency_lies_in_its_range() {
    let plan = FaultPlan::parse("kinesis.latency=10ms..20ms").expect("valid");
    let delays: Vec<Duration> =
        (0..200).filter_map(|n| plan.attempt(Service::Kinesis, "GetRecords", n).delay).collect();
    assert_eq!(delays.len(), 200, "a latency without a rate applies to every attempt");
    assert!(delays.iter().all(|d| (Duration::from_millis(10)..=Duration::from_millis(20)).contains(d)), "{delays:?}");
    assert!(delays.iter().any(|d| *d != delays[0]), "delays spread over the range");
    assert_eq!(plan.attempt(Service::S3, "GetObject", 0), Attempt::default());
}

#[test]
fn refused_records_follow_the_per_record_rate() {
    let plan = FaultPlan::parse("seed=3; kinesis.partial=0.3").expect("valid");
    let refused: usize = (0..100).map(|n| plan.refused_records(n, 50).len()).sum();
    assert!((1300..1700).contains(&refused), "about 30% of 5000 records refused, got {refused}");
    let once = plan.refused_records(5, 50);
    assert_eq!(once, plan.refused_records(5, 50));
    assert!(once.windows(2).all(|w| w[0] < w[1]) && once.iter().all(|i| *i < 50));
    assert!(FaultPlan::parse("kinesis.error=1").expect("valid").refused_records(0, 50).is_empty());
}

#[test]
fn invoke_rules_match_type_and_id_patterns_and_the_first_that_fires_decides() {
    let plan = FaultPlan::parse(
        "invoke:shop/cart/bad-*.error=1; invoke:shop/*/slow-?.timeout=1; invoke:shop/inventory.error=0",
    )
    .expect("valid");
    let fault = |a: &Address| plan.invoke_fault(a, 0).map(|(f, _)| f);
    assert_eq!(fault(&address("shop", "cart", "bad-1")), Some(InvokeFault::Error));
    assert_eq!(
        plan.invoke_fault(&address("shop", "cart", "bad-1"), 9).map(|(_, rule)| rule),
        Some("invoke:shop/cart/bad-*.error=1")
    );
    assert_eq!(fault(&address("shop", "cart", "good-1")), None);
    assert_eq!(fault(&address("shop", "inventory", "slow-2")), Some(InvokeFault::Timeout));
    assert_eq!(fault(&address("shop", "inventory", "slow-22")), None);
    assert_eq!(fault(&address("other", "cart", "bad-1")), None);
    let everything = FaultPlan::parse("invoke.error=1").expect("valid");
    assert!(everything.invoke_fault(&address("a", "b", "c"), 0).is_some());
}

// --- the AWS layer against a fake service ---------------------------------------------------

/// Answers every request with `answer` and keeps what it was sent.
#[derive(Clone, Debug)]
struct FakeService {
    /// The bodies of the requests it was sent.
    sent: Arc<Mutex<Vec<Vec<u8>>>>,
    answer: fn(&HttpRequest) -> (u16, String),
}

impl FakeService {
    fn new(answer: fn(&HttpRequest) -> (u16, String)) -> Self {
        Self { sent: Arc::new(Mutex::new(Vec::new())), answer }
    }

    fn sent(&self) -> Vec<Vec<u8>> {
        self.sent.lock().expect("lock").clone()
    }
}

impl HttpClient for FakeService {
    fn http_connector(&self, _: &HttpConnectorSettings, _: &RuntimeComponents) -> SharedHttpConnector {
        self.clone().into_shared()
    }
}

impl HttpConnector for FakeService {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let body = request.body().bytes().map(<[u8]>::to_vec).unwrap_or_default();
        self.sent.lock().expect("lock").push(body);
        let (status, body) = (self.answer)(&request);
        let mut response = HttpResponse::new(StatusCode::try_from(status).expect("status"), SdkBody::from(body));
        response.headers_mut().insert("content-type", "application/x-amz-json-1.1");
        HttpConnectorFuture::ready(Ok(response))
    }
}

/// Kinesis' answer to `PutRecords`: every record stored, with its data as sequence number.
fn stored_all(request: &HttpRequest) -> (u16, String) {
    let body: Value = serde_json::from_slice(request.body().bytes().unwrap_or_default()).unwrap_or_default();
    let records: Vec<Value> = body["Records"]
        .as_array()
        .map(|records| {
            records.iter().map(|r| json!({"SequenceNumber": r["Data"], "ShardId": "shardId-000000000000"})).collect()
        })
        .unwrap_or_default();
    (200, json!({"FailedRecordCount": 0, "Records": records}).to_string())
}

fn ok_empty(_: &HttpRequest) -> (u16, String) {
    (200, "{}".to_owned())
}

macro_rules! client_with_layer {
    ($sdk:ident, $service:expr, $plan:expr, $fake:expr) => {{
        let layer = Layer::new($service, Arc::new(FaultPlan::parse($plan).expect("valid plan")));
        let mut builder = $sdk::Config::builder()
            .behavior_version($sdk::config::BehaviorVersion::latest())
            .region($sdk::config::Region::new("us-east-1"))
            .credentials_provider($sdk::config::Credentials::new("key", "secret", None, None, "test"))
            .endpoint_url("http://127.0.0.1:9")
            .retry_config($sdk::config::retry::RetryConfig::disabled());
        builder.set_http_client(Some(layer.http_client(Some($fake.clone().into_shared()))));
        builder.push_interceptor(layer.interceptor);
        $sdk::Client::from_conf(builder.build())
    }};
}

fn entries(n: usize) -> Vec<aws_sdk_kinesis::types::PutRecordsRequestEntry> {
    (0..n)
        .map(|i| {
            aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                .data(aws_sdk_kinesis::primitives::Blob::new(format!("r{i}")))
                .partition_key("k")
                .build()
                .expect("entry")
        })
        .collect()
}

#[tokio::test]
async fn throttling_and_errors_answer_in_the_services_place_without_sending() {
    let fake = FakeService::new(stored_all);
    let kinesis = client_with_layer!(aws_sdk_kinesis, Service::Kinesis, "kinesis.PutRecords.throttle=1", fake);
    let error =
        kinesis.put_records().stream_name("s").set_records(Some(entries(2))).send().await.expect_err("throttled");
    let service = error.as_service_error().expect("a service error");
    assert!(service.is_provisioned_throughput_exceeded_exception(), "{service:?}");
    assert_eq!(crate::aws::classify("PutRecords", &error).kind, crate::aws::FailureKind::Retryable);
    assert!(fake.sent().is_empty(), "a throttled request is not sent");
    kinesis.list_shards().stream_name("s").send().await.expect("other operations pass");
    assert_eq!(fake.sent().len(), 1);

    let fake = FakeService::new(ok_empty);
    let dynamo = client_with_layer!(aws_sdk_dynamodb, Service::DynamoDb, "dynamodb.throttle=1", fake);
    let error = dynamo.update_item().table_name("t").send().await.expect_err("throttled");
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error),
        Some("ProvisionedThroughputExceededException")
    );
    let error = dynamo.describe_table().table_name("t").send().await.expect_err("throttled");
    assert_eq!(aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error), Some("ThrottlingException"));
    let dynamo = client_with_layer!(aws_sdk_dynamodb, Service::DynamoDb, "aws.error=1", fake);
    let error = dynamo.get_item().table_name("t").send().await.expect_err("failed");
    assert_eq!(aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&error), Some("InternalServerError"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(500));
    assert!(fake.sent().is_empty());

    let s3 = client_with_layer!(aws_sdk_s3, Service::S3, "s3.throttle=1", fake);
    let error = s3.get_object().bucket("b").key("k").send().await.expect_err("throttled");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&error), Some("SlowDown"));
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(503));
    let error = s3.head_object().bucket("b").key("k").send().await.expect_err("throttled");
    assert_eq!(error.raw_response().map(|r| r.status().as_u16()), Some(503));
    assert_eq!(crate::aws::classify("HeadObject", &error).kind, crate::aws::FailureKind::Retryable);
    let s3 = client_with_layer!(aws_sdk_s3, Service::S3, "s3.error=1", fake);
    let error = s3.put_object().bucket("b").key("k").send().await.expect_err("failed");
    assert_eq!(aws_sdk_s3::error::ProvideErrorMetadata::code(&error), Some("InternalError"));

    let lambda = client_with_layer!(aws_sdk_lambda, Service::Lambda, "lambda.throttle=1", fake);
    let error = lambda.invoke().function_name("f").send().await.expect_err("throttled");
    assert!(error.as_service_error().is_some_and(|e| e.is_too_many_requests_exception()), "{error:?}");
    assert!(fake.sent().is_empty());
}

#[tokio::test]
async fn a_lost_response_is_sent_and_applied_but_the_caller_gets_a_timeout() {
    let fake = FakeService::new(ok_empty);
    let dynamo = client_with_layer!(aws_sdk_dynamodb, Service::DynamoDb, "dynamodb.UpdateItem.lost=1", fake);
    let error = dynamo.update_item().table_name("t").send().await.expect_err("lost");
    assert_eq!(fake.sent().len(), 1, "the request reached the service");
    match &error {
        aws_sdk_dynamodb::error::SdkError::DispatchFailure(failure) => assert!(failure.is_timeout(), "{error:?}"),
        other => panic!("expected a dispatch timeout, got {other:?}"),
    }
    assert_eq!(crate::aws::classify("UpdateItem", &error).kind, crate::aws::FailureKind::Retryable);
}

#[tokio::test]
async fn refused_records_are_not_sent_and_come_back_failed_at_their_indices() {
    let fake = FakeService::new(stored_all);
    let plan = "seed=1; kinesis.partial=0.4";
    let kinesis = client_with_layer!(aws_sdk_kinesis, Service::Kinesis, plan, fake);
    let expected = FaultPlan::parse(plan).expect("valid").refused_records(0, 20);
    assert!(!expected.is_empty() && expected.len() < 20, "the seed refuses some records: {expected:?}");
    let output = kinesis.put_records().stream_name("s").set_records(Some(entries(20))).send().await.expect("answered");
    assert_eq!(output.failed_record_count(), Some(expected.len() as i32));
    let sent = fake.sent();
    assert_eq!(sent.len(), 1);
    let body: Value = serde_json::from_slice(&sent[0]).expect("JSON");
    let sent_data: Vec<String> = body["Records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Data"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(sent_data.len(), 20 - expected.len(), "refused records are taken out of the request");
    let mut kept = sent_data.iter();
    for (i, result) in output.records().iter().enumerate() {
        let data = aws_sdk_kinesis::primitives::Blob::new(format!("r{i}"));
        if expected.contains(&i) {
            assert_eq!(result.error_code(), Some("ProvisionedThroughputExceededException"), "record {i}");
            assert!(result.sequence_number().is_none());
        } else {
            // The fake answered with each stored record's (base64) data as its sequence number.
            assert_eq!(result.sequence_number(), kept.next().map(String::as_str), "record {i} ({data:?})");
            assert!(result.error_code().is_none());
        }
    }
    assert_eq!(output.records().len(), 20);

    let fake = FakeService::new(stored_all);
    let kinesis = client_with_layer!(aws_sdk_kinesis, Service::Kinesis, "kinesis.partial=1", fake);
    let output = kinesis.put_records().stream_name("s").set_records(Some(entries(3))).send().await.expect("answered");
    assert_eq!(output.failed_record_count(), Some(3));
    assert!(output.records().iter().all(|r| r.error_code() == Some("ProvisionedThroughputExceededException")));
    assert!(fake.sent().is_empty(), "a request whose records are all refused is not sent");
}

// --- the invoke wrapper ---------------------------------------------------------------------

struct EchoFunction {
    calls: Mutex<u32>,
}

impl FunctionClient for EchoFunction {
    fn call<'a>(
        &'a self,
        _: &'a FunctionType,
        request: Vec<u8>,
        _: Duration,
    ) -> BoxFuture<'a, Result<Vec<u8>, InvokeError>> {
        *self.calls.lock().expect("lock") += 1;
        Box::pin(async move { Ok(request) })
    }
}

fn request_for(target: Address) -> Vec<u8> {
    let batch = InvocationBatchRequest { target: Some(target), ..Default::default() };
    ToFunction { request: Some(to_function::Request::Invocation(batch)) }.encode_to_vec()
}

/// The timeout the calls below are given: a `timeout` fault waits it out.
const TIMEOUT: Duration = Duration::from_millis(20);

#[tokio::test]
async fn chosen_addresses_fail_or_time_out_and_the_others_reach_the_function() {
    let echo = Arc::new(EchoFunction { calls: Mutex::new(0) });
    let plan =
        Arc::new(FaultPlan::parse("invoke:shop/cart/bad-*.error=1; invoke:shop/cart/slow.timeout=1").expect("valid"));
    let client = invoke::wrap(echo.clone(), Some(&plan));
    let function_type = FunctionType { namespace: "shop".into(), name: "cart".into() };

    let error =
        client.call(&function_type, request_for(address("shop", "cart", "bad-7")), TIMEOUT).await.expect_err("fails");
    assert!(matches!(&error, InvokeError::Function(m) if m.contains("invoke:shop/cart/bad-*.error=1")), "{error}");
    let error = client
        .call(&function_type, request_for(address("shop", "cart", "slow")), TIMEOUT)
        .await
        .expect_err("times out");
    assert!(matches!(error, InvokeError::Timeout(d) if d == TIMEOUT), "{error}");
    assert_eq!(*echo.calls.lock().expect("lock"), 0);

    let request = request_for(address("shop", "cart", "good"));
    assert_eq!(client.call(&function_type, request.clone(), TIMEOUT).await.expect("passes"), request);
    assert_eq!(*echo.calls.lock().expect("lock"), 1);

    let untouched: Arc<dyn FunctionClient> = echo.clone();
    let without = invoke::wrap(untouched.clone(), None);
    assert!(Arc::ptr_eq(&without, &untouched), "no plan, no wrapper");
}
