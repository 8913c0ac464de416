# shellcheck shell=bash
# Sourced (never run): fills in every variable supervisord.conf reads, with its default, checks
# the values and exports them. scripts/up.sh and scripts/docker-entrypoint.sh source it; by hand:
#
#   source scripts/stack_env.sh && .venv/bin/supervisord -c supervisord.conf
#
# A bad value ends the sourcing with one line on stderr and status 2. The variables are listed
# at the top of supervisord.conf.

_so101_fail() {
    echo "so101: $*" >&2
    return 2
}

_so101_stack_env() {
    SO101_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
    export SO101_HOME

    export TASK="${TASK:-lift}"
    export SO101_PROFILE="${SO101_PROFILE:-fake}"
    export DEVICE="${DEVICE:-auto}"
    # Unset means the first GPU; set (even empty, "no GPU") is kept as it is.
    export CUDA_VISIBLE_DEVICES="${CUDA_VISIBLE_DEVICES-0}"
    export CHECKPOINT="${CHECKPOINT:-}"
    export SO101_POLICY="${SO101_POLICY:-policy}"
    export SO101_RECORD="${SO101_RECORD:-false}"
    export SO101_POLICY_WORKERS="${SO101_POLICY_WORKERS:-1}"
    export SO101_BUS_CONFIG="${SO101_BUS_CONFIG:-configs/bus.yaml}"
    export SO101_ROBOT_CONFIG="${SO101_ROBOT_CONFIG:-configs/robot.yaml}"
    export SO101_LOG_DIR="${SO101_LOG_DIR:-$SO101_HOME/logs}"
    export SO101_RUN_DIR="${SO101_RUN_DIR:-$SO101_HOME/run}"
    export SO101_POLICY_ARGS="${SO101_POLICY_ARGS:-}"
    export SO101_REPLAY_ARGS="${SO101_REPLAY_ARGS:-}"
    export SO101_SIM_ARGS="${SO101_SIM_ARGS:-}"
    export SO101_CONTROL_ARGS="${SO101_CONTROL_ARGS:-}"
    export SO101_RECORDER_ARGS="${SO101_RECORDER_ARGS:-}"
    export SO101_DASHBOARD_ARGS="${SO101_DASHBOARD_ARGS:-}"

    case "$TASK" in
        lift | sort | stack) ;;
        *) _so101_fail "TASK=$TASK is not a task: choose lift, sort or stack" || return ;;
    esac
    if [[ ! -f "$SO101_HOME/configs/supervisord/$SO101_PROFILE.conf" ]]; then
        _so101_fail "SO101_PROFILE=$SO101_PROFILE: choose fake (replay of datasets/$TASK)," \
            "sim (MuJoCo simulator) or robot (configs/robot.yaml)" || return
    fi
    case "$DEVICE" in
        auto | cpu | cuda | cuda:[0-9]*) ;;
        *) _so101_fail "DEVICE=$DEVICE: choose auto (GPU when visible, else CPU), cpu or cuda" \
            || return ;;
    esac
    # remote: the policy serves from another host (README: CurveZMQ); the program stays here,
    # not started, for `supervisorctl start policy` as a local fallback.
    SO101_POLICY_AUTOSTART=true
    case "$SO101_POLICY" in
        policy | model) SO101_POLICY=policy ;;
        stand_in | stand_in_policy | stand-in) SO101_POLICY=stand_in_policy ;;
        remote) SO101_POLICY=policy SO101_POLICY_AUTOSTART=false ;;
        expert | expert_policy) SO101_POLICY=expert_policy ;;
        *) _so101_fail "SO101_POLICY=$SO101_POLICY: choose policy (the checkpoint), stand_in" \
            "(no model), expert (the simulator's scripted expert) or remote (served from" \
            "another host)" || return ;;
    esac
    if [[ "$SO101_POLICY" == expert_policy && "$SO101_PROFILE" != sim ]]; then
        _so101_fail "SO101_POLICY=expert needs SO101_PROFILE=sim (it plans from the" \
            "simulator's ground truth)" || return
    fi
    if [[ ! "$SO101_POLICY_WORKERS" =~ ^[1-9][0-9]*$ ]]; then
        _so101_fail "SO101_POLICY_WORKERS=$SO101_POLICY_WORKERS: a whole number >= 1 (policy" \
            "processes serving policy/$TASK)" || return
    fi
    case "$SO101_RECORD" in
        true | false) ;;
        *) _so101_fail "SO101_RECORD=$SO101_RECORD: choose true or false" || return ;;
    esac

    # Relative paths are the repository's (supervisord runs every program from there).
    local bus_config="$SO101_BUS_CONFIG"
    # The simulator's own checkpoint (trained on its frames) when there is one for the task.
    local checkpoint="${CHECKPOINT:-checkpoints/${TASK}_real/checkpoint-best}"
    if [[ -z "$CHECKPOINT" && "$SO101_PROFILE" == sim \
        && -f "$SO101_HOME/checkpoints/${TASK}_sim/checkpoint-best/config.json" ]]; then
        checkpoint="checkpoints/${TASK}_sim/checkpoint-best"
    fi
    [[ "$bus_config" = /* ]] || bus_config="$SO101_HOME/$bus_config"
    [[ "$checkpoint" = /* ]] || checkpoint="$SO101_HOME/$checkpoint"
    [[ -f "$bus_config" ]] || _so101_fail "SO101_BUS_CONFIG: $bus_config not found" || return
    if [[ "$SO101_POLICY" == policy && "$SO101_POLICY_AUTOSTART" == true \
        && "$SO101_POLICY_ARGS" != *--checkpoint* && ! -f "$checkpoint/config.json" ]]; then
        _so101_fail "checkpoint not found: $checkpoint (no config.json). Train one" \
            "(uv run python scripts/train_policy.py --task $TASK), point CHECKPOINT at a lerobot" \
            "pretrained_model folder, or run without a model: SO101_POLICY=stand_in" || return
    fi
    if [[ "$SO101_PROFILE" == fake && ! -f "$SO101_HOME/datasets/$TASK/meta/info.json" \
        && "$SO101_REPLAY_ARGS" != *--dataset* ]]; then
        _so101_fail "dataset not found: $SO101_HOME/datasets/$TASK (no meta/info.json)" || return
    fi

    if [[ "$SO101_POLICY" == policy ]]; then
        SO101_POLICY_FLAGS="--device=$DEVICE $SO101_POLICY_ARGS"
        # %q: supervisord splits the command like a shell, so a path with spaces survives.
        if [[ "$SO101_POLICY_ARGS" != *--checkpoint* ]]; then
            SO101_POLICY_FLAGS="--checkpoint=$(printf %q "$checkpoint") $SO101_POLICY_FLAGS"
        fi
    else
        SO101_POLICY_FLAGS="$SO101_POLICY_ARGS"
    fi
    # The simulator renders each camera at the size the served checkpoint was trained on.
    SO101_SIM_FLAGS="$SO101_SIM_ARGS"
    if [[ "$SO101_POLICY" == policy && "$SO101_POLICY_ARGS" != *--checkpoint* \
        && -f "$checkpoint/config.json" ]]; then
        SO101_SIM_FLAGS="--checkpoint=$(printf %q "$checkpoint") $SO101_SIM_FLAGS"
    fi
    # Workers 2..N are [program:policy-more] in workers-n.conf; control uses them all.
    SO101_POLICY_POOL=1
    SO101_POLICY_MORE=$((SO101_POLICY_WORKERS - 1))
    ((SO101_POLICY_MORE == 0)) || SO101_POLICY_POOL=n
    SO101_CONTROL_FLAGS="--policy_workers=$SO101_POLICY_WORKERS $SO101_CONTROL_ARGS"
    export SO101_POLICY SO101_POLICY_FLAGS SO101_POLICY_AUTOSTART SO101_SIM_FLAGS
    export SO101_POLICY_POOL SO101_POLICY_MORE SO101_CONTROL_FLAGS
    mkdir -p "$SO101_LOG_DIR" "$SO101_RUN_DIR"
}

_so101_stack_env
