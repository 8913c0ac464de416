"""bench.sim's tables and its JSON line: what each measurement is held to, and the verdicts.

The measurements are bench/sim.py's; this module only turns their dicts into the report.
"""

from __future__ import annotations

from bench.common import met, table

TARGET_FPS = {"lift": 30.0, "sort": 15.0, "stack": 15.0}
TARGET_STATE_HZ = 30.0
TARGET_SUCCESS = 0.95


def print_in_process(tasks: list[str], phys: dict, rend: dict) -> None:
    table(
        "in-process: physics (expert episodes from seed 0, goals at 30 Hz) and rendering",
        [
            "task",
            "sim s",
            "wall s",
            "x real time",
            "target",
            "met",
            "cameras",
            "size",
            "sets/s",
            "ms/camera",
        ],
        [
            [
                t,
                phys[t]["sim_s"],
                phys[t]["wall_s"],
                phys[t]["rtf"],
                ">= 1x",
                met(phys[t]["rtf"] >= 1),
                rend[t]["cameras"],
                rend[t]["size"],
                rend[t]["sets_per_s"],
                rend[t]["ms_per_camera"],
            ]
            for t in tasks
        ],
    )


def print_live(live: dict, seconds: float) -> None:
    """Every stream's achieved rate against its target, then frame ages and sim health."""
    # Met: at most one message short over the window (the measurement's resolution).
    tol = 1.0 / seconds
    rows = []
    for t, r in live.items():
        streams = [(f"camera/{c}", v, TARGET_FPS[t], "fps") for c, v in r["camera_fps"].items()]
        streams += [(f"state/{a}", v, TARGET_STATE_HZ, "Hz") for a, v in r["state_hz"].items()]
        rows += [
            [t, name, v, f">= {target:g} {unit}", met(v >= target - tol)]
            for name, v, target, unit in streams
        ]
    table(
        f"sim process beside the policy worker and control ({seconds:g} s measured)",
        ["task", "stream", "achieved /s", "target", "met"],
        rows,
    )
    table(
        "same runs: frame age on arrival (bus clock - t_cap), policy chunks, sim health",
        [
            "task",
            "age p50 ms",
            "age p99 ms",
            "chunks",
            "lost msgs",
            "physics behind",
            "render ms p50",
        ],
        [
            [
                t,
                r["age_p50_ms"],
                r["age_p99_ms"],
                r["chunks"],
                r["lost"],
                r["physics_behind"],
                r["render_ms_p50"],
            ]
            for t, r in live.items()
        ],
    )


def print_expert(expert: dict) -> None:
    table(
        "scripted expert through the bus (seeds 0..N-1)",
        [
            "task",
            "success",
            "rate",
            "95 % Wilson",
            "target",
            "met",
            "time p50 s",
            "stall ms/min p50",
            "failures",
        ],
        [
            [
                t,
                f"{e['successes']}/{e['n']}",
                e["rate"],
                f"[{e['ci_low']:.3f}, {e['ci_high']:.3f}]",
                f">= {TARGET_SUCCESS}",
                met(e["rate"] >= TARGET_SUCCESS),
                e["time_p50_s"],
                e["stall_p50"],
                "; ".join(e["failures"]) or "-",
            ]
            for t, e in expert.items()
        ],
    )


def headline(
    all_tasks: tuple[str, ...], tasks: list[str], phys: dict, rend: dict, live: dict, expert: dict
) -> dict:
    """The JSON line's figures (each task's measurements: task -> dict)."""
    result: dict = {}
    for t in all_tasks:  # the headline keys are always there (None: not run, or failed)
        lv, ex = live.get(t), expert.get(t)
        result[f"{t}_camera_fps"] = min(lv["camera_fps"].values(), default=0.0) if lv else None
        result[f"{t}_state_hz"] = min(lv["state_hz"].values(), default=0.0) if lv else None
        result[f"expert_success_{t}"] = ex["rate"] if ex else None
    result["physics_rtf_min"] = min(p["rtf"] for p in phys.values())
    for t in tasks:
        result |= {
            f"{t}_physics_rtf": phys[t]["rtf"],
            f"{t}_render_sets_per_s": rend[t]["sets_per_s"],
            f"{t}_render_ms_per_camera": rend[t]["ms_per_camera"],
        }
    for t, r in live.items():
        result |= {
            f"{t}_frame_age_p50_ms": r["age_p50_ms"],
            f"{t}_frame_age_p99_ms": r["age_p99_ms"],
        }
    for t, e in expert.items():
        result |= {
            f"expert_{t}_n": e["n"],
            f"expert_{t}_ci_low": e["ci_low"],
            f"expert_{t}_ci_high": e["ci_high"],
        }
    return result
