"""`beamtime run` across hosts, simulated on one machine (issue 17): two network namespaces bt-h1
and bt-h2 on a bridge (tests/cluster/netns-up.sh; netns-down.sh removes them) stand for two
hosts; mpirun reaches the other one through an rsh agent (tests/cluster/rsh-agent.sh:
`ip netns exec` instead of ssh) and the ranks talk over OpenMPI's TCP transport only.

The driver (`beamtime run`) runs in bt-h1; the collector (rank 0) and the reader (rank 1) run in
bt-h2, the workers in both. Nothing tells the driver where to listen: a launcher template
makes it listen on its host's address (10.231.17.1 in bt-h1), which rank 0 in bt-h2 connects
back to. The namespaces share the filesystem (like a cluster's shared file system), so data,
the job description and the output file are at the same paths on both "hosts".

- exactness: the table equals the one of `beamtime run --ranks 1`, bit for bit; the process list
  shows rank 0 and 1 in bt-h2 and the driver in bt-h1;
- a fault: a worker in bt-h1 (not the collector's host) killed mid-run of a live run: exit 4
  within ~10 s, `worker rank R on bt-h1 lost`, the events in flight at it accounted for, and no
  process of the test left in either namespace.

Skipped only when not root or where `ip netns` is not available (a container without
CAP_SYS_ADMIN). By hand: `sudo bash tests/cluster/netns-up.sh`, then the commands that
`launcher()` and `in_host()` build, then `sudo bash tests/cluster/netns-down.sh`."""
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import polars as pl
import pyarrow.parquet as pq
import pytest
from polars.testing import assert_frame_equal

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin  # noqa: E402

CLUSTER = ROOT / "tests" / "cluster"
PATH = os.environ.get("PATH", "/usr/bin:/bin") + ":/usr/sbin:/sbin"
A, B = "bt-h1", "bt-h2"  # the driver's host; the collector's host
ADDR = {A: "10.231.17.1", B: "10.231.17.2"}
SUBNET = "10.231.17.0/24"
RANKS = 5
# Ranks 0, 1, 2 on B, ranks 3, 4 on A (tests/cluster/rankfile).
PLACED = {0: B, 1: B, 2: B, 3: A, 4: A}
SQL = ("SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s, avg(diode.raw.signal) AS d, "
       "min(ipm2.raw.sum) AS lo, max(ipm2.raw.sum) AS hi FROM events GROUP BY step ORDER BY step")
FAULT_SQL = "SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s FROM events GROUP BY step ORDER BY step"


def _why_not():
    if os.geteuid() != 0:
        return "needs root (ip netns add, ip netns exec)"
    if shutil.which("ip", path=PATH) is None:
        return "no `ip` command (iproute2)"
    try:
        p = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=10, env=dict(os.environ, PATH=PATH))
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"`ip netns` is not available: {e}"
    if p.returncode != 0:
        return f"`ip netns` is not available: {p.stderr.strip()}"
    return None


WHY_NOT = _why_not()
pytestmark = pytest.mark.skipif(WHY_NOT is not None, reason=WHY_NOT or "")


def tail(text, n=3000):
    return text if len(text) <= n else "…" + text[-n:]


def env(**extra):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMIX_", "SLURM_", "BEAMTIME_LINK"))}
    e.update(PATH=PATH, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1", **extra)
    return e


def sh(*args, timeout=60, check=True, **kw):
    kw.setdefault("env", env())
    p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw)
    if check:
        assert p.returncode == 0, f"{' '.join(map(str, args))} exited {p.returncode}:\n{p.stdout}\n{tail(p.stderr)}"
    return p


def launcher():
    """The mpirun template: ranks placed by tests/cluster/rankfile (rank 0, 1, 2 on bt-h2, 3 and 4
    on bt-h1: a `--host` list would put the first ranks on mpirun's own host), daemons on the
    other host through the rsh agent, TCP only and only on the bridge's subnet; recovery on, as
    in the default template."""
    return (f"mpirun -n {{n}} --rankfile {CLUSTER / 'rankfile'} --enable-recovery --mca plm_rsh_agent {CLUSTER / 'rsh-agent.sh'} "
            f"--mca btl tcp,self --mca btl_tcp_if_include {SUBNET} --mca oob_tcp_if_include {SUBNET} {{job}}")


def in_host(ns, *argv):
    """argv run in namespace `ns` with a host name of its own (as rsh-agent.sh starts the ranks)."""
    return ["ip", "netns", "exec", ns, "unshare", "--uts", "sh", "-c", f'hostname {ns} && exec "$0" "$@"', *map(str, argv)]


def netns_of(pid):
    p = subprocess.run(["ip", "netns", "identify", str(pid)], capture_output=True, text=True, timeout=10, env=env())
    return p.stdout.strip() or None


def _stat(pid):
    try:
        rest = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return rest[0], int(rest[19])  # state, start time


def marked(mark):
    """{pid: (argv text, environ)} of live processes whose environment holds `mark`: everything
    this test started (beamtime run, mpirun, the agents, the daemons, the ranks: `ip netns exec`
    and the launcher pass the environment on), in any namespace."""
    out = {}
    needle = mark.encode()
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            environ = open(f"/proc/{d}/environ", "rb").read()
            if needle not in environ:
                continue
            argv = open(f"/proc/{d}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        st = _stat(d)
        if st and st[0] != "Z":
            out[int(d)] = (argv, environ)
    return out


def rank_of(argv, environ):
    if "beamtime-job" not in argv.split(" ", 1)[0]:
        return None
    m = re.search(rb"(?:^|\0)OMPI_COMM_WORLD_RANK=(\d+)", environ)
    return int(m.group(1)) if m else None


@pytest.fixture(scope="module")
def hosts():
    up = subprocess.run(["bash", str(CLUSTER / "netns-up.sh")], capture_output=True, text=True, timeout=60, env=env())
    try:
        if up.returncode == 77:
            pytest.skip(f"ip netns is not available here: {up.stderr.strip()}")
        assert up.returncode == 0, f"tests/cluster/netns-up.sh failed ({up.returncode}):\n{up.stdout}\n{up.stderr}"
        yield
    finally:
        down = subprocess.run(["bash", str(CLUSTER / "netns-down.sh")], capture_output=True, text=True, timeout=60, env=env())
        assert down.returncode == 0, f"tests/cluster/netns-down.sh failed:\n{down.stdout}\n{down.stderr}"


class Scratch:
    """One test's directory (short: mpirun's session dir goes under TMPDIR), its mark, and what it
    started; everything still running at the end is killed, in any namespace."""

    def __init__(self):
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="btmh-"))
        self.mark = f"BEAMTIME_MULTIHOST_TEST={uuid.uuid4().hex}"
        self.procs = []

    def env(self):
        k, v = self.mark.split("=", 1)
        return env(TMPDIR=str(self.dir), **{k: v})

    def popen(self, argv, name, marked=True, **kw):
        out, err = open(self.dir / f"{name}.stdout", "w"), open(self.dir / f"{name}.stderr", "w")
        p = subprocess.Popen([str(a) for a in argv], stdout=out, stderr=err, start_new_session=True,
                             env=self.env() if marked else env(), **kw)
        p.err_path = self.dir / f"{name}.stderr"
        self.procs.append(p)
        return p

    def left(self):
        return marked(self.mark)

    def assert_nothing_left(self, within=5.0):
        end = time.monotonic() + within
        left = self.left()
        in_ns = {ns: ns_pids(ns) for ns in (A, B)}
        while (left or any(in_ns.values())) and time.monotonic() < end:
            time.sleep(0.1)
            left = self.left()
            in_ns = {ns: ns_pids(ns) for ns in (A, B)}
        assert not left, f"processes of the test left {within} s after the end: " + "; ".join(f"{p} [{netns_of(p)}] {a[:160]}" for p, (a, _) in left.items())
        assert not any(in_ns.values()), f"processes left in the namespaces: {in_ns}"

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except OSError:
                    pass
        for pid in self.left():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        shutil.rmtree(self.dir, ignore_errors=True)


def ns_pids(ns):
    p = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True, timeout=10, env=env())
    return [int(x) for x in p.stdout.split()]


@pytest.fixture
def scratch(hosts):
    s = Scratch()
    try:
        yield s
    finally:
        s.close()


class Placement:
    """Where the job's processes ran, from the process list while `driver` runs: {rank: netns}
    of the `beamtime-job` ranks (OMPI_COMM_WORLD_RANK in /proc/PID/environ), the driver's netns,
    and {rank: pid}."""

    def __init__(self, scratch, driver):
        self.scratch, self.driver = scratch, driver
        self.ns, self.pids, self.driver_ns, self.spec = {}, {}, None, None

    def poll(self):
        for pid, (argv, environ) in self.scratch.left().items():
            r = rank_of(argv, environ)
            if r is not None and r not in self.ns:
                ns = netns_of(pid)
                if ns and pid in self.scratch.left():
                    self.ns[r], self.pids[r] = ns, pid
                    m = re.search(r"--spec-file (\S+)", argv)
                    if m and self.spec is None:
                        self.spec = m.group(1)
            if pid == self.driver.pid and self.driver_ns is None and "beamtime" in argv and " run " in f" {argv} ":
                self.driver_ns = netns_of(pid)
        return self

    def until_all(self, n, timeout=30):
        end = time.monotonic() + timeout
        while time.monotonic() < end and (len(self.ns) < n or self.driver_ns is None):
            if self.driver.poll() is not None:
                break
            self.poll()
            time.sleep(0.01)
        return self


def wait(p, timeout, what):
    try:
        return p.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"waited {timeout:.0f} s for {what}; still running. stderr so far:\n{tail(p.err_path.read_text(errors='replace'))}")


def sim(scratch, exp, events, rate=0, steps=5):
    """A simulated run in the scratch dir (finished when rate is 0, else written at `rate`
    events/s: returns once its first files exist)."""
    d = scratch.dir / "xtc"
    argv = [beamtime_bin(), "sim", "--dir", d, "--exp", exp, "--run", "1", "--events", events, "--steps", steps, "--streams", "2"]
    if not rate:
        sh(*argv, timeout=120)
        return None, d
    p = scratch.popen([*argv, "--rate", rate], "sim", marked=False)
    end = time.monotonic() + 20
    while not list((d / "smalldata").glob("*.smd.xtc2*")) and time.monotonic() < end:
        assert p.poll() is None, f"the simulator exited ({p.returncode}): {p.err_path.read_text()}"
        time.sleep(0.02)
    assert list((d / "smalldata").glob("*.smd.xtc2*")), "the simulator wrote no smd file within 20 s"
    return p, d


def one_rank(scratch, source, sql, name):
    out = scratch.dir / f"{name}.parquet"
    sh(beamtime_bin(), "run", "--ranks", "1", "--source", source, "--sql", sql, "-o", out, timeout=120)
    return pl.read_parquet(out)


def unreachable_hint(err):
    """What to say when the driver never heard from rank 0 (the endpoint's address)."""
    if re.search(r"127\.0\.0\.1|loopback|connect", err):
        return ("\nrank 0 (in bt-h2) could not reach the driver's endpoint: it must listen on bt-h1's address "
                f"({ADDR[A]}), not loopback, for a launcher template (contract/src/endpoint.rs link_address; "
                "cli/src/run.rs start: `remote`)")
    return ""


# Why the fault test was slow when mpirun outlived its ranks (found by this test, fixed: ranks
# linked to a driver now end 0). Said again if it comes back.
MPIRUN_WAITS = """
mpirun did not exit after every rank had ended, and beamtime run waited EXIT_PATIENCE (8 s,
cli/src/run.rs:17, wait_or_stop at :223) before stopping it. The cause: the collector (rank 0)
exits with the outcome's code (job/src/bin/beamtime-job.rs:70, `ExitCode::from(c.outcome().exit_code())`,
4 here), and OpenMPI 4.1's mpirun with --enable-recovery never exits when a rank under a *remote*
daemon (orted on another host) exits non-zero: on one host it exits at once. Reproduced without
beamtime: 4 ranks over bt-h1/bt-h2, rank 0 (on bt-h2) returns 4 after MPI_Finalize, nothing killed
-> mpirun hangs; the same with every rank returning 0 (a rank SIGKILLed or not) -> mpirun exits.
So every non-zero outcome (3 source error, 4 rank lost, 5 stopped) of a job whose rank 0 is not on
mpirun's host costs 8 + 2 s. A fix (not made here): under a launcher, end rank 0 with status 0
(the outcome reaches the driver over ZeroMQ anyway), or stop the launcher at once once the job's
last message has arrived."""


def test_ranks_on_two_hosts_give_the_one_rank_table_exactly(scratch):
    _, d = sim(scratch, "tstmh01", 20000)
    source = f"exp=tstmh01:run=1:dir={d}"
    expect = one_rank(scratch, source, SQL, "one")
    assert expect.height == 5 and expect["n"].sum() == 20000, expect

    out = scratch.dir / "hosts.parquet"
    # Each fake host gets an empty /tmp of its own (a cluster node's local /tmp): the job's
    # description must reach the ranks without a shared temporary directory.
    node_tmp = scratch.dir / "tmp"
    node_tmp.mkdir(exist_ok=True)
    driver = scratch.popen(in_host(A, "env", "BT_NODE_LOCAL_TMP=1", f"TMPDIR={node_tmp}", beamtime_bin(), "run", "--ranks", RANKS, "--launcher", launcher(),
                                   "--source", source, "--sql", SQL, "-o", out), "hosts")
    where = Placement(scratch, driver).until_all(RANKS)
    code = wait(driver, 120, "beamtime run across bt-h1 and bt-h2")
    err = driver.err_path.read_text(errors="replace")
    assert code == 0, f"beamtime run across hosts exited {code}:\n{tail(err)}{unreachable_hint(err)}"

    # Where everything ran, from the process list.
    assert where.driver_ns == A, f"beamtime run ran in namespace {where.driver_ns}, not {A}"
    assert where.ns == PLACED, f"ranks in namespaces {where.ns}, expected {PLACED} (rank 0 = collector and rank 1 = reader in {B})"
    # The driver listened on its host's bridge address, which rank 0 reached from the other host.
    spec = pathlib.Path(where.spec).read_text() if where.spec and pathlib.Path(where.spec).exists() else None
    if spec is not None:
        assert f'"tcp://{ADDR[A]}:' in spec, f"the job's endpoint is not bt-h1's address {ADDR[A]}:\n{spec}"

    got = pl.read_parquet(out)
    assert_frame_equal(got, expect, check_exact=True)
    scratch.assert_nothing_left()


def test_a_worker_killed_on_the_other_host_than_the_collector_is_exit_4_naming_its_host(scratch):
    events = 6000
    writer, d = sim(scratch, "tstmh02", events, rate=1500, steps=2)
    out = scratch.dir / "out.parquet"
    driver = scratch.popen(in_host(A, beamtime_bin(), "run", "--ranks", RANKS, "--launcher", launcher(),
                                   "--source", f"exp=tstmh02:run=1:dir={d}:live", "--sql", FAULT_SQL,
                                   "--batch-events", "256", "-o", out), "fault")
    where = Placement(scratch, driver).until_all(RANKS)
    assert driver.poll() is None, f"beamtime run exited ({driver.returncode}) early:\n{tail(driver.err_path.read_text())}"
    assert where.ns == PLACED, f"ranks in namespaces {where.ns}, expected {PLACED}"
    victim = max(r for r, ns in where.ns.items() if ns == A and r >= 2)
    assert where.ns[victim] != where.ns[0]
    time.sleep(1.5)
    pid = where.pids[victim]
    assert pid in scratch.left(), f"worker rank {victim} (pid {pid}) ended before it could be killed:\n{tail(driver.err_path.read_text())}"
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    code = wait(driver, 30, "beamtime run to exit after a worker on the other host was killed")
    took = time.monotonic() - killed
    err = driver.err_path.read_text(errors="replace")
    assert code == 4, f"exit {code} (4 = rank lost expected):\n{tail(err)}"
    m = re.search(rf"worker rank {victim} on (\S+) lost", err)
    assert m, f"no `worker rank {victim} on {A} lost`:\n{tail(err)}"
    assert m.group(1) == A, f"the lost worker's host is named {m.group(1)!r}, it ran on {A}:\n{tail(err)}"
    scratch.assert_nothing_left()

    # The result lacks exactly the events that were in flight at the lost worker.
    assert wait(writer, 60, "the simulator") == 0
    in_flight = sum(int(x) for x in re.findall(r"incomplete:[^\n]*?(\d+) events", err))
    got = pq.read_table(out).to_pydict()
    assert 0 < sum(got["n"]) and sum(got["n"]) + in_flight == events, f"{sum(got['n'])} events + {in_flight} in flight != {events}:\n{tail(err)}"

    # In time: 2.5 s to call the worker lost, then the end of the run; not a launcher left waiting.
    assert took <= 10.0, f"exited {took:.1f} s after worker rank {victim} was killed (~10 s at most expected)" + (
        MPIRUN_WAITS if "the job did not exit within" in err else "") + f"\n{tail(err)}"
