import * as tf from '@tensorflow/tfjs';
import { readFileSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TokenBatch } from '../lib/data/collator.ts';
import { gradCacheStep } from '../lib/gradcache.ts';
import { bertConfigFromJson, bertForward, hiddenActivation, initBertParams, layerNorm, type BertConfig } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams, type DenseOptions } from '../lib/model/dense.ts';
import { parseSafetensors } from '../lib/model/safetensors.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { fullBatchStep, paramGradients } from '../lib/step.ts';
import { nativeElementwise } from '../lib/native.ts';
import { backend, close, disposeAll, maxRelativeError, randomBatch, testUnless } from './helpers.ts';

// test/fixtures/make_tiny_bert.py: a tiny BertModel and what transformers computes with it
const dir = new URL('./fixtures/tiny-bert/', import.meta.url);
const config = bertConfigFromJson(JSON.parse(readFileSync(new URL('config.json', dir), 'utf8')), 'tiny-bert/config.json');
const weights = parseSafetensors(readFileSync(new URL('model.safetensors', dir)), 'tiny-bert/model.safetensors').tensors;
interface Case {
  input_ids: number[][];
  attention_mask: number[][];
  last_hidden_state: number[][][];
  cls: number[][];
  mean: number[][];
}
const expected: {
  cases: Case[];
  gradients: { case: number; weights: number[][][]; loss: number; params: Record<string, number[] | number[][]> };
} = JSON.parse(readFileSync(new URL('expected.json', dir), 'utf8'));

function loadParams(): ParamMap {
  const out: ParamMap = {};
  for (const [k, v] of Object.entries(weights)) out[k] = tf.tensor(v.data, v.shape, 'float32');
  return out;
}

function tokenBatch(ids: number[][], mask: number[][]): TokenBatch {
  return { inputIds: Int32Array.from(ids.flat()), attentionMask: Int32Array.from(mask.flat()), rows: ids.length, length: ids[0].length };
}

/** max |a − b| over all entries. */
function maxAbsDiff(a: tf.Tensor, b: ArrayLike<number>): number {
  const x = a.dataSync();
  if (x.length !== b.length) throw new Error(`sizes differ: ${x.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < x.length; i++) m = Math.max(m, Math.abs(x[i] - b[i]));
  return m;
}

const flat = (x: unknown): number[] => (Array.isArray(x) ? x.flat(Infinity as 1) : [x]) as number[];

test('the forward equals transformers BertModel (last hidden state, CLS and mean pooling) within 1e-5', () => {
  const params = loadParams();
  const cls = denseBiEncoder(config, { pooling: 'cls' });
  const mean = denseBiEncoder(config, { pooling: 'mean' });
  let worst = 0;
  for (const c of expected.cases) {
    const batch = tokenBatch(c.input_ids, c.attention_mask);
    const hidden = bertForward(config, params, batch, null);
    assert.equal(hidden.shape, [batch.rows, batch.length, config.hidden_size]);
    const q = cls.encodeQuery(params, batch, null);
    const p = mean.encodePassage(params, batch, null);
    const diffs = [maxAbsDiff(hidden, flat(c.last_hidden_state)), maxAbsDiff(q, flat(c.cls)), maxAbsDiff(p, flat(c.mean))];
    worst = Math.max(worst, ...diffs);
    tf.dispose([hidden, q, p]);
  }
  console.log(`  [${backend}] max |ours − transformers| = ${worst.toExponential(2)}`);
  assert.ok(worst <= 1e-5, `max abs difference ${worst}`);
  disposeAll(params);
});

test('gradients equal PyTorch autograd (dropout off), the [PAD] row included', () => {
  const params = loadParams();
  const g = expected.gradients;
  const c = expected.cases[g.case];
  const batch = tokenBatch(c.input_ids, c.attention_mask);
  const w = tf.tensor(flat(g.weights), [batch.rows, batch.length, config.hidden_size]);
  const { value, grads } = paramGradients(params, () => tf.sum(tf.mul(bertForward(config, params, batch, null), w)));
  close(value.dataSync()[0], g.loss, 1e-5, 'loss');
  for (const [name, ref] of Object.entries(g.params)) {
    const r = flat(ref);
    const scale = Math.max(...r.map(Math.abs));
    const err = maxAbsDiff(grads[name], r) / scale;
    assert.ok(err <= 1e-5, `${name}: relative error ${err}`);
  }
  const padRow = tf.slice(grads['embeddings.word_embeddings.weight'], [config.pad_token_id!, 0], [1, -1]);
  assert.is(tf.max(tf.abs(padRow)).dataSync()[0], 0, 'nn.Embedding(padding_idx) gives the [PAD] row no gradient');
  tf.dispose([w, value, padRow]);
  disposeAll(params, grads);
});

test('gradients with dropout on equal central finite differences', () => {
  const params = loadParams();
  const c = expected.cases[0];
  const batch = tokenBatch(c.input_ids, c.attention_mask);
  const rng = { key: 99, rowOffset: 3 };
  const w = tf.randomNormal([batch.rows, batch.length, config.hidden_size], 0, 1, 'float32', 7);
  const loss = (p: ParamMap) => tf.sum(tf.mul(bertForward(config, p, batch, rng), w));
  const { value, grads } = paramGradients(params, () => loss(params));
  // along (ĝ + r)/‖ĝ + r‖ over a few parameters of different kinds, r random of norm 1: large enough a
  // derivative for float32 differences, and any error of ours that correlates with ĝ or r shows
  const names = ['encoder.layer.0.attention.self.key.weight', 'encoder.layer.1.intermediate.dense.weight', 'encoder.layer.0.output.LayerNorm.weight', 'embeddings.position_embeddings.weight'];
  const norm = (ts: tf.Tensor[]) => Math.sqrt(ts.reduce((s, t) => s + tf.sum(tf.square(t)).dataSync()[0], 0));
  const rand = names.map((k, i) => tf.randomNormal(params[k].shape, 0, 1, 'float32', 100 + i));
  const [gNorm, rNorm] = [norm(names.map((k) => grads[k])), norm(rand)];
  const mixed = names.map((k, i) => tf.add(tf.div(grads[k], gNorm), tf.div(rand[i], rNorm)));
  const vNorm = norm(mixed);
  const dirs = mixed.map((d) => tf.div(d, vNorm));
  const h = 1e-2;
  const shifted = (sign: number) =>
    tf.tidy(() => {
      const p = { ...params };
      names.forEach((k, i) => (p[k] = tf.add(params[k], tf.mul(dirs[i], sign * h))));
      return loss(p).dataSync()[0];
    });
  const numeric = (shifted(1) - shifted(-1)) / (2 * h);
  const analytic = names.reduce((s, k, i) => s + tf.sum(tf.mul(grads[k], dirs[i])).dataSync()[0], 0);
  assert.ok(Math.abs(analytic) > 1, `a directional derivative worth testing: ${analytic}`);
  close(numeric, analytic, 1e-3, 'directional derivative');
  const noDropout = tf.sum(tf.mul(bertForward(config, params, batch, null), w));
  assert.ok(Math.abs(noDropout.dataSync()[0] - value.dataSync()[0]) > 1e-2, 'dropout is really on');
  tf.dispose([w, value, noDropout, ...rand, ...mixed, ...dirs]);
  disposeAll(params, grads);
});

test('LayerNorm and the activations equal hand-computed values; their gradients equal finite differences', () => {
  const x = tf.tensor2d([[1, 2, 4, -3], [0.5, 0.5, 0.5, 0.5]]);
  const y = layerNorm(x, tf.tensor1d([1, 2, 1, 1]), tf.tensor1d([0, 0, 1, 0]), 1e-5);
  // row 1: mean 1, biased variance 6.5; row 2 is constant: all bias
  const s = Math.sqrt(6.5 + 1e-5);
  const want = [0, 2 / s, 3 / s + 1, -4 / s, 0, 0, 1, 0];
  assert.ok(maxAbsDiff(y, want) < 1e-6, `layerNorm ${y.dataSync()}`);
  // GELU(x) = x·Φ(x); Φ at 1, -1, 2, 0.5 from the normal distribution's tables (float64)
  const pts = tf.tensor1d([1, -1, 2, 0.5, 0]);
  const gelu = [0.8413447460685429, -0.15865525393145707, 1.9544997361036416, 0.34573123063700656, 0];
  assert.ok(maxAbsDiff(hiddenActivation('gelu')(pts), gelu) < 1e-6, 'gelu');
  const tanhGelu = [1, -1, 2, 0.5, 0].map((v) => 0.5 * v * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (v + 0.044715 * v ** 3))));
  assert.ok(maxAbsDiff(hiddenActivation('gelu_new')(pts), tanhGelu) < 1e-6, 'gelu_new');
  assert.ok(maxAbsDiff(hiddenActivation('silu')(pts), [1, -1, 2, 0.5, 0].map((v) => v / (1 + Math.exp(-v)))) < 1e-6, 'silu');
  assert.ok(maxAbsDiff(hiddenActivation('relu')(pts), [1, 0, 2, 0.5, 0]) < 1e-6, 'relu');
  // derivatives in float64 by central differences of float64 references
  const geluRef = (v: number) => (v * (1 + erf64(v / Math.SQRT2))) / 2;
  const at = [-2.5, -0.7, 0.3, 1.9];
  const grad = tf.grad((t: tf.Tensor) => tf.sum(hiddenActivation('gelu')(t)))(tf.tensor1d(at));
  assert.ok(maxAbsDiff(grad, at.map((v) => (geluRef(v + 1e-5) - geluRef(v - 1e-5)) / 2e-5)) < 1e-5, `gelu' ${grad.dataSync()}`);
  const xs = tf.tensor2d([[0.3, -1.2, 2.2, 0.1, -0.4]]);
  const ws = tf.tensor1d([1.5, -0.5, 1, 2, 0.7]);
  const bs = tf.tensor1d([0.1, 0, -0.2, 0.3, 0]);
  const coef = [0.2, -1, 0.5, 0.3, 1.1];
  const lnRef = (v: number[], wv: number[]) => {
    const m = v.reduce((a, b) => a + b) / v.length;
    const varc = v.reduce((a, b) => a + (b - m) ** 2, 0) / v.length;
    return v.reduce((acc, b, i) => acc + coef[i] * (((b - m) / Math.sqrt(varc + 1e-5)) * wv[i]), 0);
  };
  const [dx, dw, db] = tf.grads((a: tf.Tensor, b: tf.Tensor, c: tf.Tensor) => tf.sum(tf.mul(layerNorm(a, b as tf.Tensor1D, c as tf.Tensor1D, 1e-5), tf.tensor1d(coef))))([xs, ws, bs]);
  const xv = Array.from(xs.dataSync());
  const wv = Array.from(ws.dataSync());
  const fd = (f: (d: number) => number) => (f(1e-5) - f(-1e-5)) / 2e-5;
  assert.ok(maxAbsDiff(dx, xv.map((_, i) => fd((d) => lnRef(xv.map((v, j) => (j === i ? v + d : v)), wv)))) < 1e-4, `layerNorm dx ${dx.dataSync()}`);
  assert.ok(maxAbsDiff(dw, wv.map((_, i) => fd((d) => lnRef(xv, wv.map((v, j) => (j === i ? v + d : v)))))) < 1e-4, 'layerNorm dweight');
  assert.ok(maxAbsDiff(db, coef) < 1e-6, 'layerNorm dbias');
  tf.dispose([x, y, pts, grad, xs, ws, bs, dx, dw, db]);
});

testUnless(nativeElementwise() ? null : `the ${backend} backend runs the composed ops (tested above)`, 'one-pass GELU and layer norm (tensorflow, several threads, widths off the vector length) equal float64 references', () => {
  tf.tidy(() => {
    // GELU over 300k values in [-8, 8]: forward and gradient, against erf64 and the closed-form derivative
    const n = 300_001;
    const xv = Float32Array.from({ length: n }, (_, i) => -8 + (16 * i) / (n - 1));
    const dyv = Float32Array.from({ length: n }, (_, i) => Math.cos(i));
    const [y, dx] = [hiddenActivation('gelu')(tf.tensor1d(xv)), tf.grad((t: tf.Tensor) => hiddenActivation('gelu')(t))(tf.tensor1d(xv), tf.tensor1d(dyv))];
    const [yv, dxv] = [y.dataSync(), dx.dataSync()];
    let worst = 0;
    xv.forEach((v, i) => {
      const cdf = (1 + erf64(v / Math.SQRT2)) / 2;
      const dgelu = cdf + (v * Math.exp((-v * v) / 2)) / Math.sqrt(2 * Math.PI);
      worst = Math.max(worst, Math.abs(yv[i] - v * cdf) / Math.max(1, Math.abs(v)), Math.abs(dxv[i] - dyv[i] * dgelu));
    });
    assert.ok(worst < 2e-6, `GELU off by ${worst}`);
    // layer norm of 600 rows × 50 (two slices of rows; 50 = 3·16 + 2) and its gradients
    const [rows, h] = [600, 50];
    const x = Float32Array.from({ length: rows * h }, (_, i) => Math.sin(i * 0.37) * (1 + (i % 7)) + (i % h) * 0.01);
    const w = Float32Array.from({ length: h }, (_, i) => 0.5 + i / h);
    const b = Float32Array.from({ length: h }, (_, i) => Math.cos(i));
    const dy = Float32Array.from({ length: rows * h }, (_, i) => Math.sin(i * 1.3));
    const [out, gx, gw, gb] = [layerNorm(tf.tensor2d(x, [rows, h]), tf.tensor1d(w), tf.tensor1d(b), 1e-12), ...tf.grads((a: tf.Tensor, c: tf.Tensor, d: tf.Tensor) => layerNorm(a, c as tf.Tensor1D, d as tf.Tensor1D, 1e-12))([tf.tensor2d(x, [rows, h]), tf.tensor1d(w), tf.tensor1d(b)], tf.tensor2d(dy, [rows, h]))].map((t) => t.dataSync());
    const wantW = new Float64Array(h);
    const wantB = new Float64Array(h);
    let err = 0;
    for (let r = 0; r < rows; r++) {
      const xr = Array.from(x.subarray(r * h, (r + 1) * h));
      const mean = xr.reduce((s, v) => s + v, 0) / h;
      const rstd = 1 / Math.sqrt(xr.reduce((s, v) => s + (v - mean) ** 2, 0) / h + 1e-12);
      const xhat = xr.map((v) => (v - mean) * rstd);
      const g = xhat.map((_, i) => dy[r * h + i] * w[i]);
      const meanG = g.reduce((s, v) => s + v, 0) / h;
      const meanGx = g.reduce((s, v, i) => s + v * xhat[i], 0) / h;
      xhat.forEach((xh, i) => {
        err = Math.max(err, Math.abs(out[r * h + i] - (xh * w[i] + b[i])), Math.abs(gx[r * h + i] - rstd * (g[i] - meanG - xh * meanGx)) / Math.max(1, rstd));
        wantW[i] += dy[r * h + i] * xh;
        wantB[i] += dy[r * h + i];
      });
    }
    wantW.forEach((v, i) => (err = Math.max(err, Math.abs(gw[i] - v) / rows, Math.abs(gb[i] - wantB[i]) / rows)));
    assert.ok(err < 1e-5, `layer norm off by ${err}`);
  });
});

/** erf to float64 accuracy (Abramowitz–Stegun 7.1.28 is not enough; use the series/continued fraction). */
function erf64(x: number): number {
  if (Math.abs(x) > 3) return Math.sign(x) * (1 - erfcLarge(Math.abs(x)));
  let sum = 0;
  let term = x;
  for (let n = 0; n < 100; n++) {
    sum += term / (2 * n + 1);
    term *= (-x * x) / (n + 1);
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}
function erfcLarge(x: number): number {
  let f = 0;
  for (let n = 60; n >= 1; n--) f = n / 2 / (x + f);
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / (x + f);
}

test('padding changes nothing: more padding positions leave CLS and mean pooling unchanged', () => {
  const params = loadParams();
  const c = expected.cases[0];
  const pad = (rows: number[][], extra: number) => rows.map((r) => [...r, ...Array(extra).fill(0)]);
  const short = tokenBatch(c.input_ids, c.attention_mask);
  const long = tokenBatch(pad(c.input_ids, 5), pad(c.attention_mask, 5));
  for (const pooling of ['cls', 'mean', 'eos'] as const) {
    const enc = denseBiEncoder(config, { pooling }).encodePassage;
    const [a, b] = [enc(params, short, null), enc(params, long, null)];
    const diff = maxAbsDiff(a, b.dataSync());
    assert.ok(diff <= 1e-5, `${pooling}: ${diff}`);
    tf.dispose([a, b]);
  }
  disposeAll(params);
});

test('user mistakes are named with their fix', () => {
  const base = JSON.parse(readFileSync(new URL('config.json', dir), 'utf8'));
  const bad = (patch: object, re: RegExp) => assert.throws(() => bertConfigFromJson({ ...base, ...patch }, 'x/config.json'), re);
  bad({ position_embedding_type: 'relative_key' }, /x\/config.json: position_embedding_type "relative_key" is not supported; only "absolute"/);
  bad({ hidden_act: 'mish' }, /hidden_act "mish" is not supported; use one of gelu, gelu_new/);
  bad({ num_attention_heads: 5 }, /hidden_size 32 is not a multiple of num_attention_heads 5/);
  bad({ model_type: 'roberta' }, /model_type "roberta" is not supported/);
  bad({ hidden_dropout_prob: 1 }, /hidden_dropout_prob must be a number in \[0, 1\)/);
  assert.throws(() => bertConfigFromJson([], 'y.json'), /y.json: expected a JSON object/);
  const defaults = bertConfigFromJson({ vocab_size: 10, hidden_size: 8, num_attention_heads: 2 });
  assert.is(defaults.layer_norm_eps, 1e-12);
  assert.is(defaults.hidden_act, 'gelu');

  const params = loadParams();
  const ok = tokenBatch([[2, 5, 3]], [[1, 1, 1]]);
  assert.throws(() => bertForward(config, params, tokenBatch([Array(65).fill(5)], [Array(65).fill(1)]), null), /length 65 exceed max_position_embeddings 64.*lower q_max_len \/ p_max_len/);
  assert.throws(() => bertForward(config, params, tokenBatch([[2, 99, 3]], [[1, 1, 1]]), null), /token id 99 at row 0, position 1 is outside the model's vocabulary \(vocab_size 99\)/);
  const { ['encoder.layer.1.output.dense.weight']: _, ...missing } = params;
  assert.throws(() => bertForward(config, missing, ok, null), /BERT parameter encoder.layer.1.output.dense.weight is missing/);
  assert.throws(() => bertForward({ ...config, intermediate_size: 36 }, params, ok, null), /intermediate.dense.weight has shape \[37,32\] but config.json implies \[36,32\]/);
  assert.throws(() => denseBiEncoder(config, { pooler: { inDim: 16, outDim: 8 } }), /pooler input dimension 16 differs from the encoder's hidden_size 32/);
  assert.throws(() => denseBiEncoder(config, { pooler: { inDim: 32, outDim: 8 } }).encodeQuery(params, ok, null), /linear_q.weight and linear_q.bias are missing.*initPoolerParams/);
  assert.throws(() => denseBiEncoder(config, { pooling: 'max' as 'cls' }), /pooling "max" is not supported; use one of cls, mean, eos/);
  disposeAll(params);
});

test('random init: transformers\' scheme, deterministic in the key', () => {
  const small = bertConfigFromJson({ vocab_size: 40, hidden_size: 16, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 24, max_position_embeddings: 16 });
  const a = initBertParams(small, 5);
  const b = initBertParams(small, 5);
  const c = initBertParams(small, 6, { prefix: 'query_model.', pooler: false });
  assert.ok(maxRelativeError(a, b) === 0, 'same key, same parameters');
  assert.is(Object.keys(c).length, Object.keys(a).length - 2);
  assert.ok(Object.keys(c).every((k) => k.startsWith('query_model.')) && !('query_model.pooler.dense.weight' in c));
  const std = (t: tf.Tensor) => tf.moments(t).variance.sqrt().dataSync()[0];
  close(std(a['encoder.layer.0.intermediate.dense.weight']), 0.02, 0.1, 'weight std');
  assert.ok(Math.abs(std(a['embeddings.word_embeddings.weight']) - 0.02) < 0.002, 'embedding std');
  assert.is(tf.sum(tf.abs(tf.slice(a['embeddings.word_embeddings.weight'], [0, 0], [1, -1]))).dataSync()[0], 0, '[PAD] row zero');
  assert.equal(Array.from(a['encoder.layer.0.output.LayerNorm.weight'].dataSync()), Array(16).fill(1));
  assert.equal(Array.from(a['encoder.layer.0.attention.self.query.bias'].dataSync()), Array(16).fill(0));
  const renamed = Object.fromEntries(Object.keys(c).map((k) => [k, a[k.slice('query_model.'.length)]]));
  assert.ok(maxRelativeError(c, renamed) > 0.5, 'another key, other parameters');
  disposeAll(a, b, c);
});

// a BERT small enough for the cpu backend, with dropout on at both sites
const tiny: BertConfig = bertConfigFromJson({
  vocab_size: 50, hidden_size: 16, num_hidden_layers: 2, num_attention_heads: 2, intermediate_size: 24, max_position_embeddings: 16,
  hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1,
});
const B = 4;
const n = 2;

for (const untied of [false, true]) {
  test(`grad cache equals the full batch with BERT and dropout (${untied ? 'untied' : 'tied'}, pooler, normalize)`, async () => {
    const opts: DenseOptions = { untied, pooler: { inDim: 16, outDim: 8 }, normalize: true, pooling: untied ? 'mean' : 'cls' };
    const model = denseBiEncoder(tiny, opts);
    const params = initDenseParams(tiny, opts, 21);
    const batch = randomBatch(5, B, n, tiny.vocab_size, 6, 9);
    const full = await fullBatchStep(model, params, batch, { key: 3, temperature: 0.05 });
    const cached = await gradCacheStep(model, params, batch, { key: 3, temperature: 0.05, qChunkSize: 3, pChunkSize: 3 });
    close(cached.loss, full.loss, 1e-6, 'loss');
    const err = maxRelativeError(cached.grads, full.grads);
    assert.ok(err <= 1e-5, `relative error ${err}`);
    const noDropout = await fullBatchStep(model, params, batch, { key: null, temperature: 0.05 });
    assert.ok(maxRelativeError(noDropout.grads, full.grads) > 1e-3, 'dropout is really on');
    const size = (k: string) => tf.max(tf.abs(full.grads[k])).dataSync()[0];
    const towers = untied ? ['query_model.', 'passage_model.'] : [''];
    for (const t of towers) for (const k of ['embeddings.word_embeddings.weight', 'encoder.layer.0.attention.self.key.weight']) assert.ok(size(t + k) > 0, `${t}${k} has a gradient`);
    assert.ok(size(untied ? 'linear_p.weight' : 'linear_q.weight') > 0);
    assert.is(untied, 'linear_p.weight' in params);
    disposeAll(params, full.grads, cached.grads, noDropout.grads);
  });
}

test('a BERT step leaks no tensors (plain and grad cache, dropout on)', async () => {
  const opts: DenseOptions = { pooler: { inDim: 16, outDim: 16 }, normalize: true };
  const model = denseBiEncoder(tiny, opts);
  const params = initDenseParams(tiny, opts, 22);
  const batch = randomBatch(6, 2, 2, tiny.vocab_size, 5, 7);
  const step = async () => {
    disposeAll((await fullBatchStep(model, params, batch, { key: 1 })).grads);
    disposeAll((await gradCacheStep(model, params, batch, { key: 1, qChunkSize: 1, pChunkSize: 3 })).grads);
    tf.dispose(model.encodeQuery(params, batch.queries, null));
  };
  await step();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 2; i++) await step();
  assert.is(tf.memory().numTensors, before);
  disposeAll(params);
});

test.run();
