"""`beamtime run` from the command line: one job process and under mpirun, on a run that is still
being written; its .parquet / .arrow / .csv outputs open in pyarrow and polars with the values
of the same SQL over the finished run."""
import json
import pathlib
import re
import subprocess
import sys

import polars as pl
import pyarrow.csv
import pyarrow.ipc
import pyarrow.parquet
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin, run_beamtime as run  # noqa: E402


SQL = "SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s, avg(diode.raw.signal) AS d FROM events GROUP BY step ORDER BY step"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "xtc"
    run("sim", "--dir", str(d), "--exp", "tstcli01", "--run", "1", "--events", "5000", "--steps", "5", "--streams", "2")
    return f"exp=tstcli01:run=1:dir={d}"


def oracle(source, tmp_path):
    out = tmp_path / "all.parquet"
    run("run", "--source", source, "--sql", "SELECT * FROM events", "-o", str(out))
    events = pl.read_parquet(out)
    ctx = pl.SQLContext(events=events)
    q = 'SELECT step, count(*) AS n, sum("ipm2.raw.sum") AS s, avg("diode.raw.signal") AS d FROM events GROUP BY step ORDER BY step'
    return ctx.execute(q).collect()


def same(a, b):
    assert a.columns == b.columns and a.height == b.height, (a, b)
    for c in a.columns:
        for x, y in zip(a[c].to_list(), b[c].to_list()):
            assert (abs(x - y) <= 1e-12 * max(abs(x), abs(y), 1e-300)) if isinstance(x, float) else x == y, (c, x, y)


@pytest.mark.parametrize("ranks", [1, 3])
def test_outputs_open_in_pyarrow_and_polars(finished, tmp_path, ranks):
    expect = oracle(finished, tmp_path)
    for ext in ["parquet", "arrow", "csv"]:
        out = tmp_path / f"r{ranks}.{ext}"
        run("run", "--source", finished, "--sql", SQL, "--ranks", str(ranks), "-o", str(out))
        if ext == "parquet":
            t = pyarrow.parquet.read_table(out)
            got = pl.read_parquet(out)
        elif ext == "arrow":
            t = pyarrow.ipc.open_file(out).read_all()
            got = pl.read_ipc(out)
        else:
            t = pyarrow.csv.read_csv(out)
            got = pl.read_csv(out)
        assert t.num_rows == 5 and t.column_names == ["step", "n", "s", "d"], (ext, t.schema)
        same(got.cast({"n": pl.Int64, "step": pl.Int64}), expect.cast({"n": pl.Int64, "step": pl.Int64}))


def test_following_a_run_while_it_is_written(tmp_path):
    d = tmp_path / "xtc"
    writer = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(d), "--exp", "tstcli02", "--run", "1",
                               "--events", "6000", "--steps", "3", "--streams", "2", "--rate", "3000"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    out = tmp_path / "live.parquet"
    p = run("run", "--source", f"exp=tstcli02:run=1:dir={d}:live", "--sql", SQL, "--ranks", "3", "-o", str(out))
    assert writer.wait(timeout=60) == 0
    got = pl.read_parquet(out)
    assert got["n"].sum() == 6000
    same(got.cast({"n": pl.Int64, "step": pl.Int64}), oracle(f"exp=tstcli02:run=1:dir={d}", tmp_path).cast({"n": pl.Int64, "step": pl.Int64}))


def test_errors_name_what_is_wrong(finished, tmp_path):
    p = run("run", "--source", finished, "--sql", "SELECT median(ipm2.raw.sum) FROM events", check=False)
    assert p.returncode != 0 and "median() cannot be merged exactly" in p.stderr, p.stderr
    p = run("run", "--source", "exp=nope:run=1:dir=/nonexistent", "--sql", "SELECT count(*) FROM events", check=False)
    assert p.returncode != 0 and "/nonexistent" in p.stderr, p.stderr
    p = run("run", "--source", finished, "--sql", "SELECT count(*) FROM events", "-o", str(tmp_path / "x.xlsx"), check=False)
    assert p.returncode != 0 and "xlsx" in p.stderr, p.stderr


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_typo_in_a_column_is_the_commands_error(finished, ranks):
    p = run("run", "--source", finished, "--sql", "SELECT avg(ipm2.raw.summ) FROM events", "--ranks", str(ranks), check=False)
    assert p.returncode != 0, p.stdout
    assert "unknown column `ipm2.raw.summ`" in p.stderr and "did you mean ipm2.raw.sum" in p.stderr, p.stderr
    assert p.stdout == "", "no empty table printed"


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_missing_directory_is_the_commands_error(tmp_path, ranks):
    missing = tmp_path / "no-such-dir"
    p = run("run", "--source", f"exp=tstcli03:run=1:dir={missing}", "--sql", "SELECT count(*) AS n FROM events", "--ranks", str(ranks), check=False)
    assert p.returncode != 0, p.stdout
    assert f"beamtime: error: no files for run 1 of tstcli03 in {missing}" in p.stderr, p.stderr


def test_a_job_description_of_another_contract_version_is_refused_by_name():
    job = pathlib.Path(beamtime_bin()).with_name("beamtime-job")
    spec = {"contract": 0, "source": "files=x.xtc2", "queries": [], "frame_rate": 5.0, "report_ms": 100, "batch_events": 1,
            "flush_ms": 20, "poll_ms": 10, "connect": None, "max_rows": 10, "output": None}
    p = subprocess.run([str(job), "--in-process", "--spec", json.dumps(spec)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0 and re.search(r"job speaks contract v\d+, kernel v0: ", p.stderr), p.stderr
