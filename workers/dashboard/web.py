"""The dashboard's web app: routes, the WebSocket fan-out to open pages, and who may press the
control buttons (this machine only, unless allowed)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from bus import Publisher
from bus.health import HealthReporter
from bus.log import Throttle
from workers.dashboard.config import DashboardConfig
from workers.dashboard.view import CONTROL_TOPICS, STATIC, TASK_NAME, THROTTLE, BusView


# -- the pages ----------------------------------------------------------------------------------
class PageClient:
    """One open page: JSON updates in order, camera frames newest-only (a slow page skips)."""

    def __init__(self, ws: web.WebSocketResponse, remote: str):
        self.ws = ws
        self.remote = remote
        self.texts: deque[str] = deque(maxlen=100)
        self.frames: dict[str, bytes] = {}
        self.wake = asyncio.Event()
        self.sent_frames = 0

    def push_text(self, text: str) -> None:
        self.texts.append(text)
        self.wake.set()

    def push_frame(self, camera: str, payload: bytes) -> None:
        self.frames[camera] = payload
        self.wake.set()

    async def run(self) -> None:
        try:
            while not self.ws.closed:
                await self.wake.wait()
                self.wake.clear()
                while self.texts and not self.ws.closed:
                    await self.ws.send_str(self.texts.popleft())
                frames, self.frames = self.frames, {}
                for payload in frames.values():
                    if self.ws.closed:
                        break
                    await self.ws.send_bytes(payload)
                    self.sent_frames += 1
        except (ConnectionError, RuntimeError):
            pass  # the page went away; its handler cleans up


class Pages:
    def __init__(self, view: BusView):
        self.view = view
        self.clients: set[PageClient] = set()
        self.cursor = 0
        self.updates = 0
        self.frames = 0

    @property
    def count(self) -> int:
        return len(self.clients)

    def push_update(self, extra: dict) -> None:
        if not self.clients:
            self.cursor = self.view.cursor()  # a page that opens gets the history in its hello
            return
        snap = self.view.snapshot(after=self.cursor)
        self.cursor = snap["cursor"]
        try:
            text = dumps({**snap, **extra})
        except (TypeError, ValueError) as exc:  # a bug, not a reason to stop serving
            if THROTTLE.ready("dumps") is not None:
                logging.getLogger("dashboard").error("update not sent: %s", exc)
            return
        for client in self.clients:
            client.push_text(text)
        self.updates += 1

    def push_frame(self, camera: str, payload: bytes) -> None:
        for client in self.clients:
            client.push_frame(camera, payload)
        self.frames += 1

    async def close_all(self) -> None:
        for client in list(self.clients):
            await client.ws.close(code=1001, message=b"dashboard stopping")


def dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False)


# -- controls -----------------------------------------------------------------------------------
def is_loopback_address(address: str | None) -> bool:
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback_host(host: str | None) -> bool:
    """The Host header names this machine (guards against DNS rebinding)."""
    name = urlsplit(f"//{host}").hostname if host else None
    return name == "localhost" or is_loopback_address(name)


def control_refusal(request: web.Request, allow_remote: bool) -> str | None:
    """Why this request may not press a button, or None when it may."""
    if not allow_remote:
        if not is_loopback_address(request.remote):
            return (
                f"controls work only from the machine the dashboard runs on (this request "
                f"came from {request.remote}); start it with --allow_remote_control=true "
                "to allow other machines"
            )
        if not is_loopback_host(request.host):
            return f"controls need the page opened as localhost, not {request.host!r}"
    origin = request.headers.get("Origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.host:
        return f"cross-site request refused (origin {origin})"
    return None


class Control:
    """Publishes button presses; one thread owns the Publisher (ZeroMQ sockets are not
    thread-safe), and the dashboard's own health goes out through it too."""

    def __init__(self, pub: Publisher, health: HealthReporter, listener_wait_s: float):
        self.pub = pub
        self.health = health
        self.listener_wait_s = listener_wait_s
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bus-publisher")
        self.sent = 0

    def _send(self, topic: str, data: dict) -> bool:
        heard = self.pub.wait_for_subscriber(topic, self.listener_wait_s)
        self.pub.publish(topic, data=data)
        self.sent += 1
        return heard

    async def send(self, topic: str, data: dict) -> bool:
        """Publish; True when some subscriber listened to `topic` (within the wait)."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, self._send, topic, data)

    def tick_health(self) -> None:
        self.pool.submit(self.health.tick)

    def close(self) -> None:
        self.pool.submit(self.health.tick, True)
        self.pool.shutdown(wait=True)
        self.pub.close()


def parse_command(kind: str, body: Any) -> dict:
    """The message a button press publishes; ValueError says what was wrong with the body."""
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    if kind == "estop":
        engaged = body.get("engaged", True)
        if not isinstance(engaged, bool):
            raise ValueError("'engaged' must be true or false")
        reason = body.get("reason") or (
            "pressed on the dashboard" if engaged else "cleared on the dashboard"
        )
        if not isinstance(reason, str):
            raise ValueError("'reason' must be text")
        return {"engaged": engaged, "reason": reason[:200], "source": "dashboard"}
    command, task = body.get("command"), body.get("task") or ""
    if command not in ("start", "stop"):
        raise ValueError("'command' must be 'start' or 'stop'")
    if not isinstance(task, str) or (task and not TASK_NAME.match(task)):
        raise ValueError("'task' must be a task name (letters, digits, _ . -)")
    if command == "start" and not task:
        raise ValueError("which task? (fill in the task before starting a recording)")
    return {"command": command, "task": task}


# -- the web app ----------------------------------------------------------------------------------
def make_app(
    cfg: DashboardConfig, view: BusView, pages: Pages, control: Any, log: logging.Logger
) -> web.Application:
    """`control` publishes: anything with `async send(topic, data) -> heard` (tests fake it)."""
    refusals = Throttle(5.0)

    async def index(_request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def static(request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        path = STATIC / name
        if "/" in name or name.startswith(".") or not path.is_file():
            raise web.HTTPNotFound()
        return web.FileResponse(path, headers={"Cache-Control": "no-store"})

    async def websocket(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(heartbeat=5.0, max_msg_size=64 * 1024)
        await ws.prepare(request)
        client = PageClient(ws, request.remote or "?")
        hello = view.snapshot(after=0)
        hello.update(
            type="hello",
            config={
                "camera_fps": cfg.camera_fps,
                "push_hz": cfg.push_hz,
                "history_s": cfg.history_s,
                "alive_s": cfg.alive_s,
                "allow_remote_control": cfg.allow_remote_control,
                "control_allowed": control_refusal(request, cfg.allow_remote_control) is None,
                "control_refusal": control_refusal(request, cfg.allow_remote_control),
                "name": cfg.name,
            },
        )
        client.push_text(dumps(hello))
        pages.clients.add(client)
        writer = asyncio.create_task(client.run())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
        finally:
            pages.clients.discard(client)
            writer.cancel()
        return ws

    async def press(request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        refusal = control_refusal(request, cfg.allow_remote_control)
        if refusal is not None:
            if (held := refusals.ready(request.remote)) is not None:
                log.warning(
                    "refused %s from %s: %s%s",
                    kind,
                    request.remote,
                    refusal,
                    f" (+{held} more)" if held else "",
                )
            return web.json_response({"ok": False, "error": refusal}, status=403)
        if request.content_type != "application/json":
            return web.json_response(
                {"ok": False, "error": "expected application/json"}, status=415
            )
        try:
            data = parse_command(kind, await request.json())
        except ValueError as exc:  # also bad JSON (json.JSONDecodeError is a ValueError)
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        topic = CONTROL_TOPICS[kind]
        try:
            heard = await control.send(topic, data)
        except Exception as exc:
            log.error("could not publish %s: %s", topic, exc)
            return web.json_response({"ok": False, "error": f"publish failed: {exc}"}, status=503)
        view.command_sent(kind, data, heard, request.remote or "?")
        log.log(
            logging.WARNING if kind == "estop" and data["engaged"] else logging.INFO,
            "%s %s from %s (%s)",
            topic,
            data,
            request.remote,
            "heard" if heard else "NOBODY LISTENING",
        )
        return web.json_response({"ok": True, "topic": topic, "data": data, "heard": heard})

    app = web.Application(client_max_size=64 * 1024)
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/ws", websocket)
    app.router.add_post(r"/api/{kind:estop|record}", press)
    return app
