"""``python -m dp_policy_node --ros-args ...`` runs the policy node (as ``ros2 run`` does)."""

import sys

from dp_policy_node.policy_node import main

sys.exit(main(sys.argv))
