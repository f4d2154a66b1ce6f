#!/usr/bin/env bash
# The deploy job's data operations (README, CI and delivery). `tenancy moves --plan MOVES_FILE` decides, from the
# deployment, the registry and the reviewed decisions in MOVES_FILE; this runs what it decided, in its order
# (unfinished operations resumed first, at most one command per tenant). Per step: the Cloud SQL instances it
# reaches are served by the Auth Proxy, the cluster of a graph it dumps gives the dump Job its credentials, then
# the command runs with no standard input (nothing can prompt).
#
# A step the plan refused (a downgrade MOVES_FILE makes no decision for) fails the job once the others have run,
# with the entry to add; an operation the job cannot resume (started elsewhere with a local directory or a DSN)
# is reported as a warning with its command.
#
#   scripts/tier-moves.sh MOVES_FILE                  run them (needs TENANCY_ENV)
#   scripts/tier-moves.sh --review BASE_REF MOVES_FILE  a pull request's review, offline: the tier moves the change
#                                                     asks for (against BASE_REF's tenants.yaml), the decision and
#                                                     the command for each, as a table in the job summary; fails
#                                                     when a downgrade has no decision
set -euo pipefail

tenancy="${TENANCY:-.venv/bin/tenancy}"
plan="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/tier-moves.json"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

if [ "${1:-}" = "--review" ]; then
  base_ref="${2:?usage: scripts/tier-moves.sh --review BASE_REF MOVES_FILE}"
  moves="${3:?usage: scripts/tier-moves.sh --review BASE_REF MOVES_FILE}"
  base="${RUNNER_TEMP:-${TMPDIR:-/tmp}}/base-tenants.yaml"
  if ! git show "$base_ref:tenants.yaml" >"$base" 2>/dev/null; then
    echo "no tenants.yaml at $base_ref: nothing deployed to move"
    exit 0
  fi
  rc=0
  "$tenancy" moves --env "${TENANCY_ENV:?TENANCY_ENV is not set}" --plan "$moves" --base-catalog "$base" >"$plan" \
    </dev/null || rc=$?
  [ "$rc" -le 1 ] || exit "$rc"
  {
    echo "### Tier moves this change asks for (${moves})"
    if [ "$(jq '.steps | length' "$plan")" = 0 ]; then
      echo "None."
    else
      echo "| tenant | move | decided by | the deploy runs |"
      echo "|---|---|---|---|"
      jq -r '.steps[] | "| `\(.tenant)` | \(.transition // "") | \(.entry // "no entry") | " +
        (if .status == "run" then "`" + .command + "`" else "**\(.status)**: \(.message)" end) + " |"' "$plan"
    fi
  } | tee -a "${GITHUB_STEP_SUMMARY:-/dev/null}"
  jq -r '.steps[] | select(.status == "failed") | "::error title=\(.tenant): no decision in moves.yaml::\(.message)"' "$plan"
  exit "$rc"
fi

moves="${1:?usage: scripts/tier-moves.sh MOVES_FILE}"

rc=0
"$tenancy" moves --env "${TENANCY_ENV:?TENANCY_ENV is not set}" --plan "$moves" >"$plan" </dev/null || rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -ne 1 ]; then
  echo "::error title=tier moves::\`tenancy moves --plan $moves\` failed (exit $rc, above); nothing was run"
  exit "$rc"
fi
failed=$rc
echo "tier moves: $(jq '.steps | length' "$plan") item(s) from $moves"

while IFS= read -r step; do
  tenant="$(jq -r .tenant <<<"$step")"
  message="$(jq -r .message <<<"$step")"
  case "$(jq -r .status <<<"$step")" in
    failed) echo "::error title=$tenant: refused before any change::$message"; continue ;;
    left) echo "::warning title=$tenant: left to its operator::$message"; continue ;;
  esac
  echo "== $tenant: $message"
  mapfile -t instances < <(jq -r '.instances[]' <<<"$step")
  if [ "${#instances[@]}" -gt 0 ] && ! "$here/cloudsql-proxy.sh" serve "${instances[@]}"; then
    echo "::error title=$tenant: databases out of reach::the Auth Proxy could not serve ${instances[*]}; nothing was run"
    failed=1
    continue
  fi
  if [ "$(jq -r '.cluster != null' <<<"$step")" = true ]; then
    kubeconfig="$(jq -r .cluster.kubeconfig <<<"$step")"
    mkdir -p "$(dirname "$kubeconfig")"
    # --internal-ip: the control plane is allow-listed to the environment's network, where this runner is.
    if ! KUBECONFIG="$kubeconfig" gcloud container clusters get-credentials "$(jq -r .cluster.name <<<"$step")" \
        --location "$(jq -r .cluster.location <<<"$step")" --project "$(jq -r .cluster.project <<<"$step")" \
        --internal-ip </dev/null; then
      echo "::error title=$tenant: no cluster credentials::the graph's dump Job needs them; nothing was run"
      failed=1
      continue
    fi
  fi
  mapfile -t argv < <(jq -r '.argv[]' <<<"$step")
  echo "\$ $(jq -r .command <<<"$step")"
  code=0
  "$tenancy" "${argv[@]}" </dev/null || code=$?
  if [ "$code" -ne 0 ]; then
    echo "::error title=$tenant: exit $code::$(jq -r .command <<<"$step") failed (above); what it did is journalled:" \
         "the next deploy resumes it, or run it again"
    failed=1
  fi
done < <(jq -c '.steps[]' "$plan")

exit "$failed"
