"""`beamtime sim --shmem` and `beamtime dump shmem=…` over the real shared-memory objects: the
dump client sees every event and transition of the simulated run, a replayed file dumps as
the file does, and a Ctrl-C'd server leaves no message queue behind."""
import os
import pathlib
import re
import signal
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin  # noqa: E402
SHARED = ROOT.parent / "shared" / "data" / "xtc2"


def queues(tag):
    if not os.path.ismount("/dev/mqueue"):
        return None
    return sorted(n for n in os.listdir("/dev/mqueue") if n.endswith("_" + tag) or ("_" + tag + "_") in n)


@pytest.fixture
def tag(request):
    t = f"bt_cli_{os.getpid()}_{request.node.name[:20]}"
    yield t
    left = queues(t)
    for n in left or []:
        os.unlink(f"/dev/mqueue/{n}")
    segment = f"/dev/shm/PdsMonitorSharedMemory_{t}"
    segment_left = os.path.exists(segment)
    if segment_left:
        os.unlink(segment)
    if left is None:
        print("note: /dev/mqueue is not mounted: queue leak check skipped")
    assert not left, f"queues left behind: {left}"
    assert not segment_left, f"{segment} left behind (the simulator removes its segment on exit)"


def serve(*args):
    return subprocess.Popen([beamtime_bin(), "sim", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def dump(source, *args, timeout=120):
    p = subprocess.run([beamtime_bin(), "dump", source, *args], capture_output=True, text=True, timeout=timeout)
    assert p.returncode == 0, p.stderr
    return p


def test_dump_receives_the_whole_simulated_run(tag):
    server = serve("--shmem", tag, "--events", "3000", "--steps", "3", "--streams", "3")
    try:
        d = dump(f"shmem={tag}.0:stop=endrun")
    finally:
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    lines = d.stdout.splitlines()
    kinds = [l.split()[1] for l in lines if l.startswith("@")]
    assert kinds.count("L1Accept") == 3000
    assert [k for k in kinds if k != "L1Accept" and k != "SlowUpdate"] == (
        ["Configure", "BeginRun"] + ["BeginStep", "Enable", "Disable", "EndStep"] * 3 + ["EndRun"])
    # Event-built: the first event's datagram holds every stream's detectors (s002 records
    # every 10th event, the first included).
    first = lines.index(next(l for l in lines if " L1Accept " in l))
    after = next(i for i in range(first + 1, len(lines)) if lines[i].startswith("@"))
    dets = {l.split("[")[0].strip() for l in lines[first + 1:after]}
    assert {"diode", "hsd", "fim"} <= dets, dets
    m = re.search(r"(\d+) events and (\d+) transitions received .*about (\d+) events not seen.*, (\d+) older than a Disable", lines[-1])
    assert m, lines[-1]
    assert (int(m[1]), int(m[2]), int(m[3]), int(m[4])) == (3000, len(kinds) - 3000, 0, 0)
    assert "3000 published" in out and "3000 queued" in out and "0 stolen" in out
    assert "0 dropped (no free buffer), 0 dropped (queues full)" in out


def test_a_replayed_file_dumps_as_the_file(tag):
    f = SHARED / "dgramedit-test.xtc2"
    if not f.exists():
        pytest.skip(f"{f} is missing")
    server = serve("--shmem", tag, "--replay", str(f))
    try:
        d = dump(f"shmem://{tag}?stop=endrun")
    finally:
        server.communicate(timeout=60)
    assert server.returncode == 0
    direct = dump(str(f))
    assert d.stdout.splitlines()[:-1] == direct.stdout.splitlines()
    assert d.stdout.splitlines()[-1].startswith(f"shmem '{tag}': 10 events and 7 transitions received")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupted_server_removes_its_queues(tag, sig):
    server = serve("--shmem", tag, "--clients", "2", "--events", "100000", "--rate", "1000")
    line = server.stdout.readline()
    assert line.startswith("beamtime sim: serving"), line
    if queues(tag) is not None:
        assert len(queues(tag)) == 4, queues(tag)
    server.send_signal(sig)
    server.communicate(timeout=30)
    assert server.returncode == -sig
    # The fixture checks that no queue of the tag is left.


def test_too_many_buffers_for_the_queue_limit_say_what_to_do(tag):
    limit = int(pathlib.Path("/proc/sys/fs/mqueue/msg_max").read_text())
    if os.geteuid() == 0:
        pytest.skip("root may exceed fs.mqueue.msg_max")
    p = subprocess.run([beamtime_bin(), "sim", "--shmem", tag, "--buffers", str(limit + 1)], capture_output=True, text=True, timeout=30)
    assert p.returncode != 0
    assert f"sysctl fs.mqueue.msg_max={limit + 1}" in p.stderr, p.stderr


def test_beamtime_run_on_shared_memory_under_mpirun_equals_the_file_result(tag, tmp_path):
    """`beamtime sim --shmem` (2 client queues, the feeder waits for its clients) and `beamtime
    run --source shmem=TAG.0:stop=endrun --ranks 3` (2 worker ranks, each a client): the result
    equals the same simulated run read from files."""
    import pyarrow.parquet as pq

    sql = "SELECT step, count(*) AS n, sum(ipm2.raw.sum) AS s FROM events GROUP BY step ORDER BY step"
    sim_args = ["--events", "5000", "--steps", "5", "--streams", "2", "--seed", "9"]
    subprocess.run([beamtime_bin(), "sim", "--dir", str(tmp_path / "files"), "--exp", "tstshm", "--run", "1", *sim_args],
                   check=True, capture_output=True)
    subprocess.run([beamtime_bin(), "run", "--source", f"exp=tstshm:run=1:dir={tmp_path / 'files'}", "--sql", sql,
                    "--ranks", "1", "-o", str(tmp_path / "files.parquet")], check=True, capture_output=True)
    server = subprocess.Popen([beamtime_bin(), "sim", "--shmem", tag, "--clients", "2", *sim_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    job = subprocess.run([beamtime_bin(), "run", "--source", f"shmem={tag}.0:stop=endrun", "--sql", sql, "--ranks", "3",
                          "-o", str(tmp_path / "shmem.parquet")], capture_output=True, text=True, timeout=180, env=env)
    out, err = server.communicate(timeout=60)
    assert job.returncode == 0, job.stderr
    assert server.returncode == 0, err
    files = pq.read_table(tmp_path / "files.parquet").to_pydict()
    shm = pq.read_table(tmp_path / "shmem.parquet").to_pydict()
    assert shm["step"] == files["step"] == [0, 1, 2, 3, 4]
    assert shm["n"] == files["n"] and sum(shm["n"]) == 5000
    assert all(abs(a - b) <= 1e-12 * abs(b) for a, b in zip(shm["s"], files["s"]))
