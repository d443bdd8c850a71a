// beamtime's anywidget ES module: live Arrow results as a table or plots, with a status line.
//
// The contract with the kernel (anywidget AnyModel; all traits optional):
//   kind      "auto" | "table" | "line" | "scatter" | "hist" | "heatmap" | "strip" | "image" |
//             "profile" (default auto)
//   x, y      column name(s) overriding the choice (y: a string or a list); heatmap: x = the
//             horizontal key, y = [vertical key, value]
//   title     string (else status.query)
//   snapshot  Arrow IPC stream bytes of the whole current result (buffer_paths [["snapshot"]]);
//             its seq is status.seq sent in the same update; empty bytes = nothing yet
//   status    {query, seq, mode, events, included, dropped, rate, mean_rate, ranks_alive, ranks_total,
//              stalled: [], dead: [], age_s, done, error, paused}, any key null or missing
//   max_rows  rows kept in the browser (default 100 000; appends beyond drop the oldest)
//   height    plot/table height in px (default 320)
//   overlays  drawn over images, in original pixel coordinates (a list, or its JSON text):
//             {kind: "rect", r0, r1, c0, c1, label} = rows r0 ≤ r < r1, cols c0 ≤ c < c1;
//             {kind: "ring", cx, cy, r, label} = pixels (row, col) at distance r from (cy, cx)
//             (centre column cx, row cy, radius in pixels); thin white lines on a dark halo
// Custom messages kernel → front end: {type: "replace", seq} + one buffer (a self-contained IPC
// stream: the whole table; zero rows with the schema clears it), {type: "append", seq, prev,
// drop} + one buffer (new rows; first the table's `drop` oldest rows go — a sliding window —
// then the rows are appended and the table cut to max_rows; an append whose seq ≤ the table's
// is skipped, one with another schema starts a new table; `prev` = the seq of the table it
// extends: when that is not the widget's, rows were missed, the append is not applied and the
// widget sends a sync, at most once a second),
// {type: "status", status}. Front end → kernel: {type: "sync"} on every render
// (answer with a replace), {type: "pause", paused: bool}, {type: "reset"}.
// Everything received is queued and applied once per animation frame (never per message).
// kind "auto" (src/choose.ts): a list column named hist* → bars of its last row; a list-of-lists
// column → image; first column a timestamp/date (or named time, timestamp, window, t…) → strip;
// (hist|bin|edge… lower edges or any x, a count column n|count|…) → bars; two numeric keys that fill a
// grid + a value → heatmap; a numeric first column that is unique and sorted (or whole numbers)
// → line, else two numeric columns → scatter; otherwise a table. Error bars on a line series y:
// ±y_err|y_sem as given, else ±y_std (or sqrt(y_var)) divided by sqrt(n) when a y_n, y_count, n or
// count column exists (the standard error of the mean), ±y_std alone otherwise.
// Optional schema metadata "beamtime:keys" = the GROUP BY key columns, comma-separated ("" for a
// row query), makes the auto choice exact; without it the choice comes from names and values.
// Array results (src/arrays.ts): a List<Float32|Float64> column, one flat row-major array per
// row. Schema metadata (JSON):
//   "beamtime:shapes"  {"<col>": [rows, cols]} or [segments, rows, cols] (a 3-D detector array:
//                      segments stacked vertically, one (segments·rows, cols) image); the shape
//                      shown, i.e. after binning
//   "beamtime:binning" {"<col>": [fr, fc]}: each shown pixel is the mean of an fr×fc block of
//                      original pixels; overlays and the hover readout are in original pixels
//                      (the block's row/col range), stacked rows for a 3-D array
//   "beamtime:axes"    {"<col>": {label, start, step}}: x of bin i of a 1-D array = start + i·step
//                      (else the bin index)
// A list column with a 2-D/3-D shape → "image"; a list column of numbers without one → "profile"
// (1-D arrays), except hist* columns (bars) and list-of-lists cells (heatmap), as before; `y`
// naming a list column picks it. image (src/image.ts): one row's array through the viridis LUT,
// nearest-neighbour scaled to the width keeping aspect (a tall one at most a square), linear or
// log colour (values ≤ 0 in log → the lowest colour; NaN → grey), autorange = the 1st–99.5th
// percentile of ≤ 64 k sampled finite values (log: of those > 0) or a fixed range (a fixed lower
// bound ≤ 0 in log → upper/1000), colour bar, row/col/value under the mouse; with several rows
// a selector labelled by the key values (default the last row; a chosen row is kept across
// updates while its label exists). profile: one uPlot series per row labelled by the keys
// (key=value); above 12 rows a button offers the map, which is kind "heatmap" on a profile
// column: bins (x from beamtime:axes) × rows ordered by the one numeric key (else row index).
import { Bytes, Frame, Op, Store } from "./data";
import { choose, Kind, KINDS, Plan } from "./choose";
import { Status, statusParts } from "./status";
import { TableView } from "./table";
import { PlotView } from "./plot";
import { HeatmapView } from "./heatmap";
import { ImageView, parseOverlays } from "./image";
import uplotCss from "uplot/dist/uPlot.min.css";
import ownCss from "./style.css";

export interface Model {
  get(name: string): any;
  set(name: string, value: unknown): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: ArrayBuffer[] | ArrayBufferView[]): void;
  on(event: string, cb: (...args: any[]) => void): void;
  off(event?: string | null, cb?: ((...args: any[]) => void) | null): void;
}

const STYLE_ID = "beamtime-widget-style-1";

function injectCss(): void {
  if (typeof document === "undefined" || document.getElementById(STYLE_ID)) return;
  const s = document.createElement("style");
  s.id = STYLE_ID;
  s.textContent = uplotCss + "\n" + ownCss;
  document.head.append(s);
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  if (text) e.textContent = text;
  return e;
}

type ViewImpl = TableView | PlotView | HeatmapView | ImageView;

/** Latency hook for the benchmark: arrival→paint times (ms) are pushed when it exists. */
declare global {
  // eslint-disable-next-line no-var
  var __beamtimeBench: number[] | undefined;
}

class Widget {
  private root: HTMLDivElement;
  private titleEl: HTMLSpanElement;
  private select: HTMLSelectElement;
  private pauseBtn: HTMLButtonElement;
  private body: HTMLDivElement;
  private statusEl: HTMLDivElement;
  private statusText: HTMLSpanElement;
  private statusWarn: HTMLSpanElement;
  private statusErr: HTMLSpanElement;
  private store = new Store();
  private frame: Frame | null = null;
  private view: ViewImpl | null = null;
  private viewKind: Kind | "" = "";
  private localKind = ""; // the dropdown's choice, "" = the model's kind
  private raf = 0;
  private dirtyData = false;
  private dirtyPlan = true;
  private dirtyStatus = true;
  private dirtyScroll = false;
  private frames = 0;
  private status: Status | null = null;
  private statusAt = 0;
  private paused = false;
  /** A Pause/Resume click not yet confirmed by a status (older statuses don't undo it). */
  private pausePending: { value: boolean; until: number } | null = null;
  private timer: ReturnType<typeof setInterval>;
  private ro: ResizeObserver | null = null;
  private height: number;
  private disposed = false;
  private lastSync = 0;

  constructor(private model: Model, private el: HTMLElement) {
    injectCss();
    this.height = Number(model.get("height")) || 320;
    this.store.maxRows = Number(model.get("max_rows")) || 100_000;
    this.root = h("div", "beamtime-widget");
    const bar = h("div", "beamtime-bar");
    this.titleEl = h("span", "beamtime-title");
    this.select = h("select", "beamtime-kind");
    this.select.title = "view";
    for (const k of ["", "auto", ...KINDS]) {
      const o = document.createElement("option");
      o.value = k;
      o.textContent = k === "" ? "view: model" : k;
      this.select.append(o);
    }
    this.select.addEventListener("change", () => {
      this.localKind = this.select.value;
      this.dirtyPlan = true;
      this.schedule();
    });
    this.pauseBtn = h("button", "beamtime-pause", "Pause");
    this.pauseBtn.type = "button";
    this.pauseBtn.addEventListener("click", () => {
      this.paused = !this.paused;
      this.pausePending = { value: this.paused, until: performance.now() + 3000 };
      this.model.send({ type: "pause", paused: this.paused });
      this.dirtyStatus = true;
      this.schedule();
    });
    const reset = h("button", "beamtime-reset", "Reset");
    reset.type = "button";
    reset.title = "restart this query's accumulators";
    reset.addEventListener("click", () => this.model.send({ type: "reset" }));
    bar.append(this.titleEl, this.select, this.pauseBtn, reset);
    this.body = h("div", "beamtime-body");
    this.statusEl = h("div", "beamtime-status");
    this.statusText = h("span", "bt-status-text");
    this.statusWarn = h("span", "bt-status-warn");
    this.statusErr = h("span", "bt-status-error");
    this.statusEl.append(this.statusText, this.statusWarn, this.statusErr);
    this.root.append(bar, this.body, this.statusEl);
    this.root.dataset.kind = "";
    this.root.dataset.rows = "0";
    this.root.dataset.frames = "0";
    this.root.dataset.seq = "-1";
    el.append(this.root);

    model.on("msg:custom", this.onCustom);
    model.on("change:snapshot", this.onSnapshot);
    model.on("change:status", this.onStatus);
    model.on("change:kind", this.onPlan);
    model.on("change:x", this.onPlan);
    model.on("change:y", this.onPlan);
    model.on("change:title", this.onPlan);
    model.on("change:overlays", this.onOverlays);
    this.onStatus();
    this.onSnapshot();
    // The current result comes back as a replace (custom messages aren't stored).
    model.send({ type: "sync" });
    this.lastSync = performance.now();
    // The age ticks between status messages.
    this.timer = setInterval(() => {
      if (this.status && this.status.age_s != null && !this.status.done) {
        this.dirtyStatus = true;
        this.schedule();
      }
    }, 250);
    if (typeof ResizeObserver !== "undefined") {
      let w = 0;
      this.ro = new ResizeObserver(() => {
        const nw = this.body.clientWidth;
        if (nw !== w) {
          w = nw;
          this.view?.resize?.();
        }
      });
      this.ro.observe(this.body);
    }
  }

  private onCustom = (msg: any, buffers?: DataView[]) => {
    if (!msg || typeof msg !== "object") return;
    const t = performance.now();
    if (msg.type === "append" || msg.type === "replace") {
      const num = (v: unknown) => (typeof v === "number" ? v : null);
      this.store.push({ kind: msg.type, seq: num(msg.seq), prev: num(msg.prev), drop: num(msg.drop), buf: buffers?.[0], t });
      this.dirtyData = true;
      this.schedule();
    } else if (msg.type === "status") {
      this.setStatus(msg.status);
    }
  };

  private onSnapshot = () => {
    const snap = this.model.get("snapshot") as Bytes;
    if (!snap || (ArrayBuffer.isView(snap) && snap.byteLength === 0)) return;
    const st = this.model.get("status") as Status | null;
    const seq = st && typeof st.seq === "number" ? st.seq : null;
    const op: Op = { kind: "replace", seq, buf: snap, t: performance.now() };
    // A snapshot older than what we hold is ignored.
    if (seq != null && this.store.seq >= 0 && seq < this.store.seq) return;
    this.store.push(op);
    this.dirtyData = true;
    this.schedule();
  };

  private onStatus = () => {
    this.setStatus(this.model.get("status"));
  };

  private onOverlays = () => {
    if (this.view instanceof ImageView) this.view.setOverlays(parseOverlays(this.model.get("overlays")));
  };

  /** An offered view taken (a profile's map): as if chosen in the dropdown. */
  private switchKind = (k: Kind) => {
    this.localKind = k;
    this.select.value = k;
    this.dirtyPlan = true;
    this.schedule();
  };

  private onPlan = () => {
    this.dirtyPlan = true;
    this.schedule();
  };

  private setStatus(s: Status | null): void {
    this.status = s && typeof s === "object" ? s : null;
    this.statusAt = performance.now();
    const sp = this.status?.paused;
    if (typeof sp === "boolean") {
      const pend = this.pausePending;
      if (pend && (sp === pend.value || performance.now() > pend.until)) this.pausePending = null;
      if (!this.pausePending) this.paused = sp;
    }
    this.dirtyStatus = true;
    this.schedule();
  }

  private schedule(): void {
    if (this.raf || this.disposed) return;
    this.raf = requestAnimationFrame(this.paint);
  }

  /** Scrolling a table repaints its rows on the next frame. */
  private scheduleScroll = () => {
    this.dirtyScroll = true;
    this.schedule();
  };

  private paint = () => {
    this.raf = 0;
    if (this.disposed) return;
    let painted = false;
    let arrivals: number[] = [];
    if (this.dirtyData) {
      this.dirtyData = false;
      try {
        arrivals = this.store.flush();
      } catch (e) {
        console.warn("beamtime: could not decode a frame", e);
        this.statusErr.textContent = `decode error: ${(e as Error).message}`;
      }
      const tb = this.store.table;
      this.frame = tb ? new Frame(tb, this.store.version) : null;
      if (this.store.gap) {
        // Rows were missed (e.g. a reload between the stored snapshot and now): ask for the whole
        // table again, at most once a second.
        this.store.gap = false;
        const now = performance.now();
        if (now - this.lastSync > 1000) {
          this.lastSync = now;
          this.model.send({ type: "sync" });
        }
      }
      this.dirtyPlan = true;
    }
    if (this.dirtyPlan) {
      this.dirtyPlan = false;
      this.render();
      painted = true;
    } else if (this.dirtyScroll && this.view instanceof TableView) {
      this.view.paint();
      painted = true;
    }
    this.dirtyScroll = false;
    if (this.dirtyStatus) {
      this.dirtyStatus = false;
      this.renderStatus();
      painted = true;
    }
    if (painted) {
      this.frames++;
      this.root.dataset.frames = String(this.frames);
    }
    const bench = globalThis.__beamtimeBench;
    if (bench && arrivals.length) {
      // After uPlot's own microtask commit: the frame's drawing is done.
      queueMicrotask(() => {
        const now = performance.now();
        for (const t of arrivals) bench.push(now - t);
      });
    }
  };

  private render(): void {
    const fr = this.frame;
    const want = this.localKind || String(this.model.get("kind") || "auto");
    const title = String(this.model.get("title") || "") || (this.status?.query ? String(this.status.query) : "");
    this.titleEl.textContent = title;
    this.titleEl.title = title;
    let plan: Plan;
    if (!fr) plan = { kind: want === "auto" ? "table" : (want as Kind), ys: [], err: {}, time: false };
    else {
      try {
        plan = choose(fr, want, this.model.get("x"), this.model.get("y"));
      } catch (e) {
        console.warn("beamtime: view choice failed", e);
        plan = { kind: "table", ys: [], err: {}, time: false };
      }
    }
    const kind = plan.kind;
    const impl = kind === "table" || kind === "heatmap" || kind === "image" ? kind : "plot";
    const cur =
      this.view instanceof TableView ? "table"
      : this.view instanceof HeatmapView ? "heatmap"
      : this.view instanceof ImageView ? "image"
      : this.view ? "plot" : "";
    if (impl !== cur) {
      this.view?.destroy();
      if (impl === "image") {
        const v = new ImageView(this.height);
        v.setOverlays(parseOverlays(this.model.get("overlays")));
        this.view = v;
      } else {
        this.view =
          impl === "table"
            ? new TableView(this.height, this.scheduleScroll)
            : impl === "heatmap"
              ? new HeatmapView(this.height)
              : new PlotView(this.height, this.switchKind);
      }
      this.body.replaceChildren(this.view.el);
    }
    this.viewKind = kind;
    if (this.view instanceof TableView) this.view.update(fr);
    else if (fr && this.view) {
      try {
        this.view.update(fr, plan);
      } catch (e) {
        console.warn("beamtime: plot failed", e);
        this.statusErr.textContent = `plot error: ${(e as Error).message}`;
      }
    }
    this.root.dataset.kind = kind;
    this.root.dataset.rows = String(fr ? fr.rows : 0);
    this.root.dataset.seq = String(this.store.seq);
  }

  private renderStatus(): void {
    const s = this.status;
    let age: number | null = null;
    if (s && typeof s.age_s === "number") {
      age = s.age_s + (s.done ? 0 : (performance.now() - this.statusAt) / 1000);
    }
    const p = statusParts(s, age);
    this.statusText.textContent = p.text;
    this.statusWarn.textContent = p.warn ? ` · ${p.warn}` : "";
    if (!this.statusErr.textContent?.startsWith("decode") && !this.statusErr.textContent?.startsWith("plot")) {
      this.statusErr.textContent = p.error ? ` · error: ${p.error}` : "";
    }
    this.statusEl.dataset.ageLevel = p.level;
    this.pauseBtn.textContent = this.paused ? "Resume" : "Pause";
    this.pauseBtn.classList.toggle("bt-active", this.paused);
    this.root.dataset.paused = String(this.paused);
  }

  dispose(): void {
    this.disposed = true;
    if (this.raf) cancelAnimationFrame(this.raf);
    clearInterval(this.timer);
    this.ro?.disconnect();
    this.model.off("msg:custom", this.onCustom);
    this.model.off("change:snapshot", this.onSnapshot);
    this.model.off("change:status", this.onStatus);
    for (const k of ["kind", "x", "y", "title"]) this.model.off(`change:${k}`, this.onPlan);
    this.model.off("change:overlays", this.onOverlays);
    this.view?.destroy();
    this.root.remove();
  }
}

export function render({ model, el }: { model: Model; el: HTMLElement }): () => void {
  const w = new Widget(model, el);
  return () => w.dispose();
}

export default { render };
