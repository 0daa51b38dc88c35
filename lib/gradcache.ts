// Gradient caching (Gao et al., 2021): the gradient of a large-batch contrastive loss with the memory
// of one chunk. Pass 1 encodes every chunk without a tape; the loss and its gradient with respect to
// the representations (the cache) come from the concatenated (and, across ranks, gathered) reps; pass 2
// re-encodes each chunk with the same dropout masks and backpropagates its slice of the cache.
import * as tf from '@tensorflow/tfjs';
import { rowSlice, type TokenBatch } from './data/collator.ts';
import { lossAndRepGradients } from './gather.ts';
import type { Encoder, BiEncoder, ParamMap } from './model/types.ts';
import { accumulate, paramGradients, sideRng, type StepOptions, type StepResult, type TrainBatch } from './step.ts';

export interface GradCacheOptions extends StepOptions {
  /** Query rows per chunk (Tevatron's gc_q_chunk_size). */
  qChunkSize: number;
  /** Passage rows per chunk (Tevatron's gc_p_chunk_size). */
  pChunkSize: number;
}

function chunkStarts(rows: number, size: number, flag: string): number[] {
  if (!Number.isInteger(size) || size < 1) throw new Error(`--${flag} must be a positive integer, got ${size}`);
  const starts = [];
  for (let s = 0; s < rows; s += size) starts.push(s);
  return starts;
}

interface Side {
  encode: Encoder;
  batch: TokenBatch;
  chunk: number;
  index: 0 | 1;
  flag: string;
}

export async function gradCacheStep(model: BiEncoder, params: ParamMap, batch: TrainBatch, opts: GradCacheOptions): Promise<StepResult> {
  const sides: Side[] = [
    { encode: model.encodeQuery, batch: batch.queries, chunk: opts.qChunkSize, index: 0, flag: 'gc_q_chunk_size' },
    { encode: model.encodePassage, batch: batch.passages, chunk: opts.pChunkSize, index: 1, flag: 'gc_p_chunk_size' },
  ];
  const chunks = sides.map((s) =>
    chunkStarts(s.batch.rows, s.chunk, s.flag).map((start) => {
      const end = Math.min(start + s.chunk, s.batch.rows);
      return { start, end, tokens: rowSlice(s.batch, start, end), rng: sideRng(opts, s.index, s.batch.rows, start) };
    }),
  );

  // pass 1: representations without a tape
  const [q, p] = sides.map((s, i) => tf.tidy(() => tf.concat(chunks[i].map((c) => s.encode(params, c.tokens, c.rng)), 0)));
  const { loss, dq, dp } = await lossAndRepGradients(q, p, opts);
  tf.dispose([q, p]);

  // pass 2: replay each chunk with its rng and push its slice of the cached gradient through
  let grads: ParamMap | null = null;
  const cache = [dq, dp];
  sides.forEach((s, i) => {
    for (const c of chunks[i]) {
      const chunkGrads = tf.tidy(() => {
        const dy = tf.slice(cache[i], [c.start, 0], [c.end - c.start, -1]);
        return paramGradients(params, () => s.encode(params, c.tokens, c.rng), dy).grads;
      });
      grads = accumulate(grads, chunkGrads);
    }
  });
  tf.dispose(cache);
  return { loss, grads: grads! };
}
