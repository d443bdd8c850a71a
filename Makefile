# beamtime: the two newcomer commands are `make demo` (the main job) and `make test`.
# The cargo target dir lives outside the clone so that CI runs and rebuilds reuse it.
CARGO_TARGET_DIR ?= $(HOME)/.cache/beamtime/target
export CARGO_TARGET_DIR
BIN_DEBUG := $(CARGO_TARGET_DIR)/debug/beamtime
# The demo runs release binaries; PROFILE=debug reuses the test build (the clone test does).
PROFILE ?= release
ifeq ($(PROFILE),release)
BIN := $(CARGO_TARGET_DIR)/release/beamtime
BUILD := cargo build --release -p beamtime -p beamtime-job
else
BIN := $(BIN_DEBUG)
BUILD := cargo build --workspace
endif
DEMO_DIR ?= $(CURDIR)/target-demo

.PHONY: test build demo bench fuzz venv deps

## What a fresh Debian machine lacks (apt packages when root).
deps:
	bash scripts/install-deps.sh

PYTHON ?= $(HOME)/.cache/beamtime/venv/bin/python

## Every test of the project: Rust unit/integration tests, the reference-dump checks, the
## kernel through real Jupyter clients (jupyter_client, nbclient; the venv comes from
## `.ci/run`/`make venv`), and the widgets in Debian's Chromium (JupyterLab and Notebook 7).
## The Rust-cell tests need a Rust toolchain at run time (evcxr compiles each cell).
test:
	cargo build --workspace
	bash tests/no_collectives.sh
	cargo test --workspace
	BEAMTIME_BIN=$(BIN_DEBUG) bash tests/xtc-dump-check.sh
	BEAMTIME_BIN=$(BIN_DEBUG) $(PYTHON) -m pytest -q -p no:cacheprovider tests/cli
	BEAMTIME_BIN=$(BIN_DEBUG) $(PYTHON) -m pytest -q -p no:cacheprovider tests/docs
	cd tests/kernel && BEAMTIME_BIN=$(BIN_DEBUG) $(PYTHON) -m pytest -q -p no:cacheprovider test_client.py test_conformance.py test_rust.py test_live.py test_widgets.py test_images.py test_live_faults.py test_functions.py test_notebooks.py
	cd widgets && npm ci --no-audit --no-fund --loglevel=error && npm run check
	cd tests/browser && npm ci --no-audit --no-fund --loglevel=error && node --test --test-concurrency=1
	BEAMTIME_BIN=$(BIN_DEBUG) bash tests/browser/beamtime.sh
	bash tests/readme.sh

## The Python environment for the kernel tests.
venv:
	bash tests/venv.sh

## `beamtime` and the MPI job's `beamtime-job` (the kernel starts it beside itself).
build:
	$(BUILD)

## The main job on the built-in simulated DAQ (scripts/demo.sh): a finished run decoded and its
## pump-probe curve from the live-analysis job, then the DAQ taking a run (growing FFB files) and
## JupyterLab on notebooks/ with the Beamtime kernel; Ctrl-C stops everything. `make demo CHECK=1`
## executes the demo notebooks headless instead and fails on any error or wrong value.
demo: deps build
	BEAMTIME_BIN=$(BIN) DEMO_DIR=$(DEMO_DIR) CHECK=$(CHECK) bash scripts/demo.sh

## Throughput benchmarks (not part of `make test`); results go into BENCHMARKS.md by hand.
bench:
	cargo bench -p beamtime-xtc --bench decode
	cargo bench -p beamtime-shmem --bench shmem
	cargo bench --workspace --bench job
	cargo bench --workspace --bench aggregate
	cargo bench --workspace --bench calib

fuzz:
	cd xtc/fuzz && ./seed.sh && RUSTC_BOOTSTRAP=1 cargo fuzz run dgram -- -max_len=300000 -max_total_time=600
