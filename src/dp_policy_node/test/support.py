"""Shared by the dp_policy_node tests: tiny checkpoints and a robot-like observation feed.

Checkpoints are made with the dp_policy API (a small U-Net, a ResNet-18 camera encoder on a
32x32 image and a 2-D joint state, normaliser fitted on random data) and saved with the data
spec, so the node serves them exactly as it would serve a trained one. They are untrained:
their chunks are noise inside the training range, which is all the node's logic needs.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dp_policy import (
    DiffusionPolicy,
    HorizonConfig,
    NoiseScheduleConfig,
    PolicyConfig,
    TransformerConfig,
    UNetConfig,
    VisionConfig,
    save_checkpoint,
)
from dp_policy.data_spec import DataSpec, StreamSpec, data_spec_metadata

JOINTS = ("pusher_x_joint", "pusher_y_joint")
TRAJECTORY_TOPIC = "/joint_trajectory_controller/joint_trajectory"
# A second action stream on a controller of its own (an arm's gripper, say).
GRIPPER_JOINT = "finger_joint"
GRIPPER_TOPIC = "/gripper_trajectory_controller/joint_trajectory"
IMAGE_TOPIC = "/policy_test/camera/image_raw"
COMPRESSED_TOPIC = "/policy_test/camera/image_raw/compressed"
JOINT_TOPIC = "/policy_test/joint_states"
POSE_TOPIC = "/policy_test/block_pose"
# A fields stream: a PoseStamped's position and its yaw as sin/cos (4 values).
POSE_FIELDS = ("pose.position.x", "pose.position.y", "pose.orientation:yaw_sincos")
IMAGE_SHAPE = (3, 32, 32)
DT = 0.1
TO, TP, TA = 2, 16, 8
ACTION_RANGE = 0.25  # actions in training were in [-0.25, 0.25] m


def tiny_spec(
    joints: tuple[str, ...] = JOINTS,
    camera: bool = True,
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
    compressed: bool = False,
    pose: bool = False,
    gripper: bool = False,
) -> DataSpec:
    """``compressed``: the camera is a CompressedImage topic; ``pose``: a PoseStamped fields
    stream ``block_pose`` besides the joints; ``gripper``: the action has two streams, ``arm``
    (``joints``) and ``gripper`` (GRIPPER_JOINT on GRIPPER_TOPIC), and the joint states
    observe all of them."""
    observations = []
    if camera:
        observations.append(
            StreamSpec(
                key="image",
                topic=COMPRESSED_TOPIC if compressed else IMAGE_TOPIC,
                kind="image",
                shape=image_shape,
                message_type="sensor_msgs/msg/CompressedImage" if compressed else "",
            )
        )
    observed = (*joints, GRIPPER_JOINT) if gripper else joints
    observations.append(
        StreamSpec(key="agent_pos", topic=JOINT_TOPIC, kind="joint_state", joints=observed)
    )
    if pose:
        observations.append(
            StreamSpec(
                key="block_pose",
                topic=POSE_TOPIC,
                kind="fields",
                message_type="geometry_msgs/msg/PoseStamped",
                fields=POSE_FIELDS,
            )
        )
    if gripper:
        actions = (
            StreamSpec(key="arm", topic=TRAJECTORY_TOPIC, kind="joint_trajectory", joints=joints),
            StreamSpec(
                key="gripper", topic=GRIPPER_TOPIC, kind="joint_trajectory", joints=(GRIPPER_JOINT,)
            ),
        )
    else:
        actions = (
            StreamSpec(
                key="action", topic=TRAJECTORY_TOPIC, kind="joint_trajectory", joints=joints
            ),
        )
    return DataSpec(
        dt=DT,
        observations=tuple(observations),
        actions=actions,
        reference="image" if camera else "agent_pos",
    )


def make_checkpoint(
    directory: Path,
    joints: tuple[str, ...] = JOINTS,
    camera: bool = True,
    nan_output: bool = False,
    seed: int = 0,
    noise: NoiseScheduleConfig | None = None,
    backbone: str = "unet",
    image_shape: tuple[int, int, int] = IMAGE_SHAPE,
    compressed: bool = False,
    pose: bool = False,
    gripper: bool = False,
) -> Path:
    """Save a tiny policy with its data spec; ``nan_output`` makes every prediction NaN;
    ``gripper``: two action streams (see ``tiny_spec``).

    ``noise``: the schedule and inference sampler (default DDIM, 3 steps); ``backbone``: unet
    or transformer (one layer). With the default 32x32 images ResNet-18's last feature map is
    1x1, so the keypoints, and the chunks, do not depend on the pixels; 72x72 (2x2 map) makes
    them depend."""
    spec = tiny_spec(joints, camera, image_shape, compressed, pose, gripper)
    action_dim = spec.action_spec().dim
    config = PolicyConfig(
        observation=spec.observation_spec(),
        action=spec.action_spec(),
        horizon=HorizonConfig(observation_horizon=TO, prediction_horizon=TP, action_horizon=TA),
        backbone=backbone,
        unet=UNetConfig(down_dims=(16, 32), kernel_size=3, n_groups=4, diffusion_step_embed_dim=16),
        transformer=TransformerConfig(n_layer=1, n_head=2, n_emb=16, p_drop_attn=0.0),
        vision=VisionConfig(
            crop_shape=(image_shape[1] - 4, image_shape[2] - 4), num_keypoints=4, feature_dim=8
        ),
        noise=noise or NoiseScheduleConfig(num_inference_steps=3),
    )
    torch.manual_seed(seed)
    policy = DiffusionPolicy(config)
    generator = torch.Generator().manual_seed(seed)
    actions = (torch.rand((256, action_dim), generator=generator) * 2 - 1) * ACTION_RANGE
    low_dim = {"agent_pos": actions.clone()}
    if pose:
        # Block positions in [-0.25, 0.25] m, yaw anywhere: sin and cos span [-1, 1].
        yaw = torch.rand(256, generator=generator) * 2 * torch.pi
        low_dim["block_pose"] = torch.cat(
            [actions[:, :2].clone(), torch.sin(yaw)[:, None], torch.cos(yaw)[:, None]], dim=1
        )
    policy.fit_normalizer(actions, low_dim)
    if nan_output:
        with torch.no_grad():
            for parameter in policy.noise_net.parameters():
                parameter.fill_(float("nan"))
    return save_checkpoint(policy, directory, extra_metadata=data_spec_metadata(spec))


@dataclass
class FeedSettings:
    """What the feed publishes; tests change it while the feed runs (read at every tick)."""

    camera: bool = True
    joints: bool = True
    encoding: str = "rgb8"
    width: int = IMAGE_SHAPE[2]
    height: int = IMAGE_SHAPE[1]
    joint_names: tuple[str, ...] = JOINTS
    joint_positions: tuple[float, ...] = (0.0, 0.0)
    # Added to the camera stamps: positive is the future, a callable gives a stamp itself.
    image_stamp_offset: float = 0.0
    image_stamp: Callable[[float], float] | None = None
    # Sent as the joint states' header.stamp.nanosec instead of the real one (None: real).
    joint_nanosec: int | None = None
    # Simulated time: every stamp is wall time + clock_offset, and /clock is published.
    clock_offset: float | None = None
    # Simulated seconds per wall second since the feed started (a slowed or sped-up sim).
    clock_rate: float = 1.0
    extra: dict[str, Any] = field(default_factory=dict)


class ObservationFeed:
    """Publishes camera images and joint states every ``period`` from the probe's node."""

    def __init__(self, probe: Any, period: float = 0.05) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, JointState

        self.settings = FeedSettings()
        self._image_type, self._joint_type = Image, JointState
        reliable = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        node = probe.node
        from rosgraph_msgs.msg import Clock

        self._clock_type = Clock
        self._clock_pub = node.create_publisher(Clock, "/clock", 10)
        self._image_pub = node.create_publisher(Image, IMAGE_TOPIC, reliable)
        self._joint_pub = node.create_publisher(JointState, JOINT_TOPIC, reliable)
        self._lock = threading.Lock()
        self._frame = 0
        self.published = 0
        # Stamps of the images sent, in nanoseconds: chunks must name one of them.
        self.image_stamps: set[int] = set()
        self._started = time.time()
        self._timer = node.create_timer(period, self._tick)

    def update(self, **changes: Any) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self.settings, key, value)

    def _tick(self) -> None:
        with self._lock:
            settings = FeedSettings(**vars(self.settings))
        now = time.time()
        if settings.clock_offset is not None:
            now = self._started + (now - self._started) * settings.clock_rate
            now += settings.clock_offset
            self._clock_pub.publish(self._clock_type(clock=_stamp(now)))
        if settings.camera:
            stamp = settings.image_stamp(now) if settings.image_stamp else now
            image = self._image(settings, stamp + settings.image_stamp_offset)
            self.image_stamps.add(
                image.header.stamp.sec * 1_000_000_000 + image.header.stamp.nanosec
            )
            self._image_pub.publish(image)
        if settings.joints:
            message = self._joint_type()
            message.header.stamp = _stamp(now)
            if settings.joint_nanosec is not None:
                message.header.stamp.nanosec = settings.joint_nanosec
            message.name = list(settings.joint_names)
            message.position = [float(value) for value in settings.joint_positions]
            self._joint_pub.publish(message)
        self._frame += 1
        self.published += 1

    def _image(self, settings: FeedSettings, stamp: float) -> Any:
        channels = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}.get(
            settings.encoding, 2
        )
        image = self._image_type()
        image.header.stamp = _stamp(stamp)
        image.header.frame_id = "policy_test_camera"
        image.height, image.width = settings.height, settings.width
        image.encoding = settings.encoding
        image.step = settings.width * channels
        value = (self._frame * 7) % 256
        image.data = bytes([value]) * (image.step * image.height)
        return image


def _stamp(seconds: float) -> Any:
    from builtin_interfaces.msg import Time

    whole = int(seconds)
    return Time(sec=whole, nanosec=round((seconds - whole) * 1e9) % 1_000_000_000)


def array_rows(values: list[float], columns: int) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1, columns)


# -- talking to the node under test ---------------------------------------------------------


class TimedCollector:
    """Messages of one topic with the wall-clock time each arrived (time.time())."""

    def __init__(self, probe: Any, topic: str, message_type: type, qos: Any = 10) -> None:
        self._lock = threading.Lock()
        self.items: list[tuple[float, Any]] = []
        probe.node.create_subscription(message_type, topic, self._on_message, qos)

    def _on_message(self, message: Any) -> None:
        with self._lock:
            self.items.append((time.time(), message))

    def snapshot(self) -> list[tuple[float, Any]]:
        with self._lock:
            return list(self.items)

    def since(self, when: float) -> list[Any]:
        return [message for arrived, message in self.snapshot() if arrived > when]

    def wait_for(self, count: int, timeout: float, after: float = 0.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.since(after)
            if len(messages) >= count:
                return messages
            time.sleep(0.02)
        raise TimeoutError(f"{len(self.since(after))} of {count} messages within {timeout} s")


class StatusWatcher(TimedCollector):
    """dp_msgs/PolicyStatus of the node under test."""

    def __init__(self, probe: Any, topic: str = "/dp/policy_status") -> None:
        from dp_msgs.msg import PolicyStatus

        super().__init__(probe, topic, PolicyStatus)

    def latest(self) -> Any:
        items = self.snapshot()
        return items[-1][1] if items else None

    def wait_until(self, condition: Callable[[Any], bool], timeout: float, what: str) -> Any:
        """The first status (newest first) for which ``condition`` holds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            latest = self.latest()
            if latest is not None and condition(latest):
                return latest
            time.sleep(0.02)
        raise TimeoutError(f"{what}: not within {timeout} s; last status {self.latest()}")

    def wait_for_state(
        self, state: int, timeout: float = 20.0, contains: str = "", after: float = 0.0
    ) -> tuple[float, Any]:
        """The first status in ``state`` (message containing ``contains``) after ``after``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for arrived, status in self.snapshot():
                if arrived > after and status.state == state and contains in status.message:
                    return arrived, status
            time.sleep(0.02)
        seen = [(status.state, status.message) for _, status in self.snapshot()[-5:]]
        raise TimeoutError(f"no status {state} containing {contains!r} within {timeout} s: {seen}")


def change_state(probe: Any, node: str, transition: int, timeout: float = 90.0) -> bool:
    """Drive one lifecycle transition through ``<node>/change_state``; True on success."""
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    request = ChangeState.Request(transition=Transition(id=transition))
    return probe.call_service(ChangeState, f"/{node}/change_state", request, timeout).success


def lifecycle_state(probe: Any, node: str) -> str:
    from lifecycle_msgs.srv import GetState

    return probe.call_service(
        GetState, f"/{node}/get_state", GetState.Request()
    ).current_state.label


def set_parameters(probe: Any, node: str, **values: Any) -> None:
    from rcl_interfaces.srv import SetParameters
    from rclpy.parameter import Parameter

    request = SetParameters.Request(
        parameters=[
            Parameter(name, value=value).to_parameter_msg() for name, value in values.items()
        ]
    )
    results = probe.call_service(SetParameters, f"/{node}/set_parameters", request).results
    assert all(result.successful for result in results), results
