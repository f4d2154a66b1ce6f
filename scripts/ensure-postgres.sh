#!/usr/bin/env bash
# Makes sure the PostgreSQL server binaries (initdb, pg_ctl) are present for the test suite.
# Tests start their own throwaway server from these binaries; nothing is left running.
set -euo pipefail
if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    SUDO="sudo -n"
  else
    echo "PostgreSQL server binaries are missing: install the Debian package 'postgresql' (as root: apt-get update && apt-get install -y postgresql)" >&2
    exit 1
  fi
fi
echo "installing the Debian postgresql package (server binaries for the test suite)..."
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
# The package may start a cluster of its own; the tests never use it.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters --no-header 2>/dev/null | while read -r ver name _; do
    $SUDO pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
  done
fi
ls /usr/lib/postgresql/*/bin/initdb >/dev/null
