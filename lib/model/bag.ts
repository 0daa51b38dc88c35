// A bag-of-embeddings bi-encoder: embedding lookup -> mean over real tokens -> dropout -> linear.
// Small and fast; it exercises the same kernels as BERT (lookup, linear, dropout, masking), so tests,
// notebooks and benchmarks use it as a stand-in wherever BERT's cost would only add time.
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../data/collator.ts';
import { dropout, embeddingLookup, linear } from '../ops.ts';
import { foldIn, type Key } from '../random.ts';
import type { BiEncoder, Encoder, ParamMap } from './types.ts';

export interface BagConfig {
  vocabSize: number;
  hiddenSize: number;
  outputSize: number;
  dropout: number;
}

/** Token ids and attention mask of a batch as tensors [rows, length]. */
export function batchTensors(batch: TokenBatch): { ids: tf.Tensor2D; mask: tf.Tensor2D } {
  return {
    ids: tf.tensor2d(batch.inputIds, [batch.rows, batch.length], 'int32'),
    mask: tf.tensor2d(batch.attentionMask, [batch.rows, batch.length], 'int32'),
  };
}

/** Mean of hidden [rows, length, h] over positions where mask [rows, length] is 1 (padding excluded). */
export function maskedMean(hidden: tf.Tensor3D, mask: tf.Tensor2D): tf.Tensor2D {
  const m = tf.expandDims(tf.cast(mask, 'float32'), 2);
  const count = tf.maximum(tf.sum(m, 1), 1); // an all-padding row gives zeros, not NaN
  return tf.div(tf.sum(tf.mul(hidden, m), 1), count) as tf.Tensor2D;
}

export function initBagParams(config: BagConfig, key: Key, prefix = ''): ParamMap {
  return tf.tidy(() => ({
    [`${prefix}embeddings.weight`]: tf.randomNormal([config.vocabSize, config.hiddenSize], 0, 0.5, 'float32', foldIn(key, 0)),
    [`${prefix}dense.weight`]: tf.randomNormal([config.outputSize, config.hiddenSize], 0, 0.5, 'float32', foldIn(key, 1)),
    [`${prefix}dense.bias`]: tf.zeros([config.outputSize]),
  }));
}

function bagEncoder(config: BagConfig, prefix: string): Encoder {
  return (params, batch, rng) =>
    tf.tidy(() => {
      const { ids, mask } = batchTensors(batch);
      const pooled = maskedMean(embeddingLookup(params[`${prefix}embeddings.weight`] as tf.Tensor2D, ids) as tf.Tensor3D, mask);
      const dropped = dropout(pooled, config.dropout, rng);
      return linear(dropped, params[`${prefix}dense.weight`] as tf.Tensor2D, params[`${prefix}dense.bias`] as tf.Tensor1D);
    });
}

/** Tied: one parameter set for both sides. Untied: `query_model.*` and `passage_model.*`. */
export function bagBiEncoder(config: BagConfig, untied = false): BiEncoder {
  return untied
    ? { encodeQuery: bagEncoder(config, 'query_model.'), encodePassage: bagEncoder(config, 'passage_model.') }
    : { encodeQuery: bagEncoder(config, ''), encodePassage: bagEncoder(config, '') };
}
