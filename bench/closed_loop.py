"""Success rates in closed loop, through the whole stack, for every task.

    uv run python -m bench.closed_loop [--episodes=50] [--tasks=lift,sort,stack] [--seed=1000]

Per task, on the same seeds: the shipped sim checkpoint (checkpoints/<task>_sim) served by the
policy worker with the control loop's default ahead-of-time schedule, the same checkpoint
under `--schedule=sync` (what the scheduling is worth in successes), the scripted expert (upper
bound) and "hold still" (lower bound). Each is workers.evaluate on real processes. A task
without a sim checkpoint reports its baselines and null for the checkpoint's figures.
Last line: JSON with <task>_success, <task>_success_ci_low, <task>_hold_success,
<task>_expert_success, <task>_sync_success for each task.
"""

from __future__ import annotations

import argparse

from bench.common import REPO, emit, table
from workers.evaluate import EvaluateConfig, evaluate

TARGETS = {"lift": 0.8, "sort": 0.5, "stack": 0.5}
CONTENDERS = {
    "checkpoint": "success",
    "checkpoint/sync": "sync_success",
    "expert": "expert_success",
    "hold": "hold_success",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--tasks", default="lift,sort,stack")
    parser.add_argument("--seed", type=int, default=1000)
    args = parser.parse_args()
    result: dict = {"episodes": args.episodes, "seed": args.seed}
    rows = []
    for task in args.tasks.split(","):
        has_checkpoint = (
            REPO / "checkpoints" / f"{task}_sim" / "checkpoint-best" / "config.json"
        ).is_file()
        contenders = [c for c in CONTENDERS if has_checkpoint or c.startswith(("expert", "hold"))]
        report = evaluate(
            EvaluateConfig(
                task=task,
                episodes=args.episodes,
                seed=args.seed,
                contenders=contenders,
                logs=f"logs/bench_closed_loop/{task}",
            )
        )
        for contender, key in CONTENDERS.items():
            r = report["contenders"].get(contender)
            result[f"{task}_{key}"] = None if r is None else r["success"]
            if contender == "checkpoint":
                result[f"{task}_success_ci_low"] = None if r is None else r["ci_low"]
            if r is not None:
                target = {
                    "checkpoint": f">= {TARGETS[task]:.2f}, CI low > hold",
                    "expert": ">= 0.95",
                }.get(contender, "")
                if r.get("error"):  # its processes failed: the figures are of fewer episodes
                    target = f"stopped early: {r['error'].splitlines()[0][:60]}"
                rows.append(
                    [
                        task,
                        contender,
                        f"{r['successes']}/{r['n']}",
                        f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}]",
                        r["time_to_success_s"] or "-",
                        r["holds_per_episode"],
                        r["stall_s_per_episode"],
                        r["latency_p50_ms"],
                        target,
                    ]
                )
            else:
                rows.append([task, contender, f"no checkpoints/{task}_sim", "", "", "", "", "", ""])
    table(
        f"closed loop, {args.episodes} seeded episodes per contender (seeds from {args.seed})",
        [
            "task",
            "contender",
            "successes",
            "95% CI",
            "t success s",
            "holds/ep",
            "stall s/ep",
            "latency p50 ms",
            "target",
        ],
        rows,
    )
    emit(result)


if __name__ == "__main__":
    main()
