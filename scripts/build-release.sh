#!/usr/bin/env bash
# Builds peerplate the way it ships: glibc linked statically (+crt-static),
# for x86_64-unknown-linux-gnu, with the release profile of Cargo.toml
# (opt-level "z", fat LTO, one codegen unit, panic=abort, stripped), with
# the features the image enables (`https`; FEATURES="" builds without).
# Prints the binary's path (last line of stdout), its size and what `ldd`
# says, and fails unless `ldd` reports "statically linked".
#
#   scripts/build-release.sh                      # target dir: $CARGO_TARGET_DIR or ./target
#   CARGO_TARGET_DIR=/tmp/pp-bench-target scripts/build-release.sh
#
# The benches take the result with `--bin PATH`, e.g.
#   cargo bench --bench dns -- --bin "$(scripts/build-release.sh | tail -n1)"
set -euo pipefail
cd "$(dirname "$0")/.."
triple=x86_64-unknown-linux-gnu
target_dir=${CARGO_TARGET_DIR:-target}

features=${FEATURES-https}
RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --features "$features" --bin peerplate --target "$triple" --target-dir "$target_dir" >&2

bin="$target_dir/$triple/release/peerplate"
bin=$(realpath "$bin")
size=$(stat -c %s "$bin")
linkage=$(ldd "$bin" 2>&1 || true)
echo "size: $size bytes ($(awk -v s="$size" 'BEGIN { printf "%.2f", s / 1048576 }') MiB)" >&2
echo "ldd: $linkage" >&2
case $linkage in
    *"statically linked"* | *"not a dynamic executable"*) ;;
    *) echo "error: $bin is not statically linked" >&2; exit 1 ;;
esac
echo "$bin"
