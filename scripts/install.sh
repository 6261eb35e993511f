#!/usr/bin/env sh
# The one install path, shared by the Makefile and docker/Dockerfile.
# usage: scripts/install.sh PYTHON [EXTRAS]   e.g. scripts/install.sh .venv/bin/python test
# With DF_DEPS_ONLY=1 only the dependencies listed in pyproject.toml are installed, not the
# package itself: the Dockerfile caches them in a layer that the code does not invalidate.
set -eu
PY=${1:?python interpreter}
EXTRAS=${2:-}
"$PY" -m pip install --quiet --upgrade pip
if [ "${DF_DEPS_ONLY:-0}" = 1 ]; then
    REQS=$(mktemp)
    "$PY" - "$EXTRAS" > "$REQS" <<'PYEOF'
import sys
try:
    import tomllib
except ImportError:  # Python 3.10: pip carries a copy of tomli
    from pip._vendor import tomli as tomllib
with open("pyproject.toml", "rb") as f:
    project = tomllib.load(f)["project"]
reqs = list(project["dependencies"])
for extra in filter(None, sys.argv[1].split(",")):
    reqs += project["optional-dependencies"][extra]
print("\n".join(reqs))
PYEOF
    "$PY" -m pip install --quiet -r "$REQS"
    rm -f "$REQS"
elif [ -n "$EXTRAS" ]; then
    "$PY" -m pip install --quiet -e ".[$EXTRAS]"
else
    "$PY" -m pip install --quiet -e .
fi
