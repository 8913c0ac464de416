"""scripts/train_policy.py around lerobot-train: a stopped run keeps what it saved."""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pytest

from scripts import train_policy


@pytest.fixture
def restore_sigterm():
    saved = signal.getsignal(signal.SIGTERM)
    yield
    signal.signal(signal.SIGTERM, saved)


def terminate_once(ready: Path) -> None:
    """SIGTERM this process, as `kill` or supervisord would, once the child says it runs."""

    def wait_then_terminate() -> None:
        deadline = time.monotonic() + 60
        while not ready.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_then_terminate, daemon=True).start()


def test_sigterm_stops_the_training_child_and_says_so(restore_sigterm, tmp_path: Path) -> None:
    ready, stopped = tmp_path / "child-ready", tmp_path / "child-stopped"
    child = (
        "import signal, sys, time\n"
        "def stop(*_):\n"
        f"    open({str(stopped)!r}, 'w').close(); sys.exit(1)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "time.sleep(120)\n"
    )

    terminate_once(ready)
    finished = train_policy.run_training([sys.executable, "-c", child])
    assert finished is False
    assert stopped.exists()  # the child got SIGINT and ended (not left running)


@pytest.fixture
def sigint_ignored():
    """As in a shell's background job (`nohup train_policy.py ... &`)."""
    saved = signal.signal(signal.SIGINT, signal.SIG_IGN)
    yield
    signal.signal(signal.SIGINT, saved)


def test_a_background_run_still_stops_its_child(
    restore_sigterm, sigint_ignored, tmp_path: Path
) -> None:
    """lerobot-train installs no SIGINT handler: the child must start with the default one,
    or the SIGINT it is sent is ignored and the run waits out the kill timeout."""
    ready, stopped = tmp_path / "child-ready", tmp_path / "child-stopped"
    child = (
        "import time\n"
        f"open({str(ready)!r}, 'w').close()\n"
        "try:\n"
        "    time.sleep(120)\n"
        "except KeyboardInterrupt:\n"
        f"    open({str(stopped)!r}, 'w').close()\n"
    )

    terminate_once(ready)
    assert train_policy.run_training([sys.executable, "-c", child]) is False
    assert stopped.exists()  # ended by the SIGINT (KeyboardInterrupt), not killed at the timeout


def test_a_failing_training_is_an_error(restore_sigterm) -> None:
    with pytest.raises(SystemExit, match="lerobot-train failed \\(exit 3\\)"):
        train_policy.run_training([sys.executable, "-c", "raise SystemExit(3)"])


def test_the_last_saved_checkpoint_is_what_is_kept(tmp_path: Path, monkeypatch) -> None:
    out = tmp_path / "run"
    assert train_policy.saved_step(out) is None  # nothing saved yet: nothing to keep
    for step in (500, 1000):
        d = out / "checkpoints" / f"{step:06d}"
        (d / "pretrained_model").mkdir(parents=True)
        (d / "pretrained_model" / "model.safetensors").write_text(f"weights {step}")
        (d / "training_state").mkdir()
        (d / "training_state" / "training_step.json").write_text(json.dumps({"step": step}))
    (out / "checkpoints" / "last").symlink_to("001000")
    assert train_policy.saved_step(out) == 1000
    monkeypatch.setattr(train_policy, "REPO", tmp_path)
    kept = train_policy.keep_checkpoint(out, "stack_sim")
    assert kept == tmp_path / "checkpoints" / "stack_sim" / "checkpoint-best"
    assert (kept / "model.safetensors").read_text() == "weights 1000"
    assert not (kept / "model.safetensors").is_symlink()


def test_a_resumed_run_keeps_its_dataset(tmp_path: Path) -> None:
    root = tmp_path / "recordings" / "lift"
    saved = {"dataset": {"root": str(root), "episodes": [0, 1, 3]}}
    out = tmp_path / "run"
    assert train_policy.run_dataset(saved, None, out) == (root.resolve(), 3)
    assert train_policy.run_dataset(saved, root, out) == (root.resolve(), 3)
    with pytest.raises(SystemExit, match="run in .*run trains on .*recordings/lift, not .*other"):
        train_policy.run_dataset(saved, tmp_path / "other", out)


def test_a_resumed_run_records_its_own_settings() -> None:
    import argparse

    saved = {
        "batch_size": 8,
        "policy": {"device": "cuda", "resize_shape": [48, 64], "optimizer_lr": 3e-4},
    }
    asked = argparse.Namespace(
        batch_size=16, device="cpu", image_size=[96, 128], crop_ratio=0.9, lr=1e-4
    )
    assert train_policy.run_settings(saved, asked) == {
        "batch_size": 8,
        "device": "cuda",
        "image_size": [48, 64],
        "crop_ratio": 1.0,  # a run saved before crops were asked for trained without
        "lr": 3e-4,
    }
    assert train_policy.run_settings(None, asked)["image_size"] == [96, 128]
    assert train_policy.run_settings(None, asked)["crop_ratio"] == 0.9
    assert train_policy.run_settings(None, asked)["lr"] == 1e-4


@pytest.mark.parametrize("text", ["0", "-0.5", "1.5", "nan"])
def test_a_crop_ratio_outside_0_1_is_refused(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="crop ratio is in"):
        train_policy.crop_ratio(text)
    assert train_policy.crop_ratio("0.9") == 0.9


def test_a_warm_start_carries_every_weight_to_the_new_image_size(tmp_path: Path) -> None:
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from safetensors.torch import load_file

    from scripts.warm_start import prepare_warm_start
    from workers.tasks import TASKS

    src = TASKS["stack"].checkpoint  # trained at 96x128
    dst = tmp_path / "stack.init"
    rebuilt = prepare_warm_start(src, dst, (48, 64))
    assert rebuilt == ["diffusion.rgb_encoder.pool.pos_grid"]
    policy = DiffusionPolicy.from_pretrained(dst)  # lerobot loads it, as lerobot-train will
    assert tuple(policy.config.resize_shape) == (48, 64)
    assert policy.diffusion.rgb_encoder.pool.pos_grid.shape == (2 * 2, 2)  # a 2x2 feature map
    before, after = load_file(str(src / "model.safetensors")), policy.state_dict()
    carried = [k for k in before if k not in rebuilt]
    assert carried and all((before[k] == after[k]).all() for k in carried)
    assert sorted(p.name for p in dst.glob("policy_*")) == sorted(
        p.name for p in src.glob("policy_*")
    )


def test_a_warm_start_needs_a_checkpoint(tmp_path: Path) -> None:
    from scripts.warm_start import prepare_warm_start

    with pytest.raises(SystemExit, match="is not a checkpoint"):
        prepare_warm_start(tmp_path, tmp_path / "out", (48, 64))


def test_a_warm_started_run_is_lerobots_fine_tuning(tmp_path: Path) -> None:
    init = tmp_path / "stack.init"
    args = train_policy.lerobot_train_args(
        "stack", tmp_path, [0, 1], 100, 16, tmp_path / "out", "cpu", (96, 128), init
    )
    assert f"--policy.path={init}" in args and "--policy.type=diffusion" not in args
    assert "--policy.resize_shape=[96,128]" in args
    assert "--policy.crop_ratio=1.0" in args  # no crop unless asked
    assert "--policy.optimizer_lr=0.0003" in args
    cropped = train_policy.lerobot_train_args(
        "stack", tmp_path, [0, 1], 100, 16, tmp_path / "out", "cpu", (96, 128), init, 0.9, 1e-4
    )
    assert "--policy.crop_ratio=0.9" in cropped and "--policy.optimizer_lr=0.0001" in cropped


def test_a_warm_start_can_add_random_crops(tmp_path: Path) -> None:
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy

    from scripts.warm_start import prepare_warm_start
    from workers.tasks import TASKS

    dst = tmp_path / "stack.init"
    prepare_warm_start(TASKS["stack"].checkpoint, dst, (96, 128), 0.9)
    policy = DiffusionPolicy.from_pretrained(dst)
    assert tuple(policy.config.crop_shape) == (86, 115)  # lerobot's own derivation
    assert policy.diffusion.rgb_encoder.do_crop


def test_a_resumed_warm_started_run_keeps_its_history(tmp_path: Path) -> None:
    import argparse

    src = tmp_path / "small" / "checkpoint-best"
    src.mkdir(parents=True)
    (src.parent / "TRAINING.json").write_text(json.dumps({"steps": 30000, "wall_time_s": 100}))
    asked = dict(keep=False, resume=False, init_from=src)
    first = train_policy.run_history({}, argparse.Namespace(**asked), 50, "train a")
    assert first["wall_time_s"] == 50 and first["command"] == "train a"
    assert first["init_from"] == {
        "checkpoint": str(src),
        "training": json.loads((src.parent / "TRAINING.json").read_text()),
    }
    asked.update(resume=True, init_from=None)
    resumed = train_policy.run_history(first, argparse.Namespace(**asked), 20, "train b")
    assert resumed == {**first, "wall_time_s": 70, "command": "train a && train b"}
    asked.update(resume=False, keep=True)
    kept = train_policy.run_history(resumed, argparse.Namespace(**asked), 5, "keep")
    assert kept["wall_time_s"] is None and kept["init_from"] == first["init_from"]
