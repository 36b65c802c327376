"""Forward and inverse kinematics of the simulated Panda, on the simulator's own MuJoCo model.

ROS-free. The scripted expert uses it as a teleoperation interface turns a hand pose into
joint set points, and the sim node to show a predicted chunk in Cartesian space. The model is
robosuite's (``ArmRobot.environment``), evaluated on a private ``MjData`` so that the simulation
itself is never touched. MuJoCo gives the site Jacobians; the solver on top is damped least
squares with a pull towards a rest posture in the null space, written here because mink (the
IK package robosuite pins) requires numpy < 2 while this workspace runs numpy 2.
"""

from __future__ import annotations

from dataclasses import dataclass

import mujoco
import numpy as np

from dp_sim.arm_robot import ARM_LOWER_LIMITS, ARM_UPPER_LIMITS, ArmRobot

# The Panda's home posture in robosuite (its init_qpos): the hand points down over the table.
REST_POSTURE = np.array(
    [0.0, np.pi / 16.0, 0.0, -np.pi / 2.0 - np.pi / 3.0, 0.0, np.pi - 0.2, np.pi / 4]
)


@dataclass(frozen=True)
class IKResult:
    joints: np.ndarray  # (7,) rad
    position_error: float  # m, after the last iteration
    rotation_error: float  # rad
    converged: bool


def rotation_about_z(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def yaw_of_quaternion(quaternion_xyzw: np.ndarray) -> float:
    """Rotation about the world z axis of a quaternion (x, y, z, w)."""
    x, y, z, w = np.asarray(quaternion_xyzw, dtype=np.float64)
    return float(np.arctan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z)))


def _rotation_error(target: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Axis-angle vector (world frame) that turns ``current`` into ``target``."""
    target_quaternion = np.empty(4)
    current_quaternion = np.empty(4)
    mujoco.mju_mat2Quat(target_quaternion, target.reshape(-1))
    mujoco.mju_mat2Quat(current_quaternion, current.reshape(-1))
    error = np.empty(3)
    # mju_subQuat gives the rotation from current to target in current's frame.
    mujoco.mju_subQuat(error, target_quaternion, current_quaternion)
    return current @ error


class ArmKinematics:
    """The grip site's pose as a function of the seven arm joints, and its inverse."""

    def __init__(self, robot: ArmRobot) -> None:
        environment = robot.environment
        self._model = environment.sim.model._model
        self._data = mujoco.MjData(self._model)
        arm = environment.robots[0]
        self._qpos_indexes = np.asarray(arm._ref_joint_pos_indexes)
        self._dof_indexes = np.asarray(arm._ref_joint_vel_indexes)
        site = arm.gripper["right"].important_sites["grip_site"]
        self._site = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_SITE, site)
        self.rest_orientation = self.forward(REST_POSTURE)[1]
        base = mujoco.mj_name2id(self._model, mujoco.mjtObj.mjOBJ_BODY, arm.robot_model.root_body)
        self.base_position = self._data.xpos[base].copy()  # m, world; fixed (the arm is mounted)

    def forward(self, joints: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Joints (7,) rad -> grip site position (3,) m and rotation matrix (3, 3), world."""
        self._data.qpos[self._qpos_indexes] = joints
        mujoco.mj_kinematics(self._model, self._data)
        return (
            self._data.site_xpos[self._site].copy(),
            self._data.site_xmat[self._site].reshape(3, 3).copy(),
        )

    def forward_positions(self, joints: np.ndarray) -> np.ndarray:
        """Joint sets (N, 7) -> grip site positions (N, 3)."""
        return np.stack([self.forward(row)[0] for row in np.atleast_2d(joints)])

    def inverse(
        self,
        position: np.ndarray,
        rotation: np.ndarray,
        initial: np.ndarray,
        iterations: int = 30,
        damping: float = 0.05,
        rest_gain: float = 0.05,
    ) -> IKResult:
        """Joints that put the grip site at ``position`` with ``rotation``, from ``initial``."""
        joints = np.asarray(initial, dtype=np.float64).copy()
        position_jacobian = np.zeros((3, self._model.nv))
        rotation_jacobian = np.zeros((3, self._model.nv))
        position_error = rotation_error = np.inf
        for _ in range(iterations):
            current_position, current_rotation = self.forward(joints)
            error = np.concatenate(
                [position - current_position, _rotation_error(rotation, current_rotation)]
            )
            position_error = float(np.linalg.norm(error[:3]))
            rotation_error = float(np.linalg.norm(error[3:]))
            if position_error < 1e-4 and rotation_error < 1e-3:
                break
            mujoco.mj_comPos(self._model, self._data)
            mujoco.mj_jacSite(
                self._model, self._data, position_jacobian, rotation_jacobian, self._site
            )
            jacobian = np.vstack([position_jacobian, rotation_jacobian])[:, self._dof_indexes]
            regularised = jacobian @ jacobian.T + damping**2 * np.eye(6)
            step = jacobian.T @ np.linalg.solve(regularised, error)
            # The seventh degree of freedom is redundant for a 6-D pose: use it to stay near
            # the rest posture, so the elbow does not drift over an episode.
            null_space = np.eye(7) - np.linalg.pinv(jacobian) @ jacobian
            step += null_space @ (rest_gain * (REST_POSTURE - joints))
            joints = np.clip(joints + step, ARM_LOWER_LIMITS, ARM_UPPER_LIMITS)
        converged = position_error < 2e-3 and rotation_error < 2e-2
        return IKResult(joints, position_error, rotation_error, converged)
