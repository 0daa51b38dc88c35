// Tevatron v1's per-epoch group sampling (TrainDataset.__getitem__), with the epoch an argument
// instead of a pointer to the trainer: one positive and n−1 negatives per query, positive first.
import { PyRandom } from './pyrandom.ts';

/** One training query with token ids (no special tokens) of its passages. */
export interface TrainExample {
  queryId?: string;
  query: number[];
  positives: number[][];
  negatives: number[][];
}

/**
 * Training examples by index, read when asked: an array in memory (arraySource) or the tokenized store on
 * disk (lib/data/store.ts), so training touches only each batch's rows.
 */
export interface TrainSource {
  readonly length: number;
  get(index: number): TrainExample;
  /** What checkExamples needs, without reading token ids. */
  counts(index: number): { queryId?: string; positives: number; negatives: number };
}

export function arraySource(examples: readonly TrainExample[]): TrainSource {
  return {
    length: examples.length,
    get: (i) => examples[i],
    counts: (i) => ({ queryId: examples[i].queryId, positives: examples[i].positives.length, negatives: examples[i].negatives.length }),
  };
}

/** Arrays (the library's and the notebooks' way) and sources alike. */
export const asSource = (examples: readonly TrainExample[] | TrainSource): TrainSource => (Array.isArray(examples) ? arraySource(examples) : (examples as TrainSource));

/** A query and its n passages; passages[0] is the positive. */
export interface Group {
  query: number[];
  passages: number[][];
}

export interface SampleOptions {
  /** train_n_passages: 1 positive + n−1 negatives. */
  nPassages: number;
  seed: number;
  epoch: number;
  positiveNoShuffle?: boolean;
  negativeNoShuffle?: boolean;
}

function describe(example: { queryId?: string }, index: number): string {
  return example.queryId !== undefined ? `query_id ${example.queryId}` : `example ${index}`;
}

/**
 * The group of example `index` in epoch `epoch`:
 * - positive: `positives[(index + seed + epoch) % P]` (the first with positiveNoShuffle);
 * - negatives: a permutation fixed per example (`random.Random(index + seed).shuffle`), read as a window
 *   of n−1 at offset `epoch·(n−1) mod N` of the list doubled, so epochs walk it without overlap until it
 *   wraps (the first n−1 with negativeNoShuffle);
 * - fewer than n−1 negatives: n−1 draws with replacement from `random.Random(index + seed + epoch·2³²)`
 *   (deterministic, where Tevatron draws from the global RNG);
 * - n = 1: no negatives (in-batch negatives only).
 */
export function sampleGroup(example: TrainExample, index: number, opts: SampleOptions): Group {
  const { nPassages: n, seed, epoch } = opts;
  if (!Number.isInteger(n) || n < 1) throw new Error(`--train_n_passages must be a positive integer, got ${n}`);
  const P = example.positives.length;
  if (P === 0) throw new Error(`${describe(example, index)} has no positive passage; every training query needs at least one`);
  const hashedSeed = index + seed;
  const positive = opts.positiveNoShuffle ? example.positives[0] : example.positives[(hashedSeed + epoch) % P];

  const k = n - 1;
  const negs = example.negatives;
  let chosen: number[][];
  if (negs.length < k) {
    if (negs.length === 0) {
      throw new Error(`${describe(example, index)} has no negative passages but --train_n_passages ${n} needs ${k}; add negatives or use --train_n_passages 1`);
    }
    chosen = new PyRandom(hashedSeed + epoch * 0x100000000).choices(negs, k);
  } else if (k === 0) {
    chosen = [];
  } else if (opts.negativeNoShuffle) {
    chosen = negs.slice(0, k);
  } else {
    const perm = new PyRandom(hashedSeed).shuffle([...negs]);
    const offset = (epoch * k) % negs.length;
    chosen = [...perm, ...perm].slice(offset, offset + k);
  }
  return { query: example.query, passages: [positive, ...chosen] };
}

/**
 * Checks up front what sampleGroup would fail on mid-training: a query without a positive, or without
 * negatives when n > 1. One error names how many and the first few.
 */
export function checkExamples(examples: readonly TrainExample[] | TrainSource, nPassages: number): void {
  const src = asSource(examples);
  const noPositive: string[] = [];
  const noNegative: string[] = [];
  let positives = 0;
  let negatives = 0;
  for (let i = 0; i < src.length; i++) {
    const c = src.counts(i);
    if (c.positives === 0 && positives++ < 3) noPositive.push(describe(c, i));
    if (c.negatives === 0 && negatives++ < 3) noNegative.push(describe(c, i));
  }
  const few = (names: string[], n: number) => `${names.join(', ')}${n > 3 ? ', ...' : ''}`;
  if (positives) throw new Error(`${positives} training queries have no positive passage (${few(noPositive, positives)}); every query needs one`);
  if (nPassages < 2 || !negatives) return;
  throw new Error(
    `${negatives} training queries have no negative passages (${few(noNegative, negatives)}) ` +
      `but --train_n_passages ${nPassages} needs ${nPassages - 1} per query; drop them from the data (as Tevatron's prepare scripts do) or use --train_n_passages 1`,
  );
}
