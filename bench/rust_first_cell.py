#!/usr/bin/env python3
"""The first Rust cells of a kernel, with evcxr warmed up in the background at kernel start and
without (issue 18, "Performance"), side by side in one run, rounds alternating.

Per round and setting: start → kernel_info_reply; then, after the kernel has been up WAIT s,
the first cell `let x = 41;`, the second `x + 1`, and a later `let y = x * 2;` (warm).
Usage: rust_first_cell.py [ROUNDS] [WAIT_S]  (BEAMTIME_BIN selects the binary; the kernelspec
goes into a temporary JUPYTER_DATA_DIR).
"""
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ROUNDS = int(sys.argv[1]) if len(sys.argv) > 1 else 3
WAIT_S = float(sys.argv[2]) if len(sys.argv) > 2 else 10.0
data = tempfile.mkdtemp(prefix="beamtime-bench-")
os.environ["JUPYTER_DATA_DIR"] = data
os.environ["JUPYTER_PATH"] = data
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/beamtime/target"))
binary = os.environ.get("BEAMTIME_BIN", os.path.join(target, "release", "beamtime"))
subprocess.run([binary, "install", "--user"], check=True, capture_output=True)

from jupyter_client.manager import KernelManager  # noqa: E402


def cell(kc, code):
    t = time.perf_counter()
    msg_id = kc.execute(code)
    while True:
        m = kc.get_iopub_msg(timeout=600)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "error":
            raise RuntimeError(m["content"])
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            return time.perf_counter() - t


def round_(warm):
    km = KernelManager(kernel_name="beamtime")
    t = time.perf_counter()
    km.start_kernel(env={**os.environ, "BEAMTIME_RUST_WARMUP": "1" if warm else "0"})
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    ready = time.perf_counter() - t
    time.sleep(max(0.0, WAIT_S - (time.perf_counter() - t)))
    try:
        return ready, cell(kc, "let x = 41;"), cell(kc, "x + 1"), cell(kc, "let y = x * 2;")
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


results = {False: [], True: []}
for _ in range(ROUNDS):
    for warm in (False, True):
        results[warm].append(round_(warm))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{time.strftime('%Y-%m-%d')} · {cpu}, {os.cpu_count()} cores · {ROUNDS} rounds, first cell {WAIT_S:.0f} s after the kernel started")
print()
print("| evcxr at kernel start | start → kernel_info_reply (ms) | first cell `let x = 41;` (s) | second `x + 1` (s) | later `let y = x * 2;` (s) |")
print("|---|---|---|---|---|")
for warm in (False, True):
    r = results[warm]
    med = [statistics.median(v[i] for v in r) for i in range(4)]
    print(f"| {'warmed in the background' if warm else 'started by the first cell'} | {1000 * med[0]:.0f} | {med[1]:.2f} | {med[2]:.2f} | {med[3]:.2f} |")
print()
print("all rounds (ready, first, second, later):")
for warm in (False, True):
    print(" ", "warm" if warm else "cold", [tuple(round(x, 2) for x in v) for v in results[warm]])
