#!/usr/bin/env python3
"""The longest functions and the largest files under a source folder.

Usage: scripts/code-size.py [SRC] [N]   (defaults: src 5)

A function's length is its lines from `fn` to its closing brace, found by
brace matching with string literals and `//` comments skipped (good enough
for this code base; it does not parse raw strings or char literals). Test
functions count too.
"""
import os
import re
import sys

FN = re.compile(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?fn\s+(\w+)")


def functions(path):
    lines = open(path, encoding="utf-8").read().split("\n")
    for i, line in enumerate(lines):
        m = FN.match(line)
        if not m:
            continue
        depth, started = 0, False
        for j in range(i, len(lines)):
            code = re.sub(r'"(\\.|[^"\\])*"', '""', lines[j])
            code = re.sub(r"//.*", "", code)
            for ch in code:
                if ch == "{":
                    depth, started = depth + 1, True
                elif ch == "}":
                    depth -= 1
            if started and depth <= 0:
                yield (j - i + 1, path, m.group(5), i + 1)
                break
            if not started and code.rstrip().endswith(";"):
                break


def main():
    src = sys.argv[1] if len(sys.argv) > 1 else "src"
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    files = [os.path.join(r, f) for r, _, fs in os.walk(src) for f in fs if f.endswith(".rs")]
    fns = sorted((f for p in files for f in functions(p)), reverse=True)
    print("longest functions (lines, file, name, line):")
    for length, path, name, line in fns[:n]:
        print(f"  {length:5} {path}:{line} {name}")
    sizes = sorted(((sum(1 for _ in open(p, encoding="utf-8")), p) for p in files), reverse=True)
    print("largest files (lines):")
    for count, path in sizes[:n]:
        print(f"  {count:5} {path}")


if __name__ == "__main__":
    main()
