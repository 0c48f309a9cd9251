#!/usr/bin/env bash
# Regenerates build/peerplate.order, the linker's symbol ordering file: the
# functions the daemon runs, in the order it first runs them, so that
# scripts/build-release.sh (lld's --symbol-ordering-file) places them side
# by side at the start of .text and everything else after them.
#
# Why: the kernel maps a binary's pages in windows of 64 KiB around each page
# a process touches (fault-around), so code run once at start, spread over
# the whole 3.5 MB of .text, kept ~93 % of it resident for good. Placed
# together, what `run` executes (~1.4 MB) is what stays resident. Measured
# in README "Measured" (issue 18).
#
# How: an unstripped build of exactly what ships (UNSTRIPPED=1, so the
# same symbol names) runs the benchmarks' scenarios under valgrind's
# callgrind, which records every function executed (and, in a pass of its
# own, only what the idle DNS poll runs: that leads the file, so the code a
# poll wakes up to every second sits on the fewest pages); meanwhile every admin
# listener the daemons open is asked /healthz, /readyz, /metrics, /status and
# /leader, as kubelet and Prometheus ask. scripts/order-file.py turns the
# names, first seen first, into the file, with every CPU variant of what ran
# (valgrind's CPU lacks AVX-512 and SHA-NI); then the idle scenarios run
# natively under `perf record -e page-faults` and what still faults outside
# the ordered part is added. Nothing here is timed: the benchmarks' verdicts
# under valgrind mean nothing, only which code ran.
#
#   scripts/order-file.sh            # about 8 minutes; needs what the benches need, valgrind, perf
#
# Rerun it when the daemon's code paths change (a new dependency, a moved
# hot path): scripts/build-release.sh prints how many of the file's symbols
# it found; names no longer in the binary are skipped, and code the file does
# not name lands after the ordered part (it works, only less of it is packed).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "error: valgrind is needed (apt install valgrind)" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/peerplate-order.XXXXXX")
trap 'kill "${poller:-}" "${toggler:-}" 2>/dev/null || true' EXIT

# The unstripped build: symbols for callgrind, otherwise the shipped binary.
bin=$(UNSTRIPPED=1 scripts/build-release.sh | tail -n1)
cp "$bin" "$work/peerplate"
mkdir -p "$work/cg"
cat >"$work/peerplate-callgrind" <<EOF
#!/bin/sh
exec valgrind --quiet --tool=callgrind --demangle=no --callgrind-out-file=$work/cg/%p.out "$work/peerplate" "\$@"
EOF
chmod +x "$work/peerplate-callgrind"
wrapper=$work/peerplate-callgrind
# The benches' helpers would otherwise build the shipped binary again.
export PEERPLATE_TEST_BIN=$work/peerplate

# Ask every listening daemon's admin endpoints while the scenarios run.
(
    while sleep 2; do
        ss -ltnpH 2>/dev/null | grep -o 'callgrind[^ ]*pid=[0-9]*' >/dev/null || continue
        ss -ltnpH | awk '/callgrind/ {print $4}' | sort -u | while read -r addr; do
            for path in healthz readyz metrics status leader; do
                curl -s -m 5 -o /dev/null "http://$addr/$path" || true
            done
        done
    done
) &
poller=$!

scenario() {
    echo "==> scenario: $*" >&2
    if ! "$@" >"$work/scenario.log" 2>&1; then
        # Timing verdicts fail under valgrind's slowdown; what ran still counts.
        echo "    (failed under valgrind, its coverage counts; the log's end:)" >&2
        tail -n 3 "$work/scenario.log" | sed 's/^/    | /' >&2
    fi
}
admin="http: {listen: '127.0.0.1:{port}'}"
scenario cargo bench --bench dns -- --bin "$wrapper" --server bind --peers 2,300 --only idle --no-floor \
    --idle-wait 15 --cpu-window 5 --peer-finder none --config-extra "$admin"
scenario cargo bench --bench dns -- --bin "$wrapper" --server bind --peers 2,300 --only latency \
    --changes 4 --peer-finder none --config-extra "$admin"
scenario cargo bench --bench daemon -- --bin "$wrapper" --swaps 10 --idle-wait 5 --cpu-window 5
scenario cargo bench --bench reload -- --bin "$wrapper" --changes 10 --hook-runs 10
scenario cargo bench --bench verdict -- --bin "$wrapper" --changes 4 --rejections 2
scenario cargo bench --bench leader -- --bin "$wrapper" --rounds 2 --grace 2 --resign-grace 10

# The idle poll alone: daemons started with callgrind's instrumentation off,
# switched on once they have settled (no start-up code), dumped after 10 s
# of polling, switched off again. Its functions lead the order.
mkdir -p "$work/idle"
cat >"$work/peerplate-idle" <<EOF
#!/bin/sh
exec valgrind --quiet --tool=callgrind --demangle=no --instr-atstart=no --callgrind-out-file=$work/idle/%p.out "$work/peerplate" "\$@"
EOF
chmod +x "$work/peerplate-idle"
(
    done_pids=" "
    while sleep 5; do
        for pid in $(pgrep -f "callgrind.*$work/peerplate .*run" 2>/dev/null); do
            case $done_pids in *" $pid "*) continue ;; esac
            # Old enough to have rendered and settled (valgrind starts slowly).
            [ "$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')" -ge 30 ] 2>/dev/null || continue
            done_pids="$done_pids$pid "
            (callgrind_control -i on "$pid" && sleep 10 && callgrind_control -d "$pid" \
                && callgrind_control -i off "$pid") >/dev/null 2>&1 &
        done
    done
) &
toggler=$!
scenario cargo bench --bench dns -- --bin "$work/peerplate-idle" --server bind --peers 2,300 --only idle --no-floor \
    --idle-wait 45 --cpu-window 5 --peer-finder none
kill "$toggler" 2>/dev/null || true
ls "$work"/idle/*.out.* >/dev/null 2>&1 || { echo "error: no idle dump in $work/idle" >&2; exit 1; }

# The order so far: the idle poll, then what callgrind saw run, and the CPU
# variants of it.
mkdir -p build
python3 scripts/order-file.py "$work/peerplate" "$work/cg" --idle "$work/idle" >build/peerplate.order.new
mv build/peerplate.order.new build/peerplate.order

# Native runs, with that order in place: the functions that still take a
# page fault past the ordered part run only natively (valgrind's CPU lacks
# AVX-512 and SHA-NI, so some code chooses otherwise there). perf's
# page-fault event is a software one: no hardware counters needed.
if command -v perf >/dev/null && perf stat -e page-faults true >/dev/null 2>&1; then
    bin=$(UNSTRIPPED=1 scripts/build-release.sh | tail -n1)
    cp "$bin" "$work/peerplate"
    mkdir -p "$work/perf"
    cat >"$work/peerplate-perf" <<EOF
#!/bin/sh
exec perf record -q -e page-faults -c 1 -d -o $work/perf/\$\$.data "$work/peerplate" "\$@"
EOF
    chmod +x "$work/peerplate-perf"
    scenario cargo bench --bench dns -- --bin "$work/peerplate-perf" --server bind --peers 2,300 --only idle --no-floor \
        --idle-wait 15 --cpu-window 5 --peer-finder none --config-extra "$admin"
    scenario cargo bench --bench dns -- --bin "$work/peerplate-perf" --server bind --peers 2,300 --only idle --no-floor \
        --idle-wait 15 --cpu-window 5 --peer-finder none
    for data in "$work"/perf/*.data; do
        perf script -i "$data" -F ip,sym,addr >"$data.txt" 2>/dev/null || true
    done
    python3 scripts/order-file.py "$work/peerplate" "$work/cg" --idle "$work/idle" "$work"/perf/*.data.txt >build/peerplate.order.new
    mv build/peerplate.order.new build/peerplate.order
else
    echo "perf with its page-faults event not found: only what callgrind saw (apt install linux-perf)" >&2
fi
echo "build/peerplate.order: $(wc -l <build/peerplate.order) symbols" >&2
rm -rf "$work"
