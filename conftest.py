"""Workspace-wide pytest set-up: the real-process ROS 2 fixtures of dp_testing for every test."""

pytest_plugins = ["dp_testing.fixtures", "pytester"]
