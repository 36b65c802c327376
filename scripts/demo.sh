#!/usr/bin/env bash
# The end-to-end demo on the simulated PushT robot: record expert demonstrations, train a
# Diffusion Policy on the bags, serve it with the inference node, evaluate it offline.
# Sets the environment up first (idempotent). Arguments go to the demo, see --help:
#   scripts/demo.sh                      # default: 150 episodes, low-dim policy, 10 min of training, CPU
#   scripts/demo.sh --policy image --device cuda --train-budget 2h
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
# shellcheck disable=SC1091
source "$ROOT/scripts/env.sh"
cd "$ROOT"
exec python -m scripts.demo "$@"
