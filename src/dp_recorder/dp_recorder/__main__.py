"""``python -m dp_recorder --ros-args ...`` runs the recorder node."""

import sys

from dp_recorder.recorder_node import main

main(sys.argv)
