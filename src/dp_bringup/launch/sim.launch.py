"""The simulated PushT robot (dp_sim), and optionally the scripted expert that drives it.

    ros2 launch dp_bringup sim.launch.py                    # the robot alone, in real time
        # (with robot_state_publisher for its TF, robot_state_publisher:=false to leave it out)
    ros2 launch dp_bringup sim.launch.py expert:=true auto_reset:=true
        # demonstrations without a person: the expert solves episode after episode
    ros2 launch dp_bringup sim.launch.py expert:=true real_time_factor:=5.0
        # five times faster than real time; the sim publishes /clock, the expert uses it

Arguments left empty keep the value of the parameter file (config/sim.yaml).
"""

import yaml
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

from dp_sim.robot_model import urdf

# Launch arguments that override a parameter of the sim node when they are not empty.
SIM_OVERRIDES = {
    "seed": "Seed of the first episode.",
    "real_time_factor": "Simulated seconds per wall-clock second (not 1: /clock is published).",
    "auto_reset": "true: start the next episode (next seed) when one ends.",
    "max_episode_steps": "Steps (10 Hz) after which an episode ends without success.",
    "image_width": "Camera image width in pixels.",
    "image_height": "Camera image height in pixels.",
}


def _file_parameters(path: str, node_name: str) -> dict:
    """The parameters a YAML file gives a node (wildcard section and the node's own)."""
    with open(path) as stream:
        document = yaml.safe_load(stream) or {}
    values = {}
    for key in ("/**", node_name, f"/{node_name}"):
        values.update((document.get(key) or {}).get("ros__parameters", {}))
    return values


def _nodes(context, *args, **kwargs):
    sim_file = LaunchConfiguration("sim_params_file").perform(context)
    overrides = {}
    for name in SIM_OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = yaml.safe_load(value)  # typed: 7 -> int, 2.0 -> float, true -> bool
    if "real_time_factor" in overrides:
        overrides["real_time_factor"] = float(overrides["real_time_factor"])
    sim = {**_file_parameters(sim_file, "pusht_sim"), **overrides}
    sim_clock = (
        bool(sim.get("publish_clock", False)) or float(sim.get("real_time_factor", 1.0)) != 1.0
    )
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower()
    others_use_sim_time = sim_clock if use_sim_time == "auto" else use_sim_time == "true"
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
                    LaunchConfiguration("expert_params_file"),
                    {"use_sim_time": others_use_sim_time},
                ],
                output="screen",
                emulate_tty=True,
            )
        )
    return nodes


def generate_launch_description() -> LaunchDescription:
    config = [FindPackageShare("dp_bringup"), "config"]
    arguments = [
        DeclareLaunchArgument(
            "sim_params_file",
            default_value=PathJoinSubstitution([*config, "sim.yaml"]),
            description="Parameter file of the sim node.",
        ),
        DeclareLaunchArgument(
            "expert_params_file",
            default_value=PathJoinSubstitution([*config, "expert.yaml"]),
            description="Parameter file of the expert node.",
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
            description="Publish the robot's TF from /joint_states (robot_state_publisher).",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=description)
        for name, description in SIM_OVERRIDES.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes)])
