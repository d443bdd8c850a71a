"""`%%function` through a real Jupyter client (issue 18): event functions defined in a cell run
in `%%live` on every rank (1 and 3) and in `%%sql` over the loaded run, with the values numpy
computes on the events; a compile error and a wrong signature are cell errors on the cell's
lines before any job; a panic fails only its query, naming the event; redefining a function
starts afresh exactly the live queries that call it. After each error the next cell answers
within 1 s."""
import math
import subprocess
import time

import numpy as np
import polars as pl
import pytest

from conftest import beamtime_bin, run_cell
from kernelclient import texts

FUNCTIONS = """%%function
fn ratio(signal: f64, i0: f32) -> f64 {
    signal / i0 as f64
}

fn com(img: &[u16]) -> Option<f64> {
    let (mut total, mut moment) = (0.0, 0.0);
    for (i, &v) in img.iter().enumerate() {
        total += v as f64;
        moment += i as f64 * v as f64;
    }
    if total == 0.0 { None } else { Some(moment / total) }
}
"""


def ok(kc, code, timeout=120):
    reply, msgs = run_cell(kc, code, timeout)
    assert reply["status"] == "ok", texts(msgs)
    return texts(msgs)


def wait_done(kc, name, timeout=120):
    end = time.time() + timeout
    s = ""
    while time.time() < end:
        s = ok(kc, "%live status")
        line = [l for l in s.splitlines() if l.strip().startswith(name + ":")]
        if line and ("done" in line[0] or "error" in line[0]):
            return s
        time.sleep(0.3)
    raise AssertionError("not done: " + s)


def answers_at_once(kc):
    t = time.monotonic()
    ok(kc, "%tables")
    took = time.monotonic() - t
    assert took < 1.0, f"the next cell took {took:.2f} s"


@pytest.fixture
def camera_run(tmp_path):
    d = tmp_path / "xtc"
    args = [beamtime_bin(), "sim", "--dir", str(d), "--exp", "tstkfn", "--run", "1", "--events", "2000", "--steps", "2", "--image", "8x6"]
    assert subprocess.run(args, capture_output=True).returncode == 0
    source = f"exp=tstkfn:run=1:dir={d}"
    out = tmp_path / "events.parquet"
    p = subprocess.run([beamtime_bin(), "run", "--source", source, "--sql", 'SELECT timestamp, step, "ipm2.raw.sum", "diode.raw.signal", "cam.raw.image" FROM events', "-o", str(out)], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    return source, pl.read_parquet(out).sort("timestamp")


def oracle(events):
    ratio = [None if a is None or b is None else a / float(np.float32(b)) for a, b in zip(events["diode.raw.signal"].to_list(), events["ipm2.raw.sum"].to_list())]
    com = []
    for img in events["cam.raw.image"].to_list():
        x = np.array(img, dtype=np.float64)
        com.append(None if x.sum() == 0 else float(np.dot(np.arange(len(x)), x) / x.sum()))
    return ratio, com


def test_functions_run_live_at_one_and_three_ranks_and_in_sql_with_numpys_values(kernel, camera_run, tmp_path):
    km, kc = kernel
    source, events = camera_run
    text = ok(kc, FUNCTIONS)
    assert "defined ratio(f64, f32) -> f64, com(&[u16]) -> Option<f64>" in text, text
    ok(kc, f"%source {source}")
    ratio, com = oracle(events)
    per_step = 'SELECT step, avg(ratio(diode.raw.signal, ipm2.raw.sum)) AS m, count(com(cam.raw.image)) AS n FROM events GROUP BY step ORDER BY step'
    for ranks in [1, 3]:
        ok(kc, f"%%live rows{ranks} --ranks {ranks}\nSELECT timestamp, ratio(diode.raw.signal, ipm2.raw.sum) AS r, com(cam.raw.image) AS c FROM events")
        wait_done(kc, f"rows{ranks}")
        path = tmp_path / f"rows{ranks}.parquet"
        ok(kc, f"%save rows{ranks} {path}")
        got = pl.read_parquet(path).sort("timestamp")
        assert got["timestamp"].to_list() == events["timestamp"].to_list()
        assert got["r"].to_list() == ratio
        for g, w in zip(got["c"].to_list(), com):
            assert (g is None and w is None) or abs(g - w) <= 1e-12 * abs(w), (g, w)
        ok(kc, f"%%live steps{ranks} --ranks {ranks}\n{per_step}")
        wait_done(kc, f"steps{ranks}")
        ok(kc, f"%save steps{ranks} {tmp_path / f'steps{ranks}.parquet'}")
        ok(kc, "%live stop")
    e = events.with_columns(pl.Series("r", ratio, dtype=pl.Float64))
    want = [math.fsum(e.filter(pl.col("step") == s)["r"].drop_nulls().to_list()) / e.filter(pl.col("step") == s)["r"].drop_nulls().len() for s in [0, 1]]
    # %%sql over the finished run, loaded: the same numbers.
    ok(kc, f"%load run events {source}")
    ok(kc, f"%%sql --name offline\n{per_step}")
    ok(kc, f"%save offline {tmp_path / 'offline.parquet'}")
    for name in ["steps1", "steps3", "offline"]:
        t = pl.read_parquet(tmp_path / f"{name}.parquet")
        assert t["m"].to_list() == want, (name, t)
        assert t["n"].sum() == len(events), (name, t)


def test_compile_errors_wrong_signatures_and_panics_are_errors_and_the_kernel_goes_on(kernel, camera_run, tmp_path):
    km, kc = kernel
    source, events = camera_run
    reply, msgs = run_cell(kc, "%%function\nfn f(x: f64) -> f64 {\n    x + \"one\"\n}\n")
    assert reply["status"] == "error" and reply["ename"] == "CompilationError", reply
    tb = "\n".join(reply["traceback"])
    assert "cannot add `&str` to `f64`" in tb and "cell:3:" in tb, tb
    answers_at_once(kc)
    reply, _ = run_cell(kc, "%%function\nfn g(s: String) -> f64 {\n    0.0\n}\n")
    assert reply["status"] == "error" and reply["ename"] == "FunctionError", reply
    assert reply["evalue"].startswith("cell line 2: fn g: parameter `s: String` is not an event value"), reply["evalue"]
    answers_at_once(kc)
    # A panic on some events: that query fails naming one of them; the other query goes on.
    ok(kc, "%%function\nfn picky(x: f64) -> f64 {\n    if x > 1.3 {\n        panic!(\"too big: {x}\");\n    }\n    x\n}\n")
    ok(kc, f"%source {source}")
    ok(kc, "%%live n --ranks 3\nSELECT count(*) AS n FROM events")
    reply, msgs = run_cell(kc, "%%live p --ranks 3\nSELECT avg(picky(ipm2.raw.sum)) AS m FROM events", timeout=120)
    assert reply["status"] == "error", texts(msgs)
    big = {t for t, x in zip(events["timestamp"].to_list(), events["ipm2.raw.sum"].to_list()) if x is not None and x > 1.3}
    ts = int(reply["evalue"].split("panicked on the event with timestamp ")[1].split()[0])
    assert ts in big and "too big: " in reply["evalue"] and "(line 3 of the source)" in reply["evalue"], reply["evalue"]
    answers_at_once(kc)
    s = wait_done(kc, "n")
    assert "n: 2000 events" in s, s
    ok(kc, "%live stop")


def test_redefining_a_function_starts_afresh_exactly_the_queries_that_call_it(kernel, tmp_path):
    km, kc = kernel
    exp = "tstkredef"
    writer = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(tmp_path / "xtc"), "--exp", exp, "--run", "1", "--events", "40000",
                               "--steps", "2", "--rate", "2000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        ok(kc, "%%function\nfn one(x: f64) -> f64 {\n    1.0\n}\n")
        ok(kc, f"%source exp={exp}:run=1:dir={tmp_path / 'xtc'}:live")
        ok(kc, "%%live uses --ranks 3 --rate 10\nSELECT sum(one(ipm2.raw.sum)) AS s, count(*) AS n FROM events")
        ok(kc, "%%live plain --ranks 3 --rate 10\nSELECT count(*) AS n FROM events")
        time.sleep(2)
        text = ok(kc, "%%function\nfn one(x: f64) -> f64 {\n    2.0\n}\n")
        assert "live queries started afresh with the new definition: uses" in text and "plain" not in text, text
        # Once the library has reached every rank, every event counted goes through the new
        # definition: s = 2 n (the result before that is the old generation's, s = n).
        path = tmp_path / "uses.parquet"
        end = time.monotonic() + 30
        while time.monotonic() < end:
            ok(kc, f"%save uses {path}")
            t = pl.read_parquet(path)
            if t["n"][0] > 0 and t["s"][0] == 2.0 * t["n"][0]:
                break
            time.sleep(0.2)
        ok(kc, "%live stop")
        wait_done(kc, "uses")
        wait_done(kc, "plain")
        before_stop = ok(kc, "%live status")
        ok(kc, f"%save uses {path}")
        t = pl.read_parquet(path)
        # Every event counted since the reset went through the new definition.
        assert t["s"][0] == 2.0 * t["n"][0] and t["n"][0] > 0, (t, before_stop, ok(kc, "%live status"))
        path = tmp_path / "plain.parquet"
        ok(kc, f"%save plain {path}")
        assert pl.read_parquet(path)["n"][0] > t["n"][0], "the other query kept counting from the start"
    finally:
        writer.kill()
        writer.wait(timeout=10)


def test_live_save_writes_psanas_smalldata_that_h5py_reads(kernel, camera_run, tmp_path):
    """`%%live … --save run.h5` at 1 and 3 ranks: the HDF5 opens with h5py, one row per event
    with the function's values (numpy's), timestamp/run/step, and missing values as NaN."""
    import h5py
    km, kc = kernel
    source, events = camera_run
    ok(kc, FUNCTIONS)
    ok(kc, f"%source {source}")
    ratio, com = oracle(events)
    for ranks in [1, 3]:
        path = tmp_path / f"r{ranks}" / "run.h5"
        path.parent.mkdir()
        ok(kc, f"%%live saved{ranks} --ranks {ranks} --save {path}\nSELECT ratio(diode.raw.signal, ipm2.raw.sum) AS r, com(cam.raw.image) AS \"cam.com\" FROM events")
        status = wait_done(kc, f"saved{ranks}")
        # The live result is the part files' progress, not the rows.
        ok(kc, f"%save saved{ranks} {tmp_path / f'parts{ranks}.parquet'}")
        parts = pl.read_parquet(tmp_path / f"parts{ranks}.parquet")
        assert parts["rows"].sum() == len(events) and parts["closed"].all(), parts
        assert len(parts) == (1 if ranks == 1 else ranks - 2), parts
        ok(kc, "%live stop")
        with h5py.File(path, "r") as f:
            order = np.argsort(f["timestamp"][()])
            assert f["timestamp"][()][order].tolist() == events["timestamp"].to_list(), status
            assert f["step"][()][order].tolist() == events["step"].to_list()
            assert f["r"][()][order].tolist() == ratio
            got = f["cam/com"][()][order]
            assert all(abs(g - w) <= 1e-12 * abs(w) for g, w in zip(got, com))
            assert f["timestamp"].is_virtual == (ranks > 1)
