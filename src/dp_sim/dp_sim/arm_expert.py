"""A scripted teleoperator for the arm tasks (Lift, Can): pick the object, lift it, place it.

ROS-free. It plays as a person with a 6-D mouse and an inverse-kinematics teleoperation
interface would: it moves a hand target through Cartesian waypoints at a bounded speed (above
the object, down to it, close the gripper, up, over the goal, down, open), turns the hand
about the vertical to square the fingers with the object, and sends the joint set points that
``ArmKinematics`` solves for that target. It reads only what the robot publishes: the arm's
joint positions, the fingers, the object's pose, and (Can) the goal's position; no learned
model and no privileged simulator state.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dp_sim.arm_kinematics import ArmKinematics, rotation_about_z, yaw_of_quaternion
from dp_sim.arm_robot import FINGER_RANGE_M, ArmRobot

OPEN_M = FINGER_RANGE_M[1]
CLOSED_M = 0.0


@dataclass(frozen=True)
class ExpertSettings:
    """Speeds and heights of the scripted motions; validated at construction."""

    travel_speed: float = 0.30  # m/s, free motion of the hand
    approach_speed: float = 0.12  # m/s, the last part down to the object and onto the goal
    hover_height: float = 0.10  # m above the grasp point before going down
    lift_height: float = 0.20  # m above the table for Lift; Can carries at the goal's height
    grasp_steps: int = 6  # control steps with the gripper closing before lifting
    release_steps: int = 6
    position_tolerance: float = 0.012  # m between the hand and a waypoint to call it reached
    place_offset: float = 0.075  # m from the goal's centre towards the robot (Can)

    def __post_init__(self) -> None:
        for name in ("travel_speed", "approach_speed", "hover_height", "position_tolerance"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if self.grasp_steps < 1 or self.release_steps < 1:
            raise ValueError("grasp_steps and release_steps must be >= 1")


@dataclass
class _Waypoint:
    position: np.ndarray
    fingers: float
    speed: float
    hold_steps: int = 0  # steps to stay once reached (gripper motions)


class ArmExpert:
    """Joint set points for the next control step, from the robot's observed state."""

    def __init__(
        self,
        kinematics: ArmKinematics,
        task: str,
        control_period: float,
        settings: ExpertSettings | None = None,
    ) -> None:
        if task not in ("lift", "can"):
            raise ValueError(f"the arm expert plays 'lift' and 'can', not {task!r}")
        self.kinematics = kinematics
        self.task = task
        self.dt = control_period
        self.settings = settings or ExpertSettings()
        self.reset()

    def reset(self) -> None:
        self._plan: list[_Waypoint] | None = None
        self._index = 0
        self._held = 0
        self._target: np.ndarray | None = None  # the hand target being moved, m
        self._joints: np.ndarray | None = None  # the last solution, warm start of the next
        self._rotation: np.ndarray | None = None
        self._fingers = OPEN_M

    @property
    def phase(self) -> int:
        return self._index

    def act(
        self,
        arm_position: np.ndarray,
        object_position: np.ndarray,
        object_quaternion: np.ndarray,
        goal_position: np.ndarray | None = None,
    ) -> tuple[np.ndarray, float]:
        """(arm set point (7,) rad, finger opening m) for the next step."""
        arm_position = np.asarray(arm_position, dtype=np.float64)
        hand, _ = self.kinematics.forward(arm_position)
        if self._plan is None:
            self._start(arm_position, hand, object_position, object_quaternion, goal_position)
        waypoint = self._plan[min(self._index, len(self._plan) - 1)]
        # Move the target towards the waypoint at the waypoint's speed, but never further
        # ahead of the measured hand than a few steps of motion, so the arm's lag is not
        # integrated into an overshoot.
        offset = waypoint.position - self._target
        distance = float(np.linalg.norm(offset))
        stride = waypoint.speed * self.dt
        if distance > stride:
            self._target = self._target + offset / distance * stride
        else:
            self._target = waypoint.position.copy()
        lead = self._target - hand
        limit = 4.0 * stride + 0.01
        if np.linalg.norm(lead) > limit:
            self._target = hand + lead / np.linalg.norm(lead) * limit
        self._fingers = waypoint.fingers
        solution = self.kinematics.inverse(self._target, self._rotation, self._joints)
        self._joints = solution.joints
        self._advance(hand, waypoint)
        return self._joints.copy(), self._fingers

    def _advance(self, hand: np.ndarray, waypoint: _Waypoint) -> None:
        if self._index >= len(self._plan) - 1:
            return
        reached = np.linalg.norm(hand - waypoint.position) < self.settings.position_tolerance
        if waypoint.hold_steps:
            # Gripper waypoints: the hand is already there; count the closing/opening steps.
            self._held += 1
            if self._held >= waypoint.hold_steps:
                self._index += 1
                self._held = 0
        elif reached:
            self._index += 1

    def _start(
        self,
        arm_position: np.ndarray,
        hand: np.ndarray,
        object_position: np.ndarray,
        object_quaternion: np.ndarray,
        goal_position: np.ndarray | None,
    ) -> None:
        settings = self.settings
        self._joints = arm_position.copy()
        self._target = hand.copy()
        self._rotation = self._grasp_rotation(object_quaternion)
        grasp = np.asarray(object_position, dtype=np.float64).copy()
        above = grasp + np.array([0.0, 0.0, settings.hover_height])
        plan = [
            _Waypoint(above, OPEN_M, settings.travel_speed),
            _Waypoint(grasp, OPEN_M, settings.approach_speed),
            _Waypoint(grasp, CLOSED_M, settings.approach_speed, hold_steps=settings.grasp_steps),
        ]
        if self.task == "lift":
            lifted = grasp + np.array([0.0, 0.0, settings.lift_height])
            plan.append(_Waypoint(lifted, CLOSED_M, settings.travel_speed))
        else:
            if goal_position is None:
                raise ValueError("the Can task needs the goal position")
            goal = np.asarray(goal_position, dtype=np.float64)
            # The goal is the centre of the Can's quarter of the bin, at the edge of the arm's
            # reach with the hand pointing down: put the can down inside that quarter but on
            # the side nearer the robot's base.
            towards_base = self.kinematics.base_position[:2] - goal[:2]
            goal_xy = goal[:2] + towards_base / np.linalg.norm(towards_base) * settings.place_offset
            carry_height = max(goal[2], grasp[2]) + 0.15
            over_goal = np.array([goal_xy[0], goal_xy[1], carry_height])
            # Just above where it would stand: the object started standing on a floor at the
            # goal's height (robosuite's two bins are at one height), so at its start height.
            place = np.array([*goal_xy, grasp[2] + 0.02])
            plan += [
                _Waypoint(np.array([*grasp[:2], carry_height]), CLOSED_M, settings.travel_speed),
                _Waypoint(over_goal, CLOSED_M, settings.travel_speed),
                _Waypoint(place, CLOSED_M, settings.approach_speed),
                _Waypoint(
                    place, OPEN_M, settings.approach_speed, hold_steps=settings.release_steps
                ),
                _Waypoint(over_goal, OPEN_M, settings.travel_speed),
            ]
        self._plan = plan
        self._index = 0

    def _grasp_rotation(self, object_quaternion: np.ndarray) -> np.ndarray:
        """The hand pointing down as at rest, turned so the fingers close across the object."""
        rest = self.kinematics.rest_orientation
        if self.task == "can":
            return rest  # a cylinder: any heading grasps it
        # The fingers close along the hand's y axis; a box is grasped across a pair of faces,
        # which repeat every quarter turn: take the smallest turn from the rest heading.
        fingers_yaw = float(np.arctan2(rest[1, 1], rest[0, 1]))
        turn = yaw_of_quaternion(object_quaternion) - fingers_yaw
        turn = (turn + np.pi / 4) % (np.pi / 2) - np.pi / 4
        return rotation_about_z(turn) @ rest


def make_expert(
    robot: ArmRobot, control_period: float, settings: ExpertSettings | None = None
) -> ArmExpert:
    """The expert for ``robot``'s task, with kinematics on ``robot``'s model."""
    return ArmExpert(ArmKinematics(robot), robot.task, control_period, settings)
