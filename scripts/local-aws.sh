#!/usr/bin/env bash
# A local AWS stack for tests, without Docker, on loopback only:
#
#   service                        endpoint                 serves
#   LocalStack 4.7.0 (host mode)   http://127.0.0.1:4566    S3, Kinesis, STS, IAM
#   moto server 5.1.22             http://127.0.0.1:4567    DynamoDB
#   cargo lambda watch 1.9.2       http://127.0.0.1:9000    the Lambda Invoke API
#                                                           (POST /2015-03-31/functions/{name}/invocations)
#                                                           for the `shopping-cart` binary
#
#   scripts/local-aws.sh up       install what is missing, start what is not running, wait until
#                                 every service answers, warm up Kinesis and the Lambda function
#   scripts/local-aws.sh down     stop what `up` started (pid files) and wait for it to exit
#   scripts/local-aws.sh env      print `export` lines pointing the AWS SDKs/CLI and the runtime at
#                                 the stack: eval "$(scripts/local-aws.sh env)"
#   scripts/local-aws.sh status   say what runs (exit status 1 unless all three run)
#
# Everything lives in the git-ignored <repo>/.local/aws/: one venv per tool (venv-localstack,
# venv-moto, venv-cargo-lambda; a marker file in each is written after a successful install of
# exactly its pins, so later runs skip the install), LocalStack's files (localstack/, its
# FILESYSTEM_ROOT, including the Kinesis engine it installs from npm on first use), caches, and
# run/ with the pid files, logs and temporary files. The services keep their data in memory (and
# LocalStack's temporary folder): every `up` after a `down` starts with an empty stack.
#
# The ports can be moved with LOCAL_AWS_LOCALSTACK_PORT, LOCAL_AWS_MOTO_PORT and
# LOCAL_AWS_LAMBDA_PORT (when another stack holds them). A service already running stays where it
# is (`down` first to move it): `env` and `status` report the ports the running stack uses.
#
# Needs python3.11 (or LOCAL_AWS_PYTHON), cargo, node and npm, and PyPI, the npm registry and
# crates.io the first time. A first `up` takes about 4 minutes here (installs, compiling the
# function); later ones take seconds.
#
# cargo lambda watch runs in the function's crate directory with --ignore-changes and builds into
# the workspace's target directory: the function is compiled on the first invoke (`up` makes it)
# and is not rebuilt when sources change; `down` and `up` serve new code. It answers a function
# error with HTTP 500 where real Lambda answers 200 with a FunctionError header.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BASE="$REPO/.local/aws"
RUN="$BASE/run"
CHECK="$REPO/scripts/lib/local_aws_check.py"
LOCALSTACK_MAIN="$REPO/scripts/lib/local_aws_localstack.py"
LOOPBACK_JS="$REPO/scripts/lib/local_aws_loopback.js"

HOST=127.0.0.1
REGION=us-east-1
LAMBDA_FUNCTION=shopping-cart
LAMBDA_CRATE="$REPO/functions/examples/shopping-cart"

LOCALSTACK_VENV="$BASE/venv-localstack"
LOCALSTACK_PINS=("localstack-core[runtime]==4.7.0" "cbor2<5.8" "cryptography<44" "pyopenssl<24.3" "service_identity<24.2")
LOCALSTACK_FS="$BASE/localstack"
MOTO_VENV="$BASE/venv-moto"
MOTO_PINS=("moto[server]==5.1.22")
CARGO_LAMBDA_VENV="$BASE/venv-cargo-lambda"
# --no-deps: its one dependency, ziglang (450 MB), only serves `cargo lambda build` cross-compiling.
CARGO_LAMBDA_PINS=(--no-deps "cargo-lambda==1.9.2")

# Seconds. The first Kinesis call installs LocalStack's Kinesis engine from npm; the first invoke
# compiles the function.
START_TIMEOUT="${LOCAL_AWS_START_TIMEOUT:-120}"
KINESIS_WARMUP_TIMEOUT="${LOCAL_AWS_KINESIS_TIMEOUT:-600}"
LAMBDA_WARMUP_TIMEOUT="${LOCAL_AWS_LAMBDA_TIMEOUT:-1800}"

SERVICES=(localstack moto cargo-lambda)

say() { echo "local-aws: $*"; }
fail() {
    echo "local-aws: error: $*" >&2
    exit 1
}
rel() { echo "${1#"$REPO/"}"; }

# --- per service ----------------------------------------------------------------------------

# The port `up` uses for a service.
wanted_port() {
    case "$1" in
        localstack) echo "${LOCAL_AWS_LOCALSTACK_PORT:-4566}" ;;
        moto) echo "${LOCAL_AWS_MOTO_PORT:-4567}" ;;
        cargo-lambda) echo "${LOCAL_AWS_LAMBDA_PORT:-9000}" ;;
    esac
}

# A pattern (extended regex) of the service's command line, so a recycled pid is not taken for
# the service.
cmd_token() {
    case "$1" in
        localstack) echo "local_aws_localstack\.py" ;;
        moto) echo "moto_server" ;;
        cargo-lambda) echo "cargo-lambda" ;;
    esac
}

describe() {
    case "$1" in
        localstack) echo "LocalStack (s3, kinesis, sts, iam)" ;;
        moto) echo "moto (dynamodb)" ;;
        cargo-lambda) echo "cargo lambda watch (lambda: $LAMBDA_FUNCTION)" ;;
    esac
}

pidfile() { echo "$RUN/$1.pid"; }
portfile() { echo "$RUN/$1.port"; }
logfile() { echo "$RUN/$1.log"; }

# running NAME: prints the pid of the service started by `up`, if it still runs.
running() {
    local file pid
    file="$(pidfile "$1")"
    [[ -f "$file" ]] || return 1
    pid="$(cat "$file")"
    [[ "$pid" =~ ^[0-9]+$ && -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qE -- "$(cmd_token "$1")" || return 1
    [[ "$(awk '{print $3}' "/proc/$pid/stat" 2>/dev/null)" != "Z" ]] || return 1
    echo "$pid"
}

# The port of the running service if it runs, else the one `up` would use.
port() {
    if running "$1" >/dev/null && [[ -f "$(portfile "$1")" ]]; then
        cat "$(portfile "$1")"
    else
        wanted_port "$1"
    fi
}

url() { echo "http://$HOST:$(port "$1")"; }

# --- installs -------------------------------------------------------------------------------

python311() {
    local python="${LOCAL_AWS_PYTHON:-python3.11}"
    command -v "$python" >/dev/null 2>&1 || fail "'$python' not found: install Python 3.11 or set LOCAL_AWS_PYTHON"
    "$python" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
        || fail "$python is $("$python" --version 2>&1); LocalStack 4.7.0 needs Python 3.11"
    echo "$python"
}

# ensure_venv NAME DIR PINS...: a venv at DIR with exactly PINS (pip install arguments), installed
# once.
ensure_venv() {
    local name="$1" venv="$2"
    shift 2
    local marker="$venv/.local-aws-installed" want="$*" log="$RUN/install-$name.log" python
    if [[ -x "$venv/bin/python" && -f "$marker" && "$(cat "$marker")" == "$want" ]]; then
        return 0
    fi
    say "installing $want into $(rel "$venv") (log: $(rel "$log"))"
    python="$(python311)"
    rm -rf "$venv"
    {
        "$python" -m venv "$venv" &&
            "$venv/bin/python" -m pip install --disable-pip-version-check --no-input "$@"
    } >"$log" 2>&1 || fail "installing $name failed; see $log"
    echo "$want" >"$marker"
}

install_all() {
    ensure_venv localstack "$LOCALSTACK_VENV" "${LOCALSTACK_PINS[@]}"
    ensure_venv moto "$MOTO_VENV" "${MOTO_PINS[@]}"
    ensure_venv cargo-lambda "$CARGO_LAMBDA_VENV" "${CARGO_LAMBDA_PINS[@]}"
}

# --- processes ------------------------------------------------------------------------------

port_free() {
    ! (exec 3<>"/dev/tcp/$HOST/$1") 2>/dev/null
}

# start NAME DIR COMMAND...: unless NAME runs already, runs COMMAND in DIR in a session of its own
# (so it outlives this script), output to NAME's log, pid and port to NAME's files.
start() {
    local name="$1" dir="$2" pid port
    shift 2
    port="$(wanted_port "$name")"
    if pid="$(running "$name")"; then
        if [[ "$(port "$name")" == "$port" ]]; then
            say "$(describe "$name") already running (pid $pid) on $(url "$name")"
        else
            say "$(describe "$name") already running (pid $pid) on $(url "$name"), not on port $port as asked: kept (\`down\` first to move it)"
        fi
        return 0
    fi
    say "starting $(describe "$name") on http://$HOST:$port (log: $(rel "$(logfile "$name")"))"
    : >"$(logfile "$name")"
    # 9>&-: the service must not inherit the descriptor of the up/down lock.
    (cd "$dir" && exec setsid "$@" </dev/null >>"$(logfile "$name")" 2>&1 9>&-) &
    echo "$!" >"$(pidfile "$name")"
    echo "$port" >"$(portfile "$name")"
}

# await NAME WHAT CHECK-ARGS...: runs a check of local_aws_check.py for NAME, failing with its log.
await() {
    local name="$1" what="$2" pid
    shift 2
    say "$what"
    pid="$(running "$name")" || fail "$name exited while starting; see $(logfile "$name")"
    "$LOCALSTACK_VENV/bin/python" "$CHECK" "$@" --pid "$pid" --log "$(logfile "$name")" \
        || fail "$name is not ready ($what); see $(logfile "$name") ('$0 down' stops what runs)"
}

# descendants PID: the pids of every process below PID.
descendants() {
    local child
    for child in $(ps -o pid= --ppid "$1" 2>/dev/null); do
        echo "$child"
        descendants "$child"
    done
}

alive() {
    kill -0 "$1" 2>/dev/null && [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != "Z" ]]
}

stop() {
    local name="$1" pid waited=0 pids=() left=()
    if ! pid="$(running "$name")"; then
        rm -f "$(pidfile "$name")" "$(portfile "$name")"
        say "$name is not running"
        return 0
    fi
    say "stopping $(describe "$name") (pid $pid)"
    # The service and what it started (LocalStack's Kinesis engine, the function under cargo
    # lambda), by pid: some of them run in process groups of their own.
    mapfile -t pids < <(echo "$pid"; descendants "$pid")
    kill -TERM "${pids[@]}" 2>/dev/null || true
    while :; do
        left=()
        for pid in "${pids[@]}"; do
            if alive "$pid"; then left+=("$pid"); fi
        done
        ((${#left[@]} > 0)) || break
        if ((waited == 300)); then
            say "$name did not exit within 30s of SIGTERM; sending SIGKILL to ${left[*]}"
            kill -KILL "${left[@]}" 2>/dev/null || true
        elif ((waited > 350)); then
            fail "$name: processes ${left[*]} did not exit"
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$(pidfile "$name")" "$(portfile "$name")"
}

# --- services -------------------------------------------------------------------------------

start_localstack() {
    mkdir -p "$LOCALSTACK_FS/config" "$RUN/tmp" "$BASE/cache"
    running localstack >/dev/null || rm -rf "$RUN/tmp/s3-storage"
    # OVERRIDE_IN_DOCKER=0: this machine has /.dockerenv, which makes LocalStack believe it runs in
    #   its container and use /var/lib/localstack, /usr/lib/localstack, /etc/localstack and
    #   /tmp/localstack whatever FILESYSTEM_ROOT says.
    # FILESYSTEM_ROOT: where, in host mode, every directory LocalStack writes goes (state, cache,
    #   logs, the packages it installs such as the Kinesis engine). LOCALSTACK_VOLUME_DIR only
    #   matters to its CLI; DATA_DIR is deprecated and unused without PERSISTENCE.
    # CONFIG_DIR: its profiles (default ~/.localstack). XDG_CACHE_HOME: the plugin index cache
    #   (default ~/.cache/plux). TMPDIR: Python's and npm's temporary files (LocalStack logs a
    #   deprecation warning for it, harmlessly). npm_config_cache: npm's cache (default ~/.npm).
    # NODE_OPTIONS: the Kinesis engine (node) has no listen address setting; the preload makes
    #   it listen on 127.0.0.1.
    # DNS_ADDRESS=0: no DNS server (it would listen on port 53 of all interfaces).
    # KINESIS_PERSISTENCE=0, PERSISTENCE=0: state in memory only.
    # KINESIS_SHARD_LIMIT: every test deployment creates its own streams; the default
    #   account limit of 100 shards would be reached after a few runs on one stack.
    # local_aws_localstack.py runs localstack.runtime.main with its gateway listening on
    #   LOCAL_AWS_LISTEN_HOST only (its twisted server ignores GATEWAY_LISTEN's host) and S3's
    #   object files in LOCAL_AWS_S3_DIR rather than a hard-coded /tmp/localstack-s3-storage.
    start localstack "$BASE" env \
        GATEWAY_LISTEN="$HOST:$(wanted_port localstack)" \
        SERVICES=s3,kinesis,sts,iam \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$LOCALSTACK_FS" \
        LOCALSTACK_VOLUME_DIR="$LOCALSTACK_FS/volume" \
        CONFIG_DIR="$LOCALSTACK_FS/config" \
        XDG_CACHE_HOME="$BASE/cache" \
        TMPDIR="$RUN/tmp" \
        npm_config_cache="$BASE/cache/npm" \
        npm_config_update_notifier=false \
        NODE_OPTIONS="--require=$LOOPBACK_JS" \
        DNS_ADDRESS=0 \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        DISABLE_EVENTS=1 \
        PERSISTENCE=0 \
        KINESIS_PERSISTENCE=0 \
        KINESIS_SHARD_LIMIT=100000 \
        LOCAL_AWS_LISTEN_HOST="$HOST" \
        LOCAL_AWS_S3_DIR="$RUN/tmp/s3-storage" \
        "$LOCALSTACK_VENV/bin/python" "$LOCALSTACK_MAIN"
}

ready_localstack() {
    await localstack "waiting for LocalStack's health to show s3 and kinesis available" \
        localstack "$(url localstack)" --timeout "$START_TIMEOUT"
    await localstack "warming up Kinesis with a throwaway stream (the first time, LocalStack installs its Kinesis engine from npm)" \
        kinesis-warmup "$(url localstack)" --timeout "$KINESIS_WARMUP_TIMEOUT" --interval 2
}

start_moto() {
    mkdir -p "$RUN/tmp"
    start moto "$BASE" env TMPDIR="$RUN/tmp" \
        "$MOTO_VENV/bin/moto_server" -H "$HOST" -p "$(wanted_port moto)"
}

ready_moto() {
    await moto "waiting for moto to answer a DynamoDB ListTables" \
        dynamodb "$(url moto)" --timeout "$START_TIMEOUT"
}

start_cargo_lambda() {
    command -v cargo >/dev/null 2>&1 || fail "cargo not found: cargo lambda watch needs the Rust toolchain"
    # Function names are the workspace's binary names: `shopping-cart` runs
    # `cargo run --bin shopping-cart` (with AWS_LAMBDA_RUNTIME_API set) on the first invoke.
    start cargo-lambda "$LAMBDA_CRATE" \
        "$CARGO_LAMBDA_VENV/bin/cargo-lambda" lambda watch \
        --invoke-address "$HOST" --invoke-port "$(wanted_port cargo-lambda)" \
        --ignore-changes --color never
}

ready_cargo_lambda() {
    await cargo-lambda "waiting for cargo lambda watch to answer HTTP" \
        http "$(url cargo-lambda)/2015-03-31/functions/$LAMBDA_FUNCTION/invocations" --timeout "$START_TIMEOUT"
    await cargo-lambda "warming up the $LAMBDA_FUNCTION function (the first invoke compiles it)" \
        lambda-invoke "$(url cargo-lambda)" "$LAMBDA_FUNCTION" --timeout "$LAMBDA_WARMUP_TIMEOUT" --interval 2 \
        --fail-pattern 'ERROR command exited'
}

# --- verbs ----------------------------------------------------------------------------------

# One `up` or `down` at a time: parallel test binaries may run `up` together.
lock() {
    mkdir -p "$RUN"
    exec 9>"$RUN/up-down.lock"
    flock 9
}

cmd_up() {
    lock
    local began=$SECONDS
    install_all
    local name
    for name in "${SERVICES[@]}"; do
        running "$name" >/dev/null || port_free "$(wanted_port "$name")" \
            || fail "port $(wanted_port "$name") is in use by a process this script did not start; cannot start $name (the LOCAL_AWS_*_PORT variables move the ports)"
    done
    # Start all three, then wait for each: they boot in parallel.
    start_localstack
    start_moto
    start_cargo_lambda
    ready_localstack
    ready_moto
    ready_cargo_lambda
    say "up in $((SECONDS - began))s: S3/Kinesis $(url localstack), DynamoDB $(url moto), Lambda $(url cargo-lambda)"
    say "point the AWS SDKs at it with: eval \"\$(scripts/local-aws.sh env)\""
}

cmd_down() {
    lock
    local name
    for name in cargo-lambda moto localstack; do
        stop "$name"
    done
}

cmd_env() {
    # Only endpoints and the well-known dummy credentials of local stacks; nothing secret.
    printf 'export %s=%q\n' \
        AWS_ENDPOINT_URL "$(url localstack)" \
        AWS_ENDPOINT_URL_DYNAMODB "$(url moto)" \
        AWS_ENDPOINT_URL_LAMBDA "$(url cargo-lambda)" \
        AWS_REGION "$REGION" \
        AWS_DEFAULT_REGION "$REGION" \
        AWS_ACCESS_KEY_ID test \
        AWS_SECRET_ACCESS_KEY test
}

cmd_status() {
    local name pid stopped=0
    for name in "${SERVICES[@]}"; do
        if pid="$(running "$name")"; then
            echo "$name: running (pid $pid) on $(url "$name"): $(describe "$name")"
        else
            echo "$name: stopped"
            stopped=1
        fi
    done
    return "$stopped"
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    env) cmd_env ;;
    status) cmd_status ;;
    *)
        echo "usage: $0 up|down|env|status" >&2
        exit 2
        ;;
esac
