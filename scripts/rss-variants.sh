#!/usr/bin/env bash
# Idle memory of `peerplate run` for a few build variants, side by side.
#
# Builds the current tree's `peerplate` binary in a separate target dir per
# variant (the project's Cargo.toml is not touched: profile settings come
# from CARGO_PROFILE_RELEASE_* and RUSTFLAGS), then runs the idle part of
# `benches/daemon.rs` against each with `--bin`. Informational only; nothing
# asserts these numbers.
#
#   scripts/rss-variants.sh            # all variants (~12 min on 2 cores)
#   VARIANTS="o3 os" scripts/rss-variants.sh
#
# Variants: o3 (the release profile as is), arena1 (o3 run with
# MALLOC_ARENA_MAX=1), os (opt-level "s"), oz (opt-level "z"), static (glibc
# linked statically, +crt-static), static-os.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${RSS_VARIANTS_DIR:-target/rss-variants}
variants=${VARIANTS:-"o3 arena1 os static static-os"}
triple=x86_64-unknown-linux-gnu

build() { # name -> prints the binary's path
    local name=$1 dir="$out/$1"
    local -a envs=() target=()
    case $name in
        o3 | arena1) name=o3 dir="$out/o3" ;;
        os) envs=(CARGO_PROFILE_RELEASE_OPT_LEVEL=s) ;;
        oz) envs=(CARGO_PROFILE_RELEASE_OPT_LEVEL=z) ;;
        static) envs=(RUSTFLAGS="-C target-feature=+crt-static") target=(--target "$triple") ;;
        static-os) envs=(CARGO_PROFILE_RELEASE_OPT_LEVEL=s RUSTFLAGS="-C target-feature=+crt-static")
            target=(--target "$triple") ;;
        *) echo "unknown variant $name" >&2; exit 2 ;;
    esac
    env "${envs[@]}" cargo build --quiet --release --bin peerplate "${target[@]}" --target-dir "$dir" >&2
    if [ ${#target[@]} -gt 0 ]; then echo "$dir/$triple/release/peerplate"; else echo "$dir/release/peerplate"; fi
}

cargo bench --bench daemon --no-run --quiet
for v in $variants; do
    bin=$(build "$v")
    extra=()
    [ "$v" = arena1 ] && extra=(--daemon-env MALLOC_ARENA_MAX=1)
    echo "=== $v: $(stat -c %s "$bin") bytes"
    cargo bench --quiet --bench daemon -- --only idle --cpu-window 5 --bin "$bin" "${extra[@]}" \
        | grep -E 'VmRSS|smaps_rollup|r-xp' || true
done
