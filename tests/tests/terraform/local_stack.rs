//! `infra/terraform/local` applied to the local AWS stack, the shopping cart
//! run on what it made, and `terraform destroy` (see the parent module).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefun_tests::aws::{AwsDeployment, local_aws_env, repo_root, unique_suffix};
use statefun_tests::cart::{self, Shape};
use statefun_tests::{FunctionServer, Runtime, dead_letters_json, send_lines, wait_until};

use super::{PARTITIONS, Workspace, elapsed};

/// As in aws_shopping_cart.rs: a busy local stack (other suites, the shared egress streams growing)
/// can make the run take far longer than its usual few seconds.
const TIMEOUT: Duration = Duration::from_secs(300);

/// Looks at the local stack with its own boto3 (the LocalStack venv's), given
/// only the stack's variables.
///
/// `ensure-streams {"name": shards}`: creates the streams that are missing.
/// `describe {"streams": [...], "table": ..., "bucket": ..., "prefix": ...}`: what
/// exists of them (null for what does not), as JSON.
const INSPECT: &str = r#"
import json, sys
import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

verb, spec = sys.argv[1], json.loads(sys.argv[2])
config = Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=5, read_timeout=60)
kinesis = boto3.client("kinesis", config=config)

def code(error):
    return error.response.get("Error", {}).get("Code", "")

if verb == "ensure-streams":
    for name, shards in spec.items():
        try:
            kinesis.create_stream(StreamName=name, ShardCount=shards)
        except ClientError as error:
            if code(error) != "ResourceInUseException":
                raise
    for name in spec:
        kinesis.get_waiter("stream_exists").wait(StreamName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    print("{}")
    sys.exit(0)

dynamodb = boto3.client("dynamodb", config=config)
s3 = boto3.client("s3", config=config.merge(Config(s3={"addressing_style": "path"})))
found = {"streams": {}, "table": None, "bucket": None}
for name in spec["streams"]:
    try:
        summary = kinesis.describe_stream_summary(StreamName=name)["StreamDescriptionSummary"]
        found["streams"][name] = {
            "status": summary["StreamStatus"],
            "open_shards": summary["OpenShardCount"],
            "mode": summary.get("StreamModeDetails", {}).get("StreamMode", "PROVISIONED"),
        }
    except ClientError as error:
        if code(error) != "ResourceNotFoundException":
            raise
        found["streams"][name] = None
try:
    table = dynamodb.describe_table(TableName=spec["table"])["Table"]
    backups = dynamodb.describe_continuous_backups(TableName=spec["table"])["ContinuousBackupsDescription"]
    found["table"] = {
        "key_schema": table["KeySchema"],
        "attributes": table["AttributeDefinitions"],
        "billing_mode": table.get("BillingModeSummary", {}).get("BillingMode"),
        "point_in_time_recovery": backups["PointInTimeRecoveryDescription"]["PointInTimeRecoveryStatus"],
        "items": dynamodb.scan(TableName=spec["table"], Select="COUNT", ConsistentRead=True)["Count"],
    }
except ClientError as error:
    if code(error) != "ResourceNotFoundException":
        raise
try:
    s3.head_bucket(Bucket=spec["bucket"])
    rules = s3.get_bucket_encryption(Bucket=spec["bucket"])["ServerSideEncryptionConfiguration"]["Rules"]
    found["bucket"] = {
        "encryption": rules[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"],
        "public_access_block": s3.get_public_access_block(Bucket=spec["bucket"])["PublicAccessBlockConfiguration"],
        "versioning": s3.get_bucket_versioning(Bucket=spec["bucket"]).get("Status"),
        "checkpoints": s3.list_objects_v2(Bucket=spec["bucket"], Prefix=spec["prefix"]).get("KeyCount", 0),
    }
except ClientError as error:
    if code(error) not in ("404", "NoSuchBucket"):
        raise
print(json.dumps(found))
"#;

fn inspect(verb: &str, spec: &Value) -> Value {
    let python = repo_root().join(".local/aws/venv-localstack/bin/python");
    let mut command = Command::new(&python);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            command.env_remove(name);
        }
    }
    let output = command
        .arg("-c")
        .arg(INSPECT)
        .arg(verb)
        .arg(spec.to_string())
        .envs(local_aws_env().iter().map(|(k, v)| (k, v)))
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "inspecting the local stack ({verb}) failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// `terraform destroy` on the way out, should the test fail before its own.
struct Applied<'a> {
    workspace: &'a Workspace,
    config: PathBuf,
    destroyed: bool,
}

impl Applied<'_> {
    fn destroy(&mut self) {
        self.destroyed = true;
        self.workspace.terraform(&self.config, &["destroy", "-auto-approve", "-no-color"]);
    }
}

impl Drop for Applied<'_> {
    fn drop(&mut self) {
        if !self.destroyed {
            self.destroyed = true;
            if let Err(e) = self.workspace.run(&self.config, &["destroy", "-auto-approve", "-no-color"]) {
                eprintln!("terraform destroy after a failure failed too:\n{e}");
            }
        }
    }
}

#[test]
fn terraform_creates_the_resources_the_shopping_cart_runs_on_and_destroy_removes_them() {
    let env = local_aws_env();
    let endpoint = |name: &str| {
        env.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{name} in the stack's env"))
    };
    let suffix = unique_suffix();
    let name = format!("statefun-tf-{suffix}");
    let ingress = [format!("add-to-cart-{suffix}"), format!("restock-{suffix}")];

    let workspace = Workspace::new();
    let config = workspace.config("local");
    let vars = json!({
        "name": name,
        "partitions": PARTITIONS,
        "ingress_streams": ingress,
        "stream_shards": 2,
        "localstack_endpoint": endpoint("AWS_ENDPOINT_URL"),
        "dynamodb_endpoint": endpoint("AWS_ENDPOINT_URL_DYNAMODB"),
    });
    std::fs::write(config.join("test.auto.tfvars.json"), vars.to_string()).expect("write tfvars");
    workspace.init(&config, true);
    let started = Instant::now();
    let mut applied = Applied { workspace: &workspace, config: config.clone(), destroyed: false };
    workspace.terraform(&config, &["apply", "-auto-approve", "-no-color"]);
    let apply_time = elapsed(started);

    let outputs: Value =
        serde_json::from_str(&workspace.terraform(&config, &["output", "-json"])).expect("outputs JSON");
    let environment: Vec<(String, String)> = outputs["statefun_environment"]["value"]
        .as_object()
        .expect("statefun_environment")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
        .collect();
    let output = |key: &str| outputs[key]["value"].as_str().unwrap_or_default().to_owned();
    let (table, bucket, prefix) = (output("table_name"), output("bucket_name"), output("checkpoint_prefix"));
    let (exchange, dead_letters) = (output("exchange_stream_name"), output("dead_letter_stream_name"));
    assert_eq!(outputs["ingress_stream_names"]["value"], json!(ingress));
    let streams: Vec<&String> = ingress.iter().chain([&exchange, &dead_letters]).collect();
    let spec = json!({"streams": streams, "table": table, "bucket": bucket, "prefix": prefix});

    // What Terraform made has the shapes `statefun setup` gives (runtime/src/cli/setup.rs).
    let made = inspect("describe", &spec);
    for (stream, shards) in [(&ingress[0], 2), (&ingress[1], 2), (&exchange, PARTITIONS), (&dead_letters, 1)] {
        let found = &made["streams"][stream.as_str()];
        assert_eq!(found["status"], "ACTIVE", "{stream}: {found}");
        assert_eq!(found["open_shards"], shards, "{stream}: {found}");
        assert_eq!(found["mode"], "PROVISIONED", "{stream}: {found}");
    }
    let found_table = &made["table"];
    assert_eq!(found_table["key_schema"], json!([{"AttributeName": "partition", "KeyType": "HASH"}]), "{found_table}");
    assert_eq!(
        found_table["attributes"],
        json!([{"AttributeName": "partition", "AttributeType": "N"}]),
        "{found_table}"
    );
    assert_eq!(found_table["billing_mode"], "PAY_PER_REQUEST", "{found_table}");
    assert_eq!(found_table["point_in_time_recovery"], "ENABLED", "{found_table}");
    assert_eq!(found_table["items"], 0, "{found_table}");
    let found_bucket = &made["bucket"];
    assert_eq!(found_bucket["encryption"], "AES256", "{found_bucket}");
    assert_eq!(
        found_bucket["public_access_block"],
        json!({"BlockPublicAcls": true, "IgnorePublicAcls": true, "BlockPublicPolicy": true, "RestrictPublicBuckets": true}),
        "{found_bucket}"
    );
    assert_eq!(found_bucket["versioning"], "Enabled", "{found_bucket}");

    // The example functions write to fixed egress streams that every deployment on the stack
    // shares (aws_shopping_cart.rs creates them the same way): they are not this deployment's.
    inspect("ensure-streams", &json!({"cart-results": 2, "inventory-updates": 2}));

    // The shopping cart on exactly what Terraform made: nothing else names a table, bucket or stream.
    let run_started = Instant::now();
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::on_existing_resources(&suffix, &environment);
    let endpoints = format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun",
        server.addr
    );
    let module = deployment.shopping_cart_module(&endpoints);
    let workload = cart::generate(
        &format!("terraform-{suffix}-"),
        Shape { users: 20, events: 200, plenty: 3, scarce: 1, missing: 1, seed: 21 },
    );
    let mut runtime = Runtime::start(&deployment, &module, &[]);
    send_lines(&deployment, &module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "restocks to be applied", || workload.restocks_applied(&deployment) == workload.restocks.len());
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(&workload.orders));
    wait_until(TIMEOUT, "a result for every order", || workload.results(&deployment).len() >= workload.orders.len());
    assert!(runtime.terminate().success(), "runtime log:\n{}", runtime.log_text());
    let report = cart::check(&deployment, &workload);
    assert_eq!(report.redelivered, 0, "no crash, so no result is delivered twice");
    assert!(dead_letters_json(&deployment).is_empty(), "no dead letters; runtime log:\n{}", runtime.log_text());
    let run_time = elapsed(run_started);

    let used = inspect("describe", &spec);
    assert_eq!(
        used["table"]["items"], PARTITIONS,
        "a commit record per partition in the Terraform table: {}",
        used["table"]
    );
    assert!(
        used["bucket"]["checkpoints"].as_u64().unwrap_or(0) > 0,
        "checkpoints under {prefix} in the Terraform bucket: {}",
        used["bucket"]
    );

    let destroy_started = Instant::now();
    applied.destroy();
    let state = workspace.terraform(&config, &["state", "list"]);
    assert!(state.trim().is_empty(), "the state still lists:\n{state}");
    let gone = inspect("describe", &spec);
    for stream in &streams {
        assert_eq!(gone["streams"][stream.as_str()], Value::Null, "{stream} is gone after destroy: {gone}");
    }
    assert_eq!(gone["table"], Value::Null, "the table is gone after destroy: {gone}");
    assert_eq!(gone["bucket"], Value::Null, "the bucket is gone after destroy: {gone}");
    eprintln!(
        "terraform apply {apply_time}; {} events, {} results checked in {run_time}; destroy {}",
        workload.orders.len(),
        report.results.len(),
        elapsed(destroy_started)
    );
}
