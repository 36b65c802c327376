#!/usr/bin/env bash
# The test command: sets up (or updates) the environment, then runs every test of the workspace
# with pytest: package tests under src/*/test, workspace tests under tests/, and lint.
# Extra arguments go to pytest, e.g. `scripts/test.sh -k action_chunk -x`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
"$ROOT/scripts/setup.sh"
source "$ROOT/scripts/env.sh"
cd "$ROOT"
status=0
python -m pytest "$@" || status=$?
if [[ $status -eq 5 ]]; then
  echo "[test] pytest collected no test: that is a failure" >&2
  exit 1
fi
exit $status
