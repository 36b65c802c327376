"""Diffusion Policy zarr replay buffers (data/<key>, meta/episode_ends) as a dataset source."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from dp_policy.data_spec import DataSpec
from dp_policy.datasets.errors import DatasetError, EmptyDatasetError
from dp_policy.datasets.replay_store import ArrayMapping, open_replay

SPEC = DataSpec.from_dict(
    {
        "dt": 0.1,
        "observations": [
            {"key": "image", "topic": "/camera/image_raw", "kind": "image", "shape": [3, 16, 16]},
            {
                "key": "agent_pos",
                "topic": "/joint_states",
                "kind": "joint_state",
                "joints": ["pusher_x_joint", "pusher_y_joint"],
            },
        ],
        "action": {
            "key": "action",
            "topic": "/joint_trajectory_controller/joint_trajectory",
            "kind": "joint_trajectory",
            "joints": ["pusher_x_joint", "pusher_y_joint"],
        },
    }
)
# PushT pixels -> the simulated robot's joint metres (dp_sim's mapping).
TO_METRES = {"scale": [0.001, -0.001], "offset": [-0.256, 0.256]}
MAPPINGS = {
    "image": ArrayMapping(array="img", layout="hwc"),
    "agent_pos": ArrayMapping(array="state", columns=(0, 1), **TO_METRES),
    "action": ArrayMapping(array="action", **TO_METRES),
}


def write_pusht_replay(path, episode_lengths=(12, 9), zarr_format=2):
    """A replay buffer laid out like pusht_cchi_v7_replay.zarr (float32 images in 0..255)."""
    frames = sum(episode_lengths)
    rng = np.random.default_rng(0)
    group = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    image = np.broadcast_to(
        np.arange(frames, dtype=np.float32)[:, None, None, None], (frames, 16, 16, 3)
    ).copy()
    image[..., 2] = 200.0
    state = rng.uniform(0, 512, (frames, 5)).astype(np.float32)
    action = rng.uniform(0, 512, (frames, 2)).astype(np.float32)
    keypoint = rng.uniform(0, 512, (frames, 9, 2)).astype(np.float32)
    for name, data in (
        ("img", image),
        ("state", state),
        ("action", action),
        ("keypoint", keypoint),
    ):
        group.create_array(f"data/{name}", data=data, chunks=(5, *data.shape[1:]))
    group.create_array("meta/episode_ends", data=np.cumsum(episode_lengths).astype(np.int64))
    return state, action, keypoint


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_original_layout_is_read_and_converted(tmp_path, zarr_format) -> None:
    state, action, _ = write_pusht_replay(tmp_path / "pusht.zarr", zarr_format=zarr_format)
    replay = open_replay(tmp_path / "pusht.zarr", SPEC, MAPPINGS)
    assert replay.episode_ends.tolist() == [12, 21]
    images = replay.arrays["image"]
    assert images.shape == (21, 3, 16, 16) and images.dtype == np.uint8
    assert images[:, 0, 0, 0].tolist() == list(range(21)) and np.all(images[:, 2] == 200)
    expected = np.stack([0.001 * state[:, 0] - 0.256, -0.001 * state[:, 1] + 0.256], axis=1)
    np.testing.assert_allclose(replay.arrays["agent_pos"], expected, atol=1e-6)
    assert replay.arrays["action"].dtype == np.float32
    np.testing.assert_allclose(
        replay.arrays["action"][:, 0], 0.001 * action[:, 0] - 0.256, atol=1e-6
    )
    lazy = open_replay(tmp_path / "pusht.zarr", SPEC, MAPPINGS, in_memory=False)
    rows = np.array([[3, 4], [19, 20]])
    for key in ("image", "agent_pos", "action"):
        np.testing.assert_array_equal(lazy.arrays[key][rows], replay.arrays[key][rows])


def test_flattened_columns_select_keypoints(tmp_path) -> None:
    _, _, keypoint = write_pusht_replay(tmp_path / "pusht.zarr")
    spec = DataSpec.from_dict(
        {
            "dt": 0.1,
            "observations": [
                {
                    "key": "keypoints",
                    "topic": "/keypoints",
                    "kind": "fields",
                    "message_type": "std_msgs/msg/Float64MultiArray",
                    "fields": [f"k{i}" for i in range(18)],
                }
            ],
            "action": SPEC.action.to_dict(),
        }
    )
    replay = open_replay(
        tmp_path / "pusht.zarr",
        spec,
        {"keypoints": ArrayMapping(array="keypoint"), "action": ArrayMapping(array="action")},
    )
    np.testing.assert_allclose(replay.arrays["keypoints"], keypoint.reshape(21, 18), rtol=1e-6)


@pytest.mark.parametrize(
    ("mappings", "message"),
    [
        (
            {**MAPPINGS, "image": ArrayMapping(array="camera", layout="hwc")},
            "data/camera, which is not",
        ),
        ({**MAPPINGS, "image": ArrayMapping(array="img", layout="chw")}, r"needs \(3, 16, 16\)"),
        ({**MAPPINGS, "agent_pos": ArrayMapping(array="state")}, "needs 2 values per frame"),
        ({**MAPPINGS, "agent_pos": ArrayMapping(array="state", columns=(0, 9))}, "selects columns"),
        (
            {"image": MAPPINGS["image"]},
            r"no zarr array mapped to key\(s\) \['agent_pos', 'action'\]",
        ),
    ],
)
def test_mapping_errors_name_the_key(tmp_path, mappings, message) -> None:
    write_pusht_replay(tmp_path / "pusht.zarr")
    with pytest.raises(DatasetError, match=message):
        open_replay(tmp_path / "pusht.zarr", SPEC, mappings)


def test_not_a_replay_buffer_and_empty_buffer(tmp_path) -> None:
    with pytest.raises(DatasetError, match="not a replay buffer"):
        open_replay(tmp_path / "missing.zarr", SPEC, MAPPINGS)
    group = zarr.open_group(str(tmp_path / "empty.zarr"), mode="w")
    group.create_array("meta/episode_ends", data=np.zeros(0, dtype=np.int64))
    with pytest.raises(EmptyDatasetError, match="no episode"):
        open_replay(tmp_path / "empty.zarr", SPEC, MAPPINGS)
