"""`make demo CHECK=1`: the demo notebooks executed headless (nbclient) against the simulator,
with their results checked; exits non-zero on any failure. Usage: demo_check.py BEAMTIME_BIN"""
import base64
import io
import json
import os
import pathlib
import subprocess
import sys

import nbformat
import pyarrow as pa
from nbclient import NotebookClient

ROOT = pathlib.Path(__file__).resolve().parents[1]
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
nb = run("live-ffb.ipynb", ["%live wait --timeout 600"])
if writer.wait(timeout=300) != 0:
    sys.exit("the simulator failed")
check_curve("live-ffb.ipynb", widget_tables(nb)["curve"], json.loads((ffb / "tstdemo-r0001.truth.json").read_text()))

nb = run("post-run.ipynb")
check_curve("post-run.ipynb", widget_tables(nb)["curve"], json.loads((DEMO / "offline" / "tstdemo-r0001.truth.json").read_text()))

run("kernel-tour.ipynb", path=ROOT / "notebooks")
(ROOT / "notebooks" / "summary.parquet").unlink(missing_ok=True)
print("kernel-tour.ipynb: ok")
print("demo check: every notebook ran and gave the simulated values")
