"""Per-event small data saved by the job (issue 18): `beamtime run --save PATH` writes one row
per event from the workers, HDF5 in psana2's smalldata layout or a Parquet dataset. The HDF5
files are compared with what psana2's smalldata writes for the same per-event dicts
(tests/smalldata_oracle.py, built from psana2's rules, not from beamtime's output); the
Parquet dataset must hold every event once, equal to the HDF5 content."""
import math
import pathlib
import sys

import h5py
import numpy as np
import polars as pl
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import run_beamtime as run  # noqa: E402
import smalldata_oracle as oracle  # noqa: E402

FUNCTIONS = """
/// The intensity when it is above 2, else missing.
fn gated(x: f64) -> Option<f64> {
    if x > 2.0 { Some(x) } else { None }
}

/// Tenths of the intensity when it is above 1, else missing.
fn bucket(x: f64) -> Option<i64> {
    if x > 1.0 { Some((x * 10.0) as i64) } else { None }
}

fn half(x: f64) -> f32 {
    (x / 2.0) as f32
}
"""

SQL = ('SELECT "diode.raw.signal", "cam.raw.image", gated("ipm2.raw.sum") AS "gate.value", '
       'bucket("ipm2.raw.sum") AS bucket, half("ipm2.raw.sum") AS half FROM events')


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sd") / "xtc"
    run("sim", "--dir", str(d), "--exp", "tstsd", "--run", "1", "--events", "3000", "--steps", "3", "--image", "8x6")
    source = f"exp=tstsd:run=1:dir={d}"
    out = d.parent / "events.parquet"
    run("run", "--source", source, "--sql", 'SELECT timestamp, run, step, "ipm2.raw.sum", "diode.raw.signal", "cam.raw.image" FROM events', "-o", str(out))
    fn = d.parent / "fns.rs"
    fn.write_text(FUNCTIONS)
    events = pl.read_parquet(out)
    return source, {r["timestamp"]: r for r in events.iter_rows(named=True)}, fn


def psana_event(e):
    """The dict a psana2 user hands `smd.event(evt, **dict)` for this event: Python ints and
    floats for scalars, numpy for arrays and float32, -99999 / NaN where a value is missing."""
    x = e["ipm2.raw.sum"]
    return {
        "timestamp": int(e["timestamp"]),
        "run": int(e["run"]),
        "step": int(e["step"]),
        "diode": {"raw": {"signal": float(e["diode.raw.signal"])}},
        "cam": {"raw": {"image": np.array(e["cam.raw.image"], dtype=np.uint16)}},
        "gate": {"value": x if x > 2.0 else math.nan},
        "bucket": int(x * 10.0) if x > 1.0 else oracle.MISSING_INT,
        "half": np.float32(x / 2.0),
    }


def part_order(path):
    with h5py.File(path, "r") as f:
        return [int(t) for t in f["timestamp"][()]] if "timestamp" in f else []


@pytest.mark.parametrize("ranks", [3, 4])
def test_hdf5_parts_and_joined_file_are_what_psana_writes(camera_run, tmp_path, ranks):
    source, events, fn = camera_run
    got = tmp_path / "got"
    got.mkdir()
    # An earlier job's parts are removed (psana does the same at set-up).
    (got / "run_part7.h5").write_bytes(b"old")
    r = run("run", "--source", source, "--ranks", str(ranks), "--batch-events", "64", "--function", str(fn), "--sql", SQL, "--save", str(got / "run.h5"))
    parts = sorted(got.glob("run_part*.h5"))
    workers = ranks - 2
    assert [p.name for p in parts] == [f"run_part{i}.h5" for i in range(workers)], r.stderr
    # Each part holds its worker's events in the order it wrote them (psana does not sort);
    # the oracle writes the same events in the same order by psana's rules.
    by_part = [[psana_event(events[t]) for t in part_order(p)] for p in parts]
    assert sorted(t for p in parts for t in part_order(p)) == sorted(events), "every event once"
    # (A worker that got no events leaves an empty part, as psana's do: the oracle's too.)
    want = tmp_path / "want"
    want.mkdir()
    oracle.write_expected(str(want), "run.h5", by_part)
    diffs = oracle.compare_run(str(want), str(got), "run.h5", workers)
    assert diffs == [], "\n".join(diffs[:20])
    with h5py.File(got / "run.h5", "r") as f:
        assert f["timestamp"].is_virtual and f["timestamp"].shape == (3000,)
        assert f["cam/raw/image"].shape == (3000, 48) and f["cam/raw/image"].dtype == np.uint16
        assert f["bucket"].dtype == np.int64 and (f["bucket"][()] == -99999).sum() == sum(1 for e in events.values() if e["ipm2.raw.sum"] <= 1.0)
        assert np.isnan(f["gate/value"][()]).sum() == sum(1 for e in events.values() if e["ipm2.raw.sum"] <= 2.0)


def test_one_process_writes_one_file_like_psanas_serial_mode(camera_run, tmp_path):
    source, events, fn = camera_run
    r = run("run", "--source", source, "--ranks", "1", "--function", str(fn), "--sql", SQL, "--save", str(tmp_path / "run.h5"))
    assert not list(tmp_path.glob("run_part*")), r.stderr
    rows = [psana_event(events[t]) for t in part_order(tmp_path / "run.h5")]
    assert len(rows) == 3000
    want = tmp_path / "want"
    want.mkdir()
    oracle.write_expected(str(want), "run.h5", [rows], serial=True)
    diffs = oracle.compare(str(want / "run.h5"), str(tmp_path / "run.h5"))
    assert diffs == [], "\n".join(diffs[:20])


def test_parquet_dataset_has_every_event_once_and_equals_the_hdf5(camera_run, tmp_path):
    source, events, fn = camera_run
    for path in ["run.parquet", "run.h5"]:
        run("run", "--source", source, "--ranks", "4", "--batch-events", "64", "--function", str(fn), "--sql", SQL, "--save", str(tmp_path / path))
    parts = sorted((tmp_path / "run.parquet").glob("part-*.parquet"))
    # One part per worker that got events (a Parquet file needs rows to have a schema).
    assert [p.name for p in parts] in (["part-00000.parquet", "part-00001.parquet"], ["part-00000.parquet"], ["part-00001.parquet"])
    table = pl.read_parquet(tmp_path / "run.parquet").sort("timestamp")
    assert table.height == 3000 and table["timestamp"].n_unique() == 3000
    assert sorted(table["timestamp"].to_list()) == sorted(events)
    assert table.columns[:3] == ["timestamp", "run", "step"]
    with h5py.File(tmp_path / "run.h5", "r") as f:
        order = np.argsort(f["timestamp"][()])
        h5 = {k: f[k][()][order] for k in ("timestamp", "run", "step", "diode/raw/signal", "cam/raw/image", "gate/value", "bucket", "half")}
    assert h5["timestamp"].tolist() == table["timestamp"].to_list()
    assert h5["run"].tolist() == table["run"].to_list() and h5["step"].tolist() == table["step"].to_list()
    assert np.array_equal(h5["diode/raw/signal"], table["diode.raw.signal"].to_numpy())
    assert np.array_equal(h5["cam/raw/image"], np.stack(table["cam.raw.image"].to_numpy()))
    # Parquet keeps nulls; HDF5 holds psana's missing values there.
    gate = table["gate.value"].to_numpy()
    assert table["gate.value"].null_count() > 0 and np.array_equal(h5["gate/value"], np.where(np.isnan(gate), np.nan, gate), equal_nan=True)
    assert np.array_equal(h5["bucket"], table["bucket"].fill_null(-99999).to_numpy())
    assert h5["half"].dtype == np.float32 and np.array_equal(h5["half"], table["half"].to_numpy())


def test_an_aggregate_is_saved_as_psana_summaries(camera_run, tmp_path):
    source, events, _ = camera_run
    path = tmp_path / "sums.h5"
    # Three workers, one batch: two of them never plan the query, and still write no part.
    run("run", "--source", source, "--ranks", "5", "--batch-events", "100000", "--sql", 'SELECT sum("ipm2.raw.sum") AS "ipm2.sum", count(*) AS n FROM events', "--save", str(path))
    assert not list(tmp_path.glob("sums_part*")), "an aggregate saves no rows"
    with h5py.File(path, "r") as f:
        # psana's parallel smd.sum of a scalar is an array of shape (1,), saved as an ordinary dataset.
        assert not f["ipm2/sum"].is_virtual and f["ipm2/sum"].shape == (1,) and f["n"].shape == (1,)
        assert f["n"][()].tolist() == [3000]
        assert f["ipm2/sum"][0] == pytest.approx(math.fsum(e["ipm2.raw.sum"] for e in events.values()), rel=1e-12)
    # In Parquet, the result table itself (one file, where an earlier job's folder of parts was).
    (tmp_path / "sums.parquet").mkdir()
    (tmp_path / "sums.parquet" / "part-00003.parquet").write_bytes(b"old")
    run("run", "--source", source, "--ranks", "3", "--sql", 'SELECT step, count(*) AS n FROM events GROUP BY step ORDER BY step', "--save", str(tmp_path / "sums.parquet"))
    t = pl.read_parquet(tmp_path / "sums.parquet")
    assert t["step"].to_list() == [0, 1, 2] and t["n"].sum() == 3000
    assert t["n"].to_list() == [sum(1 for e in events.values() if e["step"] == s) for s in range(3)]


def test_bad_save_paths_are_clear_errors(camera_run, tmp_path):
    source, _, _ = camera_run
    r = run("run", "--source", source, "--sql", "SELECT timestamp FROM events", "--save", str(tmp_path / "x.csv"), check=False)
    assert r.returncode == 1 and "save as .h5" in r.stderr, r.stderr
    r = run("run", "--source", source, "--ranks", "3", "--sql", "SELECT timestamp FROM events", "--save", str(tmp_path / "nowhere" / "x.h5"), check=False)
    assert r.returncode == 1 and "nowhere: no such folder" in r.stderr, r.stderr
    r = run("run", "--source", source, "--ranks", "3", "--sql", 'SELECT "cam.raw.image" FROM events ORDER BY timestamp', "--save", str(tmp_path / "x.h5"), check=False)
    assert r.returncode == 1 and "ORDER BY and LIMIT do not apply to saved rows" in r.stderr, r.stderr
