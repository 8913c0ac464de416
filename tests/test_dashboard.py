"""The dashboard: its view of the bus and its control rules (unit), and the page itself in headless
Chromium against a real hub, the replay of datasets/lift and the dashboard process (end to end).

Chromium is Debian's package (`scripts/install_browser.sh`, run here when /usr/bin/chromium is
missing), driven by Playwright's Python package; `playwright install` is never used.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from bus import BusConfig, Message, Publisher, Subscriber, topics
from bus.clock import now
from workers.dashboard.config import DashboardConfig
from workers.dashboard.view import SIM_RECENT, BusView, drops_of
from workers.dashboard.web import Pages, is_loopback_address, make_app, parse_command

from conftest import DEADLINE, REPO, Proc, bus_args, wait_until

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = REPO / "artifacts"


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


# -- end to end: hub + replay + dashboard + headless Chromium --------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> Path:
    if not CHROMIUM.exists():
        done = subprocess.run(
            ["bash", str(REPO / "scripts" / "install_browser.sh")],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if done.returncode != 0 or not CHROMIUM.exists():
            pytest.fail(
                "no /usr/bin/chromium and scripts/install_browser.sh could not install "
                f"it:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    return CHROMIUM


@pytest.fixture
def browser(chromium: Path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class FakeControlLoop(threading.Thread):
    """Stands in for control, policy, recorder (not on this bus yet): commands the replayed
    state plus an offset, a chunk ahead, and health reports, so every panel has something."""

    def __init__(self, cfg: BusConfig):
        super().__init__(daemon=True, name="fake-control")
        self.cfg = cfg
        self.stop = threading.Event()

    def run(self) -> None:
        pub = Publisher(self.cfg, "control")
        sub = Subscriber(self.cfg, [topics.state("arm")], mode="latest")
        ticks = 0
        try:
            while not self.stop.wait(1 / 15):
                msg = sub.take(topics.state("arm"))
                if msg is None:
                    continue
                position = msg.arrays["position"]
                t = now()
                pub.publish(
                    topics.action("arm"),
                    {"goal": position + np.float32(3)},
                    {"t_exec": t, "t_obs": msg.t_cap},
                )
                if ticks % 8 == 0:
                    ramp = np.linspace(0, 15, 30, dtype=np.float32)[:, None]
                    pub.publish(
                        topics.chunk("lift"),
                        {"actions": position[None, :] + ramp},
                        {"t_obs": t, "dt": 1 / 30, "arms": ["arm"], "latency_s": 0.08},
                    )
                if ticks % 15 == 0:
                    pub.publish(
                        topics.health("policy-lift"),
                        data={
                            "process": "policy-lift",
                            "uptime_s": ticks / 15,
                            "last_error": None,
                            "task": "lift",
                            "served": ticks // 8,
                            "errors": 0,
                            "device": "cpu",
                            "latency_p50_ms": 81.5,
                            "latency_p99_ms": 97.0,
                        },
                    )
                    pub.publish(
                        topics.health("control"),
                        data={
                            "process": "control",
                            "uptime_s": ticks / 15,
                            "last_error": None,
                            "rate_hz": 15.0,
                            "stalls": 0,
                            "holds": 1,
                            "late_actions": 0,
                        },
                    )
                    pub.publish(
                        topics.health("recorder"),
                        data={
                            "process": "recorder",
                            "uptime_s": ticks / 15,
                            "last_error": None,
                            "state": "idle",
                            "backlog": 0,
                            "episodes_written": 0,
                        },
                    )
                if ticks == 30:
                    pub.publish(
                        topics.event("hold"),
                        data={"arm": "arm", "holding": False, "reason": "fresh goals again"},
                    )
                ticks += 1
        finally:
            sub.close()
            pub.close(linger=0)


PIXELS_JS = """(img) => {
    const c = document.createElement('canvas');
    c.width = img.naturalWidth; c.height = img.naturalHeight;
    const ctx = c.getContext('2d');
    ctx.drawImage(img, 0, 0);
    const d = ctx.getImageData(0, 0, c.width, c.height).data;
    let sum = 0, lo = 255, hi = 0;
    for (let i = 0; i < d.length; i += 4) {
        sum += d[i]; lo = Math.min(lo, d[i]); hi = Math.max(hi, d[i]);
    }
    return {w: c.width, h: c.height, mean: sum / (d.length / 4), spread: hi - lo,
            frame: img.dataset.frame};
}"""


def test_dashboard_page_end_to_end(bus_cfg: BusConfig, hub: Proc, procs, browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    replay = procs("replay", "-m", "workers.replay", "--task=lift", *bus_args(bus_cfg))
    dashboard = procs("dashboard", "-m", "workers.dashboard", f"--port={port}", *bus_args(bus_cfg))
    dashboard.wait_for_output("ready: dashboard on")
    replay.wait_for_output("ready: replaying")
    fake = FakeControlLoop(bus_cfg)
    fake.start()
    listener = Subscriber(bus_cfg, [topics.event("estop"), topics.event("record")], mode="every")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        page.goto(url)
        # camera images render: a real (non-blank) picture, and it changes
        page.wait_for_function(
            "() => { const i = document.querySelector('.cam img');"
            " return i && i.complete && i.naturalWidth > 0 && window.dash.frames >= 2; }",
            timeout=DEADLINE * 1000,
        )
        img = page.locator(".cam[data-camera=front] img")
        first = img.evaluate(PIXELS_JS)
        assert first["w"] == 320 and first["h"] == 240, first  # downscaled from 640x480
        assert first["spread"] > 30, first  # a picture, not a blank frame
        wait_until(
            lambda: img.evaluate(PIXELS_JS)["frame"] != first["frame"],
            what="a newer camera frame on the page",
        )
        # plots update: the shoulder_pan canvas redraws with new pixels; the chunk arrives
        canvas = page.locator(".arm[data-arm=arm] canvas").first
        page.wait_for_function(
            "() => window.dash.draws > 5 && window.dash.updates > 5", timeout=DEADLINE * 1000
        )
        before = canvas.evaluate("(c) => c.toDataURL()")
        wait_until(
            lambda: canvas.evaluate("(c) => c.toDataURL()") != before,
            what="the joint plot to change",
        )
        page.wait_for_function(
            "() => document.querySelector('#processes [data-process=replay]')"
            " && document.querySelector('#policies table')"
            " && /lift/.test(document.querySelector('#episode').textContent)",
            timeout=DEADLINE * 1000,
        )
        assert "81.5 ms" in page.locator("#policies").inner_text()

        # e-stop: the press goes out on the bus, and the page says someone listened
        page.click("#estop")
        estop = wait_until(lambda: listener.recv(0.1), what="event/estop on the bus")
        assert estop.topic == "event/estop"
        assert estop.data["engaged"] is True and estop.data["source"] == "dashboard"
        page.wait_for_function(
            "() => /someone is listening/.test(document.querySelector('#toast').textContent)",
            timeout=DEADLINE * 1000,
        )
        page.wait_for_selector("#estop-banner:not([hidden])", timeout=DEADLINE * 1000)
        page.fill("#task", "lift")
        page.click("#rec-start")
        record = wait_until(lambda: listener.recv(0.1), what="event/record on the bus")
        assert record.topic == "event/record" and record.data == {
            "command": "start",
            "task": "lift",
        }
        time.sleep(1.5)  # let the plots fill in for the screenshot
        page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
        page.click("#estop-clear")
        clear = wait_until(lambda: listener.recv(0.1), what="the e-stop clear on the bus")
        assert clear.data["engaged"] is False
        page.wait_for_selector("#estop-banner", state="hidden", timeout=DEADLINE * 1000)

        # the server goes away: the page says so, and comes back when it does
        dashboard.stop()
        page.wait_for_selector("#offline:not([hidden])", timeout=DEADLINE * 1000)
        assert "Lost the connection" in page.locator("#offline").inner_text()
        page.screenshot(path=str(ARTIFACTS / "dashboard-offline.png"))
        again = procs(
            "dashboard-again", "-m", "workers.dashboard", f"--port={port}", *bus_args(bus_cfg)
        )
        again.wait_for_output("ready: dashboard on")
        page.wait_for_selector("#offline", state="hidden", timeout=DEADLINE * 1000)
        assert page.evaluate("window.dash.connects") >= 2
        assert not errors, errors
    finally:
        page.close()
        fake.stop.set()
        fake.join(5)
        listener.close()
    for proc in (replay, dashboard):
        assert "Traceback" not in proc.output(), proc.output()


def rgb(page, selector: str) -> tuple[int, ...]:
    # One evaluation that finds and reads the element: it is never a node the page replaced.
    css = page.evaluate("(sel) => getComputedStyle(document.querySelector(sel)).color", selector)
    return tuple(int(x) for x in css[css.index("(") + 1 : css.index(")")].split(",")[:3])


def test_dashboard_page_shows_simulated_outcomes(
    bus_cfg: BusConfig, hub: Proc, procs, browser
) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    port = free_port()
    dashboard = procs("dashboard", "-m", "workers.dashboard", f"--port={port}", *bus_args(bus_cfg))
    dashboard.wait_for_output("ready: dashboard on")
    sim = Publisher(bus_cfg, "sim")
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    box = page.locator("#sim")

    def shows(pattern: str, selector: str = "#sim") -> None:
        page.wait_for_function(
            "([sel, re]) => new RegExp(re).test(document.querySelector(sel).textContent)",
            arg=[selector, pattern],
            timeout=DEADLINE * 1000,
        )

    try:
        page.goto(f"http://127.0.0.1:{port}/")
        page.wait_for_function("() => window.dash.updates > 0", timeout=DEADLINE * 1000)
        assert "no simulator" in box.inner_text()
        # the dashboard's subscription has reached the hub: nothing published is lost
        assert sim.wait_for_subscriber(topics.event("sim"), DEADLINE)
        sim.publish(topics.event("sim"), data=sim_start(3, 3))
        shows(r"running episode 3 \(seed 3\)")
        sim.publish(topics.event("sim"), data=sim_outcome(3, 3, success=True))
        shows("SUCCESS")
        outcome = box.locator(".outcome")
        assert outcome.inner_text() == f"episode 3 (seed 3): SUCCESS in 3.2 s — {LIFTED}"
        assert "successes 1 / 1" in box.locator(".tally").inner_text()
        green = rgb(page, "#sim .outcome")
        sim.publish(topics.event("sim"), data=sim_start(4, 4))
        sim.publish(topics.event("sim"), data=sim_outcome(4, 4, success=False, time_s=30.0))
        shows("FAILURE")
        assert outcome.inner_text() == (
            "episode 4 (seed 4): FAILURE after 30.0 s — timeout after 30 s"
        )
        assert "successes 1 / 2" in box.locator(".tally").inner_text()
        assert box.locator(".chip").count() == 2
        red = rgb(page, "#sim .outcome")
        assert green[1] > green[0] and red[0] > red[1], (green, red)  # green, then red
        # the event log lists them too, an outcome coloured by its verdict
        shows("event/sim", "#events")
        assert page.locator("#events li.bad", has_text="event/sim").count() == 1
        assert page.locator("#events li.ok", has_text="event/sim").count() == 1
        # the control loop's stop marker carries the same verdict: the episode panel shows it
        assert sim.wait_for_subscriber(topics.event("episode"), DEADLINE)
        sim.publish(
            topics.event("episode"),
            data={
                "phase": "stop",
                "episode": 4,
                "task": "lift",
                "seed": 4,
                "source": "control",
                "outcome": {
                    k: v
                    for k, v in sim_outcome(4, 4, False, 30.0).items()
                    if k in ("success", "reason", "time_s")
                },
            },
        )
        shows("FAILURE after 30.0 s", "#episode")
        assert "seed 4" in page.locator("#episode").inner_text()
        page.locator("#sim").locator("xpath=..").screenshot(
            path=str(ARTIFACTS / "dashboard-sim.png")
        )
        assert not errors, errors
    finally:
        page.close()
        sim.close(linger=0)
    assert "Traceback" not in dashboard.output(), dashboard.output()
