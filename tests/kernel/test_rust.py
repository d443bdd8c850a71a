"""Rust cells through evcxr, driven through jupyter_client: output, state, compile errors,
panics, interrupt, completion, stdin, the tables bridge, and a kernel without a toolchain.

One kernel serves the module (evcxr's first cell compiles for seconds); the interrupt test,
which loses the session's variables, runs last.
"""
import os
import time

import pytest
from jupyter_client.manager import start_new_kernel

from conftest import SHARED, run_cell

SAMPLE = SHARED / "data/xtc2/mixed_rate"
LOAD = f"%load run events exp=xpptut15:run=14:dir={SAMPLE}"
FIRST_CELL_TIMEOUT = 900


def types(msgs):
    return [m["msg_type"] for m in msgs]


def outputs(msgs, kind):
    return [m["content"] for m in msgs if m["msg_type"] == kind]


def stdout(msgs):
    return "".join(c["text"] for c in outputs(msgs, "stream") if c["name"] == "stdout")


def result_text(msgs):
    res = outputs(msgs, "execute_result")
    assert len(res) == 1, msgs
    return res[0]["data"]["text/plain"]


@pytest.fixture(scope="module")
def rk():
    # evcxr starts in the background when the kernel does (off elsewhere in this suite).
    km, kc = start_new_kernel(kernel_name="beamtime", startup_timeout=60, env={**os.environ, "BEAMTIME_RUST_WARMUP": "1"})
    try:
        reply, _ = run_cell(kc, "let warm_up = 1;", timeout=FIRST_CELL_TIMEOUT)
        assert reply["status"] == "ok", reply
        yield km, kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)


def test_stdout_and_result(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, 'println!("hi from rust");\n40 + 2')
    assert reply["status"] == "ok", reply
    assert stdout(msgs) == "hi from rust\n"
    assert result_text(msgs) == "42"
    # Output comes before the result, and everything before idle.
    assert types(msgs)[-2:] == ["execute_result", "status"]


def test_streams_are_coalesced(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, 'for i in 0..2000 { println!("line {i}"); }\neprintln!("to stderr");')
    assert reply["status"] == "ok", reply
    streams = outputs(msgs, "stream")
    assert stdout(msgs).splitlines() == [f"line {i}" for i in range(2000)]
    assert any(s["name"] == "stderr" and "to stderr" in s["text"] for s in streams)
    assert len(streams) <= 10, f"{len(streams)} stream messages for 2001 lines"


def test_state_across_cells(rk):
    _, kc = rk
    reply, _ = run_cell(kc, "let x = 41;")
    assert reply["status"] == "ok", reply
    reply, msgs = run_cell(kc, "x + 1")
    assert reply["status"] == "ok", reply
    assert result_text(msgs) == "42"


def test_evcxr_commands(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, ":vars")
    assert reply["status"] == "ok", reply
    text = result_text(msgs)
    assert "x" in text and "i32" in text
    reply, msgs = run_cell(kc, ":quit")
    assert reply["status"] == "error" and "kernel" in reply["evalue"]


def test_magic_lines_then_rust(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, "%tables\nx * 2")
    assert reply["status"] == "ok", reply
    assert result_text(msgs) == "82"


def test_compile_error_shows_the_span(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, 'let a = 1;\nlet y: i32 = "text";')
    assert reply["status"] == "error", reply
    assert reply["ename"] == "CompilationError"
    assert "mismatched types" in reply["evalue"]
    tb = "\n".join(reply["traceback"])
    assert 'let y: i32 = "text";' in tb
    assert "cell:2:" in tb and "^^^^^^" in tb
    # Diagnostics go in the traceback, not to stderr: one output, the error.
    assert types(msgs) == ["status", "execute_input", "error", "status"]
    # Nothing was lost.
    reply, msgs = run_cell(kc, "x")
    assert result_text(msgs) == "41"


def test_panic_is_an_error_and_the_session_goes_on(rk):
    _, kc = rk
    reply, msgs = run_cell(kc, 'let n = 7;\npanic!("boom {}", n);')
    assert reply["status"] == "error", reply
    assert reply["ename"] == "Panic"
    assert "boom 7" in reply["evalue"]
    errors = outputs(msgs, "error")
    assert len(errors) == 1
    # The panic message is in the error, not repeated on stderr.
    assert not any("panicked" in s["text"] for s in outputs(msgs, "stream"))
    reply, msgs = run_cell(kc, "x + 1")
    assert reply["status"] == "ok", reply
    assert result_text(msgs) == "42"


def test_completion_and_inspection_of_a_rust_identifier(rk):
    _, kc = rk
    reply, _ = run_cell(kc, "let zebra_count = 3;")
    assert reply["status"] == "ok", reply
    code = "let a = 1;\nzebra_c"
    kc.complete(code, len(code))
    m = kc.get_shell_msg(timeout=30)
    assert m["msg_type"] == "complete_reply"
    c = m["content"]
    assert "zebra_count" in c["matches"], c
    assert (c["cursor_start"], c["cursor_end"]) == (len("let a = 1;\n"), len(code))
    # Positions count code points, not bytes.
    code = 'let s = "é";\nzebra_c'
    kc.complete(code, len(code))
    c = kc.get_shell_msg(timeout=30)["content"]
    assert "zebra_count" in c["matches"] and c["cursor_start"] == len('let s = "é";\n'), c
    # Magic lines are still completed by the kernel.
    kc.complete("%tab", 4)
    assert kc.get_shell_msg(timeout=30)["content"]["matches"] == ["%tables"]
    # Inspection (Shift-Tab) shows the type.
    kc.inspect("zebra_count + 1", 3)
    c = kc.get_shell_msg(timeout=30)["content"]
    assert c["found"] and "zebra_count: i32" in c["data"]["text/plain"], c


def test_completion_while_a_cell_runs_answers_at_once(rk):
    _, kc = rk
    msg_id = kc.execute("std::thread::sleep(std::time::Duration::from_secs(3));")
    time.sleep(0.5)
    started = time.monotonic()
    kc.complete("zebra_c", 7)
    while True:
        m = kc.get_shell_msg(timeout=10)
        if m["msg_type"] == "complete_reply":
            break
    assert time.monotonic() - started < 1.0
    assert m["content"]["matches"] == []
    while True:
        m = kc.get_shell_msg(timeout=60)
        if m["parent_header"].get("msg_id") == msg_id:
            break
    assert m["content"]["status"] == "ok"


def test_stdin(rk):
    _, kc = rk
    msg_id = kc.execute('let who = beamtime::input("name?");\nprintln!("hello {who}");', allow_stdin=True)
    req = kc.get_stdin_msg(timeout=120)
    assert req["msg_type"] == "input_request"
    assert req["content"]["prompt"] == "name?" and req["content"]["password"] is False
    kc.input("world")
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert reply["content"]["status"] == "ok", reply["content"]
    text = ""
    while True:
        m = kc.get_iopub_msg(timeout=10)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "stream":
            text += m["content"]["text"]
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    assert "hello world" in text


def test_tables_round_trip(rk):
    _, kc = rk
    reply, _ = run_cell(kc, LOAD)
    assert reply["status"] == "ok", reply
    code = """
let names = beamtime::tables().unwrap();
let v = beamtime::column("events", "xpphsd.fex.intFex").unwrap();
let doubled: Vec<f64> = v.iter().map(|x| 2.0 * x).collect();
println!("{:?} {}", names, v.len());
beamtime::put_columns("doubled", &[("v2", &doubled)]).unwrap();
let ipc = beamtime::table_ipc("events").unwrap();
beamtime::put_ipc("events_copy", &ipc).unwrap()
"""
    reply, msgs = run_cell(kc, code)
    assert reply["status"] == "ok", reply
    assert '["events"] 100' in stdout(msgs)
    assert "events_copy: 100 rows" in result_text(msgs)
    reply, msgs = run_cell(kc, "%%sql\nSELECT count(*) AS n, sum(v2) AS s FROM doubled")
    assert reply["status"] == "ok", reply
    row = result_text(msgs).strip().splitlines()[-1]
    assert [c.strip() for c in row.split("│") if c.strip()] == ["100", "8400"], result_text(msgs)
    reply, msgs = run_cell(kc, "%%sql\nSELECT count(*) AS n FROM events_copy")
    assert reply["status"] == "ok", reply
    # A missing table is an error the cell can show.
    reply, msgs = run_cell(kc, 'beamtime::table_ipc("nope").unwrap_err().to_string()')
    assert "no table named 'nope'" in result_text(msgs)


@pytest.mark.skipif(not os.environ.get("BEAMTIME_SLOW_TESTS"), reason="compiles polars inside evcxr (many minutes); set BEAMTIME_SLOW_TESTS=1")
def test_tables_as_polars_dataframes(rk):
    _, kc = rk
    reply, _ = run_cell(kc, LOAD)
    assert reply["status"] == "ok", reply
    reply, msgs = run_cell(kc, ':dep beamtime = { features = ["polars"] }', timeout=3600)
    assert reply["status"] == "ok", reply
    code = 'let df = beamtime::table("events").unwrap();\nbeamtime::put("head5", &df.head(Some(5))).unwrap()'
    reply, msgs = run_cell(kc, code, timeout=600)
    assert reply["status"] == "ok", reply
    assert "head5: 5 rows" in result_text(msgs)


def test_interrupt_stops_the_cell_and_the_kernel_goes_on(rk):
    km, kc = rk
    msg_id = kc.execute('println!("sleeping");\nstd::thread::sleep(std::time::Duration::from_secs(60));')
    # Wait until the cell's code runs (its compile is over).
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        m = kc.get_iopub_msg(timeout=120)
        if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "stream" and "sleeping" in m["content"]["text"]:
            break
    started = time.monotonic()
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=30)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    assert time.monotonic() - started < 5
    assert reply["content"]["status"] == "error"
    assert reply["content"]["ename"] == "KeyboardInterrupt"
    assert "variables were lost" in reply["content"]["evalue"]
    assert km.is_alive()
    reply, msgs = run_cell(kc, "1 + 1")
    assert reply["status"] == "ok", reply
    assert result_text(msgs) == "2"
    # The variables are gone, and the error says which name is unknown.
    reply, _ = run_cell(kc, "x + 1")
    assert reply["status"] == "error" and reply["ename"] == "CompilationError"


def test_interrupt_while_compiling_keeps_the_variables(rk):
    km, kc = rk
    reply, _ = run_cell(kc, "let kept = 5;")
    assert reply["status"] == "ok", reply
    # A cell that takes a while to compile: many distinct generic instantiations.
    body = "".join(f"t += f::<{i}>();\n" for i in range(3000))
    code = "fn f<const N: usize>() -> usize { N }\nlet s = { let mut t = 0;\n" + body + "t };"
    msg_id = kc.execute(code)
    time.sleep(1.5)
    km.interrupt_kernel()
    while True:
        reply = kc.get_shell_msg(timeout=60)
        if reply["parent_header"].get("msg_id") == msg_id:
            break
    c = reply["content"]
    if c["status"] == "ok":
        pytest.skip("the cell compiled before the interrupt arrived")
    assert c["ename"] == "KeyboardInterrupt", c
    if "compiling" in c["evalue"]:
        reply, msgs = run_cell(kc, "kept")
        assert result_text(msgs) == "5"


def test_without_a_toolchain_rust_cells_give_one_clear_error():
    env = dict(os.environ)
    env["PATH"] = "/usr/bin:/bin"
    km, kc = start_new_kernel(kernel_name="beamtime", startup_timeout=60, env=env)
    try:
        reply, msgs = run_cell(kc, "1 + 1")
        assert reply["status"] == "error"
        assert reply["ename"] == "RustUnavailable"
        assert "cargo" in reply["evalue"] and "rustup" in reply["evalue"]
        assert types(msgs) == ["status", "execute_input", "error", "status"]
        reply, msgs = run_cell(kc, "%help")
        assert reply["status"] == "ok"
        reply, msgs = run_cell(kc, f"{LOAD}\n")
        assert reply["status"] == "ok"
        kc.complete("let a = 1;\na", 12)
        assert kc.get_shell_msg(timeout=10)["content"]["matches"] == []
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=False)
