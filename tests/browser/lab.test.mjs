// The widget in JupyterLab, in a real browser: run a notebook, then check that every widget
// renders and updates live, that Pause and Reset reach the kernel, and that a reload restores
// the widgets while the kernel stays alive. By default the notebook is a Python one driving the
// ES module with demo_widget.py; BT_KERNEL / BT_NOTEBOOK point it at another kernel/notebook.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  PARAMS, openSession, notebookUnderTest, waitKernelIdle, runAll, widgets, waitWidgets,
  fingerprint, shot, shotWidgets, badConsole, sleep, assertKinds, notebookRoi, assertImage, assertImageLive, widgetsAfterUpdates,
} from "./jupyter.mjs";

const DEMO = ["table", "agg", "hist", "heatmap", "rows", "strip"];
const DEMO_KINDS = ["table", "line", "hist", "heatmap", "scatter", "strip"];
const { name: NB, nb, demo } = notebookUnderTest("demo.ipynb", DEMO);
const expectWidgets = PARAMS.widgets || (demo ? DEMO.length : 1);
const live = (i) => !PARAMS.statics.includes(i); // the others show a finished (%%sql) result

let server, browser, page, consoleLog;

before(async () => {
  ({ server, browser, page, consoleLog } = await openSession("lab", NB, nb));
});

after(async () => {
  if (page) await shot(page, "lab-final").catch(() => {});
  await browser?.close();
  await server?.stop();
  if (consoleLog) console.log(`browser console (${consoleLog.length} lines), problems: ${JSON.stringify(badConsole(consoleLog))}`);
});

test("the notebook runs and every widget renders", async () => {
  await page.goto(`${server.base}/lab/tree/${NB}?token=${server.token}`);
  await waitKernelIdle(page);
  await runAll(page);
  await waitWidgets(page, expectWidgets, PARAMS.runTimeout);
  const ws = await widgets(page);
  assert.ok(ws.length >= expectWidgets, `${ws.length} widgets`);
  const kinds = PARAMS.kinds.length ? PARAMS.kinds : demo ? DEMO_KINDS : [];
  if (kinds.length) assertKinds(ws, kinds);
  for (const [i, w] of ws.entries()) {
    if (!live(i)) assert.match(w.status, /\bdone\b/, `widget ${i} (${w.kind}): a finished result`);
    const el = (await page.$$(".beamtime-widget"))[i];
    if (w.kind === "table") assert.ok(await el.$(".beamtime-table"), `widget ${i}: a .beamtime-table`);
    else assert.ok(await el.$("canvas"), `widget ${i} (${w.kind}): a canvas`);
  }
  await shot(page, "lab-run");
});

test("the widgets update live: seq, rows and pixels change; the status shows a rate", async () => {
  const before = await widgets(page);
  const prints = [];
  for (let i = 0; i < before.length; i++) prints.push(await fingerprint(page, i));
  // Until everything has changed (a plot of sums on rounded axes may look the same for a while).
  let now, changed;
  for (let t = 0; t < 30; t++) {
    await sleep(t ? 1000 : 2000);
    now = await widgets(page);
    changed = [];
    for (let i = 0; i < before.length; i++) changed.push(!live(i) || (await fingerprint(page, i)) !== prints[i]);
    if (changed.every(Boolean) && now.every((w, i) => !live(i) || w.seq > before[i].seq)) break;
  }
  for (let i = 0; i < before.length; i++) {
    if (!live(i)) continue;
    assert.ok(now[i].seq > before[i].seq, `widget ${i} (${now[i].kind}): seq ${before[i].seq} → ${now[i].seq}`);
    assert.ok(now[i].frames > before[i].frames, `widget ${i}: frames ${before[i].frames} → ${now[i].frames}`);
    assert.ok(changed[i], `widget ${i} (${now[i].kind}): what it shows changed`);
    assert.match(now[i].status, /rate [\d.]+ (k |M )?ev\/s/, `widget ${i}: status "${now[i].status}"`);
    assert.match(now[i].status, /events [\d,]+ · included [\d,]+ · dropped [\d,]+/);
    assert.equal(now[i].age, "ok", `widget ${i}: age level`);
  }
  assert.deepEqual(badConsole(consoleLog), []);
  await shotWidgets(page, "lab-widget");
});

test("the image paints, shows the ROI where it is, updates live", { skip: !PARAMS.image }, async () => {
  const { i, geom } = await assertImage(page, notebookRoi(), "lab");
  await assertImageLive(page, i, geom, "lab");
});

test("Pause stops the updates, Resume restarts them", { skip: !PARAMS.controls }, async () => {
  const i = 1 % expectWidgets;
  const el = (await page.$$(".beamtime-widget"))[i];
  await (await el.$(".beamtime-pause")).click();
  await page.waitForFunction((i) => document.querySelectorAll(".beamtime-widget")[i].dataset.paused === "true", i);
  await sleep(500); // messages already on their way
  const s0 = (await widgets(page))[i].seq;
  await sleep(1500);
  const w = (await widgets(page))[i];
  assert.equal(w.seq, s0, "no new data while paused");
  assert.match(w.status, /paused/);
  assert.equal(await (await el.$(".beamtime-pause")).textContent(), "Resume");
  await (await el.$(".beamtime-pause")).click();
  await page.waitForFunction(([i, s0]) => Number(document.querySelectorAll(".beamtime-widget")[i].dataset.seq) > s0, [i, s0], { timeout: 10_000 });
});

test("Reset empties the result, which then refills", { skip: !PARAMS.controls }, async () => {
  const i = 1 % expectWidgets; // demo: the per-step line (one row per step so far)
  await page.waitForFunction((i) => Number(document.querySelectorAll(".beamtime-widget")[i].dataset.rows) >= 3, i, { timeout: 20_000 });
  const el = (await page.$$(".beamtime-widget"))[i];
  const r0 = (await widgets(page))[i].rows;
  // Watch data-rows from inside the page, so that a short-lived empty table is seen.
  await page.evaluate((i) => {
    const e = document.querySelectorAll(".beamtime-widget")[i];
    window.__btMinRows = Number(e.dataset.rows);
    new MutationObserver(() => { window.__btMinRows = Math.min(window.__btMinRows, Number(e.dataset.rows)); })
      .observe(e, { attributes: true, attributeFilter: ["data-rows"] });
  }, i);
  await (await el.$(".beamtime-reset")).click();
  await page.waitForFunction((r0) => window.__btMinRows < r0, r0, { timeout: 10_000 });
  const min = await page.evaluate(() => window.__btMinRows);
  // The empty table and the first refill may land in the same animation frame.
  if (demo) assert.ok(min <= 1, `the demo's reset empties the table (fewest rows seen: ${min})`);
  await page.waitForFunction(([i, min]) => Number(document.querySelectorAll(".beamtime-widget")[i].dataset.rows) > min + 1, [i, min], { timeout: 20_000 });
  await shot(page, "lab-after-reset");
});

test("a page reload restores the widgets (kernel alive) and they keep updating", async () => {
  await page.evaluate(() => window.jupyterapp.commands.execute("docmanager:save"));
  await sleep(1000);
  consoleLog.length = 0;
  await page.reload();
  await waitKernelIdle(page);
  await waitWidgets(page, expectWidgets, 60_000);
  const a = await widgets(page);
  const b = await widgetsAfterUpdates(page, a, live);
  for (let i = 0; i < a.length; i++) if (live(i)) assert.ok(b[i].seq > a[i].seq, `widget ${i} after reload: seq ${a[i].seq} → ${b[i].seq}`);
  if (PARAMS.kinds.length) assertKinds(b, PARAMS.kinds);
  if (PARAMS.image) await assertImage(page, notebookRoi(), "lab after reload");
  await shot(page, "lab-reloaded");
  assert.deepEqual(badConsole(consoleLog), []);
});
