"""The policy inference node, brought to active, optionally with the simulated robot and RViz.

    ros2 launch dp_bringup policy.launch.py checkpoint:=/data/checkpoints/pusht
        # serve a checkpoint to the robot's joint_trajectory_controller
    ros2 launch dp_bringup policy.launch.py checkpoint:=... sim:=true rviz:=true
        # try it on the simulated PushT robot first, and watch the predicted chunks in RViz
    ros2 launch dp_bringup policy.launch.py checkpoint:=... device:=cpu \
        trajectory_topic:=/arm_controller/joint_trajectory

The node is a lifecycle node: this file configures it (loads and checks the checkpoint, warms
the model up) and, once it is inactive, activates it, as a lifecycle manager would. With
activate:=false it stays inactive until activated (`ros2 lifecycle set /policy_node activate`).
"""

from launch import LaunchDescription
from launch.actions import (
    DeclareLaunchArgument,
    EmitEvent,
    IncludeLaunchDescription,
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

# Launch arguments passed to the node as parameters of the same name (typed by the node).
NODE_PARAMETER_ARGUMENTS = {
    "checkpoint": ("", "Checkpoint directory (model.safetensors + config.json). Required."),
    "device": ("auto", "Torch device: auto, cpu, cuda or cuda:N."),
    "trajectory_topic": (
        "/joint_trajectory_controller/joint_trajectory",
        "Topic of the joint_trajectory_controller that executes the chunks.",
    ),
}


def generate_launch_description() -> LaunchDescription:
    bringup = FindPackageShare("dp_bringup")
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, (default, description) in NODE_PARAMETER_ARGUMENTS.items()
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
            description="Also start the simulated PushT robot (dp_bringup sim.launch.py).",
        ),
        DeclareLaunchArgument(
            "rviz",
            default_value="false",
            choices=["true", "false"],
            description="Also start RViz with the camera, robot and predicted-chunk displays.",
        ),
        DeclareLaunchArgument(
            "rviz_config",
            default_value=PathJoinSubstitution([bringup, "rviz", "policy.rviz"]),
            description="RViz configuration file.",
        ),
        DeclareLaunchArgument(
            "use_sim_time",
            default_value="false",
            choices=["true", "false"],
            description="Use /clock (a simulation running faster or slower than real time).",
        ),
    ]

    use_sim_time = LaunchConfiguration("use_sim_time")
    node_parameters = {name: LaunchConfiguration(name) for name in NODE_PARAMETER_ARGUMENTS}
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
    simulation = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([bringup, "launch", "sim.launch.py"])),
        launch_arguments={"use_sim_time": use_sim_time}.items(),
        condition=IfCondition(LaunchConfiguration("sim")),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(
        [*arguments, activate_when_configured, policy_node, configure, simulation, rviz]
    )
