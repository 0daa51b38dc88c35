// `npm run bench`: the benchmark suite. Each configuration runs in its own process (so peak RSS is its
// own); the PyTorch reference runs in the same session when a Python with torch + transformers is found
// (TORCH_PYTHON, else ./.venv or /work/venv). Prints the figures and the target ratios, and writes
// bench/results/latest.json.  BENCH_QUICK=1 runs a smaller shape.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';

const quick = process.env.BENCH_QUICK === '1';
const backend = process.env.TEVATRON_BACKEND ?? 'auto';
const shape = quick ? { layers: 2, hidden: 128, batch: 16 } : { layers: 4, hidden: 256, batch: 32 };
const common = { n: 2, qlen: 32, plen: 128, steps: quick ? 2 : 3 };

function ours(extra: Record<string, string | number>): Record<string, number | string> {
  const args = Object.entries({ ...shape, ...common, ...extra, backend }).flatMap(([k, val]) => [`--${k}`, String(val)]);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'bench/train_step.ts', ...args, '--json'], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bench/train_step.ts ${args.join(' ')} failed:\n${r.stderr}`);
  const out = JSON.parse(r.stdout.trim().split('\n').pop()!);
  console.log(`  ${out.shape} batch ${out.batch}${out.gradCache ? ` gc ${out.gradCache}` : ''} (${out.backend}): ${out.stepSeconds.toFixed(2)} s/step, ${out.samplesPerSecond.toFixed(1)} samples/s, MFU ${(100 * out.mfu).toFixed(0)}% of ${out.matmulPeakGflops.toFixed(0)} GFLOP/s, peak RSS ${out.peakRssMB.toFixed(0)} MB`);
  return out;
}

function torchPython(): string | null {
  for (const p of [process.env.TORCH_PYTHON, '.venv/bin/python', '/work/venv/bin/python']) {
    if (p && existsSync(p) && spawnSync(p, ['-c', 'import torch, transformers'], { encoding: 'utf8' }).status === 0) return p;
  }
  return null;
}

const results: Record<string, unknown> = { date: new Date().toISOString(), quick };
console.log(`train step, ${shape.layers} layers / hidden ${shape.hidden}, batch ${shape.batch} x ${common.n}, lengths ${common.qlen}/${common.plen}:`);
const plain = ours({});
const cached = ours({ gc: `${shape.batch / 2}/${shape.batch / 2}` });
results.plain = plain;
results.gradCache = cached;
const py = torchPython();
if (py) {
  const r = spawnSync(py, ['bench/torch_reference.py', ...Object.entries({ ...shape, ...common }).flatMap(([k, val]) => [`--${k}`, String(val)])], { encoding: 'utf8' });
  if (r.status === 0) {
    const t = JSON.parse(r.stdout.trim().split('\n').pop()!);
    results.torch = t;
    console.log(`  PyTorch ${t.torch} (${t.threads} threads): ${t.stepSeconds.toFixed(2)} s/step, ${t.samplesPerSecond.toFixed(1)} samples/s`);
  } else console.log(`  PyTorch reference failed: ${r.stderr.trim().split('\n').pop()}`);
} else console.log('  PyTorch reference skipped: no Python with torch and transformers (set TORCH_PYTHON)');

console.log('peak memory (RSS), grad cache chunks 8/16:');
const mem: Record<string, number> = {};
for (const [batch, gc] of [[16, ''], [128, '8/16']] as const) {
  const r = ours({ batch, gc, steps: 1 });
  mem[`batch${batch}${gc ? '_gc' : ''}`] = r.peakRssMB as number;
}
results.memory = mem;

const ratio = (a: number, b: number) => (a / b).toFixed(2);
console.log('\ntargets:');
if (results.torch) console.log(`  throughput vs PyTorch (>= 1.0): ${ratio(plain.samplesPerSecond as number, (results.torch as { samplesPerSecond: number }).samplesPerSecond)}x`);
console.log(`  grad-cache step / plain step (<= 1.25): ${ratio(cached.stepSeconds as number, plain.stepSeconds as number)}x`);
console.log(`  peak RSS batch 128 with cache / batch 16 without (<= 1.2): ${ratio(mem.batch128_gc, mem.batch16)}x`);
mkdirSync('bench/results', { recursive: true });
writeFileSync(path.join('bench/results', 'latest.json'), JSON.stringify(results, null, 2) + '\n');
