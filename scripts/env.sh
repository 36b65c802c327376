# Source this file to use the workspace: the venv with the ROS 2 wheels, then the colcon
# install space. `source scripts/env.sh --no-workspace` stops after the venv.
_dp_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck disable=SC1091
source "${DP_VENV:-$_dp_root/.venv}/bin/activate"
# The ament index is how rosidl and rclpy find typesupports and message packages in the venv.
export AMENT_PREFIX_PATH=$VIRTUAL_ENV${AMENT_PREFIX_PATH:+:$AMENT_PREFIX_PATH}
export RMW_IMPLEMENTATION=${RMW_IMPLEMENTATION:-rmw_fastrtps_cpp}
# Without this, DDS discovery multicasts on the machine's network interface.
export ROS_AUTOMATIC_DISCOVERY_RANGE=${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}
# MuJoCo (the arm simulation) renders its cameras off screen in software unless told otherwise.
export MUJOCO_GL=${MUJOCO_GL:-osmesa}
if [[ ${1:-} != --no-workspace && -f $_dp_root/install/setup.bash ]]; then
  # colcon's generated script reads unset variables; relax nounset while sourcing it.
  _dp_nounset=$([[ $- == *u* ]] && echo 1 || true)
  set +u
  # shellcheck disable=SC1091
  source "$_dp_root/install/setup.bash"
  [[ -n $_dp_nounset ]] && set -u
  unset _dp_nounset
fi
unset _dp_root
