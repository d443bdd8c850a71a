#!/usr/bin/env bash
# The Python environment for the kernel tests (clients only: nothing of it goes into the kernel).
set -euo pipefail
venv=${BEAMTIME_VENV:-$HOME/.cache/beamtime/venv}
req=$(cd "$(dirname "$0")" && pwd)/requirements.txt
stamp="$venv/.beamtime-requirements"
if [ -x "$venv/bin/python" ] && cmp -s "$req" "$stamp"; then
  exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$req"
cp "$req" "$stamp"
