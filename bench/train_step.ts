// Throughput of a BERT bi-encoder on this machine.
//   train (default): samples/s and tokens/s of a full optimizer step (forward, contrastive loss, backward,
//     AdamW, dropout on) and the model FLOP utilisation against the backend's measured matmul peak, for each
//     step kind in --gc: `none` (the plain step) or Q/P grad-cache chunk sizes. Several kinds run in one
//     process, a step of each in turn, so that their ratio holds under the same load; run one kind per
//     process for its own peak RSS.
//   encode: passages/s of the no-dropout forward over --batch passages of --plen tokens.
// --precision bfloat16 (or float16) runs the encoder's products as --bf16 (--fp16) does; MFU is then
// against the measured peak of the same product in that precision.
// Times are the best of --steps after one warm-up: other processes only ever slow a step down.
//   npx tsx bench/train_step.ts [--backend wasm] [--layers 4 --hidden 256 --batch 32 --n 2 --qlen 32 --plen 128 --steps 5] [--gc none,16/32] [--mode encode] [--precision bfloat16] [--json]
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendChoice } from '../lib/backend.ts';
import { collateGroups, collateSequences } from '../lib/data/collator.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { bertConfigFromJson } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams } from '../lib/model/dense.ts';
import { initAdamW } from '../lib/optim.ts';
import { mixedPrecisionSupport, reducedMatMul, type Precision } from '../lib/precision.ts';
import { trainStep, type TrainState } from '../lib/train.ts';

const { values: v } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' }, layers: { type: 'string', default: '4' }, hidden: { type: 'string', default: '256' },
    batch: { type: 'string', default: '32' }, n: { type: 'string', default: '2' }, qlen: { type: 'string', default: '32' }, plen: { type: 'string', default: '128' },
    steps: { type: 'string', default: '5' }, gc: { type: 'string', default: 'none' }, mode: { type: 'string', default: 'train' }, json: { type: 'boolean', default: false },
    precision: { type: 'string', default: 'float32' },
  },
});
const [L, H, B, n, ql, pl, steps] = ['layers', 'hidden', 'batch', 'n', 'qlen', 'plen', 'steps'].map((k) => Number(v[k as keyof typeof v]));
const backend = await initBackend(v.backend as BackendChoice);
const precision = v.precision as Precision;
if (!['float32', 'bfloat16', 'float16'].includes(precision)) throw new Error(`--precision ${precision}: use float32, bfloat16 or float16`);
const support = mixedPrecisionSupport();
if (precision !== 'float32' && !support.ok) throw new Error(`--precision ${precision}: ${support.reason}`);

/** Measured matmul peak (GFLOP/s) of this backend in `precision`: 1024×768×768, best of 2 seconds of tries. */
function matmulPeak(): number {
  const a = tf.randomNormal([1024, 768]);
  const b = tf.randomNormal([768, 768]);
  let best = Infinity;
  for (let i = 0, start = performance.now(); i < 6 || performance.now() - start < 2000; i++) {
    const t0 = performance.now();
    const c = precision === 'float32' ? tf.matMul(a, b) : reducedMatMul(a, b, false, false, precision, { b: true });
    c.dataSync();
    c.dispose();
    if (i > 0) best = Math.min(best, performance.now() - t0);
  }
  tf.dispose([a, b]);
  return (2 * 1024 * 768 * 768) / best / 1e6;
}

/** Seconds of the fastest of `steps` rounds of each call after a warm-up round, the calls taking turns. */
async function bestOf(fs: (() => Promise<void>)[]): Promise<number[]> {
  for (const f of fs) await f();
  const best = fs.map(() => Infinity);
  for (let i = 0; i < steps; i++) {
    for (const [j, f] of fs.entries()) {
      const t0 = performance.now();
      await f();
      best[j] = Math.min(best[j], (performance.now() - t0) / 1000);
    }
  }
  return best;
}

const config = bertConfigFromJson({ model_type: 'bert', vocab_size: 30522, hidden_size: H, num_hidden_layers: L, num_attention_heads: Math.max(1, H / 64), intermediate_size: 4 * H, max_position_embeddings: 512 }, 'bench');
const model = denseBiEncoder(config, { pooling: 'cls', precision });
const rng = new PyRandom(0);
const seq = (len: number) => Array.from({ length: len - 2 }, () => 1000 + rng.randbelow(29000));
const special = { cls: 101, sep: 102, pad: 0 };
// FLOPs of a forward over `tokens` tokens in sequences of `len`: 2 × (non-embedding parameters) per token
// plus the attention products (4 × L × H × len per token); training is 3× the forward
const dense = L * (4 * H * H + 2 * H * 4 * H);
const forwardFlops = (rows: number, len: number) => 2 * dense * rows * len + 4 * L * H * rows * len * len;
const base = { backend, shape: `L${L}/H${H}`, batch: B, mode: v.mode, precision };
let results: Record<string, unknown>[];
let lines: string[];
if (v.mode === 'encode') {
  const params = initDenseParams(config, {}, 1);
  const passages = collateSequences(Array.from({ length: B }, () => seq(pl)), pl, special);
  const [sec] = await bestOf([
    async () => {
      const reps = model.encodePassage(params, passages, null);
      await reps.data();
      reps.dispose();
    },
  ]);
  const peak = matmulPeak();
  const gflops = forwardFlops(B, pl) / sec / 1e9;
  results = [{ ...base, plen: pl, stepSeconds: sec, passagesPerSecond: B / sec, mfu: gflops / peak, matmulPeakGflops: peak, peakRssMB: process.resourceUsage().maxRSS / 1024 }];
  lines = [`encode ${base.shape} batch ${B}×${pl} on ${backend}, ${precision}: ${(B / sec).toFixed(1)} passages/s, MFU ${(100 * gflops / peak).toFixed(0)}% of ${peak.toFixed(0)} GFLOP/s`];
} else {
  const params = initDenseParams(config, {}, 1);
  let state: TrainState = { params, optimizer: initAdamW(params), key: 3 };
  const batch = collateGroups(Array.from({ length: B }, () => ({ query: seq(ql), passages: Array.from({ length: n }, () => seq(pl)) })), { qMaxLen: ql, pMaxLen: pl, special });
  const kinds = v.gc.split(',');
  const cfgs = kinds.map((kind) => {
    const [gq, gp] = kind === 'none' ? [0, 0] : kind.split('/').map(Number);
    if (kind !== 'none' && !(gq > 0 && gp > 0)) throw new Error(`--gc ${kind}: expected none or Q/P chunk sizes, e.g. 16/32`);
    return {
      adamw: { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, schedule: 'constant' as const, warmupSteps: 0, totalSteps: 100,
      maxGradNorm: 1, gradCache: kind === 'none' ? null : { qChunkSize: gq, pChunkSize: gp }, dropout: true,
    };
  });
  const secs = await bestOf(cfgs.map((cfg) => async () => {
    state = (await trainStep(model, state, [batch], cfg)).state;
  }));
  const tokens = B * ql + B * n * pl;
  const flops = 3 * (forwardFlops(B, ql) + forwardFlops(B * n, pl)); // model FLOPs: grad cache's extra forward is overhead, not counted
  const peak = matmulPeak();
  const rss = process.resourceUsage().maxRSS / 1024;
  results = kinds.map((kind, i) => ({
    ...base, n, qlen: ql, plen: pl, gradCache: kind === 'none' ? null : kind, stepSeconds: secs[i], samplesPerSecond: B / secs[i], tokensPerSecond: tokens / secs[i],
    modelGflops: flops / secs[i] / 1e9, matmulPeakGflops: peak, mfu: flops / secs[i] / 1e9 / peak, peakRssMB: rss,
  }));
  lines = results.map((r, i) => `${base.shape} batch ${B}x${n} ${ql}/${pl}${kinds[i] === 'none' ? '' : ` gc ${kinds[i]}`} on ${backend}, ${precision}: ${secs[i].toFixed(2)} s/step, ${(B / secs[i]).toFixed(1)} samples/s, ${Math.round(tokens / secs[i])} tokens/s, MFU ${(100 * (r.mfu as number)).toFixed(0)}% of ${peak.toFixed(0)} GFLOP/s`);
  lines.push(`peak RSS of the process ${rss.toFixed(0)} MB`);
}
console.log(v.json ? JSON.stringify(results) : lines.join('\n'));
