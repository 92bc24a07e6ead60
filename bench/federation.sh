#!/usr/bin/env bash
# Federation between two Corvid servers on loopback, over TLS with a CA made
# for the run: send on A → seen in /sync of users on B (latency, lost,
# duplicated), at a conversational rate and at a high one, next to the same
# workload within one server; then at a rate above what B can take in
# ("flood"), whose "delivered to every receiver" figure is the events/s B
# receives; then users of B joining a room of A with 1,000 members, each a
# full federated join (make_join, send_join, the room's state and auth chain
# checked and stored by B).
# SQLite (BACKEND=postgres for PostgreSQL).
#
# Usage: bench/federation.sh          Needs: cargo, openssl; PostgreSQL on
# 127.0.0.1:5432 for BACKEND=postgres. Prints the tables; raw JSON lines go
# to bench/runs/federation-<timestamp>/results.jsonl (gitignored).
# PROFILE=1 records the receiving server with `perf record -g` during the
# fast run (RUN_DIR/perf.data); ONLY_FAST=1 skips the other runs.
# LATENCY_ARGS, FAST_ARGS, FLOOD_ARGS and JOIN_ARGS replace the workloads'
# arguments.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BACKEND=${BACKEND:-sqlite}
RUN_DIR="$ROOT/bench/runs/federation-$(date -u +%Y%m%dT%H%M%SZ)"
LATENCY_ARGS=${LATENCY_ARGS:-"--receivers 4 --senders 2 --rate 20 --duration 15 --grace 10"}
FAST_ARGS=${FAST_ARGS:-"--receivers 4 --senders 4 --rate 200 --duration 10 --grace 15"}
FLOOD_ARGS=${FLOOD_ARGS:-"--receivers 4 --senders 8 --rate 1000 --duration 5 --grace 20"}
JOIN_ARGS=${JOIN_ARGS:-"--members 1000 --trials 3"}
mkdir -p "$RUN_DIR"
PIDS=()
DATABASES=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for db in "${DATABASES[@]}"; do
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "DROP DATABASE IF EXISTS $db" 2>/dev/null || true
    done
}
trap cleanup EXIT

cargo build --release -q -p corvid -p corvid-bench
CORVID="$ROOT/target/release/corvid"
BENCH="$ROOT/target/release/corvid-bench"

# A CA, and one certificate for 127.0.0.1 and localhost signed by it.
cd "$RUN_DIR"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=corvid-bench-ca \
    -keyout ca.key -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj /CN=localhost -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n' >ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile ext.cnf -out server.pem 2>/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_server NAME HOST: sets STARTED_PORT (client) and STARTED_PID. Run in
# this shell, not a subshell, so that cleanup knows the process and database.
start_server() {
    local name=$1 host=$2 client federation database
    client=$(free_port)
    federation=$(free_port)
    database="sqlite://$RUN_DIR/$name/corvid.db"
    if [ "$BACKEND" = postgres ]; then
        local db="corvid_fed_${name}_$$"
        psql -q -h 127.0.0.1 -U postgres -d postgres -c "CREATE DATABASE $db" >/dev/null
        DATABASES+=("$db")
        database="postgres://postgres@127.0.0.1:5432/$db"
    fi
    mkdir -p "$RUN_DIR/$name"
    cat >"$RUN_DIR/$name/corvid.toml" <<TOML
server_name = "$host:$federation"
data_dir = "$RUN_DIR/$name"
database_url = "$database"
registration = "open"
password_hash_passes = 1    # set-up registers 1,000 users; one pass over the same 7 MiB
[listen]
client = "127.0.0.1:$client"
federation = "127.0.0.1:$federation"
[tls]
certificate = "$RUN_DIR/server.pem"
private_key = "$RUN_DIR/server.key"
listeners = ["federation"]
[rate_limit]
enabled = false
[federation]
extra_ca_files = ["$RUN_DIR/ca.pem"]
trusted_key_servers = []
TOML
    "$CORVID" --config "$RUN_DIR/$name/corvid.toml" serve >"$RUN_DIR/$name/log" 2>&1 &
    local pid=$!
    PIDS+=("$pid")
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$client/_matrix/client/versions" >/dev/null && break
        sleep 0.1
    done
    STARTED_PORT=$client
    STARTED_PID=$pid
}

start_server a 127.0.0.1
A_PORT=$STARTED_PORT A_PID=$STARTED_PID
start_server b localhost
B_PORT=$STARTED_PORT B_PID=$STARTED_PID
echo "A on 127.0.0.1:$A_PORT (pid $A_PID), B on 127.0.0.1:$B_PORT (pid $B_PID), $BACKEND" >&2

run() { # label args...
    local label=$1
    shift
    echo "== $label" >&2
    "$BENCH" --url "http://127.0.0.1:$A_PORT" --pid "$A_PID" --label "$label" \
        --json-out "$RUN_DIR/results.jsonl" --max-total-secs 180 "$@"
}
if [ -z "${ONLY_FAST:-}" ]; then
    # shellcheck disable=SC2086
    run "one server, $BACKEND" latency $LATENCY_ARGS
    # shellcheck disable=SC2086
    run "A -> B, $BACKEND" latency $LATENCY_ARGS --receivers-url "http://127.0.0.1:$B_PORT"
fi
if [ -n "${PROFILE:-}" ]; then
    perf record -g -o "$RUN_DIR/perf.data" -p "$B_PID" 2>/dev/null &
    PERF_PID=$!
fi
# shellcheck disable=SC2086
run "A -> B fast, $BACKEND" latency $FAST_ARGS --receivers-url "http://127.0.0.1:$B_PORT"
if [ -n "${PERF_PID:-}" ]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
    echo "profile: perf report -i $RUN_DIR/perf.data" >&2
fi
if [ -z "${ONLY_FAST:-}" ]; then
    # shellcheck disable=SC2086
    run "A -> B flood, $BACKEND" latency $FLOOD_ARGS --receivers-url "http://127.0.0.1:$B_PORT"
    # shellcheck disable=SC2086
    run "join from B, $BACKEND" join $JOIN_ARGS --joiners-url "http://127.0.0.1:$B_PORT"
fi
echo "results: $RUN_DIR/results.jsonl" >&2
