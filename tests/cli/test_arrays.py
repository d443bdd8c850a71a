"""SQL functions over array columns (issue 16: roi_sum, roi_mean, roi_max, roi_count, threshold,
count_above, sum_above, projection, center_of_mass, radial, element-wise sum/avg/min/max) through
`beamtime run` with 1, 2, 4 and 8 workers, on psana's Jungfrau 0.5M file with constants numpy
writes, read from the file and replayed through shared memory (`beamtime sim --shmem --replay`):
every value equals numpy's computation from the spec's calibration formula (tests/jungfrau.py),
never beamtime's own output.

The file holds 2 events. The worker tests read it 4 times (`files=F,F,F,F`: psana's files are
read one after the other) in batches of 1 event, so that 8 workers each get an event."""
import os
import pathlib
import struct
import subprocess
import sys

import numpy as np
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from jungfrau import FILE, calibrated_run  # noqa: E402
from kernelclient import beamtime_bin  # noqa: E402
from kernelclient import run_beamtime as run  # noqa: E402

SOURCE = f"files={FILE}"
COPIES = 4
SOURCE4 = "files=" + ",".join([str(FILE)] * COPIES)
# `--ranks` for a number of workers reading files: 1 runs the job as one process; N ≥ 3 ranks
# are a collector, a reader and N − 2 workers.
FILE_RANKS = {1: 1, 2: 4, 4: 6, 8: 10}


def workers(n, source=SOURCE4):
    """`beamtime run` options for n workers, one event per batch."""
    return ["--source", source, "--ranks", str(FILE_RANKS[n]), "--batch-events", "1"]


@pytest.fixture(scope="module")
def oracle(tmp_path_factory):
    """(calib dir, timestamps, calibrated frames (n,1,512,1024), images (n,514,1030)) in numpy."""
    root, _status, ts, calib, images = calibrated_run(run, tmp_path_factory)
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


def check_functions(out, oracle, copies):
    """The rows of SQL in `out`: `copies` of each event of the file, each equal to numpy's."""
    root, ts, calib, images = oracle
    t = pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict()
    assert t["timestamp"] == [x for x in ts for _ in range(copies)]
    f64 = lambda a: a.astype(np.float64)  # noqa: E731 (beamtime sums in f64, in C order)
    for j in range(len(t["timestamp"])):
        k = j // copies
        c, im = calib[k][0], images[k]
        close = lambda got, want: np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-9)  # noqa: E731
        close(t["rs"][j], f64(c[100:140, 200:260]).sum())
        close(t["rs_seg"][j], f64(c[100:140, 200:260]).sum())
        close(t["rm"][j], f64(im[300:320, 500:540]).mean())
        assert t["mx"][j] == float(im.max())
        assert t["rc"][j] == int((c > 50).sum())
        assert t["ca"][j] == int((im > 10).sum())
        close(t["sa"][j], f64(c[c > 10]).sum())
        close(t["th"][j], f64(np.where((im >= 0) & (im <= 100), im, 0)).sum())
        close(np.array(t["p0"][j]), f64(im).sum(axis=0))
        close(np.array(t["p1"][j]), f64(im[10:20, 30:60]).sum(axis=1))
        rows, cols = np.indices(im.shape)
        w = f64(im).sum()
        close(np.array(t["com"][j]), [(f64(im) * rows).sum() / w, (f64(im) * cols).sum() / w])


@pytest.mark.parametrize("n", [1, 2, 4, 8])
def test_array_functions_equal_numpy(oracle, tmp_path, n):
    out = tmp_path / "out.parquet"
    run("run", *workers(n), "--calib-dir", str(oracle[0]), "--sql", SQL, "-o", str(out))
    check_functions(out, oracle, COPIES)


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


def test_element_wise_aggregates_equal_numpy_and_the_same_bits_at_any_worker_count(oracle, tmp_path):
    """The mean calibrated frame, the max image and the summed projection of the run: numpy's values,
    and bit-identical with 1 and 8 workers (sums are fixed point: associative)."""
    root, ts, calib, images = oracle
    sql = ("SELECT count(*) AS n, avg(jungfrau.raw.calib) AS mean, max(jungfrau.raw.image) AS mx, "
           "min(jungfrau.raw.image) AS mn, sum(projection(jungfrau.raw.image, 0)) AS p FROM events")
    got = {}
    for n in (1, 8):
        out = tmp_path / f"agg{n}.parquet"
        run("run", *workers(n), "--calib-dir", str(root), "--sql", sql, "-o", str(out))
        got[n] = pyarrow.parquet.read_table(out).to_pydict()
    t = got[1]
    assert t["n"] == [2 * COPIES]
    every = np.concatenate([calib] * COPIES).astype(np.float64)
    mean = np.array(t["mean"][0])
    np.testing.assert_allclose(mean, every.mean(axis=0).ravel(), rtol=1e-15, atol=1e-12)
    assert np.array_equal(np.array(t["mx"][0]), images.max(axis=0).ravel().astype(np.float64))
    assert np.array_equal(np.array(t["mn"][0]), images.min(axis=0).ravel().astype(np.float64))
    np.testing.assert_allclose(np.array(t["p"][0]), COPIES * images.astype(np.float64).sum(axis=1).sum(axis=0), rtol=1e-13)
    for c in ("mean", "p", "mx", "mn"):
        a, b = np.array(got[1][c][0]), np.array(got[8][c][0])
        differ = a.view(np.uint64) != b.view(np.uint64)
        assert not differ.any(), (f"{c}: {differ.sum()} elements differ between 1 and 8 workers, e.g. "
                                  f"{a[differ][:3].tolist()} and {b[differ][:3].tolist()}")


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
    r_img, c_img = np.indices((514, 1030)).astype(np.float64)
    radius = np.sqrt((c_img - cx) ** 2 + (r_img - cy) ** 2)
    inside = (radius >= rmin) & (radius < rmax) & covered
    ring = np.floor((radius - rmin) / (rmax - rmin) * nbins).astype(int)
    want = [np.array([images[k].astype(np.float64)[inside & (ring == b)].mean() if (inside & (ring == b)).any() else np.nan
                      for b in range(nbins)]) for k in range(len(ts))]
    out = tmp_path / "radial.parquet"
    for n in (1, 8):
        run("run", *workers(n), "--calib-dir", str(root), "--sql",
            f"SELECT timestamp, radial(jungfrau.raw.image, {cx}, {cy}, {rmin}, {rmax}, {nbins}) AS r FROM events", "-o", str(out))
        t = pyarrow.parquet.read_table(out).sort_by("timestamp").to_pydict()
        assert t["timestamp"] == [x for x in ts for _ in range(COPIES)]
        for j in range(len(t["timestamp"])):
            np.testing.assert_allclose(np.array(t["r"][j], dtype=float), want[j // COPIES], rtol=1e-11, equal_nan=True)


# Shared memory: psana's file replayed as shmemServer serves it. The file stops after its 2
# L1Accepts (no Disable, EndStep, EndRun), so a client asking for `stop=endrun` would wait for
# ever: the replayed copy gets the run's closing transitions appended (empty 24-byte datagrams,
# 1 ns apart after the last event, as the DAQ writes them).
CLOSING = [9, 7, 7, 5]  # Disable, EndStep, EndStep (two BeginSteps), EndRun


def closed_copy(path):
    data = FILE.read_bytes()
    off, last = 0, None
    while off < len(data):
        nsec, sec, _env, _src, _dmg, _tid, extent = struct.unpack_from("<IIIIHHI", data, off)
        last, off = (sec, nsec), off + 12 + extent
    sec, nsec = last
    tail = b"".join(struct.pack("<IIIIHHI", nsec + k, sec, service << 24 | 3, 1, 0, 0, 12) for k, service in enumerate(CLOSING, 1))
    path.write_bytes(data + tail)
    return path


@pytest.fixture
def tag(request):
    t = f"bt_arr_{os.getpid()}_{request.node.name[-12:].strip('[]')}"
    yield t
    for leftover in [f"/dev/shm/PdsMonitorSharedMemory_{t}"] + ([f"/dev/mqueue/{q}" for q in os.listdir("/dev/mqueue") if t in q]
                                                               if os.path.ismount("/dev/mqueue") else []):
        if os.path.exists(leftover):
            os.unlink(leftover)


@pytest.mark.parametrize("n", [1, 2, 4])
def test_array_functions_over_replayed_shared_memory_equal_numpy(oracle, tmp_path, tag, n):
    """`beamtime sim --shmem TAG --replay FILE` with one client queue per worker (every worker rank
    but the collector is a client: `--ranks n + 1`), unpaced, waiting for its clients (so that
    every event is taken), and `beamtime run --source shmem=TAG.0:stop=endrun --calib-dir`: every
    event arrives once, and each value equals numpy's."""
    replay = closed_copy(tmp_path / "jungfrau05M_closed.xtc2")
    server = subprocess.Popen([beamtime_bin(), "sim", "--shmem", tag, "--clients", str(n), "--client-wait", "60", "--replay", str(replay)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = tmp_path / "shm.parquet"
    try:
        job = run("run", "--source", f"shmem={tag}.0:stop=endrun", "--ranks", str(1 if n == 1 else n + 1),
                  "--calib-dir", str(oracle[0]), "--sql", SQL, "-o", str(out), check=False, timeout=240)
    finally:
        try:
            served, err = server.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # the job failed before its clients took the run
            server.terminate()  # SIGTERM: the server removes its queues
            served, err = server.communicate(timeout=30)
    assert job.returncode == 0, job.stderr
    assert server.returncode == 0, err
    assert "events: 2 published" in served and "0 dropped (no free buffer), 0 dropped (queues full)" in served, served
    check_functions(out, oracle, 1)
