"""What a recording holds: joints, cameras, per-stream timing columns, as lerobot features."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.so101 import IMAGES_PREFIX, JOINTS

log = logging.getLogger(__name__)

TIME_PREFIX = "time."  # outside observation.*: lerobot-train would take it for a state input


def joint_names(arms: Sequence[str]) -> list[str]:
    """State/action names as lerobot's SO-101 datasets spell them: `shoulder_pan.pos` for one
    arm named `arm`, `left_shoulder_pan.pos` ... for `left_arm` / `right_arm`."""
    names = []
    for arm in arms:
        prefix = "" if arm == "arm" else arm.removesuffix("_arm") + "_"
        names.extend(f"{prefix}{j}.pos" for j in JOINTS)
    return names


def time_key(stream: str) -> str:
    """`camera/front` -> `time.camera.front` (lerobot feature names may not hold '/')."""
    return TIME_PREFIX + stream.replace("/", ".")


@dataclass
class DatasetSpec:
    """What the recorded streams look like, in the dataset's terms."""

    fps: int
    cameras: list[str]
    arms: list[str]
    robot_type: str | None = None
    # Streams whose capture time is kept per frame (`time.<family>.<name>`, float64).
    time_streams: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return joint_names(self.arms)

    def features(self, image_hw: dict[str, tuple[int, int]] | None = None) -> dict[str, dict]:
        """lerobot features; camera shapes from `image_hw` (left out when not known yet)."""
        names = self.names
        feats: dict[str, dict] = {
            "observation.state": {"dtype": "float32", "shape": (len(names),), "names": names},
            "action": {"dtype": "float32", "shape": (len(names),), "names": names},
        }
        for cam in self.cameras:
            h, w = (image_hw or {}).get(cam, (None, None))
            feats[IMAGES_PREFIX + cam] = {
                "dtype": "video",
                "shape": (h, w, 3),
                "names": ["height", "width", "channels"],
            }
        for stream in self.time_streams:
            feats[time_key(stream)] = {"dtype": "float64", "shape": (1,), "names": None}
        return feats


def feature_differences(
    existing: dict, fps: int, spec: DatasetSpec, image_hw: dict[str, tuple[int, int]] | None = None
) -> list[str]:
    """How a dataset's `info.json` differs from what `spec` records (empty: compatible).
    Camera shapes are compared only when `image_hw` is given."""
    from lerobot.utils.constants import DEFAULT_FEATURES

    wanted = spec.features(image_hw)
    have = {k: v for k, v in existing.get("features", {}).items() if k not in DEFAULT_FEATURES}
    diffs = []
    if int(existing.get("fps", -1)) != int(fps):
        diffs.append(f"fps: folder {existing.get('fps')}, recorder {fps}")
    missing = sorted(set(wanted) - set(have))
    extra = sorted(set(have) - set(wanted))
    if missing:
        diffs.append(f"recorded here but not in the folder: {', '.join(missing)}")
    if extra:
        diffs.append(f"in the folder but not recorded here: {', '.join(extra)}")
    for key in sorted(set(wanted) & set(have)):
        w, h = wanted[key], have[key]
        if w["dtype"] != h["dtype"]:
            diffs.append(f"{key}: dtype {h['dtype']} in the folder, {w['dtype']} here")
            continue
        w_shape, h_shape = list(w["shape"]), list(h["shape"])
        if None in w_shape:  # camera size not known yet
            continue
        if w_shape != h_shape:
            diffs.append(f"{key}: shape {h_shape} in the folder, {w_shape} here")
        elif w.get("names") is not None and list(w["names"]) != list(h.get("names") or []):
            diffs.append(f"{key}: names {h.get('names')} in the folder, {w['names']} here")
    return diffs
