#!/usr/bin/env bash
# Builds and tests the CDK construct library (infra/cdk), offline apart from the npm registry:
#
#   1. npm ci, when node_modules is missing or was installed from another package-lock.json (or by
#      another Node major version)
#   2. tsc: the library, the example app and the tests into dist/
#   3. the tests (node --test) over the synthesized templates
#   4. a `cdk synth` of the example app with the CLI from node_modules, with no AWS credentials or
#      configuration in its environment, no lookups, notices, version check or telemetry
#
# Needs node (20 or later) and npm. Exits non-zero on the first failure.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

step() { printf '\n==> %s\n' "$*"; }
fail() { printf 'infra/cdk/test.sh: %s\n' "$*" >&2; exit 1; }

command -v node >/dev/null || fail "node is not installed (Node.js 20 or later is needed)"
command -v npm >/dev/null || fail "npm is not installed"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 20 ] || fail "Node.js 20 or later is needed, found $(node --version)"

# Nothing here talks to AWS, checks for a newer CDK or sends telemetry, whatever the caller's
# environment holds.
export CDK_DISABLE_VERSION_CHECK=1
export CDK_DISABLE_CLI_TELEMETRY=true
export NO_UPDATE_NOTIFIER=1
export npm_config_update_notifier=false
export npm_config_audit=false
export npm_config_fund=false

# --- 1. packages ----------------------------------------------------------------------------------
stamp=node_modules/.statefun-cdk-stamp
want="$(node -e '
  const crypto = require("node:crypto");
  const lock = require("node:fs").readFileSync("package-lock.json");
  const hash = crypto.createHash("sha256").update(lock).digest("hex");
  console.log(`${hash} node${process.versions.node.split(".")[0]}`);
')"
if [ -d node_modules ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    step "node_modules matches package-lock.json: no install"
else
    step "npm ci (node_modules missing or installed from another package-lock.json)"
    npm ci --no-audit --no-fund --loglevel=error
    printf '%s\n' "$want" >"$stamp"
fi

# --- 2. compile -----------------------------------------------------------------------------------
step "tsc: lib/, bin/, test/ -> dist/"
rm -rf dist
node_modules/.bin/tsc -p tsconfig.json

# --- 3. tests -------------------------------------------------------------------------------------
step "node --test dist/test/*.test.js"
node --test --test-reporter=spec dist/test/*.test.js

# --- 4. synth smoke run ---------------------------------------------------------------------------
scratch="$(mktemp -d "${TMPDIR:-/tmp}/statefun-cdk-synth.XXXXXX")"
trap 'rm -rf "$scratch"' EXIT
# A stand-in for the shopping cart's Lambda artifact (the CDK zips the directory), so the synth
# needs no cargo build.
mkdir -p "$scratch/artifact"
printf '#!/bin/sh\nexit 0\n' >"$scratch/artifact/bootstrap"
chmod 755 "$scratch/artifact/bootstrap"

step "cdk synth --no-lookups of the shopping-cart app, without AWS credentials"
env -u AWS_PROFILE -u AWS_DEFAULT_PROFILE -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u AWS_SESSION_TOKEN \
    -u AWS_ROLE_ARN -u AWS_WEB_IDENTITY_TOKEN_FILE -u AWS_CONTAINER_CREDENTIALS_RELATIVE_URI \
    -u AWS_CONTAINER_CREDENTIALS_FULL_URI -u CDK_DEFAULT_ACCOUNT -u CDK_DEFAULT_REGION \
    AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null AWS_EC2_METADATA_DISABLED=true \
    node_modules/.bin/cdk synth --no-lookups --no-notices --no-version-reporting -q \
    --output "$scratch/cdk.out" -c artifact="$scratch/artifact"
for stack in shopping-cart shopping-cart-image-repository; do
    [ -s "$scratch/cdk.out/$stack.template.json" ] || fail "cdk synth wrote no template for stack $stack"
done
printf 'synthesized: %s\n' "$(cd "$scratch/cdk.out" && printf '%s ' *.template.json)"

step "infra/cdk: all passed"
