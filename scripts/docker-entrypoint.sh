#!/usr/bin/env bash
# The Docker image's entry point; it runs the same way outside Docker.
#
#   docker-entrypoint.sh [supervisord flags]   supervisord in the foreground (PID 1 in Docker)
#   docker-entrypoint.sh --dry-run             print the settings, the supervisord command and
#                                              every program's command line; start nothing
#   docker-entrypoint.sh CMD [ARGS...]         run CMD with the same environment
#                                              (docker run IMAGE bash, ... python -m bus.status)
#
# Settings come from the environment (TASK, DEVICE, SO101_PROFILE, ...: see supervisord.conf);
# scripts/stack_env.sh fills in the defaults and refuses bad values with one line and status 2.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack_env.sh"
cd "$SO101_HOME"

PYTHON="$SO101_HOME/.venv/bin/python"
SUPERVISORD=("$SO101_HOME/.venv/bin/supervisord" -n -c "$SO101_HOME/supervisord.conf")

if [[ "${1:-}" == --dry-run ]]; then
    echo "so101: TASK=$TASK DEVICE=$DEVICE SO101_PROFILE=$SO101_PROFILE" \
        "CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES SO101_POLICY=$SO101_POLICY" \
        "SO101_RECORD=$SO101_RECORD"
    echo "so101: logs in $SO101_LOG_DIR, socket and pidfile in $SO101_RUN_DIR," \
        "bus from $SO101_BUS_CONFIG"
    echo "so101: would run: ${SUPERVISORD[*]} ${*:2}"
    # supervisord's own parser reads the conf with this environment: what it would start.
    exec "$PYTHON" - "$SO101_HOME/supervisord.conf" <<'EOF'
import sys

from supervisor.options import ServerOptions

options = ServerOptions()
options.realize(args=["-c", sys.argv[1]])
for warning in options.parse_warnings:
    print(f"so101: supervisord warning: {warning}")
for group in sorted(options.process_group_configs, key=lambda g: g.priority):
    for proc in group.process_configs:
        start = "autostart" if proc.autostart else "manual start"
        print(f"so101: program {proc.name} (priority {proc.priority}, {start}): "
              f"{' '.join(proc.command.split())}")
EOF
fi

if [[ $# -gt 0 && "$1" != -* ]]; then
    exec "$@"
fi
echo "so101: starting supervisord: TASK=$TASK DEVICE=$DEVICE SO101_PROFILE=$SO101_PROFILE" \
    "SO101_POLICY=$SO101_POLICY (logs in $SO101_LOG_DIR)"
exec "${SUPERVISORD[@]}" "$@"
