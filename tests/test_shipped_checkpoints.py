"""The checkpoints the project ships: they load offline, fit their task, and beat a baseline."""

from __future__ import annotations

import pytest

from drivers.policy import PolicyRunner
from drivers.replay import DatasetReplay
from scripts.eval_policy import open_loop
from scripts.train_policy import HELD_OUT
from workers.tasks import TASKS

SHIPPED = list(TASKS)  # every task ships a trained checkpoint in checkpoints/


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_beats_the_mean_action_on_held_out_frames(name: str) -> None:
    task = TASKS[name]
    runner = PolicyRunner(task.checkpoint, arms=list(task.arms))
    assert runner.type == "diffusion" and runner.action_dim == task.action_dim
    assert runner.horizon == 16
    replay = DatasetReplay(task.dataset)
    train, held_out = replay.episodes[:-HELD_OUT], replay.episodes[-HELD_OUT:]
    result = open_loop(runner, replay, held_out[:1], train, stride=10)
    replay.close()
    assert result.chunks > 0
    # The user's "normalized within [-1, 1]".
    assert -1.0 - 1e-5 <= result.normalized_lo <= result.normalized_hi <= 1.0 + 1e-5
    rows = result.table()
    assert rows["policy"]["mae"] < rows["mean action"]["mae"], rows
