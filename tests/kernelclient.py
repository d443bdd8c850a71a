"""What the Python suites share to talk to the Beamtime kernel: where its binary is, and running
one cell through a jupyter_client to its idle, running the `beamtime` command."""
import os


def beamtime_bin() -> str:
    """$BEAMTIME_BIN (set by `make test`), else the debug build in the cargo target dir."""
    if os.environ.get("BEAMTIME_BIN"):
        return os.environ["BEAMTIME_BIN"]
    target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/beamtime/target"))
    return os.path.join(target, "debug", "beamtime")


def run_beamtime(*args, check=True, timeout=300):
    """`beamtime ARGS…` as a subprocess; with `check`, a non-zero exit fails the test with stderr."""
    import subprocess
    p = subprocess.run([beamtime_bin(), *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert p.returncode == 0, p.stderr
    return p


def run_cell(kc, code, timeout=60, **kw):
    """Executes `code`; returns (reply content, iopub messages of this request, busy→idle)."""
    msg_id = kc.execute(code, **kw)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    msgs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        msgs.append(m)
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return reply["content"], msgs
