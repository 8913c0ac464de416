"""A lerobot checkpoint with random weights: the real architecture and lerobot's own files
(config, weights, processors), nothing learned. For tests and benchmarks, which need a policy
of a given shape without training one."""

from __future__ import annotations

import os

# Before lerobot/huggingface_hub are imported: nothing here may reach for the network.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from collections.abc import Mapping  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

from core.so101 import IMAGES_PREFIX, STATE_KEY  # noqa: E402


def save_random_checkpoint(
    path: str | Path,
    policy_type: str,
    cameras: Mapping[str, tuple],
    state_dim: int,
    action_dim: int,
    seed: int = 0,
    **config,
) -> Path:
    """Write a lerobot `pretrained_model` folder with random weights and neutral statistics.
    `cameras` maps feature names' suffixes to (H, W)."""
    from lerobot.configs.types import FeatureType, PolicyFeature
    from lerobot.policies.factory import (
        get_policy_class,
        make_policy_config,
        make_pre_post_processors,
    )

    torch.manual_seed(seed)
    inputs = {
        f"{IMAGES_PREFIX}{name}": PolicyFeature(FeatureType.VISUAL, (3, h, w))
        for name, (h, w) in cameras.items()
    }
    inputs[STATE_KEY] = PolicyFeature(FeatureType.STATE, (state_dim,))
    outputs = {"action": PolicyFeature(FeatureType.ACTION, (action_dim,))}
    cfg = make_policy_config(
        policy_type,
        input_features=inputs,
        output_features=outputs,
        device="cpu",
        pretrained_backbone_weights=None,
        **config,
    )
    policy = get_policy_class(policy_type)(cfg)

    def vector(n: int, lo: float, hi: float) -> dict[str, torch.Tensor]:
        return {
            "min": torch.full((n,), lo),
            "max": torch.full((n,), hi),
            "mean": torch.zeros(n),
            "std": torch.ones(n),
        }

    stats = {STATE_KEY: vector(state_dim, -180, 180), "action": vector(action_dim, -180, 180)}
    for key in (k for k in inputs if k.startswith(IMAGES_PREFIX)):
        stats[key] = {
            "mean": torch.full((3, 1, 1), 0.5),
            "std": torch.full((3, 1, 1), 0.25),
            "min": torch.zeros(3, 1, 1),
            "max": torch.ones(3, 1, 1),
        }
    pre, post = make_pre_post_processors(cfg, dataset_stats=stats)
    out = Path(path)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    return out
