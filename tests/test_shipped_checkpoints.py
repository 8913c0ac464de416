"""The checkpoints the project ships: they load offline, fit their task, and beat a baseline."""

from __future__ import annotations

import numpy as np
import pytest

from drivers.policy import PolicyRunner
from drivers.replay import DatasetReplay
from scripts.train_policy import HELD_OUT
from workers.tasks import TASKS

SHIPPED = list(TASKS)  # every task ships a trained checkpoint in checkpoints/


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoint_beats_the_mean_action_on_held_out_frames(name: str) -> None:
    task = TASKS[name]
    runner = PolicyRunner(task.checkpoint, arms=list(task.arms))
    assert runner.type == "diffusion" and runner.action_dim == task.action_dim
    replay = DatasetReplay(task.dataset)
    train, held_out = replay.episodes[:-HELD_OUT], replay.episodes[-HELD_OUT:]

    def actions(ep: int) -> np.ndarray:
        rec = replay.recorded_actions(ep)
        return np.concatenate([rec[a] for a in task.arms], axis=1)

    mean_action = np.concatenate([actions(ep) for ep in train]).mean(axis=0)
    policy_err, mean_err = [], []
    recorded = actions(held_out[0])
    for step in replay.steps(held_out[0]):
        if step.index % 10:
            continue
        chunk = runner.infer(step.images, step.states)
        assert chunk.actions.shape == (16, task.action_dim)
        lo, hi = chunk.normalized_range
        assert -1.0 - 1e-5 <= lo <= hi <= 1.0 + 1e-5  # the user's "normalized within [-1, 1]"
        future = recorded[step.index : step.index + 16]
        policy_err.append(np.abs(chunk.actions[: len(future)] - future).mean())
        mean_err.append(np.abs(mean_action - future).mean())
    replay.close()
    assert np.mean(policy_err) < np.mean(mean_err), (np.mean(policy_err), np.mean(mean_err))
