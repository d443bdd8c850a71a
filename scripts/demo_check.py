"""`make demo CHECK=1`: the demo notebooks executed headless (nbclient) against the simulator,
with their results checked; exits non-zero on any failure. Usage: demo_check.py BEAMTIME_BIN"""
import atexit
import base64
import io
import json
import os
import pathlib
import re
import subprocess
import sys
import time

import nbformat
import pyarrow as pa
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
# Simulators started here; stopped (SIGTERM: a server removes its queues) whatever happens,
# since a server waits for its clients forever.
started = []
atexit.register(lambda: [p.terminate() for p in started if p.poll() is None])
BIN = sys.argv[1]
DEMO = pathlib.Path(os.environ["BEAMTIME_DEMO_DIR"])


def run(name, extra=(), path=DEMO):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    nb.cells.extend(nbformat.v4.new_code_cell(c) for c in extra)
    NotebookClient(nb, kernel_name="beamtime", timeout=900, store_widget_state=True,
                   resources={"metadata": {"path": str(path)}}).execute()
    errors = [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    if errors:
        sys.exit(f"{name}: {errors[0]['ename']}: {errors[0]['evalue']}")
    return nb


def widget_tables(nb):
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    return {st["state"]["title"]: pa.ipc.open_stream(io.BytesIO(base64.b64decode(st["buffers"][0]["data"]))).read_all()
            for st in states.values()}


def time_zero(d, y):
    half = (y[0] + y[-1]) / 2
    k = next(i for i in range(1, len(y)) if (y[i] >= half) == (y[-1] > y[0]))
    return d[k - 1] + (half - y[k - 1]) * (d[k] - d[k - 1]) / (y[k] - y[k - 1])


def check_curve(name, table, truth):
    c = table.to_pydict()
    t0 = time_zero(c["delay_ps"], c["signal"])
    spacing = abs(c["delay_ps"][1] - c["delay_ps"][0])
    ok = abs(t0 - truth["model"]["t0_ps"]) < spacing
    print(f"{name}: {sum(c['n'])} laser-on shots, time zero {t0:.3f} ps (simulated {truth['model']['t0_ps']} ps): {'ok' if ok else 'WRONG'}")
    if not ok:
        sys.exit(1)


# The live notebook follows a run while the simulator writes it.
ffb = DEMO / "ffb"
writer = subprocess.Popen([BIN, "sim", "--dir", str(ffb), "--exp", "tstdemo", "--run", "1", "--events", "60000",
                           "--steps", "10", "--streams", "2", "--rate", "5000", "--seed", "7"], stdout=subprocess.DEVNULL)
started.append(writer)
nb = run("live-ffb.ipynb", ["%live wait --timeout 600"])
if writer.wait(timeout=300) != 0:
    sys.exit("the simulator failed")
check_curve("live-ffb.ipynb", widget_tables(nb)["curve"], json.loads((ffb / "tstdemo-r0001.truth.json").read_text()))

nb = run("post-run.ipynb")
check_curve("post-run.ipynb", widget_tables(nb)["curve"], json.loads((DEMO / "offline" / "tstdemo-r0001.truth.json").read_text()))

# The shared-memory notebook reads the simulated monitor (2 client queues for its 2 workers);
# the job is open-ended (stop=no): stopped once the served run is over.
tag = f"beamtime_check_{os.getpid()}"
os.environ["BEAMTIME_DEMO_SHMEM"] = tag
server = subprocess.Popen([BIN, "sim", "--shmem", tag, "--clients", "2", "--events", "40000", "--steps", "10",
                           "--streams", "2", "--rate", "4000", "--seed", "5"], stdout=subprocess.DEVNULL)
started.append(server)
nb = nbformat.read(ROOT / "notebooks" / "live-shmem.ipynb", as_version=4)
client = NotebookClient(nb, kernel_name="beamtime", timeout=600, resources={"metadata": {"path": str(DEMO)}})
with client.setup_kernel():
    for i, cell in enumerate(list(nb.cells)):
        client.execute_cell(cell, i)
    if server.wait(timeout=300) != 0:
        sys.exit("the shared-memory simulator failed")
    for code in ["%live stop", "%live wait --timeout 60", "%live status"]:
        nb.cells.append(nbformat.v4.new_code_cell(code))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
status = "\n".join(o.get("text", "") or o.get("data", {}).get("text/plain", "") for o in nb.cells[-1].outputs)
m = re.search(r"shm_curve: (\d+) events .*?(\d+) dropped", status)
if not m or abs(int(m.group(1)) + int(m.group(2)) - 40000) > 200:
    sys.exit(f"live-shmem.ipynb: delivered + dropped should be the 40000 events served:\n{status}")
print(f"live-shmem.ipynb: {m.group(1)} events delivered, {m.group(2)} dropped: ok")

# The area-detector notebook follows a simulated Jungfrau run (seed 7: the notebook's ROI is on a
# stretch of the ring without Bragg spots) while it is written; queries joining the running job
# count events from then on, so once they all run the job is restarted over the whole run, and
# the snapshot cells (%%sql over live results, the Rust cell finding time zero) run again on
# the final results.
jf = DEMO / "jungfrau"
writer = subprocess.Popen([BIN, "sim", "--dir", str(jf), "--exp", "tstdemo", "--run", "1", "--events", "440", "--steps", "11",
                           "--streams", "1", "--jungfrau", "1", "--jungfrau-every", "1", "--rate", "200", "--seed", "7"],
                          stdout=subprocess.DEVNULL)
started.append(writer)
while not (jf / "smalldata").is_dir() and writer.poll() is None:
    time.sleep(0.2)
nb = nbformat.read(ROOT / "notebooks" / "live-detector.ipynb", as_version=4)
client = NotebookClient(nb, kernel_name="beamtime", timeout=900, resources={"metadata": {"path": str(DEMO)}})
snapshots = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and c.source.startswith(("%%sql", "let "))]
with client.setup_kernel():
    for i, cell in enumerate(list(nb.cells)):
        client.execute_cell(cell, i)
    for code in ["%live restart", "%live wait --timeout 600"]:
        nb.cells.append(nbformat.v4.new_code_cell(code))
        client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    for i in snapshots:
        client.execute_cell(nb.cells[i], i)
if writer.wait(timeout=300) != 0:
    sys.exit("the Jungfrau simulator failed")
truth = json.loads((jf / "tstdemo-r0001.truth.json").read_text())
out = "\n".join(o.get("text", "") for o in nb.cells[snapshots[-1]].outputs)
m = re.search(r"time zero ≈ (-?[\d.]+) ps", out)
spacing = truth["jungfrau"]["steps"][1]["delay_ps"] - truth["jungfrau"]["steps"][0]["delay_ps"]
if not m or abs(float(m.group(1)) - truth["model"]["t0_ps"]) >= spacing:
    sys.exit(f"live-detector.ipynb: time zero should be {truth['model']['t0_ps']} ps within {spacing} ps:\n{out}")
print(f"live-detector.ipynb: time zero {m.group(1)} ps from the Jungfrau's ring (simulated {truth['model']['t0_ps']} ps): ok")

run("kernel-tour.ipynb", path=ROOT / "notebooks")
(ROOT / "notebooks" / "summary.parquet").unlink(missing_ok=True)
print("kernel-tour.ipynb: ok")
print("demo check: every notebook ran and gave the simulated values")
