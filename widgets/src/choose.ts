// Which view shows a result: from the Arrow schema (and, where the schema can't tell, the data).
import { DataType, Field } from "apache-arrow";
import { Frame, isListType, isNumericType, isTimeType } from "./data";
import { isNumList, shapeOf } from "./arrays";

export const KINDS = ["table", "line", "scatter", "hist", "heatmap", "strip", "image", "profile"] as const;
export type Kind = (typeof KINDS)[number];

/** Error bars of one y series: ±err, ±std, ±sqrt(var), each divided by sqrt(n) when `n` is set. */
export interface ErrSpec {
  col: string;
  how: "err" | "std" | "var";
  n?: string;
}

export interface Plan {
  kind: Kind;
  x?: string;
  ys: string[];
  err: Record<string, ErrSpec>;
  /** heatmap: the vertical key and the value. */
  y2?: string;
  z?: string;
  /** hist: a list column of counts; heatmap: a list-of-lists image column (or, with `profile`,
   * a profile column drawn as a map); image, profile: the array column. */
  list?: string;
  profile?: boolean;
  /** x is time in Unix seconds. */
  time: boolean;
}

const COUNT = /^(n|count|counts|cnt|count\(\*\)|len|entries|events|n_.*|.*_(n|count))$/i;
const ERR = /^(.*)_(std|stddev|sd|var|variance|err|error|sem)$/i;
const TIME = /^(time|timestamp|t|time_s|window|window_start|window_end|win|ts)$/i;
const HISTX = /^(hist|bin|bins|edge|edges|lo|low|centre|center|centres|centers|bin_.*|hist_.*|.*_bin)$/i;

export function isCount(name: string): boolean {
  return COUNT.test(name);
}

function errOf(name: string): string | null {
  const m = ERR.exec(name);
  return m ? m[1] : null;
}

function numericFields(fr: Frame): Field[] {
  return fr.fields.filter((f) => isNumericType(f.type) && !isListType(f.type));
}

function isListOfLists(f: Field): boolean {
  if (!isListType(f.type)) return false;
  const child = (f.type as any).children?.[0]?.type as DataType | undefined;
  return !!child && isListType(child);
}

/** Values of column `name` are all distinct and ascending (what a line needs for x). */
function sortedUnique(fr: Frame, name: string): boolean {
  const a = fr.num(name);
  for (let i = 1; i < a.length; i++) {
    const p = a[i - 1], c = a[i];
    if (p == null || c == null || !(c > p)) return false;
  }
  return true;
}

function hasRepeats(fr: Frame, name: string): boolean {
  const a = fr.num(name);
  const seen = new Set<number | null>();
  for (let i = 0; i < a.length; i++) {
    if (seen.has(a[i])) return true;
    seen.add(a[i]);
  }
  return false;
}

function asList(v: unknown): string[] {
  if (v == null || v === "") return [];
  if (Array.isArray(v)) return v.filter((s) => typeof s === "string" && s !== "");
  return typeof v === "string" ? [v] : [];
}

/** Error-bar columns of `y`, if the table has them. */
function errorBars(fr: Frame, y: string): ErrSpec | undefined {
  const names = new Set(fr.names);
  let spec: ErrSpec | undefined;
  for (const suf of ["err", "error", "sem"]) if (names.has(`${y}_${suf}`)) return { col: `${y}_${suf}`, how: "err" };
  for (const suf of ["std", "stddev", "sd"]) if (!spec && names.has(`${y}_${suf}`)) spec = { col: `${y}_${suf}`, how: "std" };
  for (const suf of ["var", "variance"]) if (!spec && names.has(`${y}_${suf}`)) spec = { col: `${y}_${suf}`, how: "var" };
  if (!spec) return undefined;
  for (const n of [`${y}_n`, `${y}_count`, "n", "count", "counts", "count(*)"]) {
    if (names.has(n)) {
      spec.n = n;
      break;
    }
  }
  return spec;
}

/** y series for a line: numeric columns other than x, error and count columns (counts if nothing else). */
function valueColumns(fr: Frame, x: string | undefined, nums: Field[]): string[] {
  const rest = nums.map((f) => f.name).filter((n) => n !== x);
  const errs = new Set<string>();
  for (const n of rest) {
    const base = errOf(n);
    if (base && fr.names.includes(base)) errs.add(n);
  }
  const vals = rest.filter((n) => !errs.has(n) && !isCount(n));
  return vals.length ? vals : rest.filter((n) => !errs.has(n));
}

export function choose(fr: Frame, want: string, xo: unknown, yo: unknown): Plan {
  const nums = numericFields(fr);
  const numNames = nums.map((f) => f.name);
  const xs = asList(xo).filter((n) => fr.names.includes(n));
  const ys = asList(yo).filter((n) => fr.names.includes(n));
  const plan = (kind: Kind, p: Partial<Plan> = {}): Plan => ({ kind, ys: [], err: {}, time: false, ...p });
  const table = () => plan("table");
  const keysMeta = (fr.metadata("beamtime:keys") ?? "").split(",").map((s) => s.trim()).filter((s) => fr.names.includes(s));

  const line = (kind: "line" | "strip"): Plan => {
    let x: string | undefined = xs[0];
    if (!x && kind === "strip") x = fr.fields.find((f) => isTimeType(f) || TIME.test(f.name))?.name;
    if (!x) x = keysMeta[0] ?? numNames[0];
    if (!x || !fr.names.includes(x)) return table();
    const fx = fr.field(x)!;
    const y = ys.length ? ys.filter((n) => numNames.includes(n)) : valueColumns(fr, x, nums);
    if (!y.length) return table();
    const err: Record<string, ErrSpec> = {};
    for (const n of y) {
      const e = errorBars(fr, n);
      if (e) err[n] = e;
    }
    return plan(kind, { x, ys: y, err, time: isTimeType(fx) });
  };

  const scatter = (): Plan => {
    const x = xs[0] ?? numNames[0];
    const y = ys.length ? ys.filter((n) => numNames.includes(n)) : numNames.filter((n) => n !== x).slice(0, 1);
    if (!x || !y.length) return table();
    return plan("scatter", { x, ys: y });
  };

  const hist = (): Plan => {
    const listHist = fr.fields.find((f) => isListType(f.type) && (f.name === ys[0] || /^hist/i.test(f.name)));
    if (listHist && !xs.length) return plan("hist", { list: listHist.name });
    const x = xs[0] ?? nums.find((f) => HISTX.test(f.name))?.name ?? numNames[0];
    const y = ys[0] ?? numNames.find((n) => n !== x && isCount(n)) ?? numNames.find((n) => n !== x);
    if (!x || !y) return table();
    return plan("hist", { x, ys: [y] });
  };

  // Array columns: shaped (2-D/3-D: images) and not (1-D: profiles; hist* lists are bars).
  const yList = fr.fields.find((f) => f.name === ys[0] && isNumList(f));
  const shaped = (f: Field) => isNumList(f) && shapeOf(fr, f.name) != null;
  const profileCol = (): Field | undefined =>
    (yList && !shaped(yList) ? yList : undefined) ??
    fr.fields.find((f) => isNumList(f) && !shaped(f) && !/^hist/i.test(f.name));

  const image = (): Plan => {
    const col = yList && shaped(yList) ? yList : fr.fields.find(shaped);
    if (col) return plan("image", { list: col.name });
    if (fr.fields.some((f) => isListOfLists(f))) return heatmap();
    return table();
  };

  const profile = (): Plan => {
    const col = profileCol() ?? yList ?? fr.fields.find((f) => isNumList(f) && !shaped(f));
    return col ? plan("profile", { list: col.name }) : table();
  };

  const heatmap = (): Plan => {
    const img = fr.fields.find((f) => isListOfLists(f) && (f.name === ys[0] || !ys.length));
    if (img && !xs.length) return plan("heatmap", { list: img.name });
    if (!xs.length) {
      // A profile column: its bins × the rows (keys) as a map.
      const p = profileCol();
      if (p) return plan("heatmap", { list: p.name, profile: true });
      if (yList && shaped(yList)) return plan("image", { list: yList.name });
    }
    const keys = keysMeta.length >= 2 ? keysMeta : numNames;
    const x = xs[0] ?? keys[0];
    const y2 = ys[0] ?? keys.find((n) => n !== x);
    if (!x || !y2) return table();
    const rest = numNames.filter((n) => n !== x && n !== y2);
    const z = ys[1] ?? rest.find((n) => !errOf(n) && !isCount(n)) ?? rest[0];
    if (!z) return table();
    return plan("heatmap", { x, y2, z });
  };

  switch (want) {
    case "table":
      return table();
    case "line":
      return line("line");
    case "strip":
      return line("strip");
    case "scatter":
      return scatter();
    case "hist":
      return hist();
    case "heatmap":
      return heatmap();
    case "image":
      return image();
    case "profile":
      return profile();
  }

  // auto
  if (yList && !xs.length) return shaped(yList) ? image() : /^hist/i.test(yList.name) ? hist() : profile();
  if (fr.fields.some(shaped)) return image();
  if (xs.length || ys.length) {
    // Columns named but no kind: a line unless x repeats.
    const p = line("line");
    if (p.kind === "line" && p.x && !sortedUnique(fr, p.x)) return scatter();
    return p;
  }
  if (fr.fields.some((f) => /^hist/i.test(f.name) && isListType(f.type))) return hist();
  if (fr.fields.some((f) => isListOfLists(f))) return heatmap();
  if (profileCol()) return profile();
  if (!nums.length) return table();
  const first = fr.fields[0];
  const nonErr = numNames.filter((n) => !(errOf(n) && fr.names.includes(errOf(n)!)));
  // A time or window key: strip chart.
  if (isTimeType(first) || (TIME.test(first.name) && isNumericType(first.type))) return line("strip");
  // (bin edges or centres, counts): bars.
  if (nonErr.length === 2 && isNumericType(first.type) && isCount(nonErr[1]) && (HISTX.test(first.name) || nonErr[0] === first.name)) {
    return hist();
  }
  if (HISTX.test(first.name) && isNumericType(first.type) && nonErr.length === 2) return hist();
  // Two keys and a value: a heatmap (the first key repeats across the second).
  const meta = fr.metadata("beamtime:keys");
  if (meta != null) {
    // The kernel said which columns are keys ("" for a row query).
    if (keysMeta.length === 2) return heatmap();
    if (keysMeta.length === 1 && numNames.includes(keysMeta[0])) return line("line");
    if (keysMeta.length === 0 && nonErr.length >= 2) return scatter();
    return table();
  }
  if (nonErr.length >= 3 && isNumericType(fr.fields[1].type) && hasRepeats(fr, first.name) && denseGrid(fr, first.name, fr.fields[1].name)) {
    return heatmap();
  }
  if (isNumericType(first.type)) {
    // A key is unique; an aggregate's key sorted or whole-numbered, a row query's floats not.
    if (sortedUnique(fr, first.name) || (!hasRepeats(fr, first.name) && wholeNumbers(fr, first.name))) return line("line");
    if (nonErr.length >= 2 && fr.rows > 0) return scatter();
  }
  return table();
}

function wholeNumbers(fr: Frame, name: string): boolean {
  const a = fr.num(name);
  for (let i = 0; i < a.length; i++) {
    const v = a[i];
    if (v != null && !Number.isInteger(v)) return false;
  }
  return true;
}

function distinct(fr: Frame, name: string): number {
  const a = fr.num(name);
  const seen = new Set<number | null>();
  let last: number | null | undefined = undefined;
  for (let i = 0; i < a.length; i++) {
    if (a[i] === last) continue;
    last = a[i];
    seen.add(last);
  }
  return seen.size;
}

/** (a, b) fill at least a quarter of their grid: keys of an aggregate, not a row query's values. */
function denseGrid(fr: Frame, a: string, b: string): boolean {
  const na = distinct(fr, a), nb = distinct(fr, b);
  return na > 1 && nb > 1 && na * nb <= 4 * fr.rows;
}
