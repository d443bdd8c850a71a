// Line, scatter, histogram and strip charts with uPlot (Canvas2D).
import uPlot from "uplot";
import { Frame, listNumbers, Num } from "./data";
import { Plan } from "./choose";
import { axisOf, keyColumns, rowArray, rowLabels } from "./arrays";
import { lutCss } from "./colour";

export const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf"];

type Arr = Float64Array | (number | null)[];

interface Built {
  data: uPlot.AlignedData;
  /** per y series (index from 1): error half-widths. */
  err: (Float64Array | null)[];
  /** bar width for histograms (x units). */
  width: number;
  /** x from a list histogram's bin index. */
  xLabel: string;
  /** profile: one series per row, labelled by its keys. */
  names?: string[];
}

/** Rows above which a profile offers its map (bin × row) view. */
export const MAP_ROWS = 12;

/** A profile column: one series per result row, x = start + i·step from beamtime:axes. */
function buildProfile(fr: Frame, col: string): Built {
  const names = rowLabels(fr, keyColumns(fr));
  const rows = names.map((_, r) => rowArray(fr, col, r));
  const nx = rows.reduce((m, a) => Math.max(m, a ? a.length : 0), 0);
  const ax = axisOf(fr, col);
  const x = new Float64Array(nx);
  for (let i = 0; i < nx; i++) x[i] = ax.start + i * ax.step;
  const ys = rows.map((a) => {
    const out = new Array<number | null>(nx).fill(null);
    if (a) for (let i = 0; i < a.length; i++) out[i] = Number.isFinite(a[i]) ? a[i] : null;
    return out;
  });
  return { data: [x, ...ys] as uPlot.AlignedData, err: [null, ...ys.map(() => null)], width: 0, xLabel: ax.label, names };
}

function finite(v: number | null | undefined): v is number {
  return v != null && Number.isFinite(v);
}

/** Rows with a finite x, ordered by x (uPlot needs ascending x). */
function orderByX(x: Num): Int32Array | null {
  const n = x.length;
  let sorted = true;
  let nulls = false;
  for (let i = 0; i < n; i++) {
    if (!finite(x[i])) nulls = true;
    else if (i > 0 && finite(x[i - 1]) && (x[i] as number) < (x[i - 1] as number)) sorted = false;
  }
  if (sorted && !nulls) return null;
  const idx: number[] = [];
  for (let i = 0; i < n; i++) if (finite(x[i])) idx.push(i);
  if (!sorted) idx.sort((a, b) => (x[a] as number) - (x[b] as number));
  return Int32Array.from(idx);
}

function gather(a: Num, idx: Int32Array | null): Arr {
  if (!idx) return a as Arr;
  const out = new Array<number | null>(idx.length);
  for (let i = 0; i < idx.length; i++) out[i] = a[idx[i]];
  return out;
}

function errHalfWidths(fr: Frame, plan: Plan, y: string, idx: Int32Array | null, n: number): Float64Array | null {
  const spec = plan.err[y];
  if (!spec) return null;
  const e = gather(fr.num(spec.col), idx);
  const cnt = spec.n ? gather(fr.num(spec.n), idx) : null;
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) {
    let v = e[i];
    if (!finite(v)) {
      out[i] = NaN;
      continue;
    }
    if (spec.how === "var") v = Math.sqrt(Math.max(0, v));
    if (cnt) {
      const c = cnt[i];
      v = finite(c) && c > 0 ? v / Math.sqrt(c) : NaN;
    }
    out[i] = v;
  }
  return out;
}

function build(fr: Frame, plan: Plan): Built {
  if (plan.kind === "profile" && plan.list) return buildProfile(fr, plan.list);
  if (plan.kind === "hist" && plan.list) {
    // A list column of counts: the last row, x = bin index.
    const vec = fr.vec(plan.list);
    const counts = vec && fr.rows > 0 ? listNumbers(vec.get(fr.rows - 1)) ?? new Float64Array(0) : new Float64Array(0);
    const x = new Float64Array(counts.length);
    for (let i = 0; i < x.length; i++) x[i] = i;
    return { data: [x, counts], err: [null, null], width: 1, xLabel: `${plan.list} bin` };
  }
  const x = fr.num(plan.x!);
  const idx = orderByX(x);
  let xs = gather(x, idx);
  let ys = plan.ys.map((y) => gather(fr.num(y), idx));
  let width = 0;
  if (plan.kind === "hist") {
    // Bin lower edges with missing (empty) bins: fill them with zeros.
    let w = Infinity;
    for (let i = 1; i < xs.length; i++) {
      const d = (xs[i] as number) - (xs[i - 1] as number);
      if (d > 1e-12 && d < w) w = d;
    }
    if (!Number.isFinite(w)) w = 1;
    width = w;
    const lo = xs.length ? (xs[0] as number) : 0;
    const hi = xs.length ? (xs[xs.length - 1] as number) : 0;
    const nb = Math.round((hi - lo) / w) + 1;
    if (xs.length && nb <= 20000 && nb > xs.length) {
      const dx = new Float64Array(nb);
      const dy = new Float64Array(nb);
      for (let i = 0; i < nb; i++) dx[i] = lo + i * w;
      for (let i = 0; i < xs.length; i++) {
        const b = Math.round(((xs[i] as number) - lo) / w);
        if (b >= 0 && b < nb) dy[b] += (ys[0][i] as number) ?? 0;
      }
      xs = dx;
      ys = [dy];
    }
  }
  const err = [null, ...plan.ys.map((y) => errHalfWidths(fr, plan, y, idx, xs.length))];
  return { data: [xs, ...ys] as uPlot.AlignedData, err, width, xLabel: plan.x! };
}

function cssVar(el: HTMLElement, name: string, fallback: string): string {
  const v = getComputedStyle(el).getPropertyValue(name).trim();
  return v || fallback;
}

export class PlotView {
  readonly el: HTMLDivElement;
  private u: uPlot | null = null;
  private sig = "";
  private built: Built | null = null;
  private offer: HTMLDivElement;

  /** `switchKind` is called when the user takes an offered view (a profile's map). */
  constructor(private height: number, switchKind?: (k: "heatmap") => void) {
    this.el = document.createElement("div");
    this.el.className = "bt-plot";
    this.el.style.minHeight = `${height}px`;
    this.offer = document.createElement("div");
    this.offer.className = "bt-offer";
    this.offer.hidden = true;
    const b = document.createElement("button");
    b.type = "button";
    b.className = "bt-offer-map";
    b.addEventListener("click", () => switchKind?.("heatmap"));
    this.offer.append(b);
    this.el.append(this.offer);
  }

  private width(): number {
    return Math.max(200, this.el.clientWidth || (this.el.parentElement?.clientWidth ?? 0) || 600);
  }

  update(fr: Frame, plan: Plan): void {
    const b = build(fr, plan);
    this.built = b;
    const many = plan.kind === "profile" && fr.rows > MAP_ROWS;
    this.offer.hidden = !many;
    if (many) (this.offer.firstChild as HTMLButtonElement).textContent = `${fr.rows} rows: show as a 2-D map`;
    // Test hook: the series' labels and data.
    (this.el as any).bt = { labels: b.names ?? plan.ys, data: b.data };
    const sig = JSON.stringify([plan.kind, plan.x, plan.ys, plan.list, plan.time, Object.keys(plan.err), b.names]);
    if (sig !== this.sig || !this.u) {
      this.sig = sig;
      this.u?.destroy();
      this.u = new uPlot(this.options(plan, b), b.data, this.el);
    } else {
      this.u.setData(b.data);
    }
  }

  resize(): void {
    this.u?.setSize({ width: this.width(), height: this.height });
  }

  private options(plan: Plan, b: Built): uPlot.Options {
    const fg = cssVar(this.el, "--jp-ui-font-color1", "#333");
    const grid = { stroke: "rgba(128,128,128,0.18)", width: 1 };
    const axis = { stroke: fg, grid, ticks: { stroke: "rgba(128,128,128,0.35)", width: 1 } };
    const kind = plan.kind;
    const series: uPlot.Series[] = [{ label: b.xLabel }];
    const names = b.names ?? (plan.list ? ["count"] : plan.ys);
    // Many profiles (e.g. one per delay bin): colours along viridis, in row order.
    const ramp = names.length > PALETTE.length;
    names.forEach((name, i) => {
      const color = ramp ? lutCss(Math.round((i * 220) / (names.length - 1))) : PALETTE[i % PALETTE.length];
      const s: uPlot.Series = { label: name, stroke: color, width: 1.5 };
      if (kind === "scatter") {
        s.paths = () => null;
        s.points = { show: true, size: 4, stroke: color, fill: color, width: 1 };
      } else if (kind === "hist") {
        s.paths = uPlot.paths.bars!({ size: [1, Infinity], align: plan.list ? 0 : 1 });
        s.fill = color + "99";
        s.points = { show: false };
      } else if (kind === "profile" && ramp) {
        s.points = { show: false };
      } else if (kind === "strip") {
        s.points = { show: false };
        s.spanGaps = false;
      }
      series.push(s);
    });
    const self = this;
    const xRange: uPlot.Scale.Range | undefined =
      kind === "hist"
        ? (_u, min, max) => {
            const w = self.built?.width || 1;
            return plan.list ? [min - 0.5, max + 0.5] : [min, max + w];
          }
        : undefined;
    const yRange: uPlot.Scale.Range = (_u, min, max) => {
      const bb = self.built;
      if (bb) {
        for (let s = 1; s < bb.data.length; s++) {
          const e = bb.err[s];
          if (!e) continue;
          const ys = bb.data[s] as ArrayLike<number | null>;
          for (let i = 0; i < ys.length; i++) {
            const y = ys[i];
            if (y == null || !Number.isFinite(e[i])) continue;
            if (y - e[i] < min) min = y - e[i];
            if (y + e[i] > max) max = y + e[i];
          }
        }
      }
      if (kind === "hist") min = Math.min(0, min);
      if (min == null || max == null || !Number.isFinite(min) || !Number.isFinite(max)) return [0, 1];
      return uPlot.rangeNum(min, max, 0.1, true) as uPlot.Range.MinMax;
    };
    return {
      width: this.width(),
      height: this.height,
      series,
      scales: {
        x: { time: plan.time, ...(xRange ? { range: xRange } : {}) },
        y: { range: yRange },
      },
      axes: [
        { ...axis, label: plan.time ? undefined : b.xLabel, labelSize: 18 },
        { ...axis, label: names.length === 1 ? names[0] : kind === "profile" ? plan.list : undefined, labelSize: 18 },
      ],
      legend: { show: names.length <= MAP_ROWS },
      cursor: { drag: { x: true, y: false } },
      hooks: { draw: [(u: uPlot) => drawErrorBars(u, self.built)] },
    };
  }

  destroy(): void {
    this.u?.destroy();
    this.u = null;
    this.el.remove();
  }
}

function drawErrorBars(u: uPlot, b: Built | null): void {
  if (!b) return;
  const ctx = u.ctx;
  const xs = u.data[0] as ArrayLike<number>;
  const [i0, i1] = [u.series[0].idxs?.[0] ?? 0, u.series[0].idxs?.[1] ?? xs.length - 1];
  const cap = 3 * devicePixelRatio;
  for (let s = 1; s < u.data.length; s++) {
    const e = b.err[s];
    if (!e || !u.series[s].show) continue;
    const ys = u.data[s] as ArrayLike<number | null>;
    ctx.save();
    ctx.strokeStyle = PALETTE[(s - 1) % PALETTE.length];
    ctx.lineWidth = devicePixelRatio;
    ctx.beginPath();
    for (let i = i0; i <= i1; i++) {
      const y = ys[i];
      if (y == null || !Number.isFinite(e[i])) continue;
      const px = u.valToPos(xs[i], "x", true);
      const lo = u.valToPos(y - e[i], "y", true);
      const hi = u.valToPos(y + e[i], "y", true);
      ctx.moveTo(px, lo);
      ctx.lineTo(px, hi);
      ctx.moveTo(px - cap, lo);
      ctx.lineTo(px + cap, lo);
      ctx.moveTo(px - cap, hi);
      ctx.lineTo(px + cap, hi);
    }
    ctx.stroke();
    ctx.restore();
  }
}
