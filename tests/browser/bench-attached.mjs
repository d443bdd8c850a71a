// Does a browser slow the job? The same notebook — a finished run (beam data only: one stream,
// ~0.7 kB per event, so that it stays in the page cache) read by a `%%live` row query
// over a sliding window (a strip chart fed by appends at the display rate) — executed by nbclient
// (no browser) and in JupyterLab in Chromium (the widget painting), in alternating rounds. The
// job's mean rate comes from its final status ("mean N Hz": events per second from its first to
// its last report). Not a test: `node bench-attached.mjs [--events N] [--rounds R] [--ranks K] [--pin-browser]`
// with BEAMTIME_BIN pointing at a release build (default: $CARGO_TARGET_DIR/release/beamtime).
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { openSession, waitKernelIdle, sleep, VENV } from "./jupyter.mjs";

const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
};
const EVENTS = arg("events", 10_000_000);
const ROUNDS = arg("rounds", 3);
const RANKS = arg("ranks", 1);
// --pin-browser: Chromium on the last core only, standing in for the scientist's own machine
// (at LCLS the browser does not run on the node that runs the job).
const PIN = process.argv.includes("--pin-browser");
const TARGET = process.env.CARGO_TARGET_DIR || path.join(os.homedir(), ".cache/beamtime/target");
const BIN = process.env.BEAMTIME_BIN || path.join(TARGET, "release", "beamtime");
if (!existsSync(BIN)) throw new Error(`no ${BIN}: cargo build --release -p beamtime -p beamtime-job (or set BEAMTIME_BIN)`);

// The run, written once and kept beside the other benchmarks' data.
const runDir = path.join(TARGET, "bench-attached", `run-${EVENTS}`);
if (!existsSync(path.join(runDir, "tstbench-r0001.truth.json"))) {
  console.error(`writing a simulated run of ${EVENTS} events into ${runDir} …`);
  mkdirSync(runDir, { recursive: true });
  const w = spawnSync(BIN, ["sim", "--dir", runDir, "--exp", "tstbench", "--run", "1", "--events", String(EVENTS),
    "--steps", "10", "--streams", "1", "--rate", "0"], { stdio: ["ignore", 2, 2] });
  if (w.status !== 0) throw new Error("sim failed");
}
// Into the page cache, so that no round measures the disk.
spawnSync("sh", ["-c", `cat '${runDir}'/*.xtc2 '${runDir}'/smalldata/*.xtc2 > /dev/null 2>&1 || cat '${runDir}'/* > /dev/null 2>&1`]);

if (PIN) {
  const wrapper = path.join(mkdtempSync(path.join(os.tmpdir(), "beamtime-bench-chromium-")), "chromium");
  writeFileSync(wrapper, `#!/bin/sh\nexec taskset -c ${os.cpus().length - 1} ${process.env.CHROMIUM || "/usr/bin/chromium"} "$@"\n`, { mode: 0o755 });
  process.env.CHROMIUM = wrapper;
}
const jupyterDir = mkdtempSync(path.join(os.tmpdir(), "beamtime-bench-jupyter-"));
spawnSync(BIN, ["install", "--user"], { env: { ...process.env, JUPYTER_DATA_DIR: jupyterDir }, stdio: "ignore" });
process.env.JUPYTER_PATH = jupyterDir;
process.env.JUPYTER_DATA_DIR = jupyterDir;

const cell = (id, src) => ({ cell_type: "code", execution_count: null, id, metadata: {}, outputs: [], source: src });
const notebook = {
  cells: [
    // The widget module loaded and rendered once before the job starts (as it is long before
    // a beamtime's job ends): the rounds measure the job while a widget paints, not the page
    // starting up.
    cell("warm", "%%sql --view line\nSELECT 1 AS x, 2 AS y"),
    cell("source", `%source exp=tstbench:run=1:dir=${runDir}`),
    cell("shots", `%%live shots --ranks ${RANKS} --window 100000 --view strip\nSELECT time, ipm2.raw.sum AS i0 FROM events`),
    cell("wait", "%live wait --timeout 900"),
    cell("status", "%live status"),
  ],
  metadata: { kernelspec: { name: "beamtime", display_name: "Beamtime", language: "sql" } },
  nbformat: 4,
  nbformat_minor: 5,
};

function parseStatus(text) {
  const m = /shots: (\d+) events · (?:\d+ included · )?mean (\d+) Hz/.exec(text);
  if (!m || !/done/.test(text)) throw new Error(`no final status in: ${text}`);
  return { events: Number(m[1]), rate: Number(m[2]) };
}

/** CPU seconds (user + system) used so far by the processes whose command line matches `re`. */
function cpuSeconds(re) {
  let ticks = 0;
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      if (!re.test(readFileSync(`/proc/${pid}/cmdline`, "utf8").replaceAll("\0", " "))) continue;
      const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      ticks += Number(f[11]) + Number(f[12]); // utime, stime (fields 14 and 15)
    } catch {}
  }
  return ticks / 100; // USER_HZ
}

/** nbclient executes the notebook: a Jupyter client, no browser. */
function headless() {
  const dir = mkdtempSync(path.join(os.tmpdir(), "beamtime-bench-nb-"));
  const nbPath = path.join(dir, "bench.ipynb");
  writeFileSync(nbPath, JSON.stringify(notebook));
  const py = `
import nbformat, sys
from nbclient import NotebookClient
nb = nbformat.read(sys.argv[1], as_version=4)
NotebookClient(nb, kernel_name="beamtime", timeout=900).execute()
print(nb.cells[-1].outputs[0]["data"]["text/plain"])`;
  const r = spawnSync(path.join(VENV, "bin", "python"), ["-c", py, nbPath], { encoding: "utf8", env: process.env });
  rmSync(dir, { recursive: true, force: true });
  if (r.status !== 0) throw new Error(`nbclient failed: ${r.stderr}`);
  return { ...parseStatus(r.stdout), painted: "–", browserCpu: "–", serverCpu: "–" };
}

/** JupyterLab in Chromium runs the notebook; the widget paints while the job reads. */
async function inBrowser() {
  const { server, browser, page } = await openSession("lab", "bench.ipynb", notebook);
  try {
    await page.goto(`${server.base}/lab/tree/bench.ipynb?token=${server.token}`);
    await waitKernelIdle(page);
    // The first cell alone, until its widget has painted; then the rest.
    await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-cell-and-select-next"));
    await page.waitForFunction(() => Number(document.querySelector(".beamtime-widget")?.dataset.frames) > 0, null, { timeout: 60_000 });
    // Paints of the live widget, counted across its views (the final static rewrite of the
    // display re-creates the view).
    await page.evaluate(() => {
      window.__btPaints = 0;
      new MutationObserver((ms) => {
        for (const m of ms) if (m.target.classList?.contains("beamtime-widget") && m.target !== document.querySelector(".beamtime-widget")) window.__btPaints++;
      }).observe(document.body, { subtree: true, attributes: true, attributeFilter: ["data-frames"] });
    });
    const cpu0 = [cpuSeconds(/chromium/), cpuSeconds(/jupyter-lab|bin\/jupyter lab/)];
    await page.evaluate(() => window.jupyterapp.commands.execute("notebook:run-all-below"));
    const cpu1 = [cpuSeconds(/chromium/), cpuSeconds(/jupyter-lab|bin\/jupyter lab/)];
    const text = await page.waitForFunction(
      () => {
        const outs = [...document.querySelectorAll(".jp-OutputArea-output")].map((e) => e.textContent || "");
        const last = outs.find((t) => /shots: \d+ events · .*mean \d+ Hz/.test(t));
        return last || null;
      },
      null,
      { timeout: 900_000, polling: 250 },
    );
    const status = parseStatus(await text.jsonValue());
    const cpu = (i) => (cpu1[i] - cpu0[i]).toFixed(2);
    return { ...status, painted: await page.evaluate(() => window.__btPaints), browserCpu: cpu(0), serverCpu: cpu(1) };
  } finally {
    await browser.close();
    await server.stop();
  }
}

const rows = [];
for (let r = 0; r < ROUNDS; r++) {
  const cases = [
    ["nbclient, no browser", headless],
    ["JupyterLab + Chromium", inBrowser],
  ];
  for (const [label, run] of cases) {
    const res = await run();
    if (res.events !== EVENTS) throw new Error(`${label}: ${res.events} events, expected ${EVENTS}`);
    rows.push({ round: r + 1, label, ...res });
    console.error(`round ${r + 1} · ${label}: ${(res.rate / 1e6).toFixed(3)} M ev/s, frames painted ${res.painted}`);
    await sleep(1000);
  }
}
rmSync(jupyterDir, { recursive: true, force: true });

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const of = (label) => rows.filter((x) => x.label === label).map((x) => x.rate);
const [a, b] = [median(of("nbclient, no browser")), median(of("JupyterLab + Chromium"))];
console.log(`### Job rate with and without a browser: ${EVENTS} events, --ranks ${RANKS}, ${os.cpus().length} cores${PIN ? ", Chromium pinned to the last core" : ""}\n`);
console.log("| round | client | job mean rate | job time | widget paints | Chromium CPU | Jupyter server CPU |");
console.log("|---|---|---|---|---|---|---|");
for (const x of rows) {
  console.log(`| ${x.round} | ${x.label} | ${(x.rate / 1e6).toFixed(3)} M ev/s | ${(EVENTS / x.rate).toFixed(2)} s | ${x.painted} | ${x.browserCpu} s | ${x.serverCpu} s |`);
}
console.log(`\nmedians: no browser ${(a / 1e6).toFixed(3)} M ev/s; browser ${(b / 1e6).toFixed(3)} M ev/s (ratio ${(b / a).toFixed(3)})`);
