#!/usr/bin/env bash
# Creates (once) the Python environment for the StateFun compatibility tests:
# a venv at <repo>/.local/python-statefun with the OFFICIAL StateFun Python SDK,
# botocore (AWS's own SigV4 signer, which checks the runtime's signatures) and
# aws-kinesis-agg (AWS's own KPL aggregation library, which makes and reads the
# aggregated records of the de-aggregation tests).
#
#   scripts/python-env.sh          -> prints the venv's python path on its last stdout line
#
# Idempotent: a marker file, written only after a successful install of exactly
# the pinned packages, makes later runs return at once. Quiet on stdout apart
# from the path; pip's output goes to stderr. Exits non-zero with a clear message
# on failure. Needs only python3 (with the venv module) and access to PyPI.
# Override the interpreter with PYTHON=/path/to/python3.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.local/python-statefun"
PACKAGES=(apache-flink-statefun==3.3.0 protobuf==3.20.3 botocore==1.39.14 aws-kinesis-agg==1.2.3)
MARKER="$VENV/.statefun-installed"
WANT="${PACKAGES[*]}"

fail() {
    echo "python-env.sh: error: $*" >&2
    exit 1
}

if [[ -f "$MARKER" && -x "$VENV/bin/python" ]] && [[ "$(cat "$MARKER")" == "$WANT" ]]; then
    echo "$VENV/bin/python"
    exit 0
fi

mkdir -p "$REPO/.local"
# Concurrent first runs (parallel test binaries) build the venv once.
if command -v flock >/dev/null 2>&1; then
    exec 9>"$REPO/.local/python-statefun.lock"
    flock 9
    if [[ -f "$MARKER" && -x "$VENV/bin/python" ]] && [[ "$(cat "$MARKER")" == "$WANT" ]]; then
        echo "$VENV/bin/python"
        exit 0
    fi
fi

PYTHON="${PYTHON:-python3}"
command -v "$PYTHON" >/dev/null 2>&1 || fail "'$PYTHON' not found: install Python 3 (3.8-3.11 work with apache-flink-statefun 3.3.0) or set PYTHON"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 8) else 1)' \
    || fail "$PYTHON is $("$PYTHON" --version 2>&1); apache-flink-statefun 3.3.0 needs Python >= 3.8"

# A half-made venv from an interrupted run is rebuilt from scratch.
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV" >&2 \
    || fail "could not create a venv at $VENV with $PYTHON (on Debian/Ubuntu: apt-get install python3-venv)"

"$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q "${PACKAGES[@]}" >&2 \
    || fail "pip install ${PACKAGES[*]} failed (see pip's output above; PyPI must be reachable)"

"$VENV/bin/python" -c 'import statefun, google.protobuf, botocore.auth, aws_kinesis_agg.aggregator; from statefun import RequestReplyHandler, StatefulFunctions, kinesis_egress_message' >&2 \
    || fail "the installed StateFun SDK does not import"

echo "$WANT" >"$MARKER"
echo "$VENV/bin/python"
