//! The command line in a pipe: a reader that stops early (`statefun tail |
//! head -1`) ends the command quietly, as it ends the usual Unix tools.

use std::process::{Command, Stdio};

use serde_json::json;
use statefun_tests::{Deployment, send_lines, shopping_cart_module, workspace_bin};

#[test]
fn tail_ends_quietly_when_its_reader_goes_away() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let module = shopping_cart_module(dir.path(), 9);
    let records: Vec<_> = (0..2000)
        .map(|i| json!({"key": format!("item-{i}"), "value": {"itemId": format!("item-{i}"), "quantity": i}}))
        .collect();
    send_lines(&data, &module, "restock", &records);

    for args in [&["tail", "--stream", "restock"][..], &["tail", "--stream", "restock", "--json"][..]] {
        let mut child = Command::new(workspace_bin("statefun"))
            .envs(data.envs())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start statefun tail");
        // The reader goes away before reading anything.
        drop(child.stdout.take());
        let output = child.wait_with_output().expect("statefun tail ends");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "statefun {args:?} exited with {}: {stderr}", output.status);
        assert!(!stderr.contains("panicked"), "statefun {args:?}: {stderr}");
    }
}
