// The contrastive objective of Tevatron: scores q·pᵀ over every passage in the batch (the query's own
// group and everyone else's, i.e. in-batch negatives), cross-entropy against the query's positive.
import * as tf from '@tensorflow/tfjs';
import { linear } from './ops.ts';

export interface LossOptions {
  /** Scores are divided by it before the cross-entropy (Tevatron v1 has none: 1). */
  temperature?: number;
  /** Multiplies the loss; the cross-process path uses the world size (Tevatron's loss * world_size). */
  scale?: number;
}

/** Scores [Q, P] = q [Q, d] · p [P, d]ᵀ. */
export function contrastiveScores(q: tf.Tensor2D, p: tf.Tensor2D): tf.Tensor2D {
  return linear(q, p);
}

/** Passages per query, checking that p's rows are a whole number of groups. */
export function groupSize(qRows: number, pRows: number): number {
  if (qRows === 0 || pRows % qRows !== 0) {
    throw new Error(
      `contrastive loss: ${pRows} passage rows for ${qRows} queries; passages must be a whole number of ` +
        `groups (rows(p) = rows(q) * train_n_passages)`,
    );
  }
  return pRows / qRows;
}

/**
 * scale · mean_i CE(q_i·pᵀ / temperature, target i·n) with n = rows(p)/rows(q): rows i·n … i·n+n−1 of p
 * are query i's group and row i·n is its positive.
 */
export function contrastiveLoss(q: tf.Tensor2D, p: tf.Tensor2D, opts: LossOptions = {}): tf.Scalar {
  const temperature = opts.temperature ?? 1;
  const scale = opts.scale ?? 1;
  if (!(temperature > 0)) throw new Error(`--temperature must be > 0, got ${temperature}`);
  const rows = q.shape[0];
  const n = groupSize(rows, p.shape[0]);
  return tf.tidy(() => {
    let scores = contrastiveScores(q, p);
    if (temperature !== 1) scores = tf.div(scores, temperature);
    const targets = tf.tensor1d(Array.from({ length: rows }, (_, i) => i * n), 'int32');
    const picked = tf.sum(tf.mul(tf.logSoftmax(scores), tf.oneHot(targets, p.shape[0])), 1);
    return tf.mul(tf.neg(tf.mean(picked)), scale) as tf.Scalar;
  });
}
