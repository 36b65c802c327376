"""launch/policy.launch.py and the RViz configurations fit the policy node, the sims and each other.

rviz/policy.rviz is PushT's, rviz/policy_panda.rviz the simulated Panda's (robot:=panda).
"""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from lifecycle_msgs.msg import Transition

from dp_policy_node import policy_node
from dp_policy_node.parameters import DEFAULT_TRAJECTORY_TOPIC, PARAMETERS, STRING_ARRAY
from dp_sim import arm_sim_node
from dp_sim.sim_node import PARAMETERS as SIM_PARAMETERS
from dp_testing.launch_stand_ins import declared_arguments, launch_actions, of_kind

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH = PACKAGE / "launch" / "policy.launch.py"
SIM_LAUNCH = PACKAGE / "launch" / "sim.launch.py"
RVIZ = PACKAGE / "rviz" / "policy.rviz"
PANDA_RVIZ = PACKAGE / "rviz" / "policy_panda.rviz"
DECLARED = {parameter.name: parameter for parameter in PARAMETERS}


def installed_executable(package: str, executable: str) -> Path:
    return Path(get_package_prefix(package)) / "lib" / package / executable


def _run_launch_file(monkeypatch, arguments: dict | None = None) -> list:
    """What the file's OpaqueFunction starts for ``arguments`` (stand-ins for launch)."""
    actions = launch_actions(LAUNCH, monkeypatch)
    declared = declared_arguments(actions)
    (opaque,) = of_kind(actions, "OpaqueFunction")
    context = {name: options.get("default_value", "") for name, options in declared.items()}
    context.update(params_file="/robot/policy_node.yaml", checkpoint="/data/checkpoints/lift")
    context.update(arguments or {})
    return opaque.kwargs["function"](context)


def test_the_lifecycle_node_is_the_installed_policy_node(monkeypatch) -> None:
    (node,) = of_kind(_run_launch_file(monkeypatch), "LifecycleNode")
    assert (node.kwargs["package"], node.kwargs["executable"]) == ("dp_policy_node", "policy_node")
    assert installed_executable("dp_policy_node", "policy_node").is_file()
    _, overrides = node.kwargs["parameters"]
    # The launch file drives the lifecycle: the node must not configure itself too.
    assert overrides["autostart"] is False
    assert set(overrides) <= set(DECLARED) | {"use_sim_time"}, set(overrides) - set(DECLARED)
    # Strings as the node declares them (launch_ros would read a substitution as YAML).
    assert overrides["checkpoint"] == "/data/checkpoints/lift"
    assert overrides["device"] == "auto"
    assert overrides["trajectory_topic"] == DEFAULT_TRAJECTORY_TOPIC
    assert overrides["use_sim_time"] is False
    # An unset array stays unset: the node derives it from the checkpoint.
    assert "command_topics" not in overrides


def test_the_node_is_configured_then_activated_once_inactive(monkeypatch) -> None:
    actions = _run_launch_file(monkeypatch)
    (node,) = of_kind(actions, "LifecycleNode")
    emitted = of_kind(actions, "EmitEvent")
    assert [event.kwargs["event"].kwargs["transition_id"] for event in emitted] == [
        Transition.TRANSITION_CONFIGURE
    ]
    # The configure event must come after the node in the description, so it has a target.
    assert actions.index(emitted[0]) > actions.index(node)
    (handler,) = of_kind(actions, "RegisterEventHandler")
    assert actions.index(handler) < actions.index(emitted[0])
    on_transition = handler.args[0]
    assert on_transition.kwargs["target_lifecycle_node"] is node
    assert on_transition.kwargs["goal_state"] == "inactive"
    (activate,) = on_transition.kwargs["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE
    assert handler.kwargs["condition"].args[0].args[0] == "activate"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (
            "gripper=/hand_controller/joint_trajectory",
            ["gripper=/hand_controller/joint_trajectory"],
        ),
        ("gripper=/a/joint_trajectory, wrist=/b", ["gripper=/a/joint_trajectory", "wrist=/b"]),
        ("[gripper=/a, 'wrist=/b']", ["gripper=/a", "wrist=/b"]),
    ],
)
def test_command_topics_reach_the_node_as_a_string_array(monkeypatch, given, expected) -> None:
    assert DECLARED["command_topics"].array_type == STRING_ARRAY
    (node,) = of_kind(_run_launch_file(monkeypatch, {"command_topics": given}), "LifecycleNode")
    assert node.kwargs["parameters"][1]["command_topics"] == expected


def test_an_empty_command_topics_entry_is_refused(monkeypatch) -> None:
    with pytest.raises(ValueError, match="empty entry"):
        _run_launch_file(monkeypatch, {"command_topics": "gripper=/a,,"})


def test_the_files_it_names_exist_and_are_installed(monkeypatch) -> None:
    share = Path(get_package_share_directory("dp_bringup"))
    arguments = declared_arguments(launch_actions(LAUNCH, monkeypatch))
    default = arguments["params_file"]["default_value"]
    assert [part for part in default.args[0][1:]] == ["config", "policy_node.yaml"]
    for relative in ("config/policy_node.yaml", "rviz/policy.rviz", "rviz/policy_panda.rviz"):
        assert (share / relative).read_text() == (PACKAGE / relative).read_text(), relative
    assert (share / "launch" / "sim.launch.py").is_file()
    assert (share / "launch" / LAUNCH.name).read_text() == LAUNCH.read_text()
    assert {"checkpoint", "device", "trajectory_topic", "command_topics", "sim", "rviz"} <= set(
        arguments
    )


@pytest.mark.parametrize(("robot", "config"), [("pusht", RVIZ), ("panda", PANDA_RVIZ)])
def test_rviz_starts_with_the_robots_configuration(monkeypatch, robot, config) -> None:
    assert not of_kind(_run_launch_file(monkeypatch, {"robot": robot}), "Node")
    (rviz,) = of_kind(_run_launch_file(monkeypatch, {"robot": robot, "rviz": "true"}), "Node")
    assert (rviz.kwargs["package"], rviz.kwargs["executable"]) == ("rviz2", "rviz2")
    share = Path(get_package_share_directory("dp_bringup"))
    assert rviz.kwargs["arguments"] == ["-d", str(share / "rviz" / config.name)]
    (own,) = of_kind(
        _run_launch_file(monkeypatch, {"rviz": "true", "rviz_config": "/robot/my.rviz"}), "Node"
    )
    assert own.kwargs["arguments"] == ["-d", "/robot/my.rviz"]


def test_sim_true_includes_the_sim_launch_file_with_robot_and_task(monkeypatch) -> None:
    actions = launch_actions(LAUNCH, monkeypatch)
    arguments = declared_arguments(actions)
    assert arguments["robot"]["default_value"] == "pusht"
    assert sorted(arguments["robot"]["choices"]) == ["panda", "pusht"]
    assert arguments["task"]["default_value"] == "lift"
    (include,) = of_kind(actions, "IncludeLaunchDescription")
    assert include.kwargs["condition"].args[0].args[0] == "sim"
    source = include.args[0].args[0]
    assert source.args[0][1:] == ["launch", "sim.launch.py"]
    passed = {name: value.args[0] for name, value in include.kwargs["launch_arguments"]}
    assert passed == {"use_sim_time": "use_sim_time", "robot": "robot", "task": "task"}
    # What sim.launch.py then starts for robot:=panda task:=lift: the arm sim on Lift.
    sim_actions = launch_actions(SIM_LAUNCH, monkeypatch)
    sim_arguments = declared_arguments(sim_actions)
    assert set(passed) <= set(sim_arguments)
    assert sim_arguments["task"]["default_value"] == arguments["task"]["default_value"]
    context = {name: options.get("default_value", "") for name, options in sim_arguments.items()}
    context.update(robot="panda", task="lift", use_sim_time="false")
    (opaque,) = of_kind(sim_actions, "OpaqueFunction")
    (sim,) = opaque.kwargs["function"](context)
    assert (sim.kwargs["executable"], sim.kwargs["name"]) == ("arm_sim_node", "arm_sim")
    assert sim.kwargs["parameters"][1] == {"task": "lift"}


def test_the_node_defaults_command_the_panda_sims_arm() -> None:
    # The first action stream goes to trajectory_topic, which is the arm controller's topic of
    # the sim; the gripper stream goes to the topic its checkpoint names (the sim's own).
    assert f"/{arm_sim_node.ARM_COMMAND_TOPIC}" == DEFAULT_TRAJECTORY_TOPIC


def _displays(path: Path) -> tuple[dict, list[tuple[str, str]]]:
    config = yaml.safe_load(path.read_text())["Visualization Manager"]
    topics = [
        (display["Class"], display["Topic"]["Value"])
        for display in config["Displays"]
        if "Topic" in display
    ]
    return config, topics


def test_rviz_shows_what_the_sim_and_the_policy_node_publish() -> None:
    config, topics = _displays(RVIZ)
    topics = dict(topics)
    assert topics["rviz_default_plugins/MarkerArray"] == f"/{policy_node.MARKER_TOPIC}"
    assert topics["rviz_default_plugins/Image"] == "/camera/image_raw"
    classes = [display["Class"] for display in config["Displays"]]
    assert "rviz_default_plugins/RobotModel" in classes
    # Markers and the sim's poses are drawn in the fixed frame without any TF between them.
    node_yaml = yaml.safe_load((PACKAGE / "config" / "policy_node.yaml").read_text())
    sim_defaults = {parameter.name: parameter.default for parameter in SIM_PARAMETERS}
    fixed_frame = config["Global Options"]["Fixed Frame"]
    assert fixed_frame == node_yaml["/**"]["ros__parameters"]["marker_frame"]
    assert fixed_frame == sim_defaults["world_frame"]


def test_panda_rviz_shows_the_arm_sims_cameras_and_hand_paths() -> None:
    config, topics = _displays(PANDA_RVIZ)
    images = {topic for kind, topic in topics if kind == "rviz_default_plugins/Image"}
    assert images == {f"/{name}/image_raw" for name in arm_sim_node.CAMERA_TOPICS.values()}
    markers = [topic for kind, topic in topics if kind == "rviz_default_plugins/MarkerArray"]
    # The sim names its marker topic in place (no constant); it is relative, so in the root
    # namespace it is /arm_sim/markers.
    assert markers == ["/arm_sim/markers"]
    assert '"arm_sim/markers"' in inspect.getsource(arm_sim_node)
    # No robot model: the Panda sim publishes no robot_description.
    classes = [display["Class"] for display in config["Displays"]]
    assert "rviz_default_plugins/RobotModel" not in classes
    node_yaml = yaml.safe_load((PACKAGE / "config" / "policy_node.yaml").read_text())
    arm_defaults = {parameter.name: parameter.default for parameter in arm_sim_node.PARAMETERS}
    fixed_frame = config["Global Options"]["Fixed Frame"]
    assert fixed_frame == arm_defaults["world_frame"]
    assert fixed_frame == node_yaml["/**"]["ros__parameters"]["marker_frame"]
