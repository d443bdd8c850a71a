"""`beamtime run --calib-dir DIR` computes `jungfrau.raw.calib` on psana's real Jungfrau 0.5M file
(run 7, one segment; shared/spec/calibration.md §7) with constants numpy writes here in psana's
calib-dir layout (NDArrIO text); the oracle is the spec's Jungfrau formula (§3.1, mask §4) in
numpy float32 over the raw values of the file."""
import pathlib
import sys

import numpy as np
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from jungfrau import FILE, jungfrau_calib, write_constants  # noqa: E402
from jungfrau import frames as table_frames  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

SOURCE = f"files={FILE}"


@pytest.fixture(scope="module")
def constants(tmp_path_factory):
    root = tmp_path_factory.mktemp("calib")
    return (root, *write_constants(root))


def frames(path, column):
    return table_frames(pyarrow.parquet.read_table(path), column)


def test_run_writes_calibrated_frames(constants, tmp_path):
    root, peds, offset, gain, status = constants
    out = tmp_path / "out.parquet"
    run("run", "--source", SOURCE, "--calib-dir", str(root), "--sql", "SELECT timestamp, jungfrau.raw.calib AS c FROM events", "-o", str(out))
    ts, calib = frames(out, "c")
    raw_out = tmp_path / "raw.parquet"
    run("run", "--source", SOURCE, "--sql", "SELECT timestamp, jungfrau.raw.raw AS r FROM events", "-o", str(raw_out))
    raw_ts, raw = frames(raw_out, "r")
    assert ts == raw_ts and len(ts) == 2
    assert calib.dtype == np.float32
    for k in range(len(ts)):
        assert set(np.unique(raw[k] >> 14)) == {0, 1, 3}, "every gain range is exercised"
        want = jungfrau_calib(raw[k], peds, offset, gain, status)
        bad = np.flatnonzero(calib[k] != want)
        assert bad.size == 0, f"event {k}: {bad.size} pixels differ, first {bad[:5]}: {calib[k].ravel()[bad[:5]]} vs {want.ravel()[bad[:5]]}"


def test_run_without_calib_dir_says_what_is_missing(tmp_path):
    p = run("run", "--source", SOURCE, "--sql", "SELECT timestamp, jungfrau.raw.calib AS c FROM events", check=False)
    assert p.returncode != 0
    assert "jungfrau.raw.calib" in p.stderr and "--calib-dir" in p.stderr, p.stderr
    assert "panicked" not in p.stderr, p.stderr
