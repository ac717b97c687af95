#!/usr/bin/env bash
# Every test of testbot, from a clean clone, in one command:
#
#   bash scripts/test.sh
#
# Sets up what the tests need and is not there (Debian's chromium for the
# headless-browser test; a private PostgreSQL cluster, scripts/postgres.sh,
# for the store tests on PostgreSQL; a Python virtual environment,
# target/venv, with pytest and schemathesis), runs `cargo test` (unit, property and end-to-end
# tests: real servers and workers on 127.0.0.1), the Python package's tests
# (python/tests, against the binary just built), then fuzzes the HTTP API
# against its OpenAPI document (.ci/fuzz-api), and stops everything it
# started.
# Ends with one line: "tests: N passed, N failed, N skipped".
#
# Environment: TESTBOT_VENV  a virtual environment to keep between runs
#              TESTBOT_SKIP_BROWSER=1, TESTBOT_SKIP_FUZZ=1,
#              TESTBOT_SKIP_POSTGRES=1  leave those out
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
source scripts/postgres.sh
trap 'postgres_stop; rm -f "$log"' EXIT
if [[ ${TESTBOT_SKIP_POSTGRES:-} != 1 ]]; then
    postgres_start
else
    echo "== TESTBOT_SKIP_POSTGRES=1: the PostgreSQL store tests are skipped"
fi

echo "== cargo test"
status=0
cargo test --no-fail-fast 2>&1 | tee "$log" || status=$?

# The Python package (python/): its tests run against the binary just built.
export TESTBOT_VENV=${TESTBOT_VENV:-$PWD/target/venv}
if [[ ! -x $TESTBOT_VENV/bin/python ]]; then
    echo "== making a Python virtual environment in $TESTBOT_VENV"
    python3 -m venv "$TESTBOT_VENV"
fi
if ! "$TESTBOT_VENV/bin/python" -c "import pytest" 2>/dev/null; then
    "$TESTBOT_VENV/bin/pip" install --quiet --disable-pip-version-check "pytest>=7"
fi
"$TESTBOT_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./python
echo "== pytest python/tests (the Python client against the real server)"
py_status=0
TESTBOT_BIN=$PWD/target/debug/testbot "$TESTBOT_VENV/bin/python" -m pytest -q -p no:cacheprovider python/tests 2>&1 \
    | tee "$log.py" || py_status=$?
[[ $py_status == 0 ]] || status=$py_status
py_passed=$( (grep -Eo '[0-9]+ passed' "$log.py" || true) | tail -1 | grep -Eo '[0-9]+' || echo 0)
py_failed=$( (grep -Eo '[0-9]+ (failed|error)' "$log.py" || true) | awk '{n += $1} END {print n + 0}')
rm -f "$log.py"

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
grep '^test result:' "$log" | awk -v fuzz="${fuzz_line:-0}" -v ran="${TESTBOT_SKIP_FUZZ:-0}" \
    -v pyp="$py_passed" -v pyf="$py_failed" '
    { p += $4; f += $6; i += $8 }
    END {
        if (ran != 1) { if (fuzz == 1) f += 1; else p += 1 }
        p += pyp; f += pyf
        printf "tests: %d passed, %d failed, %d skipped\n", p, f, i
    }'
exit "$status"
