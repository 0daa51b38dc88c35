// Tevatron's DenseModel as a BiEncoder: BERT towers (tied: one parameter map; untied: `query_model.*`
// and `passage_model.*`), a pooling of the last hidden state, Tevatron's optional DensePooler
// (`linear_q`, `linear_p`) and L2 normalisation.
import * as tf from '@tensorflow/tfjs';
import type { TokenBatch } from '../data/collator.ts';
import { linear } from '../ops.ts';
import type { Precision } from '../precision.ts';
import { foldIn, type Key } from '../random.ts';
import { maskedMean } from './bag.ts';
import { bertForward, initBertParams, type BertConfig } from './bert.ts';
import type { BiEncoder, Encoder, ParamMap } from './types.ts';

export const POOLINGS = ['cls', 'mean', 'eos'] as const;
export type Pooling = (typeof POOLINGS)[number];

export interface PoolerShape {
  inDim: number;
  outDim: number;
}

export interface DenseOptions {
  /** Separate query and passage towers (Tevatron's --untie_encoder). */
  untied?: boolean;
  /** cls: the first token; mean: average over real tokens; eos: the last real token. Default cls. */
  pooling?: Pooling;
  /** Tevatron's DensePooler (--add_pooler): a linear map of the pooled vector; tied unless `untied`. */
  pooler?: PoolerShape | null;
  /** L2-normalise the representation (with or without a pooler; Tevatron v1 ignored it without one). */
  normalize?: boolean;
  /** Of the encoder's matrix products (--bf16, --fp16: precision.ts chooses); a run-time choice, not saved. */
  precision?: Precision;
}

/** Pooled vectors [rows, hidden] of a last hidden state [rows, L, hidden]. */
export function poolHidden(hidden: tf.Tensor3D, batch: TokenBatch, pooling: Pooling): tf.Tensor2D {
  const [rows, L, H] = hidden.shape;
  if (pooling === 'cls') return tf.reshape(tf.slice(hidden, [0, 0, 0], [rows, 1, H]), [rows, H]);
  const mask = tf.tensor2d(batch.attentionMask, [rows, L], 'int32');
  if (pooling === 'mean') return maskedMean(hidden, mask);
  // eos: a one-hot weighting rather than a batched gather, whose gradient wasm lacks
  const last = new Float32Array(rows * L);
  for (let r = 0; r < rows; r++) {
    for (let j = L - 1; j >= 0; j--) {
      if (batch.attentionMask[r * L + j]) {
        last[r * L + j] = 1;
        break;
      }
    }
  }
  return tf.sum(tf.mul(hidden, tf.tensor3d(last, [rows, L, 1])), 1);
}

/** x / max(‖x‖₂, 1e-12) per row, as torch.nn.functional.normalize. */
export function l2Normalize(x: tf.Tensor2D): tf.Tensor2D {
  return tf.div(x, tf.maximum(tf.sqrt(tf.sum(tf.square(x), -1, true)), 1e-12));
}

function checkOptions(config: BertConfig, options: DenseOptions): Required<DenseOptions> {
  const { untied = false, pooling = 'cls', pooler = null, normalize = false, precision = 'float32' } = options;
  if (!POOLINGS.includes(pooling)) throw new Error(`pooling "${pooling}" is not supported; use one of ${POOLINGS.join(', ')}`);
  if (pooler) {
    for (const k of ['inDim', 'outDim'] as const) {
      if (!Number.isInteger(pooler[k]) || pooler[k] < 1) throw new Error(`pooler ${k} must be a positive integer, got ${pooler[k]}`);
    }
    if (pooler.inDim !== config.hidden_size) {
      throw new Error(`pooler input dimension ${pooler.inDim} differs from the encoder's hidden_size ${config.hidden_size}; set the pooler's input dimension to ${config.hidden_size}`);
    }
  }
  return { untied, pooling, pooler, normalize, precision };
}

/** The pooler's parameter names: Tevatron's DensePooler shares linear_q between the sides when tied. */
function poolerName(side: 'query' | 'passage', untied: boolean): string {
  return side === 'passage' && untied ? 'linear_p' : 'linear_q';
}

/** Tevatron's DenseModel: encodeQuery / encodePassage over one parameter map. */
export function denseBiEncoder(config: BertConfig, options: DenseOptions = {}): BiEncoder {
  const opts = checkOptions(config, options);
  const encoder = (side: 'query' | 'passage'): Encoder => {
    const prefix = opts.untied ? `${side}_model.` : '';
    const lin = poolerName(side, opts.untied);
    return (params, batch, rng) => {
      if (opts.pooler && !(params[`${lin}.weight`] && params[`${lin}.bias`])) {
        throw new Error(`the pooler's ${lin}.weight and ${lin}.bias are missing from the parameters; load the checkpoint's pooler or create one with initPoolerParams`);
      }
      return tf.tidy(() => {
        let rep = poolHidden(bertForward(config, params, batch, rng, prefix, opts.precision), batch, opts.pooling);
        if (opts.pooler) rep = linear(rep, params[`${lin}.weight`] as tf.Tensor2D, params[`${lin}.bias`] as tf.Tensor1D, opts.precision);
        return opts.normalize ? l2Normalize(rep) : rep;
      });
    };
  };
  return { encodeQuery: encoder('query'), encodePassage: encoder('passage') };
}

/**
 * Random DensePooler parameters as PyTorch's nn.Linear initialises them (uniform ±1/√inDim for
 * weight and bias): linear_q, plus linear_p when untied.
 */
export function initPoolerParams(pooler: PoolerShape, key: Key, untied = false): ParamMap {
  const bound = 1 / Math.sqrt(pooler.inDim);
  return tf.tidy(() => {
    const out: ParamMap = {};
    (untied ? ['linear_q', 'linear_p'] : ['linear_q']).forEach((name, i) => {
      out[`${name}.weight`] = tf.randomUniform([pooler.outDim, pooler.inDim], -bound, bound, 'float32', foldIn(key, 2 * i));
      out[`${name}.bias`] = tf.randomUniform([pooler.outDim], -bound, bound, 'float32', foldIn(key, 2 * i + 1));
    });
    return out;
  });
}

/**
 * A whole random bi-encoder: BERT (untied: both towers start equal, as Tevatron deep-copies the
 * query tower) plus the pooler if the options ask for one.
 */
export function initDenseParams(config: BertConfig, options: DenseOptions, key: Key): ParamMap {
  const opts = checkOptions(config, options);
  const pooler = opts.pooler ? initPoolerParams(opts.pooler, foldIn(key, 1), opts.untied) : {};
  if (!opts.untied) return { ...initBertParams(config, foldIn(key, 0)), ...pooler };
  const towers: ParamMap = { ...pooler };
  for (const side of ['query', 'passage']) {
    Object.assign(towers, initBertParams(config, foldIn(key, 0), { prefix: `${side}_model.` }));
  }
  return towers;
}
