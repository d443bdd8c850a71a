// Images: one row of a 2-D array column (or a 3-D detector array, its segments stacked
// vertically) drawn with Canvas2D ImageData through the colour LUT, nearest-neighbour scaled to
// the widget's width keeping the aspect ratio, with ROI overlays, a colour bar, a value readout
// on hover and a row selector for GROUP BY results. Built for a live 1-megapixel image at 10 Hz:
// the ImageData and canvases are reused between updates, pixels go through a 32-bit LUT in one
// typed-array loop, the autorange is percentiles of ≤ 64 k samples.
import { Frame } from "./data";
import { Plan } from "./choose";
import { Flat, binningOf, keyColumns, rowArray, rowLabels, shapeOf } from "./arrays";
import { LUT, LUT32, MAX_SAMPLES, percentileRange, short } from "./colour";

/** An overlay in original pixel coordinates: rows r0 ≤ r < r1 × cols c0 ≤ c < c1, or a ring
 * around pixel (row cy, col cx) of radius r pixels. */
export interface Overlay {
  kind: "rect" | "ring";
  r0?: number;
  r1?: number;
  c0?: number;
  c1?: number;
  cx?: number;
  cy?: number;
  r?: number;
  label?: string;
}

/** The model's `overlays` trait: a list (or its JSON text) of rect/ring objects. */
export function parseOverlays(v: unknown): Overlay[] {
  if (typeof v === "string") {
    try {
      v = JSON.parse(v);
    } catch {
      return [];
    }
  }
  if (!Array.isArray(v)) return [];
  return v.filter((o) => o && typeof o === "object" && (o.kind === "rect" || o.kind === "ring"));
}

/** Autorange percentiles. */
export const P_LO = 0.01, P_HI = 0.995;
/** NaN pixels: opaque mid grey. */
const NAN_WORD = new Uint32Array(new Uint8ClampedArray([128, 128, 128, 255]).buffer)[0];
/** Width (css px) right of the image for the colour bar and its labels. */
const CB = 72;

interface Img {
  data: Flat | null;
  /** Shown (maybe binned) shape; rows = segs × segRows (segments stacked). */
  rows: number;
  cols: number;
  segs: number;
  segRows: number;
  /** Binning: each shown pixel is the mean of fr × fc original pixels. */
  fr: number;
  fc: number;
}

function h<K extends keyof HTMLElementTagNameMap>(tag: K, cls: string, text = ""): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  e.className = cls;
  if (text) e.textContent = text;
  return e;
}

function option(sel: HTMLSelectElement, value: string, text: string): void {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  sel.append(o);
}

export class ImageView {
  readonly el: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  private rowSel: HTMLSelectElement;
  private scaleSel: HTMLSelectElement;
  private rangeSel: HTMLSelectElement;
  private loIn: HTMLInputElement;
  private hiIn: HTMLInputElement;
  private readout: HTMLSpanElement;
  private off = document.createElement("canvas");
  private offCtx = this.off.getContext("2d")!;
  private cbar = document.createElement("canvas");
  private im: ImageData | null = null;
  private px: Uint32Array | null = null;
  private samples = new Float64Array(MAX_SAMPLES);
  private fr: Frame | null = null;
  private col = "";
  private labels: string[] = [];
  private labelsKey = "";
  /** The chosen row's label (kept across updates); null = the last row. */
  private rowKey: string | null = null;
  private log = false;
  private fixed = false;
  private fixLo = 0;
  private fixHi = 1;
  /** The range in use. */
  private lo = 0;
  private hi = 1;
  private img: Img | null = null;
  private overlays: Overlay[] = [];
  /** Shown pixel size in css px. */
  private scale = 1;
  private mouse: { x: number; y: number } | null = null;

  constructor(private height: number) {
    this.el = h("div", "bt-image");
    this.el.style.minHeight = `${Math.min(height, 120)}px`;
    const ctrl = h("div", "bt-img-ctrl");
    this.rowSel = h("select", "bt-img-row");
    this.rowSel.title = "which result row (GROUP BY keys)";
    this.rowSel.addEventListener("change", () => {
      const i = Number(this.rowSel.value);
      this.rowKey = this.labels[i] ?? null;
      this.pick();
      this.recolour();
    });
    this.scaleSel = h("select", "bt-img-scale");
    this.scaleSel.title = "colour scale";
    option(this.scaleSel, "linear", "linear");
    option(this.scaleSel, "log", "log");
    this.scaleSel.addEventListener("change", () => {
      this.log = this.scaleSel.value === "log";
      this.recolour();
    });
    this.rangeSel = h("select", "bt-img-range");
    this.rangeSel.title = "colour range: autorange (1st–99.5th percentile) or fixed";
    option(this.rangeSel, "auto", "auto range");
    option(this.rangeSel, "fixed", "fixed");
    this.loIn = h("input", "bt-img-lo");
    this.hiIn = h("input", "bt-img-hi");
    for (const [inp, t] of [[this.loIn, "lowest colour at"], [this.hiIn, "highest colour at"]] as const) {
      inp.type = "number";
      inp.step = "any";
      inp.title = t;
      inp.hidden = true;
      inp.addEventListener("input", () => this.readRange());
    }
    this.rangeSel.addEventListener("change", () => {
      this.fixed = this.rangeSel.value === "fixed";
      if (this.fixed) {
        // Start from the range in use.
        this.fixLo = this.lo;
        this.fixHi = this.hi;
        this.loIn.value = String(Number(this.lo.toPrecision(4)));
        this.hiIn.value = String(Number(this.hi.toPrecision(4)));
      }
      this.loIn.hidden = this.hiIn.hidden = !this.fixed;
      this.recolour();
    });
    this.readout = h("span", "bt-img-readout");
    ctrl.append(this.rowSel, this.scaleSel, this.rangeSel, this.loIn, this.hiIn, this.readout);
    this.rowSel.hidden = true;
    this.canvas = h("canvas", "bt-img-canvas");
    this.canvas.addEventListener("mousemove", (e) => {
      const r = this.canvas.getBoundingClientRect();
      this.mouse = { x: e.clientX - r.left, y: e.clientY - r.top };
      this.showReadout();
    });
    this.canvas.addEventListener("mouseleave", () => {
      this.mouse = null;
      this.showReadout();
    });
    this.el.append(ctrl, this.canvas);
    // The colour bar: 1 × 256, top = the highest colour.
    this.cbar.width = 1;
    this.cbar.height = 256;
    const cctx = this.cbar.getContext("2d")!;
    const cim = cctx.createImageData(1, 256);
    new Uint32Array(cim.data.buffer).forEach((_, k, a) => (a[k] = LUT32[255 - k]));
    cctx.putImageData(cim, 0, 0);
  }

  update(fr: Frame, plan: Plan): void {
    this.fr = fr;
    this.col = plan.list ?? "";
    const labels = fr.rows > 1 ? rowLabels(fr, keyColumns(fr)) : [];
    const key = labels.join("\n");
    if (key !== this.labelsKey) {
      this.labelsKey = key;
      this.labels = labels;
      this.rowSel.replaceChildren();
      labels.forEach((l, i) => option(this.rowSel, String(i), l));
      this.rowSel.hidden = labels.length < 2;
    }
    this.pick();
    this.recolour();
  }

  setOverlays(o: Overlay[]): void {
    this.overlays = o;
    this.compose();
  }

  resize(): void {
    this.compose();
  }

  destroy(): void {
    this.el.remove();
  }

  /** The shown row (the chosen key if present, else the last) and its array. */
  private pick(): void {
    const fr = this.fr;
    if (!fr || !this.col) {
      this.img = null;
      return;
    }
    let r = this.rowKey != null ? this.labels.indexOf(this.rowKey) : -1;
    if (r < 0) r = fr.rows - 1;
    if (this.labels.length > 1) this.rowSel.value = String(r);
    this.el.dataset.row = String(r);
    const data = r >= 0 ? rowArray(fr, this.col, r) : null;
    const shape = shapeOf(fr, this.col) ?? [1, data ? data.length : 0];
    const segs = shape.length === 3 ? shape[0] : 1;
    const segRows = shape[shape.length - 2];
    const [bfr, bfc] = [...binningOf(fr, this.col)];
    this.img = { data, rows: segs * segRows, cols: shape[shape.length - 1], segs, segRows, fr: bfr, fc: bfc };
  }

  private readRange(): void {
    const lo = Number(this.loIn.value), hi = Number(this.hiIn.value);
    if (this.loIn.value !== "" && Number.isFinite(lo)) this.fixLo = lo;
    if (this.hiIn.value !== "" && Number.isFinite(hi)) this.fixHi = hi;
    if (this.fixed) this.recolour();
  }

  /** Values → colours into the reused ImageData (one pass, no allocation), then compose. */
  private recolour(): void {
    const g = this.img;
    if (!g || !g.data || g.rows * g.cols === 0) {
      this.compose();
      return;
    }
    const { rows, cols } = g;
    if (!this.im || this.im.width !== cols || this.im.height !== rows) {
      this.off.width = cols;
      this.off.height = rows;
      this.im = this.offCtx.createImageData(cols, rows);
      this.px = new Uint32Array(this.im.data.buffer);
    }
    const px = this.px!;
    const d = g.data;
    const n = rows * cols;
    const m = Math.min(n, d.length);
    const log = this.log;
    let lo: number, hi: number;
    if (this.fixed) {
      lo = this.fixLo;
      hi = this.fixHi;
      if (log && !(lo > 0)) lo = hi > 0 ? hi / 1000 : 1;
    } else {
      const r = percentileRange(d, m, P_LO, P_HI, log, this.samples);
      [lo, hi] = r ?? (log ? [1, 10] : [0, 1]);
    }
    if (!(hi > lo)) hi = log ? lo * 10 : lo + 1;
    this.lo = lo;
    this.hi = hi;
    const lut = LUT32;
    if (log) {
      const l0 = Math.log(lo), s = 256 / (Math.log(hi) - l0);
      for (let i = 0; i < m; i++) {
        const v = d[i];
        if (v !== v) px[i] = NAN_WORD;
        else if (v > 0) {
          const k = (Math.log(v) - l0) * s;
          px[i] = lut[k <= 0 ? 0 : k >= 255 ? 255 : k | 0];
        } else px[i] = lut[0];
      }
    } else {
      const s = 256 / (hi - lo);
      for (let i = 0; i < m; i++) {
        const v = d[i];
        if (v !== v) px[i] = NAN_WORD;
        else {
          const k = (v - lo) * s;
          px[i] = lut[k <= 0 ? 0 : k >= 255 ? 255 : k | 0];
        }
      }
    }
    if (m < n) px.fill(NAN_WORD, m);
    this.offCtx.putImageData(this.im, 0, 0);
    this.compose();
  }

  /** The coloured image scaled onto the canvas, the overlays and the colour bar. */
  private compose(): void {
    const g = this.img;
    const cv = this.canvas;
    const dpr = devicePixelRatio || 1;
    const W = Math.max(200, this.el.clientWidth || 600);
    const ok = !!(g && g.data && g.rows * g.cols > 0 && this.im);
    const availW = Math.max(40, W - CB);
    // Fit the width; a tall image (stacked segments) at most a square's height.
    const s = ok ? Math.min(availW / g!.cols, Math.max(this.height, availW) / g!.rows) : 1;
    const iw = ok ? g!.cols * s : 0, ih = ok ? g!.rows * s : 0;
    const H = Math.max(Math.ceil(ih), 90);
    if (cv.width !== Math.round(W * dpr) || cv.height !== Math.round(H * dpr)) {
      cv.width = Math.round(W * dpr);
      cv.height = Math.round(H * dpr);
      cv.style.width = `${W}px`;
      cv.style.height = `${H}px`;
    }
    const ctx = cv.getContext("2d")!;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, W, H);
    this.scale = s;
    this.el.dataset.scale = String(s);
    this.el.dataset.lo = String(this.lo);
    this.el.dataset.hi = String(this.hi);
    this.el.dataset.shape = ok ? `${g!.rows}x${g!.cols}` : "";
    if (!ok) {
      this.showReadout();
      return;
    }
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, 0, 0, iw, ih);
    this.drawOverlays(ctx, g!, iw, ih);
    // Colour bar and its range.
    const cbx = Math.ceil(iw) + 8;
    ctx.drawImage(this.cbar, cbx, 0, 12, H);
    ctx.fillStyle = getComputedStyle(this.el).getPropertyValue("--jp-ui-font-color1").trim() || "#333";
    ctx.font = "11px sans-serif";
    ctx.textAlign = "left";
    ctx.textBaseline = "top";
    ctx.fillText(short(this.hi), cbx + 15, 0);
    ctx.textBaseline = "bottom";
    ctx.fillText(short(this.lo), cbx + 15, H);
    if (this.log) {
      ctx.textBaseline = "middle";
      ctx.fillText("log", cbx + 15, H / 2);
    }
    this.showReadout();
  }

  private drawOverlays(ctx: CanvasRenderingContext2D, g: Img, iw: number, ih: number): void {
    if (!this.overlays.length) return;
    // Display px per original pixel.
    const sx = this.scale / g.fc, sy = this.scale / g.fr;
    const snap = (v: number) => Math.floor(v) + 0.5; // crisp 1-px lines
    const num = (v: unknown) => (typeof v === "number" && Number.isFinite(v) ? v : NaN);
    ctx.save();
    ctx.beginPath();
    ctx.rect(0, 0, iw, ih);
    ctx.clip();
    ctx.font = "11px sans-serif";
    ctx.textAlign = "left";
    ctx.lineJoin = "round";
    for (const o of this.overlays) {
      let lx: number, ly: number;
      ctx.beginPath();
      if (o.kind === "rect") {
        const x0 = snap(num(o.c0) * sx), x1 = snap(num(o.c1) * sx), y0 = snap(num(o.r0) * sy), y1 = snap(num(o.r1) * sy);
        if (![x0, x1, y0, y1].every(Number.isFinite)) continue;
        ctx.rect(x0, y0, x1 - x0, y1 - y0);
        lx = x0 + 2;
        ly = y0 > 14 ? y0 - 3 : y0 + 13;
      } else {
        const cx = (num(o.cx) + 0.5) * sx, cy = (num(o.cy) + 0.5) * sy, r = num(o.r);
        if (![cx, cy, r].every(Number.isFinite) || r < 0) continue;
        ctx.ellipse(cx, cy, r * sx, r * sy, 0, 0, 2 * Math.PI);
        lx = cx + r * sx * 0.72 + 3;
        ly = cy - r * sy * 0.72 - 3;
      }
      ctx.lineWidth = 3;
      ctx.strokeStyle = "rgba(0,0,0,0.7)";
      ctx.stroke();
      ctx.lineWidth = 1;
      ctx.strokeStyle = "#fff";
      ctx.stroke();
      if (o.label) {
        ctx.textBaseline = "alphabetic";
        ctx.lineWidth = 3;
        ctx.strokeStyle = "rgba(0,0,0,0.8)";
        ctx.strokeText(String(o.label), lx, ly);
        ctx.fillStyle = "#fff";
        ctx.fillText(String(o.label), lx, ly);
      }
    }
    ctx.restore();
  }

  /** Row, column (original pixels: the block's range when binned) and value under the mouse. */
  private showReadout(): void {
    const g = this.img, m = this.mouse, ro = this.readout;
    const sr = m && g ? Math.floor(m.y / this.scale) : -1, sc = m && g ? Math.floor(m.x / this.scale) : -1;
    if (!g || !g.data || sr < 0 || sc < 0 || sr >= g.rows || sc >= g.cols) {
      ro.textContent = "";
      delete ro.dataset.row0;
      return;
    }
    const v = sr * g.cols + sc < g.data.length ? g.data[sr * g.cols + sc] : NaN;
    const r0 = sr * g.fr, r1 = r0 + g.fr - 1, c0 = sc * g.fc, c1 = c0 + g.fc - 1;
    const span = (a: number, b: number) => (a === b ? String(a) : `${a}–${b}`);
    let txt = `row ${span(r0, r1)}`;
    if (g.segs > 1) {
      const seg = Math.floor(sr / g.segRows), base = seg * g.segRows * g.fr;
      txt += ` (segment ${seg} row ${span(r0 - base, r1 - base)})`;
    }
    txt += ` col ${span(c0, c1)} = ${short(v)}`;
    if (g.fr > 1 || g.fc > 1) txt += ` (mean of ${g.fr}×${g.fc})`;
    ro.textContent = txt;
    Object.assign(ro.dataset, { row0: String(r0), row1: String(r1), col0: String(c0), col1: String(c1), value: String(v) });
  }
}
