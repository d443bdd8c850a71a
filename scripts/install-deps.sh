#!/usr/bin/env bash
# What a fresh Debian machine lacks to build and run beamtime (shared by `make demo` and .ci/run):
# OpenMPI and libclang for the MPI job, HDF5 for small data, Chromium and npm for the browser
# tests, Slurm and munge for the one-node cluster of tests/slurm, python3-venv.
# Installs them when run as root; otherwise names them and fails.
set -euo pipefail
need=()
command -v make >/dev/null || need+=(make)
command -v python3 >/dev/null || need+=(python3)
command -v cc >/dev/null || need+=(gcc)
command -v npm >/dev/null || need+=(nodejs npm)
# The MPI job: OpenMPI (mpirun + headers) and libclang for rsmpi's bindings; the browser tests:
# Debian's Chromium (driven by playwright-core, which downloads nothing); tests/cli/test_slurm.py:
# slurm-wlm and munge (nothing starts them: tests/slurm/up.sh does, under /tmp); the HDF5 C
# library (1.10 or newer: virtual datasets) for `--save … .h5`.
for p in openmpi-bin libopenmpi-dev libclang-dev pkg-config chromium slurm-wlm munge libhdf5-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
python3 -c 'import venv, ensurepip' 2>/dev/null || need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
  else
    echo "missing: ${need[*]} (install them, e.g. sudo apt-get install ${need[*]}, or run as root)"; exit 1
  fi
fi
