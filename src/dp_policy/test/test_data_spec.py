"""The data spec: validation with clear errors, YAML round trip, policy specs derived from it."""

from __future__ import annotations

import copy

import pytest

from dp_policy.data_spec import DataSpec, DataSpecError, StreamSpec

PUSHT_SPEC = {
    "dt": 0.1,
    "reference": "image",
    "observations": [
        {"key": "image", "topic": "/camera/image_raw", "kind": "image", "shape": [3, 96, 96]},
        {
            "key": "agent_pos",
            "topic": "/joint_states",
            "kind": "joint_state",
            "joints": ["pusher_x_joint", "pusher_y_joint"],
        },
        {
            "key": "block_pose",
            "topic": "/pusht/block_pose",
            "kind": "fields",
            "message_type": "geometry_msgs/msg/PoseStamped",
            "fields": ["pose.position.x", "pose.position.y"],
        },
    ],
    "action": {
        "key": "action",
        "topic": "/joint_trajectory_controller/joint_trajectory",
        "kind": "joint_trajectory",
        "joints": ["pusher_x_joint", "pusher_y_joint"],
    },
}


def test_yaml_round_trip_and_derived_policy_specs(tmp_path) -> None:
    spec = DataSpec.from_dict(PUSHT_SPEC)
    spec.to_yaml(tmp_path / "spec.yaml")
    again = DataSpec.from_yaml(tmp_path / "spec.yaml")
    assert again == spec
    assert spec.max_age == pytest.approx(0.2)  # two grid steps by default
    observation_spec = spec.observation_spec()
    assert observation_spec.cameras == {"image": (3, 96, 96)}
    assert observation_spec.low_dim == {"agent_pos": 2, "block_pose": 2}
    action_spec = spec.action_spec()
    assert action_spec.names == ("pusher_x_joint", "pusher_y_joint")
    assert action_spec.dt == pytest.approx(0.1)
    assert spec.stream("image").message_type == "sensor_msgs/msg/Image"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(dt=0), "dt must be a positive"),
        (lambda d: d.update(reference="nope"), "reference 'nope'"),
        (lambda d: d.update(colour="red"), "unknown top-level fields"),
        (lambda d: d["observations"][0].update(kind="lidar"), "kind 'lidar'"),
        (lambda d: d["observations"][0].update(shape=[4, 96, 96]), "C 1 or 3"),
        (lambda d: d["observations"][1].update(joints=[]), "joint names"),
        (lambda d: d["observations"][1].update(topic="joint_states"), "absolute name"),
        (lambda d: d["observations"][2].pop("message_type"), "needs message_type"),
        (lambda d: d["observations"][2].update(fields=[]), "dotted field paths"),
        (lambda d: d["action"].update(key="image"), "distinct"),
        (lambda d: d["action"].update(kind="image", shape=[3, 8, 8]), "cannot be an image"),
    ],
)
def test_invalid_specs_are_refused_with_a_clear_error(change, message) -> None:
    import copy

    data = copy.deepcopy(PUSHT_SPEC)
    change(data)
    with pytest.raises(DataSpecError, match=message):
        DataSpec.from_dict(data)


def test_yaml_errors_name_the_file(tmp_path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("dt: [unclosed")
    with pytest.raises(DataSpecError, match=r"broken\.yaml"):
        DataSpec.from_yaml(path)


def test_stream_names_are_joints_or_fields() -> None:
    stream = StreamSpec.from_dict(PUSHT_SPEC["observations"][2])
    assert stream.names == ("pose.position.x", "pose.position.y")
    assert stream.size == 2


ARM_AND_GRIPPER = {
    "dt": 0.05,
    "observations": [
        {"key": "joints", "topic": "/joint_states", "kind": "joint_state", "joints": ["j1", "f1"]}
    ],
    "actions": [
        {
            "key": "arm",
            "topic": "/joint_trajectory_controller/joint_trajectory",
            "kind": "joint_trajectory",
            "joints": ["j1", "j2"],
        },
        {
            "key": "gripper",
            "topic": "/gripper_trajectory_controller/joint_trajectory",
            "kind": "joint_trajectory",
            "joints": ["f1"],
        },
    ],
}


def test_an_action_of_several_command_streams_concatenates_them_in_order() -> None:
    spec = DataSpec.from_dict(ARM_AND_GRIPPER)
    assert spec.action_keys == ("arm", "gripper")
    assert spec.action_spec().names == ("j1", "j2", "f1") and spec.action_spec().dim == 3
    assert spec.action_slices() == {"arm": slice(0, 2), "gripper": slice(2, 3)}
    assert [stream.key for stream in spec.streams] == ["joints", "arm", "gripper"]
    assert DataSpec.from_dict(spec.to_dict()) == spec
    with pytest.raises(DataSpecError, match="2 action streams"):
        _ = spec.action
    # One stream is still written as 'action', as older checkpoints have it.
    single = DataSpec.from_dict({**ARM_AND_GRIPPER, "actions": ARM_AND_GRIPPER["actions"][:1]})
    assert "action" in single.to_dict() and "actions" not in single.to_dict()
    assert single.action.key == "arm"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(action=d["actions"][0]), "'action', or several as 'actions'"),
        (lambda d: d.update(actions=[]), "at least one action stream"),
        (lambda d: d["actions"][1].update(joints=["j2"]), "name a value twice"),
        (lambda d: d["actions"][1].update(key="arm"), "distinct"),
        (lambda d: d.update(actions="arm"), "list of streams"),
    ],
)
def test_invalid_action_streams_are_refused(change, message) -> None:
    data = copy.deepcopy(ARM_AND_GRIPPER)
    change(data)
    with pytest.raises(DataSpecError, match=message):
        DataSpec.from_dict(data)
