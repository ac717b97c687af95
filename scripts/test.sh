#!/usr/bin/env bash
# Every test of testbot, from a clean clone, in one command:
#
#   bash scripts/test.sh
#
# Sets up what the tests need and is not there (Debian's chromium for the
# headless-browser test; a Python virtual environment with schemathesis for
# the API fuzzer), runs `cargo test` (unit, property and end-to-end tests:
# real servers and workers on 127.0.0.1), then fuzzes the HTTP API against
# its OpenAPI document (.ci/fuzz-api), and stops everything it started.
# Ends with one line: "tests: N passed, N failed, N skipped".
#
# Environment: TESTBOT_VENV  a virtual environment to keep between runs
#              TESTBOT_SKIP_BROWSER=1, TESTBOT_SKIP_FUZZ=1  leave those out
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never

if [[ ${TESTBOT_SKIP_BROWSER:-} != 1 ]] && ! command -v chromium >/dev/null 2>&1; then
    echo "== installing chromium (for the headless-browser test)"
    if [[ $(id -u) != 0 ]]; then
        echo "chromium is missing and this is not root: install it (apt-get install chromium)" \
             "or set TESTBOT_SKIP_BROWSER=1" >&2
        exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq chromium >/dev/null
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT

echo "== cargo test"
status=0
cargo test --no-fail-fast 2>&1 | tee "$log" || status=$?

fuzz_line=
if [[ ${TESTBOT_SKIP_FUZZ:-} != 1 ]]; then
    echo "== API fuzzing against the OpenAPI document (.ci/fuzz-api)"
    fuzz_status=0
    bash .ci/fuzz-api target/debug/testbot 2>&1 | tee -a "$log" || fuzz_status=$?
    if [[ $fuzz_status != 0 ]]; then
        status=$fuzz_status
        fuzz_line=1
    fi
fi

# One closing line over every test binary (and the fuzzer, as one test).
grep '^test result:' "$log" | awk -v fuzz="${fuzz_line:-0}" -v ran="${TESTBOT_SKIP_FUZZ:-0}" '
    { p += $4; f += $6; i += $8 }
    END {
        if (ran != 1) { if (fuzz == 1) f += 1; else p += 1 }
        printf "tests: %d passed, %d failed, %d skipped\n", p, f, i
    }'
exit "$status"
