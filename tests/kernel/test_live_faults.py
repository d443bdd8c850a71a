"""A worker of a `%%live` job killed while the run is written (issue 17), through a real Jupyter
client: within 3 s the live display or `%live status` names the lost worker (`worker rank R on
HOST lost`), the results so far stay, the next cell answers within 1 s, and `%live stop` ends
every process of the job (none left, no /dev/shm or /dev/mqueue entry left)."""
import json
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import beamtime_bin, run_cell
from kernelclient import texts
from faults import JobWatch  # tests/ (conftest puts it on the path)

HOST = socket.gethostname()
HOSTS = {HOST, HOST.split(".")[0], socket.getfqdn()}


def cell(kc, code, others, timeout=30):
    """run_cell, keeping the iopub messages of other requests (the live display's updates and
    its widget's, sent in the background) in `others`; returns (reply, own messages, seconds)."""
    t = time.monotonic()
    reply, msgs = run_cell(kc, code, timeout, others=others)
    return reply, msgs, time.monotonic() - t


def events_of(status_text, name):
    m = re.search(rf"{name}: (\d+) events", status_text)
    return int(m.group(1)) if m else 0


def start_live_job(km, kc, tmp_path, exp, ranks, events, others):
    """A run written at 2 kHz and a `%%live n` job of `ranks` ranks following it: (the writer,
    the job's JobWatch, {rank: pid}) once every rank runs."""
    writer = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(tmp_path / "xtc"), "--exp", exp, "--run", "1", "--events", str(events),
                               "--steps", "2", "--streams", "2", "--rate", "2000"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    kpid = km.provisioner.pid
    watch = JobWatch(root=kpid, marker=f"beamtime-live-{kpid}/")
    try:
        reply, msgs, _ = cell(kc, f"%source exp={exp}:run=1:dir={tmp_path / 'xtc'}:live", others)
        assert reply["status"] == "ok", texts(msgs)
        reply, msgs, _ = cell(kc, f"%%live n --ranks {ranks} --rate 10\nSELECT count(*) AS n FROM events", others, timeout=120)
        assert reply["status"] == "ok", texts(msgs)
        end = time.monotonic() + 30
        pids = watch.scan()
        while len(pids) < ranks and time.monotonic() < end:
            time.sleep(0.01)
            pids = watch.scan()
        assert len(pids) >= ranks, f"ranks {sorted(pids)} of {ranks} found"
    except BaseException:
        watch.force_cleanup()
        writer.kill()
        writer.wait(timeout=10)
        raise
    return writer, watch, pids


# role → (its rank, what names its loss, within how many seconds of the kill). A lost collector
# is said by the ranks that outlive it (their last messages, in the job's status) once they
# leave: 2.5 s of silence, then the launcher's exit.
ROLES = {
    "worker": (lambda ranks: ranks - 1, r"worker rank {r} on (\S+) lost", 3.2),
    "reader": (lambda ranks: 1, r"reader rank {r} on (\S+) lost", 3.2),
    "collector": (lambda ranks: 0, r"beamtime-job rank \d+ on (\S+): the collector \(rank {r}\) is lost", 6.0),
}


@pytest.mark.parametrize("ranks,role", [(3, "worker"), (5, "worker"), (3, "reader"), (5, "collector")])
def test_a_killed_rank_is_named_within_its_bound_and_the_kernel_answers(kernel, tmp_path, ranks, role):
    km, kc = kernel
    others = []
    writer, watch, pids = start_live_job(km, kc, tmp_path, f"tstkfault{ranks}{role[0]}", ranks, 20000, others)
    try:
        # The worker reading (events counted).
        end = time.monotonic() + 30
        s = ""
        while time.monotonic() < end and events_of(s, "n") < 500:
            _, msgs, _ = cell(kc, "%live status", others)
            s = texts(msgs)
            time.sleep(0.1)
        assert events_of(s, "n") >= 500, s
        _, msgs, _ = cell(kc, "%%sql\nSELECT n FROM n", others)
        before = int(texts(msgs).strip().splitlines()[-1].strip("│ ").split("│")[-1].strip())
        assert writer.poll() is None, "the run is no longer growing: make it longer"

        rank_of, said, bound = ROLES[role]
        victim = rank_of(ranks)
        watch.send(pids[victim], signal.SIGKILL)
        killed = time.monotonic()
        pattern = re.compile(said.format(r=victim))
        seen = status_text = None
        slowest = 0.0
        del others[:]
        while seen is None and time.monotonic() < killed + bound + 1.0:
            _, msgs, took = cell(kc, "%live status", others)
            slowest = max(slowest, took)
            status_text = texts(msgs)
            for text in [status_text] + [json.dumps(m["content"]) for m in others]:
                m = pattern.search(text)
                if m:
                    seen = (time.monotonic() - killed, m.group(1))
                    break
            time.sleep(0.1)
        assert seen, f"no `{pattern.pattern}` in %live status or the live display {bound + 1:.0f} s after the kill:\n{status_text}"
        assert seen[0] <= bound, f"the lost {role} was named only {seen[0]:.1f} s after the kill ({bound} s expected)"
        assert seen[1] in HOSTS, f"`on {seen[1]}`: not this host ({HOST})"
        assert slowest <= 1.0, f"a %live status cell took {slowest:.2f} s while the {role} was being lost"

        # The results so far stay, and the kernel answers at once.
        reply, msgs, took = cell(kc, "%%sql\nSELECT n FROM n", others)
        assert reply["status"] == "ok", texts(msgs)
        after = int(texts(msgs).strip().splitlines()[-1].strip("│ ").split("│")[-1].strip())
        assert after >= before > 0, (before, after)
        assert took <= 1.0, f"%%sql took {took:.2f} s after the {role} was lost"
        reply, msgs, took = cell(kc, "%live status", others)
        assert reply["status"] == "ok" and took <= 1.0, (took, texts(msgs))

        reply, msgs, _ = cell(kc, "%live stop", others)
        assert reply["status"] == "ok", texts(msgs)
        watch.assert_clean(within=5.0)
        assert km.is_alive()
    finally:
        watch.force_cleanup()
        writer.kill()
        writer.wait(timeout=10)


@pytest.mark.parametrize("ranks", [1, 3])
def test_a_killed_kernel_takes_its_job_along(kernel, tmp_path, ranks):
    """SIGKILL of the kernel (no shutdown, no cleanup of its own) still ends every process of its
    job: the launcher (or the one-process job) gets the kernel's death signal."""
    km, kc = kernel
    writer, watch, _ = start_live_job(km, kc, tmp_path, f"tstkdead{ranks}", ranks, 40000, [])
    try:
        assert writer.poll() is None, "the run is no longer growing: make it longer"
        os.kill(km.provisioner.pid, signal.SIGKILL)
        watch.assert_clean(within=5.0)
    finally:
        watch.force_cleanup()
        writer.kill()
        writer.wait(timeout=10)
