import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { layerNorm } from '../lib/model/bert.ts';
import { linear } from '../lib/ops.ts';
import { gradients } from '../lib/tape.ts';
import './helpers.ts';

/** A function with reuse (x feeds two branches), broadcasting, custom-gradient ops and a softmax. */
function f(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor, g: tf.Tensor): tf.Tensor {
  const h = tf.tanh(linear(x as tf.Tensor2D, w as tf.Tensor2D, b as tf.Tensor1D));
  const n = layerNorm(tf.add(h, tf.mul(x, 0.5)), g as tf.Tensor1D, b as tf.Tensor1D, 1e-5);
  return tf.sum(tf.mul(tf.softmax(n), tf.square(x)));
}

const inputs = () => [tf.randomNormal([6, 5], 0, 1, 'float32', 1), tf.randomNormal([5, 5], 0, 1, 'float32', 2), tf.randomNormal([5], 0, 1, 'float32', 3), tf.randomNormal([5], 1, 0.1, 'float32', 4)];

test('gradients equals tfjs engine.gradients: values, gradients, a given dy, an input f does not reach', () => {
  const xs = inputs();
  const unused = tf.ones([3]);
  const ours = gradients(() => f(xs[0], xs[1], xs[2], xs[3]), [...xs, unused]);
  const ref = tf.engine().gradients(() => f(xs[0], xs[1], xs[2], xs[3]), xs);
  assert.ok(Math.abs(ours.value.dataSync()[0] - ref.value.dataSync()[0]) < 1e-6);
  xs.forEach((_, i) => {
    const diff = tf.max(tf.abs(tf.sub(ours.grads[i]!, ref.grads[i]))).dataSync()[0];
    assert.ok(diff < 1e-6, `input ${i}: max difference ${diff}`);
  });
  assert.is(ours.grads[4], null);
  // a vector-Jacobian product with a caller's dy, which stays usable afterwards
  const dy = tf.randomNormal([6, 5], 0, 1, 'float32', 5);
  const vjp = gradients(() => tf.mul(tf.sin(xs[0]), 3), [xs[0]], dy);
  const expected = tf.mul(tf.mul(tf.cos(xs[0]), 3), dy);
  assert.ok(tf.max(tf.abs(tf.sub(vjp.grads[0]!, expected))).dataSync()[0] < 1e-6);
  assert.ok(!dy.isDisposed);
  tf.dispose([...xs, unused, ours.value, ...ours.grads.filter((t): t is tf.Tensor => t !== null), ref.value, ...ref.grads, dy, vjp.value, vjp.grads[0]!, expected]);
});

test('gradients leaks no tensor, and holds less than engine.gradients as the backward pass goes on', async () => {
  const x = tf.randomNormal([256, 256], 0, 1, 'float32', 6);
  // 30 sigmoids, each saving its output: the engine keeps those and every intermediate gradient to the
  // end of the backward pass; gradients frees them node by node, so what it holds shrinks instead
  const chain = () => {
    let y = x;
    for (let i = 0; i < 30; i++) y = tf.sigmoid(y);
    return tf.sum(y);
  };
  // bytes held over the last 40 kernels (the second half of the backward pass); read at once, as
  // tf.profile hands back the same object on every call
  const late = async (grad: typeof gradients) => {
    const p = await tf.profile(() => {
      const r = grad(chain, [x]);
      tf.dispose([r.value, r.grads[0]!]);
    });
    return Math.max(...p.kernels.slice(-40).map((k) => k.totalBytesSnapshot));
  };
  const before = tf.memory().numTensors;
  const ours = await late(gradients);
  assert.is(tf.memory().numTensors, before, 'every tensor gradients made is disposed or returned');
  const ref = await late((f, xs) => tf.engine().gradients(f, xs));
  assert.ok(ours < 0.6 * ref, `late backward holds ${ours} bytes against the engine's ${ref}`);
  x.dispose();
});

test.run();
