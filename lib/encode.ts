// Encoding many sequences with a trained model: fixed-size batches, no dropout, float32 rows out.
import * as tf from '@tensorflow/tfjs';
import { collateSequences, type SpecialTokens } from './data/collator.ts';
import type { Encoder, ParamMap } from './model/types.ts';

/** Representations [N, d] of token-id sequences (without special tokens), row-major. */
export async function encodeSequences(
  encode: Encoder,
  params: ParamMap,
  seqs: number[][],
  opts: { maxLen: number; special: SpecialTokens; batchSize?: number; onProgress?: (done: number) => void },
): Promise<{ data: Float32Array; dim: number }> {
  const B = opts.batchSize ?? 64;
  const parts: Float32Array[] = [];
  let dim = 0;
  for (let s = 0; s < seqs.length; s += B) {
    const reps = encode(params, collateSequences(seqs.slice(s, s + B), opts.maxLen, opts.special), null);
    dim = reps.shape[1];
    parts.push((await reps.data()) as Float32Array);
    reps.dispose();
    opts.onProgress?.(Math.min(s + B, seqs.length));
  }
  const data = new Float32Array(seqs.length * dim);
  parts.reduce((at, p) => (data.set(p, at), at + p.length), 0);
  return { data, dim };
}

/** Scores [Q, P] = Q·Pᵀ of row-major representations. */
export function innerProducts(q: Float32Array, p: Float32Array, dim: number): Float32Array {
  const scores = tf.tidy(() => tf.matMul(tf.tensor2d(q, [q.length / dim, dim]), tf.transpose(tf.tensor2d(p, [p.length / dim, dim]))));
  const out = scores.dataSync() as Float32Array;
  scores.dispose();
  return out;
}
