#!/bin/bash
# First-boot runner: asks the service for this node's plan, runs each step not yet ok, in order,
# waiting on the barriers the service computes, and reports every step (started, ok, failed with
# the tail of its output). A failed step stops the plan; running this again resumes there.
set -uo pipefail

HOOKS=${HOOKS:-$(cd "$(dirname "$0")" && pwd)}
ETC=${PROVISIONER_ETC:-/etc/provisioner}
STATE=${PROVISIONER_STATE:-/var/lib/provisioner}
BARRIER_POLL=${BARRIER_POLL:-10}
BARRIER_TIMEOUT=${BARRIER_TIMEOUT:-14400}   # a host that never comes must not hold the rest forever
# A rehearsal's plan limit: stop, ok, once this step of the plan is ok (the roles lab sets it, with
# short barrier times, in a drop-in for the unit). Unset on a real node: the whole plan runs.
UNTIL=${PROVISIONER_UNTIL:-}
# shellcheck disable=SC1091
. "$ETC/node.env"     # PROVISIONER_URL, PROVISIONER_MAC, PROVISIONER_TOKEN (written by %post)
# PROVISIONER_TOKEN is this node's first-boot credential, handed to %post in the answer to its
# `installed` report; it ends when the node is deployed or rebuilt.
TLS=()
if [ -r "$ETC/ca.pem" ]; then
    TLS=(--cacert "$ETC/ca.pem")    # the service's CA, pinned: secrets travel here
fi

api() {
    curl -fsS -m 60 --retry 5 --retry-delay 2 --retry-connrefused "${TLS[@]}" \
        -H "Authorization: Bearer $PROVISIONER_TOKEN" "$@"
}

report() {    # report STEP STATUS OUTPUT-FILE
    python3 -c 'import json, sys
out = open(sys.argv[3], errors="replace").read()[-8000:] if sys.argv[3] else ""
print(json.dumps({"type": "step", "detail": {"step": sys.argv[1], "status": sys.argv[2], "output": out}}))' \
        "$1" "$2" "${3:-}" > "$STATE/report.json"
    api -X POST -H 'Content-Type: application/json' --data-binary "@$STATE/report.json" \
        "$PROVISIONER_URL/api/v1/nodes/$PROVISIONER_MAC/events" >/dev/null
}

# wait_barrier NAME: until the service says it is open; after BARRIER_TIMEOUT seconds, fail,
# naming the hosts it still waits for (left in $STATE/barrier.why)
wait_barrier() {
    local name=$1 said=0 start=$SECONDS
    while true; do
        if api "$PROVISIONER_URL/api/v1/barriers/$name" > "$STATE/barrier.json" \
                && python3 - "$STATE/barrier.json" "$STATE/barrier.why" <<'PY'
import json, sys
b = json.load(open(sys.argv[1]))
open(sys.argv[2], "w").write("barrier %s (%s) still waits for: %s\n"
                             % (b["name"], b["why"], ", ".join(b["waiting_for"]) or "nobody holds its roles"))
sys.exit(0 if b["ready"] else 1)
PY
        then
            return 0
        fi
        if ((SECONDS - start >= BARRIER_TIMEOUT)); then
            echo "timed out after ${BARRIER_TIMEOUT}s: $(cat "$STATE/barrier.why" 2>/dev/null || echo "barrier $name unreadable")"
            return 1
        fi
        if [ "$said" = 0 ]; then
            echo "waiting for barrier $name"
            said=1
        fi
        sleep "$BARRIER_POLL"
    done
}

mkdir -p "$STATE"
umask 077
api "$PROVISIONER_URL/api/v1/nodes/$PROVISIONER_MAC/config" > "$ETC/config.env.new" || {
    echo "cannot fetch this node's configuration" >&2
    exit 1
}
mv "$ETC/config.env.new" "$ETC/config.env"
plan=$(api "$PROVISIONER_URL/api/v1/nodes/$PROVISIONER_MAC/plan?format=text") || {
    echo "cannot fetch this node's plan" >&2
    exit 1
}
if [ -n "$UNTIL" ]; then
    if ! printf '%s\n' "$plan" | awk -F'|' -v u="$UNTIL" '$1 == u { found = 1 } END { exit !found }'; then
        echo "PROVISIONER_UNTIL: no step $UNTIL in this node's plan" >&2
        exit 1
    fi
    plan=$(printf '%s\n' "$plan" | awk -F'|' -v u="$UNTIL" '{ print } $1 == u { exit }')
fi

while IFS='|' read -r step wait state; do
    [ -n "$step" ] || continue
    case $state in ok | skipped) continue ;; esac
    if [ -n "$wait" ] && ! wait_barrier "$wait" > "$STATE/barrier.log" 2>&1; then
        report "$step" failed "$STATE/barrier.log"
        echo "step $step: $(tail -n 1 "$STATE/barrier.log")" >&2
        exit 1
    fi
    echo "step $step"
    report "$step" started ""
    log="$STATE/$(basename "$step").log"
    if bash "$HOOKS/$step.sh" > "$log" 2>&1; then
        # a step that cannot run on this node says so on its first line (lib/common.sh's skip)
        if head -n 1 "$log" | grep -q '^skipped: '; then
            report "$step" skipped "$log"
        else
            report "$step" ok "$log"
        fi
    else
        report "$step" failed "$log"
        echo "step $step failed; fix it and run $0 again to resume here" >&2
        tail -n 20 "$log" >&2
        exit 1
    fi
done <<< "$plan"

if [ -n "$UNTIL" ]; then
    echo "every step up to $UNTIL ok (PROVISIONER_UNTIL: the rest of the plan is not run)"
    exit 0
fi
touch "$STATE/deployed"
echo "every step ok"
