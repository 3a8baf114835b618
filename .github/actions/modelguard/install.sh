#!/usr/bin/env bash
# Install step of the modelguard GitHub Action (action.yml at the repository root).
#
#   SETUP_PYTHON  the interpreter actions/setup-python installed (update-environment: false)
#   ACTION_PATH   the action's own checkout: the exact modelguard version named in `uses:`
#   VENV          where the private virtual environment goes
# Writes `modelguard` and `python` (paths inside the venv) to $GITHUB_OUTPUT. Nothing
# is added to the job's path or environment files: the calling job's Python stays as it was.
set -euo pipefail

python="${SETUP_PYTHON:-python3}"
"$python" -m venv "$VENV"
if [[ -x "$VENV/bin/python" ]]; then
    bin="$VENV/bin"
else
    bin="$VENV/Scripts"  # Windows runners
fi
"$bin/python" -m pip install --disable-pip-version-check --quiet "${ACTION_PATH}[supply]"
{
    echo "modelguard=$bin/modelguard"
    echo "python=$bin/python"
} >> "${GITHUB_OUTPUT:-/dev/null}"
