"""The SO-101 and lerobot's names for it: one home for what every layer agrees on."""

from __future__ import annotations

# Joint order, as lerobot's so_follower robot declares its motors (ids 1-6); degrees, the
# gripper 0-100.
JOINTS = ("shoulder_pan", "shoulder_lift", "elbow_flex", "wrist_flex", "wrist_roll", "gripper")
GRIPPER = "gripper"

# Arms: one `arm`, or two named by side; lerobot's bimanual datasets prefix joint names so.
SINGLE_ARM = "arm"
ARM_PREFIXES = {"left_": "left_arm", "right_": "right_arm"}
TWO_ARMS = tuple(ARM_PREFIXES.values())

# lerobot's feature keys.
IMAGES_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
