#!/usr/bin/env bash
# Creates the project's environment from nothing, and brings it up to date when it exists:
#   1. a Python venv (.venv, or $DP_VENV) with the pinned requirements (ROS 2 Kilted wheels,
#      torch, the suite's libraries, build and test tools),
#   2. the repairs the ROS 2 wheels need before colcon can build interfaces,
#   3. a colcon build of src/ into build/ and install/.
# Each step is skipped when its inputs have not changed since it last succeeded, so running
# it twice does the work once.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${DP_VENV:-$ROOT/.venv}
PYTHON=${DP_PYTHON:-python3}

log() { printf '[setup] %s\n' "$*"; }

hash_of() {  # sha256 over the names and contents of the given files
  sha256sum "$@" | sha256sum | cut -d' ' -f1
}

# 1. venv and requirements ----------------------------------------------------------------------
if [[ ! -x $VENV/bin/python ]]; then
  log "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
requirements_stamp="$VENV/.dp-requirements.sha256"
requirements_hash=$(
  { hash_of "$ROOT"/requirements/*.txt "$ROOT/scripts/fix_ros_wheels.py"; "$VENV/bin/python" -VV; } \
    | sha256sum | cut -d' ' -f1
)
if [[ -f $requirements_stamp && $(cat "$requirements_stamp") == "$requirements_hash" ]]; then
  log "requirements up to date"
else
  log "installing requirements/all.txt (torch alone takes a few minutes the first time)"
  # The machine's pip configuration names index folders that may not exist; pip warns about
  # each one for every package. Those warnings are dropped; pip's exit status is kept.
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$ROOT/requirements/all.txt" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  # robosuite without its declared dependencies (see requirements/sim_no_deps.txt for why).
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-deps \
    -r "$ROOT/requirements/sim_no_deps.txt" 2>&1 | { grep -v 'is ignored: it is neither a file nor a directory' || true; }
  # 2. The wheels' CMake exports name the wheel builder's interpreter; point them here.
  "$VENV/bin/python" "$ROOT/scripts/fix_ros_wheels.py"
  echo "$requirements_hash" >"$requirements_stamp"
fi

# Off-screen rendering of the arm simulation's cameras on a machine without a GPU: MuJoCo's
# OSMesa back end needs Mesa's libOSMesa (Debian's libosmesa6).
if ! ldconfig -p | grep -q 'libOSMesa\.so'; then
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    log "installing libosmesa6 (software rendering for the arm simulation's cameras)"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 >/dev/null
  else
    log "warning: libOSMesa is missing; the arm simulation's cameras need it (apt-get install libosmesa6)"
  fi
fi

# 3. colcon build ------------------------------------------------------------------------------
source "$ROOT/scripts/env.sh" --no-workspace
build_stamp="$ROOT/install/.dp-build.sha256"
mapfile -t sources < <(
  cd "$ROOT" && find src colcon.meta -type f -not -path '*/__pycache__/*' -not -name '*.pyc' | LC_ALL=C sort
)
build_hash=$(cd "$ROOT" && { hash_of "${sources[@]}"; echo "$requirements_hash"; } | sha256sum | cut -d' ' -f1)
if [[ -f $build_stamp && $(cat "$build_stamp") == "$build_hash" ]]; then
  log "workspace build up to date"
else
  log "colcon build"
  (cd "$ROOT" && colcon build --base-paths src --metas colcon.meta --event-handlers console_stderr- summary+)
  echo "$build_hash" >"$build_stamp"
fi
log "done: source scripts/env.sh to use the workspace"
