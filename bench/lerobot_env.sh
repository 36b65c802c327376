#!/usr/bin/env bash
# The bench environment for bench/lerobot_pusht.py: LeRobot's DiffusionPolicy beside ours.
#
#   bench/lerobot_env.sh                 # creates .venv-lerobot in the checkout (or $LEROBOT_ENV)
#   .venv-lerobot/bin/python bench/lerobot_pusht.py --help
#
# A venv of its own because lerobot 0.6.x needs Python >= 3.12 and torch < 2.12, while the
# project's venv is Python 3.11 with a newer torch. Everything comes from PyPI by name. Running
# it again is cheap: the venv is kept, and pip is skipped while the requirement list that was
# installed last (a stamp file in the venv) is unchanged.
set -euo pipefail

env_dir=${LEROBOT_ENV:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.venv-lerobot}
python=${LEROBOT_PYTHON:-}
if [[ -z $python ]]; then
  # Each candidate must run, not only exist: a pyenv shim exists for versions it won't run.
  for candidate in /root/.pyenv/versions/3.12.1/bin/python3.12 python3.12 python3.13; do
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 12))' >/dev/null 2>&1; then
      python=$candidate
      break
    fi
  done
fi
if [[ -z $python ]]; then
  echo "no Python >= 3.12 found: set LEROBOT_PYTHON to one" >&2
  exit 1
fi

# lerobot itself, a torch its pins accept, and what bench/lerobot_pusht.py imports from this
# repository's source tree (dp_policy.evaluation, dp_sim, the zarr dataset cache), pinned like
# requirements/python.txt so that the evaluation runs the same simulator code.
requirements=(
  "lerobot==0.6.1"
  "torch<2.12"
  "numpy"
  "pyyaml==6.0.4"
  "safetensors==0.8.0"
  "diffusers==0.42.1"
  "zarr==3.1.6"
  "gym-pusht==0.1.8"
  # As the project's venv; from 81 on, pygame (gym-pusht's renderer) warns at every import.
  "setuptools==79.0.1"
)
stamp="$env_dir/.bench_requirements"
wanted=$(printf '%s\n' "${requirements[@]}")

if [[ ! -x $env_dir/bin/python ]]; then
  echo "creating $env_dir with $python"
  "$python" -m venv "$env_dir"
fi
if [[ -f $stamp && $(cat "$stamp") == "$wanted" ]]; then
  echo "$env_dir is up to date"
  exit 0
fi
started=$(date +%s)
"$env_dir/bin/python" -m pip install --upgrade pip
"$env_dir/bin/python" -m pip install "${requirements[@]}"
# A broken resolution shows here rather than in the middle of a 30-minute benchmark.
"$env_dir/bin/python" -m pip check
"$env_dir/bin/python" - <<'EOF'
import importlib.metadata as metadata

import torch

from lerobot.policies.diffusion.modeling_diffusion import DiffusionPolicy  # noqa: F401

print("lerobot", metadata.version("lerobot"), "torch", torch.__version__)
EOF
printf '%s\n' "$wanted" >"$stamp"
echo "installed in $(($(date +%s) - started)) s"
