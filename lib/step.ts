// One batch -> (loss, gradients): the full-batch step, and what it shares with the grad-cache step
// (options, dropout streams, gradients with respect to a parameter map).
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from './data/collator.ts';
import type { ProcessGroup } from './dist/group.ts';
import { gradCacheStep } from './gradcache.ts';
import { contrastiveLoss } from './loss.ts';
import { lossScaleSeed } from './lossscale.ts';
import type { BiEncoder, ParamMap } from './model/types.ts';
import { foldIn, type DropoutRng, type Key } from './random.ts';
import { gradients } from './tape.ts';

export interface TrainBatch {
  /** [B, q_max_len] */
  queries: TokenBatch;
  /** [B·n, p_max_len]; rows i·n … i·n+n−1 are query i's group, positive first */
  passages: TokenBatch;
}

export interface StepOptions {
  /** Dropout key of this step (the same on every rank); null trains without dropout. */
  key: Key | null;
  temperature?: number;
  group?: ProcessGroup;
  negativesXDevice?: boolean;
  /** Dynamic loss scaling (--fp16): gradients are of lossScale × loss; the reported loss is unscaled. */
  lossScale?: number;
}

export interface StepResult {
  /** The loss to log (global with negatives_x_device, local otherwise). */
  loss: number;
  /** This rank's gradients; average them over ranks (allReduceParams) before the update. */
  grads: ParamMap;
}

/**
 * Dropout streams of a side ('query' 0, 'passage' 1). Rows are numbered across ranks (rank r's rows
 * start at r·rows), so W ranks of B rows draw the same masks as one rank of W·B rows.
 */
export function sideRng(opts: StepOptions, side: 0 | 1, rows: number, start = 0): DropoutRng | null {
  if (opts.key === null) return null;
  return { key: foldIn(opts.key, side), rowOffset: (opts.group?.rank ?? 0) * rows + start };
}

/**
 * Gradients of f (a scalar, or with `dy` any tensor: the vector-Jacobian product) with respect to
 * every parameter, and to the tensors `inputs` (e.g. cached representations); a parameter f does not
 * reach gets zeros (e.g. the passage tower in a query chunk).
 */
export function paramGradients(params: ParamMap, f: () => tf.Tensor, dy?: tf.Tensor, inputs: tf.Tensor[] = []): { value: tf.Tensor; grads: ParamMap; inputGrads: tf.Tensor[] } {
  const names = Object.keys(params);
  const xs = [...names.map((k) => params[k]), ...inputs];
  const { value, grads } = gradients(f, xs, dy);
  const out: ParamMap = {};
  names.forEach((k, i) => (out[k] = grads[i] ?? tf.zerosLike(xs[i])));
  const inputGrads = inputs.map((t, i) => grads[names.length + i] ?? tf.zerosLike(t));
  return { value, grads: out, inputGrads };
}

/** a += b for every name, disposing the old sums and b. */
export function accumulate(into: ParamMap | null, grads: ParamMap): ParamMap {
  if (!into) return grads;
  const out: ParamMap = {};
  for (const k of Object.keys(into)) out[k] = tf.add(into[k], grads[k]);
  tf.dispose([...Object.values(into), ...Object.values(grads)]);
  return out;
}

/**
 * The plain step: encode the whole batch with the tape on and backpropagate the loss. With
 * negatives_x_device over W > 1 ranks the gather must happen between forward and backward, which
 * a synchronous tape cannot span, so it runs as the grad-cache step with one chunk per side.
 */
export async function fullBatchStep(model: BiEncoder, params: ParamMap, batch: TrainBatch, opts: StepOptions): Promise<StepResult> {
  if (opts.negativesXDevice && opts.group && opts.group.worldSize > 1) {
    return gradCacheStep(model, params, batch, { ...opts, qChunkSize: batch.queries.rows, pChunkSize: batch.passages.rows });
  }
  const seed = lossScaleSeed(opts.lossScale);
  const { value, grads } = paramGradients(
    params,
    () =>
      contrastiveLoss(
        model.encodeQuery(params, batch.queries, sideRng(opts, 0, batch.queries.rows)),
        model.encodePassage(params, batch.passages, sideRng(opts, 1, batch.passages.rows)),
        { temperature: opts.temperature },
      ),
    seed,
  );
  const loss = (await value.data())[0];
  tf.dispose([value, seed]);
  return { loss, grads };
}
