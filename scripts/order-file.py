#!/usr/bin/env python3
"""Builds build/peerplate.order from what scripts/order-file.sh recorded.

    order-file.py BINARY CALLGRIND_DIR [--idle IDLE_DIR] [PERF_SCRIPT_OUTPUT...] > ORDER

BINARY is the unstripped build the runs used. The order is:

0. with --idle, the functions of the idle poll: what callgrind counted in
   IDLE_DIR's dumps (collection switched on only once the daemons had
   settled), with their CPU variants (see 2). They run every interval, so
   side by side on the fewest pages they cost the fewest TLB and cache
   misses when a poll wakes up cold;
1. every function callgrind saw run, first seen first (the runs sorted by
   time, so the daemon's start and idle loop lead);
2. the siblings of each one that is chosen by CPU at run time: valgrind's
   CPU lacks AVX-512 and SHA-NI, so glibc's ifunc resolvers, ring and the
   sha2 and memchr crates pick other variants there than on the machine
   that runs peerplate (`__strcmp_sse2` under valgrind, `__strcmp_evex`
   natively); every variant of a family that ran is listed;
3. functions that took a page fault in native runs (`perf record -e
   page-faults -d`, read with `perf script -F ip,sym,addr`) outside the
   part listed so far: code that only runs natively.

Names nm does not list (callgrind's "'2" recursion marks, addresses,
"(below main)") are dropped. Prints how much code each part adds to stderr.
"""

import bisect
import re
import subprocess
import sys
from pathlib import Path

# Tokens that name a CPU-specific variant in a function's name.
# (A mangled name spells each part's length before it: "4avx2", "5ssse3".)
FEATURE = re.compile(
    r"\d*(sse2|ssse3|sse41|sse42|sse4_1|sse4_2|avx512[a-z0-9]*|avx2|avx|evex512|evex|"
    r"shaext|shani|vaes|aesni|clmul|erms|rtm)"
)
# glibc's ifunc names whose variants are named after another function.
ALIAS = {"index": "strchr", "rindex": "strrchr", "bcmp": "memcmp", "memcpy": "memmove",
         "new_memcpy": "memmove", "libc_memmove": "memmove", "libc_strstr": "strstr"}


def symbols(binary):
    """(address, size, name, type) of every defined symbol with a size."""
    out = subprocess.run(["nm", "-S", "--defined-only", binary], capture_output=True,
                         text=True, check=True).stdout
    syms = []
    for line in out.splitlines():
        f = line.split()
        if len(f) == 4:
            syms.append((int(f[0], 16), int(f[1], 16), f[3], f[2]))
    return syms


def family(name):
    """A name with its hash and CPU-feature tokens blanked."""
    return FEATURE.sub("*", re.sub(r"17h[0-9a-f]{16}E$", "", name.lstrip("_")))


def main():
    binary, cg_dir, rest = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    idle_dir = None
    if rest[:1] == ["--idle"]:
        idle_dir, rest = Path(rest[1]), rest[2:]
    perf_outputs = rest
    syms = symbols(binary)
    text = {n: (a, s) for a, s, n, t in syms if t in "tTwWi"}
    size = lambda names: sum(text.get(n, (0, 0))[1] for n in names) // 1024

    order, seen = [], set()

    def add(name):
        if name in text and name not in seen:
            seen.add(name)
            order.append(name)

    fn = re.compile(r"^c?fn=\(\d+\) (.*)$")
    # Names with the CPU-feature tokens: which functions are CPU variants.
    ifuncs = {n.lstrip("_") for a, s, n, t in syms if t == "i"}

    def read_runs(paths):
        for run in paths:
            for line in run.read_text(errors="replace").splitlines():
                m = fn.match(line)
                if m:
                    add(re.sub(r"'\d+$", "", m.group(1)))

    def add_variants(names):
        """Every CPU variant of a family among `names` (see 2. above)."""
        prefixes = set()
        for name in names:
            base = name.lstrip("_")
            base = ALIAS.get(base, base)
            for ifunc in ifuncs:
                target = ALIAS.get(ifunc, ifunc)
                if base == ifunc or base == target or base.startswith(target + "_"):
                    prefixes.add("__" + target + "_")
        families = {family(n) for n in names if FEATURE.search(n)}
        for name in sorted(text, key=lambda n: text[n][0]):
            if any(name.startswith(p) for p in prefixes) or (
                FEATURE.search(name) and family(name) in families
            ):
                add(name)

    # 0. The idle poll, first.
    if idle_dir is not None:
        # Dumps on request are named PID.out.N; the final PID.out holds
        # only what ran after collection was switched off again (nothing).
        read_runs(sorted(idle_dir.glob("*.out.*")))
        add_variants(list(order))
        print(f"idle poll: {len(order)} functions, {size(order)} KiB", file=sys.stderr)
    idle = len(order)

    runs = sorted(cg_dir.glob("*.out"), key=lambda p: p.stat().st_mtime)
    read_runs(runs)
    ran = len(order)
    print(f"callgrind: {ran - idle} functions, {size(order[idle:])} KiB, from {len(runs)} runs", file=sys.stderr)

    # 2. Siblings chosen by CPU.
    add_variants(list(order[idle:]))
    print(f"CPU variants: {len(order) - ran} functions, {size(order[ran:])} KiB", file=sys.stderr)

    # 3. Native page faults past what is listed.
    before = len(order)
    addrs = sorted((a, s, n) for n, (a, s) in text.items())
    starts = [a for a, _, _ in addrs]
    start = text.get("_start", (None, 0))[0]
    for path in perf_outputs:
        lines = [l.split() for l in Path(path).read_text(errors="replace").splitlines()]
        base = next((int(f[0], 16) - start for f in lines
                     if len(f) >= 2 and f[1] == "_start" and start is not None), None)
        if base is None:
            continue
        for f in lines:
            try:
                at = int(f[-2], 16) - base
            except (ValueError, IndexError):
                continue
            i = bisect.bisect_right(starts, at) - 1
            if i >= 0 and at < addrs[i][0] + addrs[i][1]:
                add(addrs[i][2])
    print(f"native page faults: {len(order) - before} functions", file=sys.stderr)

    sys.stdout.write("".join(n + "\n" for n in order))


if __name__ == "__main__":
    main()
