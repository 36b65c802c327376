"""config/recorder.yaml and launch/record.launch.py fit the recorder node they configure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from ament_index_python.packages import get_package_prefix, get_package_share_directory
from rclpy.parameter import Parameter
from std_msgs.msg import String

from dp_msgs.srv import StartEpisode, StopEpisode
from dp_recorder.recorder_node import PARAMETERS
from dp_testing.launch_stand_ins import declared_arguments, launch_actions, of_kind

PACKAGE = Path(__file__).resolve().parents[1]
CONFIG = PACKAGE / "config" / "recorder.yaml"
LAUNCH = PACKAGE / "launch" / "record.launch.py"


def recorder_parameters() -> dict:
    document = yaml.safe_load(CONFIG.read_text())
    assert list(document) == ["/**"], "parameters for any node name, as the launch file uses"
    return document["/**"]["ros__parameters"]


def test_the_yaml_sets_every_recorder_parameter_with_its_type() -> None:
    values = recorder_parameters()
    assert set(values) == set(PARAMETERS), "the YAML is the reference: every parameter, no other"
    for name, value in values.items():
        default = PARAMETERS[name].default
        if default is Parameter.Type.STRING_ARRAY:
            assert isinstance(value, list) and all(isinstance(v, str) for v in value), name
        else:
            assert type(value) is type(default), f"{name}: {value!r} is not a {type(default)}"
    assert "/tf_static" in values["topics"] and "/robot_description" in values["topics"]


def test_the_installed_files_are_the_package_files() -> None:
    share = Path(get_package_share_directory("dp_bringup"))
    assert (share / "config" / "recorder.yaml").read_text() == CONFIG.read_text()
    assert (share / "launch" / "record.launch.py").read_text() == LAUNCH.read_text()


def test_the_launch_file_starts_the_recorder_executable_with_the_yaml(monkeypatch) -> None:
    actions = launch_actions(LAUNCH, monkeypatch)
    arguments = declared_arguments(actions)
    assert {"params_file", "namespace", "use_sim_time", "output_dir", "robot_name"} <= set(
        arguments
    )
    default_params = arguments["params_file"]["default_value"]
    assert default_params.kind == "PathJoinSubstitution"
    assert default_params.args[0][1:] == ["config", "recorder.yaml"]
    (opaque,) = of_kind(actions, "OpaqueFunction")
    context = {name: "" for name in arguments}
    context.update(params_file="/robot/recorder.yaml", use_sim_time="true")
    context.update(output_dir="/data/demos", max_episode_duration="90")
    (node,) = opaque.kwargs["function"](context)
    assert node.kind == "Node"
    assert (node.kwargs["package"], node.kwargs["executable"]) == ("dp_recorder", "recorder_node")
    executable = Path(get_package_prefix("dp_recorder")) / "lib" / "dp_recorder" / "recorder_node"
    assert executable.is_file()
    params_file, sim_time, overrides = node.kwargs["parameters"]
    assert params_file.perform(context) == "/robot/recorder.yaml"
    assert sim_time == {"use_sim_time": True}
    # Only arguments given override the file, each with the parameter's type.
    assert overrides == {"output_dir": "/data/demos", "max_episode_duration": 90.0}
    assert set(overrides) <= set(PARAMETERS)
    assert float(node.kwargs["sigterm_timeout"]) >= 10.0  # time to close a bag on Ctrl-C


@pytest.mark.ros
def test_the_installed_recorder_runs_with_the_yaml(ros_processes, graph_probe, tmp_path) -> None:
    executable = Path(get_package_prefix("dp_recorder")) / "lib" / "dp_recorder" / "recorder_node"
    status = graph_probe.collect("/recorder_yaml/status", String)
    recorder = ros_processes.start(
        "recorder_yaml",
        [
            str(executable),
            "--ros-args",
            "-r",
            "__node:=recorder_yaml",
            "--params-file",
            str(Path(get_package_share_directory("dp_bringup")) / "config" / "recorder.yaml"),
            "-p",
            f"output_dir:={tmp_path}",
        ],
    )
    assert recorder.wait_for_output("recorder ready", 30.0), recorder.output()
    state = json.loads(status.wait_for(1, 10.0)[-1].data)
    # (Other processes of this test session may publish some of these topics.)
    known = set(state["waiting_for_publishers"]) | set(state["subscribed"])
    assert known == set(recorder_parameters()["topics"])
    started = graph_probe.call_service(
        StartEpisode, "/recorder_yaml/start_episode", StartEpisode.Request(task="check"), 20.0
    )
    assert started.success, started.message
    assert Path(started.bag_path).parent == tmp_path
    stopped = graph_probe.call_service(
        StopEpisode, "/recorder_yaml/stop_episode", StopEpisode.Request(task_success=True), 20.0
    )
    assert stopped.success and stopped.message_count >= 2  # the start and stop events
    assert "[ERROR]" not in recorder.output()
