"""Offline (open-loop) evaluation: does a checkpoint predict recorded episodes' actions better
than a policy that always outputs the mean action?

    uv run python scripts/eval_policy.py --task lift [--checkpoint PATH] [--stride 4]
    uv run python scripts/eval_policy.py --task stack --dataset recordings/sim/stack \
        --checkpoint checkpoints/stack_sim/checkpoint-best --episodes 0:10 [--noise-scale 0]

For every `stride`-th frame of the episodes (default: the last HELD_OUT of the dataset, which
scripts/train_policy.py never trains on; `--episodes A:B` for others, e.g. a sim recording's,
all of which it trains on) the checkpoint predicts a chunk from that frame's images and state;
its actions are compared with the recorded actions of the following frames. Baselines: the
mean action of the other episodes, and "hold the current state". Prints a table and one JSON
line; writes it next to the checkpoint (EVAL.json). It says how well a policy fits the
demonstrations, not whether it succeeds: that is workers.evaluate, closed loop.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from drivers.policy import PolicyRunner  # noqa: E402
from drivers.replay import DatasetReplay  # noqa: E402
from scripts.train_policy import HELD_OUT  # noqa: E402
from workers.tasks import get_task  # noqa: E402


def chosen_episodes(text: str, episodes: list[int]) -> list[int]:
    """`A:B` -> the dataset's episodes A..B-1, refused by name where it has none of them."""
    try:
        first, last = (int(x) for x in text.split(":"))
    except ValueError:
        raise SystemExit(f"eval_policy: --episodes {text!r}: expected A:B, e.g. 0:10") from None
    chosen = [ep for ep in episodes if first <= ep < last]
    if not chosen:
        raise SystemExit(f"eval_policy: --episodes {text}: the dataset has episodes {episodes}")
    return chosen


@dataclass
class OpenLoop:
    """Each predictor's errors (chunk minus the recorded actions that followed), one array of
    (n, action_dim) per chunk, and the range of the policy's normalized outputs."""

    errors: dict[str, list[np.ndarray]] = field(
        default_factory=lambda: {"policy": [], "mean action": [], "hold state": []}
    )
    normalized_lo: float = float("inf")
    normalized_hi: float = float("-inf")

    @property
    def chunks(self) -> int:
        return len(self.errors["policy"])

    def table(self) -> dict[str, dict]:
        rows = {}
        for name, parts in self.errors.items():
            e = np.concatenate(parts)
            rows[name] = {
                "mae": float(np.abs(e).mean()),
                "rmse": float(np.sqrt((e**2).mean())),
                "mae_per_joint": np.abs(e).mean(axis=0).round(3).tolist(),
            }
        return rows


def recorded_actions(replay: DatasetReplay, arms: Sequence[str], episode: int) -> np.ndarray:
    rec = replay.recorded_actions(episode)
    return np.concatenate([rec[a] for a in arms], axis=1)


def open_loop(
    runner: PolicyRunner,
    replay: DatasetReplay,
    episodes: Sequence[int],
    others: Sequence[int],
    stride: int,
    say: Callable[[str], None] = lambda line: None,
) -> OpenLoop:
    """The runner's chunks from every `stride`-th frame of `episodes`, against the recorded
    actions, the mean action of `others` and holding the current state."""
    arms = runner.arms
    mean_action = np.concatenate([recorded_actions(replay, arms, ep) for ep in others]).mean(0)
    result = OpenLoop()
    for k, ep in enumerate(episodes):
        say(f"episode {ep} ({k + 1}/{len(episodes)}), {result.chunks} chunks so far")
        recorded = recorded_actions(replay, arms, ep)
        for step in replay.steps(ep):
            if step.index % stride:
                continue
            future = recorded[step.index : step.index + runner.horizon]
            chunk = runner.infer(step.images, step.states)
            state = np.concatenate([step.states[a] for a in arms])
            result.errors["policy"].append(chunk.actions[: len(future)] - future)
            result.errors["mean action"].append(mean_action[None] - future)
            result.errors["hold state"].append(state[None] - future)
            result.normalized_lo = min(result.normalized_lo, chunk.normalized_range[0])
            result.normalized_hi = max(result.normalized_hi, chunk.normalized_range[1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--checkpoint", default="")
    parser.add_argument("--stride", type=int, default=4)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps at inference")
    parser.add_argument("--dataset", default="", help="default: the task's replay dataset")
    parser.add_argument("--episodes", default="", help="A:B (default: the held-out ones)")
    parser.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="diffusion's noise scale: 1 samples as lerobot does; workers.policy serves 0",
    )
    parser.add_argument("--out", default="", help="default: EVAL.json beside the checkpoint")
    args = parser.parse_args()
    task = get_task(args.task)
    checkpoint = Path(args.checkpoint or task.checkpoint)

    replay = DatasetReplay(args.dataset or task.dataset)
    episodes = replay.episodes
    chosen = chosen_episodes(args.episodes, episodes) if args.episodes else episodes[-HELD_OUT:]
    others = [ep for ep in episodes if ep not in chosen]
    runner = PolicyRunner(
        checkpoint, arms=task.arms, num_inference_steps=args.steps, noise_scale=args.noise_scale
    )
    runner.warm_up(1)
    t0 = time.perf_counter()
    result = open_loop(runner, replay, chosen, others, args.stride, lambda s: print(s, flush=True))
    replay.close()
    rows = result.table()
    print(
        f"task {task.name}: {checkpoint}, noise scale {runner.noise_scale:g}\n"
        f"episodes {chosen}, {result.chunks} chunks "
        f"({(time.perf_counter() - t0) / max(1, result.chunks):.2f} s each), "
        f"chunk horizon {runner.horizon}, error in degrees (gripper 0-100)"
    )
    print(f"{'predictor':<14}{'MAE':>9}{'RMSE':>9}")
    for name, r in rows.items():
        print(f"{name:<14}{r['mae']:9.3f}{r['rmse']:9.3f}")
    summary = {
        "task": task.name,
        "episodes": chosen,
        "noise_scale": runner.noise_scale,
        "chunks": result.chunks,
        "policy_mae": rows["policy"]["mae"],
        "mean_action_mae": rows["mean action"]["mae"],
        "hold_state_mae": rows["hold state"]["mae"],
        "policy_over_mean_mae": rows["policy"]["mae"] / rows["mean action"]["mae"],
        "per_joint": {k: v["mae_per_joint"] for k, v in rows.items()},
    }
    out = Path(args.out) if args.out else checkpoint.parent / "EVAL.json"
    out.write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
