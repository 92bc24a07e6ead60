#!/usr/bin/env bash
# Corvid and Synapse side by side, on this machine, in one run:
#   SQLite:     Corvid, then Synapse, each fresh, every workload;
#   PostgreSQL: the same, each on a fresh database.
# Each workload's set-up (users, rooms, filler messages) is kept apart from
# its measured part: Synapse's, the slow one, runs while Corvid builds, at
# the lowest CPU priority, and Synapse then waits stopped (SIGSTOP) until
# its turn. Measured parts run one server at a time on loopback, so no two
# servers ever compete for the CPU while one is measured.
# Writes BENCHMARKS.md at the repository root; raw results, logs and the exact
# commands go to bench/runs/<timestamp>/ (gitignored).
#
# Usage: bench/compare.sh
# Needs: cargo, python3 (for the Synapse venv), PostgreSQL on 127.0.0.1:5432
# with trust auth for user postgres (PG_URL_BASE to change), and the package
# registry for the first `pip install matrix-synapse`.
#
# Workload sizes can be changed through the environment (see SIZES below);
# SETUP_CONCURRENCY sets the requests in flight during (unmeasured) set-up.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH_DIR="$ROOT/bench"
VENV="$BENCH_DIR/.venv"
RUN_DIR="$BENCH_DIR/runs/$(date -u +%Y%m%dT%H%M%SZ)"
RESULTS="$RUN_DIR/results.jsonl"
COMMANDS="$RUN_DIR/commands.txt"
EVENTS="$RUN_DIR/events.txt"
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_USER=${PG_USER:-postgres}
SETUP_CONCURRENCY=${SETUP_CONCURRENCY:-8}
BACKENDS=${BACKENDS:-"sqlite postgres"}
# SIZES: chosen so the whole run fits in 15 minutes on 2 cores.
SEND_ARGS=${SEND_ARGS:-"--users 20 --rooms 10 --concurrency 20 --messages 2000 --duration 12"}
LATENCY_ARGS=${LATENCY_ARGS:-"--receivers 4 --senders 2 --rate 20 --duration 15 --grace 10"}
INITIAL_SYNC_ARGS=${INITIAL_SYNC_ARGS:-"--rooms 100 --messages-per-room 10 --trials 3"}
JOIN_ARGS=${JOIN_ARGS:-"--members 500 --trials 5"}
MESSAGES_ARGS=${MESSAGES_ARGS:-"--messages 1000 --page-size 100 --duration 6"}
# Hard time limits: of one workload's measured part (its set-up included
# where it had to be done in the same run), and of one set-up on its own,
# which may run at the lowest priority beside the build.
WORKLOAD_MAX_SECS=${WORKLOAD_MAX_SECS:-240}
SETUP_MAX_SECS=${SETUP_MAX_SECS:-900}
# Seconds between a Corvid workload's set-up and its measurement, for the
# background work the set-up leaves behind to finish (Synapse's set-up ran
# minutes before its measurement).
SETUP_SETTLE_SECS=${SETUP_SETTLE_SECS:-2}

START_TS=$(date +%s)
mkdir -p "$RUN_DIR"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
: >"$RESULTS"
: >"$COMMANDS"
: >"$EVENTS"

log() { echo "[$(($(date +%s) - START_TS))s] $*" | tee -a "$RUN_DIR/compare.log" >&2; }
event() { echo "$*" >>"$EVENTS"; log "$*"; }

# ---- clean-up: every server we started, every database we created ----------
SERVER_PID=""
SERVERS=()
DATABASES=()
stop_server() { # pid
    local pid=$1
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    local rc=$?
    for pid in "${SERVERS[@]}"; do
        stop_server "$pid"
    done
    [ -z "${BUILD_PID:-}" ] || kill "$BUILD_PID" 2>/dev/null || true
    for db in "${DATABASES[@]}"; do
        psql -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
            -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null 2>&1 || true
    done
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# CPU accounting, in clock ticks (USER_HZ): the whole machine busy (not idle,
# not iowait), and all PostgreSQL processes together.
HZ=$(getconf CLK_TCK)
machine_busy_ticks() { awk '/^cpu / {print $2 + $3 + $4 + $7 + $8 + $9}' /proc/stat; }
postgres_ticks() { cat /proc/[0-9]*/stat 2>/dev/null | awk '$2 == "(postgres)" {t += $14 + $15} END {print t + 0}'; }
process_ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
ticks_to_s() { awk -v t="$1" -v hz="$HZ" 'BEGIN {printf "%.2f", t / hz}'; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Synapse may start at the lowest priority beside the build, hence the ample limit.
wait_up() { # url pid name
    local url=$1 pid=$2 name=$3
    for _ in $(seq 1 6000); do
        if ! kill -0 "$pid" 2>/dev/null; then
            event "ERROR: $name exited during start-up"
            return 1
        fi
        if curl -sf -o /dev/null "$url/_matrix/client/versions"; then
            return 0
        fi
        sleep 0.1
    done
    event "ERROR: $name did not answer within 600 s"
    return 1
}

# ---- 1. Synapse in a venv, installed while Corvid builds ---------------------
SYNAPSE_INSTALL_PID=""
if ! "$VENV/bin/python" -c 'import synapse, psycopg2' 2>/dev/null; then
    log "installing matrix-synapse into $VENV (in the background)"
    (python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "matrix-synapse[postgres]") \
        >"$RUN_DIR/synapse-install.log" 2>&1 &
    SYNAPSE_INSTALL_PID=$!
fi

# ---- 2. Corvid and the bench tool, release, in the background ---------------
log "building corvid and corvid-bench (release)"
BUILD_START=$(date +%s)
(cd "$ROOT" && exec cargo build --release -p corvid -p corvid-bench) >"$RUN_DIR/build.log" 2>&1 &
BUILD_PID=$!
CORVID="$ROOT/target/release/corvid"
BENCH="$ROOT/target/release/corvid-bench"

# The bench tool needs none of Corvid's own code, so it is linked long
# before the server; Synapse's set-up can start as soon as it is.
bench_built() { [ -x "$BENCH" ] && [ "$(stat -c %Y "$BENCH")" -ge "$BUILD_START" ]; }
while kill -0 "$BUILD_PID" 2>/dev/null && ! bench_built; do
    sleep 1
done

finish_build() {
    local rc=0
    wait "$BUILD_PID" || rc=$?
    BUILD_PID=""
    BUILD_SECS=$(($(date +%s) - BUILD_START))
    tail -3 "$RUN_DIR/build.log" | tee -a "$RUN_DIR/compare.log" >&2
    if [ $rc -ne 0 ]; then
        log "ERROR: the release build failed (see $RUN_DIR/build.log)"
        exit 1
    fi
    log "release build done in ${BUILD_SECS} s"
}
if ! bench_built; then
    finish_build
fi
if [ -n "$SYNAPSE_INSTALL_PID" ] && ! wait "$SYNAPSE_INSTALL_PID"; then
    cat "$RUN_DIR/synapse-install.log" >&2
    log "ERROR: installing matrix-synapse failed"
    exit 1
fi
SYNAPSE_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("matrix-synapse"))')
log "Synapse $SYNAPSE_VERSION"

# Synapse's set-up runs beside the build at nice 19, so the build keeps the
# CPU it can use. Before Synapse is measured every one of its threads goes
# back to priority 0; where that is not allowed (lowering a nice value needs
# privilege), nothing is run at a lower priority at all.
LOW_PRIORITY=""
SETUP_NICE=""
nice -n 19 sleep 5 &
if renice -n 0 -p $! >/dev/null 2>&1; then
    LOW_PRIORITY="nice -n 19"
fi
kill $! 2>/dev/null || true
wait $! 2>/dev/null || true

# ---- 3. Servers ---------------------------------------------------------------
start_corvid() { # backend dir port
    local backend=$1 dir=$2 port=$3 db_url
    mkdir -p "$dir/data"
    if [ "$backend" = sqlite ]; then
        db_url="sqlite://$dir/data/corvid.db"
    else
        local db="corvid_bench_$(date +%s)_$$"
        psql -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres -c "CREATE DATABASE \"$db\"" >/dev/null
        DATABASES+=("$db")
        db_url="postgres://$PG_USER@$PG_HOST:$PG_PORT/$db"
    fi
    cat >"$dir/corvid.toml" <<EOF
server_name = "corvid.bench.local"
data_dir = "$dir/data"
database_url = "$db_url"
registration = "open"
# Registration is set-up here, never measured: one pass of the password
# hash instead of five (its 7 MiB, and so the peak RSS, stay the same), as
# Synapse's bcrypt_rounds below.
password_hash_passes = 1

[listen]
client = "127.0.0.1:$port"

[rate_limit]
enabled = false
EOF
    echo "$CORVID --config $dir/corvid.toml serve" >>"$COMMANDS"
    "$CORVID" --config "$dir/corvid.toml" serve >"$dir/corvid.log" 2>&1 &
    SERVER_PID=$!
    SERVERS+=("$SERVER_PID")
}

start_synapse() { # backend dir port
    local backend=$1 dir=$2 port=$3 db_yaml
    mkdir -p "$dir/data"
    if [ "$backend" = sqlite ]; then
        db_yaml="{\"name\": \"sqlite3\", \"args\": {\"database\": \"$dir/data/homeserver.db\"}}"
    else
        local db="synapse_bench_$(date +%s)_$$"
        psql -q -h "$PG_HOST" -p "$PG_PORT" -U "$PG_USER" -d postgres \
            -c "CREATE DATABASE \"$db\" ENCODING 'UTF8' LC_COLLATE='C' LC_CTYPE='C' TEMPLATE template0" >/dev/null
        DATABASES+=("$db")
        db_yaml="{\"name\": \"psycopg2\", \"args\": {\"user\": \"$PG_USER\", \"host\": \"$PG_HOST\", \"port\": $PG_PORT, \"database\": \"$db\", \"cp_min\": 5, \"cp_max\": 10}}"
    fi
    (cd "$dir" && "$VENV/bin/python" -m synapse.app.homeserver --server-name synapse.bench.local \
        --config-path "$dir/homeserver.yaml" --data-directory "$dir/data" \
        --generate-config --report-stats=no >"$dir/generate.log" 2>&1)
    "$VENV/bin/python" - "$dir/homeserver.yaml" "$port" "$db_yaml" <<'PY'
import json, sys, yaml
path, port, db = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
with open(path) as f:
    c = yaml.safe_load(f)
c["listeners"] = [{
    "port": port, "bind_addresses": ["127.0.0.1"], "type": "http", "tls": False,
    "x_forwarded": False, "resources": [{"names": ["client"], "compress": False}],
}]
c["database"] = db
c["enable_registration"] = True
c["enable_registration_without_verification"] = True
c["trusted_key_servers"] = []
c["suppress_key_server_warning"] = True
c["report_stats"] = False
# Registration is set-up here, never measured: cheap password hashing keeps
# creating hundreds of users within the time budget.
c["bcrypt_rounds"] = 4
# Every rate limit out of the way.
hi = {"per_second": 1000000, "burst_count": 1000000}
for k in ["rc_message", "rc_registration", "rc_registration_token_validity",
          "rc_admin_redaction", "rc_joins_per_room", "rc_3pid_validation",
          "rc_third_party_invite", "rc_media_create", "rc_room_creation",
          "rc_reports", "rc_delayed_event_mgmt", "rc_key_requests",
          "rc_send_to_device"]:
    c[k] = dict(hi)
c["rc_login"] = {"address": dict(hi), "account": dict(hi), "failed_attempts": dict(hi)}
c["rc_joins"] = {"local": dict(hi), "remote": dict(hi)}
c["rc_invites"] = {"per_room": dict(hi), "per_user": dict(hi), "per_issuer": dict(hi)}
c["rc_presence"] = {"per_user": dict(hi)}
c["rc_federation"] = {"window_size": 1000, "sleep_limit": 1000000, "sleep_delay": 1,
                      "reject_limit": 1000000, "concurrent": 1000000}
with open(path, "w") as f:
    yaml.safe_dump(c, f)
PY
    echo "${SETUP_NICE:+$SETUP_NICE }$VENV/bin/python -m synapse.app.homeserver -c $dir/homeserver.yaml" >>"$COMMANDS"
    # shellcheck disable=SC2086
    (cd "$dir" && exec $SETUP_NICE "$VENV/bin/python" -m synapse.app.homeserver -c "$dir/homeserver.yaml" >"$dir/stdout.log" 2>&1) &
    SERVER_PID=$!
    SERVERS+=("$SERVER_PID")
}


# ---- 4. Workloads: set-up, measurement, and the session's figures ----------
# WORKLOADS (a space-separated subset) to compare only some of them.
read -r -a WORKLOADS <<<"${WORKLOADS:-send latency initial-sync join messages}"
workload_args() {
    case $1 in
    send) echo "$SEND_ARGS" ;;
    latency) echo "$LATENCY_ARGS" ;;
    initial-sync) echo "$INITIAL_SYNC_ARGS" ;;
    join) echo "$JOIN_ARGS" ;;
    messages) echo "$MESSAGES_ARGS" ;;
    esac
}

# Sets one workload up on the server now running and keeps the set-up in
# $dir/<workload>.state for its measurement.
set_up_workload() { # server backend dir port workload
    local server=$1 backend=$2 dir=$3 url="http://127.0.0.1:$4" w=$5
    local cmd="$SETUP_NICE $BENCH --url $url --label $server/$backend --setup-concurrency $SETUP_CONCURRENCY --max-total-secs $SETUP_MAX_SECS --state $dir/$w.state --setup-only $w $(workload_args "$w")"
    echo "$cmd" >>"$COMMANDS"
    local t0=$(date +%s) rc=0
    # shellcheck disable=SC2086
    $cmd >"$dir/$w.setup.out" 2>"$dir/$w.setup.err" || rc=$?
    if [ $rc -ne 0 ]; then
        event "FAILED: setting up $server/$backend $w (exit $rc) after $(($(date +%s) - t0)) s: $(grep -m1 'request failed\|stopped after' "$dir/$w.setup.err" || true)"
    else
        log "$server/$backend: $w set up in $(($(date +%s) - t0)) s"
    fi
}

# What the measured parts of a server's session spent: wall seconds, and
# clock ticks of the server, of PostgreSQL and of the whole machine busy.
new_session() {
    MEASURED_WALL=0 MEASURED_SERVER=0 MEASURED_PG=0 MEASURED_BUSY=0
}

# Measures one workload from its kept set-up. One whose set-up is missing,
# or whose server had to be restarted, is set up and measured in one run.
measure_workload() { # server backend dir port workload
    local server=$1 backend=$2 dir=$3 port=$4 url="http://127.0.0.1:$4" w=$5
    if [ -z "$SERVER_PID" ] || ! kill -0 "$SERVER_PID" 2>/dev/null; then
        event "ERROR: $server/$backend is not running before $w (see $dir); restarting it"
        rm -f "$dir"/*.state
        "start_$server" "$backend" "$dir/restart-$w" "$port"
        wait_up "$url" "$SERVER_PID" "$server/$backend" || return 1
    fi
    local state="" cmd
    if [ -f "$dir/$w.state" ]; then
        state="--state $dir/$w.state"
    fi
    cmd="$BENCH --url $url --label $server/$backend --pid $SERVER_PID --setup-concurrency $SETUP_CONCURRENCY --max-total-secs $WORKLOAD_MAX_SECS --json-out $RESULTS $state $w $(workload_args "$w")"
    echo "$cmd" >>"$COMMANDS"
    log "$server/$backend: $w"
    local t0=$(date +%s) busy0=$(machine_busy_ticks) pg0=$(postgres_ticks) cpu0 rc=0
    cpu0=$(process_ticks "$SERVER_PID")
    # shellcheck disable=SC2086
    $cmd >"$dir/$w.out" 2>"$dir/$w.err" || rc=$?
    MEASURED_WALL=$((MEASURED_WALL + $(date +%s) - t0))
    MEASURED_BUSY=$((MEASURED_BUSY + $(machine_busy_ticks) - busy0))
    MEASURED_PG=$((MEASURED_PG + $(postgres_ticks) - pg0))
    if kill -0 "$SERVER_PID" 2>/dev/null; then
        MEASURED_SERVER=$((MEASURED_SERVER + $(process_ticks "$SERVER_PID") - cpu0))
    fi
    sed -n '/^==/,/^{/p' "$dir/$w.out" | grep -v '^{' | tee -a "$RUN_DIR/compare.log" >&2
    if [ $rc -ne 0 ]; then
        event "FAILED: $server/$backend $w (exit $rc) after $(($(date +%s) - t0)) s: $(grep -m1 'request failed\|stopped after\|--state' "$dir/$w.err" || true)"
    fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        event "ERROR: $server/$backend exited during $w; last log lines in $dir"
    fi
}

# The session's figures: the server's peak resident memory (over its whole
# life, set-up included) and what the measured parts spent.
end_session() { # server backend
    local server=$1 backend=$2
    kill -0 "$SERVER_PID" 2>/dev/null || return 0
    local hwm cpu busy pg
    hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$SERVER_PID/status")
    cpu=$(ticks_to_s "$MEASURED_SERVER")
    busy=$(ticks_to_s "$MEASURED_BUSY")
    pg=$(ticks_to_s "$MEASURED_PG")
    echo "{\"bench\":\"compare\",\"workload\":\"server-session\",\"label\":\"$server/$backend\",\"results\":{\"vmhwm_kib\":$hwm,\"server_cpu_s\":$cpu,\"wall_s\":$MEASURED_WALL,\"machine_busy_cpu_s\":$busy,\"postgres_cpu_s\":$pg}}" >>"$RESULTS"
    log "$server/$backend: VmHWM $((hwm / 1024)) MiB; measured parts: server CPU ${cpu} s, PostgreSQL CPU ${pg} s, machine busy ${busy} CPU-s in ${MEASURED_WALL} s"
}

start_up() { # server backend dir port
    local server=$1 backend=$2 dir=$3 port=$4 t0
    mkdir -p "$dir"
    log "starting $server on $backend, port $port"
    t0=$(date +%s)
    "start_$server" "$backend" "$dir" "$port"
    wait_up "http://127.0.0.1:$port" "$SERVER_PID" "$server/$backend" || return 1
    log "$server/$backend up in $(($(date +%s) - t0)) s (pid $SERVER_PID)"
}

# ---- 5. Synapse set up while Corvid builds, then stopped until measured ----
declare -A SYNAPSE_PID SYNAPSE_PORT
SETUP_NICE=$LOW_PRIORITY
for backend in $BACKENDS; do
    dir="$RUN_DIR/$backend-synapse"
    port=$(free_port)
    SYNAPSE_PORT[$backend]=$port
    if start_up synapse "$backend" "$dir" "$port"; then
        for w in "${WORKLOADS[@]}"; do
            set_up_workload synapse "$backend" "$dir" "$port" "$w"
        done
        kill -STOP "$SERVER_PID"
    fi
    SYNAPSE_PID[$backend]=$SERVER_PID
done
SETUP_NICE=""
if [ -n "$BUILD_PID" ]; then
    log "Synapse set up; waiting for the build"
    finish_build
fi

# ---- 6. Measured sessions, one server at a time -----------------------------
for backend in $BACKENDS; do
    dir="$RUN_DIR/$backend-corvid"
    port=$(free_port)
    # Corvid's caches keep what they read for seconds, not minutes, so each
    # workload is set up right before it is measured.
    if start_up corvid "$backend" "$dir" "$port"; then
        new_session
        for w in "${WORKLOADS[@]}"; do
            set_up_workload corvid "$backend" "$dir" "$port" "$w"
            sleep "$SETUP_SETTLE_SECS"
            measure_workload corvid "$backend" "$dir" "$port" "$w" || break
        done
        end_session corvid "$backend"
    fi
    stop_server "$SERVER_PID"
    rm -rf "$dir/data" "$dir"/restart-*/data

    dir="$RUN_DIR/$backend-synapse"
    SERVER_PID=${SYNAPSE_PID[$backend]}
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        if [ -n "$LOW_PRIORITY" ]; then
            # A thread that ended between the listing and the renice is no
            # reason to stop the run; renice still does the others.
            # shellcheck disable=SC2046
            renice -n 0 -p $(ls "/proc/$SERVER_PID/task") >/dev/null 2>&1 || true
        fi
        kill -CONT "$SERVER_PID"
        # Timers that fell due while it was stopped run before it is measured.
        sleep 3
        new_session
        for w in "${WORKLOADS[@]}"; do
            measure_workload synapse "$backend" "$dir" "${SYNAPSE_PORT[$backend]}" "$w" || break
        done
        end_session synapse "$backend"
    else
        event "ERROR: synapse/$backend did not start or survive its set-up (see $dir)"
    fi
    stop_server "$SERVER_PID"
    rm -rf "$dir/data" "$dir"/restart-*/data
done

TOTAL_SECS=$(($(date +%s) - START_TS))
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
log "all workloads done in ${TOTAL_SECS} s; writing BENCHMARKS.md"
python3 "$BENCH_DIR/report.py" \
    --results "$RESULTS" --commands "$COMMANDS" --events "$EVENTS" \
    --total-secs "$TOTAL_SECS" --build-secs "$BUILD_SECS" \
    --synapse-version "$SYNAPSE_VERSION" --repo "$ROOT" --run-dir "${RUN_DIR#"$ROOT"/}" \
    --setup-concurrency "$SETUP_CONCURRENCY" --load "$LOAD_START" --load-end "$LOAD_END" \
    >"$RUN_DIR/BENCHMARKS.md"
cp "$RUN_DIR/BENCHMARKS.md" "$ROOT/BENCHMARKS.md"
log "wrote $ROOT/BENCHMARKS.md (run dir $RUN_DIR)"
