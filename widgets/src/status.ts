// The status line: how complete and how fresh the result is.

export interface Status {
  query?: string | null;
  seq?: number | null;
  mode?: string | null;
  events?: number | null;
  included?: number | null;
  dropped?: number | null;
  rate?: number | null;
  /** Events/s over the whole reading (shown once done, when the recent rate has gone to 0). */
  mean_rate?: number | null;
  ranks_alive?: number | null;
  ranks_total?: number | null;
  stalled?: unknown[] | null;
  dead?: unknown[] | null;
  age_s?: number | null;
  done?: boolean | null;
  error?: string | null;
  paused?: boolean | null;
}

export type AgeLevel = "ok" | "amber" | "red";

export function fmtCount(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return "–";
  return Math.round(v).toLocaleString("en-US");
}

export function fmtRate(v: number | null | undefined): string {
  if (v == null || !Number.isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e6) return `${(v / 1e6).toFixed(2)} M ev/s`;
  if (a >= 1e3) return `${(v / 1e3).toFixed(1)} k ev/s`;
  return `${v.toFixed(a >= 10 ? 0 : 1)} ev/s`;
}

export function ageLevel(age: number | null, done: boolean): AgeLevel {
  if (done || age == null) return "ok";
  return age > 10 ? "red" : age > 2 ? "amber" : "ok";
}

function ids(v: unknown[] | null | undefined): string {
  return (v ?? []).map((x) => String(x)).join(", ");
}

export interface StatusParts {
  text: string;
  level: AgeLevel;
  warn: string;
  error: string;
}

/** `age` is status.age_s advanced by the time since the status arrived. */
export function statusParts(s: Status | null | undefined, age: number | null): StatusParts {
  if (!s || typeof s !== "object" || Object.keys(s).length === 0) {
    return { text: "waiting for data…", level: "ok", warn: "", error: "" };
  }
  const parts: string[] = [];
  parts.push(`events ${fmtCount(s.events)}`);
  parts.push(`included ${fmtCount(s.included)}`);
  parts.push(`dropped ${fmtCount(s.dropped)}`);
  if (s.done && s.mean_rate != null) parts.push(`mean rate ${fmtRate(s.mean_rate)}`);
  else parts.push(`rate ${fmtRate(s.rate)}`);
  if (s.ranks_alive != null || s.ranks_total != null) {
    parts.push(`ranks ${s.ranks_alive ?? "–"}/${s.ranks_total ?? "–"}`);
  }
  parts.push(age == null ? "age –" : `age ${age < 10 ? age.toFixed(1) : Math.round(age)} s`);
  if (s.mode) parts.push(String(s.mode));
  if (s.done) parts.push("done");
  if (s.paused) parts.push("paused");
  const warn: string[] = [];
  if (s.dead && s.dead.length) warn.push(`dead: ${ids(s.dead)}`);
  if (s.stalled && s.stalled.length) warn.push(`stalled: ${ids(s.stalled)}`);
  return {
    text: parts.join(" · "),
    level: ageLevel(age, !!s.done),
    warn: warn.join(" · "),
    error: s.error ? String(s.error) : "",
  };
}
