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


def run_cell(kc, code, timeout=60, others=None, **kw):
    """Executes `code`; returns (reply content, iopub messages of this request, busy→idle).
    With a list `others`, the iopub messages of other requests (live displays updating in the
    background) are kept there instead of dropped."""
    msg_id = kc.execute(code, **kw)
    reply = kc.get_shell_msg(timeout=timeout)
    while reply["parent_header"].get("msg_id") != msg_id:
        reply = kc.get_shell_msg(timeout=timeout)
    msgs = []
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            if others is not None:
                others.append(m)
            continue
        msgs.append(m)
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return reply["content"], msgs


def texts(msgs, kind=None):
    """The text of iopub messages (of one `kind`, or all): results, streams, errors."""
    out = []
    for m in msgs:
        if kind and m["msg_type"] != kind:
            continue
        c = m["content"]
        if "data" in c:
            out.append(c["data"].get("text/plain", ""))
        elif m["msg_type"] == "stream":
            out.append(c["text"])
        elif m["msg_type"] == "error":
            out.append(c["ename"] + ": " + c["evalue"])
    return "\n".join(out)
