// Which examples make up each batch of an epoch: a seeded permutation per epoch, cut into global batches
// of W·B with the incomplete last one dropped, as Tevatron's DataLoader does; rank r takes the r-th block of
// B rows of each (so ranks never see the same example — Tevatron issue #89). Rank order then is the row
// order of one process with batch W·B, whose dropout masks (a function of the row) the W ranks reproduce.
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
  const batches: number[][] = [];
  for (let s = 0; s + W * B <= numExamples; s += W * B) batches.push(order.slice(s + rank * B, s + (rank + 1) * B));
  return batches;
}

/** Optimizer steps per epoch for this configuration (every rank has the same count). */
export function stepsPerEpoch(numExamples: number, batchSize: number, worldSize = 1, accumulation = 1): number {
  return Math.floor(Math.floor(Math.floor(numExamples / worldSize) / batchSize) / accumulation);
}
