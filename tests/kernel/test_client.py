"""The kernel through jupyter_client: signatures, message order, execution counts, bad cells,
interrupts, tables and SQL, restart."""
import datetime
import subprocess
import time

import pytest
from jupyter_client.session import Session

from conftest import SHARED, beamtime_bin, run_cell

SAMPLE = SHARED / "data/xtc2/mixed_rate"
LOAD = f"%load run events exp=xpptut15:run=14:dir={SAMPLE}"


def types(msgs):
    return [m["msg_type"] for m in msgs]


def test_message_order_and_counts(kernel):
    _, kc = kernel
    reply, msgs = run_cell(kc, "%help")
    assert reply["status"] == "ok" and reply["execution_count"] == 1
    assert types(msgs) == ["status", "execute_input", "execute_result", "status"]
    assert msgs[0]["content"]["execution_state"] == "busy"
    assert "%%sql" in msgs[2]["content"]["data"]["text/plain"]
    # Header dates carry microseconds, which jupyter_client parses (nanoseconds stay a str).
    assert all(isinstance(m["header"]["date"], datetime.datetime) for m in msgs), [m["header"]["date"] for m in msgs]
    kc.kernel_info()
    info = kc.get_shell_msg(timeout=10)
    assert info["msg_type"] == "kernel_info_reply" and isinstance(info["header"]["date"], datetime.datetime), info["header"]
    # Silent executes get a reply but never bump the counter nor show anything.
    reply, msgs = run_cell(kc, "%help", silent=True)
    assert reply["execution_count"] == 1
    assert types(msgs) == ["status", "status"]
    reply, _ = run_cell(kc, "%tables")
    assert reply["execution_count"] == 2


def test_a_wrongly_signed_request_is_ignored(kernel):
    km, kc = kernel
    forged = Session(key=b"not-the-key", username="mallory")
    msg = forged.msg("execute_request", {"code": "%tables", "silent": False, "store_history": True,
                                          "user_expressions": {}, "allow_stdin": False})
    forged.send(kc.shell_channel.socket, msg)
    with pytest.raises(Exception):
        kc.get_shell_msg(timeout=1.5)
    # Still alive, and the forged cell never ran.
    reply, _ = run_cell(kc, "%tables")
    assert reply["status"] == "ok" and reply["execution_count"] == 1
    assert km.is_alive()


@pytest.mark.parametrize("code,ename,needle", [
    ("%no_such_magic", "UsageError", "unknown magic %no_such_magic"),
    ("%%sql\nSELEC 1", "QueryError", "SELEC"),
    ("%load t /no/such/file.parquet", "QueryError", "/no/such/file.parquet"),
    ("%load run t exp=nope:run=1:dir=/no/such/dir", "QueryError", "/no/such/dir"),
    ("%save nothing x.csv", "QueryError", "nothing"),
])
def test_bad_cells_are_errors_and_the_kernel_stays_up(kernel, code, ename, needle):
    km, kc = kernel
    reply, msgs = run_cell(kc, code)
    assert reply["status"] == "error", reply
    assert reply["ename"] == ename, reply
    assert needle in reply["evalue"], reply["evalue"]
    errors = [m for m in msgs if m["msg_type"] == "error"]
    assert len(errors) == 1 and errors[0]["content"]["evalue"] == reply["evalue"]
    reply, _ = run_cell(kc, "%tables")
    assert reply["status"] == "ok" and km.is_alive()


def execute_request(kc, code):
    """An execute_request made now (its header date is now) but not sent yet."""
    return kc.session.msg("execute_request", {"code": code, "silent": False, "store_history": True,
                                              "user_expressions": {}, "allow_stdin": False, "stop_on_error": True})


def test_stop_on_error_aborts_what_was_queued(kernel):
    _, kc = kernel
    first = execute_request(kc, "%no_such_magic")
    second = execute_request(kc, "%tables")
    kc.shell_channel.send(first)
    # The second arrives only after the first failed (a slow network): it was sent before the
    # error, so it is aborted all the same — by when it was sent, not by what was queued.
    time.sleep(0.5)
    kc.shell_channel.send(second)
    replies = {}
    while len(replies) < 2:
        m = kc.get_shell_msg(timeout=30)
        replies[m["parent_header"]["msg_id"]] = m["content"]
    assert replies[first["header"]["msg_id"]]["status"] == "error"
    assert replies[second["header"]["msg_id"]]["status"] == "aborted"
    # A cell sent after the client saw the error runs.
    reply, _ = run_cell(kc, "%tables")
    assert reply["status"] == "ok", reply


def test_completion_offers_every_option_the_parser_accepts(kernel):
    _, kc = kernel

    def complete(code):
        kc.complete(code, len(code))
        return kc.get_shell_msg(timeout=10)["content"]["matches"]

    def accepted(code):
        """The options the magic's parser accepts, as its error for an unknown one lists them."""
        reply, _ = run_cell(kc, code)
        assert reply["status"] == "error" and "unknown option --bogus" in reply["evalue"], reply
        return reply["evalue"].split("(options: ")[1].rstrip(")").split(", ")

    live_line = accepted("%live wait --bogus 1")
    assert "--timeout" in live_line
    assert sorted(complete("%live wait --")) == sorted(live_line)
    assert complete("%live wait --t") == ["--timeout"]
    live_cell = accepted("%%live x --bogus 1\nSELECT count(*) AS n FROM events")
    assert {"--ranks", "--rate", "--mode", "--window", "--launcher", "--view"} <= set(live_cell)
    assert sorted(complete("%%live x --")) == sorted(live_cell)
    assert sorted(complete("%%sql --")) == sorted(accepted("%%sql --bogus 1\nSELECT 1"))
    # %live's subcommands come first.
    assert sorted(complete("%live ")) == ["reset", "restart", "status", "stop", "wait"]
    assert complete("%live re") == ["reset", "restart"]


def test_sql_over_a_sample_run_save_and_reload(kernel, tmp_path):
    _, kc = kernel
    reply, msgs = run_cell(kc, LOAD)
    assert reply["status"] == "ok", reply
    shown = [m for m in msgs if m["msg_type"] == "display_data"]
    assert shown and "shape: (100," in shown[0]["content"]["data"]["text/plain"]
    reply, msgs = run_cell(kc, "%%sql --name per_step\nSELECT count(*) AS n, sum(xpphsd.fex.intFex) AS s, "
                               "count(xpphsd_2.fex.intFex) AS n2 FROM events")
    assert reply["status"] == "ok", reply
    text = [m for m in msgs if m["msg_type"] == "execute_result"][0]["content"]["data"]["text/plain"]
    row = text.strip().splitlines()[-1]
    assert [c.strip() for c in row.split("│")] == ["100", "4200", "10"], text
    out = tmp_path / "per_step.parquet"
    reply, _ = run_cell(kc, f"%save per_step {out}")
    assert reply["status"] == "ok" and out.exists()
    reply, _ = run_cell(kc, f"%load again {out}")
    assert reply["status"] == "ok", reply
    reply, msgs = run_cell(kc, "%tables")
    text = msgs[2]["content"]["data"]["text/plain"]
    assert "events" in text and "per_step" in text and "again" in text
    # Completion of dotted column names inside %%sql.
    code = "%%sql\nSELECT xpphsd.fex.int"
    kc.complete(code, len(code))
    m = kc.get_shell_msg(timeout=10)
    assert "xpphsd.fex.intFex" in m["content"]["matches"]
    assert m["content"]["cursor_start"] == len("%%sql\nSELECT ")
    # Inspect a table.
    kc.inspect("%describe events", len("%describe ev"))
    m = kc.get_shell_msg(timeout=10)
    assert m["content"]["found"] and "xpphsd.fex.intFex" in m["content"]["data"]["text/plain"]


def test_interrupt_a_long_query(kernel, tmp_path):
    km, kc = kernel
    subprocess.run([beamtime_bin(), "sim", "--dir", str(tmp_path), "--exp", "big", "--run", "1",
                    "--events", "20000", "--streams", "1", "--steps", "2"], check=True, capture_output=True)
    reply, _ = run_cell(kc, f"%load run big exp=big:run=1:dir={tmp_path} --columns diode.raw.signal")
    assert reply["status"] == "ok", reply
    msg_id = kc.execute('%%sql\nSELECT count(*) FROM big a CROSS JOIN big b WHERE a."diode.raw.signal" < b."diode.raw.signal"')
    time.sleep(1.0)
    started = time.monotonic()
    km.interrupt_kernel()
    reply = kc.get_shell_msg(timeout=30)
    assert reply["parent_header"]["msg_id"] == msg_id
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert time.monotonic() - started < 5
    reply, _ = run_cell(kc, "%tables")
    assert reply["status"] == "ok"


def test_unknown_comm_targets_are_closed(kernel):
    _, kc = kernel
    msg = kc.session.msg("comm_open", {"comm_id": "c1", "target_name": "nobody", "data": {}})
    kc.shell_channel.send(msg)
    while True:
        m = kc.get_iopub_msg(timeout=10)
        if m["msg_type"] == "comm_close":
            assert m["content"]["comm_id"] == "c1"
            break
    kc.comm_info()
    m = kc.get_shell_msg(timeout=10)
    assert m["msg_type"] == "comm_info_reply" and m["content"]["comms"] == {}


def test_restart_keeps_nothing_stale(kernel):
    km, kc = kernel
    reply, _ = run_cell(kc, LOAD)
    assert reply["status"] == "ok"
    km.restart_kernel(now=False)
    kc.wait_for_ready(timeout=60)
    reply, msgs = run_cell(kc, "%tables")
    assert reply["execution_count"] == 1
    assert "no tables yet" in msgs[2]["content"]["data"]["text/plain"]


def test_history(kernel):
    _, kc = kernel
    run_cell(kc, "%tables")
    run_cell(kc, "%help sql")
    kc.history(hist_access_type="tail", n=5)
    m = kc.get_shell_msg(timeout=10)
    assert [h[1:] for h in m["content"]["history"]] == [[1, "%tables"], [2, "%help sql"]]


def test_shutdown_is_graceful(kernel):
    km, kc = kernel
    proc = km.provisioner.process
    kc.shutdown(restart=False)
    m = kc.get_control_msg(timeout=10)
    assert m["msg_type"] == "shutdown_reply" and m["content"]["restart"] is False
    # The kernel exits by itself, well before jupyter_client's 5 s kill deadline.
    assert proc.wait(timeout=3) == 0


def test_a_late_iopub_subscriber_is_welcomed(kernel):
    """XPUB + iopub_welcome (protocol 5.5): a SUB that connects late learns it is subscribed."""
    import zmq

    km, kc = kernel
    ctx = zmq.Context.instance()
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    sub.connect(f"{km.transport}://{km.ip}:{km.iopub_port}")
    try:
        assert sub.poll(5000), "no iopub_welcome within 5 s"
        frames = sub.recv_multipart()
        msg = kc.session.deserialize(frames[frames.index(b"<IDS|MSG>") + 1:])
        assert msg["msg_type"] == "iopub_welcome"
        assert msg["content"] == {"subscription": ""}
    finally:
        sub.close(linger=0)
