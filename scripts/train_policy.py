"""Train a shipped checkpoint with lerobot's own training code, offline, on this machine's CPU.

    uv run python scripts/train_policy.py --task lift [--steps 2000] [--batch-size 16]
    uv run python scripts/train_policy.py --task lift --dataset recordings/sim/lift \
        --name lift_sim [--device cuda]

Runs `lerobot-train` with a Diffusion Policy scaled to fit a 2-core CPU: images resized to
96x128 inside the policy, one image encoder shared by all cameras, a small UNet (down_dims
64/128/256), one observation step, 16-action chunks. On datasets/<task> (the synthetic replay
data) it trains on all episodes but the held-out ones scripts/eval_policy.py scores; on a
recording with `meta/so101_demos.json` (scripts/record_demos.py) on the successful episodes
only (the simulator's evaluation is closed loop: nothing to hold out). The result is copied to
checkpoints/<name>/checkpoint-best (default name <task>_real; config, weights, processors:
what lerobot writes). The same command trains on a GPU (`--device cuda`). Ctrl-C or SIGTERM
stops it and keeps the last checkpoint saved (every 500 steps); `--keep` does that for a run
that ended otherwise (killed, the machine gone): the same arguments, no training.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.warm_start import prepare_warm_start  # noqa: E402
from workers.tasks import get_task  # noqa: E402

HELD_OUT = 3  # the last episodes of each dataset, never trained on


def episodes(dataset: Path) -> int:
    return json.loads((dataset / "meta" / "info.json").read_text())["total_episodes"]


def training_episodes(dataset: Path) -> tuple[list[int], int]:
    """(episodes to train on, episodes held out)."""
    demos = dataset / "meta" / "so101_demos.json"
    if demos.exists():
        rows = json.loads(demos.read_text())
        return sorted(r["dataset_episode"] for r in rows if r.get("success")), 0
    return list(range(episodes(dataset) - HELD_OUT)), HELD_OUT


def run_dataset(saved: dict, asked: Path | None, out: Path) -> tuple[Path, int | None]:
    """(dataset, episodes trained on so far) of the run in `out`, from its train_config.json.

    A resumed run keeps its dataset: another one would be normalised with the first one's stats.
    """
    root = Path(saved["dataset"]["root"]).resolve()
    if asked is not None and asked.resolve() != root:
        raise SystemExit(
            f"train_policy: the run in {out} trains on {root}, not {asked}; "
            "resume it without --dataset, or start a new run with another --name"
        )
    episodes = saved["dataset"]["episodes"]  # None: all of them
    return root, len(episodes) if episodes is not None else None


def run_settings(saved: dict | None, args: argparse.Namespace) -> dict:
    """Batch, device, image size, crop and learning rate the run trains with: a resumed or kept
    run's own (its train_config.json), whatever the command line says (lerobot-train resumes
    with those)."""
    if saved is None:
        return {
            "batch_size": args.batch_size,
            "device": args.device,
            "image_size": args.image_size,
            "crop_ratio": args.crop_ratio,
            "lr": args.lr,
        }
    return {
        "batch_size": saved["batch_size"],
        "device": saved["policy"]["device"],
        "image_size": saved["policy"]["resize_shape"],
        "crop_ratio": saved["policy"].get("crop_ratio", 1.0),
        "lr": saved["policy"]["optimizer_lr"],
    }


def lerobot_train_args(
    task: str,
    dataset: Path,
    train_eps: list[int],
    steps: int,
    batch_size: int,
    out: Path,
    device: str,
    image_size: tuple[int, int] = (96, 128),
    init_from: Path | None = None,
    crop_ratio: float = 1.0,
    lr: float = 3e-4,
) -> list[str]:
    # A warm start is lerobot's fine-tuning: the policy (config and weights) from a folder.
    policy = f"--policy.path={init_from}" if init_from else "--policy.type=diffusion"
    return [
        f"--dataset.repo_id=local/{task}",
        f"--dataset.root={dataset}",
        f"--dataset.episodes={json.dumps(train_eps)}",
        policy,
        f"--policy.device={device}",
        "--policy.push_to_hub=false",
        "--policy.pretrained_backbone_weights=null",  # offline: no ImageNet download
        f"--policy.resize_shape=[{image_size[0]},{image_size[1]}]",
        "--policy.use_separate_rgb_encoder_per_camera=false",
        "--policy.down_dims=[64,128,256]",
        "--policy.n_obs_steps=1",
        "--policy.horizon=16",
        "--policy.n_action_steps=16",
        "--policy.drop_n_last_frames=0",
        f"--policy.crop_ratio={crop_ratio}",
        f"--policy.optimizer_lr={lr}",
        "--policy.scheduler_warmup_steps=100",
        "--wandb.enable=false",
        f"--batch_size={batch_size}",
        f"--steps={steps}",
        f"--save_freq={min(steps, 500)}",  # a checkpoint every 500 steps: a long run can stop early
        "--log_freq=50",
        "--num_workers=1",
        "--seed=1000",
        f"--output_dir={out}",
    ]


def crop_ratio(text: str) -> float:
    """argparse type: a share of the image in (0, 1]."""
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"{text}: a crop ratio is in (0, 1]")
    return value


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--task", required=True)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--dataset", type=Path, default=None, help="default datasets/<task>")
    parser.add_argument("--name", default=None, help="checkpoints/<name>; default <task>_real")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument(
        "--image-size",
        type=int,
        nargs=2,
        default=[96, 128],
        metavar=("H", "W"),
        help="what the policy sees: every camera resized to H x W inside the policy "
        "(48 64 trains ~3x faster than 96 128 on a CPU)",
    )
    parser.add_argument(
        "--crop-ratio",
        type=crop_ratio,
        default=1.0,
        metavar="R",
        help="train on random crops of R x the image (0.9: Diffusion Policy's shift "
        "augmentation); served policies see the centre crop. 1.0: no crop",
    )
    parser.add_argument(
        "--lr",
        type=float,
        default=3e-4,
        help="peak learning rate of the cosine schedule (warm starts: 1e-4 disturbs the "
        "weights less than a new run's 3e-4)",
    )
    parser.add_argument("--out", default=str(REPO / "outputs" / "train"))
    parser.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="CHECKPOINT",
        help="a new run that starts from this diffusion checkpoint's weights, at --image-size "
        "(e.g. a 48x64 run continued at 96x128: scripts/warm_start.py)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the last run in --out up to --steps (same settings and dataset, with "
        "the episodes recorded into it since)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="no training: keep the last checkpoint a stopped or killed run saved in --out",
    )
    args = parser.parse_args()
    name = args.name or f"{args.task}_real"
    out = Path(args.out) / name
    last = out / "checkpoints" / "last" / "pretrained_model" / "train_config.json"
    continuing = args.resume or args.keep
    if continuing and args.init_from:
        raise SystemExit("train_policy: --init-from starts a new run; not with --resume or --keep")
    if continuing:
        if not last.is_file():
            raise SystemExit(f"train_policy: no checkpoint saved in {out} (no {last})")
        saved = json.loads(last.read_text())
        dataset, trained_eps = run_dataset(saved, args.dataset, out)
    else:
        dataset = (args.dataset or get_task(args.task).dataset).resolve()
    train_eps, held_out = training_episodes(dataset)
    if not train_eps:
        raise SystemExit(f"train_policy: no episodes to train on in {dataset}")
    print(f"training on {len(train_eps)} episodes of {dataset}", flush=True)
    if continuing and trained_eps is not None and len(train_eps) != trained_eps:
        print(f"  the run so far trained on {trained_eps}: episodes recorded since join it")
    # lerobot-train from this venv, also when run without `uv run` (PATH without .venv/bin).
    train = str(Path(sys.executable).with_name("lerobot-train"))
    if continuing:
        # The checkpoint's own settings, optimizer, step and normalisation stats; the step budget
        # grows, and demonstrations recorded into the dataset since the run began are trained on.
        cmd = [
            train,
            "--resume=true",
            f"--config_path={last}",
            f"--steps={args.steps}",
            f"--dataset.episodes={json.dumps(train_eps)}",
        ]
    else:
        if out.exists():
            shutil.rmtree(out)  # lerobot-train refuses an existing output dir without --resume
        warm = None
        if args.init_from:
            warm = Path(args.out) / f"{name}.init"  # outside `out`, which lerobot-train creates
            rebuilt = prepare_warm_start(
                args.init_from, warm, tuple(args.image_size), args.crop_ratio
            )
            print(
                f"starting from {args.init_from} at {args.image_size[0]}x{args.image_size[1]}"
                f" ({len(rebuilt)} coordinate grids rebuilt for the new size)",
                flush=True,
            )
        cmd = [
            train,
            *lerobot_train_args(
                args.task,
                dataset,
                train_eps,
                args.steps,
                args.batch_size,
                out,
                args.device,
                tuple(args.image_size),
                warm,
                args.crop_ratio,
                args.lr,
            ),
        ]
    t0 = time.time()
    if args.keep:
        finished = False
    else:
        print("+", " ".join(cmd), flush=True)
        finished = run_training(cmd)
    reached = saved_step(out)
    if not finished and reached is None:
        raise SystemExit("train_policy: stopped before the first checkpoint: nothing to keep")
    dst = keep_checkpoint(out, name)
    record = dst.parent / "TRAINING.json"
    command = "uv run python scripts/train_policy.py " + " ".join(sys.argv[1:])
    earlier = json.loads(record.read_text()) if continuing and record.exists() else {}
    summary = {
        "task": args.task,
        "dataset": str(dataset.relative_to(REPO) if dataset.is_relative_to(REPO) else dataset),
        "episodes": len(train_eps),
        "steps": reached if reached is not None else args.steps,
        **run_settings(saved if continuing else None, args),
        "held_out_episodes": held_out,
        **run_history(earlier, args, round(time.time() - t0), command),
    }
    if not finished:  # what was kept, and the schedule it was cut from
        summary["stopped_at_step"] = reached
        summary["steps_planned"] = args.steps
    record.write_text(json.dumps(summary, indent=2) + "\n")
    took = f"after {time.time() - t0:.0f} s"  # this command's time; TRAINING.json has the run's
    if args.keep:
        print(f"checkpoint in {dst}: step {reached} of {args.steps}, kept")
    elif finished:
        print(f"checkpoint in {dst} {took}")
    else:
        print(f"checkpoint in {dst}: stopped at step {reached} of {args.steps} {took}")


def run_history(earlier: dict, args: argparse.Namespace, wall: int, command: str) -> dict:
    """TRAINING.json's time, commands and starting point: this command's, after the run's
    earlier ones (`earlier`, its TRAINING.json so far) when it resumes a run."""
    if args.keep:
        wall = None  # the run ended before this command: its time is not known here
    elif args.resume and earlier:  # the whole run: earlier sessions' time and commands
        wall += earlier.get("wall_time_s", 0)
        command = f"{earlier.get('command', '?')} && {command}"
    history = {"wall_time_s": wall, "command": command}
    if args.init_from:  # the budget includes the run it started from
        history["init_from"] = warm_start_record(args.init_from)
    elif "init_from" in earlier:  # and still does once resumed or kept
        history["init_from"] = earlier["init_from"]
    return history


def warm_start_record(src: Path) -> dict:
    """What a warm-started run started from: the path, and that run's TRAINING.json."""
    record = {"checkpoint": str(src)}
    training = src.parent / "TRAINING.json"
    if training.is_file():
        record["training"] = json.loads(training.read_text())
    return record


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_training(cmd: list[str]) -> bool:
    """lerobot-train, offline. True when it ran to the end; False when stopped (Ctrl-C,
    SIGTERM): it is then stopped too, and what it saved (a checkpoint every 500 steps) stays."""

    def on_term(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # A shell's background job (`nohup ... &`) starts with SIGINT ignored, and a child inherits
    # that: lerobot-train would then never see the SIGINT below and be killed at the timeout.
    child = subprocess.Popen(cmd, env=env, cwd=REPO, preexec_fn=_default_sigint)
    try:
        code = child.wait()
    except KeyboardInterrupt:
        print("train_policy: stopping lerobot-train; keeping its last saved checkpoint", flush=True)
        # lerobot moves its `last` link only after a whole save: a save cut short leaves it on
        # the checkpoint before.
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return False
    if code != 0:
        raise SystemExit(f"train_policy: lerobot-train failed (exit {code})")
    return True


def saved_step(out: Path) -> int | None:
    """The step of the last checkpoint lerobot-train saved in `out`, if any."""
    step_file = out / "checkpoints" / "last" / "training_state" / "training_step.json"
    return json.loads(step_file.read_text())["step"] if step_file.is_file() else None


def keep_checkpoint(out: Path, name: str) -> Path:
    """Copy the run's last checkpoint to checkpoints/<name>/checkpoint-best."""
    src = out / "checkpoints" / "last" / "pretrained_model"
    dst = REPO / "checkpoints" / name / "checkpoint-best"
    if dst.exists():
        shutil.rmtree(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(src.resolve(), dst)
    return dst


if __name__ == "__main__":
    main()
