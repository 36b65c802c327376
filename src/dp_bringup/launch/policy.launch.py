"""The policy inference node, brought to active, optionally with the simulated robot and RViz.

    ros2 launch dp_bringup policy.launch.py checkpoint:=/data/checkpoints/pusht
        # serve a checkpoint to the robot's joint_trajectory_controller
    ros2 launch dp_bringup policy.launch.py checkpoint:=... sim:=true rviz:=true
        # try it on the simulated PushT robot first, and watch the predicted chunks in RViz
    ros2 launch dp_bringup policy.launch.py checkpoint:=/data/checkpoints/lift sim:=true \
        robot:=panda task:=lift rviz:=true
        # an arm-and-gripper checkpoint on the simulated Panda (its arm and gripper controllers)
    ros2 launch dp_bringup policy.launch.py checkpoint:=... device:=cpu \
        trajectory_topic:=/arm_controller/joint_trajectory \
        command_topics:=gripper=/hand_controller/joint_trajectory
        # a real arm whose controllers have other names (one key=/topic per further stream,
        # comma-separated)

The node is a lifecycle node: this file configures it (loads and checks the checkpoint, warms
the model up) and, once it is inactive, activates it, as a lifecycle manager would. With
activate:=false it stays inactive until activated (`ros2 lifecycle set /policy_node activate`).

robot and task choose the simulation (sim:=true starts dp_bringup sim.launch.py with them) and
the default RViz configuration; the node itself takes its robot from the checkpoint. The other
arguments of sim.launch.py reach it as well when given here (an included file sees the launch
configurations of the file that includes it), e.g. front_camera:=false wrist_camera:=false for
a low-dim checkpoint on the Panda: the sim then renders nothing.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    IncludeLaunchDescription,
    OpaqueFunction,
    RegisterEventHandler,
)
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition

# Launch arguments passed to the node as parameters of the same name (all strings).
NODE_PARAMETER_ARGUMENTS = {
    "checkpoint": ("", "Checkpoint directory (model.safetensors + config.json). Required."),
    "device": ("auto", "Torch device: auto, cpu, cuda or cuda:N."),
    "trajectory_topic": (
        "/joint_trajectory_controller/joint_trajectory",
        "Topic of the joint_trajectory_controller that executes the chunks (the first action "
        "stream's, when the action spans several controllers).",
    ),
}
# Launch arguments passed to the node as string-array parameters when not empty: "a,b" or
# "[a, b]". Empty, the parameter stays unset (derived from the checkpoint); an empty list or
# string cannot be passed, as the first has no type and the second the wrong one.
NODE_LIST_ARGUMENTS = {
    "command_topics": "Topics of the further action streams, 'key=/topic' per action key "
    "(comma-separated); empty: the topics the checkpoint names.",
}
# The RViz configuration (in dp_bringup/rviz) of each robot, for rviz_config left empty.
RVIZ_CONFIGS = {"pusht": "policy.rviz", "panda": "policy_panda.rviz"}


def _string_list(value: str, name: str) -> list[str]:
    """``a=/x,b=/y`` or ``[a=/x, 'b=/y']`` -> ``['a=/x', 'b=/y']`` (topics have no commas)."""
    text = value.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    items = [item.strip().strip("'\"").strip() for item in text.split(",")]
    if not all(items):
        raise ValueError(f"{name}:={value!r} has an empty entry")
    return items


def _nodes(context, *args, **kwargs):
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    # Strings as given: launch_ros would read a substitution as YAML (a checkpoint named "1"
    # would become an integer), and the node declares these parameters as strings.
    node_parameters = {
        name: LaunchConfiguration(name).perform(context) for name in NODE_PARAMETER_ARGUMENTS
    }
    for name in NODE_LIST_ARGUMENTS:
        value = LaunchConfiguration(name).perform(context).strip()
        if value != "":
            node_parameters[name] = _string_list(value, name)
    policy_node = LifecycleNode(
        package="dp_policy_node",
        executable="policy_node",
        name="policy_node",
        namespace="",
        parameters=[
            LaunchConfiguration("params_file"),
            # This file drives the lifecycle; the node must not configure itself as well.
            {**node_parameters, "autostart": False, "use_sim_time": use_sim_time},
        ],
        output="screen",
        emulate_tty=True,
    )
    configure = EmitEvent(
        event=ChangeState(
            lifecycle_node_matcher=matches_action(policy_node),
            transition_id=Transition.TRANSITION_CONFIGURE,
        )
    )
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=policy_node,
            start_state="configuring",
            goal_state="inactive",
            entities=[
                EmitEvent(
                    event=ChangeState(
                        lifecycle_node_matcher=matches_action(policy_node),
                        transition_id=Transition.TRANSITION_ACTIVATE,
                    )
                )
            ],
        ),
        condition=IfCondition(LaunchConfiguration("activate")),
    )
    # The handler before the node, the configure event after it (so that it has a target).
    actions = [activate_when_configured, policy_node, configure]
    if LaunchConfiguration("rviz").perform(context).lower() == "true":
        rviz_config = LaunchConfiguration("rviz_config").perform(context)
        if rviz_config == "":
            robot = LaunchConfiguration("robot").perform(context)
            share = get_package_share_directory("dp_bringup")
            rviz_config = os.path.join(share, "rviz", RVIZ_CONFIGS[robot])
        actions.append(
            Node(
                package="rviz2",
                executable="rviz2",
                name="rviz",
                arguments=["-d", rviz_config],
                parameters=[{"use_sim_time": use_sim_time}],
            )
        )
    return actions


def generate_launch_description() -> LaunchDescription:
    bringup = FindPackageShare("dp_bringup")
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in NODE_PARAMETER_ARGUMENTS.items()
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=description)
        for name, description in NODE_LIST_ARGUMENTS.items()
    ]
    arguments += [
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([bringup, "config", "policy_node.yaml"]),
            description="Parameter file of the policy node.",
        ),
        DeclareLaunchArgument(
            "activate",
            default_value="true",
            choices=["true", "false"],
            description="Activate the node once configured (it publishes chunks when active).",
        ),
        DeclareLaunchArgument(
            "sim",
            default_value="false",
            choices=["true", "false"],
            description="Also start the simulated robot (dp_bringup sim.launch.py).",
        ),
        DeclareLaunchArgument(
            "robot",
            default_value="pusht",
            choices=list(RVIZ_CONFIGS),
            description="The simulated robot (sim:=true) and RViz configuration: pusht or panda.",
        ),
        DeclareLaunchArgument(
            "task",
            default_value="lift",
            # Checked against its choices by sim.launch.py, the only place it is used.
            description="robot:=panda: the Robomimic task of the simulation, lift or can.",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            choices=["true", "false"],
            description="Also start RViz with the robot's cameras and what the node commands.",
        ),
        DeclareLaunchArgument(
            "rviz_config",
            default_value="",
            description="RViz configuration file; empty: rviz/policy.rviz (pusht) or "
            "rviz/policy_panda.rviz (panda).",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            choices=["true", "false"],
            description="Use /clock (a simulation running faster or slower than real time).",
        ),
    ]

    simulation = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([bringup, "launch", "sim.launch.py"])),
        launch_arguments={
            "use_sim_time": LaunchConfiguration("use_sim_time"),
            "robot": LaunchConfiguration("robot"),
            "task": LaunchConfiguration("task"),
        }.items(),
        condition=IfCondition(LaunchConfiguration("sim")),
    )
    return LaunchDescription([*arguments, OpaqueFunction(function=_nodes), simulation])
