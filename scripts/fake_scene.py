"""Tiny OpenCV renderer for the fake tabletop scenes (pinhole cameras, painter's algorithm).

Only what the synthetic datasets need: flat convex polygons (table, bins, cube faces, shadows)
and thick segments (arm links, gripper fingers). World frame: x right (as seen by the front
camera), y away from the front camera, z up; metres. Images are RGB uint8.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

Color = tuple[int, int, int]

# Sub-pixel precision for cv2 drawing: smoother motion between frames than integer pixels.
_SHIFT = 4
_SCALE = 1 << _SHIFT


@dataclass(frozen=True)
class Camera:
    eye: np.ndarray  # (3,) position in world
    rot: np.ndarray  # (3, 3) rows: camera right, down, forward in world coordinates
    focal: float  # pixels
    width: int = 640
    height: int = 480
    near: float = 0.01

    @classmethod
    def look_at(
        cls,
        eye: np.ndarray,
        target: np.ndarray,
        up: np.ndarray,
        hfov_deg: float,
        width: int = 640,
        height: int = 480,
    ) -> Camera:
        fwd = np.asarray(target, float) - np.asarray(eye, float)
        fwd /= np.linalg.norm(fwd)
        right = np.cross(fwd, np.asarray(up, float))
        right /= np.linalg.norm(right)
        down = np.cross(fwd, right)
        focal = (width / 2) / np.tan(np.radians(hfov_deg) / 2)
        return cls(np.asarray(eye, float), np.stack([right, down, fwd]), focal, width, height)

    def to_cam(self, pts: np.ndarray) -> np.ndarray:
        return (np.asarray(pts, float) - self.eye) @ self.rot.T

    def project(self, pc: np.ndarray) -> np.ndarray:
        """Camera-frame points (z > 0) to pixel coordinates."""
        z = pc[:, 2:3]
        return pc[:, :2] * (self.focal / z) + (self.width / 2, self.height / 2)


def _clip_near(pc: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a convex polygon against the plane z = near."""
    out = []
    n = len(pc)
    for i in range(n):
        a, b = pc[i], pc[(i + 1) % n]
        a_in, b_in = a[2] >= near, b[2] >= near
        if a_in:
            out.append(a)
        if a_in != b_in:
            s = (near - a[2]) / (b[2] - a[2])
            out.append(a + s * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


@dataclass
class Polygon:
    pts: np.ndarray  # (k, 3) convex, world
    color: Color
    normal: np.ndarray | None = None  # outward normal: faces turned away from a camera are skipped
    tag: str = ""  # lets one camera hide some items (a wrist camera hides its own hand)


@dataclass
class Segment:
    p0: np.ndarray
    p1: np.ndarray
    radius: float  # metres; drawn width scales with distance to the camera
    color: Color
    tag: str = ""


@dataclass
class Scene:
    background: Color = (196, 202, 210)
    ground: list[Polygon] = field(default_factory=list)  # drawn first, in order (table, decals)
    items: list[Polygon | Segment] = field(default_factory=list)  # depth-sorted


def _to_px(uv: np.ndarray) -> np.ndarray:
    # Bounded so cv2's int32 fixed-point maths cannot overflow for points near the near plane.
    return np.clip(np.round(uv * _SCALE), -(1 << 24), 1 << 24).astype(np.int32)


def _draw_polygon(img: np.ndarray, cam: Camera, poly: Polygon) -> None:
    if poly.normal is not None and np.dot(poly.normal, cam.eye - poly.pts.mean(axis=0)) <= 0:
        return
    pc = _clip_near(cam.to_cam(poly.pts), cam.near)
    if len(pc) < 3:
        return
    cv2.fillConvexPoly(img, _to_px(cam.project(pc)), poly.color, cv2.LINE_AA, _SHIFT)


def _draw_segment(img: np.ndarray, cam: Camera, seg: Segment) -> None:
    pc = cam.to_cam(np.stack([seg.p0, seg.p1]))
    a, b = pc
    if a[2] < cam.near and b[2] < cam.near:
        return
    if a[2] < cam.near or b[2] < cam.near:
        s = (cam.near - a[2]) / (b[2] - a[2])
        cut = a + s * (b - a)
        a, b = (cut, b) if a[2] < cam.near else (a, cut)
        pc = np.stack([a, b])
    uv = cam.project(pc)
    z = float(pc[:, 2].mean())
    thickness = int(np.clip(2 * seg.radius * cam.focal / z, 1, 200))
    p0, p1 = _to_px(uv)
    cv2.line(
        img,
        tuple(int(v) for v in p0),
        tuple(int(v) for v in p1),
        seg.color,
        thickness,
        cv2.LINE_AA,
        _SHIFT,
    )


def _depth(cam: Camera, item: Polygon | Segment) -> float:
    pts = item.pts if isinstance(item, Polygon) else np.stack([item.p0, item.p1])
    return float(cam.to_cam(pts)[:, 2].mean())


def render(scene: Scene, cam: Camera, hide: str = "") -> np.ndarray:
    """Draw `scene` as seen by `cam`, skipping items tagged `hide` (when non-empty)."""
    img = np.empty((cam.height, cam.width, 3), np.uint8)
    img[:] = scene.background
    for poly in scene.ground:
        _draw_polygon(img, cam, poly)
    items = [it for it in scene.items if not hide or it.tag != hide]
    # Painter's algorithm: far to near. Good enough for a few convex objects.
    for item in sorted(items, key=lambda it: -_depth(cam, it)):
        if isinstance(item, Polygon):
            _draw_polygon(img, cam, item)
        else:
            _draw_segment(img, cam, item)
    return img


def shade(color: Color, k: float) -> Color:
    return tuple(int(min(255, c * k)) for c in color)  # type: ignore[return-value]


def box_faces(
    center: np.ndarray, size: tuple[float, float, float], yaw_deg: float, color: Color
) -> list[Polygon]:
    """Faces of a yawed box, shaded by orientation (a fixed light from above)."""
    hx, hy, hz = (s / 2 for s in size)
    c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
    corners = np.array([[x, y, z] for z in (-hz, hz) for y in (-hy, hy) for x in (-hx, hx)])
    v = corners @ rot.T + center
    # (vertex indices, outward normal in box frame, shade)
    faces = [
        ((4, 5, 7, 6), (0, 0, 1), 1.0),
        ((0, 1, 5, 4), (0, -1, 0), 0.78),
        ((2, 6, 7, 3), (0, 1, 0), 0.62),
        ((0, 4, 6, 2), (-1, 0, 0), 0.70),
        ((1, 3, 7, 5), (1, 0, 0), 0.70),
        ((0, 2, 3, 1), (0, 0, -1), 0.45),
    ]
    return [
        Polygon(v[list(idx)], shade(color, k), rot @ np.asarray(normal, float))
        for idx, normal, k in faces
    ]


def disc(center: np.ndarray, radius: float, color: Color, n: int = 12) -> Polygon:
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    pts = np.stack(
        [center[0] + radius * np.cos(a), center[1] + radius * np.sin(a), np.full(n, center[2])],
        axis=1,
    )
    return Polygon(pts, color)
