import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { contrastiveLoss, contrastiveScores } from '../lib/loss.ts';
import { close } from './helpers.ts';

// Two queries, n = 2 passages each: rows 0, 2 are the positives.
const Q = [[1, 0], [0, 2]];
const P = [[1, 1], [0, 1], [2, 0], [-1, 1]];

/** The loss written out in plain numbers: -1/B Σ_i log softmax(q_i·P/T)[i·n] · scale. */
function handLoss(T = 1, scale = 1): number {
  let total = 0;
  Q.forEach((q, i) => {
    const s = P.map((p) => (q[0] * p[0] + q[1] * p[1]) / T);
    const lse = Math.log(s.reduce((a, x) => a + Math.exp(x), 0));
    total += lse - s[i * 2];
  });
  return (scale * total) / Q.length;
}

test('scores are q·pᵀ', async () => {
  const s = contrastiveScores(tf.tensor2d(Q), tf.tensor2d(P));
  assert.equal(await s.array(), [[1, 0, 2, -1], [2, 2, 0, 2]]);
  s.dispose();
});

test('loss equals the hand-computed cross-entropy (temperature 1 and 0.5, scale 3)', async () => {
  // by hand, query 0: scores [1, 0, 2, -1], target 0 -> log(e + 1 + e² + e⁻¹) − 1
  const q0 = Math.log(Math.E + 1 + Math.E ** 2 + 1 / Math.E) - 1;
  const q1 = Math.log(3 * Math.E ** 2 + 1) - 0; // scores [2, 2, 0, 2], target 2 (score 0)
  close(handLoss(), (q0 + q1) / 2, 1e-12, 'hand formula');
  for (const [T, scale] of [[1, 1], [0.5, 1], [1, 3], [0.05, 2]]) {
    const l = contrastiveLoss(tf.tensor2d(Q), tf.tensor2d(P), { temperature: T, scale });
    close((await l.data())[0], handLoss(T, scale), 1e-5, `T=${T} scale=${scale}`);
    l.dispose();
  }
});

test('gradient with respect to q equals (softmax − onehot)·P / B', () => {
  const g = tf.grad((q: tf.Tensor) => contrastiveLoss(q as tf.Tensor2D, tf.tensor2d(P)))(tf.tensor2d(Q));
  const got = g.arraySync() as number[][];
  Q.forEach((q, i) => {
    const s = P.map((p) => q[0] * p[0] + q[1] * p[1]);
    const z = s.reduce((a, x) => a + Math.exp(x), 0);
    for (let d = 0; d < 2; d++) {
      const expected = P.reduce((a, p, j) => a + (Math.exp(s[j]) / z - (j === i * 2 ? 1 : 0)) * p[d], 0) / Q.length;
      close(got[i][d], expected, 1e-5, `dL/dq[${i}][${d}]`);
    }
  });
});

test('passage rows that are not a whole number of groups are a clear error', () => {
  assert.throws(() => contrastiveLoss(tf.ones([2, 4]) as tf.Tensor2D, tf.ones([5, 4]) as tf.Tensor2D), /5 passage rows for 2 queries/);
  assert.throws(() => contrastiveLoss(tf.ones([2, 4]) as tf.Tensor2D, tf.ones([4, 4]) as tf.Tensor2D, { temperature: 0 }), /temperature must be > 0/);
});

test.run();
