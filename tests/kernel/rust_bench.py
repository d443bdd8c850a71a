#!/usr/bin/env python3
"""Rust-cell latency through jupyter_client (issue: kernel, "Report first-Rust-cell and
warm-Rust-cell times"). Not a test: results go into BENCHMARKS.md by hand.

Measures execute_request → idle:
  start   – kernel process start → kernel_info_reply (evcxr is not created yet);
  first   – the first Rust cell of a fresh kernel: evcxr starts (rust-analyzer, runtime process),
            compiles its probe cell and the `beamtime` prelude crate, then the cell itself;
  warm    – later cells on the same kernel, median and p90 of N each;
  polars  – with --polars: `:dep beamtime = { features = ["polars"] }` (compiles polars inside
            evcxr, once per kernel unless evcxr's `:cache` holds it) and a DataFrame cell.

Usage: rust_bench.py [--kernels K] [--n N] [--polars] [--cache MiB]
(BEAMTIME_BIN selects the binary, by default the debug build; the kernelspec goes into a
temporary JUPYTER_DATA_DIR.)
"""
import argparse
import atexit
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("--kernels", type=int, default=3, help="fresh kernels for the first-cell time")
ap.add_argument("--n", type=int, default=10, help="runs of each warm cell")
ap.add_argument("--polars", action="store_true", help="also time the polars prelude (minutes)")
ap.add_argument("--cache", type=int, default=0, help="evcxr :cache size (MiB) before the polars dep")
args = ap.parse_args()

data = tempfile.mkdtemp(prefix="beamtime-rust-bench-")
os.environ["JUPYTER_DATA_DIR"] = data
os.environ["JUPYTER_PATH"] = data
target = os.environ.get("CARGO_TARGET_DIR", os.path.expanduser("~/.cache/beamtime/target"))
binary = os.environ.get("BEAMTIME_BIN", os.path.join(target, "debug", "beamtime"))
subprocess.run([binary, "install", "--user"], check=True, capture_output=True)
ROOT = pathlib.Path(__file__).resolve().parents[2]
SHARED = pathlib.Path(os.environ.get("BEAMTIME_SHARED", ROOT.parent / "shared"))
LOAD = f"%load run events exp=xpptut15:run=14:dir={SHARED / 'data/xtc2/mixed_rate'}"

from jupyter_client.manager import KernelManager  # noqa: E402


LIVE = []


@atexit.register
def _stop_all():
    for km, kc in LIVE:
        try:
            stop(km, kc)
        except Exception:
            pass


def start():
    km = KernelManager(kernel_name="beamtime")
    t = time.perf_counter()
    km.start_kernel()
    kc = km.client()
    kc.start_channels()
    kc.wait_for_ready(timeout=60)
    LIVE.append((km, kc))
    return km, kc, time.perf_counter() - t


def stop(km, kc):
    if (km, kc) in LIVE:
        LIVE.remove((km, kc))
    kc.stop_channels()
    km.shutdown_kernel(now=False)


def cell(kc, code, timeout=3600):
    t = time.perf_counter()
    msg_id = kc.execute(code)
    status = None
    while True:
        m = kc.get_iopub_msg(timeout=timeout)
        if m["parent_header"].get("msg_id") != msg_id:
            continue
        if m["msg_type"] == "error":
            status = m["content"]["ename"] + ": " + m["content"]["evalue"]
        if m["msg_type"] == "status" and m["content"]["execution_state"] == "idle":
            break
    dt = time.perf_counter() - t
    if status:
        sys.exit(f"cell failed: {code!r}: {status}")
    return dt


def fmt(x):
    return f"{x:.2f}"


starts, firsts = [], []
for _ in range(args.kernels):
    km, kc, s = start()
    starts.append(s)
    firsts.append(cell(kc, "1 + 2"))
    stop(km, kc)

km, kc, _ = start()
cell(kc, "let x = 41;")
cell(kc, LOAD)
warm_cells = [
    ("expression", "x + 1"),
    ("println", 'println!("hello");'),
    ("new variable", "let v: Vec<u64> = (0..1000).collect();"),
    ("loop + result", "(0..1_000_000u64).map(|i| i % 7).sum::<u64>()"),
    ("table column (bridge)", 'beamtime::column("events", "xpphsd.fex.intFex").unwrap().len()'),
]
warm = []
for name, code in warm_cells:
    cell(kc, code)
    ts = sorted(cell(kc, code) for _ in range(args.n))
    warm.append((name, code, statistics.median(ts), ts[min(len(ts) - 1, int(0.9 * len(ts)))]))

polars = []
if args.polars:
    if args.cache:
        cell(kc, f":cache {args.cache}")
    polars.append(("`:dep beamtime = { features = [\"polars\"] }` (compiles polars)", cell(kc, ':dep beamtime = { features = ["polars"] }')))
    code = 'let df = beamtime::table("events").unwrap();\ndf.height()'
    polars.append(("first DataFrame cell", cell(kc, code)))
    ts = sorted(cell(kc, code) for _ in range(args.n))
    polars.append((f"the same cell, warm (median of {args.n})", statistics.median(ts)))
stop(km, kc)

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.processor())
print(f"{time.strftime('%Y-%m-%d')} · {cpu}, {os.cpu_count()} cores · {os.path.basename(os.path.dirname(binary))} binary")
print()
print(f"| what | seconds |")
print("|---|---|")
print(f"| kernel start → kernel_info_reply (median of {args.kernels}) | {fmt(statistics.median(starts))} |")
print(f"| first Rust cell `1 + 2`, fresh kernel (median of {args.kernels}; all: {', '.join(fmt(f) for f in firsts)}) | {fmt(statistics.median(firsts))} |")
print()
print(f"| warm cell | code | median (s) | p90 (s) |")
print("|---|---|---|---|")
for name, code, med, p90 in warm:
    code = code.replace("|", "\\|")
    print(f"| {name} | `{code}` | {fmt(med)} | {fmt(p90)} |")
if polars:
    print()
    print("| polars prelude | seconds |")
    print("|---|---|")
    for name, t in polars:
        print(f"| {name} | {fmt(t)} |")
