//! Harness for the end-to-end tests: runs the `statefun` binary as a child
//! process (so tests can kill it), serves functions in-process over HTTP, and
//! reads streams, state and dead letters back through the CLI.

pub mod aws;
pub mod cart;
pub mod python;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use statefun_runtime::log::local::LocalLogStore;
use statefun_runtime::log::{AppendRecord, LogError, LogStore as _, ShardChoice};

/// A binary of this workspace, built next to the test executable.
pub fn workspace_bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target directory");
    let bin = dir.join(name);
    assert!(
        bin.exists(),
        "{} is missing: build the binaries first (`cargo build --bins`; scripts/test.sh does)",
        bin.display()
    );
    bin
}

/// Where the runtime under test keeps its streams and checkpoints: the CLI
/// verbs and the worker get it through environment variables.
pub trait Deployment {
    /// Variables for every `statefun` process of this deployment.
    fn envs(&self) -> Vec<(String, String)>;
    /// A directory for the test's own files (records to send, logs).
    fn scratch(&self) -> PathBuf;
}

/// The embedded local mode: a data directory.
impl Deployment for Path {
    fn envs(&self) -> Vec<(String, String)> {
        vec![("STATEFUN_DATA_DIR".into(), self.display().to_string())]
    }
    fn scratch(&self) -> PathBuf {
        let dir = self.with_extension("scratch");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        dir
    }
}

impl Deployment for PathBuf {
    fn envs(&self) -> Vec<(String, String)> {
        self.as_path().envs()
    }
    fn scratch(&self) -> PathBuf {
        self.as_path().scratch()
    }
}

/// A local deployment whose `statefun` processes get extra variables.
pub struct WithEnv<'a> {
    pub data: &'a Path,
    pub extra: Vec<(String, String)>,
}

impl Deployment for WithEnv<'_> {
    fn envs(&self) -> Vec<(String, String)> {
        let mut envs = self.data.envs();
        envs.extend(self.extra.iter().cloned());
        envs
    }
    fn scratch(&self) -> PathBuf {
        self.data.scratch()
    }
}

fn command<D: Deployment + ?Sized>(deployment: &D) -> Command {
    let mut command = Command::new(workspace_bin("statefun"));
    // Tests read the runtime's log as text; JSON logs have their own test.
    command.env("STATEFUN_LOG_FORMAT", "text");
    command.envs(deployment.envs());
    command
}

/// Runs a `statefun` CLI verb and returns its stdout; panics with stderr on failure.
pub fn statefun<D: Deployment + ?Sized>(deployment: &D, args: &[&str]) -> String {
    statefun_result(deployment, args).unwrap_or_else(|e| panic!("statefun {args:?} failed: {e}"))
}

/// Like [`statefun`], but returns the failure instead of panicking.
pub fn statefun_result<D: Deployment + ?Sized>(deployment: &D, args: &[&str]) -> Result<String, String> {
    let output = command(deployment).args(args).output().map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&output.stderr).into_owned())
    }
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines().filter(|l| !l.trim().is_empty()).map(|l| serde_json::from_str(l).expect("JSON line")).collect()
}

/// Every record of a stream so far, as `{"shard","sequence","key","id","value"}`.
pub fn tail_json<D: Deployment + ?Sized>(deployment: &D, stream: &str) -> Vec<Value> {
    match statefun_result(deployment, &["tail", "--stream", stream, "--json"]) {
        Ok(text) => json_lines(&text),
        Err(e) if e.contains("does not exist") => Vec::new(),
        Err(e) => panic!("tail {stream}: {e}"),
    }
}

/// The committed state: `{"namespace/type/id": {"state": value}}`.
pub fn state_json<D: Deployment + ?Sized>(deployment: &D) -> Value {
    serde_json::from_str(&statefun(deployment, &["state", "--json"])).expect("state JSON")
}

pub fn dead_letters_json<D: Deployment + ?Sized>(deployment: &D) -> Vec<Value> {
    json_lines(&statefun(deployment, &["dead-letters", "--json"]))
}

/// Appends `{"key","value"}` records to a stream through `statefun send --lines`.
pub fn send_lines<D: Deployment + ?Sized>(deployment: &D, module: &Path, stream: &str, records: &[Value]) {
    let file = unique(deployment.scratch().join(format!("{stream}.jsonl")));
    let text: String = records.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&file, text).expect("write records");
    let module = module.to_string_lossy();
    let file = file.to_string_lossy();
    statefun(deployment, &["send", "--module", &module, "--stream", stream, "--lines", &file]);
}

/// Appends one record as given (no encoding, any key) to a local stream.
pub fn append_raw(data_dir: &Path, stream: &str, key: &str, data: &[u8]) -> Result<(), LogError> {
    let log = LocalLogStore::new(data_dir);
    let record = AppendRecord { partition_key: key.into(), shard: ShardChoice::ByKey, data: data.to_vec(), id: None };
    tokio::runtime::Runtime::new().expect("tokio").block_on(log.append(stream, &[record]))
}

/// Polls `check` until it holds, or panics after `timeout` naming `what`.
pub fn wait_until(timeout: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A `statefun run` child process.
pub struct Runtime {
    child: Child,
    pub log: PathBuf,
}

impl Runtime {
    pub fn start<D: Deployment + ?Sized>(deployment: &D, module: &Path, extra: &[&str]) -> Self {
        let log = unique(deployment.scratch().join("runtime.log"));
        let out = std::fs::File::create(&log).expect("runtime log");
        let child = command(deployment)
            .arg("run")
            .arg("--module")
            .arg(module)
            .args(extra)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start statefun run");
        Self { child, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to commit or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM, then waits for the process to commit and exit.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill").arg("-TERM").arg(self.child.id().to_string()).status();
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status;
            }
            assert!(start.elapsed() < Duration::from_secs(30), "runtime did not stop within 30 s of SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal by name (`STOP`, `CONT`, ...).
    pub fn signal(&self, name: &str) {
        let sent = Command::new("kill").arg(format!("-{name}")).arg(self.child.id().to_string()).status();
        assert!(sent.is_ok_and(|s| s.success()), "kill -{name} {}", self.child.id());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `path`, or `path` with a counter before its extension when it exists.
fn unique(path: PathBuf) -> PathBuf {
    let mut candidate = path.clone();
    let mut n = 0;
    while candidate.exists() {
        n += 1;
        let ext = path.extension().map(|e| e.to_string_lossy().into_owned()).unwrap_or_default();
        candidate = path.with_extension(format!("{n}.{ext}"));
    }
    candidate
}

/// Functions served over HTTP on a loopback port, on a thread of their own.
pub struct FunctionServer {
    pub addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FunctionServer {
    pub fn start(functions: statefun_sdk::Functions) -> Self {
        Self::start_on(functions, 0)
    }

    /// Serves on `port` (0: any free port), waiting up to 30 s for it to be
    /// free: a server started again after [`FunctionServer::stop`] keeps the
    /// port its module.yaml names.
    pub fn start_on(functions: statefun_sdk::Functions, port: u16) -> Self {
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().expect("tokio");
            runtime.block_on(async move {
                let address = format!("127.0.0.1:{port}");
                let started = Instant::now();
                let server = loop {
                    match statefun_sdk::http::Server::bind(address.as_str()).await {
                        Ok(server) => break server,
                        Err(e) if started.elapsed() < Duration::from_secs(30) => {
                            eprintln!("binding {address} failed, trying again: {e}");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        Err(e) => panic!("binding {address}: {e}"),
                    }
                };
                addr_tx.send(server.local_addr()).expect("report address");
                let _ = server
                    .serve_with_shutdown(functions, async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        let addr = addr_rx.recv().expect("server address");
        Self { addr, stop: Some(stop), thread: Some(thread) }
    }

    /// Stops serving (requests in flight complete).
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for FunctionServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A function that appends every value it receives to its state: the state of
/// a key is the order in which that key's records were applied.
pub fn sequence_log() -> statefun_sdk::Functions {
    use statefun_sdk::{Context, FunctionType, Message, StringType, ValueSpec};
    let seen = ValueSpec::new("seen", StringType);
    statefun_sdk::Functions::new().with(FunctionType::new("order", "log"), &[&seen], {
        let seen = seen.clone();
        move |ctx: &mut Context, message: Message| {
            let value = message.as_value(&StringType)?;
            let mut log = ctx.get(&seen)?.unwrap_or_default();
            log.push_str(&value);
            log.push(' ');
            ctx.set(&seen, &log)?;
            Ok(())
        }
    })
}

/// The example's module.yaml with the functions' port filled in, written to `dir`.
pub fn shopping_cart_module(dir: &Path, port: u16) -> PathBuf {
    let template = include_str!("../../functions/examples/shopping-cart/module.yaml");
    let path = dir.join("module.yaml");
    std::fs::write(&path, template.replace("${FUNCTIONS_PORT}", &port.to_string())).expect("write module.yaml");
    path
}
