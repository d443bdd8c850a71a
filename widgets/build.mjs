// Bundles src/index.ts with apache-arrow and uPlot (CSS inlined) into dist/beamtime-widget.js.
import { build } from "esbuild";
import { readFileSync, statSync } from "node:fs";

const pkg = JSON.parse(readFileSync(new URL("./package.json", import.meta.url)));
const out = "dist/beamtime-widget.js";
await build({
  entryPoints: ["src/index.ts"],
  bundle: true,
  format: "esm",
  target: "es2020",
  minify: true,
  legalComments: "none",
  charset: "utf8",
  loader: { ".css": "text" },
  banner: {
    js:
      `/* beamtime-widget ${pkg.version}: the beamtime anywidget module. Bundles apache-arrow ` +
      `${pkg.devDependencies["apache-arrow"]} (Apache-2.0, (c) The Apache Software Foundation), ` +
      `flatbuffers (Apache-2.0), uPlot ${pkg.devDependencies.uplot} (MIT, (c) Leon Sorokin). */`,
  },
  outfile: out,
  logLevel: "warning",
});
console.log(`${out}: ${(statSync(out).size / 1024).toFixed(1)} KiB`);
