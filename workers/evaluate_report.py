"""The evaluation's report: success rates with their Wilson intervals, per-episode rows,
the table, and the rows an earlier run of the same evaluation left (`--resume`)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from bus.clock import describe_step


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a success rate (sound at 0 and n successes too)."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def counted(episodes: dict[int, dict]) -> list[dict]:
    """The episodes that finished (the simulator's verdict and control's stop marker both in)."""
    return [
        {k: v for k, v in episodes[e].items() if k != "counted"}
        for e in sorted(episodes)
        if episodes[e].get("counted")
    ]


MACHINE = ("others", "steal")  # in cpu_cores: not the job's processes (workers/launch.py)


def cpu_text(cores: dict[str, float]) -> str:
    ours = sum(c for p, c in cores.items() if p not in MACHINE)
    others, steal = cores.get("others", 0.0), cores.get("steal", 0.0)
    return f"cpu {ours:.1f} cores (others {others:.1f}, steal {steal:.1f})"


def cpu_order(rows: list[dict[str, float]]) -> list[str]:
    """The job's processes by name, then the rest of the machine."""
    names = {p for r in rows for p in r}
    return sorted(names - set(MACHINE)) + [p for p in MACHINE if p in names]


def print_progress(name: str, row: dict, episodes: dict, total: int) -> None:
    finished = [r for r in episodes.values() if r.get("counted")]
    wins = sum(r["success"] for r in finished)
    verdict = "SUCCESS" if row["success"] else "FAILURE"
    print(
        f"{name:>18} episode {row['episode'] + 1}/{total} seed {row['seed']}: "
        f"{verdict} at {row['time_s']:.1f} s ({row['reason']}); "
        f"holds {row['holds']}, stall {row['stall_s']:.1f} s, latency p50 "
        f"{row['latency_p50_ms']} ms, {cpu_text(row.get('cpu_cores', {}))}; "
        f"{clock_text(row)}so far {wins}/{len(finished)}",
        flush=True,
    )


def clock_text(row: dict) -> str:
    step = row.get("clock_step_s") or 0.0
    if not step:
        return ""
    return f"{describe_step(step, digits=1)}; "


def summarize(rows: list[dict]) -> dict:
    n = len(rows)
    wins = [r for r in rows if r.get("success")]
    low, high = wilson(len(wins), n)

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return round(float(np.mean(values)), 3) if values else None

    # Reports written before CPU was measured have no cpu_cores in their rows.
    cpu = [r["cpu_cores"] for r in rows if r.get("cpu_cores")]

    return {
        "success": round(len(wins) / n, 4) if n else None,
        "successes": len(wins),
        "n": n,
        "ci_low": round(low, 4),
        "ci_high": round(high, 4),
        "time_to_success_s": mean([r["time_s"] for r in wins]),
        "holds_per_episode": mean([r.get("holds") for r in rows]),
        "stall_s_per_episode": mean([r.get("stall_s") for r in rows]),
        "latency_p50_ms": mean([r.get("latency_p50_ms") for r in rows]),
        "seam_jump_p99_deg": mean([r.get("seam_p99_deg") for r in rows]),
        "join": next((r["join"] for r in rows if r.get("join")), None),
        # Cores each process used while the episodes ran (mean over episodes), the job's
        # processes together (total), and what the rest of the machine took (others, steal):
        # near the machine's core count, holds are the machine's, not the runtime's.
        "cpu_cores": {p: mean([c.get(p) for c in cpu]) for p in cpu_order(cpu)},
        "cpu_cores_total": mean([sum(v for p, v in c.items() if p not in MACHINE) for c in cpu]),
        # Episodes the machine disturbed (its wall clock stepped: paused, or set by NTP).
        "clock_step_episodes": sum(1 for r in rows if r.get("clock_step_s")),
        "episodes": rows,
    }


# Settings an evaluation report records that older reports lack, with the value they had.
ADDED_LATER = {"noise_scale": 1.0}


def resumed(out: Path, report: dict) -> dict[str, dict]:
    """Each contender's result in --out, its episodes cut to the leading run of seeds (a gap
    ends it) and summarized again; ValueError where that evaluation was not this one."""
    if not out.is_file():
        print(f"--resume: {out} does not exist yet; starting from the first episode", flush=True)
        return {}
    try:
        before = json.loads(out.read_text())
        contenders = dict(before["contenders"])
    except (ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"--resume: {out} is not an evaluation report ({exc})") from exc
    for key in ("task", "seed", "episode_s", "checkpoint", "num_inference_steps", "noise_scale"):
        # A setting added after a report was written had its default then (for a checkpoint).
        made_with = before.get(key, ADDED_LATER.get(key) if before.get("checkpoint") else None)
        if made_with != report[key]:
            raise ValueError(
                f"--resume: {out} was made with {key}={made_with!r}, this run has "
                f"{report[key]!r}; give another --out or the same settings"
            )
    kept = {}
    for name, result in contenders.items():
        rows = []
        for k, row in enumerate(result.get("episodes", [])):
            if row.get("episode") != k or row.get("seed") != report["seed"] + k:
                break
            rows.append(row)
        if len(rows) > report["episodes"]:
            raise ValueError(
                f"--resume: {out} holds {len(rows)} episodes of {name}; "
                f"--episodes={report['episodes']} would drop some of them"
            )
        kept[name] = {**result, **summarize(rows)}
        print(f"--resume: {name}: {len(rows)} of {report['episodes']} episodes kept", flush=True)
    return kept


def print_table(report: dict) -> None:
    print(
        f"\n{report['task']}: {report['episodes']} episodes per contender, seeds "
        f"{report['seed']}..{report['seed'] + report['episodes'] - 1}; cpu: the cores its "
        f"processes used (this machine has {report['cpu_count']})"
    )
    print(
        f"{'contender':>18}  {'success':>8}  {'95% CI':>13}  {'t success':>9}  {'holds':>5}  "
        f"{'stall s':>7}  {'latency':>8}  {'cpu':>4}"
    )
    for name, r in report["contenders"].items():
        t = "-" if r["time_to_success_s"] is None else f"{r['time_to_success_s']:.2f} s"
        ci = f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]"
        print(
            f"{name:>18}  {r['successes']:>3}/{r['n']:<4}  {ci:>13}  {t:>9}  "
            f"{r['holds_per_episode'] or 0:>5.1f}  {r['stall_s_per_episode'] or 0:>7.2f}  "
            f"{r['latency_p50_ms'] or 0:>5.0f} ms  {r.get('cpu_cores_total') or 0:>4.1f}"
        )
        if r.get("cpu_cores"):
            print(f"{'':>18}  " + ", ".join(f"{p} {c:.2f}" for p, c in r["cpu_cores"].items()))
        if r.get("clock_step_episodes"):
            print(
                f"{'':>18}  {r['clock_step_episodes']} episode(s) with a wall-clock step "
                "(the machine paused, or its clock set): see each episode's clock_step_s"
            )
        if r.get("error"):
            print(f"{'':>18}  stopped early: {r['error'].splitlines()[0]}")
