"""A Python stand-in for the beamtime kernel's live widget, for the browser tests.

`Demo` is an anywidget that loads widgets/dist/beamtime-widget.js and speaks the same contract as
the Rust kernel (traits kind/x/y/title/snapshot/status; custom messages append/replace/status
out, sync/pause/reset in), pushing pyarrow IPC streams from a background thread every `period` s.
Sources: "agg" (per-step means with std and n: a line with error bars), "table" (a string key:
a table), "hist" (bin lower edges + counts), "heatmap" (two keys + a value), "rows" (a row query
of two floats: a scatter, appended), "strip" (time + value rows, appended).
"""
import math
import os
import pathlib
import random
import threading
import time

import anywidget
import pyarrow as pa
import traitlets

ESM = pathlib.Path(
    os.environ.get("BEAMTIME_WIDGET_JS")
    or pathlib.Path(__file__).resolve().parents[2] / "widgets" / "dist" / "beamtime-widget.js"
)


def ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


class Demo(anywidget.AnyWidget):
    _esm = ESM.read_text()
    kind = traitlets.Unicode("auto").tag(sync=True)
    x = traitlets.Any(None).tag(sync=True)
    y = traitlets.Any(None).tag(sync=True)
    title = traitlets.Unicode("").tag(sync=True)
    snapshot = traitlets.Bytes(b"").tag(sync=True)
    status = traitlets.Dict({}).tag(sync=True)

    def __init__(self, source="agg", period=0.1, max_rows=2000, **kw):
        kw.setdefault("title", f"demo: {source}")
        super().__init__(**kw)
        self.source = source
        self.period = period
        self.max_rows = max_rows
        self.lock = threading.Lock()
        self.seq = 0
        self.tick = 0
        self.since_reset = 0
        self.events = 0
        self.paused = False
        self.table = self.make(0)
        self.received = []
        self.on_msg(self._on_msg)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"demo-{source}", daemon=True)
        self._thread.start()

    # -- data ---------------------------------------------------------------------------------
    def make(self, k):
        """The full result at tick k (aggregates) or the new rows of tick k (row queries)."""
        s = self.source
        if s == "agg":
            steps = list(range(min(20, self.since_reset)))
            n = [10 * (self.since_reset - i) for i in steps]
            return pa.table({
                "step": pa.array(steps, pa.int64()),
                "signal": [math.sin(i / 3 + k / 10) for i in steps],
                "signal_std": [0.2 + 0.05 * math.cos(i + k) for i in steps],
                "n": pa.array(n, pa.int64()),
            })
        if s == "table":
            dets = ["ipm2", "diode", "gmd", "cspad", "epix"][: max(0, min(5, self.since_reset))]
            return pa.table({
                "det": pa.array(dets, pa.string()),
                "mean": [round(100 * math.sin(k / 7 + i), 3) for i, _ in enumerate(dets)],
                "count": pa.array([k * 10 + i for i, _ in enumerate(dets)], pa.int64()),
            })
        if s == "hist":
            lo = [round(0.1 * i, 3) for i in range(100)]
            mu = 5 + 2 * math.sin(k / 10)
            c = [int(self.since_reset * 10 * math.exp(-(((e - mu) / 1.2) ** 2))) for e in lo]
            return pa.table({"hist": lo, "count": pa.array(c, pa.int64())})
        if s == "heatmap":
            n = 48
            xs, ys, v = [], [], []
            for j in range(n):
                for i in range(n):
                    xs.append(i)
                    ys.append(j)
                    v.append(math.sin((i + k) / 6) * math.cos(j / 8))
            return pa.table({"px": pa.array(xs, pa.int64()), "py": pa.array(ys, pa.int64()), "intensity": v})
        if s == "rows":
            m = 20
            ipm = [random.gauss(1.0, 0.3) for _ in range(m)]
            return pa.table({"ipm": ipm, "diode": [0.5 * a + random.gauss(0, 0.05) for a in ipm]})
        if s == "strip":
            now = time.time()
            ts = [int((now - 0.1 + 0.02 * i) * 1e6) for i in range(5)]
            return pa.table({
                "time": pa.array(ts, pa.timestamp("us", tz="UTC")),
                "rate": [1000 + 100 * math.sin((k * 5 + i) / 20) for i in range(5)],
            })
        raise ValueError(f"unknown source {s!r}")

    @property
    def appends(self):
        return self.source in ("rows", "strip")

    def status_now(self):
        return {
            "query": f"SELECT … ({self.source})", "seq": self.seq, "mode": "run",
            "events": self.events, "included": int(self.events * 0.9), "dropped": 0,
            "rate": 1200.0 + 50 * math.sin(self.tick / 5), "ranks_alive": 3, "ranks_total": 3,
            "stalled": [], "dead": [], "age_s": 0.3, "done": False, "error": None,
            "paused": self.paused,
        }

    # -- the contract -------------------------------------------------------------------------
    def _on_msg(self, _widget, content, _buffers):
        self.received.append(content)
        t = content.get("type") if isinstance(content, dict) else None
        with self.lock:
            if t == "sync":
                self.send({"type": "replace", "seq": self.seq}, buffers=[ipc(self.table)])
            elif t == "pause":
                self.paused = bool(content.get("paused"))
                self.send({"type": "status", "status": self.status_now()})
            elif t == "reset":
                self.since_reset = 0
                self.seq += 1
                self.table = self.make(self.tick).slice(0, 0)
                self.send({"type": "replace", "seq": self.seq}, buffers=[ipc(self.table)])

    def _step(self):
        with self.lock:
            self.tick += 1
            self.events += 120
            if self.paused:
                self.send({"type": "status", "status": self.status_now()})
                return
            self.since_reset += 1
            prev = self.seq
            self.seq += 1
            new = self.make(self.tick)
            if self.appends:
                t = pa.concat_tables([self.table, new]) if self.table.num_rows else new
                self.table = t.slice(max(0, t.num_rows - self.max_rows))
                self.send({"type": "append", "seq": self.seq, "prev": prev}, buffers=[ipc(new)])
            else:
                self.table = new
                self.send({"type": "replace", "seq": self.seq}, buffers=[ipc(new)])
            st = self.status_now()
            self.send({"type": "status", "status": st})
            if self.tick % 10 == 0:
                # The stored state (what a reload or a saved notebook shows first), once a second.
                with self.hold_sync():
                    self.status = st
                    self.snapshot = ipc(self.table)

    def _run(self):
        while not self._stop.wait(self.period):
            if self.comm is None:
                return
            try:
                self._step()
            except Exception as e:  # the comm closed under us
                print("demo widget stopped:", e)
                return

    def stop(self):
        self._stop.set()
