import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { adamwStep, clipByGlobalNorm, decays, initAdamW, lrMultiplier, warmupSteps } from '../lib/optim.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { close, disposeAll } from './helpers.ts';

/** torch.optim.AdamW on one float64 scalar, written out from PyTorch's documented algorithm. */
function torchAdamW(p: number, grads: number[], c: { lr: number; b1: number; b2: number; eps: number; wd: number }): number {
  let m = 0;
  let v = 0;
  grads.forEach((g, i) => {
    const t = i + 1;
    p *= 1 - c.lr * c.wd;
    m = c.b1 * m + (1 - c.b1) * g;
    v = c.b2 * v + (1 - c.b2) * g * g;
    const mhat = m / (1 - c.b1 ** t);
    const vhat = v / (1 - c.b2 ** t);
    p -= (c.lr * mhat) / (Math.sqrt(vhat) + c.eps);
  });
  return p;
}

test('AdamW over a large parameter (sliced over the cores where the binding runs it) equals torch.optim.AdamW element by element', () => {
  const c = { lr: 0.01, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.1 };
  const n = 200_003;
  const p0 = Float32Array.from({ length: n }, (_, i) => Math.sin(i));
  const gs = [0, 1].map((s) => Float32Array.from({ length: n }, (_, i) => Math.cos(i * (s + 1.7))));
  let params: ParamMap = { 'dense.weight': tf.tensor1d(p0) };
  let state = initAdamW(params);
  for (const g of gs) {
    const grads = { 'dense.weight': tf.tensor1d(g) };
    const next = adamwStep(params, grads, state, c);
    disposeAll(params, grads, state.m, state.v);
    ({ params, state } = next);
  }
  const got = params['dense.weight'].dataSync();
  for (let i = 0; i < n; i += 997) close(got[i], torchAdamW(p0[i], gs.map((g) => g[i]), { lr: c.lr, b1: c.beta1, b2: c.beta2, eps: c.eps, wd: c.weightDecay }), 1e-6, `p[${i}]`);
  close(got[n - 1], torchAdamW(p0[n - 1], gs.map((g) => g[n - 1]), { lr: c.lr, b1: c.beta1, b2: c.beta2, eps: c.eps, wd: c.weightDecay }), 1e-6, 'the last element');
  disposeAll(params, state.m, state.v);
});

test('AdamW equals torch.optim.AdamW over several steps; no decay for biases and LayerNorm', () => {
  const c = { lr: 0.01, beta1: 0.9, beta2: 0.98, eps: 1e-6, weightDecay: 0.1 };
  const init = { 'dense.weight': [0.5, -1.5], 'dense.bias': [0.25, 2], 'LayerNorm.weight': [1, 1] };
  const gradSeq = [[0.3, -0.2], [0.1, 0.4], [-0.5, 0.05]];
  let params: ParamMap = Object.fromEntries(Object.entries(init).map(([k, v]) => [k, tf.tensor1d(v)]));
  let state = initAdamW(params);
  for (const g of gradSeq) {
    const grads = Object.fromEntries(Object.keys(init).map((k) => [k, tf.tensor1d(g)]));
    const next = adamwStep(params, grads, state, c);
    disposeAll(params, grads, state.m, state.v);
    params = next.params;
    state = next.state;
  }
  assert.is(state.step, 3);
  for (const [k, v] of Object.entries(init)) {
    const got = params[k].dataSync();
    v.forEach((p0, i) => {
      const wd = decays(k) ? c.weightDecay : 0;
      const want = torchAdamW(p0, gradSeq.map((g) => g[i]), { lr: c.lr, b1: c.beta1, b2: c.beta2, eps: c.eps, wd });
      close(got[i], want, 1e-6, `${k}[${i}]`);
    });
  }
  assert.ok(decays('encoder.layer.0.attention.self.query.weight'));
  assert.not.ok(decays('encoder.layer.0.output.LayerNorm.weight'));
  assert.not.ok(decays('linear_q.bias'));
});

test('one step from a fresh state moves each parameter by −lr·g/(|g| + ε) (the gradient-revealing contract)', () => {
  const g = [1e-3, -2, 0.5, 0];
  const p = { w: tf.tensor1d([1, 1, 1, 1]) };
  const next = adamwStep(p, { w: tf.tensor1d(g) }, initAdamW(p), { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
  const got = next.params.w.dataSync();
  g.forEach((gi, i) => close(got[i], 1 - (1e-3 * gi) / (Math.abs(gi) + 1e-8), 1e-7, `p[${i}]`));
});

test('schedules as transformers: linear and cosine with warmup, constant ignores warmup', () => {
  // warmup 2 of 10 steps: 0, 1/2, then linear from 1 at step 2 down to 0 at step 10
  assert.equal([0, 1, 2, 6, 10, 11].map((s) => lrMultiplier('linear', s, 2, 10)), [0, 0.5, 1, 0.5, 0, 0]);
  close(lrMultiplier('cosine', 6, 2, 10), 0.5, 1e-12, 'cosine halfway');
  close(lrMultiplier('cosine', 4, 2, 10), 0.5 * (1 + Math.cos(Math.PI / 4)), 1e-12, 'cosine quarter');
  assert.is(lrMultiplier('constant', 0, 5, 10), 1);
  assert.is(lrMultiplier('constant_with_warmup', 1, 4, 10), 0.25);
  assert.is(warmupSteps(1001, 0.1), 101);
  assert.is(warmupSteps(1001, 0.1, 7), 7);
});

test('global-norm clipping as clip_grad_norm_', () => {
  const grads = { a: tf.tensor1d([3, 0]), b: tf.tensor1d([4]) }; // norm 5
  const { grads: clipped, norm } = clipByGlobalNorm(grads, 1);
  assert.is(norm, 5);
  const coef = 1 / (5 + 1e-6);
  close(clipped.a.dataSync()[0], 3 * coef, 1e-6, 'a');
  close(clipped.b.dataSync()[0], 4 * coef, 1e-6, 'b');
  assert.is(clipByGlobalNorm(grads, 10).grads, grads, 'under the limit: unchanged');
  assert.is(clipByGlobalNorm(grads, 0).grads, grads, 'max_grad_norm 0 disables clipping');
});

test.run();
