#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into a virtual environment and runs its
# pytest suite: what CI runs. Needs python3 (>= 3.11) with venv and pip; PyPI for maturin, numpy
# and pytest.
#
#   bash scripts/python-check.sh                      # dev profile: shares cargo test's dependencies
#   UFM_PY_PROFILE=release bash scripts/python-check.sh   # the optimised build `pip install ./python` makes
#   UFM_PY_TORCH=1 bash scripts/python-check.sh       # also install torch (large) and run its tests
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${UFM_PY_VENV:-target/python-venv}
case $VENV in /*) ;; *) VENV="$PWD/$VENV" ;; esac
PROFILE=${UFM_PY_PROFILE:-dev}
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
export PATH="$VENV/bin:$PATH"   # the maturin build backend runs the `maturin` executable
"$VENV/bin/python" -m pip install -q --disable-pip-version-check "maturin>=1.9.4,<2" numpy pytest
if [ "${UFM_PY_TORCH:-0}" = 1 ]; then
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check torch
fi
start=$(date +%s)
# The documented install command, with the profile chosen and maturin from the venv.
"$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
    --force-reinstall --no-deps ./python --config-settings=build-args="--profile $PROFILE --strip"
echo "python package built ($PROFILE profile) and installed in $(( $(date +%s) - start )) s"
"$VENV/bin/python" -m pytest python/tests -q -rs
