"""Live queries from the notebook through real Jupyter clients: %source, %%live (in-process and
under mpirun), display updates while a simulated run is written, results as tables, bad
queries as cell errors, a killed worker reported while the kernel stays up, %live restart."""
import json
import os
import pathlib
import re
import tempfile
import signal
import subprocess
import time

import pytest

from conftest import beamtime_bin, run_cell
from kernelclient import texts


def sim(tmp_path, exp, events, rate=0, steps=4):
    args = [beamtime_bin(), "sim", "--dir", str(tmp_path / "xtc"), "--exp", exp, "--run", "1",
            "--events", str(events), "--steps", str(steps), "--streams", "2", "--rate", str(rate)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def source(tmp_path, exp, live=False):
    return f"exp={exp}:run=1:dir={tmp_path / 'xtc'}" + (":live" if live else "")


def last_number(table_text, column=-1):
    """The value in the last data row of a polars text table."""
    return table_text.strip().splitlines()[-1].strip("│ ").split("│")[column].strip()


def drain_updates(kc, seconds):
    """Widget state updates (comm_msg "update" with a status) on iopub for a while: the job's
    frames, sent to the widget in the background."""
    out = []
    end = time.time() + seconds
    while time.time() < end:
        try:
            m = kc.get_iopub_msg(timeout=0.2)
        except Exception:
            continue
        data = m["content"].get("data", {})
        if m["msg_type"] == "comm_msg" and data.get("method") == "update" and "status" in data.get("state", {}):
            out.append(m)
    return out


def status(kc):
    reply, msgs = run_cell(kc, "%live status")
    assert reply["status"] == "ok"
    return texts(msgs)


def wait_done(kc, name, timeout=120):
    end = time.time() + timeout
    while time.time() < end:
        s = status(kc)
        line = [l for l in s.splitlines() if l.strip().startswith(name + ":")]
        if line and "done" in line[0]:
            return s
        time.sleep(0.5)
    raise AssertionError("not done: " + s)


def test_a_live_query_on_a_finished_run_equals_offline_sql(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstlive2", 6000).wait() == 0
    reply, msgs = run_cell(kc, f"%source {source(tmp_path, 'tstlive2')}")
    assert reply["status"] == "ok", msgs
    reply, msgs = run_cell(kc, "%%live per_step --ranks 1\nSELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s FROM events GROUP BY step ORDER BY step", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    shown = [m for m in msgs if m["msg_type"] == "display_data"]
    assert shown and shown[0]["content"]["transient"]["display_id"].startswith("beamtime-live-per_step")
    wait_done(kc, "per_step")
    # The live result is a table; the same SQL offline gives the same numbers.
    _, live = run_cell(kc, "%%sql\nSELECT step, n, s FROM per_step ORDER BY step")
    run_cell(kc, f"%load run events {source(tmp_path, 'tstlive2')}", timeout=120)
    _, offline = run_cell(kc, "%%sql\nSELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s FROM events GROUP BY step ORDER BY step")
    # Values alike; live counts are u64 (polars SQL's count is u32), so dtypes are left out.
    values = lambda t: [l for l in t.splitlines() if not re.search(r"\b[uif](8|16|32|64)\b", l)]
    assert values(texts(live, "execute_result")) == values(texts(offline, "execute_result"))
    assert last_number(texts(live, "execute_result"), 1) == "1500"


def test_the_sources_launcher_and_ranks_are_its_jobs_defaults(kernel, tmp_path):
    """`%source … --launcher T --ranks N`: every %%live job of that source starts that way unless
    its cell says otherwise (a template the test can see: the collector's ranks count)."""
    km, kc = kernel
    assert sim(tmp_path, "tstlive7", 4000).wait() == 0
    template = "mpirun -n {n} --oversubscribe --enable-recovery --allow-run-as-root {job}"
    reply, msgs = run_cell(kc, f"%source {source(tmp_path, 'tstlive7')} --launcher '{template}' --ranks 4")
    assert reply["status"] == "ok", texts(msgs)
    reply, msgs = run_cell(kc, "%%live n\nSELECT count(*) AS n FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    s = wait_done(kc, "n")
    # 4 ranks: collector, reader, 2 workers.
    assert "4000 events" in s and "ranks 2/2" in s, s
    reply, msgs = run_cell(kc, "%source --ranks two x")
    assert reply["status"] == "error"


def test_live_under_mpi_updates_while_the_run_is_written(kernel, tmp_path):
    km, kc = kernel
    writer = sim(tmp_path, "tstlive3", 8000, rate=2000)
    run_cell(kc, f"%source {source(tmp_path, 'tstlive3', live=True)} --calib-dir {tmp_path / 'calib'}")
    reply, msgs = run_cell(kc, "%%live n --ranks 3 --rate 10\nSELECT count(*) AS n, avg(ipm2.raw.sum) AS ipm FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    # The job's ranks get the calibration directory with the rest of the job description.
    specs = sorted(pathlib.Path(tempfile.gettempdir()).glob("beamtime-live-*/job.json"), key=lambda p: p.stat().st_mtime)
    assert json.loads(specs[-1].read_text())["calib_dir"] == str(tmp_path / "calib")
    updates = drain_updates(kc, 2.0)
    during = [u for u in updates if writer.poll() is None]
    assert len(during) >= 3, f"{len(updates)} updates"
    counts = [u["content"]["data"]["state"]["status"]["events"] for u in updates]
    assert counts == sorted(counts) and counts[-1] > counts[0], counts
    assert writer.wait(timeout=60) == 0
    s = wait_done(kc, "n")
    assert "8000 events" in s and "ranks 1/1" in s, s
    _, msgs = run_cell(kc, "%%sql\nSELECT n FROM n")
    assert last_number(texts(msgs, "execute_result")) == "8000"


@pytest.mark.parametrize("sql,needle", [
    ("SELECT median(ipm2.raw.sum) FROM events", "median() cannot be merged exactly"),
    ("SELECT avg(ipm2.raw.summ) AS x FROM events", "did you mean ipm2.raw.sum"),
    ("SELEC count(*) FROM events", "Expected"),
])
def test_bad_live_queries_fail_their_cell_and_the_job_goes_on(kernel, tmp_path, sql, needle):
    km, kc = kernel
    assert sim(tmp_path, "tstlive4", 3000).wait() == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstlive4')}")
    reply, msgs = run_cell(kc, f"%%live bad --ranks 1\n{sql}", timeout=120)
    assert reply["status"] == "error" and needle in reply["evalue"], reply
    reply, msgs = run_cell(kc, "%%live good --ranks 1\nSELECT count(*) AS n FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    wait_done(kc, "good")


def worker_pids():
    """Pids of the running beamtime-job worker ranks (rank 2 and up)."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cmd = open(f"/proc/{d}/cmdline", "rb").read()
            env = open(f"/proc/{d}/environ", "rb").read()
        except OSError:
            continue
        if b"beamtime-job" not in cmd.split(b"\0")[0]:
            continue
        m = re.search(rb"OMPI_COMM_WORLD_RANK=(\d+)", env)
        if m and int(m.group(1)) >= 2:
            found.append((int(m.group(1)), int(d)))
    return [p for _, p in sorted(found)]


def test_a_killed_worker_is_shown_the_kernel_stays_up_and_restart_works(kernel, tmp_path):
    km, kc = kernel
    writer = sim(tmp_path, "tstlive5", 12000, rate=2000)
    run_cell(kc, f"%source {source(tmp_path, 'tstlive5', live=True)}")
    reply, msgs = run_cell(kc, "%%live n --ranks 4 --rate 10\nSELECT count(*) AS n FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    # Mid-run: once both workers are reading.
    end = time.time() + 60
    s = status(kc)
    while time.time() < end and int(re.search(r"n: (\d+) events", s).group(1)) < 1000:
        time.sleep(0.2)
        s = status(kc)
    pids = worker_pids()
    assert len(pids) == 2, pids
    os.kill(pids[0], signal.SIGKILL)
    end = time.time() + 30
    s = ""
    while time.time() < end and "lost [" not in s:
        s = status(kc)
        time.sleep(0.3)
    assert "lost [2]" in s and "ranks 1/2" in s and "worker rank 2 on " in s, s
    # The kernel answers, and the last results are still a table.
    reply, msgs = run_cell(kc, "%%sql\nSELECT n FROM n")
    assert reply["status"] == "ok" and int(last_number(texts(msgs, "execute_result"))) > 0
    reply, msgs = run_cell(kc, "%live restart", timeout=60)
    assert reply["status"] == "ok", texts(msgs)
    assert writer.wait(timeout=60) == 0
    s = wait_done(kc, "n")
    assert "12000 events" in s and "ranks 2/2" in s, s


def in_process_jobs(parent):
    """Pids of the one-process jobs (`beamtime-job --in-process`) the kernel `parent` started."""
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            argv = open(f"/proc/{d}/cmdline", "rb").read().split(b"\0")
            ppid = int(open(f"/proc/{d}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if argv[0].endswith(b"beamtime-job") and b"--in-process" in argv and ppid == parent:
            found.append(int(d))
    return found


def test_a_job_killed_mid_stream_never_takes_the_kernel_down(kernel, tmp_path):
    km, kc = kernel
    writer = sim(tmp_path, "tstlive6", 12000, rate=2000)
    try:
        run_cell(kc, f"%source {source(tmp_path, 'tstlive6', live=True)}")
        reply, msgs = run_cell(kc, "%%live n --ranks 1 --rate 10\nSELECT count(*) AS n FROM events", timeout=120)
        assert reply["status"] == "ok", texts(msgs)
        display_id = [m for m in msgs if m["msg_type"] == "display_data"][0]["content"]["transient"]["display_id"]
        # The job is the kernel's child process, not a thread of it.
        jobs = in_process_jobs(km.provisioner.pid)
        assert len(jobs) == 1, jobs
        os.kill(jobs[0], signal.SIGKILL)
        killed = time.time()
        reply, _ = run_cell(kc, "%tables", timeout=5)
        assert reply["status"] == "ok" and time.time() - killed < 1.0, (reply, time.time() - killed)
        # The live display says the job is dead (its table and its widget's status).
        end = time.time() + 10
        shown = widget = None
        while time.time() < end and not (shown and widget):
            try:
                m = kc.get_iopub_msg(timeout=0.5)
            except Exception:
                continue
            c = m["content"]
            if m["msg_type"] == "update_display_data" and c["transient"]["display_id"] == display_id and "JOB DEAD" in c["data"]["text/plain"]:
                shown = c["data"]["text/plain"]
            error = c.get("data", {}).get("state", {}).get("status", {}).get("error") or ""
            if m["msg_type"] == "comm_msg" and "JOB DEAD" in error:
                widget = error
        assert shown and widget, (shown, widget)
        assert "SIGKILL" in widget or "signal: 9" in widget, widget
        s = status(kc)
        assert "job DEAD" in s, s
        assert km.is_alive()
    finally:
        writer.kill()
        writer.wait(timeout=10)


def live_to_parquet(kc, name, sql, ranks, tmp_path):
    """`%%live NAME --ranks N` to its end, then `%save NAME` as Parquet: the file's path."""
    reply, msgs = run_cell(kc, f"%%live {name} --ranks {ranks}\n{sql}", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    wait_done(kc, name)
    path = tmp_path / f"{name}.parquet"
    reply, msgs = run_cell(kc, f"%save {name} {path}")
    assert reply["status"] == "ok", texts(msgs)
    return path


def test_live_at_one_and_three_ranks_and_sql_afterwards_are_the_same_bits(kernel, tmp_path):
    """A float32 detector on 1 event in 10 (`fim`, the third stream): sums, means, variances,
    first/last and a histogram with values out of range — %%live in one process, %%live under
    mpirun and %%sql over the loaded run, saved to Parquet and compared value by value."""
    import polars as pl

    km, kc = kernel
    args = [beamtime_bin(), "sim", "--dir", str(tmp_path / "xtc"), "--exp", "tstbits", "--run", "1",
            "--events", "8000", "--steps", "3", "--streams", "3"]
    assert subprocess.run(args, capture_output=True).returncode == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstbits')}")
    queries = {
        "agg": "SELECT step, count(fim.fex.intensity) AS n, sum(fim.fex.intensity) AS s, avg(fim.fex.intensity) AS m, "
               "stddev(fim.fex.intensity) AS sd, first(fim.fex.intensity) AS f, last(fim.fex.intensity) AS l, "
               "sum(gmd.raw.millijoulesperpulse * ipm2.raw.sum) AS e FROM events GROUP BY step ORDER BY step",
        "hist": "SELECT hist(fim.fex.intensity, 0.5, 1.5, 20) AS h, count(*) AS n FROM events GROUP BY h ORDER BY h",
    }
    saved = {}
    for ranks in [1, 3]:
        for name, sql in queries.items():
            path = live_to_parquet(kc, f"{name}{ranks}", sql, ranks, tmp_path)
            saved.setdefault(name, []).append(pl.read_parquet(path))
        run_cell(kc, "%live stop")
    run_cell(kc, f"%load run events {source(tmp_path, 'tstbits')}", timeout=120)
    for name, sql in queries.items():
        reply, msgs = run_cell(kc, f"%%sql --name {name}_sql\n{sql}", timeout=120)
        assert reply["status"] == "ok", texts(msgs)
        path = tmp_path / f"{name}_sql.parquet"
        run_cell(kc, f"%save {name}_sql {path}")
        offline = pl.read_parquet(path)
        for live in saved[name]:
            assert live.schema == offline.schema, (live.schema, offline.schema)
            for c in live.columns:
                a, b = live[c].to_list(), offline[c].to_list()
                as_bits = lambda xs: [x.hex() if isinstance(x, float) else x for x in xs]
                assert as_bits(a) == as_bits(b), (name, c, a, b)
    assert saved["agg"][0]["s"].dtype == pl.Float64 and saved["agg"][0]["n"].sum() == 800


def test_calibrated_jungfrau_frames_through_source_calib_dir(kernel, tmp_path):
    """`%source files=… --calib-dir DIR` reaches the job: `jungfrau.raw.calib` in a %%live
    result equals the spec's formula in numpy over the raw frames, pixel for pixel."""
    import numpy as np
    import pyarrow.parquet
    from jungfrau import FILE, frames, jungfrau_calib, write_constants  # tests/ (conftest puts it on the path)

    km, kc = kernel
    root = tmp_path / "calib"
    peds, offset, gain, status = write_constants(root)
    reply, msgs = run_cell(kc, f"%source files={FILE} --calib-dir {root}")
    assert reply["status"] == "ok", texts(msgs)
    saved = {}
    for name, sql in {"cal": "SELECT timestamp, jungfrau.raw.calib AS c FROM events",
                      "raw": "SELECT timestamp, jungfrau.raw.raw AS r FROM events"}.items():
        saved[name] = pyarrow.parquet.read_table(live_to_parquet(kc, name, sql, 1, tmp_path))
    ts, calib = frames(saved["cal"], "c")
    raw_ts, raw = frames(saved["raw"], "r")
    assert ts == raw_ts and len(ts) == 2 and calib.dtype == np.float32
    for k in range(len(ts)):
        want = jungfrau_calib(raw[k], peds, offset, gain, status)
        assert np.array_equal(calib[k], want), f"event {k}: {np.count_nonzero(calib[k] != want)} pixels differ"
    run_cell(kc, "%live stop")


def test_calibrated_jungfrau_over_shared_memory_equals_the_files(kernel, tmp_path):
    """`beamtime sim --shmem` serving the simulated Jungfrau, `%source shmem=… --calib-dir` with the
    constants the server deployed before its first client: `%%live` over `jungfrau.raw.calib`
    gives, frame for frame and bit for bit, what the same query gives over the files the same
    simulation writes. (Shared memory is best effort, as psana's client: an L1 still queued when
    its step's Disable arrives is dropped; the unpaced server waits for its client up to
    --client-wait, long enough here for a debug build's first calibration.)"""
    import numpy as np
    import pyarrow.parquet

    km, kc = kernel
    sim_args = ["--exp", "tstjfshm", "--run", "1", "--events", "12", "--steps", "2", "--streams", "2",
                "--jungfrau", "1", "--jungfrau-every", "1", "--seed", "5"]
    files = subprocess.run([beamtime_bin(), "sim", "--dir", str(tmp_path / "xtc"), *sim_args], capture_output=True, text=True)
    assert files.returncode == 0, files.stderr
    tag = f"bt_jf_{os.getpid()}"
    server = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(tmp_path / "shm"), "--shmem", tag, "--client-wait", "60", *sim_args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sql = "SELECT timestamp, step, jungfrau.raw.calib AS c FROM events"
    try:
        deadline = time.time() + 60
        while not (tmp_path / "shm" / "calib").is_dir() and server.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        reply, msgs = run_cell(kc, f"%source shmem={tag}.0:stop=endrun --calib-dir {tmp_path / 'shm' / 'calib'}")
        assert reply["status"] == "ok", texts(msgs)
        shm = pyarrow.parquet.read_table(live_to_parquet(kc, "jfshm", sql, 1, tmp_path)).sort_by("timestamp")
    finally:
        server.terminate()
        server.wait(timeout=30)
    run_cell(kc, "%live stop")
    reply, msgs = run_cell(kc, f"%source {source(tmp_path, 'tstjfshm')} --calib-dir {tmp_path / 'xtc' / 'calib'}")
    assert reply["status"] == "ok", texts(msgs)
    fil = pyarrow.parquet.read_table(live_to_parquet(kc, "jffiles", sql, 1, tmp_path)).sort_by("timestamp")
    run_cell(kc, "%live stop")
    assert fil.num_rows == 12 and shm.num_rows == 12, (fil.num_rows, shm.num_rows)
    assert shm.column("timestamp").to_pylist() == fil.column("timestamp").to_pylist()
    assert shm.column("step").to_pylist() == [0] * 6 + [1] * 6
    a = shm.column("c").combine_chunks().flatten().to_numpy()
    b = fil.column("c").combine_chunks().flatten().to_numpy()
    assert a.size == 12 * 512 * 1024 and a.dtype == np.float32
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{np.count_nonzero(a != b)} pixels differ"
    # Calibrated, not raw: pedestals are gone, the signal is keV of a few photons at most per pixel.
    assert abs(float(np.median(a))) < 5, np.median(a)
