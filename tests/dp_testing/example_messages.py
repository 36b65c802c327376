"""Example messages with known content, built the same way in test nodes and in tests."""

from __future__ import annotations

from builtin_interfaces.msg import Duration, Time

from dp_msgs.msg import ActionChunk

JOINT_NAMES = ["shoulder_pan", "shoulder_lift", "elbow", "wrist"]
TO, TP, TA = 2, 16, 8


def example_action_chunk(index: int) -> ActionChunk:
    """A chunk whose every field depends on ``index``, so a mix-up between messages shows."""
    chunk = ActionChunk()
    chunk.header.frame_id = ""
    chunk.action_names = list(JOINT_NAMES)
    chunk.dt = 0.1
    chunk.observation_horizon = TO
    chunk.prediction_horizon = TP
    chunk.action_horizon = TA
    chunk.action_dim = len(JOINT_NAMES)
    chunk.actions = [
        index + row * 0.01 + column * 0.001
        for row in range(TP)
        for column in range(len(JOINT_NAMES))
    ]
    chunk.observation_stamp = Time(sec=1000 + index, nanosec=500)
    chunk.inference_time = Duration(sec=0, nanosec=12_345_000)
    chunk.chunk_index = index
    chunk.checkpoint = f"checkpoints/example_{index}"
    return chunk
