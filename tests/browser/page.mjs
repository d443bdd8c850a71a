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

/** An Arrow IPC stream (base64) of a table given as {name: vector-or-array}. */
export function ipc(cols) {
  const vecs = {};
  for (const [k, v] of Object.entries(cols)) vecs[k] = v instanceof arrow.Vector ? v : arrow.vectorFromArray(v);
  return Buffer.from(arrow.tableToIPC(new arrow.Table(vecs), "stream")).toString("base64");
}
