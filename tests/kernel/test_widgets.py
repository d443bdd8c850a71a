"""The kernel's widget layer through real Jupyter clients: a %%live result is an anywidget
model (ipywidgets comm protocol 2.1) whose Arrow snapshot equals the offline result; comm_info,
request_state, the jupyter.widget.control restore path, front-end custom messages (sync,
pause, reset), unknown comm targets, and the state nbclient saves in a notebook."""
import base64
import io
import subprocess
import time
import uuid

import nbformat
import pyarrow as pa
import pyarrow.ipc
from nbclient import NotebookClient

from conftest import beamtime_bin, run_cell
from test_live import sim, source, texts, wait_done


def arrow(buf):
    return pa.ipc.open_stream(io.BytesIO(bytes(buf))).read_all()


def comm_opens(msgs):
    return [m for m in msgs if m["msg_type"] == "comm_open" and m["content"]["target_name"] == "jupyter.widget"]


def send_comm(kc, msg_type, content):
    """A front-end comm message on shell; returns its msg_id."""
    msg = kc.session.msg(msg_type, content)
    kc.shell_channel.send(msg)
    return msg["header"]["msg_id"]


def replies_to(kc, msg_id, timeout=10):
    """iopub messages parented to `msg_id`, up to its idle."""
    out, end = [], time.time() + timeout
    while time.time() < end:
        try:
            m = kc.get_iopub_msg(timeout=0.5)
        except Exception:
            continue
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return out
        out.append(m)
    raise AssertionError(f"no idle for {msg_id}: {out}")


def offline(tmp_path, exp, sql):
    import polars as pl
    run = pl.read_ipc_stream  # noqa: F841 (polars reads what `beamtime run` writes)
    out = tmp_path / f"{exp}.arrow"
    subprocess.run([beamtime_bin(), "run", "--source", source(tmp_path, exp), "--sql", sql, "--ranks", "1", "-o", str(out)],
                   check=True, capture_output=True)
    return pa.ipc.open_file(str(out)).read_all() if out.read_bytes()[:6] == b"ARROW1" else pa.ipc.open_stream(str(out)).read_all()


SQL = "SELECT step, count(*) AS n, avg(ipm2.raw.sum) AS ipm FROM events GROUP BY step ORDER BY step"


def test_a_live_result_is_an_anywidget_model_with_the_arrow_result(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstwid1", 4000).wait() == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstwid1')}")
    reply, msgs = run_cell(kc, f"%%live per_step --ranks 1 --view line x=step y=ipm\n{SQL}", timeout=120)
    assert reply["status"] == "ok", texts(msgs)
    [opened] = comm_opens(msgs)
    assert opened["metadata"]["version"] == "2.1.0"
    state = opened["content"]["data"]["state"]
    model_id = opened["content"]["comm_id"]
    assert state["_model_name"] == "AnyModel" and state["_model_module"] == "anywidget" and state["_view_name"] == "AnyView"
    assert "beamtime" in state["_esm"] and len(state["_esm"]) > 100_000
    assert (state["kind"], state["x"], state["y"], state["title"]) == ("line", "step", ["ipm"], "per_step")
    assert opened["content"]["data"]["buffer_paths"] == [["snapshot"]] and len(opened["buffers"]) == 1
    # Displayed after it is opened, with static fallbacks beside the widget.
    [shown] = [m for m in msgs if m["msg_type"] == "display_data"]
    data = shown["content"]["data"]
    assert data["application/vnd.jupyter.widget-view+json"] == {"version_major": 2, "version_minor": 1, "model_id": model_id}
    assert "<table" in data["text/html"] and "per_step" in data["text/plain"]
    assert msgs.index(opened) < msgs.index(shown)

    wait_done(kc, "per_step")
    # request_state: the full state, parented to the request, with the final snapshot.
    rid = send_comm(kc, "comm_msg", {"comm_id": model_id, "data": {"method": "request_state"}})
    [upd] = [m for m in replies_to(kc, rid) if m["msg_type"] == "comm_msg"]
    assert upd["content"]["data"]["method"] == "update" and upd["content"]["data"]["buffer_paths"] == [["snapshot"]]
    assert upd["content"]["data"]["state"]["status"]["done"] is True
    live = arrow(upd["buffers"][0])
    want = offline(tmp_path, "tstwid1", SQL)
    assert live.column("step").to_pylist() == want.column("step").to_pylist() == [0, 1, 2, 3]
    assert live.column("n").to_pylist() == want.column("n").to_pylist() == [1000] * 4
    for a, b in zip(live.column("ipm").to_pylist(), want.column("ipm").to_pylist()):
        assert abs(a - b) <= 1e-12 * abs(b)
    # Strings go as plain (large) utf8, which apache-arrow JS reads.
    assert not any("view" in str(f.type) for f in live.schema)

    # comm_info lists the model.
    reply = kc.comm_info(target_name="jupyter.widget", reply=True)["content"]
    assert reply["comms"] == {model_id: {"target_name": "jupyter.widget"}}


def test_restore_after_reload_through_the_control_comm(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstwid2", 2000).wait() == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstwid2')}")
    _, msgs = run_cell(kc, "%%live a --ranks 1\nSELECT count(*) AS n FROM events", timeout=120)
    _, msgs2 = run_cell(kc, "%%live b --ranks 1\nSELECT bin(ipm2.raw.sum, 0.5) AS b, count(*) AS n FROM events GROUP BY b", timeout=120)
    ids = {comm_opens(msgs)[0]["content"]["comm_id"], comm_opens(msgs2)[0]["content"]["comm_id"]}
    wait_done(kc, "a")
    wait_done(kc, "b")
    control = str(uuid.uuid4())
    oid = send_comm(kc, "comm_open", {"comm_id": control, "target_name": "jupyter.widget.control", "data": {}})
    assert not [m for m in replies_to(kc, oid) if m["msg_type"] == "comm_close"], "the control comm must stay open"
    rid = send_comm(kc, "comm_msg", {"comm_id": control, "data": {"method": "request_states"}})
    [upd] = [m for m in replies_to(kc, rid) if m["msg_type"] == "comm_msg"]
    data = upd["content"]["data"]
    assert upd["content"]["comm_id"] == control and data["method"] == "update_states"
    assert set(data["states"]) == ids
    for mid, st in data["states"].items():
        assert st["model_name"] == "AnyModel" and st["model_module"] == "anywidget"
        assert st["state"]["status"]["done"] is True
    assert sorted(map(tuple, data["buffer_paths"])) == sorted((i, "state", "snapshot") for i in ids)
    tables = {p[0]: arrow(b) for p, b in zip(data["buffer_paths"], upd["buffers"])}
    counts = sorted(t.column("n").to_pylist()[0] if t.num_rows == 1 else sum(t.column("n").to_pylist()) for t in tables.values())
    assert counts == [2000, 2000]
    # The manager closes the control comm; it is gone from comm_info.
    cid = send_comm(kc, "comm_close", {"comm_id": control, "data": {}})
    replies_to(kc, cid)
    assert control not in kc.comm_info(reply=True)["content"]["comms"]


def test_front_end_messages_act_on_the_live_query(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstwid3", 3000).wait() == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstwid3')}")
    _, msgs = run_cell(kc, "%%live q --ranks 1\nSELECT count(*) AS n FROM events", timeout=120)
    model_id = comm_opens(msgs)[0]["content"]["comm_id"]
    wait_done(kc, "q")
    # sync: the current result as a custom replace.
    sid = send_comm(kc, "comm_msg", {"comm_id": model_id, "data": {"method": "custom", "content": {"type": "sync"}}})
    [rep] = [m for m in replies_to(kc, sid) if m["msg_type"] == "comm_msg"]
    assert rep["content"]["data"]["content"]["type"] == "replace"
    assert arrow(rep["buffers"][0]).column("n").to_pylist() == [3000]
    # pause: the status says so.
    pid = send_comm(kc, "comm_msg", {"comm_id": model_id, "data": {"method": "custom", "content": {"type": "pause", "paused": True}}})
    [st] = [m for m in replies_to(kc, pid) if m["msg_type"] == "comm_msg"]
    assert st["content"]["data"]["state"]["status"]["paused"] is True
    # reset: the view is emptied (schema, no rows) and the job resets the query.
    rid = send_comm(kc, "comm_msg", {"comm_id": model_id, "data": {"method": "custom", "content": {"type": "reset"}}})
    [empty] = [m for m in replies_to(kc, rid) if m["msg_type"] == "comm_msg"]
    t = arrow(empty["buffers"][0])
    assert t.num_rows == 0 and t.schema.names == ["n"]
    # A front-end update is kept and echoed (ipywidgets 2.1 echo_update).
    uid = send_comm(kc, "comm_msg", {"comm_id": model_id, "data": {"method": "update", "state": {"kind": "table"}, "buffer_paths": []}})
    [echo] = [m for m in replies_to(kc, uid) if m["msg_type"] == "comm_msg"]
    assert echo["content"]["data"] == {"method": "echo_update", "state": {"kind": "table"}, "buffer_paths": []}
    # Comms to other targets are closed.
    oid = send_comm(kc, "comm_open", {"comm_id": "x1", "target_name": "some.other", "data": {}})
    assert [m["content"]["comm_id"] for m in replies_to(kc, oid) if m["msg_type"] == "comm_close"] == ["x1"]


def test_view_html_shows_no_widget_and_bad_views_are_usage_errors(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstwid4", 1000).wait() == 0
    run_cell(kc, f"%source {source(tmp_path, 'tstwid4')}")
    reply, msgs = run_cell(kc, "%%live h --ranks 1 --view html\nSELECT count(*) AS n FROM events", timeout=120)
    assert reply["status"] == "ok" and not comm_opens(msgs)
    [shown] = [m for m in msgs if m["msg_type"] == "display_data"]
    assert "application/vnd.jupyter.widget-view+json" not in shown["content"]["data"]
    reply, _ = run_cell(kc, "%%live h2 --view pie\nSELECT count(*) AS n FROM events")
    assert reply["status"] == "error" and "one of auto, table" in reply["evalue"]
    reply, _ = run_cell(kc, "%%live h3 z=step\nSELECT count(*) AS n FROM events")
    assert reply["status"] == "error" and "x=COLUMN" in reply["evalue"]


def test_nbclient_saves_the_final_widget_state_and_fallback(tmp_path):
    assert sim(tmp_path, "tstwid5", 3000).wait() == 0
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_code_cell(f"%source {source(tmp_path, 'tstwid5')}"),
        nbformat.v4.new_code_cell(f"%%live per_step --ranks 1 --view line x=step y=ipm\n{SQL}"),
        nbformat.v4.new_code_cell("%live wait"),
    ]
    NotebookClient(nb, kernel_name="beamtime", timeout=300, store_widget_state=True).execute()
    states = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    [(mid, st)] = list(states.items())
    assert st["model_name"] == "AnyModel" and st["model_module"] == "anywidget"
    assert st["state"]["status"]["done"] is True
    [buf] = st["buffers"]
    assert buf["path"] == ["snapshot"]
    final = arrow(base64.b64decode(buf["data"]))
    assert final.column("n").to_pylist() == [750] * 4
    # The saved output shows the widget and, for viewers without widgets, the final table.
    out = nb.cells[1].outputs[0]["data"]
    assert out["application/vnd.jupyter.widget-view+json"]["model_id"] == mid
    assert "750" in out["text/html"] and "done" in out["text/plain"]
    # ... and the plot as an inline SVG (4 steps on the line).
    assert out["text/html"].startswith("<svg") and "<polyline" in out["text/html"] and out["text/html"].count("<circle") == 4


def test_sql_results_can_be_shown_as_widgets(kernel, tmp_path):
    km, kc = kernel
    assert sim(tmp_path, "tstwid6", 2000).wait() == 0
    run_cell(kc, f"%load run events {source(tmp_path, 'tstwid6')}", timeout=120)
    reply, msgs = run_cell(kc, "%%sql --view line x=step y=n\nSELECT step, count(*) AS n FROM events GROUP BY step ORDER BY step")
    assert reply["status"] == "ok", texts(msgs)
    [opened] = comm_opens(msgs)
    state = opened["content"]["data"]["state"]
    assert (state["kind"], state["x"], state["y"]) == ("line", "step", ["n"])
    assert arrow(opened["buffers"][0]).column("n").to_pylist() == [500] * 4
    [result] = [m for m in msgs if m["msg_type"] == "execute_result"]
    assert result["content"]["data"]["application/vnd.jupyter.widget-view+json"]["model_id"] == opened["content"]["comm_id"]
    assert "500" in result["content"]["data"]["text/plain"]
    # Without --view, no widget.
    _, msgs = run_cell(kc, "%%sql\nSELECT 1 AS one")
    assert not comm_opens(msgs)


def run_keep_all(kc, code, timeout=120):
    """Like run_cell, but keeps every iopub message (background widget traffic included)."""
    msg_id = kc.execute(code)
    msgs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        msgs.append(m)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status" \
                and m["content"]["execution_state"] == "idle":
            return msgs


class Mirror:
    """A widget's table rebuilt from the kernel's messages the way the front end applies them
    (snapshot trait, custom replace, custom append with prev/drop, cut to max_rows). Every
    whole table received (a snapshot or a sync's replace) is checked against what the appends
    built: rows only leave from the front and come at the end, so the whole table must start
    with the rebuilt rows that are still in it (those from its first timestamp on)."""

    def __init__(self, opened):
        data = opened["content"]["data"]
        self.max_rows = data["state"]["max_rows"]
        self.seq = data["state"]["status"]["seq"]
        self.table = arrow(opened["buffers"][0]) if opened["buffers"] and len(opened["buffers"][0]) else None
        self.appends, self.drops, self.append_bytes, self.snapshots = 0, 0, [], 0
        self.done = False
        self.checked = 0
        self.largest = 0

    def contiguous(self):
        """No row lost or repeated: the simulated trigger runs at 3 kHz (333 µs apart)."""
        ns = [(t >> 32) * 1_000_000_000 + (t & 0xFFFFFFFF) for t in self.table.column("timestamp").to_pylist()]
        gaps = [b - a for a, b in zip(ns, ns[1:])]
        assert all(0 < g < 500_000 for g in gaps), f"rows missing or repeated: gaps {sorted(set(gaps))[:3]}…{max(gaps)}"

    def whole(self, table, seq):
        if self.table is not None and self.table.num_rows and table.num_rows:
            ts = self.table.column("timestamp").to_pylist()
            first = table.column("timestamp")[0].as_py()
            still = self.table.slice(next((i for i, t in enumerate(ts) if t >= first), len(ts)))
            assert still.num_rows > 0, "the whole table has none of the rebuilt rows"
            assert table.slice(0, still.num_rows).equals(still), \
                f"rebuilt rows {still.num_rows} differ from the whole table's first ones"
            self.checked += 1
        self.table, self.seq = table, seq

    def apply(self, m):
        data = m["content"]["data"]
        if data.get("method") == "update":
            state = data["state"]
            self.done |= bool(state.get("status", {}).get("done"))
            if ["snapshot"] in data.get("buffer_paths", []):
                self.whole(arrow(m["buffers"][0]), state["status"]["seq"])
                self.snapshots += 1
            return None
        c = data.get("content", {})
        if c.get("type") == "replace":
            self.whole(arrow(m["buffers"][0]), c["seq"])
            return "replace"
        if c.get("type") == "append":
            assert c["prev"] == self.seq, f"append extends {c['prev']}, the widget holds {self.seq}"
            rows = arrow(m["buffers"][0])
            kept = self.table.slice(min(c["drop"], self.table.num_rows))
            t = pa.concat_tables([kept, rows])
            self.table = t.slice(max(0, t.num_rows - self.max_rows))
            self.largest = max(self.largest, self.table.num_rows)
            self.seq = c["seq"]
            self.contiguous()
            self.appends += 1
            self.drops += c["drop"] > 0
            self.append_bytes.append(len(m["buffers"][0]))
            return "append"


def test_row_queries_reach_the_widget_as_appends_that_rebuild_its_table(kernel, tmp_path):
    """Row queries stream: after the first snapshot the widget gets only new rows (and, for a
    window, how many old ones leave), never the whole table at the display rate."""
    km, kc = kernel
    writer = sim(tmp_path, "tstwid7", 16000, rate=3000)
    run_cell(kc, f"%source {source(tmp_path, 'tstwid7', live=True)}")
    models = {}
    for cell in ("%%live win --ranks 1 --window 2000\nSELECT timestamp, ipm2.raw.sum AS ipm FROM events",
                 "%%live all_rows --ranks 1\nSELECT timestamp FROM events"):
        msgs = run_keep_all(kc, cell)
        [opened] = comm_opens(msgs)
        mirror = Mirror(opened)
        models[opened["content"]["comm_id"]] = mirror
        for m in msgs[msgs.index(opened) + 1:]:
            if m["msg_type"] == "comm_msg" and m["content"]["comm_id"] in models:
                models[m["content"]["comm_id"]].apply(m)
    win, every = models.values()
    assert win.max_rows == every.max_rows == 10_000
    # While the run is written: ask the window for its whole table now and then (checked
    # against what the appends built).
    end, last_sync = time.time() + 120, 0
    model_of = {m: k for k, m in models.items()}
    while not (win.done and every.done) and time.time() < end:
        if not win.done and time.time() - last_sync > 1.5:
            send_comm(kc, "comm_msg", {"comm_id": model_of[win], "data": {"method": "custom", "content": {"type": "sync"}}})
            last_sync = time.time()
        try:
            m = kc.get_iopub_msg(timeout=0.5)
        except Exception:
            continue
        if m["msg_type"] != "comm_msg" or m["content"]["comm_id"] not in models:
            continue
        models[m["content"]["comm_id"]].apply(m)
    assert writer.wait() == 0
    assert win.done and every.done, "both queries finish"
    assert win.checked >= 2 and win.appends >= 5 and win.drops >= 2, (win.checked, win.appends, win.drops)
    assert win.largest <= 2000, "the window's oldest rows left the widget as they left the result"
    # The window holds the 16 newest bins of 125 events; the first column is in time order.
    assert 1875 < win.table.num_rows <= 2000
    ts = win.table.column("timestamp").to_pylist()
    assert ts == sorted(ts)
    # Since the start: 16 000 rows, the widget keeps the newest 10 000, filled by appends.
    assert every.appends >= 5 and every.checked >= 1 and every.table.num_rows == 10_000
    assert every.table.column("timestamp").to_pylist() == sorted(every.table.column("timestamp").to_pylist())
    assert max(every.append_bytes) < 200_000, "appends carry new rows, not the table"
