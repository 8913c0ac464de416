"""A trained Diffusion Policy's weights, ready to start a new run at another image size.

A run at 48x64 learns the task ~3x faster on a CPU than one at 96x128, but its image encoder
ends in a 2x2 feature map: too coarse to place a 3 cm cube. Every weight of the encoder and of
the UNet is the same shape at either size; only the spatial-softmax coordinate grid (a buffer
computed from the feature map's size) differs. So a 96x128 run can start from the 48x64 run's
weights (progressive resizing) instead of from scratch: `scripts/train_policy.py --init-from`.

The new folder is built with lerobot's own code: the policy is constructed at the new size (its
grids come from lerobot), every other tensor is copied from the source, and it is saved with
`save_pretrained`, the processors copied beside it (lerobot-train replaces their statistics
with the dataset's).
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

GRID_SUFFIX = "pos_grid"  # SpatialSoftmax's buffer: what a new image size may change


def prepare_warm_start(
    src: Path, dst: Path, image_size: tuple[int, int], crop_ratio: float = 1.0
) -> list[str]:
    """Write `src`'s weights, with the policy resized to `image_size` (and cropped to
    `crop_ratio` of it, lerobot's `crop_ratio`), to `dst` (replaced).
    Returns the tensors rebuilt for the new size rather than copied. SystemExit naming what
    does not fit: not a diffusion checkpoint, or a weight whose shape the size would change."""
    from lerobot.configs.policies import PreTrainedConfig
    from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy
    from safetensors.torch import load_file

    if not (src / "config.json").is_file() or not (src / "model.safetensors").is_file():
        raise SystemExit(f"warm start: {src} is not a checkpoint (config.json, model.safetensors)")
    config = PreTrainedConfig.from_pretrained(src)
    if config.type != "diffusion":
        raise SystemExit(f"warm start: {src} is a {config.type} policy, not diffusion")
    # replace() runs the config's __post_init__, which derives the crop from size and ratio.
    config = dataclasses.replace(
        config,
        resize_shape=(int(image_size[0]), int(image_size[1])),
        crop_ratio=float(crop_ratio),
        device="cpu",
        pretrained_path=None,
    )
    policy = DiffusionPolicy(config)
    target = policy.state_dict()
    weights = load_file(str(src / "model.safetensors"))
    if set(weights) != set(target):
        missing, extra = sorted(set(target) - set(weights)), sorted(set(weights) - set(target))
        raise SystemExit(
            f"warm start: {src} does not match its config: missing {missing[:3]}, "
            f"unexpected {extra[:3]}"
        )
    rebuilt = [k for k in weights if weights[k].shape != target[k].shape]
    reshaped = [k for k in rebuilt if not k.endswith(GRID_SUFFIX)]
    if reshaped:
        raise SystemExit(
            f"warm start: at {image_size[0]}x{image_size[1]} these weights change "
            f"shape, so they cannot be carried over: {reshaped[:3]}"
        )
    policy.load_state_dict({k: weights[k] if k not in rebuilt else target[k] for k in target})
    if dst.exists():
        shutil.rmtree(dst)
    policy.save_pretrained(dst)
    for processor in src.glob("policy_*processor*"):
        shutil.copy2(processor, dst / processor.name)
    return rebuilt
