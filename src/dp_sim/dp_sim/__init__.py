"""A PushT simulation that behaves like a ROS 2 robot, and a scripted teleoperation expert.

Not implemented yet: the nodes arrive with their own issue; this package only builds.
"""
