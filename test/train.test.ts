import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { collateGroups } from '../lib/data/collator.ts';
import { epochBatches, stepsPerEpoch } from '../lib/data/sampler.ts';
import { sampleGroup } from '../lib/data/sample.ts';
import { syntheticTask } from '../lib/data/synthetic.ts';
import { localProcessGroups } from '../lib/dist/group.ts';
import { bagBiEncoder, initBagParams } from '../lib/model/bag.ts';
import { adamwStep, initAdamW } from '../lib/optim.ts';
import { fullBatchStep } from '../lib/step.ts';
import { trainStep, type TrainConfig, type TrainState } from '../lib/train.ts';
import { SPECIAL, concatBatches, disposeAll, maxRelativeError, randomBatch } from './helpers.ts';

const config = { vocabSize: 40, hiddenSize: 12, outputSize: 8, dropout: 0.1 };
const model = bagBiEncoder(config);
const cfg: TrainConfig = {
  adamw: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
  schedule: 'linear',
  warmupSteps: 0,
  totalSteps: 100,
  maxGradNorm: 1,
  gradCache: null,
  dropout: true,
};
const fresh = (seed: number): TrainState => {
  const params = initBagParams(config, seed);
  return { params, optimizer: initAdamW(params), key: 99 };
};

test('epoch batches: a permutation per epoch, disjoint across ranks, incomplete batches dropped', () => {
  const a = epochBatches(23, { batchSize: 4, seed: 1, epoch: 0 });
  assert.is(a.length, 5);
  assert.is(new Set(a.flat()).size, 20);
  assert.not.equal(a, epochBatches(23, { batchSize: 4, seed: 1, epoch: 1 }), 'another epoch, another order');
  const ranks = [0, 1, 2].map((rank) => epochBatches(23, { batchSize: 3, seed: 1, epoch: 0, rank, worldSize: 3 }));
  const seen = ranks.flat(2);
  assert.is(new Set(seen).size, seen.length, 'no example on two ranks');
  assert.ok(ranks.every((r) => r.length === 2) && stepsPerEpoch(23, 3, 3) === 2);
  assert.equal(epochBatches(5, { batchSize: 2, seed: 0, epoch: 0, noShuffle: true }), [[0, 1], [2, 3]]);
});

test('training lowers the loss on a generated task, and leaks no tensors', async () => {
  const task = syntheticTask({ passages: 200, testQueries: 0, seed: 3, topicWords: 150, fillerWords: 10 });
  const c = { ...config, vocabSize: task.vocabSize };
  const m = bagBiEncoder(c);
  const params = initBagParams(c, 1);
  let state: TrainState = { params, optimizer: initAdamW(params), key: 5 };
  const groupsOf = (idx: number[], epoch: number) =>
    collateGroups(idx.map((i) => sampleGroup(task.train[i], i, { nPassages: 2, seed: 0, epoch })), { qMaxLen: 8, pMaxLen: 16, special: SPECIAL });
  const probe = groupsOf(Array.from({ length: 32 }, (_, i) => i), 0);
  const probeLoss = async () => {
    const r = await fullBatchStep(m, state.params, probe, { key: null });
    disposeAll(r.grads);
    return r.loss;
  };
  const before = await probeLoss();
  let tensors = -1;
  for (let epoch = 0; epoch < 4; epoch++) {
    for (const idx of epochBatches(task.train.length, { batchSize: 16, seed: 0, epoch })) {
      state = (await trainStep(m, state, [groupsOf(idx, epoch)], { ...cfg, adamw: { ...cfg.adamw, lr: 0.05 }, gradCache: { qChunkSize: 8, pChunkSize: 8 } })).state;
      if (tensors < 0) tensors = tf.memory().numTensors;
    }
  }
  const after = await probeLoss();
  assert.ok(after < 0.7 * before, `loss ${before.toFixed(3)} -> ${after.toFixed(3)}`);
  assert.is(tf.memory().numTensors, tensors, 'tensor count stable across steps');
  disposeAll(state.params, state.optimizer.m, state.optimizer.v);
});

test('2 ranks × B with negatives_x_device take the same optimizer step as 1 rank × 2B (plain and grad cache)', async () => {
  const batches = [randomBatch(50, 3, 2, config.vocabSize), randomBatch(51, 3, 2, config.vocabSize)];
  for (const gradCache of [null, { qChunkSize: 2, pChunkSize: 4 }]) {
    const single = await trainStep(model, fresh(4), [concatBatches(batches)], { ...cfg, gradCache });
    const groups = localProcessGroups(2);
    const ranks = await Promise.all(groups.map((group, r) => trainStep(model, fresh(4), [batches[r]], { ...cfg, gradCache, group, negativesXDevice: true })));
    for (const r of ranks) {
      assert.ok(maxRelativeError(r.state.params, single.state.params) <= 1e-5);
      assert.ok(Math.abs(r.metrics.loss - single.metrics.loss) < 1e-5);
      assert.ok(Math.abs(r.metrics.gradNorm - single.metrics.gradNorm) < 1e-5 * single.metrics.gradNorm);
      disposeAll(r.state.params, r.state.optimizer.m, r.state.optimizer.v);
    }
    disposeAll(single.state.params, single.state.optimizer.m, single.state.optimizer.v);
  }
});

test('gradient accumulation over k micro-batches equals one batch of the mean gradient', async () => {
  const parts = [randomBatch(60, 3, 2, config.vocabSize), randomBatch(61, 3, 2, config.vocabSize)];
  const noDrop = { ...cfg, dropout: false, maxGradNorm: 0 };
  const accumulated = await trainStep(model, fresh(5), parts, noDrop);
  const ref = fresh(5);
  const g = await Promise.all(parts.map((b) => fullBatchStep(model, ref.params, b, { key: null })));
  const mean = Object.fromEntries(Object.keys(ref.params).map((k) => [k, tf.div(tf.add(g[0].grads[k], g[1].grads[k]), 2)]));
  const manual = adamwStep(ref.params, mean, ref.optimizer, noDrop.adamw);
  assert.ok(maxRelativeError(accumulated.state.params, manual.params) <= 1e-6);
});

test.run();
