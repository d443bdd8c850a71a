"""`beamtime run` under a real Slurm: a one-node cluster on loopback (tests/slurm/up.sh: munged,
slurmctld and slurmd under /tmp/beamtime-slurm, stopped by tests/slurm/down.sh). The `slurm`
launcher (`srun -n {n} --mpi=pmix {job}`) gives the table mpirun gives, started directly and
from an `sbatch` job (the documented post-run path); no job, step or rank of ours is left after
each test. Skipped only where Slurm is not installed (scripts/install-deps.sh installs it)."""
import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import polars as pl
import pytest
from polars.testing import assert_frame_equal

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin  # noqa: E402

SLURM = ROOT / "tests" / "slurm"
DIR = pathlib.Path(os.environ.get("BEAMTIME_SLURM_DIR", "/tmp/beamtime-slurm"))
CONF = DIR / "slurm.conf"
# Slurm's daemons live in sbin, which a user's PATH may lack.
PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
LAUNCHER = "slurm"  # the preset: srun -n {n} --mpi=pmix {job}
SQL = ("SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s, sum(diode.raw.signal) AS d, "
       "count(DISTINCT run) AS runs FROM events GROUP BY step ORDER BY step")
OURS = {"beamtime-job", "srun", "slurmstepd", "mpirun", "orted"}

pytestmark = pytest.mark.skipif(shutil.which("slurmctld", path=PATH) is None,
                                reason="slurmctld is not installed (scripts/install-deps.sh installs slurm-wlm and munge)")


def env():
    """This process's environment without any Slurm job of its own (CI may itself run under
    Slurm), pointed at the test cluster, allowed to run OpenMPI as root."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    e.update(PATH=PATH, SLURM_CONF=str(CONF), OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    return e


def sh(*args, timeout=60, check=True, **kw):
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, env=env(), **kw)
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{p.stderr}"
    return p


def logs():
    out = []
    for f in sorted(DIR.glob("*.log")):
        out.append(f"== {f}\n" + "\n".join(f.read_text(errors="replace").splitlines()[-20:]))
    return "\n".join(out)


@pytest.fixture(scope="module")
def cluster():
    up = subprocess.run(["bash", str(SLURM / "up.sh")], capture_output=True, text=True, timeout=90, env=env())
    try:
        assert up.returncode == 0, f"tests/slurm/up.sh failed:\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = subprocess.run(["bash", str(SLURM / "down.sh")], capture_output=True, text=True, timeout=90, env=env())
        assert down.returncode == 0, f"tests/slurm/down.sh failed:\n{down.stdout}\n{down.stderr}"


def leftovers():
    """Our processes still running: job ranks, launchers and step daemons whose environment names
    the test cluster's config (every one of ours has it: this test sets it, slurmd passes it on)."""
    mark = f"SLURM_CONF={CONF}".encode()
    found = []
    for p in pathlib.Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            comm = (p / "comm").read_text().strip()
            if comm not in OURS or (p / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                continue
            if mark in (p / "environ").read_bytes().split(b"\0"):
                cmdline = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{p.name} {cmdline}")
        except OSError:
            continue
    return found


@pytest.fixture(autouse=True)
def nothing_left(cluster):
    """After each test: no rank, srun or slurmstepd of ours, and an empty queue (a few seconds'
    grace: steps end asynchronously). What is left is killed so the next test starts clean."""
    yield
    deadline = time.monotonic() + 10
    while True:
        procs = leftovers()
        queue = sh("squeue", "-h", "-o", "%i %j %T", timeout=10).stdout.strip()
        if (not procs and not queue) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if queue:
        sh("scancel", "--full", "--user", str(os.getuid()), timeout=10, check=False)
    for line in procs:
        try:
            os.kill(int(line.split()[0]), 9)
        except OSError:
            pass
    assert not procs and not queue, f"left behind:\nprocesses: {procs}\nsqueue: {queue}\n{logs()}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "xtc"
    sh(beamtime_bin(), "sim", "--dir", d, "--exp", "tstslm01", "--run", "1", "--events", "5000", "--steps", "5", "--streams", "2")
    return f"exp=tstslm01:run=1:dir={d}"


@pytest.fixture(scope="module")
def with_mpirun(cluster, finished, tmp_path_factory):
    """The reference: the same query on 3 ranks under the default launcher (mpirun)."""
    out = tmp_path_factory.mktemp("mpirun") / "mpirun.parquet"
    sh(beamtime_bin(), "run", "--ranks", "3", "--source", finished, "--sql", SQL, "-o", out, timeout=120)
    t = pl.read_parquet(out)
    assert t.height == 5 and t["n"].sum() == 5000, t
    return t


def jobs():
    """Slurm's jobs, finished ones included (slurmctld keeps them MinJobAge = 300 s)."""
    return set(sh("scontrol", "-o", "show", "jobs", timeout=10).stdout.splitlines()) - {"No jobs in the system"}


def test_srun_gives_the_table_mpirun_gives(finished, with_mpirun, tmp_path):
    before = jobs()
    out = tmp_path / "srun.parquet"
    sh(beamtime_bin(), "run", "--ranks", "3", "--launcher", LAUNCHER, "--source", finished, "--sql", SQL, "-o", out, timeout=120)
    new = jobs() - before
    # It really went through Slurm: one new job of the ranks, 3 tasks, completed.
    assert len(new) == 1 and "JobName=beamtime-job" in next(iter(new)), new
    assert "NumTasks=3" in next(iter(new)) and "JobState=COMPLETED" in next(iter(new)), new
    assert_frame_equal(pl.read_parquet(out), with_mpirun, check_exact=True)


def test_sbatch_gives_the_table_mpirun_gives(finished, with_mpirun, tmp_path):
    out = tmp_path / "sbatch.parquet"
    log = tmp_path / "job.out"
    script = tmp_path / "job.sh"
    cmd = shlex.join([beamtime_bin(), "run", "--ranks", "3", "--launcher", LAUNCHER, "--source", finished,
                      "--sql", SQL, "--output", str(out)])
    script.write_text(f"#!/bin/bash\n#SBATCH -n 3\n#SBATCH -t 2\n#SBATCH -J beamtime-sbatch\n#SBATCH -o {log}\nexec {cmd}\n")
    try:
        # --wait: sbatch returns when the job ends, with its exit status; -t 2 above is Slurm's own limit.
        p = sh("sbatch", "--wait", "--parsable", script, timeout=150, check=False, cwd=tmp_path)
    except subprocess.TimeoutExpired:
        sh("scancel", "--full", "--name", "beamtime-sbatch", timeout=10, check=False)
        raise
    assert p.returncode == 0, f"sbatch job failed ({p.returncode}): {p.stderr}\n{log.read_text() if log.exists() else ''}\n{logs()}"
    assert f"wrote {out}" in log.read_text(), log.read_text()
    assert_frame_equal(pl.read_parquet(out), with_mpirun, check_exact=True)
