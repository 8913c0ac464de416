"""Planar-chain model of an SO-101 arm: forward/inverse kinematics and drawing.

Joint vector order and units follow lerobot's SO-101 follower: shoulder_pan, shoulder_lift,
elbow_flex, wrist_flex, wrist_roll in degrees, gripper 0 (closed) to 100 (open).
The geometry is a plausible stand-in (link lengths near the real arm), not a calibrated model:
what matters for the fake env is that images and joints move together.

Angle convention in the arm's vertical plane: a link angle theta is measured from the horizontal
"forward" direction, positive downward; shoulder_lift = 0 is the upper arm pointing straight up.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from fake_scene import Color, Polygon, Segment, shade

JOINTS = ["shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper"]

SHOULDER_H = 0.12  # shoulder axis height above the table (m)
L_UPPER = 0.13
L_FORE = 0.14
L_HAND = 0.10  # wrist-flex axis to fingertips

GRIP_MIN_W, GRIP_MAX_W = 0.005, 0.080  # finger gap at gripper 0 and 100 (m)
JOINT_LIMIT = 115.0  # degrees, |pan|, |lift|, |elbow|, |wrist_flex|

HOME = np.array([0.0, -10.0, 30.0, 50.0, 0.0, 10.0])


def grip_for_width(width: float) -> float:
    """Gripper value (0-100) at which the fingers are `width` apart."""
    return float(np.clip((width - GRIP_MIN_W) / (GRIP_MAX_W - GRIP_MIN_W) * 100.0, 0.0, 100.0))


def _dir(theta_deg: float) -> np.ndarray:
    t = np.radians(theta_deg)
    return np.array([np.cos(t), -np.sin(t)])  # (radial, z), theta positive downward


@dataclass(frozen=True)
class ArmPose:
    """World-space points of one arm configuration."""

    base: np.ndarray
    shoulder: np.ndarray
    elbow: np.ndarray
    wrist: np.ndarray
    tip: np.ndarray  # midpoint between fingertips
    axis: np.ndarray  # unit vector wrist -> tip
    lateral: np.ndarray  # unit vector along which the fingers open
    normal: np.ndarray  # axis x lateral: the "top" of the gripper, where the wrist camera sits
    grip_width: float


@dataclass(frozen=True)
class Arm:
    base_xy: tuple[float, float]
    color: Color
    heading_deg: float = -90.0  # world yaw of pan = 0: -90 faces the front camera (-y)

    def heading(self, pan_deg: float) -> np.ndarray:
        a = np.radians(self.heading_deg + pan_deg)
        return np.array([np.cos(a), np.sin(a), 0.0])

    def fk(self, q: np.ndarray) -> ArmPose:
        pan, lift, elbow, wflex, roll, grip = (float(v) for v in q)
        th1 = lift - 90.0
        th2 = th1 + 90.0 + elbow
        th3 = th2 + wflex
        p_sh = np.array([0.0, SHOULDER_H])
        p_el = p_sh + L_UPPER * _dir(th1)
        p_wr = p_el + L_FORE * _dir(th2)
        p_tip = p_wr + L_HAND * _dir(th3)
        h = self.heading(pan)
        base = np.array([*self.base_xy, 0.0])

        def world(p: np.ndarray) -> np.ndarray:
            return base + p[0] * h + np.array([0.0, 0.0, p[1]])

        axis = np.array([*(_dir(th3)[0] * h[:2]), _dir(th3)[1]])
        lat0 = np.array([-h[1], h[0], 0.0])  # horizontal, perpendicular to the arm plane
        # Rodrigues rotation of lat0 about the gripper axis by wrist_roll.
        r = np.radians(roll)
        lateral = (
            lat0 * np.cos(r)
            + np.cross(axis, lat0) * np.sin(r)
            + axis * np.dot(axis, lat0) * (1 - np.cos(r))
        )
        width = GRIP_MIN_W + (GRIP_MAX_W - GRIP_MIN_W) * np.clip(grip, 0, 100) / 100.0
        return ArmPose(
            base,
            world(p_sh),
            world(p_el),
            world(p_wr),
            world(p_tip),
            axis,
            lateral,
            np.cross(axis, lateral),
            float(width),
        )

    def ik(self, target: np.ndarray, pitch_deg: float = 90.0) -> np.ndarray | None:
        """Joints (pan, lift, elbow, wrist_flex) putting the fingertips at `target`.

        Tries the preferred gripper pitch (90 = pointing straight down) first, then flatter
        pitches, which reach further. None when the target is out of reach or joint limits.
        """
        v = np.asarray(target[:2], float) - np.asarray(self.base_xy)
        r = float(np.hypot(*v))
        pan = (np.degrees(np.arctan2(v[1], v[0])) - self.heading_deg + 180.0) % 360.0 - 180.0
        for pitch in np.arange(pitch_deg, 9.0, -5.0):
            w = np.array([r, float(target[2])]) - L_HAND * _dir(pitch)
            d_vec = w - np.array([0.0, SHOULDER_H])
            d = float(np.hypot(*d_vec))
            if not (abs(L_UPPER - L_FORE) + 0.01 < d < 0.97 * (L_UPPER + L_FORE)):
                continue
            alpha = np.degrees(np.arctan2(-d_vec[1], d_vec[0]))
            cos_b = (L_UPPER**2 + d**2 - L_FORE**2) / (2 * L_UPPER * d)
            th1 = alpha - np.degrees(np.arccos(np.clip(cos_b, -1, 1)))  # elbow up
            p_el = np.array([0.0, SHOULDER_H]) + L_UPPER * _dir(th1)
            e = w - p_el
            th2 = np.degrees(np.arctan2(-e[1], e[0]))
            q = np.array([pan, th1 + 90.0, th2 - th1 - 90.0, pitch - th2])
            if np.all(np.abs(q) <= JOINT_LIMIT):
                return q
        return None

    def roll_to_align(self, pan_deg: float, yaw_deg: float) -> float:
        """wrist_roll that closes the (downward-pointing) fingers on two faces of a yawed cube."""
        # With the gripper pointing down, roll turns the finger line from heading + 90 deg.
        return (self.heading_deg + pan_deg + 90.0 - yaw_deg + 45.0) % 90.0 - 45.0

    def items(self, q: np.ndarray, hand_tag: str = "") -> list[Polygon | Segment]:
        """Drawable primitives: base, links, gripper palm (tagged `hand_tag`) and two fingers."""
        p = self.fk(q)
        dark = shade(self.color, 0.55)
        palm = p.wrist + 0.45 * L_HAND * p.axis
        half = 0.5 * p.grip_width * p.lateral
        return [
            Segment(p.base, p.shoulder, 0.028, (60, 60, 66)),
            Segment(p.shoulder, p.elbow, 0.018, self.color),
            Segment(p.elbow, p.wrist, 0.015, self.color),
            Segment(p.wrist, palm, 0.016, dark, hand_tag),
            Segment(
                palm - half - 0.012 * p.lateral,
                palm + half + 0.012 * p.lateral,
                0.008,
                dark,
                hand_tag,
            ),
            Segment(palm + half, p.tip + half, 0.006, (40, 40, 44)),
            Segment(palm - half, p.tip - half, 0.006, (40, 40, 44)),
        ]
