"""Train a shipped checkpoint with lerobot's own training code, offline, on this machine's CPU.

    uv run python scripts/train_policy.py --task lift [--steps 2000] [--batch-size 16]

Runs `lerobot-train` on datasets/<task> (all episodes but the held-out ones that
scripts/eval_policy.py scores) with a Diffusion Policy scaled to fit a 2-core CPU: images
resized to 96x128 inside the policy, one image encoder shared by all cameras, a small UNet
(down_dims 64/128/256), one observation step, 16-action chunks. The result is copied to
checkpoints/<task>_real/checkpoint-best (config, weights, processors: what lerobot writes).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workers.tasks import get_task  # noqa: E402

HELD_OUT = 3  # the last episodes of each dataset, never trained on


def episodes(dataset: Path) -> int:
    return json.loads((dataset / "meta" / "info.json").read_text())["total_episodes"]


def lerobot_train_args(task: str, steps: int, batch_size: int, out: Path) -> list[str]:
    spec = get_task(task)
    train_eps = list(range(episodes(spec.dataset) - HELD_OUT))
    return [
        f"--dataset.repo_id=local/{task}",
        f"--dataset.root={spec.dataset}",
        f"--dataset.episodes={json.dumps(train_eps)}",
        "--policy.type=diffusion",
        "--policy.device=cpu",
        "--policy.push_to_hub=false",
        "--policy.pretrained_backbone_weights=null",  # offline: no ImageNet download
        "--policy.resize_shape=[96,128]",
        "--policy.use_separate_rgb_encoder_per_camera=false",
        "--policy.down_dims=[64,128,256]",
        "--policy.n_obs_steps=1",
        "--policy.horizon=16",
        "--policy.n_action_steps=16",
        "--policy.drop_n_last_frames=0",
        "--policy.crop_ratio=1.0",
        "--policy.optimizer_lr=3e-4",
        "--policy.scheduler_warmup_steps=100",
        "--wandb.enable=false",
        f"--batch_size={batch_size}",
        f"--steps={steps}",
        f"--save_freq={steps}",
        "--log_freq=50",
        "--num_workers=1",
        "--seed=1000",
        f"--output_dir={out}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--out", default=str(REPO / "outputs" / "train"))
    args = parser.parse_args()
    out = Path(args.out) / args.task
    if out.exists():
        shutil.rmtree(out)  # lerobot-train refuses an existing output dir without --resume
    # lerobot-train from this venv, also when run without `uv run` (PATH without .venv/bin).
    train = str(Path(sys.executable).with_name("lerobot-train"))
    cmd = [train, *lerobot_train_args(args.task, args.steps, args.batch_size, out)]
    print("+", " ".join(cmd), flush=True)
    t0 = time.time()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run(cmd, check=True, env=env, cwd=REPO)
    src = out / "checkpoints" / "last" / "pretrained_model"
    dst = REPO / "checkpoints" / f"{args.task}_real" / "checkpoint-best"
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.resolve(), dst)
    (dst.parent / "TRAINING.json").write_text(json.dumps({
        "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
        "held_out_episodes": HELD_OUT, "wall_time_s": round(time.time() - t0),
        "command": "uv run python scripts/train_policy.py " + " ".join(sys.argv[1:]),
    }, indent=2) + "\n")
    print(f"checkpoint in {dst} after {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
