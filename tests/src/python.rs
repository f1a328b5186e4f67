//! Functions written with the official StateFun Python SDK, served by the
//! scripts in tests/python from the venv that scripts/python-env.sh prepares
//! (under the ignored `.local/`, created on first use; needs python3 and PyPI).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::aws::repo_root;

/// Runs scripts/python-env.sh and returns the venv's python (the last stdout line).
pub fn python_env() -> PathBuf {
    let root = repo_root();
    let output = Command::new("bash")
        .arg(root.join("scripts/python-env.sh"))
        .current_dir(&root)
        .stderr(Stdio::piped())
        .output()
        .expect("run bash scripts/python-env.sh");
    assert!(
        output.status.success(),
        "scripts/python-env.sh failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let python = PathBuf::from(stdout.lines().last().expect("python-env.sh printed no path").trim());
    assert!(python.exists(), "python-env.sh printed {}, which does not exist", python.display());
    python
}

/// A tests/python script serving functions over HTTP, as a child process; killed on drop.
pub struct PythonServer {
    child: Child,
    pub port: u16,
    stderr: PathBuf,
}

impl PythonServer {
    /// Starts `tests/python/<script>` with `args`; it must print
    /// `listening on http://127.0.0.1:<port>` (or `https://`) first.
    pub fn start(python: &Path, script: &str, args: &[&str], dir: &Path) -> Self {
        Self::start_with_env(python, script, args, &[], dir)
    }

    /// [`PythonServer::start`] with variables added to its environment.
    pub fn start_with_env(python: &Path, script: &str, args: &[&str], env: &[(&str, &str)], dir: &Path) -> Self {
        let stderr = dir.join(format!("{script}.stderr.log"));
        let mut child = Command::new(python)
            .arg(repo_root().join("tests/python").join(script))
            .args(args)
            .envs(env.iter().copied())
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr).expect("python stderr file"))
            .spawn()
            .unwrap_or_else(|e| panic!("start {script}: {e}"));
        let stdout = child.stdout.take().expect("python stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let mut server = Self { child, port: 0, stderr };
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let address = line.trim().strip_prefix("listening on ");
        let address = address.and_then(|a| a.strip_prefix("http://").or_else(|| a.strip_prefix("https://")));
        let port = address.and_then(|a| a.strip_prefix("127.0.0.1:")).and_then(|p| p.parse().ok());
        match port {
            Some(port) => server.port = port,
            None => panic!("{script} did not report its port (first line {line:?}); stderr:\n{}", server.stderr_text()),
        }
        server
    }

    pub fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
