"""The policy worker: offline loading of lerobot checkpoints, checks, and the served contract."""

from __future__ import annotations

import json
import os
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from bus import BusConfig, ServiceClient, ServiceError
from drivers.policy import ObservationError, PolicyLoadError, PolicyRunner, set_cpu_threads
from drivers.random_checkpoint import save_random_checkpoint

from conftest import bus_args, wait_until

SMALL_DP = dict(down_dims=(32, 64, 128), horizon=16, n_action_steps=8, resize_shape=(96, 128))
SMALL_ACT = dict(
    chunk_size=20,
    n_action_steps=20,
    dim_model=64,
    dim_feedforward=128,
    n_encoder_layers=1,
    n_decoder_layers=1,
)
FRONT = {"front": (96, 128)}


@pytest.fixture(scope="module")
def dp_checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(
        tmp_path_factory.mktemp("dp") / "pretrained_model", "diffusion", FRONT, 6, 6, **SMALL_DP
    )


@pytest.fixture(scope="module")
def act_checkpoint(tmp_path_factory) -> Path:
    return save_random_checkpoint(
        tmp_path_factory.mktemp("act") / "pretrained_model", "act", FRONT, 6, 6, **SMALL_ACT
    )


def obs(h: int = 96, w: int = 128, n: int = 6, arms=("arm",)):
    images = {"front": np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)}
    return images, {arm: np.zeros(n, np.float32) for arm in arms}


@pytest.mark.parametrize(("kind", "horizon"), [("dp", 8), ("act", 20)])
def test_diffusion_and_act_load_and_infer(kind, horizon, dp_checkpoint, act_checkpoint) -> None:
    path = dp_checkpoint if kind == "dp" else act_checkpoint
    runner = PolicyRunner(path, arms=["arm"])
    chunk = runner.infer(*obs())
    assert chunk.actions.shape == (horizon, 6) and chunk.actions.dtype == np.float32
    assert np.isfinite(chunk.actions).all()
    lo, hi = chunk.normalized_range
    assert lo <= hi
    assert set(chunk.timings) == {"preprocess", "inference", "postprocess"}


def test_diffusion_steps_and_scheduler_are_the_workers_choice(dp_checkpoint) -> None:
    runner = PolicyRunner(dp_checkpoint, arms=["arm"], num_inference_steps=4, scheduler="DDIM")
    assert runner.scheduler == "DDIM 4 steps"
    assert runner.policy.diffusion.num_inference_steps == 4
    assert type(runner.policy.diffusion.noise_scheduler).__name__ == "DDIMScheduler"


def test_native_conv1d_path_gives_the_same_chunk_for_the_same_noise(dp_checkpoint) -> None:
    import torch

    fast = PolicyRunner(dp_checkpoint, arms=["arm"])
    stock = PolicyRunner(dp_checkpoint, arms=["arm"], fast_unet=False)
    assert fast.native_conv1d and not stock.native_conv1d
    noise = torch.randn(1, 16, 6, generator=torch.Generator().manual_seed(3))
    a = fast.infer(*obs(), noise=noise.clone()).actions
    b = stock.infer(*obs(), noise=noise.clone()).actions
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3)


def test_cpu_threads_leave_a_core_to_the_other_processes() -> None:
    before = torch.get_num_threads()
    try:
        threads, said = set_cpu_threads(1)
        assert threads == torch.get_num_threads() == 1 and said.startswith("1 CPU thread(s) of ")
        cores = len(os.sched_getaffinity(0))
        threads, said = set_cpu_threads(0)
        assert threads == torch.get_num_threads() and 1 <= threads <= max(1, cores - 1), said
        assert said.endswith("(one core left to the other processes)")
        with pytest.raises(ValueError, match="--threads must be >= 0"):
            set_cpu_threads(-2)
    finally:
        torch.set_num_threads(before)


def test_noise_scale_zero_gives_one_chunk_per_observation(dp_checkpoint) -> None:
    from drivers.inpaint import Prefix

    cold = PolicyRunner(dp_checkpoint, arms=["arm"], noise_scale=0.0)
    assert cold.describe()["noise_scale"] == 0.0
    first, again = cold.infer(*obs()).actions, cold.infer(*obs()).actions
    np.testing.assert_array_equal(first, again)
    warm = PolicyRunner(dp_checkpoint, arms=["arm"])
    assert np.abs(warm.infer(*obs()).actions - warm.infer(*obs()).actions).max() > 1e-3
    # Inpainting a committed prefix at scale 0: deterministic too, and the prefix is kept.
    prefix = Prefix(np.full((3, 6), 20.0, np.float32), start=0, committed=3)
    kept = cold.infer(*obs(), prefix=prefix).actions
    np.testing.assert_array_equal(kept, cold.infer(*obs(), prefix=prefix).actions)
    np.testing.assert_allclose(kept[:3], 20.0, atol=1e-3)
    for bad in (1.5, -0.1, float("nan")):
        with pytest.raises(PolicyLoadError, match="noise_scale must be within"):
            PolicyRunner(dp_checkpoint, arms=["arm"], noise_scale=bad)


@pytest.mark.parametrize(
    ("images_states", "message"),
    [
        (({}, {"arm": np.zeros(6, np.float32)}), "missing camera 'front'"),
        (obs(h=48, w=64), "camera 'front' is 64x48, the checkpoint expects 128x96"),
        (obs(n=7), "state has 7 values"),
        (obs(arms=("left_arm", "right_arm")), "wrong task for this checkpoint"),
    ],
)
def test_mismatched_observations_name_the_mismatch(images_states, message, dp_checkpoint) -> None:
    runner = PolicyRunner(dp_checkpoint, arms=["arm"])
    with pytest.raises(ObservationError, match=None) as info:
        runner.infer(*images_states)
    assert message in str(info.value)


def test_nan_state_is_refused_not_inferred(dp_checkpoint) -> None:
    images, _ = obs()
    with pytest.raises(ObservationError, match="NaN"):
        PolicyRunner(dp_checkpoint, arms=["arm"]).infer(
            images, {"arm": np.full(6, np.nan, np.float32)}
        )


def test_camera_map_renames_bus_cameras(dp_checkpoint) -> None:
    runner = PolicyRunner(
        dp_checkpoint, arms=["arm"], cameras={"overhead": "observation.images.front"}
    )
    images, states = obs()
    assert runner.infer({"overhead": images["front"]}, states).actions.shape == (8, 6)
    with pytest.raises(PolicyLoadError, match="does not have"):
        PolicyRunner(dp_checkpoint, arms=["arm"], cameras={"x": "observation.images.nope"})


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("change", ["missing", "unexpected"])
def test_missing_or_unexpected_weights_are_an_error(change, dp_checkpoint, tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    path = _copy(dp_checkpoint, tmp_path / "ckpt")
    weights = load_file(path / "model.safetensors")
    if change == "missing":
        weights.pop(next(k for k in weights if "unet" in k))
    else:
        weights["diffusion.surprise"] = next(iter(weights.values())).clone()
    save_file(weights, path / "model.safetensors")
    with pytest.raises(PolicyLoadError, match="do not match its config"):
        PolicyRunner(path, arms=["arm"])


def test_checkpoint_folder_errors_say_what_to_do(dp_checkpoint, tmp_path) -> None:
    with pytest.raises(PolicyLoadError, match="checkpoint not found: .* absolute path"):
        PolicyRunner(tmp_path / "nope", arms=["arm"])
    wrapper = tmp_path / "checkpoint-best"
    _copy(dp_checkpoint, wrapper / "pretrained_model")
    with pytest.raises(PolicyLoadError, match="did you mean .*pretrained_model"):
        PolicyRunner(wrapper, arms=["arm"])
    partial = _copy(dp_checkpoint, tmp_path / "partial")
    (partial / "policy_postprocessor.json").unlink()
    with pytest.raises(PolicyLoadError, match="incomplete checkpoint"):
        PolicyRunner(partial, arms=["arm"])


def test_loads_offline_even_when_config_names_imagenet_weights(
    dp_checkpoint, tmp_path, monkeypatch
) -> None:
    """The offline trap: config.json saying ResNet18 ImageNet weights must not download."""
    path = _copy(dp_checkpoint, tmp_path / "trap")
    cfg = json.loads((path / "config.json").read_text())
    cfg["pretrained_backbone_weights"] = "ResNet18_Weights.IMAGENET1K_V1"
    (path / "config.json").write_text(json.dumps(cfg))

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    runner = PolicyRunner(path, arms=["arm"])
    assert runner.infer(*obs()).actions.shape == (8, 6)


def test_cuda_asked_without_a_gpu_is_a_clear_error(dp_checkpoint) -> None:
    import torch

    if torch.cuda.is_available():
        assert PolicyRunner(dp_checkpoint, arms=["arm"], device="cuda").device == "cuda"
    else:
        with pytest.raises(PolicyLoadError, match="no CUDA device is visible"):
            PolicyRunner(dp_checkpoint, arms=["arm"], device="cuda")


def test_worker_serves_chunks_and_error_replies(
    bus_cfg: BusConfig, hub, procs, dp_checkpoint
) -> None:
    worker = procs(
        "policy",
        "-m",
        "workers.policy",
        "--task=lift",
        f"--checkpoint={dp_checkpoint}",
        "--device=auto",
        *bus_args(bus_cfg),
    )
    worker.wait_for_output("ready:", timeout=240)
    log = worker.output()
    assert "ready: task lift, diffusion, cpu, horizon 8, action_dim 6, DDIM 10 steps" in log
    assert "device cpu (auto:" in log
    # torch's threads leave a core to the rest of the runtime (or use the one core there is).
    threads, cores = map(int, re.search(r"(\d+) CPU thread\(s\) of (\d+) core\(s\)", log).groups())
    assert cores == len(os.sched_getaffinity(0)) and 1 <= threads <= max(1, cores - 1), log
    with ServiceClient(bus_cfg, "test") as client:
        wait_until(lambda: client.hub_status()["workers"].get("policy/lift"), what="policy/lift")
        described = client.call("policy/lift", data={"describe": True}, timeout=30).data
        assert described["cameras"] == {"front": [96, 128]} and described["arms"] == ["arm"]
        images, states = obs()
        reply = client.call(
            "policy/lift",
            {"image.front": images["front"], "state.arm": states["arm"]},
            {"t_obs": 123.0, "task": "lift"},
            timeout=60,
        )
        assert reply.arrays["actions"].shape == (8, 6)
        assert reply.arrays["actions"].dtype == np.float32
        assert set(reply.data["timings"]) == {"queue", "preprocess", "inference", "postprocess"}
        assert reply.data["t_obs"] == 123.0 and len(reply.data["normalized_range"]) == 2
        assert reply.data["accepts_prefix"] is True
        # A committed prefix comes back where it was put (the chunk continues it).
        prefix = np.full((3, 6), 25.0, np.float32)
        kept = client.call(
            "policy/lift",
            {"image.front": images["front"], "state.arm": states["arm"], "prefix": prefix},
            {"prefix_start": 1, "prefix_committed": 3},
            timeout=60,
        )
        np.testing.assert_allclose(kept.arrays["actions"][1:4], prefix, atol=1e-2)
        nan_prefix = prefix.copy()
        nan_prefix[0, 0] = np.nan
        for arrays, data, message in [
            (
                {"image.front": images["front"], "state.arm": states["arm"], "prefix": nan_prefix},
                {},
                "prefix contains NaN",
            ),
            (
                {
                    "image.front": images["front"],
                    "state.arm": states["arm"],
                    "prefix": np.zeros((2, 4), np.float32),
                },
                {},
                "prefix has shape (2, 4)",
            ),
            (
                {"image.front": images["front"], "state.arm": states["arm"], "prefix": prefix},
                {"prefix_start": "soon"},
                "prefix_start and prefix_committed must be integers",
            ),
            ({"state.arm": states["arm"]}, {}, "missing camera 'front'"),
            (
                {"image.front": images["front"], "state.arm": np.zeros(12, np.float32)},
                {},
                "state has 12 values",
            ),
            (
                {"image.front": images["front"], "state.arm": states["arm"]},
                {"task": "sort"},
                "serves task 'lift', not 'sort'",
            ),
        ]:
            with pytest.raises(ServiceError, match=None) as info:
                client.call("policy/lift", arrays, data, timeout=60)
            assert message in str(info.value)
        # Still serving after every bad request.
        assert client.call(
            "policy/lift", {"image.front": images["front"], "state.arm": states["arm"]}, timeout=60
        ).arrays["actions"].shape == (8, 6)


def test_checkpoint_for_another_task_refuses_to_start(bus_cfg, procs, dp_checkpoint) -> None:
    worker = procs(
        "policy",
        "-m",
        "workers.policy",
        "--task=sort",
        f"--checkpoint={dp_checkpoint}",
        *bus_args(bus_cfg),
    )
    assert worker.popen.wait(240) == 2
    assert "Action dim mismatch: task sort drives 2 arm(s) (12 joints)" in worker.output()


def test_missing_checkpoint_refuses_to_start(bus_cfg, procs, tmp_path) -> None:
    worker = procs(
        "policy",
        "-m",
        "workers.policy",
        "--task=lift",
        f"--checkpoint={tmp_path}/nothing",
        *bus_args(bus_cfg),
    )
    assert worker.popen.wait(240) == 2
    assert "checkpoint not found" in worker.output()
