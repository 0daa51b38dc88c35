import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { localProcessGroups } from '../lib/dist/group.ts';
import { allReduceParams } from '../lib/dist/tensors.ts';
import { gradCacheStep } from '../lib/gradcache.ts';
import { bagBiEncoder, initBagParams } from '../lib/model/bag.ts';
import type { BiEncoder, ParamMap } from '../lib/model/types.ts';
import { rowSlice } from '../lib/data/collator.ts';
import { fullBatchStep, type StepOptions, type TrainBatch } from '../lib/step.ts';
import { close, concatBatches, disposeAll, maxRelativeError, randomBatch } from './helpers.ts';

const config = { vocabSize: 50, hiddenSize: 16, outputSize: 8, dropout: 0.1 };
const model = bagBiEncoder(config);
const B = 6;
const n = 3;

test('grad cache equals the full batch for chunk sizes 1, 3 and the whole batch, with dropout on', async () => {
  const params = initBagParams(config, 1);
  const batch = randomBatch(11, B, n, config.vocabSize);
  const opts: StepOptions = { key: 1234, temperature: 0.5 };
  const full = await fullBatchStep(model, params, batch, opts);
  for (const [qc, pc] of [[1, 1], [3, 3], [4, 5], [B, B * n], [100, 100]]) {
    const cached = await gradCacheStep(model, params, batch, { ...opts, qChunkSize: qc, pChunkSize: pc });
    close(cached.loss, full.loss, 1e-6, `loss (chunks ${qc}/${pc})`);
    const err = maxRelativeError(cached.grads, full.grads);
    assert.ok(err <= 1e-5, `chunks ${qc}/${pc}: relative error ${err}`);
    disposeAll(cached.grads);
  }
  const noDropout = await fullBatchStep(model, params, batch, { ...opts, key: null });
  assert.ok(maxRelativeError(noDropout.grads, full.grads) > 1e-3, 'dropout is really on');
  disposeAll(params, full.grads, noDropout.grads);
});

test('grad cache gradients differ when the replay draws other dropout masks', async () => {
  const params = initBagParams(config, 2);
  const batch = randomBatch(12, B, n, config.vocabSize);
  const opts = { key: 77, qChunkSize: 2, pChunkSize: 4 };
  const good = await gradCacheStep(model, params, batch, opts);
  // a model that draws a new dropout key on every call, so no replay sees its chunk's first masks
  let calls = 0;
  const perturb = (enc: BiEncoder['encodeQuery']): BiEncoder['encodeQuery'] => (p, b, rng) => enc(p, b, rng && { ...rng, key: rng.key ^ ++calls });
  const forgetful: BiEncoder = { encodeQuery: perturb(model.encodeQuery), encodePassage: perturb(model.encodePassage) };
  const bad = await gradCacheStep(forgetful, params, batch, opts);
  assert.ok(maxRelativeError(bad.grads, good.grads) > 1e-2, 'replay with other masks must change the gradient');
  disposeAll(params, good.grads, bad.grads);
});

test('untied towers: each side gets its own gradients, equal between grad cache and full batch', async () => {
  const untied = bagBiEncoder(config, true);
  const params = { ...initBagParams(config, 3, 'query_model.'), ...initBagParams(config, 4, 'passage_model.') };
  const batch = randomBatch(13, B, n, config.vocabSize);
  const full = await fullBatchStep(untied, params, batch, { key: 5 });
  const cached = await gradCacheStep(untied, params, batch, { key: 5, qChunkSize: 4, pChunkSize: 7 });
  assert.ok(maxRelativeError(cached.grads, full.grads) <= 1e-5);
  const size = (k: string) => tf.max(tf.abs(full.grads[k])).dataSync()[0];
  for (const k of Object.keys(params)) {
    // a shift c of every passage moves all of a query's scores by q·c: the passage bias gets no gradient
    if (k === 'passage_model.dense.bias') assert.ok(size(k) < 1e-6, `${k}: ${size(k)}`);
    else assert.ok(size(k) > 1e-4, `${k} has a gradient`);
  }
  disposeAll(params, full.grads, cached.grads);
});

/** Runs W simulated ranks, rank r on batches[r], and returns each rank's loss and the averaged gradients. */
async function runRanks(params: ParamMap, batches: TrainBatch[], opts: StepOptions, chunks?: [number, number]) {
  const groups = localProcessGroups(batches.length);
  return Promise.all(
    groups.map(async (group, r) => {
      const o = { ...opts, group };
      const res = chunks
        ? await gradCacheStep(model, params, batches[r], { ...o, qChunkSize: chunks[0], pChunkSize: chunks[1] })
        : await fullBatchStep(model, params, batches[r], o);
      const mean = await allReduceParams(res.grads, group, 'mean');
      disposeAll(res.grads);
      return { loss: res.loss, grads: mean };
    }),
  );
}

test('negatives_x_device: W ranks × B equal one rank × W·B (loss and gradients), plain and grad cache', async () => {
  const W = 2;
  const params = initBagParams(config, 6);
  const batches = Array.from({ length: W }, (_, r) => randomBatch(20 + r, B, n, config.vocabSize));
  const opts: StepOptions = { key: 31, negativesXDevice: true };
  const single = await fullBatchStep(model, params, concatBatches(batches), { key: 31 });
  for (const chunks of [undefined, [2, 5]] as const) {
    const ranks = await runRanks(params, batches, opts, chunks as [number, number] | undefined);
    for (const r of ranks) {
      close(r.loss, single.loss, 1e-6, 'global loss on every rank');
      const err = maxRelativeError(r.grads, single.grads);
      assert.ok(err <= 1e-5, `${chunks ? 'grad cache' : 'plain'}: relative error ${err}`);
      disposeAll(r.grads);
    }
  }
  disposeAll(params, single.grads);
});

test('without negatives_x_device each rank scores its own batch and gradients are the mean of the ranks', async () => {
  const W = 3;
  const params = initBagParams(config, 7);
  const batches = Array.from({ length: W }, (_, r) => randomBatch(30 + r, B, n, config.vocabSize));
  const ranks = await runRanks(params, batches, { key: null });
  const alone = await Promise.all(batches.map((b) => fullBatchStep(model, params, b, { key: null })));
  const expected: ParamMap = {};
  for (const k of Object.keys(params)) expected[k] = tf.div(tf.addN(alone.map((a) => a.grads[k])), W);
  ranks.forEach((r, i) => {
    close(r.loss, alone[i].loss, 1e-6, `rank ${i} loss`);
    assert.ok(maxRelativeError(r.grads, expected) <= 1e-6);
    disposeAll(r.grads);
  });
  disposeAll(params, expected, ...alone.map((a) => a.grads));
});

test('a step leaks no tensors (plain, grad cache, gathered)', async () => {
  const params = initBagParams(config, 8);
  const batch = randomBatch(40, B, n, config.vocabSize);
  const step = async () => {
    disposeAll((await fullBatchStep(model, params, batch, { key: 1 })).grads);
    disposeAll((await gradCacheStep(model, params, batch, { key: 1, qChunkSize: 4, pChunkSize: 4 })).grads);
    const groups = localProcessGroups(2);
    const res = await Promise.all(groups.map((group) => fullBatchStep(model, params, batch, { key: 1, group, negativesXDevice: true })));
    res.forEach((r) => disposeAll(r.grads));
  };
  await step();
  const before = tf.memory().numTensors;
  for (let i = 0; i < 3; i++) await step();
  assert.is(tf.memory().numTensors, before);
  disposeAll(params);
});

test('chunk sizes must be positive integers', async () => {
  const params = initBagParams(config, 9);
  const batch = randomBatch(41, 2, 2, config.vocabSize);
  try {
    await gradCacheStep(model, params, batch, { key: null, qChunkSize: 0, pChunkSize: 4 });
    assert.unreachable();
  } catch (e) {
    assert.match(String(e), /--gc_q_chunk_size must be a positive integer, got 0/);
  }
  assert.is(rowSlice(batch.passages, 1, 3).rows, 2);
  disposeAll(params);
});

test.run();
