import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { dropout, embeddingLookup, linear } from '../lib/ops.ts';
import { dropoutScales, dropoutScalesJs, foldIn } from '../lib/random.ts';
import { compileKernel } from '../scripts/build-wasm.ts';
import { readFileSync } from 'node:fs';
import { nativeElementwise } from '../lib/native.ts';
import { backend, close, testUnless } from './helpers.ts';

/** Central finite difference of a scalar function of one tensor entry (float64 arithmetic in JS). */
function finiteDiff(f: (x: Float64Array) => number, x: Float64Array, i: number, h = 1e-3): number {
  const plus = x.slice();
  const minus = x.slice();
  plus[i] += h;
  minus[i] -= h;
  return (f(plus) - f(minus)) / (2 * h);
}

test('linear forward equals x·Wᵀ + b computed by hand, for 2-D and 3-D inputs', async () => {
  const x = tf.tensor3d([[[1, 2, 3]], [[0, -1, 2]]]); // [2, 1, 3]
  const w = tf.tensor2d([[1, 0, 1], [2, -1, 0]]); // [out 2, in 3]
  const b = tf.tensor1d([0.5, -1]);
  assert.equal(await linear(x, w, b).array(), [[[4.5, -1]], [[2.5, 0]]]);
  assert.equal(await linear(tf.tensor2d([[1, 2, 3]]), w).array(), [[4, 0]]);
  assert.throws(() => linear(tf.ones([2, 4]), w), /4 features but the weight \[2,3\] expects 3/);
});

test('linear gradients equal finite differences of a float64 reference', () => {
  const [R, I, O] = [3, 4, 2];
  const xs = Float64Array.from({ length: R * I }, (_, i) => Math.sin(i + 1));
  const ws = Float64Array.from({ length: O * I }, (_, i) => Math.cos(i * 0.7));
  const bs = Float64Array.from({ length: O }, (_, i) => i - 0.5);
  const weights = Float64Array.from({ length: R * O }, (_, i) => (i % 3) - 1); // loss = Σ c ⊙ tanh(y)
  const ref = (x: Float64Array, w: Float64Array, b: Float64Array) => {
    let s = 0;
    for (let r = 0; r < R; r++)
      for (let o = 0; o < O; o++) {
        let y = b[o];
        for (let i = 0; i < I; i++) y += x[r * I + i] * w[o * I + i];
        s += weights[r * O + o] * Math.tanh(y);
      }
    return s;
  };
  const c = tf.tensor2d(Array.from(weights), [R, O]);
  const g = tf.grads((x: tf.Tensor, w: tf.Tensor, b: tf.Tensor) =>
    tf.sum(tf.mul(c, tf.tanh(linear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D)))),
  )([tf.tensor2d(Array.from(xs), [R, I]), tf.tensor2d(Array.from(ws), [O, I]), tf.tensor1d(Array.from(bs))]);
  const [gx, gw, gb] = g.map((t) => t.dataSync());
  xs.forEach((_, i) => close(gx[i], finiteDiff((v) => ref(v, ws, bs), xs, i), 1e-4, `dx[${i}]`));
  ws.forEach((_, i) => close(gw[i], finiteDiff((v) => ref(xs, v, bs), ws, i), 1e-4, `dW[${i}]`));
  bs.forEach((_, i) => close(gb[i], finiteDiff((v) => ref(xs, ws, v), bs, i), 1e-4, `db[${i}]`));
});

test('embedding lookup: rows by id, and the gradient sums the rows of repeated ids', async () => {
  const table = tf.tensor2d([[1, 2], [3, 4], [5, 6]]);
  const ids = tf.tensor2d([[2, 0], [2, 2]], [2, 2], 'int32');
  assert.equal(await embeddingLookup(table, ids).array(), [[[5, 6], [1, 2]], [[5, 6], [5, 6]]]);
  // d/dtable Σ (lookup ⊙ weights): id 2 appears at positions 0, 2, 3 -> the sum of their weight rows
  const wts = tf.tensor3d([[[1, 10], [2, 20]], [[3, 30], [4, 40]]]);
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(embeddingLookup(t as tf.Tensor2D, ids), wts)))(table);
  assert.equal(await g.array(), [[2, 20], [0, 0], [8, 80]]);
});

test('dropout: identity without rng, zero or 1/(1−rate), rate respected, deterministic', async () => {
  const x = tf.ones([64, 100]);
  assert.is(dropout(x, 0.1, null), x);
  const rng = { key: 7, rowOffset: 0 };
  const y = (await dropout(x, 0.25, rng).data()) as Float32Array;
  const kept = y.filter((v) => v !== 0);
  assert.ok(kept.every((v) => Math.abs(v - 1 / 0.75) < 1e-6));
  const keepRate = kept.length / y.length;
  assert.ok(Math.abs(keepRate - 0.75) < 0.02, `keep rate ${keepRate}`);
  assert.equal(Array.from((await dropout(x, 0.25, rng).data()) as Float32Array), Array.from(y));
  const other = (await dropout(x, 0.25, { key: foldIn(7, 1), rowOffset: 0 }).data()) as Float32Array;
  assert.ok(other.some((v, i) => v !== y[i]), 'another key draws another mask');
});

test('dropout masks depend on the global row, not on how the batch is chunked', () => {
  const full = dropoutScales({ key: 99, rowOffset: 0 }, 10, 16, 0.1);
  for (const [start, end] of [[0, 3], [3, 7], [7, 10]]) {
    const part = dropoutScales({ key: 99, rowOffset: start }, end - start, 16, 0.1);
    assert.equal(Array.from(part), Array.from(full.subarray(start * 16, end * 16)));
  }
});

test('the wasm dropout kernel draws the JavaScript definition\'s masks, across tails, offsets and blocks', () => {
  // row sizes off the 4-lane width; 40 rows of 2^17 fill more than one 16 MB block
  for (const [rows, rowSize, rowOffset, rate] of [[3, 1, 0, 0.1], [3, 5, 7, 0.5], [5, 1027, 123, 0.1], [40, 1 << 17, 3, 0.25]]) {
    const fast = dropoutScales({ key: 2024, rowOffset }, rows, rowSize, rate);
    const ref = dropoutScalesJs({ key: 2024, rowOffset }, rows, rowSize, rate);
    let diff = 0;
    for (let i = 0; i < ref.length; i++) if (fast[i] !== ref[i]) diff++;
    assert.is(diff, 0, `${rows}×${rowSize}: ${diff} elements differ`);
  }
});

testUnless(nativeElementwise() ? null : `the ${backend} backend multiplies the masks dropoutScales makes (tested above)`, 'dropout drawn in the binding applies the JavaScript definition\'s mask, element for element, forward and backward', () => {
  tf.tidy(() => {
    for (const [shape, rowOffset, rate] of [[[3, 5], 7, 0.5], [[5, 1027], 123, 0.1], [[64, 4, 32, 33], 96, 0.1], [[700, 300], 0, 0.25]] as [number[], number, number][]) {
      const rng = { key: 2024, rowOffset };
      const n = shape.reduce((a, b) => a * b);
      const x = tf.tensor(Float32Array.from({ length: n }, (_, i) => Math.sin(i) * 3), shape);
      const dy = tf.tensor(Float32Array.from({ length: n }, (_, i) => Math.cos(i)), shape);
      const mask = tf.tensor(dropoutScalesJs(rng, shape[0], n / shape[0], rate), shape);
      const [y, dx] = [dropout(x, rate, rng), tf.grad((t: tf.Tensor) => dropout(t, rate, rng))(x, dy)];
      assert.equal(Array.from(y.dataSync()), Array.from(tf.mul(x, mask).dataSync()), `forward ${shape}`);
      assert.equal(Array.from(dx.dataSync()), Array.from(tf.mul(dy, mask).dataSync()), `backward ${shape}`);
    }
  });
});

test('lib/dropout-kernel.ts is the compiled lib/dropout-kernel.wat', async () => {
  assert.is(readFileSync(new URL('../lib/dropout-kernel.ts', import.meta.url), 'utf8'), await compileKernel(), 'run npx tsx scripts/build-wasm.ts');
});

test.run();
