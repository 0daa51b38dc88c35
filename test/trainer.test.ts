import * as tf from '@tensorflow/tfjs';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { syntheticTask } from '../lib/data/synthetic.ts';
import { loadTrainData } from '../lib/data/tokenized.ts';
import { WordPieceTokenizer } from '../lib/tokenizer.ts';
import { bagBiEncoder, initBagParams } from '../lib/model/bag.ts';
import { GRAD_SCALER_DEFAULTS } from '../lib/lossscale.ts';
import type { BiEncoder, ParamMap } from '../lib/model/types.ts';
import { initAdamW } from '../lib/optim.ts';
import type { TrainConfig, TrainState } from '../lib/train.ts';
import { schedulePlan, trainLoop, type LogRecord, type LoopOptions } from '../lib/trainer.ts';
import { SPECIAL, disposeAll } from './helpers.ts';

const task = syntheticTask({ passages: 60, testQueries: 0, seed: 9, topicWords: 40, fillerWords: 6 });
const config = { vocabSize: task.vocabSize, hiddenSize: 8, outputSize: 8, dropout: 0.1 };
const model = bagBiEncoder(config);
const loop: LoopOptions = {
  batchSize: 8, nPassages: 2, qMaxLen: 8, pMaxLen: 16, special: SPECIAL, seed: 3, numTrainEpochs: 2, maxSteps: -1,
  gradientAccumulationSteps: 1, warmupRatio: 0.1, warmupSteps: 0, loggingSteps: 2, saveSteps: 3,
};
const cfg: Omit<TrainConfig, 'totalSteps' | 'warmupSteps'> = {
  adamw: { lr: 1e-2, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }, schedule: 'linear', maxGradNorm: 1, gradCache: null, dropout: true,
};
const fresh = (): TrainState => {
  const params = initBagParams(config, 1);
  return { params, optimizer: initAdamW(params), key: 17 };
};
const clone = (m: ParamMap): ParamMap => Object.fromEntries(Object.entries(m).map(([k, t]) => [k, tf.clone(t)]));

test('steps as Hugging Face: per epoch = floor(examples / batch / accumulation), warmup = ceil(ratio · total)', () => {
  assert.equal(schedulePlan(54, loop), { perEpoch: 6, total: 12, warmup: 2, epochs: 2 });
  assert.equal(schedulePlan(54, { ...loop, maxSteps: 5 }), { perEpoch: 6, total: 5, warmup: 1, epochs: 1 });
  assert.equal(schedulePlan(54, { ...loop, gradientAccumulationSteps: 2, numTrainEpochs: 1.5 }), { perEpoch: 3, total: 5, warmup: 1, epochs: 2 });
  assert.throws(() => schedulePlan(5, loop), /5 training examples make no full batch of 8/);
});

test('a run resumed from a mid-run checkpoint ends with the same weights as an uninterrupted one', async () => {
  const logs: LogRecord[] = [];
  let saved: TrainState | null = null;
  const saves: number[] = [];
  const straight = await trainLoop(model, fresh(), task.train, loop, cfg, {
    onLog: (r) => void logs.push(r),
    onSave: (s, step) => {
      saves.push(step);
      if (step === 3) saved = { ...s, params: clone(s.params), optimizer: { step: s.optimizer.step, m: clone(s.optimizer.m), v: clone(s.optimizer.v) } };
    },
  });
  assert.equal(schedulePlan(task.train.length, loop).total, 14); // 60 examples / 8 = 7 steps × 2 epochs
  assert.equal(saves, [3, 6, 9, 12, 14], 'every save_steps, and at the end');
  assert.equal(logs.map((l) => l.step), [2, 4, 6, 8, 10, 12, 14]);
  assert.ok(logs.every((l) => Number.isFinite(l.loss) && l.samples_per_second > 0));
  const resumed = await trainLoop(model, saved!, task.train, loop, cfg);
  for (const k of Object.keys(straight.params)) assert.equal(Array.from(resumed.params[k].dataSync()), Array.from(straight.params[k].dataSync()), k);
  disposeAll(straight.params, straight.optimizer.m, straight.optimizer.v, resumed.params, resumed.optimizer.m, resumed.optimizer.v);
});

test('training from the on-disk tokenized store = training from the examples in memory (same losses, same weights)', async () => {
  const work = mkdtempSync(path.join(os.tmpdir(), 'tevatron-trainer-'));
  try {
    const file = path.join(work, 'train.jsonl');
    writeFileSync(file, task.train.map((e) => JSON.stringify({ query_id: e.queryId, query: e.query, positives: e.positives, negatives: e.negatives })).join('\n') + '\n');
    const tokenizer = new WordPieceTokenizer(['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]', ...Array.from({ length: task.vocabSize - 5 }, (_, i) => `w${i + 5}`)]);
    const o = { tokenize: (): number[] => { throw new Error('the rows are pre-tokenized'); }, qMaxLen: loop.qMaxLen, pMaxLen: loop.pMaxLen, separator: ' ' };
    const data = await loadTrainData([file], o, { tokenizer, cacheDir: work });
    assert.ok(data.store, 'a store on disk');
    const run = async (examples: Parameters<typeof trainLoop>[2]) => {
      const losses: number[] = [];
      const end = await trainLoop(model, fresh(), examples, { ...loop, maxSteps: 3, loggingSteps: 1 }, cfg, { onLog: (r) => void losses.push(r.loss) });
      return { losses, end };
    };
    const memory = await run(task.train);
    const disk = await run(data.examples);
    assert.is(memory.losses.length, 3);
    assert.equal(disk.losses, memory.losses);
    for (const k of Object.keys(memory.end.params)) assert.equal(Array.from(disk.end.params[k].dataSync()), Array.from(memory.end.params[k].dataSync()), k);
    disposeAll(memory.end.params, memory.end.optimizer.m, memory.end.optimizer.v, disk.end.params, disk.end.optimizer.m, disk.end.optimizer.v);
    data.store!.close();
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
});

test('a state resumed at or past the last step gets the final save alone (a run killed before its final save)', async () => {
  const total = schedulePlan(task.train.length, loop).total;
  for (const step of [total, total + 3]) {
    const state = fresh();
    state.optimizer.step = step;
    const calls: [number, boolean][] = [];
    const out = await trainLoop(model, state, task.train, loop, cfg, { onSave: (_, s, _e, final) => void calls.push([s, final]), onLog: () => assert.unreachable('no step runs') });
    assert.equal(calls, [[step, true]]);
    assert.is(out, state, 'the state is returned as it was');
    disposeAll(state.params, state.optimizer.m, state.optimizer.v);
  }
});

test('with loss scaling, an overflowing step is reported to onSkip and the logs carry the scale', async () => {
  // steps 1 and 2 overflow (representations beyond float32, as float16's do beyond 65504), the rest do not
  let calls = 0;
  const flaky: BiEncoder = {
    encodeQuery: model.encodeQuery,
    encodePassage: (p, b, r) => tf.tidy(() => tf.mul(model.encodePassage(p, b, r), ++calls <= 2 ? 3e38 : 1)),
  };
  const skips: [number, number][] = [];
  const logs: LogRecord[] = [];
  const end = await trainLoop(flaky, fresh(), task.train, { ...loop, maxSteps: 4 }, { ...cfg, lossScale: GRAD_SCALER_DEFAULTS }, {
    onSkip: (step, scale) => void skips.push([step, scale]),
    onLog: (r) => void logs.push(r),
  });
  assert.equal(skips, [[1, 32768], [2, 16384]]);
  assert.equal(logs.map((l) => [l.step, l.loss_scale]), [[2, 16384], [4, 16384]]);
  assert.equal(end.lossScale, { scale: 16384, goodSteps: 2, skipped: 2 });
  disposeAll(end.params, end.optimizer.m, end.optimizer.v);
});

test.run();
