// `npm run demo`: trains a small retriever offline on a generated task and prints recall@k on held-out
// queries before and after. Tevatron's recipe at toy scale: in-batch + hard negatives, grad cache,
// AdamW with linear warmup/decay.
import {
  collateGroups,
  encodeSequences,
  epochBatches,
  initAdamW,
  initBackend,
  initBagParams,
  bagBiEncoder,
  innerProducts,
  keyFromSeed,
  recallAtK,
  sampleGroup,
  stepsPerEpoch,
  syntheticTask,
  trainStep,
  warmupSteps,
  type ParamMap,
  type TrainConfig,
  type TrainState,
} from '../lib/index.ts';

const seed = 42;
const epochs = Number(process.env.DEMO_EPOCHS ?? 10);
const special = { pad: 0, cls: 1, sep: 2 };
const backend = await initBackend();
const task = syntheticTask({ passages: 4000, testQueries: 400, seed });
const config = { vocabSize: task.vocabSize, hiddenSize: 64, outputSize: 64, dropout: 0.1 };
const model = bagBiEncoder(config);
const B = 64;
const n = 2;
const total = epochs * stepsPerEpoch(task.train.length, B);
console.log(`backend ${backend}; ${task.train.length} training queries, ${task.corpus.length} passages, ${task.test.length} held-out queries`);
console.log(`bag-of-embeddings encoder (vocab ${config.vocabSize}, dim ${config.hiddenSize}); batch ${B} x ${n} passages, grad cache 16/32, ${epochs} epochs = ${total} steps`);

async function evaluate(params: ParamMap): Promise<string> {
  const q = await encodeSequences(model.encodeQuery, params, task.test.map((t) => t.query), { maxLen: 16, special });
  const p = await encodeSequences(model.encodePassage, params, task.corpus, { maxLen: 32, special });
  const scores = innerProducts(q.data, p.data, q.dim);
  const gold = task.test.map((t) => t.positive);
  return [1, 5, 20].map((k) => `R@${k} ${recallAtK(scores, task.corpus.length, gold, k).toFixed(3)}`).join('  ');
}

let state: TrainState = { params: initBagParams(config, keyFromSeed(seed)), optimizer: { step: 0, m: {}, v: {} }, key: keyFromSeed(seed + 1) };
state.optimizer = initAdamW(state.params);
console.log(`before training: ${await evaluate(state.params)}`);
const cfg: TrainConfig = {
  adamw: { lr: 5e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 },
  schedule: 'linear',
  warmupSteps: warmupSteps(total, 0.1),
  totalSteps: total,
  maxGradNorm: 1,
  gradCache: { qChunkSize: 16, pChunkSize: 32 },
  dropout: true,
};
const started = performance.now();
for (let epoch = 0; epoch < epochs; epoch++) {
  let loss = 0;
  const batches = epochBatches(task.train.length, { batchSize: B, seed, epoch });
  for (const idx of batches) {
    const groups = idx.map((i) => sampleGroup(task.train[i], i, { nPassages: n, seed, epoch }));
    const step = await trainStep(model, state, [collateGroups(groups, { qMaxLen: 16, pMaxLen: 32, special })], cfg);
    state = step.state;
    loss += step.metrics.loss / batches.length;
  }
  console.log(`epoch ${epoch + 1}: loss ${loss.toFixed(3)}  ${((performance.now() - started) / 1000).toFixed(1)} s`);
}
console.log(`after training:  ${await evaluate(state.params)}`);
