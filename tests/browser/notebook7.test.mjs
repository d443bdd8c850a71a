// The widget in Notebook 7 (`jupyter notebook`, /notebooks/<nb>): one notebook runs, its widgets
// render and update. BT_KERNEL / BT_NOTEBOOK as in lab.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  PARAMS, openSession, notebookUnderTest, waitKernelIdle, runAll, widgets, waitWidgets,
  shot, shotWidgets, badConsole, sleep, assertKinds, notebookRoi, assertImage, assertImageLive, widgetsAfterUpdates,
} from "./jupyter.mjs";

const DEMO = ["agg", "rows"];
const { name: NB, nb, demo } = notebookUnderTest("demo7.ipynb", DEMO);
const expectWidgets = PARAMS.widgets || (demo ? DEMO.length : 1);
const live = (i) => !PARAMS.statics.includes(i); // the others show a finished (%%sql) result

let server, browser, page, consoleLog;

before(async () => {
  ({ server, browser, page, consoleLog } = await openSession("notebook", NB, nb));
});

after(async () => {
  await browser?.close();
  await server?.stop();
  if (consoleLog) console.log(`browser console: ${consoleLog.filter((l) => /^(pageerror|error)/.test(l)).join(" | ").slice(0, 2000)}`);
});

test("Notebook 7: the notebook runs, the widgets render and update", async () => {
  await page.goto(`${server.base}/notebooks/${NB}?token=${server.token}`);
  await waitKernelIdle(page);
  await runAll(page);
  await waitWidgets(page, expectWidgets, PARAMS.runTimeout);
  const a = await widgets(page);
  if (demo) assert.deepEqual(a.map((w) => w.kind), ["line", "scatter"]);
  if (PARAMS.kinds.length) assertKinds(a, PARAMS.kinds);
  const b = await widgetsAfterUpdates(page, a, live);
  for (let i = 0; i < a.length; i++) {
    if (!live(i)) {
      assert.match(b[i].status, /\bdone\b/, `widget ${i} (${b[i].kind}): a finished result`);
      continue;
    }
    assert.ok(b[i].seq > a[i].seq, `widget ${i}: seq ${a[i].seq} → ${b[i].seq}`);
    assert.match(b[i].status, /rate [\d.]+ (k |M )?ev\/s/);
  }
  await shot(page, "nb7-run");
  await shotWidgets(page, "nb7-widget");
  assert.deepEqual(badConsole(consoleLog), []);
});

test("Notebook 7: the image paints, shows the ROI where it is, updates live", { skip: !PARAMS.image }, async () => {
  const { i, geom } = await assertImage(page, notebookRoi(), "nb7");
  await assertImageLive(page, i, geom, "nb7");
});

test("Notebook 7: a page reload restores the widgets (kernel alive) and they keep updating", async () => {
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
  if (PARAMS.image) await assertImage(page, notebookRoi(), "nb7 after reload");
  await shot(page, "nb7-reloaded");
  assert.deepEqual(badConsole(consoleLog), []);
});
