//! The example's plan, made offline, checked for what it grants and how it
//! wires the workers (see the parent module).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Value, json};
use statefun_tests::aws::repo_root;
use statefun_tests::workspace_bin;

use super::{PARTITIONS, Workspace, elapsed, flat};

/// The account the stand-in STS reports.
const PLAN_ACCOUNT: &str = "111122223333";
const REGION: &str = "us-east-1";

/// A stand-in for STS on a loopback port: answers GetCallerIdentity (with
/// [`PLAN_ACCOUNT`]) and records every request's body.
fn stand_in_sts() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let requests = Arc::new(Mutex::new(Vec::new()));
    let seen = requests.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let body = String::from_utf8_lossy(&body).into_owned();
            let (status, text) = if body.contains("Action=GetCallerIdentity") {
                (
                    "200 OK",
                    format!(
                        "<GetCallerIdentityResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><GetCallerIdentityResult>\
                         <Arn>arn:aws:iam::{PLAN_ACCOUNT}:user/plan</Arn><UserId>AIDAPLAN</UserId><Account>{PLAN_ACCOUNT}</Account>\
                         </GetCallerIdentityResult><ResponseMetadata><RequestId>plan</RequestId></ResponseMetadata></GetCallerIdentityResponse>"
                    ),
                )
            } else {
                (
                    "400 Bad Request",
                    "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>".to_owned(),
                )
            };
            seen.lock().expect("requests").push(body);
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            );
        }
    });
    (url, requests)
}

/// Provider settings for a plan without AWS: dummy credentials, STS at `sts`,
/// every other service at a port that refuses connections (so any other call
/// fails the plan).
fn offline_provider_override(sts: &str) -> String {
    let refused = "http://127.0.0.1:9";
    let services = ["cloudwatch", "dynamodb", "ec2", "ecr", "ecs", "iam", "kinesis", "lambda", "logs", "s3"];
    let endpoints: String = services.iter().map(|s| format!("    {s} = \"{refused}\"\n")).collect();
    format!(
        "provider \"aws\" {{
  region                      = \"{REGION}\"
  access_key                  = \"plan\"
  secret_key                  = \"plan\"
  skip_credentials_validation = true
  skip_requesting_account_id  = true
  skip_metadata_api_check     = true
  skip_region_validation      = true
  max_retries                 = 1
  endpoints {{
    sts = \"{sts}\"
{endpoints}  }}
}}
"
    )
}

/// `terraform show -json` of a fresh plan of the example.
fn plan_example(workspace: &Workspace, extra: &[&str]) -> Result<Value, String> {
    let config = workspace.config("examples/shopping-cart");
    let artifact = workspace.dir.path().join("bootstrap.zip");
    std::fs::write(&artifact, b"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0").expect("write an empty zip");
    let artifact = format!("artifact={}", artifact.display());
    let image = format!("image={PLAN_ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/shopping-cart-runtime:plan");
    let mut args = vec![
        "plan",
        "-no-color",
        "-refresh=false",
        "-out=plan.bin",
        "-var",
        &image,
        "-var",
        &artifact,
        "-var",
        "vpc_id=vpc-0plan",
        "-var",
        "subnet_ids=[\"subnet-0plan\"]",
    ];
    args.extend_from_slice(extra);
    workspace.run(&config, &args)?;
    let shown = workspace.terraform(&config, &["show", "-json", "plan.bin"]);
    Ok(serde_json::from_str(&shown).expect("plan JSON"))
}

/// The planned values of every resource of `kind`, by address.
fn planned(plan: &Value, kind: &str) -> BTreeMap<String, Value> {
    plan["resource_changes"]
        .as_array()
        .expect("resource_changes")
        .iter()
        .filter(|r| r["type"] == kind && r["mode"] == "managed")
        .map(|r| (r["address"].as_str().unwrap_or_default().to_owned(), r["change"]["after"].clone()))
        .collect()
}

fn planned_one(plan: &Value, kind: &str) -> Value {
    let all = planned(plan, kind);
    assert_eq!(all.len(), 1, "one {kind}: {:?}", all.keys());
    all.into_values().next().unwrap_or_default()
}

fn string_list(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().map(|i| i.as_str().unwrap_or_default().to_owned()).collect(),
        Value::Null => Vec::new(),
        other => panic!("not a string or a list of strings: {other}"),
    }
}

/// The Allow statements of a policy document as (actions, resources).
fn allow_statements(policy: &Value) -> Vec<(Vec<String>, Vec<String>)> {
    let statements = match &policy["Statement"] {
        Value::Array(s) => s.clone(),
        single => vec![single.clone()],
    };
    statements
        .iter()
        .filter(|s| s["Effect"] == "Allow")
        .map(|s| {
            assert!(
                s.get("NotAction").is_none() && s.get("NotResource").is_none(),
                "NotAction/NotResource grant by omission: {s}"
            );
            (string_list(&s["Action"]), string_list(&s["Resource"]))
        })
        .collect()
}

/// Actions that take no resource-level permissions: `"*"` is their only resource.
const RESOURCELESS_ACTIONS: &[&str] = &["ecr:GetAuthorizationToken"];

/// Actions on data: records, items, objects, invocations.
fn is_data_plane(action: &str) -> bool {
    let (service, name) = action.split_once(':').unwrap_or(("", action));
    match service {
        "kinesis" => name.contains("Record") || name == "GetShardIterator" || name.contains('*'),
        "dynamodb" => {
            ["Item", "Query", "Scan", "PartiQL", "TransactGet", "TransactWrite", "*"].iter().any(|p| name.contains(p))
        }
        "s3" => name.contains("Object") || name.contains("Multipart") || name == "ListBucket" || name.contains('*'),
        "lambda" => name.starts_with("Invoke") || name.contains('*'),
        _ => action == "*",
    }
}

/// What in `policy` names anything outside `allowed`: wildcard actions, a `"*"`
/// resource (but for [`RESOURCELESS_ACTIONS`]), any resource not in `allowed`.
fn violations(policy: &Value, allowed: &BTreeSet<String>) -> Vec<String> {
    let mut found = Vec::new();
    for (actions, resources) in allow_statements(policy) {
        for action in actions.iter().filter(|a| a.contains('*')) {
            found.push(format!("wildcard action {action}"));
        }
        for resource in &resources {
            if resource == "*" {
                if actions.iter().any(|a| is_data_plane(a)) {
                    found.push(format!("data-plane actions {actions:?} on resource \"*\""));
                } else if !actions.iter().all(|a| RESOURCELESS_ACTIONS.contains(&a.as_str())) {
                    found.push(format!("{actions:?} on resource \"*\""));
                }
            } else if !allowed.contains(resource) {
                found.push(format!("{actions:?} on {resource}, which is not this deployment's"));
            }
        }
    }
    found
}

/// The resources `action` is allowed on.
fn granted(policy: &Value, action: &str) -> BTreeSet<String> {
    allow_statements(policy)
        .into_iter()
        .filter(|(actions, _)| actions.iter().any(|a| a == action))
        .flat_map(|(_, r)| r)
        .collect()
}

fn set<const N: usize>(items: [&str; N]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn the_policy_check_catches_wildcards_and_foreign_resources() {
    let allowed = set(["arn:aws:kinesis:us-east-1:111122223333:stream/mine"]);
    let ok = json!({"Statement": [{"Effect": "Allow", "Action": "kinesis:PutRecords", "Resource": "arn:aws:kinesis:us-east-1:111122223333:stream/mine"},
                                  {"Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"}]});
    assert_eq!(violations(&ok, &allowed), Vec::<String>::new());
    for bad in [
        json!({"Statement": {"Effect": "Allow", "Action": ["kinesis:PutRecords"], "Resource": "*"}}),
        json!({"Statement": {"Effect": "Allow", "Action": "kinesis:PutRecords", "Resource": "arn:aws:kinesis:us-east-1:111122223333:stream/*"}}),
        json!({"Statement": {"Effect": "Allow", "Action": "kinesis:*", "Resource": "arn:aws:kinesis:us-east-1:111122223333:stream/mine"}}),
        json!({"Statement": {"Effect": "Allow", "Action": "lambda:InvokeFunction", "Resource": "*"}}),
        json!({"Statement": {"Effect": "Allow", "Action": "logs:PutLogEvents", "Resource": "*"}}),
    ] {
        assert!(!violations(&bad, &allowed).is_empty(), "not caught: {bad}");
    }
}

#[test]
fn the_example_plan_grants_only_this_deployments_resources_and_wires_the_worker_to_them() {
    let started = Instant::now();
    let workspace = Workspace::new();
    let config = workspace.config("examples/shopping-cart");
    let (sts, requests) = stand_in_sts();
    std::fs::write(config.join("zz_offline_override.tf"), offline_provider_override(&sts)).expect("write override");
    workspace.init(&config, false);

    // What the module refuses, it refuses at plan time.
    let refused = flat(
        &plan_example(&workspace, &["-var", "desired_count=-1", "-var", "partitions=0"]).expect_err("must be refused"),
    );
    assert!(refused.contains("desired_count must be a whole number, 0 or more"), "{refused}");
    assert!(refused.contains("partitions must be a whole number between 1 and 4096"), "{refused}");
    let refused = flat(
        &plan_example(&workspace, &["-var", "desired_count=3", "-var", "partitions=2"]).expect_err("must be refused"),
    );
    assert!(refused.contains("desired_count must not exceed partitions"), "{refused}");

    let plan = plan_example(&workspace, &[]).unwrap_or_else(|e| panic!("plan of the example failed:\n{e}"));
    for body in requests.lock().expect("requests").iter() {
        assert!(body.contains("Action=GetCallerIdentity"), "the plan called AWS for more than the account id: {body}");
    }
    let deployment = Deployment::planned_by(&plan);
    assert_eq!(deployment.ingress, set(["add-to-cart", "restock"]));
    assert_eq!(deployment.egress, set(["cart-results", "inventory-updates"]));
    assert!(deployment.dead_letters.is_some(), "a dead-letter stream");
    check_storage(&plan, &deployment);
    check_policies(&plan, &deployment);
    check_worker(&plan, &deployment);
    check_alarms(&plan, &deployment);
    check_metrics(&plan, &deployment);

    // Dead letters as objects: no dead-letter stream, the objects under the checkpoint prefix.
    let plan = plan_example(&workspace, &["-var", "dead_letter_destination=objects"])
        .unwrap_or_else(|e| panic!("plan of the example with dead letters as objects failed:\n{e}"));
    let deployment = Deployment::planned_by(&plan);
    assert_eq!(deployment.dead_letters, None, "no dead-letter stream");
    check_storage(&plan, &deployment);
    check_policies(&plan, &deployment);
    check_worker(&plan, &deployment);
    check_alarms(&plan, &deployment);
    check_metrics(&plan, &deployment);
    let lifecycle = planned_one(&plan, "aws_s3_bucket_lifecycle_configuration");
    let rules = lifecycle["rule"].as_array().cloned().unwrap_or_default();
    assert!(
        rules.iter().any(|r| r["filter"][0]["prefix"] == "statefun/dead-letters/" && r["expiration"][0]["days"] == 30),
        "dead-letter objects expire after the example's 30 days: {lifecycle}"
    );
    eprintln!("plan of the example and its checks: {}", elapsed(started));
}

fn arn(service: &str, resource: &str) -> String {
    format!("arn:aws:{service}:{REGION}:{PLAN_ACCOUNT}:{resource}")
}

fn stream_arn(name: &str) -> String {
    arn("kinesis", &format!("stream/{name}"))
}

fn name_of(value: &Value, key: &str) -> String {
    value[key].as_str().unwrap_or_else(|| panic!("{key} is not known at plan time: {value}")).to_owned()
}

/// The example deployment's resources, as planned.
struct Deployment {
    ingress: BTreeSet<String>,
    egress: BTreeSet<String>,
    exchange: String,
    /// None when dead letters are objects.
    dead_letters: Option<String>,
    table: String,
    bucket: String,
    /// The ARN of the function alias the workers invoke.
    alias_arn: String,
    repository_arn: String,
    /// Every ARN of this deployment a policy may name.
    arns: BTreeSet<String>,
}

impl Deployment {
    fn planned_by(plan: &Value) -> Self {
        let streams = planned(plan, "aws_kinesis_stream");
        let with_role = |role: &str| -> BTreeSet<String> {
            streams.values().filter(|s| s["tags"]["statefun:role"] == role).map(|s| name_of(s, "name")).collect()
        };
        let at_most_one = |role: &str| -> Option<String> {
            let names = with_role(role);
            assert!(names.len() <= 1, "one {role} stream at most: {names:?}");
            names.into_iter().next()
        };
        let function = planned_one(plan, "aws_lambda_function");
        let alias = planned_one(plan, "aws_lambda_alias");
        let bucket = name_of(&planned_one(plan, "aws_s3_bucket"), "bucket");
        let table = name_of(&planned_one(plan, "aws_dynamodb_table"), "name");
        let alias_arn =
            arn("lambda", &format!("function:{}:{}", name_of(&function, "function_name"), name_of(&alias, "name")));
        let repository_arn =
            arn("ecr", &format!("repository/{}", name_of(&planned_one(plan, "aws_ecr_repository"), "name")));

        let mut arns: BTreeSet<String> = streams.values().map(|s| stream_arn(&name_of(s, "name"))).collect();
        arns.extend([
            arn("dynamodb", &format!("table/{table}")),
            format!("arn:aws:s3:::{bucket}"),
            format!("arn:aws:s3:::{bucket}/statefun/*"),
            alias_arn.clone(),
            repository_arn.clone(),
        ]);
        arns.extend(
            planned(plan, "aws_cloudwatch_log_group")
                .values()
                .map(|g| arn("logs", &format!("log-group:{}:log-stream:*", name_of(g, "name")))),
        );
        Self {
            ingress: with_role("ingress"),
            egress: with_role("egress"),
            exchange: at_most_one("exchange").expect("an exchange stream"),
            dead_letters: at_most_one("dead-letters"),
            table,
            bucket,
            alias_arn,
            repository_arn,
            arns,
        }
    }
}

/// The shapes the runtime expects (runtime/src/cli/setup.rs), and the bucket's protections.
fn check_storage(plan: &Value, deployment: &Deployment) {
    let streams = planned(plan, "aws_kinesis_stream");
    let exchange = streams.values().find(|s| s["name"] == deployment.exchange.as_str()).expect("the exchange");
    assert_eq!(exchange["shard_count"], json!(PARTITIONS), "one exchange shard per partition: {exchange}");
    assert_eq!(exchange["stream_mode_details"][0]["stream_mode"], "PROVISIONED", "{exchange}");

    let table = planned_one(plan, "aws_dynamodb_table");
    assert_eq!(table["hash_key"], "partition");
    assert_eq!(table["attribute"], json!([{"name": "partition", "type": "N"}]));
    assert_eq!(table["billing_mode"], "PAY_PER_REQUEST");
    assert_eq!(table["point_in_time_recovery"][0]["enabled"], true);

    let encryption = planned_one(plan, "aws_s3_bucket_server_side_encryption_configuration");
    assert_eq!(encryption["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"], "AES256");
    let public_access = planned_one(plan, "aws_s3_bucket_public_access_block");
    for flag in ["block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets"] {
        assert_eq!(public_access[flag], true, "{flag}");
    }
    let lifecycle = planned_one(plan, "aws_s3_bucket_lifecycle_configuration");
    let rules = lifecycle["rule"].as_array().cloned().unwrap_or_default();
    assert!(
        rules.iter().any(|r| r["abort_incomplete_multipart_upload"][0]["days_after_initiation"] == 1),
        "{lifecycle}"
    );
    for rule in &rules {
        let expires = rule["expiration"][0]["days"].as_i64().unwrap_or(0);
        let prefix = rule["filter"][0]["prefix"].as_str().unwrap_or_default();
        assert!(expires == 0 || prefix.ends_with("/dead-letters/"), "no rule expires current checkpoints: {rule}");
    }
}

/// Every role policy is known at plan time, names only this deployment's
/// resources, and grants the worker exactly what the runtime calls.
fn check_policies(plan: &Value, deployment: &Deployment) {
    let policies = planned(plan, "aws_iam_role_policy");
    assert_eq!(
        policies.len(),
        3,
        "the worker's task and execution roles and the function's role: {:?}",
        policies.keys()
    );
    let mut by_role = BTreeMap::new();
    for (address, values) in &policies {
        let text =
            values["policy"].as_str().unwrap_or_else(|| panic!("{address}: the policy is not known at plan time"));
        let policy: Value = serde_json::from_str(text).expect("policy JSON");
        let found = violations(&policy, &deployment.arns);
        assert!(
            found.is_empty(),
            "{address} grants more than this deployment's resources:\n{}\n{policy:#}",
            found.join("\n")
        );
        by_role.insert(address.rsplit('.').next().unwrap_or_default().to_owned(), policy);
    }
    assert!(
        planned(plan, "aws_iam_policy").is_empty() && planned(plan, "aws_iam_role_policy_attachment").is_empty(),
        "no managed policies"
    );

    let worker = &by_role["worker_task"];
    let inputs: BTreeSet<String> =
        deployment.ingress.iter().chain([&deployment.exchange]).map(|s| stream_arn(s)).collect();
    let outputs: BTreeSet<String> = deployment
        .egress
        .iter()
        .chain([&deployment.exchange])
        .chain(&deployment.dead_letters)
        .map(|s| stream_arn(s))
        .collect();
    for action in ["kinesis:GetRecords", "kinesis:GetShardIterator"] {
        assert_eq!(granted(worker, action), inputs, "{action}");
    }
    assert_eq!(granted(worker, "kinesis:PutRecords"), outputs, "kinesis:PutRecords");
    for action in ["kinesis:ListShards", "kinesis:DescribeStreamSummary"] {
        assert_eq!(granted(worker, action), inputs.union(&outputs).cloned().collect(), "{action}");
    }
    let table = arn("dynamodb", &format!("table/{}", deployment.table));
    for action in ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"] {
        assert_eq!(granted(worker, action), set([table.as_str()]), "{action}");
    }
    let objects = format!("arn:aws:s3:::{}/statefun/*", deployment.bucket);
    for action in ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"] {
        assert_eq!(granted(worker, action), set([objects.as_str()]), "{action}");
    }
    assert_eq!(granted(worker, "s3:ListBucket"), set([format!("arn:aws:s3:::{}", deployment.bucket).as_str()]));
    assert!(worker.to_string().contains(r#""s3:prefix":"statefun/*""#), "listing is limited to the prefix: {worker}");
    assert_eq!(granted(worker, "lambda:InvokeFunction"), set([deployment.alias_arn.as_str()]));

    let function = &by_role["function[\"functions\"]"];
    for (actions, _) in allow_statements(function) {
        assert!(actions.iter().all(|a| a.starts_with("logs:")), "the function may only log: {function}");
    }
    assert_eq!(granted(&by_role["worker_execution"], "ecr:BatchGetImage"), set([deployment.repository_arn.as_str()]));
}

/// The worker runs `statefun run` on exactly these resources, with a module.yaml the runtime loads.
fn check_worker(plan: &Value, deployment: &Deployment) {
    let container = worker_container(plan);
    let env = environment_of(&container);
    assert_eq!(env["STATEFUN_BACKEND"], "aws");
    assert_eq!(env["STATEFUN_TABLE"], deployment.table);
    assert_eq!(env["STATEFUN_BUCKET"], deployment.bucket);
    assert_eq!(env["STATEFUN_PREFIX"], "statefun/");
    assert_eq!(env["STATEFUN_EXCHANGE_STREAM"], deployment.exchange);
    assert_eq!(env.get("STATEFUN_DEAD_LETTER_STREAM"), deployment.dead_letters.as_ref());
    let destination = if deployment.dead_letters.is_some() { "stream" } else { "objects" };
    assert_eq!(env["STATEFUN_DEAD_LETTER_DESTINATION"], destination);
    assert_eq!(env["STATEFUN_PARTITIONS"], PARTITIONS.to_string());
    assert_eq!(container["command"], json!(["run"]));
    assert_eq!(planned_one(plan, "aws_ecs_service")["desired_count"], 1);
    let module_yaml = &env["STATEFUN_MODULE_YAML"];
    assert!(module_yaml.contains(&deployment.alias_arn), "module.yaml invokes the alias: {module_yaml}");
    module_yaml_loads_through_the_image_entrypoint(module_yaml, &deployment.ingress);
}

/// The worker's container definition, as planned.
fn worker_container(plan: &Value) -> Value {
    let task = planned_one(plan, "aws_ecs_task_definition");
    let containers: Value =
        serde_json::from_str(task["container_definitions"].as_str().expect("container definitions known at plan time"))
            .expect("container definitions JSON");
    containers[0].clone()
}

fn environment_of(container: &Value) -> BTreeMap<String, String> {
    container["environment"]
        .as_array()
        .expect("environment")
        .iter()
        .map(|e| (name_of(e, "name"), name_of(e, "value")))
        .collect()
}

/// Alarms watch the streams the worker reads, the dead letters, and phrases the runtime logs.
fn check_alarms(plan: &Value, deployment: &Deployment) {
    let alarms = planned(plan, "aws_cloudwatch_metric_alarm");
    let watched: BTreeSet<String> = alarms
        .values()
        .filter(|a| a["metric_name"] == "GetRecords.IteratorAgeMilliseconds")
        .map(|a| a["dimensions"]["StreamName"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(watched, deployment.ingress.iter().chain([&deployment.exchange]).cloned().collect());
    let dead_letter_alarm =
        alarms.values().find(|a| a["alarm_name"].as_str().is_some_and(|n| n.ends_with("-dead-letters")));
    let dead_letter_alarm = dead_letter_alarm.expect("a dead-letter alarm");
    match &deployment.dead_letters {
        Some(stream) => {
            assert_eq!(dead_letter_alarm["metric_name"], "IncomingRecords", "{dead_letter_alarm}");
            assert_eq!(dead_letter_alarm["dimensions"]["StreamName"], stream.as_str(), "{dead_letter_alarm}");
        }
        None => {
            assert_eq!(dead_letter_alarm["metric_name"], "PutRequests", "{dead_letter_alarm}");
            assert_eq!(
                dead_letter_alarm["dimensions"]["BucketName"],
                deployment.bucket.as_str(),
                "{dead_letter_alarm}"
            );
            let metric = planned_one(plan, "aws_s3_bucket_metric");
            assert_eq!(metric["name"], dead_letter_alarm["dimensions"]["FilterId"], "{metric}");
            assert_eq!(metric["filter"][0]["prefix"], "statefun/dead-letters/", "{metric}");
        }
    }
    let filter = planned_one(plan, "aws_cloudwatch_log_metric_filter");
    let pattern = filter["pattern"].as_str().unwrap_or_default();
    let phrases: Vec<&str> = pattern.split('"').skip(1).step_by(2).collect();
    assert!(phrases.len() >= 3, "{pattern}");
    let sources = runtime_sources();
    for phrase in phrases {
        assert!(
            sources.contains(phrase),
            "the commit-failure alarm looks for \"{phrase}\", which the runtime no longer logs"
        );
    }
}

/// The metrics the workers write in CloudWatch embedded metric format (`STATEFUN_METRICS_EMF`, the
/// runtime's observe/emf.rs), in the namespace and with the `Deployment` dimension they are given.
const EMF_METRICS: &[&str] = &[
    "StuckPartitions",
    "PartitionsHeld",
    "BacklogMessages",
    "IngressLagMaxMilliseconds",
    "Invocations",
    "InvocationsDeadLettered",
    "DeadLetters",
    "Commits",
    "IngressRecords",
    "EgressRecords",
    "PartitionFailures",
    "InvocationDurationAverage",
];

/// The workers publish metrics (in embedded metric format, in their log) under the namespace and
/// `Deployment` dimension that the stuck-partitions alarm watches and the dashboard graphs; the
/// runtime still writes every metric the dashboard graphs, the dashboard graphs each of them, the
/// iterator age of exactly the streams the workers read, and shows the stuck-partitions alarm.
fn check_metrics(plan: &Value, deployment: &Deployment) {
    let env = environment_of(&worker_container(plan));
    assert_eq!(env.get("STATEFUN_METRICS_EMF").map(String::as_str), Some("true"), "the workers publish metrics");
    let namespace = env.get("STATEFUN_METRICS_EMF_NAMESPACE").expect("STATEFUN_METRICS_EMF_NAMESPACE");
    let name = name_of(&planned_one(plan, "aws_ecs_cluster"), "name");
    assert_eq!(
        env.get("STATEFUN_METRICS_EMF_DEPLOYMENT"),
        Some(&name),
        "the metrics' Deployment dimension is the deployment's name"
    );
    let stuck_after = env.get("STATEFUN_STUCK_AFTER").expect("STATEFUN_STUCK_AFTER");
    let stuck_seconds: u64 = stuck_after
        .strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("STATEFUN_STUCK_AFTER={stuck_after} is not a whole number of seconds"));
    assert!(stuck_seconds >= 30, "STATEFUN_STUCK_AFTER={stuck_after}: a slow commit is not a stuck partition");
    // The alarm below needs a value every period: the workers write one every 60 s unless told otherwise.
    assert_eq!(env.get("STATEFUN_METRICS_EMF_INTERVAL"), None, "the workers write their metrics every 60 s");

    let sources = runtime_sources();
    for metric in EMF_METRICS {
        assert!(sources.contains(&format!("\"{metric}\"")), "the runtime no longer writes the metric {metric}");
    }

    let alarms = planned(plan, "aws_cloudwatch_metric_alarm");
    let stuck: Vec<&Value> = alarms.values().filter(|a| a["metric_name"] == "StuckPartitions").collect();
    assert_eq!(stuck.len(), 1, "one stuck-partitions alarm: {stuck:?}");
    let stuck = stuck[0];
    assert_eq!(stuck["namespace"], namespace.as_str(), "the alarm watches the workers' namespace: {stuck}");
    assert_eq!(stuck["dimensions"], json!({"Deployment": &name}), "{stuck}");
    assert_eq!(stuck["statistic"], "Maximum", "{stuck}");
    assert_eq!(stuck["period"], 60, "{stuck}");
    assert_eq!(stuck["comparison_operator"], "GreaterThanThreshold", "{stuck}");
    assert_eq!(stuck["threshold"], 0, "any stuck partition: {stuck}");
    assert!(stuck["evaluation_periods"].as_i64().is_some_and(|n| n >= 1), "{stuck}");
    assert_eq!(stuck["treat_missing_data"], "notBreaching", "no worker running is no alarm: {stuck}");

    let dashboard = planned_one(plan, "aws_cloudwatch_dashboard");
    let body: Value =
        serde_json::from_str(dashboard["dashboard_body"].as_str().expect("dashboard body known at plan time"))
            .expect("dashboard body JSON");
    let mut graphed = BTreeSet::new();
    let mut iterator_ages = BTreeSet::new();
    let mut shown_alarms = BTreeSet::new();
    for widget in body["widgets"].as_array().expect("widgets") {
        match widget["type"].as_str() {
            Some("metric") => {
                assert_eq!(widget["properties"]["region"], REGION, "{widget}");
                for line in widget["properties"]["metrics"].as_array().expect("metrics of a metric widget") {
                    // [namespace, metric, dimension, value, dimension, value, ..., {options}]
                    let strings: Vec<&str> =
                        line.as_array().expect("a metric line").iter().map_while(Value::as_str).collect();
                    assert!(
                        strings.len() >= 2 && strings.len().is_multiple_of(2) && !strings.contains(&"."),
                        "every metric line spells out its namespace, name and dimensions: {line}"
                    );
                    let dimensions: BTreeMap<&str, &str> = strings[2..].chunks(2).map(|d| (d[0], d[1])).collect();
                    match strings[0] {
                        ns if ns == namespace => {
                            assert!(
                                EMF_METRICS.contains(&strings[1]),
                                "the dashboard graphs {}, which the workers do not publish: {line}",
                                strings[1]
                            );
                            assert_eq!(dimensions, BTreeMap::from([("Deployment", name.as_str())]), "{line}");
                            graphed.insert(strings[1]);
                        }
                        "AWS/Kinesis" => {
                            assert_eq!(strings[1], "GetRecords.IteratorAgeMilliseconds", "{line}");
                            iterator_ages.insert(dimensions.get("StreamName").expect("a stream").to_string());
                        }
                        other => panic!("the dashboard graphs a metric of namespace {other}: {line}"),
                    }
                }
            }
            Some("alarm") => shown_alarms.extend(string_list(&widget["properties"]["alarms"])),
            _ => {}
        }
    }
    assert_eq!(graphed, EMF_METRICS.iter().copied().collect(), "the dashboard graphs every metric the workers publish");
    assert_eq!(iterator_ages, deployment.ingress.iter().chain([&deployment.exchange]).cloned().collect());
    let alarm_arns: BTreeSet<String> =
        alarms.values().map(|a| arn("cloudwatch", &format!("alarm:{}", name_of(a, "alarm_name")))).collect();
    assert!(
        shown_alarms.contains(&arn("cloudwatch", &format!("alarm:{}", name_of(stuck, "alarm_name")))),
        "the dashboard shows the stuck-partitions alarm: {shown_alarms:?}"
    );
    assert!(shown_alarms.is_subset(&alarm_arns), "the dashboard shows this deployment's alarms: {shown_alarms:?}");
}

/// Every .rs file under runtime/src, concatenated.
pub(super) fn runtime_sources() -> String {
    fn walk(dir: &Path, into: &mut String) {
        for entry in std::fs::read_dir(dir).expect("read runtime/src").flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, into);
            } else if path.extension().is_some_and(|e| e == "rs") {
                into.push_str(&std::fs::read_to_string(&path).unwrap_or_default());
            }
        }
    }
    let mut text = String::new();
    walk(&repo_root().join("runtime/src"), &mut text);
    text
}

/// Runs the image's entrypoint as the container would (with `statefun` on
/// PATH), on the embedded backend: it writes the module.yaml and `statefun
/// setup` loads it and creates its ingress streams.
fn module_yaml_loads_through_the_image_entrypoint(module_yaml: &str, ingress: &BTreeSet<String>) {
    let scratch = tempfile::tempdir().expect("tempdir");
    let bin_dir = workspace_bin("statefun").parent().expect("bin directory").to_path_buf();
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let module = scratch.path().join("etc/module.yaml");
    let output = Command::new("sh")
        .arg(repo_root().join("infra/docker/entrypoint.sh"))
        .args(["setup", "--backend", "local", "--data-dir"])
        .arg(scratch.path().join("data"))
        .env("PATH", path)
        .env("STATEFUN_MODULE_YAML", module_yaml)
        .env("STATEFUN_MODULE", &module)
        .env_remove("STATEFUN_BACKEND")
        .output()
        .expect("run the entrypoint");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "statefun setup through the entrypoint:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(std::fs::read_to_string(&module).expect("module.yaml written").trim_end(), module_yaml.trim_end());
    for stream in ingress {
        assert!(stdout.contains(&format!("stream {stream}: ready")), "{stream} comes from the module.yaml: {stdout}");
    }
}
