#!/usr/bin/env bash
# Stop everything scripts/up.sh started: every program (each with its process group), then
# supervisord itself; then check that no process of the stack is left, and end any that is.
#
#   bash scripts/down.sh        (SO101_RUN_DIR as it was for up.sh, if you moved it)
set -euo pipefail
cd "$(dirname "$0")/.."
RUN_DIR="${SO101_RUN_DIR:-$PWD/run}"
PIDFILE="$RUN_DIR/supervisord.pid"

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
    echo "so101: not running (no live supervisord in $PIDFILE)"
    exit 0
fi
# supervisord's children lead their own process groups: remember them to check afterwards.
children="$(pgrep -P "$pid" || true)"
echo "so101: stopping supervisord (pid $pid) and its programs: ${children//$'\n'/ }"
# SIGTERM = `supervisorctl shutdown`: every program is stopped (reverse priority: control
# first, hub last), each given its stopwaitsecs, then supervisord exits.
kill -TERM "$pid"
for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
done
if kill -0 "$pid" 2>/dev/null; then
    echo "so101: supervisord (pid $pid) still running after 150 s; killing it" >&2
    kill -KILL "$pid" 2>/dev/null || true
fi

left=""
for child in $children; do
    if pgrep -g "$child" >/dev/null 2>&1; then
        left+=" $child"
        echo "so101: process group $child outlived supervisord; killing it:" \
            "$(pgrep -g "$child" | tr '\n' ' ')" >&2
        kill -KILL -- "-$child" 2>/dev/null || true
    fi
done
rm -f "$RUN_DIR/stack.env"
if [[ -n "$left" ]]; then
    echo "so101: stopped (had to kill leftovers:$left)"
else
    echo "so101: stopped; no process left behind"
fi
