#!/usr/bin/env bash
# The whole test suite, as CI runs it, in one command on a fresh Debian
# machine with Rust: installs what the tests need (scripts/test-deps.sh:
# apt as root or through sudo, pip, npm, the podman images), runs
# `cargo test` (arguments are passed on, e.g. `scripts/test.sh leader::`),
# and then lists the tests that skipped because a part was missing: libtest
# cannot mark a test ignored at run time, so the tests record their skips
# (tests/integration/helpers.rs `skip`) and this script prints them, so a
# green run on a laptop does not read as a full one. Under CI=true a missing
# part fails its test instead. Exit status: cargo test's.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# shellcheck source=scripts/test-deps.sh
source scripts/test-deps.sh

# The binary under test is the one that ships (tests/integration/helpers.rs
# `bin`): the release build of scripts/build-release.sh, built here once
# (test-deps.sh built it already for the images, so this is quick) unless
# PEERPLATE_TEST_BIN names one (a developer's debug build for a quick loop;
# CI=true refuses anything but the release build).
if [ -z "${PEERPLATE_TEST_BIN:-}" ]; then
  printf '\n==> the release binary under test (scripts/build-release.sh)\n' >&2
  built=$(date +%s)
  PEERPLATE_TEST_BIN=$(scripts/build-release.sh | tail -n1)
  export PEERPLATE_TEST_BIN
  printf 'release build: %ss\n' "$(( $(date +%s) - built ))" >&2
fi

skips="${CARGO_TARGET_DIR:-target}/tmp/skipped-tests.txt"
rm -f "$skips"
printf '\n==> cargo test\n' >&2
status=0
cargo test "$@" || status=$?
if [ -s "$skips" ]; then
  printf '\n%s test(s) SKIPPED (a part they need is missing here; CI=true would fail them):\n' "$(wc -l < "$skips")" >&2
  sort "$skips" | sed 's/^/  /; s/\t/: /' >&2
else
  printf '\nno test skipped\n' >&2
fi
exit "$status"
