// The ES module alone in a static page, with a minimal in-page anywidget model
// (get/set/on/off/send/save_changes): fast checks of its contract without Jupyter.
import http from "node:http";
import { readFileSync } from "node:fs";
import path from "node:path";
import * as arrow from "apache-arrow";
import { REPO } from "./jupyter.mjs";

export { arrow };

const PAGE = `<!doctype html><html><head><meta charset="utf-8"></head><body style="width:900px">
<script type="module">
import widget from "/beamtime-widget.js";
class Model {
  constructor(state) { this.state = state; this.h = {}; this.sent = []; }
  get(k) { return this.state[k]; }
  set(k, v) { this.state[k] = v; this.emit("change:" + k); }
  save_changes() {}
  send(c, cb, bufs) { this.sent.push(c); }
  on(e, cb) { (this.h[e] ||= []).push(cb); }
  off(e, cb) { if (this.h[e]) this.h[e] = this.h[e].filter((f) => f !== cb); }
  emit(e, ...a) { for (const cb of this.h[e] || []) cb(...a); }
}
window.models = [];
/** base64 → DataView, placed at byte offset \`at\` of a larger buffer (to test misalignment). */
window.dv = (b64, at = 0) => {
  const s = atob(b64);
  const buf = new ArrayBuffer(s.length + at);
  const u = new Uint8Array(buf, at);
  for (let i = 0; i < s.length; i++) u[i] = s.charCodeAt(i);
  return new DataView(buf, at, s.length);
};
window.mount = (state) => {
  const el = document.createElement("div");
  document.body.append(el);
  const m = new Model({ kind: "auto", x: null, y: null, title: "", snapshot: null, status: {}, ...state });
  m.el = el;
  m.cleanup = widget.render({ model: m, el });
  window.models.push(m);
  return window.models.length - 1;
};
window.frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
window.hooks = (i) => {
  const e = window.models[i].el.querySelector(".beamtime-widget");
  return { kind: e.dataset.kind, rows: Number(e.dataset.rows), frames: Number(e.dataset.frames), seq: Number(e.dataset.seq),
    status: e.querySelector(".beamtime-status").textContent, age: e.querySelector(".beamtime-status").dataset.ageLevel };
};
window.ready = true;
</script></body></html>`;

export async function startPage(browser) {
  const server = http.createServer((req, res) => {
    if (req.url === "/") {
      res.writeHead(200, { "content-type": "text/html" });
      return res.end(PAGE);
    }
    if (req.url === "/beamtime-widget.js") {
      res.writeHead(200, { "content-type": "text/javascript" });
      return res.end(readFileSync(path.join(REPO, "widgets/dist/beamtime-widget.js")));
    }
    res.writeHead(req.url === "/favicon.ico" ? 204 : 404);
    res.end();
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  const page = await browser.newPage({ viewport: { width: 1000, height: 800 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => (m.type() === "error" || m.type() === "warning") && errors.push(m.text()));
  await page.goto(`http://127.0.0.1:${server.address().port}/`);
  await page.waitForFunction(() => window.ready === true);
  return { page, errors, close: () => new Promise((r) => server.close(r)) };
}

/** An Arrow IPC stream (base64) of a table given as {name: vector-or-array}, with optional
 * schema metadata {key: string or JSON-able value}. */
export function ipc(cols, meta = null) {
  const vecs = {};
  for (const [k, v] of Object.entries(cols)) vecs[k] = v instanceof arrow.Vector ? v : arrow.vectorFromArray(v);
  let t = new arrow.Table(vecs);
  if (meta) {
    const m = new Map(Object.entries(meta).map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
    const schema = new arrow.Schema(t.schema.fields, m);
    t = new arrow.Table(schema, t.batches.map((b) => new arrow.RecordBatch(schema, b.data)));
  }
  return Buffer.from(arrow.tableToIPC(t, "stream")).toString("base64");
}

/** A List<Float32|Float64> column: one flat array per row (as the kernel sends arrays). */
export function listCol(rows, f64 = false) {
  const total = rows.reduce((n, r) => n + r.length, 0);
  const flat = f64 ? new Float64Array(total) : new Float32Array(total);
  const offsets = new Int32Array(rows.length + 1);
  rows.forEach((r, i) => {
    flat.set(r, offsets[i]);
    offsets[i + 1] = offsets[i] + r.length;
  });
  const vt = f64 ? new arrow.Float64() : new arrow.Float32();
  const child = arrow.makeData({ type: vt, length: total, nullCount: 0, data: flat });
  const type = new arrow.List(new arrow.Field("item", vt, true));
  return arrow.makeVector(arrow.makeData({ type, length: rows.length, nullCount: 0, valueOffsets: offsets, child }));
}
