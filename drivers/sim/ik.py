"""Inverse kinematics for a top-down grasp with one SO-101 arm, on the scene's own MJCF.

Damped least squares on MuJoCo's Jacobians: the grasp point (midway between the fingertip
pads) goes to a target, the jaws point straight down and close along a given horizontal axis.
Five body joints for those six numbers: the pan and the wrist roll take the yaw, the three
pitch joints the position and the downward pointing, so top-down grasps are exact inside the
arm's reach. Also gives the gravity feed-forward a position servo needs to arrive where it is
sent (the MJCF's kp 17.8 lets a stretched arm sag by a centimetre or two).
"""

from __future__ import annotations

import mujoco
import numpy as np

from drivers.sim.world import ArmJoints

GRASP_JAW_RAD = 0.46  # the pads are parallel (40 mm apart) at this gripper angle
DOWN = np.array([0.0, 0.0, -1.0])


class TopDownIK:
    def __init__(self, model: mujoco.MjModel, arm: str):
        self.model = model
        self.data = mujoco.MjData(model)
        self.joints = ArmJoints(model, arm)
        self.site = model.site(f"{arm}/gripperframe").id
        self.pads = [model.geom(f"{arm}/{p}").id for p in ("fixed_jaw_pad", "moving_jaw_pad")]
        self.offset = self._grasp_offset()
        self.base = model.body(f"{arm}/base").id
        mujoco.mj_kinematics(model, self.data)
        self.base_pos = self.data.xpos[self.base].copy()

    def _grasp_offset(self) -> np.ndarray:
        """The pads' midpoint at the grasp angle, in the gripperframe site's frame."""
        self.data.qpos[self.joints.qpos[-1]] = GRASP_JAW_RAD
        mujoco.mj_kinematics(self.model, self.data)
        mid = np.mean([self.data.geom_xpos[g] for g in self.pads], axis=0)
        rot = self.data.site_xmat[self.site].reshape(3, 3)
        return rot.T @ (mid - self.data.site_xpos[self.site])

    def _fk(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        self.data.qpos[self.joints.qpos[:5]] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        rot = self.data.site_xmat[self.site].reshape(3, 3)
        return self.data.site_xpos[self.site] + rot @ self.offset, rot

    def grasp_point(self, q: np.ndarray) -> np.ndarray:
        return self._fk(np.asarray(q[:5], dtype=np.float64))[0]

    def solve(
        self, target: np.ndarray, jaw_axis: np.ndarray, q0: np.ndarray, iterations: int = 60
    ) -> tuple[np.ndarray, float]:
        """Body joint angles (5, radians) putting the grasp point at `target` with the jaws
        down and closing along `jaw_axis` (either sign); and the position error left (m)."""
        q = np.array(q0[:5], dtype=np.float64)
        lo, hi = self.joints.lo[:5], self.joints.hi[:5]
        jacp, jacr = np.zeros((3, self.model.nv)), np.zeros((3, self.model.nv))
        dofs = self.joints.dof[:5]
        err = np.inf
        for _ in range(iterations):
            point, rot = self._fk(q)
            approach, jaw = rot[:, 0], rot[:, 2]
            axis = jaw_axis if jaw @ jaw_axis >= 0 else -jaw_axis
            e_pos = target - point
            err = float(np.linalg.norm(e_pos))
            residual = np.concatenate(
                [e_pos, 0.3 * np.cross(approach, DOWN), 0.3 * np.cross(jaw, axis)]
            )
            if err < 2e-4 and np.linalg.norm(residual[3:]) < 2e-3:
                break
            mujoco.mj_jac(
                self.model, self.data, jacp, jacr, point, self.model.site_bodyid[self.site]
            )
            jac = np.vstack([jacp[:, dofs], 0.3 * jacr[:, dofs], 0.3 * jacr[:, dofs]])
            damping = 1e-4
            dq = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(9), residual)
            q = np.clip(q + np.clip(dq, -0.3, 0.3), lo, hi)
        return q, err

    def gravity_offset(self, q_body: np.ndarray, gripper: float) -> np.ndarray:
        """Radians to add to a position goal so the servo, sagging under gravity, ends at
        `q_body` (what a holding STS3215's integral-free P loop would need)."""
        self.data.qpos[self.joints.qpos[:5]] = q_body
        self.data.qpos[self.joints.qpos[5]] = gripper
        self.data.qvel[:] = 0
        mujoco.mj_forward(self.model, self.data)
        kp = self.model.actuator_gainprm[self.joints.act, 0]
        return self.data.qfrc_bias[self.joints.dof] / kp
