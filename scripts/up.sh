#!/usr/bin/env bash
# Command one: install what is needed, then bring the stack up under supervisord (daemonized):
# the fake environment (a replay of datasets/$TASK) for TASK=lift unless told otherwise, e.g.
#
#   TASK=sort bash scripts/up.sh              another task
#   SO101_PROFILE=robot bash scripts/up.sh    the real robot (configs/robot.yaml)
#   SO101_PROFILE=sim bash scripts/up.sh      the MuJoCo simulator (SO101_POLICY=expert: the
#                                             scripted expert as the policy)
#   SO101_POLICY=stand_in bash scripts/up.sh  no model (before a checkpoint exists)
#   SO101_POLICY=remote bash scripts/up.sh    the policy runs on another host (README)
#
# Waits until every program is RUNNING, the policy serves and (fake, sim) actions reach the
# environment (an episode ends), then says how to watch it. Every setting: the top of supervisord.conf.
# Stop everything: bash scripts/down.sh
source "$(dirname "$0")/env.sh"
source scripts/stack_env.sh
if [[ "$SO101_PROFILE" == sim ]]; then
    bash scripts/install_render.sh  # the EGL libraries MuJoCo renders with (once, if missing)
fi

CTL=(.venv/bin/supervisorctl -c supervisord.conf)
if [[ "$SO101_RUN_DIR" != "$SO101_HOME/run" ]]; then
    CTL+=(-s "unix://$SO101_RUN_DIR/supervisor.sock")
fi
SETTINGS="TASK=$TASK SO101_PROFILE=$SO101_PROFILE SO101_POLICY=$SO101_POLICY DEVICE=$DEVICE"
STAMP="$SO101_RUN_DIR/stack.env"
# The environment's log, and the line it writes when an episode ended with actions in it.
case "$SO101_PROFILE" in
    fake) ENV_LOG="$SO101_LOG_DIR/replay.log" ENV_LINE="open-loop error vs recorded actions" ;;
    sim) ENV_LOG="$SO101_LOG_DIR/sim.log" ENV_LINE="(SUCCESS|FAILURE) after" ;;
    *) ENV_LOG="" ENV_LINE="" ;;
esac
deadline=$((SECONDS + ${SO101_UP_TIMEOUT:-300}))

if "${CTL[@]}" pid >/dev/null 2>&1; then
    running="$(cat "$STAMP" 2>/dev/null || echo "unknown settings")"
    if [[ "$running" != "$SETTINGS" ]]; then
        echo "so101: a stack is already running with $running;" \
            "stop it first (bash scripts/down.sh), then start again" >&2
        exit 1
    fi
    echo "so101: already running ($running)"
    env_from=1
else
    env_from=$(($(stat -c %s "$ENV_LOG" 2>/dev/null || echo 0) + 1))
    echo "so101: starting supervisord ($SETTINGS; logs in $SO101_LOG_DIR)"
    echo "$SETTINGS" >"$STAMP"
    .venv/bin/supervisord -c supervisord.conf
fi

# Every program that starts with the stack RUNNING, or the first one that failed, with why.
while true; do
    status="$("${CTL[@]}" status 2>&1 || true)"
    failed="$(awk '$2 == "FATAL" || $2 == "EXITED" || $2 == "UNKNOWN" {print $1}' <<<"$status")"
    waiting="$(awk '$2 == "STARTING" || $2 == "BACKOFF" {print $1}' <<<"$status")"
    if [[ -n "$failed" ]]; then
        echo "$status"
        for name in $failed; do
            echo "so101: $name did not start; the end of $SO101_LOG_DIR/$name.log:" >&2
            tail -n 15 "$SO101_LOG_DIR/$name.log" >&2 || true
        done
        echo "so101: fix it, then: ${CTL[*]} start ${failed//$'\n'/ }  (or bash scripts/down.sh)" >&2
        exit 1
    fi
    if [[ -z "$waiting" && "$status" == *RUNNING* ]]; then
        break
    fi
    if ((SECONDS > deadline)); then
        echo "$status"
        echo "so101: still starting after ${SO101_UP_TIMEOUT:-300} s: ${waiting//$'\n'/ }" >&2
        exit 1
    fi
    sleep 2
done
echo "$status"

# RUNNING means the process lives; the policy serves once its model is loaded and warmed up.
if [[ "$SO101_POLICY_AUTOSTART" == true ]]; then
    echo "so101: waiting for policy/$TASK to serve (model load and warm-up)..."
else
    echo "so101: SO101_POLICY=remote: waiting for policy/$TASK to serve from the other host..."
fi
until .venv/bin/python -m bus.status --config_path="$SO101_BUS_CONFIG" \
    --require="[policy/$TASK]" >/dev/null 2>&1; do
    if ((SECONDS > deadline)); then
        echo "so101: policy/$TASK does not serve yet; see: ${CTL[*]} tail policy" >&2
        exit 1
    fi
    sleep 2
done

# Actions reach the environment: the replay logs its open-loop error after each episode, the
# simulator each episode's outcome.
if [[ -n "$ENV_LOG" ]]; then
    echo "so101: waiting for actions to reach the $SO101_PROFILE environment (an episode)..."
    line=""
    until line="$(tail -c +"$env_from" "$ENV_LOG" 2>/dev/null \
        | grep -E "$ENV_LINE" | tail -n 1)" && [[ -n "$line" ]]; do
        if ((SECONDS > deadline)); then
            echo "so101: no episode ended yet; see: ${CTL[*]} tail control" >&2
            break
        fi
        sleep 2
    done
    [[ -z "$line" ]] || echo "so101: actions flowing: ${line#* INFO }"
fi

port="$(grep -o -- '--port=[0-9]*' <<<"$SO101_DASHBOARD_ARGS" | cut -d= -f2 || true)"
echo "so101: up: $SETTINGS"
echo "  status        ${CTL[*]} status"
echo "  one process   ${CTL[*]} tail -f policy   (or tail -f $SO101_LOG_DIR/policy.log)"
echo "  all logs      tail -f $SO101_LOG_DIR/*.log"
if [[ -n "$ENV_LOG" ]]; then
    echo "  episodes      grep -E '$ENV_LINE' $ENV_LOG   (a line an episode)"
fi
echo "  live workers  .venv/bin/python -m bus.status --config_path=$SO101_BUS_CONFIG"
echo "  dashboard     http://localhost:${port:-9000}"
if [[ "$SO101_RUN_DIR" != "$SO101_HOME/run" ]]; then
    echo "  stop          SO101_RUN_DIR=$SO101_RUN_DIR bash scripts/down.sh"
else
    echo "  stop          bash scripts/down.sh"
fi
