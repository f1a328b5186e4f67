#!/usr/bin/env bash
# Runs every test of the workspace, the fast checks first (formatting, clippy
# and the doc build, warnings as errors), then unit and property tests, and the
# end-to-end tests that start the `statefun` binary against real functions
# (the Rust SDK over HTTP and as a Lambda, and the official StateFun Python SDK
# in a venv under .local/) on the local backends and on the local AWS stack
# (LocalStack, moto, cargo lambda watch: installed under .local/ on first use,
# started here and stopped at the end if this run started them). Debian's
# prometheus and chromium are installed with apt-get when missing, the CDK
# library's npm packages under infra/cdk/node_modules, and podman (for the worker
# image's test) by scripts/image.sh.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== format and lint: cargo fmt --check, cargo clippy and cargo doc (warnings are errors)"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --quiet -- -D warnings
# The internals are documented too; their docs may link to private items.
RUSTDOCFLAGS="-D warnings -A rustdoc::private_intra_doc_links" \
  cargo doc --workspace --no-deps --document-private-items --quiet

echo "== building the binaries the end-to-end tests start"
cargo build --bins

echo "== Debian packages of the observability tests: prometheus (scrapes the admin server), chromium (the status page)"
missing=()
command -v prometheus >/dev/null || missing+=(prometheus)
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
source scripts/lib/debian.sh
install_debian_packages "${missing[@]}"

echo "== the CDK construct library: npm ci (when needed), tsc, its tests and an offline cdk synth (infra/cdk/test.sh)"
bash infra/cdk/test.sh

echo "== preparing the StateFun Python SDK environment (.local/python-statefun)"
bash scripts/python-env.sh >/dev/null

echo "== starting the local AWS stack (scripts/local-aws.sh up)"
if bash scripts/local-aws.sh status >/dev/null 2>&1; then
  echo "(already running: left running afterwards)"
else
  trap 'echo "== stopping the local AWS stack"; bash scripts/local-aws.sh down' EXIT
fi
bash scripts/local-aws.sh up
eval "$(bash scripts/local-aws.sh env)"

echo "== cargo test --workspace"
cargo test --workspace
