#!/usr/bin/env bash
# The Beamtime kernel itself in the browser: notebooks/live-ffb.ipynb in JupyterLab and in
# Notebook 7 (Debian's Chromium), while the simulator writes the run it follows. The kernelspec
# goes into a private Jupyter dir; the demo's data into a temporary one.
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BEAMTIME_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/beamtime/target}/debug/beamtime}
tmp=$(mktemp -d)
sim=
cleanup() { [ -n "$sim" ] && kill "$sim" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
JUPYTER_DATA_DIR=$tmp/jupyter "$BIN" install --user >/dev/null
export JUPYTER_PATH=$tmp/jupyter JUPYTER_DATA_DIR=$tmp/jupyter BEAMTIME_DEMO_DIR=$tmp
export BT_KERNEL=beamtime BT_NOTEBOOK=$PWD/../../notebooks/live-ffb.ipynb BT_WIDGETS=4 BT_KINDS=line,hist,table,strip
for suite in lab.test.mjs notebook7.test.mjs; do
  # A fresh run per suite, written at 2 kHz for longer than the suite takes.
  rm -rf "$tmp/ffb"
  "$BIN" sim --dir "$tmp/ffb" --exp tstdemo --run 1 --events 400000 --steps 10 --streams 2 --rate 2000 >/dev/null 2>&1 &
  sim=$!
  node --test --test-concurrency=1 "$suite"
  kill "$sim" 2>/dev/null || true
  wait "$sim" 2>/dev/null || true
  sim=
done
