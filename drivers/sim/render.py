"""Offscreen rendering of a `SimWorld`'s cameras on a thread of its own.

MuJoCo renders through EGL (MUJOCO_GL=egl; Mesa's software renderer on a machine without a GPU,
the GPU where there is one). An OpenGL context belongs to the thread that made it, so the
renderers are created on the render thread. Each round takes one snapshot of the world (under
its lock, microseconds) and renders every camera from it outside the lock, so physics never
waits for pixels and a set of frames shows one instant.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import mujoco
import numpy as np

from drivers.sim.world import SimWorld


@dataclass
class Frame:
    camera: str
    image: np.ndarray  # uint8 (H, W, 3)
    t_snapshot: float  # wall clock (the caller's) when the scene was taken
    sim_time: float


class RenderError(RuntimeError):
    """Rendering could not start (no EGL: install libegl1 libegl-mesa0 libgl1-mesa-dri)."""


class CameraRig:
    """Renders the named cameras at their sizes; one renderer per distinct size."""

    def __init__(self, world: SimWorld, sizes: dict[str, tuple[int, int]]):
        unknown = [
            c for c in sizes if mujoco.mj_name2id(world.model, mujoco.mjtObj.mjOBJ_CAMERA, c) < 0
        ]
        if unknown:
            names = [world.model.camera(i).name for i in range(world.model.ncam)]
            raise ValueError(
                f"the {world.scene.task} scene has no camera {unknown}: it has {names}"
            )
        self.world = world
        self.sizes = sizes
        self.data = mujoco.MjData(world.model)
        # The offscreen buffer must hold the largest frame.
        world.model.vis.global_.offheight = max(h for h, _ in sizes.values())
        world.model.vis.global_.offwidth = max(w for _, w in sizes.values())
        self._renderers: dict[tuple[int, int], mujoco.Renderer] = {}

    def open(self) -> None:
        """Create the GL contexts: call on the thread that will render."""
        try:
            for size in set(self.sizes.values()):
                self._renderers[size] = mujoco.Renderer(self.world.model, *size)
        except Exception as exc:
            raise RenderError(
                f"cannot render offscreen with MUJOCO_GL="
                f"{os.environ.get('MUJOCO_GL')}: {exc}. Install the EGL "
                f"libraries: bash scripts/install_system.sh"
            ) from None

    def render(self, clock: Callable[[], float]) -> list[Frame]:
        t_snap = clock()
        sim_time = self.world.snapshot(self.data)
        frames = []
        for camera, size in self.sizes.items():
            renderer = self._renderers[size]
            renderer.update_scene(self.data, camera=camera)
            frames.append(Frame(camera, renderer.render(), t_snap, sim_time))
        return frames

    def close(self) -> None:
        for renderer in self._renderers.values():
            renderer.close()
        self._renderers.clear()


class RenderThread:
    """Renders rounds at `fps` and hands each round's frames to `deliver` (on this thread).

    When rendering cannot keep the rate, rounds start late rather than piling up; `late`
    counts them and `fps()` tells the rate achieved."""

    def __init__(
        self,
        rig: CameraRig,
        fps: float,
        deliver: Callable[[list[Frame]], None],
        clock: Callable[[], float],
    ):
        self.rig, self.period, self.deliver, self.clock = rig, 1.0 / fps, deliver, clock
        self.rounds = 0
        self.late = 0
        self.render_s: list[float] = []
        self.error: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="render", daemon=True)

    def start(self, timeout: float = 60.0) -> None:
        self._thread.start()
        self._ready.wait(timeout)
        if self.error:
            raise RenderError(self.error)

    def _run(self) -> None:
        try:
            self.rig.open()
        except RenderError as exc:
            self.error = str(exc)
            self._ready.set()
            return
        self._ready.set()
        try:
            due = time.monotonic()
            while not self._stop.is_set():
                wait = due - time.monotonic()
                if wait > 0:
                    self._stop.wait(wait)
                    continue
                started = time.monotonic()
                frames = self.rig.render(self.clock)
                self.render_s.append(time.monotonic() - started)
                del self.render_s[:-100]
                self.deliver(frames)
                self.rounds += 1
                due += self.period
                if time.monotonic() > due + self.period:  # a whole round behind: skip, count
                    self.late += 1
                    due = time.monotonic()
        finally:
            self.rig.close()

    def render_ms_p50(self) -> float | None:
        return round(float(np.median(self.render_s)) * 1000, 2) if self.render_s else None

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
