// The ES module's contract in a static page (no Jupyter): view choice from the Arrow schema,
// replace/append/seq merging per animation frame, the virtualised table, status levels, the
// messages it sends, and array results (images with overlays, binning, log scale and a row
// selector; profiles and their map). Fast; the Jupyter end-to-end tests are lab.test.mjs and notebook7.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launchBrowser, shot } from "./jupyter.mjs";
import { startPage, ipc, listCol, arrow } from "./page.mjs";

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

// ---- array results: images and profiles ------------------------------------------------------

// The widget's colour table (viridis, 9 stops → 256 entries), computed here independently.
const STOPS = [[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37]];
const LUT = range(256, (i) => {
  const f = (i / 255) * 8, k = Math.min(7, Math.floor(f)), t = f - k;
  return Array.from(new Uint8ClampedArray(range(3, (c) => STOPS[k][c] + (STOPS[k + 1][c] - STOPS[k][c]) * t)));
});
const colour = (v, lo, hi, log = false) => {
  if (log) v = v > 0 ? Math.log(v) : -Infinity, lo = Math.log(lo), hi = Math.log(hi);
  const k = (v - lo) * (256 / (hi - lo));
  return LUT[k <= 0 ? 0 : k >= 255 ? 255 : Math.floor(k)];
};
/** RGBA of the canvas at css px (x, y) of the first element matching `sel` in widget i. */
const pixelAt = (i, sel, x, y) => page.evaluate(([i, sel, x, y]) => {
  // Copied out through a 1-px canvas (reading the widget's own canvas back would slow it down).
  const c = window.models[i].el.querySelector(sel), d = devicePixelRatio;
  const t = (window.probe ||= document.createElement("canvas").getContext("2d", { willReadFrequently: true }));
  t.canvas.width = t.canvas.height = 1;
  t.drawImage(c, Math.floor(x * d), Math.floor(y * d), 1, 1, 0, 0, 1, 1);
  return [...t.getImageData(0, 0, 1, 1).data];
}, [i, sel, x, y]);
const imgInfo = (i) => page.evaluate((i) => ({ ...window.models[i].el.querySelector(".bt-image").dataset }), i);
/** RGB of shown image pixel (r, c): the centre of its scaled block. */
const shownPixel = async (i, r, c) => {
  const s = Number((await imgInfo(i)).scale);
  return (await pixelAt(i, ".bt-image canvas", (c + 0.5) * s, (r + 0.5) * s)).slice(0, 3);
};
const near = (a, b, tol = 2) => a.length === b.length && a.every((v, k) => Math.abs(v - b[k]) <= tol);
const white = (p) => p[0] > 200 && p[1] > 200 && p[2] > 200;

// A 64 × 96 image per delay bin: 0 background, a 1000 block (rows 10–19, cols 10+25k … 29+25k
// for row k), a 31.6 patch (rows 40–49, cols 40–59).
const R = 64, C = 96, MID = 31.6;
const frameImage = (k) => {
  const a = new Float32Array(R * C);
  for (let r = 0; r < R; r++)
    for (let c = 0; c < C; c++) {
      if (r >= 10 && r < 20 && c >= 10 + 25 * k && c < 30 + 25 * k) a[r * C + c] = 1000;
      else if (r >= 40 && r < 50 && c >= 40 && c < 60) a[r * C + c] = MID;
    }
  return a;
};
const imageTable = (n) => ipc(
  { delay_bin: f64(range(n, (k) => (k + 1) / 10)), img: listCol(range(n, frameImage)), n: i64(range(n, () => 7)) },
  { "beamtime:keys": "delay_bin", "beamtime:shapes": { img: [R, C] } },
);

test("array results: the auto view is image for a shaped list column, profile for a 1-D one", async () => {
  const prof = listCol(range(3, (k) => range(50, (b) => k + b)), true);
  const cases = [
    ["shaped list → image", { delay_bin: f64([0.1, 0.2, 0.3]), img: listCol(range(3, frameImage)) }, { "beamtime:keys": "delay_bin", "beamtime:shapes": { img: [R, C] } }, "image", ".bt-image canvas"],
    ["3-D shape → image", { img: listCol([new Float32Array(2 * 4 * 8)]) }, { "beamtime:keys": "", "beamtime:shapes": { img: [2, 4, 8] } }, "image", ".bt-image canvas"],
    ["1-D list → profile", { delay_bin: f64([0.1, 0.2, 0.3]), radial: prof }, { "beamtime:keys": "delay_bin" }, "profile", ".bt-plot canvas"],
    ["1-D list, no metadata → profile", { step: i64([0, 1, 2]), radial: prof }, null, "profile", ".bt-plot canvas"],
    ["hist* list → still bars", { step: i64([0, 1, 2]), hist: prof }, null, "hist", ".bt-plot canvas"],
    ["a shape for another column → profile", { delay_bin: f64([0.1, 0.2, 0.3]), radial: prof }, { "beamtime:shapes": { other: [4, 4] } }, "profile", ".bt-plot canvas"],
  ];
  for (const [name, cols, meta, kind, sel] of cases) {
    const i = await mount({ title: name });
    await send(i, { type: "replace", seq: 1 }, ipc(cols, meta));
    const h = await hooks(i);
    assert.equal(h.kind, kind, name);
    assert.ok(await page.evaluate(([i, sel]) => !!window.models[i].el.querySelector(sel), [i, sel]), `${name}: ${sel}`);
    if (name.startsWith("3-D")) assert.equal((await imgInfo(i)).shape, "8x8", "segments stacked vertically");
    if (kind === "image") {
      // A reset (zero rows, same schema) keeps the view, empty.
      await send(i, { type: "replace", seq: 2 }, ipc(Object.fromEntries(Object.entries(cols).map(([k, v]) => [k, v.slice(0, 0)])), meta));
      const e = await hooks(i);
      assert.deepEqual([e.kind, e.rows, (await imgInfo(i)).shape], ["image", 0, ""]);
    }
  }
  assert.deepEqual(pg.errors, []);
});

test("image: colours from the percentile range, fixed range, log scale, row selector kept across updates", async () => {
  const i = await mount({ height: 200 });
  await send(i, { type: "replace", seq: 1 }, imageTable(3));
  let h = await hooks(i);
  assert.equal(h.kind, "image");
  let info = await imgInfo(i);
  assert.equal(info.shape, `${R}x${C}`);
  assert.equal(info.row, "2", "the last row by default");
  // Autorange: the 1st and 99.5th percentiles of all (≤ 64 k) values, as the widget defines them.
  const vals = Float64Array.from(frameImage(2)).sort();
  const lo = vals[Math.floor(0.01 * (vals.length - 1))], hi = vals[Math.floor(0.995 * (vals.length - 1))];
  assert.deepEqual([Number(info.lo), Number(info.hi)], [lo, hi]);
  assert.deepEqual([lo, hi], [0, 1000]);
  assert.ok(near(await shownPixel(i, 15, 70), LUT[255]), "row 2's bright block: the top colour");
  assert.ok(near(await shownPixel(i, 15, 20), LUT[0]), "zeros: the bottom colour");
  assert.ok(near(await shownPixel(i, 45, 50), colour(MID, lo, hi)), "mid value, linear");
  assert.notDeepEqual(LUT[0], colour(MID, lo, hi));
  // A fixed range [1, 1000], then the log scale: the mid value moves from index 7 to 127.
  const ctl = page.locator(".beamtime-widget").nth(i).locator(".bt-img-ctrl");
  await ctl.locator(".bt-img-range").selectOption("fixed");
  await ctl.locator(".bt-img-lo").fill("1");
  await ctl.locator(".bt-img-hi").fill("1000");
  await hooks(i);
  const linMid = colour(MID, 1, 1000);
  assert.ok(near(await shownPixel(i, 45, 50), linMid), `fixed linear mid ${await shownPixel(i, 45, 50)} vs ${linMid}`);
  await ctl.locator(".bt-img-scale").selectOption("log");
  await hooks(i);
  const logMid = colour(MID, 1, 1000, true);
  assert.ok(Math.abs(logMid[1] - linMid[1]) > 50, "log moves the mid value well up the scale");
  assert.ok(near(await shownPixel(i, 45, 50), logMid), `log mid ${await shownPixel(i, 45, 50)} vs ${logMid}`);
  assert.ok(near(await shownPixel(i, 15, 20), LUT[0]), "log of 0: the lowest colour");
  assert.ok(near(await shownPixel(i, 15, 70), LUT[255]));
  // The row selector, labelled by the key: row 0 moves the bright block left.
  const sel = ctl.locator(".bt-img-row");
  assert.deepEqual(await sel.locator("option").allTextContents(), ["delay_bin=0.1", "delay_bin=0.2", "delay_bin=0.3"]);
  await sel.selectOption({ label: "delay_bin=0.1" });
  await hooks(i);
  assert.ok(near(await shownPixel(i, 15, 20), LUT[255]), "row 0: block at cols 10–29");
  assert.ok(near(await shownPixel(i, 15, 70), LUT[0]));
  // An update with a new delay bin keeps the chosen row (and the scale settings).
  await send(i, { type: "replace", seq: 2 }, imageTable(4));
  await hooks(i);
  assert.equal(await sel.locator("option").count(), 4);
  info = await imgInfo(i);
  assert.equal(info.row, "0");
  assert.ok(near(await shownPixel(i, 15, 20), LUT[255]), "still row 0 after the update");
  assert.equal(await ctl.locator(".bt-img-scale").inputValue(), "log");
  // A single-row result hides the selector.
  const j = await mount();
  await send(j, { type: "replace", seq: 1 }, imageTable(1));
  await hooks(j);
  assert.equal(await page.locator(".beamtime-widget").nth(j).locator(".bt-img-row").isHidden(), true);
  assert.ok(near(await shownPixel(j, 15, 20), LUT[255]));
  await shot(page, "esm-image");
  assert.deepEqual(pg.errors, []);
});

test("image: overlays and the hover readout in original pixels of a binned image", async () => {
  // Shown 32 × 48, each pixel the mean of a 4 × 2 block: original 128 × 96.
  const sr = 32, sc = 48, FR = 4, FC = 2;
  const a = Float32Array.from(range(sr * sc, (k) => k % 7));
  a[5 * sc + 7] = 123.5;
  const overlays = [
    { kind: "rect", r0: 40, r1: 80, c0: 20, c1: 60, label: "roi" }, // shown rows 10–20, cols 10–30
    { kind: "ring", cx: 71, cy: 63, r: 20, label: "ring" },
  ];
  const i = await mount({ overlays });
  await send(i, { type: "replace", seq: 1 }, ipc({ img: listCol([a]) }, { "beamtime:keys": "", "beamtime:shapes": { img: [sr, sc] }, "beamtime:binning": { img: [FR, FC] } }));
  assert.equal((await hooks(i)).kind, "image");
  const s = Number((await imgInfo(i)).scale);
  const px = (x, y) => pixelAt(i, ".bt-image canvas", x, y);
  // The rect's top edge at original row 40 = shown row 10, its left edge at original col 20 = shown col 10.
  const top = Math.floor((40 / FR) * s), left = Math.floor((20 / FC) * s);
  const midX = ((20 + 60) / 2 / FC) * s, midY = ((40 + 80) / 2 / FR) * s;
  assert.ok(white(await px(midX, top)), `top edge at y=${top}: ${await px(midX, top)}`);
  assert.ok(white(await px(left, midY)), `left edge at x=${left}`);
  assert.ok(!white(await px(midX, top + 4)) && !white(await px(midX, top - 4)), "a thin line");
  assert.ok(!white(await px(midX, midY)), "inside: the image");
  const bottom = Math.floor((80 / FR) * s);
  assert.ok(white(await px(midX, bottom)), "bottom edge at original row 80");
  // The ring: centre (row 63, col 71) + 0.5, radius 20 original pixels; right-most point.
  const cx = ((71.5 + 20) / FC) * s, cy = (63.5 / FR) * s;
  let hit = false;
  for (let dx = -1; dx <= 1; dx++) for (let dy = -1; dy <= 1; dy++) hit ||= white(await px(cx + dx, cy + dy));
  assert.ok(hit, "ring drawn at its radius");
  // Overlays change without data.
  await page.evaluate((i) => window.models[i].set("overlays", []), i);
  await hooks(i);
  assert.ok(!white(await px(midX, top)), "overlays removed");
  // Hover shown pixel (5, 7): original rows 20–23, cols 14–15, the block's mean.
  const cv = page.locator(".beamtime-widget").nth(i).locator(".bt-image canvas");
  await cv.scrollIntoViewIfNeeded();
  const box = await cv.boundingBox();
  await page.mouse.move(box.x + 7.5 * s, box.y + 5.5 * s);
  await page.waitForFunction((i) => window.models[i].el.querySelector(".bt-img-readout").dataset.row0 != null, i);
  const ro = await page.evaluate((i) => { const e = window.models[i].el.querySelector(".bt-img-readout"); return { ...e.dataset, text: e.textContent }; }, i);
  assert.deepEqual([ro.row0, ro.row1, ro.col0, ro.col1, ro.value], ["20", "23", "14", "15", "123.5"]);
  assert.match(ro.text, /row 20–23 col 14–15 = 123\.5 \(mean of 4×2\)/);
  await page.mouse.move(0, 0);
  assert.deepEqual(pg.errors, []);
});

test("profile: one series per row with x from beamtime:axes; many rows offer the map", async () => {
  const nb = 50;
  const val = (key, b) => key * 100 + b;
  const axes = { radial: { label: "radius (px)", start: 12.5, step: 5 } };
  const i = await mount();
  const keys = [0.1, 0.2, 0.3];
  await send(i, { type: "replace", seq: 1 }, ipc({ delay_bin: f64(keys), radial: listCol(keys.map((k) => range(nb, (b) => val(k, b))), true) }, { "beamtime:keys": "delay_bin", "beamtime:axes": axes }));
  assert.equal((await hooks(i)).kind, "profile");
  const bt = await page.evaluate((i) => { const e = window.models[i].el.querySelector(".bt-plot"); return { labels: e.bt.labels, data: e.bt.data.map((a) => Array.from(a)) }; }, i);
  assert.deepEqual(bt.labels, ["delay_bin=0.1", "delay_bin=0.2", "delay_bin=0.3"]);
  assert.equal(bt.data.length, 4, "x + one series per row");
  assert.deepEqual(bt.data[0], range(nb, (b) => 12.5 + 5 * b));
  assert.deepEqual(bt.data[2], range(nb, (b) => val(0.2, b)));
  const w = page.locator(".beamtime-widget").nth(i);
  assert.deepEqual((await w.locator(".u-legend .u-series .u-label").allTextContents()).slice(1), bt.labels);
  assert.equal(await w.locator(".bt-offer").isHidden(), true, "no map offered for 3 rows");
  // 20 rows (keys in descending order): the map is offered; taking it draws bins × keys.
  const many = range(20, (k) => 19 - k);
  await send(i, { type: "replace", seq: 2 }, ipc({ delay_bin: f64(many), radial: listCol(many.map((k) => range(nb, (b) => val(k, b))), true) }, { "beamtime:keys": "delay_bin", "beamtime:axes": axes }));
  assert.equal((await hooks(i)).kind, "profile");
  assert.equal((await page.evaluate((i) => window.models[i].el.querySelector(".bt-plot").bt.labels, i)).length, 20);
  await w.locator(".bt-offer button").click();
  assert.equal((await hooks(i)).kind, "heatmap");
  assert.equal(await w.locator(".beamtime-kind").inputValue(), "heatmap");
  // Cell (bin b, key j) of the map: rows ordered by key, key 0 at the bottom.
  const geo = await page.evaluate((i) => { const c = window.models[i].el.querySelector(".bt-heatmap canvas"); return [parseFloat(c.style.width), parseFloat(c.style.height)]; }, i);
  const M = { l: 56, r: 70, t: 8, b: 34 }, pw = geo[0] - M.l - M.r, ph = geo[1] - M.t - M.b;
  const cell = async (b, j) => (await pixelAt(i, ".bt-heatmap canvas", M.l + ((b + 0.5) * pw) / nb, M.t + ph - ((j + 0.5) * ph) / 20)).slice(0, 3);
  const top = val(19, nb - 1);
  const hm = (v) => LUT[Math.floor((v * 255) / top)];
  assert.ok(near(await cell(0, 0), hm(0)), "bottom-left: key 0, bin 0");
  assert.ok(near(await cell(nb - 1, 19), hm(top)), "top-right: key 19, last bin");
  assert.ok(near(await cell(10, 7), hm(val(7, 10))), `key 7 bin 10: ${await cell(10, 7)} vs ${hm(val(7, 10))}`);
  // The model's kind "heatmap" on a profile column is the same map.
  const j = await mount({ kind: "heatmap" });
  await send(j, { type: "replace", seq: 1 }, ipc({ delay_bin: f64(keys), radial: listCol(keys.map((k) => range(nb, (b) => val(k, b))), true) }, { "beamtime:keys": "delay_bin" }));
  assert.equal((await hooks(j)).kind, "heatmap");
  await shot(page, "esm-profile");
  assert.deepEqual(pg.errors, []);
});
