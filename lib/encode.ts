// Encoding many sequences with a trained model: fixed-size batches, no dropout, float32 rows out. A
// corpus is encoded as a stream (encodeToFile): rows go to disk batch by batch, so memory holds one batch
// whatever the corpus or shard size.
import * as tf from '@tensorflow/tfjs';
import { collateSequences, type SpecialTokens } from './data/collator.ts';
import { createEncodedWriter } from './encoded.ts';
import type { Encoder, ParamMap } from './model/types.ts';

export interface EncodeOptions {
  maxLen: number;
  special: SpecialTokens;
  batchSize?: number;
  /** Called after each batch with the rows encoded so far. */
  onProgress?: (done: number) => void;
}

/** Representations of items (token ids without special tokens), one batch at a time: the batch's items and their rows [n, d]. */
export async function* encodeBatches<T extends { tokens: number[] }>(
  encode: Encoder,
  params: ParamMap,
  items: Iterable<T> | AsyncIterable<T>,
  opts: EncodeOptions,
): AsyncGenerator<{ items: T[]; data: Float32Array; dim: number }> {
  const B = opts.batchSize ?? 64;
  let batch: T[] = [];
  let done = 0;
  const run = async () => {
    const reps = encode(params, collateSequences(batch.map((x) => x.tokens), opts.maxLen, opts.special), null);
    const data = (await reps.data()) as Float32Array;
    const dim = reps.shape[1];
    reps.dispose();
    opts.onProgress?.((done += batch.length));
    return { items: batch, data, dim };
  };
  for await (const x of items) {
    batch.push(x);
    if (batch.length === B) {
      yield await run();
      batch = [];
    }
  }
  if (batch.length > 0) yield await run();
}

/** Representations [N, d] of token-id sequences (without special tokens), row-major. */
export async function encodeSequences(encode: Encoder, params: ParamMap, seqs: number[][], opts: EncodeOptions): Promise<{ data: Float32Array; dim: number }> {
  const parts: Float32Array[] = [];
  let dim = 0;
  for await (const b of encodeBatches(encode, params, seqs.map((tokens) => ({ tokens })), opts)) {
    parts.push(b.data);
    dim = b.dim;
  }
  const data = new Float32Array(seqs.length * dim);
  parts.reduce((at, p) => (data.set(p, at), at + p.length), 0);
  return { data, dim };
}

/**
 * Encodes a stream of {id, tokens} into PATH (safetensors `embeddings` [N, d]) and PATH.ids, appending
 * each batch as it is encoded; nothing is left at PATH if it fails.
 */
export async function encodeToFile(
  encode: Encoder,
  params: ParamMap,
  items: Iterable<{ id: string; tokens: number[] }> | AsyncIterable<{ id: string; tokens: number[] }>,
  path: string,
  opts: EncodeOptions,
): Promise<{ rows: number; dim: number }> {
  const out = createEncodedWriter(path);
  try {
    for await (const b of encodeBatches(encode, params, items, opts)) out.append(b.items.map((x) => x.id), b.data, b.dim);
    return out.close();
  } catch (e) {
    out.abort();
    throw e;
  }
}

/** Rows i of a stream with i % num === index: datasets' shard(num, index) with contiguous=False. */
export async function* shardOf<T>(rows: Iterable<T> | AsyncIterable<T>, num: number, index: number): AsyncGenerator<T> {
  let i = 0;
  for await (const r of rows) if (i++ % num === index) yield r;
}

/**
 * The shard one of W processes encodes (launch.ts, torchrun: one per GPU): the flags' shard `index` of
 * `num` split W ways, rank r taking shard index + num·r of num·W. Without the flags (1 of 1) that is shard
 * r of W; together the ranks cover the flags' shard exactly once, since row i of it has i % (num·W) equal
 * to index + num·r for exactly one r.
 */
export function rankShard(num: number, index: number, rank: number, world: number): { num: number; index: number } {
  return { num: num * world, index: index + num * rank };
}

/** Where rank r of W > 1 writes: `out.safetensors` -> `out.r.safetensors`, any other name gets `.r` appended. */
export function rankPath(path: string, rank: number, world: number): string {
  if (world === 1) return path;
  return path.endsWith('.safetensors') ? `${path.slice(0, -'.safetensors'.length)}.${rank}.safetensors` : `${path}.${rank}`;
}

/** Scores [Q, P] = Q·Pᵀ of row-major representations. */
export function innerProducts(q: Float32Array, p: Float32Array, dim: number): Float32Array {
  const scores = tf.tidy(() => tf.matMul(tf.tensor2d(q, [q.length / dim, dim]), tf.transpose(tf.tensor2d(p, [p.length / dim, dim]))));
  const out = scores.dataSync() as Float32Array;
  scores.dispose();
  return out;
}
