// The widget in Notebook 7 (`jupyter notebook`, /notebooks/<nb>): one notebook runs, its widgets
// render and update. BT_KERNEL / BT_NOTEBOOK as in lab.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import {
  PARAMS, startJupyter, launchBrowser, newPage, waitKernelIdle, runAll, widgets, waitWidgets,
  shot, shotWidgets, badConsole, demoNotebook, readJson, sleep,
} from "./jupyter.mjs";

const DEMO = ["agg", "rows"];
const demo = !PARAMS.notebook;
const NB = demo ? "demo7.ipynb" : path.basename(PARAMS.notebook);
const expectWidgets = PARAMS.widgets || (demo ? DEMO.length : 1);

let server, browser, page, consoleLog;

before(async () => {
  let nb;
  if (demo) nb = demoNotebook(DEMO, PARAMS.kernel || "python3");
  else {
    nb = readJson(PARAMS.notebook);
    if (PARAMS.kernel) nb.metadata = { ...nb.metadata, kernelspec: { ...(nb.metadata?.kernelspec || {}), name: PARAMS.kernel, display_name: PARAMS.kernel } };
  }
  server = await startJupyter("notebook", { [NB]: nb });
  browser = await launchBrowser();
  ({ page, consoleLog } = await newPage(browser));
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
