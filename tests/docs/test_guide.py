"""docs/guide.md is executable: every ```beamtime-cell block runs, in order, in ONE real beamtime
kernel (through jupyter_client), every ```sh-test block in bash; they must succeed (a block
tagged `error` must fail). The guide's runs are simulated by its own `beamtime sim` blocks into a
fresh directory that replaces /tmp/beamtime-sim. Then the results are checked against the
simulator's truth, and every magic, `%live` subcommand and option that `%help` lists must have
an executed example.

The `beamtime` binary comes from $BEAMTIME_BIN, else the cargo target dir.
"""
import csv
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "guide.md"
PLACEHOLDER = "/tmp/beamtime-sim"
CELL_TIMEOUT = 180

sys.path.insert(0, str(ROOT / "tests"))
from kernelclient import beamtime_bin, run_cell  # noqa: E402


def blocks(text):
    """(kind, expect_error, code, line) of every executable fenced block, in order."""
    out = []
    for m in re.finditer(r"^```(beamtime-cell|sh-test)([^\n]*)\n(.*?)^```[ \t]*$", text, re.M | re.S):
        line = text.count("\n", 0, m.start()) + 1
        out.append((m.group(1), "error" in m.group(2).split(), m.group(3).rstrip("\n"), line))
    return out


def text_of(msgs):
    out = []
    for m in msgs:
        c = m["content"]
        if m["msg_type"] in ("execute_result", "display_data"):
            out.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "stream":
            out.append(f"[{c['name']}] {c['text']}")
        elif m["msg_type"] == "error":
            out.append(f"{c['ename']}: {c['evalue']}")
    return "\n".join(out)


class Session:
    """The guide executed once: what each block did, and the directories it used."""

    def __init__(self):
        self.results = []  # (kind, expect_error, code, line, ok, detail)
        self.help = {}  # "%help" and "%help NAME" texts
        self.work = pathlib.Path(tempfile.mkdtemp(prefix="beamtime-guide-"))
        self.sim = self.work / "sim"


@pytest.fixture(scope="module")
def session():
    from jupyter_client.manager import start_new_kernel

    s = Session()
    data = s.work / "jupyter"
    exe = beamtime_bin()
    env = dict(os.environ)
    env["JUPYTER_DATA_DIR"] = str(data)
    env["JUPYTER_PATH"] = str(data)
    # `beamtime` and `beamtime-job` beside it, then this venv's `jupyter`.
    env["PATH"] = os.pathsep.join([os.path.dirname(exe), os.path.dirname(sys.executable), env.get("PATH", "")])
    if os.geteuid() == 0:
        # The guide's explicit mpirun launcher, as its troubleshooting section says.
        env["OMPI_ALLOW_RUN_AS_ROOT"] = "1"
        env["OMPI_ALLOW_RUN_AS_ROOT_CONFIRM"] = "1"
    os.environ["JUPYTER_DATA_DIR"] = env["JUPYTER_DATA_DIR"]
    os.environ["JUPYTER_PATH"] = env["JUPYTER_PATH"]
    subprocess.run([exe, "install", "--user"], check=True, capture_output=True, env=env)

    km, kc = start_new_kernel(kernel_name="beamtime", startup_timeout=60, cwd=str(s.work), env=env)
    background = []
    try:
        for kind, expect_error, code, line in blocks(GUIDE.read_text()):
            code = code.replace(PLACEHOLDER, str(s.sim))
            if kind == "sh-test":
                out = s.work / f"sh-{line}.out"
                with open(out, "wb") as f:
                    p = subprocess.run(["bash", "-e", "-c", code], cwd=s.work, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=300)
                ok = p.returncode == 0
                detail = f"exit {p.returncode}\n{out.read_text(errors='replace')[-3000:]}"
                if code.rstrip().endswith("&"):
                    background.append(code)
            else:
                reply, msgs = run_cell(kc, code, timeout=CELL_TIMEOUT)
                errors = [m for m in msgs if m["msg_type"] == "error"]
                stderr = [m for m in msgs if m["msg_type"] == "stream" and m["content"]["name"] == "stderr"]
                ok = reply["status"] == "ok" and not errors and not stderr
                if expect_error:
                    ok = reply["status"] == "error" and bool(errors)
                detail = f"status {reply['status']}\n{text_of(msgs)[-3000:]}"
            s.results.append((kind, expect_error, code, line, ok, detail))
        # What the checks need, from the same kernel.
        for name in ["offline", "rate", "per_step", "pump_probe", "norm", "norm_offline"]:
            reply, msgs = run_cell(kc, f"%save {name} check_{name}.csv", timeout=CELL_TIMEOUT)
            assert reply["status"] == "ok", text_of(msgs)
        reply, msgs = run_cell(kc, "%help", timeout=CELL_TIMEOUT)
        s.help[""] = text_of(msgs)
        for magic in re.findall(r"^\s+%%?(\w+)\s", s.help[""], re.M):
            reply, msgs = run_cell(kc, f"%help {magic}", timeout=CELL_TIMEOUT)
            assert reply["status"] == "ok", text_of(msgs)
            s.help[magic] = text_of(msgs)
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
    yield s
    shutil.rmtree(s.work, ignore_errors=True)


def truth(s, run):
    """The simulator's truth of a run (a run written in the background may still be going)."""
    path = s.sim / f"tstx00117-r{run:04d}.truth.json"
    end = time.time() + 60
    while not path.exists() and time.time() < end:
        time.sleep(0.2)
    return json.loads(path.read_text())


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_every_example_succeeds(session):
    assert session.results, "no executable block found in docs/guide.md"
    failed = [f"guide.md:{line} ({kind}{' error' if err else ''}):\n{code}\n--> {detail}"
              for kind, err, code, line, ok, detail in session.results if not ok]
    assert not failed, "\n\n".join(failed)


def test_live_per_step_counts_equal_the_simulated_truth(session):
    t = truth(session, 1)
    per_step = read_csv(session.work / "per_step.csv")  # saved by the guide, from run 1
    assert [int(r["step"]) for r in per_step] == [s["step"] for s in t["steps"]]
    assert [int(r["n"]) for r in per_step] == [s["events"] for s in t["steps"]]
    for r, s in zip(per_step, t["steps"]):
        assert float(r["signal"]) == pytest.approx(s["sums"]["diode.raw.signal"] / s["events"], rel=1e-9)
    # The offline %%sql over %load run: laser-on events per step.
    offline = read_csv(session.work / "check_offline.csv")
    assert [int(r["n"]) for r in offline] == [s["laser_on"] for s in t["steps"]]
    # beamtime run --ranks 3 -o steps.csv (the command-line section), the same counts.
    steps = read_csv(session.work / "steps.csv")
    assert [int(r["n"]) for r in steps] == [s["events"] for s in t["steps"]]


def test_the_event_function_gives_the_same_numbers_live_and_offline(session):
    """`normalized` (a %%function) in %%live at 3 ranks and in %%sql over the loaded run: the
    same values (exact sums), and events without a normalized value left out."""
    live = read_csv(session.work / "check_norm.csv")
    offline = read_csv(session.work / "check_norm_offline.csv")
    assert live == offline and len(live) == len(truth(session, 1)["steps"]), (live, offline)
    assert all(0 < int(r["n"]) for r in live), live


def test_the_restarted_job_read_all_of_the_live_run(session):
    t = truth(session, 2)
    assert [int(r["n"]) for r in read_csv(session.work / "check_rate.csv")] == [t["events"]]
    per_step = read_csv(session.work / "check_per_step.csv")
    assert [int(r["n"]) for r in per_step] == [s["events"] for s in t["steps"]]
    assert sum(int(r["n"]) for r in read_csv(session.work / "check_pump_probe.csv")) == sum(s["laser_on"] for s in t["steps"])


def executed_cells(session):
    return [code for kind, err, code, line, ok, detail in session.results if kind == "beamtime-cell" and not err]


def test_every_magic_in_help_has_an_executed_example(session):
    listed = re.findall(r"^\s+(%%?\w+)\s", session.help[""], re.M)
    assert "%%sql" in listed and "%help" in listed, session.help[""]
    cells = executed_cells(session)
    missing = []
    for spelled in listed:
        pattern = re.compile(rf"^{re.escape(spelled)}(\s|\?|$)", re.M)
        if spelled.startswith("%%"):
            found = any(pattern.match(c.lstrip()) for c in cells)
        else:
            found = any(pattern.search(c) for c in cells if not c.lstrip().startswith("%%"))
        if not found:
            missing.append(spelled)
    assert not missing, f"magics listed by %help without an executed example in docs/guide.md: {missing}"


def test_every_live_subcommand_and_option_has_an_executed_example(session):
    cells = executed_cells(session)
    lines = [l.strip() for c in cells for l in c.splitlines() if l.strip().startswith("%")]
    missing = []
    for magic, text in session.help.items():
        if not magic:
            continue
        usage = text.split("\n\n")[0]
        for u in usage.splitlines():
            m = re.match(r"(%%?\w+)", u)
            if not m:
                continue
            spelled = m.group(1)
            mine = [l for l in lines if re.match(rf"{re.escape(spelled)}(\s|$)", l)]
            for opt in re.findall(r"--[\w-]+", u):
                if not any(re.search(rf"(^|\s){re.escape(opt)}(\s|$)", l) for l in mine):
                    missing.append(f"{spelled} {opt}")
            if spelled == "%live":
                for sub in re.findall(r"(?:^%live|\|)\s*(\w+)", u):
                    if not any(re.match(rf"%live\s+{sub}(\s|$)", l) for l in mine):
                        missing.append(f"%live {sub}")
    assert not missing, f"in %help but not executed by docs/guide.md: {missing}"
