"""Test support for the workspace: real ROS 2 processes over DDS, isolated per test session."""
