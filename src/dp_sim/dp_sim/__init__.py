"""A PushT simulation that behaves like a ROS 2 robot, and a scripted teleoperation expert.

ROS-free core: ``mapping`` (task pixels <-> robot SI units), ``trajectory`` (the
joint_trajectory_controller semantics), ``pusht_robot`` (the gym-pusht task), ``expert`` (the
scripted expert). Nodes: ``sim_node`` (``pusht_sim``) and ``expert_node`` (``pusht_expert``).
"""
