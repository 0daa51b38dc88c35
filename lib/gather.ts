// Tevatron's --negatives_x_device: every rank scores its queries against the passages of all ranks.
// Representations are all-gathered in rank order; remote rows enter as constants and the local rows
// stay the live (differentiable) tensor, so each rank gets the gradient through its own rows only.
// The loss is scaled by W so that the mean of the ranks' gradients is the gradient of the global loss.
import * as tf from '@tensorflow/tfjs';
import type { ProcessGroup } from './dist/group.ts';
import { contrastiveLoss, type LossOptions } from './loss.ts';
import { lossScaleSeed } from './lossscale.ts';

/** Every rank's rows of `local` [rows, d], concatenated in rank order, as a constant [W·rows, d]. */
export async function allGatherRows(local: tf.Tensor2D, group: ProcessGroup): Promise<tf.Tensor2D> {
  const [rows, d] = local.shape;
  if (group.allGatherTensor) return (await group.allGatherTensor(local)) as tf.Tensor2D; // shapes that differ: TensorFlow's error
  const all = await group.allGather((await local.data()) as Float32Array);
  if (all.length !== rows * d * group.worldSize) {
    throw new Error(`negatives_x_device: ranks hold different batch shapes (rank ${group.rank}: [${rows}, ${d}]); use the same per_device_train_batch_size and train_n_passages everywhere`);
  }
  return tf.tensor2d(all, [rows * group.worldSize, d]);
}

/** `gathered` with rank `rank`'s block of rows replaced by the live `local` tensor. */
export function spliceLocalRows(gathered: tf.Tensor2D, local: tf.Tensor2D, rank: number): tf.Tensor2D {
  const rows = local.shape[0];
  const total = gathered.shape[0];
  const before = tf.slice(gathered, [0, 0], [rank * rows, -1]);
  const after = tf.slice(gathered, [(rank + 1) * rows, 0], [total - (rank + 1) * rows, -1]);
  return tf.concat([before, local, after], 0);
}

export interface RepLossOptions extends Omit<LossOptions, 'scale'> {
  group?: ProcessGroup;
  /** Gather representations across the group (Tevatron's --negatives_x_device). */
  negativesXDevice?: boolean;
  /** Dynamic loss scaling (--fp16): the gradients are of lossScale × loss; the reported loss is not. */
  lossScale?: number;
}

export interface RepLoss {
  /** The loss to log: the global loss with negatives_x_device (identical on every rank), else the local one. */
  loss: number;
  /** d(loss·W·lossScale)/dq and d(loss·W·lossScale)/dp for the local rows (W = 1 without negatives_x_device). */
  dq: tf.Tensor2D;
  dp: tf.Tensor2D;
}

/** The loss and its gradient with respect to the local representations (the grad cache). */
export async function lossAndRepGradients(q: tf.Tensor2D, p: tf.Tensor2D, opts: RepLossOptions = {}): Promise<RepLoss> {
  const group = opts.group;
  const gather = opts.negativesXDevice === true && group !== undefined && group.worldSize > 1;
  const lossOpts = { temperature: opts.temperature };
  const seed = lossScaleSeed(opts.lossScale);
  if (!gather) {
    const { value, grads } = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) => contrastiveLoss(a as tf.Tensor2D, b as tf.Tensor2D, lossOpts))([q, p], seed);
    const loss = (await value.data())[0];
    tf.dispose([value, seed]);
    return { loss, dq: grads[0] as tf.Tensor2D, dp: grads[1] as tf.Tensor2D };
  }
  const [allQ, allP] = [await allGatherRows(q, group), await allGatherRows(p, group)];
  const W = group.worldSize;
  const { value, grads } = tf.valueAndGrads((a: tf.Tensor, b: tf.Tensor) =>
    contrastiveLoss(spliceLocalRows(allQ, a as tf.Tensor2D, group.rank), spliceLocalRows(allP, b as tf.Tensor2D, group.rank), {
      ...lossOpts,
      scale: W,
    }),
  )([q, p], seed);
  const loss = (await value.data())[0] / W;
  tf.dispose([value, allQ, allP, seed]);
  return { loss, dq: grads[0] as tf.Tensor2D, dp: grads[1] as tf.Tensor2D };
}
