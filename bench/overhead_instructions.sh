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
#   BASE=/tmp/overhead-before RUNS=3 bench/overhead_instructions.sh    # before against after
#
# With BASE (a bench binary of another build, kept aside), the stacks are counted RUNS times
# (3 by default) for each build, the two builds alternating run by run (each going first in
# every other run) so that the machine's drift hits both alike; printed per stack and build:
# each run's count and their median, and for every stack after the first, its difference to
# the first stack in the same run. Single counts of one build move by up to about 1,500
# instructions from run to run (the client's batching varies), so a change of that size needs
# the medians. KEEP's files are then named <stack>-<base|this>-<run>.
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

# Instructions per request of stack $1 run alone, by the bench binary $2 (default: $BENCH),
# its files named after $3 (default: the stack).
per_request() {
    local stack=$1 binary=${2:-$BENCH} name=${3:-$1}
    local log="$out/$name.log" cg="$out/$name.cg" gate="$out/$name.gate"
    rm -f "$gate" "$log" "$cg"
    mkfifo "$gate"
    POOLGUARD_OVERHEAD_ONLY=$stack valgrind --tool=callgrind --instr-atstart=no \
        --callgrind-out-file="$cg" "$binary" <"$gate" >"$log" 2>&1 &
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

# The median of the numbers given (of an even count, the mean of the middle two).
median() {
    printf '%s\n' "$@" | sort -n | awk '{v[NR] = $1}
        END {print NR % 2 ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2)}'
}

if [[ -n "${BASE:-}" ]]; then
    runs=${RUNS:-3}
    declare -A counts overs
    for ((run = 1; run <= runs; run++)); do
        # Which build goes first alternates too, so neither always runs on a fresher machine.
        order="base this"
        ((run % 2 == 0)) && order="this base"
        for build in $order; do
            binary=$BENCH
            [[ $build == base ]] && binary=$BASE
            first=
            for stack in "${stacks[@]}"; do
                read -r n _ <<<"$(per_request "$stack" "$binary" "$stack-$build-$run")"
                counts[$stack.$build]+="$n "
                if [[ -z "$first" ]]; then
                    first=$n
                else
                    overs[$stack.$build]+="$((n - first)) "
                fi
            done
        done
    done
    printf '%-10s %-5s %-32s %10s %-32s %10s\n' stack build instr/req median \
        over_first median
    for stack in "${stacks[@]}"; do
        for build in base this; do
            # Word splitting of the space-separated lists is wanted here.
            # shellcheck disable=SC2086
            printf '%-10s %-5s %-32s %10d %-32s %10s\n' "$stack" "$build" \
                "${counts[$stack.$build]}" "$(median ${counts[$stack.$build]})" \
                "${overs[$stack.$build]:--}" \
                "$([[ -n "${overs[$stack.$build]:-}" ]] && median ${overs[$stack.$build]} || echo -)"
        done
    done
    exit 0
fi

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
