"""The three tasks the project ships: which arms, cameras, checkpoint and dataset each uses.

Paths are relative to the repository root; a worker given `--task` picks its defaults here and
every one of them can be overridden on its command line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from core.so101 import JOINTS, SINGLE_ARM, TWO_ARMS

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Task:
    name: str
    arms: tuple[str, ...]
    cameras: tuple[str, ...]
    description: str

    @property
    def action_dim(self) -> int:
        return len(JOINTS) * len(self.arms)

    @property
    def checkpoint(self) -> Path:
        return REPO / "checkpoints" / f"{self.name}_real" / "checkpoint-best"

    @property
    def dataset(self) -> Path:
        return REPO / "datasets" / self.name


TASKS = {
    t.name: t
    for t in (
        Task("lift", (SINGLE_ARM,), ("front",), "lift the cube"),
        Task(
            "sort",
            TWO_ARMS,
            ("front", "left_wrist", "right_wrist"),
            "sort the cubes by colour",
        ),
        Task(
            "stack",
            TWO_ARMS,
            ("front", "left_wrist", "right_wrist"),
            "stack the red cube on the blue cube",
        ),
    )
}


def service_name(task: str) -> str:
    """The policy service of a task on the hub (one worker per task; tasks run side by side)."""
    return f"policy/{task}"


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}: choose one of {', '.join(TASKS)}") from None


def checkpoint_camera_sizes(checkpoint: Path) -> dict[str, tuple[int, int]]:
    """Camera name -> (height, width) a lerobot checkpoint was trained on (its config.json)."""
    features = json.loads((Path(checkpoint) / "config.json").read_text())["input_features"]
    return {
        key.rsplit(".", 1)[1]: (spec["shape"][1], spec["shape"][2])
        for key, spec in features.items()
        if spec.get("type") == "VISUAL"
    }
