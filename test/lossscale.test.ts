// Dynamic loss scaling (--fp16): GradScaler's rules, and the training step under them — a scaled step is
// the unscaled step, an overflowing step is skipped (and does not count for AdamW or the schedule).
import * as tf from '@tensorflow/tfjs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { GRAD_SCALER_DEFAULTS, initLossScale, lossScaleFromJson, updateLossScale, type LossScaleConfig } from '../lib/lossscale.ts';
import { bagBiEncoder, initBagParams } from '../lib/model/bag.ts';
import type { BiEncoder } from '../lib/model/types.ts';
import { initAdamW } from '../lib/optim.ts';
import { trainStep, type TrainConfig, type TrainState } from '../lib/train.ts';
import { disposeAll, randomBatch } from './helpers.ts';

const bag = { vocabSize: 40, hiddenSize: 12, outputSize: 8, dropout: 0 };
const model = bagBiEncoder(bag);
const cfg: TrainConfig = {
  adamw: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 },
  schedule: 'linear',
  warmupSteps: 2,
  totalSteps: 10,
  maxGradNorm: 1,
  gradCache: null,
  dropout: false,
};
const fresh = (): TrainState => {
  const params = initBagParams(bag, 7);
  return { params, optimizer: initAdamW(params), key: 1 };
};
const batch = randomBatch(3, 4, 2, bag.vocabSize);
const values = (s: TrainState) => Object.fromEntries(Object.entries(s.params).map(([k, t]) => [k, Array.from(t.dataSync())]));

test('GradScaler\'s rules: start at 2^16, halve and reset on overflow, double after growthInterval good steps', () => {
  const c: LossScaleConfig = { ...GRAD_SCALER_DEFAULTS, growthInterval: 3 };
  let s = initLossScale(c);
  assert.equal(s, { scale: 65536, goodSteps: 0, skipped: 0 });
  const scales: number[] = [];
  for (const finite of [true, true, false, true, true, true, true]) {
    s = updateLossScale(s, finite, c);
    scales.push(s.scale);
  }
  assert.equal(scales, [65536, 65536, 32768, 32768, 32768, 65536, 65536]);
  assert.equal([s.goodSteps, s.skipped], [1, 1]);
  assert.is(GRAD_SCALER_DEFAULTS.growthInterval, 2000);
  // resumed from trainer_state.json: checked, as any bytes from a file
  assert.equal(lossScaleFromJson(JSON.parse(JSON.stringify(s)), 'ckpt/trainer_state.json'), s);
  assert.throws(() => lossScaleFromJson({ scale: 0, goodSteps: 1, skipped: 0 }, 'ckpt/trainer_state.json'), /^ckpt\/trainer_state\.json: loss_scale must be .*; fix or delete it/);
  assert.throws(() => lossScaleFromJson('65536', 'x.json'), /x\.json: loss_scale must be/);
});

test('a loss-scaled step equals the unscaled step (a power-of-two scale is exact) and counts a good step', async () => {
  const plain = await trainStep(model, fresh(), [batch], cfg);
  const scaled = await trainStep(model, fresh(), [batch], { ...cfg, lossScale: GRAD_SCALER_DEFAULTS });
  assert.equal(values(scaled.state), values(plain.state));
  assert.is(scaled.metrics.loss, plain.metrics.loss);
  assert.equal([scaled.metrics.skipped, scaled.metrics.lossScale, scaled.state.lossScale], [false, 65536, { scale: 65536, goodSteps: 1, skipped: 0 }]);
  disposeAll(plain.state.params, plain.state.optimizer.m, plain.state.optimizer.v, scaled.state.params, scaled.state.optimizer.m, scaled.state.optimizer.v);
});

test('an overflow (a stand-in: representations beyond float32) skips the step and halves the scale; the next step is AdamW\'s first', async () => {
  // what float16 products do past 65504, here past float32's range: the scores, loss and gradients are not finite
  const overflowing: BiEncoder = { encodeQuery: model.encodeQuery, encodePassage: (p, b, r) => tf.tidy(() => tf.mul(model.encodePassage(p, b, r), 3e38)) };
  const start = fresh();
  const before = values(start);
  const numTensors = tf.memory().numTensors;
  const scaled = { ...cfg, lossScale: { ...GRAD_SCALER_DEFAULTS, growthInterval: 2 } };
  const skipped = await trainStep(overflowing, start, [batch], scaled);
  assert.equal([skipped.metrics.skipped, skipped.state.lossScale], [true, { scale: 32768, goodSteps: 0, skipped: 1 }]);
  assert.equal(values(skipped.state), before, 'parameters untouched');
  assert.is(skipped.state.optimizer.step, 1, 'the global step advances (Hugging Face counts skipped steps)');
  assert.is(tf.memory().numTensors, numTensors, 'the gradients are freed, the state kept');
  // AdamW's step count and the schedule did not move: the next step is what a fresh first step would be
  const next = await trainStep(model, skipped.state, [batch], scaled);
  const first = await trainStep(model, fresh(), [batch], cfg);
  assert.equal(values(next.state), values(first.state));
  assert.is(next.metrics.learningRate, first.metrics.learningRate);
  assert.equal(next.state.lossScale, { scale: 32768, goodSteps: 1, skipped: 1 });
  // growthInterval good steps in a row double the scale
  const grown = await trainStep(model, next.state, [batch], scaled);
  assert.equal(grown.state.lossScale, { scale: 65536, goodSteps: 0, skipped: 1 });
  assert.is(grown.state.optimizer.step, 3);
  disposeAll(grown.state.params, grown.state.optimizer.m, grown.state.optimizer.v, first.state.params, first.state.optimizer.m, first.state.optimizer.v);
});

test.run();
