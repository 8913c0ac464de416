"""The SO-101 simulator: MuJoCo scenes, physics in lerobot units, rendering, scripted expert.

MuJoCo picks its OpenGL backend when it is first imported, so the headless default (EGL) is
set here, before any module of this package imports it. MUJOCO_GL=osmesa or glfw still win.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
