"""config/policy_node.yaml fits the policy node: every parameter it sets, the node declares."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters, ListParameters

from dp_policy_node.parameters import ARRAY_TYPES, PARAMETERS, NodeSettings

PACKAGE = Path(__file__).resolve().parents[1]
CONFIG = PACKAGE / "config" / "policy_node.yaml"
DECLARED = {parameter.name: parameter for parameter in PARAMETERS}


def file_parameters() -> dict:
    document = yaml.safe_load(CONFIG.read_text())
    assert list(document) == ["/**"], "parameters for any node name, as launch files use"
    return document["/**"]["ros__parameters"]


def test_the_yaml_sets_every_parameter_of_the_node_with_its_type() -> None:
    values = file_parameters()
    assert set(values) == set(DECLARED), "the YAML documents every parameter, and no other"
    for name, value in values.items():
        declared = DECLARED[name]
        if declared.array_type in ARRAY_TYPES:
            assert value == [], f"{name}: documented unset, so the default applies"
            continue
        assert type(value) is type(declared.default), f"{name}: {value!r}"
        assert value == declared.default, f"{name}: the YAML shows the node's default"


def test_the_yaml_values_pass_the_node_checks_once_a_checkpoint_is_named() -> None:
    values = {**file_parameters(), "checkpoint": "/some/checkpoint"}
    settings = NodeSettings.from_values({k: (v if v != [] else None) for k, v in values.items()})
    assert settings.device == "auto" and settings.joint_names == ()


def test_the_installed_file_is_the_package_file() -> None:
    share = Path(get_package_share_directory("dp_bringup"))
    assert (share / "config" / CONFIG.name).read_text() == CONFIG.read_text()


@pytest.mark.ros
def test_the_installed_node_takes_every_value_of_the_yaml(ros_processes, graph_probe) -> None:
    """An undeclared name in a parameter file is silently ignored by ROS: ask the node.

    Started as `ros2 run dp_policy_node policy_node --ros-args --params-file ...` would.
    """
    share = Path(get_package_share_directory("dp_bringup"))
    prefix = Path(get_package_prefix("dp_policy_node"))
    executable = prefix / "lib" / "dp_policy_node" / "policy_node"
    process = ros_processes.start(
        "policy_node",
        [str(executable), "--ros-args", "--params-file", str(share / "config" / CONFIG.name)],
    )
    assert process.wait_for_output("policy node ready", timeout=60.0), process.output()
    values = file_parameters()
    listed = graph_probe.call_service(
        ListParameters, "/policy_node/list_parameters", ListParameters.Request()
    ).result.names
    assert set(values) <= set(listed), f"not declared: {sorted(set(values) - set(listed))}"
    # An empty YAML list carries no type: such a parameter is declared (listed above) but stays
    # unset, which the node reads as "derive from the checkpoint".
    values = {name: value for name, value in values.items() if value != []}
    response = graph_probe.call_service(
        GetParameters, "/policy_node/get_parameters", GetParameters.Request(names=list(values))
    )
    for (name, expected), value in zip(values.items(), response.values, strict=True):
        got = {
            ParameterType.PARAMETER_BOOL: value.bool_value,
            ParameterType.PARAMETER_INTEGER: value.integer_value,
            ParameterType.PARAMETER_DOUBLE: value.double_value,
            ParameterType.PARAMETER_STRING: value.string_value,
        }[value.type]
        assert got == expected, name
    assert process.stop() == 0
