"""Photon counting, droplets, user masks and q-space radial profiles (issue 16) through
`beamtime run` with 1, 2, 4 and 8 workers and over replayed shared memory, on psana's Jungfrau
0.5M file (read 4 times, one event per batch, as in test_arrays.py), each equal to an independent computation: numpy's
rounding, scipy.ndimage's 4-connected labelling, the mask applied in numpy, q from the spec's
geometry (75 µm bins, spec §5.5's placement) and Bragg's law computed here. Also the 2-D
histogram (two `hist` keys and a count) against numpy.histogram2d."""
import pathlib
import sys

import numpy as np
import pyarrow.parquet
import pytest
from scipy import ndimage

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from jungfrau import FILE, calibrated_run, image_col, image_row  # noqa: E402
from kernelclient import beamtime_bin  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

sys.path.insert(0, str(ROOT / "tests" / "cli"))
from test_arrays import COPIES, closed_copy, tag, workers  # noqa: E402,F401 (tag: the shmem fixture)

SOURCE = f"files={FILE}"


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """(calib dir, status, timestamps, calibrated frames (n,1,512,1024), images (n,514,1030))."""
    return calibrated_run(run, tmp_path_factory)


def rows_of(root, sql, tmp_path, n=1):
    """The rows of `sql` with n workers, each event of the file read COPIES times."""
    out = tmp_path / "out.parquet"
    run("run", *workers(n), "--calib-dir", str(root), "--sql", sql, "-o", str(out))
    return pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict()


ADU, SEED, JOIN = 25.0, 60.0, 20.0


def counting_sql(mask_file):
    return f"""SELECT timestamp,
        photons(jungfrau.raw.calib, {ADU}) AS ph,
        droplets(jungfrau.raw.calib, {SEED}, {JOIN}) AS dr,
        droplets(jungfrau.raw.image, {SEED}) AS dr_img,
        roi_sum(mask(jungfrau.raw.calib, '{mask_file}'), 0, 512, 0, 1024) AS masked,
        photons(mask(jungfrau.raw.calib, '{mask_file}'), {ADU}) AS ph_masked
        FROM events"""


def a_mask(tmp_path):
    mask = np.ones((1, 512, 1024), np.uint8)
    mask[0, 100:300, 200:700] = 0
    np.save(tmp_path / "mask.npy", mask)
    return mask, tmp_path / "mask.npy"


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_photons_droplets_and_masks_equal_numpy_and_scipy(oracle, tmp_path, n):
    root, status, ts, calib, images = oracle
    mask, mask_file = a_mask(tmp_path)
    t = rows_of(root, counting_sql(mask_file), tmp_path, n)
    check_counting(t, ts, calib, images, mask, COPIES)


def test_photons_droplets_and_masks_over_replayed_shared_memory(oracle, tmp_path, tag):
    """The same over psana's file replayed as shmemServer serves it, 2 workers each a client."""
    import subprocess

    root, status, ts, calib, images = oracle
    mask, mask_file = a_mask(tmp_path)
    replay = closed_copy(tmp_path / "jungfrau05M_closed.xtc2")
    server = subprocess.Popen([beamtime_bin(), "sim", "--shmem", tag, "--clients", "2", "--client-wait", "60", "--replay", str(replay)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "shm.parquet"
    try:
        job = run("run", "--source", f"shmem={tag}.0:stop=endrun", "--ranks", "3", "--calib-dir", str(root),
                  "--sql", counting_sql(mask_file), "-o", str(out), check=False, timeout=240)
    finally:
        try:
            served, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            server.terminate()
            served, err = server.communicate(timeout=30)
    assert job.returncode == 0, job.stderr
    assert "events: 2 published" in served, served
    check_counting(pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict(), ts, calib, images, mask, 1)


def check_counting(t, ts, calib, images, mask, copies):
    adu, seed, join = ADU, SEED, JOIN
    assert t["timestamp"] == [x for x in ts for _ in range(copies)]
    for j in range(len(t["timestamp"])):
        k = j // copies
        c = calib[k][0].astype(np.float64)
        with np.errstate(invalid="ignore"):
            n = np.floor(c / adu + 0.5)
        assert t["ph"][j] == int(n[n > 0].sum())
        labels, count = ndimage.label(c > join)  # scipy's default structure: 4-connected
        seeded = np.unique(labels[(c > seed) & (labels > 0)])
        assert t["dr"][j] == len(seeded) and len(seeded) > 10, (t["dr"][j], len(seeded), count)
        im = images[k].astype(np.float64)
        assert t["dr_img"][j] == ndimage.label(im > seed)[1]
        kept = np.where(mask[0] != 0, c, 0.0)
        np.testing.assert_allclose(t["masked"][j], kept.sum(), rtol=1e-12)
        nk = np.floor(kept / adu + 0.5)
        assert t["ph_masked"][j] == int(nk[nk > 0].sum())


def test_radial_q_equals_braggs_law_over_the_geometry(oracle, tmp_path):
    """radial_q: each image bin's q from its distance to the beam in 75 µm bins (the Jungfrau
    geometry's pixel scale, spec §5.3), 2θ = atan(d / L), q = 4π sin θ / λ, λ = hc / E;
    with and without the polarization and solid-angle corrections."""
    root, status, ts, calib, images = oracle
    good = np.all(status == 0, axis=0)[0]
    covered = np.zeros((514, 1030), bool)
    rows, cols = np.meshgrid(np.arange(512), np.arange(1024), indexing="ij")
    covered[image_row(rows), image_col(cols)] = good
    cx, cy, dist, kev, qmin, qmax, nbins, pol = 515.0, 257.0, 80.0, 9.5, 0.05, 2.0, 30, 0.95
    r_img, c_img = np.indices((514, 1030)).astype(np.float64)
    dy, dx = (r_img - cy) * 0.075, (c_img - cx) * 0.075
    two_theta = np.arctan2(np.hypot(dx, dy), dist)
    lam = 12.398419843320026 / kev
    q = 4 * np.pi * np.sin(two_theta / 2) / lam
    ring = np.floor((q - qmin) / (qmax - qmin) * nbins).astype(int)
    inside = (q >= qmin) & (q < qmax) & covered & (ring < nbins)
    phi = np.arctan2(dy, dx)
    s2 = np.sin(two_theta) ** 2
    correction = (pol * (1 - s2 * np.cos(phi) ** 2) + (1 - pol) * (1 - s2 * np.sin(phi) ** 2)) * np.cos(two_theta) ** 3

    def want(im, factor):
        v = im.astype(np.float64) / factor
        return np.array([v[inside & (ring == b)].mean() if (inside & (ring == b)).any() else np.nan for b in range(nbins)])

    sql = f"""SELECT timestamp,
        radial_q(jungfrau.raw.image, {cx}, {cy}, {dist}, {kev}, {qmin}, {qmax}, {nbins}) AS plain,
        radial_q(jungfrau.raw.image, {cx}, {cy}, {dist}, {kev}, {qmin}, {qmax}, {nbins}, {pol}, 1) AS corrected
        FROM events"""
    for n in (1, 8):
        t = rows_of(root, sql, tmp_path, n)
        assert len(t["timestamp"]) == COPIES * len(ts)
        for j in range(len(t["timestamp"])):
            k = j // COPIES
            np.testing.assert_allclose(np.array(t["plain"][j], float), want(images[k], 1.0), rtol=1e-11, equal_nan=True)
            np.testing.assert_allclose(np.array(t["corrected"][j], float), want(images[k], correction), rtol=1e-11, equal_nan=True)
            assert np.isfinite(t["plain"][j]).sum() >= nbins - 2


def test_bad_arguments_name_the_function_and_argument(oracle, tmp_path):
    root = oracle[0]
    wrong = tmp_path / "wrong.npy"
    np.save(wrong, np.ones((512, 512), np.uint8))
    for bad, said in [
        (f"mask(jungfrau.raw.calib, '{wrong}')", "mask(): argument 2"),
        (f"mask(jungfrau.raw.calib, '{tmp_path}/missing.npy')", "mask(): argument 2"),
        ("mask(jungfrau.raw.calib, 3)", "argument 2 must be a file name"),
        ("photons(jungfrau.raw.calib, 0)", "adu_per_photon = 0"),
        ("droplets(jungfrau.raw.calib, 5, 10)", "join_thr = 10 must not exceed thr = 5"),
        ("radial_q(jungfrau.raw.image, 1, 1, 80, 9.5, 0, 2, -3)", "nbins = -3"),
        ("radial_q(jungfrau.raw.image, 1, 1, 80, 9.5, 0, 2, 10, 1.5)", "argument 9"),
        ("radial_q(jungfrau.raw.calib, 1, 1, 80, 9.5, 0, 2, 10)", "needs an image"),
        ("photons(timestamp, 10)", "not an array column"),
    ]:
        p = run("run", "--source", SOURCE, "--calib-dir", str(root), "--sql", f"SELECT {bad} AS x FROM events", check=False)
        assert p.returncode != 0 and said in p.stderr, (bad, p.stderr)
        assert "panicked" not in p.stderr


def test_two_hist_keys_and_a_count_are_numpys_histogram2d(tmp_path):
    """A 2-D histogram of two per-event values: `hist` keys (lower edges) and count(*)."""
    sim = tmp_path / "sim"
    run("sim", "--dir", str(sim), "--exp", "tsth2d", "--run", "1", "--events", "3000", "--steps", "3", "--streams", "1")
    source = f"exp=tsth2d:run=1:dir={sim}"
    raw = tmp_path / "raw.parquet"
    run("run", "--source", source, "--sql", "SELECT ipm2.raw.sum AS a, step AS b FROM events", "-o", str(raw))
    t = pyarrow.parquet.read_table(raw).to_pydict()
    out = tmp_path / "h.parquet"
    run("run", "--source", source, "--ranks", "3", "--sql",
        "SELECT hist(ipm2.raw.sum, 0, 4, 20) AS a_bin, hist(step, 0, 3, 3) AS b_bin, count(*) AS n FROM events", "-o", str(out))
    h = pyarrow.parquet.read_table(out).to_pydict()
    counts, ae, be = np.histogram2d(np.array(t["a"], float), np.array(t["b"], float), bins=[20, 3], range=[[0, 4], [0, 3]])
    got = np.zeros((20, 3))
    for a, b, n in zip(h["a_bin"], h["b_bin"], h["n"]):
        got[int(round((a - 0) / 0.2)), int(round(b))] = n
    assert counts.sum() > 1000
    assert np.array_equal(got, counts)
