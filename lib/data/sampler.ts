// Which examples make up each batch of an epoch: a seeded permutation per epoch, split between ranks
// (rank r takes every W-th index, so ranks never see the same example — Tevatron issue #89), cut into
// local batches of B with the incomplete last batch dropped, as Tevatron's DataLoader does.
import { PyRandom } from './pyrandom.ts';

export interface EpochOptions {
  batchSize: number;
  seed: number;
  epoch: number;
  rank?: number;
  worldSize?: number;
  /** Keep dataset order (no shuffling), e.g. for debugging. */
  noShuffle?: boolean;
}

/** Example indices of this rank's batches in epoch `epoch`. */
export function epochBatches(numExamples: number, opts: EpochOptions): number[][] {
  const { batchSize: B, rank = 0, worldSize: W = 1 } = opts;
  if (!Number.isInteger(B) || B < 1) throw new Error(`--per_device_train_batch_size must be a positive integer, got ${B}`);
  const order = Array.from({ length: numExamples }, (_, i) => i);
  if (!opts.noShuffle) new PyRandom(opts.seed + opts.epoch).shuffle(order);
  const perRank = Math.floor(numExamples / W);
  const mine = Array.from({ length: perRank }, (_, i) => order[i * W + rank]);
  const batches: number[][] = [];
  for (let s = 0; s + B <= mine.length; s += B) batches.push(mine.slice(s, s + B));
  return batches;
}

/** Optimizer steps per epoch for this configuration (every rank has the same count). */
export function stepsPerEpoch(numExamples: number, batchSize: number, worldSize = 1, accumulation = 1): number {
  return Math.floor(Math.floor(Math.floor(numExamples / worldSize) / batchSize) / accumulation);
}
