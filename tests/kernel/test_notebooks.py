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
    # The event function's curve, live and over the loaded table: the same numbers.
    nb.cells.insert(-1, nbformat.v4.new_code_cell(
        "%%sql\nSELECT sum(CASE WHEN a.signal = b.signal AND a.n = b.n AND a.n > 0 THEN 0 ELSE 1 END) AS bad, count(*) AS steps "
        "FROM curve_fn a JOIN curve_fn_offline b ON a.step = b.step"))
    NotebookClient(nb, kernel_name="beamtime", timeout=900, resources={"metadata": {"path": str(tmp_path)}}).execute()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in cells for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert not errors, errors
    rel, bad, steps = [v.strip() for v in text_of(cells[-1]).strip().splitlines()[-1].strip("│ ").split("│")]
    assert float(rel) < 1e-12 and bad == "0" and steps == "10", text_of(cells[-1])
    bad, steps = [v.strip() for v in text_of(cells[-2]).strip().splitlines()[-1].strip("│ ").split("│")]
    assert bad == "0" and steps == "10", text_of(cells[-2])
    saved = pq.read_table(tmp_path / "curve.parquet")
    truth = json.loads((tmp_path / "offline" / "tstdemo-r0001.truth.json").read_text())
    assert all(0.95 * s["laser_on"] <= n <= s["laser_on"] for n, s in zip(saved.column("n").to_pylist(), truth["steps"]))
    # The small data the notebook saved, read as psana users read theirs (h5py): every event
    # once, the function's value where the beam was strong enough, NaN elsewhere.
    import h5py
    import numpy as np
    with h5py.File(tmp_path / "shots.h5", "r") as f:
        assert f["timestamp"].is_virtual and f["timestamp"].dtype == np.int64
        ts, i0 = f["timestamp"][()], f["i0"][()]
        sig, norm, step = f["diode/signal"][()], f["diode/norm"][()], f["step"][()]
    assert len(ts) == 60000 and len(np.unique(ts)) == 60000 and set(step.tolist()) == set(range(10))
    strong = i0 > 0.5
    assert np.array_equal(norm[strong], sig[strong] / i0[strong], equal_nan=True) and np.isnan(norm[~strong]).all()
    assert sorted(p.name for p in tmp_path.glob("shots_part*.h5")) == ["shots_part0.h5"]
    t0 = float(re.search(r"time zero ≈ (-?[\d.]+) ps", text_of(cells[-3])).group(1))
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


def read_status(path):
    """psana's NDArrIO text of `pixel_status` (comments, then rows of integers) as (3, 1, 512, 1024)."""
    import numpy as np
    return np.loadtxt(path, comments="#", dtype=np.float64).reshape(3, 1, 512, 1024)


def test_live_detector_images_the_ring_and_recovers_time_zero(tmp_path, monkeypatch):
    """notebooks/live-detector.ipynb against `beamtime sim --jungfrau 1` writing a run live (seed
    7: no Bragg spot in the notebook's ROI): every cell runs; once the run is over the %%sql and
    Rust cells are run again on the final results, which are checked against the simulator's
    truth file and its physics, computed here in numpy: the mean image's ring (per pixel, from the
    ring's photons per frame spread by the ring's profile) and its ROI, the on − off radial map at the
    ring, the photons per shot, and time zero within one delay bin."""
    import json
    import math
    import re
    import subprocess
    import time

    import numpy as np
    import pyarrow.parquet as pq

    from conftest import beamtime_bin
    from jungfrau import image_col, image_row

    monkeypatch.setenv("BEAMTIME_DEMO_DIR", str(tmp_path))
    d = tmp_path / "jungfrau"
    steps, per_step = 11, 40
    writer = subprocess.Popen([beamtime_bin(), "sim", "--dir", str(d), "--exp", "tstdemo", "--run", "1", "--events", str(steps * per_step),
                               "--steps", str(steps), "--streams", "1", "--jungfrau", "1", "--jungfrau-every", "1", "--rate", "200",
                               "--seed", "7"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    # The constants are written before the run's first file: wait for that file.
    while not (d / "smalldata").is_dir() and writer.poll() is None:
        time.sleep(0.2)
    nb = nbformat.read(ROOT / "notebooks" / "live-detector.ipynb", as_version=4)
    client = NotebookClient(nb, kernel_name="beamtime", timeout=900, allow_errors=True, resources={"metadata": {"path": str(tmp_path)}})
    snapshots = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.source.startswith("%%sql") or c.source.startswith("let "))]
    with client.setup_kernel():
        for i, cell in enumerate(list(nb.cells)):
            client.execute_cell(cell, i)
        # While the run is taken, every cell runs (photons(): see below).
        first_pass = {i: o for i, c in enumerate(nb.cells) for o in c.get("outputs", []) if o["output_type"] == "error"}
        # Queries after the first join the running job, counting events from then on: a restart
        # runs every query over the whole run. Then the snapshots (%%sql over live results, the
        # Rust cell) again, on the final results.
        for code in ["%live restart", "%live wait --timeout 600"]:
            nb.cells.append(nbformat.v4.new_code_cell(code))
            client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
        for i in snapshots:
            client.execute_cell(nb.cells[i], i)
        # photons() is the newest array function: when this binary lacks it, its cell fails alone
        # (checked last, below), and there is no table to save.
        photon_cell = next(i for i, c in enumerate(nb.cells) if "photons(" in c.source)
        photons_ran = not any(o["output_type"] == "error" for o in nb.cells[photon_cell].outputs)
        assert not {i: o for i, o in first_pass.items() if i != photon_cell}, first_pass
        for name in ["mean_image", "roi_curve", "radial_diff"] + (["photon_hist"] if photons_ran else []):
            nb.cells.append(nbformat.v4.new_code_cell(f"%save {name} {tmp_path / name}.parquet"))
            client.execute_cell(nb.cells[-1], len(nb.cells) - 1)
    assert writer.wait(timeout=120) == 0, writer.stderr.read()
    cells = [c for c in nb.cells if c.cell_type == "code"]
    errors = {i: o for i, c in enumerate(cells) for o in c.get("outputs", []) if o["output_type"] == "error"}
    photon_cell = next(i for i, c in enumerate(cells) if "photons(" in c.source)
    assert not {i: o for i, o in errors.items() if i != photon_cell}, errors
    waited = text_of(next(c for c in cells if c.source.startswith("%live wait")))
    assert "done" in waited and f"{steps * per_step} events" in waited, waited

    truth = json.loads((d / "tstdemo-r0001.truth.json").read_text())
    jf, model = truth["jungfrau"], truth["model"]
    geo, par = jf["geometry"], jf["params"]
    frames = jf["frames"]
    assert len(frames) == steps * per_step
    delays = [s["delay_ps"] for s in jf["steps"]]
    spacing = delays[1] - delays[0]

    # The ring's profile per data pixel (sim/src/jungfrau.rs): weight exp(−(ρ − R)²/2σ²) within 4σ,
    # ρ the distance of the pixel's centre to the beam; the good pixels' mask from pixel_status.
    rows, cols = np.meshgrid(np.arange(512), np.arange(1024), indexing="ij")
    rho = np.hypot(cols + 0.5 - geo["beam_x_px"], rows + 0.5 - geo["beam_y_px"])
    z = (rho - geo["ring_radius_px"]) / geo["ring_sigma_px"]
    w = np.where(np.abs(z) <= 4, np.exp(-0.5 * z * z), 0.0)
    status = read_status(d / "calib" / "Jungfrau::CalibV1" / "jungfrau" / "pixel_status" / "1-end.data")
    good = np.all(status == 0, axis=0)[0]
    assert (~good).sum() == jf["hot_pixels"] + jf["dead_pixels"]
    near_spot = np.zeros_like(good)
    for s in geo["spots"]:
        near_spot |= np.hypot(rows - s["row"], cols - s["col"]) <= 8
    # Expected photons per good pixel over the whole run: the ring's photons on good pixels
    # (truth), spread by weight over the good pixels.
    ring_photons = sum(f["ring_kev"] for f in frames) / par["photon_kev"]
    expected = ring_photons * np.where(good, w, 0) / w[good].sum()  # photons per pixel, whole run
    n = len(frames)

    # (a) The mean image, read at each data pixel's place (spec §5.5's placement).
    t = pq.read_table(tmp_path / "mean_image.parquet").to_pydict()
    assert t["n"] == [n]
    image = np.array(t["mean_image"][0]).reshape(514, 1030)
    mean = image[image_row(rows), image_col(cols)]
    noise_kev = par["noise_adu"][0] / par["gain_adu_per_kev"][0]
    # The ring, in 2 px bins of ρ within 2σ of its radius, away from the spots: keV per pixel.
    use = good & ~near_spot & (np.abs(z) <= 2)
    edges = np.arange(geo["ring_radius_px"] - 2 * geo["ring_sigma_px"], geo["ring_radius_px"] + 2 * geo["ring_sigma_px"], 2.0)
    which = np.digitize(rho, edges)
    for b in range(1, len(edges)):
        sel = use & (which == b)
        got = mean[sel].mean()
        want = par["photon_kev"] * expected[sel].sum() / n / sel.sum()
        sigma = math.sqrt(par["photon_kev"] ** 2 * expected[sel].sum() + n * sel.sum() * noise_kev ** 2) / n / sel.sum()
        assert abs(got - want) < 5 * sigma, (b, edges[b - 1], got, want, sigma)
    # The notebook's ROI (image rows 385–435, cols 490–539): holds part of the ring and no spot.
    roi = np.zeros((514, 1030), bool)
    roi[385:436, 490:540] = True
    in_roi = roi[image_row(rows), image_col(cols)]
    assert not (in_roi & near_spot).any(), "a Bragg spot of this seed is in the notebook's ROI"
    want_roi = par["photon_kev"] * expected[in_roi].sum() / n
    sigma_roi = math.sqrt(par["photon_kev"] ** 2 * expected[in_roi].sum() + n * in_roi.sum() * noise_kev ** 2) / n
    got_roi = image[385:436, 490:540].astype(np.float64).sum()
    assert want_roi > 1000 and abs(got_roi - want_roi) < 5 * sigma_roi, (got_roi, want_roi, sigma_roi)

    # (b, e) The ROI curve per delay bin, and time zero from it.
    curve = pq.read_table(tmp_path / "roi_curve.parquet").to_pydict()
    assert [round(x, 9) for x in curve["delay_ps"]] == [round(x, 9) for x in delays]
    t0 = float(re.search(r"time zero ≈ (-?[\d.]+) ps", text_of(nb.cells[snapshots[-1]])).group(1))
    assert abs(t0 - model["t0_ps"]) < spacing, (t0, model["t0_ps"], spacing)
    # Far from time zero (3σ of the rise) the change is 0 before and the full ring_pump_change
    # after; each bin has ~1 % of Poisson noise from the laser-off shots' ring photons.
    before = [c for dl, c in zip(curve["delay_ps"], curve["change"]) if dl < model["t0_ps"] - 3 * model["sigma_ps"]]
    after = [c for dl, c in zip(curve["delay_ps"], curve["change"]) if dl > model["t0_ps"] + 3 * model["sigma_ps"]]
    assert len(before) >= 2 and len(after) >= 2, curve["delay_ps"]
    assert abs(np.mean(before)) < 0.04 and abs(np.mean(after) - par["ring_pump_change"]) < 0.04, curve["change"]

    # (c) The on − off radial map: at the ring's radius, 0 before time zero and the pumped change
    # after it; expected per unit I0 from the ring's profile over the radial bin's good pixels
    # (in image coordinates, as radial() bins them).
    diff = pq.read_table(tmp_path / "radial_diff.parquet").to_pydict()
    r_img, c_img = np.indices((514, 1030))
    w_img = np.full((514, 1030), np.nan)
    w_img[image_row(rows), image_col(cols)] = np.where(good, w, np.nan)
    r_bin = np.hypot(c_img - 515, r_img - 257)
    ring_bin = int((geo["ring_radius_px"] - 100) // 5)
    sel = (r_bin >= 100 + 5 * ring_bin) & (r_bin < 105 + 5 * ring_bin) & ~np.isnan(w_img)
    per_i0 = par["ring_photons_per_i0"] * par["photon_kev"] * np.nanmean(w_img[sel])  # keV per pixel per unit I0
    at_ring = {round(dl, 9): v for dl, r, v in zip(diff["delay_ps"], diff["radius_px"], diff["on_minus_off"]) if r == 102.5 + 5 * ring_bin}
    first, last = at_ring[round(delays[0], 9)], at_ring[round(delays[-1], 9)]
    assert abs(first) < 0.25 * par["ring_pump_change"] * per_i0, (first, per_i0)
    assert abs(last - par["ring_pump_change"] * per_i0) < 0.25 * par["ring_pump_change"] * per_i0, (last, per_i0)

    print(f"live-detector: time zero {t0} ps (truth {model['t0_ps']}); ROI {got_roi:.1f} keV (expected {want_roi:.1f} ± {sigma_roi:.1f}); "
          f"change before {np.mean(before):.4f}, after {np.mean(after):.4f} (truth {par['ring_pump_change']}); "
          f"on − off at the ring {first:.4f} → {last:.4f} keV/I0 (expected 0 → {par['ring_pump_change'] * per_i0:.4f})")

    # (d) Photons per shot: psana's rounding gives each frame's photons on good pixels (the ring's
    # and the spots', truth energy / 9.5 keV), but for the few pixels read in gain range 2 (a
    # noise of 20 ADU / 0.1 ADU/keV = 2 photons): the histogram equals numpy's of the truth
    # except for shots within a few photons of a bin edge.
    assert photon_cell not in errors, f"photons() in the last cell: {errors.get(photon_cell)}"
    hist = pq.read_table(tmp_path / "photon_hist.parquet").to_pydict()
    want = np.array([f["energy_kev"] / par["photon_kev"] for f in frames])
    counts = dict(zip(hist["photons"], hist["n"]))
    assert sum(counts.values()) == n
    edge_shots = int((np.abs(want / 2000 - np.round(want / 2000)) * 2000 < 20).sum())
    wrong = sum(abs(counts.get(float(b), 0) - int(((want >= b) & (want < b + 2000)).sum())) for b in range(0, 100000, 2000))
    assert wrong <= 2 * edge_shots, (wrong, edge_shots)
