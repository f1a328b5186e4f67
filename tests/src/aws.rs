//! Deployments on the local AWS stack (LocalStack for S3 and Kinesis, moto for
//! DynamoDB, `cargo lambda watch` for Lambda), started by `scripts/local-aws.sh up`.
//!
//! Each deployment gets its own table, bucket prefix, exchange, dead-letter
//! and ingress streams (a random suffix), so scenarios never see each other's
//! state; the egress streams are shared (the example functions name them), so
//! scenarios tell their records apart by the workload's name prefix.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::{Deployment, statefun};

/// The stack's variables (`AWS_ENDPOINT_URL`, ...), starting the stack on first use.
pub fn local_aws_env() -> &'static [(String, String)] {
    static ENV: OnceLock<Vec<(String, String)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let script = repo_root().join("scripts/local-aws.sh");
        let up = Command::new("bash").arg(&script).arg("up").status().expect("run local-aws.sh up");
        assert!(up.success(), "scripts/local-aws.sh up failed");
        let env = Command::new("bash").arg(&script).arg("env").output().expect("run local-aws.sh env");
        assert!(env.status.success(), "scripts/local-aws.sh env failed");
        String::from_utf8_lossy(&env.stdout)
            .lines()
            .filter_map(|line| line.strip_prefix("export "))
            .filter_map(|pair| pair.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.trim_matches(|c| c == '\'' || c == '"').to_owned()))
            .collect()
    })
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A deployment of the runtime on the local AWS stack.
pub struct AwsDeployment {
    pub suffix: String,
    envs: Vec<(String, String)>,
    scratch: tempfile::TempDir,
    /// Whether this deployment named (and so deletes) its streams and table.
    owns_resources: bool,
}

impl AwsDeployment {
    pub fn new() -> Self {
        let suffix = format!("{:08x}", rand_u32());
        let mut envs = local_aws_env().to_vec();
        envs.extend(
            [
                ("STATEFUN_BACKEND", "aws".to_owned()),
                ("STATEFUN_TABLE", format!("statefun-test-{suffix}")),
                ("STATEFUN_BUCKET", "statefun-tests".to_owned()),
                ("STATEFUN_PREFIX", format!("run-{suffix}/")),
                ("STATEFUN_EXCHANGE_STREAM", format!("exchange-{suffix}")),
                ("STATEFUN_DEAD_LETTER_STREAM", format!("dead-letters-{suffix}")),
                // The egress streams are shared by every scenario of the run: reading
                // them from this deployment's birth skips the others' records.
                ("STATEFUN_TAIL_SINCE", (now_ms() - 5_000).to_string()),
            ]
            .map(|(k, v)| (k.to_owned(), v)),
        );
        Self { suffix, envs, scratch: tempfile::tempdir().expect("tempdir"), owns_resources: true }
    }

    /// A deployment on resources created by something else (Terraform: see
    /// `infra/terraform/local`), named by `statefun_environment` (its `STATEFUN_*`
    /// variables). Ingress streams are named `<stream>-<suffix>`, as with [`AwsDeployment::new`].
    pub fn on_existing_resources(suffix: &str, statefun_environment: &[(String, String)]) -> Self {
        let mut envs = local_aws_env().to_vec();
        envs.push(("STATEFUN_TAIL_SINCE".to_owned(), (now_ms() - 5_000).to_string()));
        envs.extend(statefun_environment.iter().cloned());
        Self { suffix: suffix.to_owned(), envs, scratch: tempfile::tempdir().expect("tempdir"), owns_resources: false }
    }

    /// Creates the table, bucket and streams of `module` (and the example's egress streams).
    pub fn setup(&self, module: &Path, partitions: u32) {
        let module = module.to_string_lossy();
        let partitions = partitions.to_string();
        statefun(
            self,
            &[
                "setup",
                "--module",
                &module,
                "--partitions",
                &partitions,
                "--stream-shards",
                "2",
                "--egress-stream",
                "cart-results",
                "--egress-stream",
                "inventory-updates",
            ],
        );
    }

    /// The example's module.yaml with this deployment's ingress stream names
    /// and, in place of the HTTP endpoint, the documents given.
    pub fn shopping_cart_module(&self, endpoints: &str) -> PathBuf {
        let template = include_str!("../../functions/examples/shopping-cart/module.yaml");
        let rest = template.split_once("\n---\n").map(|(_, rest)| rest).expect("endpoint document first");
        let text = format!(
            "{endpoints}\n---\n{}",
            rest.replace("stream: add-to-cart", &format!("stream: add-to-cart-{}", self.suffix))
                .replace("stream: restock", &format!("stream: restock-{}", self.suffix))
        );
        let path = self.scratch.path().join("module.yaml");
        std::fs::write(&path, text).expect("write module.yaml");
        path
    }

    pub fn ingress(&self, stream: &str) -> String {
        format!("{stream}-{}", self.suffix)
    }
}

/// Deletes the streams and the table the deployment created (the shared egress
/// streams and the bucket stay), so a long test run does not pile up streams in
/// the local stack. Best effort: a failure here must not fail the test.
impl Drop for AwsDeployment {
    fn drop(&mut self) {
        if !self.owns_resources {
            return;
        }
        let suffix = self.suffix.clone();
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        runtime.block_on(async move {
            let kinesis = kinesis_client();
            for stream in ["exchange", "dead-letters", "add-to-cart", "restock"] {
                let name = format!("{stream}-{suffix}");
                let _ = kinesis.delete_stream().stream_name(name).enforce_consumer_deletion(true).send().await;
            }
            let _ = dynamodb_client().delete_table().table_name(format!("statefun-test-{suffix}")).send().await;
        });
    }
}

fn stack_var(name: &str) -> String {
    local_aws_env().iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()).unwrap_or_else(|| panic!("{name} not set"))
}

/// A Kinesis client for the local stack.
pub fn kinesis_client() -> aws_sdk_kinesis::Client {
    let config = aws_sdk_kinesis::Config::builder()
        .behavior_version_latest()
        .endpoint_url(stack_var("AWS_ENDPOINT_URL"))
        .region(aws_sdk_kinesis::config::Region::new(stack_var("AWS_REGION")))
        .credentials_provider(local_credentials())
        .build();
    aws_sdk_kinesis::Client::from_conf(config)
}

/// A DynamoDB client for the local stack.
pub fn dynamodb_client() -> aws_sdk_dynamodb::Client {
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version_latest()
        .endpoint_url(stack_var("AWS_ENDPOINT_URL_DYNAMODB"))
        .region(aws_sdk_dynamodb::config::Region::new(stack_var("AWS_REGION")))
        .credentials_provider(local_credentials())
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

fn local_credentials() -> aws_sdk_kinesis::config::Credentials {
    aws_sdk_kinesis::config::Credentials::new(
        stack_var("AWS_ACCESS_KEY_ID"),
        stack_var("AWS_SECRET_ACCESS_KEY"),
        None,
        None,
        "local-aws",
    )
}

impl Default for AwsDeployment {
    fn default() -> Self {
        Self::new()
    }
}

impl Deployment for AwsDeployment {
    fn envs(&self) -> Vec<(String, String)> {
        self.envs.clone()
    }
    fn scratch(&self) -> PathBuf {
        self.scratch.path().to_path_buf()
    }
}

/// A random suffix for resource names, as [`AwsDeployment::new`] gives its deployments.
pub fn unique_suffix() -> String {
    format!("{:08x}", rand_u32())
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

fn rand_u32() -> u32 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}
