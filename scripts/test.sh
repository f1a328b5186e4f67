#!/usr/bin/env bash
# Runs every test of the workspace: unit and property tests, and the
# end-to-end tests that start the `statefun` binary against real functions
# (the Rust SDK over HTTP, and the official StateFun Python SDK in a venv
# under .local/, created on first use).
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== building the binaries the end-to-end tests start"
cargo build --bins

echo "== preparing the StateFun Python SDK environment (.local/python-statefun)"
bash scripts/python-env.sh >/dev/null

echo "== cargo test --workspace"
cargo test --workspace
