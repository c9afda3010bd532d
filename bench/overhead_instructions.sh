#!/usr/bin/env bash
# Instructions per request of the `overhead` bench's three stacks (bare pool, floor, poolguard)
# when every checkout queues: each stack runs alone at concurrency 256 for one round under
# callgrind, counted from the end of its warm-up. A figure that does not move with the
# machine's load, for the regime where the overhead bench's throughput is too noisy to compare
# two builds: the difference between the stacks is the work each adds per request, client and
# database driver included alike.
#
#   bench/overhead_instructions.sh                    # builds the bench, then counts
#   BENCH=/path/to/overhead-<hash> bench/overhead_instructions.sh      # a binary kept aside
#   STACKS="floor poolguard" bench/overhead_instructions.sh            # some stacks only
#   KEEP=/tmp/counts bench/overhead_instructions.sh     # keeps <stack>.cg for callgrind_annotate
#
# Instructions are not time: a cache miss or a context switch costs nothing here, and the
# process runs on one core at a time under valgrind (about a tenth of its usual rate), so the
# queue and the hand-offs are what they are at saturation but their timing is not. Needs
# valgrind (`apt-get install -y valgrind`) and PostgreSQL, as the bench does.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/bench_binary.sh
source bench/bench_binary.sh
BENCH=${BENCH:-$(bench_binary overhead)}
if [[ -n "${KEEP:-}" ]]; then
    out=$KEEP
    mkdir -p "$out"
else
    out=$(mktemp -d)
    trap 'rm -rf "$out"' EXIT
fi

# Instructions per request of stack $1 run alone.
per_request() {
    local stack=$1 log="$out/$1.log" cg="$out/$1.cg" gate="$out/$1.gate"
    rm -f "$gate" "$log" "$cg"
    mkfifo "$gate"
    POOLGUARD_OVERHEAD_ONLY=$stack valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$cg" "$BENCH" <"$gate" >"$log" 2>&1 &
    local pid=$!
    exec 3>"$gate"
    until grep -q '^warmed up' "$log"; do
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            echo "the $stack stack stopped before its warm-up ended" >&2
            exit 1
        fi
        sleep 0.2
    done
    callgrind_control --instr=on "$pid" >/dev/null 2>&1
    echo go >&3
    exec 3>&-
    wait "$pid"
    local total requests errors
    total=$(awk '/^summary:/ {print $2}' "$cg")
    requests=$(awk '/^requests served:/ {print $3}' "$log")
    errors=$(awk '/^errors:/ {print $2}' "$log")
    if [[ "$errors" != 0 ]]; then
        echo "the $stack stack answered $errors requests with an error" >&2
        exit 1
    fi
    echo "$((total / requests)) $requests"
}

read -r -a stacks <<<"${STACKS:-bare floor poolguard}"
printf '%-10s %10s %10s %10s\n' stack instr/req over_first requests
first=
for stack in "${stacks[@]}"; do
    read -r n requests <<<"$(per_request "$stack")"
    if [[ -z "$first" ]]; then
        first=$n
        printf '%-10s %10d %10s %10d\n' "$stack" "$n" - "$requests"
    else
        printf '%-10s %10d %+10d %10d\n' "$stack" "$n" $((n - first)) "$requests"
    fi
done
