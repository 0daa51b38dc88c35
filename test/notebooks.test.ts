// The notebooks (notebooks/*.ipynb) executed headless as CI runs them: `jupyter nbconvert --execute` on the tslab
// kernel into a temporary directory. A cell error fails; each executed notebook must hold its Plotly charts
// (figures with finite data), its tables and, where it trains, its live curve; the quickstart must have learned.
//
// Once per `npm test`, not once per backend: the notebooks run in the pass of the first backend named by
// TEVATRON_TEST_BACKENDS when that is set, else in the wasm pass (every default run has one, with or without
// tensorflow), or when TEVATRON_BACKEND is unset (uvu run directly). They start their backend themselves with
// initBackend('auto'), so TEVATRON_BACKEND is removed from their environment: tensorflow when it is built.
// Skipped, with the reason printed, without Jupyter (nbconvert), without the tslab kernel, without the shared NQ
// data (../shared/data), or with TEVATRON_NOTEBOOKS=skip; TEVATRON_NOTEBOOKS=quick runs only the notebooks whose
// name contains "quick". `.ci/run` installs Jupyter and the kernel.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { otherPass, testUnless } from './helpers.ts';

const root = path.resolve('.');
const dir = path.join(root, 'notebooks');
const notebooks = readdirSync(dir).filter((f) => f.endsWith('.ipynb')).sort();
const jupyter = process.env.JUPYTER ?? 'jupyter';

/** What each executed notebook must show, at least. A notebook not listed needs one chart and one table. */
const EXPECTED: Record<string, { plots: number; tables: number; live?: boolean }> = {
  '01-quickstart.ipynb': { plots: 5, tables: 7, live: true },
  '02-gradcache.ipynb': { plots: 5, tables: 3 },
  '03-hard-negatives.ipynb': { plots: 3, tables: 4, live: true },
};

interface Output {
  output_type: string;
  name?: string;
  text?: string | string[];
  data?: Record<string, string | string[]>;
  ename?: string;
  evalue?: string;
}
interface Cell {
  cell_type: string;
  source: string | string[];
  execution_count?: number | null;
  outputs?: Output[];
}
const join = (s: string | string[] | undefined) => (Array.isArray(s) ? s.join('') : (s ?? ''));
const readNotebook = (file: string): { cells: Cell[]; metadata: { kernelspec?: { name?: string } } } => JSON.parse(readFileSync(file, 'utf8'));

test('the notebooks are committed without outputs and name the tslab kernel', () => {
  assert.ok(notebooks.length >= 3, `notebooks/: ${notebooks.join(', ')}`);
  for (const nb of notebooks) {
    const { cells, metadata } = readNotebook(path.join(dir, nb));
    assert.is(metadata.kernelspec?.name, 'tslab', `${nb}: kernel`);
    for (const c of cells.filter((x) => x.cell_type === 'code')) {
      assert.ok(!c.outputs?.length && !c.execution_count, `${nb}: a cell has outputs; clear them before committing (jupyter nbconvert --clear-output --inplace)`);
    }
    // The library itself, never a copy: every notebook loads ../lib/index.ts.
    assert.ok(cells.some((c) => join(c.source).includes("require('../lib/index.ts')")), `${nb}: does not load ../lib/index.ts`);
  }
});

/** Why the notebooks cannot run here, or null. */
function skipReason(): string | null {
  if (process.env.TEVATRON_NOTEBOOKS === 'skip') return 'TEVATRON_NOTEBOOKS=skip';
  const version = spawnSync(jupyter, ['nbconvert', '--version'], { encoding: 'utf8', timeout: 60_000 });
  if (version.status !== 0) {
    return `Jupyter's nbconvert is not installed (Debian: apt-get install jupyter-nbconvert python3-nbclient python3-ipykernel; see .ci/run)`;
  }
  const specs = spawnSync(jupyter, ['kernelspec', 'list', '--json'], { encoding: 'utf8', timeout: 60_000 });
  let argv: string[] | undefined;
  try {
    argv = JSON.parse(specs.stdout).kernelspecs?.tslab?.spec?.argv;
  } catch {
    argv = undefined;
  }
  const install = 'npx tslab install --python=/usr/bin/python3 --binary=$PWD/node_modules/.bin/tslab';
  if (!argv) return `the tslab kernel is not installed (${install})`;
  if (path.isAbsolute(argv[0]) && !existsSync(argv[0])) return `the tslab kernel points to ${argv[0]}, which is gone (${install})`;
  const data = path.resolve(root, '../shared/data');
  for (const f of ['nq/train.jsonl', 'nq/corpus.jsonl', 'nq/dev.queries.jsonl', 'nq/dev.qrels.tsv', 'bert-base-uncased/vocab.txt']) {
    if (!existsSync(path.join(data, f))) return `${path.join(data, f)} is absent (the notebooks train on the shared NQ data)`;
  }
  return null;
}

/** The text of a <table class="tevatron-table">: rows of cell strings. */
function tableRows(html: string): string[][] {
  return [...html.matchAll(/<tr>(.*?)<\/tr>/gs)].map((m) => [...m[1].matchAll(/<t[hd][^>]*>(.*?)<\/t[hd]>/gs)].map((c) => c[1].replace(/<[^>]+>/g, '')));
}

const pass = otherPass();
const reason = pass ? null : skipReason();
const only = process.env.TEVATRON_NOTEBOOKS === 'skip' ? undefined : process.env.TEVATRON_NOTEBOOKS;
const selected = notebooks.filter((n) => !only || n.includes(only));
if (pass) {
  console.log(`  (the notebooks run once per npm test, in the ${pass} pass)`);
} else if (reason) {
  for (const nb of selected) testUnless(reason, `${nb} executes headless on the tslab kernel`, () => {});
} else {
  const out = mkdtempSync(path.join(tmpdir(), 'notebooks-'));
  const env: NodeJS.ProcessEnv = { ...process.env, PYDEVD_DISABLE_FILE_VALIDATION: '1' };
  delete env.TEVATRON_BACKEND;
  for (const nb of selected) {
    test(`${nb} executes headless on the tslab kernel, with its charts and tables`, () => {
      const t0 = Date.now();
      const execute = (...extra: string[]) => spawnSync(
        jupyter,
        ['nbconvert', '--to', 'notebook', '--execute', '--ExecutePreprocessor.kernel_name=tslab', '--ExecutePreprocessor.timeout=600', ...extra, '--output-dir', out, path.join(dir, nb)],
        { cwd: root, env, encoding: 'utf8', timeout: 1_200_000, maxBuffer: 64 * 1024 * 1024 },
      );
      const run = execute();
      const seconds = (Date.now() - t0) / 1000;
      const executed = path.join(out, nb);
      if (run.status !== 0) {
        // nbconvert names the failing cell, but tslab sends the error itself to the cell's stderr, which nbconvert
        // does not print: run again keeping errors, and show the first cell that wrote to stderr.
        let detail = `${run.stderr}`.split('\n').filter((l) => !/^\s*File "|^\s*\^+$|^0\.00s - /.test(l)).slice(-12).join('\n');
        if (execute('--allow-errors').status === 0 && existsSync(executed)) {
          const failed = readNotebook(executed).cells.find((c) => (c.outputs ?? []).some((o) => o.output_type === 'error' || o.name === 'stderr'));
          if (failed) detail = `${join(failed.source)}\n---\n${(failed.outputs ?? []).filter((o) => o.output_type === 'error' || o.name === 'stderr').map((o) => `${o.ename ?? ''} ${o.evalue ?? ''}${join(o.text)}`).join('\n')}`;
        }
        assert.unreachable(`${nb}: nbconvert exited with ${run.status ?? run.signal} after ${seconds.toFixed(0)} s:\n${detail}`);
      }
      console.log(`  ${nb}: executed in ${seconds.toFixed(0)} s`);
      const { cells } = readNotebook(executed);
      const outputs = cells.flatMap((c) => c.outputs ?? []);
      // (tslab reports no execution counts; nbconvert stops at the first failing cell and exits non-zero)
      const errors = outputs.filter((o) => o.output_type === 'error' || (o.name === 'stderr' && /^\s*(\w*Error\b|\d+:\d+ - )/m.test(join(o.text))));
      assert.is(errors.length, 0, `${nb}: ${errors.map((e) => e.evalue ?? join(e.text)).join('\n')}`);
      const html = outputs.map((o) => join(o.data?.['text/html']));

      const figures = html.flatMap((h) => [...h.matchAll(/<script type="application\/json" class="tevatron-figure"[^>]*>(.*?)<\/script>/gs)].map((m) => JSON.parse(m[1])));
      const plots = html.reduce((n, h) => n + (h.match(/<div class="tevatron-plot"/g)?.length ?? 0), 0);
      const want = EXPECTED[nb] ?? { plots: 1, tables: 1 };
      assert.ok(plots >= want.plots && figures.length === plots, `${nb}: ${plots} charts (${figures.length} figures), expected at least ${want.plots}`);
      for (const fig of figures) {
        const numbers = (fig.data as { x?: unknown[]; y?: unknown[] }[]).flatMap((t) => [...(t.y ?? []), ...(t.x ?? [])]).filter((v) => typeof v === 'number');
        assert.ok(fig.data.length > 0 && numbers.length > 0 && numbers.some(Number.isFinite), `${nb}: chart "${JSON.stringify(fig.layout.title)}" has no data`);
      }
      // plotly.js inlined once per notebook: charts render offline, and the file stays small
      const bundles = html.reduce((n, h) => n + (h.match(/window\.Plotly = Plotly/g)?.length ?? 0), 0);
      assert.is(bundles, 1, `${nb}: plotly.js inlined ${bundles} times`);

      const tables = html.flatMap((h) => h.split('<table class="tevatron-table">').slice(1));
      assert.ok(tables.length >= want.tables, `${nb}: ${tables.length} tables, expected at least ${want.tables}`);
      for (const t of tables) assert.ok(tableRows(t).length >= 2, `${nb}: an empty table`);
      if (want.live) assert.ok(html.some((h) => h.includes('class="tevatron-live"') && h.includes('<path d="M')), `${nb}: no live training curve`);

      if (nb === '01-quickstart.ipynb') {
        // the model learned: held-out recall@20 after training well above before (and above chance, 20/2588)
        const metrics = tables.map(tableRows).find((rows) => rows.some((r) => r[0] === 'after training'))!;
        const col = metrics[0].indexOf('R@20');
        const value = (name: string) => Number(metrics.find((r) => r[0] === name)![col]);
        assert.ok(value('after training') > Math.max(0.1, 3 * value('before training')), `R@20 before ${value('before training')}, after ${value('after training')}`);
      }
    });
  }
  test.after(() => rmSync(out, { recursive: true, force: true }));
}

test.run();
