"""config/sim.yaml, config/expert.yaml and launch/sim.launch.py fit the dp_sim nodes."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from dp_sim import expert_node, sim_node
from dp_sim.mapping import JOINT_NAMES
from dp_testing.launch_stand_ins import declared_arguments, launch_actions, of_kind

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH = PACKAGE / "launch" / "sim.launch.py"
CONFIGS = {"sim.yaml": sim_node.PARAMETERS, "expert.yaml": expert_node.PARAMETERS}
EXECUTABLES = {"sim_node": "pusht_sim", "expert_node": "pusht_expert"}


def file_parameters(name: str) -> dict:
    document = yaml.safe_load((PACKAGE / "config" / name).read_text())
    assert list(document) == ["/**"], "parameters for any node name, as the launch file uses"
    return document["/**"]["ros__parameters"]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_yaml_sets_every_parameter_of_its_node_with_its_type(name: str) -> None:
    declared = {parameter.name: parameter for parameter in CONFIGS[name]}
    values = file_parameters(name)
    assert set(values) == set(declared), "the YAML is the reference: every parameter, no other"
    for key, value in values.items():
        default = declared[key].default
        assert type(value) is type(default), f"{key}: {value!r} is not a {type(default)}"
        if declared[key].value_range is not None:
            low, high = declared[key].value_range
            assert low <= value <= high, key


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_installed_files_are_the_package_files(name: str) -> None:
    share = Path(get_package_share_directory("dp_bringup"))
    assert (share / "config" / name).read_text() == (PACKAGE / "config" / name).read_text()
    assert (share / "launch" / LAUNCH.name).read_text() == LAUNCH.read_text()


def test_the_launch_file_names_packages_executables_and_files_that_exist() -> None:
    tree = ast.parse(LAUNCH.read_text())
    calls = [node for node in ast.walk(tree) if isinstance(node, ast.Call)]
    nodes = [call for call in calls if getattr(call.func, "id", "") == "Node"]
    packages = [
        ast.literal_eval(next(k.value for k in node.keywords if k.arg == "package"))
        for node in nodes
    ]
    # robot_state_publisher comes from a full ROS 2 install, not from this workspace.
    assert sorted(packages) == ["dp_sim", "dp_sim", "robot_state_publisher"]
    for node in nodes:
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        package = ast.literal_eval(keywords["package"])
        executable = ast.literal_eval(keywords["executable"])
        if package != "dp_sim":
            continue
        assert (Path(get_package_prefix(package)) / "lib" / package / executable).is_file()
        assert ast.literal_eval(keywords["name"]) == EXECUTABLES[executable]
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert {"dp_bringup", "config", *CONFIGS} <= strings
    overrides = next(
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SIM_OVERRIDES"
    )
    assert set(ast.literal_eval(overrides)) <= {p.name for p in sim_node.PARAMETERS}


def _run_launch_file(monkeypatch, arguments: dict) -> list:
    """The nodes the launch file starts for ``arguments`` (stand-ins for launch/launch_ros)."""
    actions = launch_actions(LAUNCH, monkeypatch)
    declared = declared_arguments(actions)
    (opaque,) = of_kind(actions, "OpaqueFunction")
    share = PACKAGE / "config"
    context = {name: options.get("default_value", "") for name, options in declared.items()}
    context.update(sim_params_file=str(share / "sim.yaml"))
    context.update(expert_params_file=str(share / "expert.yaml"))
    context.update(robot_state_publisher="false")
    context.update(arguments)
    return opaque.kwargs["function"](context)


def test_the_launch_file_starts_the_sim_alone_by_default(monkeypatch) -> None:
    (sim,) = _run_launch_file(monkeypatch, {})
    assert (sim.kwargs["package"], sim.kwargs["executable"]) == ("dp_sim", "sim_node")
    parameter_file, overrides = sim.kwargs["parameters"]
    assert Path(parameter_file).name == "sim.yaml" and overrides == {}


def test_the_launch_file_passes_typed_overrides_and_sim_time_to_the_expert(monkeypatch) -> None:
    sim, expert = _run_launch_file(
        monkeypatch, {"expert": "true", "seed": "7", "real_time_factor": "5", "auto_reset": "true"}
    )
    assert sim.kwargs["parameters"][1] == {"seed": 7, "real_time_factor": 5.0, "auto_reset": True}
    assert isinstance(sim.kwargs["parameters"][1]["real_time_factor"], float)
    assert expert.kwargs["executable"] == "expert_node"
    assert expert.kwargs["parameters"][1] == {"use_sim_time": True}
    _, expert = _run_launch_file(monkeypatch, {"expert": "true"})
    assert expert.kwargs["parameters"][1] == {"use_sim_time": False}


@pytest.mark.ros
@pytest.mark.parametrize("executable", sorted(EXECUTABLES))
def test_the_installed_nodes_take_every_value_of_their_yaml(
    executable, ros_processes, graph_probe
) -> None:
    """An undeclared name in a parameter file is silently ignored by ROS: ask the node."""
    node_name = EXECUTABLES[executable]
    config = f"{'sim' if executable == 'sim_node' else 'expert'}.yaml"
    share = Path(get_package_share_directory("dp_bringup"))
    prefix = Path(get_package_prefix("dp_sim"))
    process = ros_processes.start(
        node_name,
        [
            str(prefix / "lib" / "dp_sim" / executable),
            "--ros-args",
            "--params-file",
            str(share / "config" / config),
        ],
    )
    assert process.wait_for_output("ready", timeout=30.0), process.output()
    values = file_parameters(config)
    response = graph_probe.call_service(
        GetParameters, f"/{node_name}/get_parameters", GetParameters.Request(names=list(values))
    )
    for (name, expected), value in zip(values.items(), response.values, strict=True):
        assert value.type != ParameterType.PARAMETER_NOT_SET, f"{name} is not declared"
        got = {
            ParameterType.PARAMETER_BOOL: value.bool_value,
            ParameterType.PARAMETER_INTEGER: value.integer_value,
            ParameterType.PARAMETER_DOUBLE: value.double_value,
            ParameterType.PARAMETER_STRING: value.string_value,
        }[value.type]
        assert got == expected, name


def test_robot_state_publisher_gets_the_urdf_of_the_sim_frames(monkeypatch) -> None:
    _, publisher = _run_launch_file(monkeypatch, {"robot_state_publisher": "true"})
    assert publisher.kwargs["package"] == "robot_state_publisher"
    (parameters,) = publisher.kwargs["parameters"]
    description = parameters["robot_description"]
    world_frame = file_parameters("sim.yaml")["world_frame"]
    assert f'<link name="{world_frame}"/>' in description
    assert all(f'<joint name="{joint}"' in description for joint in JOINT_NAMES)
