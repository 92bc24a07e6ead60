#!/usr/bin/env bash
# Installs the pinned Synapse (PyPI `matrix-synapse`) into a venv beside this
# script and prints the venv's python. Idempotent: a no-op (well under a
# second) when that version is already installed.
#
# Usage: conformance/synapse/install.sh [VENV_DIR]
# Needs: python3 with the venv module, and PyPI for the first install.
set -euo pipefail

SYNAPSE_VERSION=1.163.2

HERE=$(cd "$(dirname "$0")" && pwd)
VENV=${1:-$HERE/.venv}
PY="$VENV/bin/python"

installed() {
    [ -x "$PY" ] && "$PY" - "$SYNAPSE_VERSION" <<'PY' 2>/dev/null
import importlib.metadata as m, sys
sys.exit(0 if m.version("matrix-synapse") == sys.argv[1] else 1)
PY
}

if ! installed; then
    echo "installing matrix-synapse $SYNAPSE_VERSION into $VENV" >&2
    command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }
    # Another test binary may be installing at the same time: one at a time.
    mkdir -p "$VENV"
    exec 9>"$VENV/.install.lock"
    flock 9
    if ! installed; then
        [ -x "$PY" ] || python3 -m venv "$VENV"
        "$PY" -m pip install -q --disable-pip-version-check "matrix-synapse==$SYNAPSE_VERSION" >&2
        installed || { echo "matrix-synapse $SYNAPSE_VERSION did not install" >&2; exit 1; }
    fi
fi
echo "$PY"
