"""Record demonstrations: the dp_recorder node with config/recorder.yaml.

    ros2 launch dp_bringup record.launch.py output_dir:=/data/demos robot_name:=ur5e_lab1

Then, per episode:

    ros2 service call /recorder/start_episode dp_msgs/srv/StartEpisode "{task: push_t}"
    ros2 service call /recorder/stop_episode dp_msgs/srv/StopEpisode "{task_success: true}"

Arguments left empty keep the value of the parameter file.
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

# Launch arguments that override a recorder parameter when they are not empty.
OVERRIDES = {
    "output_dir": "Directory of the episode bags.",
    "robot_name": "Robot name in the bags' custom data.",
    "software_version": "Version of the robot software in the bags' custom data.",
    "default_task": "Task of episodes whose start request names none.",
    "storage_id": "mcap or sqlite3.",
    "compression": "none or zstd.",
    "max_episode_duration": "Seconds after which an episode ends by itself (0: never).",
}


def _recorder(context, *args, **kwargs):
    overrides = {}
    for name in OVERRIDES:
        value = LaunchConfiguration(name).perform(context)
        if value != "":
            overrides[name] = float(value) if name == "max_episode_duration" else value
    use_sim_time = LaunchConfiguration("use_sim_time").perform(context).lower() == "true"
    return [
        Node(
            package="dp_recorder",
            executable="recorder_node",
            name="recorder",
            namespace=LaunchConfiguration("namespace"),
            parameters=[
                LaunchConfiguration("params_file"),
                {"use_sim_time": use_sim_time},
                overrides,
            ],
            output="screen",
            emulate_tty=True,
            # Ctrl-C sends SIGINT; the recorder then closes the running episode's bag, which
            # may take a few seconds with a backlog: give it that time before SIGTERM/SIGKILL.
            sigterm_timeout="30",
            sigkill_timeout="30",
        )
    ]


def generate_launch_description() -> LaunchDescription:
    default_params = PathJoinSubstitution(
        [FindPackageShare("dp_bringup"), "config", "recorder.yaml"]
    )
    arguments = [
        DeclareLaunchArgument(
            "params_file", default_value=default_params, description="Recorder parameter file."
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Node namespace."),
        DeclareLaunchArgument(
            "use_sim_time", default_value="false", description="Use /clock (simulation)."
        ),
    ]
    arguments += [
        DeclareLaunchArgument(name, default_value="", description=description)
        for name, description in OVERRIDES.items()
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_recorder)])
