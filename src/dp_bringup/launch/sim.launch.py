"""A simulated robot (dp_sim), and optionally the scripted expert that drives it.

Two robots: robot:=pusht (default), the PushT pusher, and robot:=panda, robosuite's Panda arm with
its gripper on a Robomimic task (task:=lift, the default, or task:=can).

    ros2 launch dp_bringup sim.launch.py                    # PushT alone, in real time
        # (with robot_state_publisher for its TF, robot_state_publisher:=false to leave it out)
    ros2 launch dp_bringup sim.launch.py expert:=true auto_reset:=true
        # demonstrations without a person: the expert solves episode after episode
    ros2 launch dp_bringup sim.launch.py expert:=true real_time_factor:=5.0
        # five times faster than real time; the sim publishes /clock, the expert uses it
    ros2 launch dp_bringup sim.launch.py robot:=panda task:=can expert:=true
        # the Panda on Can with its scripted operator (both run the task of task:=)
    ros2 launch dp_bringup sim.launch.py robot:=panda expert:=true auto_reset:=true \
        front_camera:=false wrist_camera:=false real_time_factor:=3.0
        # low-dim Lift demonstrations three times faster than real time (nothing rendered)

Arguments left empty keep the value of the parameter file: config/sim.yaml and expert.yaml for
PushT, config/arm_sim.yaml and arm_expert.yaml for the Panda. The Panda gets no
robot_state_publisher: its sim publishes no URDF (robosuite builds a MuJoCo model, which is
MJCF), so there is no description to compute TF from; its poses, markers (/arm_sim/markers)
and the policy node's markers are all in the world frame, which RViz shows without TF.
"""

import os

import yaml
from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from dp_sim.arm_robot import TASKS
from dp_sim.robot_model import urdf

# Parameter files (in dp_bringup/config) of each robot's sim and expert, for the file arguments
# left empty: each robot's nodes have their own parameters.
PARAMETER_FILES = {
    "pusht": {"sim": "sim.yaml", "expert": "expert.yaml"},
    "panda": {"sim": "arm_sim.yaml", "expert": "arm_expert.yaml"},
}

# Launch arguments that override a parameter of the sim node (either robot's) when not empty.
SIM_OVERRIDES = {
    "seed": "Seed of the first episode.",
    "real_time_factor": "Simulated seconds per wall-clock second (not 1: /clock is published).",
    "auto_reset": "true: start the next episode (next seed) when one ends.",
    "max_episode_steps": "Steps (PushT 10 Hz, Panda 20 Hz) after which an episode ends.",
    "image_width": "Camera image width in pixels.",
    "image_height": "Camera image height in pixels.",
}
# ... and those only the Panda's sim has.
PANDA_OVERRIDES = {
    "front_camera": "Panda: publish the front camera (false: nothing rendered for it).",
    "wrist_camera": "Panda: publish the wrist camera (false: nothing rendered for it).",
}


def _file_parameters(path: str, node_name: str) -> dict:
    """The parameters a YAML file gives a node (wildcard section and the node's own)."""
    with open(path) as stream:
        document = yaml.safe_load(stream) or {}
    values = {}
    for key in ("/**", node_name, f"/{node_name}"):
        values.update((document.get(key) or {}).get("ros__parameters", {}))
    return values


def _parameter_file(context, argument: str, robot: str, node: str) -> str:
    """The file an argument names, or when it is empty the robot's file in dp_bringup."""
    path = LaunchConfiguration(argument).perform(context)
    if path != "":
        return path
    share = get_package_share_directory("dp_bringup")
    return os.path.join(share, "config", PARAMETER_FILES[robot][node])


def _overrides(context, names) -> dict:
    overrides = {}
    for name in names:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = yaml.safe_load(value)  # typed: 7 -> int, 2.0 -> float, true -> bool
    if "real_time_factor" in overrides:
        overrides["real_time_factor"] = float(overrides["real_time_factor"])
    return overrides


def _others_use_sim_time(context, sim: dict) -> bool:
    """use_sim_time of the nodes beside the sim: auto follows whether the sim keeps a clock."""
    sim_clock = (
        bool(sim.get("publish_clock", False)) or float(sim.get("real_time_factor", 1.0)) != 1.0
    )
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower()
    return sim_clock if use_sim_time == "auto" else use_sim_time == "true"


def _pusht_nodes(context) -> list:
    panda_only = [name for name in PANDA_OVERRIDES if LaunchConfiguration(name).perform(context)]
    if panda_only:
        # An argument the robot has no parameter for would otherwise be dropped without a word.
        raise ValueError(f"{', '.join(panda_only)}: only robot:=panda has such a parameter")
    sim_file = _parameter_file(context, "sim_params_file", "pusht", "sim")
    overrides = _overrides(context, SIM_OVERRIDES)
    sim = {**_file_parameters(sim_file, "pusht_sim"), **overrides}
    others_use_sim_time = _others_use_sim_time(context, sim)
    namespace = LaunchConfiguration("namespace")
    nodes = [
        Node(
            package="dp_sim",
            executable="sim_node",
            name="pusht_sim",
            namespace=namespace,
            parameters=[sim_file, overrides],
            output="screen",
            emulate_tty=True,
        )
    ]
    if LaunchConfiguration("robot_state_publisher").perform(context).lower() == "true":
        # TF of the pusher from /joint_states, so RViz can show the robot model.
        description = urdf(
            sim.get("world_frame", "world"),
            sim.get("camera_frame", "pusht_camera_optical_frame"),
        )
        nodes.append(
            Node(
                package="robot_state_publisher",
                executable="robot_state_publisher",
                name="robot_state_publisher",
                namespace=namespace,
                parameters=[
                    {"robot_description": description, "use_sim_time": others_use_sim_time}
                ],
                output="screen",
            )
        )
    if LaunchConfiguration("expert").perform(context).lower() == "true":
        nodes.append(
            Node(
                package="dp_sim",
                executable="expert_node",
                name="pusht_expert",
                namespace=namespace,
                parameters=[
                    _parameter_file(context, "expert_params_file", "pusht", "expert"),
                    {"use_sim_time": others_use_sim_time},
                ],
                output="screen",
                emulate_tty=True,
            )
        )
    return nodes


def _panda_nodes(context) -> list:
    sim_file = _parameter_file(context, "sim_params_file", "panda", "sim")
    task = LaunchConfiguration("task").perform(context)
    # The task always comes from the argument: the sim and its expert must run the same one.
    overrides = {"task": task, **_overrides(context, [*SIM_OVERRIDES, *PANDA_OVERRIDES])}
    sim = {**_file_parameters(sim_file, "arm_sim"), **overrides}
    namespace = LaunchConfiguration("namespace")
    # No robot_state_publisher: there is no URDF of this robot (see the module docstring).
    nodes = [
        Node(
            package="dp_sim",
            executable="arm_sim_node",
            name="arm_sim",
            namespace=namespace,
            parameters=[sim_file, overrides],
            output="screen",
            emulate_tty=True,
        )
    ]
    if LaunchConfiguration("expert").perform(context).lower() == "true":
        nodes.append(
            Node(
                package="dp_sim",
                executable="arm_expert_node",
                name="arm_expert",
                namespace=namespace,
                parameters=[
                    _parameter_file(context, "expert_params_file", "panda", "expert"),
                    {"task": task, "use_sim_time": _others_use_sim_time(context, sim)},
                ],
                output="screen",
                emulate_tty=True,
            )
        )
    return nodes


def _nodes(context, *args, **kwargs):
    if LaunchConfiguration("robot").perform(context) == "panda":
        return _panda_nodes(context)
    return _pusht_nodes(context)


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(
            "robot",
            default_value="pusht",
            choices=list(PARAMETER_FILES),
            description="The simulated robot: pusht (gym-pusht) or panda (robosuite, MuJoCo).",
        ),
        DeclareLaunchArgument(
            "task",
            default_value="lift",
            choices=sorted(TASKS),
            description="robot:=panda: the Robomimic task of the sim and of its expert.",
        ),
        DeclareLaunchArgument(
            "sim_params_file",
            default_value="",
            description="Parameter file of the sim node; empty: config/sim.yaml (pusht) or "
            "config/arm_sim.yaml (panda).",
        ),
        DeclareLaunchArgument(
            "expert_params_file",
            default_value="",
            description="Parameter file of the expert node; empty: config/expert.yaml (pusht) "
            "or config/arm_expert.yaml (panda).",
        ),
        DeclareLaunchArgument(
            "expert",
            default_value="false",
            choices=["true", "false"],
            description="Also start the scripted expert (teleoperation without a person).",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="auto",
            choices=["auto", "true", "false"],
            description="use_sim_time of the expert; auto: true when the sim publishes /clock.",
        ),
        DeclareLaunchArgument(
            "robot_state_publisher",
            default_value="true",
            choices=["true", "false"],
            description="robot:=pusht: publish the robot's TF from /joint_states "
            "(robot_state_publisher; the Panda has no URDF for it).",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=description)
        for name, description in {**SIM_OVERRIDES, **PANDA_OVERRIDES}.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
