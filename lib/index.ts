// The public API of tevatron-ts: what notebooks, scripts and users import.
export { initBackend, type BackendChoice, type BackendName } from './backend.ts';
export { linear, embeddingLookup, dropout } from './ops.ts';
export { foldIn, keyFromSeed, mix32, dropoutScales, siteRng, type Key, type DropoutRng } from './random.ts';
export { contrastiveLoss, contrastiveScores, groupSize, type LossOptions } from './loss.ts';
export { allGatherRows, spliceLocalRows, lossAndRepGradients, type RepLossOptions, type RepLoss } from './gather.ts';
export { fullBatchStep, paramGradients, accumulate, sideRng, type StepOptions, type StepResult, type TrainBatch } from './step.ts';
export { gradCacheStep, type GradCacheOptions } from './gradcache.ts';
export { singleProcessGroup, localProcessGroups, type ProcessGroup, type ReduceOp } from './dist/group.ts';
export { allReduceParams, broadcastParams, flattenParams, unflattenParams } from './dist/tensors.ts';
export { sampleGroup, type TrainExample, type Group, type SampleOptions } from './data/sample.ts';
export { collateGroups, collateSequences, rowSlice, type TokenBatch, type SpecialTokens, type CollateOptions } from './data/collator.ts';
export { PyRandom } from './data/pyrandom.ts';
export { bagBiEncoder, initBagParams, maskedMean, batchTensors, type BagConfig } from './model/bag.ts';
export type { BiEncoder, Encoder, ParamMap } from './model/types.ts';
