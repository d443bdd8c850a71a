// Helpers for the browser tests: a Jupyter server from the venv, Debian's Chromium through
// playwright-core, notebooks, and the widget's DOM hooks.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, copyFileSync, rmSync, mkdirSync, readFileSync } from "node:fs";
import { createServer } from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { setTimeout as sleep } from "node:timers/promises";
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
  page.on("pageerror", (e) => consoleLog.push(`pageerror: ${e.message}`));
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

/** Waits until at least `n` widgets have painted data (seq ≥ 0, a frame, a status). */
export async function waitWidgets(page, n, timeout) {
  await page.waitForFunction(
    (n) => {
      const els = [...document.querySelectorAll(".beamtime-widget")];
      return els.length >= n && els.every((e) => Number(e.dataset.frames) > 0 && Number(e.dataset.seq) >= 0 && e.dataset.kind);
    },
    n,
    { timeout, polling: 200 },
  );
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
