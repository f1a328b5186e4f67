//! The Terraform under `infra/terraform`, tested three ways:
//!
//! - every configuration is formatted and validates, offline, against the
//!   provider mirror when there is one (`STATEFUN_TERRAFORM_PLUGIN_DIR`, default
//!   `/opt/tf-plugins`);
//! - the example's plan (made offline: a stand-in STS answers the one call a
//!   plan makes, every other endpoint refuses connections) grants the workers
//!   and the functions only this deployment's resources, by exact ARN, and
//!   wires the worker to exactly the streams, table and bucket it creates, with
//!   a module.yaml the runtime loads;
//! - `infra/terraform/local` applied to the local AWS stack creates the streams,
//!   table and bucket in the shapes the runtime expects; the shopping cart runs
//!   end to end on exactly those; `terraform destroy` removes them all.
//!
//! Terraform runs in a copy of `infra/terraform` in a temporary directory, so
//! its working data (`.terraform`, lock files, state) never lands in the tree.
//! The terraform binary is `terraform` on PATH, or `$TERRAFORM`. The plan
//! checks are in `terraform/plan.rs`, the local stack's in
//! `terraform/local_stack.rs`.

#[path = "terraform/local_stack.rs"]
mod local_stack;
#[path = "terraform/plan.rs"]
mod plan;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

use serde_json::Value;
use statefun_tests::aws::repo_root;

const PARTITIONS: u32 = 4;

// --- terraform ------------------------------------------------------------------------------------

fn terraform_bin() -> &'static str {
    static BIN: OnceLock<String> = OnceLock::new();
    BIN.get_or_init(|| {
        let bin = std::env::var("TERRAFORM").unwrap_or_else(|_| "terraform".to_owned());
        match Command::new(&bin).arg("version").env("CHECKPOINT_DISABLE", "1").output() {
            Ok(output) if output.status.success() => bin,
            Ok(output) => panic!(
                "`{bin} version` failed: {}; the Terraform tests need Terraform >= 1.5 (set TERRAFORM to its path)",
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => panic!(
                "Terraform is not installed ({bin}: {e}); the Terraform tests need Terraform >= 1.5 on PATH or at $TERRAFORM"
            ),
        }
    })
}

/// A filesystem mirror of the AWS provider for offline `init`, if there is one.
fn plugin_dir() -> Option<PathBuf> {
    match std::env::var_os("STATEFUN_TERRAFORM_PLUGIN_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            assert!(dir.is_dir(), "STATEFUN_TERRAFORM_PLUGIN_DIR={} is not a directory", dir.display());
            Some(dir)
        }
        None => Some(PathBuf::from("/opt/tf-plugins")).filter(|d| d.is_dir()),
    }
}

/// A copy of `infra/terraform` to run Terraform in.
struct Workspace {
    dir: tempfile::TempDir,
}

impl Workspace {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        copy_tree(&repo_root().join("infra/terraform"), &dir.path().join("terraform"));
        // An empty CLI configuration: nothing from the user's ~/.terraformrc.
        std::fs::write(dir.path().join("terraformrc"), "").expect("write terraformrc");
        Self { dir }
    }

    fn config(&self, relative: &str) -> PathBuf {
        self.dir.path().join("terraform").join(relative)
    }

    fn command(&self, config: &Path, args: &[&str]) -> Command {
        let mut command = Command::new(terraform_bin());
        command.arg(format!("-chdir={}", config.display())).args(args);
        for (name, _) in std::env::vars_os() {
            let name = name.to_string_lossy();
            if name.starts_with("AWS_") || name.starts_with("TF_") {
                command.env_remove(&*name);
            }
        }
        command
            .env("TF_CLI_CONFIG_FILE", self.dir.path().join("terraformrc"))
            .env("TF_IN_AUTOMATION", "1")
            .env("TF_INPUT", "0")
            .env("CHECKPOINT_DISABLE", "1");
        command
    }

    fn run(&self, config: &Path, args: &[&str]) -> Result<String, String> {
        let output = self.command(config, args).output().unwrap_or_else(|e| panic!("run terraform {args:?}: {e}"));
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        if output.status.success() {
            Ok(stdout)
        } else {
            Err(format!("{stdout}\n{}", String::from_utf8_lossy(&output.stderr)))
        }
    }

    /// Runs `terraform <args>` in `config`; panics with its output on failure.
    fn terraform(&self, config: &Path, args: &[&str]) -> String {
        self.run(config, args).unwrap_or_else(|e| panic!("terraform {args:?} in {} failed:\n{e}", config.display()))
    }

    fn init(&self, config: &Path, backend: bool) {
        let mut args = vec!["init", "-no-color"];
        if !backend {
            args.push("-backend=false");
        }
        let plugins = plugin_dir().map(|d| format!("-plugin-dir={}", d.display()));
        if let Some(plugins) = &plugins {
            args.push(plugins);
        }
        self.terraform(config, &args);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create directory");
    for entry in std::fs::read_dir(from).expect("read infra/terraform") {
        let entry = entry.expect("directory entry");
        let name = entry.file_name().to_string_lossy().into_owned();
        // A user's own working data stays where it is.
        if name == ".terraform"
            || name == ".terraform.lock.hcl"
            || name.contains(".tfstate")
            || name.ends_with(".tfvars")
        {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name));
        } else {
            std::fs::copy(&path, to.join(&name)).expect("copy file");
        }
    }
}

/// Terraform's output with its box drawing and line wrapping undone, to look for a message in.
fn flat(text: &str) -> String {
    text.replace('│', " ").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn elapsed(since: Instant) -> String {
    format!("{:.1} s", since.elapsed().as_secs_f64())
}

// --- formatting and validation --------------------------------------------------------------------

/// The root configurations, and the module validated on its own; `validate` checks the modules
/// each calls too (statefun-storage is called by the others).
const CONFIGURATIONS: &[&str] = &["modules/statefun", "examples/shopping-cart", "local"];

#[test]
fn every_terraform_configuration_is_formatted_and_validates_offline() {
    let started = Instant::now();
    let workspace = Workspace::new();
    let infra = repo_root().join("infra/terraform");
    if let Err(e) = workspace.run(&infra, &["fmt", "-check", "-recursive", "-diff", "-no-color"]) {
        panic!(
            "`terraform fmt -check -recursive infra/terraform` wants changes (run `terraform fmt -recursive infra/terraform`):\n{e}"
        );
    }
    for relative in CONFIGURATIONS {
        let config = workspace.config(relative);
        workspace.init(&config, false);
        // Exits non-zero when invalid, with the JSON report on stdout either way.
        let output =
            workspace.command(&config, &["validate", "-json", "-no-color"]).output().expect("run terraform validate");
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("terraform validate -json in {relative}: {e}:\n{text}\n{}", String::from_utf8_lossy(&output.stderr))
        });
        assert_eq!(report["valid"], true, "{relative} does not validate: {report:#}");
        assert_eq!(report["warning_count"], 0, "{relative} validates with warnings: {report:#}");
    }

    eprintln!("fmt and validate of {} configurations: {}", CONFIGURATIONS.len(), elapsed(started));
}
