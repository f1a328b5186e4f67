//! `statefun-bench`: runs every benchmark scenario in one invocation, shows
//! progress on stderr, prints the table (Markdown) on stdout and writes the
//! JSON. `scripts/bench.sh` builds it and runs it; see the crate docs
//! (`bench/src/lib.rs`) for what each scenario measures. The hostile loads
//! (`--only hostile`) print a table of their own after the main one.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde_json::json;
use statefun_bench::pipeline::{self, Backend, Scenario, Shape};
use statefun_bench::processes::Functions;
use statefun_bench::report::{self, Row};
use statefun_bench::{checkpoint, counter, hostile, procfs, progress, raw, restate};

/// The runtime's allocator, so the raw ceiling's client and the checkpoint
/// children (memory per address) allocate as `statefun run` does.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "statefun-bench", about = "Benchmarks of the statefun runtime")]
struct Cli {
    #[command(subcommand)]
    command: Option<Child>,
    #[command(flatten)]
    run: RunArgs,
}

/// Every scenario, in the order they run.
const SCENARIOS: &[&str] = &["raw", "unique", "hot", "cart", "commit", "restate", "checkpoint", "aws", "hostile"];

#[derive(Args)]
struct RunArgs {
    /// Smaller sizes and shorter phases, for development (the figures are noisier).
    #[arg(long)]
    quick: bool,
    /// Run only these scenarios (comma-separated): raw, unique, hot, cart, commit, restate, checkpoint, aws, hostile.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Skip these scenarios (comma-separated).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
    /// Where to write the JSON results.
    #[arg(long, default_value = ".local/bench/latest.json")]
    out: PathBuf,
    /// Where each run gets a directory of its own (`run-<time>-<pid>`) for logs and profiles;
    /// the scenarios' data is deleted when the run ends (the hostile loads' as each ends).
    #[arg(long, default_value = ".local/bench/work")]
    work_dir: PathBuf,
    /// Where scripts/bench.sh installed Restate and its SDK.
    #[arg(long, default_value = ".local/bench/restate")]
    restate_dir: PathBuf,
    /// Requests in flight of Restate's closed loop: each is tried, the best is its throughput.
    #[arg(long, value_delimiter = ',', default_value = "64,256,1024")]
    concurrency: Vec<usize>,
    /// Partition counts of Restate (RESTATE_DEFAULT_NUM_PARTITIONS) its sweep tries; the best is measured.
    #[arg(long, value_delimiter = ',', default_value = "1,4,24")]
    restate_partitions: Vec<u32>,
    /// Levels of requests in flight the raw ceiling tries (the best is its figure).
    #[arg(long, value_delimiter = ',', default_value = "16,64,256,1024")]
    raw_concurrency: Vec<usize>,
    /// Seconds of each raw-ceiling level (default 8, 3 with --quick).
    #[arg(long)]
    raw_secs: Option<f64>,
    /// Partitions of the runtime (and shards of the exchange).
    #[arg(long, default_value_t = 4)]
    partitions: u32,
    /// Shards of the ingress and egress streams.
    #[arg(long, default_value_t = 4)]
    stream_shards: u32,
    /// Most events per second of the latency phases.
    #[arg(long, default_value_t = 1000.0)]
    latency_rate: f64,
    /// Seconds of each latency phase (default 10, 4 with --quick).
    #[arg(long)]
    latency_secs: Option<f64>,
    /// Seconds of each Restate measurement (default 15, 5 with --quick).
    #[arg(long)]
    duration: Option<f64>,
    /// Backlog of the unique-keys scenario and of its commit-interval comparison.
    #[arg(long)]
    unique_events: Option<usize>,
    /// Backlog of the hot-key scenario.
    #[arg(long)]
    hot_events: Option<usize>,
    /// Orders of the shopping-cart scenario.
    #[arg(long)]
    cart_events: Option<usize>,
    /// Backlog of the AWS scenario.
    #[arg(long)]
    aws_events: Option<usize>,
    /// Addresses of the checkpoint scenario.
    #[arg(long)]
    addresses: Option<usize>,
    /// Which hostile loads run (comma-separated): big, failing, timers, fanout (default: all).
    #[arg(long, value_delimiter = ',')]
    hostile_loads: Vec<String>,
    /// Profile the runtime (perf) while it drains the unique-keys and hot-key backlogs;
    /// reports go under the run's directory, in profiles/. Profiling slows the runtime: do not compare those figures.
    #[arg(long)]
    profile: bool,
    /// The log filter of the runtimes the pipeline and hostile scenarios start (their logs go under the run's
    /// directory): e.g. `warn,statefun_runtime::worker::committer=debug` logs every epoch's commit
    /// and publish times.
    #[arg(long, default_value = "warn")]
    runtime_log: String,
}

#[derive(Subcommand)]
enum Child {
    /// (internal) Build and checkpoint a partition; prints JSON.
    #[command(hide = true)]
    CheckpointBuild {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        addresses: usize,
        #[arg(long)]
        state_bytes: usize,
        #[arg(long)]
        s3_prefix: Option<String>,
    },
    /// (internal) Recover a partition built by checkpoint-build; prints JSON.
    #[command(hide = true)]
    CheckpointRecover {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        addresses: usize,
        #[arg(long)]
        s3_prefix: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    match cli.command {
        Some(Child::CheckpointBuild { dir, addresses, state_bytes, s3_prefix }) => {
            let figures = runtime.block_on(checkpoint::build(&dir, addresses, state_bytes, s3_prefix.as_deref()))?;
            println!("{figures}");
            Ok(())
        }
        Some(Child::CheckpointRecover { dir, addresses, s3_prefix }) => {
            let figures = runtime.block_on(checkpoint::recover(&dir, addresses, s3_prefix.as_deref()))?;
            println!("{figures}");
            Ok(())
        }
        None => runtime.block_on(run(cli.run)),
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    for name in args.only.iter().chain(&args.skip) {
        let known = SCENARIOS.join(", ");
        anyhow::ensure!(SCENARIOS.contains(&name.as_str()), "unknown scenario `{name}`; known: {known}");
    }
    let selected = |name: &str| {
        (args.only.is_empty() || args.only.iter().any(|o| o == name)) && !args.skip.iter().any(|s| s == name)
    };
    let quick = args.quick;
    let pick = |given: Option<usize>, full: usize, small: usize| given.unwrap_or(if quick { small } else { full });
    let latency_secs = args.latency_secs.unwrap_or(if quick { 4.0 } else { 10.0 });
    let duration = Duration::from_secs_f64(args.duration.unwrap_or(if quick { 5.0 } else { 15.0 }));
    let work_dir = std::path::absolute(&args.work_dir)?.join(format!(
        "run-{}-{}",
        statefun_bench::now_ms() / 1000,
        std::process::id()
    ));
    std::fs::create_dir_all(&work_dir)?;
    let aws_configured = std::env::var_os("AWS_ENDPOINT_URL").is_some();

    let started = Instant::now();
    let load_at_start = procfs::load_average();
    progress!("machine: {}", procfs::machine());
    progress!("logs and profiles: {}", work_dir.display());
    let settings = pipeline::Settings {
        work_dir: work_dir.clone(),
        partitions: args.partitions,
        stream_shards: args.stream_shards,
        latency_rate: args.latency_rate,
        latency_secs,
        profile_dir: args.profile.then(|| work_dir.join("profiles")),
        runtime_log: args.runtime_log.clone(),
    };
    let counters = |name: &str, title: String, keys: usize, events: usize, commit: &str, latency: bool| Scenario {
        name: name.to_owned(),
        title,
        shape: Shape::Counters { keys },
        warmup: keys.clamp(100, 10_000),
        events,
        commit_interval: commit.to_owned(),
        max_epoch_entries: None,
        latency,
        latency_load: 0.5,
        profile: args.profile,
    };
    let unique_events = pick(args.unique_events, 1_200_000, 60_000);
    let hot_events = pick(args.hot_events, 1_000_000, 200_000);
    let cart_events = pick(args.cart_events, 200_000, 20_000);

    let needs_functions = ["raw", "unique", "hot", "cart", "commit"].iter().any(|s| selected(s));
    let functions = if needs_functions {
        let functions = Functions::start(counter::EGRESS_STREAM, &work_dir.join("functions.log"))?;
        progress!("functions served at {} (pid {})", functions.url, functions.process.pid());
        Some(functions)
    } else {
        None
    };

    let mut rows: Vec<Row> = Vec::new();
    if let Some(functions) = &functions {
        if selected("raw") {
            let raw_secs = args.raw_secs.unwrap_or(if quick { 3.0 } else { 8.0 });
            let raw = raw::Settings {
                concurrency: args.raw_concurrency.clone(),
                duration: Duration::from_secs_f64(raw_secs),
                keys: 10_000,
            };
            rows.push(raw::run(&raw, functions).await);
        }
        if selected("unique") {
            let title = "unique keys (10,000 addresses)".to_owned();
            let scenario = counters("unique", title, 10_000, unique_events, "100ms", true);
            rows.push(pipeline::run(&scenario, &settings, &Backend::Local, functions).await);
        }
        if selected("hot") {
            let scenario = counters("hot", "hot key (1 address)".into(), 1, hot_events, "100ms", true);
            rows.push(pipeline::run(&scenario, &settings, &Backend::Local, functions).await);
        }
        if selected("cart") {
            let scenario = Scenario {
                name: "cart".into(),
                title: "shopping cart (10,000 users, 100 items)".into(),
                shape: Shape::Cart { users: 10_000, items: 100 },
                warmup: 2_000,
                events: cart_events,
                commit_interval: "100ms".into(),
                max_epoch_entries: None,
                latency: true,
                latency_load: 0.5,
                profile: false,
            };
            rows.push(pipeline::run(&scenario, &settings, &Backend::Local, functions).await);
        }
        if selected("commit") {
            // Epochs bound by time alone: what the default interval is compared with.
            let scenario = Scenario {
                profile: false,
                max_epoch_entries: Some(usize::MAX),
                ..counters("commit-5s", "unique keys, commit every 5 s".into(), 10_000, unique_events, "5s", false)
            };
            rows.push(pipeline::run(&scenario, &settings, &Backend::Local, functions).await);
        }
    }
    if selected("restate") {
        let restate = restate::Settings {
            install_dir: std::path::absolute(&args.restate_dir)?,
            work_dir: work_dir.clone(),
            concurrency: args.concurrency.clone(),
            partitions: args.restate_partitions.clone(),
            duration,
            keys: 1_000,
            latency_rate: args.latency_rate,
            latency_duration: Duration::from_secs_f64(latency_secs),
        };
        rows.extend(restate::run(&restate).await);
    }
    if selected("checkpoint") {
        let settings = checkpoint::Settings {
            work_dir: work_dir.clone(),
            addresses: pick(args.addresses, 1_000_000, 200_000),
            state_bytes: 100,
            s3: aws_configured,
        };
        rows.push(checkpoint::run(&settings).await);
    }
    if selected("aws") {
        let title = "unique keys on the local AWS stack (LocalStack Kinesis + S3, moto DynamoDB)";
        if aws_configured {
            let scenario = Scenario {
                warmup: 1_000,
                latency_load: 0.1,
                profile: false,
                ..counters("aws", title.into(), 10_000, pick(args.aws_events, 20_000, 4_000), "100ms", true)
            };
            let functions = functions.as_ref();
            let local_functions;
            let functions = match functions {
                Some(f) => f,
                None => {
                    local_functions = Functions::start(counter::EGRESS_STREAM, &work_dir.join("functions.log"))?;
                    &local_functions
                }
            };
            rows.push(pipeline::run(&scenario, &settings, &Backend::Aws, functions).await);
        } else {
            rows.push(Row::skipped("aws", title, "the local AWS stack is not configured (AWS_ENDPOINT_URL unset)"));
        }
    }
    drop(functions);
    if selected("hostile") {
        // Functions of its own per load (see the module), so none are needed here.
        let settings = hostile::Settings {
            work_dir: work_dir.clone(),
            partitions: args.partitions,
            stream_shards: args.stream_shards,
            quick,
            loads: args.hostile_loads.clone(),
            runtime_log: args.runtime_log.clone(),
        };
        rows.extend(hostile::run(&settings).await);
    }

    statefun_bench::delete_deferred();
    let checks = report::checks(&rows);
    let load_at_end = procfs::load_average();
    let document = json!({
        "finished_at_ms": statefun_bench::now_ms(),
        "seconds": started.elapsed().as_secs_f64(),
        "machine": procfs::machine(),
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_at_end,
        "work_dir": work_dir,
        "settings": {
            "quick": quick, "concurrency": args.concurrency, "restate_partitions": args.restate_partitions, "raw_concurrency": args.raw_concurrency,
            "partitions": args.partitions,
            "stream_shards": args.stream_shards, "latency_rate": args.latency_rate, "latency_secs": latency_secs,
            "closed_loop_secs": duration.as_secs_f64(), "profile": args.profile,
        },
        "rows": rows,
        "checks": checks,
    });
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&document)?)?;

    println!("{}", report::table(&rows));
    let checkpoint = report::checkpoint_table(&rows);
    if !checkpoint.is_empty() {
        println!("{checkpoint}");
    }
    let hostile = report::hostile_table(&rows);
    if !hostile.is_empty() {
        println!("{hostile}");
    }
    println!("{}", report::checks_table(&checks));
    let notes = report::notes(&rows);
    if !notes.is_empty() {
        println!("{notes}");
    }
    println!(
        "load average {:?} at start, {:?} at the end; {:.0} s in all; JSON: {}",
        load_at_start,
        load_at_end,
        started.elapsed().as_secs_f64(),
        args.out.display()
    );
    Ok(())
}
