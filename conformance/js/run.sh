#!/usr/bin/env bash
# Real-client conformance scenario for Corvid, driven by matrix-js-sdk.
# Usage: conformance/js/run.sh <path-to-corvid-binary> [dm|messenger|media|e2ee]
#   dm (default): scenario.mjs, a DM with many messages and a server restart
#   messenger:    messenger.mjs, typing, delivered/read receipts, edits, reactions,
#                 threads, search, unread counts and ephemeral latency
#   media:        media.mjs, an m.image uploaded, downloaded and thumbnailed
#   e2ee:         e2ee.mjs, an encrypted DM with Rust crypto, cross-signing, key backup
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 <path-to-corvid-binary> [dm|messenger|media|e2ee]" >&2
    exit 2
fi
bin="$1"
case "${2:-dm}" in
    dm) script="scenario.mjs" ;;
    messenger) script="messenger.mjs" ;;
    e2ee) script="e2ee.mjs" ;;
    media) script="media.mjs" ;;
    *)
        echo "run.sh: unknown scenario '$2' (expected dm, messenger, media or e2ee)" >&2
        exit 2
        ;;
esac
if [ ! -x "$bin" ]; then
    echo "run.sh: corvid binary '$bin' not found or not executable" >&2
    exit 2
fi
bin="$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")"

# --- dependencies (matrix-js-sdk needs Node >= 22; Node 22 itself comes from npm) ---
node22="$("$here/install.sh")"

# --- temp dir, free port, config ---
workdir="$(mktemp -d "${TMPDIR:-/tmp}/corvid-js-conformance.XXXXXX")"
cleanup() {
    # The scenario starts/stops the server itself and records its pid here;
    # make sure it is gone even if the scenario died abnormally.
    if [ -f "$workdir/server.pid" ]; then
        pid="$(cat "$workdir/server.pid" 2>/dev/null || true)"
        if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 1 100); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [ "${KEEP_WORKDIR:-0}" = 1 ]; then
        echo "run.sh: kept work dir $workdir" >&2
    else
        rm -rf "$workdir"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port="$("$node22" -e '
const s = require("net").createServer();
s.listen(0, "127.0.0.1", () => { process.stdout.write(String(s.address().port)); s.close(); });
')"

cat > "$workdir/corvid.toml" <<TOML
server_name = "localhost"
database_url = "sqlite://$workdir/corvid.db"
registration = "open"

[listen]
client = "127.0.0.1:$port"

[rate_limit]
enabled = false
TOML

# The scenario starts the server (cwd = $workdir), restarts it midway and stops it at the end.
set +e
"$node22" "$here/$script" "$bin" "$workdir" "$workdir/corvid.toml" "$port"
rc=$?
set -e
exit $rc
