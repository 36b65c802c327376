"""launch/policy.launch.py and rviz/policy.rviz fit the policy node, the sim and each other."""

from __future__ import annotations

from pathlib import Path

import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from lifecycle_msgs.msg import Transition

from dp_policy_node import policy_node
from dp_policy_node.parameters import PARAMETERS
from dp_sim.sim_node import PARAMETERS as SIM_PARAMETERS
from dp_testing.launch_stand_ins import declared_arguments, launch_actions, of_kind

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH = PACKAGE / "launch" / "policy.launch.py"
RVIZ = PACKAGE / "rviz" / "policy.rviz"


def installed_executable(package: str, executable: str) -> Path:
    return Path(get_package_prefix(package)) / "lib" / package / executable


def test_the_lifecycle_node_is_the_installed_policy_node(monkeypatch) -> None:
    actions = launch_actions(LAUNCH, monkeypatch)
    (node,) = of_kind(actions, "LifecycleNode")
    assert (node.kwargs["package"], node.kwargs["executable"]) == ("dp_policy_node", "policy_node")
    assert installed_executable("dp_policy_node", "policy_node").is_file()
    _, overrides = node.kwargs["parameters"]
    # The launch file drives the lifecycle: the node must not configure itself too.
    assert overrides["autostart"] is False
    declared = {parameter.name for parameter in PARAMETERS} | {"use_sim_time"}
    assert set(overrides) <= declared, set(overrides) - declared


def test_the_node_is_configured_then_activated_once_inactive(monkeypatch) -> None:
    actions = launch_actions(LAUNCH, monkeypatch)
    (node,) = of_kind(actions, "LifecycleNode")
    emitted = of_kind(actions, "EmitEvent")
    assert [event.kwargs["event"].kwargs["transition_id"] for event in emitted] == [
        Transition.TRANSITION_CONFIGURE
    ]
    # The configure event must come after the node in the description, so it has a target.
    assert actions.index(emitted[0]) > actions.index(node)
    (handler,) = of_kind(actions, "RegisterEventHandler")
    on_transition = handler.args[0]
    assert on_transition.kwargs["target_lifecycle_node"] is node
    assert on_transition.kwargs["goal_state"] == "inactive"
    (activate,) = on_transition.kwargs["entities"]
    assert activate.kwargs["event"].kwargs["transition_id"] == Transition.TRANSITION_ACTIVATE


def test_the_files_it_names_exist_and_are_installed(monkeypatch) -> None:
    share = Path(get_package_share_directory("dp_bringup"))
    arguments = declared_arguments(launch_actions(LAUNCH, monkeypatch))
    for name, relative in (
        ("params_file", "config/policy_node.yaml"),
        ("rviz_config", "rviz/policy.rviz"),
    ):
        default = arguments[name]["default_value"]
        assert [part for part in default.args[0][1:]] == relative.split("/"), name
        assert (share / relative).read_text() == (PACKAGE / relative).read_text()
    assert (share / "launch" / "sim.launch.py").is_file()
    assert (share / "launch" / LAUNCH.name).read_text() == LAUNCH.read_text()
    assert {"checkpoint", "device", "trajectory_topic", "sim", "rviz"} <= set(arguments)


def test_rviz_shows_what_the_sim_and_the_policy_node_publish() -> None:
    config = yaml.safe_load(RVIZ.read_text())["Visualization Manager"]
    topics = {
        display["Class"]: display["Topic"]["Value"]
        for display in config["Displays"]
        if "Topic" in display
    }
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
