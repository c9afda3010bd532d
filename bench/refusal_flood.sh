#!/usr/bin/env bash
# Critical latency under a never-pausing flood of refused requests, measured from outside
# against the reference app:
#
#   cargo run --release --example demo -- serve --pool-max 20 --trust-user-header &
#   bench/refusal_flood.sh
#
# and again with the flood's early retries held (`--early-retry-delay 1s` on `serve`): wrk
# ignores Retry-After, so each of its connections then gets one answer per second.
#
# The flood is wrk: one user hammering a standard route over 200 connections. After its burst
# every request is answered 429 by the per-user rate limit, without touching the pool. The
# critical client is paced (bench/paced_client.py: 8 users at 25 requests/s each, within
# their limits), so its latency is the guard's and the machine's, not its own queueing.
# Printed: critical p50/p99 alone, then under the flood, their ratio, and the flood's rate.
#
# FLOOD_PATH=/no-such-route floods a path no route serves instead: answered 404 by the router
# alone, the cheapest answer the server gives, without the guard. That flood's ratio is the
# baseline a refusal flood answered at once is compared with: what answering requests at
# that rate costs the machine, whoever answers them.
set -euo pipefail
ADDR=${ADDR:-127.0.0.1:8080}
DURATION=${DURATION:-10}
FLOOD_CONNECTIONS=${FLOOD_CONNECTIONS:-200}
FLOOD_PATH=${FLOOD_PATH:-/api/messages}
here=$(dirname "$0")

critical() {
    ADDR="$ADDR" DURATION="$DURATION" python3 "$here/paced_client.py"
}

# paced_client.py prints: requests {status: count} p50 p99
alone=$(critical)
flood_out=$(mktemp)
wrk -t1 -c"$FLOOD_CONNECTIONS" -d"$((DURATION + 2))s" -H "x-user-id: flood" \
    "http://$ADDR$FLOOD_PATH" >"$flood_out" &
flood=$!
sleep 1
loaded=$(critical)
wait "$flood"
field() { awk -v n="$1" '{print $(NF - 2 + n)}' <<<"$2"; }
a50=$(field 1 "$alone"); a99=$(field 2 "$alone")
l50=$(field 1 "$loaded"); l99=$(field 2 "$loaded")
flood_rps=$(awk '/Requests\/sec/ {print $2}' "$flood_out")
refused=$(awk '/Non-2xx/ {print $5}' "$flood_out")
total=$(awk '/requests in/ {print $1}' "$flood_out")
rm -f "$flood_out"
echo "| critical client | p50 (ms) | p99 (ms) | answers by status |"
echo "| --- | --- | --- | --- |"
echo "| alone | $a50 | $a99 | $(grep -o '{[^}]*}' <<<"$alone") |"
echo "| under the flood | $l50 | $l99 | $(grep -o '{[^}]*}' <<<"$loaded") |"
echo "| ratio | $(awk -v a="$a50" -v b="$l50" 'BEGIN {printf "%.2f", b / a}') | $(awk -v a="$a99" -v b="$l99" 'BEGIN {printf "%.2f", b / a}') | |"
echo "flood of $FLOOD_PATH: $flood_rps requests/s over $FLOOD_CONNECTIONS connections, ${refused:-0} of $total answered other than 2xx"
