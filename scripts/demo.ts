// `npm run demo`: the main job on a built-in default, offline. Generates a retrieval task, builds a small
// BERT from scratch (random init, its own vocabulary), trains it with Tevatron's recipe (in-batch + hard
// negatives, grad cache, AdamW with warmup and linear decay) for about a minute, and prints recall@k on
// held-out queries before and after. Mean pooling: a randomly initialised BERT's CLS vectors are nearly
// identical for every input, so CLS pooling (Tevatron v1's default) does not learn from scratch.
import { initBackend } from '../lib/backend.ts';
import { syntheticTask } from '../lib/data/synthetic.ts';
import { encodeSequences, innerProducts } from '../lib/encode.ts';
import { recallAtK } from '../lib/metrics.ts';
import { bertConfigFromJson } from '../lib/model/bert.ts';
import { denseBiEncoder, initDenseParams } from '../lib/model/dense.ts';
import type { ParamMap } from '../lib/model/types.ts';
import { initAdamW } from '../lib/optim.ts';
import { keyFromSeed } from '../lib/random.ts';
import { schedulePlan, trainLoop, type LoopOptions } from '../lib/trainer.ts';

const seed = 42;
const epochs = Number(process.env.DEMO_EPOCHS ?? 3);
const special = { pad: 0, unk: 1, cls: 2, sep: 3, mask: 4 };
const backend = await initBackend();
const task = syntheticTask({ passages: 3000, testQueries: 300, seed, firstId: 5 });
const config = bertConfigFromJson({
  model_type: 'bert', vocab_size: task.vocabSize, hidden_size: 64, num_hidden_layers: 2, num_attention_heads: 4,
  intermediate_size: 128, max_position_embeddings: 64, hidden_dropout_prob: 0.1, attention_probs_dropout_prob: 0.1, pad_token_id: 0,
}, 'demo config');
const options = { pooling: 'mean' as const };
const model = denseBiEncoder(config, options);
const loop: LoopOptions = {
  batchSize: 32, nPassages: 2, qMaxLen: 12, pMaxLen: 32, special, seed, numTrainEpochs: epochs, maxSteps: -1,
  gradientAccumulationSteps: 1, warmupRatio: 0.1, warmupSteps: 0, loggingSteps: 40, saveSteps: 1e9,
};
const plan = schedulePlan(task.train.length, loop);
console.log(`backend ${backend}; generated ${task.train.length} training queries (1 positive + 4 hard negatives each), ${task.corpus.length} passages, ${task.test.length} held-out queries`);
console.log(`BERT from scratch: ${config.num_hidden_layers} layers, hidden ${config.hidden_size}, vocab ${config.vocab_size}, mean pooling; batch ${loop.batchSize} x ${loop.nPassages} passages, grad cache 16/32, ${plan.total} steps`);

async function evaluate(params: ParamMap): Promise<string> {
  const q = await encodeSequences(model.encodeQuery, params, task.test.map((t) => t.query), { maxLen: loop.qMaxLen, special });
  const p = await encodeSequences(model.encodePassage, params, task.corpus, { maxLen: loop.pMaxLen, special, batchSize: 128 });
  const scores = innerProducts(q.data, p.data, q.dim);
  const gold = task.test.map((t) => t.positive);
  return [1, 5, 20].map((k) => `R@${k} ${recallAtK(scores, task.corpus.length, gold, k).toFixed(3)}`).join('  ');
}

const params = initDenseParams(config, options, keyFromSeed(seed));
console.log(`before training: ${await evaluate(params)}`);
const started = performance.now();
const trained = await trainLoop(
  model,
  { params, optimizer: initAdamW(params), key: keyFromSeed(seed + 1) },
  task.train,
  loop,
  { adamw: { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.01 }, schedule: 'linear', maxGradNorm: 1, gradCache: { qChunkSize: 16, pChunkSize: 32 }, dropout: true },
  { onLog: (r) => console.log(`step ${r.step}/${plan.total}  loss ${r.loss.toFixed(3)}  lr ${r.learning_rate.toExponential(1)}  ${r.samples_per_second.toFixed(0)} queries/s  ${((performance.now() - started) / 1000).toFixed(0)} s`) },
);
console.log(`after training:  ${await evaluate(trained.params)}`);
