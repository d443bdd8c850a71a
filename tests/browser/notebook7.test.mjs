// The widget in Notebook 7 (`jupyter notebook`, /notebooks/<nb>): one notebook runs, its widgets
// render and update. BT_KERNEL / BT_NOTEBOOK as in lab.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import {
  PARAMS, openSession, notebookUnderTest, waitKernelIdle, runAll, widgets, waitWidgets,
  shot, shotWidgets, badConsole, sleep,
} from "./jupyter.mjs";

const DEMO = ["agg", "rows"];
const { name: NB, nb, demo } = notebookUnderTest("demo7.ipynb", DEMO);
const expectWidgets = PARAMS.widgets || (demo ? DEMO.length : 1);

let server, browser, page, consoleLog;

before(async () => {
  ({ server, browser, page, consoleLog } = await openSession("notebook", NB, nb));
});

after(async () => {
  await browser?.close();
  await server?.stop();
});

test("Notebook 7: the notebook runs, the widgets render and update", async () => {
  await page.goto(`${server.base}/notebooks/${NB}?token=${server.token}`);
  await waitKernelIdle(page);
  await runAll(page);
  await waitWidgets(page, expectWidgets, PARAMS.runTimeout);
  const a = await widgets(page);
  if (demo) assert.deepEqual(a.map((w) => w.kind), ["line", "scatter"]);
  await sleep(1500);
  const b = await widgets(page);
  for (let i = 0; i < a.length; i++) {
    assert.ok(b[i].seq > a[i].seq, `widget ${i}: seq ${a[i].seq} → ${b[i].seq}`);
    assert.match(b[i].status, /rate [\d.]+ (k |M )?ev\/s/);
  }
  await shot(page, "nb7-run");
  await shotWidgets(page, "nb7-widget");
  assert.deepEqual(badConsole(consoleLog), []);
});
