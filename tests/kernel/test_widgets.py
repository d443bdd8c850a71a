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
