//! Command-line verbs. Each verb is one file; this one holds the argument
//! definitions and the dispatch.

mod health;
mod inspect;
mod run;
mod send;
mod setup;
mod status;
mod tail;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use statefun_runtime::backoff::Backoff;
use statefun_runtime::faults::FaultPlan;
use statefun_runtime::log::{LogError, LogStore, kinesis::KinesisLogStore, local::LocalLogStore};
use statefun_runtime::node::Backends;

#[derive(Parser)]
#[command(name = "statefun", version, about = "Stateful functions on logs, object storage and conditional writes")]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How log lines on stderr are written: one JSON object per line (the
    /// default when stderr is not a terminal, as on ECS), or text (the default
    /// on a terminal; colours only there).
    #[arg(long, global = true, env = "STATEFUN_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl Cli {
    /// Installs the log subscriber: `STATEFUN_LOG` filters (default `info`), `--log-format` shapes.
    pub fn init_logging(&self) {
        use std::io::IsTerminal as _;
        let terminal = std::io::stderr().is_terminal();
        let filter = tracing_subscriber::EnvFilter::try_from_env("STATEFUN_LOG").unwrap_or_else(|_| "info".into());
        let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
        let format = self.log_format.unwrap_or(if terminal { LogFormat::Text } else { LogFormat::Json });
        match format {
            LogFormat::Json => builder.json().flatten_event(true).with_current_span(false).init(),
            LogFormat::Text => builder.with_ansi(terminal).init(),
        }
    }

    /// Whether the verb is `run`: the long-lived worker, which keeps a memory budget.
    pub fn runs_worker(&self) -> bool {
        matches!(self.command, Command::Run(_))
    }
}

/// Which backends a verb works on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendKind {
    /// Everything in files under --data-dir (one runtime process per directory).
    Local,
    /// Kinesis, S3, DynamoDB and Lambda, reached through the standard AWS
    /// configuration: AWS_REGION, the credential chain, AWS_ENDPOINT_URL and
    /// `AWS_ENDPOINT_URL_<SERVICE>`.
    Aws,
}

#[derive(Args, Clone)]
pub struct Storage {
    #[arg(long, env = "STATEFUN_BACKEND", value_enum, default_value = "local")]
    pub backend: BackendKind,
    /// Directory of the local mode: streams, checkpoints, commit records.
    #[arg(long, env = "STATEFUN_DATA_DIR", default_value = ".statefun")]
    pub data_dir: PathBuf,
    /// AWS region (default: from the AWS configuration).
    #[arg(long, env = "STATEFUN_REGION")]
    pub region: Option<String>,
    /// DynamoDB table of partition leases and commits (aws).
    #[arg(long, env = "STATEFUN_TABLE", default_value = "statefun-partitions")]
    pub table: String,
    /// S3 bucket of checkpoints (aws).
    #[arg(long, env = "STATEFUN_BUCKET")]
    pub bucket: Option<String>,
    /// Key prefix of the checkpoints in the bucket (aws).
    #[arg(long, env = "STATEFUN_PREFIX", default_value = "statefun/")]
    pub prefix: String,
}

/// What a deployment is made of, shared by `run` and `setup`.
#[derive(Args, Clone)]
pub struct Topology {
    /// The StateFun module.yaml (endpoints, ingresses, egresses).
    #[arg(long, env = "STATEFUN_MODULE", default_value = "module.yaml")]
    pub module: PathBuf,
    /// Number of partitions; fixed for the life of the data.
    #[arg(long, env = "STATEFUN_PARTITIONS", default_value_t = 4)]
    pub partitions: u32,
    /// Shards of the ingress and egress streams created (local mode, `setup`).
    #[arg(long, env = "STATEFUN_STREAM_SHARDS", default_value_t = 4)]
    pub stream_shards: u32,
    /// The stream carrying messages between partitions (one shard per partition).
    #[arg(long, env = "STATEFUN_EXCHANGE_STREAM", default_value = "statefun-exchange")]
    pub exchange_stream: String,
    #[arg(long, env = "STATEFUN_DEAD_LETTER_STREAM", default_value = "statefun-dead-letters")]
    pub dead_letter_stream: String,
    /// Where dead letters go: the dead-letter stream, or objects under `dead-letters/`
    /// in the checkpoint store (the S3 bucket and prefix, or the data directory).
    #[arg(long, env = "STATEFUN_DEAD_LETTER_DESTINATION", value_enum, default_value = "stream")]
    pub dead_letter_destination: DeadLetterDestination,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DeadLetterDestination {
    Stream,
    Objects,
}

impl Topology {
    /// Loads module.yaml (logging its warnings), refuses AWS settings the runtime
    /// cannot honor, and checks the partition count.
    pub fn load(&self) -> anyhow::Result<statefun_runtime::config::ModuleConfig> {
        anyhow::ensure!(self.partitions >= 1 && self.partitions <= 4096, "--partitions must be between 1 and 4096");
        let module = statefun_runtime::config::ModuleConfig::load(&self.module)?;
        let refused = module.unhonored_aws_settings();
        anyhow::ensure!(
            refused.is_empty(),
            "{}: {}",
            self.module.display(),
            refused.join(&format!("\n{}: ", self.module.display()))
        );
        for warning in &module.warnings {
            tracing::warn!("{warning}");
        }
        Ok(module)
    }
}

impl Storage {
    async fn sdk_config(&self) -> aws_config::SdkConfig {
        statefun_runtime::aws::aws_sdk_config(self.region.as_deref()).await
    }

    /// The streams only (send, tail).
    pub async fn log(&self) -> anyhow::Result<Arc<dyn LogStore>> {
        Ok(match self.backend {
            BackendKind::Local => Arc::new(LocalLogStore::new(&self.data_dir)),
            BackendKind::Aws => Arc::new(KinesisLogStore::new(&self.sdk_config().await, false)),
        })
    }

    /// The backends, with the fault layer of `faults` on the AWS clients it names.
    pub async fn backends(&self, faults: Option<&Arc<FaultPlan>>) -> anyhow::Result<Backends> {
        match self.backend {
            BackendKind::Local => Backends::local(&self.data_dir),
            BackendKind::Aws => {
                let bucket =
                    self.bucket.as_deref().context("--bucket (STATEFUN_BUCKET) is required with --backend aws")?;
                Ok(Backends::aws(&self.sdk_config().await, &self.table, bucket, &self.prefix, faults))
            }
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Run the partition worker.
    Run(Box<run::RunArgs>),
    /// Append records to a stream (an ingress, usually).
    Send(send::SendArgs),
    /// Print the records of a stream (an egress, usually).
    Tail(tail::TailArgs),
    /// Print the committed state of every address.
    State(inspect::StateArgs),
    /// Print the dead letters: what could not be processed, and why.
    DeadLetters(inspect::DeadLetterArgs),
    /// Print every partition: its holder, last commit, input lag, and whether it is stuck.
    Status(status::StatusArgs),
    /// Ask a running worker's admin server whether it is healthy (or ready).
    Health(health::HealthArgs),
    /// Create the table, bucket and streams a deployment needs (local stacks, tests).
    Setup(setup::SetupArgs),
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Run(args) => run::run(*args).await,
        Command::Send(args) => send::send(args).await,
        Command::Tail(args) => tail::tail(args).await,
        Command::State(args) => inspect::state(args).await,
        Command::DeadLetters(args) => inspect::dead_letters(args).await,
        Command::Status(args) => status::status(args).await,
        Command::Health(args) => health::health(args),
        Command::Setup(args) => setup::setup(args).await,
    }
}

/// Writes one line of a command's output to stdout. A reader that went away
/// (`statefun tail | head`) ends the command quietly, as a closed pipe ends
/// the usual Unix tools: the rest of the output is not wanted.
macro_rules! out {
    ($($arg:tt)*) => { $crate::cli::write_line(format_args!($($arg)*)) };
}
pub(crate) use out;

pub fn write_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write as _;
    if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing the output: {e}");
        std::process::exit(1);
    }
}

/// Retries a stream call while its error is retryable (throttling, a busy
/// backend), a few times with backoff: the CLI shares the streams' limits
/// with running workers.
pub async fn patiently<T, Fut>(mut call: impl FnMut() -> Fut) -> Result<T, LogError>
where
    Fut: std::future::Future<Output = Result<T, LogError>>,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for _ in 0..8 {
        match call().await {
            Err(e) if e.is_retryable() => {
                tracing::debug!("retrying in {:?}: {e}", backoff.next());
                backoff.wait().await;
            }
            other => return other,
        }
    }
    call().await
}

/// Parses durations such as `100ms`, `5s`, `2m`.
pub fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}` is not a duration (e.g. 100ms, 5s): {e}"))
}

/// A size in bytes: a whole number, optionally with a unit (KiB, MiB, GiB; KB, MB, GB; B).
pub fn byte_size(text: &str) -> Result<usize, String> {
    let bad = || format!("`{text}` is not a size in bytes (e.g. 512MiB, 2GiB, 1000000)");
    let digits = text.trim().find(|c: char| !c.is_ascii_digit()).unwrap_or(text.trim().len());
    let (number, unit) = text.trim().split_at(digits);
    let number: usize = number.parse().map_err(|_| bad())?;
    let unit: usize = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        _ => return Err(bad()),
    };
    number.checked_mul(unit).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_with_their_units_and_bad_ones_are_named() {
        assert_eq!(byte_size("1000"), Ok(1000));
        assert_eq!(byte_size("512MiB"), Ok(512 << 20));
        assert_eq!(byte_size("2 GB"), Ok(2_000_000_000));
        for bad in ["", "MiB", "1.5GiB", "12 parsecs", "99999999999999999999GiB"] {
            let error = byte_size(bad).expect_err(bad);
            assert!(error.contains(&format!("`{bad}`")), "{error}");
        }
    }
}
