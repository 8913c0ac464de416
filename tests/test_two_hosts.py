"""The policy on another host: two network namespaces, the README's CurveZMQ recipe, a cut link.

scripts/two_hosts.py does the work (it is what a user runs to try it); this test runs it and
checks what it reports and that it leaves no namespace behind.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_policy_served_from_another_host_over_curvezmq(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "scripts/two_hosts.py", "--log-dir", str(tmp_path), "--cut-s", "5"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=280,
    )
    print(done.stdout)  # the figures (bytes per second per camera) go to the test log
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    # Actions flow end to end, every chunk from the worker on the policy host.
    assert report["chunks_from"] == ["remote"]
    assert report["link_bytes_per_s_per_camera"] > 0
    # No key / a key off the allow-list: nothing through, and both sides say why.
    assert report["live_workers_with_intruders"] == {"policy/lift": 1}
    assert report["intruder_chunks"] == []
    assert "got nothing through" in report["hub_says"]
    assert "not on the hub's allow-list" in report["policy-intruder_says"]
    assert "lets nothing through" in report["policy-nokey_says"]
    # A cut link: a hold that names the policy, the worker gone from the hub; then back.
    assert any("policy" in reason for reason in report["hold_reasons"]), report["hold_reasons"]
    assert report["worker_gone_after_s"] > 0 and report["remote_resume_s"] > 0
    assert report["worker_back_after_s"] > 0
    assert report["restarted"] == []
    namespaces = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(ns in namespaces for ns in report["namespaces"])
