// `npm run bench`: the benchmark suite, one process per configuration (so each peak RSS is its own), with
// the PyTorch reference in the same session when a Python with torch + transformers is found
// (TORCH_PYTHON, else ./.venv or /work/venv). Prints the figures and the target ratios, writes
// bench/results/latest.json and the README's chart docs/bench.svg.
//   npm run bench [-- --quick] [--sections train,memory,encode,search,wasm]    TEVATRON_BACKEND picks ours
//   npm run bench -- --sections scale [--scale 0.01]    the recipe at full size (bench/scale.ts; not in the default sections:
//                                                         about an hour and ~35 GB of temporary disk at --scale 1)
//   npm run bench -- --chart    redraws docs/bench.svg from bench/results/latest.json
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { barChart } from './chart.ts';

const { values: opt } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, chart: { type: 'boolean', default: false }, sections: { type: 'string', default: 'train,memory,encode,search,wasm' }, scale: { type: 'string', default: '1' } },
});
const quick = opt.quick || process.env.BENCH_QUICK === '1';
const sections = new Set(opt.sections.split(','));
const backend = process.env.TEVATRON_BACKEND ?? 'auto';
type Figures = Record<string, number | string | null>;
type Args = Record<string, string | number>;

const flags = (a: Args) => Object.entries(a).flatMap(([k, val]) => [`--${k}`, String(val)]);
/** The JSON on the last line a benchmark printed. */
const lastJson = <T = Figures>(out: string): T => JSON.parse(out.trim().split('\n').pop()!);

/** bench/train_step.ts in a child process: one result per step kind of a.gc (one, unless it lists several). */
function ours(a: Args): Figures[] {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/train_step.ts', ...flags({ backend, ...a }), '--json'], { encoding: 'utf8' });
  if (r.status !== 0) {
    const error = (r.stderr.trim().split('\n').find((l) => /Error|abort/i.test(l)) ?? `exit ${r.status ?? r.signal}`).slice(0, 160);
    return String(a.gc ?? 'none').split(',').map(() => ({ error }));
  }
  return lastJson<Figures[]>(r.stdout);
}

function torchPython(): string | null {
  for (const p of [process.env.TORCH_PYTHON, '.venv/bin/python', '/work/venv/bin/python']) {
    if (p && existsSync(p) && spawnSync(p, ['-c', 'import torch, transformers'], { encoding: 'utf8' }).status === 0) return p;
  }
  return null;
}
const py = torchPython();
/** bench/torch_reference.py: one result per step kind of a.gc, or null without a PyTorch. */
function torch(a: Args): Figures[] | null {
  if (!py) return null;
  const r = spawnSync(py, ['bench/torch_reference.py', ...flags(a)], { encoding: 'utf8' });
  if (r.status === 0) return lastJson<Figures[]>(r.stdout);
  return String(a.gc ?? 'none').split(',').map(() => ({ error: r.stderr.trim().split('\n').pop() ?? 'failed' }));
}

const num = (f: Figures | null, k: string) => (f && typeof f[k] === 'number' ? (f[k] as number) : null);
const show = (label: string, f: Figures | null, rate = 'samplesPerSecond', rss: number | null = null) => {
  if (!f) return;
  if (f.error) return console.log(`  ${label}: ${f.error}`);
  const mfu = num(f, 'mfu');
  console.log(`  ${label.padEnd(28)} ${num(f, 'stepSeconds')!.toFixed(2).padStart(6)} s  ${num(f, rate)!.toFixed(1).padStart(7)} ${rate === 'samplesPerSecond' ? 'samples/s' : 'passages/s'}` +
    (mfu !== null ? `  MFU ${(100 * mfu).toFixed(0)}% of ${num(f, 'matmulPeakGflops')!.toFixed(0)} GFLOP/s` : '') + (rss !== null ? `  peak RSS ${rss.toFixed(0)} MB` : ''));
};
const fmtRatio = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)}x`);

const ratio = (a: number | null, b: number | null) => (a !== null && b !== null ? a / b : null);

/** docs/bench.svg: train-step throughput relative to PyTorch's plain step of each shape (the targets' ratios). */
function writeChart(train: Record<string, unknown>[]): void {
  const svg = barChart(
    `train-step throughput relative to PyTorch's plain step (${(train[0] as Record<string, Figures>).plain.backend}, 2 cores, same session)`,
    '× PyTorch plain step',
    ['tevatron-ts', 'tevatron-ts, grad cache ½', 'PyTorch', 'PyTorch, grad cache ½'],
    train.map((r) => {
      const base = num(r.torch as Figures | null, 'samplesPerSecond');
      return { label: r.shape as string, values: (['plain', 'gcHalf', 'torch', 'torchGcHalf'] as const).map((k) => ratio(num(r[k] as Figures | null, 'samplesPerSecond'), base)) };
    }),
  );
  mkdirSync('docs', { recursive: true });
  writeFileSync('docs/bench.svg', svg);
}

if (opt.chart) {
  writeChart(JSON.parse(readFileSync('bench/results/latest.json', 'utf8')).train);
  process.exit(0);
}

const results: Record<string, unknown> = { date: new Date().toISOString(), quick, torch: py ? 'same session' : 'not found (set TORCH_PYTHON)' };
const targets: string[] = [];
const head = { layers: 4, hidden: 256, batch: 32, n: 2, qlen: 32, plen: 128 }; // the issue's headline shape

if (sections.has('train')) {
  const shapes = quick
    ? [{ layers: 2, hidden: 128, batch: 16, n: 2, qlen: 32, plen: 64, steps: 2 }]
    : [
        { layers: 2, hidden: 128, batch: 32, n: 2, qlen: 32, plen: 128, steps: 5 },
        { ...head, steps: 5 },
        { layers: 12, hidden: 768, batch: 16, n: 2, qlen: 32, plen: 64, steps: 3 },
      ];
  const train: Record<string, unknown>[] = [];
  for (const s of shapes) {
    const name = `L${s.layers}/H${s.hidden} b${s.batch}×${s.n} ${s.qlen}/${s.plen}`;
    console.log(`train step, ${name}:`);
    const half = `${s.batch / 2}/${s.batch * s.n / 2}`;
    const quarter = `${s.batch / 4}/${s.batch * s.n / 4}`;
    // one process, the three step kinds taking turns: their ratios hold under the same load
    const kinds = `none,${half},${quarter}`;
    const [plain, gcHalf, gcQuarter] = ours({ ...s, gc: kinds });
    const [torchPlain, torchHalf, torchQuarter] = torch({ ...s, gc: kinds }) ?? [null, null, null];
    const row = { shape: name, plain, gcHalf, gcQuarter, torch: torchPlain, torchGcHalf: torchHalf, torchGcQuarter: torchQuarter };
    show('plain', row.plain);
    show(`grad cache ${half}`, row.gcHalf);
    show(`grad cache ${quarter}`, row.gcQuarter);
    show('PyTorch plain', row.torch);
    show(`PyTorch grad cache ${half}`, row.torchGcHalf);
    show(`PyTorch grad cache ${quarter}`, row.torchGcQuarter);
    train.push(row);
  }
  results.train = train;
  const h = train[quick ? 0 : 1] as Record<string, Figures>;
  targets.push(`throughput vs PyTorch, ${h.shape} (>= 1.0): ${fmtRatio(ratio(num(h.plain, 'samplesPerSecond'), num(h.torch, 'samplesPerSecond')))}`);
  const gcRatio = (gc: string, plain: string) => fmtRatio(ratio(num(h[gc], 'stepSeconds'), num(h[plain], 'stepSeconds')));
  targets.push(`grad-cache step / plain step, chunks of half the rows (<= 1.25): ${gcRatio('gcHalf', 'plain')} (PyTorch ${gcRatio('torchGcHalf', 'torch')}); a quarter: ${gcRatio('gcQuarter', 'plain')} (PyTorch ${gcRatio('torchGcQuarter', 'torch')})`);
  if (!quick) writeChart(train);
}

if (sections.has('memory')) {
  console.log(`peak memory (RSS), L${head.layers}/H${head.hidden}, grad cache chunks 8/16:`);
  const mem: Record<string, number | null> = {};
  const runs: [number, string][] = quick ? [[16, ''], [32, '8/16']] : [[16, ''], [32, ''], [64, ''], [16, '8/16'], [32, '8/16'], [64, '8/16'], [128, '8/16']];
  for (const [batch, gc] of runs) {
    const [r] = ours({ ...head, batch, steps: 1, gc: gc || 'none' });
    const key = `batch${batch}${gc ? '_gc' : ''}`;
    mem[key] = num(r, 'peakRssMB');
    console.log(`  batch ${String(batch).padStart(3)} ${gc ? 'grad cache' : 'plain     '}  ${r.error ?? `${mem[key]!.toFixed(0)} MB, ${num(r, 'stepSeconds')!.toFixed(2)} s/step`}`);
  }
  results.memory = mem;
  const big = quick ? mem.batch32_gc : mem.batch128_gc;
  targets.push(`peak RSS batch ${quick ? 32 : 128} with cache / batch 16 without (<= 1.2): ${fmtRatio(ratio(big, mem.batch16))}`);
}

if (sections.has('encode')) {
  console.log('encode (no dropout), batch 64 × 128 tokens:');
  const shapes = quick ? [{ layers: 2, hidden: 128 }] : [{ layers: 4, hidden: 256 }, { layers: 12, hidden: 768 }];
  const enc = shapes.map((s) => {
    const a = { ...s, batch: 64, plen: 128, steps: 3, mode: 'encode' };
    const row = { shape: `L${s.layers}/H${s.hidden}`, ours: ours(a)[0], torch: torch(a)?.[0] ?? null };
    show(`${row.shape} tevatron-ts`, row.ours, 'passagesPerSecond', num(row.ours, 'peakRssMB'));
    show(`${row.shape} PyTorch`, row.torch, 'passagesPerSecond');
    return row;
  });
  results.encode = enc;
}

if (sections.has('search')) {
  const a = quick ? { passages: 20000, queries: 256 } : { passages: 100000, queries: 1024 };
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/search.ts', ...flags({ backend, ...a }), '--json'], { encoding: 'utf8' });
  const s = r.status === 0 ? lastJson(r.stdout) : { error: r.stderr.trim().split('\n').pop() ?? 'failed' };
  results.search = s;
  console.log(`search: ${s.error ?? `${(s.queriesPerSecond as number).toFixed(0)} queries/s over ${s.passages} × ${s.dim}, depth ${s.depth}`}`);
}

if (sections.has('wasm')) {
  // the wasm backend uses one core per process: two processes (one per core, as `launch --nproc_per_node 2`
  // runs them) against one, on the same step (the all-reduce between them is measured by bench/allreduce.ts)
  const a = { backend: 'wasm', layers: 2, hidden: 128, batch: 16, n: 2, qlen: 32, plen: 64, steps: quick ? 2 : 3 };
  const run = () =>
    new Promise<Figures>((resolve) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'bench/train_step.ts', ...flags(a), '--json'], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.on('data', (d) => (out += d));
      child.on('close', (code) => resolve(code === 0 ? lastJson<Figures[]>(out)[0] : { error: `exit ${code}` }));
    });
  const one = await run();
  const two = await Promise.all([run(), run()]);
  const single = num(one, 'samplesPerSecond');
  const both = two.every((t) => num(t, 'samplesPerSecond') !== null) ? two.reduce((acc, t) => acc + num(t, 'samplesPerSecond')!, 0) : null;
  results.wasmProcesses = { one, two };
  console.log(`wasm, L2/H128 b16×2 32/64: one process ${single?.toFixed(2) ?? one.error} samples/s; two at once ${both?.toFixed(2) ?? 'failed'} samples/s in all (${fmtRatio(ratio(both, single))})`);
}

if (sections.has('scale')) {
  // its stages print as they finish (stderr passes through); its figures also go to bench/results/scale.json
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/scale.ts', '--scale', opt.scale, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const s = r.stdout.trim() ? lastJson<Record<string, unknown>>(r.stdout) : { error: `exit ${r.status ?? r.signal}` };
  results.scale = s;
  targets.push(...((s.targets as string[] | undefined) ?? [`scale: ${s.error}`]));
}

if (targets.length) console.log(`\ntargets:\n${targets.map((t) => `  ${t}`).join('\n')}`);
results.targets = targets;
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/latest.json', JSON.stringify(results, null, 2) + '\n');
