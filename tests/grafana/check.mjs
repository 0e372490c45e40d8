// Type-checks every dashboard in dashboards/ against Grafana's own published schema: the
// dashboard model (@grafana/schema's Dashboard) and, for each panel, its plugin's options type.
// The JSON is pasted into TypeScript as object literals, so TypeScript's excess-property and
// literal checks apply: a misspelt key, a wrong enum value or a wrong type fails. JSON cannot
// name a TypeScript enum member, so `Json<T>` turns each string enum into the union of its values.
//
//   node tests/grafana/check.mjs        (after `npm ci` in tests/grafana)
import { readdirSync, readFileSync, writeFileSync, mkdtempSync, rmSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { tmpdir } from "node:os";
import { execFileSync } from "node:child_process";

const here = dirname(fileURLToPath(import.meta.url));
const boards = join(here, "..", "..", "dashboards");
const raw = "@grafana/schema/dist/esm/raw";
const panelTypes = {
  timeseries: ["TimeSeriesPanelCfg", "timeseries"],
  stat: ["StatPanelCfg", "stat"],
  table: ["TablePanelCfg", "table"],
  piechart: ["PieChartPanelCfg", "piechart"],
};

const files = readdirSync(boards).filter((f) => f.endsWith(".json")).sort();
if (files.length === 0) throw new Error(`no dashboards in ${boards}`);
const work = mkdtempSync(join(here, ".check-"));
try {
  let source = `import type { Dashboard } from "${raw}/dashboard/x/Dashboard_types.gen";
type Json<T> = T extends string ? \`\${T}\` : T extends readonly (infer U)[] ? Json<U>[]
  : T extends object ? { [K in keyof T]: Json<T[K]> } : T;\n`;
  for (const [name, [cfg, dir]] of Object.entries(panelTypes)) {
    source += `import type { Options as ${name}Options } from "${raw}/composable/${dir}/panelcfg/x/${cfg}_types.gen";\n`;
  }
  files.forEach((file, i) => {
    const dashboard = JSON.parse(readFileSync(join(boards, file), "utf8"));
    source += `\n// ${file}\nexport const dashboard${i}: Json<Dashboard> = ${JSON.stringify(dashboard)};\n`;
    for (const panel of dashboard.panels ?? []) {
      if (panel.type === "row") continue;
      const known = panelTypes[panel.type];
      if (!known) throw new Error(`${file}: panel "${panel.title}" has type ${panel.type}, which this check does not know`);
      source += `export const options${i}_${panel.id}: Json<Partial<${panel.type}Options>> = ${JSON.stringify(panel.options)};\n`;
    }
  });
  writeFileSync(join(work, "dashboards.ts"), source);
  const tsc = join(here, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(
      process.execPath,
      [tsc, "--noEmit", "--strict", "--skipLibCheck", "--target", "es2022", "--module", "nodenext",
       "--moduleResolution", "nodenext", join(work, "dashboards.ts")],
      { cwd: here, stdio: "pipe" },
    );
  } catch (e) {
    console.error(e.stdout.toString() + e.stderr.toString());
    process.exit(1);
  }
  console.log(`${files.length} dashboards match Grafana's schema: ${files.join(", ")}`);
} finally {
  rmSync(work, { recursive: true, force: true });
}
