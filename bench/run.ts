// `npm run bench`: the benchmark suite, one process per configuration (so each peak RSS is its own), with
// the PyTorch reference in the same session when a Python with torch + transformers is found
// (TORCH_PYTHON, else ./.venv or /work/venv). Prints the figures and the target ratios, writes
// bench/results/latest.json and the README's chart docs/bench.svg.
//   npm run bench [-- --quick] [--sections train,precision,memory,encode,search,wasm] [--rounds 3]    TEVATRON_BACKEND picks ours
//   npm run bench -- --chart    redraws docs/bench.svg from bench/results/latest.json
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { barChart } from './chart.ts';

const { values: opt } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    chart: { type: 'boolean', default: false },
    sections: { type: 'string', default: 'train,precision,memory,encode,search,wasm' },
    rounds: { type: 'string' },
  },
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
function torch(a: Args, extra: string[] = []): Figures[] | null {
  if (!py) return null;
  const r = spawnSync(py, ['bench/torch_reference.py', ...flags(a), ...extra], { encoding: 'utf8' });
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

if (sections.has('precision')) {
  // --bf16 against float32, here and in PyTorch (autocast to bfloat16, as Hugging Face's --bf16): every
  // run a process of its own, the four kinds taking turns, `rounds` times; medians with [min–max]
  const rounds = Number(opt.rounds ?? (quick ? 1 : 3));
  const kinds: [string, (a: Args) => Figures | null][] = [
    ['tevatron-ts float32', (a) => ours(a)[0]],
    ['tevatron-ts --bf16', (a) => ours({ ...a, precision: 'bfloat16' })[0]],
    ['PyTorch float32', (a) => torch(a)?.[0] ?? null],
    ['PyTorch --bf16', (a) => torch(a, ['--bf16'])?.[0] ?? null],
  ];
  const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor((xs.length - 1) / 2)];
  type Row = { kind: string; stepSeconds: number | null; min?: number; max?: number; error?: string };
  const measure = (a: Args, rate: string): Row[] => {
    const runs: (Figures | null)[][] = kinds.map(() => []);
    for (let r = 0; r < rounds; r++) kinds.forEach(([, run], i) => runs[i].push(run(a)));
    return runs.map((rs, i) => {
      const kind = kinds[i][0];
      const secs = rs.map((r) => num(r, 'stepSeconds')).filter((x): x is number => x !== null);
      if (!secs.length) {
        const error = rs.some((r) => r === null) ? 'no PyTorch (set TORCH_PYTHON)' : String(rs.find((r) => r?.error)?.error ?? 'failed');
        console.log(`  ${kind.padEnd(22)} ${error}`);
        return { kind, stepSeconds: null, error };
      }
      const row = { kind, stepSeconds: median(secs), min: Math.min(...secs), max: Math.max(...secs) };
      console.log(`  ${kind.padEnd(22)} ${row.stepSeconds.toFixed(2).padStart(6)} s [${row.min.toFixed(2)}–${row.max.toFixed(2)}]  ${((a.batch as number) / row.stepSeconds).toFixed(1).padStart(7)} ${rate}`);
      return row;
    });
  };
  const shapes = quick ? [{ layers: 2, hidden: 128, batch: 16, n: 2, qlen: 32, plen: 64, steps: 2 }] : [{ ...head, steps: 3 }, { layers: 12, hidden: 768, batch: 16, n: 2, qlen: 32, plen: 64, steps: 2 }];
  const precision: Record<string, unknown>[] = [];
  for (const s of shapes) {
    const name = `L${s.layers}/H${s.hidden} b${s.batch}×${s.n} ${s.qlen}/${s.plen}`;
    console.log(`precision, train step, ${name} (median of ${rounds} processes each):`);
    const [f32, bf16, t32, t16] = measure({ ...s, gc: 'none' }, 'samples/s');
    precision.push({ shape: name, mode: 'train', kinds: [f32, bf16, t32, t16] });
    targets.push(`--bf16 step vs PyTorch's --bf16 step, ${name} (>= 1.0): ${fmtRatio(ratio(t16.stepSeconds, bf16.stepSeconds))}; vs our float32 step (>= 1.6): ${fmtRatio(ratio(f32.stepSeconds, bf16.stepSeconds))}`);
  }
  for (const s of quick ? [{ layers: 2, hidden: 128 }] : [{ layers: 4, hidden: 256 }, { layers: 12, hidden: 768 }]) {
    const name = `L${s.layers}/H${s.hidden} encode 64×128`;
    console.log(`precision, ${name} (median of ${rounds} processes each):`);
    const kindsRows = measure({ ...s, batch: 64, plen: 128, steps: 3, mode: 'encode' }, 'passages/s');
    precision.push({ shape: name, mode: 'encode', kinds: kindsRows });
  }
  results.precision = precision;
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

if (targets.length) console.log(`\ntargets:\n${targets.map((t) => `  ${t}`).join('\n')}`);
results.targets = targets;
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/latest.json', JSON.stringify(results, null, 2) + '\n');
