//! The README's first command, `scripts/demo.sh`, runs to the end and its
//! output tells the shopping cart story: three restocks, eight results, and a
//! summary in which every item's stock plus reservations equals its restock.

use std::path::Path;
use std::process::Command;

use statefun_tests::workspace_bin;

fn summary_line<'a>(output: &'a str, item: &str) -> &'a str {
    output
        .lines()
        .find(|l| l.trim_start().starts_with(item) && l.contains("in stock"))
        .unwrap_or_else(|| panic!("no inventory line for {item} in:\n{output}"))
}

fn numbers(line: &str) -> Vec<i64> {
    line.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty()).filter_map(|s| s.parse().ok()).collect()
}

#[test]
fn the_demo_tells_the_shopping_cart_story_from_restock_to_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let bin_dir = workspace_bin("statefun").parent().expect("bin dir").to_path_buf();
    workspace_bin("shopping-cart");
    let demo_dir = tempfile::tempdir().expect("tempdir");
    let output = Command::new("bash")
        .arg(root.join("scripts/demo.sh"))
        .env("STATEFUN_BIN_DIR", &bin_dir)
        .env("STATEFUN_DEMO_DIR", demo_dir.path())
        .output()
        .expect("run demo.sh");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "demo.sh failed\nstdout:\n{stdout}\nstderr:\n{stderr}");

    assert_eq!(stdout.lines().filter(|l| l.contains("restocked")).count(), 3, "{stdout}");
    let results: Vec<&str> = stdout.lines().filter(|l| l.contains(": OK ") || l.contains(": FAIL ")).collect();
    assert_eq!(results.len(), 8, "one result per order:\n{stdout}");
    for order in 1..=8 {
        assert_eq!(
            results.iter().filter(|l| l.trim_start().starts_with(&format!("order-{order}:"))).count(),
            1,
            "{stdout}"
        );
    }
    assert!(results.iter().any(|l| l.contains("FAIL  carol wanted 1 x durian")), "durian was never stocked:\n{stdout}");
    assert!(stdout.contains("carts:") && stdout.contains("inventory:"), "{stdout}");
    for (item, restocked) in [("apple", 5), ("banana", 2), ("cherry", 3)] {
        let counts = numbers(summary_line(&stdout, item));
        assert_eq!(counts.iter().sum::<i64>(), restocked, "{item}: in stock + reserved = restocked\n{stdout}");
    }
    assert!(!stdout.contains("dead letters:"), "no dead letters in the demo:\n{stdout}");
}
