"""The example notebooks, executed headless with nbclient; outputs checked for real values."""
import nbformat
from nbclient import NotebookClient

from conftest import ROOT


def execute(name):
    nb = nbformat.read(ROOT / "notebooks" / name, as_version=4)
    # Run in the notebooks folder, as a user would: the sample paths are relative to it.
    client = NotebookClient(nb, kernel_name="beamtime", timeout=600, resources={"metadata": {"path": str(ROOT / "notebooks")}})
    client.execute()
    return nb


def text_of(cell):
    out = []
    for o in cell.get("outputs", []):
        if o["output_type"] == "stream":
            out.append(o["text"])
        elif "data" in o:
            out.append(o["data"].get("text/plain", ""))
    return "\n".join(out)


def test_kernel_tour():
    nb = execute("kernel-tour.ipynb")
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    assert "%%sql" in text_of(cells[0])
    assert "shape: (100," in text_of(cells[1])
    summary = text_of(cells[3]).strip().splitlines()[-1]
    assert [v.strip() for v in summary.split("│")][:2] == ["100", "10"], summary
    assert "summary" in text_of(cells[4]) and "events" in text_of(cells[4])
    assert "saved summary (1 rows)" in text_of(cells[5])
    assert text_of(cells[6]).strip().splitlines()[-1].split("│")[0].strip() == "100"
    rust = text_of(cells[7])
    assert "scan delays: [-2.0, -0.75, 0.5, 1.75, 3.0]" in rust and rust.strip().endswith("5")
    (ROOT / "notebooks" / "summary.parquet").unlink(missing_ok=True)


def test_live_ffb_follows_a_run_being_written_and_recovers_the_pump_probe_step(tmp_path, monkeypatch):
    """notebooks/live-ffb.ipynb against the simulator writing a run live (the job under mpirun
    where it exists): every cell runs, the widgets' saved state holds the final Arrow results,
    and the pump-probe curve's time zero comes back from the live result."""
    import base64
    import io
    import json
    import subprocess

    import pyarrow as pa

    from conftest import beamtime_bin

    monkeypatch.setenv("BEAMTIME_DEMO_DIR", str(tmp_path))
    writer = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(tmp_path / "ffb"), "--exp", "tstdemo", "--run", "1",
                               "--events", "30000", "--steps", "10", "--streams", "2", "--rate", "5000", "--seed", "7"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    nb = nbformat.read(ROOT / "notebooks" / "live-ffb.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell("%live wait --timeout 300"))
    NotebookClient(nb, kernel_name="beamtime", timeout=600, store_widget_state=True,
                   resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    truth = json.loads((tmp_path / "ffb" / "tstdemo-r0001.truth.json").read_text())
    assert "30000 events" in text_of(cells[-1]) and "done" in text_of(cells[-1])

    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    final = {}
    for st in states.values():
        [buf] = st["buffers"]
        final[st["state"]["title"]] = pa.ipc.open_stream(io.BytesIO(base64.b64decode(buf["data"]))).read_all()
    assert set(final) == {"curve", "i0", "bright", "shots"}
    curve = final["curve"].to_pydict()
    assert curve["step"] == list(range(10))
    # Laser-on shots with x-rays (about 1 % are dropped and left out).
    assert all(0.95 * s["laser_on"] <= n <= s["laser_on"] for n, s in zip(curve["n"], truth["steps"])), curve["n"]
    assert [round(d, 9) for d in curve["delay_ps"]] == [round(s["delay_ps"], 9) for s in truth["steps"]]
    # Time zero: where the normalised signal crosses halfway between its first and last steps.
    d, y = curve["delay_ps"], curve["signal"]
    half = (y[0] + y[-1]) / 2
    up = y[-1] > y[0]
    k = next(i for i in range(1, 10) if (y[i] >= half) == up)
    t0 = d[k - 1] + (half - y[k - 1]) * (d[k] - d[k - 1]) / (y[k] - y[k - 1])
    spacing = abs(d[1] - d[0])
    assert abs(t0 - truth["model"]["t0_ps"]) < spacing, (t0, truth["model"]["t0_ps"], spacing)
    assert sum(final["i0"].column("n").to_pylist()) <= 30000
    assert final["bright"].num_rows > 0 and min(final["bright"].column("i0").to_pylist()) > 3.0
    # The strip chart's window: the last 2 s of event time (in 16 bins) at 5 kHz, newest last.
    shots = final["shots"].column("time").cast(pa.int64()).to_pylist()
    assert 8000 < len(shots) <= 10_000 and shots == sorted(shots)
    assert shots[-1] - shots[0] <= 2_000_000_000


def test_post_run_gives_the_live_numbers_offline_and_a_rust_cell_finds_time_zero(tmp_path, monkeypatch):
    """notebooks/post-run.ipynb on a finished simulated run: the %%live result equals the same
    SQL over the loaded table (live ≡ offline), the curve is saved to Parquet, and the Rust cell's
    time zero is the simulator's within a step."""
    import json
    import re
    import subprocess

    import pyarrow.parquet as pq

    from conftest import beamtime_bin

    monkeypatch.setenv("BEAMTIME_DEMO_DIR", str(tmp_path))
    subprocess.run([beamtime_bin(), "sim", "--dir", str(tmp_path / "offline"), "--exp", "tstdemo", "--run", "1",
                    "--events", "60000", "--steps", "10", "--streams", "2", "--seed", "3"], check=True, capture_output=True)
    nb = nbformat.read(ROOT / "notebooks" / "post-run.ipynb", as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(
        "%%sql\nSELECT max(abs(a.signal - b.signal) / abs(b.signal)) AS rel, sum(CASE WHEN a.n = b.n THEN 0 ELSE 1 END) AS bad, "
        "count(*) AS steps FROM curve a JOIN curve_offline b ON a.step = b.step"))
    NotebookClient(nb, kernel_name="beamtime", timeout=900, resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    rel, bad, steps = [v.strip() for v in text_of(cells[-1]).strip().splitlines()[-1].strip("│ ").split("│")]
    assert float(rel) < 1e-12 and bad == "0" and steps == "10", text_of(cells[-1])
    saved = pq.read_table(tmp_path / "curve.parquet")
    truth = json.loads((tmp_path / "offline" / "tstdemo-r0001.truth.json").read_text())
    assert all(0.95 * s["laser_on"] <= n <= s["laser_on"] for n, s in zip(saved.column("n").to_pylist(), truth["steps"]))
    t0 = float(re.search(r"time zero ≈ (-?[\d.]+) ps", text_of(cells[-2])).group(1))
    d = saved.column("delay_ps").to_pylist()
    assert abs(t0 - truth["model"]["t0_ps"]) < abs(d[1] - d[0]), (t0, truth["model"]["t0_ps"])


def test_live_shmem_reads_the_monitor_and_counts_what_it_misses(tmp_path, monkeypatch):
    """notebooks/live-shmem.ipynb against `beamtime sim --shmem` (2 client queues, the job's 2
    worker ranks under mpirun as clients, stop=no): the job keeps going after the run until
    stopped, and delivered + dropped = what the DAQ took."""
    import json
    import os
    import subprocess

    from conftest import beamtime_bin

    tag = f"bt_nb_{os.getpid()}"
    monkeypatch.setenv("BEAMTIME_DEMO_DIR", str(tmp_path))
    monkeypatch.setenv("BEAMTIME_DEMO_SHMEM", tag)
    server = subprocess.Popen([beamtime_bin(), "sim", "--shmem", tag, "--clients", "2", "--buffers", "8", "--events", "40000",
                               "--steps", "10", "--streams", "2", "--rate", "4000", "--seed", "5", "--dir", str(tmp_path / "truth")],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    nb = nbformat.read(ROOT / "notebooks" / "live-shmem.ipynb", as_version=4)
    # Headless: once the served run is over, stop the open-ended job and take its final results.
    client = NotebookClient(nb, kernel_name="beamtime", timeout=600, store_widget_state=True, resources={"metadata": {"path": str(tmp_path)}})
    with client.setup_kernel():
        for i, cell in enumerate(list(nb.cells)):
            client.execute_cell(cell, i)
        out, err = server.communicate(timeout=120)
        assert server.returncode == 0, err
        for code in ["%live stop", "%live wait --timeout 60", "%live status"]:
            nb.cells.append(nbformat.v4.new_code_cell(code))
            client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    status = text_of(cells[-1])
    import re
    m = re.search(r"shm_curve: (\d+) events .*?(\d+) dropped", status)
    assert m, status
    delivered, dropped = int(m.group(1)), int(m.group(2))
    assert delivered > 0 and abs(delivered + dropped - 40000) <= 200, status
