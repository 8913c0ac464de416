"""Diffusion Policy chunks that continue the actions already committed: inpainting.

Two independently sampled chunks of a multimodal policy can be two different plans; blending
them at the seam makes the arm hesitate. Real-time chunking (Black, Galliker, Levine 2025)
steers each new chunk to agree with the actions already committed; lerobot ships it for its
flow-matching policies only. For Diffusion Policy the same end is reached without retraining by
RePaint-style inpainting (Lugmayr et al. 2022): after every denoising step, the prefix part of
the trajectory is replaced by the prefix noised to the step's level, so the model denoises the
rest to fit it.

Everything runs through lerobot's own model: its UNet, its noise scheduler (DDIM or DDPM) and
its normalizer for the prefix. lerobot's `conditional_sample` has no hook inside its loop, so
the one hook is here: for the duration of one call the scheduler's `step` is wrapped to apply
the prefix after lerobot's step. With no prefix nothing is wrapped and the output is lerobot's.
Soft weights after the committed part follow lerobot's own RTC prefix schedule (LINEAR).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch


class PrefixError(ValueError):
    """A prefix that does not fit the policy; the message names what is wrong."""


@dataclass
class Prefix:
    """Actions the new chunk must continue, in robot units.

    `actions[j]` is meant for chunk index `start + j` (index 0 = the observation's time). The
    first `committed` of them will run whatever the policy says (they are weighted 1); the rest
    are the current plan beyond that, which the new chunk leans towards with weights falling
    linearly to 0 (RTC's soft prefix)."""

    actions: np.ndarray  # (n, action_dim) float32
    start: int = 0
    committed: int | None = None  # None: all of them

    @property
    def hard(self) -> int:
        n = len(self.actions)
        return n if self.committed is None else min(max(self.committed, 0), n)


def check_prefix(prefix: Prefix, action_dim: int, positions: int) -> None:
    """Raise PrefixError naming the problem: shape, values or room in the chunk."""
    a = prefix.actions
    if not isinstance(a, np.ndarray) or a.ndim != 2 or a.shape[1] != action_dim:
        shape = tuple(a.shape) if isinstance(a, np.ndarray) else type(a).__name__
        raise PrefixError(f"prefix has shape {shape}, expected (n, {action_dim})")
    if not np.isfinite(a).all():
        raise PrefixError("prefix contains NaN or inf")
    if prefix.start < 0:
        raise PrefixError(f"prefix_start {prefix.start} is negative")
    if prefix.start + len(a) > positions:
        raise PrefixError(
            f"prefix covers chunk indices {prefix.start}..{prefix.start + len(a) - 1}, but the "
            f"policy plans only {positions} actions from the observation on"
        )


def prefix_weights(n: int, hard: int) -> torch.Tensor:
    """1 for the committed actions, then lerobot's LINEAR RTC schedule down to 0."""
    from lerobot.configs import RTCAttentionSchedule
    from lerobot.policies.rtc.configuration_rtc import RTCConfig
    from lerobot.policies.rtc.modeling_rtc import RTCProcessor

    rtc = RTCProcessor(RTCConfig(prefix_attention_schedule=RTCAttentionSchedule.LINEAR))
    return rtc.get_prefix_weights(hard, n, n).float()


class DiffusionInpainter:
    """Conditions a lerobot DiffusionPolicy's sampling on a prefix, for one call at a time."""

    def __init__(self, policy: torch.nn.Module, normalizer):
        self.model = policy.diffusion
        self.config = policy.config
        self.normalizer = normalizer  # lerobot's NormalizerProcessorStep for the action
        # The trajectory spans the observation history: chunk index 0 is horizon index
        # n_obs_steps - 1 (what generate_actions slices from).
        self.offset = self.config.n_obs_steps - 1
        self.positions = self.config.horizon - self.offset
        self.action_dim = self.config.action_feature.shape[0]

    def _normalized(self, actions: np.ndarray, device: torch.device) -> torch.Tensor:
        from lerobot.processor import TransitionKey, create_transition

        # A copy: a prefix off the bus is a read-only view, which torch warns about wrapping.
        t = torch.from_numpy(np.array(actions, np.float32))[None]
        return self.normalizer(create_transition(action=t))[TransitionKey.ACTION].to(device)

    @contextmanager
    def conditioned(
        self,
        prefix: Prefix,
        noise: torch.Tensor | None = None,
        noise_scale: float = 1.0,
    ) -> Iterator[torch.Tensor]:
        """Within the block, lerobot's sampling keeps `prefix`; yields the initial noise to pass
        to `predict_action_chunk` (`noise` or fresh, its prefix part noised to the first step's
        level). `noise_scale` scales the noise the prefix is given at each step as the policy
        runner scales the initial noise, so both parts of the trajectory share a temperature."""
        check_prefix(prefix, self.action_dim, self.positions)
        scheduler = self.model.noise_scheduler
        device = next(self.model.parameters()).device
        # Its own random stream: DDPM's step draws from the global one, which must see the
        # same draws as without a prefix.
        generator = torch.Generator(device).manual_seed(int.from_bytes(os.urandom(4), "big"))
        shape = (1, self.config.horizon, self.action_dim)
        known = torch.zeros(shape, device=device)
        weight = torch.zeros((1, self.config.horizon, 1), device=device)
        first = self.offset + prefix.start
        span = slice(first, first + len(prefix.actions))
        known[:, span] = self._normalized(prefix.actions, device)
        weight[0, span, 0] = prefix_weights(len(prefix.actions), prefix.hard).to(device)

        # conditional_sample sets the same timesteps again; they are needed here first.
        scheduler.set_timesteps(self.model.num_inference_steps)
        timesteps = [int(t) for t in scheduler.timesteps]
        following = dict(zip(timesteps, timesteps[1:] + [None], strict=True))

        def noised(level: int | None) -> torch.Tensor:
            if level is None:
                return known  # the last step's output is the clean trajectory
            eps = noise_scale * torch.randn(shape, device=device, generator=generator)
            return scheduler.add_noise(known, eps, torch.tensor([level], device=device))

        def merge(sample: torch.Tensor, level: int | None) -> torch.Tensor:
            return weight * noised(level) + (1 - weight) * sample

        lerobot_step = scheduler.step

        def step_keeping_prefix(model_output, t, sample, *args, **kwargs):
            out = lerobot_step(model_output, t, sample, *args, **kwargs)
            out.prev_sample = merge(out.prev_sample, following[int(t)])
            return out

        if noise is None:
            noise = noise_scale * torch.randn(shape, device=device, generator=generator)
        scheduler.step = step_keeping_prefix  # an instance attribute shadows the method
        try:
            yield merge(noise, timesteps[0])
        finally:
            del scheduler.step
