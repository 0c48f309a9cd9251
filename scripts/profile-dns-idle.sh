#!/usr/bin/env bash
# Where an idle DNS poll's CPU goes: builds peerplate the shipped way
# (static glibc, the release profile) but keeps symbols and frame pointers
# (CARGO_PROFILE_RELEASE_STRIP=false, -C force-frame-pointers=yes) in a
# target dir of its own, runs the `idle` part of `benches/dns.rs` against it,
# and attaches `perf record` (call graphs by frame pointer) to the daemon
# for the CPU window. Prints the profile's inclusive top entries.
#
#   scripts/profile-dns-idle.sh                  # BIND, 300 peers
#   SERVER=inproc PEERS=2 scripts/profile-dns-idle.sh
#
# perf sampling at this rate roughly doubles or triples the daemon's CPU:
# read the shares, not the ms/min this run prints. Needs perf
# (kernel.perf_event_paranoid <= 2 for your own processes). ~5 min with
# the build on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
server=${SERVER:-bind}
peers=${PEERS:-300}
window=${WINDOW:-40}
triple=x86_64-unknown-linux-gnu
prof_dir=${PROFILE_TARGET_DIR:-target/profile-build}
out=$(mktemp -d "${TMPDIR:-/tmp}/peerplate-dns-profile.XXXXXX")

CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
    RUSTFLAGS="-C target-feature=+crt-static -C force-frame-pointers=yes" \
    cargo build --quiet --release --bin peerplate --target "$triple" --target-dir "$prof_dir"
bin=$(realpath "$prof_dir/$triple/release/peerplate")
cargo bench --quiet --bench dns --no-run

cargo bench --quiet --bench dns -- --bin "$bin" --server "$server" --peers "$peers" \
    --only idle --idle-wait 5 --cpu-window $((window + 10)) >"$out/bench.txt" 2>&1 &
bench=$!
trap 'kill "$bench" 2>/dev/null || true' EXIT
pid=
for _ in $(seq 120); do
    pid=$(grep -o 'daemon pid [0-9]*' "$out/bench.txt" | awk '{print $3}' || true)
    [ -n "$pid" ] && break
    sleep 1
done
[ -n "$pid" ] || { cat "$out/bench.txt" >&2; exit 1; }
sleep 6
perf record -q -F 20000 --call-graph fp -o "$out/perf.data" -p "$pid" -- sleep "$window"
wait "$bench" || true
trap - EXIT
grep -E 'idle CPU|VmRSS' "$out/bench.txt" || true
echo "== inclusive shares (perf report --children), $server, $peers peers =="
perf report -i "$out/perf.data" --children --sort sym --stdio -g none 2>/dev/null \
    | grep -v '^#' | grep '%' | head -40
echo "(perf data and bench output in $out)"
