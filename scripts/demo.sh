#!/usr/bin/env bash
# `make demo`: the simulated DAQ and the notebooks in JupyterLab.
#  1. a finished run (the post-run notebook's), decoded, and its pump-probe curve from the
#     live-analysis job in batch mode;
#  2. the DAQ taking a run: growing FFB files (xtc2 + smd) at 1 kHz for live-ffb.ipynb, its
#     shared-memory monitor (removed again on exit) for live-shmem.ipynb, and a run with a
#     Jungfrau (10 frames/s, its constants in a calib dir) for live-detector.ipynb;
#  3. the kernelspec in the Python environment, then JupyterLab on notebooks/ (the URL is
#     printed). Ctrl-C stops everything.
# CHECK=1 instead executes the demo notebooks headless and fails on any error or wrong value.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BEAMTIME_BIN:?the beamtime binary}
export BEAMTIME_DEMO_DIR=${DEMO_DIR:-$PWD/target-demo}
VENV=${BEAMTIME_VENV:-$HOME/.cache/beamtime/venv}
CHECK=${CHECK:-}
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT INT TERM

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

mkdir -p "$BEAMTIME_DEMO_DIR"
offline="exp=tstdemo:run=1:dir=$BEAMTIME_DEMO_DIR/offline"
step "a finished run: 200 000 events, 2 streams, a 10-step pump-probe delay scan"
"$BIN" sim --dir "$BEAMTIME_DEMO_DIR/offline" --exp tstdemo --run 1 --events 200000 --steps 10 --streams 2 --seed 11
"$BIN" dump --stats "$offline"
"$BIN" dump --limit 12 "$offline"
step "its pump-probe curve, computed by the live-analysis job (laser-on diode / I0 per delay step)"
"$BIN" run --source "$offline" --sql "SELECT step, first(scan.motor) AS delay_ps, count(*) AS n, avg(diode.raw.signal / ipm2.raw.sum) AS signal, stddev(diode.raw.signal / ipm2.raw.sum) AS spread FROM events WHERE lasr.raw.laser_on = 1 AND ipm2.raw.sum > 0.5 GROUP BY step ORDER BY step"

step "the Python environment (JupyterLab, anywidget) and the Beamtime kernelspec in it"
bash tests/venv.sh
"$BIN" install --prefix "$VENV" >/dev/null
echo "kernel 'beamtime' installed into $VENV"

if [ -n "$CHECK" ]; then
  step "CHECK: the demo notebooks, executed headless against the simulator"
  "$VENV/bin/python" scripts/demo_check.py "$BIN"
  exit 0
fi

step "the DAQ takes a run: FFB files growing at 1 kHz in $BEAMTIME_DEMO_DIR/ffb (one step a minute)"
"$BIN" sim --dir "$BEAMTIME_DEMO_DIR/ffb" --exp tstdemo --run 1 --events 600000 --steps 10 --streams 2 --rate 1000 >/dev/null &
pids+=($!)

export BEAMTIME_DEMO_SHMEM=${BEAMTIME_DEMO_SHMEM:-beamtime_demo}
step "the DAQ's shared-memory monitor: tag $BEAMTIME_DEMO_SHMEM, 2 client queues, 1 kHz (live-shmem.ipynb)"
"$BIN" sim --shmem "$BEAMTIME_DEMO_SHMEM" --clients 2 --events 3600000 --steps 10 --streams 2 --rate 1000 >/dev/null &
pids+=($!)

step "a Jungfrau 0.5M taking a pump-probe scan: 10 frames/s (2.2 GB) into $BEAMTIME_DEMO_DIR/jungfrau with its calib dir (live-detector.ipynb)"
"$BIN" sim --dir "$BEAMTIME_DEMO_DIR/jungfrau" --exp tstdemo --run 1 --events 2200 --steps 11 --streams 1 --jungfrau 1 \
  --jungfrau-every 1 --rate 10 --seed 7 >/dev/null 2>&1 &
pids+=($!)

step "JupyterLab on notebooks/ (open live-ffb.ipynb; Ctrl-C stops everything)"
root=()
[ "$(id -u)" = 0 ] && root=(--allow-root)
"$VENV/bin/jupyter" lab --no-browser --ip=127.0.0.1 --ServerApp.root_dir="$PWD/notebooks" "${root[@]}" &
pids+=($!)
wait "${pids[-1]}"
