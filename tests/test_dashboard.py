"""The dashboard page in headless Chromium against a real hub, the replay of datasets/lift and
the dashboard process (end to end). Its view and control rules alone: test_dashboard_view.py.

Chromium is Debian's package (`scripts/install_browser.sh`, run here when /usr/bin/chromium is
missing), driven by Playwright's Python package; `playwright install` is never used.
"""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bus import BusConfig, Publisher, Subscriber, topics
from bus.clock import now

from conftest import DEADLINE, REPO, Proc, bus_args, wait_until
from test_dashboard_view import LIFTED, sim_outcome, sim_start

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
    // null while the next frame is being swapped in (no size yet): the caller asks again
    if (!img.complete || img.naturalWidth === 0) return null;
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
        first = wait_until(lambda: img.evaluate(PIXELS_JS), what="a decoded camera frame")
        assert first["w"] == 320 and first["h"] == 240, first  # downscaled from 640x480
        assert first["spread"] > 30, first  # a picture, not a blank frame
        wait_until(
            lambda: img.evaluate("(img) => img.dataset.frame") != first["frame"],
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
