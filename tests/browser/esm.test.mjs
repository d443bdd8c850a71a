// The ES module's contract in a static page (no Jupyter): view choice from the Arrow schema,
// replace/append/seq merging per animation frame, the virtualised table, status levels, and the
// messages it sends. Fast; the Jupyter end-to-end tests are lab.test.mjs and notebook7.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, shot } from "./jupyter.mjs";
import { startPage, ipc, arrow } from "./page.mjs";

let browser, pg, page;
before(async () => {
  browser = await launchBrowser();
  pg = await startPage(browser);
  page = pg.page;
});
after(async () => {
  await pg?.close();
  await browser?.close();
});

const mount = (state = {}) => page.evaluate((s) => window.mount(s), state);
const send = (i, msg, b64, at = 0) =>
  page.evaluate(([i, msg, b64, at]) => window.models[i].emit("msg:custom", msg, b64 == null ? [] : [window.dv(b64, at)]), [i, msg, b64, at]);
const hooks = async (i) => {
  await page.evaluate(() => window.frame());
  return page.evaluate((i) => window.hooks(i), i);
};
const i64 = (a) => arrow.makeVector(BigInt64Array.from(a.map(BigInt)));
const f64 = (a) => arrow.makeVector(Float64Array.from(a));
const utf8 = (a) => arrow.vectorFromArray(a, new arrow.Utf8());
const range = (n, f = (i) => i) => Array.from({ length: n }, (_, i) => f(i));

test("auto view from the schema", async () => {
  const ts = arrow.vectorFromArray(range(5, (i) => new Date(Date.UTC(2026, 0, 1, 0, 0, i))), new arrow.TimestampMillisecond());
  const grid = range(16 * 16);
  const listOfLists = arrow.vectorFromArray([range(4, (r) => range(4, (c) => r * 4 + c))], new arrow.List(new arrow.Field("item", new arrow.List(new arrow.Field("item", new arrow.Float64())))));
  const histList = arrow.vectorFromArray([range(10, (i) => i * i)], new arrow.List(new arrow.Field("item", new arrow.Float64())));
  const cases = [
    ["line + error bars", { step: i64(range(10)), signal: f64(range(10, Math.sin)), signal_std: f64(range(10, () => 0.1)), n: i64(range(10, () => 50)) }, "line"],
    ["hist edges + count", { hist: f64(range(50, (i) => i * 0.5)), count: i64(range(50)) }, "hist"],
    ["heatmap keys + value", { px: i64(grid.map((k) => k % 16)), py: i64(grid.map((k) => Math.floor(k / 16))), v: f64(grid) }, "heatmap"],
    ["strip: timestamps", { time: ts, rate: f64(range(5)) }, "strip"],
    ["scatter: a row query of floats", { ipm: f64(range(50, () => Math.random())), diode: f64(range(50, () => Math.random())) }, "scatter"],
    ["table: a string key", { det: utf8(["a", "b", "c"]), mean: f64([1, 2, 3]) }, "table"],
    ["hist: a list column named hist", { step: i64([0]), hist: histList }, "hist"],
    ["image: a list of lists", { image: listOfLists }, "heatmap"],
  ];
  for (const [name, cols, kind] of cases) {
    const i = await mount({ title: name });
    await send(i, { type: "replace", seq: 1 }, ipc(cols));
    const h = await hooks(i);
    assert.equal(h.kind, kind, name);
    assert.ok(await page.$(`.beamtime-widget >> nth=${i} >> ${kind === "table" ? ".beamtime-table" : "canvas"}`), `${name}: element`);
  }
  // Zero rows (a reset) in every view: no error, the view stays.
  for (const kind of ["line", "scatter", "hist", "heatmap", "strip", "table"]) {
    const i = await mount({ kind });
    await send(i, { type: "replace", seq: 1 }, ipc({ px: i64([]), py: i64([]), v: f64([]) }));
    const h = await hooks(i);
    assert.equal(h.kind, kind, `empty ${kind}`);
    assert.equal(h.rows, 0);
  }
  // The model's kind, x and y override the choice; the dropdown overrides it for this view.
  const i = await mount({ kind: "table" });
  await send(i, { type: "replace", seq: 1 }, ipc(cases[0][1]));
  assert.equal((await hooks(i)).kind, "table");
  await page.evaluate((i) => window.models[i].set("kind", "scatter"), i);
  assert.equal((await hooks(i)).kind, "scatter");
  await page.evaluate((i) => { window.models[i].set("kind", "auto"); window.models[i].set("x", "signal"); window.models[i].set("y", ["n"]); }, i);
  assert.equal((await hooks(i)).kind, "scatter", "x that isn't a key: scatter");
  await page.locator(".beamtime-kind").nth(i).selectOption("hist");
  assert.equal((await hooks(i)).kind, "hist");
  await shot(page, "esm-views");
  assert.deepEqual(pg.errors, []);
});

test("replace, append, seq and the bounded snapshot", async () => {
  const snap = ipc({ a: i64([1, 2, 3]) });
  const i = await page.evaluate((b) => window.mount({ snapshot: window.dv(b), status: { seq: 3 }, kind: "table" }), snap);
  let h = await hooks(i);
  assert.equal(h.rows, 3, "the snapshot trait shows before any message");
  assert.equal(h.seq, 3);
  assert.deepEqual(await page.evaluate((i) => window.models[i].sent, i), [{ type: "sync" }], "sync on render");
  await send(i, { type: "append", seq: 3 }, ipc({ a: i64([9]) }));
  assert.equal((await hooks(i)).rows, 3, "an append the snapshot holds is skipped");
  await send(i, { type: "append", seq: 4 }, ipc({ a: i64([4, 5]) }), 3); // misaligned buffer
  h = await hooks(i);
  assert.equal(h.rows, 5);
  assert.equal(h.seq, 4);
  // Everything received between two frames is merged into one paint.
  const f0 = h.frames;
  await page.evaluate(([i, b64s]) => b64s.forEach((b, k) => window.models[i].emit("msg:custom", { type: "append", seq: 5 + k }, [window.dv(b)])),
    [i, range(40, (k) => ipc({ a: i64([100 + k]) }))]);
  h = await hooks(i);
  assert.equal(h.rows, 45);
  assert.equal(h.seq, 44);
  assert.ok(h.frames - f0 <= 2, `40 messages painted in ${h.frames - f0} frames`);
  // A sliding window: an append extending our table (prev = our seq) drops its oldest rows first.
  await send(i, { type: "append", seq: 45, prev: 44, drop: 40 }, ipc({ a: i64([7, 8]) }));
  h = await hooks(i);
  assert.equal(h.rows, 7);
  assert.equal(h.seq, 45);
  // An append that extends another table than ours (rows missed): not applied, the widget
  // asks for a sync.
  await new Promise((r) => setTimeout(r, 1100)); // syncs are at most once a second
  await send(i, { type: "append", seq: 47, prev: 46, drop: 2 }, ipc({ a: i64([7]) }));
  h = await hooks(i);
  assert.equal(h.rows, 7);
  assert.equal(h.seq, 45);
  assert.deepEqual(await page.evaluate((i) => window.models[i].sent, i), [{ type: "sync" }, { type: "sync" }]);
  // A replace starts over; an append with another schema starts a new table.
  await send(i, { type: "replace", seq: 50 }, ipc({ a: i64([]) }));
  assert.equal((await hooks(i)).rows, 0);
  await send(i, { type: "append", seq: 51 }, ipc({ b: utf8(["x", "y"]) }));
  h = await hooks(i);
  assert.equal(h.rows, 2);
  assert.equal(h.seq, 51);
  // A custom status message and the status trait feed the same line.
  await send(i, { type: "status", status: { events: 1234567, included: 1000000, dropped: 5, rate: 12345, ranks_alive: 3, ranks_total: 4, age_s: 0.5 } });
  h = await hooks(i);
  assert.match(h.status, /events 1,234,567 · included 1,000,000 · dropped 5 · rate 12\.3 k ev\/s · ranks 3\/4 · age 0\.\d s/);
});

test("status: age levels, dead and stalled ranks, errors, Pause and Reset messages", async () => {
  const i = await mount({ status: { events: 1, rate: 5, age_s: 0.2 } });
  const set = (s) => page.evaluate(([i, s]) => window.models[i].set("status", s), [i, s]);
  assert.equal((await hooks(i)).age, "ok");
  await set({ events: 1, age_s: 3 });
  assert.equal((await hooks(i)).age, "amber");
  await set({ events: 1, age_s: 11, dead: [2], stalled: [3, 4], error: "rank 2 died" });
  let h = await hooks(i);
  assert.equal(h.age, "red");
  assert.match(h.status, /dead: 2 · stalled: 3, 4 · error: rank 2 died/);
  await set({ events: 1, age_s: 30, done: true });
  h = await hooks(i);
  assert.equal(h.age, "ok", "a finished run is not stale");
  assert.match(h.status, /done/);
  // The age ticks between status messages.
  await set({ events: 1, age_s: 1.8 });
  await page.waitForFunction((i) => window.hooks(i).age === "amber", i, { timeout: 3000 });
  await page.locator(".beamtime-pause").nth(i).click();
  await page.locator(".beamtime-pause").nth(i).click();
  await page.locator(".beamtime-reset").nth(i).click();
  assert.deepEqual(await page.evaluate((i) => window.models[i].sent, i), [
    { type: "sync" }, { type: "pause", paused: true }, { type: "pause", paused: false }, { type: "reset" },
  ]);
});

test("a 10 k-row table renders only its visible rows, scrolls and sorts", async () => {
  const n = 10000;
  const i = await mount({ kind: "table" });
  await send(i, { type: "replace", seq: 1 }, ipc({ id: i64(range(n)), value: f64(range(n, (k) => ((k * 7919) % n) / 10)), name: utf8(range(n, (k) => `row ${k}`)) }));
  assert.equal((await hooks(i)).rows, n);
  const tbl = page.locator(".beamtime-widget").nth(i).locator(".beamtime-table");
  const domRows = () => tbl.evaluate((t) => [...t.querySelectorAll(".bt-body .bt-row")].filter((r) => r.style.display !== "none").map((r) => Number(r.dataset.row)));
  let rows = await domRows();
  assert.ok(rows.length > 5 && rows.length < 60, `${rows.length} rows in the DOM`);
  // Scroll through the table: each step repaints within a frame or two.
  const ms = await tbl.evaluate(async (t) => {
    const times = [];
    for (let k = 1; k <= 40; k++) {
      const t0 = performance.now();
      t.scrollTop = (k * t.scrollHeight) / 41;
      await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
      times.push(performance.now() - t0);
    }
    t.scrollTop = 5000 * 22;
    await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    return times.sort((a, b) => a - b);
  });
  rows = await domRows();
  assert.ok(rows.includes(5000) && rows.length < 60, `rows around 5000: ${rows[0]}…${rows[rows.length - 1]}`);
  assert.ok(ms[Math.floor(ms.length / 2)] < 100, `median scroll step ${ms[Math.floor(ms.length / 2)].toFixed(1)} ms`);
  // Click "value" to sort descending on the second click; the top row has the largest value.
  await tbl.evaluate((t) => (t.scrollTop = 0));
  const head = tbl.locator(".bt-head [data-col='1']");
  await head.click();
  await hooks(i);
  assert.equal(await tbl.locator(".bt-body .bt-row[data-row]").first().locator(".bt-cell").nth(1).textContent(), "0");
  await head.click();
  await hooks(i);
  const top = await tbl.evaluate((t) => [...t.querySelectorAll(".bt-body .bt-row")].sort((a, b) => a.style.transform.localeCompare(b.style.transform, "en", { numeric: true }))[0].children[1].textContent);
  assert.equal(top, String((n - 1) / 10));
  await shot(page, "esm-table");
  assert.deepEqual(pg.errors, []);
});
