"""Test support shipped with the recorder: a publisher of messages with known content.

Used by the recorder's tests and benchmark, and handy to check a recording set-up on a robot
(``ros2 run dp_recorder pattern_publisher --ros-args -p joint_topic:=/joint_states``).
"""
