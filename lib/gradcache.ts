// Gradient caching (Gao et al., 2021): the gradient of a large-batch contrastive loss with the memory
// of one chunk. Pass 1 encodes chunks without a tape; the loss and its gradient with respect to the
// representations (the cache) come from the concatenated (and, across ranks, gathered) reps; pass 2
// re-encodes each chunk with the same dropout masks and backpropagates its slice of the cache.
// Without a cross-rank gather, the last chunk of each side skips pass 1: it is encoded with the tape
// inside the loss, so its parameter gradients come with the cache and it is never replayed.
import * as tf from '@tensorflow/tfjs';
import { rowSlice, type TokenBatch } from './data/collator.ts';
import { lossAndRepGradients } from './gather.ts';
import { contrastiveLoss } from './loss.ts';
import { lossScaleSeed } from './lossscale.ts';
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
  const encodeChunk = (i: number, c: (typeof chunks)[number][number]) => sides[i].encode(params, c.tokens, c.rng);
  // the gather is asynchronous and a tape is not: across ranks every chunk goes through pass 1
  const fused = !(opts.negativesXDevice && opts.group && opts.group.worldSize > 1);
  const replayed = chunks.map((cs) => (fused ? cs.slice(0, -1) : cs));

  // pass 1: representations without a tape (null: the side's only chunk is fused)
  const cached: (tf.Tensor2D | null)[] = replayed.map((cs, i) => (cs.length ? tf.tidy(() => tf.concat(cs.map((c) => encodeChunk(i, c)), 0)) : null));
  const present = (ts: (tf.Tensor | null)[]) => ts.filter((t): t is tf.Tensor => t !== null);
  let loss: number;
  let grads: ParamMap | null = null;
  let cache: (tf.Tensor | null)[];
  if (fused) {
    // the loss over the cached reps and the live last chunks: their parameter gradients and the cache at once
    const reps = () => chunks.map((cs, i) => (cached[i] ? tf.concat([cached[i]!, encodeChunk(i, cs[cs.length - 1])], 0) : encodeChunk(i, cs[cs.length - 1])));
    const seed = lossScaleSeed(opts.lossScale);
    const res = paramGradients(params, () => {
      const [q, p] = reps();
      return contrastiveLoss(q as tf.Tensor2D, p as tf.Tensor2D, { temperature: opts.temperature });
    }, seed, present(cached));
    loss = (await res.value.data())[0];
    tf.dispose([res.value, seed]);
    grads = res.grads;
    let k = 0;
    cache = cached.map((t) => (t ? res.inputGrads[k++] : null));
  } else {
    const r = await lossAndRepGradients(cached[0] as tf.Tensor2D, cached[1] as tf.Tensor2D, opts);
    loss = r.loss;
    cache = [r.dq, r.dp];
  }
  tf.dispose(present(cached));

  // pass 2: replay each chunk with its rng and push its slice of the cached gradient through
  replayed.forEach((cs, i) => {
    for (const c of cs) {
      const chunkGrads = tf.tidy(() => {
        const dy = tf.slice(cache[i]!, [c.start, 0], [c.end - c.start, -1]);
        return paramGradients(params, () => encodeChunk(i, c), dy).grads;
      });
      grads = accumulate(grads, chunkGrads);
    }
  });
  tf.dispose(present(cache));
  return { loss, grads: grads! };
}
