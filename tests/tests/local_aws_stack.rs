//! `scripts/local-aws.sh up` starts the local AWS stack (LocalStack for S3
//! and Kinesis, moto for DynamoDB, `cargo lambda watch` for the Lambda Invoke
//! API) and `scripts/local-aws.sh env` points the AWS SDKs at it: the stack's
//! own boto3 (in the LocalStack venv), configured by nothing but those
//! variables, uses each service the way the runtime will.
//!
//! The test leaves the stack running (starting it is the slow part; the test
//! command stops it at the end): run `scripts/local-aws.sh down` to stop it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// Runs against the stack with only the variables of `env`; prints one JSON
/// object: per service, `ok` and what it saw (or `error`).
const CHECKS: &str = r#"
import json, os, time, uuid
import boto3
from botocore.config import Config

suffix = uuid.uuid4().hex[:8]
config = Config(retries={"max_attempts": 3}, connect_timeout=5, read_timeout=120)
results = {}

def check(name):
    def run(body):
        try:
            results[name] = {"ok": True, **body()}
        except Exception as error:
            results[name] = {"ok": False, "error": f"{type(error).__name__}: {error}"}
    return run

@check("kinesis")
def _():
    kinesis = boto3.client("kinesis", config=config)
    stream = f"local-aws-test-{suffix}"
    kinesis.create_stream(StreamName=stream, ShardCount=1)
    try:
        kinesis.get_waiter("stream_exists").wait(StreamName=stream, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        put = kinesis.put_record(StreamName=stream, Data=b"hello from the local stack", PartitionKey="key-1")
        iterator = kinesis.get_shard_iterator(
            StreamName=stream, ShardId=put["ShardId"],
            ShardIteratorType="AT_SEQUENCE_NUMBER", StartingSequenceNumber=put["SequenceNumber"],
        )["ShardIterator"]
        records = kinesis.get_records(ShardIterator=iterator, Limit=10)["Records"]
        return {
            "endpoint": kinesis.meta.endpoint_url,
            "records": [{"data": r["Data"].decode(), "key": r["PartitionKey"]} for r in records],
        }
    finally:
        kinesis.delete_stream(StreamName=stream, EnforceConsumerDeletion=True)

@check("s3")
def _():
    s3 = boto3.client("s3", config=config.merge(Config(s3={"addressing_style": "path"})))
    bucket = f"local-aws-test-{suffix}"
    s3.create_bucket(Bucket=bucket)
    try:
        s3.put_object(Bucket=bucket, Key="checkpoints/one", Body=b"\x00snapshot\xff")
        body = s3.get_object(Bucket=bucket, Key="checkpoints/one")["Body"].read()
        return {"endpoint": s3.meta.endpoint_url, "body_hex": body.hex()}
    finally:
        for item in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
            s3.delete_object(Bucket=bucket, Key=item["Key"])
        s3.delete_bucket(Bucket=bucket)

@check("dynamodb")
def _():
    dynamodb = boto3.client("dynamodb", config=config)
    table = f"local-aws-test-{suffix}"
    dynamodb.create_table(
        TableName=table, BillingMode="PAY_PER_REQUEST",
        AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
    )
    try:
        dynamodb.get_waiter("table_exists").wait(TableName=table, WaiterConfig={"Delay": 1, "MaxAttempts": 60})
        first = {"pk": {"S": "partition-0"}, "owner": {"S": "node-a"}}
        dynamodb.put_item(TableName=table, Item=first, ConditionExpression="attribute_not_exists(pk)")
        try:
            dynamodb.put_item(
                TableName=table, Item={"pk": {"S": "partition-0"}, "owner": {"S": "node-b"}},
                ConditionExpression="attribute_not_exists(pk)",
            )
            rejected = None
        except dynamodb.exceptions.ConditionalCheckFailedException as error:
            rejected = error.response["Error"]["Code"]
        owner = dynamodb.get_item(TableName=table, Key={"pk": {"S": "partition-0"}}, ConsistentRead=True)["Item"]["owner"]["S"]
        return {"endpoint": dynamodb.meta.endpoint_url, "rejected_with": rejected, "owner": owner}
    finally:
        dynamodb.delete_table(TableName=table)

@check("lambda")
def _():
    lam = boto3.client("lambda", config=config)
    # An API Gateway proxy event with an empty body: the functions answer a
    # proxy response (status 500: an empty body is no invocation batch).
    event = {"httpMethod": "POST", "path": "/", "headers": {}, "body": "", "isBase64Encoded": True}
    response = lam.invoke(FunctionName="shopping-cart", Payload=json.dumps(event).encode())
    return {
        "endpoint": lam.meta.endpoint_url,
        "status": response["StatusCode"],
        "function_error": response.get("FunctionError"),
        "payload": json.loads(response["Payload"].read()),
    }

print(json.dumps(results))
"#;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn run_script(verb: &str) -> String {
    let output = Command::new("bash")
        .arg(repo_root().join("scripts/local-aws.sh"))
        .arg(verb)
        .output()
        .unwrap_or_else(|e| panic!("run scripts/local-aws.sh {verb}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "scripts/local-aws.sh {verb} failed ({})\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The `export NAME=value` lines of `scripts/local-aws.sh env`.
fn parse_exports(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("export "))
        .filter_map(|assignment| assignment.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.trim_matches(|c| c == '\'' || c == '"').to_owned()))
        .collect()
}

#[test]
fn the_local_stack_serves_kinesis_s3_dynamodb_and_the_cart_lambda_to_sdks_configured_by_its_env() {
    let up = run_script("up");
    eprintln!("{up}");

    let env = parse_exports(&run_script("env"));
    for name in [
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_DYNAMODB",
        "AWS_ENDPOINT_URL_LAMBDA",
        "AWS_REGION",
        "AWS_DEFAULT_REGION",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
    ] {
        assert!(env.get(name).is_some_and(|v| !v.is_empty()), "`env` sets {name}: {env:?}");
    }
    assert_eq!(env["AWS_REGION"], "us-east-1");
    for name in ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_ENDPOINT_URL_LAMBDA"] {
        assert!(env[name].starts_with("http://127.0.0.1:"), "{name} is on loopback: {}", env[name]);
    }

    // The stack's boto3 with nothing but `env`'s variables (no inherited AWS_* settings).
    let python = repo_root().join(".local/aws/venv-localstack/bin/python");
    let mut command = Command::new(&python);
    command.arg("-c").arg(CHECKS);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let output = command.envs(&env).output().unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the boto3 checks failed\nstdout:\n{stdout}\nstderr:\n{stderr}");
    let results: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    for service in ["kinesis", "s3", "dynamodb", "lambda"] {
        assert_eq!(results[service]["ok"], true, "{service}: {}", results[service]);
    }

    let kinesis = &results["kinesis"];
    assert_eq!(kinesis["endpoint"], env["AWS_ENDPOINT_URL"].as_str(), "{kinesis}");
    assert_eq!(
        kinesis["records"],
        serde_json::json!([{"data": "hello from the local stack", "key": "key-1"}]),
        "the record put is read back: {kinesis}"
    );

    let s3 = &results["s3"];
    assert_eq!(s3["endpoint"], env["AWS_ENDPOINT_URL"].as_str(), "{s3}");
    assert_eq!(s3["body_hex"], "00736e617073686f74ff", "the object put is read back byte for byte: {s3}");

    let dynamodb = &results["dynamodb"];
    assert_eq!(dynamodb["endpoint"], env["AWS_ENDPOINT_URL_DYNAMODB"].as_str(), "{dynamodb}");
    assert_eq!(
        dynamodb["rejected_with"], "ConditionalCheckFailedException",
        "a PutItem whose condition fails is rejected: {dynamodb}"
    );
    assert_eq!(dynamodb["owner"], "node-a", "the rejected PutItem changed nothing: {dynamodb}");

    let lambda = &results["lambda"];
    assert_eq!(lambda["endpoint"], env["AWS_ENDPOINT_URL_LAMBDA"].as_str(), "{lambda}");
    assert_eq!(lambda["status"], 200, "{lambda}");
    assert_eq!(lambda["function_error"], Value::Null, "{lambda}");
    assert!(
        lambda["payload"]["statusCode"].is_number(),
        "shopping-cart answers an API Gateway proxy response: {lambda}"
    );
}
