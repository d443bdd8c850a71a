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
from jungfrau import FILE, jungfrau_calib, jungfrau_image, write_constants, write_ndarrio  # noqa: E402
from jungfrau import frames as table_frames  # noqa: E402
from epix10ka import epix10ka_calib, epix10ka_cbits  # noqa: E402
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


def _oracle(raw_path, peds, offset, gain, status):
    raw_ts, raw = frames(raw_path, "r")
    return raw_ts, [jungfrau_calib(raw[k], peds, offset, gain, status) for k in range(len(raw_ts))]


@pytest.fixture(scope="module")
def raw_frames(tmp_path_factory):
    out = tmp_path_factory.mktemp("raw") / "raw.parquet"
    run("run", "--source", SOURCE, "--sql", "SELECT timestamp, jungfrau.raw.raw AS r FROM events", "-o", str(out))
    return frames(out, "r")


def _assert_calib_equals(path, raw_frames, peds, offset, gain, status, column="c"):
    ts, calib = frames(path, column)
    raw_ts, raw = raw_frames
    assert ts == raw_ts and len(ts) == 2
    for k in range(len(ts)):
        want = jungfrau_calib(raw[k], peds, offset, gain, status)
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"


def test_run_takes_cdb_exports_single_npy_files_and_psanas_cache_pickle(constants, raw_frames, tmp_path):
    """The same constants as `cdb get` exports them, as single `--calib CTYPE=FILE`s and in psana2's
    calibration cache pickle (numpy arrays pickled by Python) give the same calib as the formula."""
    import pickle

    _, peds, offset, gain, status = constants
    arrays = {"pedestals": peds, "pixel_offset": offset, "pixel_gain": gain, "pixel_status": status}
    exports = tmp_path / "exports"
    exports.mkdir()
    for ctype, a in arrays.items():
        np.save(exports / f"clb-mfx101332224-jungfrau-r0007-{ctype}.npy", a)
    doc = {"experiment": "mfx101332224", "run": 7, "detector": "jungfrau_000003", "data_type": "ndarray"}
    cache = tmp_path / "calibconst.pkl"
    with open(cache, "wb") as f:
        pickle.dump({"det_info": {"jungfrau": "jungfrau_000003"},
                     "calib_const": {"jungfrau": {c: (a, dict(doc, ctype=c)) for c, a in arrays.items()}}}, f, protocol=4)
    singles = [a for c in arrays for a in ("--calib", f"jungfrau:{c}={exports}/clb-mfx101332224-jungfrau-r0007-{c}.npy")]
    sql = "SELECT timestamp, jungfrau.raw.calib AS c FROM events"
    for name, settings in [("exports", ["--calib", f"exports={exports}"]), ("singles", singles), ("cache", ["--calib", f"cache={cache}"])]:
        out = tmp_path / f"{name}.parquet"
        p = run("run", "--source", SOURCE, *settings, "--sql", sql, "-o", str(out))
        _assert_calib_equals(out, raw_frames, peds, offset, gain, status)
        origin = {"exports": "`cdb get` exports", "singles": "--calib files", "cache": "psana's calibration cache"}[name]
        assert f"jungfrau run 7: constants from {origin}" in p.stderr, p.stderr


def test_missing_constants_fall_back_as_psana_and_say_so(constants, raw_frames, tmp_path):
    _, peds, offset, gain, status = constants
    np.save(tmp_path / "peds.npy", peds)
    out = tmp_path / "out.parquet"
    p = run("run", "--source", SOURCE, "--calib", f"pedestals={tmp_path / 'peds.npy'}",
            "--sql", "SELECT timestamp, jungfrau.raw.calib AS c FROM events", "-o", str(out))
    # psana (spec §1.3): no pixel_gain → factor 1, no pixel_offset → 0, no status → all good.
    _assert_calib_equals(out, raw_frames, peds, np.zeros_like(offset), np.ones_like(gain), np.zeros_like(status))
    for said in ["no pixel_gain: gain factor 1", "no pixel_offset: offset 0", "every pixel good"]:
        assert said in p.stderr, p.stderr


def test_image_places_the_calibrated_module_as_psanas_default_geometry(constants, raw_frames, tmp_path):
    root, peds, offset, gain, status = constants
    out = tmp_path / "img.parquet"
    run("run", "--source", SOURCE, "--calib-dir", str(root), "--sql",
        "SELECT timestamp, jungfrau.raw.image AS img FROM events", "-o", str(out))
    t = pyarrow.parquet.read_table(out).sort_by("timestamp")
    images = t.column("img").combine_chunks().flatten().to_numpy().reshape(t.num_rows, 514, 1030)
    _, raw = raw_frames
    for k in range(t.num_rows):
        want = jungfrau_image(jungfrau_calib(raw[k], peds, offset, gain, status))
        assert np.array_equal(images[k], want), f"event {k}: {np.count_nonzero(images[k] != want)} bins differ"


def test_bad_settings_are_named_before_the_job_starts(tmp_path):
    for setting, said in [("pedestal=x.npy", "expected [DET:]KEY=VALUE"), (f"pedestals={tmp_path}/none.npy", "does not exist"),
                          ("cmpars=7,1", "alg,mode,cormax")]:
        p = run("run", "--source", SOURCE, "--calib", setting, "--sql", "SELECT count(*) FROM events", check=False)
        assert p.returncode != 0 and said in p.stderr, p.stderr
        assert "panicked" not in p.stderr


def test_dump_prints_each_events_calibrated_frame(constants, raw_frames):
    root, peds, offset, gain, status = constants
    p = run("dump", str(FILE), "--calib-dir", str(root), "--max-array", "6")
    lines = [line for line in p.stdout.splitlines() if "jungfrau.raw.calib" in line]
    assert len(lines) == 2, p.stdout[-2000:]
    _, raw = raw_frames
    for k, line in enumerate(lines):
        want = jungfrau_calib(raw[k], peds, offset, gain, status).ravel()
        assert "f32[1×512×1024]" in line
        shown = line.split("[", 2)[2].split("]")[0].replace(", …", "").split(", ")
        assert [np.float32(float(v)) for v in shown] == list(want[:6]), line
        assert f"min {want.min()}" in line or f"min {float(want.min())}" in line, line
    assert "jungfrau run 7: constants from the calib dir" in p.stderr


EPIX_FILE = FILE.parent / "test_epix_calib.xtc2"


def test_epix10ka_quad_calib_follows_its_config_gain_mode(tmp_path):
    """psana's epix10ka quad (raw 2.0.1, 4 segments, run 109): the gain mode comes from each segment's
    asicPixelConfig/trbit in the Configure (read here from the JSON dump) and the data's bit 14."""
    import json

    dump = run("dump", str(EPIX_FILE), "--json", "--max-array", str(4 * 176 * 192), "--limit", "1").stdout
    config = json.loads(dump.splitlines()[0])["data"]
    cbits = np.stack([epix10ka_cbits(config[f"epixquad[{s}].config.asicPixelConfig"]["values"],
                                     config[f"epixquad[{s}].config.trbit"]["values"]) for s in range(4)])
    shape = (7, 4, 352, 384)
    rng = np.random.default_rng(109)
    peds = (1000 + rng.integers(0, 8000, shape) * 0.5).astype(np.float32)
    gain = (0.5 + rng.integers(1, 1000, shape) / 1024).astype(np.float32)
    status = np.where(rng.random(shape) < 0.02, np.uint64(4), np.uint64(0))
    det = tmp_path / "calib" / "Epix10ka::CalibV1" / "epixquad"
    write_ndarrio(det / "pedestals" / "0-end.data", peds, "%.9g")
    write_ndarrio(det / "pixel_gain" / "0-end.data", gain, "%.9g")
    write_ndarrio(det / "pixel_status" / "0-end.data", status, "%d")
    sql = "SELECT timestamp, epixquad.raw.calib AS c, " + ", ".join(
        f"epixquad{'' if s == 0 else f'_{s}'}.raw.raw AS r{s}" for s in range(4)) + " FROM events"
    out = tmp_path / "out.parquet"
    run("run", "--source", f"files={EPIX_FILE}", "--calib-dir", str(tmp_path / "calib"), "--sql", sql, "-o", str(out))
    t = pyarrow.parquet.read_table(out).sort_by("timestamp")
    assert t.num_rows == 2
    calib = t.column("c").combine_chunks().flatten().to_numpy().reshape(2, 4, 352, 384)
    for k in range(2):
        raw = np.stack([np.asarray(t.column(f"r{s}")[k].as_py(), np.uint16).reshape(352, 384) for s in range(4)])
        want = epix10ka_calib(raw, cbits, peds, gain, status)
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"
