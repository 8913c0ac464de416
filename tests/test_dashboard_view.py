"""The dashboard's view of the bus (what it shows of chunks, health, simulated episodes and
drops) and its control rules (who may press the buttons), without a browser or a hub.
The page itself, end to end in headless Chromium, is test_dashboard.py.
"""

from __future__ import annotations

import asyncio
import json
import logging

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bus import Message
from bus.clock import now
from workers.dashboard.config import DashboardConfig
from workers.dashboard.values import drops_of
from workers.dashboard.view import SIM_RECENT, BusView
from workers.dashboard.web import Pages, is_loopback_address, make_app, parse_command


# -- unit: the view ---------------------------------------------------------------------------
def _msg(
    topic: str,
    arrays: dict | None = None,
    data: dict | None = None,
    seq: int = 0,
    t: float | None = None,
    src: str = "test",
) -> Message:
    t = now() if t is None else t
    return Message(topic, arrays or {}, data or {}, src=src, seq=seq, t_cap=t, t_send=t)


def test_view_maps_chunks_to_arms_and_reports_health() -> None:
    view = BusView(history_s=5.0, alive_s=3.0)
    t = now()
    view.on_message(
        _msg(
            "state/left_arm",
            {"position": np.zeros(6, np.float32)},
            {"names": [f"j{i}.pos" for i in range(6)]},
            t=t,
        ),
        seen=100.0,
    )
    chunk = np.arange(40 * 12, dtype=np.float32).reshape(40, 12)
    view.on_message(_msg("chunk/sort", {"actions": chunk}, {"t_obs": t, "dt": 1 / 30}), 100.0)
    view.on_message(
        _msg(
            "health/servo",
            data={
                "process": "servo",
                "uptime_s": 3.0,
                "last_error": None,
                "rate_hz": 30.0,
                "drops": {"bus_lost": 2, "bus_bad": 0},
                "bus": {"lost": 2, "skipped": 9},
                "arms": {"left_arm": {"estop": True}},
                "latency": float("nan"),
            },
        ),
        seen=100.0,
    )
    view.on_message(
        _msg(
            "event/process",
            data={"process": "policy-sort", "state": "EXITED", "from_state": "RUNNING", "pid": 12},
        ),
        100.0,
    )
    snap = view.snapshot(now_mono=101.0)
    json.dumps(snap, allow_nan=False)  # what goes to the page is plain JSON
    (c,) = snap["chunks"]
    # no `arms` in the chunk's data: the task's own (sort: left_arm, right_arm) split the columns
    assert c["arms"] == ["left_arm", "right_arm"] and c["dt"] == pytest.approx(1 / 30)
    assert np.array(c["per_arm"]["right_arm"]).shape == (40, 6)
    assert c["per_arm"]["right_arm"][0] == [6, 7, 8, 9, 10, 11]
    rows = {p["name"]: p for p in snap["processes"]}
    assert rows["servo"]["alive"] and rows["servo"]["rate"] == 30.0
    assert rows["servo"]["drops"] == {"bus_lost": 2}  # nonzero ones
    assert rows["servo"]["data"]["latency"] is None
    assert rows["policy-sort"]["supervisor"]["exits"] == 1 and not rows["policy-sort"]["alive"]
    assert snap["estop"]["engaged"] and snap["estop"]["reported"][0]["where"] == "arms.left_arm"
    # fields nobody publishes yet are simply absent
    assert snap["control"] is None and snap["recorder"] is None and snap["episode"] is None
    assert view.snapshot(now_mono=110.0)["processes"][1]["alive"] is False  # silent: not running
    later = view.snapshot(after=snap["cursor"])
    assert later["samples"] == [] and later["chunks"] == [] and later["events"] == []


LIFTED = "cube held 5 cm above the table for 1 s"


def sim_start(episode: int, seed: int) -> dict:
    return {
        "phase": "start",
        "episode": episode,
        "seed": seed,
        "task": "lift",
        "source": "control",
        "cubes": {"red": [0.2, 0.0, 0.015]},
        "arms": {"arm": [0.0] * 6},
    }


def sim_outcome(episode: int, seed: int, success: bool, time_s: float = 3.21) -> dict:
    return {
        "phase": "outcome",
        "episode": episode,
        "seed": seed,
        "task": "lift",
        "success": success,
        "reason": LIFTED if success else "timeout after 30 s",
        "time_s": time_s,
    }


def test_view_tallies_simulated_episodes() -> None:
    view = BusView()
    assert view.snapshot()["sim"] is None  # no event/sim ever: the page says "no simulator"
    episodes = SIM_RECENT + 5
    for episode in range(episodes):
        view.on_message(_msg("event/sim", data=sim_start(episode, 100 + episode), src="sim"))
        view.on_message(
            _msg(
                "event/sim",
                data=sim_outcome(episode, 100 + episode, success=episode % 3 != 0),
                src="sim",
            )
        )
    view.on_message(_msg("event/sim", data=sim_start(episodes, 100 + episodes), src="sim"))
    # an outcome without a verdict: logged, not counted
    view.on_message(_msg("event/sim", data={"phase": "outcome", "episode": episodes}, src="sim"))
    view.on_message(
        _msg(
            "event/episode",
            data={
                "phase": "stop",
                "episode": 7,
                "task": "lift",
                "seed": 107,
                "outcome": {"success": True, "reason": LIFTED, "time_s": 3.21},
            },
            src="control",
        )
    )
    snap = view.snapshot()
    json.dumps(snap, allow_nan=False)
    sim = snap["sim"]
    failures = len(range(0, episodes, 3))
    assert (sim["successes"], sim["failures"]) == (episodes - failures, failures)
    # a reset came after the newest outcome: that episode runs, the outcome is the previous one's
    assert sim["running"] and sim["start"]["episode"] == episodes
    assert sim["start"]["seed"] == 100 + episodes and "cubes" not in sim["start"]
    last = episodes - 1
    assert {k: sim["outcome"][k] for k in ("episode", "seed", "success", "reason", "time_s")} == {
        "episode": last,
        "seed": 100 + last,
        "success": last % 3 != 0,
        "reason": LIFTED if last % 3 else "timeout after 30 s",
        "time_s": 3.21,
    }
    assert [o["episode"] for o in sim["recent"]] == list(range(episodes - SIM_RECENT, episodes))
    assert sum(e["topic"] == "event/sim" for e in snap["events"]) == 2 * episodes + 2
    assert snap["episode"]["outcome"]["success"] and snap["episode"]["seed"] == 107
    # the outcome lands as the episode ends: only the newest outcome line changes
    view.on_message(_msg("event/sim", data=sim_outcome(episodes, 100 + episodes, True), src="sim"))
    sim = view.snapshot()["sim"]
    assert not sim["running"] and sim["outcome"]["episode"] == episodes
    assert sim["successes"] == episodes - failures + 1 and len(sim["recent"]) == SIM_RECENT


def test_drops_and_commands() -> None:
    health = {"drops": {"dropped": 0, "late_frames": 3}, "max_lag_ms": 9.0, "frames": 10}
    assert drops_of(health) == {"late_frames": 3}
    assert drops_of({"late_frames": 3}) == {}  # only the envelope's drops: no guessing
    assert parse_command("estop", {}) == {
        "engaged": True,
        "reason": "pressed on the dashboard",
        "source": "dashboard",
    }
    assert parse_command("estop", {"engaged": False})["engaged"] is False
    assert parse_command("record", {"command": "start", "task": "lift"}) == {
        "command": "start",
        "task": "lift",
    }
    for kind, body in [
        ("estop", {"engaged": "yes"}),
        ("record", {"command": "go"}),
        ("record", {"command": "start"}),
        ("record", {"command": "start", "task": "<script>"}),
    ]:
        with pytest.raises(ValueError):
            parse_command(kind, body)


# -- unit: who may press the buttons ----------------------------------------------------------
class FakeControl:
    def __init__(self):
        self.sent: list[tuple[str, dict]] = []

    async def send(self, topic: str, data: dict) -> bool:
        self.sent.append((topic, data))
        return True


@web.middleware
async def pretend_peer(request: web.Request, handler):
    """Lets a test say which machine (and Host name) a request comes from."""
    remote = request.headers.get("X-Test-Remote", request.remote)
    return await handler(request.clone(remote=remote))


def press(
    cfg: DashboardConfig,
    remote: str = "127.0.0.1",
    body: object = None,
    headers: dict | None = None,
) -> tuple[int, dict, FakeControl]:
    control = FakeControl()
    view = BusView()
    app = make_app(cfg, view, Pages(view), control, logging.getLogger("test"))
    app.middlewares.append(pretend_peer)

    async def go() -> tuple[int, dict]:
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            resp = await client.post(
                "/api/estop",
                json={"engaged": True} if body is None else body,
                headers={"X-Test-Remote": remote, **(headers or {})},
            )
            return resp.status, await resp.json()

    status, reply = asyncio.run(go())
    return status, reply, control


def test_controls_refused_from_other_machines() -> None:
    assert is_loopback_address("127.0.0.1") and is_loopback_address("::1")
    assert is_loopback_address("::ffff:127.0.0.1")
    assert not is_loopback_address("10.1.2.3") and not is_loopback_address(None)

    status, reply, control = press(DashboardConfig(), remote="10.1.2.3")
    assert status == 403 and "only from the machine" in reply["error"] and not control.sent
    status, reply, control = press(DashboardConfig())
    assert (
        status == 200
        and reply["heard"]
        and control.sent
        == [
            (
                "event/estop",
                {"engaged": True, "reason": "pressed on the dashboard", "source": "dashboard"},
            )
        ]
    )
    # a page from elsewhere in the local browser (cross-site), or a rebound DNS name: refused
    assert press(DashboardConfig(), headers={"Origin": "http://evil.example"})[0] == 403
    assert press(DashboardConfig(), headers={"Host": "evil.example:9000"})[0] == 403
    # configured: other machines may press
    status, _, control = press(
        DashboardConfig(allow_remote_control=True),
        remote="10.1.2.3",
        headers={"Host": "robot-pc:9000"},
    )
    assert status == 200 and control.sent
    status, reply, control = press(DashboardConfig(), body={"engaged": 1})
    assert status == 400 and "engaged" in reply["error"] and not control.sent
