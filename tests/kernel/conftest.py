"""Fixtures for kernel tests: a private Jupyter data dir with the beamtime kernelspec installed.

The `beamtime` binary comes from $BEAMTIME_BIN (set by `make test`), else the cargo target dir.
"""
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin, run_cell  # noqa: E402,F401 (the suites import them from here)
SHARED = pathlib.Path(os.environ.get("BEAMTIME_SHARED", ROOT.parent / "shared"))


# Install the kernelspec once per test session into a private data dir, before any
# jupyter_client lookup, so the tests never touch the user's own kernels.
_DATA = tempfile.mkdtemp(prefix="beamtime-jupyter-")
os.environ["JUPYTER_DATA_DIR"] = _DATA
os.environ["JUPYTER_PATH"] = _DATA
# A kernel starts evcxr in the background; dozens of short-lived test kernels would compile for
# nothing (tests/kernel/test_rust.py turns it on for its kernel).
os.environ.setdefault("BEAMTIME_RUST_WARMUP", "0")
subprocess.run([beamtime_bin(), "install", "--user"], check=True, capture_output=True)
assert json.loads((pathlib.Path(_DATA) / "kernels/beamtime/kernel.json").read_text())["argv"][1] == "kernel"


@pytest.fixture
def kernel():
    """A started kernel and a ready blocking client; shut down afterwards."""
    from jupyter_client.manager import start_new_kernel

    km, kc = start_new_kernel(kernel_name="beamtime", startup_timeout=60)
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
