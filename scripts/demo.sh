#!/usr/bin/env bash
# The shopping cart, end to end, on the embedded local runtime.
#
# Builds the workspace, starts the shopping cart functions over HTTP and the
# runtime in local mode (streams and checkpoints under .demo/), restocks a few
# items, adds items to carts (some fail for lack of stock), prints every result
# as it arrives, then the final carts and inventory, and stops everything.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
demo="${STATEFUN_DEMO_DIR:-$root/.demo}"
# STATEFUN_BIN_DIR: use binaries built elsewhere (the end-to-end test of this script does).
bin="${STATEFUN_BIN_DIR:-${CARGO_TARGET_DIR:-$root/target}/debug}"
fmt="$root/scripts/lib/demo_format.py"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

if [ -z "${STATEFUN_BIN_DIR:-}" ]; then
  step "Building (cargo build --bins): a first build takes about 6 minutes on 2 cores, later ones seconds"
  # Not quiet: cargo's own progress shows where a long first build is.
  cargo build --bins
fi

rm -rf "$demo" && mkdir -p "$demo"
export STATEFUN_DATA_DIR="$demo/data"

step "Starting the shopping cart functions (StateFun HTTP endpoint)"
"$bin/shopping-cart" --listen 127.0.0.1:0 >"$demo/functions.out" 2>"$demo/functions.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q '^listening on' "$demo/functions.out" 2>/dev/null && break; sleep 0.1; done
url=$(sed -n 's/^listening on //p' "$demo/functions.out")
[ -n "$url" ] || { echo "the functions did not start; see $demo/functions.log"; exit 1; }
port=${url##*:}
echo "functions shoppingcart/cart and shoppingcart/inventory at $url"
sed "s/\${FUNCTIONS_PORT}/$port/" functions/examples/shopping-cart/module.yaml >"$demo/module.yaml"
export STATEFUN_MODULE="$demo/module.yaml"

step "Starting the runtime: 4 partitions, local streams and checkpoints in $demo/data"
"$bin/statefun" run --partitions 4 --admin-listen "${STATEFUN_ADMIN_LISTEN:-127.0.0.1:0}" --log-format text \
  2>"$demo/runtime.log" &
runtime=$!
pids+=($runtime)
admin=""
for _ in $(seq 1 100); do
  kill -0 "$runtime" 2>/dev/null || { cat "$demo/runtime.log"; exit 1; }
  admin=$(sed -n 's/.*admin server listening: status page at \(http:[^,]*\),.*/\1/p' "$demo/runtime.log" | head -n 1)
  [ -n "$admin" ] && break
  sleep 0.1
done
echo "runtime running (pid $runtime); log: $demo/runtime.log"
echo "live status page: $admin (metrics at ${admin}metrics, while the demo runs)"

step "Restocking: 5 apples, 2 bananas, 3 cherries (no durians)"
"$bin/statefun" send --stream restock --lines - <<'JSON'
{"key": "apple", "value": {"itemId": "apple", "quantity": 5}}
{"key": "banana", "value": {"itemId": "banana", "quantity": 2}}
{"key": "cherry", "value": {"itemId": "cherry", "quantity": 3}}
JSON
"$bin/statefun" tail --stream inventory-updates --follow --limit 3 --json | python3 "$fmt" restocks

step "Adding to carts (each line: user, item, quantity)"
orders='alice apple 2
bob apple 2
carol apple 2
alice banana 1
dave banana 2
bob cherry 3
carol durian 1
dave cherry 1'
n=$(grep -c . <<<"$orders")
i=0
while read -r user item qty; do
  i=$((i + 1))
  printf '{"key": "%s", "value": {"userId": "%s", "itemId": "%s", "quantity": %d, "requestId": "order-%d"}}\n' \
    "$user" "$user" "$item" "$qty" "$i"
  echo "  order-$i: $user wants $qty x $item" >&2
done <<<"$orders" | "$bin/statefun" send --stream add-to-cart --lines -

step "Results, as they arrive on the egress stream cart-results"
"$bin/statefun" tail --stream cart-results --follow --limit "$n" --idle-exit 30s --json | python3 "$fmt" results

step "Stopping the runtime (SIGTERM: it commits its last epoch and exits)"
kill -TERM "$runtime"
wait "$runtime" || true
pids=("${pids[@]/$runtime}")

step "Summary, from the committed checkpoints (statefun state)"
"$bin/statefun" state --json | python3 "$fmt" summary
dead=$("$bin/statefun" dead-letters)
if [ -n "$dead" ]; then echo "  dead letters:"; echo "$dead" | sed 's/^/    /'; fi

step "Done. Streams, checkpoints and logs are in $demo; the functions stop now."
