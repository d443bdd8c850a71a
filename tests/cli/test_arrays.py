"""SQL functions over array columns (issue 16: roi_sum, roi_mean, roi_max, roi_count, threshold,
count_above, sum_above, projection, center_of_mass) through `beamtime run` at 1 and 3 ranks, on
psana's Jungfrau 0.5M file with constants numpy writes: every value equals numpy's computation
from the spec's calibration formula (tests/jungfrau.py), never beamtime's own output."""
import pathlib
import sys

import numpy as np
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from jungfrau import FILE, jungfrau_calib, jungfrau_image, write_constants  # noqa: E402
from jungfrau import frames as table_frames  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

SOURCE = f"files={FILE}"


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """(calib dir, timestamps, calibrated frames (n,1,512,1024), images (n,514,1030)) in numpy."""
    root = tmp_path_factory.mktemp("calib")
    peds, offset, gain, status = write_constants(root)
    out = tmp_path_factory.mktemp("raw") / "raw.parquet"
    run("run", "--source", SOURCE, "--sql", "SELECT timestamp, jungfrau.raw.raw AS r FROM events", "-o", str(out))
    ts, raw = table_frames(pyarrow.parquet.read_table(out), "r")
    calib = np.stack([jungfrau_calib(raw[k], peds, offset, gain, status) for k in range(len(ts))])
    images = np.stack([jungfrau_image(c) for c in calib])
    return root, ts, calib, images


SQL = """SELECT timestamp,
  roi_sum(jungfrau.raw.calib, 100, 140, 200, 260) AS rs,
  roi_sum(jungfrau.raw.calib, 0, 100, 140, 200, 260) AS rs_seg,
  roi_mean(jungfrau.raw.image, 300, 320, 500, 540) AS rm,
  roi_max(jungfrau.raw.image, 0, 514, 0, 1030) AS mx,
  roi_count(jungfrau.raw.calib, 0, 512, 0, 1024, 50) AS rc,
  count_above(jungfrau.raw.image, 10) AS ca,
  sum_above(jungfrau.raw.calib, 10) AS sa,
  roi_sum(threshold(jungfrau.raw.image, 0, 100), 0, 514, 0, 1030) AS th,
  projection(jungfrau.raw.image, 0) AS p0,
  projection(jungfrau.raw.image, 1, 10, 20, 30, 60) AS p1,
  center_of_mass(jungfrau.raw.image) AS com
FROM events"""


@pytest.mark.parametrize("ranks", [1, 3])
def test_array_functions_equal_numpy(oracle, tmp_path, ranks):
    root, ts, calib, images = oracle
    out = tmp_path / "out.parquet"
    run("run", "--source", SOURCE, "--calib-dir", str(root), "--ranks", str(ranks), "--sql", SQL, "-o", str(out))
    t = pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict()
    assert t["timestamp"] == ts
    f64 = lambda a: a.astype(np.float64)  # noqa: E731 (beamtime sums in f64, in C order)
    for k in range(len(ts)):
        c, im = calib[k][0], images[k]
        close = lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)  # noqa: E731
        close(t["rs"][k], f64(c[100:140, 200:260]).sum())
        close(t["rs_seg"][k], f64(c[100:140, 200:260]).sum())
        close(t["rm"][k], f64(im[300:320, 500:540]).mean())
        assert t["mx"][k] == float(im.max())
        assert t["rc"][k] == int((c > 50).sum())
        assert t["ca"][k] == int((im > 10).sum())
        close(t["sa"][k], f64(c[c > 10]).sum())
        close(t["th"][k], f64(np.where((im >= 0) & (im <= 100), im, 0)).sum())
        close(np.array(t["p0"][k]), f64(im).sum(axis=0))
        close(np.array(t["p1"][k]), f64(im[10:20, 30:60]).sum(axis=1))
        rows, cols = np.indices(im.shape)
        w = f64(im).sum()
        close(np.array(t["com"][k]), [(f64(im) * rows).sum() / w, (f64(im) * cols).sum() / w])


def test_aggregates_of_array_functions_and_bad_arguments(oracle, tmp_path):
    root, ts, calib, images = oracle
    sql = "SELECT count(*) AS n, sum(roi_sum(jungfrau.raw.calib, 0, 64, 0, 64)) AS s, max(count_above(jungfrau.raw.image, 20)) AS m FROM events"
    out = tmp_path / "agg.parquet"
    run("run", "--source", SOURCE, "--calib-dir", str(root), "--sql", sql, "-o", str(out))
    t = pyarrow.parquet.read_table(out).to_pydict()
    assert t["n"] == [2]
    np.testing.assert_allclose(t["s"][0], sum(calib[k][0, :64, :64].astype(np.float64).sum() for k in range(2)), rtol=1e-12)
    assert t["m"][0] == max(int((im > 20).sum()) for im in images)
    for bad, said in [
        ("roi_sum(jungfrau.raw.image, 0, 600, 0, 10)", "outside the 514×1030 array"),
        ("roi_sum(jungfrau.raw.image, 2, 0, 10, 0, 10)", "a segment was given but the array is 2-D"),
        ("roi_sum(jungfrau.raw.calib, 3, 0, 10, 0, 10)", "segment 3 is outside the array's 1 segments"),
        ("projection(jungfrau.raw.image, 2)", "axis 2"),
        ("count_above(timestamp, 1)", "not an array column"),
    ]:
        p = run("run", "--source", SOURCE, "--calib-dir", str(root), "--sql", f"SELECT {bad} AS x FROM events", check=False)
        assert p.returncode != 0 and said in p.stderr, (bad, p.stderr)
        assert "panicked" not in p.stderr


def test_element_wise_aggregates_equal_numpy_and_the_same_bits_at_any_rank_count(oracle, tmp_path):
    """The mean calibrated frame, the max image and the summed projection of the run: numpy's values,
    and bit-identical at 1 and 3 ranks (sums are fixed point: associative)."""
    root, ts, calib, images = oracle
    sql = ("SELECT count(*) AS n, avg(jungfrau.raw.calib) AS mean, max(jungfrau.raw.image) AS mx, "
           "min(jungfrau.raw.image) AS mn, sum(projection(jungfrau.raw.image, 0)) AS p FROM events")
    got = {}
    for ranks in (1, 3):
        out = tmp_path / f"agg{ranks}.parquet"
        run("run", "--source", SOURCE, "--calib-dir", str(root), "--ranks", str(ranks), "--sql", sql, "-o", str(out))
        got[ranks] = pyarrow.parquet.read_table(out).to_pydict()
    t = got[1]
    assert t["n"] == [2]
    mean = np.array(t["mean"][0])
    np.testing.assert_allclose(mean, calib.astype(np.float64).mean(axis=0).ravel(), rtol=1e-15, atol=1e-12)
    assert np.array_equal(np.array(t["mx"][0]), images.max(axis=0).ravel().astype(np.float64))
    assert np.array_equal(np.array(t["mn"][0]), images.min(axis=0).ravel().astype(np.float64))
    np.testing.assert_allclose(np.array(t["p"][0]), images.astype(np.float64).sum(axis=1).sum(axis=0), rtol=1e-13)
    for c in ("mean", "mx", "mn", "p"):
        a, b = np.array(got[1][c][0]), np.array(got[3][c][0])
        assert np.array_equal(a.view(np.uint64), b.view(np.uint64)), f"{c} differs between 1 and 3 ranks"


def test_radial_profile_equals_numpy_over_the_geometrys_good_pixels(oracle, tmp_path):
    """radial(image, cx, cy, rmin, rmax, nbins): ring means over the bins that hold a good pixel;
    which bins those are is computed here from spec §5.5's placement (image_row/col) and the
    status constants (the default mask), not read back."""
    from jungfrau import image_col, image_row, write_constants

    root, ts, calib, images = oracle
    # The mask of the constants the fixture wrote (same seed: same arrays).
    _, _, _, status = write_constants(tmp_path / "again")
    good = np.all(status == 0, axis=0)[0]
    covered = np.zeros((514, 1030), bool)
    rows, cols = np.meshgrid(np.arange(512), np.arange(1024), indexing="ij")
    covered[image_row(rows), image_col(cols)] = good
    cx, cy, rmin, rmax, nbins = 515.5, 257.0, 10.0, 400.0, 39
    out = tmp_path / "radial.parquet"
    for ranks in (1, 3):
        run("run", "--source", SOURCE, "--calib-dir", str(root), "--ranks", str(ranks), "--sql",
            f"SELECT timestamp, radial(jungfrau.raw.image, {cx}, {cy}, {rmin}, {rmax}, {nbins}) AS r FROM events", "-o", str(out))
        t = pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict()
        r_img, c_img = np.indices((514, 1030)).astype(np.float64)
        radius = np.sqrt((c_img - cx) ** 2 + (r_img - cy) ** 2)
        inside = (radius >= rmin) & (radius < rmax) & covered
        ring = np.floor((radius - rmin) / (rmax - rmin) * nbins).astype(int)
        for k in range(len(ts)):
            im = images[k].astype(np.float64)
            want = np.array([im[inside & (ring == b)].mean() if (inside & (ring == b)).any() else np.nan for b in range(nbins)])
            np.testing.assert_allclose(np.array(t["r"][k], dtype=float), want, rtol=1e-11, equal_nan=True)
