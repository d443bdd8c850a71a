"""What the fault tests share (tests/cli/test_faults.py, tests/kernel/test_faults.py): a job's
processes found in /proc (the `beamtime-job` ranks by their `OMPI_COMM_WORLD_RANK`, and the
launcher), signals sent to them by pid, and the checks that a job left no process, no
shared-memory segment and no message queue behind.

A job's processes are those that descend from its driver (`beamtime run` or the kernel) or
whose command line or environment holds a marker of their own (the temp dir the job
description was written into, the test's TMPDIR), so that jobs of other tests running on the machine are never counted or signalled."""
import os
import re
import signal
import time

LAUNCHERS = (b"mpirun", b"mpiexec", b"orterun", b"orted", b"prted", b"prterun")


def _stat(pid):
    """(ppid, state, starttime) of a process, or None when it is gone."""
    try:
        s = open(f"/proc/{pid}/stat").read()
    except OSError:
        return None
    rest = s.rsplit(")", 1)[1].split()
    return int(rest[1]), rest[0], int(rest[19])


def _argv(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
    except OSError:
        return []


def _environ(pid):
    try:
        return open(f"/proc/{pid}/environ", "rb").read()
    except OSError:
        return b""


def _pids():
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _kind(argv):
    """'job' for beamtime-job, 'launcher' for mpirun & co., else None."""
    if not argv or not argv[0]:
        return None
    name = os.path.basename(argv[0])
    if name == b"beamtime-job":
        return "job"
    if name in LAUNCHERS:
        return "launcher"
    return None


def descendants(root):
    """Pids of every live process below `root`."""
    children = {}
    for pid in _pids():
        st = _stat(pid)
        if st:
            children.setdefault(st[0], []).append(pid)
    out, todo = set(), [root]
    while todo:
        for c in children.get(todo.pop(), []):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def shm_entries():
    """Names in /dev/shm and /dev/mqueue (prefixed shm: and mq:)."""
    out = set()
    for d, tag in (("/dev/shm", "shm"), ("/dev/mqueue", "mq")):
        try:
            out |= {f"{tag}:{n}" for n in os.listdir(d)}
        except OSError:
            pass
    return out


def _foreign(name, hexes):
    """An entry that belongs to another test's job or program, not to ours: another MPI job's
    vader segment (`vader_segment.<host>.<uid>.<jobid>.<rank>`), the shared-memory monitor
    protocol's segments and queues (only `beamtime sim --shmem` servers make them; the fault
    tests read files), a browser's."""
    base = name.split(":", 1)[1]
    if base.startswith("vader_segment."):
        parts = base.rsplit(".", 2)
        return len(parts) == 3 and parts[1] not in hexes
    return base.startswith("Pds") or base.startswith(".org.chromium") or base.startswith("sem.org.chromium")


class JobWatch:
    """The processes of one job, remembered as they are seen so that the leftover check
    knows them even after their parents are gone."""

    def __init__(self, root=None, marker=None):
        self.root = root
        self.marker = marker.encode() if isinstance(marker, str) else marker
        self.seen = {}  # pid -> (starttime, kind, argv text)
        self.jobids = set()
        self.shm_before = shm_entries()

    def _ours(self, pid, argv, below):
        kind = _kind(argv)
        if kind is None:
            return None
        # The marker on the command line, or in the environment (TMPDIR): launchers pass the
        # job description inline, so the ranks' command lines may not name the temp dir.
        if pid in below or (self.marker and (any(self.marker in a for a in argv) or self.marker in _environ(pid))):
            return kind
        return None

    def scan(self):
        """{rank: pid} of the job's live `beamtime-job` ranks (`--in-process` is rank 0);
        every job or launcher process seen is remembered."""
        below = descendants(self.root) if self.root else set()
        ranks = {}
        for pid in (below if not self.marker else _pids()):
            argv = _argv(pid)
            kind = self._ours(pid, argv, below)
            st = _stat(pid)
            if kind is None or st is None or st[1] == "Z":
                continue
            self.seen.setdefault(pid, (st[2], kind, b" ".join(argv).decode(errors="replace")[:300]))
            if kind != "job":
                continue
            env = _environ(pid)
            m = re.search(rb"(?:^|\0)OMPI_COMM_WORLD_RANK=(\d+)", env)
            j = re.search(rb"(?:^|\0)OMPI_MCA_ess_base_jobid=(\d+)", env)
            if j:
                self.jobids.add(int(j.group(1)))
            if m:
                ranks[int(m.group(1))] = pid
            elif b"--in-process" in argv:
                ranks[0] = pid
        return ranks

    def alive(self):
        """[(pid, argv text)] of the job's processes still running (zombies are not)."""
        self.scan()
        out = []
        for pid, (start, _, text) in self.seen.items():
            st = _stat(pid)
            if st and st[2] == start and st[1] != "Z":
                out.append((pid, text))
        return out

    def send(self, rank_pid, sig):
        """Sends `sig` to a rank seen by this watch (only if the pid is still that process)."""
        start = self.seen.get(rank_pid, (None,))[0]
        st = _stat(rank_pid)
        assert st and st[2] == start and st[1] != "Z", f"pid {rank_pid} is no longer the job's rank"
        os.kill(rank_pid, sig)

    def assert_no_process_left(self, within=5.0):
        end = time.monotonic() + within
        left = self.alive()
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = self.alive()
        assert not left, f"job processes left {within} s after the end: " + "; ".join(f"{p} {t}" for p, t in left)

    def new_shm(self):
        hexes = {f"{j:x}" for j in self.jobids}
        return sorted(n for n in shm_entries() - self.shm_before if not _foreign(n, hexes))

    def assert_no_shm_left(self, within=5.0):
        end = time.monotonic() + within
        left = self.new_shm()
        while left and time.monotonic() < end:
            time.sleep(0.1)
            left = self.new_shm()
        assert not left, f"new /dev/shm or /dev/mqueue entries left behind (job ids {sorted(f'{j:x}' for j in self.jobids)}): {left}"

    def assert_clean(self, within=5.0):
        self.assert_no_process_left(within)
        self.assert_no_shm_left(1.0)

    def force_cleanup(self):
        """Continues and kills whatever of the job is still running (after a failed test)."""
        for pid, _ in self.alive():
            for sig in (signal.SIGCONT, signal.SIGKILL):
                try:
                    os.kill(pid, sig)
                except OSError:
                    pass
        # Segments the job (only ours, by job id) left: removed so that they do not pile up.
        hexes = {f"{j:x}" for j in self.jobids}
        for n in shm_entries() - self.shm_before:
            base = n.split(":", 1)[1]
            if n.startswith("shm:vader_segment.") and base.rsplit(".", 2)[1] in hexes:
                try:
                    os.unlink(f"/dev/shm/{base}")
                except OSError:
                    pass


def running(pid):
    """The process exists and is not a zombie."""
    st = _stat(pid)
    return bool(st) and st[1] != "Z"
