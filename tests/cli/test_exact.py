"""Live = offline, to the bit: `beamtime run` at 1 to 8 workers against an oracle computed here
from the events themselves (Python's math.fsum is the exactly rounded sum, which is what
beamtime's float sums return), on a run whose `fim` detector is on 1 event in 10; and
`--mode run` over a file holding three runs, against psana's reference dump of it."""
import math
import pathlib
import re
import sys

import numpy as np
import polars as pl
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared" / "data" / "xtc2"
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import run_beamtime as run  # noqa: E402

SPARSE = "fim.fex.intensity"  # the third stream's detector: 1 event in 10


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("sparse") / "xtc"
    run("sim", "--dir", str(d), "--exp", "tstexact", "--run", "1", "--events", "20000", "--steps", "4", "--streams", "3")
    source = f"exp=tstexact:run=1:dir={d}"
    out = d.parent / "events.parquet"
    run("run", "--source", source, "--sql", f'SELECT timestamp, step, "ipm2.raw.sum", "{SPARSE}" FROM events', "-o", str(out))
    return source, pl.read_parquet(out)


AGGREGATES = (
    f"SELECT step, count({SPARSE}) AS n, sum({SPARSE}) AS s, avg({SPARSE}) AS m, var_pop({SPARSE}) AS v, "
    f"first({SPARSE}) AS f, last({SPARSE}) AS l, sum(ipm2.raw.sum) AS si FROM events GROUP BY step ORDER BY step"
)
HIST = f"SELECT hist({SPARSE}, 0.5, 1.5, 20) AS h, count(*) AS n FROM events GROUP BY h ORDER BY h"


def aggregates_oracle(events):
    rows = []
    for step in sorted(events["step"].unique().to_list()):
        e = events.filter(pl.col("step") == step)
        x = e.filter(pl.col(SPARSE).is_not_null()).sort("timestamp")
        xs = [float(v) for v in x[SPARSE].to_list()]
        n = len(xs)
        s = math.fsum(xs)
        rows.append({
            "step": step, "n": n, "s": s, "m": s / n, "v": float(np.var(np.array(xs, dtype=np.float64))),
            "f": xs[0], "l": xs[-1], "si": math.fsum(float(v) for v in e["ipm2.raw.sum"].to_list()),
        })
    return rows


def hist_oracle(events):
    lo, hi, nbins = 0.5, 1.5, 20
    width = (hi - lo) / nbins
    x = events[SPARSE].drop_nulls().cast(pl.Float64).to_numpy()
    inside = x[(x >= lo) & (x < hi)]
    edges = lo + np.floor((inside - lo) / width) * width
    values, counts = np.unique(edges, return_counts=True)
    assert len(inside) < len(x), "the run has values outside the histogram's range"
    return values.tolist(), counts.tolist()


@pytest.mark.parametrize("ranks", [1, 3, 4, 6, 10])  # 1, 1, 2, 4, 8 workers
def test_aggregates_of_a_sparse_detector_equal_the_oracle_bit_for_bit(sparse_run, tmp_path, ranks):
    source, events = sparse_run
    out = tmp_path / "agg.parquet"
    run("run", "--source", source, "--sql", AGGREGATES, "--ranks", str(ranks), "-o", str(out))
    got = pl.read_parquet(out).to_dicts()
    want = aggregates_oracle(events)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        # Exact: sums are exactly rounded (= fsum), means are that sum / n, first/last values.
        for k in ["step", "n", "s", "m", "f", "l", "si"]:
            assert g[k] == w[k], (ranks, g["step"], k, g[k], w[k])
        assert abs(g["v"] - w["v"]) <= 1e-12 * w["v"], (g["v"], w["v"])
    # Floats come back as f64 (the detector is float32).
    assert pl.read_parquet(out).schema["s"] == pl.Float64

    out = tmp_path / "hist.parquet"
    run("run", "--source", source, "--sql", HIST, "--ranks", str(ranks), "-o", str(out))
    got = pl.read_parquet(out)
    values, counts = hist_oracle(events)
    assert got["h"].to_list() == values and got["n"].to_list() == counts


def test_sixty_four_workers_give_the_oracle_bit_for_bit(sparse_run, tmp_path):
    """66 ranks oversubscribed on this machine (small batches, so that every worker gets
    several): the 64 workers' states merge in a tree of fan-in 8 (the default), eight
    combiners each merging seven workers' states with their own, the collector eight."""
    source, events = sparse_run
    out = tmp_path / "agg64.parquet"
    p = run("run", "--source", source, "--sql", AGGREGATES, "--ranks", "66", "--batch-events", "64", "-o", str(out))
    assert "lost" not in p.stderr, p.stderr
    got = pl.read_parquet(out).to_dicts()
    want = aggregates_oracle(events)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k in ["step", "n", "s", "m", "f", "l", "si"]:
            assert g[k] == w[k], (g["step"], k, g[k], w[k])
        assert abs(g["v"] - w["v"]) <= 1e-12 * w["v"], (g["v"], w["v"])


@pytest.mark.parametrize("ranks,fan_in", [(11, 2), (12, 3)])  # 9 workers: 4 levels; 10: 3
def test_a_merge_tree_of_any_shape_gives_the_oracle_bit_for_bit(sparse_run, tmp_path, ranks, fan_in):
    """Combiners of combiners: states merged in three or four steps on their way to the
    collector; the rows of a row query go straight to it and all arrive."""
    source, events = sparse_run
    common = ["--source", source, "--ranks", str(ranks), "--batch-events", "64", "--fan-in", str(fan_in)]
    out = tmp_path / "agg.parquet"
    run("run", *common, "--sql", AGGREGATES, "-o", str(out))
    got = pl.read_parquet(out).to_dicts()
    want = aggregates_oracle(events)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        for k in ["step", "n", "s", "m", "f", "l", "si"]:
            assert g[k] == w[k], (ranks, fan_in, g["step"], k, g[k], w[k])
    out = tmp_path / "hist.parquet"
    run("run", *common, "--sql", HIST, "-o", str(out))
    got = pl.read_parquet(out)
    values, counts = hist_oracle(events)
    assert got["h"].to_list() == values and got["n"].to_list() == counts
    out = tmp_path / "rows.parquet"
    run("run", *common, "--sql", "SELECT step, timestamp FROM events", "-o", str(out))
    got = pl.read_parquet(out)
    assert sorted(got["timestamp"].to_list()) == sorted(events["timestamp"].to_list())


def test_the_variance_is_the_same_bits_at_every_rank_count(sparse_run, tmp_path):
    source, _ = sparse_run
    results = []
    for ranks in [1, 3, 6]:
        out = tmp_path / f"v{ranks}.parquet"
        run("run", "--source", source, "--sql", AGGREGATES, "--ranks", str(ranks), "-o", str(out))
        results.append(pl.read_parquet(out))
    for r in results[1:]:
        assert r.equals(results[0])
        assert [v.hex() for v in r["v"].to_list()] == [v.hex() for v in results[0]["v"].to_list()]


def reference_runs(dump):
    """The L1Accept timestamps of each run in psana's reference dump, in order."""
    runs, current = [], None
    pattern = re.compile(r"^event \d+,\s+(\w+) transition:\s+time 0x([0-9a-f]+)\.0x([0-9a-f]+)")
    for line in dump.read_text().splitlines():
        m = pattern.match(line)
        if not m:
            continue
        kind, sec, nsec = m.group(1), int(m.group(2), 16), int(m.group(3), 16)
        if kind == "BeginRun":
            current = []
            runs.append(current)
        elif kind == "L1Accept":
            current.append(sec << 32 | nsec)
    return runs


@pytest.mark.parametrize("ranks", [1, 3])
def test_mode_run_over_three_runs_keeps_the_last(tmp_path, ranks):
    d = SHARED / "multirun_w_new_config"
    runs = reference_runs(d / "xpptut15-r0014-s000-c000.reference-dump.txt")
    assert len(runs) == 3 and all(runs)
    out = tmp_path / "r.parquet"
    sql = "SELECT count(*) AS n, min(timestamp) AS t0, max(timestamp) AS t1, max(run) AS run FROM events"
    run("run", "--source", f"exp=xpptut15:run=14:dir={d}", "--sql", sql, "--mode", "run", "--ranks", str(ranks), "-o", str(out))
    got = pl.read_parquet(out).to_dicts()[0]
    last = runs[-1]
    assert (got["n"], got["t0"], got["t1"]) == (len(last), min(last), max(last)), got
    # Since the start, every run counts.
    run("run", "--source", f"exp=xpptut15:run=14:dir={d}", "--sql", sql, "--ranks", str(ranks), "-o", str(out))
    assert pl.read_parquet(out)["n"].to_list() == [sum(len(r) for r in runs)]
