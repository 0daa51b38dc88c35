// Train-step throughput of BERT bi-encoders on this machine: samples/s and tokens/s of a full
// optimizer step (forward, contrastive loss, backward, AdamW), plain and with grad cache, and the model
// FLOP utilisation against the backend's measured matmul peak. Each configuration can run in its own
// process (--one) so that its peak RSS is its own.
//   npx tsx bench/train_step.ts [--backend wasm] [--layers 4 --hidden 256 --batch 32 --n 2 --qlen 32 --plen 128 --steps 3]
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { initBackend, type BackendChoice } from '../lib/backend.ts';
import { collateGroups } from '../lib/data/collator.ts';
import { PyRandom } from '../lib/data/pyrandom.ts';
import { bertConfigFromJson } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams } from '../lib/model/dense.ts';
import { initAdamW } from '../lib/optim.ts';
import { trainStep, type TrainState } from '../lib/train.ts';

const { values: v } = parseArgs({
  options: {
    backend: { type: 'string', default: 'auto' }, layers: { type: 'string', default: '4' }, hidden: { type: 'string', default: '256' },
    batch: { type: 'string', default: '32' }, n: { type: 'string', default: '2' }, qlen: { type: 'string', default: '32' }, plen: { type: 'string', default: '128' },
    steps: { type: 'string', default: '3' }, gc: { type: 'string', default: '' }, json: { type: 'boolean', default: false },
  },
});
const [L, H, B, n, ql, pl, steps] = ['layers', 'hidden', 'batch', 'n', 'qlen', 'plen', 'steps'].map((k) => Number(v[k as keyof typeof v]));
const backend = await initBackend(v.backend as BackendChoice);

/** Measured float32 matmul peak (GFLOP/s) of this backend: 1024×768×768, best of 5. */
function matmulPeak(): number {
  const a = tf.randomNormal([1024, 768]);
  const b = tf.randomNormal([768, 768]);
  let best = Infinity;
  for (let i = 0; i < 6; i++) {
    const t0 = performance.now();
    const c = tf.matMul(a, b);
    c.dataSync();
    c.dispose();
    if (i > 0) best = Math.min(best, performance.now() - t0);
  }
  tf.dispose([a, b]);
  return (2 * 1024 * 768 * 768) / best / 1e6;
}

const config = bertConfigFromJson({ model_type: 'bert', vocab_size: 30522, hidden_size: H, num_hidden_layers: L, num_attention_heads: Math.max(1, H / 64), intermediate_size: 4 * H, max_position_embeddings: 512 }, 'bench');
const model = denseBiEncoder(config, { pooling: 'cls' });
const params = initDenseParams(config, {}, 1);
let state: TrainState = { params, optimizer: initAdamW(params), key: 3 };
const rng = new PyRandom(0);
const seq = (len: number) => Array.from({ length: len - 2 }, () => 1000 + rng.randbelow(29000));
const batch = collateGroups(Array.from({ length: B }, () => ({ query: seq(ql), passages: Array.from({ length: n }, () => seq(pl)) })), { qMaxLen: ql, pMaxLen: pl, special: { cls: 101, sep: 102, pad: 0 } });
const [gq, gp] = v.gc ? v.gc.split('/').map(Number) : [0, 0];
const cfg = {
  adamw: { lr: 1e-5, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 }, schedule: 'constant' as const, warmupSteps: 0, totalSteps: 100,
  maxGradNorm: 1, gradCache: v.gc ? { qChunkSize: gq, pChunkSize: gp } : null, dropout: true,
};
const times: number[] = [];
for (let i = 0; i <= steps; i++) {
  const t0 = performance.now();
  state = (await trainStep(model, state, [batch], cfg)).state;
  if (i > 0) times.push((performance.now() - t0) / 1000); // step 0 warms up kernels and allocations
}
const sec = times.sort((a, b) => a - b)[Math.floor(times.length / 2)];
const tokens = B * ql + B * n * pl;
// training FLOPs ≈ 6 × (non-embedding parameters) × tokens + attention scores (12 × L × H × len² per sequence)
const dense = L * (4 * H * H + 2 * H * 4 * H);
const flops = 6 * dense * tokens + 12 * L * H * (B * ql * ql + B * n * pl * pl); // model FLOPs: grad cache's extra forward is overhead, not counted
const peak = matmulPeak();
const result = {
  backend, shape: `L${L}/H${H}`, batch: B, n, qlen: ql, plen: pl, gradCache: v.gc || null, stepSeconds: sec,
  samplesPerSecond: B / sec, tokensPerSecond: tokens / sec, modelGflops: flops / sec / 1e9, matmulPeakGflops: peak,
  mfu: flops / sec / 1e9 / peak, peakRssMB: process.resourceUsage().maxRSS / 1024,
};
if (v.json) console.log(JSON.stringify(result));
else console.log(`${result.shape} batch ${B}x${n} ${ql}/${pl}${v.gc ? ` gc ${v.gc}` : ''} on ${backend}: ${sec.toFixed(2)} s/step, ${result.samplesPerSecond.toFixed(1)} samples/s, ${Math.round(result.tokensPerSecond)} tokens/s, MFU ${(100 * result.mfu).toFixed(0)}% of ${peak.toFixed(0)} GFLOP/s, peak RSS ${result.peakRssMB.toFixed(0)} MB`);
