#!/usr/bin/env sh
# The one install path, shared by the Makefile and docker/Dockerfile.
# usage: scripts/install.sh PYTHON [EXTRAS]   e.g. scripts/install.sh .venv/bin/python test
set -eu
PY=${1:?python interpreter}
EXTRAS=${2:-}
"$PY" -m pip install --quiet --upgrade pip
if [ -n "$EXTRAS" ]; then
    "$PY" -m pip install --quiet -e ".[$EXTRAS]"
else
    "$PY" -m pip install --quiet -e .
fi
