#!/usr/bin/env bash
# Instructions per request of each `decision/*` benchmark, counted by callgrind: a figure that
# does not move with the machine's load, for comparing two builds of the decision path where
# the time of a few hundred nanoseconds is lost in the noise.
#
#   bench/decision_instructions.sh            # builds the bench, then counts
#   BENCH=/path/to/decision_path-<hash> bench/decision_instructions.sh   # a binary kept aside
#
# Each benchmark runs alone under callgrind for a second of its time, counting only inside
# criterion's timed loop; the count is divided by the requests that loop made (each builds
# one request with `request`). Printed per benchmark: instructions per request and the
# difference to `decision/bare` in the same run. Instructions are not time (a copy of a large
# future is one string instruction per chunk, a cache miss costs nothing here), so time stays
# the `decision_path` benchmark's figure; this one says whether a change removed work.
#
# Also counted: the locked instructions per request (a `lock`-prefixed instruction or an
# `xchg` with memory, found in the binary with objdump): the read-modify-writes of shared
# memory (atomic adds, compare-and-swaps, a mutex's lock and unlock, reference counts). Each
# is one instruction above but costs tens of cycles, and far more when another core wrote
# the line last.
# Needs valgrind and objdump (`apt-get install -y valgrind binutils`).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/bench_binary.sh
source bench/bench_binary.sh
BENCH=${BENCH:-$(bench_binary decision_path)}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# The addresses of the binary's locked instructions.
objdump -d --no-show-raw-insn "$BENCH" |
    awk '/^ +[0-9a-f]+:\t(lock |xchg +[^,]+,[^(]*\()/ {sub(":", "", $1); print "0x" $1}' \
        >"$out/locked"

# Instructions and locked instructions per request of benchmark $1 (an exact name under
# `decision/`).
per_request() {
    local file="$out/$1.cg"
    valgrind --tool=callgrind --callgrind-out-file="$file" --compress-strings=no \
        --compress-pos=no --collect-atstart=no --dump-instr=yes \
        --toggle-collect='criterion::bencher::Bencher*::iter*' \
        "$BENCH" --bench "^decision/$1\$" --profile-time 1 >/dev/null 2>&1
    local total requests
    total=$(awk '/^summary:/ {print $2}' "$file")
    # The calls of `request` in the timed loop: each `cfn=` line naming it is followed by
    # its `calls=<count> <line>`.
    requests=$(awk '/^cfn=.*offline::request$/ {getline; split($1, c, "="); n += c[2]}
        END {print n}' "$file")
    # Each line `0x<address> <line> <count>` is what an instruction cost, except the line
    # after a `calls=`, which is what the call it makes cost in all.
    locked=$(awk -v requests="$requests" 'NR == FNR {locked[$1] = 1; next}
        /^calls=/ {skip = 1; next}
        /^0x/ {if (!skip && ($1 in locked)) n += $3; skip = 0; next}
        {skip = 0}
        END {printf "%.1f", n / requests}' "$out/locked" "$file")
    echo $((total / requests)) "$locked"
}

read -r bare bare_locked < <(per_request bare)
printf '%-36s %8s %10s %11s\n' benchmark instr/req over_bare locked/req
printf '%-36s %8d %10s %11s\n' decision/bare "$bare" - "$bare_locked"
for name in floor admitted admitted_context_in_task admitted_watched admitted_at_warning shed \
    rate_limited shed_over_bare rate_limited_over_bare; do
    read -r n locked < <(per_request "$name")
    printf '%-36s %8d %+10d %11s\n' "decision/$name" "$n" $((n - bare)) "$locked"
done
