"""A simulated Panda arm on the paper's Robomimic tasks (robosuite, MuJoCo). ROS-free.

Wraps one robosuite environment (Lift or PickPlaceCan) so that it is driven the way a
ros2_control robot is: absolute joint position set points for the seven arm joints, tracked
by robosuite's joint-position controller (computed torque with gravity compensation, at the
physics rate), and an absolute finger position for the gripper, tracked by the gripper's
own position actuators. Everything comes back in SI units (radians, metres) as an
``ArmState``; camera images only when cameras are asked for (software rendering is the cost
of a step on a machine without a GPU: see ENVIRONMENT.md).

The joint names are those of the Franka ROS 2 description (``panda_joint1`` ..
``panda_joint7``, ``panda_finger_joint1`` and ``panda_finger_joint2``), so that a policy
trained here names the joints a user's Panda publishes.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import numpy as np

ARM_JOINT_NAMES = tuple(f"panda_joint{index}" for index in range(1, 8))
FINGER_JOINT_NAMES = ("panda_finger_joint1", "panda_finger_joint2")
# The gripper is commanded through its first finger; the second mirrors it (as a mimic joint).
GRIPPER_JOINT_NAMES = FINGER_JOINT_NAMES[:1]
FINGER_RANGE_M = (0.0, 0.04)  # each finger's travel from the centre line
# The Panda's joint limits (Franka's datasheet, the same as robosuite's model), radians.
ARM_LOWER_LIMITS = np.array([-2.8973, -1.7628, -2.8973, -3.0718, -2.8973, -0.0175, -2.8973])
ARM_UPPER_LIMITS = np.array([2.8973, 1.7628, 2.8973, -0.0698, 2.8973, 3.7525, 2.8973])
CONTROL_PERIOD_S = 0.05  # 20 Hz, the Robomimic tasks' control rate
CAMERA_NAMES = ("agentview", "robot0_eye_in_hand")
# The sim node's topics (relative to its namespace), shared with the task adapter (dp_sim.tasks):
# each robosuite camera's topic prefix, and the arm's and the gripper's command topics.
CAMERA_TOPICS = {"agentview": "front_camera", "robot0_eye_in_hand": "wrist_camera"}
ARM_COMMAND_TOPIC = "joint_trajectory_controller/joint_trajectory"
GRIPPER_COMMAND_TOPIC = "gripper_trajectory_controller/joint_trajectory"
# Robosuite's position gain of its joint-position controller is 50 (1/s^2, applied through the
# mass matrix); 400 tracks a 20 Hz set-point stream within about two steps, as a stiff
# industrial position loop does, and stays stable at the 500 Hz physics rate.
ARM_KP = 400.0
MODEL_SEED = 0  # the environment's seed while robosuite builds the model (see ArmRobot)

TASKS = {
    # task name -> (robosuite environment, extra arguments, object body's observation prefix)
    "lift": ("Lift", {}, "cube"),
    "can": ("PickPlaceCan", {}, "Can"),
}


@dataclass(frozen=True)
class ArmState:
    """Everything observable after a reset or a step, SI units, world frame (z up)."""

    arm_position: np.ndarray  # (7,) rad
    arm_velocity: np.ndarray  # (7,) rad/s
    finger_position: np.ndarray  # (2,) m, each finger's opening from the centre line
    finger_velocity: np.ndarray  # (2,) m/s
    eef_position: np.ndarray  # (3,) m, the grip site between the fingertips
    eef_quaternion: np.ndarray  # (4,) x, y, z, w
    object_position: np.ndarray  # (3,) m
    object_quaternion: np.ndarray  # (4,) x, y, z, w
    goal_position: np.ndarray | None  # (3,) m, where the object must go (Can); None for Lift
    success: bool
    steps: int
    done: bool
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera -> (H, W, 3) uint8


def _import_robosuite():
    """robosuite, imported for off-screen rendering and with its log kept to errors."""
    os.environ.setdefault("MUJOCO_GL", "osmesa")
    import robosuite

    # Robosuite logs a page of warnings about optional extras (private macros, robosuite_models,
    # mink) and about controller parts the Panda does not have; none applies here.
    logging.getLogger("robosuite_logs").setLevel(logging.ERROR)
    return robosuite


class ArmRobot:
    """One robosuite task with the Panda, stepped with absolute joint set points."""

    def __init__(
        self,
        task: str = "lift",
        cameras: tuple[str, ...] = (),
        image_width: int = 84,
        image_height: int = 84,
        max_episode_steps: int = 400,
    ) -> None:
        if task not in TASKS:
            raise ValueError(f"unknown task {task!r}; the arm simulation has {sorted(TASKS)}")
        unknown = [camera for camera in cameras if camera not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}; the arm has {list(CAMERA_NAMES)}")
        if image_width < 1 or image_height < 1:
            raise ValueError(f"image size must be positive, got {image_width}x{image_height}")
        if max_episode_steps < 1:
            raise ValueError(f"max_episode_steps must be positive, got {max_episode_steps}")
        robosuite = _import_robosuite()
        from robosuite.controllers import load_composite_controller_config

        self.task = task
        self.cameras = tuple(cameras)
        self.max_episode_steps = max_episode_steps
        environment, extra, self._object_prefix = TASKS[task]
        controller = load_composite_controller_config(controller="BASIC", robot="Panda")
        arm = controller["body_parts"]["right"]
        arm.update(
            type="JOINT_POSITION",
            input_type="absolute",
            kp=ARM_KP,
            damping_ratio=1.0,
            impedance_mode="fixed",
            interpolation=None,
            qpos_limits=None,
        )
        for key in ("output_max", "output_min", "input_max", "input_min", "uncouple_pos_ori"):
            arm.pop(key, None)
        controller["body_parts"] = {"right": arm}  # the Panda has one arm and nothing else
        # Robosuite draws some of the model's properties (Lift's cube size) from the environment's
        # generator when it builds the model: a fixed seed, so that every process simulates the
        # same objects; episodes re-seed the generator at each reset.
        self._env = robosuite.make(
            environment,
            robots="Panda",
            controller_configs=controller,
            has_renderer=False,
            has_offscreen_renderer=bool(cameras),
            use_camera_obs=bool(cameras),
            camera_names=list(cameras) or "agentview",
            camera_heights=image_height,
            camera_widths=image_width,
            control_freq=round(1.0 / CONTROL_PERIOD_S),
            horizon=max_episode_steps,
            ignore_done=True,
            hard_reset=False,
            reward_shaping=False,
            seed=MODEL_SEED,
            **extra,
        )
        robot = self._env.robots[0]
        gripper = robot.gripper["right"]
        # Robosuite's Panda gripper turns its action into a binary open/close ramp; a position
        # controlled gripper takes the finger position itself, so the action (-1 closed .. 1
        # open) goes straight to the two position actuators' ranges.
        gripper.format_action = lambda action: np.array([action[0], -action[0]])
        # The environment's own construction-time reset leaves the physics in a state that
        # later resets do not reproduce (the object's height differs by a millimetre); one more
        # reset makes the first episode of a seed the same as every later one.
        self._env.reset()
        self.state: ArmState | None = None
        self.seed: int | None = None

    @property
    def environment(self):
        """The robosuite environment (for kinematics and tests)."""
        return self._env

    def reset(self, seed: int) -> ArmState:
        """Start an episode; the same seed always gives the same initial state."""
        if seed < 0:
            raise ValueError(f"seed must be >= 0, got {seed}")
        # The object placement sampler and the robot's initial-joint noise hold the
        # environment's generator itself, so it is re-seeded in place.
        self._env.rng.bit_generator.state = np.random.default_rng(seed).bit_generator.state
        observation = self._env.reset()
        self.seed = seed
        self.state = self._state(observation, steps=0)
        return self.state

    def step(self, arm_setpoint: np.ndarray, finger_setpoint: float) -> ArmState:
        """Advance one control period towards joint set points (rad) and a finger opening (m)."""
        if self.state is None:
            raise RuntimeError("reset() must be called before step()")
        if self.state.done:
            raise RuntimeError("the episode is over; reset() starts the next one")
        arm = np.asarray(arm_setpoint, dtype=np.float64)
        arm = np.clip(arm, ARM_LOWER_LIMITS, ARM_UPPER_LIMITS)
        low, high = FINGER_RANGE_M
        finger = float(np.clip(finger_setpoint, low, high))
        gripper_action = 2.0 * (finger - low) / (high - low) - 1.0
        observation, _, _, _ = self._env.step(np.concatenate([arm, [gripper_action]]))
        self.state = self._state(observation, steps=self.state.steps + 1)
        return self.state

    def close(self) -> None:
        self._env.close()

    def _goal_position(self) -> np.ndarray | None:
        if self.task != "can":
            return None
        # PickPlaceCan's own target: the centre of the Can's quarter of the goal bin, on its floor.
        environment = self._env
        return np.array(environment.target_bin_placements[environment.object_id], dtype=np.float64)

    def _state(self, observation: dict, steps: int) -> ArmState:
        success = bool(self._env._check_success())
        done = success or steps >= self.max_episode_steps
        fingers = np.asarray(observation["robot0_gripper_qpos"], dtype=np.float64)
        finger_velocity = np.asarray(observation["robot0_gripper_qvel"], dtype=np.float64)
        # Robosuite's second finger moves along -y: as an opening, both are positive.
        sign = np.array([1.0, -1.0])
        images = {
            camera: np.ascontiguousarray(observation[f"{camera}_image"][::-1], dtype=np.uint8)
            for camera in self.cameras
        }  # robosuite renders OpenGL-style, bottom row first
        prefix = self._object_prefix
        return ArmState(
            arm_position=np.asarray(observation["robot0_joint_pos"], dtype=np.float64),
            arm_velocity=np.asarray(observation["robot0_joint_vel"], dtype=np.float64),
            finger_position=fingers * sign,
            finger_velocity=finger_velocity * sign,
            eef_position=np.asarray(observation["robot0_eef_pos"], dtype=np.float64),
            eef_quaternion=np.asarray(observation["robot0_eef_quat"], dtype=np.float64),
            object_position=np.asarray(observation[f"{prefix}_pos"], dtype=np.float64),
            object_quaternion=np.asarray(observation[f"{prefix}_quat"], dtype=np.float64),
            goal_position=self._goal_position(),
            success=success,
            steps=steps,
            done=done,
            images=images,
        )
