"""Inpainting a committed prefix into Diffusion Policy chunks, through lerobot's own model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from drivers.inpaint import Prefix, PrefixError, prefix_weights
from drivers.policy import PolicyRunner
from drivers.random_checkpoint import save_random_checkpoint

FRONT = {"front": (96, 128)}
SMALL_DP = dict(down_dims=(32, 64, 128), horizon=16, n_action_steps=8, resize_shape=(96, 128))
LIFT_SIM = Path("checkpoints/lift_sim/checkpoint-best")


@pytest.fixture(scope="module")
def dp_two_obs(tmp_path_factory) -> Path:
    """n_obs_steps=2: the returned chunk starts at horizon index 1, not 0."""
    return save_random_checkpoint(
        tmp_path_factory.mktemp("dp2") / "pretrained_model",
        "diffusion",
        FRONT,
        6,
        6,
        n_obs_steps=2,
        **SMALL_DP,
    )


def observation(seed: int = 0):
    image = np.random.default_rng(seed).integers(0, 255, (96, 128, 3), dtype=np.uint8)
    return {"front": image}, {"arm": np.linspace(-20, 20, 6).astype(np.float32)}


def fixed_noise(runner: PolicyRunner, seed: int) -> torch.Tensor:
    shape = (1, runner.cfg.horizon, runner.action_dim)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def test_weights_are_one_on_the_committed_part_then_lerobots_linear_ramp() -> None:
    w = prefix_weights(6, 2).tolist()
    assert w[:2] == [1.0, 1.0]
    assert w[2:] == pytest.approx([0.8, 0.6, 0.4, 0.2])  # lerobot RTC's LINEAR schedule
    assert prefix_weights(3, 3).tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("scheduler", ["DDIM", "DDPM"])
def test_an_empty_prefix_gives_lerobots_chunk_for_the_same_noise(dp_two_obs, scheduler) -> None:
    runner = PolicyRunner(dp_two_obs, arms=["arm"], scheduler=scheduler, num_inference_steps=5)
    images, states = observation()
    noise = fixed_noise(runner, 1)
    torch.manual_seed(5)  # DDPM's steps add noise from the global generator
    plain = runner.infer(images, states, noise=noise.clone()).actions
    empty = Prefix(np.zeros((0, 6), np.float32))
    torch.manual_seed(5)
    wrapped = runner.infer(images, states, noise=noise.clone(), prefix=empty).actions
    np.testing.assert_array_equal(plain, wrapped)
    # The hook is gone afterwards: lerobot's own step again.
    assert "step" not in vars(runner.policy.diffusion.noise_scheduler)


@pytest.mark.parametrize("scheduler", ["DDIM", "DDPM"])
def test_the_chunk_keeps_the_committed_prefix(dp_two_obs, scheduler) -> None:
    runner = PolicyRunner(dp_two_obs, arms=["arm"], scheduler=scheduler, num_inference_steps=5)
    images, states = observation()
    # Inside the training range ([-180, 180] for these stats) and far from what it would say.
    committed = np.linspace(30, 40, 4)[:, None].repeat(6, axis=1).astype(np.float32)
    prefix = Prefix(committed, start=2, committed=4)
    free = runner.infer(images, states, noise=fixed_noise(runner, 2)).actions
    kept = runner.infer(images, states, noise=fixed_noise(runner, 2), prefix=prefix).actions
    np.testing.assert_allclose(kept[2:6], committed, atol=1e-3)
    assert np.abs(free[2:6] - committed).max() > 1.0  # it would have said something else


def test_bad_prefixes_are_named(dp_two_obs) -> None:
    runner = PolicyRunner(dp_two_obs, arms=["arm"], num_inference_steps=2)
    images, states = observation()
    positions = runner.cfg.horizon - 1  # horizon 16, n_obs_steps 2
    bad = np.zeros((3, 6), np.float32)
    bad[1, 2] = np.nan
    for prefix, message in [
        (Prefix(np.zeros((3, 5), np.float32)), r"prefix has shape \(3, 5\), expected \(n, 6\)"),
        (Prefix(np.zeros(6, np.float32)), r"prefix has shape \(6,\)"),
        (Prefix(bad), "prefix contains NaN"),
        (Prefix(np.zeros((4, 6), np.float32), start=positions - 2), "plans only 15 actions"),
        (Prefix(np.zeros((1, 6), np.float32), start=-1), "negative"),
    ]:
        with pytest.raises(PrefixError, match=message):
            runner.infer(images, states, prefix=prefix)
    # A refused prefix leaves nothing behind.
    assert "step" not in vars(runner.policy.diffusion.noise_scheduler)


def test_act_refuses_a_prefix_and_says_what_to_use(tmp_path) -> None:
    path = save_random_checkpoint(
        tmp_path / "act",
        "act",
        FRONT,
        6,
        6,
        chunk_size=10,
        n_action_steps=10,
        dim_model=32,
        dim_feedforward=64,
        n_encoder_layers=1,
        n_decoder_layers=1,
    )
    runner = PolicyRunner(path, arms=["arm"])
    assert not runner.accepts_prefix and not runner.describe()["accepts_prefix"]
    with pytest.raises(PrefixError, match="--join=blend"):
        runner.infer(*observation(), prefix=Prefix(np.zeros((2, 6), np.float32)))


def test_a_trained_policy_continues_the_prefix_without_a_seam() -> None:
    """With the shipped sim checkpoint: a new chunk sampled from other noise is another plan;
    inpainted on the first chunk's committed actions it runs on from them without a jump."""
    runner = PolicyRunner(LIFT_SIM, arms=["arm"])
    size = runner.image_features[runner.cameras["front"]][1:]
    images = {name: np.full((*size, 3), 90, np.uint8) for name in runner.cameras}
    states = {"arm": np.array([0, -45, 35, 75, 0, 30], np.float32)}
    first = runner.infer(images, states, noise=fixed_noise(runner, 3)).actions
    other = runner.infer(images, states, noise=fixed_noise(runner, 4)).actions
    prefix = Prefix(first[4:12], start=4, committed=4)
    joined = runner.infer(images, states, noise=fixed_noise(runner, 4), prefix=prefix).actions
    np.testing.assert_allclose(joined[4:8], first[4:8], atol=1e-2)
    # At the end of the committed part: the joined chunk steps on about as the first one does,
    # while switching to the independent sample there would jump.
    seam = np.abs(joined[8] - joined[7]).max()
    natural = np.abs(np.diff(first, axis=0)).max()
    switch = np.abs(other[8] - first[7]).max()
    assert seam <= natural + 0.5, (seam, natural)
    assert seam < switch, (seam, switch)
