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
from kernelclient import run_beamtime as run  # noqa: E402

FILE = ROOT.parent / "shared" / "data" / "xtc2" / "detector" / "test_jungfrau05M_calib.xtc2"
SOURCE = f"files={FILE}"
SHAPE = (3, 1, 512, 1024)



def write_ndarrio(path, array, fmt):
    """psana's NDArrIO text: header comments, then rows of the last axis."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"SHAPE       ({','.join(map(str, array.shape))})\nDATATYPE    {array.dtype}"
    np.savetxt(path, array.reshape(-1, array.shape[-1]), fmt=fmt, header=header)


@pytest.fixture(scope="module")
def constants(tmp_path_factory):
    rng = np.random.default_rng(15)
    # Binary fractions, so the text holds the exact float32 values.
    peds = (np.array([1500, 11000, 13500])[:, None, None, None] + rng.integers(0, 4000, SHAPE) * 0.25).astype(np.float32)
    offset = (rng.integers(0, 200, SHAPE) * 0.125 - 10).astype(np.float32)
    gain = (np.array([40, -1.5, -0.12])[:, None, None, None] * (1 + rng.integers(0, 1000, SHAPE) / 1024)).astype(np.float32)
    gain[rng.random(SHAPE) < 1e-3] = 0  # factor 0, not inf
    status = np.where(rng.random(SHAPE) < 0.01, np.uint64(1) << rng.integers(0, 64, SHAPE).astype(np.uint64), np.uint64(0))
    root = tmp_path_factory.mktemp("calib")
    det = root / "Jungfrau::CalibV1" / "jungfrau"
    write_ndarrio(det / "pedestals" / "0-end.data", peds, "%.9g")
    write_ndarrio(det / "pixel_offset" / "0-end.data", offset, "%.9g")
    write_ndarrio(det / "pixel_gain" / "0-end.data", gain, "%.9g")
    write_ndarrio(det / "pixel_status" / "0-end.data", status, "%d")
    # Valid from run 8 on: run 7 must not take it (psana's file choice).
    write_ndarrio(det / "pedestals" / "8-end.data", np.full(SHAPE, 1e6, np.float32), "%.9g")
    return root, peds, offset, gain, status


def jungfrau_calib(raw, peds, offset, gain, status):
    """psana's calib of one (1, 512, 1024) frame: gain code 00/01/11 → range 0/1/2, 10 → 0."""
    code = raw >> 14
    rng = np.select([code == 0, code == 1, code == 3], [0, 1, 2], 0)
    mask = np.all(status == 0, axis=0).astype(np.float32)
    po = (peds + offset)
    with np.errstate(divide="ignore"):
        gm = np.where(gain != 0, np.float32(1) / gain, np.float32(0)).astype(np.float32) * mask
    pick = lambda a: np.take_along_axis(a, rng[None], axis=0)[0]  # noqa: E731
    out = ((raw & 0x3FFF).astype(np.float32) - pick(po)) * pick(gm)
    return np.where(code == 2, np.float32(0), out).astype(np.float32)


def frames(path, column):
    t = pyarrow.parquet.read_table(path).sort_by("timestamp")
    values = t.column(column).combine_chunks().flatten().to_numpy()
    return t.column("timestamp").to_pylist(), values.reshape(t.num_rows, 1, 512, 1024)


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
