// Heatmaps (two keys and a value), images of a list-of-lists cell and maps of a profile column
// (bin × row): Canvas2D ImageData.
import { Vector } from "apache-arrow";
import { Frame, listNumbers } from "./data";
import { Plan } from "./choose";
import { LUT, LUT32, short } from "./colour";
import { axisOf, profileRows, rowArray } from "./arrays";

interface Grid {
  nx: number;
  ny: number;
  z: Float32Array; // row-major, row 0 = lowest y
  xs: ArrayLike<number>;
  ys: ArrayLike<number>;
  xLabel: string;
  yLabel: string;
  zLabel: string;
}

function uniqSorted(a: ArrayLike<number | null>): Float64Array {
  // Runs of equal values (grid keys usually come in runs) skip the set.
  const s = new Set<number>();
  let last = NaN;
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v === last || v == null || !Number.isFinite(v)) continue;
    last = v;
    s.add(v);
  }
  return Float64Array.from(s).sort();
}

/** Index of each value on its axis: arithmetic on a regular grid, else a lookup. */
function axisIndex(u: Float64Array): (v: number) => number | undefined {
  const n = u.length;
  if (n > 1) {
    const step = (u[n - 1] - u[0]) / (n - 1);
    let regular = step > 0;
    for (let i = 0; regular && i < n; i++) if (Math.abs(u[i] - (u[0] + i * step)) > 1e-6 * step) regular = false;
    if (regular) {
      const u0 = u[0], inv = 1 / step;
      return (v) => Math.round((v - u0) * inv);
    }
  }
  const m = new Map<number, number>();
  u.forEach((v, i) => m.set(v, i));
  return (v) => m.get(v);
}

function gridFromKeys(fr: Frame, plan: Plan): Grid {
  const X = fr.num(plan.x!), Y = fr.num(plan.y2!), Z = fr.num(plan.z!);
  const xs = uniqSorted(X), ys = uniqSorted(Y);
  const xi = axisIndex(xs), yi = axisIndex(ys);
  const nx = xs.length, ny = ys.length;
  const z = new Float32Array(nx * ny).fill(NaN);
  for (let r = 0; r < X.length; r++) {
    const a = X[r], b = Y[r], v = Z[r];
    if (a == null || b == null || v == null) continue;
    const i = xi(a), j = yi(b);
    if (i === undefined || j === undefined || i < 0 || j < 0 || i >= nx || j >= ny) continue;
    z[j * nx + i] = v;
  }
  return { nx, ny, z, xs, ys, xLabel: plan.x!, yLabel: plan.y2!, zLabel: plan.z! };
}

function gridFromImage(fr: Frame, plan: Plan): Grid {
  const vec = fr.vec(plan.list!);
  const img = vec && fr.rows > 0 ? (vec.get(fr.rows - 1) as Vector | null) : null;
  const rows: Float64Array[] = [];
  if (img) for (let r = 0; r < img.length; r++) rows.push(listNumbers(img.get(r)) ?? new Float64Array(0));
  const ny = rows.length;
  const nx = rows.reduce((m, r) => Math.max(m, r.length), 0);
  const z = new Float32Array(nx * ny).fill(NaN);
  // Image row 0 is drawn at the top.
  for (let r = 0; r < ny; r++) z.set(rows[r], (ny - 1 - r) * nx);
  const xs = Float64Array.from({ length: nx }, (_, i) => i);
  const ys = Float64Array.from({ length: ny }, (_, i) => ny - 1 - i);
  return { nx, ny, z, xs, ys, xLabel: "column", yLabel: "row", zLabel: plan.list! };
}

/** A profile column as a map: x = the profile's bins (beamtime:axes), y = its rows by key. */
function gridFromProfile(fr: Frame, plan: Plan): Grid {
  const col = plan.list!;
  const { order, ys, yLabel } = profileRows(fr, col);
  const rows = order.map((r) => rowArray(fr, col, r));
  const nx = rows.reduce((m, a) => Math.max(m, a ? a.length : 0), 0);
  const ny = rows.length;
  const z = new Float32Array(nx * ny).fill(NaN);
  rows.forEach((a, j) => a && z.set(a, j * nx));
  const ax = axisOf(fr, col);
  const xs = Float64Array.from({ length: nx }, (_, i) => ax.start + i * ax.step);
  return { nx, ny, z, xs, ys, xLabel: ax.label, yLabel, zLabel: col };
}

const M = { l: 56, r: 70, t: 8, b: 34 };

export class HeatmapView {
  readonly el: HTMLDivElement;
  readonly canvas: HTMLCanvasElement;
  private off = document.createElement("canvas");
  private grid: Grid | null = null;

  constructor(private height: number) {
    this.el = document.createElement("div");
    this.el.className = "bt-heatmap";
    this.el.style.minHeight = `${height}px`;
    this.canvas = document.createElement("canvas");
    this.el.append(this.canvas);
  }

  update(fr: Frame, plan: Plan): void {
    this.grid = plan.profile ? gridFromProfile(fr, plan) : plan.list ? gridFromImage(fr, plan) : gridFromKeys(fr, plan);
    this.draw();
  }

  resize(): void {
    this.draw();
  }

  private draw(): void {
    const g = this.grid;
    const dpr = devicePixelRatio || 1;
    const w = Math.max(200, this.el.clientWidth || 600);
    const h = this.height;
    const cv = this.canvas;
    if (cv.width !== Math.round(w * dpr) || cv.height !== Math.round(h * dpr)) {
      cv.width = Math.round(w * dpr);
      cv.height = Math.round(h * dpr);
      cv.style.width = `${w}px`;
      cv.style.height = `${h}px`;
    }
    const ctx = cv.getContext("2d")!;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    if (!g || g.nx === 0 || g.ny === 0) return;
    let lo = Infinity, hi = -Infinity;
    for (let i = 0; i < g.z.length; i++) {
      const v = g.z[i];
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
    if (!Number.isFinite(lo)) (lo = 0), (hi = 1);
    const span = hi > lo ? 255 / (hi - lo) : 0;
    // One pixel per cell, then scaled without smoothing.
    if (this.off.width !== g.nx || this.off.height !== g.ny) {
      this.off.width = g.nx;
      this.off.height = g.ny;
    }
    const octx = this.off.getContext("2d")!;
    const im = octx.createImageData(g.nx, g.ny);
    const px = new Uint32Array(im.data.buffer);
    const lut32 = LUT32;
    const { nx, ny, z } = g;
    for (let j = 0; j < ny; j++) {
      const src = j * nx, dst = (ny - 1 - j) * nx; // y up
      for (let i = 0; i < nx; i++) {
        const v = z[src + i];
        px[dst + i] = v === v ? lut32[((v - lo) * span) | 0] : 0;
      }
    }
    octx.putImageData(im, 0, 0);
    const pw = w - M.l - M.r, ph = h - M.t - M.b;
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.off, M.l, M.t, pw, ph);
    // Colour bar.
    const cbx = w - M.r + 10;
    for (let k = 0; k < ph; k++) {
      const c = Math.round(255 * (1 - k / Math.max(1, ph - 1)));
      ctx.fillStyle = `rgb(${LUT[c * 4]},${LUT[c * 4 + 1]},${LUT[c * 4 + 2]})`;
      ctx.fillRect(cbx, M.t + k, 12, 1);
    }
    const fg = getComputedStyle(this.el).getPropertyValue("--jp-ui-font-color1").trim() || "#333";
    ctx.fillStyle = fg;
    ctx.font = "11px sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "left";
    ctx.fillText(short(hi), cbx + 15, M.t + 5);
    ctx.fillText(short(lo), cbx + 15, M.t + ph - 5);
    // Axes: a few ticks at cell centres.
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const tx = ticks(nx);
    for (const i of tx) ctx.fillText(short(g.xs[i]), M.l + ((i + 0.5) * pw) / nx, h - M.b + 4);
    ctx.fillText(g.xLabel, M.l + pw / 2, h - 14);
    ctx.textAlign = "right";
    ctx.textBaseline = "middle";
    for (const j of ticks(ny)) ctx.fillText(short(g.ys[j]), M.l - 4, M.t + ph - ((j + 0.5) * ph) / ny);
    ctx.save();
    ctx.translate(12, M.t + ph / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = "center";
    ctx.fillText(`${g.yLabel} (colour: ${g.zLabel})`, 0, 0);
    ctx.restore();
  }

  destroy(): void {
    this.el.remove();
  }
}

function ticks(n: number): number[] {
  if (n <= 0) return [];
  const k = Math.min(n, 6);
  const out = new Set<number>();
  for (let i = 0; i < k; i++) out.add(Math.round((i * (n - 1)) / Math.max(1, k - 1)));
  return [...out];
}
