#!/usr/bin/env python3
"""Kernel latency, side by side with ipykernel in the same run (issue: kernel, "Performance").

Measures, for each kernel:
  start  – process start → kernel_info_reply (jupyter_client start + wait_for_ready), median of N;
  magic  – execute a no-op-ish request (`%tables` for beamtime, `pass` for ipykernel) → idle,
           median and p90 over N round trips on one running kernel.
Usage: kernel_bench.py [N]   (BEAMTIME_BIN selects the binary; the kernelspec is installed into a
temporary JUPYTER_DATA_DIR.)
"""
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100
data = tempfile.mkdtemp(prefix="beamtime-bench-")
os.environ["JUPYTER_DATA_DIR"] = data
os.environ["JUPYTER_PATH"] = data
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/beamtime/target"))
binary = os.environ.get("BEAMTIME_BIN", os.path.join(target, "release", "beamtime"))
subprocess.run([binary, "install", "--user"], check=True, capture_output=True)
subprocess.run([sys.executable, "-m", "ipykernel", "install", "--user", "--name", "python3"], check=True, capture_output=True)

from jupyter_client.manager import KernelManager  # noqa: E402


def start_time(name):
    km = KernelManager(kernel_name=name)
    t = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    dt = time.perf_counter() - t
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return dt


def round_trips(name, code):
    km = KernelManager(kernel_name=name)
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    times = []
    for _ in range(N + 5):
        t = time.perf_counter()
        msg_id = kc.execute(code)
        while True:
            m = kc.get_iopub_msg(timeout=30)
            if m["parent_header"].get("msg_id") == msg_id and m["msg_type"] == "status" \
                    and m["content"]["execution_state"] == "idle":
                break
        times.append(time.perf_counter() - t)
    kc.stop_channels()
    km.shutdown_kernel(now=True)
    return times[5:]


def ms(x):
    return f"{1000 * x:.1f}"


rows = []
for name, code in (("beamtime", "%tables"), ("python3", "pass")):
    starts = [start_time(name) for _ in range(N)]
    rt = sorted(round_trips(name, code))
    rows.append((name, code, statistics.median(starts), statistics.median(rt), rt[int(0.9 * len(rt))]))

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{time.strftime('%Y-%m-%d')} · {cpu}, {os.cpu_count()} cores · {N} round trips, {N} starts each")
print()
print("| kernel | request | start → kernel_info_reply (median, ms) | execute → idle (median, ms) | p90 (ms) |")
print("|---|---|---|---|---|")
for name, code, s, med, p90 in rows:
    print(f"| {name} | `{code}` | {ms(s)} | {ms(med)} | {ms(p90)} |")
b, p = rows
print()
print(f"ratios beamtime/ipykernel: start {b[2] / p[2]:.2f}, round trip {b[3] / p[3]:.2f}")
