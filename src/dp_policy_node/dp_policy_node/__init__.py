"""The inference node that serves a dp_policy checkpoint as JointTrajectory action chunks.

Nothing is imported here: the ROS-free modules (``inference_worker``, ``chunk_scheduler``,
``trajectory_builder``, ``observation_buffers``, ``markers``) must import without rclpy, and
without torch where they do not need it. The node is ``dp_policy_node.policy_node``.
"""
