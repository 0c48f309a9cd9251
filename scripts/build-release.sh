#!/usr/bin/env bash
# Builds peerplate the way it ships: glibc linked statically (+crt-static),
# with the release profile of Cargo.toml (opt-level "z", fat LTO, one codegen
# unit, panic=abort, stripped), with the features the image enables (`https`;
# FEATURES="" builds without), for TRIPLE (default x86_64-unknown-linux-gnu;
# the Dockerfile's builder and the release workflow run this script too, so
# every shipped binary is linked the same way). Prints the binary's path
# (last line of stdout), its size and what `ldd` says, and fails unless `ldd`
# reports "statically linked" (or, for a foreign target, "not a dynamic
# executable").
#
#   scripts/build-release.sh                      # target dir: $CARGO_TARGET_DIR or ./target
#   CARGO_TARGET_DIR=/tmp/pp-bench-target scripts/build-release.sh
#   TRIPLE=aarch64-unknown-linux-gnu scripts/build-release.sh   # with a cross gcc as the linker
#
# The benches take the result with `--bin PATH`, e.g.
#   cargo bench --bench dns -- --bin "$(scripts/build-release.sh | tail -n1)"
set -euo pipefail
cd "$(dirname "$0")/.."
triple=${TRIPLE:-x86_64-unknown-linux-gnu}
target_dir=${CARGO_TARGET_DIR:-target}
features=${FEATURES-https}

# Link flags, x86_64 (measured in README "Measured", issue 18):
# - LLD, named explicitly (rustc picks it by default only when the linker is
#   the default `cc`, not the Dockerfile's x86_64-linux-gnu-gcc), from
#   rustc's own sysroot;
# - `-z pack-relative-relocs` (RELR): the ~10,000 relocations a static-pie
#   binary applies to itself at every start take 3 kB instead of 249 kB, all
#   of which was read, so resident (glibc 2.36 or later: Debian 12);
# - build/peerplate.order (scripts/order-file.sh makes it): the functions
#   `run` executes, first at the start of .text, so the kernel's 64 KiB
#   fault-around keeps ~1.4 MB of code resident instead of nearly all 3.5 MB.
#   The symbol names of another target differ, so x86_64 only; aarch64 is
#   linked as before (its cross toolchain is not run here).
# For every crate: static glibc.
rustflags="-C target-feature=+crt-static"
# For peerplate's own crate only (`cargo rustc -- ...`): link flags, which
# neither rebuild the dependencies nor rename a symbol.
link=()
# UNSTRIPPED=1 (scripts/order-file.sh) keeps the symbols. A flag, not the
# profile's `strip`: cargo hashes the profile into every symbol's name, so an
# unstripped profile would name its functions differently from the build
# that ships, and the order file would match nothing.
if [ "${UNSTRIPPED:-}" = 1 ]; then link+=(-C strip=none); fi
order=$PWD/build/peerplate.order
bin="$target_dir/$triple/release/peerplate"
if [ "$triple" = x86_64-unknown-linux-gnu ]; then
    sysroot=$(rustc --print sysroot)
    host=$(rustc -vV | sed -n 's/^host: //p')
    link+=(-C link-arg=-fuse-ld=lld -C "link-arg=-B$sysroot/lib/rustlib/$host/bin/gcc-ld")
    link+=(-C link-arg=-Wl,-z,pack-relative-relocs)
    # lld warns of each name in the order file the binary lacks; rustc
    # shows the linker's warnings with this lint.
    link+=(-C "link-arg=-Wl,--symbol-ordering-file=$order" -W linker-messages)
    # Cargo does not track a file named in a link argument: relink when the
    # order file is newer than the binary.
    if [ -e "$bin" ] && [ "$order" -nt "$bin" ]; then touch src/main.rs; fi
fi
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
RUSTFLAGS="$rustflags" cargo rustc --release --locked --features "$features" --bin peerplate \
    --target "$triple" --target-dir "$target_dir" -- "${link[@]}" >&2 2>"$log" || status=$?
# Cargo's output, less the linker's list of names it did not find (counted
# below).
awk '/linker stderr/ { skip = 1 } !skip { print } skip && /generated [0-9]+ warning/ { skip = 0 }' "$log" >&2
[ "$status" = 0 ] || exit "$status"
# A stale order file (renamed functions, a new dependency version) still
# links, with less of the code packed: say so when it relinked. (Functions
# the file does not name yet are not counted here: the benchmark shows
# them, as code resident past ~1.4 MB.)
if [ "$triple" = x86_64-unknown-linux-gnu ] && grep -q 'Compiling peerplate' "$log"; then
    listed=$(wc -l <"$order")
    missing=$(grep -c 'symbol ordering file: no such symbol' "$log" || true)
    echo "order file: $((listed - missing)) of $listed symbols placed (rerun scripts/order-file.sh when the daemon's code paths change)" >&2
    if [ "$missing" -gt $((listed / 2)) ]; then
        echo "error: build/peerplate.order is stale ($missing of $listed names not in the binary): run scripts/order-file.sh" >&2
        exit 1
    fi
fi
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
