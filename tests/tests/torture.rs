//! A randomized torture test: the real `statefun` binary is driven through a
//! schedule of faults drawn from a seed, while the shopping cart workload and a
//! fixed corpus of bad records flow in, on each backend:
//!
//! - the embedded local mode (a data directory, one worker at a time): SIGKILL
//!   and restart, SIGTERM and restart, SIGSTOP/SIGCONT, a stop right after a
//!   take-over (a worker with `--commit-interval 60s --group-commit false` that gets SIGTERM soon
//!   after it took the partitions), and a restart of the function server on the
//!   same port;
//! - the local AWS stack (LocalStack Kinesis and S3, moto DynamoDB), with short
//!   leases and four partitions: the same faults, aimed at either of two
//!   workers, plus a second worker joining (hand-overs) and leaving (by SIGTERM:
//!   hand-backs; by SIGKILL: fail-overs). A worker frozen past its lease while
//!   the other is up wakes as a zombie.
//!
//! The bad records (see [`corpus`]): a 250-character key for a function type no
//! endpoint serves, a string record for that unknown type, bytes that are no
//! `AddToCart` for a cart, and a record of exactly 1 MiB (with its key) for a
//! cart in another partition than the one reading it, too large to cross the
//! exchange. Each step of the schedule sends a share of the orders and some of
//! the bad records, waits a random moment and injects its fault.
//!
//! After the last step every worker is stopped and one clean worker runs until
//! everything is done; then the invariants are checked:
//!
//! - every order has exactly one result (identical re-published copies are
//!   allowed on Kinesis only, which keeps no record ids), and inventory and
//!   carts add up ([`cart::check`]);
//! - every bad record has exactly one dead letter, at its address with its
//!   reason, and there is no other dead letter;
//! - no partition is stuck: orders sent after the last fault, to carts and
//!   items of every partition, all get their results; and `statefun state
//!   --json` recovers every partition's history;
//! - no worker panicked.
//!
//! `STATEFUN_TORTURE_SEED` (default 1) picks the schedule and
//! `STATEFUN_TORTURE_STEPS` (default 8) its length; both are printed at the
//! start with the schedule, and a failure names them, so that rerunning with
//! them replays the same schedule (the moments faults land at, relative to the
//! runtime's work, still vary with the machine's load).

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use statefun_proto::reqreply::Address;
use statefun_runtime::address::{partition_of, shard_of_key};
use statefun_runtime::log::MAX_RECORD_BYTES;
use statefun_runtime::worker::lineage::partition_of_shard;
use statefun_tests::aws::{AwsDeployment, kinesis_client};
use statefun_tests::cart::{self, Order, Shape, Workload};
use statefun_tests::{
    Deployment, FunctionServer, Runtime, dead_letters_json, send_lines, shopping_cart_module, statefun,
    statefun_result, tail_json, wait_until,
};

const TIMEOUT: Duration = Duration::from_secs(300);
const PARTITIONS: u32 = 4;
const PARTITIONS_FLAG: [&str; 2] = ["--partitions", "4"];
const DEFAULT_SEED: u64 = 1;
const DEFAULT_STEPS: usize = 8;
const EVENTS_PER_STEP: usize = 60;
/// How many bad records of each kind the corpus holds.
const BAD_PER_KIND: usize = 2;
/// Function retries outlast a restart of the function server (about 6 s at
/// least before the last attempt), so that no good order is dead-lettered by it.
const INVOKE: [&str; 6] = ["--invoke-attempts", "10", "--invoke-backoff", "100ms", "--invoke-max-backoff", "2s"];
/// Short leases, so take-overs take seconds (as in failover.rs).
const FAST_LEASES: [&str; 4] = ["--lease-renew", "300ms", "--lease-failover", "2s"];
/// The typename `statefun send` is told for raw records: any typename it does
/// not know is sent as the value's JSON text, which is how the test chooses the
/// exact bytes of a record on both backends.
const RAW_JSON_TEXT: &str = "torture/json-text";
const NOWHERE: &str = "nowhere/unknown";

#[test]
fn torture_on_the_local_backend() {
    let plan = Plan::from_env(Backend::Local);
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let logs = RefCell::new(Vec::new());
    let outcome = catch_unwind(AssertUnwindSafe(|| run_local(&plan, dir.path(), &data, &logs)));
    if outcome.is_err() {
        // Keep the data directory and the logs of a failed run for a look.
        eprintln!("kept the failed run's data directory and logs: {}", dir.keep().display());
    }
    conclude(&plan, outcome, &logs);
}

#[test]
fn torture_on_the_local_aws_stack() {
    let plan = Plan::from_env(Backend::Aws);
    let deployment = AwsDeployment::new();
    let _bad_input_stream = DeleteStreamOnDrop(deployment.ingress("torture-input"));
    let logs = RefCell::new(Vec::new());
    let outcome = catch_unwind(AssertUnwindSafe(|| run_aws(&plan, &deployment, &logs)));
    conclude(&plan, outcome, &logs);
}

fn run_local(plan: &Plan, dir: &Path, data: &Path, logs: &RefCell<Vec<PathBuf>>) -> Summary {
    let mut functions = FunctionHost::start();
    let module = shopping_cart_module(dir, functions.addr().port());
    append_bad_input_ingress(&module, "torture-input");
    let streams =
        Streams { add_to_cart: "add-to-cart".into(), restock: "restock".into(), bad_input: "torture-input".into() };
    let mut args = PARTITIONS_FLAG.to_vec();
    args.extend(INVOKE);
    let mut cluster = Cluster { deployment: data, module: &module, args, workers: BTreeMap::new(), logs };
    torture(plan, &mut cluster, &mut functions, &streams, "torture-", &read_elsewhere_locally)
}

fn run_aws(plan: &Plan, deployment: &AwsDeployment, logs: &RefCell<Vec<PathBuf>>) -> Summary {
    let mut functions = FunctionHost::start();
    let endpoint = format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun",
        functions.addr()
    );
    let module = deployment.shopping_cart_module(&endpoint);
    append_bad_input_ingress(&module, &deployment.ingress("torture-input"));
    deployment.setup(&module, PARTITIONS);
    let streams = Streams {
        add_to_cart: deployment.ingress("add-to-cart"),
        restock: deployment.ingress("restock"),
        bad_input: deployment.ingress("torture-input"),
    };
    let mut args = PARTITIONS_FLAG.to_vec();
    args.extend(INVOKE);
    args.extend(FAST_LEASES);
    let readers = kinesis_readers(&streams.add_to_cart);
    let read_elsewhere = |user: &str| !readers.contains(&partition_of(&cart_address(user), PARTITIONS));
    let mut cluster = Cluster { deployment, module: &module, args, workers: BTreeMap::new(), logs };
    // The egress streams are shared by every test on the stack: this run's names carry its suffix.
    torture(plan, &mut cluster, &mut functions, &streams, &format!("torture-{}-", deployment.suffix), &read_elsewhere)
}

/// Runs the schedule, then the clean worker, and checks the invariants.
fn torture<D: Deployment + ?Sized>(
    plan: &Plan,
    cluster: &mut Cluster<'_, D>,
    functions: &mut FunctionHost,
    streams: &Streams,
    base: &str,
    read_elsewhere: &dyn Fn(&str) -> bool,
) -> Summary {
    let started = Instant::now();
    let deployment = cluster.deployment;
    let module = cluster.module;
    let workload = cart::generate(
        &format!("{base}main-"),
        Shape { users: 30, events: plan.events(), plenty: 6, scarce: 2, missing: 2, seed: plan.seed },
    );
    let probes = probe_workload(&format!("{base}probe-"));
    let corpus = corpus(base, streams, read_elsewhere);
    assert_eq!(corpus.len(), plan.corpus, "the schedule places every bad record");
    for record in &corpus {
        let user = record.address.strip_prefix("shoppingcart/cart/").unwrap_or_default();
        let clash = workload.orders.iter().chain(&probes.orders).find(|o| o.user == user);
        assert!(clash.is_none(), "the good workload has no order of a bad record's user: {clash:?}");
    }

    cluster.start(Who::First, &[]);
    send_lines(deployment, module, &streams.restock, &workload.restock_records());
    send_lines(deployment, module, &streams.restock, &probes.restock_records());
    // Orders for plenty items must find their stock: the restocks go first.
    wait_until(TIMEOUT, "the restocks to be applied", || restocked(deployment, &[&workload, &probes]));

    let mut mid_run = 0;
    for (n, step) in plan.steps.iter().enumerate() {
        eprintln!("[torture seed {}] step {n}: {step}", plan.seed);
        send_lines(
            deployment,
            module,
            &streams.add_to_cart,
            &workload.order_records(&workload.orders[step.orders.clone()]),
        );
        for &index in &step.bad {
            send_bad(deployment, module, &corpus[index]);
        }
        std::thread::sleep(Duration::from_millis(step.lead_ms));
        cluster.inject(step.fault, functions);
        // Whether the fault landed mid-run (counted after it, so that counting does not delay it).
        let results = workload.results(deployment).len();
        eprintln!("[torture seed {}] {results} of {} results right after the fault", plan.seed, step.orders.end);
        mid_run += usize::from(results < step.orders.end);
    }

    eprintln!(
        "[torture seed {}] schedule done after {:.1} s; one clean worker finishes",
        plan.seed,
        started.elapsed().as_secs_f64()
    );
    cluster.stop_all();
    cluster.start(Who::First, &[]);
    wait_until(TIMEOUT, "a result for every order", || workload.results(deployment).len() >= workload.orders.len());
    wait_until(TIMEOUT, "a dead letter for every bad record", || distinct_letters(deployment).len() >= corpus.len());
    // No partition is stuck: orders to a cart and an item of every partition all complete.
    send_lines(deployment, module, &streams.add_to_cart, &probes.order_records(&probes.orders));
    wait_until(TIMEOUT, "a result for every order sent after the last fault", || {
        probes.results(deployment).len() >= probes.orders.len()
    });
    cluster.stop(Who::First);

    let state = statefun_result(deployment, &["state", "--json"]);
    assert!(state.is_ok(), "`statefun state --json` recovers every partition's history: {state:?}");
    let report = cart::check(deployment, &workload);
    // The probes' carts, one in every partition, are in the committed state:
    // every partition committed after the last fault.
    let probe_report = cart::check(deployment, &probes);
    let (letters, letter_copies) = check_dead_letters(deployment, &corpus);
    if plan.backend == Backend::Local {
        assert_eq!(report.redelivered + probe_report.redelivered, 0, "the local log drops re-published records by id");
        assert_eq!(letter_copies, 0, "the local log drops re-published dead letters by id");
    }
    for log in cluster.logs.borrow().iter() {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let panics: Vec<&str> = text.lines().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "a worker panicked ({}):\n{}", log.display(), panics.join("\n"));
    }
    Summary {
        events: workload.orders.len(),
        probes: probes.orders.len(),
        bad_records: corpus.len(),
        letters,
        letter_copies,
        redelivered: report.redelivered + probe_report.redelivered,
        mid_run,
        workers: cluster.logs.borrow().len(),
        error_lines: error_lines(&cluster.logs.borrow()).len(),
        leases_taken: count_log_lines(&cluster.logs.borrow(), "took the lease"),
        leases_lost: count_log_lines(&cluster.logs.borrow(), "lost its lease"),
        seconds: started.elapsed().as_secs_f64(),
    }
}

// ---------------------------------------------------------------------------
// The schedule

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Backend {
    Local,
    Aws,
}

/// A tiny deterministic PRNG (the LCG of `delay()` in failover.rs): the
/// schedule depends on the seed alone.
struct Prng(u64);

impl Prng {
    fn new(seed: u64) -> Self {
        let mut prng = Self(seed ^ 0x9e37_79b9_7f4a_7c15);
        prng.next();
        prng
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }

    /// A number in `[0, n)`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `[low, high)`.
    fn between(&mut self, low: u64, high: u64) -> u64 {
        low + self.below(high - low)
    }
}

/// Which worker a fault hits. Locally there is only ever the first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Who {
    First,
    Second,
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGKILL, then a new worker in its place.
    Kill(Who),
    /// SIGTERM (the worker commits and releases its leases), then a new worker.
    Term(Who),
    /// SIGSTOP for this many milliseconds, then SIGCONT.
    Freeze(Who, u64),
    /// SIGTERM, then a worker with `--commit-interval 60s --group-commit false` that gets SIGTERM this
    /// many milliseconds after it took a lease (its only commit is on the way
    /// out), then a new worker.
    StopAfterTakeOver(Who, u64),
    /// The function server stops, stays down this many milliseconds and starts
    /// again on the same port.
    RestartFunctions(u64),
    /// A second worker starts and asks for its share of the partitions.
    Join,
    /// The second worker goes: with SIGTERM it hands its partitions back, with
    /// SIGKILL they fail over once its leases expire.
    Leave { kill: bool },
}

impl Fault {
    fn kind(&self) -> &'static str {
        match self {
            Fault::Kill(_) => "sigkill",
            Fault::Term(_) => "sigterm",
            Fault::Freeze(..) => "freeze",
            Fault::StopAfterTakeOver(..) => "stop-after-take-over",
            Fault::RestartFunctions(_) => "function-server-restart",
            Fault::Join => "join",
            Fault::Leave { kill: false } => "leave-by-sigterm",
            Fault::Leave { kill: true } => "leave-by-sigkill",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill(who) => write!(f, "SIGKILL the {who:?} worker, restart it"),
            Fault::Term(who) => write!(f, "SIGTERM the {who:?} worker, restart it"),
            Fault::Freeze(who, ms) => write!(f, "freeze the {who:?} worker for {ms} ms"),
            Fault::StopAfterTakeOver(who, ms) => {
                write!(
                    f,
                    "replace the {who:?} worker by a 60s-commit one, SIGTERM it {ms} ms after its take-over, restart"
                )
            }
            Fault::RestartFunctions(ms) => write!(f, "restart the function server, down for {ms} ms"),
            Fault::Join => write!(f, "a Second worker joins"),
            Fault::Leave { kill } => {
                write!(f, "the Second worker leaves by {}", if *kill { "SIGKILL" } else { "SIGTERM" })
            }
        }
    }
}

struct Step {
    /// Indices of the workload's orders sent at the start of the step.
    orders: Range<usize>,
    /// Indices of the corpus' bad records sent with them.
    bad: Vec<usize>,
    /// How long the step waits before its fault.
    lead_ms: u64,
    fault: Fault,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "orders {:?}, bad records {:?}, after {} ms: {}", self.orders, self.bad, self.lead_ms, self.fault)
    }
}

struct Plan {
    backend: Backend,
    seed: u64,
    steps: Vec<Step>,
    corpus: usize,
}

impl Plan {
    fn from_env(backend: Backend) -> Self {
        let seed = env_number("STATEFUN_TORTURE_SEED").unwrap_or(DEFAULT_SEED);
        let steps = env_number("STATEFUN_TORTURE_STEPS").map_or(DEFAULT_STEPS, |n| n.max(1) as usize);
        let plan = Self::draw(backend, seed, steps);
        eprintln!("{plan}");
        plan
    }

    fn draw(backend: Backend, seed: u64, steps: usize) -> Self {
        let corpus = 4 * BAD_PER_KIND;
        let mut prng = Prng::new(seed);
        // Every bad record goes out with a random step's orders.
        let mut bad = vec![Vec::new(); steps];
        for record in 0..corpus {
            bad[prng.below(steps as u64) as usize].push(record);
        }
        // On AWS the second worker joins in the first half at the latest, and
        // then leaves at a later step at the latest (when there is one).
        let join_by = prng.below(steps.div_ceil(2) as u64) as usize;
        let leave_by = join_by + 1 + prng.below(steps.saturating_sub(join_by + 1).max(1) as u64) as usize;
        let mut second = false;
        let mut deck = Deck::default();
        let steps = bad
            .into_iter()
            .enumerate()
            .map(|(n, bad)| {
                let fault = match backend {
                    Backend::Local => deck.deal(&mut prng, Who::First),
                    Backend::Aws => aws_fault(&mut prng, &mut deck, &mut second, n == join_by, n == leave_by),
                };
                let lead_ms = match backend {
                    // Locally a step's orders take a fraction of a second: faults land in it when they come soon.
                    Backend::Local => prng.between(0, 600),
                    Backend::Aws => prng.between(0, 1500),
                };
                Step { orders: n * EVENTS_PER_STEP..(n + 1) * EVENTS_PER_STEP, bad, lead_ms, fault }
            })
            .collect();
        Self { backend, seed, steps, corpus }
    }

    fn events(&self) -> usize {
        self.steps.len() * EVENTS_PER_STEP
    }

    fn fault_counts(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for step in &self.steps {
            *counts.entry(step.fault.kind()).or_default() += 1;
        }
        counts
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "torture schedule on {:?}: STATEFUN_TORTURE_SEED={} STATEFUN_TORTURE_STEPS={}; {} events, {} bad records; faults {:?}",
            self.backend,
            self.seed,
            self.steps.len(),
            self.events(),
            self.corpus,
            self.fault_counts()
        )?;
        for (n, step) in self.steps.iter().enumerate() {
            writeln!(f, "  step {n}: {step}")?;
        }
        Ok(())
    }
}

fn env_number(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    Some(text.trim().parse().unwrap_or_else(|e| panic!("{name}={text}: not a number ({e})")))
}

/// A fault for the AWS stack: `second` tracks whether the second worker runs,
/// so that a join only comes when it does not and a leave when it does;
/// `join_now` and `leave_now` ask for them (when they are possible).
fn aws_fault(prng: &mut Prng, deck: &mut Deck, second: &mut bool, join_now: bool, leave_now: bool) -> Fault {
    if !*second && (join_now || prng.below(4) == 0) {
        *second = true;
        return Fault::Join;
    }
    if *second && (leave_now || prng.below(5) == 0) {
        *second = false;
        return Fault::Leave { kill: prng.below(2) == 0 };
    }
    let who = if *second && prng.below(2) == 0 { Who::Second } else { Who::First };
    deck.deal(prng, who)
}

/// The faults one worker can meet, dealt like cards from a shuffled deck that
/// is refilled when empty: deals 1-5, 6-10, ... each hold every kind once, so
/// even a short schedule meets them all.
#[derive(Default)]
struct Deck(Vec<u8>);

impl Deck {
    const KINDS: u8 = 5;

    fn deal(&mut self, prng: &mut Prng, who: Who) -> Fault {
        if self.0.is_empty() {
            self.0 = (0..Self::KINDS).collect();
        }
        let card = self.0.swap_remove(prng.below(self.0.len() as u64) as usize);
        match card {
            0 => Fault::Kill(who),
            1 => Fault::Term(who),
            // Up to twice the AWS lease fail-over: a frozen worker may wake as a zombie.
            2 => Fault::Freeze(who, prng.between(300, 4000)),
            3 => Fault::StopAfterTakeOver(who, prng.between(0, 1500)),
            _ => Fault::RestartFunctions(prng.between(0, 1000)),
        }
    }
}

// ---------------------------------------------------------------------------
// Workers and the function server

struct Worker {
    runtime: Runtime,
    started: Instant,
}

/// The workers of one deployment (locally at most one), and every log they wrote.
struct Cluster<'a, D: Deployment + ?Sized> {
    deployment: &'a D,
    module: &'a Path,
    args: Vec<&'static str>,
    workers: BTreeMap<Who, Worker>,
    logs: &'a RefCell<Vec<PathBuf>>,
}

impl<D: Deployment + ?Sized> Cluster<'_, D> {
    fn start(&mut self, who: Who, extra: &[&str]) {
        assert!(!self.workers.contains_key(&who), "the {who:?} worker runs already");
        let mut args = self.args.clone();
        args.extend(extra);
        let runtime = Runtime::start(self.deployment, self.module, &args);
        self.logs.borrow_mut().push(runtime.log.clone());
        self.workers.insert(who, Worker { runtime, started: Instant::now() });
    }

    fn worker(&mut self, who: Who) -> &mut Worker {
        self.workers.get_mut(&who).unwrap_or_else(|| panic!("no {who:?} worker"))
    }

    fn kill(&mut self, who: Who) {
        if let Some(mut worker) = self.workers.remove(&who) {
            worker.runtime.kill();
        }
    }

    /// SIGTERM: the worker commits, releases its leases and exits with success
    /// (a zombie that lost a lease may report that on its way out instead).
    fn stop(&mut self, who: Who) {
        let Some(mut worker) = self.workers.remove(&who) else { return };
        // A SIGTERM before the runtime listens for it would kill it outright.
        wait_until(TIMEOUT, "the worker to start", || worker.runtime.log_text().contains("runtime starting"));
        let min_age = Duration::from_millis(500);
        std::thread::sleep(min_age.saturating_sub(worker.started.elapsed()));
        let status = worker.runtime.terminate();
        let log = worker.runtime.log_text();
        assert!(
            status.success() || log.contains("lost its lease"),
            "the {who:?} worker stops cleanly on SIGTERM, but exited with {status}; the end of its log:\n{}",
            last_lines(&log, 60)
        );
    }

    fn stop_all(&mut self) {
        let running: Vec<Who> = self.workers.keys().copied().collect();
        for who in running.into_iter().rev() {
            self.stop(who);
        }
    }

    fn inject(&mut self, fault: Fault, functions: &mut FunctionHost) {
        match fault {
            Fault::Kill(who) => {
                self.kill(who);
                self.start(who, &[]);
            }
            Fault::Term(who) => {
                self.stop(who);
                self.start(who, &[]);
            }
            Fault::Freeze(who, ms) => {
                let worker = self.worker(who);
                worker.runtime.signal("STOP");
                std::thread::sleep(Duration::from_millis(ms));
                worker.runtime.signal("CONT");
            }
            Fault::StopAfterTakeOver(who, ms) => {
                self.stop(who);
                self.start(who, &["--commit-interval", "60s", "--group-commit", "false"]);
                let taker = self.worker(who);
                wait_until(TIMEOUT, "the stand-in worker to take a lease", || {
                    taker.runtime.log_text().contains("took the lease")
                });
                std::thread::sleep(Duration::from_millis(ms));
                self.stop(who);
                self.start(who, &[]);
            }
            Fault::RestartFunctions(ms) => functions.restart(Duration::from_millis(ms)),
            Fault::Join => self.start(Who::Second, &[]),
            Fault::Leave { kill: true } => self.kill(Who::Second),
            Fault::Leave { kill: false } => self.stop(Who::Second),
        }
    }
}

/// The shopping cart functions over HTTP on a loopback port that outlives
/// restarts of the server (the module names the port).
struct FunctionHost(FunctionServer);

impl FunctionHost {
    fn start() -> Self {
        Self(FunctionServer::start(shopping_cart::functions()))
    }

    fn addr(&self) -> SocketAddr {
        self.0.addr
    }

    /// Stops the server (requests in flight complete), waits `down`, and serves on the same port again.
    fn restart(&mut self, down: Duration) {
        let port = self.0.addr.port();
        self.0.stop();
        std::thread::sleep(down);
        self.0 = FunctionServer::start_on(shopping_cart::functions(), port);
    }
}

// ---------------------------------------------------------------------------
// Workloads and bad records

struct Streams {
    add_to_cart: String,
    restock: String,
    bad_input: String,
}

/// Adds an ingress of strings for the unknown function type to the module.
fn append_bad_input_ingress(module: &Path, stream: &str) {
    let extra = format!(
        "---
kind: io.statefun.kinesis.v1/ingress
spec:
  id: torture/bad-input
  startupPosition:
    type: earliest
  streams:
    - stream: {stream}
      valueType: io.statefun.types/string
      targets: [{NOWHERE}]
"
    );
    let text = std::fs::read_to_string(module).expect("read module.yaml") + &extra;
    std::fs::write(module, text).expect("write module.yaml");
}

fn cart_address(user: &str) -> Address {
    Address { namespace: "shoppingcart".into(), r#type: "cart".into(), id: user.into() }
}

fn inventory_address(item: &str) -> Address {
    Address { namespace: "shoppingcart".into(), r#type: "inventory".into(), id: item.into() }
}

/// Orders sent after the last fault: one cart and one item in every partition,
/// each cart ordering its partition's item and the next partition's, all in
/// stock. Their results prove that every partition still reads, invokes and
/// publishes, and that messages still cross between every pair of neighbours.
fn probe_workload(prefix: &str) -> Workload {
    let first_in = |partition: u32, name: &dyn Fn(usize) -> String, address: &dyn Fn(&str) -> Address| {
        (0..).map(name).find(|n| partition_of(&address(n), PARTITIONS) == partition).expect("a name in every partition")
    };
    let users: Vec<String> =
        (0..PARTITIONS).map(|p| first_in(p, &|n| format!("{prefix}user-{n}"), &cart_address)).collect();
    let items: Vec<String> =
        (0..PARTITIONS).map(|p| first_in(p, &|n| format!("{prefix}item-{n}"), &inventory_address)).collect();
    let orders = (0..PARTITIONS as usize)
        .flat_map(|p| [(p, p), (p, (p + 1) % PARTITIONS as usize)])
        .enumerate()
        .map(|(n, (user, item))| Order {
            request_id: format!("{prefix}req-{n:02}"),
            user: users[user].clone(),
            item: items[item].clone(),
            quantity: 1,
        })
        .collect();
    Workload { prefix: prefix.to_owned(), restocks: items.into_iter().map(|item| (item, 10)).collect(), orders }
}

/// Whether every restock of these workloads reached `inventory-updates`
/// (items are counted, not records: Kinesis may hold a record twice).
fn restocked<D: Deployment + ?Sized>(deployment: &D, workloads: &[&Workload]) -> bool {
    let updates = tail_json(deployment, "inventory-updates");
    let items: std::collections::BTreeSet<&str> =
        updates.iter().filter_map(|r| r["value"]["item_id"].as_str()).collect();
    workloads.iter().flat_map(|w| w.restocks.keys()).all(|item| items.contains(item.as_str()))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum BadKind {
    /// A 250-character key (so a 266-character address) for a type no endpoint serves.
    LongKey,
    /// A string record for a type no endpoint serves.
    UnknownType,
    /// Bytes that are no `AddToCart`, for a cart: the function fails on every attempt.
    Malformed,
    /// Exactly 1 MiB with its key, for a cart in another partition than the
    /// one reading it: too large for the exchange, dead-lettered whole.
    Huge,
}

#[derive(Debug)]
struct BadRecord {
    kind: BadKind,
    stream: String,
    key: String,
    /// For `Malformed` and `Huge`, the record's bytes are this value's JSON text.
    value: Value,
    /// Where its dead letter must be, and what its reason must say.
    address: String,
    reason: &'static str,
}

/// The fixed corpus: [`BAD_PER_KIND`] records of every [`BadKind`], each for an
/// address of its own (so each makes exactly one dead letter), none a user of
/// the good workloads.
fn corpus(base: &str, streams: &Streams, read_elsewhere: &dyn Fn(&str) -> bool) -> Vec<BadRecord> {
    let mut records = Vec::new();
    for n in 0..BAD_PER_KIND {
        let long_key = format!("{base}bad-long-{n}-");
        let long_key = format!("{long_key}{}", "k".repeat(250 - long_key.len()));
        let unknown = format!("{base}bad-unknown-{n}");
        for (kind, key) in [(BadKind::LongKey, long_key), (BadKind::UnknownType, unknown)] {
            records.push(BadRecord {
                kind,
                stream: streams.bad_input.clone(),
                address: format!("{NOWHERE}/{key}"),
                key,
                value: json!("hello"),
                reason: "no endpoint serves function type nowhere/unknown",
            });
        }
        // `"z` starts a length-delimited field of 122 bytes that the text is too short to hold: never a valid protobuf.
        let mallory = format!("{base}bad-mallory-{n}");
        records.push(BadRecord {
            kind: BadKind::Malformed,
            stream: streams.add_to_cart.clone(),
            address: format!("shoppingcart/cart/{mallory}"),
            key: mallory,
            value: json!(format!("zz not an AddToCart ({n})")),
            reason: "HTTP 500",
        });
        let big = (0..).map(|i| format!("{base}bad-big-{n}-{i}")).find(|u| read_elsewhere(u)).expect("some user");
        // The JSON text adds two quotes: data and key make exactly 1 MiB.
        let filler = "x".repeat(MAX_RECORD_BYTES - big.len() - 2);
        records.push(BadRecord {
            kind: BadKind::Huge,
            stream: streams.add_to_cart.clone(),
            address: format!("shoppingcart/cart/{big}"),
            key: big,
            value: json!(filler),
            reason: "larger than an exchange record carries",
        });
    }
    records
}

/// Locally: whether a record keyed `user` on the add-to-cart stream is read by
/// another partition than the one holding the user's cart (so its message must
/// cross the exchange). Four local shards, shard i read by partition i (see bad_input.rs).
fn read_elsewhere_locally(user: &str) -> bool {
    shard_of_key(user, PARTITIONS) != partition_of(&cart_address(user), PARTITIONS)
}

/// On Kinesis, the partitions that read `stream`: each shard is read by the
/// partition its starting hash key falls in. The test cannot hash keys as
/// Kinesis does (MD5), so it picks carts of a partition that reads no shard:
/// a record for one is read elsewhere whichever shard its key lands in.
/// (LocalStack splits the hash key range one below the middle, so its two
/// shards are read by partitions 0 and 1, where Kinesis' would be by 0 and 2.)
fn kinesis_readers(stream: &str) -> Vec<u32> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
    let listed = runtime.block_on(kinesis_client().list_shards().stream_name(stream).send()).expect("list the shards");
    let readers: Vec<u32> = listed
        .shards()
        .iter()
        .map(|shard| shard.hash_key_range().map_or("0", |r| r.starting_hash_key()).parse::<u128>().expect("a hash key"))
        .map(|start| partition_of_shard(start, PARTITIONS))
        .collect();
    assert!(
        readers.len() < PARTITIONS as usize,
        "some partition of {PARTITIONS} reads no shard of {stream}: {readers:?}"
    );
    readers
}

fn send_bad<D: Deployment + ?Sized>(deployment: &D, module: &Path, record: &BadRecord) {
    let line = json!({"key": record.key, "value": record.value});
    match record.kind {
        BadKind::LongKey | BadKind::UnknownType => send_lines(deployment, module, &record.stream, &[line]),
        BadKind::Malformed | BadKind::Huge => {
            let file = deployment.scratch().join(format!("bad-{}.jsonl", record.key));
            std::fs::write(&file, format!("{line}\n")).expect("write the bad record");
            let (module, file) = (module.to_string_lossy(), file.to_string_lossy());
            statefun(
                deployment,
                &["send", "--module", &module, "--stream", &record.stream, "--type", RAW_JSON_TEXT, "--lines", &file],
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Dead letters

/// The dead letters, copies of one letter (same address and messages: Kinesis
/// may hold a re-published letter twice) grouped together.
fn distinct_letters<D: Deployment + ?Sized>(deployment: &D) -> BTreeMap<(String, String), Vec<Value>> {
    let mut distinct: BTreeMap<(String, String), Vec<Value>> = BTreeMap::new();
    for letter in dead_letters_json(deployment) {
        let address = letter["address"].as_str().unwrap_or_default().to_owned();
        distinct.entry((address, letter["messages"].to_string())).or_default().push(letter);
    }
    distinct
}

/// Every bad record has exactly one dead letter, at its address with its
/// reason, and no other letter exists. Returns the letters and their extra copies.
fn check_dead_letters<D: Deployment + ?Sized>(deployment: &D, corpus: &[BadRecord]) -> (usize, usize) {
    let distinct = distinct_letters(deployment);
    let mut copies = 0;
    for letters in distinct.values() {
        for copy in &letters[1..] {
            assert_eq!(copy["reason"], letters[0]["reason"], "copies of a dead letter differ: {letters:#?}");
        }
        copies += letters.len() - 1;
    }
    for record in corpus {
        let theirs: Vec<&Vec<Value>> =
            distinct.iter().filter(|((a, _), _)| *a == record.address).map(|(_, l)| l).collect();
        assert_eq!(
            theirs.len(),
            1,
            "one dead letter for the {:?} record keyed {}: {theirs:#?}",
            record.kind,
            record.key
        );
        let letter = &theirs[0][0];
        let reason = letter["reason"].as_str().unwrap_or_default();
        assert!(
            reason.contains(record.reason),
            "the {:?} record's letter says `{}`: {letter}",
            record.kind,
            record.reason
        );
        let messages = letter["messages"].as_array().map_or(0, Vec::len);
        assert_eq!(messages, 1, "the {:?} record's letter holds its one message: {letter}", record.kind);
    }
    let others: Vec<&String> =
        distinct.keys().map(|(address, _)| address).filter(|a| !corpus.iter().any(|r| &r.address == *a)).collect();
    assert!(others.is_empty(), "dead letters of no bad record: {others:#?}");
    assert_eq!(distinct.len(), corpus.len(), "exactly one dead letter per bad record");
    (distinct.len(), copies)
}

// ---------------------------------------------------------------------------
// Reporting

struct Summary {
    events: usize,
    probes: usize,
    bad_records: usize,
    letters: usize,
    letter_copies: usize,
    redelivered: usize,
    /// Faults after which some orders sent had no result yet (so injected mid-run).
    mid_run: usize,
    workers: usize,
    error_lines: usize,
    /// Leases taken (at starts, take-overs and hand-overs) and lost (by zombies), over every worker.
    leases_taken: usize,
    leases_lost: usize,
    seconds: f64,
}

/// Prints the outcome; on a failure, the ERROR lines and last lines of every
/// worker's log, and panics with the seed and steps that replay the schedule.
fn conclude(plan: &Plan, outcome: std::thread::Result<Summary>, logs: &RefCell<Vec<PathBuf>>) {
    let replay = format!("STATEFUN_TORTURE_SEED={} STATEFUN_TORTURE_STEPS={}", plan.seed, plan.steps.len());
    match outcome {
        Ok(s) => eprintln!(
            "torture on {:?} passed ({replay}) in {:.1} s: faults {:?}, {} of them surely with orders in flight; {} events and {} probe orders, each with one result \
             ({} re-published copies); {} bad records, {} dead letters ({} re-published copies); {} workers started, \
             {} leases taken, {} lost; {} ERROR lines in their logs",
            plan.backend,
            s.seconds,
            plan.fault_counts(),
            s.mid_run,
            s.events,
            s.probes,
            s.redelivered,
            s.bad_records,
            s.letters,
            s.letter_copies,
            s.workers,
            s.leases_taken,
            s.leases_lost,
            s.error_lines
        ),
        Err(panic) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_else(|| "(no message)".to_owned());
            let logs = logs.borrow();
            for line in error_lines(&logs).iter().rev().take(40).rev() {
                eprintln!("{line}");
            }
            if let Some(last) = logs.last() {
                let text = std::fs::read_to_string(last).unwrap_or_default();
                eprintln!("the last worker's log ({}) ends:\n{}", last.display(), last_lines(&text, 40));
            }
            panic!("torture on {:?} failed; rerun with {replay} to replay its schedule: {message}", plan.backend);
        }
    }
}

/// The ERROR lines of the workers' logs, each prefixed by its log's file name.
fn error_lines(logs: &[PathBuf]) -> Vec<String> {
    let mut lines = Vec::new();
    for log in logs {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let name = log.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        lines.extend(text.lines().filter(|l| l.contains("ERROR")).map(|l| format!("{name}: {l}")));
    }
    lines
}

/// How many lines of the workers' logs contain `text`.
fn count_log_lines(logs: &[PathBuf], text: &str) -> usize {
    logs.iter()
        .map(|log| std::fs::read_to_string(log).unwrap_or_default().lines().filter(|l| l.contains(text)).count())
        .sum()
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Deletes the extra ingress stream at the end ([`AwsDeployment`] deletes the
/// streams it knows of). Best effort: a failure here must not fail the test.
struct DeleteStreamOnDrop(String);

impl Drop for DeleteStreamOnDrop {
    fn drop(&mut self) {
        let Ok(runtime) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        let stream = self.0.clone();
        runtime.block_on(async move {
            let _ = kinesis_client().delete_stream().stream_name(stream).enforce_consumer_deletion(true).send().await;
        });
    }
}
