#!/usr/bin/env bash
# A real project's test suite (networkx's, shipped with the package) run
# three ways on this machine, wall time each:
#
#   pytest -n 2                (pytest-xdist, 2 processes)
#   testbot, 2 shards on a worker with 2 slots, first run (no history)
#   testbot, the same again (with the first run's durations)
#
# Outside CI (it downloads networkx and pytest-xdist from PyPI into
# target/bench-venv). Needs python3 and a built binary (cargo build --release).
#
#   bash scripts/bench-pytest.sh [NETWORKX_VERSION]
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=${1:-3.4.2}
BIN=$PWD/target/release/testbot
[[ -x $BIN ]] || { echo "build first: cargo build --release" >&2; exit 2; }
VENV=$PWD/target/bench-venv
if [[ ! -x $VENV/bin/python ]]; then
    python3 -m venv "$VENV"
fi
"$VENV/bin/pip" install --quiet --disable-pip-version-check "networkx==$VERSION" pytest pytest-xdist
"$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps --force-reinstall ./python
rm -rf python/build python/*.egg-info

DIR=$(mktemp -d)
SERVER_PID=
cleanup() {
    [[ -n $SERVER_PID ]] && kill "$SERVER_PID" 2>/dev/null && wait "$SERVER_PID" 2>/dev/null
    rm -rf "$DIR"
}
trap cleanup EXIT

PYTEST=("$VENV/bin/python" -m pytest -q -p no:cacheprovider --pyargs networkx)
seconds() {
    local s=$EPOCHREALTIME
    "$@" >"$DIR/out" 2>&1 || true
    awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'
}

echo "== pytest -n 2"
xdist=$(cd "$DIR" && seconds "${PYTEST[@]}" -n 2)
tail -1 "$DIR/out"

cat >"$DIR/worker.toml" <<EOF
name = "bench"
work_dir = "$DIR/work"
slots = 2
[jobtypes.networkx]
command = "cd '$DIR' && ${PYTEST[*]}"
timeout = "1h"
EOF
"$BIN" serve --listen 127.0.0.1:0 --db "$DIR/testbot.db" --worker "$DIR/worker.toml" \
    >"$DIR/server.out" 2>"$DIR/server.log" &
SERVER_PID=$!
for _ in $(seq 100); do
    URL=$(sed -n '1s/^testbot listening on //p' "$DIR/server.out")
    [[ -n $URL ]] && break
    sleep 0.1
done
export TESTBOT_SERVER=$URL
runs=()
for run in first second; do
    echo "== testbot, 2 shards, $run run"
    t=$(seconds "$BIN" submit networkx --shards 2 --retry-failed 0 --wait)
    grep -E '^build' "$DIR/out" || tail -3 "$DIR/out"
    runs+=("$t")
done
echo
printf 'networkx %s, wall time: pytest -n 2 %s s; testbot 2 shards: first run %s s, with history %s s\n' \
    "$VERSION" "$xdist" "${runs[0]}" "${runs[1]}"
printf '{"networkx": "%s", "xdist_s": %s, "testbot_first_s": %s, "testbot_history_s": %s}\n' \
    "$VERSION" "$xdist" "${runs[0]}" "${runs[1]}"
