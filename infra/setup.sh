#!/usr/bin/env bash
# Creates .venv at the project root and installs the pinned moto server into
# it. The tests and the local stack start moto from there. Safe to re-run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
python="${PYTHON:-python3}"
if [ ! -x "$root/.venv/bin/python" ]; then
    "$python" -m venv "$root/.venv"
fi
"$root/.venv/bin/pip" install --quiet --disable-pip-version-check -r "$root/infra/requirements.txt"
"$root/.venv/bin/python" -c 'import moto.server, importlib.metadata as m; print("moto", m.version("moto"), "ready in .venv")'
