"""`beamtime sim --jungfrau 1` writes a run with a simulated Jungfrau and its constants in psana's
calib-dir layout; `beamtime run --calib-dir` calibrates it with no help from the simulator:
(a) `jungfrau.raw.calib` equals the spec's Jungfrau formula (shared/spec/calibration.md §3.1,
mask §4) computed in numpy from `jungfrau.raw.raw` and the constant files as parsed here, and
(b) each frame's calibrated sum over good pixels equals the deposited energy of the truth file
within 5σ of the noise that the constants describe (`pixel_rms`, plus the ADC's rounding)."""
import json
import pathlib
import sys

import numpy as np
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from jungfrau import frames, jungfrau_calib  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

EXP, RUN = "tstx00117", 3
SHAPE = (3, 1, 512, 1024)


def read_ndarrio(path):
    """psana's NDArrIO text (spec §2.3): `# SHAPE`/`# DATATYPE` comments, then rows of values."""
    meta = {}
    with open(path) as f:
        for line in f:
            if not line.startswith("#"):
                continue
            parts = line.rstrip("\n").split(" ", 2)
            if len(parts) == 3:
                meta[parts[1]] = parts[2].strip()
    shape = tuple(int(d) for d in meta["SHAPE"].strip("()").split(",") if d)
    dtype = np.dtype(meta.get("DATATYPE", meta.get("DTYPE", "float32")))
    # psana reads floats then casts to the dtype.
    values = np.loadtxt(path, comments="#", dtype=np.float64).astype(dtype)
    return values.reshape(shape)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("jf")
    # 30 events, a frame every 3rd: 10 frames over 3 steps, 3 of them laser-off.
    run("sim", "--dir", str(d), "--exp", EXP, "--run", str(RUN), "--events", "30", "--steps", "3", "--jungfrau", "1", "--jungfrau-every", "3")
    truth = json.loads((d / f"{EXP}-r{RUN:04d}.truth.json").read_text())
    det = d / "calib" / "Jungfrau::CalibV1" / "jungfrau"
    consts = {c: read_ndarrio(det / c / f"{RUN}-end.data") for c in ("pedestals", "pixel_offset", "pixel_gain", "pixel_status", "pixel_rms")}
    return d, truth, consts


def query(d, sql, out, *extra):
    run("run", "--source", f"exp={EXP}:run={RUN}:dir={d}", *extra, "--sql", sql, "-o", str(out))
    t = pyarrow.parquet.read_table(out)
    return frames(t.filter(t.column(t.column_names[1]).is_valid()), t.column_names[1])


def test_simulated_jungfrau_calibrates_to_the_formula_and_the_truth(sim_run, tmp_path):
    d, truth, c = sim_run
    assert truth["jungfrau"]["modules"] == 1 and truth["jungfrau"]["stream"] == 2
    for name, want in [("pedestals", "float32"), ("pixel_gain", "float32"), ("pixel_offset", "float32"), ("pixel_rms", "float32"), ("pixel_status", "uint64")]:
        assert c[name].shape == SHAPE and c[name].dtype == want, name
    peds, offset, gain, status, rms = (c[k] for k in ("pedestals", "pixel_offset", "pixel_gain", "pixel_status", "pixel_rms"))
    # Real Jungfrau constants: pedestals ~3000/14000/15000 ADU, gains ~40, -1.5, -0.1 ADU/keV.
    assert np.allclose(np.median(peds, axis=(1, 2, 3)), [3000, 14000, 15000], rtol=0.01)
    assert np.allclose(np.median(gain, axis=(1, 2, 3)), [40, -1.5, -0.1], rtol=0.01)

    ts, calib = query(d, "SELECT timestamp, jungfrau.raw.calib AS c FROM events", tmp_path / "calib.parquet", "--calib-dir", str(d / "calib"))
    raw_ts, raw = query(d, "SELECT timestamp, jungfrau.raw.raw AS r FROM events", tmp_path / "raw.parquet")
    frames_truth = {f["timestamp"]: f for f in truth["jungfrau"]["frames"]}
    assert ts == raw_ts == sorted(frames_truth) and len(ts) == 10
    assert calib.dtype == np.float32

    good = np.all(status == 0, axis=0)[0]
    assert (~good).sum() == truth["jungfrau"]["hot_pixels"] + truth["jungfrau"]["dead_pixels"]
    codes = np.zeros(4, np.int64)
    for k, t in enumerate(ts):
        # (a) the job's calib is the spec's formula over the raw words and the parsed constants.
        want = jungfrau_calib(raw[k], peds, offset, gain, status)
        bad = np.flatnonzero(calib[k] != want)
        assert bad.size == 0, f"frame {k}: {bad.size} pixels differ, first {bad[:5]}"

        # (b) the calibrated sum over good pixels is the deposited energy, within the noise:
        # per pixel (rms² + 1/12) / gain² keV² in the pixel's gain range (rounding to whole ADU
        # adds 1/12 ADU²).
        code = raw[k][0] >> 14
        codes += np.bincount(code.ravel(), minlength=4)
        rng = np.select([code == 0, code == 1, code == 3], [0, 1, 2], 0)
        pick = lambda a: np.take_along_axis(a[:, 0], rng[None], axis=0)[0].astype(np.float64)  # noqa: E731
        sigma = np.sqrt((((pick(rms) ** 2 + 1 / 12) / pick(gain) ** 2)[good]).sum())
        total = calib[k][0][good].astype(np.float64).sum()
        f = frames_truth[t]
        assert abs(total - f["energy_kev"]) < 5 * sigma, f"frame {k}: calibrated {total} keV, truth {f['energy_kev']} keV, σ {sigma}"
        assert f["energy_kev"] > 20 * sigma, "the signal stands far out of the noise"
        assert ((code[good] == 1).sum(), (code[good] == 3).sum()) == (f["pixels_g1"], f["pixels_g2"])
    # Bright pixels switched gain: all three ranges were read, never the bad switch 10.
    assert codes[1] > 0 and codes[3] > 0 and codes[2] == 0, codes
