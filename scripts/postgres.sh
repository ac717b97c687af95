#!/usr/bin/env bash
# A private PostgreSQL cluster for the tests, made with initdb in a
# temporary directory and listening on 127.0.0.1 only; never the machine's
# own. Sourced by scripts/test.sh:
#
#   source scripts/postgres.sh
#   postgres_start     # installs Debian's postgresql if missing (as root),
#                      # exports TESTBOT_PG_URL=postgres://testbot@127.0.0.1:PORT/postgres
#   postgres_stop      # stops the cluster and removes its directory
#
# The tests' cluster does not fsync (PG_FSYNC=on makes it durable, for
# benchmarks).
#
# PostgreSQL refuses to run as root: as root, the cluster belongs to the
# `postgres` user the package creates.

postgres_bin() {
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    [[ -n $d && -x $d/initdb ]] && echo "$d"
}

postgres_start() {
    local bin
    bin=$(postgres_bin || true)
    if [[ -z $bin ]]; then
        if [[ $(id -u) != 0 ]]; then
            echo "PostgreSQL is not installed and this is not root: install it" \
                 "(apt-get install postgresql) or set TESTBOT_SKIP_POSTGRES=1" >&2
            return 2
        fi
        echo "== installing postgresql (for the PostgreSQL store tests)"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        bin=$(postgres_bin)
    fi
    local as=()
    PG_DIR=$(mktemp -d)
    if [[ $(id -u) == 0 ]]; then
        chown postgres: "$PG_DIR"
        as=(runuser -u postgres --)
    fi
    local port
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    "${as[@]}" "$bin/initdb" -D "$PG_DIR/data" -U testbot --auth=trust -E UTF8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; return 1; }
    "${as[@]}" "$bin/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_DIR -c max_connections=300 -c fsync=${PG_FSYNC:-off}" \
        start >/dev/null || { cat "$PG_DIR/server.log" >&2; return 1; }
    PG_CTL=("${as[@]}" "$bin/pg_ctl")
    export TESTBOT_PG_URL="postgres://testbot@127.0.0.1:$port/postgres"
    echo "== PostgreSQL $("$bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_DIR)"
}

postgres_stop() {
    if [[ -n ${PG_DIR:-} && -d $PG_DIR/data ]]; then
        "${PG_CTL[@]}" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
        rm -rf "$PG_DIR"
    fi
    PG_DIR=
}
