"""Record-free bags for the dataset and training tests: real rosbag2 files with real CDR.

``write_pusht_bag`` writes what the simulated PushT robot, its scripted expert and the recorder
would: ``/camera/image_raw`` (Image or CompressedImage), ``/joint_states`` (two prismatic
joints plus an unrelated one, in another order than the spec's), ``/pusht/block_pose``
(PoseStamped), the expert's ``/joint_trajectory_controller/joint_trajectory`` commands (stamp
zero, one point at time_from_start 0, 5 ms after the observation they answer) and
``dp_msgs/msg/EpisodeEvent`` on ``/dp/episode``. The values encode the global frame number
``g`` so that tests can check alignment exactly:

- image: every pixel of the red channel is ``(5 * g) % 256`` (green 40, blue 200);
- agent position: ``(0.001 g, -0.002 g)``; block pose x: ``0.01 g``;
- command answering frame g: ``(0.001 g + 0.05, -0.002 g + 0.05)``, so the action of frame g
  (the newest command at or before it) is the one answering frame g - 1.
"""

from __future__ import annotations

import shutil
import sqlite3
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import Stores, get_types_from_msg, get_typestore

REPO_ROOT = Path(__file__).resolve().parents[2]
EPISODE_EVENT_MSG = REPO_ROOT / "src" / "dp_msgs" / "msg" / "EpisodeEvent.msg"
JOINTS = ("pusher_x_joint", "pusher_y_joint")
IMAGE_TOPIC = "/camera/image_raw"
JOINT_TOPIC = "/joint_states"
BLOCK_TOPIC = "/pusht/block_pose"
COMMAND_TOPIC = "/joint_trajectory_controller/joint_trajectory"
EVENT_TOPIC = "/dp/episode"
START_NS = 1_700_000_000 * 1_000_000_000
COMMAND_OFFSET = 0.05

_TYPESTORE = None


def typestore():
    """Kilted's message types plus dp_msgs/msg/EpisodeEvent from its .msg file."""
    global _TYPESTORE
    if _TYPESTORE is None:
        store = get_typestore(Stores.ROS2_KILTED)
        store.register(
            get_types_from_msg(EPISODE_EVENT_MSG.read_text(), "dp_msgs/msg/EpisodeEvent")
        )
        _TYPESTORE = store
    return _TYPESTORE


@dataclass(frozen=True)
class EpisodePlan:
    """One episode of a fixture bag.

    end: ``success``, ``failure``, ``discard`` or ``open`` (no end event).
    camera_gap: (first frame, frames) during which the camera is silent.
    """

    frames: int = 24
    end: str = "success"
    camera_gap: tuple[int, int] | None = None


def expected_image_value(g: int) -> int:
    return (5 * g) % 256


def expected_agent(g: int) -> np.ndarray:
    return np.array([0.001 * g, -0.002 * g])


def expected_action(g: int) -> np.ndarray:
    """The action at frame g: the command that answered frame g - 1."""
    return expected_agent(g - 1) + COMMAND_OFFSET


def _time(ns: int):
    types = typestore().types
    return types["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns: int, frame: str = ""):
    return typestore().types["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame)


def _image(g: int, stamp_ns: int, encoding: str, size: tuple[int, int], texture: int = 0):
    types = typestore().types
    height, width = size
    rgb = np.empty((height, width, 3), dtype=np.uint8)
    rgb[..., 0] = expected_image_value(g)
    rgb[..., 1] = 40
    rgb[..., 2] = 200
    if texture:
        # Camera-like content for benchmarks: a gradient and sensor noise (compresses like a
        # real image, not like a flat colour).
        noise = np.random.default_rng(g).integers(0, texture, (height, width, 3))
        gradient = (np.arange(width)[None, :, None] * 100 // max(width, 1)).astype(np.int64)
        rgb = np.clip(rgb.astype(np.int64) // 2 + gradient + noise, 0, 255).astype(np.uint8)
    if encoding in ("jpeg", "png"):
        import cv2

        ok, encoded = cv2.imencode(".jpg" if encoding == "jpeg" else ".png", rgb[..., ::-1])
        assert ok
        return "sensor_msgs/msg/CompressedImage", types["sensor_msgs/msg/CompressedImage"](
            header=_header(stamp_ns, "camera"),
            format=f"rgb8; {encoding} compressed bgr8",
            data=np.frombuffer(encoded.tobytes(), dtype=np.uint8),
        )
    pixels = {"rgb8": rgb, "bgr8": rgb[..., ::-1]}[encoding]
    return "sensor_msgs/msg/Image", types["sensor_msgs/msg/Image"](
        header=_header(stamp_ns, "camera"),
        height=height,
        width=width,
        encoding=encoding,
        is_bigendian=0,
        step=width * 3,
        data=np.ascontiguousarray(pixels).reshape(-1),
    )


def _joint_state(g: int, stamp_ns: int, joints: tuple[str, ...]):
    types = typestore().types
    position = dict(zip(JOINTS, expected_agent(g), strict=True))
    names = ["pusher_y_joint", "gripper_joint", "pusher_x_joint"]
    names = [name for name in names if name in joints or name == "gripper_joint"]
    values = [position.get(name, 0.5) for name in names]
    return types["sensor_msgs/msg/JointState"](
        header=_header(stamp_ns),
        name=names,
        position=np.array(values, dtype=np.float64),
        velocity=np.zeros(len(names)),
        effort=np.zeros(0),
    )


def _pose(g: int, stamp_ns: int):
    types = typestore().types
    return types["geometry_msgs/msg/PoseStamped"](
        header=_header(stamp_ns, "world"),
        pose=types["geometry_msgs/msg/Pose"](
            position=types["geometry_msgs/msg/Point"](x=0.01 * g, y=0.02, z=0.0),
            orientation=types["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0),
        ),
    )


def _command(g: int):
    types = typestore().types
    target = expected_agent(g) + COMMAND_OFFSET
    point = types["trajectory_msgs/msg/JointTrajectoryPoint"](
        positions=target.astype(np.float64),
        velocities=np.zeros(0),
        accelerations=np.zeros(0),
        effort=np.zeros(0),
        time_from_start=types["builtin_interfaces/msg/Duration"](sec=0, nanosec=0),
    )
    return types["trajectory_msgs/msg/JointTrajectory"](
        header=_header(0), joint_names=list(JOINTS), points=[point]
    )


def _event(ns: int, event: int, success: bool, index: int):
    types = typestore().types
    return types["dp_msgs/msg/EpisodeEvent"](
        header=_header(ns),
        event=event,
        episode_index=index,
        episode_name=f"push_t_{index:04d}",
        task="push_t",
        success=success,
        notes="",
    )


def write_pusht_bag(
    path: Path,
    episodes: list[EpisodePlan] | tuple[EpisodePlan, ...] = (EpisodePlan(),),
    storage: str = "mcap",
    image: str = "rgb8",
    image_size: tuple[int, int] = (32, 32),
    dt: float = 0.1,
    jitter_ns: int = 3_000_000,
    events: bool = True,
    custom_data: dict[str, str] | None = None,
    joints: tuple[str, ...] = JOINTS,
    topics: tuple[str, ...] = (IMAGE_TOPIC, JOINT_TOPIC, BLOCK_TOPIC, COMMAND_TOPIC),
    first_frame: int = 0,
    seed: int = 0,
    texture: int = 0,
) -> Path:
    """Write a bag of ``episodes`` at ``path`` (see the module docstring); returns ``path``.

    ``texture``: noise amplitude over the images (0: flat colours that tests check exactly).
    """
    store = typestore()
    rng = np.random.default_rng(seed)
    writer = Writer(
        path,
        version=9,
        storage_plugin=StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3,
    )
    for key, value in (custom_data or {}).items():
        writer.set_custom_data(key, value)
    writer.open()
    image_type = (
        "sensor_msgs/msg/CompressedImage" if image in ("jpeg", "png") else ("sensor_msgs/msg/Image")
    )
    types = {
        IMAGE_TOPIC: image_type,
        JOINT_TOPIC: "sensor_msgs/msg/JointState",
        BLOCK_TOPIC: "geometry_msgs/msg/PoseStamped",
        COMMAND_TOPIC: "trajectory_msgs/msg/JointTrajectory",
    }
    connections = {
        topic: writer.add_connection(topic, types[topic], typestore=store) for topic in topics
    }
    if events:
        connections[EVENT_TOPIC] = writer.add_connection(
            EVENT_TOPIC, "dp_msgs/msg/EpisodeEvent", typestore=store
        )
    dt_ns = round(dt * 1e9)
    records: list[tuple[int, str, object]] = []
    g = first_frame
    now = START_NS
    for index, plan in enumerate(episodes):
        first_ns = now
        if events:
            records.append(
                (first_ns - 10_000_000, EVENT_TOPIC, _event(first_ns - 10_000_000, 1, False, index))
            )
        for k in range(plan.frames):
            stamp = now + int(rng.integers(-jitter_ns, jitter_ns + 1)) if jitter_ns else now
            silent = plan.camera_gap and plan.camera_gap[0] <= k < sum(plan.camera_gap)
            if IMAGE_TOPIC in topics and not silent:
                records.append(
                    (
                        stamp + 2_000_000,
                        IMAGE_TOPIC,
                        _image(g, stamp, image, image_size, texture)[1],
                    )
                )
            if JOINT_TOPIC in topics:
                records.append((stamp + 1_000_000, JOINT_TOPIC, _joint_state(g, stamp, joints)))
            if BLOCK_TOPIC in topics:
                records.append((stamp + 1_000_000, BLOCK_TOPIC, _pose(g, stamp)))
            if COMMAND_TOPIC in topics:
                records.append((stamp + 5_000_000, COMMAND_TOPIC, _command(g)))
            g += 1
            now += dt_ns
        last_ns = now - dt_ns + 10_000_000
        if events and plan.end != "open":
            kind = {"success": 2, "failure": 2, "discard": 3}[plan.end]
            records.append(
                (last_ns, EVENT_TOPIC, _event(last_ns, kind, plan.end == "success", index))
            )
        now += 10 * dt_ns  # the reset between episodes
    records.sort(key=lambda record: record[0])
    for log_ns, topic, message in records:
        msgtype = (
            image_type
            if topic == IMAGE_TOPIC
            else ("dp_msgs/msg/EpisodeEvent" if topic == EVENT_TOPIC else types[topic])
        )
        writer.write(connections[topic], log_ns, store.serialize_cdr(message, msgtype))
    writer.close()
    return path


def strip_definitions(bag: Path) -> None:
    """Make a sqlite3 bag look like Humble's: no message definitions stored."""
    (database,) = bag.glob("*.db3")
    connection = sqlite3.connect(database)
    connection.execute("DELETE FROM message_definitions")
    connection.commit()
    connection.close()


def truncate_storage(bag: Path, keep: float = 0.6) -> None:
    """Cut the storage file, as a recorder killed mid-write leaves it."""
    (storage,) = [p for p in bag.iterdir() if p.suffix in (".mcap", ".db3")]
    data = storage.read_bytes()
    storage.write_bytes(data[: int(len(data) * keep)])


def copy_bag(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


PUSHT_SPEC = {
    "dt": 0.1,
    "reference": "image",
    "observations": [
        {"key": "image", "topic": IMAGE_TOPIC, "kind": "image", "shape": [3, 32, 32]},
        {"key": "agent_pos", "topic": JOINT_TOPIC, "kind": "joint_state", "joints": list(JOINTS)},
    ],
    "action": {
        "key": "action",
        "topic": COMMAND_TOPIC,
        "kind": "joint_trajectory",
        "joints": list(JOINTS),
    },
}
