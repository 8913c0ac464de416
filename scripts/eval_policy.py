"""Offline evaluation: does a checkpoint predict the held-out episodes' actions better than a
policy that always outputs the mean action?

    uv run python scripts/eval_policy.py --task lift [--checkpoint PATH] [--stride 4]

For every `stride`-th frame of the held-out episodes (the last HELD_OUT of the dataset, which
scripts/train_policy.py never trains on) the checkpoint predicts a chunk from that frame's
images and state; its actions are compared with the recorded actions of the following frames.
Baselines: the mean action of the training episodes, and "hold the current state". Prints a
table and one JSON line; writes it next to the checkpoint (EVAL.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.policy import PolicyRunner  # noqa: E402
from drivers.replay import DatasetReplay  # noqa: E402
from scripts.train_policy import HELD_OUT  # noqa: E402
from workers.tasks import get_task  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps at inference")
    args = parser.parse_args()
    task = get_task(args.task)
    checkpoint = Path(args.checkpoint or task.checkpoint)

    replay = DatasetReplay(task.dataset)
    episodes = replay.episodes
    held_out, train = episodes[-HELD_OUT:], episodes[:-HELD_OUT]
    arms = list(task.arms)

    def actions(ep: int) -> np.ndarray:
        rec = replay.recorded_actions(ep)
        return np.concatenate([rec[a] for a in arms], axis=1)

    mean_action = np.concatenate([actions(ep) for ep in train]).mean(axis=0)
    runner = PolicyRunner(checkpoint, arms=arms, num_inference_steps=args.steps)
    runner.warm_up(1)
    err = {"policy": [], "mean action": [], "hold state": []}
    t0 = time.perf_counter()
    inferences = 0
    for ep in held_out:
        recorded = actions(ep)
        for step in replay.steps(ep):
            if step.index % args.stride:
                continue
            future = recorded[step.index : step.index + runner.horizon]
            chunk = runner.infer(step.images, step.states).actions[: len(future)]
            state = np.concatenate([step.states[a] for a in arms])
            inferences += 1
            err["policy"].append(chunk - future)
            err["mean action"].append(mean_action[None] - future)
            err["hold state"].append(state[None] - future)
    replay.close()
    rows = {}
    for name, parts in err.items():
        e = np.concatenate(parts)
        rows[name] = {
            "mae": float(np.abs(e).mean()),
            "rmse": float(np.sqrt((e**2).mean())),
            "mae_per_joint": np.abs(e).mean(axis=0).round(3).tolist(),
        }
    print(
        f"task {task.name}: {checkpoint}\nheld-out episodes {held_out}, {inferences} chunks "
        f"({(time.perf_counter() - t0) / max(1, inferences):.2f} s each), "
        f"chunk horizon {runner.horizon}, error in degrees (gripper 0-100)"
    )
    print(f"{'predictor':<14}{'MAE':>9}{'RMSE':>9}")
    for name, r in rows.items():
        print(f"{name:<14}{r['mae']:9.3f}{r['rmse']:9.3f}")
    result = {
        "task": task.name,
        "held_out_episodes": held_out,
        "chunks": inferences,
        "policy_mae": rows["policy"]["mae"],
        "mean_action_mae": rows["mean action"]["mae"],
        "hold_state_mae": rows["hold state"]["mae"],
        "policy_over_mean_mae": rows["policy"]["mae"] / rows["mean action"]["mae"],
        "per_joint": {k: v["mae_per_joint"] for k, v in rows.items()},
    }
    (checkpoint.parent / "EVAL.json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
