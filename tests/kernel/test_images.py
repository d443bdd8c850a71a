"""Array results in the notebook (issue 16): the kernel tells the widget each result column's
shape, bins images larger than its pixel budget into block means, shares the ROIs and rings of
every live query over the same detector image as overlays, gives profiles their x axis, and
draws images as inline PNGs for viewers without widgets. Checked on psana's Jungfrau file
against numpy (the mean image from the spec's formula and placement, binned here)."""
import base64
import io
import math
import re

import numpy as np
import pyarrow as pa
import pyarrow.ipc
import pyarrow.parquet
import pytest

from conftest import run_cell
from kernelclient import run_beamtime
from test_live import texts

BUDGET = 20_000  # image pixels the widget gets at most (BEAMTIME_WIDGET_IMAGE_PIXELS)


@pytest.fixture
def small_budget_kernel():
    from jupyter_client.manager import start_new_kernel
    import os

    km, kc = start_new_kernel(kernel_name="beamtime", startup_timeout=60, env={**os.environ, "BEAMTIME_WIDGET_IMAGE_PIXELS": str(BUDGET)})
    try:
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def opened_state(msgs):
    [m] = [m for m in msgs if m["msg_type"] == "comm_open" and m["content"]["target_name"] == "jupyter.widget"]
    return m["content"]["data"]["state"], pa.ipc.open_stream(io.BytesIO(bytes(m["buffers"][0]))).read_all()


def test_images_are_binned_shaped_and_overlaid_and_profiles_get_their_axis(small_budget_kernel, tmp_path):
    from jungfrau import FILE, frames, jungfrau_calib, jungfrau_image, write_constants

    km, kc = small_budget_kernel
    root = tmp_path / "calib"
    peds, offset, gain, status = write_constants(root)
    raw_out = tmp_path / "raw.parquet"
    run_beamtime("run", "--source", f"files={FILE}", "--sql", "SELECT timestamp, jungfrau.raw.raw AS r FROM events", "-o", str(raw_out))
    _, raw = frames(pyarrow.parquet.read_table(raw_out), "r")
    mean = np.mean([jungfrau_image(jungfrau_calib(raw[k], peds, offset, gain, status)).astype(np.float64) for k in range(len(raw))], axis=0)

    reply, msgs = run_cell(kc, f"%source files={FILE} --calib-dir {root}")
    assert reply["status"] == "ok", texts(msgs)
    reply, msgs = run_cell(kc, "%%live roi --ranks 1\nSELECT sum(roi_sum(jungfrau.raw.image, 100, 140, 200, 260)) AS roi, "
                               "avg(radial(jungfrau.raw.image, 515, 257, 10, 410, 40)) AS profile FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    state, table = opened_state(msgs)
    meta = {k.decode(): v.decode() for k, v in (table.schema.metadata or {}).items()}
    assert meta.get("beamtime:axes") == '{"profile":{"label":"radius (pixels)","start":15.0,"step":10.0}}', meta
    assert "beamtime:shapes" not in meta, "a profile is 1-D"
    # Its static twin: an SVG line over the ring radii, its points at the rings' values.
    [shown] = [m for m in msgs if m["msg_type"] == "display_data"]
    svg = re.search(r'<svg class="beamtime-profile".*?</svg>', shown["content"]["data"]["text/html"])
    assert svg and "radius (pixels)" in svg.group(0) and "profile (1 rows)" in svg.group(0), shown["content"]["data"]["text/html"][:800]
    points = [p for line in re.findall(r'points="([^"]+)"', svg.group(0)) for p in line.split()]
    assert len(points) == np.isfinite(table.column("profile")[0].as_py()).sum()

    reply, msgs = run_cell(kc, "%%live mean --ranks 1\nSELECT avg(jungfrau.raw.image) AS mean_image FROM events", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    run_cell(kc, "%live wait mean --timeout 60")
    state, table = opened_state(msgs)
    # The other query's ROI and rings, in the image's pixels.
    assert {"kind": "rect", "r0": 100.0, "r1": 140.0, "c0": 200.0, "c1": 260.0, "label": "roi: roi_sum"} in state["overlays"]
    assert {(o["kind"], o.get("r")) for o in state["overlays"]} == {("rect", None), ("ring", 10.0), ("ring", 410.0)}
    # Binned to the budget by the smallest square factor, computed here.
    f = next(f for f in range(1, 100) if math.ceil(514 / f) * math.ceil(1030 / f) <= BUDGET)
    h, w = math.ceil(514 / f), math.ceil(1030 / f)
    meta = {k.decode(): v.decode() for k, v in table.schema.metadata.items()}
    assert meta["beamtime:shapes"] == f'{{"mean_image":[{h},{w}]}}'
    assert meta["beamtime:binning"] == f'{{"mean_image":[{f},{f}]}}'
    padded = np.full((h * f, w * f), np.nan)
    padded[:514, :1030] = mean
    want = np.nanmean(padded.reshape(h, f, w, f), axis=(1, 3))
    got = np.array(table.column("mean_image")[0].as_py(), np.float64).reshape(h, w)
    np.testing.assert_allclose(got, want, rtol=2e-5, atol=1e-3)
    assert table.schema.field("mean_image").type.value_type == pa.float32()

    # The static fallback: a PNG of the image (binned to ≤ 512 a side), with the table.
    [shown] = [m for m in msgs if m["msg_type"] == "display_data"]
    html = shown["content"]["data"]["text/html"]
    m = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert m, html[:500]
    png = base64.b64decode(m.group(1))
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    side = math.ceil(1030 / 512)
    assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (math.ceil(1030 / side), math.ceil(514 / side))
    run_cell(kc, "%live stop")


def test_sql_over_a_table_of_images_draws_them_inline(kernel, tmp_path):
    """%%sql over a loaded run: its array columns keep their shapes (the catalog), an element-wise
    aggregate over them is drawn as a PNG beside the table."""
    km, kc = kernel
    from jungfrau import FILE

    reply, msgs = run_cell(kc, f"%load run jf files={FILE}")
    assert reply["status"] == "ok", texts(msgs)
    reply, msgs = run_cell(kc, "%%sql\nSELECT max(jungfrau.raw.raw) AS brightest FROM jf")
    assert reply["status"] == "ok", texts(msgs)
    [res] = [m for m in msgs if m["msg_type"] == "execute_result"]
    html = res["content"]["data"]["text/html"]
    m = re.search(r'src="data:image/png;base64,([^"]+)"', html)
    assert m and "brightest (512×1024)" in html, html[:800]
