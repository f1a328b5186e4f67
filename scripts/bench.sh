#!/usr/bin/env bash
# The benchmarks: every scenario in one run, with progress on stderr, the table (Markdown) on stdout
# and the JSON in .local/bench/latest.json (or --out FILE). About 18 minutes on a 2-core machine,
# after the release build (the hostile loads take about 8 of them).
#
#   bash scripts/bench.sh                            every scenario, default sizes
#   bash scripts/bench.sh --quick                    smaller sizes, shorter phases (development; noisier)
#   bash scripts/bench.sh --only unique,hot          some scenarios: raw unique hot cart commit restate checkpoint aws
#                                                    hostile
#   bash scripts/bench.sh --skip restate,aws         all but some
#   bash scripts/bench.sh --only hostile             hostile loads (1 MB messages, a failing hot key, 200,000
#                                                    timers due at once, a fan-out loop), each in a runtime of
#                                                    its own with --memory-budget 512MiB beside a steady unrelated
#                                                    counter at 100/s: peak RSS, the unrelated p99 against its
#                                                    baseline, the time each load took to drain
#   bash scripts/bench.sh --only hostile --hostile-loads fanout
#                                                    some of them: big, failing, timers, fanout
#   bash scripts/bench.sh --profile --only unique,hot
#                                                    perf profiles of the runtime while it drains the backlogs,
#                                                    under the run's directory .local/bench/work/run-*/profiles
#                                                    (the figures of a profiled run are slowed by perf: do not
#                                                    compare them)
#
# Every other option goes to the harness: target/release/statefun-bench --help (the target directory is
# $CARGO_TARGET_DIR when set). Each run logs under .local/bench/work/run-<time>-<pid>/; two runs at once
# would measure each other: run one at a time.
#
# What it does:
#   1. builds the runtime and the harness in release mode (cargo build --release -p statefun-runtime
#      -p statefun-bench --bins; the binaries land in target/release, or $CARGO_TARGET_DIR/release);
#   2. for the Restate scenario, installs restate-server and its TypeScript SDK (pinned below) with npm into
#      .local/bench/restate, unless they are there already; without npm or the registry the scenario is
#      skipped with a note;
#   3. for the checkpoint scenario's S3 part and the AWS scenario, starts the local AWS stack
#      (scripts/local-aws.sh up: LocalStack, moto; it stays up afterwards, `scripts/local-aws.sh down` stops it);
#      when it cannot start, those parts are skipped with a note;
#   4. runs target/release/statefun-bench.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

RESTATE_DIR="$REPO/.local/bench/restate"
RESTATE_SERVER_VERSION=1.7.12
RESTATE_SDK_VERSION=1.17.2
RESTATE_VERSIONS="@restatedev/restate-server $RESTATE_SERVER_VERSION, @restatedev/restate-sdk $RESTATE_SDK_VERSION"

say() { echo "bench: $*" >&2; }

# Which scenarios run, from --only/--skip (the harness checks the names).
only="" skip=""
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case "${args[$i]}" in
        --only) only="${args[$((i + 1))]:-}" ;;
        --only=*) only="${args[$i]#--only=}" ;;
        --skip) skip="${args[$((i + 1))]:-}" ;;
        --skip=*) skip="${args[$i]#--skip=}" ;;
        --profile) command -v perf >/dev/null || { say "error: --profile needs perf"; exit 1; } ;;
    esac
done
wants() {
    [[ ",$skip," == *",$1,"* ]] && return 1
    [[ -z "$only" || ",$only," == *",$1,"* ]]
}

say "building the runtime and the harness (release)"
cargo build --release -p statefun-runtime -p statefun-bench --bins

if wants restate; then
    server="$RESTATE_DIR/node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
    if [[ -x "$server" && "$(cat "$RESTATE_DIR/versions.txt" 2>/dev/null)" == "$RESTATE_VERSIONS" ]]; then
        say "Restate: $RESTATE_VERSIONS already in ${RESTATE_DIR#"$REPO/"}"
    elif command -v npm >/dev/null && command -v node >/dev/null; then
        say "Restate: installing $RESTATE_VERSIONS into ${RESTATE_DIR#"$REPO/"}"
        mkdir -p "$RESTATE_DIR"
        rm -f "$RESTATE_DIR/versions.txt"
        if timeout 600 npm install --prefix "$RESTATE_DIR" --no-audit --no-fund --loglevel=error \
            "@restatedev/restate-server@$RESTATE_SERVER_VERSION" \
            "@restatedev/restate-sdk@$RESTATE_SDK_VERSION" >&2; then
            echo "$RESTATE_VERSIONS" > "$RESTATE_DIR/versions.txt"
        else
            say "Restate: npm install failed (registry unreachable?); the Restate scenario will be skipped"
        fi
    else
        say "Restate: no node/npm on this machine; the Restate scenario will be skipped"
    fi
fi

if wants aws || wants checkpoint; then
    if bash scripts/local-aws.sh up >&2; then
        eval "$(bash scripts/local-aws.sh env)"
    else
        say "the local AWS stack did not start; the AWS scenario and the S3 recovery will be skipped"
    fi
fi

say "running the scenarios (uptime: $(uptime))"
exec "${CARGO_TARGET_DIR:-$REPO/target}/release/statefun-bench" --restate-dir "$RESTATE_DIR" "$@"
