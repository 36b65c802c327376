#!/usr/bin/env bash
# Entry point of the image: the ROS 2 distribution, then the suite's install space, then the
# command (by default `ros2 launch dp_bringup policy.launch.py`). /etc/bash.bashrc sources this
# file too, so that `docker exec -it <container> bash` has the same environment; sourced, it only
# sets the environment up.
#
# DP_ROS_SETUP and DP_WORKSPACE exist so that tests/test_docker.py can run this script outside
# the image; in the image the defaults apply.
#
# No `set -u`: the ROS setup scripts read unset variables.

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then _dp_sourced=0; else _dp_sourced=1; fi

_dp_ready=1
for _dp_setup in \
  "${DP_ROS_SETUP:-/opt/ros/${ROS_DISTRO}/setup.bash}" \
  "${DP_WORKSPACE:-/opt/dp/ws}/install/setup.bash"; do
  if [[ ! -f $_dp_setup ]]; then
    # A command started without its environment fails later and obscurely: stop here instead.
    echo "entrypoint: $_dp_setup not found; was this image built from docker/Dockerfile?" >&2
    _dp_ready=0
    break
  fi
  # shellcheck disable=SC1090
  source "$_dp_setup"
done
unset _dp_setup

if [[ $_dp_sourced == 0 ]]; then
  if [[ $_dp_ready != 1 ]]; then
    exit 1
  fi
  unset _dp_ready _dp_sourced
  # exec: the command becomes the container's main process and receives its stop signal.
  exec "$@"
fi
unset _dp_ready _dp_sourced
