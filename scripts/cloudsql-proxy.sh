#!/usr/bin/env bash
# Serves Cloud SQL instances on unix sockets through the Cloud SQL Auth Proxy v2, with IAM database authentication:
# libpq reaches an instance at host=$TENANCY_CLOUDSQL_DIR/<connection name> (default /cloudsql, what the registry's
# records resolve to) as the job's own identity ($PGUSER, the IAM database user), with no password anywhere.
#
#   scripts/cloudsql-proxy.sh serve CONNECTION_NAME...  serve these instances (those already served are skipped)
#   scripts/cloudsql-proxy.sh registry ENV              serve the registry the global stack ENV exports, and log in
#                                                       to it (no output yet, a first deploy: says so and exits 0)
#   scripts/cloudsql-proxy.sh stop                      stop every proxy this script started
#
# A proxy serves the instances it is started with, and v2 resolves each of them when it starts: one process per
# call, for the instances not served yet. `--private-ip`: the instances have no public address, so the runner must
# be inside the environment's VPC (README, CI and delivery). The socket directory is the runner user's alone
# (0700): any local process that can open a socket there logs in as the job's identity.
set -euo pipefail

dir="${TENANCY_CLOUDSQL_DIR:-/cloudsql}"
proxy="${CLOUD_SQL_PROXY:-cloud-sql-proxy}"
state="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/cloudsql-proxy"
wait_s="${CLOUD_SQL_PROXY_WAIT:-60}"
mkdir -p "$state"

socket() { printf '%s/%s/.s.PGSQL.5432' "$dir" "$1"; }

stop() {
  shopt -s nullglob
  for f in "$state"/*.pid; do
    kill "$(cat "$f")" 2>/dev/null || true
    rm -f "$f"
  done
}

serve() {
  local new=() inst
  for inst in "$@"; do
    if [[ ! "$inst" =~ ^[a-z][a-z0-9.:-]*:[a-z][a-z0-9-]*:[a-z][a-z0-9-]*$ ]]; then
      echo "cloudsql-proxy: '${inst:0:120}' is not an instance connection name (PROJECT:REGION:INSTANCE)" >&2
      return 2
    fi
    [ -S "$(socket "$inst")" ] || new+=("$inst")
  done
  [ "${#new[@]}" -gt 0 ] || return 0
  install -d -m 0700 "$dir"
  local n log pid waited=0
  n="$(date +%s%N)"
  log="$state/$n.log"
  "$proxy" --unix-socket "$dir" --auto-iam-authn --private-ip "${new[@]}" >"$log" 2>&1 &
  pid=$!
  echo "$pid" >"$state/$n.pid"
  while :; do
    local ready=1
    for inst in "${new[@]}"; do [ -S "$(socket "$inst")" ] || ready=0; done
    [ "$ready" = 1 ] && break
    if ! kill -0 "$pid" 2>/dev/null || [ "$waited" -ge $((wait_s * 5)) ]; then
      echo "cloudsql-proxy: the Auth Proxy did not serve ${new[*]} (its log follows)" >&2
      tail -n 20 "$log" >&2 || true
      kill "$pid" 2>/dev/null || true
      rm -f "$state/$n.pid"
      return 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
  echo "cloudsql-proxy: serving ${new[*]} under $dir (pid $pid)"
}

registry() {
  local env="$1" out conn db
  if ! out="$(pulumi stack output registry --json --stack "$env" 2>/dev/null)" || [ -z "$out" ] || [ "$out" = "null" ]; then
    echo "cloudsql-proxy: the global stack '$env' exports no registry yet (a first deploy): operations wait for it"
    return 0
  fi
  conn="$(jq -r '.connectionName // empty' <<<"$out")"
  db="$(jq -r '.database // "app"' <<<"$out")"
  serve "$conn"
  # A login, not only a socket: the proxy dials the instance's private IP and logs in with the job's IAM user.
  if ! err="$("${TENANCY_PYTHON:-.venv/bin/python}" - "host=$dir/$conn dbname=$db" 2>&1 <<'PY'
import sys

import psycopg

try:
    psycopg.connect(sys.argv[1], connect_timeout=20).close()
except psycopg.Error as exc:
    print((str(exc).strip().splitlines() or [type(exc).__name__])[0])
    sys.exit(1)
PY
)"; then
    echo "::error title=registry out of reach::cannot log in to the registry $conn as '${PGUSER:-}' through the Auth" \
         "Proxy ($err). The deploy job needs a runner inside the environment's VPC (the instances have private IPs" \
         "only) and its identity as an IAM database user of the instance (README, CI and delivery)"
    return 1
  fi
  echo "cloudsql-proxy: logged in to the registry $conn as ${PGUSER:-}"
}

case "${1:-}" in
  serve) shift; serve "$@" ;;
  registry) registry "${2:?usage: scripts/cloudsql-proxy.sh registry ENV}" ;;
  stop) stop ;;
  *) echo "usage: scripts/cloudsql-proxy.sh serve CONNECTION_NAME... | registry ENV | stop" >&2; exit 2 ;;
esac
