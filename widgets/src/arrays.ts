// Array results: list columns holding one flat (row-major) array per row, described by the
// schema metadata beamtime:shapes / beamtime:binning / beamtime:axes; row labels from the keys.
import { DataType, Field, Vector } from "apache-arrow";
import { Frame, isListType, isNumericType, listNumbers } from "./data";

export type Flat = Float32Array | Float64Array;

/** The list's element type, if `f` is a list column. */
function childType(f: Field): DataType | undefined {
  return isListType(f.type) ? ((f.type as any).children?.[0]?.type as DataType | undefined) : undefined;
}

/** A list of numbers (one 1-D array per row; a flat 2-D/3-D one when it has a shape). */
export function isNumList(f: Field): boolean {
  const c = childType(f);
  return !!c && isNumericType(c) && !isListType(c);
}

function positiveInts(a: unknown): number[] | null {
  if (!Array.isArray(a) || !a.every((v) => Number.isInteger(v) && v > 0)) return null;
  return a as number[];
}

/** `[rows, cols]` or `[segments, rows, cols]` from beamtime:shapes (the shown, maybe binned shape). */
export function shapeOf(fr: Frame, col: string): number[] | null {
  const m = fr.json("beamtime:shapes");
  const s = m && typeof m === "object" ? positiveInts(m[col]) : null;
  return s && (s.length === 2 || s.length === 3) ? s : null;
}

/** `[fr, fc]` from beamtime:binning: each shown pixel is the mean of an fr×fc block ([1, 1] if none). */
export function binningOf(fr: Frame, col: string): [number, number] {
  const m = fr.json("beamtime:binning");
  const b = m && typeof m === "object" ? positiveInts(m[col]) : null;
  return b && b.length === 2 ? [b[0], b[1]] : [1, 1];
}

export interface Axis {
  label: string;
  start: number;
  step: number;
}

/** x of bin i = start + i·step, from beamtime:axes (else the bin index). */
export function axisOf(fr: Frame, col: string): Axis {
  const m = fr.json("beamtime:axes");
  const a = m && typeof m === "object" ? m[col] : null;
  const num = (v: unknown, d: number) => (typeof v === "number" && Number.isFinite(v) ? v : d);
  if (a && typeof a === "object") {
    return { label: typeof a.label === "string" && a.label ? a.label : `${col} bin`, start: num(a.start, 0), step: num(a.step, 1) };
  }
  return { label: `${col} bin`, start: 0, step: 1 };
}

/** Row r of list column `col` as numbers: the Arrow buffer itself for Float32/Float64 lists. */
export function rowArray(fr: Frame, col: string, r: number): Flat | null {
  const vec = fr.vec(col);
  if (!vec || r < 0 || r >= fr.rows) return null;
  const v = vec.get(r) as Vector | null;
  if (!v) return null;
  const a = v.toArray();
  if (a instanceof Float32Array || a instanceof Float64Array) return a;
  return listNumbers(v);
}

/** The GROUP BY key columns (beamtime:keys), else the first column when it is not a list. */
export function keyColumns(fr: Frame): string[] {
  const meta = fr.metadata("beamtime:keys");
  if (meta != null) return meta.split(",").map((s) => s.trim()).filter((s) => fr.names.includes(s));
  const f = fr.fields[0];
  return f && !isListType(f.type) ? [f.name] : [];
}

function fmt(v: unknown): string {
  if (v == null) return "null";
  if (typeof v === "number") return Number.isFinite(v) ? String(Number(v.toPrecision(6))) : String(v);
  if (typeof v === "bigint") return v.toString();
  if (v instanceof Date) return v.toISOString();
  return String(v);
}

/** One label per row, "key=value, key2=value2" (or "row i" without keys). */
export function rowLabels(fr: Frame, keys: string[]): string[] {
  const vecs = keys.map((k) => fr.vec(k));
  const out = new Array<string>(fr.rows);
  for (let r = 0; r < fr.rows; r++) {
    out[r] = keys.length ? keys.map((k, i) => `${k}=${fmt(vecs[i]?.get(r))}`).join(", ") : `row ${r}`;
  }
  return out;
}

/** The rows of a profile column for a map: ordered by the (one, numeric) key, else in row order. */
export function profileRows(fr: Frame, col: string): { order: number[]; ys: Float64Array; yLabel: string } {
  const keys = keyColumns(fr);
  const n = fr.rows;
  const order = Array.from({ length: n }, (_, i) => i);
  const key = keys.length === 1 && isNumericType(fr.field(keys[0])!.type) ? keys[0] : null;
  if (!key) return { order, ys: Float64Array.from(order), yLabel: "row" };
  const k = fr.num(key);
  const val = (i: number) => (k[i] == null ? Infinity : (k[i] as number));
  order.sort((a, b) => val(a) - val(b));
  return { order, ys: Float64Array.from(order, (i) => val(i)), yLabel: key };
}
