"""Event functions from the command line (issue 18): `beamtime run --function FILE.rs` compiles
the user's Rust once, ships the library to every rank over the job's own channels, and the
query calls its functions by name. Values are checked against the same computation done here
with numpy on the events themselves; a panic, a compile error and a wrong signature each give
their promised error."""
import math
import os
import pathlib
import subprocess
import time
import sys

import numpy as np
import polars as pl
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin, run_beamtime as run  # noqa: E402

FUNCTIONS = """
/// The diode's signal over the beam intensity.
fn ratio(a: f64, b: f32) -> f64 {
    a / b as f64
}

/// Centre of mass of the camera frame (flat index), none for an empty frame.
fn com(img: &[u16]) -> Option<f64> {
    let mut total = 0.0;
    let mut moment = 0.0;
    for (i, &v) in img.iter().enumerate() {
        total += v as f64;
        moment += i as f64 * v as f64;
    }
    if total == 0.0 { None } else { Some(moment / total) }
}

/// The frame's brightest pixels, brightest first.
fn top3(img: &[u16]) -> Vec<u16> {
    let mut v = img.to_vec();
    v.sort_unstable_by(|a, b| b.cmp(a));
    v.truncate(3);
    v
}
"""


@pytest.fixture(scope="module")
def camera_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("fn") / "xtc"
    run("sim", "--dir", str(d), "--exp", "tstfn", "--run", "1", "--events", "3000", "--steps", "3", "--image", "8x6")
    source = f"exp=tstfn:run=1:dir={d}"
    out = d.parent / "events.parquet"
    run("run", "--source", source, "--sql", 'SELECT timestamp, step, "ipm2.raw.sum", "diode.raw.signal", "cam.raw.image" FROM events', "-o", str(out))
    fn = d.parent / "fns.rs"
    fn.write_text(FUNCTIONS)
    return source, pl.read_parquet(out).sort("timestamp"), fn


def oracle(events):
    """The functions computed here, per event (numpy, sequential sums like the Rust)."""
    ratio = [None if a is None or b is None else a / float(np.float32(b)) for a, b in zip(events["diode.raw.signal"].to_list(), events["ipm2.raw.sum"].to_list())]
    com, top3 = [], []
    for img in events["cam.raw.image"].to_list():
        if img is None:
            com.append(None)
            top3.append(None)
            continue
        x = np.array(img, dtype=np.float64)
        total = x.sum()
        com.append(None if total == 0 else float(np.dot(np.arange(len(x)), x) / total))
        top3.append(sorted(img, reverse=True)[:3])
    return ratio, com, top3


@pytest.mark.parametrize("ranks", [1, 3, 4])
def test_event_functions_give_numpys_values_at_every_rank_count(camera_run, tmp_path, ranks):
    source, events, fn = camera_run
    out = tmp_path / "rows.parquet"
    sql = 'SELECT timestamp, ratio("diode.raw.signal", "ipm2.raw.sum") AS r, com("cam.raw.image") AS c, top3("cam.raw.image") AS t FROM events'
    run("run", "--source", source, "--ranks", str(ranks), "--function", str(fn), "--sql", sql, "-o", str(out))
    got = pl.read_parquet(out).sort("timestamp")
    assert got["timestamp"].to_list() == events["timestamp"].to_list()
    ratio, com, top3 = oracle(events)
    assert got["r"].to_list() == ratio  # one IEEE division each: exact
    for g, w in zip(got["c"].to_list(), com):
        assert (g is None and w is None) or abs(g - w) <= 1e-12 * abs(w), (g, w)
    assert got["t"].to_list() == top3
    assert got.schema["t"] == pl.List(pl.UInt16)
    # Aggregated like a built-in: per step, the mean of the function.
    out = tmp_path / "agg.parquet"
    run("run", "--source", source, "--ranks", str(ranks), "--function", str(fn), "--sql",
        'SELECT step, avg(ratio("diode.raw.signal", "ipm2.raw.sum")) AS m, count(*) AS n FROM events GROUP BY step ORDER BY step', "-o", str(out))
    agg = pl.read_parquet(out)
    e = events.with_columns(pl.Series("r", ratio, dtype=pl.Float64))
    for row in agg.to_dicts():
        xs = e.filter(pl.col("step") == row["step"])["r"].drop_nulls().to_list()
        assert row["m"] == math.fsum(xs) / len(xs), row  # beamtime's sums are exactly rounded


def beamtime(*args):
    return subprocess.run([beamtime_bin(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"})


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_panic_names_the_event_and_the_line_and_fails_the_query(camera_run, tmp_path, ranks):
    source, events, _ = camera_run
    fn = tmp_path / "picky.rs"
    fn.write_text("fn picky(x: f64) -> f64 {\n    if x > 1.3 {\n        panic!(\"too big: {x}\");\n    }\n    x\n}\n")
    p = beamtime("run", "--source", source, "--ranks", str(ranks), "--function", str(fn), "--sql", 'SELECT avg(picky("ipm2.raw.sum")) AS m FROM events')
    assert p.returncode == 1, p.stderr
    line = [l for l in p.stderr.splitlines() if "panicked" in l]
    assert line, p.stderr
    big = {t for t, x in zip(events["timestamp"].to_list(), events["ipm2.raw.sum"].to_list()) if x is not None and x > 1.3}
    assert big, "the run has values over the threshold"
    ts = int(line[0].split("panicked on the event with timestamp ")[1].split()[0])
    assert ts in big, line[0]
    assert "too big: " in line[0] and "(line 3 of the source)" in line[0], line[0]


def test_a_compile_error_and_a_wrong_signature_are_said_before_any_job(camera_run, tmp_path):
    source, _, _ = camera_run
    bad = tmp_path / "bad.rs"
    bad.write_text("fn f(x: f64) -> f64 {\n    x + \"one\"\n}\n")
    p = beamtime("run", "--source", source, "--ranks", "3", "--function", str(bad), "--sql", "SELECT f(x) FROM events")
    assert p.returncode == 1 and "error[E0277]: cannot add `&str` to `f64`" in p.stderr and "--> line 2:" in p.stderr, p.stderr
    wrong = tmp_path / "wrong.rs"
    wrong.write_text("fn ok(x: f64) -> f64 { x }\n\nfn name(s: String) -> f64 { 0.0 }\n")
    p = beamtime("run", "--source", source, "--function", str(wrong), "--sql", "SELECT ok(x) FROM events")
    assert p.returncode == 1 and "line 3: fn name: parameter `s: String` is not an event value" in p.stderr, p.stderr


def test_a_function_that_never_returns_is_ended_by_timeout_with_the_results_so_far(camera_run, tmp_path):
    """An event function loops forever on some events: --timeout stops the job, the collector
    gives the stuck workers up 3 s later, the partial result is written (exit 4, the workers
    named), and nothing of the job is left."""
    source, events, _ = camera_run
    # Endless on the one event with the largest value: the other worker reads the rest.
    top = events["ipm2.raw.sum"].max()
    fn = tmp_path / "spin.rs"
    fn.write_text(f"fn spin(x: f64) -> f64 {{\n    if x >= {top!r} {{\n        loop {{\n            std::hint::spin_loop();\n        }}\n    }}\n    x\n}}\n")
    out = tmp_path / "partial.parquet"
    t = time.monotonic()
    p = beamtime("run", "--source", source, "--ranks", "4", "--batch-events", "64", "--timeout", "3", "--function", str(fn),
                 "--sql", 'SELECT count(*) AS n, sum(spin("ipm2.raw.sum")) AS s FROM events', "-o", str(out))
    took = time.monotonic() - t
    assert p.returncode == 4, p.stderr
    assert took < 15, f"took {took:.1f} s"
    assert "did not stop within 3 s of the stop" in p.stderr, p.stderr
    got = pl.read_parquet(out)
    assert 0 < got["n"][0] < len(events), got
    leftover = subprocess.run(["pgrep", "-f", str(fn.parent)], capture_output=True, text=True).stdout.split()
    assert not leftover, leftover
