import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { TokenBatch } from '../lib/data/collator.ts';
import { bertConfigFromJson, bertForward } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams, initPoolerParams, l2Normalize, poolHidden } from '../lib/model/dense.ts';
import { disposeAll } from './helpers.ts';

const config = bertConfigFromJson({ vocab_size: 30, hidden_size: 8, num_hidden_layers: 1, num_attention_heads: 2, intermediate_size: 12, max_position_embeddings: 8 });
const batch: TokenBatch = {
  inputIds: Int32Array.from([2, 7, 9, 3, 0, 2, 5, 3, 0, 0, 0, 2, 8, 8, 3]),
  attentionMask: Int32Array.from([1, 1, 1, 1, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1, 1]), // the last row left-padded
  rows: 3,
  length: 5,
};

const close = (a: tf.Tensor, b: number[] | tf.Tensor, tol = 1e-6) => {
  const x = a.dataSync();
  const y = Array.isArray(b) ? b : Array.from(b.dataSync());
  assert.is(x.length, y.length);
  x.forEach((v, i) => assert.ok(Math.abs(v - y[i]) <= tol, `entry ${i}: ${v} vs ${y[i]}`));
};

test('cls, mean and eos pooling pick the first token, the mean over real tokens and the last real token', () => {
  const values = Array.from({ length: 3 * 5 * 2 }, (_, i) => ((i * i) % 17) - 4);
  const hidden = tf.tensor3d(values, [3, 5, 2]);
  const at = (r: number, j: number) => [values[(r * 5 + j) * 2], values[(r * 5 + j) * 2 + 1]];
  const mean = (r: number, js: number[]) => [0, 1].map((d) => js.reduce((s, j) => s + at(r, j)[d], 0) / js.length);
  close(poolHidden(hidden, batch, 'cls'), [...at(0, 0), ...at(1, 0), ...at(2, 0)]);
  close(poolHidden(hidden, batch, 'mean'), [...mean(0, [0, 1, 2, 3]), ...mean(1, [0, 1, 2]), ...mean(2, [1, 2, 3, 4])], 1e-4);
  close(poolHidden(hidden, batch, 'eos'), [...at(0, 3), ...at(1, 2), ...at(2, 4)]);
  // gradients reach exactly the pooled positions
  const g = tf.grad((h: tf.Tensor) => tf.sum(poolHidden(h as tf.Tensor3D, batch, 'eos')))(hidden);
  close(tf.sum(g, 2), [0, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 2]);
  tf.dispose([hidden, g]);
});

test('l2Normalize gives unit rows and leaves a zero row zero (torch.nn.functional.normalize)', () => {
  const y = l2Normalize(tf.tensor2d([[3, 4], [0, 0]]));
  close(y, [0.6, 0.8, 0, 0]);
  y.dispose();
});

test('tied: both sides share the encoder and linear_q; untied: each side reads its own tower and pooler', () => {
  const pooler = { inDim: 8, outDim: 4 };
  const tied = initDenseParams(config, { pooler }, 1);
  assert.equal(Object.keys(tied).filter((k) => k.startsWith('linear')).sort(), ['linear_q.bias', 'linear_q.weight']);
  assert.ok('embeddings.word_embeddings.weight' in tied);
  const t = denseBiEncoder(config, { pooler, normalize: true });
  const [q, p] = [t.encodeQuery(tied, batch, null), t.encodePassage(tied, batch, null)];
  close(q, p, 0);
  close(tf.norm(q, 2, 1), [1, 1, 1], 1e-6);
  // the pooler acts on the pooled CLS vector, then the normalisation
  const manual = tf.tidy(() => l2Normalize(tf.add(tf.matMul(poolHidden(bertForward(config, tied, batch, null), batch, 'cls'), tied['linear_q.weight'], false, true), tied['linear_q.bias']) as tf.Tensor2D));
  close(q, manual, 1e-6);

  const untied = initDenseParams(config, { untied: true, pooler }, 1);
  assert.equal(Object.keys(untied).filter((k) => k.startsWith('linear')).sort(), ['linear_p.bias', 'linear_p.weight', 'linear_q.bias', 'linear_q.weight']);
  assert.ok(Object.keys(untied).every((k) => /^(query_model\.|passage_model\.|linear_[qp]\.)/.test(k)));
  // towers start equal (Tevatron deep-copies the query tower); the poolers are drawn separately
  close(untied['query_model.encoder.layer.0.attention.self.query.weight'], untied['passage_model.encoder.layer.0.attention.self.query.weight'], 0);
  const u = denseBiEncoder(config, { untied: true, pooler });
  const before = u.encodeQuery(untied, batch, null);
  const moved = { ...untied, 'passage_model.embeddings.LayerNorm.bias': tf.onesLike(untied['passage_model.embeddings.LayerNorm.bias']) };
  close(u.encodeQuery(moved, batch, null), before, 0);
  assert.ok(tf.max(tf.abs(tf.sub(u.encodePassage(moved, batch, null), u.encodePassage(untied, batch, null)))).dataSync()[0] > 1e-3, 'the passage side reads passage_model.*');
  const swapped = { ...untied, 'linear_p.weight': untied['linear_q.weight'], 'linear_p.bias': untied['linear_q.bias'] };
  close(u.encodePassage(swapped, batch, null), before, 1e-6);
  tf.dispose([q, p, manual, before]);
  disposeAll(tied, untied);
});

test('initPoolerParams draws as nn.Linear: uniform within ±1/√inDim, deterministic in the key', () => {
  const a = initPoolerParams({ inDim: 64, outDim: 32 }, 3, true);
  const b = initPoolerParams({ inDim: 64, outDim: 32 }, 3, true);
  for (const k of Object.keys(a)) {
    close(a[k], b[k], 0);
    const m = tf.max(tf.abs(a[k])).dataSync()[0];
    assert.ok(m <= 1 / 8 && m > 0.1, `${k}: max |w| ${m}`);
  }
  assert.ok(tf.max(tf.abs(tf.sub(a['linear_q.weight'], a['linear_p.weight']))).dataSync()[0] > 0.01);
  disposeAll(a, b);
});

test.run();
