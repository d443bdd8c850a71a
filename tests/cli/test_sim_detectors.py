"""`beamtime sim --epix10ka 4 --epixm320 --archon 4 --image 24x16 --cam-calib` writes a run with
an epix10ka quad, an epixM320, an Archon and a calibrated camera, each in psana's layout and with
its constants in psana's calib-dir layout; `beamtime run --calib-dir` calibrates all four with
no help from the simulator. Each `<det>.raw.calib` must equal the spec's formula
(shared/spec/calibration.md §3.2 epix10ka, §3.4 epixM320, §3.5 Archon, §3.6 Opal) written here
in numpy over the raw values of the same events and the constant files as parsed here; the
truth file's gain modes, common offsets and signals are checked against the same oracle."""
import json
import pathlib
import sys

import numpy as np
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from epix10ka import epix10ka_calib, epix10ka_cbits  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

EXP, RUN = "tstx00117", 4
EPIX = [f"epixquad{'' if s == 0 else f'_{s}'}.raw.raw" for s in range(4)]


def read_ndarrio(path):
    """psana's NDArrIO text (spec §2.3): `# SHAPE`/`# DATATYPE` comments, then rows of values,
    parsed as floats and cast to the dtype (as psana's `load_txt`)."""
    meta, rows = {}, []
    with open(path) as f:
        for line in f:
            if line.startswith("#"):
                parts = line.rstrip("\n").split(" ", 2)
                if len(parts) == 3:
                    meta[parts[1]] = parts[2].strip()
            elif line.strip():
                rows.append(line)
    shape = tuple(int(d) for d in meta["SHAPE"].strip("()").split(",") if d)
    dtype = np.dtype(meta.get("DATATYPE", meta.get("DTYPE", "float32")))
    return np.fromstring("".join(rows), dtype=np.float64, sep=" ").astype(dtype).reshape(shape)


@pytest.fixture(scope="module")
def sim_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("dets")
    # 10 events, the area detectors every 2nd: 5 frames each; the camera in all 10.
    run("sim", "--dir", str(d), "--exp", EXP, "--run", str(RUN), "--events", "10", "--steps", "2", "--jungfrau-every", "2",
        "--epix10ka", "4", "--epixm320", "--archon", "4", "--image", "24x16", "--cam-calib")
    truth = json.loads((d / f"{EXP}-r{RUN:04d}.truth.json").read_text())
    calib = d / "calib"
    consts = {
        "epixquad": {c: read_ndarrio(calib / "Epix10kaQuad::CalibV1" / "epixquad" / c / f"{RUN}-end.data") for c in ("pedestals", "pixel_gain", "pixel_status")},
        "epixm": {c: read_ndarrio(calib / "EpixM320::CalibV1" / "epixm" / c / f"{RUN}-end.data") for c in ("pedestals", "pixel_status")},
        "archon": {"pedestals": read_ndarrio(calib / "Archon::CalibV1" / "archon" / "pedestals" / f"{RUN}-end.data")},
        "cam": {c: read_ndarrio(calib / "Camera::CalibV1" / "cam" / c / f"{RUN}-end.data") for c in ("pedestals", "pixel_gain")},
    }
    sql = ("SELECT timestamp, epixquad.raw.calib AS e, epixm.raw.calib AS m, archon.raw.calib AS a, cam.raw.calib AS c, "
           + ", ".join(f"{col} AS r{s}" for s, col in enumerate(EPIX))
           + ", epixm.raw.raw AS mr, archon.raw.value AS ar, cam.raw.image AS cr FROM events")
    out = d / "out.parquet"
    run("run", "--source", f"exp={EXP}:run={RUN}:dir={d}", "--calib-dir", str(calib), "--sql", sql, "-o", str(out))
    table = pyarrow.parquet.read_table(out).sort_by("timestamp")
    return d, truth, consts, table


def column(table, name, shape, dtype):
    """The events that have `name`: (timestamps, values shaped (n, *shape))."""
    t = table.filter(table.column(name).is_valid())
    values = t.column(name).combine_chunks().flatten().to_numpy().astype(dtype, copy=False)
    return t.column("timestamp").to_pylist(), values.reshape(t.num_rows, *shape)


def test_constants_have_psanas_shapes_and_dtypes(sim_run):
    _, _, c, _ = sim_run
    shapes = {("epixquad", "pedestals"): ((7, 4, 352, 384), "float32"), ("epixquad", "pixel_gain"): ((7, 4, 352, 384), "float32"),
              ("epixquad", "pixel_status"): ((7, 4, 352, 384), "uint64"), ("epixm", "pedestals"): ((3, 4, 192, 384), "float32"),
              ("epixm", "pixel_status"): ((4, 192, 384), "uint64"), ("archon", "pedestals"): ((4, 4800), "float32"),
              ("cam", "pedestals"): ((16, 24), "float32"), ("cam", "pixel_gain"): ((16, 24), "float32")}
    for (det, ctype), (shape, dtype) in shapes.items():
        assert c[det][ctype].shape == shape and c[det][ctype].dtype == dtype, (det, ctype)
    # psana's default epix10ka gains per mode (H, M, L, H, M, L, L), ADU/keV.
    assert np.allclose(np.median(c["epixquad"]["pixel_gain"], axis=(1, 2, 3)), [16.4, 5.466, 0.164, 16.4, 5.466, 0.164, 0.164], rtol=0.01)


def test_epix10ka_calib_is_the_spec_formula_and_every_gain_mode_occurs(sim_run):
    d, truth, c, table = sim_run
    et = truth["epix10ka"]
    assert (et["det_name"], et["segments"], et["calib_group"]) == ("epixquad", 4, "Epix10kaQuad::CalibV1")
    # Each segment's config from the Configure, as `beamtime dump` decodes it (not the calib).
    dump = run("dump", f"exp={EXP}:run={RUN}:dir={d}", "--json", "--max-array", str(4 * 176 * 192), "--limit", "1").stdout
    config = next(r["data"] for r in map(json.loads, dump.splitlines()) if "epixquad[0].config.trbit" in r["data"])
    cbits = np.stack([epix10ka_cbits(config[f"epixquad[{s}].config.asicPixelConfig"]["values"],
                                     config[f"epixquad[{s}].config.trbit"]["values"]) for s in range(4)])
    for a in et["asics"]:
        assert config[f"epixquad[{a['segment']}].config.trbit"]["values"][a["asic"]] == a["trbit"]
    ts, calib = column(table, "e", (4, 352, 384), np.float32)
    raws = [column(table, f"r{s}", (352, 384), np.uint16) for s in range(4)]
    assert len(ts) == 5 and all(r[0] == ts for r in raws)
    frames = {f["timestamp"]: f for f in et["frames"]}
    assert sorted(frames) == ts
    modes = np.zeros(7, np.int64)
    for k, t in enumerate(ts):
        raw = np.stack([r[1][k] for r in raws])
        want = epix10ka_calib(raw, cbits, c["epixquad"]["pedestals"], c["epixquad"]["pixel_gain"], c["epixquad"]["pixel_status"])
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"
        # The gain mode of every pixel, by the spec's tests, is the one the simulator wrote.
        cb = cbits | ((raw & 0x4000) >> 9).astype(np.uint8)
        index = np.select([(cb & 28) == 28, (cb & 28) == 12, (cb & 12) == 8, (cb & 60) == 16, (cb & 60) == 0, (cb & 60) == 48, (cb & 60) == 32], range(7), -1)
        counts = np.bincount(index.ravel(), minlength=7)
        assert counts.tolist() == frames[t]["mode_pixels"] and (index >= 0).all()
        modes += counts
    # FH, FM, FL, AHL_H, AML_M, AHL_L, AML_L all read; the low ranges of the auto modes only on
    # bright pixels.
    assert (modes > 0).all() and modes[5] + modes[6] < 0.01 * modes.sum(), modes


def test_epixm320_calib_subtracts_the_pedestal_set_of_its_gain_bit(sim_run):
    _, truth, c, table = sim_run
    ts, calib = column(table, "m", (4, 192, 384), np.float32)
    raw_ts, raw = column(table, "mr", (4, 192, 384), np.uint16)
    assert ts == raw_ts and len(ts) == 5
    peds, status = c["epixm"]["pedestals"], c["epixm"]["pixel_status"]
    frames = {f["timestamp"]: f for f in truth["epixm320"]["frames"]}
    for k, t in enumerate(ts):
        bit = (raw[k] & 0x8000) != 0
        want = ((raw[k] & 0x7FFF).astype(np.float32) - np.where(bit, peds[1], peds[0])) * (status == 0).astype(np.float32)
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"
        assert bit.sum() == frames[t]["switched_pixels"]
        # Good pixels sum to the signal within the noise (~5 ADU on 3·10⁵ pixels: σ ≈ 2700).
        assert abs(want.astype(np.float64).sum() - frames[t]["signal_adu"]) < 15_000
    assert sum(f["switched_pixels"] for f in frames.values()) > 0


def test_archon_calib_removes_each_banks_common_offset(sim_run):
    _, truth, c, table = sim_run
    ts, calib = column(table, "a", (4, 4800), np.float32)
    raw_ts, raw = column(table, "ar", (4, 4800), np.uint16)
    assert ts == raw_ts and len(ts) == 5
    frames = {f["timestamp"]: f for f in truth["archon"]["frames"]}
    for k, t in enumerate(ts):
        # Spec §3.5: raw − pedestals; each bank of each row minus the median of its 36 fake
        # columns (the last of its 300), fakes included; × 3.65.
        cal = raw[k] - c["archon"]["pedestals"]
        banks = cal.reshape(4, 16, 300)
        med = np.median(banks[:, :, 264:], axis=2).astype(np.float32)
        want = ((banks - med[:, :, None]) * np.float32(3.65)).reshape(4, 4800)
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ, max {np.abs(calib[k] - want).max()}"
        f = frames[t]
        assert np.abs(med - np.reshape(f["offsets_adu"], (4, 16))).max() < 5, "the fakes' median is the bank's offset"
        # The real pixels sum to the signal within 5σ of the noise: 4 ADU per pixel (σ 520 over
        # 16896) and each median's error (4·√(π/72) ADU) on its 264 columns (σ 1760 over 64
        # bank-rows); the offsets left in would be off by ~5·10⁴.
        real = want.reshape(4, 16, 300)[:, :, :264].astype(np.float64).sum() / 3.65
        assert abs(real - f["signal_adu"]) < 10_000, (real, f["signal_adu"])


def test_camera_calib_is_raw_minus_pedestal_over_gain(sim_run):
    _, truth, c, table = sim_run
    ts, calib = column(table, "c", (16, 24), np.float32)
    raw_ts, raw = column(table, "cr", (16, 24), np.uint16)
    assert ts == raw_ts and len(ts) == 10
    peds, gain = c["cam"]["pedestals"], c["cam"]["pixel_gain"]
    frames = {f["timestamp"]: f for f in truth["cam"]["frames"]}
    for k, t in enumerate(ts):
        want = (raw[k].astype(np.float32) - peds) / gain
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"
        # Read noise 3 ADU on 384 pixels: σ ≈ 60.
        assert abs(want.astype(np.float64).sum() - frames[t]["signal"]) < 300
