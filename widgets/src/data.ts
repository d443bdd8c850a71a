// The data side: Arrow IPC bytes in, one bounded Arrow table out, merged once per frame.
import { tableFromIPC, Table, Vector, DataType, Type, Field } from "apache-arrow";

/** Anything a widget manager may hand us for bytes (a DataView in JupyterLab). */
export type Bytes = DataView | ArrayBuffer | ArrayBufferView | null | undefined;

/** Zero-copy view of received bytes (Arrow copies a column only when it is misaligned). */
export function toU8(b: Bytes): Uint8Array | null {
  if (!b) return null;
  if (b instanceof Uint8Array) return b;
  if (ArrayBuffer.isView(b)) return new Uint8Array(b.buffer, b.byteOffset, b.byteLength);
  if (b instanceof ArrayBuffer) return new Uint8Array(b);
  return null;
}

export function decode(b: Bytes): Table | null {
  const u8 = toU8(b);
  if (!u8 || u8.byteLength === 0) return null;
  return tableFromIPC(u8);
}

export interface Op {
  kind: "replace" | "append";
  seq: number | null;
  /** append: the seq of the table these rows extend (optional; another one than ours means
   * rows were missed: the append is not applied and the widget asks for the whole table). */
  prev?: number | null;
  /** append: the table's oldest rows to drop before appending (a sliding window). */
  drop?: number | null;
  buf: Bytes;
  /** performance.now() at arrival (latency benchmark). */
  t: number;
}

function sameSchema(a: Table, b: Table): boolean {
  const fa = a.schema.fields, fb = b.schema.fields;
  if (fa.length !== fb.length) return false;
  for (let i = 0; i < fa.length; i++) {
    if (fa[i].name !== fb[i].name || String(fa[i].type) !== String(fb[i].type)) return false;
  }
  return true;
}

/**
 * The current result. Messages are queued as they arrive and applied in `flush`, once per
 * animation frame: everything before the last replace is dropped undecoded, appends after it
 * are concatenated (Arrow chunks, no copy) and the table is cut to the newest `maxRows` rows.
 */
export class Store {
  table: Table | null = null;
  seq = -1;
  version = 0;
  /** Set when an append extended another table than ours: rows are missing, ask for a sync. */
  gap = false;
  maxRows = 100_000;
  private queue: Op[] = [];

  push(op: Op): void {
    this.queue.push(op);
  }

  get pending(): boolean {
    return this.queue.length > 0;
  }

  /** Applies the queued messages; returns their arrival times (empty when nothing changed). */
  flush(): number[] {
    const q = this.queue;
    if (q.length === 0) return [];
    this.queue = [];
    let start = 0;
    for (let i = q.length - 1; i >= 0; i--) {
      if (q[i].kind === "replace") {
        start = i;
        break;
      }
    }
    const times = q.map((o) => o.t);
    for (let i = start; i < q.length; i++) {
      const op = q[i];
      if (op.kind === "replace") {
        this.table = decode(op.buf);
        if (op.seq != null) this.seq = op.seq;
        continue;
      }
      // An append the table already holds (seq not newer) is skipped.
      if (op.seq != null && this.seq >= 0 && op.seq <= this.seq) continue;
      if (op.prev != null && op.prev !== this.seq) {
        // It extends rows we do not hold (missed messages, or a table restored from older
        // state): wait for the whole table instead of showing a wrong one.
        this.gap = true;
        continue;
      }
      const t = decode(op.buf);
      if (op.seq != null) this.seq = op.seq;
      const drop = op.drop ?? 0;
      if (drop > 0 && this.table) this.table = this.table.slice(Math.min(drop, this.table.numRows));
      if (!t) continue;
      if (!this.table || !sameSchema(this.table, t)) {
        // A new schema starts a new table.
        this.table = t;
      } else if (t.numRows > 0) {
        this.table = this.table.numRows > 0 ? this.table.concat(t) : t;
      }
    }
    const tb = this.table;
    if (tb && this.maxRows > 0 && tb.numRows > this.maxRows) {
      this.table = tb.slice(tb.numRows - this.maxRows);
    }
    this.version++;
    return times;
  }
}

// ---------------------------------------------------------------------------------------------
// Columns as numbers (for plots and sorting), cached per table version.

export type Num = Float64Array | (number | null)[];

const EPICS_EPOCH = 631152000; // 1990-01-01 in Unix seconds (psana timestamps)

export function isNumericType(t: DataType): boolean {
  return (
    DataType.isInt(t) ||
    DataType.isFloat(t) ||
    DataType.isDecimal(t) ||
    DataType.isBool(t) ||
    DataType.isTimestamp(t) ||
    DataType.isDate(t) ||
    DataType.isTime(t) ||
    DataType.isDuration(t)
  );
}

export function isTimeType(f: Field): boolean {
  const t = f.type;
  if (DataType.isTimestamp(t) || DataType.isDate(t)) return true;
  return f.name === "timestamp" && DataType.isInt(t) && (t as any).bitWidth === 64;
}

export function isListType(t: DataType): boolean {
  return DataType.isList(t) || DataType.isFixedSizeList(t) || t.typeId === Type.LargeList;
}

/** Seconds scale of a time-like raw integer. */
function unitScale(t: DataType): number {
  const unit = (t as any).unit;
  if (DataType.isTimestamp(t) || DataType.isTime(t) || DataType.isDuration(t)) {
    return [1, 1e-3, 1e-6, 1e-9][unit] ?? 1;
  }
  if (DataType.isDate(t)) return unit === 0 ? 86400 : 1e-3; // DateDay, DateMillisecond
  return 1;
}

/**
 * A column as numbers: integers and floats as they are, timestamps and dates in Unix seconds
 * (a u64 column named `timestamp` is psana's sec<<32|nsec on the EPICS epoch), nulls as null.
 */
export function toNum(field: Field, vec: Vector): Num {
  const t = field.type;
  const n = vec.length;
  const nulls = vec.nullCount > 0;
  const out: Num = nulls ? new Array<number | null>(n) : new Float64Array(n);
  const psana = field.name === "timestamp" && DataType.isInt(t) && (t as any).bitWidth === 64;
  const direct =
    (DataType.isInt(t) || (DataType.isFloat(t) && (t as any).precision !== 0)) && !psana;
  const timeLike = DataType.isTimestamp(t) || DataType.isDate(t) || DataType.isTime(t) || DataType.isDuration(t);
  if (direct || timeLike) {
    const raw = vec.toArray() as ArrayLike<number | bigint>;
    const scale = timeLike ? unitScale(t) : 1;
    if (raw.length === n) {
      for (let i = 0; i < n; i++) {
        const v = raw[i];
        (out as any)[i] = typeof v === "bigint" ? Number(v) * scale : scale === 1 ? v : (v as number) * scale;
      }
    } else {
      for (let i = 0; i < n; i++) (out as any)[i] = toNumber(vec.get(i));
    }
  } else if (psana) {
    const raw = vec.toArray() as ArrayLike<bigint>;
    for (let i = 0; i < n; i++) {
      const v = BigInt.asUintN(64, BigInt(raw[i]));
      (out as any)[i] = Number(v >> 32n) + EPICS_EPOCH + Number(v & 0xffffffffn) * 1e-9;
    }
  } else {
    for (let i = 0; i < n; i++) (out as any)[i] = toNumber(vec.get(i));
  }
  if (nulls) {
    for (let i = 0; i < n; i++) if (!vec.isValid(i)) (out as any)[i] = null;
  }
  return out;
}

function toNumber(v: unknown): number | null {
  if (v == null) return null;
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  if (typeof v === "boolean") return v ? 1 : 0;
  if (v instanceof Date) return v.getTime() / 1000;
  const x = Number(v as any);
  return Number.isNaN(x) ? null : x;
}

/** Numbers of a list value (a Vector, typed array or array) — for histogram/image cells. */
export function listNumbers(v: unknown): Float64Array | null {
  if (v == null) return null;
  if (v instanceof Vector) {
    const a = v.toArray();
    if (a instanceof Float64Array) return a;
    const out = new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = toNumber(v.get(i)) ?? NaN;
    return out;
  }
  if (ArrayBuffer.isView(v) || Array.isArray(v)) {
    const a = v as ArrayLike<unknown>;
    const out = new Float64Array(a.length);
    for (let i = 0; i < a.length; i++) out[i] = toNumber(a[i]) ?? NaN;
    return out;
  }
  return null;
}

/** A table plus per-version caches of numeric columns. */
export class Frame {
  readonly names: string[];
  readonly fields: Field[];
  private cache = new Map<string, Num>();
  constructor(readonly table: Table, readonly version: number) {
    this.fields = table.schema.fields;
    this.names = this.fields.map((f) => f.name);
  }
  get rows(): number {
    return this.table.numRows;
  }
  field(name: string): Field | undefined {
    return this.fields.find((f) => f.name === name);
  }
  num(name: string): Num {
    let c = this.cache.get(name);
    if (!c) {
      const f = this.field(name);
      const v = this.table.getChild(name);
      c = f && v ? toNum(f, v) : new Float64Array(this.rows).fill(NaN);
      this.cache.set(name, c);
    }
    return c;
  }
  vec(name: string): Vector | null {
    return this.table.getChild(name);
  }
  metadata(key: string): string | undefined {
    return this.table.schema.metadata.get(key);
  }
  private jsonCache = new Map<string, any>();
  /** Schema metadata `key` parsed as JSON (once per frame); null when absent or not JSON. */
  json(key: string): any {
    if (this.jsonCache.has(key)) return this.jsonCache.get(key);
    let v: any = null;
    const s = this.metadata(key);
    if (s != null) {
      try {
        v = JSON.parse(s);
      } catch {
        v = null;
      }
    }
    this.jsonCache.set(key, v);
    return v;
  }
}
