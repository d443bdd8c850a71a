// Helpers for the browser tests: a Jupyter server from the venv, Debian's Chromium through
// playwright-core, notebooks, and the widget's DOM hooks.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, copyFileSync, rmSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

export const HERE = path.dirname(fileURLToPath(import.meta.url));
export const REPO = path.resolve(HERE, "../..");
export const ARTIFACTS = path.join(HERE, "artifacts");
export const VENV = process.env.BT_VENV || path.join(os.homedir(), ".cache/beamtime/venv");

/** Test parameters (see README): the kernel, the notebook, what it should show. */
export const PARAMS = {
  kernel: process.env.BT_KERNEL || "",
  notebook: process.env.BT_NOTEBOOK || "",
  widgets: Number(process.env.BT_WIDGETS || 0),
  kinds: (process.env.BT_KINDS || "").split(",").filter(Boolean),
  controls: process.env.BT_CONTROLS !== "0",
  runTimeout: Number(process.env.BT_RUN_TIMEOUT || 180) * 1000,
  /** Widgets (indices) showing a finished result (`%%sql`): they render, but don't update. */
  statics: (process.env.BT_STATIC || "").split(",").filter(Boolean).map(Number),
  /** The notebook has an image widget with the `roi` query's ROI (live-detector.ipynb). */
  image: process.env.BT_IMAGE === "1",
};

export const BAD_CONSOLE = [/Wrong widget protocol version/i, /Could not instantiate widget/i, /model not found/i, /Cannot find model module/i, /beamtime: /];

async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on("error", reject);
  });
}

/** The demo notebook: one Python `Demo` widget per source. */
export function demoNotebook(sources, kernel = "python3") {
  const cell = (id, src) => ({ cell_type: "code", execution_count: null, id, metadata: {}, outputs: [], source: src });
  const cells = [
    cell("setup", `import sys\nsys.path.insert(0, ${JSON.stringify(HERE)})\nfrom demo_widget import Demo`),
    ...sources.map((s, i) => cell(`w${i}`, `w${i} = Demo(source=${JSON.stringify(s)})\nw${i}`)),
  ];
  return {
    cells,
    metadata: {
      kernelspec: { name: kernel, display_name: kernel, language: kernel === "python3" ? "python" : "" },
      language_info: { name: kernel === "python3" ? "python" : "" },
    },
    nbformat: 4,
    nbformat_minor: 5,
  };
}

/**
 * Starts `jupyter lab` or `jupyter notebook` in a fresh root dir holding `files`
 * ({name: json-or-path}). Returns {base, token, root, url(nb), stop()}.
 */
export async function startJupyter(app, files) {
  const root = mkdtempSync(path.join(os.tmpdir(), "beamtime-ui-"));
  for (const [name, what] of Object.entries(files)) {
    const dst = path.join(root, name);
    if (typeof what === "string") copyFileSync(what, dst);
    else writeFileSync(dst, JSON.stringify(what, null, 1));
  }
  const port = await freePort();
  const token = `bt${Math.random().toString(36).slice(2)}`;
  const cfg = path.join(root, ".jupyter");
  // Every cell stays in the DOM (no windowed notebook), so every widget can be inspected.
  const nbSettings = path.join(cfg, "lab-settings", "@jupyterlab", "notebook-extension");
  mkdirSync(nbSettings, { recursive: true });
  writeFileSync(path.join(nbSettings, "tracker.jupyterlab-settings"), JSON.stringify({ windowingMode: "none" }));
  const notif = path.join(cfg, "lab-settings", "@jupyterlab", "apputils-extension");
  mkdirSync(notif, { recursive: true });
  writeFileSync(path.join(notif, "notification.jupyterlab-settings"), JSON.stringify({ fetchNews: "false", checkForUpdates: false }));
  const common = [
    "--no-browser", `--port=${port}`, "--ip=127.0.0.1", `--IdentityProvider.token=${token}`,
    `--ServerApp.root_dir=${root}`,
    ...(process.getuid && process.getuid() === 0 ? ["--allow-root"] : []),
  ];
  const args = app === "lab"
    ? ["lab", ...common, "--LabApp.expose_app_in_browser=True", `--LabApp.user_settings_dir=${cfg}/lab-settings`, `--LabApp.workspaces_dir=${cfg}/lab-workspaces`]
    : ["notebook", ...common, "--JupyterNotebookApp.expose_app_in_browser=True", `--JupyterNotebookApp.user_settings_dir=${cfg}/lab-settings`, `--JupyterNotebookApp.workspaces_dir=${cfg}/lab-workspaces`];
  const env = {
    ...process.env,
    JUPYTER_CONFIG_DIR: cfg,
    JUPYTER_RUNTIME_DIR: path.join(root, ".runtime"),
    PATH: `${VENV}/bin:${process.env.PATH}`,
    PYTHONUNBUFFERED: "1",
  };
  mkdirSync(ARTIFACTS, { recursive: true });
  const logFile = path.join(ARTIFACTS, `jupyter-${app}.log`);
  const log = [];
  const proc = spawn(path.join(VENV, "bin", "jupyter"), args, { cwd: root, env, detached: true, stdio: ["ignore", "pipe", "pipe"] });
  proc.stdout.on("data", (d) => log.push(String(d)));
  proc.stderr.on("data", (d) => log.push(String(d)));
  const base = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 90_000;
  for (;;) {
    if (proc.exitCode != null) throw new Error(`jupyter ${app} exited: ${log.join("")}`);
    try {
      const r = await fetch(`${base}/api/status`, { headers: { Authorization: `token ${token}` } });
      if (r.ok) break;
    } catch {}
    if (Date.now() > deadline) throw new Error(`jupyter ${app} did not answer /api/status: ${log.join("")}`);
    await sleep(300);
  }
  return {
    base, token, root, log,
    async stop() {
      // Shut the kernels down through the API, then the server (its process group).
      try {
        const ks = await (await fetch(`${base}/api/kernels`, { headers: { Authorization: `token ${token}` } })).json();
        for (const k of ks) await fetch(`${base}/api/kernels/${k.id}`, { method: "DELETE", headers: { Authorization: `token ${token}` } });
      } catch {}
      try { process.kill(-proc.pid, "SIGTERM"); } catch {}
      for (let i = 0; i < 50 && proc.exitCode == null; i++) await sleep(100);
      try { process.kill(-proc.pid, "SIGKILL"); } catch {}
      writeFileSync(logFile, log.join(""));
      rmSync(root, { recursive: true, force: true });
    },
  };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
      "--disable-component-update", "--no-first-run", "--disable-sync"],
  });
}

/** A page that records console messages and page errors. */
export async function newPage(browser) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 1400 } });
  const consoleLog = [];
  page.on("console", (m) => consoleLog.push(`${m.type()}: ${m.text()}`));
  page.on("pageerror", (e) => consoleLog.push(`pageerror: ${e.message} ${(e.stack || "").split("\n").slice(1, 3).join(" ").trim()}`));
  return { page, consoleLog };
}

export function badConsole(consoleLog) {
  return consoleLog.filter((l) => BAD_CONSOLE.some((re) => re.test(l)));
}

/** Waits until the app is up and the current notebook's kernel is idle. */
export async function waitKernelIdle(page, timeout = 120_000) {
  await page.waitForFunction(
    () => {
      const app = window.jupyterapp;
      const w = app && app.shell && app.shell.currentWidget;
      const k = w && w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
      return !!k && k.status === "idle" && !!w.content && w.content.widgets && w.content.widgets.length > 0;
    },
    null,
    { timeout, polling: 250 },
  );
}

export async function runAll(page) {
  await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-cells"));
}

/** Every widget's DOM hooks, in document order. */
export async function widgets(page) {
  return page.$$eval(".beamtime-widget", (els) =>
    els.map((e) => ({
      kind: e.dataset.kind,
      rows: Number(e.dataset.rows),
      frames: Number(e.dataset.frames),
      seq: Number(e.dataset.seq),
      paused: e.dataset.paused,
      status: e.querySelector(".beamtime-status")?.textContent || "",
      age: e.querySelector(".beamtime-status")?.getAttribute("data-age-level") || "",
      title: e.querySelector(".beamtime-title")?.textContent || "",
    })),
  );
}

/**
 * Waits until at least `n` widgets have painted data (seq ≥ 0, a frame, a status); the
 * `statics` (indices: finished results, whose snapshot has no seq, maybe no rows) a "done" status.
 */
export async function waitWidgets(page, n, timeout, statics = PARAMS.statics) {
  await page.waitForFunction(
    ([n, statics]) => {
      const els = [...document.querySelectorAll(".beamtime-widget")];
      return els.length >= n && els.every((e, i) => Number(e.dataset.frames) > 0 && e.dataset.kind &&
        (statics.includes(i) ? /\bdone\b/.test(e.querySelector(".beamtime-status")?.textContent || "") : Number(e.dataset.seq) >= 0));
    },
    [n, statics],
    { timeout, polling: 200 },
  );
}

/**
 * The widgets after every one of them whose index passes `live` has a newer seq than in
 * `before` (polled each second; at most `timeout` ms: the caller asserts).
 */
export async function widgetsAfterUpdates(page, before, live = () => true, timeout = 30_000) {
  const end = Date.now() + timeout;
  for (;;) {
    await sleep(1000);
    const now = await widgets(page);
    if (Date.now() > end || before.every((w, i) => !live(i) || (now[i] && now[i].seq > w.seq))) return now;
  }
}

/**
 * Traits of every widget's model (in document order, as `widgets`), read from the ipywidgets
 * renderers in the notebook's output areas (JupyterLab and Notebook 7 alike).
 */
export async function modelTraits(page, names) {
  return page.evaluate((names) => {
    const views = [];
    const seen = new Set();
    const walk = (w) => {
      if (!w || seen.has(w)) return;
      seen.add(w);
      if (w._view && w._view.model && w._view.el) views.push(w._view);
      for (const c of w.widgets || w.layout?.widgets || []) walk(c);
    };
    for (const cell of window.jupyterapp.shell.currentWidget.content.widgets) walk(cell.outputArea);
    return [...document.querySelectorAll(".beamtime-widget")].map((e) => {
      const v = views.find((v) => v.el.contains(e));
      return v ? Object.fromEntries(names.map((k) => [k, v.model.get(k)])) : null;
    });
  }, names);
}

/**
 * Kinds against the expected ones (PARAMS.kinds; "a|b" = either: an auto view whose choice
 * depends on how many rows the result has so far).
 */
export function assertKinds(ws, kinds) {
  const got = ws.map((w) => w.kind).slice(0, kinds.length);
  assert.ok(kinds.every((k, i) => k.split("|").includes(got[i])), `kinds ${got} (expected ${kinds})`);
}

/** The overlays of a model's `overlays` trait (a list or its JSON text). */
export function overlaysOf(v) {
  if (typeof v === "string") v = JSON.parse(v);
  return Array.isArray(v) ? v : [];
}

/**
 * The image view of widget `i` (`.bt-image` hooks: data-shape, data-scale) and its binning,
 * read from the hover readout at the shown pixel (2, 2): {rows, cols, scale, fr, fc}.
 */
export async function imageGeometry(page, i) {
  const el = (await page.$$(".beamtime-widget"))[i];
  const hook = await el.$eval(".bt-image", (e) => ({ ...e.dataset }));
  const [rows, cols] = hook.shape.split("x").map(Number);
  const scale = Number(hook.scale);
  const ro = await hoverImage(page, i, 2.5 * scale, 2.5 * scale);
  return { rows, cols, scale, fr: Number(ro.row1) - Number(ro.row0) + 1, fc: Number(ro.col1) - Number(ro.col0) + 1 };
}

/** The hover readout of widget `i`'s image with the mouse at css (x, y) of its canvas. */
export async function hoverImage(page, i, x, y) {
  const el = (await page.$$(".beamtime-widget"))[i];
  const canvas = await el.$(".bt-img-canvas");
  // The page may still be scrolling or laying out: move again until the readout answers.
  for (let k = 0; ; k++) {
    await canvas.scrollIntoViewIfNeeded();
    const box = await canvas.boundingBox();
    await page.mouse.move(box.x + x, box.y + y);
    try {
      await page.waitForFunction((e) => e.querySelector(".bt-img-readout").dataset.row0 != null, el, { timeout: 1000 });
      break;
    } catch (e) {
      if (k === 9) throw e;
      await page.mouse.move(1, 1);
    }
  }
  const ro = await el.$eval(".bt-img-readout", (r) => ({ ...r.dataset, text: r.textContent }));
  await page.mouse.move(1, 1);
  return ro;
}

/** What widget `i`'s image canvas shows: {colours, hash} of the image area (`geom`). */
export async function imagePixels(page, i, geom) {
  return page.evaluate(([i, g]) => {
    const c = document.querySelectorAll(".beamtime-widget")[i].querySelector(".bt-img-canvas");
    const dpr = c.width / c.clientWidth;
    const w = Math.floor(g.cols * g.scale * dpr), h = Math.floor(g.rows * g.scale * dpr);
    const d = c.getContext("2d").getImageData(0, 0, w, h).data;
    const seen = new Set();
    let hash = 0;
    for (let k = 0; k < d.length; k += 4) {
      const v = (d[k] << 16) | (d[k + 1] << 8) | d[k + 2];
      if (seen.size < 4096) seen.add(v);
      hash = (hash * 31 + v) | 0;
    }
    return { colours: seen.size, hash: String(hash), w, h };
  }, [i, geom]);
}

/**
 * An overlay rectangle {r0, r1, c0, c1} (original pixels) on widget `i`'s canvas, placed as the
 * contract says (scale / binning): the fraction of white pixels along each of its four edges
 * and along the lines 4 px inside them (image, not overlay).
 */
export async function rectOnCanvas(page, i, geom, rect) {
  return page.evaluate(([i, g, o]) => {
    const c = document.querySelectorAll(".beamtime-widget")[i].querySelector(".bt-img-canvas");
    const dpr = c.width / c.clientWidth;
    const ctx = c.getContext("2d");
    const sx = g.scale / g.fc, sy = g.scale / g.fr;
    // Device pixel of a 1-px line at css x + 0.5 (x snapped down).
    const at = (v) => Math.floor((Math.floor(v) + 0.5) * dpr);
    const x0 = at(o.c0 * sx), x1 = at(o.c1 * sx), y0 = at(o.r0 * sy), y1 = at(o.r1 * sy);
    const white = (x, y) => {
      const p = ctx.getImageData(x, y, 1, 1).data;
      return p[0] >= 230 && p[1] >= 230 && p[2] >= 230;
    };
    const frac = (pts) => pts.filter(([x, y]) => white(x, y)).length / pts.length;
    const hline = (y, a, b) => Array.from({ length: b - a + 1 }, (_, k) => [a + k, y]);
    const vline = (x, a, b) => Array.from({ length: b - a + 1 }, (_, k) => [x, a + k]);
    const m = 4; // away from the corners
    return {
      px: { x0, x1, y0, y1 },
      edges: {
        top: frac(hline(y0, x0 + m, x1 - m)), bottom: frac(hline(y1, x0 + m, x1 - m)),
        left: frac(vline(x0, y0 + m, y1 - m)), right: frac(vline(x1, y0 + m, y1 - m)),
      },
      inside: {
        top: frac(hline(y0 + m, x0 + m, x1 - m)), bottom: frac(hline(y1 - m, x0 + m, x1 - m)),
        left: frac(vline(x0 + m, y0 + m, y1 - m)), right: frac(vline(x1 - m, y0 + m, y1 - m)),
      },
    };
  }, [i, geom, rect]);
}

/** A cheap fingerprint of what widget `i` shows: its canvases' pixels or its table cells. */
export async function fingerprint(page, i) {
  return page.evaluate((i) => {
    const e = document.querySelectorAll(".beamtime-widget")[i];
    const t = e.querySelector(".beamtime-table");
    if (t) return t.innerText;
    let h = 0;
    for (const c of e.querySelectorAll("canvas")) {
      const s = c.toDataURL();
      for (let k = 0; k < s.length; k += 7) h = (h * 31 + s.charCodeAt(k)) | 0;
    }
    return String(h);
  }, i);
}

export async function shot(page, name) {
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** A screenshot of each widget (scrolled into view). */
export async function shotWidgets(page, prefix) {
  mkdirSync(ARTIFACTS, { recursive: true });
  const els = await page.$$(".beamtime-widget");
  for (const [i, el] of els.entries()) {
    await el.scrollIntoViewIfNeeded();
    const kind = await el.getAttribute("data-kind");
    await el.screenshot({ path: path.join(ARTIFACTS, `${prefix}-${i}-${kind}.png`) });
  }
}

/**
 * The notebook a suite runs: PARAMS.notebook (its kernelspec set to PARAMS.kernel when given),
 * else the Python demo notebook of `demoSources` named `demoName`. Returns {name, nb, demo}.
 */
export function notebookUnderTest(demoName, demoSources) {
  if (!PARAMS.notebook) return { name: demoName, nb: demoNotebook(demoSources, PARAMS.kernel || "python3"), demo: true };
  const nb = readJson(PARAMS.notebook);
  if (PARAMS.kernel) nb.metadata = { ...nb.metadata, kernelspec: { ...(nb.metadata?.kernelspec || {}), name: PARAMS.kernel, display_name: PARAMS.kernel } };
  return { name: path.basename(PARAMS.notebook), nb, demo: false };
}

/** `jupyter <app>` serving the notebook, Chromium and a page: {server, browser, page, consoleLog}. */
export async function openSession(app, name, nb) {
  const server = await startJupyter(app, { [name]: nb });
  const browser = await launchBrowser();
  const { page, consoleLog } = await newPage(browser);
  return { server, browser, page, consoleLog };
}

export function readJson(p) {
  return JSON.parse(readFileSync(p, "utf8"));
}

export { sleep };

/**
 * The ROI of the notebook under test: the first roi_sum(<array>, r0, r1, c0, c1) in its source.
 */
export function notebookRoi() {
  const src = readFileSync(PARAMS.notebook, "utf8");
  const m = /roi_sum\([^,()]+,\s*(\d+),\s*(\d+),\s*(\d+),\s*(\d+)\)/.exec(src);
  assert.ok(m, `no roi_sum(…, r0, r1, c0, c1) in ${PARAMS.notebook}`);
  const [r0, r1, c0, c1] = m.slice(1).map(Number);
  return { r0, r1, c0, c1 };
}

/**
 * The image widget (BT_IMAGE=1): there is one (kind image), it paints (pixels not uniform), its
 * model's `overlays` hold the rectangle `roi`, which the canvas shows where scale and binning
 * put it (white edges, image inside), and the hover readout under its centre names its pixel.
 * Returns {i, geom, pixels}.
 */
export async function assertImage(page, roi, what = "image") {
  const ws = await widgets(page);
  const i = ws.findIndex((w) => w.kind === "image");
  assert.ok(i >= 0, `${what}: an image widget among ${ws.map((w) => w.kind)}`);
  const [traits] = (await modelTraits(page, ["overlays"])).slice(i, i + 1);
  assert.ok(traits, `${what}: the image widget's model`);
  const overlays = overlaysOf(traits.overlays);
  assert.ok(
    overlays.some((o) => o.kind === "rect" && o.r0 === roi.r0 && o.r1 === roi.r1 && o.c0 === roi.c0 && o.c1 === roi.c1),
    `${what}: overlays ${JSON.stringify(overlays)} hold the ROI ${JSON.stringify(roi)}`,
  );
  const geom = await imageGeometry(page, i);
  assert.ok(geom.rows > 0 && geom.cols > 0 && geom.scale > 0 && geom.fr >= 1 && geom.fc >= 1, `${what}: geometry ${JSON.stringify(geom)}`);
  assert.ok(roi.r1 <= geom.rows * geom.fr && roi.c1 <= geom.cols * geom.fc, `${what}: the ROI lies in the image ${JSON.stringify(geom)}`);
  const pixels = await imagePixels(page, i, geom);
  assert.ok(pixels.colours >= 16, `${what}: the image is painted, not uniform (${pixels.colours} colours)`);
  const r = await rectOnCanvas(page, i, geom, roi);
  for (const [edge, f] of Object.entries(r.edges)) {
    // The label sits just above the top edge, its halo (under "_") may hide some of it.
    assert.ok(f >= (edge === "top" ? 0.5 : 0.9), `${what}: the ROI's ${edge} edge is drawn at ${JSON.stringify(r.px)} (${f} of it white)`);
    assert.ok(r.inside[edge] <= 0.2, `${what}: the image, not a line, 4 px inside the ROI's ${edge} edge (${r.inside[edge]} white)`);
  }
  const rc = (roi.r0 + roi.r1) / 2, cc = (roi.c0 + roi.c1) / 2;
  const ro = await hoverImage(page, i, (cc / geom.fc + 0.5) * geom.scale, (rc / geom.fr + 0.5) * geom.scale);
  // The mouse lands on whole css px: up to one css px off.
  const slackR = geom.fr / geom.scale + geom.fr, slackC = geom.fc / geom.scale + geom.fc;
  assert.ok(Number(ro.row0) <= rc + slackR && Number(ro.row1) >= rc - slackR && Number(ro.col0) <= cc + slackC && Number(ro.col1) >= cc - slackC,
    `${what}: the readout under the ROI's centre (${rc}, ${cc}): "${ro.text}"`);
  assert.ok(Number.isFinite(Number(ro.value)), `${what}: a value under the mouse: "${ro.text}"`);
  return { i, geom, pixels };
}

/** Widget `i` updates live: its seq goes up twice, and its image's pixels change. */
export async function assertImageLive(page, i, geom, what = "image") {
  const s0 = (await widgets(page))[i].seq;
  const p0 = await imagePixels(page, i, geom);
  await page.waitForFunction(([i, s0]) => Number(document.querySelectorAll(".beamtime-widget")[i].dataset.seq) >= s0 + 2, [i, s0], { timeout: 60_000 });
  const p1 = await imagePixels(page, i, geom);
  assert.notEqual(p1.hash, p0.hash, `${what}: the pixels changed with seq ${s0} → ${(await widgets(page))[i].seq}`);
  assert.ok(p1.colours >= 16, `${what}: still painted (${p1.colours} colours)`);
}
