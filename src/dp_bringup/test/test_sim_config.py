"""The sim and expert YAML files and launch/sim.launch.py fit the dp_sim nodes of both robots.

PushT: config/sim.yaml and expert.yaml for sim_node and expert_node; the Panda: arm_sim.yaml
and arm_expert.yaml for arm_sim_node and arm_expert_node (robot:=panda).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rcl_interfaces.msg import ParameterType
from rcl_interfaces.srv import GetParameters

from dp_sim import arm_expert_node, arm_sim_node, expert_node, sim_node
from dp_sim.arm_robot import TASKS
from dp_sim.mapping import JOINT_NAMES
from dp_testing.launch_stand_ins import declared_arguments, launch_actions, of_kind

PACKAGE = Path(__file__).resolve().parents[1]
LAUNCH = PACKAGE / "launch" / "sim.launch.py"
CONFIGS = {
    "sim.yaml": sim_node.PARAMETERS,
    "expert.yaml": expert_node.PARAMETERS,
    "arm_sim.yaml": arm_sim_node.PARAMETERS,
    "arm_expert.yaml": arm_expert_node.PARAMETERS,
}
# Executable -> (node name, its parameter file).
EXECUTABLES = {
    "sim_node": ("pusht_sim", "sim.yaml"),
    "expert_node": ("pusht_expert", "expert.yaml"),
    "arm_sim_node": ("arm_sim", "arm_sim.yaml"),
    "arm_expert_node": ("arm_expert", "arm_expert.yaml"),
}


def file_parameters(name: str) -> dict:
    document = yaml.safe_load((PACKAGE / "config" / name).read_text())
    assert list(document) == ["/**"], "parameters for any node name, as the launch file uses"
    return document["/**"]["ros__parameters"]


def names(parameters) -> set[str]:
    return {parameter.name for parameter in parameters}


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


@pytest.mark.parametrize("name", ["arm_sim.yaml", "arm_expert.yaml"])
def test_the_panda_yaml_shows_the_node_defaults(name: str) -> None:
    values = file_parameters(name)
    for parameter in CONFIGS[name]:
        assert values[parameter.name] == parameter.default, parameter.name
    assert values["task"] in TASKS


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
    assert sorted(packages) == ["dp_sim"] * 4 + ["robot_state_publisher"]
    for node in nodes:
        keywords = {keyword.arg: keyword.value for keyword in node.keywords}
        package = ast.literal_eval(keywords["package"])
        executable = ast.literal_eval(keywords["executable"])
        if package != "dp_sim":
            continue
        assert (Path(get_package_prefix(package)) / "lib" / package / executable).is_file()
        assert ast.literal_eval(keywords["name"]) == EXECUTABLES[executable][0]
    strings = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)}
    assert {"dp_bringup", "config", *CONFIGS} <= strings
    tables = {
        node.targets[0].id: ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and getattr(node.targets[0], "id", "") in ("SIM_OVERRIDES", "PANDA_OVERRIDES")
    }
    # The common overrides are parameters of both sims, the Panda's of its sim alone.
    assert set(tables["SIM_OVERRIDES"]) <= names(sim_node.PARAMETERS)
    assert set(tables["SIM_OVERRIDES"]) <= names(arm_sim_node.PARAMETERS)
    assert set(tables["PANDA_OVERRIDES"]) <= names(arm_sim_node.PARAMETERS)
    assert not set(tables["PANDA_OVERRIDES"]) & names(sim_node.PARAMETERS)


def test_the_robot_and_task_arguments(monkeypatch) -> None:
    arguments = declared_arguments(launch_actions(LAUNCH, monkeypatch))
    assert arguments["robot"]["default_value"] == "pusht"
    assert sorted(arguments["robot"]["choices"]) == ["panda", "pusht"]
    assert arguments["task"]["default_value"] == "lift"
    assert sorted(arguments["task"]["choices"]) == sorted(TASKS) == ["can", "lift"]
    for name in ("front_camera", "wrist_camera", "seed", "real_time_factor", "auto_reset"):
        assert arguments[name]["default_value"] == "", name


def _run_launch_file(monkeypatch, arguments: dict) -> list:
    """The nodes the launch file starts for ``arguments`` (stand-ins for launch/launch_ros)."""
    actions = launch_actions(LAUNCH, monkeypatch)
    declared = declared_arguments(actions)
    (opaque,) = of_kind(actions, "OpaqueFunction")
    context = {name: options.get("default_value", "") for name, options in declared.items()}
    robot = arguments.get("robot", "pusht")
    sim_file, expert_file = ("arm_sim", "arm_expert") if robot == "panda" else ("sim", "expert")
    share = PACKAGE / "config"
    context.update(sim_params_file=str(share / f"{sim_file}.yaml"))
    context.update(expert_params_file=str(share / f"{expert_file}.yaml"))
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


@pytest.mark.parametrize(
    ("robot", "files"),
    [("pusht", ("sim.yaml", "expert.yaml")), ("panda", ("arm_sim.yaml", "arm_expert.yaml"))],
)
def test_empty_file_arguments_are_the_robots_installed_files(monkeypatch, robot, files) -> None:
    sim, expert = _run_launch_file(
        monkeypatch,
        {"robot": robot, "expert": "true", "sim_params_file": "", "expert_params_file": ""},
    )
    share = Path(get_package_share_directory("dp_bringup")) / "config"
    assert sim.kwargs["parameters"][0] == str(share / files[0])
    assert expert.kwargs["parameters"][0] == str(share / files[1])
    # A file given is used as given (the helper names the package's own files).
    sim, expert = _run_launch_file(monkeypatch, {"robot": robot, "expert": "true"})
    assert sim.kwargs["parameters"][0] == str(PACKAGE / "config" / files[0])
    assert expert.kwargs["parameters"][0] == str(PACKAGE / "config" / files[1])


def test_the_panda_sim_alone_runs_the_task_with_its_yaml(monkeypatch) -> None:
    # robot_state_publisher:=true (its default) is for PushT: the Panda has no URDF.
    (sim,) = _run_launch_file(monkeypatch, {"robot": "panda", "robot_state_publisher": "true"})
    assert (sim.kwargs["package"], sim.kwargs["executable"]) == ("dp_sim", "arm_sim_node")
    assert sim.kwargs["name"] == "arm_sim"
    assert (Path(get_package_prefix("dp_sim")) / "lib" / "dp_sim" / "arm_sim_node").is_file()
    parameter_file, overrides = sim.kwargs["parameters"]
    assert Path(parameter_file).name == "arm_sim.yaml"
    # The task is always the argument's (lift by default), whatever the file says.
    assert overrides == {"task": "lift"}


def test_the_panda_expert_runs_the_sims_task_on_its_clock(monkeypatch) -> None:
    sim, expert = _run_launch_file(
        monkeypatch,
        {
            "robot": "panda",
            "task": "can",
            "expert": "true",
            "seed": "3",
            "real_time_factor": "3",
            "auto_reset": "true",
            "max_episode_steps": "500",
            "image_width": "96",
            "image_height": "64",
            "front_camera": "false",
            "wrist_camera": "false",
        },
    )
    overrides = sim.kwargs["parameters"][1]
    assert overrides == {
        "task": "can",
        "seed": 3,
        "real_time_factor": 3.0,
        "auto_reset": True,
        "max_episode_steps": 500,
        "image_width": 96,
        "image_height": 64,
        "front_camera": False,
        "wrist_camera": False,
    }
    declared = {parameter.name: parameter.default for parameter in arm_sim_node.PARAMETERS}
    for name, value in overrides.items():
        assert type(value) is type(declared[name]), name
    assert (expert.kwargs["package"], expert.kwargs["executable"]) == ("dp_sim", "arm_expert_node")
    assert expert.kwargs["name"] == "arm_expert"
    assert (Path(get_package_prefix("dp_sim")) / "lib" / "dp_sim" / "arm_expert_node").is_file()
    parameter_file, expert_overrides = expert.kwargs["parameters"]
    assert Path(parameter_file).name == "arm_expert.yaml"
    assert expert_overrides == {"task": "can", "use_sim_time": True}
    assert set(expert_overrides) <= names(arm_expert_node.PARAMETERS) | {"use_sim_time"}
    # In real time the sim keeps no clock (unless its file says so): the expert neither.
    _, expert = _run_launch_file(monkeypatch, {"robot": "panda", "expert": "true"})
    assert expert.kwargs["parameters"][1] == {"task": "lift", "use_sim_time": False}


def test_the_panda_expert_follows_a_clock_the_sims_file_asks_for(monkeypatch, tmp_path) -> None:
    own = tmp_path / "arm_sim.yaml"
    own.write_text(yaml.safe_dump({"/**": {"ros__parameters": {"publish_clock": True}}}))
    _, expert = _run_launch_file(
        monkeypatch, {"robot": "panda", "expert": "true", "sim_params_file": str(own)}
    )
    assert expert.kwargs["parameters"][1]["use_sim_time"] is True
    _, expert = _run_launch_file(
        monkeypatch,
        {"robot": "panda", "expert": "true", "sim_params_file": str(own), "use_sim_time": "false"},
    )
    assert expert.kwargs["parameters"][1]["use_sim_time"] is False


def test_a_panda_argument_for_pusht_is_refused(monkeypatch) -> None:
    # PushT has no cameras to switch off: dropping the argument silently would hide the mistake.
    with pytest.raises(ValueError, match="front_camera: only robot:=panda"):
        _run_launch_file(monkeypatch, {"front_camera": "false"})


@pytest.mark.ros
@pytest.mark.parametrize("executable", sorted(EXECUTABLES))
def test_the_installed_nodes_take_every_value_of_their_yaml(
    executable, ros_processes, graph_probe
) -> None:
    """An undeclared name in a parameter file is silently ignored by ROS: ask the node."""
    node_name, config = EXECUTABLES[executable]
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
    # The Panda's nodes load robosuite and MuJoCo first (the sim also its renderer).
    timeout = 90.0 if executable.startswith("arm_") else 30.0
    assert process.wait_for_output("ready", timeout=timeout), process.output()
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
