// A virtualised table: only the visible rows exist in the DOM; headers sort on click.
import { DataType, Field, Vector } from "apache-arrow";
import { Frame, isNumericType, isTimeType, Num } from "./data";

const ROW_H = 22;
const HEAD_H = 24;
const OVERSCAN = 6;

export function fmtNum(v: number | null, integer: boolean): string {
  if (v == null || Number.isNaN(v)) return "";
  if (integer && Number.isSafeInteger(v)) return String(v);
  if (v === 0 || !Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 1e7 || a < 1e-4) return v.toExponential(4).replace(/\.?0+e/, "e");
  return String(Number(v.toPrecision(7)));
}

function fmtTime(sec: number | null): string {
  if (sec == null || !Number.isFinite(sec)) return "";
  const d = new Date(sec * 1000);
  return Number.isNaN(d.getTime()) ? String(sec) : d.toISOString().replace("T", " ").replace("Z", "");
}

export function fmtValue(v: unknown, depth = 0): string {
  if (v == null) return "";
  if (typeof v === "string") return v;
  if (typeof v === "number") return fmtNum(v, Number.isInteger(v));
  if (typeof v === "bigint" || typeof v === "boolean") return String(v);
  if (v instanceof Date) return v.toISOString();
  if (v instanceof Vector || ArrayBuffer.isView(v) || Array.isArray(v)) {
    const a = v as ArrayLike<unknown> & { get?: (i: number) => unknown };
    const n = a.length;
    const shown: string[] = [];
    for (let i = 0; i < Math.min(n, 8); i++) shown.push(fmtValue(a instanceof Vector ? a.get(i) : a[i], depth + 1));
    return `[${shown.join(", ")}${n > 8 ? `, … (${n})` : ""}]`;
  }
  if (typeof v === "object") {
    const o = (v as any).toJSON ? (v as any).toJSON() : v;
    if (depth > 1) return "{…}";
    return `{${Object.entries(o).map(([k, x]) => `${k}: ${fmtValue(x, depth + 1)}`).join(", ")}}`;
  }
  return String(v);
}

interface Col {
  name: string;
  cell: (i: number) => string;
  sortKey: () => Num | string[];
  numeric: boolean;
}

function columns(fr: Frame): Col[] {
  return fr.fields.map((f: Field) => {
    const name = f.name;
    const vec = fr.vec(name) as Vector;
    if (isTimeType(f)) {
      return { name, numeric: true, cell: (i: number) => fmtTime(fr.num(name)[i]), sortKey: () => fr.num(name) };
    }
    if (isNumericType(f.type)) {
      const integer = DataType.isInt(f.type) || DataType.isBool(f.type);
      return { name, numeric: true, cell: (i: number) => fmtNum(fr.num(name)[i], integer), sortKey: () => fr.num(name) };
    }
    let strs: string[] | null = null;
    const cell = (i: number) => fmtValue(vec.get(i));
    return {
      name,
      numeric: false,
      cell,
      sortKey: () => {
        if (!strs) {
          strs = new Array(fr.rows);
          for (let i = 0; i < fr.rows; i++) strs[i] = cell(i);
        }
        return strs;
      },
    };
  });
}

export class TableView {
  readonly el: HTMLDivElement;
  private inner: HTMLDivElement;
  private head: HTMLDivElement;
  private body: HTMLDivElement;
  private cols: Col[] = [];
  private schemaKey = "";
  private frame: Frame | null = null;
  private order: Int32Array | null = null;
  private sortCol = -1;
  private sortDir = 0; // 1 ascending, -1 descending
  private pool: HTMLDivElement[] = [];
  private template = "";
  private widths: number[] = [];
  private shown = "";

  constructor(private height: number, private schedule: () => void) {
    this.el = document.createElement("div");
    this.el.className = "beamtime-table";
    this.el.style.height = `${height}px`;
    this.inner = document.createElement("div");
    this.inner.className = "bt-inner";
    this.head = document.createElement("div");
    this.head.className = "bt-row bt-head";
    this.body = document.createElement("div");
    this.body.className = "bt-body";
    this.inner.append(this.head, this.body);
    this.el.append(this.inner);
    this.el.addEventListener("scroll", () => this.schedule(), { passive: true });
    this.head.addEventListener("click", (e) => {
      const t = (e.target as HTMLElement).closest("[data-col]") as HTMLElement | null;
      if (!t) return;
      const c = Number(t.dataset.col);
      if (c === this.sortCol) this.sortDir = this.sortDir === 1 ? -1 : this.sortDir === -1 ? 0 : 1;
      else {
        this.sortCol = c;
        this.sortDir = 1;
      }
      if (this.sortDir === 0) this.sortCol = -1;
      this.order = null;
      this.shown = "";
      this.renderHead();
      this.schedule();
    });
  }

  update(fr: Frame | null): void {
    const atBottom = this.el.scrollTop > 0 && this.el.scrollTop + this.el.clientHeight >= this.el.scrollHeight - ROW_H;
    this.frame = fr;
    this.order = null;
    this.shown = "";
    const key = fr ? fr.fields.map((f) => `${f.name}:${f.type}`).join("|") : "";
    this.cols = fr ? columns(fr) : [];
    if (key !== this.schemaKey) {
      this.schemaKey = key;
      this.widths = [];
      if (this.sortCol >= this.cols.length) this.sortCol = -1;
      this.layout();
      this.renderHead();
    } else this.layout();
    const rows = fr ? fr.rows : 0;
    this.inner.style.height = `${HEAD_H + rows * ROW_H}px`;
    // A short table takes only the room it needs (plus a horizontal scroll bar).
    this.el.style.height = `${Math.min(this.height, HEAD_H + Math.max(rows, 1) * ROW_H + 18)}px`;
    if (atBottom && this.sortCol < 0) this.el.scrollTop = this.el.scrollHeight;
    this.paint();
  }

  /** Column widths from the header and a sample of rows across the table; they only grow. */
  private layout(): void {
    const fr = this.frame;
    const n = fr ? fr.rows : 0;
    const step = Math.max(1, Math.floor(n / 50));
    const widths = this.cols.map((c, k) => {
      let chars = c.name.length + 2;
      for (let i = 0; i < n; i += step) chars = Math.max(chars, c.cell(i).length);
      if (n) chars = Math.max(chars, c.cell(n - 1).length);
      return Math.max(this.widths[k] ?? 0, 56, Math.min(320, Math.round(chars * 7.5 + 16)));
    });
    if (widths.length === this.widths.length && widths.every((w, k) => w === this.widths[k])) return;
    this.widths = widths;
    this.template = widths.map((w) => `${w}px`).join(" ");
    this.inner.style.minWidth = `${widths.reduce((a, b) => a + b, 0)}px`;
    this.head.style.gridTemplateColumns = this.template;
    for (const r of this.pool) r.remove();
    this.pool = [];
  }

  private renderHead(): void {
    this.head.replaceChildren(
      ...this.cols.map((c, i) => {
        const d = document.createElement("div");
        d.className = c.numeric ? "bt-cell bt-num" : "bt-cell";
        d.dataset.col = String(i);
        d.title = `${c.name} (click to sort)`;
        d.textContent = c.name + (i === this.sortCol ? (this.sortDir === 1 ? " ▲" : " ▼") : "");
        return d;
      }),
    );
  }

  private sortOrder(): Int32Array | null {
    const fr = this.frame;
    if (!fr || this.sortCol < 0) return null;
    if (this.order) return this.order;
    const n = fr.rows;
    const idx = new Int32Array(n);
    for (let i = 0; i < n; i++) idx[i] = i;
    const key = this.cols[this.sortCol].sortKey();
    const dir = this.sortDir;
    if (this.cols[this.sortCol].numeric) {
      const k = key as Num;
      idx.sort((a, b) => {
        const x = k[a], y = k[b];
        if (x == null || Number.isNaN(x)) return y == null || Number.isNaN(y) ? a - b : 1;
        if (y == null || Number.isNaN(y)) return -1;
        return x === y ? a - b : x < y ? -dir : dir;
      });
    } else {
      const k = key as string[];
      idx.sort((a, b) => (k[a] === k[b] ? a - b : k[a] < k[b] ? -dir : dir));
    }
    this.order = idx;
    return idx;
  }

  /** Renders the visible rows (called from the animation frame). */
  paint(): void {
    const fr = this.frame;
    const rows = fr ? fr.rows : 0;
    const top = this.el.scrollTop;
    const visible = Math.ceil(this.height / ROW_H) + 2 * OVERSCAN;
    const first = Math.max(0, Math.min(rows - 1, Math.floor((top - HEAD_H) / ROW_H) - OVERSCAN));
    const count = Math.max(0, Math.min(visible, rows - first));
    const key = `${first}:${count}`;
    if (key === this.shown) return;
    this.shown = key;
    const order = this.sortOrder();
    while (this.pool.length < count) {
      const r = document.createElement("div");
      r.className = "bt-row";
      r.style.gridTemplateColumns = this.template;
      for (const c of this.cols) {
        const d = document.createElement("div");
        d.className = c.numeric ? "bt-cell bt-num" : "bt-cell";
        r.append(d);
      }
      this.body.append(r);
      this.pool.push(r);
    }
    for (let k = 0; k < this.pool.length; k++) {
      const r = this.pool[k];
      if (k >= count) {
        r.style.display = "none";
        continue;
      }
      const vi = first + k;
      const i = order ? order[vi] : vi;
      r.style.display = "";
      r.classList.toggle("bt-odd", vi % 2 === 1);
      r.style.transform = `translateY(${HEAD_H + vi * ROW_H}px)`;
      r.dataset.row = String(i);
      const cells = r.children;
      for (let c = 0; c < this.cols.length; c++) {
        const text = this.cols[c].cell(i);
        const cell = cells[c] as HTMLElement;
        if (cell.textContent !== text) cell.textContent = text;
      }
    }
  }

  resize(): void {}

  destroy(): void {
    this.el.remove();
  }
}
