// `npm run bench`: the benchmark suite, one process per configuration (so each peak RSS is its own), with
// the PyTorch reference in the same session when a Python with torch + transformers is found
// (TORCH_PYTHON, else ./.venv). Like is compared with like: every step kind (plain, grad
// cache with ½ and ¼ of the rows per chunk) and encoding run alone in a process of their own, and ours and
// PyTorch's alternate, --rounds times (who goes first alternates too), so that a slow spell of a shared
// machine hits both. A figure is the median over rounds with its range; a ratio is median over median,
// with the range of the rounds' own ratios. Prints the figures and the target ratios, writes
// bench/results/latest.json and the README's chart docs/bench.svg.
//   npm run bench [-- --quick] [--rounds 3] [--sections train,precision,memory,encode,search,wasm]    TEVATRON_BACKEND picks ours
//   npm run bench -- --sections scale [--scale 0.01] [--stages train,mine]    the recipe at full size (bench/scale.ts; not in
//                                                         the default sections: ~30 min here and ~32 GB of temporary disk at --scale 1)
//   npm run bench -- --chart    redraws docs/bench.svg from bench/results/latest.json
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { parseArgs } from 'node:util';
import { barChart } from './chart.ts';

const { values: opt } = parseArgs({
  options: { quick: { type: 'boolean', default: false }, chart: { type: 'boolean', default: false }, rounds: { type: 'string', default: '3' }, sections: { type: 'string', default: 'train,precision,memory,encode,search,wasm' }, scale: { type: 'string', default: '1' }, stages: { type: 'string' } },
});
const quick = opt.quick || process.env.BENCH_QUICK === '1';
const rounds = Number(opt.rounds);
if (!(Number.isInteger(rounds) && rounds >= 1)) throw new Error(`--rounds ${opt.rounds}: expected a positive integer`);
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
  for (const p of [process.env.TORCH_PYTHON, '.venv/bin/python']) {
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

const num = (f: Figures | null | undefined, k: string) => (f && typeof f[k] === 'number' ? (f[k] as number) : null);
const ratio = (a: number | null, b: number | null) => (a !== null && b !== null ? a / b : null);
const fmtRatio = (x: number | null) => (x === null ? 'n/a' : `${x.toFixed(2)}x`);

/** Values over rounds: the median, its range, and each round's value (null: that round failed). */
interface Spread {
  median: number;
  min: number;
  max: number;
  runs: (number | null)[];
}
function spread(runs: (number | null)[]): Spread | null {
  const s = runs.filter((v): v is number => v !== null).sort((x, y) => x - y);
  if (!s.length) return null;
  const m = s.length >> 1;
  return { median: s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2, min: s[0], max: s[s.length - 1], runs };
}
/** median(a) / median(b), with the range of the rounds' own ratios a_r / b_r. */
function ratioSpread(a: (number | null)[], b: (number | null)[]): Spread | null {
  const ma = spread(a);
  const mb = spread(b);
  const each = spread(a.map((x, i) => ratio(x, b[i])));
  return ma && mb && each ? { ...each, median: ma.median / mb.median } : null;
}
const fmtSpread = (x: Spread | null, digits = 2, unit = '') => (x ? `${x.median.toFixed(digits)}${unit} (${x.min.toFixed(digits)}–${x.max.toFixed(digits)})` : 'n/a');
const fmtRatioSpread = (x: Spread | null) => fmtSpread(x, 2, 'x');

/** One configuration, `rounds` times: ours and PyTorch's each in a fresh process, alternating (who goes first too). */
function alternate(a: Args): { ours: Figures[]; torch: (Figures | null)[] } {
  const out = { ours: [] as Figures[], torch: [] as (Figures | null)[] };
  for (let r = 0; r < rounds; r++) {
    const runOurs = () => out.ours.push(ours(a)[0]);
    const runTorch = () => out.torch.push(torch(a)?.[0] ?? null);
    if (r % 2 === 0) {
      runOurs();
      runTorch();
    } else {
      runTorch();
      runOurs();
    }
  }
  return out;
}

/** The first error of a list of results, if every one failed. */
const failure = (fs: (Figures | null)[]) => (fs.length && fs.every((f) => f?.error) ? String(fs[0]!.error) : null);

interface KindResult {
  kind: string;
  ours: Spread | null;
  torch: Spread | null;
  /** Our throughput over PyTorch's for this kind: median(PyTorch s/step) / median(ours). */
  speedup: Spread | null;
  /** From the round of our median time: its MFU and peak RSS. */
  mfu: number | null;
  peakRssMB: number | null;
  errors: string[];
}

/** `key`: seconds per step (lower is faster), or a rate such as passages/s with `rate` (higher is faster). */
function kindResult(kind: string, r: { ours: Figures[]; torch: (Figures | null)[] }, key = 'stepSeconds', rate = false): KindResult {
  const mine = r.ours.map((f) => num(f, key));
  const theirs = r.torch.map((f) => num(f, key));
  const ranked = mine.map((v, i) => [v, i] as const).filter(([v]) => v !== null).sort((x, y) => x[0]! - y[0]!);
  const mid = ranked.length ? r.ours[ranked[(ranked.length - 1) >> 1][1]] : null;
  return {
    kind, ours: spread(mine), torch: spread(theirs), speedup: rate ? ratioSpread(mine, theirs) : ratioSpread(theirs, mine), mfu: num(mid, 'mfu'), peakRssMB: num(mid, 'peakRssMB'),
    errors: [failure(r.ours), py ? failure(r.torch) : null].filter((e): e is string => e !== null),
  };
}

function showKind(label: string, k: KindResult, unit = 's'): void {
  if (k.errors.length) console.log(`  ${label}: ${k.errors.join('; ')}`);
  const mfu = k.mfu !== null ? `  MFU ${(100 * k.mfu).toFixed(0)}%` : '';
  console.log(`  ${label.padEnd(22)} ours ${fmtSpread(k.ours, 2, ` ${unit}`)}  PyTorch ${fmtSpread(k.torch, 2, ` ${unit}`)}  -> ${fmtRatioSpread(k.speedup)}${mfu}`);
}

/** docs/bench.svg: train-step throughput relative to PyTorch's plain step of each shape (medians over rounds). */
function writeChart(train: { shape: string; backend: string; rounds: number; kinds: KindResult[] }[]): void {
  const svg = barChart(
    `train-step throughput relative to PyTorch's plain step (${train[0].backend}, ${cpus().length} cores; median of ${train[0].rounds} rounds)`,
    '× PyTorch plain step',
    ['tevatron-ts', 'tevatron-ts, grad cache ½', 'PyTorch', 'PyTorch, grad cache ½'],
    train.map((r) => {
      const [plain, half] = r.kinds;
      const base = plain.torch?.median ?? null; // seconds per step: throughput ratios are inverse time ratios
      return { label: r.shape, values: [plain.ours, half.ours, plain.torch, half.torch].map((x) => ratio(base, x?.median ?? null)) };
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
        { layers: 2, hidden: 128, batch: 32, n: 2, qlen: 32, plen: 128, steps: 3 },
        { ...head, steps: 3 },
        { layers: 12, hidden: 768, batch: 16, n: 2, qlen: 32, plen: 64, steps: 2 },
      ];
  const train: { shape: string; backend: string; rounds: number; kinds: KindResult[] }[] = [];
  for (const s of shapes) {
    const name = `L${s.layers}/H${s.hidden} b${s.batch}×${s.n} ${s.qlen}/${s.plen}`;
    console.log(`train step, ${name} (s/step: median and range of ${rounds} rounds, each kind alone in a process, ours and PyTorch alternating; -> our throughput over PyTorch's):`);
    const kinds = [['plain', 'none'], [`grad cache ${s.batch / 2}/${s.batch * s.n / 2}`, `${s.batch / 2}/${s.batch * s.n / 2}`], [`grad cache ${s.batch / 4}/${s.batch * s.n / 4}`, `${s.batch / 4}/${s.batch * s.n / 4}`]];
    const row = { shape: name, backend, rounds, kinds: [] as KindResult[] };
    for (const [label, gc] of kinds) {
      const runs = alternate({ ...s, gc });
      row.backend = String(runs.ours.find((f) => typeof f.backend === 'string')?.backend ?? row.backend); // what 'auto' started
      const k = kindResult(label, runs);
      showKind(label, k);
      row.kinds.push(k);
    }
    train.push(row);
  }
  results.train = train;
  const [plain, half, quarter] = train[quick ? 0 : 1].kinds;
  targets.push(`throughput vs PyTorch, ${train[quick ? 0 : 1].shape} (>= 1.0): ${fmtRatioSpread(plain.speedup)}`);
  const gcRatio = (gc: KindResult, side: 'ours' | 'torch') => fmtRatioSpread(ratioSpread(gc[side]?.runs ?? [], plain[side]?.runs ?? []));
  targets.push(`grad-cache step / plain step, chunks of half the rows (<= 1.25): ${gcRatio(half, 'ours')} (PyTorch ${gcRatio(half, 'torch')}); a quarter: ${gcRatio(quarter, 'ours')} (PyTorch ${gcRatio(quarter, 'torch')})`);
  if (!quick) writeChart(train);
}

if (sections.has('precision')) {
  // --bf16 against float32, here and in PyTorch (autocast to bfloat16, as Hugging Face's --bf16): every
  // run a process of its own, the four kinds taking turns, `rounds` times; medians with [min–max]
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
  console.log(`encode (no dropout), batch 64 × 128 tokens (passages/s: median and range of ${rounds} rounds, ours and PyTorch alternating):`);
  const shapes = quick ? [{ layers: 2, hidden: 128 }] : [{ layers: 4, hidden: 256 }, { layers: 12, hidden: 768 }];
  results.encode = shapes.map((s) => {
    const k = kindResult(`L${s.layers}/H${s.hidden}`, alternate({ ...s, batch: 64, plen: 128, steps: 3, mode: 'encode' }), 'passagesPerSecond', true);
    showKind(k.kind, k, 'passages/s');
    return k;
  });
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
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/scale.ts', '--scale', opt.scale, ...(opt.stages ? ['--stages', opt.stages] : []), '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  const s = r.stdout.trim() ? lastJson<Record<string, unknown>>(r.stdout) : { error: `exit ${r.status ?? r.signal}` };
  results.scale = s;
  targets.push(...((s.targets as string[] | undefined) ?? [`scale: ${s.error}`]));
}

if (targets.length) console.log(`\ntargets:\n${targets.map((t) => `  ${t}`).join('\n')}`);
results.targets = targets;
mkdirSync('bench/results', { recursive: true });
writeFileSync('bench/results/latest.json', JSON.stringify(results, null, 2) + '\n');
