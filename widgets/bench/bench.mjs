// Frame→paint latency of the widget in headless Chromium, outside Jupyter: a static page with a
// minimal in-page model (get/set/on/off/send/save_changes) receives Arrow IPC `replace` (or
// `append`) messages at 10 Hz, then at 60 Hz (the kernel's ceiling per widget); the widget's
// bench hook records, per message, the time from its arrival to the end of the animation frame
// that painted it. `image1m` is a live 1-megapixel detector image (1024 × 1024 Float32, a flat
// List<Float32> with beamtime:shapes) replaced at 10 Hz for 5 s. Usage: node bench/bench.mjs [--seconds 10] [--hz 10] [--only line,hist] [--json out]
import http from "node:http";
import { readFileSync, writeFileSync, mkdirSync } from "node:fs";
import { fileURLToPath } from "node:url";
import path from "node:path";
import os from "node:os";
import { chromium } from "playwright-core";
import * as arrow from "apache-arrow";

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, "..");
const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const SECONDS = Number(opt("seconds", "10"));
const HZ = Number(opt("hz", "10"));
const VARIANTS = 16;

// ---- data: VARIANTS different tables per scenario, as Arrow IPC streams -------------------
function ipc(cols) {
  return arrow.tableToIPC(arrow.tableFromArrays(cols), "stream");
}
function lineData(k) {
  const n = 1000, x = new Float64Array(n), y = new Float64Array(n), s = new Float64Array(n), c = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    x[i] = i;
    y[i] = Math.sin(i / 50 + k / 3) + 0.05 * Math.random();
    s[i] = 0.1 + 0.05 * Math.random();
    c[i] = 100;
  }
  return ipc({ delay: x, signal: y, signal_std: s, n: c });
}
function histData(k) {
  const n = 100, e = new Float64Array(n), c = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    e[i] = i * 0.1;
    c[i] = Math.round(1000 * Math.exp(-(((i - 50 - k) / 15) ** 2)) + 10 * Math.random());
  }
  return ipc({ hist: e, count: c });
}
function tableData(k) {
  const n = 10000, id = new Int32Array(n), v = new Float64Array(n), name = [];
  for (let i = 0; i < n; i++) {
    id[i] = i;
    v[i] = Math.random() * 1000 + k;
    name.push(`det${i % 17}.raw.${k}`);
  }
  return arrow.tableToIPC(
    new arrow.Table({ id: arrow.makeVector(id), name: arrow.vectorFromArray(name, new arrow.Utf8()), value: arrow.makeVector(v) }),
    "stream",
  );
}
function heatmapData(k) {
  const n = 256, x = new Float64Array(n * n), y = new Float64Array(n * n), z = new Float64Array(n * n);
  for (let j = 0; j < n; j++)
    for (let i = 0; i < n; i++) {
      const r = j * n + i;
      x[r] = i;
      y[r] = j;
      z[r] = Math.sin((i + 4 * k) / 20) * Math.cos(j / 25) + 0.1 * Math.random();
    }
  return ipc({ px: x, py: y, intensity: z });
}
function imageData(k) {
  const n = 256;
  const rows = [];
  for (let j = 0; j < n; j++) {
    const r = new Float32Array(n);
    for (let i = 0; i < n; i++) r[i] = Math.sin((i + 4 * k) / 20) * Math.cos(j / 25);
    rows.push(r);
  }
  const t = new arrow.List(new arrow.Field("item", new arrow.List(new arrow.Field("item", new arrow.Float32()))));
  return arrow.tableToIPC(new arrow.Table({ image: arrow.vectorFromArray([rows.map((r) => Array.from(r))], t) }), "stream");
}
/** A live detector image: 1024 × 1024 Float32 (one flat List<Float32> row, beamtime:shapes). */
function image1mData(k) {
  const n = 1024, a = new Float32Array(n * n);
  for (let r = 0; r < n; r++)
    for (let c = 0; c < n; c++) {
      const d = Math.hypot(r - 512 - 3 * k, c - 500);
      a[r * n + c] = 50 * Math.exp(-(((d - 200 - 4 * k) / 12) ** 2)) + 5 * Math.random();
    }
  const vt = new arrow.Float32();
  const child = arrow.makeData({ type: vt, length: a.length, nullCount: 0, data: a });
  const type = new arrow.List(new arrow.Field("item", vt, true));
  const vec = arrow.makeVector(arrow.makeData({ type, length: 1, nullCount: 0, valueOffsets: Int32Array.from([0, a.length]), child }));
  const t = new arrow.Table({ image: vec });
  const schema = new arrow.Schema(t.schema.fields, new Map([["beamtime:keys", ""], ["beamtime:shapes", JSON.stringify({ image: [n, n] })]]));
  return arrow.tableToIPC(new arrow.Table(schema, t.batches.map((b) => new arrow.RecordBatch(schema, b.data))), "stream");
}
function rowsData(k) {
  const n = 100, a = new Float64Array(n), b = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    a[i] = 1 + 0.3 * Math.random();
    b[i] = 0.5 * a[i] + 0.05 * Math.random() + 0.001 * k;
  }
  return ipc({ ipm: a, diode: b });
}
const SCENARIOS = [
  { name: "line", label: "line, 1 k points (+ error bars)", kind: "auto", make: lineData },
  { name: "hist", label: "histogram, 100 bins", kind: "auto", make: histData },
  { name: "table", label: "table, 10 k rows", kind: "table", make: tableData },
  { name: "heatmap", label: "heatmap 256×256 (x, y, value rows)", kind: "auto", make: heatmapData },
  { name: "image", label: "image 256×256 (list of lists)", kind: "auto", make: imageData },
  { name: "image1m", label: "image 1024×1024 Float32 (1 Mpx, 4 MB)", kind: "auto", make: image1mData, variants: 8, seconds: 5 },
  { name: "rows", label: "scatter, appends of 100 rows (≤ 100 k kept)", kind: "auto", make: rowsData, op: "append" },
];
const blobs = new Map();
for (const s of SCENARIOS) for (let k = 0; k < (s.variants ?? VARIANTS); k++) blobs.set(`/data/${s.name}-${k}.arrows`, Buffer.from(s.make(k)));

// ---- page ----------------------------------------------------------------------------------
const PAGE = `<!doctype html><html><head><meta charset="utf-8"><title>beamtime widget bench</title></head>
<body style="width:900px"><div id="w"></div><script type="module">
import widget from "/dist/beamtime-widget.js";
class Model {
  constructor(state) { this.state = state; this.h = {}; this.sent = []; }
  get(k) { return this.state[k]; }
  set(k, v) { this.state[k] = v; this.emit("change:" + k); }
  save_changes() {}
  send(c) { this.sent.push(c); }
  on(e, cb) { (this.h[e] ||= []).push(cb); }
  off(e, cb) { if (this.h[e]) this.h[e] = this.h[e].filter((f) => f !== cb); }
  emit(e, ...a) { for (const cb of this.h[e] || []) cb(...a); }
}
window.run = async (name, kind, variants, hz, seconds, flood, op = "replace") => {
  const bufs = [];
  for (let k = 0; k < variants; k++) {
    const ab = await (await fetch("/data/" + name + "-" + k + ".arrows")).arrayBuffer();
    bufs.push(new DataView(ab));
  }
  const el = document.getElementById("w");
  if (window.__cleanup) window.__cleanup();
  el.replaceChildren();
  const model = new Model({ kind, x: null, y: null, title: name, snapshot: null,
    status: { events: 0, included: 0, dropped: 0, rate: 0, ranks_alive: 4, ranks_total: 4, age_s: 0.1 } });
  const cleanup = widget.render({ model, el });
  const root = el.querySelector(".beamtime-widget");
  // warm-up: one message, two frames
  model.emit("msg:custom", { type: "replace", seq: 0 }, [bufs[0]]);
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  window.__beamtimeBench = [];
  const f0 = Number(root.dataset.frames);
  let seq = 1, sent = 0;
  const t0 = performance.now();
  await new Promise((done) => {
    if (flood) {
      // The kernel's ceiling (≤ 60 messages/s per widget), data only.
      const id = setInterval(() => {
        if (performance.now() - t0 > seconds * 1000) { clearInterval(id); return done(); }
        model.emit("msg:custom", { type: op, seq }, [bufs[seq % variants]]);
        seq++; sent++;
      }, 1000 / 60);
    } else {
      const id = setInterval(() => {
        if (performance.now() - t0 > seconds * 1000) { clearInterval(id); return done(); }
        model.emit("msg:custom", { type: op, seq }, [bufs[seq % variants]]);
        model.emit("msg:custom", { type: "status", status: { events: seq * 1000, included: seq * 900, dropped: 0,
          rate: 10000, ranks_alive: 4, ranks_total: 4, age_s: 0.2 } });
        seq++; sent++;
      }, 1000 / hz);
    }
  });
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  const elapsed = (performance.now() - t0) / 1000;
  const lat = window.__beamtimeBench.slice().sort((a, b) => a - b);
  window.__beamtimeBench = undefined;
  const q = (p) => lat.length ? lat[Math.min(lat.length - 1, Math.floor(p * lat.length))] : NaN;
  const out = { name, sent, painted: lat.length, frames: Number(root.dataset.frames) - f0, elapsed,
    p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1], kind: root.dataset.kind, rows: Number(root.dataset.rows),
    lastSeq: Number(root.dataset.seq), shape: root.querySelector(".bt-image")?.dataset.shape };
  window.__cleanup = cleanup;
  return out;
};
window.ready = true;
</script></body></html>`;

const server = http.createServer((req, res) => {
  const url = req.url.split("?")[0];
  if (url === "/" || url === "/index.html") {
    res.writeHead(200, { "content-type": "text/html" });
    return res.end(PAGE);
  }
  if (url === "/dist/beamtime-widget.js") {
    res.writeHead(200, { "content-type": "text/javascript" });
    return res.end(readFileSync(path.join(root, "dist/beamtime-widget.js")));
  }
  if (blobs.has(url)) {
    res.writeHead(200, { "content-type": "application/octet-stream" });
    return res.end(blobs.get(url));
  }
  res.writeHead(404);
  res.end();
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}`;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--no-first-run", "--disable-sync"],
});
const results = [];
try {
  const page = await browser.newPage({ viewport: { width: 1000, height: 700 } });
  page.on("console", (m) => m.type() === "error" && console.error("page:", m.text()));
  page.on("pageerror", (e) => console.error("page error:", e.message));
  await page.goto(base);
  await page.waitForFunction(() => window.ready === true);
  const only = opt("only", "");
  mkdirSync(path.join(here, "artifacts"), { recursive: true });
  for (const s of SCENARIOS) {
    if (only && !only.split(",").includes(s.name)) continue;
    const op = s.op || "replace";
    const nv = s.variants ?? VARIANTS;
    const secs = args.includes("--seconds") ? SECONDS : s.seconds ?? SECONDS;
    const r = await page.evaluate(([n, k, v, hz, sec, op]) => window.run(n, k, v, hz, sec, false, op), [s.name, s.kind, nv, HZ, secs, op]);
    await page.screenshot({ path: path.join(here, "artifacts", `${s.name}.png`) });
    const f = await page.evaluate(([n, k, v, sec, op]) => window.run(n, k, v, 0, sec, true, op), [s.name, s.kind, nv, Math.max(3, secs / 2), op]);
    const row = { ...r, label: s.label, flood_rows: f.rows, flood_sent_per_s: f.sent / f.elapsed, flood_painted_frames_per_s: f.frames / f.elapsed, flood_p50: f.p50, flood_p99: f.p99 };
    results.push(row);
    console.log(
      `${s.label.padEnd(40)} ${(r.kind + (r.shape ? " " + r.shape : "")).padEnd(8)} ${HZ} Hz: p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, ` +
        `${r.painted}/${r.sent} msgs painted in ${r.frames} frames; 60 Hz: ${row.flood_sent_per_s.toFixed(0)} msg/s in, ` +
        `${row.flood_painted_frames_per_s.toFixed(1)} frames/s painted (p50 ${f.p50.toFixed(1)} ms, p99 ${f.p99.toFixed(1)} ms)`,
    );
  }
  const out = opt("json", "");
  if (out) writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), cores: os.cpus().length, chromium: browser.version(), hz: HZ, seconds: SECONDS, results }, null, 2));
} finally {
  await browser.close();
  server.close();
}
