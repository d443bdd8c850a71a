#!/usr/bin/env bash
# The Beamtime kernel itself in the browser, in JupyterLab and in Notebook 7 (Debian's Chromium),
# while the simulator writes the run each notebook follows: notebooks/live-ffb.ipynb (FFB files
# at 2 kHz), then notebooks/live-detector.ipynb (a Jungfrau 0.5M at 5 frames/s and its calib dir,
# as scripts/demo.sh writes it; BT_IMAGE=1: the image widget, its ROI overlay, live, reloaded).
# The kernelspec goes into a private Jupyter dir; the demo's data into a temporary one.
set -euo pipefail
cd "$(dirname "$0")"
BIN=${BEAMTIME_BIN:-${CARGO_TARGET_DIR:-$HOME/.cache/beamtime/target}/debug/beamtime}
tmp=$(mktemp -d)
sim=
cleanup() { [ -n "$sim" ] && kill "$sim" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
JUPYTER_DATA_DIR=$tmp/jupyter "$BIN" install --user >/dev/null
export JUPYTER_PATH=$tmp/jupyter JUPYTER_DATA_DIR=$tmp/jupyter BEAMTIME_DEMO_DIR=$tmp BT_KERNEL=beamtime

# suites <run dir> <sim args…>: lab and Notebook 7, each on a fresh run (written in real time
# for longer than the suite takes) in $BEAMTIME_DEMO_DIR/<run dir>.
suites() {
  local dir=$tmp/$1
  shift
  for suite in lab.test.mjs notebook7.test.mjs; do
    rm -rf "$dir"
    "$BIN" sim --dir "$dir" --exp tstdemo --run 1 "$@" >/dev/null 2>&1 &
    sim=$!
    node --test --test-concurrency=1 "$suite"
    kill "$sim" 2>/dev/null || true
    wait "$sim" 2>/dev/null || true
    sim=
  done
  rm -rf "$dir"
}

BT_NOTEBOOK=$PWD/../../notebooks/live-ffb.ipynb BT_WIDGETS=4 BT_KINDS=line,hist,table,strip \
  suites ffb --events 400000 --steps 10 --streams 2 --rate 2000

# The Jungfrau at 5 frames/s (1 MB each; 3000 = 10 minutes): a debug build keeps up on 2 cores.
# Widgets: mean_image, roi (auto: a scatter of the first delay bin's laser on/off, then a
# heatmap), roi_curve and radial_diff (%%sql: finished when run, maybe still empty), radial,
# photon_hist. Pause/Reset are left to the FFB run.
BT_NOTEBOOK=$PWD/../../notebooks/live-detector.ipynb BT_WIDGETS=6 BT_STATIC=2,4 BT_IMAGE=1 BT_CONTROLS=0 \
  BT_KINDS='image,heatmap|scatter,line,profile,heatmap,hist' \
  suites jungfrau --events 3000 --steps 11 --streams 1 --jungfrau 1 --jungfrau-every 1 --rate 5 --seed 7
