//! The worker image, built by `scripts/image.sh` (with podman here: no Docker
//! daemon, no registry) and run: the shopping cart with the worker inside the
//! container against the local AWS stack (host networking, loopback only).
//! The worker runs as the image's non-root user and its health check passes;
//! a SIGTERM to the container makes it commit and release every lease; a
//! worker on the host then takes the partitions over and finishes the workload,
//! every order with exactly one result.

use std::process::{Command, Output};
use std::time::Duration;

use serde_json::Value;
use statefun_tests::aws::{AwsDeployment, repo_root};
use statefun_tests::cart::{self, Shape};
use statefun_tests::{Deployment, FunctionServer, Runtime, send_lines, statefun, wait_until, workspace_bin};

const TIMEOUT: Duration = Duration::from_secs(300);
const PARTITIONS: u32 = 4;

/// Runs podman with the configuration scripts/image.sh wrote.
fn podman(args: &[&str]) -> Output {
    Command::new("podman")
        .env("CONTAINERS_CONF", repo_root().join(".local/podman/containers.conf"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("podman {args:?}: {e}"))
}

fn podman_ok(args: &[&str]) -> String {
    let output = podman(args);
    assert!(output.status.success(), "podman {args:?} failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// Removes the container and the image made for the test, however the test ends.
struct Cleanup {
    container: String,
    image: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = podman(&["rm", "-f", &self.container]);
        let _ = podman(&["rmi", "-f", &self.image]);
    }
}

#[test]
fn the_worker_image_runs_the_shopping_cart_and_hands_its_partitions_over_on_sigterm() {
    let server = FunctionServer::start(shopping_cart::functions());
    let deployment = AwsDeployment::new();
    let endpoint = format!(
        "kind: io.statefun.endpoints.v2/http\nspec:\n  functions: shoppingcart/*\n  urlPathTemplate: http://{}/statefun",
        server.addr
    );
    let module = deployment.shopping_cart_module(&endpoint);
    deployment.setup(&module, PARTITIONS);

    let tag = format!("localhost/statefun:test-{}", deployment.suffix);
    let binary = workspace_bin("statefun");
    let built = Command::new("bash")
        .arg(repo_root().join("scripts/image.sh"))
        .args(["--tag", &tag, "--binary", &binary.to_string_lossy()])
        .output()
        .expect("run scripts/image.sh");
    assert!(built.status.success(), "scripts/image.sh failed:\n{}", String::from_utf8_lossy(&built.stderr));
    let image = String::from_utf8_lossy(&built.stdout).lines().last().unwrap_or_default().trim().to_owned();
    assert_eq!(image, tag);

    let container = format!("statefun-test-{}", deployment.suffix);
    let _cleanup = Cleanup { container: container.clone(), image: image.clone() };
    let admin = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("a free port");
    let module_yaml = std::fs::read_to_string(&module).expect("module.yaml");
    let mut run: Vec<String> = ["run", "-d", "--name", &container, "--network", "host"].map(str::to_owned).to_vec();
    let envs = deployment.envs().into_iter().chain([
        ("STATEFUN_MODULE_YAML".to_owned(), module_yaml),
        ("STATEFUN_PARTITIONS".to_owned(), PARTITIONS.to_string()),
        ("STATEFUN_ADMIN_LISTEN".to_owned(), admin.to_string()),
        ("STATEFUN_LOG_FORMAT".to_owned(), "text".to_owned()),
    ]);
    for (name, value) in envs {
        run.push("--env".into());
        run.push(format!("{name}={value}"));
    }
    run.extend([image.clone(), "run".into()]);
    podman_ok(&run.iter().map(String::as_str).collect::<Vec<_>>());

    let workload = cart::generate(
        &format!("image-{}-", deployment.suffix),
        Shape { users: 20, events: 400, plenty: 6, scarce: 2, missing: 2, seed: 17 },
    );
    send_lines(&deployment, &module, &deployment.ingress("restock"), &workload.restock_records());
    wait_until(TIMEOUT, "the worker in the container to apply the restocks", || {
        workload.restocks_applied(&deployment) == workload.restocks.len()
    });
    // The first half of the orders for the container, the second half after its SIGTERM.
    let (first, second) = workload.orders.split_at(workload.orders.len() / 2);
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(first));
    wait_until(TIMEOUT, "the container's results", || workload.results(&deployment).len() >= first.len());

    assert_eq!(podman_ok(&["exec", &container, "id", "-u"]), "10001", "the worker runs as the image's non-root user");
    let check = podman(&["healthcheck", "run", &container]);
    assert!(check.status.success(), "the health check fails: {}", String::from_utf8_lossy(&check.stderr));

    // SIGTERM (podman stop), then the worker has 60 s to commit and release.
    podman_ok(&["stop", "--time", "60", &container]);
    let exit = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &container]);
    let logs = podman(&["logs", &container]);
    let log = String::from_utf8_lossy(&logs.stderr).into_owned() + &String::from_utf8_lossy(&logs.stdout);
    assert_eq!(exit, "0", "the worker exits cleanly on SIGTERM; its log:\n{log}");
    let released = log.lines().filter(|l| l.contains("released the lease")).count();
    assert_eq!(released, PARTITIONS as usize, "every lease released; log:\n{log}");
    let status: Value = serde_json::from_str(&statefun(&deployment, &["status", "--json"])).expect("status --json");
    let owners: Vec<&str> = status["partitions"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["owner"].as_str().unwrap_or("?")).collect())
        .unwrap_or_default();
    assert_eq!(owners, vec![""; PARTITIONS as usize], "every partition free once the container stopped: {status:#}");

    let results_at_stop = workload.results(&deployment).len();
    send_lines(&deployment, &module, &deployment.ingress("add-to-cart"), &workload.order_records(second));
    let partitions = PARTITIONS.to_string();
    let mut host = Runtime::start(&deployment, &module, &["--partitions", &partitions]);
    wait_until(TIMEOUT, "the host worker to finish the workload", || {
        workload.results(&deployment).len() >= workload.orders.len()
    });
    assert!(host.terminate().success(), "runtime log:\n{}", host.log_text());
    let report = cart::check(&deployment, &workload);
    eprintln!(
        "{} orders: {results_at_stop} results from the container before its SIGTERM, the rest from the host; {} redelivered",
        workload.orders.len(),
        report.redelivered
    );
    assert_eq!(report.redelivered, 0, "a SIGTERM commits first: no result is delivered twice");
}
