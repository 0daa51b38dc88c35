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
import { stepGradients, trainStep, type TrainConfig, type TrainState } from '../lib/train.ts';
import { SPECIAL, close, concatBatches, disposeAll, maxRelativeError, randomBatch } from './helpers.ts';

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
  // what makes W processes take the step of one (dropout included): rank order is one process's row order at batch W·B
  assert.equal(ranks[0].map((_, k) => ranks.flatMap((r) => r[k])), epochBatches(23, { batchSize: 9, seed: 1, epoch: 0 }));
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

/** ∑ over parameters of ‖g‖², square-rooted: the norm trainStep reports. */
const globalNorm = (g: Record<string, tf.Tensor>) => Math.sqrt(Object.values(g).reduce((s, t) => s + (tf.sum(tf.square(t)).dataSync()[0]), 0));
const meanOf = (gs: Record<string, tf.Tensor>[]) => Object.fromEntries(Object.keys(gs[0]).map((k) => [k, tf.div(tf.addN(gs.map((g) => g[k])), gs.length)]));

test('gradient accumulation: the step\'s gradient is the mean of the micro-batches\' gradients, and the update applies it', async () => {
  const parts = [randomBatch(60, 3, 2, config.vocabSize), randomBatch(61, 3, 2, config.vocabSize), randomBatch(62, 3, 2, config.vocabSize)];
  // AdamW's first update is lr·g/(|g| + eps): with eps = 1 it keeps the gradient's scale, which eps = 1e-8 erases
  const noDrop: TrainConfig = { ...cfg, dropout: false, maxGradNorm: 0, adamw: { ...cfg.adamw, lr: 1, eps: 1, weightDecay: 0 } };
  const ref = fresh(5);
  const each = await Promise.all(parts.map((b) => fullBatchStep(model, ref.params, b, { key: null })));
  const mean = meanOf(each.map((r) => r.grads));
  const got = await stepGradients(model, ref, parts, noDrop);
  assert.ok(maxRelativeError(got.grads, mean) <= 1e-6, `gradient: relative error ${maxRelativeError(got.grads, mean)}`);
  close(got.loss, each.reduce((s, r) => s + r.loss, 0) / parts.length, 1e-6, 'loss: the mean over micro-batches');
  const stepped = await trainStep(model, fresh(5), parts, noDrop);
  close(stepped.metrics.gradNorm, globalNorm(mean), 1e-5, 'grad_norm of the mean gradient');
  const manual = adamwStep(ref.params, mean, ref.optimizer, noDrop.adamw);
  assert.ok(maxRelativeError(stepped.state.params, manual.params) <= 1e-6);
  disposeAll(got.grads, mean, ...each.map((r) => r.grads), stepped.state.params, manual.params, ref.params);
});

test('2 ranks: the gradient all ranks apply is the mean of the ranks\' gradients (with and without negatives_x_device)', async () => {
  const batches = [randomBatch(70, 3, 2, config.vocabSize), randomBatch(71, 3, 2, config.vocabSize)];
  const noDrop = { ...cfg, dropout: false };
  const state = fresh(6);
  // negatives_x_device: 2 ranks × B are one rank × 2B, gradient for gradient
  const single = await stepGradients(model, state, [concatBatches(batches)], noDrop);
  // without it (plain data parallelism): the mean of the ranks' gradients, which one rank computes by accumulating both batches
  const accumulated = await stepGradients(model, state, batches, noDrop);
  for (const [negativesXDevice, want] of [[true, single], [false, accumulated]] as const) {
    const groups = localProcessGroups(2);
    const ranks = await Promise.all(groups.map((group, r) => stepGradients(model, state, [batches[r]], { ...noDrop, group, negativesXDevice })));
    for (const r of ranks) {
      const err = maxRelativeError(r.grads, want.grads);
      assert.ok(err <= 1e-5, `negatives_x_device ${negativesXDevice}: relative error ${err}`);
      disposeAll(r.grads);
    }
    if (negativesXDevice) for (const r of ranks) close(r.loss, single.loss, 1e-5, 'the loss over all ranks\' rows');
  }
  disposeAll(single.grads, accumulated.grads, state.params);
});

/** Parameters whose embedding row `token` is NaN: a batch holding that token gives a NaN loss and NaN gradients. */
function poisoned(seed: number, token: number): TrainState {
  const s = fresh(seed);
  const emb = s.params['embeddings.weight'];
  const rows = tf.tidy(() => tf.where(tf.equal(tf.range(0, config.vocabSize, 1, 'int32').reshape([-1, 1]), token), tf.fill(emb.shape, NaN), emb));
  emb.dispose();
  s.params['embeddings.weight'] = rows;
  return s;
}

/** A batch over tokens [3, vocab − 1) (never the poisoned last one), or with the poisoned token in its first query. */
function batchWith(seed: number, poison: boolean) {
  const b = randomBatch(seed, 3, 2, config.vocabSize - 1);
  if (poison) b.queries.inputIds[1] = config.vocabSize - 1;
  return b;
}

test('a non-finite loss or gradient norm stops the step, named, before any update (plain, grad cache, accumulation)', async () => {
  const last = config.vocabSize - 1;
  for (const gradCache of [null, { qChunkSize: 2, pChunkSize: 2 }]) {
    for (const micro of [[batchWith(80, true)], [batchWith(80, false), batchWith(81, true)]]) {
      const state = poisoned(7, last);
      state.optimizer.step = 4;
      const before = tf.memory().numTensors;
      const err = await trainStep(model, state, micro, { ...cfg, gradCache }).then(() => null, (e: Error) => e);
      assert.ok(err instanceof Error && /^step 5: the loss is NaN and the gradient norm NaN: training diverged/.test(err.message), String(err));
      assert.is(tf.memory().numTensors, before, 'no tensor leaked, the state untouched');
      assert.ok(Object.values(state.params).every((t) => !t.isDisposed), 'the state is not consumed');
      disposeAll(state.params, state.optimizer.m, state.optimizer.v);
    }
  }
  // the same parameters train on while the poisoned token stays out of the batch
  const ok = await trainStep(model, poisoned(7, last), [batchWith(82, false)], cfg);
  assert.ok(Number.isFinite(ok.metrics.loss) && Number.isFinite(ok.metrics.gradNorm));
  disposeAll(ok.state.params, ok.state.optimizer.m, ok.state.optimizer.v);
});

test('a non-finite loss on one rank stops every rank at the same step (none is left waiting)', async () => {
  for (const negativesXDevice of [false, true]) {
    const groups = localProcessGroups(2, 5_000);
    const outcomes = await Promise.allSettled(groups.map((group, r) => trainStep(model, poisoned(8, config.vocabSize - 1), [batchWith(90 + r, r === 1)], { ...cfg, group, negativesXDevice })));
    outcomes.forEach((o, r) => {
      assert.is(o.status, 'rejected', `rank ${r} (negatives_x_device ${negativesXDevice}) went on`);
      assert.match(String((o as PromiseRejectedResult).reason), new RegExp(`step 1: .*gradient norm NaN \\(on rank ${r}; every rank stops at this step\\)`));
    });
  }
});

test.run();
